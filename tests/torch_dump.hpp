#pragma once
// The canonical dump of scripts/make_torch_files.py, computed on ember's side: what the golden
// tests and the live round trips compare, character for character, with PyTorch's side.
#include <ember/core/value.hpp>
#include <ember/optim/optimizer_state.hpp>

#include <bit>
#include <cstdio>
#include <string>

namespace torch_dump
{

inline std::string quote(const std::string& s)
{
    std::string out = "'";
    for (unsigned char b : s)
    {
        if (b >= 0x20 && b < 0x7f && b != '\'' && b != '\\')
            out += static_cast<char>(b);
        else
        {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", b);
            out += buf;
        }
    }
    return out + "'";
}

inline std::string tensor(const ember::host_tensor& t)
{
    std::string out = "T(";
    out += ember::dtype_name(t.dtype());
    out += ",[";
    for (std::size_t i = 0; i < t.shape().size(); ++i)
    {
        if (i)
            out += ',';
        out += std::to_string(t.shape()[i]);
    }
    out += "],";
    static const char* hex = "0123456789abcdef";
    for (std::byte b : t.bytes())
    {
        out += hex[static_cast<unsigned>(b) >> 4];
        out += hex[static_cast<unsigned>(b) & 15];
    }
    return out + ")";
}

inline std::string dump(const ember::value& v)
{
    if (v.is_none())
        return "None";
    if (v.is_bool())
        return v.as<bool>() ? "True" : "False";
    if (v.is_int())
        return std::to_string(v.as<std::int64_t>());
    if (v.is_double())
    {
        char buf[24];
        std::snprintf(
            buf, sizeof buf, "f%016llx",
            static_cast<unsigned long long>(std::bit_cast<std::uint64_t>(v.as<double>())));
        return buf;
    }
    if (v.is_string())
        return quote(v.as<std::string>());
    if (v.is_tensor())
        return tensor(v.as<ember::host_tensor>());
    if (v.is_list())
    {
        std::string out = "[";
        bool first = true;
        for (const auto& x : v.as<ember::value::list>())
        {
            out += (first ? "" : ",") + dump(x);
            first = false;
        }
        return out + "]";
    }
    std::string out = "{";
    bool first = true;
    for (const auto& [k, x] : v.as<ember::value::dict>())
    {
        out += (first ? "" : ",") + quote(k) + ":" + dump(x);
        first = false;
    }
    return out + "}";
}

inline ember::value to_value(const ember::state_dict& sd)
{
    ember::value::dict d;
    for (const auto& [k, t] : sd)
        d.insert(k, t);
    return d;
}

inline ember::value to_value(const ember::optim::state_value& s)
{
    return std::visit(
        [](const auto& x) -> ember::value
        {
            using X = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<X, std::monostate>)
                return {};
            else if constexpr (std::is_same_v<X, std::vector<double>>)
            {
                ember::value::list l;
                for (double d : x)
                    l.emplace_back(d);
                return l;
            }
            else
                return ember::value(x);
        },
        s);
}

/// PyTorch's layout: state keyed by the parameter index (as a decimal string here), then
/// param_groups with `params` last, as optimizer.state_dict() packs it.
inline ember::value to_value(const ember::optim::optimizer_state& s)
{
    ember::value::dict state;
    for (const auto& [index, entry] : s.state)
    {
        ember::value::dict e;
        for (const auto& [k, x] : entry)
            e.insert(k, to_value(x));
        state.insert(std::to_string(index), e);
    }
    ember::value::list groups;
    for (const auto& g : s.param_groups)
    {
        ember::value::dict d;
        for (const auto& [k, x] : g.options)
            d.insert(k, to_value(x));
        ember::value::list params;
        for (auto p : g.params)
            params.emplace_back(p);
        d.insert("params", params);
        groups.emplace_back(d);
    }
    ember::value::dict out;
    out.insert("state", state);
    out.insert("param_groups", groups);
    return out;
}

} // namespace torch_dump

// The `ember` command line: look into, check and convert the files ember writes.
//
//   ember inspect FILE            the tree of keys with shapes, dtypes and values
//   ember verify FILE             exit 0 if FILE is whole and valid, else 1 and the error
//   ember convert IN OUT          the same content in OUT's format (chosen by extension)
//
// Every command reads state_dicts, optimizer states and checkpoints, in every format ember
// knows (safetensors: state_dicts only). Options: --format F (inspect, verify), --from F and
// --to F (convert), where F is one of ember, binary, portable, json, xml, pytorch, safetensors.
#include <ember/serialize/cereal.hpp>
#include <ember/serialize/file.hpp>
#include <ember/version.hpp>

#include <bit>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace
{

using namespace ember;

constexpr int exit_invalid = 1; // the file is not whole and valid, or cannot be written
constexpr int exit_usage = 2;

// ---- printing, in Python's spelling -------------------------------------------------------

template <class F>
std::string float_text(F x)
{
    if (std::isnan(x))
        return "nan";
    if (std::isinf(x))
        return x < 0 ? "-inf" : "inf";
    char buf[32];
    auto r = std::to_chars(buf, buf + sizeof buf, x);
    std::string s(buf, r.ptr);
    if (s.find_first_of(".en") == std::string::npos)
        s += ".0";
    return s;
}

std::string quoted(const std::string& s)
{
    std::string q = "'";
    for (char c : s)
    {
        if (c == '\'' || c == '\\')
            q += '\\';
        if (c == '\n')
            q += "\\n";
        else
            q += c;
    }
    return q + "'";
}

std::string element_text(const host_tensor& t, std::size_t i)
{
    const std::byte* p = t.bytes().data() + i * dtype_size(t.dtype());
    auto get = [&](auto tag)
    {
        decltype(tag) x;
        std::memcpy(&x, p, sizeof x);
        return x;
    };
    switch (t.dtype())
    {
    case dtype::float32:
        return float_text(get(float{})); // float32's own shortest text, as Python's repr
    case dtype::float64:
        return float_text(get(double{}));
    case dtype::float16:
        return float_text(
            detail::float_bits_to_double(get(std::uint16_t{}), detail::float16_layout));
    case dtype::bfloat16:
        return float_text(
            detail::float_bits_to_double(get(std::uint16_t{}), detail::bfloat16_layout));
    case dtype::int64:
        return std::to_string(get(std::int64_t{}));
    case dtype::int32:
        return std::to_string(get(std::int32_t{}));
    case dtype::int16:
        return std::to_string(get(std::int16_t{}));
    case dtype::int8:
        return std::to_string(get(std::int8_t{}));
    case dtype::uint8:
        return std::to_string(get(std::uint8_t{}));
    case dtype::boolean:
        return get(std::uint8_t{}) ? "True" : "False";
    }
    return "?";
}

// "tensor float32 [2, 3] = [1.5, -2.0, ...]": the values of small tensors, the first few of
// larger ones.
std::string tensor_text(const host_tensor& t)
{
    constexpr std::size_t shown = 6;
    std::string s = "tensor " + std::string(dtype_name(t.dtype())) + " " + shape_string(t.shape());
    if (t.numel() == 0)
        return s;
    s += t.dim() == 0 ? " = " : " = [";
    for (std::size_t i = 0; i < std::min(t.numel(), shown); ++i)
        s += (i ? ", " : "") + element_text(t, i);
    if (t.numel() > shown)
        s += ", ... (" + std::to_string(t.numel()) + " elements)";
    if (t.dim() != 0)
        s += "]";
    return s;
}

class tree_printer
{
public:
    void line(int depth, const std::string& key, const std::string& text)
    {
        std::printf("%*s%s:%s%s\n", 2 * depth, "", key.c_str(), text.empty() ? "" : " ",
                    text.c_str());
    }

    void print(int depth, const std::string& key, const host_tensor& t)
    {
        line(depth, key, tensor_text(t));
    }

    void print(int depth, const std::string& key, const value& v)
    {
        if (v.is_dict())
            print_dict(depth, key, v.as<value::dict>());
        else if (v.is_list())
        {
            const auto& items = v.as<value::list>();
            if (items.empty())
                return line(depth, key, "[]");
            line(depth, key, "");
            for (std::size_t i = 0; i < items.size(); ++i)
                print(depth + 1, "[" + std::to_string(i) + "]", items[i]);
        }
        else
            line(depth, key, scalar_text(v));
    }

    void print(int depth, const std::string& key, const optim::state_value& v)
    {
        std::visit(
            [&](const auto& x)
            {
                using X = std::decay_t<decltype(x)>;
                if constexpr (std::is_same_v<X, std::monostate>)
                    line(depth, key, "None");
                else if constexpr (std::is_same_v<X, bool>)
                    line(depth, key, x ? "True" : "False");
                else if constexpr (std::is_same_v<X, std::int64_t>)
                    line(depth, key, std::to_string(x));
                else if constexpr (std::is_same_v<X, double>)
                    line(depth, key, float_text(x));
                else if constexpr (std::is_same_v<X, std::vector<double>>)
                {
                    std::string s = "(";
                    for (std::size_t i = 0; i < x.size(); ++i)
                        s += (i ? ", " : "") + float_text(x[i]);
                    line(depth, key, s + (x.size() == 1 ? ",)" : ")"));
                }
                else if constexpr (std::is_same_v<X, std::string>)
                    line(depth, key, quoted(x));
                else
                    print(depth, key, x);
            },
            v);
    }

    void print(int depth, const std::string& key, const generator_state& g)
    {
        line(depth, key,
             "generator(seed=" + std::to_string(g.seed) + ", position=" + std::to_string(g.index) +
                 "/624" +
                 (g.has_next_normal ? ", cached normal " + float_text(g.next_normal) : "") + ")");
    }

    template <class V>
    void print_dict(int depth, const std::string& key, const ordered_dict<V>& d)
    {
        if (d.empty())
            return line(depth, key, "{}");
        line(depth, key, "");
        for (const auto& [k, v] : d)
            print(depth + 1, k, v);
    }

    template <class V>
    void print(int depth, const std::string& key, const ordered_dict<V>& d)
    {
        print_dict(depth, key, d);
    }

    void print(int depth, const std::string& key, const optim::optimizer_state& s)
    {
        line(depth, key, "");
        print_members(depth + 1, s);
    }

    // An optimizer state's two keys, `state` and `param_groups`, at `depth`.
    void print_members(int depth, const optim::optimizer_state& s)
    {
        --depth; // the body below was written for the keyed form
        if (s.state.empty())
            line(depth + 1, "state", "{}");
        else
        {
            line(depth + 1, "state", "");
            for (const auto& [index, entries] : s.state)
                print_dict(depth + 2, std::to_string(index), entries);
        }
        if (s.param_groups.empty())
            return line(depth + 1, "param_groups", "[]");
        line(depth + 1, "param_groups", "");
        for (std::size_t i = 0; i < s.param_groups.size(); ++i)
        {
            const auto& g = s.param_groups[i];
            line(depth + 2, "[" + std::to_string(i) + "]", "");
            for (const auto& [k, v] : g.options)
                print(depth + 3, k, v);
            std::string params = "[";
            for (std::size_t j = 0; j < g.params.size(); ++j)
                params += (j ? ", " : "") + std::to_string(g.params[j]);
            line(depth + 3, "params", params + "]");
        }
    }

    void print(const checkpoint& c)
    {
        line(0, "epoch", std::to_string(c.epoch));
        print_dict(0, "model_state_dict", c.model_state_dict);
        print(0, "optimizer_state_dict", c.optimizer_state_dict);
        line(0, "train_loss", float_text(c.train_loss));
        line(0, "val_loss", float_text(c.val_loss));
        print_dict(0, "hyperparameters", c.hyperparameters);
        line(0, "timestamp", quoted(c.timestamp));
        line(0, "ember_version", quoted(c.ember_version));
        line(0, "global_step", std::to_string(c.global_step));
        print_dict(0, "generators", c.generators);
        print(0, "scheduler_state", c.scheduler_state);
        print(0, "data_state", c.data_state);
        print_dict(0, "extras", c.extras);
    }

private:
    static std::string scalar_text(const value& v)
    {
        if (v.is_none())
            return "None";
        if (v.is_bool())
            return v.as<bool>() ? "True" : "False";
        if (v.is_int())
            return std::to_string(v.as<std::int64_t>());
        if (v.is_double())
            return float_text(v.as<double>());
        if (v.is_string())
            return quoted(v.as<std::string>());
        return tensor_text(v.as<host_tensor>());
    }
};

// ---- commands -----------------------------------------------------------------------------

std::optional<file_format> parse_format(std::string_view name)
{
    if (name == "ember")
        return file_format::ember;
    if (name == "binary")
        return file_format::cereal_binary;
    if (name == "portable")
        return file_format::cereal_portable_binary;
    if (name == "json")
        return file_format::json;
    if (name == "xml")
        return file_format::xml;
    if (name == "pytorch")
        return file_format::pytorch;
    if (name == "safetensors")
        return file_format::safetensors;
    return std::nullopt;
}

std::string describe(const file_info& info)
{
    std::string s =
        std::string(content_name(info.content)) + ", " + std::string(format_name(info.format));
    if (info.format == file_format::ember)
        s += " container version " + std::to_string(info.container_version);
    else if (info.format == file_format::pytorch)
        s += " zip (torch.save)";
    else if (info.format == file_format::safetensors)
        s += " file";
    else
        s += " archive";
    if (!info.writer.empty())
        s += ", written by ember " + info.writer;
    return s + ", " + std::to_string(info.size) + " bytes";
}

// Runs `f(std::type_identity<T>{})` with T the type `content` names.
template <class F>
void with_content(file_content content, F&& f)
{
    switch (content)
    {
    case file_content::state_dict:
        return f(std::type_identity<state_dict>{});
    case file_content::optimizer_state:
        return f(std::type_identity<optim::optimizer_state>{});
    case file_content::checkpoint:
        return f(std::type_identity<checkpoint>{});
    }
    throw format_error("unknown content kind " + std::to_string(static_cast<int>(content)));
}

file_info identify(const std::string& path, std::optional<file_format> format)
{
    return format ? probe(path, *format) : probe(path);
}

int inspect(const std::string& path, std::optional<file_format> format)
{
    const file_info info = identify(path, format);
    with_content(info.content,
                 [&](auto tag)
                 {
                     using T = typename decltype(tag)::type;
                     const T obj = load<T>(path, info.format);
                     std::printf("%s: %s\n", path.c_str(), describe(info).c_str());
                     tree_printer out;
                     if constexpr (std::is_same_v<T, checkpoint>)
                         out.print(obj);
                     else if constexpr (std::is_same_v<T, state_dict>)
                         for (const auto& [k, v] : obj)
                             out.print(0, k, v);
                     else
                         out.print_members(0, obj);
                 });
    return 0;
}

int verify(const std::string& path, std::optional<file_format> format)
{
    const file_info info = identify(path, format);
    with_content(info.content,
                 [&](auto tag) { (void)load<typename decltype(tag)::type>(path, info.format); });
    std::printf("%s: OK (%s)\n", path.c_str(), describe(info).c_str());
    return 0;
}

int convert(const std::string& in, const std::string& out, std::optional<file_format> from,
            std::optional<file_format> to)
{
    const file_info info = identify(in, from);
    const file_format target = to ? *to : format_from_extension(out);
    with_content(info.content,
                 [&](auto tag)
                 {
                     using T = typename decltype(tag)::type;
                     save(load<T>(in, info.format), out, target);
                 });
    std::printf("%s (%s) -> %s (%s)\n", in.c_str(), std::string(format_name(info.format)).c_str(),
                out.c_str(), std::string(format_name(target)).c_str());
    return 0;
}

void usage(std::FILE* to)
{
    std::fprintf(to, "usage: ember inspect FILE [--format F]   print the keys, shapes, dtypes and "
                     "values\n"
                     "       ember verify FILE [--format F]    exit 0 if FILE is whole and valid\n"
                     "       ember convert IN OUT [--from F] [--to F]\n"
                     "                                         write IN's content to OUT, in OUT's "
                     "format\n"
                     "       ember --version\n"
                     "F: ember, binary, portable, json, xml, pytorch, safetensors (default: by the "
                     "file's first bytes, then its extension: .ember = ember, .pth .pt .tar = "
                     "pytorch, .safetensors, .json, .xml, .bin .cereal = portable)\n");
}

} // namespace

int main(int argc, char** argv)
{
    std::vector<std::string> args;
    std::optional<file_format> format, from, to;
    for (int i = 1; i < argc; ++i)
    {
        const std::string_view a = argv[i];
        if (a == "-h" || a == "--help")
        {
            usage(stdout);
            return 0;
        }
        if (a == "--version")
        {
            std::printf("ember %s\n", ember::version);
            return 0;
        }
        if (a == "--format" || a == "--from" || a == "--to")
        {
            if (i + 1 >= argc || !parse_format(argv[i + 1]))
            {
                std::fprintf(stderr,
                             "ember: %s needs one of ember, binary, portable, json, xml, "
                             "pytorch, safetensors\n",
                             argv[i]);
                return exit_usage;
            }
            (a == "--format" ? format : a == "--from" ? from : to) = parse_format(argv[++i]);
            continue;
        }
        if (a.starts_with("-") && a.size() > 1)
        {
            std::fprintf(stderr, "ember: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return exit_usage;
        }
        args.emplace_back(a);
    }
    const std::string command = args.empty() ? "" : args[0];
    const std::size_t operands = args.size() - (args.empty() ? 0 : 1);
    const bool valid = (command == "inspect" || command == "verify") ? operands == 1 && !from && !to
                       : command == "convert"                        ? operands == 2 && !format
                                                                     : false;
    if (!valid)
    {
        usage(stderr);
        return exit_usage;
    }
    try
    {
        if (command == "inspect")
            return inspect(args[1], format);
        if (command == "verify")
            return verify(args[1], format);
        return convert(args[1], args[2], from, to);
    }
    catch (const ember::error& e)
    {
        std::fprintf(stderr, "ember %s: %s\n", command.c_str(), e.what());
        return exit_invalid;
    }
}

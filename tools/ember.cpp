// The `ember` command line: look into, check and convert the files ember writes.
//
//   ember inspect FILE            the tree of keys with shapes, dtypes and values
//   ember verify FILE             exit 0 if FILE is whole and valid, else 1 and the error
//   ember convert IN OUT          the same content in OUT's format (chosen by extension)
//
// Every command reads state_dicts, optimizer states and checkpoints, in every format ember
// knows (safetensors: state_dicts only). Options: --format F (inspect, verify), --from F and
// --to F (convert), where F is one of ember, binary, portable, json, xml, pytorch, safetensors;
// `--` ends the options. Exit status: 0 done, 1 a file is not whole and valid or cannot be
// read or written (standard output included), 2 a usage error.
//
// What a file holds reaches the terminal escaped (keys, strings, the writer's version): a name
// cannot move the cursor, recolour the screen or pass for another key. Lists, dicts and strings
// of plain values are shortened, as tensors are: a file cannot flood the terminal either.
#include <ember/detail/utf8.hpp>
#include <ember/serialize/cereal.hpp>
#include <ember/serialize/file.hpp>
#include <ember/serialize/safetensors.hpp>
#include <ember/version.hpp>

#include <array>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
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

// ---- escaping: a file's text as Python's repr shows a str -----------------------------------

constexpr std::size_t shown_chars = 200; // of a string or key; then "... (N bytes)"
constexpr std::size_t shown_items = 100; // of a list or dict of plain values; then "... (N more)"

// Whether repr escapes `cp`: control characters (C0, DEL, C1), and the invisible ones that
// make a text read as another (no-break and zero-width spaces, soft hyphen, line separators,
// bidirectional overrides as in "Trojan Source", the byte order mark).
bool hidden(char32_t cp)
{
    return cp < 0x20 || (cp >= 0x7f && cp <= 0xa0) || cp == 0xad ||
           (cp >= 0x200b && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202f) ||
           (cp >= 0x2060 && cp <= 0x206f) || cp == 0xfeff;
}

void append_escape(std::string& out, char32_t cp)
{
    constexpr char hex[] = "0123456789abcdef";
    if (cp == '\t' || cp == '\n' || cp == '\r')
        out += cp == '\t' ? "\\t" : cp == '\n' ? "\\n" : "\\r";
    else if (cp <= 0xff)
        out += {'\\', 'x', hex[cp >> 4], hex[cp & 15]};
    else
        out += {'\\', 'u', hex[cp >> 12], hex[cp >> 8 & 15], hex[cp >> 4 & 15], hex[cp & 15]};
}

// `s` as Python's repr spells a str, without the quotes: hidden characters escaped (\t, \n,
// \r by name, \xNN, \uNNNN), each byte that is not UTF-8 as \xNN (as repr shows a file name
// Python could not decode), the backslash and `quote` behind a backslash, any other UTF-8
// ('é') as it is. Past `shown` characters, "... (N bytes)" after the closing `quote`.
std::string escaped(std::string_view s, char quote = '\0', std::size_t shown = shown_chars)
{
    std::string out(quote ? 1 : 0, quote);
    std::size_t i = 0;
    for (std::size_t chars = 0; i < s.size() && chars < shown; ++chars)
    {
        char32_t cp = 0;
        const std::size_t n = ember::detail::utf8_sequence(s.substr(i), cp);
        if (n == 0)
            append_escape(out, static_cast<unsigned char>(s[i]));
        else if (hidden(cp))
            append_escape(out, cp);
        else
        {
            if (s[i] == '\\' || (quote && s[i] == quote))
                out += '\\';
            out.append(s.substr(i, n));
        }
        i += n == 0 ? 1 : n;
    }
    if (quote)
        out += quote;
    if (i < s.size())
        out += "... (" + std::to_string(s.size()) + " bytes)";
    return out;
}

std::string quoted(const std::string& s)
{
    return escaped(s, '\'');
}

// An error message as it may reach the terminal: the library quotes what it takes from a file,
// but only so far; a control byte or a stray byte left in it is escaped all the same.
std::string printable(std::string_view message)
{
    std::string out;
    for (std::size_t i = 0; i < message.size();)
    {
        char32_t cp = 0;
        const std::size_t n = ember::detail::utf8_sequence(message.substr(i), cp);
        if (n == 0 || (hidden(cp) && cp != '\n'))
            append_escape(out, n == 0 ? static_cast<unsigned char>(message[i]) : cp);
        else
            out.append(message.substr(i, n));
        i += n == 0 ? 1 : n;
    }
    return out;
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
    // `key` comes from the file: escaped, so that it stays on its line and says what it is.
    void line(int depth, const std::string& key, const std::string& text)
    {
        std::printf("%*s%s:%s%s\n", 2 * depth, "", escaped(key).c_str(), text.empty() ? "" : " ",
                    text.c_str());
    }

    // "... (N more items)" below the first shown_items of a long list or dict.
    void elided(int depth, std::size_t more, const char* what)
    {
        std::printf("%*s... (%zu more %s)\n", 2 * depth, "", more, what);
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
            const std::size_t shown = std::min(items.size(), shown_items);
            for (std::size_t i = 0; i < shown; ++i)
                print(depth + 1, "[" + std::to_string(i) + "]", items[i]);
            if (items.size() > shown)
                elided(depth + 1, items.size() - shown, "items");
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
                    for (std::size_t i = 0; i < std::min(x.size(), shown_items); ++i)
                        s += (i ? ", " : "") + float_text(x[i]);
                    if (x.size() > shown_items)
                        s += ", ... (" + std::to_string(x.size()) + " elements)";
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

    void print(int depth, const std::string& key, const std::string& s)
    {
        line(depth, key, quoted(s));
    }

    // Dicts of plain values (hyperparameters, extras, safetensors metadata) are data, and show
    // their first shown_items keys; those of tensors and states are the file's structure, and
    // show all.
    template <class V>
    void print_dict(int depth, const std::string& key, const ordered_dict<V>& d)
    {
        if (d.empty())
            return line(depth, key, "{}");
        line(depth, key, "");
        constexpr bool data = std::is_same_v<V, value> || std::is_same_v<V, std::string>;
        const std::size_t shown = data ? std::min(d.size(), shown_items) : d.size();
        std::size_t i = 0;
        for (auto it = d.begin(); i < shown; ++it, ++i)
            print(depth + 1, it->first, it->second);
        if (d.size() > shown)
            elided(depth + 1, d.size() - shown, "keys");
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
            for (std::size_t j = 0; j < std::min(g.params.size(), shown_items); ++j)
                params += (j ? ", " : "") + std::to_string(g.params[j]);
            if (g.params.size() > shown_items) // as tensor_text shortens
                params += ", ... (" + std::to_string(g.params.size()) + " params)";
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

// ---- formats ------------------------------------------------------------------------------

// The names F takes in --format, --from and --to.
struct named_format
{
    std::string_view name;
    file_format format;
};

constexpr std::array<named_format, 7> format_names = {{
    {"ember", file_format::ember},
    {"binary", file_format::cereal_binary},
    {"portable", file_format::cereal_portable_binary},
    {"json", file_format::json},
    {"xml", file_format::xml},
    {"pytorch", file_format::pytorch},
    {"safetensors", file_format::safetensors},
}};

constexpr const char* format_list = "ember, binary, portable, json, xml, pytorch, safetensors";
constexpr const char* extension_list = ".ember, .pth, .pt, .tar, .safetensors, .json, .xml, .bin "
                                       "and .cereal";

std::optional<file_format> parse_format(std::string_view name)
{
    for (const auto& f : format_names)
        if (f.name == name)
            return f.format;
    return std::nullopt;
}

std::string_view option_name(file_format format)
{
    for (const auto& f : format_names)
        if (f.format == format)
            return f.name;
    return "?";
}

// "an ember container", "a JSON archive": what a file in `format` is, for messages.
std::string format_phrase(file_format format)
{
    switch (format)
    {
    case file_format::ember:
        return "an ember container";
    case file_format::pytorch:
        return "a PyTorch zip";
    case file_format::safetensors:
        return "a safetensors file";
    case file_format::xml:
        return "an XML archive";
    default:
        return "a " + std::string(format_name(format)) + " archive";
    }
}

// A file's name as the tool prints it: the user's own, but maybe from a listing of files that
// someone else named.
std::string shown(const std::string& path)
{
    return escaped(path, '\0', std::string::npos);
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
    if (!info.writer.empty()) // the file's own words
        s += ", written by ember " + escaped(info.writer);
    return s + ", " + std::to_string(info.size) + " bytes";
}

// The format the bytes of `path` name by themselves: PyTorch's zip, ember's container or a
// safetensors header, as load<T>(path) tells them before it looks at the extension; none for
// the others.
std::optional<file_format> format_by_bytes(const std::string& path)
{
    const detail::file_bytes file(path);
    return file.decode_checked(path,
                               [&]() -> std::optional<file_format>
                               {
                                   try // with no extension to fall back on, value_error
                                   {
                                       return detail::detect_format(file.bytes(), {});
                                   }
                                   catch (const value_error&)
                                   {
                                       return std::nullopt;
                                   }
                               });
}

// format_from_extension, its error pointing to the tool's option `option` (the library's
// points to the C++ API).
file_format format_of_name(const std::string& path, std::string_view option, bool input)
{
    try
    {
        return format_from_extension(path);
    }
    catch (const value_error&)
    {
        const std::string ext = std::filesystem::path(path).extension().string();
        throw value_error("cannot tell the format of '" + shown(path) + "' from " +
                          (input ? "its first bytes or " : "") +
                          (ext.empty() ? std::string("its missing extension")
                                       : "its extension '" + escaped(ext) + "'") +
                          " (ember knows " + extension_list + "): pass " + std::string(option) +
                          " F, one of " + format_list);
    }
}

// The format load<T>(path) reads `path` in: its bytes', else its extension's.
file_format input_format(const std::string& path, std::string_view option)
{
    const auto by_bytes = format_by_bytes(path);
    return by_bytes ? *by_bytes : format_of_name(path, option, true);
}

// Reading `path` as `format` (given with `option`) failed. If its bytes name another format,
// the error that says so, rather than the parser's ("not valid JSON at offset 0").
std::optional<format_error> other_format(const std::string& path, file_format format,
                                         std::string_view option)
{
    std::optional<file_format> actual;
    try
    {
        actual = format_by_bytes(path);
    }
    catch (const error&) // not even readable: the first error says so
    {
    }
    if (!actual || *actual == format)
        return std::nullopt;
    return format_error("'" + shown(path) + "' is " + format_phrase(*actual) + ", not " +
                        format_phrase(format) + ": leave out " + std::string(option) +
                        ", or pass " + std::string(option) + " " +
                        std::string(option_name(*actual)));
}

// safetensors' __metadata__ of `path`, which state_dict has no place for.
ordered_dict<std::string> safetensors_metadata(const std::string& path)
{
    return safetensors::safe_open(path).metadata();
}

// ---- commands -----------------------------------------------------------------------------

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

// Reads `path`, in `format` if given (with `option`) or as load<T>(path) would, and runs
// `f(info, obj)` with `obj` the state_dict, optimizer state or checkpoint it holds.
template <class F>
void with_file(const std::string& path, std::optional<file_format> format, std::string_view option,
               F&& f)
{
    bool reading = true;
    try
    {
        const file_info info = probe(path, format ? *format : input_format(path, option));
        with_content(info.content,
                     [&](auto tag)
                     {
                         const auto obj = load<typename decltype(tag)::type>(path, info.format);
                         reading = false;
                         f(info, obj);
                     });
    }
    catch (const format_error&)
    {
        if (reading && format)
            if (auto e = other_format(path, *format, option))
                throw *e;
        throw;
    }
}

int inspect(const std::string& path, std::optional<file_format> format)
{
    with_file(path, format, "--format",
              [&](const file_info& info, const auto& obj)
              {
                  using T = std::decay_t<decltype(obj)>;
                  std::printf("%s: %s\n", shown(path).c_str(), describe(info).c_str());
                  tree_printer out;
                  if constexpr (std::is_same_v<T, checkpoint>)
                      out.print(obj);
                  else if constexpr (std::is_same_v<T, state_dict>)
                  {
                      // First, as in the file's header; only where there is some, as there.
                      if (info.format == file_format::safetensors)
                          if (const auto meta = safetensors_metadata(path); !meta.empty())
                              out.print_dict(0, "__metadata__", meta);
                      for (const auto& [k, v] : obj)
                          out.print(0, k, v);
                  }
                  else
                      out.print_members(0, obj);
              });
    return 0;
}

int verify(const std::string& path, std::optional<file_format> format)
{
    with_file(path, format, "--format",
              [&](const file_info& info, const auto&)
              { std::printf("%s: OK (%s)\n", shown(path).c_str(), describe(info).c_str()); });
    return 0;
}

int convert(const std::string& in, const std::string& out, std::optional<file_format> from,
            std::optional<file_format> to)
{
    const file_format target = to ? *to : format_of_name(out, "--to", false);
    with_file(in, from, "--from",
              [&](const file_info& info, const auto& obj)
              {
                  if constexpr (std::is_same_v<std::decay_t<decltype(obj)>, state_dict>)
                  {
                      // safetensors' __metadata__ goes on where there is a place for it, and
                      // whoever converts to another format hears that it stays behind.
                      const auto meta = info.format == file_format::safetensors
                                            ? safetensors_metadata(in)
                                            : ordered_dict<std::string>{};
                      if (target == file_format::safetensors)
                          safetensors::save(obj, out, meta);
                      else
                          save(obj, out, target);
                      if (target != file_format::safetensors && !meta.empty())
                          std::fprintf(
                              stderr,
                              "ember convert: note: the __metadata__ of '%s' (%zu keys) is "
                              "left out: %s has no place for it\n",
                              shown(in).c_str(), meta.size(),
                              std::string(format_name(target)).c_str());
                  }
                  else
                      save(obj, out, target);
                  std::printf("%s (%s) -> %s (%s)\n", shown(in).c_str(),
                              std::string(format_name(info.format)).c_str(), shown(out).c_str(),
                              std::string(format_name(target)).c_str());
              });
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
                     "pytorch, .safetensors, .json, .xml, .bin .cereal = portable)\n"
                     "--: what follows is FILE, IN or OUT, even if it starts with '-'\n"
                     "exit status: 0 done, 1 a file is not whole and valid or cannot be read or "
                     "written, 2 a usage error\n");
}

// What was wrong, then the usage.
int usage_error(const std::string& reason)
{
    std::fprintf(stderr, "ember: %s\n", printable(reason).c_str());
    usage(stderr);
    return exit_usage;
}

int run(int argc, char** argv)
{
    std::vector<std::string> args;
    std::optional<file_format> format, from, to;
    bool operands_only = false; // after `--`
    for (int i = 1; i < argc; ++i)
    {
        const std::string_view a = argv[i];
        if (operands_only || a == "-" || !a.starts_with("-"))
        {
            args.emplace_back(a);
            continue;
        }
        if (a == "--")
        {
            operands_only = true;
            continue;
        }
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
            if (i + 1 >= argc)
                return usage_error(std::string(a) + " needs a format, one of " + format_list);
            const std::string_view name = argv[++i];
            const auto f = parse_format(name);
            if (!f)
                return usage_error("unknown format '" + escaped(name) + "' (one of " + format_list +
                                   ")");
            auto& slot = a == "--format" ? format : a == "--from" ? from : to;
            if (slot)
                return usage_error(std::string(a) + " given twice");
            slot = f;
            continue;
        }
        return usage_error("unknown option '" + escaped(a) + "'");
    }
    if (args.empty())
        return usage_error("no command given");
    const std::string command = args[0];
    const std::size_t operands = args.size() - 1;
    if (command == "inspect" || command == "verify")
    {
        if (operands != 1)
            return usage_error(command + " takes one FILE, got " + std::to_string(operands));
        if (from || to)
            return usage_error(command + " does not take " + (from ? "--from" : "--to") +
                               " (it takes --format)");
    }
    else if (command == "convert")
    {
        if (operands != 2)
            return usage_error("convert takes IN and OUT, got " + std::to_string(operands) +
                               (operands == 1 ? " file" : " files"));
        if (format)
            return usage_error("convert does not take --format (it takes --from and --to)");
    }
    else
        return usage_error("unknown command '" + escaped(command) + "'");
    try
    {
        if (command == "inspect")
            return inspect(args[1], format);
        if (command == "verify")
            return verify(args[1], format);
        return convert(args[1], args[2], from, to);
    }
    catch (const std::exception& e) // ember::error, and bad_alloc and the like on a hostile file
    {
        std::fprintf(stderr, "ember %s: %s\n", command.c_str(), printable(e.what()).c_str());
        return exit_invalid;
    }
}

} // namespace

int main(int argc, char** argv)
{
    const int status = run(argc, argv);
    // printf keeps its errors in the stream: `ember inspect f > out` on a full disk must not
    // end in success with out cut short.
    errno = 0;
    if (std::fflush(stdout) != 0 || std::ferror(stdout))
    {
        std::fprintf(stderr, "ember: cannot write to standard output%s%s\n", errno ? ": " : "",
                     errno ? std::strerror(errno) : "");
        return status == 0 ? exit_invalid : status;
    }
    return status;
}

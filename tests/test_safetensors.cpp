// safetensors: files written by the reference implementation (tests/data/safetensors/, made by
// scripts/make_torch_files.py with the `safetensors` package) load as what was saved, and
// ember's writer reproduces them byte for byte; every header fault is a format_error naming
// it. Live round trips with the package run in the 'pytorch_roundtrip' test.
#include <ember/serialize/safetensors.hpp>

#include "golden/pytorch_files.hpp"
#include "test_files.hpp"
#include "torch_dump.hpp"

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace fs = std::filesystem;
namespace st = ember::safetensors;
using ember::host_tensor;
using bytes = std::vector<std::byte>;

namespace
{

fs::path data_folder()
{
    if (const char* env = std::getenv("EMBER_TEST_DATA"))
        return env;
    // __FILE__ is relative to the build root, the parent of this executable's folder.
    fs::path source = __FILE__;
    if (source.is_relative())
        source = fs::read_symlink("/proc/self/exe").parent_path().parent_path() / source;
    return source.parent_path() / "data";
}

bytes read(const fs::path& p)
{
    std::ifstream in(p, std::ios::binary);
    std::vector<char> raw{std::istreambuf_iterator<char>(in), {}};
    bytes out(raw.size());
    std::memcpy(out.data(), raw.data(), raw.size());
    return out;
}

/// A file with header `json` (length prefix added, no padding) followed by `data_size` zeros.
bytes file_with(const std::string& json, std::size_t data_size = 0)
{
    bytes out(8 + json.size() + data_size);
    const std::uint64_t n = json.size();
    for (int i = 0; i < 8; ++i)
        out[static_cast<std::size_t>(i)] = static_cast<std::byte>(n >> (8 * i));
    std::memcpy(out.data() + 8, json.data(), json.size());
    return out;
}

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  std::uint64_t begin, std::uint64_t end)
{
    return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
           ",\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(end) + "]}";
}

template <class F>
std::string format_error_of(F&& f)
{
    try
    {
        f();
    }
    catch (const ember::format_error& e)
    {
        return e.what();
    }
    catch (const std::exception& e)
    {
        BOOST_ERROR("expected format_error, got " << typeid(e).name() << ": " << e.what());
        return "";
    }
    BOOST_ERROR("expected format_error, nothing was thrown");
    return "";
}

#define CHECK_FORMAT_ERROR(expr, fragment)                                                         \
    do                                                                                             \
    {                                                                                              \
        const std::string message_ = format_error_of([&] { (void)(expr); });                       \
        BOOST_TEST(message_.find(fragment) != std::string::npos,                                   \
                   "message '" << message_ << "' lacks '" << fragment << "'");                     \
    } while (0)

#define CHECK_HEADER_ERROR(json, data_size, fragment)                                              \
    CHECK_FORMAT_ERROR(st::from_bytes(file_with(json, data_size), "test"), fragment)

/// The dump of a state_dict with its keys sorted, as the script dumps it.
std::string sorted_dump(const ember::state_dict& sd)
{
    std::map<std::string, host_tensor> sorted(sd.begin(), sd.end());
    ember::value::dict d;
    for (const auto& [k, t] : sorted)
        d.insert(k, t);
    return torch_dump::dump(ember::value(d));
}

ember::state_dict every_dtype()
{
    ember::state_dict sd;
    auto add = [&](const char* name, ember::dtype d, std::vector<std::int64_t> shape)
    {
        host_tensor t(d, shape);
        for (std::size_t i = 0; i < t.nbytes(); ++i)
            t.bytes()[i] =
                static_cast<std::byte>((i * 29 + 3) & (d == ember::dtype::boolean ? 1 : 0xff));
        sd.insert(name, t);
    };
    add("weight", ember::dtype::float32, {2, 3});
    add("double", ember::dtype::float64, {3});
    add("half", ember::dtype::float16, {1, 3});
    add("brain", ember::dtype::bfloat16, {5});
    add("count", ember::dtype::int64, {});
    add("i32", ember::dtype::int32, {2});
    add("i16", ember::dtype::int16, {3});
    add("i8", ember::dtype::int8, {1});
    add("u8", ember::dtype::uint8, {2, 2});
    add("mask", ember::dtype::boolean, {3});
    add("nothing", ember::dtype::float32, {0, 4});
    return sd;
}

} // namespace

BOOST_AUTO_TEST_CASE(reference_files_load_as_what_was_saved)
{
    std::size_t n = 0;
    for (const auto& f : golden::torch_files::files)
    {
        if (!f.path.starts_with("safetensors/"))
            continue;
        ++n;
        BOOST_TEST_CONTEXT(f.path)
        {
            const fs::path path = data_folder() / f.path;
            BOOST_TEST(sorted_dump(st::load<ember::state_dict>(path)) == f.dump);
            st::safe_open file(path);
            ember::value::dict meta;
            for (const auto& [k, v] : file.metadata())
                meta.insert(k, v);
            BOOST_TEST(torch_dump::dump(ember::value(meta)) == f.metadata);
        }
    }
    BOOST_TEST(n == 3u);
}

BOOST_AUTO_TEST_CASE(embers_writer_reproduces_reference_files_byte_for_byte)
{
    for (const char* name : {"dtypes.safetensors", "mlp.safetensors", "empty.safetensors"})
    {
        BOOST_TEST_CONTEXT(name)
        {
            const bytes reference = read(data_folder() / "safetensors" / name);
            st::reader r(reference);
            BOOST_TEST((st::to_bytes(r.to_state_dict(), r.metadata()) == reference));
            // and saved, streamed into the file from the tensors, or from views of them
            test::temp_dir dir;
            st::save(r.to_state_dict(), dir.path / name, r.metadata());
            BOOST_TEST((read(dir.path / name) == reference));
            st::save(r.to_state_dict_view(), dir.path / "views.safetensors", r.metadata());
            BOOST_TEST((read(dir.path / "views.safetensors") == reference));
        }
    }
}

BOOST_AUTO_TEST_CASE(every_dtype_round_trips_through_a_file)
{
    const auto sd = every_dtype();
    const fs::path path = fs::temp_directory_path() / "ember_every_dtype.safetensors";
    ember::ordered_dict<std::string> meta{{"format", "pt"}, {"quote\"d", "new\nline \xc3\xa9"}};
    st::save(sd, path, meta);
    const auto back = st::load<ember::state_dict>(path);
    BOOST_TEST(back.size() == sd.size());
    for (const auto& [name, t] : sd)
        BOOST_TEST((back.at(name) == t), name);
    st::safe_open f(path);
    BOOST_TEST((f.metadata() == meta));
    fs::remove(path);
}

BOOST_AUTO_TEST_CASE(the_writer_orders_by_dtype_width_then_name_so_tensors_are_aligned)
{
    const bytes b = st::to_bytes(every_dtype());
    st::reader r(b);
    BOOST_TEST(r.keys() == (std::vector<std::string>{"count", "double", "nothing", "weight", "i32",
                                                     "brain", "half", "i16", "i8", "u8", "mask"}),
               boost::test_tools::per_element());
    BOOST_TEST(r.info().data_start % 8 == 0u);
    for (std::size_t i = 0; i < r.size(); ++i)
    {
        const auto v = r.view_at(i);
        const auto address = reinterpret_cast<std::uintptr_t>(v.bytes().data()) -
                             reinterpret_cast<std::uintptr_t>(b.data());
        BOOST_TEST(address % ember::dtype_size(v.dtype()) == 0u, v.name());
    }
}

BOOST_AUTO_TEST_CASE(safe_open_gives_views_into_the_mapped_file)
{
    const fs::path path = fs::temp_directory_path() / "ember_views.safetensors";
    const auto sd = every_dtype();
    st::save(sd, path);
    st::safe_open f(path);
    BOOST_TEST(f.size() == sd.size());
    BOOST_TEST(f.contains("weight"));
    const auto v = f.get_view("weight");
    BOOST_TEST((v.dtype() == ember::dtype::float32));
    BOOST_TEST(v.shape() == (std::vector<std::int64_t>{2, 3}));
    BOOST_TEST(std::equal(v.bytes().begin(), v.bytes().end(), sd.at("weight").bytes().begin(),
                          sd.at("weight").bytes().end()));
    // Two lookups see the same bytes in place: nothing was copied.
    BOOST_TEST(f.get_view("weight").bytes().data() == v.bytes().data());
    BOOST_TEST((f.get_tensor("mask") == sd.at("mask")));
    BOOST_CHECK_THROW(f.get_view("absent"), ember::key_error);
    st::safe_open moved = std::move(f);
    BOOST_TEST(moved.get_view("weight").bytes().data() == v.bytes().data());
    fs::remove(path);
}

BOOST_AUTO_TEST_CASE(the_reserved_name_cannot_be_saved)
{
    ember::state_dict sd;
    sd.insert("__metadata__", host_tensor(ember::dtype::float32, {1}));
    BOOST_CHECK_THROW(st::to_bytes(sd), ember::value_error);
}

BOOST_AUTO_TEST_CASE(header_lengths_that_do_not_fit_are_refused)
{
    CHECK_FORMAT_ERROR(st::from_bytes(bytes(5)), "shorter than the 8-byte header length");
    bytes huge(16);
    huge[3] = std::byte{0x10}; // 2^28 bytes
    CHECK_FORMAT_ERROR(st::from_bytes(huge), "exceeds the limit of 100000000 bytes");
    bytes past = file_with("{}");
    past[0] = std::byte{50};
    CHECK_FORMAT_ERROR(st::from_bytes(past), "runs past the end of the 10-byte file");
    bytes all_ones(16, std::byte{0xff});
    CHECK_FORMAT_ERROR(st::from_bytes(all_ones), "exceeds the limit");
}

BOOST_AUTO_TEST_CASE(malformed_json_headers_are_refused)
{
    CHECK_HEADER_ERROR("x{}", 0, "does not start with '{'");
    CHECK_HEADER_ERROR("  ", 0, "does not start with '{'");
    CHECK_HEADER_ERROR("{\"a\xff\":1}", 0, "not valid UTF-8");
    CHECK_HEADER_ERROR("{", 0, "unexpected end");
    CHECK_HEADER_ERROR("{}x", 0, "trailing characters");
    CHECK_HEADER_ERROR("{\"a\":{\"dtype\":\"F32\",}}", 0, "expected '\"'");
    CHECK_HEADER_ERROR("{\"a\nb\":{}}", 0, "control character");
    CHECK_HEADER_ERROR("{\"a\\q\":{}}", 0, "invalid escape");
    CHECK_HEADER_ERROR("{\"\\ud800\":{}}", 0, "lone leading surrogate");
    CHECK_HEADER_ERROR("{\"a\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}", 4,
                       "leading zero");
    CHECK_HEADER_ERROR("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4,
                       "fractional number");
    CHECK_HEADER_ERROR("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
                       "negative number");
    CHECK_HEADER_ERROR(
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}", 4,
        "integer too large");
    auto nested = [](std::size_t depth)
    {
        return "{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4],\"x\":" +
               std::string(depth, '[') + std::string(depth, ']') + "}}";
    };
    CHECK_HEADER_ERROR(nested(200), 4, "nested deeper than 128");
    BOOST_TEST(st::from_bytes(file_with(nested(120), 4)).size() == 1u); // the reference's too
}

BOOST_AUTO_TEST_CASE(headers_the_reference_reads_load_whitespace_first_and_null_metadata)
{
    // The reference's check for a leading '{' is off, and its metadata is optional.
    BOOST_TEST(st::from_bytes(file_with(" \n{}")).empty());
    const bytes b = file_with("{\"__metadata__\":null," + entry("a", "I8", "[1]", 0, 1) + "}", 1);
    st::reader r(b);
    BOOST_TEST(r.metadata().empty());
    BOOST_TEST(r.keys() == std::vector<std::string>{"a"});
}

BOOST_AUTO_TEST_CASE(header_errors_quote_names_escaped_and_short)
{
    // An escaped NUL in a name cut the message short, where it is printed as a C string.
    CHECK_HEADER_ERROR("{" + entry("ab\\u0000cd\\nx", "F32", "[1]", 4, 8) + "}", 8,
                       "tensor 'ab\\x00cd\\x0ax' has data_offsets [4, 8], expected to start at 0");
    const std::string long_name(1 << 20, 'n');
    const std::string message = format_error_of(
        [&] { st::from_bytes(file_with("{" + entry(long_name, "F32", "[1]", 4, 8) + "}", 8)); });
    BOOST_TEST(message.size() < 300u, message.size());
    BOOST_TEST(message.find("(1048576 bytes)") != std::string::npos, message.substr(0, 300));
    std::string shape = "[1";
    for (int i = 0; i < 100000; ++i)
        shape += ",1";
    const std::string wide = format_error_of(
        [&] { st::from_bytes(file_with("{" + entry("a", "F32", shape + "]", 0, 8) + "}", 8)); });
    BOOST_TEST(wide.size() < 400u, wide.size());
    BOOST_TEST(wide.find(", ... (100001 dimensions)] needs 4 bytes") != std::string::npos, wide);
}

BOOST_AUTO_TEST_CASE(the_writer_refuses_names_and_metadata_that_are_not_utf8)
{
    // JSON is UTF-8: such a file loaded neither in ember nor in the reference.
    const fs::path path = fs::temp_directory_path() / "ember_not_utf8.safetensors";
    fs::remove(path);
    ember::state_dict sd;
    sd.insert("ab\xff", host_tensor(ember::dtype::float32, {1}));
    BOOST_CHECK_THROW(st::save(sd, path), ember::value_error);
    BOOST_CHECK_THROW(st::to_bytes(sd), ember::value_error);
    ember::state_dict good;
    good.insert("a", host_tensor(ember::dtype::float32, {1}));
    BOOST_CHECK_THROW(st::save(good, path, {{"k\xff", "v"}}), ember::value_error);
    BOOST_CHECK_THROW(st::save(good, path, {{"k", "\xc0\x80"}}), ember::value_error); // overlong
    BOOST_TEST(!fs::exists(path));
    st::save(good, path, {{"k", "\xc3\xa9"}});
    BOOST_TEST(st::safe_open(path).metadata().at("k") == "\xc3\xa9");
    fs::remove(path);
}

BOOST_AUTO_TEST_CASE(a_bool_byte_other_than_0_or_1_loads_but_never_reads_as_a_bool)
{
    // The reference loads such bytes; read into a C++ bool they would be undefined behaviour.
    bytes b = file_with("{" + entry("mask", "BOOL", "[3]", 0, 3) + "}", 3);
    b[b.size() - 3] = std::byte{1};
    b[b.size() - 1] = std::byte{2};
    const auto sd = st::from_bytes(b);
    const host_tensor& mask = sd.at("mask");
    BOOST_TEST(std::to_integer<int>(mask.bytes()[2]) == 2);
    BOOST_CHECK_EXCEPTION((mask.to_tensor<bool, 1>()), ember::value_error,
                          [](const ember::value_error& e)
                          {
                              return std::string(e.what()) ==
                                     "tensor: a bool tensor holds the byte 0x02 at element 2, "
                                     "expected 0 or 1";
                          });
    BOOST_CHECK_THROW(mask.data<bool>(), ember::value_error);
    BOOST_CHECK_THROW(ember::host_tensor_view(mask).data<bool>(), ember::value_error);
    auto out = ember::tensor<bool, 1>::from_shape({3});
    BOOST_CHECK_THROW(mask.copy_to(out, "mask"), ember::value_error);
    b[b.size() - 1] = std::byte{0};
    const auto fine = st::from_bytes(b).at("mask").to_tensor<bool, 1>();
    BOOST_TEST((fine == ember::tensor<bool, 1>{true, false, false}));
}

BOOST_AUTO_TEST_CASE(duplicate_keys_and_fields_are_refused)
{
    CHECK_HEADER_ERROR("{" + entry("a", "F32", "[]", 0, 4) + "," + entry("a", "F32", "[]", 4, 8) +
                           "}",
                       8, "duplicate tensor name 'a'");
    CHECK_HEADER_ERROR(
        "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,"
        "4]}}",
        4, "has the field 'dtype' twice");
    CHECK_HEADER_ERROR("{\"__metadata__\":{},\"__metadata__\":{}}", 0,
                       "duplicate key '__metadata__'");
    CHECK_HEADER_ERROR("{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0,
                       "duplicate __metadata__ key 'k'");
    CHECK_HEADER_ERROR("{\"__metadata__\":{\"k\":1}}", 0, "is not a string");
}

BOOST_AUTO_TEST_CASE(tensor_entries_must_be_complete_and_of_known_dtypes)
{
    CHECK_HEADER_ERROR("{\"a\":{\"dtype\":\"F32\",\"shape\":[]}}", 0, "lacks 'data_offsets'");
    CHECK_HEADER_ERROR("{" + entry("a", "U32", "[]", 0, 4) + "}", 4, "dtype 'U32'");
    CHECK_HEADER_ERROR("{" + entry("a", "F8_E4M3", "[]", 0, 1) + "}", 1,
                       "tensor 'a' has dtype 'F8_E4M3', which ember does not support");
    // Unknown fields are ignored, as the reference ignores them.
    const auto sd = st::from_bytes(
        file_with("{\"a\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[0,2],\"x\":{\"y\":[1,"
                  "2.5e3,null,true]}}}",
                  2));
    BOOST_TEST(sd.at("a").numel() == 2u);
}

BOOST_AUTO_TEST_CASE(offsets_must_tile_the_data_exactly)
{
    CHECK_HEADER_ERROR("{" + entry("a", "F32", "[1]", 4, 8) + "}", 8,
                       "expected to start at 0 (gap)");
    CHECK_HEADER_ERROR("{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[1]", 4, 8) +
                           "}",
                       8, "(overlap)");
    CHECK_HEADER_ERROR("{" + entry("a", "F32", "[1]", 0, 4) + "," + entry("b", "F32", "[0]", 8, 4) +
                           "}",
                       8, "(reversed)");
    CHECK_HEADER_ERROR("{" + entry("a", "F32", "[2]", 0, 4) + "}", 4, "needs 8 bytes");
    CHECK_HEADER_ERROR("{" + entry("a", "F32", "[1]", 0, 4) + "}", 12, "(trailing bytes)");
    CHECK_HEADER_ERROR("{" + entry("a", "F32", "[3]", 0, 12) + "}", 4, "(truncated)");
    CHECK_HEADER_ERROR("{" + entry("a", "F32", "[4611686018427387904,4611686018427387904]", 0, 4) +
                           "}",
                       4, "is too large");
    // Empty tensors share an offset; zero-size data is exact.
    const auto sd = st::from_bytes(file_with("{" + entry("a", "F32", "[0]", 0, 0) + "," +
                                             entry("b", "I64", "[0,3]", 0, 0) + "}"));
    BOOST_TEST(sd.size() == 2u);
}

BOOST_AUTO_TEST_CASE(load_only_accepts_a_state_dict_and_reports_missing_files)
{
    BOOST_CHECK_THROW(st::load<ember::state_dict>(data_folder() / "safetensors/absent"),
                      ember::io_error);
    // A PyTorch file is not a safetensors file.
    CHECK_FORMAT_ERROR(
        st::load<ember::state_dict>(data_folder() / "pytorch/torch-1.13/linear_model.pth"),
        "header");
}

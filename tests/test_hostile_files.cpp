// Hostile files: bytes built to lie about sizes, shapes, ranks, dtypes, keys and versions, with
// valid checksums so the parser itself is what meets them. Each must fail with a specific
// ember::format_error, with memory bounded: this test binary counts every allocation and fails
// any single one over 64 MiB, and a child process loads the whole corpus under a 512 MiB
// address-space limit. Inputs the fuzzers found live in tests/data/regressions/.
#include "hostile_bytes.hpp"
#include "test_files.hpp"

#include <ember/serialize/cereal.hpp>
#include <ember/serialize/file.hpp>
#include <ember/serialize/pytorch.hpp>
#include <ember/serialize/safetensors.hpp>

#include <cereal/archives/binary.hpp>
#include <cereal/archives/json.hpp>
#include <cereal/archives/portable_binary.hpp>
#include <cereal/archives/xml.hpp>

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <new>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <vector>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define EMBER_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMBER_TEST_ASAN 1
#endif
#endif

using namespace ember;
using hostile::payload;
namespace fs = std::filesystem;
using test::temp_dir;

// ---- allocation accounting ---------------------------------------------------------------
// While armed, any single allocation over the limit is refused (bad_alloc, which the checks
// below report as a failure) and recorded; the total allocated is summed too.

namespace
{
constexpr std::size_t allocation_limit = std::size_t{64} << 20;
std::atomic<bool> g_armed{false};
std::atomic<std::size_t> g_largest{0};
std::atomic<std::size_t> g_total{0};
std::atomic<std::size_t> g_refused{0};
char* volatile g_escaped = nullptr; // the_allocation_watch_catches_a_large_allocation
} // namespace

namespace
{
void watch(std::size_t n)
{
    if (g_armed.load(std::memory_order_relaxed))
    {
        std::size_t seen = g_largest.load(std::memory_order_relaxed);
        while (n > seen && !g_largest.compare_exchange_weak(seen, n))
        {
        }
        g_total.fetch_add(n, std::memory_order_relaxed);
        if (n > allocation_limit)
        {
            g_refused.fetch_add(1);
            throw std::bad_alloc();
        }
    }
}
} // namespace

[[gnu::noinline]] void* operator new(std::size_t n)
{
    watch(n);
    if (void* p = std::malloc(n == 0 ? 1 : n))
        return p;
    throw std::bad_alloc();
}
// The aligned form too: large host tensors are allocated with it (detail/tensor_allocator.hpp).
[[gnu::noinline]] void* operator new(std::size_t n, std::align_val_t al)
{
    watch(n);
    const auto a = static_cast<std::size_t>(al);
    if (void* p = std::aligned_alloc(a, (n + a - 1) / a * a))
        return p;
    throw std::bad_alloc();
}
void operator delete(void* p, std::align_val_t) noexcept
{
    std::free(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept
{
    std::free(p);
}
[[gnu::noinline]] void* operator new[](std::size_t n)
{
    return ::operator new(n);
}
[[gnu::noinline]] void operator delete(void* p) noexcept
{
    std::free(p);
}
void operator delete[](void* p) noexcept
{
    std::free(p);
}
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept
{
    std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept
{
    std::free(p);
}

namespace
{

struct allocation_watch
{
    allocation_watch()
    {
        g_largest = 0;
        g_total = 0;
        g_refused = 0;
        g_armed = true;
    }
    ~allocation_watch() { g_armed = false; }
};

void write_file(const fs::path& p, std::span<const std::byte> b)
{
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

/// Whether `text` holds every part of `pattern` (parts separated by "…"), in order. Messages
/// gain context as they pass up (the key, the offset), so a pattern names only what matters.
bool contains(const std::string& text, const std::string& pattern)
{
    const std::string gap = "…";
    std::size_t at = 0, from = 0;
    for (;;)
    {
        const std::size_t end = pattern.find(gap, from);
        const std::string part = pattern.substr(from, end == std::string::npos ? end : end - from);
        at = text.find(part, at);
        if (at == std::string::npos)
            return false;
        at += part.size();
        if (end == std::string::npos)
            return true;
        from = end + gap.size();
    }
}

constexpr std::uint64_t u64_max = std::numeric_limits<std::uint64_t>::max();
constexpr std::int64_t i64_min = std::numeric_limits<std::int64_t>::min();
constexpr std::uint32_t future_container = detail::container_version + 1;

enum class content
{
    state_dict,
    optimizer
};

/// A hostile file: its bytes, what it claims to hold, and the words its error must contain.
struct hostile_file
{
    std::string name;
    content kind;
    std::vector<std::byte> bytes;
    std::string expected;
    bool container_level = false; // the lie is in the ember header, not the cereal payload
};

std::vector<std::byte> sd_file(const payload& p, hostile::seal_options o = {})
{
    return hostile::seal<state_dict>(p, o);
}
std::vector<std::byte> opt_file(const payload& p, hostile::seal_options o = {})
{
    return hostile::seal<optim::optimizer_state>(p, o);
}

/// A state_dict with one float32 tensor of `shape` and no data: enough to reach every shape
/// check (data comes after them).
payload one_tensor(const std::vector<std::int64_t>& shape, std::size_t data_bytes = 0,
                   std::string_view dtype = "float32")
{
    payload p = hostile::state_dict_start(1);
    p.str("w").u32(1).tensor(dtype, shape, data_bytes);
    return p;
}

/// The start of an optimizer state: stream flag, version, `n` per-parameter states.
payload optimizer_start(std::uint64_t n, std::uint32_t version = 1)
{
    payload p;
    p.u8(1).u32(version).u64(n);
    return p;
}

std::vector<hostile_file> state_dict_corpus()
{
    std::vector<hostile_file> c;
    auto add = [&](std::string name, std::vector<std::byte> bytes, std::string expected) {
        c.push_back({std::move(name), content::state_dict, std::move(bytes), std::move(expected)});
    };
    auto add_container = [&](std::string name, std::vector<std::byte> bytes, std::string expected)
    {
        c.push_back(
            {std::move(name), content::state_dict, std::move(bytes), std::move(expected), true});
    };

    // -- the container --
    add_container("zero-length file", {}, "file is 0 bytes, shorter than the 40-byte ember header");
    {
        auto f = sd_file(payload{});
        add_container("header only, declaring an empty payload", f,
                      "payload is malformed near offset 40: Failed to read 1 bytes");
        f = sd_file(payload{}, {.declared_size = 100});
        add_container(
            "header only, declaring a payload", f,
            "header declares a 100-byte payload at offset 40, the file has 0 (truncated)");
    }
    add_container("payload size near 2^64",
                  sd_file(hostile::state_dict_start(0), {.declared_size = u64_max}),
                  "header declares a 18446744073709551615-byte payload");
    add_container("future container version",
                  sd_file(hostile::state_dict_start(0),
                          {.container_version = future_container, .writer_version = 20304}),
                  "written in container version " + std::to_string(future_container) +
                      " by ember 2.3.4; this build (ember");
    add_container("container version near 2^32",
                  sd_file(hostile::state_dict_start(0), {.container_version = 0xffffffffu}),
                  "written in container version 4294967295");
    add_container("unknown archive kind",
                  sd_file(hostile::state_dict_start(0), {.archive_kind = 7}),
                  "unknown archive kind…at offset 20");
    {
        auto f = sd_file(hostile::state_dict_start(0));
        f.push_back(std::byte{0});
        add_container("a byte after the declared payload", f, "(trailing bytes)");
    }
    {
        payload p = hostile::state_dict_start(0);
        p.u64(0).u64(0);
        add("trailing bytes inside the declared payload", sd_file(p),
            "16 unread bytes after the payload's end");
    }
    add_container("an optimizer state where a state_dict is expected",
                  opt_file(optimizer_start(0).u64(0)), "content kind 2…not a state_dict");

    // -- lengths near 2^64 --
    {
        payload p = hostile::state_dict_start(1);
        p.u64(u64_max);
        add("key length 2^64-1", sd_file(p),
            "key declares 18446744073709551615 elements of 1 bytes, more than the");
        p = hostile::state_dict_start(1);
        p.u64(std::uint64_t{1} << 63);
        add("key length 2^63", sd_file(p), "key declares 9223372036854775808");
        p = hostile::state_dict_start(1);
        p.u64(1000).raw("w", 1);
        add("key length past the end", sd_file(p), "key declares 1000 elements");
    }
    {
        payload p = hostile::state_dict_start(1);
        p.str("w").u32(1).u64(u64_max - 7);
        add("dtype length near 2^64", sd_file(p),
            "tensor dtype declares 18446744073709551608 elements");
    }
    {
        payload p = hostile::state_dict_start(u64_max);
        add("entry count 2^64-1 with no entries", sd_file(p), "Failed to read 8 bytes");
        p = hostile::state_dict_start(u64_max);
        p.str("w").u32(1).tensor("float32", {1}, 4);
        add("entry count 2^64-1 with one entry", sd_file(p), "Failed to read 8 bytes");
    }

    // -- ranks --
    add("rank 2^64-1",
        sd_file(hostile::state_dict_start(1).str("w").u32(1).str("float32").u64(u64_max)),
        "tensor rank 18446744073709551615 exceeds 64");
    add("rank 2^63",
        sd_file(hostile::state_dict_start(1).str("w").u32(1).str("float32").u64(std::uint64_t{1}
                                                                                << 63)),
        "tensor rank 9223372036854775808 exceeds 64");
    add("rank 65", sd_file(one_tensor(std::vector<std::int64_t>(65, 1), 4)),
        "tensor rank 65 exceeds 64");
    add("rank 64 claiming more extents than the file has",
        sd_file(hostile::state_dict_start(1).str("w").u32(1).str("float32").u64(64).i64(1)),
        "tensor shape declares 64 elements of 8 bytes, more than the");

    // -- shapes --
    add("extents whose product overflows 64 bits",
        sd_file(one_tensor({std::int64_t{1} << 62, std::int64_t{1} << 62})),
        "tensor shape [4611686018427387904, 4611686018427387904] is too large");
    add("element count whose byte size overflows",
        sd_file(one_tensor({std::int64_t{1} << 32, std::int64_t{1} << 31})), "is too large");
    add("rank 64 of extent 2 (2^64 elements)",
        sd_file(one_tensor(std::vector<std::int64_t>(64, 2))), "is too large");
    add("4 TiB of data declared in a small file",
        sd_file(one_tensor({std::int64_t{1} << 20, std::int64_t{1} << 20})),
        "tensor of shape [1048576, 1048576]…declares 1099511627776 elements of 4 bytes, more "
        "than the");
    add("negative extent", sd_file(one_tensor({-1})), "tensor shape [-1] has a negative extent");
    add("two negative extents with a positive product", sd_file(one_tensor({-2, -3}, 24)),
        "has a negative extent");
    add("extent -2^63", sd_file(one_tensor({i64_min})), "has a negative extent");
    add("zero extent beside an overflowing one is empty, then the data length is wrong",
        sd_file(one_tensor({0, std::int64_t{1} << 62, std::int64_t{1} << 62}, 4)),
        "4 unread bytes after the payload's end");

    // -- keys, dtypes, data --
    {
        payload p = hostile::state_dict_start(2);
        p.str("w").u32(1).tensor("float32", {1}, 4);
        p.str("w").tensor("float32", {1}, 4);
        add("duplicate keys", sd_file(p), "duplicate key 'w'");
    }
    add("a dtype that does not exist", sd_file(one_tensor({1}, 16, "float128")),
        "unknown dtype 'float128'");
    add("an empty dtype", sd_file(one_tensor({1}, 4, "")), "unknown dtype ''");
    add("a dtype with an embedded NUL",
        sd_file(one_tensor({1}, 4, std::string_view("float32\0", 8))), "unknown dtype 'float32");
    add("float64 data cut to float32 length", sd_file(one_tensor({4}, 16, "float64")),
        "Failed to read 32 bytes from input stream! Read 16");
    add("float32 tensor followed by float64-sized data", sd_file(one_tensor({2}, 16, "float32")),
        "8 unread bytes after the payload's end");
    add("scalar without its data", sd_file(one_tensor({}, 0, "int64")), "Failed to read 8 bytes");

    // -- versions --
    add("future dictionary record version", sd_file(hostile::state_dict_start(0, 99)),
        "dictionary record version 99 is newer than this build reads");
    {
        payload p = hostile::state_dict_start(1);
        p.str("w").u32(99).tensor("float32", {1}, 4);
        add("future tensor record version", sd_file(p),
            "tensor record version 99 is newer than this build reads");
        p = hostile::state_dict_start(1);
        p.str("w").u32(0xffffffffu).tensor("float32", {1}, 4);
        add("tensor record version 2^32-1", sd_file(p), "tensor record version 4294967295");
    }
    {
        // The big-endian flag on little-endian data: every field reads byte-swapped.
        payload p;
        p.u8(0).u32(1).u64(0);
        add("big-endian flag on little-endian data", sd_file(p),
            "dictionary record version 16777216 is newer");
    }
    return c;
}

std::vector<hostile_file> optimizer_corpus()
{
    std::vector<hostile_file> c;
    auto add = [&](std::string name, const payload& p, std::string expected) {
        c.push_back({std::move(name), content::optimizer, opt_file(p), std::move(expected)});
    };

    c.push_back({"a state_dict where an optimizer state is expected", content::optimizer,
                 sd_file(hostile::state_dict_start(0)), "content kind 1…not a", true});

    add("future optimizer state version", optimizer_start(0, 99).u64(0),
        "optimizer state version 99 is newer than this build reads");
    add("2^64-1 parameter states", optimizer_start(u64_max), "Failed to read 8 bytes");
    {
        payload p = optimizer_start(2);
        p.i64(0).u32(1).u64(0); // parameter 0, empty entries
        p.i64(0).u64(0);        // parameter 0 again
        p.u64(0);
        add("a parameter listed twice", p, "optimizer state lists parameter 0 twice");
    }
    {
        payload p = optimizer_start(1);
        p.i64(0).u32(1).u64(1).str("momentum_buffer").u32(1).str("complex");
        add("an optimizer value kind that does not exist", p,
            "unknown optimizer value kind 'complex'");
        p = optimizer_start(1);
        p.i64(0).u32(1).u64(1).str("momentum_buffer").u32(1).u64(u64_max);
        add("value kind length 2^64-1", p, "optimizer value kind declares 18446744073709551615");
        p = optimizer_start(1);
        p.i64(0).u32(1).u64(1).str("momentum_buffer").u32(99).str("none");
        add("future optimizer value version", p, "optimizer value version 99 is newer");
        p = optimizer_start(1);
        p.i64(0).u32(1).u64(1).str("momentum_buffer").u32(1).str("tensor").u32(1).str("float32");
        p.u64(100);
        add("tensor of rank 100 in an optimizer state", p, "tensor rank 100 exceeds 64");
        p = optimizer_start(1);
        p.i64(0).u32(1).u64(1).str("betas").u32(1).str("floats").u64(std::uint64_t{1} << 61);
        add("2^61 floats in an option list", p,
            "optimizer option list declares 2305843009213693952 elements of 8 bytes");
    }
    add("2^64-1 parameter groups", optimizer_start(0).u64(u64_max),
        "optimizer param_groups declares 18446744073709551615");
    {
        payload p = optimizer_start(0).u64(1).u32(1).u32(1).u64(0).u64(std::uint64_t{1} << 61);
        add("2^61 parameter indices", p, "parameter group declares 2305843009213693952");
        p = optimizer_start(0).u64(1).u32(5);
        add("future parameter group version", p, "parameter group version 5 is newer");
        p = optimizer_start(0).u64(1).u32(1).u32(1).u64(2);
        p.str("lr").u32(1).str("float").f64(0.1);
        p.str("lr").str("float").f64(0.2);
        add("duplicate option names", p, "duplicate key 'lr'");
    }
    return c;
}

/// Loads `f` from a file and returns the format_error's message; records a failure for any
/// other outcome, and for any allocation over the limit.
void check_rejected(const fs::path& dir, const hostile_file& f)
{
    BOOST_TEST_CONTEXT(f.name)
    {
        const fs::path path = dir / "hostile.ember";
        write_file(path, f.bytes);
        std::string message;
        std::string wrong;
        {
            allocation_watch watch;
            try
            {
                if (f.kind == content::state_dict)
                    (void)load<state_dict>(path);
                else
                    (void)load<optim::optimizer_state>(path);
                wrong = "loaded without an error";
            }
            catch (const format_error& e)
            {
                message = e.what();
            }
            catch (const std::exception& e)
            {
                wrong = std::string("threw ") + typeid(e).name() + ": " + e.what();
            }
        }
        BOOST_TEST(wrong.empty(), wrong);
        BOOST_TEST_INFO("message: " << message);
        BOOST_TEST(contains(message, f.expected));
        BOOST_TEST(contains(message, path.string()));
        BOOST_TEST(g_refused.load() == 0u,
                   "an allocation of " << g_largest.load() << " bytes was attempted");
        BOOST_TEST(g_total.load() < (std::size_t{1} << 20),
                   "loading a " << f.bytes.size() << "-byte file allocated " << g_total.load()
                                << " bytes in all");
    }
}

std::vector<std::byte> payload_of(const hostile_file& f)
{
    return {f.bytes.begin() + static_cast<std::ptrdiff_t>(detail::header_size), f.bytes.end()};
}

/// Loads a T from `bytes` with cereal archive In under a byte budget; returns the message of
/// the ember::format_error or cereal::Exception, failing the test on anything else.
template <class In, class T>
std::string raw_load_error(std::span<const std::byte> bytes, bool budget = true)
{
    detail::span_source source(bytes);
    std::istream is(&source);
    allocation_watch watch;
    try
    {
        T obj{};
        std::optional<detail::scoped_load_budget> limit;
        if (budget)
            limit.emplace(bytes.size());
        In ar(is);
        ar(obj);
        if (source.remaining() != 0)
            return "trailing";
        return "loaded";
    }
    catch (const format_error& e)
    {
        return std::string("format_error: ") + e.what();
    }
    catch (const cereal::Exception& e)
    {
        return std::string("cereal: ") + e.what();
    }
    catch (const std::exception& e)
    {
        return std::string("WRONG ") + typeid(e).name() + ": " + e.what();
    }
}

fs::path regressions_folder()
{
    if (const char* env = std::getenv("EMBER_REGRESSIONS"))
        return env;
    // __FILE__ is relative to the build root, the parent of this executable's folder.
    fs::path source = __FILE__;
    if (source.is_relative())
        source = fs::read_symlink("/proc/self/exe").parent_path().parent_path() / source;
    return source.parent_path() / "data" / "regressions";
}

const char* const regression_outcomes[] = {"format_error",
                                           "loaded without an error",
                                           "threw another exception",
                                           "attempted an allocation over 64 MiB",
                                           "a name this test does not understand",
                                           "?"};

template <class T>
T load_with(const std::string& loader, const fs::path& path)
{
    if (loader == "pytorch")
        return pytorch::load<T>(path);
    if constexpr (std::is_same_v<T, state_dict>)
        if (loader == "safetensors")
            return safetensors::load<T>(path);
    if constexpr (!std::is_same_v<T, value>)
        if (loader == "ember")
            return load<T>(path);
    throw std::invalid_argument("no loader '" + loader + "' for this type");
}

/// Loads a regression file as its name says (in the child process); the exit code indexes
/// regression_outcomes.
int load_regression(const fs::path& path)
{
    const std::string name = path.filename().string();
    const auto dash = name.find('-');
    const auto dash2 = name.find('-', dash + 1);
    if (dash == std::string::npos || dash2 == std::string::npos)
        return 4;
    const std::string loader = name.substr(0, dash);
    const std::string type = name.substr(dash + 1, dash2 - dash - 1);
    allocation_watch watch;
    try
    {
        if (type == "state_dict")
            (void)load_with<state_dict>(loader, path);
        else if (type == "optimizer")
            (void)load_with<optim::optimizer_state>(loader, path);
        else if (type == "checkpoint")
            (void)load_with<checkpoint>(loader, path);
        else if (type == "value")
            (void)load_with<value>(loader, path);
        else
            return 4;
        return 1;
    }
    catch (const format_error&)
    {
        return g_refused.load() == 0 ? 0 : 3;
    }
    catch (const std::invalid_argument& e)
    {
        std::fprintf(stderr, "%s: %s\n", name.c_str(), e.what());
        return 4;
    }
    catch (const std::exception& e)
    {
        std::fprintf(stderr, "%s: %s: %s\n", name.c_str(), typeid(e).name(), e.what());
        return g_refused.load() == 0 ? 2 : 3;
    }
}

} // namespace

BOOST_AUTO_TEST_CASE(the_allocation_watch_catches_a_large_allocation)
{
    // Proves the accounting the other tests rely on is live.
    allocation_watch watch;
    // The vector's memory escapes, so that the compiler may not leave the allocation out (Clang
    // does, for a vector nothing reads).
    const auto allocate = [] { g_escaped = std::vector<char>(allocation_limit + 1).data(); };
    BOOST_CHECK_THROW(allocate(), std::bad_alloc);
    BOOST_TEST(g_refused.load() == 1u);
    BOOST_TEST(g_largest.load() == allocation_limit + 1);
}

BOOST_AUTO_TEST_CASE(every_hostile_state_dict_file_is_a_specific_format_error)
{
    temp_dir dir;
    for (const auto& f : state_dict_corpus())
        check_rejected(dir.path, f);
}

BOOST_AUTO_TEST_CASE(every_hostile_optimizer_file_is_a_specific_format_error)
{
    temp_dir dir;
    for (const auto& f : optimizer_corpus())
        check_rejected(dir.path, f);
}

BOOST_AUTO_TEST_CASE(the_builder_writes_what_ember_writes)
{
    // The corpus is only hostile where it means to be: built without lies in the record version
    // this build writes, the bytes are exactly what ember::save writes; in version 1, they load.
    state_dict expected;
    expected.insert("w", host_tensor(dtype::float32, {2}));
    expected.insert("n", host_tensor(dtype::int64, {}));
    for (auto& [key, t] : expected)
        std::fill(t.bytes().begin(), t.bytes().end(), std::byte{0x3f});
    temp_dir dir;
    save(expected, dir.path / "saved.ember");
    for (std::uint32_t version : {std::uint32_t{1}, hostile::tensor_record_version()})
    {
        BOOST_TEST_CONTEXT("tensor record version " << version)
        {
            payload p = hostile::state_dict_start(2);
            p.str("w").u32(version).tensor("float32", {2}, 8, version);
            p.str("n").tensor("int64", {}, 8, version);
            write_file(dir.path / "built.ember", hostile::seal<state_dict>(p));
            BOOST_TEST((load<state_dict>(dir.path / "built.ember") == expected));
            if (version == hostile::tensor_record_version())
                BOOST_TEST((detail::read_file(dir.path / "saved.ember") ==
                            detail::read_file(dir.path / "built.ember")));
        }
    }
}

namespace
{
/// `file` (a container) with the byte at payload offset `at` set to `byte`, resealed.
template <class T>
std::vector<std::byte> with_payload_byte(const std::vector<std::byte>& file, std::size_t at,
                                         std::uint8_t byte)
{
    payload p;
    p.bytes.assign(file.begin() + static_cast<std::ptrdiff_t>(detail::header_size), file.end());
    p.bytes.at(at) = std::byte{byte};
    return hostile::seal<T>(p);
}

/// Payload offset of the first `marker` after `from`.
std::size_t find_in_payload(const std::vector<std::byte>& file, std::string_view marker,
                            std::size_t from = 0)
{
    const auto* begin = reinterpret_cast<const char*>(file.data()) + detail::header_size;
    const std::string_view text(begin, file.size() - detail::header_size);
    const auto at = text.find(marker, from);
    BOOST_REQUIRE_MESSAGE(at != std::string_view::npos, "no '" << marker << "' in the payload");
    return at;
}
} // namespace

BOOST_AUTO_TEST_CASE(a_bool_byte_other_than_0_or_1_is_a_format_error)
{
    // Found by fuzz_ember_payload and fuzz_cereal_binary (tests/data/regressions/*bool*): a
    // binary archive's bool is one byte, and a byte other than 0 or 1 read into a bool is
    // undefined behaviour. With valid checksums such a file must still be refused.
    temp_dir dir;
    std::vector<hostile_file> files;

    optim::optimizer_state opt;
    optim::param_group_state g;
    g.options.insert("nesterov", false);
    opt.param_groups.push_back(g);
    const auto opt_file = detail::encode(opt, file_format::ember);
    const std::size_t opt_at = find_in_payload(opt_file, "bool") + 4; // after the kind "bool"
    files.push_back({"optimizer option", content::optimizer,
                     with_payload_byte<optim::optimizer_state>(opt_file, opt_at, 2), "bool"});

    checkpoint c;
    c.hyperparameters.insert("marker_flag", true);
    generator_state gs;
    gs.seed = 0x0123456789abcdefu;
    gs.has_next_normal = true;
    c.generators.insert("default", gs);
    const auto ck_file = detail::encode(c, file_format::ember);
    // A value is its kind code (1 for bool), then the byte.
    std::size_t value_at = find_in_payload(ck_file, "marker_flag") + 11;
    while (ck_file[detail::header_size + value_at] != std::byte{1} ||
           ck_file[detail::header_size + value_at + 1] != std::byte{1})
        ++value_at;
    std::vector<std::byte> ck_bad = with_payload_byte<checkpoint>(ck_file, value_at + 1, 2);
    // (the content kind of a checkpoint file is not a state_dict's: load it as a checkpoint)
    const char seed_bytes[] = {'\xef', '\xcd', '\xab', '\x89', 'g', 'E', '#', '\x01'};
    const std::size_t generator_at =
        find_in_payload(ck_file, std::string_view(seed_bytes, 8)) + 8 + 624 * 4 + 4;
    BOOST_REQUIRE(ck_file[detail::header_size + generator_at] == std::byte{1});
    std::vector<std::byte> gen_bad = with_payload_byte<checkpoint>(ck_file, generator_at, 7);

    for (const auto& [name, bytes] : {std::pair{"checkpoint hyperparameter", ck_bad},
                                      std::pair{"generator has_next_normal", gen_bad}})
    {
        BOOST_TEST_CONTEXT(name)
        {
            const fs::path path = dir.path / "bool.ember";
            write_file(path, bytes);
            std::string outcome;
            try
            {
                (void)load<checkpoint>(path);
                outcome = "loaded";
            }
            catch (const format_error& e)
            {
                outcome = e.what();
            }
            BOOST_TEST(contains(outcome, "bool"), outcome);
        }
    }
    for (const auto& f : files)
        check_rejected(dir.path, f);
}

BOOST_AUTO_TEST_CASE(raw_portable_binary_archives_reject_the_same_payloads_within_the_budget)
{
    // The cereal path users take with their own archives: the same lies, caught by the same
    // checks (truncation shows up as cereal's own exception there).
    for (const auto& f : state_dict_corpus())
    {
        if (f.container_level)
            continue;
        BOOST_TEST_CONTEXT(f.name)
        {
            const auto bytes = payload_of(f);
            const std::string got =
                raw_load_error<cereal::PortableBinaryInputArchive, state_dict>(bytes);
            BOOST_TEST_INFO("got: " << got);
            BOOST_TEST(got.rfind("WRONG", 0) != 0u);
            BOOST_TEST(got != "loaded");
            if (contains(f.expected, "unread bytes"))
                BOOST_TEST(got == "trailing");
            else
                BOOST_TEST(contains(got, f.expected));
            BOOST_TEST(g_refused.load() == 0u);
        }
    }
    for (const auto& f : optimizer_corpus())
    {
        if (f.container_level)
            continue;
        BOOST_TEST_CONTEXT(f.name)
        {
            const std::string got =
                raw_load_error<cereal::PortableBinaryInputArchive, optim::optimizer_state>(
                    payload_of(f));
            BOOST_TEST_INFO("got: " << got);
            BOOST_TEST(contains(got, f.expected));
            BOOST_TEST(g_refused.load() == 0u);
        }
    }
}

BOOST_AUTO_TEST_CASE(raw_binary_archives_reject_huge_sizes_within_the_budget)
{
    // cereal's plain binary archive has no stream flag: the same records without the first byte.
    for (const auto& [payload, expected] : std::vector<std::pair<payload, std::string>>{
             {one_tensor({std::int64_t{1} << 20, std::int64_t{1} << 20}), "declares 1099511627776"},
             {one_tensor({std::int64_t{1} << 62, std::int64_t{1} << 62}), "is too large"},
             {one_tensor(std::vector<std::int64_t>(65, 1)), "tensor rank 65 exceeds 64"},
             {hostile::state_dict_start(1).u64(u64_max), "key declares"},
         })
    {
        std::vector<std::byte> bytes(payload.bytes.begin() + 1, payload.bytes.end());
        const std::string got = raw_load_error<cereal::BinaryInputArchive, state_dict>(bytes);
        BOOST_TEST_INFO("got: " << got);
        BOOST_TEST(contains(got, expected));
        BOOST_TEST(g_refused.load() == 0u);
    }
}

BOOST_AUTO_TEST_CASE(a_raw_load_without_a_budget_is_what_the_budget_prevents)
{
    // Without scoped_load_budget a binary archive believes a 4 TiB tensor (cereal cannot know
    // how long a stream is): the allocation is attempted, and refused here by the watch. This
    // is why ember's file loaders and the fuzz targets always set one.
    payload p = one_tensor({std::int64_t{1} << 20, std::int64_t{1} << 20});
    const std::string got =
        raw_load_error<cereal::PortableBinaryInputArchive, state_dict>(p.bytes, false);
    BOOST_TEST(contains(got, "bad_alloc"));
    BOOST_TEST(g_refused.load() == 1u);
}

BOOST_AUTO_TEST_CASE(hostile_generator_states_are_format_errors)
{
    std::vector<std::byte> bytes;
    {
        detail::vector_sink sink(bytes);
        std::ostream os(&sink);
        cereal::PortableBinaryOutputArchive ar(os);
        ar(generator_state{});
    }
    // stream flag, version, seed, 624 words, then the index
    constexpr std::size_t index_at = 1 + 4 + 8 + 624 * 4;
    BOOST_REQUIRE(bytes.size() == index_at + 4 + 1 + 8);
    detail::put_le<std::uint32_t>(bytes.data() + index_at, 625);
    BOOST_TEST(contains(raw_load_error<cereal::PortableBinaryInputArchive, generator_state>(bytes),
                        "generator state index 625 is past the end of its 624-word state"));
    bytes[1] = std::byte{99}; // the record version, right after the stream flag
    BOOST_TEST(contains(raw_load_error<cereal::PortableBinaryInputArchive, generator_state>(bytes),
                        "generator state version 99 is newer than this build reads"));
}

namespace
{
std::string json_tensor(const std::string& dtype, const std::string& shape, const std::string& data,
                        int version = 1)
{
    return R"({"value": {"cereal_class_version": 1, "items": [{"key": "w", "value": {)"
           R"("cereal_class_version": )" +
           std::to_string(version) + R"(, "dtype": ")" + dtype + R"(", "shape": [)" + shape +
           R"(], "data": [)" + data + "]}}]}}";
}

std::string json_load_error(const std::string& text)
{
    std::istringstream is(text);
    allocation_watch watch;
    try
    {
        cereal::JSONInputArchive ar(is);
        state_dict sd;
        ar(cereal::make_nvp("value", sd));
        return "loaded";
    }
    catch (const format_error& e)
    {
        return std::string("format_error: ") + e.what();
    }
    catch (const cereal::Exception& e)
    {
        return std::string("cereal: ") + e.what();
    }
    catch (const std::exception& e)
    {
        return std::string("WRONG ") + typeid(e).name() + ": " + e.what();
    }
}
} // namespace

BOOST_AUTO_TEST_CASE(hostile_json_is_a_format_error)
{
    // Text archives count elements instead of declaring sizes, so the lies are in the counts.
    std::string ones_65;
    for (int i = 0; i < 65; ++i)
        ones_65 += i ? ", 1" : "1";
    BOOST_TEST(json_load_error(json_tensor("float32", "2", "1.0, 2.0")) == "loaded");
    for (
        const auto& [text, expected] : std::vector<std::pair<std::string, std::string>>{
            {json_tensor("float32", "1048576, 1048576", "1.0"),
             "tensor of shape [1048576, 1048576]…holds 1 elements, expected 1099511627776"},
            {json_tensor("float32", "4611686018427387904, 4611686018427387904", ""),
             "is too large"},
            {json_tensor("float32", "-1", ""), "has a negative extent"},
            {json_tensor("float32", ones_65, "1.0"), "tensor rank 65 exceeds 64"},
            {json_tensor("float64", "3", "1.0, 2.0"), "holds 2 elements, expected 3"},
            {json_tensor("float128", "1", "1.0"), "unknown dtype 'float128'"},
            {json_tensor("float32", "1", "1.0", 99), "tensor record version 99 is newer"},
            {R"({"value": {"cereal_class_version": 1, "items": [)"
             R"({"key": "w", "value": {"cereal_class_version": 1, "dtype": "int8", "shape": [], "data": [1]}},)"
             R"({"key": "w", "value": {"dtype": "int8", "shape": [], "data": [1]}}]}})",
             "duplicate key 'w'"},
            {R"({"value": {"cereal_class_version": 1, "items": [{"key": "w", "value": {"cer)",
             "cereal: "}, // cut short: cereal's parser reports it
        })
    {
        const std::string got = json_load_error(text);
        BOOST_TEST_INFO("got: " << got);
        BOOST_TEST(contains(got, expected));
        BOOST_TEST(g_refused.load() == 0u);
    }
}

BOOST_AUTO_TEST_CASE(hostile_xml_is_a_format_error)
{
    auto xml = [](const std::string& shape, const std::string& data)
    {
        return R"(<?xml version="1.0" encoding="utf-8"?><cereal><value><cereal_class_version>1)"
               R"(</cereal_class_version><items><value0><key>w</key><value><cereal_class_version>)"
               R"(1</cereal_class_version><dtype>float32</dtype><shape>)" +
               shape + "</shape><data>" + data +
               "</data></value></value0></items></value></cereal>";
    };
    auto load_error = [](const std::string& text) -> std::string
    {
        std::istringstream is(text);
        allocation_watch watch;
        try
        {
            cereal::XMLInputArchive ar(is);
            state_dict sd;
            ar(cereal::make_nvp("value", sd));
            return "loaded";
        }
        catch (const format_error& e)
        {
            return std::string("format_error: ") + e.what();
        }
        catch (const cereal::Exception& e)
        {
            return std::string("cereal: ") + e.what();
        }
        catch (const std::exception& e)
        {
            return std::string("WRONG ") + e.what();
        }
    };
    BOOST_TEST(load_error(xml("<value0>2</value0>", "<value0>1</value0><value0>2</value0>")) ==
               "loaded");
    BOOST_TEST(contains(
        load_error(xml("<value0>1048576</value0><value0>1048576</value0>", "<value0>1</value0>")),
        "holds 1 elements, expected 1099511627776"));
    BOOST_TEST(contains(load_error(xml("<value0>-5</value0>", "")), "has a negative extent"));
}

BOOST_AUTO_TEST_CASE(the_corpus_loads_under_an_address_space_limit)
{
    // A child process loads every hostile file with its address space capped at 512 MiB: any
    // attempt to allocate what a file only claims to hold would end in bad_alloc there.
#ifdef EMBER_TEST_ASAN
    BOOST_TEST_MESSAGE("skipped under AddressSanitizer, which reserves terabytes of address space");
    return;
#endif
    temp_dir dir;
    auto files = state_dict_corpus();
    for (auto& f : optimizer_corpus())
        files.push_back(std::move(f));
    const pid_t pid = ::fork();
    BOOST_REQUIRE(pid >= 0);
    if (pid == 0)
    {
        rlimit limit{std::size_t{512} << 20, std::size_t{512} << 20};
        if (::setrlimit(RLIMIT_AS, &limit) != 0)
            ::_exit(100);
        int wrong = 0;
        for (std::size_t i = 0; i < files.size(); ++i)
        {
            const fs::path path = dir.path / ("limited_" + std::to_string(i) + ".ember");
            write_file(path, files[i].bytes);
            try
            {
                if (files[i].kind == content::state_dict)
                    (void)load<state_dict>(path);
                else
                    (void)load<optim::optimizer_state>(path);
                ++wrong;
            }
            catch (const format_error&)
            {
            }
            catch (...)
            {
                std::fprintf(stderr, "'%s' escaped as another exception\n", files[i].name.c_str());
                ++wrong;
            }
        }
        ::_exit(wrong > 99 ? 99 : wrong);
    }
    int status = 0;
    BOOST_REQUIRE(::waitpid(pid, &status, 0) == pid);
    BOOST_REQUIRE_MESSAGE(WIFEXITED(status), "the child died from signal " << WTERMSIG(status));
    BOOST_TEST(WEXITSTATUS(status) == 0, WEXITSTATUS(status) << " files were not format errors");
}

BOOST_AUTO_TEST_CASE(every_fuzzer_finding_is_a_format_error)
{
    // Each file under tests/data/regressions/ is an input a fuzz target once crashed or
    // misbehaved on (see its README). Its name says how to load it: LOADER-TYPE-what.ext with
    // LOADER ember (ember::load, format by magic or extension), pytorch or safetensors, and
    // TYPE state_dict, optimizer, checkpoint or value. Each loads in a child process, so a
    // crash is reported as this file's failure instead of ending the test run.
    const fs::path folder = regressions_folder();
    BOOST_REQUIRE_MESSAGE(fs::is_directory(folder), folder << " is missing");
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(folder))
        if (entry.path().extension() != ".md")
            files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    for (const auto& path : files)
    {
        const std::string name = path.filename().string();
        BOOST_TEST_CONTEXT(name)
        {
            const pid_t pid = ::fork();
            BOOST_REQUIRE(pid >= 0);
            if (pid == 0)
            {
                // Boost.Test's handlers would report a crash as the child's own test failure.
                for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT})
                    std::signal(sig, SIG_DFL);
                ::_exit(load_regression(path));
            }
            int status = 0;
            BOOST_REQUIRE(::waitpid(pid, &status, 0) == pid);
            BOOST_TEST(!WIFSIGNALED(status), "crashed with signal " << WTERMSIG(status) << " ("
                                                                    << ::strsignal(WTERMSIG(status))
                                                                    << ")");
            if (WIFEXITED(status))
                BOOST_TEST(WEXITSTATUS(status) == 0,
                           regression_outcomes[std::min(WEXITSTATUS(status), 5)]
                               << " (details above)");
        }
    }
    BOOST_TEST(files.size() > 0u);
}

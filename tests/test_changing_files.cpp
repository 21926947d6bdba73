// Files that change while ember reads them. ember maps large files and reads them in place; if
// another program cuts such a file short meanwhile (torch.save rewrites its file in place), the
// pages it lost would raise SIGBUS and kill the process. ember's mappings read zeros there
// instead and the load reports an io_error, the model untouched where its checks had not passed.
#include "test_files.hpp"

#include <ember/detail/crc32.hpp>
#include <ember/detail/file_io.hpp>
#include <ember/detail/mapped_file.hpp>
#include <ember/nn/module.hpp>
#include <ember/serialize/file.hpp>
#include <ember/serialize/module.hpp>
#include <ember/serialize/safetensors.hpp>

#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

using namespace ember;
using test::contains;
using test::message_of;
using test::temp_dir;
namespace fs = std::filesystem;

namespace
{

// 2.4 MB of floats: above file_bytes::map_threshold, so every format maps it.
constexpr std::size_t words = 600000;

struct big_model : nn::module<big_model>
{
    nn::parameter<float, 1> weight{tensor<float, 1>::from_shape({words})};

    template <class V>
    void visit(V&& v)
    {
        v("weight", weight);
    }
};

big_model model_with(float offset)
{
    big_model m;
    for (std::size_t i = 0; i < words; ++i)
        m.weight.value.data()[i] = offset + static_cast<float>(i % 1000);
    return m;
}

const char* const extensions[] = {".ember", ".pth", ".safetensors"};

// file_bytes closes the file once it is mapped, before anything is decoded: a close that first
// cuts the file to one page is another program truncating it at the worst moment, every time.
std::string g_truncated_path;

int truncating_close(int fd)
{
    BOOST_REQUIRE(::truncate(g_truncated_path.c_str(), 4096) == 0);
    return ::close(fd);
}

struct truncate_after_mapping
{
    explicit truncate_after_mapping(const fs::path& path) { g_truncated_path = path.string(); }
    detail::file_ops ops = []
    {
        detail::file_ops o;
        o.close = &truncating_close;
        return o;
    }();
    detail::scoped_file_ops guard{ops};
};

const std::string lost = "could not be read while it was being loaded";

} // namespace

BOOST_AUTO_TEST_CASE(a_mapping_whose_file_is_cut_short_reads_zeros_and_is_marked_not_intact)
{
    temp_dir dir;
    const fs::path path = dir.path / "model.ember";
    save(model_with(1.0f), path);
    detail::mapped_file map(path);
    BOOST_TEST(map.intact());
    const std::uint32_t whole = detail::crc32_of(map.bytes());
    BOOST_REQUIRE(::truncate(path.c_str(), 4096) == 0);
    // Without ember's handler this read of the lost pages is a SIGBUS that ends the process.
    const std::uint32_t cut = detail::crc32_of(map.bytes());
    BOOST_TEST(cut != whole);
    BOOST_TEST(!map.intact());
    BOOST_TEST(static_cast<int>(map.bytes()[map.size() - 1]) == 0);
    const std::string msg = message_of<io_error>([&] { map.check_intact(path.string()); });
    BOOST_TEST(contains(msg, path.string()));
    BOOST_TEST(contains(msg, "shrank"));
}

BOOST_AUTO_TEST_CASE(a_new_mapping_of_the_same_file_starts_intact)
{
    temp_dir dir;
    const fs::path path = dir.path / "model.ember";
    save(model_with(1.0f), path);
    {
        detail::mapped_file map(path);
        BOOST_REQUIRE(::truncate(path.c_str(), 4096) == 0);
        (void)detail::crc32_of(map.bytes());
        BOOST_TEST(!map.intact());
    }
    save(model_with(2.0f), path);
    detail::mapped_file again(path); // may reuse the registration slot: its mark is cleared
    (void)detail::crc32_of(again.bytes());
    BOOST_TEST(again.intact());
}

BOOST_AUTO_TEST_CASE(loading_a_file_cut_short_after_mapping_is_an_io_error_in_every_format)
{
    temp_dir dir;
    for (const char* ext : extensions)
    {
        BOOST_TEST_CONTEXT("format " << ext)
        {
            const fs::path path = dir.path / (std::string("model") + ext);
            save(model_with(1.0f).state_dict(), path);
            std::string msg;
            {
                truncate_after_mapping cut(path);
                msg = message_of<io_error>([&] { (void)load<state_dict>(path); });
            }
            BOOST_TEST(contains(msg, path.string()));
            BOOST_TEST(contains(msg, lost));
        }
    }
}

BOOST_AUTO_TEST_CASE(loading_a_model_from_a_file_cut_short_throws_and_leaves_the_model_as_it_was)
{
    temp_dir dir;
    for (const char* ext : extensions)
    {
        BOOST_TEST_CONTEXT("format " << ext)
        {
            const fs::path path = dir.path / (std::string("model") + ext);
            save(model_with(1.0f), path);
            big_model model = model_with(5.0f);
            std::string msg;
            {
                truncate_after_mapping cut(path);
                msg = message_of<io_error>([&] { (void)load(model, path); });
            }
            BOOST_TEST(contains(msg, lost));
            BOOST_TEST((model.state_dict() == model_with(5.0f).state_dict()));
        }
    }
}

BOOST_AUTO_TEST_CASE(a_safetensors_file_cut_short_after_opening_is_an_io_error_on_get_tensor)
{
    temp_dir dir;
    const fs::path path = dir.path / "model.safetensors";
    save(model_with(1.0f).state_dict(), path);
    safetensors::safe_open f(path);
    BOOST_REQUIRE(::truncate(path.c_str(), 4096) == 0);
    const std::string msg = message_of<io_error>([&] { (void)f.get_tensor("weight"); });
    BOOST_TEST(contains(msg, lost));
    BOOST_CHECK_THROW((void)f.to_state_dict(), io_error);
}

BOOST_AUTO_TEST_CASE(loads_racing_a_program_that_rewrites_the_file_in_place_never_crash_or_lie)
{
    // Another thread rewrites the file in place the way torch.save does (truncate, then write
    // it whole again, the same bytes) while this one loads it over and over. Each load must give
    // the file's tensors or throw an ember error; none may crash or return other numbers.
    temp_dir dir;
    for (const char* ext : extensions)
    {
        BOOST_TEST_CONTEXT("format " << ext)
        {
            const fs::path path = dir.path / (std::string("model") + ext);
            const state_dict expected = model_with(3.0f).state_dict();
            save(expected, path);
            const std::vector<char> bytes = test::read_bytes(path);
            std::atomic<bool> stop{false};
            std::thread rewriter(
                [&]
                {
                    while (!stop.load())
                    {
                        test::write_bytes(path, bytes);
                        std::this_thread::sleep_for(std::chrono::milliseconds(2));
                    }
                });
            int loaded = 0, refused = 0;
            big_model model;
            for (int i = 0; i < 60; ++i)
            {
                try
                {
                    if (i % 2 == 0)
                    {
                        BOOST_TEST((load<state_dict>(path) == expected));
                    }
                    else
                    {
                        (void)load(model, path);
                        BOOST_TEST((model.state_dict() == expected));
                    }
                    ++loaded;
                }
                catch (const ember::error&)
                {
                    ++refused; // cut short, or caught half-written: refused, with a message
                }
            }
            stop = true;
            rewriter.join();
            BOOST_TEST_MESSAGE(ext << ": " << loaded << " loads, " << refused << " refused");
            BOOST_TEST(loaded + refused == 60);
        }
    }
}

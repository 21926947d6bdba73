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
#include <ember/serialize/pytorch.hpp>
#include <ember/serialize/safetensors.hpp>

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <csignal>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
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

// 12 MiB of floats: large enough that ember's passes over it run in parts on several threads.
constexpr std::size_t large_words = std::size_t{3} << 20;

struct large_model : nn::module<large_model>
{
    nn::parameter<float, 1> weight{tensor<float, 1>::from_shape({large_words})};

    template <class V>
    void visit(V&& v)
    {
        v("weight", weight);
    }
};

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
    for (const char* ext : test::model_extensions)
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
    for (const char* ext : test::model_extensions)
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

BOOST_AUTO_TEST_CASE(lost_pages_read_on_ember_threads_are_zeros_and_an_io_error_too)
{
    // 12 MiB: the checksums (ember's container, PyTorch's zip) and the page walk (safetensors)
    // run in parts on helper threads, which fault on the lost pages themselves; the guard must
    // take those faults as it takes the calling thread's.
    test::threads_for_scope four(4);
    temp_dir dir;
    for (const char* ext : test::model_extensions)
    {
        BOOST_TEST_CONTEXT("format " << ext)
        {
            const fs::path path = dir.path / (std::string("model") + ext);
            large_model saved;
            for (std::size_t i = 0; i < large_words; ++i)
                saved.weight.value.data()[i] = static_cast<float>(i % 977);
            save(saved, path);
            large_model model;
            std::fill_n(model.weight.value.data(), large_words, 5.0f);
            std::string msg;
            {
                truncate_after_mapping cut(path);
                msg = message_of<io_error>([&] { (void)load(model, path); });
            }
            BOOST_TEST(contains(msg, lost));
            BOOST_TEST(std::all_of(model.weight.value.data(),
                                   model.weight.value.data() + large_words,
                                   [](float x) { return x == 5.0f; }));
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

BOOST_AUTO_TEST_CASE(pytorch_and_safetensors_own_loaders_of_a_file_cut_short_are_an_io_error)
{
    // pytorch::load and safetensors::load map the file themselves (mapped_file), not through
    // file_bytes; they open and close it through file_ops too, so the file is cut short here
    // at the same worst moment, after it is mapped and before a byte is read.
    temp_dir dir;
    const fs::path pth = dir.path / "model.pth", st = dir.path / "model.safetensors";
    save(model_with(1.0f).state_dict(), pth);
    save(model_with(1.0f).state_dict(), st);
    std::string msg;
    {
        truncate_after_mapping cut(pth);
        msg = message_of<io_error>([&] { (void)pytorch::load<state_dict>(pth); });
    }
    BOOST_TEST(contains(msg, pth.string()));
    BOOST_TEST(contains(msg, lost));
    {
        truncate_after_mapping cut(st);
        msg = message_of<io_error>([&] { (void)safetensors::load(st); });
    }
    BOOST_TEST(contains(msg, st.string()));
    BOOST_TEST(contains(msg, lost));
}

BOOST_AUTO_TEST_CASE(probe_maps_a_large_file_and_a_file_cut_short_meanwhile_is_an_io_error)
{
    // probe() read the whole file into a buffer of its size (a 400 MB copy to say what a
    // 400 MB file holds); it maps it as load() does, so a cut checks the same way. Where it
    // was read, the cut came after the read and the probe answered from the copy.
    temp_dir dir;
    for (const char* ext : {".ember", ".pth"}) // probes that check every byte
    {
        BOOST_TEST_CONTEXT("format " << ext)
        {
            const fs::path path = dir.path / (std::string("model") + ext);
            save(model_with(1.0f).state_dict(), path);
            BOOST_TEST(probe(path).size == fs::file_size(path));
            std::string msg;
            {
                truncate_after_mapping cut(path);
                msg = message_of<io_error>([&] { (void)probe(path); });
            }
            BOOST_TEST(contains(msg, path.string()));
            BOOST_TEST(contains(msg, lost));
        }
    }
}

BOOST_AUTO_TEST_CASE(loads_racing_a_program_that_cuts_the_file_in_place_never_crash_or_lie)
{
    // Another thread cuts the file to half its size and writes the rest back (the same bytes),
    // over and over, while this one loads it. A load that maps the whole file then loses pages
    // under it. Each load must give the file's tensors or throw an ember error; none may crash
    // or return other numbers. How many hit a lost page is up to the scheduler (reported).
    temp_dir dir;
    for (const char* ext : test::model_extensions)
    {
        BOOST_TEST_CONTEXT("format " << ext)
        {
            const fs::path path = dir.path / (std::string("model") + ext);
            const state_dict expected = model_with(3.0f).state_dict();
            save(expected, path);
            const std::vector<char> bytes = test::read_bytes(path);
            const std::size_t half = bytes.size() / 2;
            std::atomic<bool> stop{false};
            std::thread cutter(
                [&]
                {
                    const int fd = ::open(path.c_str(), O_WRONLY);
                    while (!stop.load())
                    {
                        if (::ftruncate(fd, static_cast<off_t>(half)) != 0 ||
                            ::pwrite(fd, bytes.data() + half, bytes.size() - half,
                                     static_cast<off_t>(half)) !=
                                static_cast<ssize_t>(bytes.size() - half))
                            break;
                        std::this_thread::sleep_for(std::chrono::microseconds(500));
                    }
                    ::close(fd);
                });
            int loaded = 0, lost_pages = 0, refused = 0;
            big_model model;
            for (int i = 0; i < 100; ++i)
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
                catch (const io_error& e)
                {
                    ++(contains(e.what(), lost) ? lost_pages : refused);
                }
                catch (const ember::error&)
                {
                    ++refused; // mapped while cut short: a truncated file, refused as such
                }
            }
            stop = true;
            cutter.join();
            BOOST_TEST_MESSAGE(ext << ": " << loaded << " loaded, " << lost_pages
                                   << " lost pages under the load, " << refused
                                   << " refused as truncated");
            BOOST_TEST(loaded + lost_pages + refused == 100);
        }
    }
}

// ---- SIGBUS that is not ember's: passed on as it would have been without ember ------------

namespace
{

// Runs `body` in a child process, with SIGBUS at its default action to start with, and
// returns its wait status. The child never returns into the test framework.
template <class Body>
int in_child(Body body)
{
    const pid_t pid = ::fork();
    BOOST_REQUIRE(pid >= 0);
    if (pid == 0)
    {
        const rlimit no_core{0, 0}; // the child is meant to die of SIGBUS: no core file
        ::setrlimit(RLIMIT_CORE, &no_core);
        std::signal(SIGBUS, SIG_DFL);
        body();
        ::_exit(0);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return status;
}

} // namespace

BOOST_AUTO_TEST_CASE(many_files_held_open_at_once_are_all_guarded)
{
    // A model sharded into many safetensors files is opened as one safe_open per shard, each a
    // mapping held while the program keeps it. With 64 of them open, the guard had no slot left
    // for the next: a file cut short under it was a SIGBUS that ended the process.
    temp_dir dir;
    const fs::path shard = dir.path / "shard.safetensors", last = dir.path / "last.safetensors";
    save(model_with(1.0f).state_dict(), shard);
    save(model_with(2.0f).state_dict(), last);
    const int status = in_child(
        [&]
        {
            std::vector<std::unique_ptr<safetensors::safe_open>> shards;
            for (int i = 0; i < 200; ++i)
                shards.push_back(std::make_unique<safetensors::safe_open>(shard));
            safetensors::safe_open f(last);
            if (::truncate(last.c_str(), 4096) != 0)
                ::_exit(3);
            try
            {
                (void)f.get_tensor("weight");
            }
            catch (const io_error& e)
            {
                ::_exit(contains(e.what(), lost) ? 0 : 5);
            }
            ::_exit(4);
        });
    BOOST_TEST_INFO("status " << status);
    BOOST_TEST(!(WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS), "killed by SIGBUS");
    BOOST_TEST((WIFEXITED(status) && WEXITSTATUS(status) == 0));
}

namespace
{

// A mapping that is not ember's, of a file then cut short: reading its last byte faults.
void fault_outside_ember(const fs::path& path)
{
    const int fd = ::open(path.c_str(), O_RDONLY);
    void* p = ::mmap(nullptr, 1 << 20, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED || ::truncate(path.c_str(), 0) != 0)
        ::_exit(3);
    (void)*(static_cast<volatile const char*>(p) + (1 << 20) - 1);
    ::_exit(4); // not reached: the read faults
}

// A file ember maps, and one of 1 MiB for a mapping that is not ember's.
struct two_files
{
    temp_dir dir;
    fs::path ours = dir.path / "model.ember", other = dir.path / "other.bin";
    two_files()
    {
        save(model_with(1.0f), ours);
        test::write_bytes(other, std::vector<char>(std::size_t{1} << 20, 'x'));
    }
};

struct sigaction g_replaced;

void passes_back(int sig, siginfo_t* info, void* context)
{
    if (g_replaced.sa_flags & SA_SIGINFO)
        g_replaced.sa_sigaction(sig, info, context);
}

} // namespace

BOOST_AUTO_TEST_CASE(a_fault_outside_embers_mappings_reaches_the_programs_own_handler)
{
    const two_files files;
    const fs::path &ours = files.ours, &other = files.other;
    const int status = in_child(
        [&]
        {
            struct sigaction own
            {
            };
            own.sa_handler = [](int) { ::_exit(42); };
            ::sigaction(SIGBUS, &own, nullptr);
            const detail::mapped_file map(ours); // ember's handler now, the program's behind it
            fault_outside_ember(other);
        });
    BOOST_TEST(WIFEXITED(status));
    BOOST_TEST(WEXITSTATUS(status) == 42);
}

BOOST_AUTO_TEST_CASE(a_handler_that_passes_the_fault_back_to_ember_ends_in_sigbus_not_a_loop)
{
    const two_files files;
    const fs::path &ours = files.ours, &other = files.other;
    const int status = in_child(
        [&]
        {
            const detail::mapped_file first(ours); // ember's handler, default behind it
            struct sigaction chaining
            {
            };
            chaining.sa_sigaction = &passes_back; // passes on to ember's
            chaining.sa_flags = SA_SIGINFO;
            ::sigaction(SIGBUS, &chaining, &g_replaced);
            const detail::mapped_file second(ours); // ember's again, the chaining one behind
            fault_outside_ember(other);
        });
    // A loop between the two handlers would end in a stack overflow (SIGSEGV).
    BOOST_TEST(WIFSIGNALED(status));
    BOOST_TEST(WTERMSIG(status) == SIGBUS);
}

BOOST_AUTO_TEST_CASE(a_sigbus_sent_by_kill_still_kills_and_a_fault_outside_still_dumps)
{
    const two_files files;
    const fs::path &ours = files.ours, &other = files.other;
    const int sent = in_child(
        [&]
        {
            const detail::mapped_file map(ours);
            ::raise(SIGBUS);
            ::_exit(5); // swallowed
        });
    BOOST_TEST(WIFSIGNALED(sent));
    BOOST_TEST(WTERMSIG(sent) == SIGBUS);
    const int fault = in_child(
        [&]
        {
            const detail::mapped_file map(ours);
            fault_outside_ember(other);
        });
    BOOST_TEST(WIFSIGNALED(fault));
    BOOST_TEST(WTERMSIG(fault) == SIGBUS);
}

// Saving survives failures and crashes: every failing system call (disk full, I/O error,
// permission) throws an io_error naming the file and leaves the previous file byte for byte,
// an fsync is never retried, and a writer killed with SIGKILL at random moments always leaves
// a file that loads as one whole version.
#include "crash_versions.hpp"
#include "test_files.hpp"

#include <ember/detail/file_io.hpp>
#include <ember/serialize/file.hpp>
#include <ember/serialize/pytorch.hpp>
#include <ember/serialize/safetensors.hpp>

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace ember;
namespace fs = std::filesystem;
using test::temp_dir;

namespace
{

std::vector<char> read_bytes(const fs::path& p)
{
    std::ifstream f(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), {}};
}

std::vector<std::string> entries(const fs::path& dir)
{
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir))
        names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
}

state_dict old_state()
{
    state_dict sd;
    sd.insert("weight", host_tensor::from(tensor<float, 1>{1.f, 2.f, 3.f}));
    return sd;
}

// About 40 KB, so that with writes cut to 4 KiB a save makes ten write calls.
state_dict new_state()
{
    return crash_test::version_state(7, 10000);
}

// ---- fault injection through detail::file_ops ---------------------------------------------

enum op
{
    op_open,
    op_write,
    op_read,
    op_fsync,
    op_close,
    op_rename,
    op_unlink,
    op_allocate,
    op_seek,
    op_set_direct,
    op_count
};
const char* const op_names[] = {"open",   "write",  "read",     "fsync", "close",
                                "rename", "unlink", "allocate", "seek",  "set_direct"};

// What the fake calls do; plain globals because file_ops holds plain function pointers.
struct plan
{
    std::array<int, op_count> calls{};
    op fail_op = op_count; // op_count: nothing fails
    int fail_at = 0;       // the 1-based call of fail_op that fails
    int fail_errno = 0;
    int fail_result = -1;             // -1, or 0 for a write that makes no progress
    std::size_t max_write = SIZE_MAX; // cut every write to this many bytes
    int eintr_every = 0;              // every n-th write is interrupted before writing
    bool pretend_direct = false;      // set_direct succeeds without changing the descriptor
};
plan g_plan;

bool fails(op o)
{
    const int n = ++g_plan.calls[o];
    if (o == g_plan.fail_op && n == g_plan.fail_at)
    {
        errno = g_plan.fail_errno;
        return true;
    }
    return false;
}

int fake_open(const char* p, int flags, mode_t mode)
{
    return fails(op_open) ? -1 : ::open(p, flags, mode);
}
ssize_t fake_write(int fd, const void* b, std::size_t n)
{
    if (fails(op_write))
        return g_plan.fail_result;
    if (g_plan.eintr_every != 0 && g_plan.calls[op_write] % g_plan.eintr_every == 0)
    {
        errno = EINTR;
        return -1;
    }
    return ::write(fd, b, std::min(n, g_plan.max_write));
}
ssize_t fake_read(int fd, void* b, std::size_t n)
{
    return fails(op_read) ? -1 : ::read(fd, b, n);
}
int fake_fsync(int fd)
{
    return fails(op_fsync) ? -1 : ::fsync(fd);
}
int fake_close(int fd)
{
    // A failing close still releases the descriptor, as Linux's does.
    if (fails(op_close))
    {
        const int err = errno;
        ::close(fd);
        errno = err;
        return -1;
    }
    return ::close(fd);
}
int fake_rename(const char* a, const char* b)
{
    return fails(op_rename) ? -1 : ::rename(a, b);
}
int fake_unlink(const char* p)
{
    return fails(op_unlink) ? -1 : ::unlink(p);
}
int fake_allocate(int fd, off_t size)
{
    return fails(op_allocate) ? -1 : detail::system_allocate(fd, size);
}
off_t fake_seek(int fd, off_t offset, int whence)
{
    return fails(op_seek) ? -1 : ::lseek(fd, offset, whence);
}

int fake_set_direct(int fd, bool on)
{
    if (fails(op_set_direct))
        return -1;
    return g_plan.pretend_direct ? 0 : detail::system_set_direct(fd, on);
}

/// Routes this thread's file operations through the fakes for its lifetime.
struct injected
{
    detail::scoped_file_ops guard{detail::file_ops{fake_open, fake_write, fake_read, fake_fsync,
                                                   fake_close, fake_rename, fake_unlink,
                                                   fake_allocate, fake_seek, fake_set_direct}};
    explicit injected(plan p) { g_plan = p; }
    int calls(op o) const { return g_plan.calls[o]; }
};

plan failing(op o, int at, int err, std::size_t max_write = SIZE_MAX)
{
    plan p;
    p.fail_op = o;
    p.fail_at = at;
    p.fail_errno = err;
    p.max_write = max_write;
    return p;
}

bool contains(const std::string& text, const std::string& part)
{
    return text.find(part) != std::string::npos;
}

/// Saves new_state() over old_state() at dir/model.ember with `p` injected, and checks the
/// save threw an io_error naming the file, the reason and `what`; the old bytes are unchanged
/// and no temporary is left. Returns the calls made.
std::array<int, op_count> expect_failed_save(const fs::path& dir, plan p, const std::string& what,
                                             const std::string& name = "model.ember",
                                             const state_dict& replacement = new_state())
{
    const fs::path target = dir / name;
    save(old_state(), target);
    const auto before = read_bytes(target);
    const int err = p.fail_errno;
    std::array<int, op_count> calls{};
    {
        injected inject(p);
        try
        {
            save(replacement, target);
            BOOST_ERROR("save succeeded although " << op_names[p.fail_op] << " call " << p.fail_at
                                                   << " failed");
        }
        catch (const io_error& e)
        {
            const std::string msg = e.what();
            BOOST_TEST_INFO("message: " << msg);
            BOOST_TEST(contains(msg, target.string()));
            BOOST_TEST(contains(msg, what));
            if (err != 0)
                BOOST_TEST(contains(msg, std::strerror(err)));
        }
        calls = g_plan.calls;
    }
    BOOST_TEST((read_bytes(target) == before), "the previous file changed");
    BOOST_TEST((load<state_dict>(target) == old_state()));
    BOOST_TEST(entries(dir) == std::vector<std::string>{name}, boost::test_tools::per_element());
    return calls;
}

} // namespace

BOOST_AUTO_TEST_CASE(defaults_are_the_system_calls_and_a_guard_restores_them)
{
    const detail::file_ops defaults;
    BOOST_TEST(detail::active_file_ops().write == defaults.write);
    {
        injected inject(plan{});
        BOOST_TEST(detail::active_file_ops().write == &fake_write);
        // Another thread keeps the real calls: injection is per thread.
        bool other_is_real = false;
        std::thread([&] { other_is_real = detail::active_file_ops().write == defaults.write; })
            .join();
        BOOST_TEST(other_is_real);
    }
    BOOST_TEST(detail::active_file_ops().write == defaults.write);
    BOOST_TEST(detail::active_file_ops().fsync == defaults.fsync);
}

BOOST_AUTO_TEST_CASE(a_failing_write_throws_and_keeps_the_previous_file)
{
    temp_dir dir;
    // Writes cut to 4 KiB: the first, a middle and the last of about ten calls fail.
    for (int err : {ENOSPC, EIO, EDQUOT, EFBIG})
        for (int at : {1, 2, 5, 10})
        {
            BOOST_TEST_CONTEXT("errno " << err << ", write call " << at)
            {
                auto calls =
                    expect_failed_save(dir.path, failing(op_write, at, err, 4096), "write failed");
                BOOST_TEST(calls[op_write] == at);
                BOOST_TEST(calls[op_fsync] == 0);
                BOOST_TEST(calls[op_rename] == 0);
            }
        }
}

BOOST_AUTO_TEST_CASE(a_streamed_pytorch_or_safetensors_save_that_fails_keeps_the_previous_file)
{
    // 400 KB of tensor data, written 4 KiB at a time, from where it lies. In the zip, a record
    // this large gets its CRC-32 after its data, so the .pth's last write is that checksum,
    // written back into the record's header: failing it too must leave the old file.
    const state_dict big = crash_test::version_state(7, 100000);
    for (const std::string name : {"model.pth", "model.safetensors"})
    {
        temp_dir dir;
        int writes = 0;
        {
            injected count(failing(op_write, 0, 0, 4096));
            save(big, dir.path / name);
            writes = count.calls(op_write);
        }
        BOOST_TEST(writes > 50);
        fs::remove(dir.path / name);
        for (int at : {1, writes / 2, writes - 1, writes})
        {
            BOOST_TEST_CONTEXT(name << ", write call " << at << " of " << writes)
            {
                auto calls = expect_failed_save(dir.path, failing(op_write, at, EIO, 4096),
                                                "write failed", name, big);
                BOOST_TEST(calls[op_write] == at);
                BOOST_TEST(calls[op_rename] == 0);
            }
        }
    }
    // The seeks to the record's header and back around that last write.
    temp_dir dir;
    for (int at : {1, 2})
    {
        BOOST_TEST_CONTEXT("seek call " << at)
        {
            auto calls = expect_failed_save(dir.path, failing(op_seek, at, EIO), "seek to offset",
                                            "model.pth", big);
            BOOST_TEST(calls[op_seek] == at);
            BOOST_TEST(calls[op_rename] == 0);
        }
    }
}

BOOST_AUTO_TEST_CASE(a_write_that_makes_no_progress_fails_instead_of_spinning)
{
    temp_dir dir;
    plan p = failing(op_write, 3, 0, 4096);
    p.fail_result = 0;
    auto calls = expect_failed_save(dir.path, p, "write made no progress after 8192 of");
    BOOST_TEST(calls[op_write] == 3);
}

BOOST_AUTO_TEST_CASE(short_and_interrupted_writes_are_continued)
{
    temp_dir dir;
    const fs::path target = dir.path / "model.ember";
    plan p;
    p.max_write = 1000; // not a divisor of anything in the file
    p.eintr_every = 3;
    {
        injected inject(p);
        save(new_state(), target);
        BOOST_TEST(inject.calls(op_write) > 40);
        BOOST_TEST(inject.calls(op_fsync) == 2); // the file, then its folder
    }
    BOOST_TEST((load<state_dict>(target) == new_state()));
    BOOST_TEST(entries(dir.path) == std::vector<std::string>{"model.ember"},
               boost::test_tools::per_element());
}

// ---- large files: written around the page cache (O_DIRECT) ------------------------------

namespace
{

using writer = detail::atomic_file_writer;

/// Just over writer::direct_min bytes, ending in a partial block.
const state_dict& large_state()
{
    static const state_dict big = crash_test::version_state(3, writer::direct_min / 4 + 12345);
    return big;
}

/// Whether the file system under `dir` lets a file be written with O_DIRECT.
bool direct_io_works(const fs::path& dir)
{
    const fs::path probe = dir / "probe";
    const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    const bool works = fd >= 0 && detail::system_set_direct(fd, true) == 0;
    if (fd >= 0)
        ::close(fd);
    fs::remove(probe);
    return works;
}

/// The share of `path`'s pages in the page cache (mincore).
double cached_share(const fs::path& path)
{
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    const std::size_t size = fs::file_size(path);
    void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);
    const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    std::vector<unsigned char> resident((size + page - 1) / page);
    BOOST_REQUIRE(map != MAP_FAILED);
    BOOST_REQUIRE(::mincore(map, size, resident.data()) == 0);
    ::munmap(map, size);
    const auto in = std::count_if(resident.begin(), resident.end(),
                                  [](unsigned char r) { return (r & 1) != 0; });
    return static_cast<double>(in) / static_cast<double>(resident.size());
}

plan pretending_direct(plan p)
{
    p.pretend_direct = true;
    return p;
}

} // namespace

BOOST_AUTO_TEST_CASE(a_small_save_does_not_ask_for_direct_io)
{
    temp_dir dir;
    injected count(plan{});
    save(new_state(), dir.path / "model.ember");
    BOOST_TEST(count.calls(op_set_direct) == 0);
}

BOOST_AUTO_TEST_CASE(a_large_save_bypasses_the_page_cache_and_writes_the_same_bytes)
{
    // Each format: the container and the zip write headers over zeros at the end, after the
    // direct chunks; safetensors writes straight through. Where the file system refuses
    // O_DIRECT the save is buffered and the same. (One name in two folders: a .pth names its
    // records after the file.)
    temp_dir around("ember_direct"), through("ember_buffered");
    const bool direct = direct_io_works(around.path);
    BOOST_TEST_MESSAGE("O_DIRECT " << (direct ? "works" : "is refused") << " in "
                                   << around.path.string());
    for (const std::string name : {"model.ember", "model.pth", "model.safetensors"})
        BOOST_TEST_CONTEXT(name)
        {
            {
                injected count(plan{});
                save(large_state(), around.path / name);
                BOOST_TEST(count.calls(op_set_direct) >= 1);
            }
            {
                injected refuse(failing(op_set_direct, 1, EINVAL));
                save(large_state(), through.path / name);
            }
            if (direct) // the last partial block and the rewritten headers dropped after fsync
                BOOST_TEST(cached_share(around.path / name) == 0.0);
            BOOST_TEST(
                (detail::read_file(around.path / name) == detail::read_file(through.path / name)));
            const state_dict loaded = load<state_dict>(around.path / name);
            BOOST_TEST(loaded.size() == large_state().size());
            for (const auto& [key, value] : large_state()) // safetensors sorts its keys
                BOOST_TEST((loaded.contains(key) && loaded.at(key) == value), key);
        }
}

BOOST_AUTO_TEST_CASE(a_load_reads_a_file_that_is_not_cached_in_whole_before_it_parses_it)
{
    // mapped_file::read_ahead: a file whose first page is not cached (a large save leaves it
    // so) is read in whole, in order, before the parser jumps about in it; one that is cached
    // is left as it is.
    temp_dir dir("ember_direct");
    if (!direct_io_works(dir.path))
    {
        BOOST_TEST_MESSAGE("O_DIRECT is refused in " << dir.path.string() << ": nothing to check");
        return;
    }
    for (const std::string name : {"model.ember", "model.pth"})
        BOOST_TEST_CONTEXT(name)
        {
            const fs::path path = dir.path / name;
            save(large_state(), path);
            BOOST_TEST(cached_share(path) == 0.0);
            {
                const detail::mapped_file file(path);
                file.read_ahead();
                BOOST_TEST(cached_share(path) == 1.0);
            }
            // the same through a load
            const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
            BOOST_REQUIRE(fd >= 0);
            BOOST_REQUIRE(::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0);
            ::close(fd);
            BOOST_TEST(cached_share(path) == 0.0);
            const state_dict loaded = load<state_dict>(path);
            BOOST_TEST(cached_share(path) == 1.0);
            BOOST_TEST(loaded.size() == large_state().size());
        }
}

BOOST_AUTO_TEST_CASE(a_failing_direct_write_keeps_the_previous_file)
{
    // The chunks are written on another thread; its failure is the save's, with the offset.
    temp_dir dir;
    for (int err : {ENOSPC, EIO})
        for (int at : {1, 3})
            BOOST_TEST_CONTEXT("errno " << err << ", write call " << at)
            {
                const std::string after =
                    "write failed after " + std::to_string((at - 1) * writer::direct_chunk) + " of";
                auto calls =
                    expect_failed_save(dir.path, pretending_direct(failing(op_write, at, err)),
                                       after, "model.ember", large_state());
                BOOST_TEST(calls[op_write] == at);
                BOOST_TEST(calls[op_fsync] == 0);
                BOOST_TEST(calls[op_rename] == 0);
            }
    plan stalls = pretending_direct(failing(op_write, 2, 0));
    stalls.fail_result = 0;
    expect_failed_save(dir.path, stalls,
                       "write made no progress after " + std::to_string(writer::direct_chunk),
                       "model.ember", large_state());
}

BOOST_AUTO_TEST_CASE(a_refused_or_short_direct_write_carries_on_through_the_cache)
{
    // EINVAL from a direct write (the file system wants other alignments) and a write cut
    // short of a whole block both leave the rest to buffered writes; a short write of whole
    // blocks goes on directly.
    temp_dir dir;
    const fs::path target = dir.path / "model.ember";
    plan refused = pretending_direct(failing(op_write, 2, EINVAL));
    plan part_block = pretending_direct(plan{});
    part_block.max_write = 5000;
    plan whole_blocks = pretending_direct(plan{});
    whole_blocks.max_write = std::size_t{1} << 20;
    for (const plan& p : {refused, part_block, whole_blocks})
    {
        {
            injected inject(p);
            save(large_state(), target);
            BOOST_TEST(inject.calls(op_set_direct) == 2); // on, then off where it was refused
        }
        BOOST_TEST((load<state_dict>(target) == large_state()));
    }
}

BOOST_AUTO_TEST_CASE(direct_io_that_cannot_be_turned_off_fails_and_keeps_the_previous_file)
{
    temp_dir dir;
    auto calls = expect_failed_save(dir.path, pretending_direct(failing(op_set_direct, 2, EIO)),
                                    "cannot turn off direct I/O", "model.ember", large_state());
    BOOST_TEST(calls[op_rename] == 0);
}

BOOST_AUTO_TEST_CASE(a_failing_fsync_throws_keeps_the_previous_file_and_is_never_retried)
{
    temp_dir dir;
    for (int err : {EIO, ENOSPC, EDQUOT, EINTR})
    {
        BOOST_TEST_CONTEXT("errno " << err)
        {
            auto calls = expect_failed_save(dir.path, failing(op_fsync, 1, err), "fsync failed");
            BOOST_TEST(calls[op_fsync] == 1); // not retried, not even after EINTR
            BOOST_TEST(calls[op_rename] == 0);
            BOOST_TEST(calls[op_close] == 1);  // the temporary, once
            BOOST_TEST(calls[op_unlink] == 1); // the temporary removed
        }
    }
}

BOOST_AUTO_TEST_CASE(a_failing_close_throws_and_keeps_the_previous_file)
{
    temp_dir dir;
    for (int err : {EIO, ENOSPC, EDQUOT})
    {
        BOOST_TEST_CONTEXT("errno " << err)
        {
            auto calls = expect_failed_save(dir.path, failing(op_close, 1, err), "close failed");
            BOOST_TEST(calls[op_close] == 1); // the descriptor is gone: no second close
            BOOST_TEST(calls[op_rename] == 0);
        }
    }
}

BOOST_AUTO_TEST_CASE(a_failing_rename_throws_and_keeps_the_previous_file)
{
    temp_dir dir;
    for (int err : {EIO, ENOSPC, EXDEV, EACCES, EROFS})
    {
        BOOST_TEST_CONTEXT("errno " << err)
        {
            auto calls = expect_failed_save(dir.path, failing(op_rename, 1, err), "rename");
            BOOST_TEST(calls[op_fsync] == 1); // the file was synced; the folder never is
            BOOST_TEST(calls[op_unlink] == 1);
        }
    }
}

BOOST_AUTO_TEST_CASE(a_disk_too_small_for_the_file_fails_before_a_byte_is_written)
{
    // No file replaced earlier is still being freed: else the save waits for it and retries.
    BOOST_REQUIRE(!detail::replaced_file::wait_for_releases(10000) ||
                  !detail::replaced_file::wait_for_releases(0));
    temp_dir dir;
    for (int err : {ENOSPC, EDQUOT, EFBIG})
    {
        BOOST_TEST_CONTEXT("errno " << err)
        {
            auto calls =
                expect_failed_save(dir.path, failing(op_allocate, 1, err), "no room for its");
            BOOST_TEST(calls[op_allocate] == 1);
            BOOST_TEST(calls[op_write] == 0);
            BOOST_TEST(calls[op_fsync] == 0);
        }
    }
}

BOOST_AUTO_TEST_CASE(a_full_disk_waits_for_the_file_the_last_save_replaced_to_be_freed)
{
    // The previous save's replaced file is freed on another thread; until it is, its blocks
    // still count. A reservation refused meanwhile waits for it and is tried once more.
    temp_dir dir;
    const fs::path big = dir.path / "old.ember";
    save(crash_test::version_state(1, std::size_t{2} << 20), big); // 8 MiB
    std::optional<detail::replaced_file> held(std::in_place, big);
    BOOST_REQUIRE(detail::replaced_file::wait_for_releases(0)); // it is held
    std::thread release(
        [&]
        {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            held.reset(); // closes it on a background thread: then the space is back
        });
    const fs::path target = dir.path / "model.ember";
    {
        injected inject(failing(op_allocate, 1, ENOSPC));
        save(new_state(), target);
        BOOST_TEST(inject.calls(op_allocate) == 2);
    }
    release.join();
    BOOST_TEST((load<state_dict>(target) == new_state()));
}

BOOST_AUTO_TEST_CASE(a_file_system_that_cannot_reserve_space_still_saves)
{
    // tmpfs before 2.6.x, NFS v3, FUSE file systems: fallocate is refused, the writes allocate.
    temp_dir dir;
    const fs::path target = dir.path / "model.ember";
    save(old_state(), target);
    for (int err : {EOPNOTSUPP, EINVAL, ENOSYS, EINTR})
    {
        BOOST_TEST_CONTEXT("errno " << err)
        {
            injected inject(failing(op_allocate, 1, err));
            save(new_state(), target);
            BOOST_TEST(inject.calls(op_allocate) == 1);
            BOOST_TEST(inject.calls(op_fsync) == 2);
        }
        BOOST_TEST((load<state_dict>(target) == new_state()));
        save(old_state(), target);
    }
}

std::size_t open_descriptors()
{
    return static_cast<std::size_t>(
        std::distance(fs::directory_iterator("/proc/self/fd"), fs::directory_iterator{}));
}

BOOST_AUTO_TEST_CASE(saving_over_a_large_file_replaces_it_and_lets_its_descriptor_go)
{
    // The replaced file is held open across the rename and closed on another thread (the
    // kernel frees it then, off the saving thread): the new content must be in place when save
    // returns, and the descriptor must not be leaked.
    temp_dir dir;
    const fs::path target = dir.path / "model.ember";
    const std::size_t words = std::size_t{2} << 20; // 8 MiB, above replaced_file::min_size
    save(crash_test::version_state(1, words), target);
    const std::size_t before = open_descriptors();
    for (std::int64_t v = 2; v <= 4; ++v)
    {
        save(crash_test::version_state(v, words), target);
        BOOST_TEST((load<state_dict>(target) == crash_test::version_state(v, words)));
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (open_descriptors() > before && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    BOOST_TEST(open_descriptors() == before);
    BOOST_TEST(entries(dir.path) == std::vector<std::string>{"model.ember"},
               boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(saving_through_a_symbolic_link_replaces_the_link_not_the_file_it_names)
{
    temp_dir dir;
    const fs::path real = dir.path / "real.ember";
    const fs::path link = dir.path / "link.ember";
    const std::size_t words = std::size_t{2} << 20;
    save(crash_test::version_state(1, words), real);
    fs::create_symlink(real, link);
    save(crash_test::version_state(2, words), link);
    BOOST_TEST(!fs::is_symlink(link));
    BOOST_TEST((load<state_dict>(link) == crash_test::version_state(2, words)));
    BOOST_TEST((load<state_dict>(real) == crash_test::version_state(1, words)));
}

BOOST_AUTO_TEST_CASE(saving_over_a_fifo_or_a_link_to_a_device_is_an_io_error_and_leaves_it)
{
    // The rename put a regular file where the FIFO was (its reader got nothing), and over a
    // link to a device (/dev/stdout -> /proc/self/fd/1) replaced the link.
    temp_dir dir;
    const fs::path fifo = dir.path / "pipe";
    BOOST_REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    const fs::path device = dir.path / "null";
    fs::create_symlink("/dev/null", device);
    const state_dict sd = crash_test::version_state(1, 16);
    for (const fs::path& target : {fifo, device})
        for (const file_format f : {file_format::ember, file_format::pytorch,
                                    file_format::safetensors, file_format::json})
        {
            BOOST_CHECK_EXCEPTION(save(sd, target, f), io_error,
                                  [&](const io_error& e)
                                  {
                                      const std::string msg = e.what();
                                      return contains(msg, target.string()) &&
                                             contains(msg, "it is not a regular file");
                                  });
        }
    BOOST_TEST(fs::is_fifo(fifo));
    BOOST_TEST(fs::is_symlink(device));
    BOOST_TEST(fs::is_character_file("/dev/null"));
    BOOST_TEST(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator{}) == 2);
}

BOOST_AUTO_TEST_CASE(a_file_saved_again_keeps_its_permissions)
{
    // A save replaces the file by rename, yet leaves what rewriting it in place (torch.save)
    // would: a checkpoint made private stays private. They were 0644 less the umask after
    // every save, whatever the file had been.
    temp_dir dir;
    auto mode_of = [](const fs::path& p)
    {
        struct stat st
        {
        };
        BOOST_REQUIRE(::stat(p.c_str(), &st) == 0);
        return st.st_mode & 07777;
    };
    const mode_t mask = ::umask(0);
    ::umask(mask);
    for (const char* name : {"model.ember", "model.pth", "model.safetensors", "model.json"})
    {
        BOOST_TEST_CONTEXT(name)
        {
            const fs::path target = dir.path / name;
            save(old_state(), target);
            BOOST_TEST(mode_of(target) == (0644 & ~mask)); // a new file, as before
            for (mode_t mode : {0600, 0640, 0444, 0664})
            {
                BOOST_REQUIRE(::chmod(target.c_str(), mode) == 0);
                save(new_state(), target);
                BOOST_TEST(mode_of(target) == mode);
            }
            // (safetensors orders the keys its own way)
            BOOST_TEST((load<state_dict>(target).at("body") == new_state().at("body")));
        }
    }
    // Saved through a symbolic link, the file that replaces the link has the permissions of
    // the file it named.
    const fs::path real = dir.path / "real.ember", link = dir.path / "link.ember";
    save(old_state(), real);
    BOOST_REQUIRE(::chmod(real.c_str(), 0600) == 0);
    fs::create_symlink(real, link);
    save(new_state(), link);
    BOOST_TEST(!fs::is_symlink(link));
    BOOST_TEST(mode_of(link) == 0600u);
}

namespace
{
mode_t g_temporary_mode = 0;
int open_recording_the_temporarys_mode(const char* path, int flags, mode_t mode)
{
    if (std::string_view(path).find(".tmp-") != std::string_view::npos)
        g_temporary_mode = mode;
    return detail::system_open(path, flags, mode);
}
} // namespace

BOOST_AUTO_TEST_CASE(the_temporary_replacing_a_private_file_is_never_readable_by_others)
{
    // It used to be created 0644 and narrowed to the old file's 0600 after: in between another
    // user could open it, and read the new checkpoint through that descriptor as it was written.
    temp_dir dir;
    const fs::path target = dir.path / "private.ember";
    save(old_state(), target);
    BOOST_REQUIRE(::chmod(target.c_str(), 0600) == 0);
    detail::file_ops ops;
    ops.open = &open_recording_the_temporarys_mode;
    {
        detail::scoped_file_ops recording(ops);
        save(new_state(), target);
    }
    BOOST_TEST(g_temporary_mode == 0600u);
    struct stat st
    {
    };
    BOOST_REQUIRE(::stat(target.c_str(), &st) == 0);
    BOOST_TEST((st.st_mode & 07777) == 0600u);
    // A new file is created as before, 0644 less the umask: there is nothing to keep private.
    {
        detail::scoped_file_ops recording(ops);
        save(new_state(), dir.path / "new.ember");
    }
    BOOST_TEST(g_temporary_mode == 0644u);
    // And a wider file gets its bits back once the temporary is this process's.
    BOOST_REQUIRE(::chmod(target.c_str(), 0664) == 0);
    save(new_state(), target);
    BOOST_REQUIRE(::stat(target.c_str(), &st) == 0);
    BOOST_TEST((st.st_mode & 07777) == 0664u);
}

BOOST_AUTO_TEST_CASE(a_save_keeps_the_owner_and_group_of_the_file_it_replaces)
{
    // A root job (a cron'd evaluation, a container) saving over a user's checkpoint used to
    // leave it root's: the user could no longer replace or delete what was theirs.
    if (::geteuid() != 0)
    {
        BOOST_TEST_MESSAGE("not root: giving a file to another owner is not allowed, not checked");
        return;
    }
    temp_dir dir;
    for (const char* name : {"model.ember", "model.pth", "model.safetensors"})
    {
        BOOST_TEST_CONTEXT(name)
        {
            const fs::path target = dir.path / name;
            save(old_state(), target);
            BOOST_REQUIRE(::chown(target.c_str(), 4321, 4322) == 0);
            BOOST_REQUIRE(::chmod(target.c_str(), 0640) == 0);
            save(new_state(), target);
            struct stat st
            {
            };
            BOOST_REQUIRE(::stat(target.c_str(), &st) == 0);
            BOOST_TEST(st.st_uid == 4321u);
            BOOST_TEST(st.st_gid == 4322u);
            BOOST_TEST((st.st_mode & 07777) == 0640u);
            // A new file is the saver's.
            const fs::path fresh = dir.path / (std::string("new-") + name);
            save(new_state(), fresh);
            BOOST_REQUIRE(::stat(fresh.c_str(), &st) == 0);
            BOOST_TEST(st.st_uid == ::geteuid());
            // Saved through a symbolic link, the file that replaces the link is the saver's:
            // whoever may write the folder must not choose whose root's output becomes.
            const fs::path link = dir.path / (std::string("link-") + name);
            fs::create_symlink(target, link);
            save(new_state(), link);
            BOOST_REQUIRE(::lstat(link.c_str(), &st) == 0);
            BOOST_TEST(S_ISREG(st.st_mode));
            BOOST_TEST(st.st_uid == ::geteuid());
            BOOST_TEST((st.st_mode & 07777) == 0640u); // the bits still follow the link
        }
    }
}

BOOST_AUTO_TEST_CASE(a_name_as_long_as_the_folder_allows_is_saved)
{
    // The temporary's name is the target's and 7 to 26 bytes more; past the 255 bytes a file
    // name may have, its copy of the target's name is cut short. A name of 231 bytes or more
    // could not be saved at all, one of 230 about every other time ("cannot create a
    // temporary file in '...': File name too long").
    temp_dir dir;
    for (std::size_t length : {200u, 229u, 230u, 255u})
    {
        BOOST_TEST_CONTEXT("a name of " << length << " bytes")
        {
            const std::string name = std::string(length - 6, 'm') + ".ember";
            const fs::path target = dir.path / name;
            save(old_state(), target);
            save(new_state(), target);
            BOOST_TEST((load<state_dict>(target) == new_state()));
            BOOST_TEST(entries(dir.path) == std::vector<std::string>{name},
                       boost::test_tools::per_element());
            fs::remove(target);
        }
    }
    // Too long for any file: an io_error naming it, and nothing left behind.
    const fs::path too_long = dir.path / (std::string(250, 'm') + ".ember");
    const std::string msg = test::message_of<io_error>([&] { save(new_state(), too_long); });
    BOOST_TEST(contains(msg, too_long.string()));
    BOOST_TEST(contains(msg, std::strerror(ENAMETOOLONG)));
    BOOST_TEST(entries(dir.path).empty());
}

BOOST_AUTO_TEST_CASE(a_temporary_name_cut_short_ends_on_a_whole_utf8_character)
{
    // 'é' is two bytes in UTF-8: a cut between them would give the temporary a name that is
    // not UTF-8, which file systems that insist on it refuse. The temporary is kept here (its
    // fsync fails, then its removal) to look at its name.
    temp_dir dir;
    std::string name;
    for (int i = 0; i < 124; ++i)
        name += "\xc3\xa9";
    name += "x.ember"; // 255 bytes
    const fs::path target = dir.path / name;
    {
        injected inject(failing(op_fsync, 1, EIO));
        detail::file_ops ops = detail::active_file_ops();
        ops.unlink = [](const char*) -> int
        {
            errno = EIO;
            return -1;
        };
        detail::scoped_file_ops inner(ops);
        BOOST_CHECK_THROW(save(new_state(), target), io_error);
    }
    const auto names = entries(dir.path);
    BOOST_REQUIRE(names.size() == 1u);
    const std::string& temp = names[0];
    BOOST_TEST(temp.size() <= 255u);
    const std::size_t tmp = temp.rfind(".tmp-");
    BOOST_REQUIRE(tmp != std::string::npos);
    const std::string kept = temp.substr(1, tmp - 1);
    BOOST_TEST(kept.size() < name.size());
    BOOST_TEST(name.compare(0, kept.size(), kept) == 0);
    BOOST_TEST((static_cast<unsigned char>(name[kept.size()]) & 0xC0) != 0x80);
}

BOOST_AUTO_TEST_CASE(loading_a_fifo_is_an_io_error_not_a_wait_for_a_writer)
{
    // Opening a FIFO to read waits until a writer opens it: a load of one, by any loader, hung
    // for good. Refused now as not a regular file, like a device. The loads run in a child
    // process with an alarm, so that a hang fails this test rather than stopping the suite.
    temp_dir dir;
    const fs::path fifo = dir.path / "model.pth";
    BOOST_REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    const pid_t pid = ::fork();
    BOOST_REQUIRE(pid >= 0);
    if (pid == 0)
    {
        ::alarm(20);
        int failures = 0;
        auto refused = [&](auto&& load_it)
        {
            try
            {
                load_it();
            }
            catch (const io_error& e)
            {
                const std::string msg = e.what();
                if (contains(msg, fifo.string()) && contains(msg, "it is not a regular file"))
                    return;
                std::fprintf(stderr, "unexpected message: %s\n", msg.c_str());
            }
            catch (...)
            {
            }
            ++failures;
        };
        refused([&] { (void)load<state_dict>(fifo); });
        refused([&] { (void)load<state_dict>(fifo, file_format::ember); });
        refused([&] { (void)probe(fifo); });
        refused([&] { (void)pytorch::load<state_dict>(fifo); });
        refused([&] { (void)safetensors::load(fifo); });
        refused([&] { (void)safetensors::safe_open(fifo); });
        ::_exit(failures);
    }
    int status = 0;
    BOOST_REQUIRE(::waitpid(pid, &status, 0) == pid);
    BOOST_TEST_INFO("status " << status);
    BOOST_TEST(!(WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM), "a load waited for a writer");
    BOOST_TEST((WIFEXITED(status) && WEXITSTATUS(status) == 0));
}

BOOST_AUTO_TEST_CASE(a_temporary_that_cannot_be_created_is_an_io_error_naming_the_folder)
{
    temp_dir dir;
    for (int err : {EACCES, ENOSPC, EROFS, EMFILE, EDQUOT})
    {
        BOOST_TEST_CONTEXT("errno " << err)
        {
            auto calls =
                expect_failed_save(dir.path, failing(op_open, 1, err),
                                   "cannot create a temporary file in '" + dir.path.string() + "'");
            BOOST_TEST(calls[op_write] == 0);
        }
    }
}

BOOST_AUTO_TEST_CASE(a_cleanup_that_fails_still_reports_the_first_error)
{
    temp_dir dir;
    const fs::path target = dir.path / "model.ember";
    save(old_state(), target);
    const auto before = read_bytes(target);
    plan p = failing(op_fsync, 1, EIO);
    {
        injected inject(p);
        g_plan.calls = {};
        // unlink of the temporary fails too: the fsync error is still the one reported
        auto unlink_fails = [](const char*) -> int
        {
            ++g_plan.calls[op_unlink];
            errno = EIO;
            return -1;
        };
        detail::file_ops ops = detail::active_file_ops();
        ops.unlink = unlink_fails;
        detail::scoped_file_ops inner(ops);
        try
        {
            save(new_state(), target);
            BOOST_ERROR("save succeeded although fsync failed");
        }
        catch (const io_error& e)
        {
            BOOST_TEST(contains(e.what(), "fsync failed: " + std::string(std::strerror(EIO))));
        }
        BOOST_TEST(g_plan.calls[op_unlink] == 1);
    }
    BOOST_TEST((read_bytes(target) == before));
    // The temporary it could not remove is a hidden .model.ember.tmp-* beside the target, never
    // the target itself.
    auto names = entries(dir.path);
    BOOST_TEST(names.size() == 2u);
    BOOST_TEST(names[0].rfind(".model.ember.tmp-", 0) == 0u);
    BOOST_TEST(names[1] == "model.ember");
}

BOOST_AUTO_TEST_CASE(a_folder_fsync_failure_after_the_rename_throws_and_the_file_is_whole_and_new)
{
    // The rename is the commit point: after it the old file is gone. The error still says the
    // save may not be durable, the new file is whole, and fsync is not retried.
    temp_dir dir;
    const fs::path target = dir.path / "model.ember";
    for (int err : {EIO, ENOSPC})
    {
        BOOST_TEST_CONTEXT("errno " << err)
        {
            save(old_state(), target);
            injected inject(failing(op_fsync, 2, err));
            try
            {
                save(new_state(), target);
                BOOST_ERROR("save succeeded although the folder fsync failed");
            }
            catch (const io_error& e)
            {
                const std::string msg = e.what();
                BOOST_TEST(contains(msg, "'" + target.string() + "'"));
                BOOST_TEST(contains(msg, "fsync of its folder failed"));
                BOOST_TEST(contains(msg, std::strerror(err)));
            }
            BOOST_TEST(inject.calls(op_fsync) == 2);
            BOOST_TEST(inject.calls(op_close) == 2); // the file and the folder
        }
        BOOST_TEST((load<state_dict>(target) == new_state()));
        BOOST_TEST(entries(dir.path) == std::vector<std::string>{"model.ember"},
                   boost::test_tools::per_element());
    }
    {
        save(old_state(), target);
        injected inject(failing(op_open, 2, EMFILE));
        BOOST_CHECK_EXCEPTION(save(new_state(), target), io_error,
                              [](const io_error& e)
                              { return contains(e.what(), "cannot open its folder"); });
        BOOST_TEST(inject.calls(op_fsync) == 1);
    }
    BOOST_TEST((load<state_dict>(target) == new_state()));
}

BOOST_AUTO_TEST_CASE(a_failure_on_the_first_save_leaves_no_file_at_all)
{
    temp_dir dir;
    for (op o : {op_open, op_write, op_fsync, op_close, op_rename})
    {
        BOOST_TEST_CONTEXT(op_names[o])
        {
            injected inject(failing(o, 1, EIO));
            BOOST_CHECK_THROW(save(new_state(), dir.path / "model.ember"), io_error);
        }
        BOOST_TEST(entries(dir.path).empty());
    }
}

BOOST_AUTO_TEST_CASE(a_failing_read_is_an_io_error_naming_the_file)
{
    temp_dir dir;
    const fs::path target = dir.path / "model.ember";
    save(new_state(), target);
    for (int err : {EIO, EISDIR})
    {
        injected inject(failing(op_read, 1, err));
        BOOST_CHECK_EXCEPTION(load<state_dict>(target), io_error,
                              [&](const io_error& e) {
                                  return contains(e.what(), target.string()) &&
                                         contains(e.what(), std::strerror(err));
                              });
        BOOST_TEST(inject.calls(op_close) == 1); // the descriptor is not leaked
    }
}

BOOST_AUTO_TEST_CASE(a_folder_the_user_may_not_write_is_an_io_error_and_the_file_stays)
{
    // A real EACCES, not an injected one. Root may write anywhere, so as root a child process
    // drops to the unprivileged user 'nobody' (65534) before it saves; otherwise the folder is
    // made read-only.
    temp_dir dir;
    const fs::path target = dir.path / "model.ember";
    save(old_state(), target);
    const auto before = read_bytes(target);
    const std::string target_name = target.string();
    auto attempt = [&]() -> int
    {
        try
        {
            save(new_state(), target);
            return 10; // saved although not allowed
        }
        catch (const io_error& e)
        {
            const std::string msg = e.what();
            if (!contains(msg, target_name) || !contains(msg, std::strerror(EACCES)))
            {
                std::fprintf(stderr, "unexpected message: %s\n", msg.c_str());
                return 11;
            }
            return 0;
        }
        catch (...)
        {
            return 12;
        }
    };
    if (::geteuid() == 0)
    {
        const pid_t pid = ::fork();
        BOOST_REQUIRE(pid >= 0);
        if (pid == 0)
        {
            if (::setgid(65534) != 0 || ::setuid(65534) != 0)
                ::_exit(20);
            ::_exit(attempt());
        }
        int status = 0;
        BOOST_REQUIRE(::waitpid(pid, &status, 0) == pid);
        BOOST_REQUIRE(WIFEXITED(status));
        if (WEXITSTATUS(status) == 20)
            BOOST_WARN_MESSAGE(false, "skipped the real permission check: running as root and "
                                      "cannot drop to uid 65534 (no CAP_SETUID here); the "
                                      "injected EACCES test still ran");
        else
            BOOST_TEST(WEXITSTATUS(status) == 0);
    }
    else
    {
        fs::permissions(dir.path, fs::perms::owner_read | fs::perms::owner_exec);
        BOOST_TEST(attempt() == 0);
        fs::permissions(dir.path, fs::perms::owner_all);
    }
    BOOST_TEST((read_bytes(target) == before));
    BOOST_TEST(entries(dir.path) == std::vector<std::string>{"model.ember"},
               boost::test_tools::per_element());
}

// ---- SIGKILL at random moments ------------------------------------------------------------

namespace
{

fs::path crash_writer_path()
{
    if (const char* env = std::getenv("EMBER_CRASH_WRITER"))
        return env;
    // Meson builds it next to this test.
    return fs::read_symlink("/proc/self/exe").parent_path() / "crash_writer";
}

std::size_t env_size(const char* name, std::size_t fallback)
{
    const char* v = std::getenv(name);
    return v ? static_cast<std::size_t>(std::strtoull(v, nullptr, 10)) : fallback;
}

struct writer_process
{
    pid_t pid = -1;
    int out = -1; // read end of its stdout

    writer_process(const fs::path& exe, const fs::path& target, std::int64_t first,
                   std::size_t words)
    {
        int fds[2];
        BOOST_REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
        const std::string a0 = exe.string(), a1 = target.string(), a2 = std::to_string(first),
                          a3 = std::to_string(words);
        pid = ::fork();
        BOOST_REQUIRE(pid >= 0);
        if (pid == 0)
        {
            ::dup2(fds[1], STDOUT_FILENO);
            char* argv[] = {const_cast<char*>(a0.c_str()), const_cast<char*>(a1.c_str()),
                            const_cast<char*>(a2.c_str()), const_cast<char*>(a3.c_str()), nullptr};
            ::execv(argv[0], argv);
            ::_exit(127);
        }
        ::close(fds[1]);
        out = fds[0];
    }
    ~writer_process()
    {
        if (pid > 0)
        {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
        }
        if (out >= 0)
            ::close(out);
    }

    /// Everything it wrote (blocks until it has exited and its pipe is drained).
    std::vector<unsigned char> drain()
    {
        std::vector<unsigned char> all;
        unsigned char buf[4096];
        for (;;)
        {
            ssize_t n = ::read(out, buf, sizeof buf);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            all.insert(all.end(), buf, buf + n);
        }
        return all;
    }
};

} // namespace

BOOST_AUTO_TEST_CASE(a_writer_killed_at_random_moments_always_leaves_a_whole_version)
{
    // EMBER_STRESS_TRIALS=500 for the stress run; CI runs the default.
    const std::size_t trials = env_size("EMBER_STRESS_TRIALS", 30);
    const std::size_t words = env_size("EMBER_STRESS_WORDS", std::size_t{1} << 20); // 4 MiB
    const fs::path exe = crash_writer_path();
    BOOST_REQUIRE_MESSAGE(fs::exists(exe), exe << " is missing: build the crash_writer target");

    temp_dir dir;
    const fs::path target = dir.path / "state.ember";
    const std::string temp_prefix = ".state.ember.tmp-";

    // Kill delays spread over a few save durations, so kills land before, in and after saves.
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 3; ++i)
        save(crash_test::version_state(-1 - i, words), dir.path / "probe.ember");
    const auto save_us =
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0)
            .count() /
        3;
    fs::remove(dir.path / "probe.ember");
    const auto seed = std::random_device{}();
    std::mt19937 rng(seed);
    std::uniform_int_distribution<long> delay_us(0, 3 * save_us + 1000);
    BOOST_TEST_MESSAGE("one save of " << words * 4 / 1024 << " KiB takes about " << save_us
                                      << " us; seed " << seed);

    std::int64_t on_disk = 0; // version in the file; 0: no file yet
    std::size_t kept_old = 0, took_new = 0, temps_left = 0, no_report = 0;
    for (std::size_t trial = 0; trial < trials; ++trial)
    {
        BOOST_TEST_CONTEXT("trial " << trial << " (seed " << seed << "), file at version "
                                    << on_disk)
        {
            writer_process w(exe, target, on_disk + 1, words);
            unsigned char ready = 0;
            pollfd pfd{w.out, POLLIN, 0};
            BOOST_REQUIRE_MESSAGE(::poll(&pfd, 1, 20000) == 1, "crash_writer did not start");
            BOOST_REQUIRE(::read(w.out, &ready, 1) == 1);
            BOOST_REQUIRE(ready == 'R');
            std::this_thread::sleep_for(std::chrono::microseconds(delay_us(rng)));
            BOOST_REQUIRE(::kill(w.pid, SIGKILL) == 0);
            int status = 0;
            BOOST_REQUIRE(::waitpid(w.pid, &status, 0) == w.pid);
            w.pid = -1;
            BOOST_REQUIRE_MESSAGE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                                  "crash_writer ended by itself (status " << status << ")");

            // Versions whose save returned before the kill.
            const auto out = w.drain();
            BOOST_REQUIRE(out.size() % 8 == 0);
            std::int64_t reported = on_disk;
            for (std::size_t i = 0; i < out.size(); i += 8)
                std::memcpy(&reported, out.data() + i, 8);
            no_report += out.empty();

            // The file is the last reported version or the one being saved, whole.
            std::int64_t found = 0;
            if (fs::exists(target))
            {
                state_dict sd;
                try
                {
                    sd = load<state_dict>(target);
                }
                catch (const error& e)
                {
                    BOOST_FAIL("the file does not load after the kill: " << e.what());
                }
                BOOST_REQUIRE(sd.contains("version"));
                found = sd.at("version").item<std::int64_t>();
                BOOST_REQUIRE((found == reported || found == reported + 1));
                BOOST_REQUIRE_MESSAGE((sd == crash_test::version_state(found, words)),
                                      "the file holds a damaged version " << found);
            }
            else
                BOOST_REQUIRE_MESSAGE(reported == 0, "the file vanished");
            took_new += found > on_disk;
            kept_old += found == on_disk;
            on_disk = found;

            // Killed mid-save, the writer leaves its hidden temporary beside the file; it
            // is never at the target's name. Clear them so each trial counts its own.
            for (const auto& name : entries(dir.path))
            {
                if (name == "state.ember")
                    continue;
                BOOST_REQUIRE_MESSAGE(name.rfind(temp_prefix, 0) == 0, "unexpected file " << name);
                ++temps_left;
                fs::remove(dir.path / name);
            }
        }
    }
    BOOST_TEST_MESSAGE(trials << " kills: file unchanged " << kept_old << ", advanced " << took_new
                              << ", temporaries left by " << temps_left
                              << ", killed before the first save returned " << no_report
                              << "; last version " << on_disk);
    BOOST_TEST(kept_old + took_new == trials);
}

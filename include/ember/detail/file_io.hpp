#pragma once
/// @file
/// Crash-safe whole-file writes and checked whole-file reads (POSIX).
///
/// atomic_write follows the recipe that keeps the previous file whole whatever happens: a
/// temporary file in the target's folder (O_CREAT|O_EXCL), its space reserved (fallocate, so a
/// full disk fails before the first write), every write checked (a large file's around the page
/// cache, see atomic_file_writer), fsync, close, rename over the target, fsync of the folder. The
/// file replaced is freed by the kernel on another thread (replaced_file), not inside the rename.
/// On any failure before the rename the temporary is removed, an io_error names the path and the
/// reason, and the old file is untouched. An fsync that failed is never retried: after a failed
/// fsync the kernel may have dropped the dirty pages, so a second fsync can succeed without the
/// data being on disk.
///
/// The rename is the commit point. A failure after it (opening or fsyncing the folder) still
/// throws, because the rename may not survive a power loss, but the target then already holds
/// the whole new file; there is no old file left to keep.
///
/// Every system call goes through detail::file_ops, a table of function pointers that tests
/// swap (scoped_file_ops) to make a chosen call fail with a chosen errno: disk full on the
/// third write, an I/O error from fsync, a rename that is refused.

#include "ember/core/error.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <new>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

namespace ember::detail
{

/// open(2) with its mode argument spelled out (the real one is variadic, so it has no plain
/// function pointer of this type).
inline int system_open(const char* path, int flags, mode_t mode)
{
    return ::open(path, flags, mode);
}

/// fallocate(2) of a file's first `size` bytes, where the system has it; -1 with errno
/// EOPNOTSUPP elsewhere.
inline int system_allocate(int fd, off_t size)
{
#if defined(__linux__)
    return ::fallocate(fd, 0, 0, size);
#else
    (void)fd;
    (void)size;
    errno = EOPNOTSUPP;
    return -1;
#endif
}

/// Turns O_DIRECT on or off for `fd` (fcntl(2) F_SETFL); -1 with errno EOPNOTSUPP where the
/// system has no O_DIRECT.
inline int system_set_direct(int fd, bool on)
{
#if defined(__linux__) && defined(O_DIRECT)
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0)
        return -1;
    return ::fcntl(fd, F_SETFL, on ? flags | O_DIRECT : flags & ~O_DIRECT);
#else
    (void)fd;
    (void)on;
    errno = EOPNOTSUPP;
    return -1;
#endif
}

/// The system calls atomic_write and read_file make (replaced_file's best-effort open and close
/// are not among them: nothing depends on them succeeding). Defaults are the real calls; the table
/// costs one pointer load per call, nothing beside a system call.
struct file_ops
{
    int (*open)(const char* path, int flags, mode_t mode) = &system_open;
    ssize_t (*write)(int fd, const void* buffer, std::size_t count) = &::write;
    ssize_t (*read)(int fd, void* buffer, std::size_t count) = &::read;
    int (*fsync)(int fd) = &::fsync;
    int (*close)(int fd) = &::close;
    int (*rename)(const char* from, const char* to) = &::rename;
    int (*unlink)(const char* path) = &::unlink;
    int (*allocate)(int fd, off_t size) = &system_allocate;
    off_t (*seek)(int fd, off_t offset, int whence) = &::lseek;
    int (*set_direct)(int fd, bool on) = &system_set_direct; // last: older tables stay valid
};

/// The table this thread's file operations use. Per thread, so a test that injects failures
/// cannot break a save running on another thread.
inline file_ops& active_file_ops() noexcept
{
    thread_local file_ops ops;
    return ops;
}

/// Installs `ops` for this thread for its lifetime, then restores the previous table.
class scoped_file_ops
{
public:
    explicit scoped_file_ops(const file_ops& ops) noexcept : m_previous(active_file_ops())
    {
        active_file_ops() = ops;
    }
    ~scoped_file_ops() { active_file_ops() = m_previous; }
    scoped_file_ops(const scoped_file_ops&) = delete;
    scoped_file_ops& operator=(const scoped_file_ops&) = delete;

private:
    file_ops m_previous;
};

inline std::string errno_text(int err)
{
    return std::strerror(err);
}

/// A file's name in quotes, as PyTorch's and safetensors' readers name it in messages.
inline std::string quoted_name(std::string_view name)
{
    std::string q(1, '\'');
    q += name;
    q += '\'';
    return q;
}

/// What write_fully returns for a write that made no progress (errno values are positive).
inline constexpr int write_no_progress = -1;

/// Writes `data[done, size)` at `fd`'s offset through `ops`, continuing short and interrupted
/// writes, and advances `done`. Returns 0, or the errno of the write that failed, or
/// write_no_progress (a regular file never returns 0; retrying could spin forever). With
/// `block` > 1 it also stops, returning 0 with `done < size`, where what is left is not a
/// multiple of `block` or a write is refused with EINVAL (O_DIRECT's alignments).
inline int write_fully(const file_ops& ops, int fd, const std::byte* data, std::size_t size,
                       std::size_t& done, std::size_t block = 1) noexcept
{
    while (done < size && (size - done) % block == 0)
    {
        const ssize_t n = ops.write(fd, data + done, size - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EINVAL && block > 1)
            return 0;
        if (n < 0)
            return errno;
        if (n == 0)
            return write_no_progress;
        done += static_cast<std::size_t>(n);
    }
    return 0;
}

/// The thread that writes a direct save's chunks (atomic_file_writer), in order, while the
/// saving thread gathers the next ones. Up to `depth` chunks wait for it, so the disk does not
/// wait for the saver, nor for a thread to start. A direct write refused (EINVAL: the file
/// system wants other alignments) or cut short of a whole block turns O_DIRECT off, and that
/// chunk's rest and every later chunk go through the cache; any other failure stops the
/// writing, and the saver reports it (failed(), then the fields after stop()).
class chunk_writer
{
public:
    static constexpr std::size_t depth = 3;

    chunk_writer() noexcept = default;
    ~chunk_writer() { stop(); }
    chunk_writer(const chunk_writer&) = delete;
    chunk_writer& operator=(const chunk_writer&) = delete;

    /// Starts the thread for `fd`, already O_DIRECT, writing from `buffers` (depth chunks of
    /// `chunk` bytes) through `ops`; false where no thread can be had.
    bool start(int fd, const file_ops& ops, std::byte* buffers, std::size_t chunk) noexcept;
    bool running() const noexcept { return m_running; }

    /// The buffer to fill next, once the thread is done with what it held.
    std::byte* next_buffer() noexcept;
    /// Hands over the first `size` bytes of next_buffer(), which go at file offset `offset`.
    void submit(std::size_t size, std::size_t offset) noexcept;
    /// Whether a write has failed (the saver then stops gathering).
    bool failed() noexcept;
    /// Skips the chunks not yet written (the save is being abandoned).
    void abandon() noexcept;
    /// Waits for every chunk handed over, and ends the thread.
    void stop() noexcept;

    // What the writing came to, once stopped.
    int error = 0;                  // as write_fully returns it, or set_direct's errno
    bool direct_off_failed = false; // O_DIRECT could not be turned off
    std::size_t failed_at = 0;      // the file offset the failure was at
    bool direct = true;             // O_DIRECT still on

private:
    static void* run(void* self) noexcept;
    void write_chunk(const std::byte* data, std::size_t size, std::size_t offset) noexcept;
    void fail_at(std::size_t offset, int err) noexcept;

    file_ops m_ops; // the saving thread's table: fault injection is per thread
    int m_fd = -1;
    std::byte* m_buffers = nullptr;
    std::size_t m_chunk = 0;
    std::size_t m_sizes[depth] = {};
    std::size_t m_offsets[depth] = {};
    std::size_t m_queued = 0;  // chunks handed over
    std::size_t m_written = 0; // chunks the thread is done with
    bool m_stopping = false;
    bool m_failed = false;
    bool m_running = false;
    pthread_t m_thread{};
    pthread_mutex_t m_mutex = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t m_changed = PTHREAD_COND_INITIALIZER;
};

/// The temporary file of an atomic write, handed to the producer of atomic_write_with. Every
/// write goes through file_ops.write; short and interrupted writes are continued; a failure
/// throws io_error ("cannot save 'path': write failed after X of Y bytes: reason").
///
/// A file of direct_min bytes or more bypasses the page cache (O_DIRECT): its bytes are
/// gathered in aligned buffers and written a direct_chunk at a time by a thread while the next
/// are gathered (chunk_writer); the last partial block and any rewrite go through the
/// cache (finish, rewrite_at). A buffered write of a large file has the kernel find, zero and
/// fill a fresh page-cache page for every 4 KiB, and on a virtual machine that hands freed
/// memory back to its host (free page reporting) each such page can cost a host fault: the
/// same 400 MB save took 0.6 s in a fresh process where it took 0.2 s on warm memory
/// (docs/benchmarks.md). A save is fsynced anyway, so the cache would only hold bytes already
/// on their way to disk. Where the file system refuses O_DIRECT, or a direct write is
/// refused or cut short, the writer carries on through the cache.
class atomic_file_writer
{
public:
    atomic_file_writer(int fd, std::size_t total, const std::string& target) noexcept;
    ~atomic_file_writer();
    atomic_file_writer(const atomic_file_writer&) = delete;
    atomic_file_writer& operator=(const atomic_file_writer&) = delete;

    /// Appends `bytes` to the file.
    void write(std::span<const std::byte> bytes);

    /// Overwrites bytes written before, from `offset` (a header whose checksums are known only
    /// once what follows it is written); the file's size does not change, and later writes
    /// still append.
    void rewrite_at(std::size_t offset, std::span<const std::byte> bytes);

    /// Overwrites the file's first bytes (rewrite_at(0, bytes)).
    void rewrite_front(std::span<const std::byte> bytes) { rewrite_at(0, bytes); }

    /// Writes out what is still gathered and waits for it; atomic_write_with calls it before
    /// the fsync.
    void finish();

    /// Bytes appended so far.
    std::size_t written() const noexcept { return m_written; }

    /// Whether the save went around the page cache (O_DIRECT), for some or all of its bytes.
    bool bypassed_cache() const noexcept { return m_bypassed; }

    /// Files from this size up are written with O_DIRECT.
    static constexpr std::size_t direct_min = std::size_t{64} << 20;
    /// The size of a direct write; the alignment of its buffers and of its offsets in the
    /// file (4 KiB covers the block sizes O_DIRECT asks for).
    static constexpr std::size_t direct_chunk = std::size_t{8} << 20;
    static constexpr std::size_t direct_alignment = 4096;

private:
    /// Writes all of `bytes` at the current offset; `done` counts them for messages.
    void write_all(std::span<const std::byte> bytes, std::size_t& done, std::size_t total);
    /// Hands the gathered chunk to the writer thread and gathers on into the next buffer.
    void hand_over();
    /// Ends the writer thread, and throws what failed there.
    void stop_writer();
    /// Turns O_DIRECT off; later writes go through the cache.
    void stop_direct();
    [[noreturn]] void fail(const std::string& what) const;
    /// fail() for write_fully's `err` after `done` of `total` bytes.
    [[noreturn]] void fail_write(int err, std::size_t done, std::size_t total) const;

    int m_fd;
    std::size_t m_total;
    const std::string& m_target;
    std::size_t m_written = 0;
    std::size_t m_flushed = 0;      // bytes whose writeback write() has started
    std::byte* m_buffers = nullptr; // chunk_writer::depth direct_chunk buffers, aligned
    std::byte* m_gather = nullptr;  // the one being filled
    std::size_t m_gathered = 0;     // bytes of m_written still in m_gather
    chunk_writer m_chunks;
    bool m_direct = false;
    bool m_bypassed = false;

    static constexpr std::size_t writeback_chunk = std::size_t{8} << 20;
};

/// The file a save is about to replace, held open across the rename and closed on a background
/// thread. The kernel frees a file's cached pages and disk blocks when its last link and last
/// descriptor are gone; without the hold that happens inside rename(), on the saving thread, and
/// for a 400 MB file it took about 65 ms on ext4, a third of the save. Only a regular file with
/// one link, of at least `min_size` bytes, is held; anything else is left to rename. Failing to
/// open it is not an error: the save then simply pays for the freeing itself.
class replaced_file
{
public:
    explicit replaced_file(const std::filesystem::path& path) noexcept;
    ~replaced_file();
    replaced_file(const replaced_file&) = delete;
    replaced_file& operator=(const replaced_file&) = delete;

    /// Below this the freeing costs less than starting a thread.
    static constexpr off_t min_size = off_t{4} << 20;

    /// Waits, up to `limit_ms`, until no replaced file is still held or being freed; false if
    /// none was. A save that finds the disk full calls it before it gives up: its space may be
    /// held by the file the previous save replaced.
    static bool wait_for_releases(int limit_ms) noexcept;

private:
    static void* close_in_background(void* fd) noexcept;
    static std::atomic<int>& pending() noexcept
    {
        static std::atomic<int> count{0};
        return count;
    }

    int m_fd = -1;
};

/// A lock on a save's temporary file, held from its creation until the save is over (committed
/// or removed). checkpoint_manager::remove_temporaries passes over a temporary that is locked,
/// so a second writer in the folder (another manager, another process) removes only those whose
/// save is gone (the kernel drops a lock with the process that held it); it once removed the
/// temporary of a save in progress, which then failed at its rename. On a descriptor of its own:
/// the written one is closed before the rename. Not through file_ops, and best effort: where no
/// lock can be had, the save goes on without.
class temporary_lock
{
public:
    explicit temporary_lock(const std::filesystem::path& temp) noexcept;
    ~temporary_lock()
    {
        if (m_fd >= 0)
            ::close(m_fd);
    }
    temporary_lock(const temporary_lock&) = delete;
    temporary_lock& operator=(const temporary_lock&) = delete;

    /// Whether a save in progress holds the temporary file `temp` locked.
    static bool held(const std::filesystem::path& temp) noexcept;

private:
    int m_fd = -1;
};

/// A random number for a temporary file's name: getrandom(2), or where that fails (a seccomp
/// filter, an old kernel) the clock's nanoseconds mixed with the process id and a counter.
/// O_EXCL catches a clash either way. (Not std::random_device, which throws a std exception
/// where it finds no entropy source, and brings <random> into every file that saves.)
inline std::uint64_t temporary_name_number() noexcept
{
    std::uint64_t r = 0;
    if (::getrandom(&r, sizeof r, GRND_NONBLOCK) == static_cast<ssize_t>(sizeof r))
        return r;
    static std::atomic<std::uint64_t> counter{0};
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);
    const auto nanoseconds = static_cast<std::uint64_t>(now.tv_sec) * 1000000000u +
                             static_cast<std::uint64_t>(now.tv_nsec);
    return nanoseconds ^ (static_cast<std::uint64_t>(::getpid()) << 40) ^
           (counter.fetch_add(1, std::memory_order_relaxed) * 0x9E3779B97F4A7C15u);
}

/// The name of the temporary file that saving to a file named `name` writes first:
/// "." + name + ".tmp-" + number. Where that would be longer than a file name may be (255 bytes
/// on Linux's file systems) the copy of `name` is cut short, at the start of a UTF-8 character,
/// so that every name the target may have can be saved; O_EXCL still keeps writers apart.
std::string temporary_name(const std::string& name, std::uint64_t number);

/// Writes a file of `total` bytes, produced by `produce(atomic_file_writer&)`, to `path`
/// atomically and durably, or throws and leaves `path` as it was (see the file comment for a
/// failure after the rename). Whatever `produce` throws removes the temporary and propagates.
/// `total` is what messages call the file's size; the bytes written must add up to it.
template <class Produce>
void atomic_write_with(const std::filesystem::path& path, std::size_t total, Produce&& produce);

/// Writes `bytes` to `path` atomically and durably, or throws io_error and leaves `path` as it
/// was (see the file comment for a failure after the rename).
void atomic_write(const std::filesystem::path& path, std::span<const std::byte> bytes);

/// The whole content of `path`, or io_error naming the path and the reason.
std::vector<std::byte> read_file(const std::filesystem::path& path);

/// Some bytes of a file, and the file's size.
struct file_part
{
    std::vector<std::byte> bytes;
    std::size_t file_size = 0;
};

/// The first `length` bytes of `path` (with `from_end`, the last), or all of them where the file
/// is shorter, read through file_ops: a header or an end record without reading the rest, as
/// mapping the file would (mapped_file reads ahead). io_error naming the path otherwise.
file_part read_file_part(const std::filesystem::path& path, std::size_t length, bool from_end);

/// Opens `path` read-only through file_ops and sets `size`; throws io_error unless it is a
/// regular file (a FIFO is refused, not waited on). The caller closes the descriptor
/// (file_ops.close).
int open_regular_file(const std::filesystem::path& path, std::size_t& size);

/// Reads exactly `out.size()` bytes from `fd` through file_ops.read, continuing short and
/// interrupted reads; io_error naming `name` otherwise. Does not close `fd`.
void read_exactly(int fd, std::span<std::byte> out, const std::string& name);

/*******************
 * implementation  *
 *******************/

inline void atomic_file_writer::fail(const std::string& what) const
{
    throw io_error("cannot save '" + m_target + "': " + what);
}

inline void atomic_file_writer::write_all(std::span<const std::byte> bytes, std::size_t& done,
                                          std::size_t total)
{
    std::size_t n = 0;
    const int err = write_fully(active_file_ops(), m_fd, bytes.data(), bytes.size(), n);
    done += n;
    if (err != 0)
        fail_write(err, done, total);
}

inline void atomic_file_writer::fail_write(int err, std::size_t done, std::size_t total) const
{
    const std::string where =
        " after " + std::to_string(done) + " of " + std::to_string(total) + " bytes";
    if (err == write_no_progress)
        fail("write made no progress" + where);
    fail("write failed" + where + ": " + errno_text(err));
}

inline bool chunk_writer::start(int fd, const file_ops& ops, std::byte* buffers,
                                std::size_t chunk) noexcept
{
    m_ops = ops;
    m_fd = fd;
    m_buffers = buffers;
    m_chunk = chunk;
    m_running = ::pthread_create(&m_thread, nullptr, &run, this) == 0;
    return m_running;
}

inline std::byte* chunk_writer::next_buffer() noexcept
{
    ::pthread_mutex_lock(&m_mutex);
    while (m_queued - m_written >= depth)
        ::pthread_cond_wait(&m_changed, &m_mutex);
    const std::size_t slot = m_queued % depth;
    ::pthread_mutex_unlock(&m_mutex);
    return m_buffers + slot * m_chunk;
}

inline void chunk_writer::submit(std::size_t size, std::size_t offset) noexcept
{
    ::pthread_mutex_lock(&m_mutex);
    const std::size_t slot = m_queued % depth;
    m_sizes[slot] = size;
    m_offsets[slot] = offset;
    ++m_queued;
    ::pthread_cond_broadcast(&m_changed);
    ::pthread_mutex_unlock(&m_mutex);
}

inline bool chunk_writer::failed() noexcept
{
    ::pthread_mutex_lock(&m_mutex);
    const bool f = m_failed;
    ::pthread_mutex_unlock(&m_mutex);
    return f;
}

inline void chunk_writer::abandon() noexcept
{
    ::pthread_mutex_lock(&m_mutex);
    m_failed = true;
    ::pthread_mutex_unlock(&m_mutex);
}

inline void chunk_writer::stop() noexcept
{
    if (!m_running)
        return;
    ::pthread_mutex_lock(&m_mutex);
    m_stopping = true;
    ::pthread_cond_broadcast(&m_changed);
    ::pthread_mutex_unlock(&m_mutex);
    ::pthread_join(m_thread, nullptr);
    m_running = false;
}

inline void* chunk_writer::run(void* self) noexcept
{
    auto& w = *static_cast<chunk_writer*>(self);
    for (std::size_t k = 0;; ++k)
    {
        ::pthread_mutex_lock(&w.m_mutex);
        while (w.m_queued == k && !w.m_stopping)
            ::pthread_cond_wait(&w.m_changed, &w.m_mutex);
        if (w.m_queued == k) // stopping, and every chunk written
        {
            ::pthread_mutex_unlock(&w.m_mutex);
            return nullptr;
        }
        const std::size_t slot = k % depth;
        const std::size_t size = w.m_sizes[slot], offset = w.m_offsets[slot];
        const bool skip = w.m_failed;
        ::pthread_mutex_unlock(&w.m_mutex);
        if (!skip)
            w.write_chunk(w.m_buffers + slot * w.m_chunk, size, offset);
        ::pthread_mutex_lock(&w.m_mutex);
        ++w.m_written;
        ::pthread_cond_broadcast(&w.m_changed);
        ::pthread_mutex_unlock(&w.m_mutex);
    }
}

inline void chunk_writer::fail_at(std::size_t offset, int err) noexcept
{
    error = err;
    failed_at = offset;
    ::pthread_mutex_lock(&m_mutex);
    m_failed = true;
    ::pthread_mutex_unlock(&m_mutex);
}

inline void chunk_writer::write_chunk(const std::byte* data, std::size_t size,
                                      std::size_t offset) noexcept
{
    // Directly while every write is of whole blocks; through the cache from the first refusal
    // or partial block on.
    std::size_t done = 0;
    int err = direct
                  ? write_fully(m_ops, m_fd, data, size, done, atomic_file_writer::direct_alignment)
                  : 0;
    if (err == 0 && done < size)
    {
        if (direct)
        {
            direct = false;
            if (m_ops.set_direct(m_fd, false) != 0)
            {
                direct_off_failed = true;
                return fail_at(offset + done, errno);
            }
        }
        err = write_fully(m_ops, m_fd, data, size, done);
    }
    if (err != 0)
        fail_at(offset + done, err);
}

inline atomic_file_writer::atomic_file_writer(int fd, std::size_t total,
                                              const std::string& target) noexcept
    : m_fd(fd), m_total(total), m_target(target)
{
    if (total < direct_min)
        return;
    constexpr std::size_t buffer_bytes = chunk_writer::depth * direct_chunk;
    m_buffers = static_cast<std::byte*>(
        ::operator new (buffer_bytes, std::align_val_t{direct_alignment}, std::nothrow));
    // No buffers, or a file system without O_DIRECT (tmpfs, some network ones): buffered.
    if (m_buffers == nullptr || active_file_ops().set_direct(m_fd, true) != 0)
        return;
    m_direct = m_bypassed = true;
    // Without a writer thread the first write() turns O_DIRECT off again (and throws there,
    // not here, if it cannot) and the save is buffered.
    if (m_chunks.start(m_fd, active_file_ops(), m_buffers, direct_chunk))
        m_gather = m_chunks.next_buffer();
}

inline atomic_file_writer::~atomic_file_writer()
{
    m_chunks.abandon(); // a save that got here running threw: write nothing more
    m_chunks.stop();    // it writes from m_buffers
    if (m_buffers != nullptr)
        ::operator delete (m_buffers, std::align_val_t{direct_alignment});
}

inline void atomic_file_writer::write(std::span<const std::byte> bytes)
{
    if (bytes.size() > m_total - std::min(m_written, m_total))
        fail("the data grew to more than the " + std::to_string(m_total) +
             " bytes it was sized at (changed while being saved?)");
    while (m_chunks.running() && !bytes.empty())
    {
        const std::size_t n = std::min(bytes.size(), direct_chunk - m_gathered);
        std::memcpy(m_gather + m_gathered, bytes.data(), n);
        m_gathered += n;
        m_written += n;
        bytes = bytes.subspan(n);
        if (m_gathered == direct_chunk)
            hand_over();
    }
    if (bytes.empty())
        return;
    stop_direct(); // no writer thread, or after finish() with O_DIRECT on: buffered from here
    write_all(bytes, m_written, m_total);
#if defined(__linux__)
    // Start writing back what is written so far, without waiting for it: the disk then works
    // while the rest is produced, and the final fsync waits only for the tail. A hint, so its
    // failure is not one; the fsync reports every error that matters.
    if (m_written - m_flushed >= writeback_chunk)
    {
        (void)::sync_file_range(m_fd, static_cast<off_t>(m_flushed),
                                static_cast<off_t>(m_written - m_flushed), SYNC_FILE_RANGE_WRITE);
        m_flushed = m_written;
    }
#endif
}

inline void atomic_file_writer::hand_over()
{
    if (m_chunks.failed())
        stop_writer(); // throws
    m_chunks.submit(m_gathered, m_written - m_gathered);
    m_gather = m_chunks.next_buffer();
    m_gathered = 0;
}

inline void atomic_file_writer::stop_writer()
{
    m_chunks.stop();
    m_direct = m_chunks.direct;
    if (m_chunks.direct_off_failed)
        fail("cannot turn off direct I/O for its last bytes: " + errno_text(m_chunks.error));
    if (m_chunks.failed())
        fail_write(m_chunks.error, m_chunks.failed_at, m_total);
}

inline void atomic_file_writer::stop_direct()
{
    if (!m_direct)
        return;
    m_direct = false;
    if (active_file_ops().set_direct(m_fd, false) != 0)
    {
        const int err = errno;
        fail("cannot turn off direct I/O for its last bytes: " + errno_text(err));
    }
}

inline void atomic_file_writer::finish()
{
    if (!m_chunks.running())
        return;
    if (m_gathered > 0) // the tail; the thread turns O_DIRECT off for a partial block
        m_chunks.submit(m_gathered, m_written - m_gathered);
    m_gathered = 0;
    stop_writer();
}

inline void atomic_file_writer::rewrite_at(std::size_t offset, std::span<const std::byte> bytes)
{
    finish(); // the bytes rewritten may still be gathered, and they go through the cache
    stop_direct();
    if (offset > m_written || bytes.size() > m_written - offset)
        fail("internal error: rewriting " + std::to_string(bytes.size()) + " bytes at offset " +
             std::to_string(offset) + " of a " + std::to_string(m_written) + "-byte file");
    auto seek = [&](std::size_t to)
    {
        if (active_file_ops().seek(m_fd, static_cast<off_t>(to), SEEK_SET) !=
            static_cast<off_t>(to))
        {
            const int err = errno;
            fail("seek to offset " + std::to_string(to) + " failed: " + errno_text(err));
        }
    };
    seek(offset);
    std::size_t done = 0;
    write_all(bytes, done, bytes.size());
    seek(m_written);
}

inline replaced_file::replaced_file(const std::filesystem::path& path) noexcept
{
    // O_NOFOLLOW: rename replaces a symbolic link, never the file it points to. O_NONBLOCK: a
    // FIFO at the path must not block the save.
    const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return;
    struct stat st
    {
    };
    if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1 && st.st_size >= min_size)
    {
        m_fd = fd;
        pending().fetch_add(1, std::memory_order_acq_rel);
    }
    else
        ::close(fd);
}

inline replaced_file::~replaced_file()
{
    if (m_fd < 0)
        return;
    // A detached POSIX thread, not std::thread: nothing waits for it (at exit the kernel closes
    // the descriptor anyway), and <pthread.h> is a fraction of <thread> to parse.
    pthread_attr_t attr;
    pthread_t thread;
    bool started = false;
    if (::pthread_attr_init(&attr) == 0)
    {
        started = ::pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0 &&
                  ::pthread_create(&thread, &attr, &close_in_background,
                                   reinterpret_cast<void*>(static_cast<std::intptr_t>(m_fd))) == 0;
        ::pthread_attr_destroy(&attr);
    }
    if (!started) // no thread to be had: free it here
    {
        ::close(m_fd);
        pending().fetch_sub(1, std::memory_order_acq_rel);
    }
}

inline void* replaced_file::close_in_background(void* fd) noexcept
{
    ::close(static_cast<int>(reinterpret_cast<std::intptr_t>(fd)));
    pending().fetch_sub(1, std::memory_order_acq_rel);
    return nullptr;
}

inline bool replaced_file::wait_for_releases(int limit_ms) noexcept
{
    if (pending().load(std::memory_order_acquire) == 0)
        return false;
    const timespec millisecond{0, 1000000};
    for (int i = 0; i < limit_ms && pending().load(std::memory_order_acquire) != 0; ++i)
        ::nanosleep(&millisecond, nullptr);
    return true;
}

inline temporary_lock::temporary_lock(const std::filesystem::path& temp) noexcept
    : m_fd(::open(temp.c_str(), O_RDONLY | O_CLOEXEC))
{
    if (m_fd >= 0 && ::flock(m_fd, LOCK_EX | LOCK_NB) != 0)
    {
        ::close(m_fd);
        m_fd = -1;
    }
}

inline bool temporary_lock::held(const std::filesystem::path& temp) noexcept
{
    // A shared lock is refused while the writer holds its exclusive one. A temporary that cannot
    // be opened (its mode, copied from the file it replaces, forbids reading) counts as free.
    const int fd = ::open(temp.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
    if (fd < 0)
        return false;
    const bool locked = ::flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    ::close(fd);
    return locked;
}

inline std::string temporary_name(const std::string& name, std::uint64_t number)
{
    constexpr std::size_t name_max = 255;
    const std::string suffix = ".tmp-" + std::to_string(number);
    std::size_t keep = name.size();
    if (1 + keep + suffix.size() > name_max)
    {
        keep = name_max - 1 - suffix.size();
        // Not between the bytes of one character: a name that is not UTF-8 is refused where a
        // file system insists on it (and shows as garbage in listings).
        while (keep > 0 && (static_cast<unsigned char>(name[keep]) & 0xC0) == 0x80)
            --keep;
    }
    return '.' + name.substr(0, keep) + suffix;
}

template <class Produce>
void atomic_write_with(const std::filesystem::path& path, std::size_t total, Produce&& produce)
{
    namespace fs = std::filesystem;
    const file_ops& ops = active_file_ops();
    const fs::path folder = path.has_parent_path() ? path.parent_path() : fs::path(".");
    const std::string target = path.string();

    // A save renames a new file over the path: over a device, a FIFO or a socket (or a link to
    // one: /dev/stdout) that would put a file where the device was, and write nothing to it.
    struct stat named
    {
    };
    if (::stat(path.c_str(), &named) == 0 && !S_ISREG(named.st_mode) && !S_ISDIR(named.st_mode))
        throw io_error("cannot save '" + target +
                       "': it is not a regular file (a device, FIFO or socket, or a link to "
                       "one); a save writes a new file and renames it over the path");

    // The new file gets the permissions of the one it replaces (of the file a symbolic link at
    // the path names), as rewriting it in place (torch.save) would leave them: a checkpoint
    // made private must not become readable by all at its next save. A new one: 0644 less the
    // umask. Its owner too, where the path is that file itself (see below): one lstat, and a
    // stat of what a symbolic link names only where the path is one.
    struct stat replaced_stat
    {
    };
    const bool replaces_file =
        ::lstat(path.c_str(), &replaced_stat) == 0 && S_ISREG(replaced_stat.st_mode);
    const bool keep_mode = replaces_file || (S_ISLNK(replaced_stat.st_mode) &&
                                             ::stat(path.c_str(), &replaced_stat) == 0 &&
                                             S_ISREG(replaced_stat.st_mode));

    // Created readable by its owner alone where it replaces a file (its bits are set below, once
    // it is this process's): with 0644 another user could open it in between, and an open file
    // stays readable after its bits narrow, so a private checkpoint's bytes could be read as
    // they were written.
    const mode_t create_mode = keep_mode ? 0600 : 0644;

    // A random suffix keeps concurrent writers apart; O_EXCL makes a clash fail, not share.
    const std::string name = path.filename().string();
    int fd = -1;
    fs::path temp;
    for (int attempt = 0; attempt < 16 && fd < 0; ++attempt)
    {
        temp = folder / temporary_name(name, temporary_name_number());
        fd = ops.open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, create_mode);
        if (fd < 0 && errno != EEXIST)
        {
            const int err = errno;
            throw io_error("cannot save '" + target + "': cannot create a temporary file in '" +
                           folder.string() + "': " + errno_text(err));
        }
    }
    if (fd < 0)
        throw io_error("cannot save '" + target + "': no free temporary file name");
    // Until the function returns: after the rename, or after clean_up removed the temporary.
    const temporary_lock lock(temp);
    // Before a byte is written: exactly these permission bits, not less the umask, as a file
    // rewritten in place keeps them. Then the owner and group, where this process may give
    // them (root may give both; others a group they belong to) and the path is the file itself,
    // not a link to it: a root job's save over a user's checkpoint leaves it the user's, as
    // rewriting it in place would. The bits go first: once the file is another's, only
    // CAP_FOWNER could still change them. A file system without permissions or owners (FAT)
    // refuses: it has none to keep.
    if (keep_mode)
        (void)::fchmod(fd, replaced_stat.st_mode & 0777);
    if (replaces_file &&
        (replaced_stat.st_uid != ::geteuid() || replaced_stat.st_gid != ::getegid()) &&
        ::fchown(fd, replaced_stat.st_uid, replaced_stat.st_gid) != 0)
        (void)::fchown(fd, static_cast<uid_t>(-1), replaced_stat.st_gid);

    // Removes the temporary (closing it first if still open); the error of the failed step is
    // the one reported, whatever the clean-up meets.
    auto clean_up = [&]
    {
        if (fd >= 0)
            ops.close(fd);
        ops.unlink(temp.c_str());
    };
    auto fail = [&](const std::string& what)
    {
        clean_up();
        throw io_error("cannot save '" + target + "': " + what);
    };

    // Reserve the whole file first: a disk too small for it fails here, before a byte is
    // written, and ext4 then skips its per-page delayed-allocation bookkeeping (a tenth of a
    // 400 MB save). Where the file system cannot reserve, the writes allocate as they go.
    auto reserve = [&]
    {
        const int done = ops.allocate(fd, static_cast<off_t>(total));
        const int err = done == 0 ? 0 : errno;
        const bool no_room = err == ENOSPC || err == EFBIG
#ifdef EDQUOT
                             || err == EDQUOT
#endif
            ;
        return no_room ? err : 0;
    };
    if (total > 0)
    {
        int err = reserve();
        // The file the last save replaced may still be being freed (replaced_file): wait for
        // its space, up to two seconds, and try once more.
        if (err != 0 && err != EFBIG && replaced_file::wait_for_releases(2000))
            err = reserve();
        if (err != 0)
            fail("no room for its " + std::to_string(total) + " bytes: " + errno_text(err));
    }

    bool bypassed = false;
    try
    {
        atomic_file_writer writer(fd, total, target);
        produce(writer);
        writer.finish();
        bypassed = writer.bypassed_cache();
        if (writer.written() != total)
            throw io_error("cannot save '" + target + "': wrote " +
                           std::to_string(writer.written()) + " of the " + std::to_string(total) +
                           " bytes it was sized at (changed while being saved?)");
    }
    catch (...)
    {
        clean_up();
        throw;
    }
    if (ops.fsync(fd) != 0)
    {
        const int err = errno;
        fail("fsync failed: " + errno_text(err));
    }
    // A save around the cache left a few pages of it cached: the partial block at its end and
    // the headers written over zeros (one a tensor in PyTorch's zip). Each keeps the first load
    // from reading its 2 MiB of the file into one huge folio (mapped_file::read_ahead), and the
    // loads after it from mapping that stretch with one page table entry: a .pth of 400 MB was
    // 118 MB in small pages and loaded in 43-50 ms, dropped first in 28 ms. A hint: clean after
    // the fsync, the pages just go.
    if (bypassed)
        (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    const int closing = fd;
    fd = -1; // close releases the descriptor even when it reports an error
    if (ops.close(closing) != 0)
    {
        const int err = errno;
        fail("close failed: " + errno_text(err));
    }
    const replaced_file replaced(path); // released after the folder's fsync, or on a throw
    if (ops.rename(temp.c_str(), path.c_str()) != 0)
    {
        const int err = errno;
        fail("rename of the temporary file over it failed: " + errno_text(err));
    }

    const int dir = ops.open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (dir < 0)
    {
        const int err = errno;
        throw io_error("saved '" + target + "' but cannot open its folder to make the rename " +
                       "durable: " + errno_text(err));
    }
    const int synced = ops.fsync(dir);
    const int err = errno;
    ops.close(dir);
    if (synced != 0)
        throw io_error("saved '" + target + "' but fsync of its folder failed: " + errno_text(err));
}

inline void atomic_write(const std::filesystem::path& path, std::span<const std::byte> bytes)
{
    atomic_write_with(path, bytes.size(), [&](atomic_file_writer& w) { w.write(bytes); });
}

inline int open_regular_file(const std::filesystem::path& path, std::size_t& size)
{
    const file_ops& ops = active_file_ops();
    const std::string name = path.string();
    // O_NONBLOCK: opening a FIFO to read waits until something opens it to write, for good if
    // nothing does; without the wait it is refused below, as not a regular file. EWOULDBLOCK
    // (a lease another program holds on a regular file) is waited for, as without the flag.
    int fd = ops.open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK, 0);
    if (fd < 0 && errno == EWOULDBLOCK)
        fd = ops.open(path.c_str(), O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
    {
        const int err = errno;
        throw io_error("cannot open '" + name + "': " + errno_text(err));
    }
    struct stat st
    {
    };
    const bool got = ::fstat(fd, &st) == 0;
    if (!got || !S_ISREG(st.st_mode))
    {
        const int err = errno;
        ops.close(fd);
        throw io_error("cannot read '" + name + "': " +
                       (!got                  ? errno_text(err)
                        : S_ISDIR(st.st_mode) ? std::string("it is a folder")
                                              : std::string("it is not a regular file")));
    }
    // The flag off again for the reads: local file systems ignore it for a regular file, but a
    // network or FUSE one may pass it on. Should that fail, reads are as they were with it.
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags >= 0 && (flags & O_NONBLOCK) != 0)
        (void)::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    size = static_cast<std::size_t>(st.st_size);
    return fd;
}

inline void read_exactly(int fd, std::span<std::byte> out, const std::string& name)
{
    const file_ops& ops = active_file_ops();
    std::size_t got = 0;
    while (got < out.size())
    {
        const ssize_t n = ops.read(fd, out.data() + got, out.size() - got);
        const int err = errno;
        if (n < 0 && err == EINTR)
            continue;
        if (n <= 0)
            throw io_error("cannot read '" + name + "': " +
                           (n == 0 ? "file shrank while reading (" + std::to_string(got) + " of " +
                                         std::to_string(out.size()) + " bytes)"
                                   : errno_text(err)));
        got += static_cast<std::size_t>(n);
    }
}

/// Appends what `fd` has left to `out`, until the end of the file.
inline void read_to_end(int fd, std::vector<std::byte>& out, const std::string& name)
{
    constexpr std::size_t chunk = std::size_t{64} << 10;
    for (;;)
    {
        const std::size_t got = out.size();
        out.resize(got + chunk);
        const ssize_t n = active_file_ops().read(fd, out.data() + got, chunk);
        const int err = errno;
        out.resize(got + static_cast<std::size_t>(n > 0 ? n : 0));
        if (n == 0)
            return;
        if (n < 0 && err != EINTR)
            throw io_error("cannot read '" + name + "': " + errno_text(err));
    }
}

inline file_part read_file_part(const std::filesystem::path& path, std::size_t length,
                                bool from_end)
{
    const file_ops& ops = active_file_ops();
    const std::string name = path.string();
    file_part part;
    const int fd = open_regular_file(path, part.file_size);
    try
    {
        const std::size_t n = std::min(length, part.file_size);
        const auto first = static_cast<off_t>(from_end ? part.file_size - n : 0);
        if (first != 0 && ops.seek(fd, first, SEEK_SET) != first)
        {
            const int err = errno;
            throw io_error("cannot read '" + name + "': " + errno_text(err));
        }
        try
        {
            part.bytes.resize(n);
        }
        catch (const std::exception&) // bad_alloc or length_error: the file does not fit in memory
        {
            throw io_error("cannot read '" + name + "': its " + std::to_string(n) +
                           " bytes do not fit in memory");
        }
        read_exactly(fd, part.bytes, name);
        // A whole file that reports no size (/proc, /sys) is read to its end.
        if (length == std::numeric_limits<std::size_t>::max() && part.file_size == 0)
            read_to_end(fd, part.bytes, name);
    }
    catch (...)
    {
        ops.close(fd);
        throw;
    }
    ops.close(fd);
    return part;
}

inline std::vector<std::byte> read_file(const std::filesystem::path& path)
{
    return read_file_part(path, std::numeric_limits<std::size_t>::max(), false).bytes;
}

} // namespace ember::detail

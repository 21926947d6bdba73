#pragma once
/// @file
/// A read-only memory map of a whole file (POSIX), for loaders that use a file's bytes in place.
///
/// The bytes stay valid while the mapped_file lives. If another program truncates the file while
/// it is mapped (torch.save rewrites its file in place, for one), touching a lost page would
/// raise SIGBUS and kill the process. ember's mappings are registered with a SIGBUS handler
/// (shrink_guard) that puts a page of zeros where the lost one was and marks the mapping: the
/// loader then reports an io_error (file_bytes::check_intact) instead of crashing. A SIGBUS
/// outside every ember mapping goes to the handler the program had before, or kills as usual.

#include "ember/core/error.hpp"
#include "ember/detail/file_io.hpp"
#include "ember/detail/parallel.hpp"

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace ember::detail
{

namespace shrink_guard
{
/// Installs the handler (once per process) and registers [data, data + size); returns the
/// registration, or -1 when every slot is taken (the mapping is then unguarded, as any mmap).
int enroll(const void* data, std::size_t size) noexcept;
/// Ends a registration; the mapping may then be unmapped.
void withdraw(int slot) noexcept;
/// Whether a page of the registered mapping was lost (read as zeros) since it was enrolled.
bool lost_pages(int slot) noexcept;
} // namespace shrink_guard

/// Maps `path` read-only; throws io_error naming the path and the reason.
class mapped_file
{
public:
    mapped_file() = default;
    /// Opens (through file_ops, as open_regular_file does), maps and closes `path`.
    explicit mapped_file(const std::filesystem::path& path);
    /// Maps the first `size` bytes of the open file `fd` (left open). Pages fault in as they
    /// are read: MAP_POPULATE, which maps them all in the call, made a 400 MB load 2-4 ms
    /// slower on Linux 6.18, whose faults map a whole run of the page cache at a time. The
    /// mapping is advised MADV_HUGEPAGE: a file not yet in the page cache (a large save goes
    /// around it, see atomic_file_writer) is then read into 2 MiB folios, which every later
    /// load maps in few steps (the 400 MB container loaded again in 18-21 ms, against 43-51
    /// ms read in without the advice). Throws io_error naming `name`.
    mapped_file(int fd, std::size_t size, const std::string& name);
    ~mapped_file() { unmap(); }

    mapped_file(mapped_file&& other) noexcept
        : m_data(std::exchange(other.m_data, nullptr)), m_size(std::exchange(other.m_size, 0)),
          m_guard(std::exchange(other.m_guard, -1))
    {
    }
    mapped_file& operator=(mapped_file&& other) noexcept
    {
        if (this != &other)
        {
            unmap();
            m_data = std::exchange(other.m_data, nullptr);
            m_size = std::exchange(other.m_size, 0);
            m_guard = std::exchange(other.m_guard, -1);
        }
        return *this;
    }
    mapped_file(const mapped_file&) = delete;
    mapped_file& operator=(const mapped_file&) = delete;

    std::span<const std::byte> bytes() const noexcept
    {
        return {static_cast<const std::byte*>(m_data), m_size};
    }
    std::size_t size() const noexcept { return m_size; }

    /// For a caller about to read every byte: where the file is not in the page cache (its
    /// first page is not; a large save leaves it so), reads it all in now, in order
    /// (MADV_POPULATE_READ), so that it lands in 2 MiB folios. Read in the order a parser
    /// touches it instead (PyTorch's zip: the directory at the end, each tensor's header, then
    /// the data), a 400 MB .pth came to 118 MB in small pages, and every later load of it took
    /// 40-50 ms against 28 ms for the same file read in order. A hint: where the kernel lacks
    /// it, or the file shrank, the load reads as before (and reports a lost page as before).
    void read_ahead() const noexcept;

    /// False once a page could not be read (the file shrank, or the disk failed) and was read
    /// as zeros instead.
    bool intact() const noexcept { return m_guard < 0 || !shrink_guard::lost_pages(m_guard); }

    /// Throws io_error naming `name` unless intact(): whatever was decoded from the bytes is
    /// not the file.
    void check_intact(const std::string& name) const;

    /// `decode()`'s result (decode may return void), checked with check_intact; when decode
    /// throws (an ember::error, or bad_alloc for a size read as zeros) and part of the file was
    /// lost, that loss is the error reported.
    template <class Decode>
    auto decode_checked(const std::string& name, Decode&& decode) const;

private:
    void unmap() noexcept
    {
        if (m_guard >= 0)
            shrink_guard::withdraw(m_guard);
        if (m_data != nullptr)
            ::munmap(m_data, m_size);
        m_data = nullptr;
        m_size = 0;
        m_guard = -1;
    }

    void* m_data = nullptr;
    std::size_t m_size = 0;
    int m_guard = -1;
};

/// Reads a byte of every page of `bytes` (part of a mapping), so that a page the file has lost is
/// read as zeros and recorded now (check_intact then reports it), before anything is copied out
/// of the mapping into memory that cannot be restored. A loader that checksums the bytes first
/// gets this from that pass; one that copies them straight out needs it.
inline void touch_pages(std::span<const std::byte> bytes) noexcept
{
    // The reads fault the pages in: on ember's threads, in parts, as a checksum pass would.
    parallel_pass(bytes.size(),
                  [&](std::size_t first, std::size_t last)
                  {
                      constexpr std::size_t smallest_page = 4096;
                      unsigned char seen = 0;
                      for (std::size_t i = first; i < last; i += smallest_page)
                          seen ^= static_cast<unsigned char>(bytes[i]);
                      if (last > first)
                          seen ^= static_cast<unsigned char>(bytes[last - 1]);
                      volatile unsigned char sink = seen; // the reads are the point: keep them
                      (void)sink;
                  });
}

/// A whole file's bytes, read into memory or, from map_threshold bytes up, mapped: a large
/// file is then used in place (no copy, no fresh pages to fault in and fill).
class file_bytes
{
public:
    /// Files at least this large are mapped rather than read.
    static constexpr std::size_t map_threshold = std::size_t{1} << 20;

    /// The content of `path`: opened and, below map_threshold, read through file_ops (so
    /// tests can make those calls fail); io_error naming the path and the reason.
    explicit file_bytes(const std::filesystem::path& path);

    std::span<const std::byte> bytes() const noexcept
    {
        return m_map.size() != 0 ? m_map.bytes() : std::span<const std::byte>(m_read);
    }
    bool mapped() const noexcept { return m_map.size() != 0; }

    /// mapped_file::check_intact and decode_checked for the mapped file (a file read into
    /// memory is always intact).
    void check_intact(const std::string& name) const { m_map.check_intact(name); }
    template <class Decode>
    auto decode_checked(const std::string& name, Decode&& decode) const
    {
        return m_map.decode_checked(name, std::forward<Decode>(decode));
    }

private:
    std::vector<std::byte> m_read;
    mapped_file m_map;
};

/*******************
 * implementation  *
 *******************/

namespace shrink_guard
{
struct slot
{
    std::atomic<bool> taken{false};
    std::atomic<std::uintptr_t> begin{0}; // 0: free; written last, read first
    std::atomic<std::uintptr_t> end{0};
    std::atomic<bool> lost{false};
};

// As many mappings as a program may hold at once and still have guarded: a model sharded into
// files of a few GB is opened as one safetensors::safe_open per shard, each a mapping held for
// as long as the program keeps it, and a big one has well over the 64 there once were (the 65th
// mapping then went unguarded, and a file cut short under it killed the process). The handler
// walks them all on a fault: 1024 slots (32 KiB) take about a microsecond.
inline constexpr std::size_t slot_count = 1024;

struct registry
{
    slot slots[slot_count];
    struct sigaction previous
    {
    };
    std::uintptr_t page_size = 4096;
};

inline registry& global() noexcept
{
    static registry r;
    return r;
}

// Restores the default action for `sig`: a fault then retried kills as it would have without
// ember, and a signal raised again is delivered with it.
inline void default_action(int sig) noexcept
{
    struct sigaction fallback
    {
    };
    fallback.sa_handler = SIG_DFL;
    sigemptyset(&fallback.sa_mask);
    ::sigaction(sig, &fallback, nullptr);
}

// Async-signal-safe: atomics, mmap (a plain system call on Linux), sigaction and raise only.
inline void on_sigbus(int sig, siginfo_t* info, void* context)
{
    const int saved_errno = errno;
    registry& r = global();
    // si_code > 0: the kernel's, for a fault at si_addr. A SIGBUS sent by kill() or raise()
    // carries the sender's pid where si_addr would be, and is only passed on.
    if (info != nullptr && info->si_code > 0)
    {
        const auto address = reinterpret_cast<std::uintptr_t>(info->si_addr);
        for (slot& s : r.slots)
        {
            const std::uintptr_t begin = s.begin.load(std::memory_order_acquire);
            if (begin == 0 || address < begin || address >= s.end.load(std::memory_order_acquire))
                continue;
            if (s.begin.load(std::memory_order_acquire) != begin)
                continue; // withdrawn and taken again while read: not this mapping any more
            void* page = reinterpret_cast<void*>(address & ~(r.page_size - 1));
            if (::mmap(page, r.page_size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1,
                       0) != MAP_FAILED)
            {
                s.lost.store(true, std::memory_order_release);
                errno = saved_errno;
                return; // the read is retried and sees zeros
            }
        }
    }
    // Not an ember mapping: the handler the program had before. If that one passes the signal
    // back here (it chained to ember's, or another copy of ember's in another shared library
    // chains to this one), the second entry ends the loop with the default action.
    static std::atomic<int> passing_on{0};
    const bool user_sent = info == nullptr || info->si_code <= 0;
    if (passing_on.fetch_add(1, std::memory_order_acq_rel) != 0)
    {
        passing_on.fetch_sub(1, std::memory_order_acq_rel);
        default_action(sig);
        if (user_sent)
            ::raise(sig); // delivered once this handler returns: the default action
        errno = saved_errno;
        return;
    }
    const struct sigaction& previous = r.previous;
    if ((previous.sa_flags & SA_SIGINFO) != 0 && previous.sa_sigaction != nullptr &&
        previous.sa_sigaction != &on_sigbus)
        previous.sa_sigaction(sig, info, context);
    else if ((previous.sa_flags & SA_SIGINFO) == 0 && previous.sa_handler != SIG_DFL &&
             previous.sa_handler != SIG_IGN)
        previous.sa_handler(sig);
    else if ((previous.sa_flags & SA_SIGINFO) == 0 && previous.sa_handler == SIG_IGN && user_sent)
    {
        // ignored, as it was before ember
    }
    else
    {
        // SIG_DFL (or SIG_IGN for a fault, which the kernel does not let a program ignore):
        // a fault is retried and kills; a sent signal is raised again and does.
        default_action(sig);
        if (user_sent)
            ::raise(sig);
    }
    passing_on.fetch_sub(1, std::memory_order_acq_rel);
    errno = saved_errno;
}

// Installs on_sigbus unless it is the handler now, keeping the one it replaces to pass other
// faults on to. Checked at every mapping, not once: a program (or a test framework) that sets
// its own SIGBUS handler later would otherwise switch the guard off for good.
inline bool install() noexcept
{
    static std::atomic_flag busy = ATOMIC_FLAG_INIT;
    while (busy.test_and_set(std::memory_order_acquire))
        ; // two threads mapping at once: the second must not keep on_sigbus as "previous"
    registry& r = global();
    struct sigaction current
    {
    };
    bool ok = ::sigaction(SIGBUS, nullptr, &current) == 0;
    if (ok && !((current.sa_flags & SA_SIGINFO) != 0 && current.sa_sigaction == &on_sigbus))
    {
        const long page = ::sysconf(_SC_PAGESIZE);
        if (page > 0)
            r.page_size = static_cast<std::uintptr_t>(page);
        struct sigaction action
        {
        };
        action.sa_sigaction = &on_sigbus;
        // On the alternate stack if the program's handler ran there.
        action.sa_flags = SA_SIGINFO | (current.sa_flags & SA_ONSTACK);
        sigemptyset(&action.sa_mask);
        r.previous = current;
        ok = ::sigaction(SIGBUS, &action, nullptr) == 0;
    }
    busy.clear(std::memory_order_release);
    return ok;
}

inline int enroll(const void* data, std::size_t size) noexcept
{
    if (data == nullptr || size == 0 || !install())
        return -1;
    registry& r = global();
    for (std::size_t i = 0; i < slot_count; ++i)
    {
        slot& s = r.slots[i];
        bool expected = false;
        if (!s.taken.compare_exchange_strong(expected, true, std::memory_order_acq_rel))
            continue;
        const auto begin = reinterpret_cast<std::uintptr_t>(data);
        s.lost.store(false, std::memory_order_relaxed);
        s.end.store(begin + size, std::memory_order_relaxed);
        s.begin.store(begin, std::memory_order_release);
        return static_cast<int>(i);
    }
    return -1;
}

inline void withdraw(int i) noexcept
{
    slot& s = global().slots[i];
    s.begin.store(0, std::memory_order_release);
    s.taken.store(false, std::memory_order_release);
}

inline bool lost_pages(int i) noexcept
{
    return global().slots[i].lost.load(std::memory_order_acquire);
}
} // namespace shrink_guard

inline mapped_file::mapped_file(const std::filesystem::path& path)
{
    // Opened as file_bytes opens a file (open_regular_file, through file_ops): a FIFO is refused
    // rather than waited on for good, and a file that is not regular is named as such (its
    // message once ended in a stale errno).
    const file_ops& ops = active_file_ops();
    const std::string name = path.string();
    std::size_t size = 0;
    const int fd = open_regular_file(path, size);
    try
    {
        // mmap refuses a zero length; an empty span is the whole file.
        if (size != 0)
            *this = mapped_file(fd, size, name);
    }
    catch (...)
    {
        ops.close(fd);
        throw;
    }
    ops.close(fd);
}

inline mapped_file::mapped_file(int fd, std::size_t size, const std::string& name)
{
    if (size == 0)
        return; // mmap refuses a zero length; an empty span is the whole file
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED)
        throw io_error("cannot map '" + name + "': " + errno_text(errno));
#ifdef MADV_HUGEPAGE
    (void)::madvise(p, size, MADV_HUGEPAGE); // a hint: refused (no THP) is as before
#endif
    m_data = p;
    m_size = size;
    m_guard = shrink_guard::enroll(p, size);
}

inline void mapped_file::read_ahead() const noexcept
{
#if defined(MADV_POPULATE_READ)
    unsigned char first = 0;
    if (m_size > 0 && ::mincore(m_data, 1, &first) == 0 && (first & 1) == 0)
        (void)::madvise(m_data, m_size, MADV_POPULATE_READ);
#endif
}

inline void mapped_file::check_intact(const std::string& name) const
{
    if (!intact())
        throw io_error("cannot load '" + name +
                       "': part of it could not be read while it was being loaded (the file "
                       "shrank, another program rewriting it in place, or the disk failed)");
}

template <class Decode>
auto mapped_file::decode_checked(const std::string& name, Decode&& decode) const
{
    auto checked = [&]
    {
        try
        {
            return decode();
        }
        catch (...)
        {
            check_intact(name); // zeros read for a lost page made the decode fail: say so
            throw;
        }
    };
    if constexpr (std::is_void_v<decltype(decode())>)
    {
        checked();
        check_intact(name);
    }
    else
    {
        auto result = checked();
        check_intact(name);
        return result;
    }
}

inline file_bytes::file_bytes(const std::filesystem::path& path)
{
    const file_ops& ops = active_file_ops();
    const std::string name = path.string();
    std::size_t size = 0;
    const int fd = open_regular_file(path, size);
    try
    {
        if (size >= map_threshold)
        {
            m_map = mapped_file(fd, size, name);
            m_map.read_ahead(); // every byte is checked, then decoded
        }
        else
        {
            m_read.resize(size);
            read_exactly(fd, m_read, name);
        }
    }
    catch (...)
    {
        ops.close(fd);
        throw;
    }
    ops.close(fd);
}

} // namespace ember::detail

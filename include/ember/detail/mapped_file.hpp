#pragma once
/// @file
/// A read-only memory map of a whole file (POSIX), for loaders that use a file's bytes in place.
///
/// The bytes stay valid while the mapped_file lives. If another process truncates the file
/// while it is mapped, touching the lost pages raises SIGBUS: map files that are not being
/// rewritten (ember's own writers replace files by rename, which is safe).

#include "ember/core/error.hpp"
#include "ember/detail/file_io.hpp"

#include <cstddef>
#include <filesystem>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace ember::detail
{

/// Maps `path` read-only; throws io_error naming the path and the reason.
class mapped_file
{
public:
    mapped_file() = default;
    explicit mapped_file(const std::filesystem::path& path);
    /// Maps the first `size` bytes of the open file `fd` (left open); `populate` maps every
    /// page at once (one system call instead of a page fault per 4 KiB for a file read
    /// whole). Throws io_error naming `name`.
    mapped_file(int fd, std::size_t size, const std::string& name, bool populate = false);
    ~mapped_file() { unmap(); }

    mapped_file(mapped_file&& other) noexcept
        : m_data(std::exchange(other.m_data, nullptr)), m_size(std::exchange(other.m_size, 0))
    {
    }
    mapped_file& operator=(mapped_file&& other) noexcept
    {
        if (this != &other)
        {
            unmap();
            m_data = std::exchange(other.m_data, nullptr);
            m_size = std::exchange(other.m_size, 0);
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

private:
    void unmap() noexcept
    {
        if (m_data != nullptr)
            ::munmap(m_data, m_size);
        m_data = nullptr;
        m_size = 0;
    }

    void* m_data = nullptr;
    std::size_t m_size = 0;
};

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

private:
    std::vector<std::byte> m_read;
    mapped_file m_map;
};

/*******************
 * implementation  *
 *******************/

inline mapped_file::mapped_file(const std::filesystem::path& path)
{
    const std::string name = path.string();
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        throw io_error("cannot open '" + name + "': " + errno_text(errno));
    struct stat st
    {
    };
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
    {
        int err = errno;
        ::close(fd);
        throw io_error("cannot read '" + name + "': " +
                       (S_ISDIR(st.st_mode)
                            ? std::string("it is a folder")
                            : std::string("not a regular file: ") + errno_text(err)));
    }
    const auto size = static_cast<std::size_t>(st.st_size);
    if (size == 0)
    {
        // mmap refuses a zero length; an empty span is the whole file.
        ::close(fd);
        return;
    }
    try
    {
        *this = mapped_file(fd, size, name);
    }
    catch (...)
    {
        ::close(fd);
        throw;
    }
    ::close(fd);
}

inline mapped_file::mapped_file(int fd, std::size_t size, const std::string& name, bool populate)
{
    if (size == 0)
        return;     // mmap refuses a zero length; an empty span is the whole file
#ifdef MAP_POPULATE // Linux; elsewhere pages fault in as they are read
    const int flags = MAP_PRIVATE | (populate ? MAP_POPULATE : 0);
#else
    const int flags = MAP_PRIVATE;
    (void)populate;
#endif
    void* p = ::mmap(nullptr, size, PROT_READ, flags, fd, 0);
    if (p == MAP_FAILED)
        throw io_error("cannot map '" + name + "': " + errno_text(errno));
    m_data = p;
    m_size = size;
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
            m_map = mapped_file(fd, size, name, /*populate=*/true);
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

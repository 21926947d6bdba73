#pragma once
/// @file
/// Crash-safe whole-file writes and checked whole-file reads (POSIX).
///
/// atomic_write follows the recipe that keeps the previous file whole whatever happens: a
/// temporary file in the target's folder (O_CREAT|O_EXCL), every write checked, fsync, close,
/// rename over the target, fsync of the folder. On any failure the temporary is removed, an
/// io_error names the path and the reason, and the old file is untouched. An fsync that failed
/// is never retried: after a failed fsync the kernel may have dropped the dirty pages, so a
/// second fsync can succeed without the data being on disk.

#include "ember/core/error.hpp"

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace ember::detail
{

inline std::string errno_text(int err)
{
    return std::strerror(err);
}

/// Writes `bytes` to `path` atomically and durably, or throws io_error and leaves `path` as it
/// was.
inline void atomic_write(const std::filesystem::path& path, std::span<const std::byte> bytes)
{
    namespace fs = std::filesystem;
    const fs::path folder = path.has_parent_path() ? path.parent_path() : fs::path(".");
    const std::string target = path.string();

    // A random suffix keeps concurrent writers apart; O_EXCL makes a clash fail, not share.
    std::random_device rd;
    int fd = -1;
    fs::path temp;
    for (int attempt = 0; attempt < 16 && fd < 0; ++attempt)
    {
        temp = folder / ("." + path.filename().string() + ".tmp-" + std::to_string(rd()));
        fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 && errno != EEXIST)
            throw io_error("cannot save '" + target + "': cannot create a temporary file in '" +
                           folder.string() + "': " + errno_text(errno));
    }
    if (fd < 0)
        throw io_error("cannot save '" + target + "': no free temporary file name");

    auto fail = [&](const std::string& what, int err)
    {
        if (fd >= 0)
            ::close(fd);
        ::unlink(temp.c_str());
        throw io_error("cannot save '" + target + "': " + what + ": " + errno_text(err));
    };

    const std::byte* p = bytes.data();
    std::size_t left = bytes.size();
    while (left > 0)
    {
        ssize_t n = ::write(fd, p, left);
        if (n < 0)
        {
            if (errno == EINTR)
                continue;
            fail("write failed", errno);
        }
        p += n;
        left -= static_cast<std::size_t>(n);
    }
    if (::fsync(fd) != 0)
        fail("fsync failed", errno);
    int closing = fd;
    fd = -1;
    if (::close(closing) != 0)
        fail("close failed", errno);
    if (::rename(temp.c_str(), path.c_str()) != 0)
        fail("rename failed", errno);

    int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        throw io_error("saved '" + target + "' but cannot open its folder to make the rename " +
                       "durable: " + errno_text(errno));
    int synced = ::fsync(dir);
    int err = errno;
    ::close(dir);
    if (synced != 0)
        throw io_error("saved '" + target + "' but fsync of its folder failed: " + errno_text(err));
}

/// The whole content of `path`, or io_error naming the path and the reason.
inline std::vector<std::byte> read_file(const std::filesystem::path& path)
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
                       (S_ISDIR(st.st_mode) ? std::string("it is a folder") : errno_text(err)));
    }
    std::vector<std::byte> bytes(static_cast<std::size_t>(st.st_size));
    std::size_t got = 0;
    while (got < bytes.size())
    {
        ssize_t n = ::read(fd, bytes.data() + got, bytes.size() - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
        {
            int err = errno;
            ::close(fd);
            throw io_error("cannot read '" + name + "': " +
                           (n == 0 ? std::string("file shrank while reading") : errno_text(err)));
        }
        got += static_cast<std::size_t>(n);
    }
    ::close(fd);
    return bytes;
}

} // namespace ember::detail

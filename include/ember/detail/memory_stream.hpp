#pragma once
/// @file
/// std::streambufs over byte vectors, so cereal archives read and write memory without the
/// extra copies std::stringstream makes; and checksumming ones that write an archive to a file
/// or read it from memory while computing its CRC-32 in the same pass.

#include "ember/detail/crc32.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <streambuf>
#include <vector>

namespace ember::detail
{

/// Appends everything written to a byte vector.
class vector_sink : public std::streambuf
{
public:
    explicit vector_sink(std::vector<std::byte>& out) : m_out(out) {}

protected:
    std::streamsize xsputn(const char* s, std::streamsize n) override
    {
        const auto* b = reinterpret_cast<const std::byte*>(s);
        m_out.insert(m_out.end(), b, b + n);
        return n;
    }
    int_type overflow(int_type c) override
    {
        if (!traits_type::eq_int_type(c, traits_type::eof()))
            m_out.push_back(static_cast<std::byte>(c));
        return traits_type::not_eof(c);
    }

private:
    std::vector<std::byte>& m_out;
};

/// Blocks from this size up are checksummed where they are (and remembered in
/// last_block_crc) rather than through a buffer.
inline constexpr std::size_t large_block = std::size_t{1} << 16;

/// Bytes are checksummed (and written, or copied) in pieces of this size, so the second look
/// at a piece finds it in cache.
inline constexpr std::size_t crc_piece = std::size_t{1} << 18;

/// Writes `bytes` through `writer` (`write(span)`, `written()`) in pieces of crc_piece that
/// end on its multiples in the file, so the page cache holds the file in folios of that size,
/// which a later load maps whole (see docs/benchmarks.md; a file of
/// atomic_file_writer::direct_min bytes or more goes around the cache instead); `on_piece(piece)`
/// sees each piece just before it is written.
template <class Writer, class OnPiece>
void write_in_pieces(Writer& writer, std::span<const std::byte> bytes, OnPiece&& on_piece)
{
    std::size_t piece_size = crc_piece - writer.written() % crc_piece;
    for (std::size_t off = 0; off < bytes.size(); off += piece_size, piece_size = crc_piece)
    {
        const auto piece = bytes.subspan(off, std::min(piece_size, bytes.size() - off));
        on_piece(piece);
        writer.write(piece);
    }
}

template <class Writer>
void write_in_pieces(Writer& writer, std::span<const std::byte> bytes)
{
    write_in_pieces(writer, bytes, [](std::span<const std::byte>) {});
}

/// write_in_pieces that returns the CRC-32 of `bytes`, each piece checksummed while it is in
/// cache, just before it is written.
template <class Writer>
std::uint32_t write_checksummed(Writer& writer, std::span<const std::byte> bytes)
{
    std::uint32_t crc = 0;
    write_in_pieces(writer, bytes,
                    [&](std::span<const std::byte> piece) { crc = crc32_update(crc, piece); });
    return crc;
}

/// Counts what is written and keeps nothing: sizes an archive before it is written for real.
/// A large block's checksum is remembered as 0 (last_block_crc): nothing counted is kept, so a
/// tensor record need not read its bytes to checksum them in this pass.
class counting_sink : public std::streambuf
{
public:
    counting_sink() = default;
    counting_sink(const counting_sink&) = delete;
    counting_sink& operator=(const counting_sink&) = delete;
    ~counting_sink() override { last_block_crc() = {}; }

    std::size_t size() const noexcept { return m_size; }

protected:
    std::streamsize xsputn(const char* s, std::streamsize n) override
    {
        const auto count = static_cast<std::size_t>(n);
        last_block_crc() = count >= large_block
                               ? block_crc{reinterpret_cast<const std::byte*>(s), count, 0}
                               : block_crc{};
        m_size += count;
        return n;
    }
    int_type overflow(int_type c) override
    {
        if (!traits_type::eq_int_type(c, traits_type::eof()))
            ++m_size;
        return traits_type::not_eof(c);
    }

private:
    std::size_t m_size = 0;
};

/// Writes an archive through `Writer` (`write(std::span<const std::byte>)`) while computing the
/// CRC-32 of what it writes: small writes are gathered in a buffer, large blocks (a tensor's
/// data) are checksummed and written piece by piece from where they are, so each byte is read
/// once from memory, and their CRC-32 is remembered (last_block_crc) for the tensor record's
/// own checksum. The first `unchecked` bytes written are zeros outside the checksum (room for
/// a header written last). Errors of the writer propagate: give the ostream
/// `exceptions(std::ios::badbit)` so it rethrows them.
template <class Writer>
class checksumming_sink : public std::streambuf
{
public:
    checksumming_sink(Writer& writer, std::size_t unchecked)
        : m_writer(writer), m_buffer(std::max<std::size_t>(std::size_t{1} << 20, unchecked)),
          m_unchecked(unchecked)
    {
        char* b = m_buffer.data();
        std::fill(b, b + unchecked, char{0});
        setp(b, b + m_buffer.size());
        pbump(static_cast<int>(unchecked));
    }
    checksumming_sink(const checksumming_sink&) = delete;
    checksumming_sink& operator=(const checksumming_sink&) = delete;
    ~checksumming_sink() override { last_block_crc() = {}; }

    /// Writes what the buffer holds.
    void flush()
    {
        const std::size_t n = static_cast<std::size_t>(pptr() - pbase());
        const auto* b = reinterpret_cast<const std::byte*>(pbase());
        const std::size_t skip = std::min(n, m_unchecked);
        m_unchecked -= skip;
        m_crc = crc32_update(m_crc, {b + skip, n - skip});
        m_size += n - skip;
        setp(m_buffer.data(), m_buffer.data() + m_buffer.size());
        m_writer.write({b, n});
    }

    /// CRC-32 and size of everything written after the unchecked bytes (call flush first).
    std::uint32_t crc() const noexcept { return m_crc; }
    std::size_t size() const noexcept { return m_size; }

protected:
    std::streamsize xsputn(const char* s, std::streamsize n) override
    {
        const auto count = static_cast<std::size_t>(n);
        const auto* b = reinterpret_cast<const std::byte*>(s);
        if (count < large_block)
        {
            last_block_crc() = {};
            if (count == 0) // an empty tensor's data may be a null pointer
                return n;
            if (count > static_cast<std::size_t>(epptr() - pptr()))
                flush();
            std::memcpy(pptr(), s, count);
            pbump(static_cast<int>(count));
            return n;
        }
        flush();
        const std::uint32_t crc = write_checksummed(m_writer, {b, count});
        m_crc = crc32_concat(m_crc, crc, count);
        m_size += count;
        last_block_crc() = {b, count, crc};
        return n;
    }
    int_type overflow(int_type c) override
    {
        flush();
        if (!traits_type::eq_int_type(c, traits_type::eof()))
        {
            *pptr() = traits_type::to_char_type(c);
            pbump(1);
        }
        return traits_type::not_eof(c);
    }

private:
    Writer& m_writer;
    std::vector<char> m_buffer;
    std::size_t m_unchecked;
    std::uint32_t m_crc = 0;
    std::size_t m_size = 0;
};

/// Reads from a byte span in place; reading past its end fails the stream (cereal then throws).
class span_source : public std::streambuf
{
public:
    explicit span_source(std::span<const std::byte> in)
    {
        char* b = const_cast<char*>(reinterpret_cast<const char*>(in.data()));
        setg(b, b, b + in.size());
    }
    std::size_t consumed() const noexcept { return static_cast<std::size_t>(gptr() - eback()); }
    std::size_t remaining() const noexcept { return static_cast<std::size_t>(egptr() - gptr()); }
};

/// A span_source that computes the CRC-32 of its span as it is read: a large block (a tensor's
/// data) is copied and checksummed piece by piece, one pass over the bytes, and its CRC-32 is
/// remembered (last_block_crc) for the tensor record's own check; the rest is checksummed
/// when crc() is asked for, which covers the whole span, read or not.
class checksumming_source : public span_source
{
public:
    explicit checksumming_source(std::span<const std::byte> in)
        : span_source(in), m_done(in.data()), m_end(in.data() + in.size())
    {
    }
    checksumming_source(const checksumming_source&) = delete;
    checksumming_source& operator=(const checksumming_source&) = delete;
    ~checksumming_source() override { last_block_crc() = {}; }

    /// The CRC-32 of the whole span.
    std::uint32_t crc()
    {
        catch_up(m_end);
        return m_crc;
    }

    /// The next `n` bytes (at most remaining()) where they are, consumed as a read would
    /// consume them: a large block is checksummed now and remembered (last_block_crc), so
    /// a tensor read in place costs one pass over its bytes and no copy.
    std::span<const std::byte> take(std::size_t n)
    {
        const std::size_t count = std::min(n, remaining());
        const auto* src = reinterpret_cast<const std::byte*>(gptr());
        last_block_crc() = {};
        if (count >= large_block)
        {
            catch_up(src);
            const std::uint32_t crc = crc32_of({src, count});
            m_crc = crc32_concat(m_crc, crc, count);
            m_done = src + count;
            last_block_crc() = {src, count, crc};
        }
        setg(eback(), gptr() + count, egptr());
        return {src, count};
    }

protected:
    std::streamsize xsgetn(char* s, std::streamsize n) override
    {
        const std::size_t count = std::min(static_cast<std::size_t>(n), remaining());
        const auto* src = reinterpret_cast<const std::byte*>(gptr());
        auto* dst = reinterpret_cast<std::byte*>(s);
        if (count < large_block)
        {
            last_block_crc() = {};
            if (count != 0) // an empty tensor's data may be a null pointer
                std::memcpy(dst, src, count);
        }
        else
        {
            catch_up(src);
            // A piece checksummed just after it is copied is read from the cache; a block of
            // many megabytes is copied and checksummed in parts on ember's threads.
            const std::uint32_t crc =
                crc32_in_parts(0, count,
                               [&](std::size_t first, std::size_t last, std::uint32_t part_crc)
                               {
                                   for (std::size_t off = first; off < last; off += crc_piece)
                                   {
                                       const std::size_t k = std::min(crc_piece, last - off);
                                       std::memcpy(dst + off, src + off, k);
                                       part_crc = crc32_update(part_crc, {dst + off, k});
                                   }
                                   return part_crc;
                               });
            m_crc = crc32_concat(m_crc, crc, count);
            m_done = src + count;
            last_block_crc() = {dst, count, crc};
        }
        setg(eback(), gptr() + count, egptr());
        return static_cast<std::streamsize>(count);
    }

private:
    void catch_up(const std::byte* to)
    {
        if (to > m_done)
        {
            m_crc = crc32_update(m_crc, {m_done, static_cast<std::size_t>(to - m_done)});
            m_done = to;
        }
    }

    const std::byte* m_done;
    const std::byte* m_end;
    std::uint32_t m_crc = 0;
};

} // namespace ember::detail

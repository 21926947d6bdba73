#pragma once
/// @file
/// std::streambufs over byte vectors, so cereal archives read and write memory without the
/// extra copies std::stringstream makes.

#include <cstddef>
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

/// Counts what is written and keeps nothing: sizes an archive before it is written for real.
class counting_sink : public std::streambuf
{
public:
    std::size_t size() const noexcept { return m_size; }

protected:
    std::streamsize xsputn(const char*, std::streamsize n) override
    {
        m_size += static_cast<std::size_t>(n);
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

} // namespace ember::detail

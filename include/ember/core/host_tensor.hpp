#pragma once
/// @file
/// host_tensor: a device-neutral tensor (dtype, shape, bytes) — what state_dicts and files hold.
/// Parameters live on whatever device their module uses; state_dicts always hold host_tensors,
/// so saving, loading and moving between devices all go through this one type.
/// host_tensor_view: the same description over bytes it does not own, so a module's parameters
/// can be saved, and a mapped file's tensors loaded into them, without a copy in between.

#include "ember/core/dtype.hpp"
#include "ember/core/error.hpp"
#include "ember/core/tensor.hpp"
#include "ember/detail/stream_copy.hpp"
#include "ember/detail/tensor_allocator.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace ember
{

/// @brief A contiguous row-major tensor in host memory, of any dtype and rank.
class host_tensor
{
public:
    host_tensor() = default;

    /// @brief A zero-filled tensor; throws value_error if the shape is negative or its byte
    /// size overflows.
    host_tensor(ember::dtype type, std::vector<std::int64_t> shape);

    /// @brief A tensor whose elements are whatever its new memory held (torch.empty), for code
    /// about to write every one of them: a loader, a copy. Throws as the constructor does.
    static host_tensor empty(ember::dtype type, std::vector<std::int64_t> shape);

    /// @brief Copies an xtensor into a new host tensor.
    template <class T, std::size_t N>
    static host_tensor from(const tensor<T, N>& t);

    ember::dtype dtype() const noexcept { return m_dtype; }
    const std::vector<std::int64_t>& shape() const noexcept { return m_shape; }
    std::size_t dim() const noexcept { return m_shape.size(); }
    std::size_t numel() const noexcept { return m_bytes.size() / dtype_size(m_dtype); }
    std::size_t nbytes() const noexcept { return m_bytes.size(); }

    std::span<const std::byte> bytes() const noexcept { return m_bytes; }
    std::span<std::byte> bytes() noexcept { return m_bytes; }

    /// @brief The elements as T; throws dtype_error unless T is this tensor's dtype (and
    /// value_error for a bool tensor holding a byte other than 0 or 1).
    template <class T>
    std::span<const T> data() const;
    template <class T>
    std::span<T> data();

    /// @brief The single element of a one-element tensor (PyTorch's `.item()`).
    template <class T>
    T item() const;

    /// @brief Copies into `out`, which must already have this dtype and shape (no allocation);
    /// throws dtype_error or shape_error naming `what` otherwise.
    template <class T, std::size_t N>
    void copy_to(tensor<T, N>& out, std::string_view what = "tensor") const;

    /// @brief Throws dtype_error or shape_error naming `what` unless this tensor has dtype T and
    /// `shape` (what every copy into an existing tensor, on any device, checks first); for
    /// bool, value_error unless every byte is 0 or 1.
    template <class T, class S>
    void check_matches(const S& shape, std::string_view what) const;

    /// @brief A new xtensor with this tensor's data; the dtype and rank must match.
    template <class T, std::size_t N>
    tensor<T, N> to_tensor() const;

    /// @brief Number of elements of `shape`, or throws value_error on a negative extent or an
    /// element count whose byte size would overflow size_t.
    static std::size_t checked_numel(const std::vector<std::int64_t>& shape,
                                     std::size_t element_size);

    friend bool operator==(const host_tensor& a, const host_tensor& b)
    {
        return a.m_dtype == b.m_dtype && a.m_shape == b.m_shape && a.m_bytes == b.m_bytes;
    }

private:
    template <class T>
    void check_dtype() const;

    ember::dtype m_dtype = ember::dtype::float32;
    std::vector<std::int64_t> m_shape;
    // huge pages when large; zeroed by the constructor, not by resize (empty())
    std::vector<std::byte, detail::default_init_allocator<std::byte>> m_bytes;
};

/// @brief A host tensor's dtype and shape over bytes owned elsewhere (a parameter's memory, a
/// record in a mapped file); valid while they are. Every host_tensor converts to one.
class host_tensor_view
{
public:
    host_tensor_view() = default;

    /// @brief Views `bytes` as a tensor; throws value_error unless they are exactly the
    /// shape's size.
    host_tensor_view(ember::dtype type, std::vector<std::int64_t> shape,
                     std::span<const std::byte> bytes);

    host_tensor_view(const host_tensor& t) // NOLINT: implicit, as std::string_view from string
        : m_dtype(t.dtype()), m_shape(t.shape()), m_bytes(t.bytes())
    {
    }

    ember::dtype dtype() const noexcept { return m_dtype; }
    const std::vector<std::int64_t>& shape() const noexcept { return m_shape; }
    std::size_t dim() const noexcept { return m_shape.size(); }
    std::size_t numel() const noexcept { return m_bytes.size() / dtype_size(m_dtype); }
    std::size_t nbytes() const noexcept { return m_bytes.size(); }
    std::span<const std::byte> bytes() const noexcept { return m_bytes; }

    /// @brief The elements as T; throws dtype_error unless T is this tensor's dtype.
    template <class T>
    std::span<const T> data() const;

    /// @brief As host_tensor::check_matches.
    template <class T, class S>
    void check_matches(const S& shape, std::string_view what) const;

    /// @brief As host_tensor::copy_to: into `out`, which must have this dtype and shape.
    template <class T, std::size_t N>
    void copy_to(tensor<T, N>& out, std::string_view what = "tensor") const;

private:
    ember::dtype m_dtype = ember::dtype::float32;
    std::vector<std::int64_t> m_shape;
    std::span<const std::byte> m_bytes;
};

/*******************
 * implementation  *
 *******************/

namespace detail
{
// The throws of the checks below, not templates (out of line where ember is precompiled).
[[noreturn]] void throw_tensor_dtype(dtype held, dtype asked);
[[noreturn]] void throw_tensor_dtype_mismatch(std::string_view what, dtype expected, dtype got);

#if EMBER_SHARED_DEFINITIONS
EMBER_PRECOMPILED_INLINE void throw_tensor_dtype(dtype held, dtype asked)
{
    throw dtype_error("tensor holds " + std::string(dtype_name(held)) + ", not " +
                      std::string(dtype_name(asked)));
}

EMBER_PRECOMPILED_INLINE void throw_tensor_dtype_mismatch(std::string_view what, dtype expected,
                                                          dtype got)
{
    throw dtype_error(std::string(what) + ": expected dtype " + std::string(dtype_name(expected)) +
                      ", got " + std::string(dtype_name(got)));
}
#endif

template <class T>
void check_tensor_dtype(dtype type)
{
    if (dtype_of<T>() != type)
        throw_tensor_dtype(type, dtype_of<T>());
}

[[noreturn]] void throw_bool_byte(std::string_view what, std::size_t index, std::byte b);

#if EMBER_SHARED_DEFINITIONS
EMBER_PRECOMPILED_INLINE void throw_bool_byte(std::string_view what, std::size_t index, std::byte b)
{
    constexpr char hex[] = "0123456789abcdef";
    const auto u = std::to_integer<unsigned>(b);
    throw value_error(std::string(what) + ": a bool tensor holds the byte 0x" + hex[u >> 4] +
                      hex[u & 15] + " at element " + std::to_string(index) + ", expected 0 or 1");
}
#endif

/// Where a bool tensor's bytes become C++ bools (data<bool>(), a copy into a bool tensor): a
/// file's byte other than 0 or 1 read as a bool is undefined behaviour (true and !true at
/// once), so it is refused there. The files load as bytes, as PyTorch's and safetensors' do.
template <class T>
void check_bool_bytes(std::span<const std::byte> bytes, std::string_view what)
{
    if constexpr (std::is_same_v<T, bool>)
        for (std::size_t i = 0; i < bytes.size(); ++i)
            if (std::to_integer<unsigned>(bytes[i]) > 1)
                throw_bool_byte(what, i, bytes[i]);
}

template <class T, class S>
void check_tensor_matches(dtype type, const std::vector<std::int64_t>& shape, const S& expected,
                          std::string_view what)
{
    if (dtype_of<T>() != type)
        throw_tensor_dtype_mismatch(what, dtype_of<T>(), type);
    check_shape(shape, expected, what);
}
} // namespace detail

inline std::size_t host_tensor::checked_numel(const std::vector<std::int64_t>& shape,
                                              std::size_t element_size)
{
    std::size_t n = 1;
    const std::size_t limit = std::numeric_limits<std::size_t>::max() / element_size;
    for (auto d : shape)
    {
        if (d < 0)
            throw value_error("tensor shape " + shape_string(shape) + " has a negative extent");
        if (d != 0 && n > limit / static_cast<std::size_t>(d))
            throw value_error("tensor shape " + shape_string(shape) + " is too large");
        n *= static_cast<std::size_t>(d);
    }
    return n;
}

inline host_tensor::host_tensor(ember::dtype type, std::vector<std::int64_t> shape)
    : host_tensor(empty(type, std::move(shape)))
{
    if (!m_bytes.empty())
        std::memset(m_bytes.data(), 0, m_bytes.size());
}

inline host_tensor host_tensor::empty(ember::dtype type, std::vector<std::int64_t> shape)
{
    host_tensor t;
    t.m_dtype = type;
    t.m_shape = std::move(shape);
    t.m_bytes.resize(checked_numel(t.m_shape, dtype_size(type)) * dtype_size(type));
    return t;
}

template <class T, std::size_t N>
host_tensor host_tensor::from(const tensor<T, N>& t)
{
    std::vector<std::int64_t> shape(t.shape().begin(), t.shape().end());
    host_tensor h = empty(dtype_of<T>(), std::move(shape));
    if (t.size() != 0)
        std::memcpy(h.m_bytes.data(), t.data(), t.size() * sizeof(T));
    return h;
}

template <class T>
void host_tensor::check_dtype() const
{
    detail::check_tensor_dtype<T>(m_dtype);
}

template <class T>
std::span<const T> host_tensor::data() const
{
    check_dtype<T>();
    detail::check_bool_bytes<T>(m_bytes, "tensor");
    return {reinterpret_cast<const T*>(m_bytes.data()), numel()};
}

template <class T>
std::span<T> host_tensor::data()
{
    check_dtype<T>();
    detail::check_bool_bytes<T>(m_bytes, "tensor");
    return {reinterpret_cast<T*>(m_bytes.data()), numel()};
}

template <class T>
T host_tensor::item() const
{
    auto d = data<T>();
    if (d.size() != 1)
        throw shape_error("item(): tensor of shape " + shape_string(m_shape) + " has " +
                          std::to_string(d.size()) + " elements, expected 1");
    return d[0];
}

template <class T, class S>
void host_tensor::check_matches(const S& shape, std::string_view what) const
{
    detail::check_tensor_matches<T>(m_dtype, m_shape, shape, what);
    detail::check_bool_bytes<T>(m_bytes, what);
}

template <class T, std::size_t N>
void host_tensor::copy_to(tensor<T, N>& out, std::string_view what) const
{
    host_tensor_view(*this).copy_to(out, what);
}

template <class T, std::size_t N>
tensor<T, N> host_tensor::to_tensor() const
{
    if (m_shape.size() != N)
        throw shape_error("tensor of shape " + shape_string(m_shape) + " has rank " +
                          std::to_string(m_shape.size()) + ", expected rank " + std::to_string(N));
    std::array<std::size_t, N> s{};
    for (std::size_t i = 0; i < N; ++i)
        s[i] = static_cast<std::size_t>(m_shape[i]);
    tensor<T, N> t(s);
    copy_to(t);
    return t;
}

inline host_tensor_view::host_tensor_view(ember::dtype type, std::vector<std::int64_t> shape,
                                          std::span<const std::byte> bytes)
    : m_dtype(type), m_shape(std::move(shape)), m_bytes(bytes)
{
    const std::size_t expected =
        host_tensor::checked_numel(m_shape, dtype_size(type)) * dtype_size(type);
    if (bytes.size() != expected)
        throw value_error(ember::detail::a_or_an(dtype_name(type)) + " tensor of shape " +
                          shape_string(m_shape) + " is " + std::to_string(expected) +
                          " bytes, the view has " + std::to_string(bytes.size()));
}

template <class T>
std::span<const T> host_tensor_view::data() const
{
    detail::check_tensor_dtype<T>(m_dtype);
    detail::check_bool_bytes<T>(m_bytes, "tensor");
    return {reinterpret_cast<const T*>(m_bytes.data()), numel()};
}

template <class T, class S>
void host_tensor_view::check_matches(const S& shape, std::string_view what) const
{
    detail::check_tensor_matches<T>(m_dtype, m_shape, shape, what);
    detail::check_bool_bytes<T>(m_bytes, what);
}

template <class T, std::size_t N>
void host_tensor_view::copy_to(tensor<T, N>& out, std::string_view what) const
{
    check_matches<T>(out.shape(), what);
    // Around the cache when large: a file loaded into a model is more than the cache holds.
    detail::stream_copy(out.data(), m_bytes.data(), out.size() * sizeof(T));
}

} // namespace ember

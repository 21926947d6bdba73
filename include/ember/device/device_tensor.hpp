#pragma once
/// @file
/// device_tensor: the tensor of the Thrust policies, a shape over a vector that lives in the
/// back end's memory: a Thrust vector in GPU memory for CUDA and in host memory for sequential
/// C++, ember's detail::host_vector in host memory for OpenMP (device/thrust_omp.hpp says why). It
/// offers what ember's modules use of a tensor (shape, size, raw data, resize, fill), nothing
/// of xtensor's expressions: elementwise work goes through the device's kernels.
///
/// Tensors of two devices never mix: passing an xtensor (cpu) where a device_tensor is
/// expected, or the other way round, stops compilation with a one-line message.

#include "ember/core/error.hpp"
#include "ember/core/generator.hpp"
#include "ember/core/tensor.hpp"
#include "ember/device/kernel.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <initializer_list>
#include <type_traits>

namespace ember
{

template <class T, std::size_t N, class Vector>
class device_tensor;

namespace detail
{
/// @brief How device_tensor reaches its vector's elements. This one: a vector whose data() is a
/// plain pointer into host memory, with the standard algorithms; Thrust's vectors, whose data()
/// is a Thrust pointer, have their own (device/thrust_loops.hpp).
template <class Vector, class = void>
struct vector_ops
{
    using T = typename Vector::value_type;
    static T* data(Vector& v) noexcept { return v.data(); }
    static const T* data(const Vector& v) noexcept { return v.data(); }
    static void fill(Vector& v, std::size_t n, T value) { std::fill_n(v.data(), n, value); }
    static void assign_from_host(Vector& v, std::size_t n, const T* host)
    {
        std::copy_n(host, n, v.data());
    }
    static void copy_to_host(const Vector& v, std::size_t n, T* host)
    {
        std::copy_n(v.data(), n, host);
    }
};

template <class X>
struct is_device_tensor : std::false_type
{
};
template <class T, std::size_t N, class V>
struct is_device_tensor<device_tensor<T, N, V>> : std::true_type
{
};
} // namespace detail

/// @brief A row-major tensor of rank N in a device vector's memory.
template <class T, std::size_t N, class Vector>
class device_tensor
{
public:
    using value_type = T;
    using shape_type = std::array<std::size_t, N>;
    using storage_type = Vector;
    using size_type = std::size_t;
    static constexpr std::size_t rank = N;

    device_tensor() = default;
    /// @brief A tensor of `shape`, zeros (the vectors value-initialize).
    explicit device_tensor(const shape_type& shape) : m_shape(shape), m_storage(count(shape)) {}

    static device_tensor from_shape(const shape_type& shape) { return device_tensor(shape); }

    /// @brief Compile-time refusal of a tensor from another device (see the file comment).
    template <class E>
    requires(xt::is_xexpression<std::decay_t<E>>::value ||
             (detail::is_device_tensor<std::decay_t<E>>::value &&
              !std::is_same_v<std::decay_t<E>, device_tensor>)) device_tensor(const E&)
    {
        static_assert(detail::always_false<E>,
                      "ember: this tensor is on another device; move it with ember::to<Device>()");
    }
    /// @brief Compile-time refusal of handing this tensor to code of another device.
    template <class E>
    requires(xt::is_xexpression<E>::value) operator E() const
    {
        static_assert(detail::always_false<E>,
                      "ember: this tensor is on another device; move it with ember::to<Device>()");
        return E{};
    }

    const shape_type& shape() const noexcept { return m_shape; }
    std::size_t dimension() const noexcept { return N; }
    std::size_t size() const noexcept { return count(m_shape); }

    /// @brief The first element, in the back end's memory (dereference on the host only when
    /// the policy's `host_memory` is true).
    T* data() noexcept { return ops::data(m_storage); }
    const T* data() const noexcept { return ops::data(m_storage); }

    storage_type& storage() noexcept { return m_storage; }
    const storage_type& storage() const noexcept { return m_storage; }

    /// @brief Takes `shape`; storage is reallocated only when it must grow.
    void resize(const shape_type& shape)
    {
        m_shape = shape;
        const std::size_t n = count(shape);
        if (n > m_storage.size())
            m_storage.resize(n);
    }

    void fill(T value) { ops::fill(m_storage, size(), value); }

    /// @brief Copies size() elements from host memory at `host`.
    void assign_from_host(const T* host) { ops::assign_from_host(m_storage, size(), host); }
    /// @brief Copies size() elements to host memory at `host`.
    void copy_to_host(T* host) const { ops::copy_to_host(m_storage, size(), host); }

private:
    using ops = detail::vector_ops<Vector>;

    static std::size_t count(const shape_type& s) noexcept
    {
        std::size_t n = 1;
        for (std::size_t d : s)
            n *= d;
        return n;
    }

    shape_type m_shape{};
    storage_type m_storage;
};

/// @brief resize_if_needed() for device tensors.
template <class T, std::size_t N, class V, class S>
void resize_if_needed(device_tensor<T, N, V>& t, const S& shape)
{
    std::array<std::size_t, N> s{};
    for (std::size_t i = 0; i < N; ++i)
        s[i] = static_cast<std::size_t>(shape[i]);
    if (s != t.shape())
        t.resize(s);
}

/// @brief uniform_() for device tensors: the same draws as on the host (PyTorch's CPU
/// generator), made on the host and copied in, so a model starts with the same numbers on
/// every device.
template <class T, std::size_t N, class V>
void uniform_(device_tensor<T, N, V>& t, double from, double to, generator& g = default_generator())
{
    tensor<T, N> h(t.shape());
    uniform_(h, from, to, g);
    t.assign_from_host(h.data());
}

/// @brief normal_() for device tensors, drawn on the host as uniform_() is.
template <class T, std::size_t N, class V>
void normal_(device_tensor<T, N, V>& t, double mean = 0.0, double stddev = 1.0,
             generator& g = default_generator())
{
    tensor<T, N> h(t.shape());
    normal_(h, mean, stddev, g);
    t.assign_from_host(h.data());
}

} // namespace ember

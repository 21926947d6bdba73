#pragma once
/// @file
/// The cpu device policy: tensors are xtensor containers in host memory, matrix products go to
/// BLAS. A device policy is the only place that knows how a tensor is stored; modules, losses
/// and optimizers name `Device::tensor_type<T, N>` and the policy's conversions, nothing more.

#include "ember/core/host_tensor.hpp"
#include "ember/core/tensor.hpp"

#include <concepts>
#include <string_view>

namespace ember
{

/// @brief Host memory, xtensor containers, BLAS.
struct cpu
{
    template <class T, std::size_t N>
    using tensor_type = tensor<T, N>;

    static constexpr std::string_view name = "cpu";

    /// @brief Always true: there is always a CPU.
    static bool is_available() noexcept { return true; }

    /// @brief A device tensor → a host tensor (a copy).
    template <class T, std::size_t N>
    static host_tensor to_host(const tensor_type<T, N>& t)
    {
        return host_tensor::from(t);
    }

    /// @brief Copies a host tensor into an existing device tensor of the same dtype and shape.
    template <class T, std::size_t N>
    static void copy_from_host(const host_tensor& h, tensor_type<T, N>& out, std::string_view what)
    {
        h.copy_to(out, what);
    }
};

/// @brief What a device policy provides: a tensor type, a name and host conversions.
template <class D>
concept device_policy = requires
{
    typename D::template tensor_type<float, 1>;
    {
        D::name
        } -> std::convertible_to<std::string_view>;
    {
        D::is_available()
        } -> std::convertible_to<bool>;
};

} // namespace ember

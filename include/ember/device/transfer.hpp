#pragma once
/// @file
/// Moving tensors and models between devices, what `.to(device)` and `map_location` do in
/// PyTorch. A device is a type in ember, so a model on another device is another object: build
/// it there and copy the state across (state_dicts are host data, so this is also how a file
/// saved on one device loads onto any other).
///
/// @code
/// auto x_gpu = ember::to<ember::cuda>(x);                       // a tensor
/// auto gpu_model = ember::to<my_model<ember::cuda>>(model);     // a model (default-constructible)
/// gpu_opt.load_state_dict(opt.state_dict());                    // its optimizer's state
/// @endcode

#include "ember/core/tensor.hpp"
#include "ember/device/kernel.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <type_traits>
#include <utility>
#include <vector>

namespace ember
{

/// @brief A copy of host tensor `t` on `Device`.
template <class Device, class T, std::size_t N>
typename Device::template tensor_type<T, N> to(const tensor<T, N>& t)
{
    using out_type = typename Device::template tensor_type<T, N>;
    std::array<std::size_t, N> shape{};
    std::copy(t.shape().begin(), t.shape().end(), shape.begin());
    out_type out = out_type::from_shape(shape);
    Device::upload(t.data(), t.size(), out.data());
    return out;
}

/// @brief A copy of device tensor `t` (any Thrust device) on `Device`.
template <class Device, class Tensor>
requires requires(const Tensor& t, typename Tensor::value_type* p)
{
    t.copy_to_host(p);
}
typename Device::template tensor_type<typename Tensor::value_type, Tensor::rank> to(const Tensor& t)
{
    tensor<typename Tensor::value_type, Tensor::rank> host(t.shape());
    t.copy_to_host(host.data());
    return to<Device>(host);
}

/// @brief A host (cpu) copy of any device's tensor.
template <class Tensor>
auto to_host(const Tensor& t)
{
    if constexpr (requires(typename Tensor::value_type * p) { t.copy_to_host(p); })
    {
        tensor<typename Tensor::value_type, Tensor::rank> host(t.shape());
        t.copy_to_host(host.data());
        return host;
    }
    else
        return tensor<typename Tensor::value_type, Tensor::rank>(t);
}

/// @brief A new `Model` (built from `args`) holding `src`'s parameters, buffers and training
/// mode: `src` moved to the device `Model` names. Shapes must agree (load_state_dict checks).
template <class Model, class Source, class... Args>
Model to(const Source& src, Args&&... args)
{
    Model out(std::forward<Args>(args)...);
    out.load_state_dict(src.state_dict());
    out.train(src.is_training());
    return out;
}

} // namespace ember

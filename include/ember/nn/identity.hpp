#pragma once
/// @file
/// identity (torch.nn.Identity): passes its input through, a placeholder in a sequential.

#include "ember/core/error.hpp"
#include "ember/core/tensor.hpp"
#include "ember/device/cpu.hpp"
#include "ember/nn/module.hpp"

#include <cstddef>

namespace ember::nn
{

/// @brief y = x, dx = dy. Like every module it answers with its own buffer (a copy), never a
/// reference to the caller's tensor, so the result outlives the argument.
template <class T = float, std::size_t N = 2, class Device = cpu>
class identity : public nn::module<identity<T, N, Device>, Device>
{
public:
    using value_type = T;
    using device_type = Device;
    using tensor_type = typename Device::template tensor_type<T, N>;

    template <class V>
    void visit(V&&)
    {
    }

    const tensor_type& forward(const tensor_type& x);
    const tensor_type& backward(const tensor_type& dy);

private:
    bool m_cached = false;
    tensor_type m_output;
    tensor_type m_input_grad;
};

/*******************
 * implementation  *
 *******************/

template <class T, std::size_t N, class Device>
auto identity<T, N, Device>::forward(const tensor_type& x) -> const tensor_type&
{
    resize_if_needed(m_output, x.shape());
    Device::copy(x.data(), x.size(), m_output.data());
    m_cached = this->caching();
    return m_output;
}

template <class T, std::size_t N, class Device>
auto identity<T, N, Device>::backward(const tensor_type& dy) -> const tensor_type&
{
    if (!m_cached)
        throw error("identity: backward() needs a forward() run with gradients enabled; the "
                    "last forward ran under no_grad or never ran");
    check_shape(dy.shape(), m_output.shape(), "identity: backward gradient");
    resize_if_needed(m_input_grad, dy.shape());
    Device::copy(dy.data(), dy.size(), m_input_grad.data());
    return m_input_grad;
}

} // namespace ember::nn

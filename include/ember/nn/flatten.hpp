#pragma once
/// @file
/// flatten (torch.nn.Flatten with its defaults): [B, d1, d2, ...] → [B, d1 * d2 * ...].

#include "ember/core/error.hpp"
#include "ember/core/tensor.hpp"
#include "ember/device/cpu.hpp"
#include "ember/nn/module.hpp"

#include <algorithm>
#include <array>
#include <cstddef>

namespace ember::nn
{

/// @brief Keeps the batch axis and folds the other N - 1 axes into one (torch.nn.Flatten()).
/// The default rank, 4, is an image batch [B, C, H, W]. Row-major storage makes this a copy
/// of the elements under another shape.
template <class T = float, std::size_t N = 4, class Device = cpu>
class flatten : public nn::module<flatten<T, N, Device>, Device>
{
    static_assert(N >= 2, "ember::nn::flatten: the input needs a batch axis and at least one more");

public:
    using value_type = T;
    using device_type = Device;
    using input_type = typename Device::template tensor_type<T, N>;
    using output_type = typename Device::template tensor_type<T, 2>;

    template <class V>
    void visit(V&&)
    {
    }

    const output_type& forward(const input_type& x);
    /// @brief The gradient reshaped back to the input's shape.
    const input_type& backward(const output_type& dy);

private:
    bool m_cached = false;
    std::array<std::size_t, N> m_input_shape{};
    output_type m_output;
    input_type m_input_grad;
};

/*******************
 * implementation  *
 *******************/

template <class T, std::size_t N, class Device>
auto flatten<T, N, Device>::forward(const input_type& x) -> const output_type&
{
    std::size_t features = 1;
    for (std::size_t i = 1; i < N; ++i)
        features *= x.shape()[i];
    resize_if_needed(m_output, std::array<std::size_t, 2>{x.shape()[0], features});
    Device::copy(x.data(), x.size(), m_output.data());
    m_cached = this->caching();
    if (m_cached)
        std::copy(x.shape().begin(), x.shape().end(), m_input_shape.begin());
    return m_output;
}

template <class T, std::size_t N, class Device>
auto flatten<T, N, Device>::backward(const output_type& dy) -> const input_type&
{
    if (!m_cached)
        throw error("flatten: backward() needs a forward() run with gradients enabled; the last "
                    "forward ran under no_grad or never ran");
    check_shape(dy.shape(), m_output.shape(), "flatten: backward gradient");
    resize_if_needed(m_input_grad, m_input_shape);
    Device::copy(dy.data(), dy.size(), m_input_grad.data());
    return m_input_grad;
}

} // namespace ember::nn

#pragma once
/// @file
/// dropout (torch.nn.Dropout): in training, zeroes each element with probability p and scales
/// the survivors by 1 / (1 - p); in evaluation, passes its input through. The mask is drawn as
/// PyTorch's CPU bernoulli_(1 - p) draws it (one double uniform per element, kept when below
/// 1 - p), so after the same manual_seed both drop the same elements, on every device: the
/// draws are made on the host from ember's generator (on a GPU into a host buffer that is then
/// uploaded), and applying the mask is a kernel.

#include "ember/core/error.hpp"
#include "ember/core/generator.hpp"
#include "ember/core/tensor.hpp"
#include "ember/device/cpu.hpp"
#include "ember/device/kernel.hpp"
#include "ember/nn/module.hpp"

#include <cstddef>
#include <string>
#include <vector>

namespace ember::nn
{

/// @brief Randomly zeroes elements while training (torch.nn.Dropout).
template <class T = float, std::size_t N = 2, class Device = cpu>
class dropout : public nn::module<dropout<T, N, Device>, Device>
{
public:
    using value_type = T;
    using device_type = Device;
    using tensor_type = typename Device::template tensor_type<T, N>;

    /// @brief Throws value_error unless 0 <= p <= 1. Draws come from `g`, which must outlive
    /// the module (gradcheck replays only the default generator).
    explicit dropout(double p = 0.5, generator& g = default_generator());

    double p() const noexcept { return m_p; }

    template <class V>
    void visit(V&&)
    {
    }

    const tensor_type& forward(const tensor_type& x);
    const tensor_type& backward(const tensor_type& dy);

private:
    // What the last caching forward did, which backward repeats on the gradient.
    enum class applied
    {
        identity,
        zeros,
        mask
    };

    // Draws the mask (0 or scale per element) into m_mask, on the host.
    void draw_mask(std::size_t n, T scale);

    double m_p;
    generator* m_generator;
    bool m_cached = false;
    applied m_applied = applied::identity;
    tensor_type m_mask; // 0 or 1 / (1 - p) per element
    tensor_type m_output;
    tensor_type m_input_grad;
    // Where the host draws the mask when the device's memory is not the host's; it only grows.
    std::vector<T> m_host_mask;
};

/*******************
 * implementation  *
 *******************/

template <class T, std::size_t N, class Device>
dropout<T, N, Device>::dropout(double p, generator& g) : m_p(p), m_generator(&g)
{
    if (!(p >= 0.0 && p <= 1.0))
        throw value_error("dropout: probability has to be between 0 and 1, but got " +
                          std::to_string(p));
}

template <class T, std::size_t N, class Device>
void dropout<T, N, Device>::draw_mask(std::size_t n, T scale)
{
    const double keep = 1.0 - m_p;
    generator& g = *m_generator;
    T* mask = m_mask.data();
    if constexpr (!Device::host_memory)
    {
        if (m_host_mask.size() < n)
            m_host_mask.resize(n);
        mask = m_host_mask.data();
    }
    // In element order, one draw each, as PyTorch's CPU generator draws.
    for (std::size_t i = 0; i < n; ++i)
        mask[i] = g.uniform<double>(0.0, 1.0) < keep ? scale : T(0);
    if constexpr (!Device::host_memory)
        Device::upload(mask, n, m_mask.data());
}

template <class T, std::size_t N, class Device>
auto dropout<T, N, Device>::forward(const tensor_type& x) -> const tensor_type&
{
    resize_if_needed(m_output, x.shape());
    const std::size_t n = x.size();
    const T* in = x.data();
    T* out = m_output.data();
    m_cached = this->caching();
    // Like PyTorch, p == 0 and p == 1 draw nothing, so the generator stays where it was.
    if (!this->is_training() || m_p == 0.0)
    {
        Device::copy(in, n, out);
        m_applied = applied::identity;
    }
    else if (m_p == 1.0)
    {
        Device::for_each(
            n, EMBER_KERNEL(std::size_t i) { out[i] = in[i] * T(0); });
        m_applied = applied::zeros;
    }
    else
    {
        // PyTorch divides the 0/1 noise by (1 - p) in T, then multiplies the input by it.
        resize_if_needed(m_mask, x.shape());
        draw_mask(n, T(1) / static_cast<T>(1.0 - m_p));
        const T* mask = m_mask.data();
        Device::for_each(
            n, EMBER_KERNEL(std::size_t i) { out[i] = in[i] * mask[i]; });
        m_applied = applied::mask;
    }
    return m_output;
}

template <class T, std::size_t N, class Device>
auto dropout<T, N, Device>::backward(const tensor_type& dy) -> const tensor_type&
{
    if (!m_cached)
        throw error("dropout: backward() needs a forward() run with gradients enabled; the last "
                    "forward ran under no_grad or never ran");
    check_shape(dy.shape(), m_output.shape(), "dropout: backward gradient");
    resize_if_needed(m_input_grad, dy.shape());
    const std::size_t n = dy.size();
    const T* g = dy.data();
    T* dx = m_input_grad.data();
    if (m_applied == applied::identity)
        Device::copy(g, n, dx);
    else if (m_applied == applied::zeros) // PyTorch's p == 1 is input * 0, and so its backward
        Device::for_each(
            n, EMBER_KERNEL(std::size_t i) { dx[i] = g[i] * T(0); });
    else
    {
        const T* mask = m_mask.data();
        Device::for_each(
            n, EMBER_KERNEL(std::size_t i) { dx[i] = g[i] * mask[i]; });
    }
    return m_input_grad;
}

} // namespace ember::nn

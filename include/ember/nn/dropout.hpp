#pragma once
/// @file
/// dropout (torch.nn.Dropout): in training, zeroes each element with probability p and scales
/// the survivors by 1 / (1 - p); in evaluation, passes its input through. The mask is drawn as
/// PyTorch's CPU bernoulli_(1 - p) draws it (one double uniform per element, kept when below
/// 1 - p), so after the same manual_seed both drop the same elements.

#include "ember/core/error.hpp"
#include "ember/core/generator.hpp"
#include "ember/core/tensor.hpp"
#include "ember/nn/module.hpp"

#include <algorithm>
#include <cstddef>
#include <string>

namespace ember::nn
{

/// @brief Randomly zeroes elements while training (torch.nn.Dropout).
template <class T = float, std::size_t N = 2>
class dropout : public module<dropout<T, N>>
{
public:
    using value_type = T;
    using tensor_type = tensor<T, N>;

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

    double m_p;
    generator* m_generator;
    bool m_cached = false;
    applied m_applied = applied::identity;
    tensor_type m_mask; // 0 or 1 / (1 - p) per element
    tensor_type m_output;
    tensor_type m_input_grad;
};

/*******************
 * implementation  *
 *******************/

template <class T, std::size_t N>
dropout<T, N>::dropout(double p, generator& g) : m_p(p), m_generator(&g)
{
    if (!(p >= 0.0 && p <= 1.0))
        throw value_error("dropout: probability has to be between 0 and 1, but got " +
                          std::to_string(p));
}

template <class T, std::size_t N>
auto dropout<T, N>::forward(const tensor_type& x) -> const tensor_type&
{
    resize_if_needed(m_output, x.shape());
    const std::size_t n = x.size();
    const T* in = x.data();
    T* out = m_output.data();
    m_cached = this->caching();
    // Like PyTorch, p == 0 and p == 1 draw nothing, so the generator stays where it was.
    if (!this->is_training() || m_p == 0.0)
    {
        std::copy(in, in + n, out);
        m_applied = applied::identity;
    }
    else if (m_p == 1.0)
    {
        for (std::size_t i = 0; i < n; ++i)
            out[i] = in[i] * T(0);
        m_applied = applied::zeros;
    }
    else
    {
        const double keep = 1.0 - m_p;
        // PyTorch divides the 0/1 noise by (1 - p) in T, then multiplies the input by it.
        const T scale = T(1) / static_cast<T>(keep);
        generator& g = *m_generator;
        if (m_cached)
        {
            resize_if_needed(m_mask, x.shape());
            T* mask = m_mask.data();
            for (std::size_t i = 0; i < n; ++i)
            {
                mask[i] = g.uniform<double>(0.0, 1.0) < keep ? scale : T(0);
                out[i] = in[i] * mask[i];
            }
        }
        else
        {
            for (std::size_t i = 0; i < n; ++i)
                out[i] = in[i] * (g.uniform<double>(0.0, 1.0) < keep ? scale : T(0));
        }
        m_applied = applied::mask;
    }
    return m_output;
}

template <class T, std::size_t N>
auto dropout<T, N>::backward(const tensor_type& dy) -> const tensor_type&
{
    if (!m_cached)
        throw error("dropout: backward() needs a forward() run with gradients enabled; the last "
                    "forward ran under no_grad or never ran");
    check_shape(dy.shape(), m_output.shape(), "dropout: backward gradient");
    resize_if_needed(m_input_grad, dy.shape());
    const std::size_t n = dy.size();
    const T* g = dy.data();
    T* dx = m_input_grad.data();
    switch (m_applied)
    {
    case applied::identity:
        std::copy(g, g + n, dx);
        break;
    case applied::zeros:
        std::fill(dx, dx + n, T(0));
        break;
    case applied::mask:
        for (std::size_t i = 0; i < n; ++i)
            dx[i] = g[i] * m_mask.data()[i];
        break;
    }
    return m_input_grad;
}

} // namespace ember::nn

#pragma once
/// @file
/// linear: y = x W^T + b, torch.nn.Linear with its initialisation drawn exactly as PyTorch's, so
/// that after the same manual_seed both hold the same numbers.

#include "ember/core/error.hpp"
#include "ember/core/generator.hpp"
#include "ember/core/tensor.hpp"
#include "ember/detail/blas.hpp"
#include "ember/detail/transpose.hpp"
#include "ember/nn/module.hpp"
#include "ember/nn/parameter.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>

namespace ember::nn
{

/// @brief Fully connected layer (torch.nn.Linear): input [N, in_features] → output
/// [N, out_features], `weight` [out_features, in_features], `bias` [out_features].
template <class T = float, class Device = cpu>
class linear : public module<linear<T, Device>, Device>
{
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                  "ember::nn::linear: T must be float or double (the types BLAS multiplies)");

public:
    using value_type = T;
    using device_type = Device;
    using tensor_type = typename Device::template tensor_type<T, 2>;

    parameter<T, 2, Device> weight;
    /// Empty and absent from state_dict() and parameters() when built without a bias.
    parameter<T, 1, Device> bias;

    /// @brief Draws weight and bias from `g` as torch.nn.Linear(in_features, out_features, bias)
    /// does.
    linear(std::size_t in_features, std::size_t out_features, bool has_bias = true,
           generator& g = default_generator());

    std::size_t in_features() const noexcept { return m_in; }
    std::size_t out_features() const noexcept { return m_out; }
    bool has_bias() const noexcept { return m_has_bias; }

    /// @brief PyTorch's initialisation: weight by kaiming_uniform_(a = sqrt(5)), that is
    /// uniform(-1/sqrt(in), 1/sqrt(in)) up to rounding, then bias uniform(-1/sqrt(in), 1/sqrt(in)).
    void reset_parameters(generator& g = default_generator());

    template <class V>
    void visit(V&& v)
    {
        v("weight", weight);
        if (m_has_bias)
            v("bias", bias);
    }

    /// @brief x W^T + b; throws shape_error unless x is [N, in_features].
    const tensor_type& forward(const tensor_type& x);
    /// @brief Adds dy^T x to weight.grad() (at batch 1 after zero_grad(), kept as dy and x:
    /// parameter::keep_grad_as_outer) and the batch sum of dy to bias.grad(); returns dy W, or
    /// an empty tensor when requires_input_grad() is off.
    const tensor_type& backward(const tensor_type& dy);

private:
    bool product_transposed(std::size_t batch) const noexcept;
    void forward_transposed(const tensor_type& x, std::size_t batch);

    std::size_t m_in;
    std::size_t m_out;
    bool m_has_bias;
    bool m_cached = false;
    tensor_type m_input;
    tensor_type m_output;
    tensor_type m_output_transposed; // forward's product when product_transposed()
    tensor_type m_input_grad;
};

/*******************
 * implementation  *
 *******************/

template <class T, class Device>
linear<T, Device>::linear(std::size_t in_features, std::size_t out_features, bool has_bias,
                          generator& g)
    : weight(tensor_type::from_shape({out_features, in_features})),
      bias(Device::template tensor_type<T, 1>::from_shape({has_bias ? out_features : 0})),
      m_in(in_features), m_out(out_features), m_has_bias(has_bias)
{
    reset_parameters(g);
}

template <class T, class Device>
void linear<T, Device>::reset_parameters(generator& g)
{
    // kaiming_uniform_(a = sqrt(5)) step by step in double, as torch.nn.init computes it, so
    // the bound (and with it every drawn value) rounds the same way.
    const double fan_in = static_cast<double>(m_in);
    if (m_in != 0) // with no inputs the weight is empty and PyTorch draws nothing for it
    {
        const double a = std::sqrt(5.0);
        const double gain = std::sqrt(2.0 / (1.0 + a * a));
        const double stddev = gain / std::sqrt(fan_in);
        const double bound = std::sqrt(3.0) * stddev;
        uniform_(weight.value, -bound, bound, g);
    }
    if (m_has_bias)
    {
        // PyTorch still draws (zeros) when fan_in is 0, which keeps the generator in step.
        const double bound = m_in != 0 ? 1.0 / std::sqrt(fan_in) : 0.0;
        uniform_(bias.value, -bound, bound, g);
    }
}

template <class T, class Device>
auto linear<T, Device>::forward(const tensor_type& x) -> const tensor_type&
{
    if (x.shape()[1] != m_in)
        throw shape_error("linear: input of shape " + shape_string(x.shape()) + ", expected [N, " +
                          std::to_string(m_in) + "]");
    const std::size_t batch = x.shape()[0];
    // The input is kept first. x may be this layer's own output (fc(fc(x)), in_features ==
    // out_features), which the product below overwrites: it then reads the kept copy.
    m_cached = this->caching();
    const bool own_output = &x == &m_output;
    if (m_cached || own_output)
        assign<Device>(m_input, x);
    const tensor_type& in = own_output ? m_input : x;
    resize_if_needed(m_output, std::array<std::size_t, 2>{batch, m_out});
    if (product_transposed(batch))
        forward_transposed(in, batch);
    else
    {
        // y = b + x W^T: the bias broadcast into y, then gemm adds the product onto it
        // (beta = 1), as addmm does. (Here, not in a private function: nvcc refuses a device
        // lambda in one.)
        T* y = m_output.data();
        if (m_has_bias)
        {
            const T* b = bias.value.data();
            const std::size_t out = m_out;
            Device::for_each(
                batch, EMBER_KERNEL(std::size_t r) {
                    for (std::size_t j = 0; j < out; ++j)
                        y[r * out + j] = b[j];
                });
        }
        Device::gemm(false, true, batch, m_out, m_in, T(1), in.data(), m_in, weight.value.data(),
                     m_in, m_has_bias ? T(1) : T(0), y, m_out);
    }
    return m_output;
}

// forward()'s product the other way round: y^T = b + W x^T into a buffer of its own, the bias
// first as there, then transposed into y. Only on cpu (see product_transposed()).
template <class T, class Device>
void linear<T, Device>::forward_transposed(const tensor_type& x, std::size_t batch)
{
    if constexpr (std::is_same_v<Device, cpu>)
    {
        resize_if_needed(m_output_transposed, std::array<std::size_t, 2>{m_out, batch});
        T* yt = m_output_transposed.data();
        if (m_has_bias)
        {
            const T* b = bias.value.data();
            for (std::size_t j = 0; j < m_out; ++j)
                std::fill_n(yt + j * batch, batch, b[j]);
        }
        Device::gemm(false, true, m_out, batch, m_in, T(1), weight.value.data(), m_in, x.data(),
                     m_in, m_has_bias ? T(1) : T(0), yt, batch);
        ember::detail::transpose(m_out, batch, yt, m_output.data());
    }
}

// OpenBLAS's AVX-512 kernels (0.3.21, one thread) pack the weight faster as the right-hand
// operand of W x^T than as the transposed left-hand one of x W^T. At batch 8 to 32 the product
// into y^T plus the transpose took 0.6-0.9 of the time of the product into y for out_features
// and in_features of 256 to 4096 (the MLP benchmark's first layer at batch 16: 101 µs against
// 141 µs); at batch 64 and over, as long or longer; with OpenBLAS's Haswell kernels 0.72-0.86
// at batch 8 but up to 1.12 at 32, with its Zen parameters 0.95-1.2, hence only where
// detail::openblas_avx512_kernels(). Every element is the same sum in the same order either
// way (bias first, then the blocks of k in turn), so y is the same to the bit;
// tests/test_layers.cpp compares the two. Host BLAS and float only: cuBLAS packs otherwise,
// and the transpose has no vector path for double.
template <class T, class Device>
bool linear<T, Device>::product_transposed(std::size_t batch) const noexcept
{
    if constexpr (std::is_same_v<Device, cpu> && std::is_same_v<T, float>)
        return ember::detail::transposed_product_faster(batch, m_out, m_in);
    else
        return false;
}

template <class T, class Device>
auto linear<T, Device>::backward(const tensor_type& dy) -> const tensor_type&
{
    if (!m_cached)
        throw error("linear: backward() needs a forward() run with gradients enabled; the last "
                    "forward ran under no_grad or never ran");
    check_shape(dy.shape(), m_output.shape(), "linear: backward gradient");
    const std::size_t batch = m_input.shape()[0];
    const T* g = dy.data();
    // At batch 1 the weight's gradient is the outer product of dy and x, which the weight keeps
    // as the two vectors after zero_grad() instead of writing it out (parameter's comment).
    if (weight.requires_grad &&
        !(batch == 1 && weight.keep_grad_as_outer({g, m_out}, {m_input.data(), m_in})))
    {
        // After zero_grad() the product overwrites the gradient (beta = 0), never reading it.
        auto [gw, add] = weight.grad_to_write();
        Device::gemm(true, false, m_out, m_in, batch, T(1), g, m_out, m_input.data(), m_in,
                     add ? T(1) : T(0), gw.data(), m_in);
        weight.grad_written();
    }
    if (m_has_bias && bias.requires_grad)
    {
        // Column sums of dy, each added in batch order: gb[j] + dy[0][j] + dy[1][j] + ...
        T* gb = bias.grad().data();
        const std::size_t out = m_out;
        if constexpr (std::is_same_v<Device, cpu>)
        {
            // Row by row on one core: the same additions in the same order, but the inner loop
            // runs along a row and vectorizes, where column by column it was a chain of
            // dependent scalar additions down a strided column (the MLP step at batch 64:
            // 909-913 -> 883-894 µs).
            for (std::size_t r = 0; r < batch; ++r)
            {
                const T* row = g + r * out;
                for (std::size_t j = 0; j < out; ++j)
                    gb[j] += row[j];
            }
        }
        else
        {
            // One column per thread.
            Device::for_each(
                out, EMBER_KERNEL(std::size_t j) {
                    T s = gb[j];
                    for (std::size_t r = 0; r < batch; ++r)
                        s += g[r * out + j];
                    gb[j] = s;
                });
        }
    }
    if (!this->requires_input_grad())
    {
        // Not m_input_grad: it may still hold an earlier step's gradient.
        static const tensor_type none{};
        return none;
    }
    resize_if_needed(m_input_grad, std::array<std::size_t, 2>{batch, m_in});
    Device::gemm(false, false, batch, m_in, m_out, T(1), g, m_out, weight.value.data(), m_in, T(0),
                 m_input_grad.data(), m_in);
    return m_input_grad;
}

} // namespace ember::nn

#pragma once
/// @file
/// Mean absolute error, `torch.nn.L1Loss`: loss = |input - target| per element.

#include "ember/loss/loss_base.hpp"

#include <cmath>
#include <string_view>

namespace ember::nn
{

/// @brief `torch.nn.L1Loss` over rank-N tensors. The gradient where input equals target is
/// 0, as in PyTorch. forward(), losses() and backward() behave as for mse_loss.
template <class T = float, std::size_t N = 2, class Device = cpu>
class l1_loss : public detail::elementwise_loss<l1_loss<T, N, Device>, T, N, Device>
{
    using base_type = detail::elementwise_loss<l1_loss<T, N, Device>, T, N, Device>;

public:
    using params_type = detail::no_params;
    static constexpr std::string_view name = "l1_loss";

    explicit l1_loss(nn::reduction r = nn::reduction::mean) noexcept : base_type(r) {}

    /// @brief The loss of one element and its derivative `dx` (callable in kernels).
    static EMBER_HOST_DEVICE T element(T x, T y, std::size_t, T& dx, params_type) noexcept
    {
        const T d = x - y;
        dx = static_cast<T>((d > 0) - (d < 0));
        return std::abs(d);
    }
};

} // namespace ember::nn

// Over rank-2 float tensors, compiled once by ember's precompiled part (EMBER_LOSS_EXTERN).
#define EMBER_L1_INSTANCES(EXTERN, DEVICE) EMBER_ELEMENTWISE_LOSS_INSTANCE(EXTERN, l1_loss, DEVICE)
EMBER_LOSS_EXTERN(EMBER_L1_INSTANCES)

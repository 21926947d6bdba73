#pragma once
/// @file
/// Mean squared error, `torch.nn.MSELoss`: loss = (input - target)^2 per element.

#include "ember/loss/loss_base.hpp"

#include <string_view>

namespace ember::nn
{

/// @brief `torch.nn.MSELoss` over rank-N tensors on `Device` (input, target, losses() and
/// backward() are `Device::tensor_type`s; forward() returns the value on the host).
///
/// forward(input, target) returns the mean (or sum) of the per-element losses; with
/// reduction::none it returns their sum and losses() holds them. backward() is the gradient of
/// what forward() returned; backward(grad_output) (reduction::none) weights each element.
/// @code
/// ember::nn::mse_loss<> loss_fn;
/// float loss = loss_fn(y_pred, y_train);
/// model.backward(loss_fn.backward());
/// @endcode
template <class T = float, std::size_t N = 2, class Device = cpu>
class mse_loss : public detail::elementwise_loss<mse_loss<T, N, Device>, T, N, Device>
{
    using base_type = detail::elementwise_loss<mse_loss<T, N, Device>, T, N, Device>;

public:
    using params_type = detail::no_params;
    static constexpr std::string_view name = "mse_loss";

    explicit mse_loss(nn::reduction r = nn::reduction::mean) noexcept : base_type(r) {}

    /// @brief The loss of one element and its derivative `dx` (callable in kernels).
    static EMBER_HOST_DEVICE T element(T x, T y, std::size_t, T& dx, params_type) noexcept
    {
        const T d = x - y;
        dx = 2 * d;
        return d * d;
    }
};

} // namespace ember::nn

// Over rank-2 float tensors, compiled once by ember's precompiled part (EMBER_LOSS_EXTERN).
#define EMBER_MSE_INSTANCES(EXTERN, DEVICE)                                                        \
    EMBER_ELEMENTWISE_LOSS_INSTANCE(EXTERN, mse_loss, DEVICE)
EMBER_LOSS_EXTERN(EMBER_MSE_INSTANCES)

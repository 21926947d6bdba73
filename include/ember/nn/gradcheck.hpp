#pragma once
/// @file
/// gradcheck: compares a module's or loss's hand-written backward with central finite
/// differences, in double precision — the check every built-in passes and the one to run on
/// your own modules. Randomness (Dropout) is replayed: the default generator is restored before
/// every forward, so each evaluation draws the same masks.
///
/// Modules and losses on any device are checked: the input is built on the host in double,
/// moved to the module's `device_type` with ember::to, and results are read back with
/// ember::to_host. A loss's target may be given on the host; it is moved the same way.

#include "ember/core/generator.hpp"
#include "ember/core/tensor.hpp"
#include "ember/device/cpu.hpp"
#include "ember/device/transfer.hpp"
#include "ember/nn/module.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace ember::nn
{

/// @brief Tolerances of a gradient check (PyTorch's defaults: eps 1e-6, atol 1e-5, rtol 1e-3).
struct gradcheck_options
{
    double eps = 1e-6;
    double atol = 1e-5;
    double rtol = 1e-3;
    std::uint64_t seed = 0; ///< seeds the random upstream gradient
};

/// @brief Outcome of a check: `ok`, and when not, which element disagreed and by how much.
struct gradcheck_result
{
    bool ok = true;
    double max_abs_error = 0.0;
    std::string message;
    explicit operator bool() const noexcept { return ok; }
};

/// @brief Checks `m.backward` against finite differences of `m.forward` at `input`, for the
/// gradient with respect to the input (unless `m.requires_input_grad()` is off) and to every
/// parameter that requires grad. The module must use double; it may run on any device (`input`
/// is moved there). The module's gradients are as they were afterwards.
template <class Module, std::size_t N>
gradcheck_result gradcheck(Module& m, const tensor<double, N>& input,
                           const gradcheck_options& opt = {});

/// @brief Checks `loss.backward()` against finite differences of `loss.forward(input, target)`
/// with respect to `input`, on the loss's device (`target` there already, or a host tensor).
template <class Loss, std::size_t N, class Target>
gradcheck_result gradcheck_loss(Loss& loss, const tensor<double, N>& input, const Target& target,
                                const gradcheck_options& opt = {});

/*******************
 * implementation  *
 *******************/

namespace detail
{
inline void compare(gradcheck_result& r, double analytic, double numeric, const std::string& what,
                    std::size_t index, const gradcheck_options& opt)
{
    double err = std::abs(analytic - numeric);
    r.max_abs_error = std::max(r.max_abs_error, err);
    if (r.ok && err > opt.atol + opt.rtol * std::abs(numeric))
    {
        r.ok = false;
        r.message = "gradcheck: " + what + " element " + std::to_string(index) +
                    ": backward gives " + std::to_string(analytic) + ", finite differences give " +
                    std::to_string(numeric);
    }
}
} // namespace detail

namespace detail
{
// The device a module or loss runs on: its `device_type`, else cpu.
template <class M>
struct gradcheck_device
{
    using type = cpu;
};
template <class M>
requires requires
{
    typename M::device_type;
}
struct gradcheck_device<M>
{
    using type = typename M::device_type;
};

// A target as the loss takes it: a host tensor is moved to a non-cpu device, anything else
// (already on the device, or not a tensor) is passed as it is.
template <class Device, class Target>
decltype(auto) gradcheck_target(const Target& target)
{
    if constexpr (!std::is_same_v<Device, cpu> && xt::is_xexpression<Target>::value)
        return ember::to<Device>(target);
    else
        return (target);
}

// One element of device memory, read and written from the host.
template <class Device, class T>
T read_element(const T* p)
{
    T v{};
    Device::download(p, 1, &v);
    return v;
}
template <class Device, class T>
void write_element(T* p, T v)
{
    Device::upload(&v, 1, p);
}
} // namespace detail

template <class Module, std::size_t N>
gradcheck_result gradcheck(Module& m, const tensor<double, N>& input, const gradcheck_options& opt)
{
    using device = typename detail::gradcheck_device<Module>::type;
    gradcheck_result r;
    generator& g = default_generator();
    const generator_state replay = g.state();

    // The input is perturbed on the host and uploaded before every evaluation.
    tensor<double, N> x = input;
    auto xd = ember::to<device>(x);
    auto upload_x = [&] { device::upload(x.data(), x.size(), xd.data()); };

    // <upstream, forward(x)>: a scalar whose gradient backward(upstream) computes.
    g.set_state(replay);
    auto y0 = ember::to_host(m.forward(xd)); // a copy: the module's output is overwritten below
    using out_t = decltype(y0);
    out_t upstream = out_t::from_shape(y0.shape());
    generator ug(opt.seed);
    normal_(upstream, 0.0, 1.0, ug);
    const auto upstream_d = ember::to<device>(upstream);
    auto objective = [&]()
    {
        upload_x();
        g.set_state(replay);
        const out_t y = ember::to_host(m.forward(xd));
        double s = 0;
        for (std::size_t i = 0; i < y.size(); ++i)
            s += y.data()[i] * upstream.data()[i];
        return s;
    };

    // The gradients the model held: put back at the end, as torch.autograd.gradcheck leaves
    // every .grad as it was (None included).
    auto params = m.template named_parameters<double>();
    std::vector<std::vector<double>> held(params.size());
    std::vector<char> had(params.size());
    for (std::size_t k = 0; k < params.size(); ++k)
        if ((had[k] = params[k].second.has_grad()))
        {
            auto& p = params[k].second;
            held[k].resize(p.size());
            device::download(p.grad().data(), p.size(), held[k].data());
        }

    m.zero_grad();
    g.set_state(replay);
    m.forward(xd);
    const tensor<double, N> dx = ember::to_host(m.backward(upstream_d));
    // A frozen parameter has no gradient to check, as gradcheck checks only what requires grad.
    std::vector<std::vector<double>> analytic(params.size());
    for (std::size_t k = 0; k < params.size(); ++k)
        if (auto& p = params[k].second; p.requires_grad())
        {
            analytic[k].resize(p.size());
            device::download(p.grad().data(), p.size(), analytic[k].data());
        }

    // With requires_input_grad(false) backward returns an empty tensor: only the parameters
    // are checked then, as for an input that does not require grad.
    if (m.requires_input_grad() && dx.size() != x.size())
    {
        r.ok = false;
        r.message = "gradcheck: backward returned " + std::to_string(dx.size()) +
                    " elements for an input of " + std::to_string(x.size());
    }
    const bool check_input = m.requires_input_grad() && dx.size() == x.size();
    for (std::size_t i = 0; check_input && i < x.size(); ++i)
    {
        double saved = x.data()[i];
        x.data()[i] = saved + opt.eps;
        double plus = objective();
        x.data()[i] = saved - opt.eps;
        double minus = objective();
        x.data()[i] = saved;
        detail::compare(r, dx.data()[i], (plus - minus) / (2 * opt.eps), "input", i, opt);
    }
    for (std::size_t k = 0; k < params.size(); ++k)
    {
        if (!params[k].second.requires_grad())
            continue;
        double* value = params[k].second.value().data();
        for (std::size_t i = 0; i < params[k].second.size(); ++i)
        {
            double saved = detail::read_element<device>(value + i);
            detail::write_element<device>(value + i, saved + opt.eps);
            double plus = objective();
            detail::write_element<device>(value + i, saved - opt.eps);
            double minus = objective();
            detail::write_element<device>(value + i, saved);
            detail::compare(r, analytic[k][i], (plus - minus) / (2 * opt.eps),
                            "parameter '" + params[k].first + "'", i, opt);
        }
    }
    for (std::size_t k = 0; k < params.size(); ++k)
    {
        auto& p = params[k].second;
        if (had[k])
            device::upload(held[k].data(), p.size(), p.grad().data());
        else
            p.zero_grad(true);
    }
    g.set_state(replay);
    return r;
}

template <class Loss, std::size_t N, class Target>
gradcheck_result gradcheck_loss(Loss& loss, const tensor<double, N>& input, const Target& target,
                                const gradcheck_options& opt)
{
    using device = typename detail::gradcheck_device<Loss>::type;
    gradcheck_result r;
    tensor<double, N> x = input;
    auto xd = ember::to<device>(x);
    const auto& target_d = detail::gradcheck_target<device>(target);
    auto at = [&](double v, std::size_t i)
    {
        x.data()[i] = v;
        device::upload(x.data(), x.size(), xd.data());
        return static_cast<double>(loss.forward(xd, target_d));
    };
    loss.forward(xd, target_d);
    const tensor<double, N> dx = ember::to_host(loss.backward());
    for (std::size_t i = 0; i < x.size(); ++i)
    {
        double saved = x.data()[i];
        double plus = at(saved + opt.eps, i);
        double minus = at(saved - opt.eps, i);
        x.data()[i] = saved;
        detail::compare(r, dx.data()[i], (plus - minus) / (2 * opt.eps), "input", i, opt);
    }
    return r;
}

} // namespace ember::nn

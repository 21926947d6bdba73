#pragma once
/// @file
/// gradcheck: compares a module's or loss's hand-written backward with central finite
/// differences, in double precision — the check every built-in passes and the one to run on
/// your own modules. Randomness (Dropout) is replayed: the default generator is restored before
/// every forward, so each evaluation draws the same masks.

#include "ember/core/generator.hpp"
#include "ember/core/tensor.hpp"
#include "ember/nn/module.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>

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
/// gradient with respect to the input and to every parameter. The module must use double.
template <class Module, std::size_t N>
gradcheck_result gradcheck(Module& m, const tensor<double, N>& input,
                           const gradcheck_options& opt = {});

/// @brief Checks `loss.backward()` against finite differences of `loss.forward(input, target)`
/// with respect to `input`.
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

template <class Module, std::size_t N>
gradcheck_result gradcheck(Module& m, const tensor<double, N>& input, const gradcheck_options& opt)
{
    gradcheck_result r;
    generator& g = default_generator();
    const generator_state replay = g.state();

    // <upstream, forward(x)>: a scalar whose gradient backward(upstream) computes.
    tensor<double, N> x = input;
    g.set_state(replay);
    auto y0 = m.forward(x); // a copy: the module's output buffer is overwritten below
    using out_t = decltype(y0);
    out_t upstream = out_t::from_shape(y0.shape());
    generator ug(opt.seed);
    normal_(upstream, 0.0, 1.0, ug);
    auto objective = [&]()
    {
        g.set_state(replay);
        const auto& y = m.forward(x);
        double s = 0;
        for (std::size_t i = 0; i < y.size(); ++i)
            s += y.data()[i] * upstream.data()[i];
        return s;
    };

    m.zero_grad();
    g.set_state(replay);
    m.forward(x);
    tensor<double, N> dx = m.backward(upstream);
    auto params = m.template named_parameters<double>();
    std::vector<std::vector<double>> analytic;
    for (auto& [name, p] : params)
        analytic.emplace_back(p.grad().begin(), p.grad().end());

    for (std::size_t i = 0; i < x.size(); ++i)
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
        auto value = params[k].second.value();
        for (std::size_t i = 0; i < value.size(); ++i)
        {
            double saved = value[i];
            value[i] = saved + opt.eps;
            double plus = objective();
            value[i] = saved - opt.eps;
            double minus = objective();
            value[i] = saved;
            detail::compare(r, analytic[k][i], (plus - minus) / (2 * opt.eps),
                            "parameter '" + params[k].first + "'", i, opt);
        }
    }
    g.set_state(replay);
    return r;
}

template <class Loss, std::size_t N, class Target>
gradcheck_result gradcheck_loss(Loss& loss, const tensor<double, N>& input, const Target& target,
                                const gradcheck_options& opt)
{
    gradcheck_result r;
    tensor<double, N> x = input;
    loss.forward(x, target);
    tensor<double, N> dx = loss.backward();
    for (std::size_t i = 0; i < x.size(); ++i)
    {
        double saved = x.data()[i];
        x.data()[i] = saved + opt.eps;
        double plus = loss.forward(x, target);
        x.data()[i] = saved - opt.eps;
        double minus = loss.forward(x, target);
        x.data()[i] = saved;
        detail::compare(r, dx.data()[i], (plus - minus) / (2 * opt.eps), "input", i, opt);
    }
    return r;
}

} // namespace ember::nn

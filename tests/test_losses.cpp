// Losses: hand-written gradients against finite differences, values and gradients against
// PyTorch 1.13 (tests/golden/losses.hpp, written by scripts/golden_losses.py), and the ways
// users get them wrong. Every loss runs on test_device (test_device.hpp); inputs are built on
// the host and moved there with test::dev(), results read back with test::host().
#include <ember/core/generator.hpp>
#include <ember/core/grad_mode.hpp>
#include <ember/loss/losses.hpp>

#include "golden/losses.hpp"
#include "test_device.hpp"

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <span>
#include <string>

using namespace ember;
namespace gl = golden::losses;
using test::dev;
using test::host;
using D = test_device;

namespace
{
constexpr nn::reduction all_reductions[] = {nn::reduction::mean, nn::reduction::sum,
                                            nn::reduction::none};

template <class T, std::size_t N>
tensor<T, N> from(std::span<const double> values, const std::array<std::size_t, N>& shape)
{
    auto t = tensor<T, N>::from_shape(shape);
    BOOST_REQUIRE_EQUAL(values.size(), t.size());
    std::copy(values.begin(), values.end(), t.begin());
    return t;
}

template <class T>
tensor<T, 2> input_of(const gl::loss_case& c)
{
    return from<T, 2>(c.input, {c.rows, c.cols});
}

template <class T>
tensor<T, 2> target_of(const gl::loss_case& c)
{
    return from<T, 2>(c.target, {c.rows, c.cols});
}

tensor<std::int64_t, 1> classes_of(const gl::loss_case& c)
{
    auto t = tensor<std::int64_t, 1>::from_shape({c.classes.size()});
    std::copy(c.classes.begin(), c.classes.end(), t.begin());
    return t;
}

// |actual - expected| <= rtol |expected| + slack, elementwise. In float, `slack` is how far
// PyTorch's float32 result is from its float64 one: where a result cancels (p - 0.025 in a
// smoothed cross-entropy gradient), PyTorch's own float32 rounding exceeds 1e-6 of it, and
// ember, which sums in double, lands nearer the exact value. In double the slack is 0.
template <class A>
void check_close(const A& actual, std::span<const double> expected, double rtol,
                 std::span<const double> exact, const std::string& what)
{
    const auto values = host(actual);
    BOOST_REQUIRE_EQUAL(values.size(), expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i)
    {
        const double a = values.data()[i];
        const double slack = std::abs(expected[i] - exact[i]);
        BOOST_TEST(std::abs(a - expected[i]) <= rtol * std::abs(expected[i]) + slack,
                   what << " element " << i << ": " << a << " vs PyTorch " << expected[i]);
    }
}

void check_close(double actual, double expected, double rtol, double exact, const std::string& what)
{
    BOOST_TEST(std::abs(actual - expected) <=
                   rtol * std::abs(expected) + std::abs(expected - exact),
               what << ": " << actual << " vs PyTorch " << expected);
}

// Values, per-element losses and gradients of every reduction against PyTorch in T.
// `make(r)` builds the loss in T with reduction r. Off cpu the sums add in another order, so
// float results get a looser tolerance there.
template <class T, class Make>
void check_golden(const gl::loss_case& c, Make make)
{
    const double rtol = std::is_same_v<T, float> ? (test::exact ? 1e-6 : 1e-5) : 1e-12;
    const gl::expected& e = std::is_same_v<T, float> ? c.f32 : c.f64;
    const gl::expected& exact = c.f64;
    const auto x = dev(input_of<T>(c));
    for (nn::reduction r : all_reductions)
    {
        const std::string what = std::string(decltype(make(r))::name) + " reduction " +
                                 std::string(nn::reduction_name(r));
        auto loss = make(r);
        T value;
        if constexpr (std::is_same_v<typename decltype(loss)::target_type, test::dtensor<T, 2>>)
            value = loss(x, dev(target_of<T>(c)));
        else
            value = loss(x, dev(classes_of(c)));
        auto pick = [r](const gl::expected& ex) {
            return r == nn::reduction::mean  ? ex.mean
                   : r == nn::reduction::sum ? ex.sum
                                             : ex.none_sum;
        };
        auto grad = [r](const gl::expected& ex)
        { return r == nn::reduction::mean ? ex.grad_mean : ex.grad_sum; };
        check_close(value, pick(e), rtol, pick(exact), what + " value");
        check_close(loss.losses(), e.losses, rtol, exact.losses, what + " losses()");
        check_close(loss.backward(), grad(e), rtol, grad(exact), what + " backward()");
        if (r == nn::reduction::none)
        {
            auto upstream = host(loss.losses());
            BOOST_REQUIRE_EQUAL(upstream.size(), c.upstream.size());
            std::copy(c.upstream.begin(), c.upstream.end(), upstream.begin());
            check_close(loss.backward(dev(upstream)), e.grad_none, rtol, exact.grad_none,
                        what + " backward(grad_output)");
        }
    }
}

// Every golden case, with the loss it was made with, in T.
template <class T>
void check_all_golden()
{
    using R = nn::reduction;
    check_golden<T>(gl::mse, [](R r) { return nn::mse_loss<T, 2, D>(r); });
    check_golden<T>(gl::l1, [](R r) { return nn::l1_loss<T, 2, D>(r); });
    for (const gl::loss_case* c : {&gl::huber_delta_1, &gl::huber_delta_half})
        check_golden<T>(*c, [c](R r) { return nn::huber_loss<T, 2, D>(r, {.delta = c->param}); });
    for (const gl::loss_case* c :
         {&gl::smooth_l1_beta_1, &gl::smooth_l1_beta_half, &gl::smooth_l1_beta_0})
        check_golden<T>(*c,
                        [c](R r) { return nn::smooth_l1_loss<T, 2, D>(r, {.beta = c->param}); });
    check_golden<T>(gl::bce, [](R r) { return nn::bce_loss<T, 2, D>(r); });
    check_golden<T>(gl::bce_weight,
                    [](R r)
                    {
                        const auto& w = gl::bce_weight.weight;
                        return nn::bce_loss<T, 2, D>(r, {.weight = from<T, 1>(w, {w.size()})});
                    });
    check_golden<T>(gl::bce_with_logits, [](R r) { return nn::bce_with_logits_loss<T, 2, D>(r); });
    check_golden<T>(gl::bce_with_logits_pos_weight,
                    [](R r)
                    {
                        const auto& pw = gl::bce_with_logits_pos_weight.pos_weight;
                        return nn::bce_with_logits_loss<T, 2, D>(
                            r, {.pos_weight = from<T, 1>(pw, {pw.size()})});
                    });
    check_golden<T>(gl::bce_with_logits_weight,
                    [](R r)
                    {
                        const gl::loss_case& c = gl::bce_with_logits_weight;
                        return nn::bce_with_logits_loss<T, 2, D>(
                            r, {.pos_weight = from<T, 1>(c.pos_weight, {c.pos_weight.size()}),
                                .weight = from<T, 1>(c.weight, {c.weight.size()})});
                    });
    // Cases without class weights have an empty weight span: the loss gets none.
    for (const gl::loss_case* c :
         {&gl::cross_entropy, &gl::cross_entropy_ignore, &gl::cross_entropy_smoothing,
          &gl::cross_entropy_ignore_2_smoothing, &gl::cross_entropy_weight,
          &gl::cross_entropy_weight_ignore_2_smoothing})
        check_golden<T>(*c,
                        [c](R r)
                        {
                            return nn::cross_entropy_loss<T, D>(
                                r, {.ignore_index = c->ignore_index,
                                    .label_smoothing = c->param,
                                    .weight = from<T, 1>(c->weight, {c->weight.size()})});
                        });
    for (const gl::loss_case* c : {&gl::nll, &gl::nll_ignore_2, &gl::nll_weight})
        check_golden<T>(*c,
                        [c](R r)
                        {
                            return nn::nll_loss<T, D>(
                                r, {.ignore_index = c->ignore_index,
                                    .weight = from<T, 1>(c->weight, {c->weight.size()})});
                        });
}

// `analytic` against central differences of `objective` (which reads `x`) at every element of
// the host tensor `x`, with gradcheck's tolerances (PyTorch's: eps 1e-6, atol 1e-5, rtol 1e-3).
template <std::size_t N, class Objective>
void check_against_finite_differences(const tensor<double, N>& analytic, tensor<double, N>& x,
                                      Objective objective, const std::string& what)
{
    BOOST_REQUIRE_EQUAL(analytic.size(), x.size());
    const double eps = 1e-6;
    for (std::size_t i = 0; i < x.size(); ++i)
    {
        const double saved = x.data()[i];
        x.data()[i] = saved + eps;
        const double plus = objective();
        x.data()[i] = saved - eps;
        const double minus = objective();
        x.data()[i] = saved;
        const double numeric = (plus - minus) / (2 * eps);
        BOOST_TEST(std::abs(analytic.data()[i] - numeric) <= 1e-5 + 1e-3 * std::abs(numeric),
                   what << " element " << i << ": " << analytic.data()[i] << ", finite differences "
                        << numeric);
    }
}

// backward() against central differences of forward() (what nn::gradcheck_loss checks), on
// test_device.
template <class Loss, std::size_t N, class Target>
void check_backward(Loss& loss, tensor<double, N> x, const Target& target, const std::string& what)
{
    loss.forward(dev(x), target);
    const tensor<double, N> dx = host(loss.backward());
    check_against_finite_differences(
        dx, x, [&] { return static_cast<double>(loss.forward(dev(x), target)); },
        what + " backward()");
}

// For reduction::none: backward(g) against central differences of sum(g * losses()).
template <class Loss, std::size_t N, class Target>
void check_weighted_backward(Loss& loss, tensor<double, N> x, const Target& target)
{
    loss.forward(dev(x), target);
    auto g = host(loss.losses());
    generator ug(7);
    normal_(g, 0.0, 1.0, ug);
    const tensor<double, N> dx = host(loss.backward(dev(g)));
    auto objective = [&]
    {
        loss.forward(dev(x), target);
        const auto losses = host(loss.losses());
        double s = 0;
        for (std::size_t i = 0; i < g.size(); ++i)
            s += g.data()[i] * losses.data()[i];
        return s;
    };
    check_against_finite_differences(dx, x, objective,
                                     std::string(Loss::name) + " backward(grad_output)");
}

// backward() for every reduction, and backward(grad_output) for reduction::none, against
// finite differences; `target` is a host tensor.
template <class Make, std::size_t N, class Target>
void gradcheck_every_reduction(Make make, const tensor<double, N>& x, const Target& target)
{
    const auto t = dev(target);
    for (nn::reduction r : all_reductions)
    {
        auto loss = make(r);
        check_backward(loss, x, t,
                       std::string(decltype(loss)::name) + " reduction " +
                           std::string(nn::reduction_name(r)));
        if (r == nn::reduction::none)
            check_weighted_backward(loss, x, t);
    }
}

tensor<double, 1> vec(std::initializer_list<double> v)
{
    return from<double, 1>(std::span<const double>(v.begin(), v.size()), {v.size()});
}
} // namespace

BOOST_AUTO_TEST_CASE(regression_losses_pass_gradcheck_for_every_reduction)
{
    using R = nn::reduction;
    // Differences on both sides of every threshold (0.5, 1) and away from 0 and from them.
    const auto x = input_of<double>(gl::mse);
    const auto y = target_of<double>(gl::mse);
    gradcheck_every_reduction([](R r) { return nn::mse_loss<double, 2, D>(r); }, x, y);
    gradcheck_every_reduction([](R r) { return nn::l1_loss<double, 2, D>(r); }, x, y);
    for (double delta : {1.0, 0.5, 2.0})
        gradcheck_every_reduction(
            [delta](R r) { return nn::huber_loss<double, 2, D>(r, {.delta = delta}); }, x, y);
    for (double beta : {1.0, 0.5, 0.0})
        gradcheck_every_reduction(
            [beta](R r) { return nn::smooth_l1_loss<double, 2, D>(r, {.beta = beta}); }, x, y);
}

BOOST_AUTO_TEST_CASE(losses_of_rank_1_and_3_pass_gradcheck)
{
    using R = nn::reduction;
    const auto x1 = from<double, 1>(gl::mse.input, {12});
    const auto y1 = from<double, 1>(gl::mse.target, {12});
    const auto x3 = from<double, 3>(gl::mse.input, {2, 2, 3});
    const auto y3 = from<double, 3>(gl::mse.target, {2, 2, 3});
    gradcheck_every_reduction([](R r) { return nn::mse_loss<double, 1, D>(r); }, x1, y1);
    gradcheck_every_reduction([](R r) { return nn::huber_loss<double, 3, D>(r, {.delta = 0.5}); },
                              x3, y3);
    const auto p3 = from<double, 3>(gl::bce.input, {2, 2, 3});
    const auto t3 = from<double, 3>(gl::bce.target, {2, 2, 3});
    gradcheck_every_reduction([](R r) { return nn::bce_loss<double, 3, D>(r); }, p3, t3);
    gradcheck_every_reduction(
        [](R r) {
            return nn::bce_with_logits_loss<double, 3, D>(r, {.pos_weight = vec({0.5, 2.0, 3.0})});
        },
        p3, t3);
}

BOOST_AUTO_TEST_CASE(binary_cross_entropy_losses_pass_gradcheck_for_every_reduction)
{
    using R = nn::reduction;
    // Probabilities in [0.05, 0.95] with soft and hard targets; logits up to +-30.
    gradcheck_every_reduction([](R r) { return nn::bce_loss<double, 2, D>(r); },
                              input_of<double>(gl::bce), target_of<double>(gl::bce));
    const auto logits = input_of<double>(gl::bce_with_logits);
    const auto y = target_of<double>(gl::bce_with_logits);
    gradcheck_every_reduction([](R r) { return nn::bce_with_logits_loss<double, 2, D>(r); }, logits,
                              y);
    gradcheck_every_reduction(
        [](R r) {
            return nn::bce_with_logits_loss<double, 2, D>(r, {.pos_weight = vec({2.0, 0.5, 1.25})});
        },
        logits, y);
    gradcheck_every_reduction(
        [](R r) { return nn::bce_with_logits_loss<double, 2, D>(r, {.pos_weight = vec({3.0})}); },
        logits, y);
    // Weights per class and one weight for all, with and without pos_weight.
    for (const tensor<double, 1>& w : {vec({0.75, 1.5, 0.25}), vec({2.5})})
    {
        gradcheck_every_reduction([&](R r) { return nn::bce_loss<double, 2, D>(r, {.weight = w}); },
                                  input_of<double>(gl::bce), target_of<double>(gl::bce));
        gradcheck_every_reduction(
            [&](R r)
            {
                return nn::bce_with_logits_loss<double, 2, D>(
                    r, {.pos_weight = vec({2.0, 0.5, 1.25}), .weight = w});
            },
            logits, y);
        gradcheck_every_reduction(
            [&](R r) { return nn::bce_with_logits_loss<double, 2, D>(r, {.weight = w}); }, logits,
            y);
    }
}

BOOST_AUTO_TEST_CASE(class_index_losses_pass_gradcheck_with_weights_ignore_index_and_smoothing)
{
    using R = nn::reduction;
    const auto logits = input_of<double>(gl::cross_entropy);
    const auto log_probs = input_of<double>(gl::nll);
    // Without class weights (empty), and with one per class.
    for (const tensor<double, 1>& weight : {tensor<double, 1>{}, vec({0.5, 2.0, 1.25, 0.75})})
    {
        for (const gl::loss_case* c :
             {&gl::cross_entropy, &gl::cross_entropy_ignore, &gl::cross_entropy_ignore_2_smoothing})
            for (double smoothing : {0.0, 0.1, 1.0})
                gradcheck_every_reduction(
                    [&](R r)
                    {
                        return nn::cross_entropy_loss<double, D>(r,
                                                                 {.ignore_index = c->ignore_index,
                                                                  .label_smoothing = smoothing,
                                                                  .weight = weight});
                    },
                    logits, classes_of(*c));
        for (const gl::loss_case* c : {&gl::nll, &gl::cross_entropy_ignore, &gl::nll_ignore_2})
            gradcheck_every_reduction(
                [&](R r) {
                    return nn::nll_loss<double, D>(
                        r, {.ignore_index = c->ignore_index, .weight = weight});
                },
                log_probs, classes_of(*c));
    }
}

BOOST_AUTO_TEST_CASE(class_weights_of_one_give_the_unweighted_losses_bit_for_bit)
{
    // Weights of 1 go through the weighted arithmetic; every product by 1 is exact, so the
    // results equal the unweighted ones exactly, in any summation order.
    const auto x = dev(input_of<float>(gl::cross_entropy));
    const auto t = dev(classes_of(gl::cross_entropy_ignore_2_smoothing));
    for (double smoothing : {0.0, 0.25})
        for (nn::reduction r : all_reductions)
        {
            nn::cross_entropy_loss<float, D> plain(
                r, {.ignore_index = 2, .label_smoothing = smoothing});
            nn::cross_entropy_loss<float, D> ones(
                r,
                {.ignore_index = 2, .label_smoothing = smoothing, .weight = {1.f, 1.f, 1.f, 1.f}});
            BOOST_TEST(plain(x, t) == ones(x, t));
            BOOST_TEST(host(plain.losses()) == host(ones.losses()),
                       boost::test_tools::per_element());
            if (smoothing == 0) // the smoothed gradient's coefficient of p rounds otherwise
                BOOST_TEST(host(plain.backward()) == host(ones.backward()),
                           boost::test_tools::per_element());
        }
}

BOOST_AUTO_TEST_CASE(a_zero_total_class_weight_gives_pytorchs_nan_mean_and_gradient)
{
    // PyTorch 1.13: F.nll_loss(x, tensor([0, 0]), weight=tensor([0., 1, 1])) is nan, and
    // x.grad is nan at the targets, 0 elsewhere (0 times 1/0); F.cross_entropy's is nan
    // everywhere, through log_softmax's backward.
    const tensor<double, 2> x = {{1, 2, 3}, {0, -1, 4}};
    const auto t = dev(tensor<std::int64_t, 1>{0, 0});
    nn::nll_loss<double, D> nll({.weight = vec({0.0, 1.0, 1.0})});
    BOOST_TEST(std::isnan(nll(dev(x), t)));
    const auto g = host(nll.backward());
    BOOST_TEST((std::isnan(g(0, 0)) && std::isnan(g(1, 0))));
    BOOST_TEST((g(0, 1) == 0 && g(0, 2) == 0 && g(1, 1) == 0 && g(1, 2) == 0));
    // Smoothed too: PyTorch's smoothing term over 0 would be inf, but its NLL term is 0/0.
    for (double smoothing : {0.0, 0.1, 1.0})
    {
        nn::cross_entropy_loss<double, D> ce(
            {.label_smoothing = smoothing, .weight = vec({0.0, 1.0, 1.0})});
        BOOST_TEST(std::isnan(ce(dev(x), t)), smoothing);
        const auto ce_grad = host(ce.backward());
        BOOST_TEST(
            std::all_of(ce_grad.begin(), ce_grad.end(), [](double v) { return std::isnan(v); }),
            smoothing);
    }
    // An ignored sample's row stays 0, as in PyTorch.
    nn::nll_loss<double, D> ignoring({.weight = vec({0.0, 1.0, 1.0})});
    ignoring(dev(x), dev(tensor<std::int64_t, 1>{0, -100}));
    const auto ig = host(ignoring.backward());
    BOOST_TEST((std::isnan(ig(0, 0)) && ig(1, 0) == 0 && ig(1, 1) == 0 && ig(1, 2) == 0));
    // Sum and none have nothing to divide by: finite.
    nn::cross_entropy_loss<double, D> sum(nn::reduction::sum, {.weight = vec({0.0, 1.0, 1.0})});
    BOOST_TEST(sum(dev(x), t) == 0.0);
    BOOST_TEST(host(sum.backward()) == xt::zeros<double>({2, 3}));
}

BOOST_AUTO_TEST_CASE(values_and_gradients_match_pytorch_in_float32)
{
    check_all_golden<float>();
}

BOOST_AUTO_TEST_CASE(values_and_gradients_match_pytorch_in_float64)
{
    check_all_golden<double>();
}

BOOST_AUTO_TEST_CASE(reduction_none_returns_the_sum_and_keeps_per_element_losses)
{
    nn::mse_loss<double, 1, D> loss(nn::reduction::none);
    const double value = loss(dev(vec({1, 2, 3})), dev(vec({1, 0, 6})));
    BOOST_TEST(value == 13.0);
    BOOST_TEST(host(loss.losses()) == vec({0, 4, 9}));
    BOOST_TEST(host(loss.backward()) == vec({0, 4, -6})); // d(sum)/dx
    BOOST_TEST(host(loss.backward(dev(vec({1, 0.5, 2})))) == vec({0, 2, -12}));
}

BOOST_AUTO_TEST_CASE(a_large_batch_sums_like_a_plain_loop_on_cpu_and_within_rounding_elsewhere)
{
    // 3000 x 7 losses: enough for a parallel back end to split the sum. On cpu the value is
    // bit for bit a left-to-right loop in double over the per-element function; elsewhere the
    // order differs, so it agrees to rounding.
    using acc = nn::detail::loss_accumulator_t<float>;
    const std::size_t rows = 3000;
    const std::size_t cols = 7;
    generator g(11);
    auto x = tensor<float, 2>::from_shape({rows, cols});
    auto y = tensor<float, 2>::from_shape({rows, cols});
    normal_(x, 0.0, 2.0, g);
    normal_(y, 0.0, 1.0, g);
    auto classes = tensor<std::int64_t, 1>::from_shape({rows});
    for (std::size_t i = 0; i < rows; ++i)
        classes(i) = i % 5 == 0 ? -100 : static_cast<std::int64_t>((i * 3) % cols);

    using huber = nn::huber_loss<float, 2, D>;
    huber h(nn::reduction::mean, {.delta = 0.5});
    const float h_value = h(dev(x), dev(y));
    acc h_sum = 0;
    tensor<float, 2> h_grad = tensor<float, 2>::from_shape({rows, cols});
    for (std::size_t i = 0; i < x.size(); ++i)
    {
        float dx = 0;
        h_sum += huber::element(x.data()[i], y.data()[i], i, dx, {0.5f});
        h_grad.data()[i] = dx * (1.f / static_cast<float>(x.size()));
    }
    const float h_expected = static_cast<float>(h_sum / static_cast<acc>(x.size()));

    using ce_loss = nn::cross_entropy_loss<float, D>;
    ce_loss ce(nn::reduction::sum, {.label_smoothing = 0.1});
    const float ce_value = ce(dev(x), dev(classes));
    acc ce_sum = 0;
    for (std::size_t i = 0; i < rows; ++i)
        if (classes(i) != -100)
            ce_sum += ce_loss::row(x.data() + i * cols, cols, static_cast<std::size_t>(classes(i)),
                                   nullptr, nullptr, 1.f, {0.1});
    const float ce_expected = static_cast<float>(ce_sum);

    if constexpr (test::exact)
    {
        BOOST_TEST(h_value == h_expected);
        BOOST_TEST(host(h.backward()) == h_grad);
        BOOST_TEST(ce_value == ce_expected);
    }
    else
    {
        BOOST_TEST(h_value == h_expected, boost::test_tools::tolerance(1e-6f));
        BOOST_TEST(host(h.backward()) == h_grad, boost::test_tools::tolerance(1e-6f)
                                                     << boost::test_tools::per_element());
        BOOST_TEST(ce_value == ce_expected, boost::test_tools::tolerance(1e-6f));
    }
}

BOOST_AUTO_TEST_CASE(cross_entropy_with_every_target_ignored_is_nan_with_zero_gradient)
{
    // PyTorch: F.cross_entropy(x, tensor([-100, -100])) is nan, x.grad is zeros.
    nn::cross_entropy_loss<double, D> loss;
    const tensor<double, 2> x = {{1, 2, 3}, {0, -1, 4}};
    BOOST_TEST(std::isnan(loss(dev(x), dev(tensor<std::int64_t, 1>{-100, -100}))));
    BOOST_TEST(host(loss.backward()) == xt::zeros<double>({2, 3}));
    BOOST_TEST(host(loss.losses()) == xt::zeros<double>({2}));
}

BOOST_AUTO_TEST_CASE(bce_clamps_the_log_at_minus_100_like_pytorch)
{
    nn::bce_loss<double, 1, D> loss(nn::reduction::none);
    loss(dev(vec({0.0, 1.0, 1.0})), dev(vec({1.0, 0.0, 1.0})));
    BOOST_TEST(host(loss.losses()) == vec({100.0, 100.0, 0.0}));
}

BOOST_AUTO_TEST_CASE(bce_gradient_bounds_its_denominator_by_the_float_1e_12_as_pytorch)
{
    // PyTorch's BCE backward divides by max(x (1 - x), scalar_t(EPSILON)), EPSILON a float
    // 1e-12: in double, x = 0 with target 1 gives -1 / 9.99999996e-13, not -1e12.
    // torch.autograd.grad(F.binary_cross_entropy(x, y, reduction='sum'), x) in float64:
    nn::bce_loss<double, 1, D> loss(nn::reduction::sum);
    loss(dev(vec({0.0, 1.0, 0.5})), dev(vec({1.0, 0.0, 0.25})));
    const auto dx = host(loss.backward());
    BOOST_TEST(dx(0) == -1000000003995.8029, boost::test_tools::tolerance(1e-15));
    BOOST_TEST(dx(1) == 1000000003995.8029, boost::test_tools::tolerance(1e-15));
    BOOST_TEST(dx(2) == 1.0);
}

BOOST_AUTO_TEST_CASE(smooth_l1_with_beta_0_has_gradient_minus_1_where_input_equals_target)
{
    // PyTorch 1.13's smooth_l1_loss backward on the cpu: -1 where d <= -beta, 1 where d >= beta,
    // so with beta = 0 a zero difference takes -1 (l1_loss's gives 0). In float32 and float64:
    // torch.autograd.grad(F.smooth_l1_loss(x, y, beta=0.0, reduction='sum'), x) with
    // x = [1, 2, 3], y = [1, 1, 4] is [-1, 1, -1]; the loss is 2.
    nn::smooth_l1_loss<float, 1, D> loss(nn::reduction::sum, {.beta = 0.0});
    BOOST_TEST(loss(dev(tensor<float, 1>{1.f, 2.f, 3.f}), dev(tensor<float, 1>{1.f, 1.f, 4.f})) ==
               2.f);
    BOOST_TEST(host(loss.backward()) == (tensor<float, 1>{-1.f, 1.f, -1.f}));
    nn::smooth_l1_loss<double, 1, D> half(nn::reduction::sum, {.beta = 0.5});
    half(dev(vec({1.0, 1.5, 0.5, 1.0})), dev(vec({1.0, 1.0, 1.0, 1.25})));
    BOOST_TEST(host(half.backward()) == vec({0.0, 1.0, -1.0, -0.5}));
}

BOOST_AUTO_TEST_CASE(huber_and_smooth_l1_gradients_are_nan_where_the_difference_is_nan)
{
    // PyTorch 1.13: a NaN input gives these losses' backward NaN (l1_loss's gives 0).
    const double nan = std::numeric_limits<double>::quiet_NaN();
    nn::huber_loss<double, 1, D> huber(nn::reduction::sum);
    huber(dev(vec({nan, 3.0})), dev(vec({0.0, 0.0})));
    BOOST_TEST(std::isnan(host(huber.backward())(0)));
    BOOST_TEST(host(huber.backward())(1) == 1.0);
    for (double beta : {0.0, 1.0})
    {
        nn::smooth_l1_loss<double, 1, D> smooth(nn::reduction::sum, {.beta = beta});
        smooth(dev(vec({nan, -3.0})), dev(vec({0.0, 0.0})));
        BOOST_TEST(std::isnan(host(smooth.backward())(0)), "beta " << beta);
        BOOST_TEST(host(smooth.backward())(1) == -1.0);
    }
    nn::l1_loss<double, 1, D> l1(nn::reduction::sum);
    l1(dev(vec({nan})), dev(vec({0.0})));
    BOOST_TEST(host(l1.backward())(0) == 0.0);
}

BOOST_AUTO_TEST_CASE(bce_with_logits_stays_finite_where_sigmoid_saturates)
{
    nn::bce_with_logits_loss<float, 1, D> loss(nn::reduction::none);
    loss(dev(tensor<float, 1>{200.f, -200.f}), dev(tensor<float, 1>{0.f, 1.f}));
    const auto losses = host(loss.losses());
    BOOST_TEST(losses(0) == 200.f);
    BOOST_TEST(losses(1) == 200.f);
    BOOST_TEST(host(loss.backward()) == (tensor<float, 1>{1.f, -1.f}));
}

BOOST_AUTO_TEST_CASE(repeated_calls_with_one_shape_reuse_the_buffers)
{
    const auto x = dev(input_of<float>(gl::cross_entropy));
    const auto t = dev(classes_of(gl::cross_entropy));
    nn::cross_entropy_loss<float, D> ce(nn::reduction::none);
    ce(x, t);
    const float* grad = ce.backward().data();
    const float* losses = ce.losses().data();
    const float* weighted = ce.backward(ce.losses()).data();
    ce(x, t);
    BOOST_TEST(ce.backward().data() == grad);
    BOOST_TEST(ce.losses().data() == losses);
    BOOST_TEST(ce.backward(ce.losses()).data() == weighted);

    nn::mse_loss<float, 2, D> mse;
    const auto y = dev(input_of<float>(gl::mse));
    mse(y, y);
    const float* mse_grad = mse.backward().data();
    mse(y, y);
    BOOST_TEST(mse.backward().data() == mse_grad);
}

BOOST_AUTO_TEST_CASE(a_new_shape_resizes_the_buffers)
{
    nn::smooth_l1_loss<double, 1, D> loss(nn::reduction::none);
    loss(dev(vec({1, 2, 3, 4})), dev(vec({0, 0, 0, 0})));
    loss(dev(vec({0.25, -3})), dev(vec({0, 0})));
    BOOST_TEST(host(loss.losses()) == vec({0.03125, 2.5}));
    BOOST_TEST(host(loss.backward()) == vec({0.25, -1}));
    BOOST_TEST(host(loss.backward(dev(vec({2, 3})))) == vec({0.5, -3}));
}

BOOST_AUTO_TEST_CASE(mismatched_shapes_throw_shape_error_naming_both)
{
    nn::mse_loss<float, 2, D> mse;
    const auto a = test::dtensor<float, 2>::from_shape({4, 3});
    const auto b = test::dtensor<float, 2>::from_shape({4, 2});
    BOOST_CHECK_EXCEPTION(mse(a, b), shape_error,
                          [](const shape_error& e)
                          {
                              const std::string m = e.what();
                              return m.find("mse_loss") != std::string::npos &&
                                     m.find("[4, 3]") != std::string::npos &&
                                     m.find("[4, 2]") != std::string::npos;
                          });
    nn::cross_entropy_loss<float, D> ce;
    BOOST_CHECK_EXCEPTION(ce(a, dev(tensor<std::int64_t, 1>{0, 1, 2})), shape_error,
                          [](const shape_error& e)
                          {
                              const std::string m = e.what();
                              return m.find("[3]") != std::string::npos &&
                                     m.find("[4, 3]") != std::string::npos;
                          });
    nn::bce_with_logits_loss<float, 2, D> bce(nn::reduction::mean, {.pos_weight = {1.f, 2.f}});
    BOOST_CHECK_THROW(bce(a, a), shape_error);
}

BOOST_AUTO_TEST_CASE(weights_that_do_not_fit_the_classes_throw_shape_error_naming_both)
{
    // PyTorch: "weight tensor should be defined either for all 3 classes or no classes but got
    // weight tensor of shape: [2]".
    const auto x = test::dtensor<float, 2>::from_shape({4, 3});
    const auto t = dev(tensor<std::int64_t, 1>{0, 1, 2, 0});
    auto names = [](std::string option)
    {
        return [option](const shape_error& e)
        {
            const std::string m = e.what();
            return m.find(option + " of shape [2]") != std::string::npos &&
                   m.find("[4, 3]") != std::string::npos && m.find("[3]") != std::string::npos;
        };
    };
    nn::cross_entropy_loss<float, D> ce({.weight = {1.f, 2.f}});
    BOOST_CHECK_EXCEPTION(ce(x, t), shape_error, names("cross_entropy_loss: weight"));
    nn::nll_loss<float, D> nll({.weight = {1.f, 2.f}});
    BOOST_CHECK_EXCEPTION(nll(x, t), shape_error, names("nll_loss: weight"));
    // Four weights for three classes is as wrong as two.
    nn::nll_loss<float, D> four({.weight = {1.f, 2.f, 3.f, 4.f}});
    BOOST_CHECK_THROW(four(x, t), shape_error);
    const auto p =
        dev(tensor<float, 2>{{.5f, .5f, .5f}, {.5f, .5f, .5f}, {.5f, .5f, .5f}, {.5f, .5f, .5f}});
    nn::bce_loss<float, 2, D> bce({.weight = {1.f, 2.f}});
    BOOST_CHECK_EXCEPTION(bce(p, p), shape_error, names("bce_loss: weight"));
    nn::bce_with_logits_loss<float, 2, D> logits({.weight = {1.f, 2.f}});
    BOOST_CHECK_EXCEPTION(logits(p, p), shape_error, names("bce_with_logits_loss: weight"));
    // A loss that threw records nothing, and the same loss takes a fitting input afterwards.
    BOOST_CHECK_THROW(ce.backward(), error);
    const auto x2 = dev(tensor<float, 2>{{0, 1}, {1, 0}, {2, 2}, {0, 0}});
    BOOST_CHECK_NO_THROW(ce(x2, dev(tensor<std::int64_t, 1>{0, 1, 1, 0})));
}

BOOST_AUTO_TEST_CASE(class_index_out_of_range_throws_value_error_naming_it_and_its_position)
{
    const auto x = test::dtensor<float, 2>::from_shape({3, 4});
    for (std::int64_t bad : {4, -1, -100})
    {
        nn::cross_entropy_loss<float, D> ce({.ignore_index = 2});
        BOOST_CHECK_EXCEPTION(ce(x, dev(tensor<std::int64_t, 1>{0, bad, 3})), value_error,
                              [bad](const value_error& e)
                              {
                                  const std::string m = e.what();
                                  return m.find("target " + std::to_string(bad) +
                                                " at position 1") != std::string::npos;
                              });
    }
    nn::nll_loss<float, D> nll;
    BOOST_CHECK_THROW(nll(x, dev(tensor<std::int64_t, 1>{0, 1, 7})), value_error);
    BOOST_CHECK_NO_THROW(nll(x, dev(tensor<std::int64_t, 1>{0, -100, 3})));
}

BOOST_AUTO_TEST_CASE(the_first_bad_target_or_probability_of_a_large_batch_is_named)
{
    // The checks run on the device and cannot throw there; the message still names the first
    // bad element, however many there are and wherever they are.
    const std::size_t rows = 1000;
    auto classes = tensor<std::int64_t, 1>::from_shape({rows});
    for (std::size_t i = 0; i < rows; ++i)
        classes(i) = static_cast<std::int64_t>(i % 3);
    classes(637) = 9;
    classes(901) = -5;
    classes(999) = 3;
    nn::nll_loss<float, D> nll;
    BOOST_CHECK_EXCEPTION(
        nll(dev(tensor<float, 2>::from_shape({rows, 3})), dev(classes)), value_error,
        [](const value_error& e)
        { return std::string(e.what()).find("target 9 at position 637") != std::string::npos; });

    tensor<float, 1> p = xt::ones<float>({rows}) * 0.5f;
    tensor<float, 1> t = xt::zeros<float>({rows});
    t(420) = 2.f;
    p(777) = -0.5f;
    nn::bce_loss<float, 1, D> bce;
    BOOST_CHECK_EXCEPTION(bce(dev(p), dev(t)), value_error,
                          [](const value_error& e) {
                              return std::string(e.what()).find(
                                         "target 2.000000 at position 420") != std::string::npos;
                          });
    t(420) = 1.f;
    BOOST_CHECK_EXCEPTION(bce(dev(p), dev(t)), value_error,
                          [](const value_error& e) {
                              return std::string(e.what()).find(
                                         "input -0.500000 at position 777") != std::string::npos;
                          });
}

BOOST_AUTO_TEST_CASE(a_forward_that_throws_leaves_nothing_for_backward)
{
    const auto x = dev(input_of<float>(gl::cross_entropy));
    nn::cross_entropy_loss<float, D> ce;
    ce(x, dev(classes_of(gl::cross_entropy)));
    BOOST_REQUIRE_NO_THROW(ce.backward());
    auto bad = classes_of(gl::cross_entropy);
    bad(0) = 1000;
    BOOST_CHECK_THROW(ce(x, dev(bad)), value_error);
    BOOST_CHECK_THROW(ce.backward(), error);
}

BOOST_AUTO_TEST_CASE(backward_without_a_recorded_forward_throws)
{
    nn::huber_loss<float, 2, D> huber;
    BOOST_CHECK_EXCEPTION(huber.backward(), error,
                          [](const error& e)
                          {
                              return std::string(e.what()).find(
                                         "huber_loss: backward() called without a forward()") !=
                                     std::string::npos;
                          });
    const auto x = dev(input_of<float>(gl::mse));
    {
        no_grad guard;
        huber(x, x); // computes the loss, records nothing
    }
    BOOST_CHECK_THROW(huber.backward(), error);
    huber(x, x);
    BOOST_CHECK_NO_THROW(huber.backward());
    nn::nll_loss<float, D> nll(nn::reduction::none);
    BOOST_CHECK_THROW(nll.backward(dev(tensor<float, 1>{1.f})), error);
}

BOOST_AUTO_TEST_CASE(backward_with_grad_output_needs_reduction_none_and_the_losses_shape)
{
    const auto x = dev(input_of<double>(gl::mse));
    nn::l1_loss<double, 2, D> mean_loss;
    mean_loss(x, x);
    BOOST_CHECK_THROW(mean_loss.backward(x), error);
    nn::l1_loss<double, 2, D> none_loss(nn::reduction::none);
    none_loss(x, x);
    BOOST_CHECK_THROW(none_loss.backward(test::dtensor<double, 2>::from_shape({3, 4})),
                      shape_error);
}

BOOST_AUTO_TEST_CASE(an_ignored_samples_row_stays_zero_whatever_its_upstream_gradient)
{
    // PyTorch never writes an ignored target's row: an infinite or NaN upstream gradient there
    // leaves it 0, where upstream * 0 would be NaN (torch 1.13, smoothed or not, and nll).
    const double inf = std::numeric_limits<double>::infinity();
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const auto x = dev(tensor<double, 2>{{.1, .2, .3}, {1., 2., 3.}});
    for (double smoothing : {0.0, 0.1})
    {
        nn::cross_entropy_loss<double, D> ce(nn::reduction::none, {.label_smoothing = smoothing});
        ce(x, dev(tensor<std::int64_t, 1>{-100, 1}));
        const auto local = host(ce.backward());
        const auto g = host(ce.backward(dev(tensor<double, 1>{inf, 2.0})));
        for (std::size_t c = 0; c < 3; ++c)
        {
            BOOST_TEST(g(0, c) == 0.0, smoothing << " class " << c);
            BOOST_TEST(g(1, c) == 2.0 * local(1, c), smoothing << " class " << c);
        }
    }
    nn::nll_loss<double, D> nll(nn::reduction::none);
    nll(x, dev(tensor<std::int64_t, 1>{2, -100}));
    const auto g = host(nll.backward(dev(tensor<double, 1>{-3.0, nan})));
    BOOST_TEST((g(0, 0) == 0 && g(0, 1) == 0 && g(0, 2) == 3.0));
    BOOST_TEST((g(1, 0) == 0 && g(1, 1) == 0 && g(1, 2) == 0));
}

BOOST_AUTO_TEST_CASE(invalid_options_and_inputs_throw_value_error)
{
    BOOST_CHECK_THROW((nn::huber_loss<float, 2, D>({.delta = 0.0})), value_error);
    BOOST_CHECK_THROW((nn::smooth_l1_loss<float, 2, D>({.beta = -1.0})), value_error);
    BOOST_CHECK_THROW((nn::cross_entropy_loss<float, D>({.label_smoothing = 1.5})), value_error);
    nn::bce_loss<float, 1, D> bce;
    BOOST_CHECK_THROW(bce(dev(tensor<float, 1>{0.5f, 1.5f}), dev(tensor<float, 1>{0.f, 1.f})),
                      value_error);
    BOOST_CHECK_THROW(bce(dev(tensor<float, 1>{0.5f, 0.5f}), dev(tensor<float, 1>{0.f, -1.f})),
                      value_error);
}

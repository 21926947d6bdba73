// The built-in layers: PyTorch parity (tests/golden/layers.hpp, written by
// scripts/golden_layers.py), gradients by gradcheck, train/eval, no_grad, and the ways users
// get shapes and arguments wrong.
#include <ember/core/generator.hpp>
#include <ember/core/grad_mode.hpp>
#include <ember/nn/gradcheck.hpp>
#include <ember/nn/layers.hpp>

#include "golden/layers.hpp"

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

using namespace ember;
namespace gl = golden::layers;

namespace
{

template <class T, std::size_t K, std::size_t N>
tensor<T, N> make(const T (&data)[K], const std::size_t (&shape)[N])
{
    std::array<std::size_t, N> s{};
    std::copy(std::begin(shape), std::end(shape), s.begin());
    tensor<T, N> t(s);
    BOOST_REQUIRE_EQUAL(t.size(), K);
    std::copy(std::begin(data), std::end(data), t.data());
    return t;
}
#define GOLDEN(name) make(gl::name, gl::name##_shape)

// Largest |actual - expected| / max(1, |expected|) over all elements.
template <class A, class T, std::size_t K>
double worst_error(const A& actual, const T (&expected)[K])
{
    BOOST_REQUIRE_EQUAL(actual.size(), K);
    double worst = 0;
    for (std::size_t i = 0; i < K; ++i)
    {
        const double e = static_cast<double>(expected[i]);
        const double err =
            std::abs(static_cast<double>(actual.data()[i]) - e) / std::max(1.0, std::abs(e));
        if (!(err <= worst)) // NaN counts as the worst
            worst = std::isnan(err) ? std::numeric_limits<double>::infinity() : err;
    }
    return worst;
}

template <class A, class T, std::size_t K, std::size_t N>
void check_close(const A& actual, const T (&expected)[K], const std::size_t (&shape)[N], double tol,
                 const char* what)
{
    BOOST_TEST_CONTEXT(what)
    {
        BOOST_TEST(std::vector<std::size_t>(actual.shape().begin(), actual.shape().end()) ==
                       std::vector<std::size_t>(std::begin(shape), std::end(shape)),
                   boost::test_tools::per_element());
        BOOST_TEST(worst_error(actual, expected) <= tol);
    }
}
#define CHECK_GOLDEN(actual, name, tol) check_close(actual, gl::name, gl::name##_shape, tol, #name)

template <class T>
tensor<T, 1> span_tensor(std::span<T> s)
{
    tensor<T, 1> t = tensor<T, 1>::from_shape({s.size()});
    std::copy(s.begin(), s.end(), t.data());
    return t;
}

// Runs f and returns the message of the E it throws (fails the test if it throws nothing).
template <class E, class F>
std::string message_of(F&& f)
{
    try
    {
        f();
    }
    catch (const E& e)
    {
        return e.what();
    }
    BOOST_FAIL("expected an exception");
    return {};
}

bool contains(const std::string& s, std::string_view part)
{
    return s.find(part) != std::string::npos;
}

// An input whose elements stay away from 0, where relu's derivative jumps.
tensor<double, 2> away_from_zero(std::size_t rows, std::size_t cols, std::uint64_t seed)
{
    generator g(seed);
    tensor<double, 2> x = randn<double>({rows, cols}, g);
    for (auto& v : x)
        v += v < 0 ? -0.1 : 0.1;
    return x;
}

} // namespace

/* ------------------------------------------------------------------ linear */

BOOST_AUTO_TEST_CASE(linear_init_equals_torch_exactly_after_manual_seed_42)
{
    manual_seed(42);
    nn::linear a(4, 3);
    nn::linear b(5, 2, false);
    nn::linear c(3, 2);
    CHECK_GOLDEN(a.weight.value, linear_seed42_a_weight, 0.0);
    CHECK_GOLDEN(a.bias.value, linear_seed42_a_bias, 0.0);
    CHECK_GOLDEN(b.weight.value, linear_seed42_b_weight, 0.0);
    CHECK_GOLDEN(c.weight.value, linear_seed42_c_weight, 0.0);
    CHECK_GOLDEN(c.bias.value, linear_seed42_c_bias, 0.0);
}

BOOST_AUTO_TEST_CASE(linear_double_init_equals_torch_float64_exactly)
{
    manual_seed(7);
    nn::linear<double> d(6, 4);
    CHECK_GOLDEN(d.weight.value, linear_seed7_double_weight, 0.0);
    CHECK_GOLDEN(d.bias.value, linear_seed7_double_bias, 0.0);
}

BOOST_AUTO_TEST_CASE(linear_draws_from_the_generator_it_is_given)
{
    generator g(42);
    manual_seed(1);
    nn::linear a(4, 3, true, g);
    CHECK_GOLDEN(a.weight.value, linear_seed42_a_weight, 0.0);
}

BOOST_AUTO_TEST_CASE(linear_forward_matches_torch)
{
    nn::linear<double> d(6, 4);
    d.weight.value = GOLDEN(linear_seed7_double_weight);
    d.bias.value = GOLDEN(linear_seed7_double_bias);
    CHECK_GOLDEN(d(GOLDEN(input_4x6)), linear_seed7_double_forward, 1e-14);

    manual_seed(42);
    nn::linear a(4, 3);
    CHECK_GOLDEN(a(GOLDEN(input_5x4_float)), linear_seed42_a_forward, 1e-6);
}

BOOST_AUTO_TEST_CASE(linear_without_bias_has_only_a_weight)
{
    nn::linear<double> m(3, 2, false);
    BOOST_TEST(!m.has_bias());
    BOOST_TEST(m.state_dict().keys() == std::vector<std::string>{"weight"});
    BOOST_TEST(m.parameters().size() == 1u);
    tensor<double, 2> x = {{1., 2., 3.}};
    tensor<double, 2> expected = {{0., 0.}};
    for (std::size_t j = 0; j < 2; ++j)
        for (std::size_t k = 0; k < 3; ++k)
            expected(0, j) += m.weight.value(j, k) * x(0, k);
    const auto& y = m(x);
    BOOST_TEST(std::abs(y(0, 0) - expected(0, 0)) < 1e-15);
    BOOST_TEST(std::abs(y(0, 1) - expected(0, 1)) < 1e-15);
}

BOOST_AUTO_TEST_CASE(linear_wrong_input_width_names_both_shapes)
{
    nn::linear m(4, 2);
    tensor<float, 2> x = tensor<float, 2>::from_shape({3, 5});
    BOOST_TEST(message_of<shape_error>([&] { m(x); }) ==
               "linear: input of shape [3, 5], expected [N, 4]");
}

BOOST_AUTO_TEST_CASE(linear_backward_rejects_a_gradient_of_the_wrong_shape)
{
    nn::linear m(4, 2);
    m(tensor<float, 2>::from_shape({3, 4}));
    tensor<float, 2> dy = tensor<float, 2>::from_shape({3, 3});
    std::string msg = message_of<shape_error>([&] { m.backward(dy); });
    BOOST_TEST(contains(msg, "linear"));
    BOOST_TEST(contains(msg, "[3, 2]"));
    BOOST_TEST(contains(msg, "[3, 3]"));
}

BOOST_AUTO_TEST_CASE(linear_backward_accumulates_into_grads)
{
    nn::linear<double> m(3, 2);
    tensor<double, 2> x = {{1., -2., 0.5}, {0.3, 0.7, -1.}};
    tensor<double, 2> dy = {{1., 2.}, {-0.5, 0.25}};
    m(x);
    m.backward(dy);
    tensor<double, 2> w1 = m.weight.grad;
    tensor<double, 1> b1 = m.bias.grad;
    m.backward(dy);
    for (std::size_t i = 0; i < w1.size(); ++i)
        BOOST_TEST(m.weight.grad.data()[i] == 2 * w1.data()[i]);
    BOOST_TEST(b1(0) == 0.5);
    BOOST_TEST(b1(1) == 2.25);
    BOOST_TEST(m.bias.grad(1) == 4.5);
}

BOOST_AUTO_TEST_CASE(linear_frozen_parameters_get_no_gradient)
{
    nn::linear<double> m(3, 2);
    m.weight.requires_grad = false;
    tensor<double, 2> x = {{1., -2., 0.5}};
    m(x);
    const auto& dx = m.backward(tensor<double, 2>{{1., 1.}});
    BOOST_TEST(
        std::all_of(m.weight.grad.begin(), m.weight.grad.end(), [](double g) { return g == 0; }));
    BOOST_TEST(m.bias.grad(0) == 1.);
    BOOST_TEST(dx(0, 0) == m.weight.value(0, 0) + m.weight.value(1, 0));
}

BOOST_AUTO_TEST_CASE(linear_with_no_inputs_outputs_its_bias)
{
    manual_seed(0);
    nn::linear<double> m(0, 3);
    BOOST_TEST(m.weight.value.size() == 0u);
    for (std::size_t j = 0; j < 3; ++j)
        m.bias.value(j) = static_cast<double>(j) + 1;
    tensor<double, 2> x = tensor<double, 2>::from_shape({2, 0});
    const auto& y = m(x);
    BOOST_TEST(y.shape()[0] == 2u);
    BOOST_TEST(y(1, 2) == 3.);
    const auto& dx = m.backward(tensor<double, 2>{{1., 1., 1.}, {1., 1., 1.}});
    BOOST_TEST(dx.size() == 0u);
    BOOST_TEST(m.bias.grad(0) == 2.);
}

BOOST_AUTO_TEST_CASE(linear_reuses_its_buffers_when_the_shape_repeats)
{
    nn::linear m(4, 3);
    tensor<float, 2> x = tensor<float, 2>::from_shape({5, 4});
    x.fill(1.f);
    const auto& y1 = m(x);
    const float* data = y1.data();
    tensor<float, 2> dy = tensor<float, 2>::from_shape({5, 3});
    dy.fill(1.f);
    const float* dx_data = m.backward(dy).data();
    const auto& y2 = m(x);
    BOOST_TEST(&y1 == &y2);
    BOOST_TEST(y2.data() == data);
    BOOST_TEST(m.backward(dy).data() == dx_data);
}

BOOST_AUTO_TEST_CASE(linear_passes_gradcheck)
{
    manual_seed(3);
    nn::linear<double> m(5, 4);
    auto r = nn::gradcheck(m, randn<double>({3, 5}));
    BOOST_TEST(r.ok, r.message);
    nn::linear<double> nb(5, 2, false);
    auto r2 = nn::gradcheck(nb, randn<double>({4, 5}));
    BOOST_TEST(r2.ok, r2.message);
}

/* ------------------------------------------------------------------ activations */

BOOST_AUTO_TEST_CASE(activations_match_torch)
{
    const auto x = GOLDEN(input_4x6);
    nn::relu<double> relu;
    nn::leaky_relu<double> leaky;
    nn::leaky_relu<double> leaky02(0.2);
    nn::sigmoid<double> sigmoid;
    nn::tanh<double> tanh;
    nn::gelu<double> gelu;
    nn::gelu<double> gelu_tanh("tanh");
    nn::softmax<double> softmax;
    nn::log_softmax<double> log_softmax;
    BOOST_TEST(leaky.negative_slope() == 0.01);
    BOOST_TEST((gelu_tanh.approximate() == nn::gelu_approximation::tanh));
    CHECK_GOLDEN(relu(x), relu_forward, 0.0);
    CHECK_GOLDEN(leaky(x), leaky_relu_forward, 1e-15);
    CHECK_GOLDEN(leaky02(x), leaky_relu_slope_0_2_forward, 1e-15);
    CHECK_GOLDEN(sigmoid(x), sigmoid_forward, 1e-15);
    CHECK_GOLDEN(tanh(x), tanh_forward, 1e-15);
    CHECK_GOLDEN(gelu(x), gelu_forward, 1e-15);
    CHECK_GOLDEN(gelu_tanh(x), gelu_tanh_forward, 1e-15);
    CHECK_GOLDEN(softmax(x), softmax_forward, 1e-15);
    CHECK_GOLDEN(log_softmax(x), log_softmax_forward, 1e-15);
}

BOOST_AUTO_TEST_CASE(softmax_and_log_softmax_are_stable_for_large_logits)
{
    const auto big = GOLDEN(input_big_4x6);
    nn::softmax<double> softmax;
    nn::log_softmax<double> log_softmax;
    CHECK_GOLDEN(softmax(big), softmax_big_forward, 1e-15);
    CHECK_GOLDEN(log_softmax(big), log_softmax_big_forward, 1e-15);
}

BOOST_AUTO_TEST_CASE(softmax_works_on_the_last_axis_of_any_rank)
{
    nn::softmax<double, 3> softmax;
    CHECK_GOLDEN(softmax(GOLDEN(input_2x3x5)), softmax_rank3_forward, 1e-15);
}

BOOST_AUTO_TEST_CASE(gelu_rejects_an_unknown_approximation)
{
    std::string msg = message_of<value_error>([] { nn::gelu<> g("fast"); });
    BOOST_TEST(contains(msg, "\"fast\""));
    BOOST_TEST(contains(msg, "tanh"));
}

BOOST_AUTO_TEST_CASE(activations_pass_gradcheck)
{
    const auto x = away_from_zero(3, 5, 11);
    nn::relu<double> relu;
    nn::leaky_relu<double> leaky(0.1);
    nn::sigmoid<double> sigmoid;
    nn::tanh<double> tanh;
    nn::gelu<double> gelu;
    nn::gelu<double> gelu_tanh(nn::gelu_approximation::tanh);
    nn::softmax<double> softmax;
    nn::log_softmax<double> log_softmax;
    BOOST_TEST(nn::gradcheck(relu, x).ok);
    BOOST_TEST(nn::gradcheck(leaky, x).ok);
    BOOST_TEST(nn::gradcheck(sigmoid, x).ok);
    BOOST_TEST(nn::gradcheck(tanh, x).ok);
    BOOST_TEST(nn::gradcheck(gelu, x).ok);
    BOOST_TEST(nn::gradcheck(gelu_tanh, x).ok);
    BOOST_TEST(nn::gradcheck(softmax, x).ok);
    BOOST_TEST(nn::gradcheck(log_softmax, x).ok);
}

BOOST_AUTO_TEST_CASE(elementwise_activations_work_on_any_rank)
{
    generator g(5);
    tensor<double, 3> x = randn<double>({2, 3, 4}, g);
    nn::gelu<double, 3> gelu;
    nn::leaky_relu<double, 3> leaky;
    nn::log_softmax<double, 3> log_softmax;
    BOOST_TEST(nn::gradcheck(gelu, x).ok);
    BOOST_TEST(nn::gradcheck(leaky, x).ok);
    BOOST_TEST(nn::gradcheck(log_softmax, x).ok);
}

BOOST_AUTO_TEST_CASE(activation_backward_rejects_a_gradient_of_the_wrong_shape)
{
    nn::sigmoid<> s;
    s(tensor<float, 2>::from_shape({2, 3}));
    std::string msg = message_of<shape_error>(
        [&] {
            s.backward(tensor<float, 2>::from_shape({3, 2}));
        });
    BOOST_TEST(contains(msg, "sigmoid"));
}

/* ------------------------------------------------------------------ dropout */

BOOST_AUTO_TEST_CASE(dropout_drops_what_torch_drops_after_the_same_seed)
{
    nn::dropout<float> d(0.3);
    const auto x = GOLDEN(input_8x16_float);
    manual_seed(3);
    CHECK_GOLDEN(d(x), dropout_p03_seed3_forward, 0.0);
    // Same number of draws as PyTorch: the generator continues in step.
    BOOST_TEST(default_generator().uniform<double>(0.0, 1.0) == gl::dropout_p03_seed3_next_rand[0]);
}

BOOST_AUTO_TEST_CASE(dropout_is_the_identity_in_eval)
{
    nn::dropout<double> d(0.5);
    d.eval();
    tensor<double, 2> x = {{1., 2.}, {3., 4.}};
    const generator_state before = default_generator().state();
    BOOST_TEST((d(x) == x));
    BOOST_TEST((default_generator().state() == before));
    tensor<double, 2> dy = {{5., 6.}, {7., 8.}};
    BOOST_TEST((d.backward(dy) == dy));
}

BOOST_AUTO_TEST_CASE(dropout_rejects_p_outside_zero_one)
{
    BOOST_CHECK_THROW(nn::dropout<>(-0.1), value_error);
    BOOST_CHECK_THROW(nn::dropout<>(1.5), value_error);
    BOOST_CHECK_THROW(nn::dropout<>(std::nan("")), value_error);
    std::string msg = message_of<value_error>([] { nn::dropout<> d(2.0); });
    BOOST_TEST(contains(msg, "between 0 and 1"));
    BOOST_CHECK_NO_THROW(nn::dropout<>(0.0));
    BOOST_CHECK_NO_THROW(nn::dropout<>(1.0));
}

BOOST_AUTO_TEST_CASE(dropout_p1_zeroes_everything_and_p0_keeps_everything_without_drawing)
{
    tensor<double, 2> x = {{1., -2.}, {3., 4.}};
    const generator_state before = default_generator().state();
    nn::dropout<double> all(1.0);
    const auto& y = all(x);
    BOOST_TEST(std::all_of(y.begin(), y.end(), [](double v) { return v == 0; }));
    const auto& dx = all.backward(tensor<double, 2>{{1., 1.}, {1., 1.}});
    BOOST_TEST(std::all_of(dx.begin(), dx.end(), [](double v) { return v == 0; }));
    nn::dropout<double> none(0.0);
    BOOST_TEST((none(x) == x));
    BOOST_TEST((default_generator().state() == before));
}

BOOST_AUTO_TEST_CASE(dropout_scales_survivors_and_backward_uses_the_same_mask)
{
    manual_seed(9);
    nn::dropout<double> d(0.25);
    tensor<double, 2> x = tensor<double, 2>::from_shape({20, 50});
    x.fill(1.0);
    const auto& y = d(x);
    std::size_t zeros = 0;
    for (double v : y)
    {
        BOOST_TEST((v == 0.0 || v == 1.0 / 0.75));
        zeros += v == 0.0;
    }
    // 1000 draws with p = 0.25: far outside 150..350 would mean a wrong probability.
    BOOST_TEST(zeros > 150u);
    BOOST_TEST(zeros < 350u);
    tensor<double, 2> y_copy = y;
    const auto& dx = d.backward(x);
    BOOST_TEST((dx == y_copy));
}

BOOST_AUTO_TEST_CASE(dropout_passes_gradcheck_in_training)
{
    nn::dropout<double> d(0.4);
    BOOST_TEST(d.is_training());
    auto r = nn::gradcheck(d, away_from_zero(4, 6, 2));
    BOOST_TEST(r.ok, r.message);
}

/* ------------------------------------------------------------------ batch_norm1d */

BOOST_AUTO_TEST_CASE(batch_norm_running_stats_match_torch_after_three_steps)
{
    const tensor<double, 2> batches[] = {GOLDEN(bn_batch0), GOLDEN(bn_batch1), GOLDEN(bn_batch2)};
    const auto eval_input = GOLDEN(bn_eval_input);

    nn::batch_norm1d<double> bn(6);
    tensor<double, 2> last;
    for (const auto& b : batches)
        last = bn(b);
    CHECK_GOLDEN(last, bn_double_last_train_forward, 1e-14);
    CHECK_GOLDEN(bn.running_mean.value, bn_double_running_mean, 1e-15);
    CHECK_GOLDEN(bn.running_var.value, bn_double_running_var, 1e-14);
    BOOST_TEST(bn.num_batches_tracked.value() == gl::bn_double_num_batches_tracked);
    bn.eval();
    CHECK_GOLDEN(bn(eval_input), bn_double_eval_forward, 1e-14);

    nn::batch_norm1d<double> cumulative(6, 1e-5, std::nullopt);
    for (const auto& b : batches)
        last = cumulative(b);
    CHECK_GOLDEN(last, bn_double_cumulative_last_train_forward, 1e-14);
    CHECK_GOLDEN(cumulative.running_mean.value, bn_double_cumulative_running_mean, 1e-15);
    CHECK_GOLDEN(cumulative.running_var.value, bn_double_cumulative_running_var, 1e-14);
    cumulative.eval();
    CHECK_GOLDEN(cumulative(eval_input), bn_double_cumulative_eval_forward, 1e-14);
}

BOOST_AUTO_TEST_CASE(batch_norm_float_running_stats_match_torch_float32)
{
    nn::batch_norm1d<float> bn(6);
    tensor<float, 2> last;
    for (const auto& b : {GOLDEN(bn_batch0), GOLDEN(bn_batch1), GOLDEN(bn_batch2)})
        last = bn(xt::cast<float>(b));
    CHECK_GOLDEN(last, bn_float_last_train_forward, 1e-6);
    CHECK_GOLDEN(bn.running_mean.value, bn_float_running_mean, 1e-6);
    CHECK_GOLDEN(bn.running_var.value, bn_float_running_var, 1e-6);
    bn.eval();
    tensor<float, 2> eval_input = xt::cast<float>(GOLDEN(bn_eval_input));
    CHECK_GOLDEN(bn(eval_input), bn_float_eval_forward, 1e-6);
}

BOOST_AUTO_TEST_CASE(batch_norm_rejects_a_single_sample_in_training_but_not_in_eval)
{
    nn::batch_norm1d<float> bn(3);
    tensor<float, 2> one = {{1.f, 2.f, 3.f}};
    std::string msg = message_of<value_error>([&] { bn(one); });
    BOOST_TEST(contains(msg, "expected more than 1 value per channel when training"));
    BOOST_TEST(contains(msg, "[1, 3]"));
    BOOST_TEST(bn.num_batches_tracked.value() == 0);
    bn.eval();
    BOOST_CHECK_NO_THROW(bn(one));
}

BOOST_AUTO_TEST_CASE(batch_norm_wrong_channel_count_names_both_shapes)
{
    nn::batch_norm1d<float> bn(4);
    BOOST_TEST(message_of<shape_error>(
                   [&] {
                       bn(tensor<float, 2>::from_shape({3, 5}));
                   }) == "batch_norm1d: input of shape [3, 5], expected [N, 4]");
}

BOOST_AUTO_TEST_CASE(batch_norm_state_dict_has_torch_keys_and_a_0d_int64_counter)
{
    nn::batch_norm1d<float> bn(4);
    auto sd = bn.state_dict();
    BOOST_TEST(sd.keys() == (std::vector<std::string>{"weight", "bias", "running_mean",
                                                      "running_var", "num_batches_tracked"}));
    BOOST_TEST(sd.at("num_batches_tracked").dim() == 0u);
    BOOST_TEST((sd.at("num_batches_tracked").dtype() == dtype::int64));
    BOOST_TEST(sd.at("running_var").data<float>()[0] == 1.f);
    BOOST_TEST(bn.parameters().size() == 2u);

    nn::batch_norm1d<float> plain(4, 1e-5, 0.1, false, false);
    BOOST_TEST(plain.state_dict().keys().empty());
    BOOST_TEST(plain.parameters().empty());
}

BOOST_AUTO_TEST_CASE(batch_norm_without_running_stats_uses_batch_stats_in_eval)
{
    nn::batch_norm1d<double> bn(2, 1e-5, 0.1, true, false);
    bn.eval();
    tensor<double, 2> x = {{1., 10.}, {3., 30.}};
    const auto& y = bn(x);
    BOOST_TEST(std::abs(y(0, 0) + 1.0) < 1e-5);
    BOOST_TEST(std::abs(y(1, 1) - 1.0) < 1e-5);
}

BOOST_AUTO_TEST_CASE(batch_norm_passes_gradcheck_in_training_and_eval)
{
    nn::batch_norm1d<double> bn(3);
    bn.weight.value = tensor<double, 1>{1.5, -0.5, 2.0};
    bn.bias.value = tensor<double, 1>{0.1, 0.2, -0.3};
    generator g(4);
    tensor<double, 2> x = randn<double>({5, 3}, g);
    auto r = nn::gradcheck(bn, x);
    BOOST_TEST(r.ok, r.message);

    bn.running_mean.value = tensor<double, 1>{0.3, -0.2, 1.0};
    bn.running_var.value = tensor<double, 1>{0.5, 2.0, 1.5};
    bn.eval();
    auto r2 = nn::gradcheck(bn, x);
    BOOST_TEST(r2.ok, r2.message);

    nn::batch_norm1d<double> plain(3, 1e-5, 0.1, false);
    auto r3 = nn::gradcheck(plain, x);
    BOOST_TEST(r3.ok, r3.message);
}

/* ------------------------------------------------------------------ flatten, identity */

BOOST_AUTO_TEST_CASE(flatten_keeps_the_batch_axis_and_backward_restores_the_shape)
{
    nn::flatten<double, 3> f;
    const auto x = GOLDEN(input_2x3x5);
    CHECK_GOLDEN(f(x), flatten_rank3_forward, 0.0);
    tensor<double, 2> dy = f(x);
    const auto& dx = f.backward(dy);
    BOOST_TEST((dx == x));
    BOOST_TEST(nn::gradcheck(f, x).ok);
}

BOOST_AUTO_TEST_CASE(identity_passes_values_and_gradients_through)
{
    nn::identity<double> id;
    tensor<double, 2> x = {{1., 2.}};
    const auto& y = id(x);
    BOOST_TEST((y == x));
    BOOST_TEST(&y != &x);
    BOOST_TEST(nn::gradcheck(id, away_from_zero(2, 3, 1)).ok);
}

/* ------------------------------------------------------------------ sequential */

BOOST_AUTO_TEST_CASE(sequential_is_deduced_from_its_modules)
{
    manual_seed(0);
    nn::sequential model{nn::linear(784, 256), nn::relu(), nn::linear(256, 10)};
    static_assert(
        std::is_same_v<decltype(model), nn::sequential<nn::linear<>, nn::relu<>, nn::linear<>>>);
    static_assert(std::is_same_v<decltype(model)::value_type, float>);
    static_assert(decltype(model)::size() == 3);
    BOOST_TEST(model.get<2>().out_features() == 10u);
    tensor<float, 2> x = tensor<float, 2>::from_shape({3, 784});
    x.fill(0.5f);
    const auto& y = model(x);
    BOOST_TEST(y.shape()[0] == 3u);
    BOOST_TEST(y.shape()[1] == 10u);
    BOOST_TEST(&y == &model.get<2>()(model.get<1>()(model.get<0>()(x))));
    BOOST_TEST(model.num_parameters() == 784u * 256 + 256 + 256 * 10 + 10);
}

BOOST_AUTO_TEST_CASE(sequential_mlp_matches_torch_autograd)
{
    manual_seed(0);
    nn::sequential mlp{nn::linear<double>(5, 8), nn::batch_norm1d<double>(8),
                       nn::gelu<double>(),       nn::linear<double>(8, 6),
                       nn::tanh<double>(),       nn::linear<double>(6, 3),
                       nn::log_softmax<double>()};
    CHECK_GOLDEN(mlp.get<0>().weight.value, mlp_init_0_weight, 0.0);
    CHECK_GOLDEN(mlp.get<0>().bias.value, mlp_init_0_bias, 0.0);
    CHECK_GOLDEN(mlp.get<3>().weight.value, mlp_init_3_weight, 0.0);
    CHECK_GOLDEN(mlp.get<3>().bias.value, mlp_init_3_bias, 0.0);
    CHECK_GOLDEN(mlp.get<5>().weight.value, mlp_init_5_weight, 0.0);
    CHECK_GOLDEN(mlp.get<5>().bias.value, mlp_init_5_bias, 0.0);

    const auto x = GOLDEN(mlp_input);
    CHECK_GOLDEN(mlp(x), mlp_output, 1e-10);
    CHECK_GOLDEN(mlp.backward(GOLDEN(mlp_upstream)), mlp_input_grad, 1e-10);
    auto grads = mlp.named_parameters();
    BOOST_TEST_REQUIRE(grads.size() == 8u);
    BOOST_TEST(grads[0].first == "0.weight");
    BOOST_TEST(grads[2].first == "1.weight");
    BOOST_TEST(grads[7].first == "5.bias");
    BOOST_TEST(worst_error(span_tensor(grads[0].second.grad()), gl::mlp_grad_0_weight) <= 1e-10);
    BOOST_TEST(worst_error(span_tensor(grads[1].second.grad()), gl::mlp_grad_0_bias) <= 1e-10);
    BOOST_TEST(worst_error(span_tensor(grads[2].second.grad()), gl::mlp_grad_1_weight) <= 1e-10);
    BOOST_TEST(worst_error(span_tensor(grads[3].second.grad()), gl::mlp_grad_1_bias) <= 1e-10);
    BOOST_TEST(worst_error(span_tensor(grads[4].second.grad()), gl::mlp_grad_3_weight) <= 1e-10);
    BOOST_TEST(worst_error(span_tensor(grads[5].second.grad()), gl::mlp_grad_3_bias) <= 1e-10);
    BOOST_TEST(worst_error(span_tensor(grads[6].second.grad()), gl::mlp_grad_5_weight) <= 1e-10);
    BOOST_TEST(worst_error(span_tensor(grads[7].second.grad()), gl::mlp_grad_5_bias) <= 1e-10);
    CHECK_GOLDEN(mlp.get<1>().running_mean.value, mlp_running_mean, 1e-14);
    CHECK_GOLDEN(mlp.get<1>().running_var.value, mlp_running_var, 1e-14);

    mlp.eval();
    no_grad guard;
    CHECK_GOLDEN(mlp(x), mlp_eval_output, 1e-10);
}

BOOST_AUTO_TEST_CASE(sequential_state_dict_keys_match_torch)
{
    nn::sequential seq{nn::linear(3, 4), nn::batch_norm1d(4)};
    auto sd = seq.state_dict();
    BOOST_TEST(sd.keys() == std::vector<std::string>(std::begin(gl::linear_bn_state_dict_keys),
                                                     std::end(gl::linear_bn_state_dict_keys)),
               boost::test_tools::per_element());
    BOOST_TEST(sd.at("1.num_batches_tracked").dim() == gl::linear_bn_num_batches_tracked_dim);
    BOOST_TEST((sd.at("1.num_batches_tracked").dtype() == dtype::int64));
    BOOST_TEST(seq.parameters().size() == 4u);

    nn::sequential copy{nn::linear(3, 4), nn::batch_norm1d(4)};
    copy.load_state_dict(sd);
    BOOST_TEST((copy.get<0>().weight.value == seq.get<0>().weight.value));
}

BOOST_AUTO_TEST_CASE(sequential_names_past_nine_have_two_digits)
{
    nn::sequential seq{nn::linear(1, 1), nn::relu(), nn::relu(),       nn::relu(),
                       nn::relu(),       nn::relu(), nn::relu(),       nn::relu(),
                       nn::relu(),       nn::relu(), nn::linear(1, 1), nn::linear(1, 1, false)};
    BOOST_TEST(
        seq.state_dict().keys() ==
            (std::vector<std::string>{"0.weight", "0.bias", "10.weight", "10.bias", "11.weight"}),
        boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(train_and_eval_switch_dropout_and_batch_norm_inside_sequential)
{
    manual_seed(5);
    nn::sequential model{nn::linear<double>(4, 6), nn::batch_norm1d<double>(6),
                         nn::dropout<double>(0.5)};
    generator g(8);
    tensor<double, 2> x = randn<double>({10, 4}, g);

    model.eval();
    BOOST_TEST(!model.get<1>().is_training());
    BOOST_TEST(!model.get<2>().is_training());
    tensor<double, 2> e1 = model(x);
    tensor<double, 2> e2 = model(x);
    BOOST_TEST((e1 == e2));
    BOOST_TEST(model.get<1>().num_batches_tracked.value() == 0);
    // In eval, batch norm uses its fresh running stats (mean 0, var 1) and dropout nothing.
    const auto& lin = model.get<0>()(x);
    BOOST_TEST(std::abs(e1(0, 0) - lin(0, 0) / std::sqrt(1 + 1e-5)) < 1e-12);

    model.train();
    BOOST_TEST(model.get<2>().is_training());
    tensor<double, 2> t1 = model(x);
    tensor<double, 2> t2 = model(x);
    BOOST_TEST(model.get<1>().num_batches_tracked.value() == 2);
    BOOST_TEST((t1 != t2)); // fresh dropout masks
    std::size_t zeros = std::count(t1.begin(), t1.end(), 0.0);
    BOOST_TEST(zeros > 0u);
    BOOST_TEST(zeros < t1.size());
}

BOOST_AUTO_TEST_CASE(sequential_passes_gradcheck)
{
    manual_seed(2);
    nn::sequential model{nn::linear<double>(4, 5),    nn::batch_norm1d<double>(5),
                         nn::leaky_relu<double>(0.2), nn::dropout<double>(0.3),
                         nn::linear<double>(5, 3),    nn::softmax<double>()};
    auto r = nn::gradcheck(model, away_from_zero(6, 4, 3));
    BOOST_TEST(r.ok, r.message);
}

BOOST_AUTO_TEST_CASE(sequential_with_flatten_takes_image_batches)
{
    manual_seed(1);
    nn::sequential model{nn::flatten<double, 4>(), nn::linear<double>(12, 2),
                         nn::sigmoid<double>()};
    generator g(6);
    tensor<double, 4> x = randn<double>({2, 3, 2, 2}, g);
    const auto& y = model(x);
    BOOST_TEST(y.shape()[1] == 2u);
    auto r = nn::gradcheck(model, x);
    BOOST_TEST(r.ok, r.message);
}

BOOST_AUTO_TEST_CASE(sequential_reports_the_inner_module_on_a_wrong_shape)
{
    nn::sequential model{nn::linear(4, 8), nn::relu(), nn::linear(8, 2)};
    tensor<float, 2> x = tensor<float, 2>::from_shape({3, 5});
    BOOST_TEST(message_of<shape_error>([&] { model(x); }) ==
               "linear: input of shape [3, 5], expected [N, 4]");
}

/* ------------------------------------------------------------------ no_grad */

BOOST_AUTO_TEST_CASE(no_grad_forward_caches_nothing_so_backward_refuses)
{
    manual_seed(4);
    nn::sequential model{nn::linear<double>(3, 4), nn::batch_norm1d<double>(4),
                         nn::gelu<double>(),       nn::dropout<double>(0.2),
                         nn::linear<double>(4, 2), nn::softmax<double>()};
    generator g(2);
    tensor<double, 2> x = randn<double>({5, 3}, g);
    tensor<double, 2> dy = tensor<double, 2>::from_shape({5, 2});
    dy.fill(1.0);

    // Same outputs with and without recording.
    model.eval();
    tensor<double, 2> recorded = model(x);
    tensor<double, 2> inference;
    {
        no_grad guard;
        inference = model(x);
    }
    BOOST_TEST((inference == recorded));

    // A no_grad forward replaces whatever was recorded, in every module.
    model.train();
    model(x);
    {
        no_grad guard;
        model(x);
    }
    std::string msg = message_of<error>([&] { model.backward(dy); });
    BOOST_TEST(contains(msg, "no_grad"));
    auto refuses = [&](auto& m, const auto& in, const auto& grad)
    {
        {
            no_grad guard;
            m(in);
        }
        BOOST_CHECK_THROW(m.backward(grad), error);
    };
    refuses(model.get<0>(), x, tensor<double, 2>::from_shape({5, 4}));
    tensor<double, 2> h = tensor<double, 2>::from_shape({5, 4});
    h.fill(0.5);
    h(0, 0) = 1.0;
    refuses(model.get<1>(), h, h);
    refuses(model.get<2>(), h, h);
    refuses(model.get<3>(), h, h);
    refuses(model.get<5>(), h, h);
    nn::relu<double> relu;
    refuses(relu, h, h);
    nn::leaky_relu<double> leaky;
    refuses(leaky, h, h);
    nn::sigmoid<double> sigmoid;
    refuses(sigmoid, h, h);
    nn::tanh<double> tanh;
    refuses(tanh, h, h);
    nn::log_softmax<double> log_softmax;
    refuses(log_softmax, h, h);
    nn::identity<double> id;
    refuses(id, h, h);
    nn::flatten<double, 2> flat;
    refuses(flat, h, h);

    // With recording on again, backward works.
    model(x);
    BOOST_CHECK_NO_THROW(model.backward(dy));
}

BOOST_AUTO_TEST_CASE(backward_before_any_forward_is_an_error)
{
    nn::linear m(2, 2);
    BOOST_CHECK_THROW(m.backward(tensor<float, 2>::from_shape({1, 2})), error);
}

/* ------------------------------------------------------------------ requires_input_grad */

namespace
{
// Every parameter gradient of a model, in state_dict order, as one vector.
template <class M>
std::vector<double> all_grads(M& model)
{
    std::vector<double> out;
    for (const auto& p : model.parameters())
        out.insert(out.end(), p.grad().begin(), p.grad().end());
    return out;
}
} // namespace

BOOST_AUTO_TEST_CASE(linear_without_input_grad_returns_an_empty_tensor_and_the_same_grads)
{
    manual_seed(5);
    nn::linear<double> with(4, 3);
    nn::linear<double> without = with;
    without.requires_input_grad(false);
    BOOST_TEST(with.requires_input_grad());
    BOOST_TEST(!without.requires_input_grad());
    const auto x = away_from_zero(6, 4, 1);
    const auto dy = away_from_zero(6, 3, 2);
    with(x);
    without(x);
    BOOST_TEST(with.backward(dy).size() == 24u);
    const auto& none = without.backward(dy);
    BOOST_TEST(none.size() == 0u);
    BOOST_TEST(all_grads(without) == all_grads(with), boost::test_tools::per_element());

    // Back on, the input gradient is computed again (not a stale one).
    without.requires_input_grad(true);
    without(x);
    const tensor<double, 2> dx = without.backward(dy);
    BOOST_TEST((dx == with.backward(dy)));
}

BOOST_AUTO_TEST_CASE(sequential_without_input_grad_skips_only_what_nothing_needs)
{
    manual_seed(6);
    // A leading activation sees only the input; the first linear too (nothing before it
    // learns); the second linear's input gradient feeds the first linear's weights.
    nn::sequential with{nn::relu<double>(), nn::linear<double>(4, 5), nn::tanh<double>(),
                        nn::linear<double>(5, 2)};
    auto without = with;
    without.requires_input_grad(false);
    BOOST_TEST(!without.requires_input_grad());
    BOOST_TEST(!without.get<0>().requires_input_grad());
    BOOST_TEST(!without.get<1>().requires_input_grad());
    BOOST_TEST(without.get<2>().requires_input_grad());
    BOOST_TEST(without.get<3>().requires_input_grad());

    const auto x = away_from_zero(3, 4, 3);
    const auto dy = away_from_zero(3, 2, 4);
    with(x);
    without(x);
    BOOST_TEST(with.backward(dy).size() == 12u);
    BOOST_TEST(without.backward(dy).size() == 0u);
    BOOST_TEST(all_grads(without) == all_grads(with), boost::test_tools::per_element());

    without.requires_input_grad(true);
    BOOST_TEST(without.get<1>().requires_input_grad());
    without(x);
    const tensor<double, 2> dx = without.backward(dy);
    BOOST_TEST((dx == with.backward(dy)));
}

BOOST_AUTO_TEST_CASE(sequential_without_input_grad_stops_before_frozen_layers)
{
    manual_seed(7);
    nn::sequential model{nn::flatten<double, 4>(), nn::linear<double>(12, 4), nn::relu<double>(),
                         nn::linear<double>(4, 2)};
    model.get<1>().weight.requires_grad = false;
    model.get<1>().bias.requires_grad = false;
    model.requires_input_grad(false);
    // Nothing before the last linear learns, so it needs no input gradient either.
    BOOST_TEST(!model.get<3>().requires_input_grad());

    generator g(8);
    const tensor<double, 4> x = randn<double>({2, 3, 2, 2}, g);
    tensor<double, 2> dy = tensor<double, 2>::from_shape({2, 2});
    dy.fill(1.0);
    model(x);
    // flatten would refuse the empty gradient: backward must stop before it.
    BOOST_TEST(model.backward(dy).size() == 0u);
    BOOST_TEST(xt::sum(xt::abs(model.get<3>().weight.grad))() > 0.0);
    BOOST_TEST(xt::sum(xt::abs(model.get<1>().weight.grad))() == 0.0);
}

BOOST_AUTO_TEST_CASE(nested_sequential_passes_the_setting_to_its_first_modules)
{
    manual_seed(9);
    nn::sequential inner{nn::linear<double>(3, 4), nn::relu<double>()};
    nn::sequential model{inner, nn::linear<double>(4, 2)};
    model.requires_input_grad(false);
    BOOST_TEST(!model.get<0>().get<0>().requires_input_grad());
    BOOST_TEST(model.get<1>().requires_input_grad());
    const auto x = away_from_zero(2, 3, 10);
    const auto dy = away_from_zero(2, 2, 11);
    model(x);
    BOOST_TEST(model.backward(dy).size() == 0u);
    BOOST_TEST(xt::sum(xt::abs(model.get<0>().get<0>().weight.grad))() > 0.0);
}

BOOST_AUTO_TEST_CASE(relu_backward_is_exactly_zero_where_the_output_is_not_positive)
{
    // torch.relu's backward (threshold_backward) selects: an infinite gradient where the
    // output is 0 gives 0, not inf * 0 = NaN; a NaN gradient where it is positive stays NaN.
    nn::relu<double> relu;
    const tensor<double, 2> x = {{-1.0, 2.0, 0.0}};
    relu(x);
    const double inf = std::numeric_limits<double>::infinity();
    const tensor<double, 2> dy = {{inf, std::numeric_limits<double>::quiet_NaN(), inf}};
    const auto& dx = relu.backward(dy);
    BOOST_TEST(dx(0, 0) == 0.0);
    BOOST_TEST(std::isnan(dx(0, 1)));
    BOOST_TEST(dx(0, 2) == 0.0);
}

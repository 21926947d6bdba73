// The built-in layers on the test device (test_device.hpp): PyTorch parity
// (tests/golden/layers.hpp, written by scripts/golden_layers.py), gradients by gradcheck,
// train/eval, no_grad, and the ways users get shapes and arguments wrong. Inputs are built on
// the host and moved with test::dev(); results are read back with test::host(). On cpu the
// golden comparisons are as tight as PyTorch's own rounding allows (exact where they say 0);
// other devices compute in another order (or with another libm) and get float tolerances,
// except where the work is exact on any device (initial weights drawn on the host, copies,
// selects, one multiplication).
#include <ember/core/generator.hpp>
#include <ember/core/grad_mode.hpp>
#include <ember/detail/blas.hpp>
#include <ember/detail/transpose.hpp>
#include <ember/nn/gradcheck.hpp>
#include <ember/nn/layers.hpp>

#include "golden/layers.hpp"
#include "test_device.hpp"
#include "test_files.hpp"

#if __has_include(<thrust/version.h>)
#include <ember/device/thrust_cpp.hpp>
#define EMBER_TEST_HAS_THRUST 1
#endif

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

using namespace ember;
namespace gl = golden::layers;
using test::contains;
using test::dtensor;
using test::message_of;

// The layers on the test device, under their nn:: names.
namespace dnn
{
template <class T = float>
using linear = nn::linear<T, test_device>;
template <class T = float, std::size_t N = 2>
using relu = nn::relu<T, N, test_device>;
template <class T = float, std::size_t N = 2>
using leaky_relu = nn::leaky_relu<T, N, test_device>;
template <class T = float, std::size_t N = 2>
using sigmoid = nn::sigmoid<T, N, test_device>;
template <class T = float, std::size_t N = 2>
using tanh = nn::tanh<T, N, test_device>;
template <class T = float, std::size_t N = 2>
using gelu = nn::gelu<T, N, test_device>;
template <class T = float, std::size_t N = 2>
using softmax = nn::softmax<T, N, test_device>;
template <class T = float, std::size_t N = 2>
using log_softmax = nn::log_softmax<T, N, test_device>;
template <class T = float, std::size_t N = 2>
using dropout = nn::dropout<T, N, test_device>;
template <class T = float>
using batch_norm1d = nn::batch_norm1d<T, test_device>;
template <class T = float, std::size_t N = 4>
using flatten = nn::flatten<T, N, test_device>;
template <class T = float, std::size_t N = 2>
using identity = nn::identity<T, N, test_device>;
} // namespace dnn

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
// A golden input on the test device.
#define DGOLDEN(name) test::dev(make(gl::name, gl::name##_shape))

// Largest |actual - expected| / max(1, |expected|) over all elements (actual on the host).
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

// `tol` on cpu; off cpu at least the rounding of another summation order or libm in T.
template <class T>
double tolerance(double tol)
{
    if (test::exact)
        return tol;
    return std::max(tol, std::is_same_v<T, float> ? 1e-5 : 1e-12);
}

// `actual` (on any device) against a golden array, within `tol` (on every device when
// `anywhere`, else within tolerance<T>(tol)).
template <class A, class T, std::size_t K, std::size_t N>
void check_close(const A& actual, const T (&expected)[K], const std::size_t (&shape)[N], double tol,
                 bool anywhere, const char* what)
{
    const auto h = test::host(actual);
    using value_type = typename decltype(h)::value_type;
    BOOST_TEST_CONTEXT(what)
    {
        BOOST_TEST(std::vector<std::size_t>(h.shape().begin(), h.shape().end()) ==
                       std::vector<std::size_t>(std::begin(shape), std::end(shape)),
                   boost::test_tools::per_element());
        BOOST_TEST(worst_error(h, expected) <= (anywhere ? tol : tolerance<value_type>(tol)));
    }
}
#define CHECK_GOLDEN(actual, name, tol)                                                            \
    check_close(actual, gl::name, gl::name##_shape, tol, false, #name)
// Exact on every device: what the host computed (initial weights) or a copy, a select or a
// single multiplication of it.
#define CHECK_GOLDEN_EXACT(actual, name)                                                           \
    check_close(actual, gl::name, gl::name##_shape, 0.0, true, #name)

// A parameter's gradient, read back from the device.
template <class P>
tensor<typename P::value_type, 1> grad_of(const P& p)
{
    auto t = tensor<typename P::value_type, 1>::from_shape({p.size()});
    test_device::download(p.grad().data(), p.size(), t.data());
    return t;
}

// num_batches_tracked, read back from the device.
template <class BN>
std::int64_t tracked(const BN& bn)
{
    return test::host(bn.num_batches_tracked.value)();
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

template <class T, std::size_t N>
tensor<T, N> filled(std::array<std::size_t, N> shape, T value)
{
    tensor<T, N> t(shape);
    t.fill(value);
    return t;
}

} // namespace

/* ------------------------------------------------------------------ linear */

BOOST_AUTO_TEST_CASE(linear_init_equals_torch_exactly_after_manual_seed_42)
{
    manual_seed(42);
    dnn::linear<> a(4, 3);
    dnn::linear<> b(5, 2, false);
    dnn::linear<> c(3, 2);
    CHECK_GOLDEN_EXACT(a.weight.value, linear_seed42_a_weight);
    CHECK_GOLDEN_EXACT(a.bias.value, linear_seed42_a_bias);
    CHECK_GOLDEN_EXACT(b.weight.value, linear_seed42_b_weight);
    CHECK_GOLDEN_EXACT(c.weight.value, linear_seed42_c_weight);
    CHECK_GOLDEN_EXACT(c.bias.value, linear_seed42_c_bias);
}

BOOST_AUTO_TEST_CASE(linear_double_init_equals_torch_float64_exactly)
{
    manual_seed(7);
    dnn::linear<double> d(6, 4);
    CHECK_GOLDEN_EXACT(d.weight.value, linear_seed7_double_weight);
    CHECK_GOLDEN_EXACT(d.bias.value, linear_seed7_double_bias);
}

BOOST_AUTO_TEST_CASE(linear_draws_from_the_generator_it_is_given)
{
    generator g(42);
    manual_seed(1);
    dnn::linear<> a(4, 3, true, g);
    CHECK_GOLDEN_EXACT(a.weight.value, linear_seed42_a_weight);
}

BOOST_AUTO_TEST_CASE(linear_forward_matches_torch)
{
    dnn::linear<double> d(6, 4);
    d.weight.value = DGOLDEN(linear_seed7_double_weight);
    d.bias.value = DGOLDEN(linear_seed7_double_bias);
    CHECK_GOLDEN(d(DGOLDEN(input_4x6)), linear_seed7_double_forward, 1e-14);

    manual_seed(42);
    dnn::linear<> a(4, 3);
    CHECK_GOLDEN(a(DGOLDEN(input_5x4_float)), linear_seed42_a_forward, 1e-6);
}

BOOST_AUTO_TEST_CASE(linear_without_bias_has_only_a_weight)
{
    dnn::linear<double> m(3, 2, false);
    BOOST_TEST(!m.has_bias());
    BOOST_TEST(m.state_dict().keys() == std::vector<std::string>{"weight"});
    BOOST_TEST(m.parameters().size() == 1u);
    tensor<double, 2> x = {{1., 2., 3.}};
    const tensor<double, 2> w = test::host(m.weight.value);
    tensor<double, 2> expected = {{0., 0.}};
    for (std::size_t j = 0; j < 2; ++j)
        for (std::size_t k = 0; k < 3; ++k)
            expected(0, j) += w(j, k) * x(0, k);
    const tensor<double, 2> y = test::host(m(test::dev(x)));
    BOOST_TEST(std::abs(y(0, 0) - expected(0, 0)) < tolerance<double>(1e-15));
    BOOST_TEST(std::abs(y(0, 1) - expected(0, 1)) < tolerance<double>(1e-15));
}

BOOST_AUTO_TEST_CASE(linear_wrong_input_width_names_both_shapes)
{
    dnn::linear<> m(4, 2);
    const auto x = dtensor<float, 2>::from_shape({3, 5});
    BOOST_TEST(message_of<shape_error>([&] { m(x); }) ==
               "linear: input of shape [3, 5], expected [N, 4]");
}

BOOST_AUTO_TEST_CASE(linear_backward_rejects_a_gradient_of_the_wrong_shape)
{
    dnn::linear<> m(4, 2);
    m(dtensor<float, 2>::from_shape({3, 4}));
    const auto dy = dtensor<float, 2>::from_shape({3, 3});
    std::string msg = message_of<shape_error>([&] { m.backward(dy); });
    BOOST_TEST(contains(msg, "linear"));
    BOOST_TEST(contains(msg, "[3, 2]"));
    BOOST_TEST(contains(msg, "[3, 3]"));
}

BOOST_AUTO_TEST_CASE(linear_backward_accumulates_into_grads)
{
    dnn::linear<double> m(3, 2);
    const auto x = test::dev(tensor<double, 2>{{1., -2., 0.5}, {0.3, 0.7, -1.}});
    const auto dy = test::dev(tensor<double, 2>{{1., 2.}, {-0.5, 0.25}});
    m(x);
    m.backward(dy);
    const tensor<double, 2> w1 = test::host(m.weight.grad());
    const tensor<double, 1> b1 = test::host(m.bias.grad());
    m.backward(dy);
    const tensor<double, 2> w2 = test::host(m.weight.grad());
    for (std::size_t i = 0; i < w1.size(); ++i)
        BOOST_TEST(w2.data()[i] == 2 * w1.data()[i]);
    BOOST_TEST(b1(0) == 0.5);
    BOOST_TEST(b1(1) == 2.25);
    BOOST_TEST(test::host(m.bias.grad())(1) == 4.5);
}

// After zero_grad() linear's product writes over the stale gradient (beta = 0) instead of adding
// to zeros: it must leave what a zero-filled gradient gets, bit for bit, whatever the stale
// numbers were (NaN and infinity among them), at shapes that take both ways of the float product;
// a second backward then adds.
BOOST_AUTO_TEST_CASE(linear_backward_after_zero_grad_gives_the_zero_filled_gradient_bit_for_bit)
{
    const std::array<std::array<std::size_t, 3>, 5> shapes{
        {{1, 784, 256}, {16, 256, 10}, {64, 33, 7}, {3, 5, 2}, {0, 4, 3}}};
    for (const auto& [batch, in, out] : shapes)
    {
        manual_seed(11);
        dnn::linear<float> fresh(in, out);
        manual_seed(11);
        dnn::linear<float> reused(in, out);
        manual_seed(12);
        const auto x = test::dev(randn<float>({batch, in}));
        const auto dy = test::dev(randn<float>({batch, out}));
        const auto other_x = test::dev(randn<float>({batch, in}));
        const auto other_dy = test::dev(randn<float>({batch, out}));

        reused(other_x);
        reused.backward(other_dy);
        reused.weight.grad().fill(std::numeric_limits<float>::quiet_NaN());
        reused.bias.grad().fill(std::numeric_limits<float>::infinity());
        reused.zero_grad();
        for (int pass = 0; pass < 2; ++pass)
        {
            fresh(x);
            fresh.backward(dy);
            reused(x);
            reused.backward(dy);
            const auto a = test::host(fresh.weight.grad()), b = test::host(reused.weight.grad());
            const auto ab = test::host(fresh.bias.grad()), bb = test::host(reused.bias.grad());
            BOOST_TEST(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0,
                       "weight grad, batch " << batch << ", " << in << " -> " << out << ", pass "
                                             << pass);
            BOOST_TEST(std::memcmp(ab.data(), bb.data(), ab.size() * sizeof(float)) == 0,
                       "bias grad, batch " << batch << ", pass " << pass);
            BOOST_TEST(std::all_of(b.begin(), b.end(), [](float v) { return std::isfinite(v); }));
        }
    }
}

// At batch 1, after zero_grad(), linear keeps its weight gradient as dy and x
// (parameter::keep_grad_as_outer) instead of writing the product. What grad() then shows must be
// the bits the product writes (detail::gemm over an inner dimension of one, beta 0): signed
// zeros, infinities, overflow and underflow included, in float and double. A second backward
// adds to it as to a written gradient, and zero_grad() drops it. Not on other devices, where
// the product is written as before.
template <class T>
void check_kept_outer_product()
{
    const std::size_t in = 37, out = 9;
    manual_seed(3);
    nn::linear<T, cpu> m(in, out);
    tensor<T, 2> x = randn<T>({1, in}), dy = randn<T>({1, out});
    const T inf = std::numeric_limits<T>::infinity(), big = std::numeric_limits<T>::max() / 4;
    x.data()[0] = T(-0.0);
    x.data()[1] = T(0);
    x.data()[2] = inf;
    x.data()[3] = big;
    x.data()[4] = std::numeric_limits<T>::min();
    dy.data()[0] = T(-0.0);
    dy.data()[1] = T(-3);
    dy.data()[2] = std::numeric_limits<T>::denorm_min();
    std::vector<T> want(in * out, std::numeric_limits<T>::quiet_NaN());
    ember::detail::gemm(true, false, out, in, 1, T(1), dy.data(), out, x.data(), in, T(0),
                        want.data(), in);
    const auto same_bits = [](const T* a, const T* b, std::size_t n)
    {
        std::size_t differ = 0;
        for (std::size_t i = 0; i < n; ++i)
            differ += std::memcmp(a + i, b + i, sizeof(T)) != 0 && !(a[i] != a[i] && b[i] != b[i]);
        return differ;
    };

    m.zero_grad();
    m(x);
    m.backward(dy);
    BOOST_TEST(m.weight.view_grad().is_outer());
    BOOST_TEST(m.weight.has_grad());
    BOOST_TEST(same_bits(m.weight.grad().data(), want.data(), want.size()) == 0u);
    BOOST_TEST(!m.weight.view_grad().is_outer()); // grad() wrote it out

    // kept, then added to by a second backward: twice the product, as written gradients add
    m.zero_grad();
    m(x);
    m.backward(dy);
    m.backward(dy);
    std::vector<T> twice = want; // the second product added by the product (beta 1)
    ember::detail::gemm(true, false, out, in, 1, T(1), dy.data(), out, x.data(), in, T(1),
                        twice.data(), in);
    BOOST_TEST(same_bits(m.weight.grad().data(), twice.data(), twice.size()) == 0u);

    // kept, then dropped: zeros; with set_to_none, no gradient at all
    m(x);
    m.zero_grad();
    m.backward(dy);
    m.zero_grad();
    BOOST_TEST(!m.weight.view_grad().is_outer());
    BOOST_TEST(std::all_of(m.weight.grad().begin(), m.weight.grad().end(),
                           [](T v) { return v == T(0) && !std::signbit(v); }));
    m.backward(dy);
    m.zero_grad(true);
    BOOST_TEST(!m.weight.has_grad());

    // A larger batch writes the product out, as before.
    const tensor<T, 2> x2 = randn<T>({2, in}), dy2 = randn<T>({2, out});
    m(x2);
    m.backward(dy2);
    BOOST_TEST(!m.weight.view_grad().is_outer());
}

BOOST_AUTO_TEST_CASE(linear_at_batch_1_keeps_its_weight_gradient_as_an_outer_product_of_the_same_bits)
{
    check_kept_outer_product<float>();
    check_kept_outer_product<double>();
}

BOOST_AUTO_TEST_CASE(a_kept_outer_product_of_the_wrong_length_is_a_shape_error)
{
    nn::parameter<float, 2> w(tensor<float, 2>::from_shape({3, 4}));
    w.zero_grad();
    const std::vector<float> three(3, 1.f), four(4, 1.f), five(5, 1.f);
    BOOST_CHECK_EXCEPTION(w.keep_grad_as_outer(three, five), shape_error,
                          [](const shape_error& e)
                          { return contains(e.what(), "3 and 5") && contains(e.what(), "[3, 4]"); });
    BOOST_TEST(!w.view_grad().is_outer()); // which wrote the zeros out
    BOOST_TEST(!w.keep_grad_as_outer(three, four));
    w.zero_grad();
    BOOST_TEST(w.keep_grad_as_outer(three, four));
    BOOST_TEST(!w.keep_grad_as_outer(three, four)); // holds numbers now: add to them instead
}

BOOST_AUTO_TEST_CASE(linear_frozen_parameters_get_no_gradient)
{
    dnn::linear<double> m(3, 2);
    m.weight.requires_grad = false;
    m(test::dev(tensor<double, 2>{{1., -2., 0.5}}));
    const tensor<double, 2> dx = test::host(m.backward(test::dev(tensor<double, 2>{{1., 1.}})));
    const tensor<double, 2> wg = test::host(m.weight.grad());
    BOOST_TEST(std::all_of(wg.begin(), wg.end(), [](double g) { return g == 0; }));
    BOOST_TEST(test::host(m.bias.grad())(0) == 1.);
    const tensor<double, 2> w = test::host(m.weight.value);
    BOOST_TEST(dx(0, 0) == w(0, 0) + w(1, 0));
}

BOOST_AUTO_TEST_CASE(linear_with_no_inputs_outputs_its_bias)
{
    manual_seed(0);
    dnn::linear<double> m(0, 3);
    BOOST_TEST(m.weight.value.size() == 0u);
    m.bias.value = test::dev(tensor<double, 1>{1., 2., 3.});
    const tensor<double, 2> y = test::host(m(dtensor<double, 2>::from_shape({2, 0})));
    BOOST_TEST(y.shape()[0] == 2u);
    BOOST_TEST(y(1, 2) == 3.);
    const auto& dx = m.backward(test::dev(tensor<double, 2>{{1., 1., 1.}, {1., 1., 1.}}));
    BOOST_TEST(dx.size() == 0u);
    BOOST_TEST(test::host(m.bias.grad())(0) == 2.);
}

BOOST_AUTO_TEST_CASE(linear_reuses_its_buffers_when_the_shape_repeats)
{
    dnn::linear<> m(4, 3);
    const auto x = test::dev(filled<float, 2>({5, 4}, 1.f));
    const auto& y1 = m(x);
    const float* data = y1.data();
    const auto dy = test::dev(filled<float, 2>({5, 3}, 1.f));
    const float* dx_data = m.backward(dy).data();
    const auto& y2 = m(x);
    BOOST_TEST(&y1 == &y2);
    BOOST_TEST(y2.data() == data);
    BOOST_TEST(m.backward(dy).data() == dx_data);
}

BOOST_AUTO_TEST_CASE(transpose_matches_element_by_element_at_every_remainder)
{
    // 4 x 4 blocks where the SSE path runs, the rest element by element: every remainder of
    // rows and columns by 4, and the bands of 16 columns.
    auto check = [](auto zero)
    {
        using T = decltype(zero);
        for (std::size_t rows : {1, 3, 4, 5, 8, 17, 64})
            for (std::size_t cols : {1, 2, 4, 7, 16, 19, 256})
            {
                std::vector<T> a(rows * cols), b(rows * cols, T(-1));
                for (std::size_t i = 0; i < a.size(); ++i)
                    a[i] = static_cast<T>(i);
                ember::detail::transpose(rows, cols, a.data(), b.data());
                std::size_t wrong = 0;
                for (std::size_t i = 0; i < rows; ++i)
                    for (std::size_t j = 0; j < cols; ++j)
                        wrong += b[j * rows + i] != a[i * cols + j];
                BOOST_TEST(wrong == 0u, rows << " x " << cols << ": " << wrong << " wrong");
            }
    };
    check(0.0f);
    check(0.0);
}

BOOST_AUTO_TEST_CASE(the_float_matrix_product_is_the_plain_sum_for_every_transpose_stride_and_beta)
{
    // detail::gemm's float products go to OpenBLAS or, in a build with oneDNN, to dnnl_sgemm
    // (blas.hpp, float_gemm_library()); either must compute C = alpha op(A) op(B) + beta C on
    // row-major operands with row strides above their widths, clear C (NaN included) when beta
    // is 0, and scale it when K is 0.
    BOOST_TEST_MESSAGE("float products: " << ember::detail::float_gemm_library());
    std::mt19937 rng(11);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    struct shape
    {
        std::size_t m, n, k;
    };
    for (const shape sh : {shape{1, 1, 1}, shape{3, 5, 7}, shape{16, 256, 784}, shape{64, 10, 256},
                           shape{256, 784, 16}, shape{5, 4, 0}, shape{0, 4, 3}})
        for (bool ta : {false, true})
            for (bool tb : {false, true})
                for (float beta : {0.f, 1.f, 0.5f})
                {
                    const auto [m, n, k] = sh;
                    // stored A is m x k (k x m transposed), B k x n (n x k); two spare columns
                    const std::size_t lda = (ta ? m : k) + 2, ldb = (tb ? k : n) + 2, ldc = n + 2;
                    std::vector<float> a((ta ? k : m) * lda + 1), b((tb ? n : k) * ldb + 1),
                        c(m * ldc + 1);
                    for (float& v : a)
                        v = u(rng);
                    for (float& v : b)
                        v = u(rng);
                    for (float& v : c)
                        v = beta == 0.f ? nan : u(rng);
                    const std::vector<float> c0 = c;
                    const float alpha = 0.75f;
                    ember::detail::gemm(ta, tb, m, n, k, alpha, a.data(), lda, b.data(), ldb, beta,
                                        c.data(), ldc);
                    std::size_t wrong = 0;
                    for (std::size_t i = 0; i < m; ++i)
                        for (std::size_t j = 0; j < ldc; ++j)
                        {
                            const float got = c[i * ldc + j];
                            if (j >= n) // outside the matrix: untouched
                            {
                                wrong += std::memcmp(&got, &c0[i * ldc + j], sizeof got) != 0;
                                continue;
                            }
                            double sum = 0;
                            for (std::size_t p = 0; p < k; ++p)
                                sum += double(ta ? a[p * lda + i] : a[i * lda + p]) *
                                       double(tb ? b[j * ldb + p] : b[p * ldb + j]);
                            const double want =
                                alpha * sum + (beta == 0.f ? 0.0 : beta * double(c0[i * ldc + j]));
                            wrong += !(std::abs(got - want) <= 1e-5 * (1.0 + std::sqrt(double(k))));
                        }
                    BOOST_TEST(wrong == 0u, m << " x " << n << " x " << k << (ta ? " A^T" : "")
                                              << (tb ? " B^T" : "") << ", beta " << beta << ": "
                                              << wrong << " wrong");
                }
}

BOOST_AUTO_TEST_CASE(linear_forward_is_the_same_to_the_bit_whichever_way_its_product_runs)
{
    // At some batches linear's forward computes y^T = W x^T and transposes it, where OpenBLAS
    // packs faster (linear.hpp, product_transposed()); every output must be the bits of the
    // direct x W^T onto the broadcast bias, as addmm computes it. On cpu, where that route is,
    // and only with OpenBLAS's AVX-512 kernels: elsewhere both sides take the direct route.
    if (!ember::detail::openblas_avx512_kernels())
        BOOST_TEST_MESSAGE("OpenBLAS runs other kernels here: linear's transposed route is not "
                           "taken, so this test compares the direct route with itself");
    std::mt19937 rng(5);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    for (bool has_bias : {true, false})
        for (std::size_t in : {256u, 784u})
            for (std::size_t batch : {1u, 7u, 8u, 16u, 31u, 32u, 33u, 64u})
            {
                const std::size_t out = 300;
                nn::linear<float, cpu> m(in, out, has_bias);
                auto x = tensor<float, 2>::from_shape({batch, in});
                for (float& v : x)
                    v = u(rng);
                auto expected = tensor<float, 2>::from_shape({batch, out});
                for (std::size_t r = 0; r < batch; ++r)
                    for (std::size_t j = 0; j < out; ++j)
                        expected(r, j) = has_bias ? m.bias.value(j) : 0.f;
                ember::detail::gemm(false, true, batch, out, in, 1.f, x.data(), in,
                                    m.weight.value.data(), in, has_bias ? 1.f : 0.f,
                                    expected.data(), out);
                const auto& y = m(x);
                BOOST_TEST(std::memcmp(y.data(), expected.data(), y.size() * sizeof(float)) == 0,
                           "batch " << batch << ", in " << in << ", bias " << has_bias);
            }
}

BOOST_AUTO_TEST_CASE(linear_passes_gradcheck)
{
    manual_seed(3);
    dnn::linear<double> m(5, 4);
    auto r = nn::gradcheck(m, randn<double>({3, 5}));
    BOOST_TEST(r.ok, r.message);
    dnn::linear<double> nb(5, 2, false);
    auto r2 = nn::gradcheck(nb, randn<double>({4, 5}));
    BOOST_TEST(r2.ok, r2.message);
}

/* ------------------------------------------------------------------ activations */

BOOST_AUTO_TEST_CASE(activations_match_torch)
{
    const auto x = DGOLDEN(input_4x6);
    dnn::relu<double> relu;
    dnn::leaky_relu<double> leaky;
    dnn::leaky_relu<double> leaky02(0.2);
    dnn::sigmoid<double> sigmoid;
    dnn::tanh<double> tanh;
    dnn::gelu<double> gelu;
    dnn::gelu<double> gelu_tanh("tanh");
    dnn::softmax<double> softmax;
    dnn::log_softmax<double> log_softmax;
    BOOST_TEST(leaky.negative_slope() == 0.01);
    BOOST_TEST((gelu_tanh.approximate() == nn::gelu_approximation::tanh));
    CHECK_GOLDEN_EXACT(relu(x), relu_forward);
    CHECK_GOLDEN(leaky(x), leaky_relu_forward, 1e-15);
    CHECK_GOLDEN(leaky02(x), leaky_relu_slope_0_2_forward, 1e-15);
    CHECK_GOLDEN(sigmoid(x), sigmoid_forward, 1e-15);
    CHECK_GOLDEN(tanh(x), tanh_forward, 1e-15);
    CHECK_GOLDEN(gelu(x), gelu_forward, 1e-15);
    CHECK_GOLDEN(gelu_tanh(x), gelu_tanh_forward, 1e-15);
    CHECK_GOLDEN(softmax(x), softmax_forward, 1e-15);
    CHECK_GOLDEN(log_softmax(x), log_softmax_forward, 1e-15);
}

BOOST_AUTO_TEST_CASE(activations_on_the_test_device_agree_with_cpu)
{
    // The same formulas run as kernels: on a host back end they give cpu's numbers; elsewhere
    // (another libm) they agree to rounding.
    generator g(21);
    tensor<float, 3> x = randn<float>({3, 4, 7}, g);
    tensor<float, 3> dy = randn<float>({3, 4, 7}, g);
    auto compare = [&](auto& on_cpu, auto& on_device)
    {
        const tensor<float, 3> y_cpu = on_cpu(x);
        const tensor<float, 3> y_dev = test::host(on_device(test::dev(x)));
        const tensor<float, 3> dx_cpu = on_cpu.backward(dy);
        const tensor<float, 3> dx_dev = test::host(on_device.backward(test::dev(dy)));
        for (std::size_t i = 0; i < x.size(); ++i)
        {
            BOOST_TEST(std::abs(y_dev.data()[i] - y_cpu.data()[i]) <=
                       tolerance<float>(0.0) * std::max(1.f, std::abs(y_cpu.data()[i])));
            BOOST_TEST(std::abs(dx_dev.data()[i] - dx_cpu.data()[i]) <=
                       tolerance<float>(0.0) * std::max(1.f, std::abs(dx_cpu.data()[i])));
        }
    };
    nn::relu<float, 3> relu_cpu;
    dnn::relu<float, 3> relu_dev;
    compare(relu_cpu, relu_dev);
    nn::leaky_relu<float, 3> leaky_cpu(0.3);
    dnn::leaky_relu<float, 3> leaky_dev(0.3);
    compare(leaky_cpu, leaky_dev);
    nn::sigmoid<float, 3> sigmoid_cpu;
    dnn::sigmoid<float, 3> sigmoid_dev;
    compare(sigmoid_cpu, sigmoid_dev);
    nn::tanh<float, 3> tanh_cpu;
    dnn::tanh<float, 3> tanh_dev;
    compare(tanh_cpu, tanh_dev);
    nn::gelu<float, 3> gelu_cpu;
    dnn::gelu<float, 3> gelu_dev;
    compare(gelu_cpu, gelu_dev);
    nn::gelu<float, 3> gelu_tanh_cpu("tanh");
    dnn::gelu<float, 3> gelu_tanh_dev("tanh");
    compare(gelu_tanh_cpu, gelu_tanh_dev);
    nn::softmax<float, 3> softmax_cpu;
    dnn::softmax<float, 3> softmax_dev;
    compare(softmax_cpu, softmax_dev);
    nn::log_softmax<float, 3> log_softmax_cpu;
    dnn::log_softmax<float, 3> log_softmax_dev;
    compare(log_softmax_cpu, log_softmax_dev);
}

BOOST_AUTO_TEST_CASE(softmax_and_log_softmax_are_stable_for_large_logits)
{
    const auto big = DGOLDEN(input_big_4x6);
    dnn::softmax<double> softmax;
    dnn::log_softmax<double> log_softmax;
    CHECK_GOLDEN(softmax(big), softmax_big_forward, 1e-15);
    CHECK_GOLDEN(log_softmax(big), log_softmax_big_forward, 1e-15);
}

BOOST_AUTO_TEST_CASE(softmax_works_on_the_last_axis_of_any_rank)
{
    dnn::softmax<double, 3> softmax;
    CHECK_GOLDEN(softmax(DGOLDEN(input_2x3x5)), softmax_rank3_forward, 1e-15);
}

BOOST_AUTO_TEST_CASE(gelu_rejects_an_unknown_approximation)
{
    std::string msg = message_of<value_error>([] { dnn::gelu<> g("fast"); });
    BOOST_TEST(contains(msg, "\"fast\""));
    BOOST_TEST(contains(msg, "tanh"));
}

BOOST_AUTO_TEST_CASE(activations_pass_gradcheck)
{
    const auto x = away_from_zero(3, 5, 11);
    dnn::relu<double> relu;
    dnn::leaky_relu<double> leaky(0.1);
    dnn::sigmoid<double> sigmoid;
    dnn::tanh<double> tanh;
    dnn::gelu<double> gelu;
    dnn::gelu<double> gelu_tanh(nn::gelu_approximation::tanh);
    dnn::softmax<double> softmax;
    dnn::log_softmax<double> log_softmax;
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
    dnn::gelu<double, 3> gelu;
    dnn::leaky_relu<double, 3> leaky;
    dnn::log_softmax<double, 3> log_softmax;
    BOOST_TEST(nn::gradcheck(gelu, x).ok);
    BOOST_TEST(nn::gradcheck(leaky, x).ok);
    BOOST_TEST(nn::gradcheck(log_softmax, x).ok);
}

BOOST_AUTO_TEST_CASE(activation_backward_rejects_a_gradient_of_the_wrong_shape)
{
    dnn::sigmoid<> s;
    s(dtensor<float, 2>::from_shape({2, 3}));
    const auto dy = dtensor<float, 2>::from_shape({3, 2});
    std::string msg = message_of<shape_error>([&] { s.backward(dy); });
    BOOST_TEST(contains(msg, "sigmoid"));
}

/* ------------------------------------------------------------------ dropout */

BOOST_AUTO_TEST_CASE(dropout_drops_what_torch_drops_after_the_same_seed)
{
    dnn::dropout<float> d(0.3);
    const auto x = DGOLDEN(input_8x16_float);
    manual_seed(3);
    CHECK_GOLDEN_EXACT(d(x), dropout_p03_seed3_forward);
    // Same number of draws as PyTorch: the generator continues in step.
    BOOST_TEST(default_generator().uniform<double>(0.0, 1.0) == gl::dropout_p03_seed3_next_rand[0]);
}

BOOST_AUTO_TEST_CASE(dropout_on_the_test_device_drops_what_cpu_drops_and_reuses_its_buffers)
{
    generator g(12);
    const tensor<double, 2> x = randn<double>({6, 7}, g);
    const tensor<double, 2> dy = randn<double>({6, 7}, g);
    nn::dropout<double> on_cpu(0.4);
    dnn::dropout<double> on_device(0.4);
    const auto xd = test::dev(x);
    const auto dyd = test::dev(dy);
    const double* out = nullptr;
    for (int step = 0; step < 3; ++step)
    {
        manual_seed(40 + step);
        const tensor<double, 2> y_cpu = on_cpu(x);
        manual_seed(40 + step);
        const auto& y = on_device(xd);
        if (step == 0)
            out = y.data();
        BOOST_TEST(y.data() == out); // the output buffer is reused
        BOOST_TEST((test::host(y) == y_cpu));
        BOOST_TEST((test::host(on_device.backward(dyd)) == on_cpu.backward(dy)));
    }
}

BOOST_AUTO_TEST_CASE(dropout_is_the_identity_in_eval)
{
    dnn::dropout<double> d(0.5);
    d.eval();
    tensor<double, 2> x = {{1., 2.}, {3., 4.}};
    const generator_state before = default_generator().state();
    BOOST_TEST((test::host(d(test::dev(x))) == x));
    BOOST_TEST((default_generator().state() == before));
    tensor<double, 2> dy = {{5., 6.}, {7., 8.}};
    BOOST_TEST((test::host(d.backward(test::dev(dy))) == dy));
}

BOOST_AUTO_TEST_CASE(dropout_rejects_p_outside_zero_one)
{
    BOOST_CHECK_THROW(dnn::dropout<>(-0.1), value_error);
    BOOST_CHECK_THROW(dnn::dropout<>(1.5), value_error);
    BOOST_CHECK_THROW(dnn::dropout<>(std::nan("")), value_error);
    std::string msg = message_of<value_error>([] { dnn::dropout<> d(2.0); });
    BOOST_TEST(contains(msg, "between 0 and 1"));
    BOOST_CHECK_NO_THROW(dnn::dropout<>(0.0));
    BOOST_CHECK_NO_THROW(dnn::dropout<>(1.0));
}

BOOST_AUTO_TEST_CASE(dropout_p1_zeroes_everything_and_p0_keeps_everything_without_drawing)
{
    const tensor<double, 2> x = {{1., -2.}, {3., 4.}};
    const auto xd = test::dev(x);
    const generator_state before = default_generator().state();
    dnn::dropout<double> all(1.0);
    const tensor<double, 2> y = test::host(all(xd));
    BOOST_TEST(std::all_of(y.begin(), y.end(), [](double v) { return v == 0; }));
    const tensor<double, 2> dx =
        test::host(all.backward(test::dev(tensor<double, 2>{{1., 1.}, {1., 1.}})));
    BOOST_TEST(std::all_of(dx.begin(), dx.end(), [](double v) { return v == 0; }));
    // PyTorch's p == 1 multiplies by 0, both ways: infinity and NaN give NaN (torch 1.13).
    const double inf = std::numeric_limits<double>::infinity();
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const tensor<double, 2> y2 = test::host(all(test::dev(tensor<double, 2>{{inf, nan, -0.5}})));
    BOOST_TEST(std::isnan(y2(0, 0)));
    BOOST_TEST(std::isnan(y2(0, 1)));
    BOOST_TEST((y2(0, 2) == 0 && std::signbit(y2(0, 2))));
    const tensor<double, 2> dx2 =
        test::host(all.backward(test::dev(tensor<double, 2>{{inf, 1., nan}})));
    BOOST_TEST(std::isnan(dx2(0, 0)));
    BOOST_TEST(dx2(0, 1) == 0);
    BOOST_TEST(std::isnan(dx2(0, 2)));
    dnn::dropout<double> none(0.0);
    BOOST_TEST((test::host(none(xd)) == x));
    BOOST_TEST((default_generator().state() == before));
}

BOOST_AUTO_TEST_CASE(dropout_scales_survivors_and_backward_uses_the_same_mask)
{
    manual_seed(9);
    dnn::dropout<double> d(0.25);
    const auto x = test::dev(filled<double, 2>({20, 50}, 1.0));
    const tensor<double, 2> y = test::host(d(x));
    std::size_t zeros = 0;
    for (double v : y)
    {
        BOOST_TEST((v == 0.0 || v == 1.0 / 0.75));
        zeros += v == 0.0;
    }
    // 1000 draws with p = 0.25: far outside 150..350 would mean a wrong probability.
    BOOST_TEST(zeros > 150u);
    BOOST_TEST(zeros < 350u);
    BOOST_TEST((test::host(d.backward(x)) == y));
}

BOOST_AUTO_TEST_CASE(dropout_passes_gradcheck_in_training)
{
    dnn::dropout<double> d(0.4);
    BOOST_TEST(d.is_training());
    auto r = nn::gradcheck(d, away_from_zero(4, 6, 2));
    BOOST_TEST(r.ok, r.message);
}

/* ------------------------------------------------------------------ batch_norm1d */

BOOST_AUTO_TEST_CASE(batch_norm_running_stats_match_torch_after_three_steps)
{
    const dtensor<double, 2> batches[] = {DGOLDEN(bn_batch0), DGOLDEN(bn_batch1),
                                          DGOLDEN(bn_batch2)};
    const auto eval_input = DGOLDEN(bn_eval_input);

    dnn::batch_norm1d<double> bn(6);
    tensor<double, 2> last;
    for (const auto& b : batches)
        last = test::host(bn(b));
    CHECK_GOLDEN(last, bn_double_last_train_forward, 1e-14);
    CHECK_GOLDEN(bn.running_mean.value, bn_double_running_mean, 1e-15);
    CHECK_GOLDEN(bn.running_var.value, bn_double_running_var, 1e-14);
    BOOST_TEST(tracked(bn) == gl::bn_double_num_batches_tracked);
    bn.eval();
    CHECK_GOLDEN(bn(eval_input), bn_double_eval_forward, 1e-14);

    dnn::batch_norm1d<double> cumulative(6, 1e-5, std::nullopt);
    for (const auto& b : batches)
        last = test::host(cumulative(b));
    CHECK_GOLDEN(last, bn_double_cumulative_last_train_forward, 1e-14);
    CHECK_GOLDEN(cumulative.running_mean.value, bn_double_cumulative_running_mean, 1e-15);
    CHECK_GOLDEN(cumulative.running_var.value, bn_double_cumulative_running_var, 1e-14);
    cumulative.eval();
    CHECK_GOLDEN(cumulative(eval_input), bn_double_cumulative_eval_forward, 1e-14);
}

BOOST_AUTO_TEST_CASE(batch_norm_float_running_stats_match_torch_float32)
{
    auto as_float = [](const tensor<double, 2>& t) { return tensor<float, 2>(xt::cast<float>(t)); };
    dnn::batch_norm1d<float> bn(6);
    tensor<float, 2> last;
    for (const auto& b : {GOLDEN(bn_batch0), GOLDEN(bn_batch1), GOLDEN(bn_batch2)})
        last = test::host(bn(test::dev(as_float(b))));
    CHECK_GOLDEN(last, bn_float_last_train_forward, 1e-6);
    CHECK_GOLDEN(bn.running_mean.value, bn_float_running_mean, 1e-6);
    CHECK_GOLDEN(bn.running_var.value, bn_float_running_var, 1e-6);
    bn.eval();
    CHECK_GOLDEN(bn(test::dev(as_float(GOLDEN(bn_eval_input)))), bn_float_eval_forward, 1e-6);
}

BOOST_AUTO_TEST_CASE(batch_norm_rejects_a_single_sample_in_training_but_not_in_eval)
{
    dnn::batch_norm1d<float> bn(3);
    const auto one = test::dev(tensor<float, 2>{{1.f, 2.f, 3.f}});
    std::string msg = message_of<value_error>([&] { bn(one); });
    BOOST_TEST(contains(msg, "expected more than 1 value per channel when training"));
    BOOST_TEST(contains(msg, "[1, 3]"));
    BOOST_TEST(tracked(bn) == 0);
    bn.eval();
    BOOST_CHECK_NO_THROW(bn(one));
}

BOOST_AUTO_TEST_CASE(batch_norm_takes_an_empty_batch_as_pytorch_does)
{
    // torch 1.13: an empty output, num_batches_tracked counts the batch, the running
    // statistics stay, and backward gives an empty input gradient and zero weight gradients.
    dnn::batch_norm1d<float> bn(3);
    bn(test::dev(tensor<float, 2>{{1.f, 2.f, 3.f}, {3.f, 5.f, 9.f}}));
    const tensor<float, 1> mean = test::host(bn.running_mean.value);
    const tensor<float, 1> var = test::host(bn.running_var.value);
    const auto empty = dtensor<float, 2>::from_shape({0, 3});
    const auto& y = bn(empty);
    BOOST_TEST(y.shape()[0] == 0u);
    BOOST_TEST(y.shape()[1] == 3u);
    BOOST_TEST(tracked(bn) == 2);
    BOOST_TEST((test::host(bn.running_mean.value) == mean));
    BOOST_TEST((test::host(bn.running_var.value) == var));
    bn.zero_grad();
    BOOST_TEST(bn.backward(empty).size() == 0u);
    BOOST_TEST((test::host(bn.weight.grad()) == xt::zeros<float>({3})));
    BOOST_TEST((test::host(bn.bias.grad()) == xt::zeros<float>({3})));
}

BOOST_AUTO_TEST_CASE(batch_norm_wrong_channel_count_names_both_shapes)
{
    dnn::batch_norm1d<float> bn(4);
    const auto x = dtensor<float, 2>::from_shape({3, 5});
    BOOST_TEST(message_of<shape_error>([&] { bn(x); }) ==
               "batch_norm1d: input of shape [3, 5], expected [N, 4]");
}

BOOST_AUTO_TEST_CASE(batch_norm_state_dict_has_torch_keys_and_a_0d_int64_counter)
{
    dnn::batch_norm1d<float> bn(4);
    auto sd = bn.state_dict();
    BOOST_TEST(sd.keys() == (std::vector<std::string>{"weight", "bias", "running_mean",
                                                      "running_var", "num_batches_tracked"}));
    BOOST_TEST(sd.at("num_batches_tracked").dim() == 0u);
    BOOST_TEST((sd.at("num_batches_tracked").dtype() == dtype::int64));
    BOOST_TEST(sd.at("num_batches_tracked").item<std::int64_t>() == 0);
    BOOST_TEST(sd.at("running_var").data<float>()[0] == 1.f);
    BOOST_TEST(bn.parameters().size() == 2u);

    dnn::batch_norm1d<float> plain(4, 1e-5, 0.1, false, false);
    BOOST_TEST(plain.state_dict().keys().empty());
    BOOST_TEST(plain.parameters().empty());
}

BOOST_AUTO_TEST_CASE(batch_norm_state_dict_round_trips_the_counter_and_statistics)
{
    dnn::batch_norm1d<double> a(3);
    generator g(13);
    for (int step = 0; step < 4; ++step)
        a(test::dev(randn<double>({5, 3}, g)));
    dnn::batch_norm1d<double> b(3, 1e-5, std::nullopt);
    b.load_state_dict(a.state_dict());
    BOOST_TEST(tracked(b) == 4);
    BOOST_TEST((test::host(b.running_var.value) == test::host(a.running_var.value)));
    // The cumulative average continues from the loaded count: factor 1 / 5 on the next batch.
    const tensor<double, 1> mean_before = test::host(b.running_mean.value);
    const tensor<double, 2> x = randn<double>({5, 3}, g);
    b(test::dev(x));
    BOOST_TEST(tracked(b) == 5);
    const tensor<double, 1> mean_after = test::host(b.running_mean.value);
    for (std::size_t j = 0; j < 3; ++j)
    {
        double batch_mean = 0;
        for (std::size_t i = 0; i < 5; ++i)
            batch_mean += x(i, j);
        batch_mean /= 5;
        BOOST_TEST(std::abs(mean_after(j) - (0.2 * batch_mean + 0.8 * mean_before(j))) < 1e-12);
    }
}

BOOST_AUTO_TEST_CASE(batch_norm_without_running_stats_uses_batch_stats_in_eval)
{
    dnn::batch_norm1d<double> bn(2, 1e-5, 0.1, true, false);
    bn.eval();
    const tensor<double, 2> y = test::host(bn(test::dev(tensor<double, 2>{{1., 10.}, {3., 30.}})));
    BOOST_TEST(std::abs(y(0, 0) + 1.0) < 1e-5);
    BOOST_TEST(std::abs(y(1, 1) - 1.0) < 1e-5);
}

BOOST_AUTO_TEST_CASE(batch_norm_passes_gradcheck_in_training_and_eval)
{
    dnn::batch_norm1d<double> bn(3);
    bn.weight.value = test::dev(tensor<double, 1>{1.5, -0.5, 2.0});
    bn.bias.value = test::dev(tensor<double, 1>{0.1, 0.2, -0.3});
    generator g(4);
    tensor<double, 2> x = randn<double>({5, 3}, g);
    auto r = nn::gradcheck(bn, x);
    BOOST_TEST(r.ok, r.message);

    bn.running_mean.value = test::dev(tensor<double, 1>{0.3, -0.2, 1.0});
    bn.running_var.value = test::dev(tensor<double, 1>{0.5, 2.0, 1.5});
    bn.eval();
    auto r2 = nn::gradcheck(bn, x);
    BOOST_TEST(r2.ok, r2.message);

    dnn::batch_norm1d<double> plain(3, 1e-5, 0.1, false);
    auto r3 = nn::gradcheck(plain, x);
    BOOST_TEST(r3.ok, r3.message);
}

/* ------------------------------------------------------------------ flatten, identity */

BOOST_AUTO_TEST_CASE(flatten_keeps_the_batch_axis_and_backward_restores_the_shape)
{
    dnn::flatten<double, 3> f;
    const auto x = GOLDEN(input_2x3x5);
    const auto xd = test::dev(x);
    CHECK_GOLDEN_EXACT(f(xd), flatten_rank3_forward);
    const dtensor<double, 2> dy = f(xd);
    BOOST_TEST((test::host(f.backward(dy)) == x));
    BOOST_TEST(nn::gradcheck(f, x).ok);
}

BOOST_AUTO_TEST_CASE(identity_passes_values_and_gradients_through)
{
    dnn::identity<double> id;
    const tensor<double, 2> x = {{1., 2.}};
    const auto xd = test::dev(x);
    const auto& y = id(xd);
    BOOST_TEST((test::host(y) == x));
    BOOST_TEST(&y != &xd);
    BOOST_TEST(nn::gradcheck(id, away_from_zero(2, 3, 1)).ok);
}

/* ------------------------------------------------------------------ sequential */

// What a user writes without naming a device: the layers deduce cpu.
static_assert(std::is_same_v<decltype(nn::sequential{nn::linear(1, 1), nn::relu()}),
                             nn::sequential<nn::linear<float, cpu>, nn::relu<float, 2, cpu>>>);

BOOST_AUTO_TEST_CASE(sequential_is_deduced_from_its_modules)
{
    manual_seed(0);
    nn::sequential model{dnn::linear<>(784, 256), dnn::relu<>(), dnn::linear<>(256, 10)};
    static_assert(
        std::is_same_v<decltype(model), nn::sequential<dnn::linear<>, dnn::relu<>, dnn::linear<>>>);
    static_assert(std::is_same_v<decltype(model)::value_type, float>);
    static_assert(std::is_same_v<decltype(model)::device_type, test_device>);
    static_assert(decltype(model)::size() == 3);
    BOOST_TEST(model.get<2>().out_features() == 10u);
    const auto x = test::dev(filled<float, 2>({3, 784}, 0.5f));
    const auto& y = model(x);
    BOOST_TEST(y.shape()[0] == 3u);
    BOOST_TEST(y.shape()[1] == 10u);
    BOOST_TEST(&y == &model.get<2>()(model.get<1>()(model.get<0>()(x))));
    BOOST_TEST(model.num_parameters() == 784u * 256 + 256 + 256 * 10 + 10);
}

BOOST_AUTO_TEST_CASE(sequential_mlp_matches_torch_autograd)
{
    manual_seed(0);
    nn::sequential mlp{dnn::linear<double>(5, 8), dnn::batch_norm1d<double>(8),
                       dnn::gelu<double>(),       dnn::linear<double>(8, 6),
                       dnn::tanh<double>(),       dnn::linear<double>(6, 3),
                       dnn::log_softmax<double>()};
    CHECK_GOLDEN_EXACT(mlp.get<0>().weight.value, mlp_init_0_weight);
    CHECK_GOLDEN_EXACT(mlp.get<0>().bias.value, mlp_init_0_bias);
    CHECK_GOLDEN_EXACT(mlp.get<3>().weight.value, mlp_init_3_weight);
    CHECK_GOLDEN_EXACT(mlp.get<3>().bias.value, mlp_init_3_bias);
    CHECK_GOLDEN_EXACT(mlp.get<5>().weight.value, mlp_init_5_weight);
    CHECK_GOLDEN_EXACT(mlp.get<5>().bias.value, mlp_init_5_bias);

    const auto x = DGOLDEN(mlp_input);
    CHECK_GOLDEN(mlp(x), mlp_output, 1e-10);
    CHECK_GOLDEN(mlp.backward(DGOLDEN(mlp_upstream)), mlp_input_grad, 1e-10);
    auto grads = mlp.named_parameters();
    BOOST_TEST_REQUIRE(grads.size() == 8u);
    BOOST_TEST(grads[0].first == "0.weight");
    BOOST_TEST(grads[2].first == "1.weight");
    BOOST_TEST(grads[7].first == "5.bias");
    BOOST_TEST(worst_error(grad_of(grads[0].second), gl::mlp_grad_0_weight) <= 1e-10);
    BOOST_TEST(worst_error(grad_of(grads[1].second), gl::mlp_grad_0_bias) <= 1e-10);
    BOOST_TEST(worst_error(grad_of(grads[2].second), gl::mlp_grad_1_weight) <= 1e-10);
    BOOST_TEST(worst_error(grad_of(grads[3].second), gl::mlp_grad_1_bias) <= 1e-10);
    BOOST_TEST(worst_error(grad_of(grads[4].second), gl::mlp_grad_3_weight) <= 1e-10);
    BOOST_TEST(worst_error(grad_of(grads[5].second), gl::mlp_grad_3_bias) <= 1e-10);
    BOOST_TEST(worst_error(grad_of(grads[6].second), gl::mlp_grad_5_weight) <= 1e-10);
    BOOST_TEST(worst_error(grad_of(grads[7].second), gl::mlp_grad_5_bias) <= 1e-10);
    CHECK_GOLDEN(mlp.get<1>().running_mean.value, mlp_running_mean, 1e-14);
    CHECK_GOLDEN(mlp.get<1>().running_var.value, mlp_running_var, 1e-14);

    mlp.eval();
    no_grad guard;
    CHECK_GOLDEN(mlp(x), mlp_eval_output, 1e-10);
}

BOOST_AUTO_TEST_CASE(sequential_state_dict_keys_match_torch)
{
    nn::sequential seq{dnn::linear<>(3, 4), dnn::batch_norm1d<>(4)};
    auto sd = seq.state_dict();
    BOOST_TEST(sd.keys() == std::vector<std::string>(std::begin(gl::linear_bn_state_dict_keys),
                                                     std::end(gl::linear_bn_state_dict_keys)),
               boost::test_tools::per_element());
    BOOST_TEST(sd.at("1.num_batches_tracked").dim() == gl::linear_bn_num_batches_tracked_dim);
    BOOST_TEST((sd.at("1.num_batches_tracked").dtype() == dtype::int64));
    BOOST_TEST(seq.parameters().size() == 4u);

    nn::sequential copy{dnn::linear<>(3, 4), dnn::batch_norm1d<>(4)};
    copy.load_state_dict(sd);
    BOOST_TEST((test::host(copy.get<0>().weight.value) == test::host(seq.get<0>().weight.value)));
}

BOOST_AUTO_TEST_CASE(sequential_moves_between_cpu_and_the_test_device)
{
    manual_seed(11);
    using cpu_model = nn::sequential<nn::linear<double>, nn::batch_norm1d<double>, nn::relu<double>,
                                     nn::linear<double>>;
    using dev_model = nn::sequential<dnn::linear<double>, dnn::batch_norm1d<double>,
                                     dnn::relu<double>, dnn::linear<double>>;
    cpu_model a{nn::linear<double>(4, 6), nn::batch_norm1d<double>(6), nn::relu<double>(),
                nn::linear<double>(6, 2)};
    generator g(3);
    const tensor<double, 2> x = randn<double>({5, 4}, g);
    a(x); // running statistics and num_batches_tracked move too
    a.eval();
    auto b = ember::to<dev_model>(a, dnn::linear<double>(4, 6), dnn::batch_norm1d<double>(6),
                                  dnn::relu<double>(), dnn::linear<double>(6, 2));
    BOOST_TEST(!b.is_training());
    BOOST_TEST(!b.get<1>().is_training());
    BOOST_TEST(tracked(b.get<1>()) == 1);
    const tensor<double, 2> y_cpu = a(x);
    const tensor<double, 2> y_dev = test::host(b(test::dev(x)));
    for (std::size_t i = 0; i < y_cpu.size(); ++i)
        BOOST_TEST(std::abs(y_dev.data()[i] - y_cpu.data()[i]) <=
                   tolerance<double>(0.0) * std::max(1.0, std::abs(y_cpu.data()[i])));
}

BOOST_AUTO_TEST_CASE(sequential_names_past_nine_have_two_digits)
{
    nn::sequential seq{dnn::linear<>(1, 1), dnn::relu<>(),       dnn::relu<>(),
                       dnn::relu<>(),       dnn::relu<>(),       dnn::relu<>(),
                       dnn::relu<>(),       dnn::relu<>(),       dnn::relu<>(),
                       dnn::relu<>(),       dnn::linear<>(1, 1), dnn::linear<>(1, 1, false)};
    BOOST_TEST(
        seq.state_dict().keys() ==
            (std::vector<std::string>{"0.weight", "0.bias", "10.weight", "10.bias", "11.weight"}),
        boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(train_and_eval_switch_dropout_and_batch_norm_inside_sequential)
{
    manual_seed(5);
    nn::sequential model{dnn::linear<double>(4, 6), dnn::batch_norm1d<double>(6),
                         dnn::dropout<double>(0.5)};
    generator g(8);
    const auto x = test::dev(randn<double>({10, 4}, g));

    model.eval();
    BOOST_TEST(!model.get<1>().is_training());
    BOOST_TEST(!model.get<2>().is_training());
    const tensor<double, 2> e1 = test::host(model(x));
    const tensor<double, 2> e2 = test::host(model(x));
    BOOST_TEST((e1 == e2));
    BOOST_TEST(tracked(model.get<1>()) == 0);
    // In eval, batch norm uses its fresh running stats (mean 0, var 1) and dropout nothing.
    const tensor<double, 2> lin = test::host(model.get<0>()(x));
    BOOST_TEST(std::abs(e1(0, 0) - lin(0, 0) / std::sqrt(1 + 1e-5)) < 1e-12);

    model.train();
    BOOST_TEST(model.get<2>().is_training());
    const tensor<double, 2> t1 = test::host(model(x));
    const tensor<double, 2> t2 = test::host(model(x));
    BOOST_TEST(tracked(model.get<1>()) == 2);
    BOOST_TEST((t1 != t2)); // fresh dropout masks
    std::size_t zeros = std::count(t1.begin(), t1.end(), 0.0);
    BOOST_TEST(zeros > 0u);
    BOOST_TEST(zeros < t1.size());
}

BOOST_AUTO_TEST_CASE(sequential_passes_gradcheck)
{
    manual_seed(2);
    nn::sequential model{dnn::linear<double>(4, 5),    dnn::batch_norm1d<double>(5),
                         dnn::leaky_relu<double>(0.2), dnn::dropout<double>(0.3),
                         dnn::linear<double>(5, 3),    dnn::softmax<double>()};
    auto r = nn::gradcheck(model, away_from_zero(6, 4, 3));
    BOOST_TEST(r.ok, r.message);
}

BOOST_AUTO_TEST_CASE(gradcheck_skips_what_needs_no_gradient_and_leaves_the_gradients_as_they_were)
{
    // With requires_input_grad(false) backward returns an empty tensor, which gradcheck read
    // past; a frozen parameter's gradient (none) was compared with finite differences; and the
    // model's gradients were left overwritten. torch.autograd.gradcheck does none of these.
    manual_seed(4);
    dnn::linear<double> m(3, 2);
    m.requires_input_grad(false);
    m.weight.requires_grad = false;
    m.bias.grad().fill(7.0);
    auto r = nn::gradcheck(m, randn<double>({4, 3}));
    BOOST_TEST(r.ok, r.message);
    BOOST_TEST(!m.weight.has_grad());
    BOOST_TEST((test::host(m.bias.grad()) == tensor<double, 1>{7.0, 7.0}));

    m.requires_input_grad(true);
    m.weight.requires_grad = true;
    auto all = nn::gradcheck(m, randn<double>({4, 3}));
    BOOST_TEST(all.ok, all.message);
    BOOST_TEST(!m.weight.has_grad()); // None before, None after
    BOOST_TEST((test::host(m.bias.grad()) == tensor<double, 1>{7.0, 7.0}));
}

BOOST_AUTO_TEST_CASE(sequential_with_flatten_takes_image_batches)
{
    manual_seed(1);
    nn::sequential model{dnn::flatten<double, 4>(), dnn::linear<double>(12, 2),
                         dnn::sigmoid<double>()};
    generator g(6);
    tensor<double, 4> x = randn<double>({2, 3, 2, 2}, g);
    const auto& y = model(test::dev(x));
    BOOST_TEST(y.shape()[1] == 2u);
    auto r = nn::gradcheck(model, x);
    BOOST_TEST(r.ok, r.message);
}

BOOST_AUTO_TEST_CASE(sequential_reports_the_inner_module_on_a_wrong_shape)
{
    nn::sequential model{dnn::linear<>(4, 8), dnn::relu<>(), dnn::linear<>(8, 2)};
    const auto x = dtensor<float, 2>::from_shape({3, 5});
    BOOST_TEST(message_of<shape_error>([&] { model(x); }) ==
               "linear: input of shape [3, 5], expected [N, 4]");
}

/* ------------------------------------------------------------------ no_grad */

namespace
{
// Runs m(in) under no_grad, then expects backward to refuse.
template <class M, class X, class G>
void refuses_after_no_grad(M& m, const X& in, const G& grad)
{
    {
        no_grad guard;
        m(in);
    }
    BOOST_CHECK_THROW(m.backward(grad), error);
}
} // namespace

BOOST_AUTO_TEST_CASE(no_grad_forward_caches_nothing_so_backward_refuses)
{
    manual_seed(4);
    nn::sequential model{dnn::linear<double>(3, 4), dnn::batch_norm1d<double>(4),
                         dnn::gelu<double>(),       dnn::dropout<double>(0.2),
                         dnn::linear<double>(4, 2), dnn::softmax<double>()};
    generator g(2);
    const auto x = test::dev(randn<double>({5, 3}, g));
    const auto dy = test::dev(filled<double, 2>({5, 2}, 1.0));

    // Same outputs with and without recording.
    model.eval();
    const tensor<double, 2> recorded = test::host(model(x));
    tensor<double, 2> inference;
    {
        no_grad guard;
        inference = test::host(model(x));
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
    refuses_after_no_grad(model.get<0>(), x, dtensor<double, 2>::from_shape({5, 4}));
    tensor<double, 2> h_host = filled<double, 2>({5, 4}, 0.5);
    h_host(0, 0) = 1.0;
    const auto h = test::dev(h_host);
    refuses_after_no_grad(model.get<1>(), h, h);
    refuses_after_no_grad(model.get<2>(), h, h);
    refuses_after_no_grad(model.get<3>(), h, h);
    refuses_after_no_grad(model.get<5>(), h, h);
    dnn::relu<double> relu;
    refuses_after_no_grad(relu, h, h);
    dnn::leaky_relu<double> leaky;
    refuses_after_no_grad(leaky, h, h);
    dnn::sigmoid<double> sigmoid;
    refuses_after_no_grad(sigmoid, h, h);
    dnn::tanh<double> tanh;
    refuses_after_no_grad(tanh, h, h);
    dnn::log_softmax<double> log_softmax;
    refuses_after_no_grad(log_softmax, h, h);
    dnn::identity<double> id;
    refuses_after_no_grad(id, h, h);
    dnn::flatten<double, 2> flat;
    refuses_after_no_grad(flat, h, h);

    // With recording on again, backward works.
    model(x);
    BOOST_CHECK_NO_THROW(model.backward(dy));
}

BOOST_AUTO_TEST_CASE(backward_before_any_forward_is_an_error)
{
    dnn::linear<> m(2, 2);
    BOOST_CHECK_THROW(m.backward(dtensor<float, 2>::from_shape({1, 2})), error);
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
    {
        const auto g = grad_of(p);
        out.insert(out.end(), g.begin(), g.end());
    }
    return out;
}

// |g| summed over a parameter's gradient.
template <class P>
double abs_sum(const P& p)
{
    const auto g = test::host(p.grad());
    return xt::sum(xt::abs(g))();
}
} // namespace

BOOST_AUTO_TEST_CASE(linear_without_input_grad_returns_an_empty_tensor_and_the_same_grads)
{
    manual_seed(5);
    dnn::linear<double> with(4, 3);
    dnn::linear<double> without = with;
    without.requires_input_grad(false);
    BOOST_TEST(with.requires_input_grad());
    BOOST_TEST(!without.requires_input_grad());
    const auto x = test::dev(away_from_zero(6, 4, 1));
    const auto dy = test::dev(away_from_zero(6, 3, 2));
    with(x);
    without(x);
    BOOST_TEST(with.backward(dy).size() == 24u);
    const auto& none = without.backward(dy);
    BOOST_TEST(none.size() == 0u);
    BOOST_TEST(all_grads(without) == all_grads(with), boost::test_tools::per_element());

    // Back on, the input gradient is computed again (not a stale one).
    without.requires_input_grad(true);
    without(x);
    const tensor<double, 2> dx = test::host(without.backward(dy));
    BOOST_TEST((dx == test::host(with.backward(dy))));
}

BOOST_AUTO_TEST_CASE(sequential_without_input_grad_skips_only_what_nothing_needs)
{
    manual_seed(6);
    // A leading activation sees only the input; the first linear too (nothing before it
    // learns); the second linear's input gradient feeds the first linear's weights.
    nn::sequential with{dnn::relu<double>(), dnn::linear<double>(4, 5), dnn::tanh<double>(),
                        dnn::linear<double>(5, 2)};
    auto without = with;
    without.requires_input_grad(false);
    BOOST_TEST(!without.requires_input_grad());
    BOOST_TEST(!without.get<0>().requires_input_grad());
    BOOST_TEST(!without.get<1>().requires_input_grad());
    BOOST_TEST(without.get<2>().requires_input_grad());
    BOOST_TEST(without.get<3>().requires_input_grad());

    const auto x = test::dev(away_from_zero(3, 4, 3));
    const auto dy = test::dev(away_from_zero(3, 2, 4));
    with(x);
    without(x);
    BOOST_TEST(with.backward(dy).size() == 12u);
    BOOST_TEST(without.backward(dy).size() == 0u);
    BOOST_TEST(all_grads(without) == all_grads(with), boost::test_tools::per_element());

    without.requires_input_grad(true);
    BOOST_TEST(without.get<1>().requires_input_grad());
    without(x);
    const tensor<double, 2> dx = test::host(without.backward(dy));
    BOOST_TEST((dx == test::host(with.backward(dy))));
}

BOOST_AUTO_TEST_CASE(sequential_without_input_grad_stops_before_frozen_layers)
{
    manual_seed(7);
    nn::sequential model{dnn::flatten<double, 4>(), dnn::linear<double>(12, 4), dnn::relu<double>(),
                         dnn::linear<double>(4, 2)};
    model.get<1>().weight.requires_grad = false;
    model.get<1>().bias.requires_grad = false;
    model.requires_input_grad(false);
    // Nothing before the last linear learns, so it needs no input gradient either.
    BOOST_TEST(!model.get<3>().requires_input_grad());

    generator g(8);
    const auto x = test::dev(randn<double>({2, 3, 2, 2}, g));
    const auto dy = test::dev(filled<double, 2>({2, 2}, 1.0));
    model(x);
    // flatten would refuse the empty gradient: backward must stop before it.
    BOOST_TEST(model.backward(dy).size() == 0u);
    BOOST_TEST(abs_sum(model.get<3>().weight) > 0.0);
    BOOST_TEST(abs_sum(model.get<1>().weight) == 0.0);
}

BOOST_AUTO_TEST_CASE(nested_sequential_passes_the_setting_to_its_first_modules)
{
    manual_seed(9);
    nn::sequential inner{dnn::linear<double>(3, 4), dnn::relu<double>()};
    nn::sequential model{inner, dnn::linear<double>(4, 2)};
    model.requires_input_grad(false);
    BOOST_TEST(!model.get<0>().get<0>().requires_input_grad());
    BOOST_TEST(model.get<1>().requires_input_grad());
    const auto x = test::dev(away_from_zero(2, 3, 10));
    const auto dy = test::dev(away_from_zero(2, 2, 11));
    model(x);
    BOOST_TEST(model.backward(dy).size() == 0u);
    BOOST_TEST(abs_sum(model.get<0>().get<0>().weight) > 0.0);
}

BOOST_AUTO_TEST_CASE(relu_backward_is_exactly_zero_where_the_output_is_not_positive)
{
    // torch.relu's backward (threshold_backward) selects: an infinite gradient where the
    // output is 0 gives 0, not inf * 0 = NaN; a NaN gradient where it is positive stays NaN;
    // a NaN input gives a NaN output, which lets the gradient through (y <= 0 is false).
    dnn::relu<double> relu;
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const tensor<double, 2> y =
        test::host(relu(test::dev(tensor<double, 2>{{-1.0, 2.0, 0.0, nan}})));
    BOOST_TEST(std::isnan(y(0, 3)));
    const double inf = std::numeric_limits<double>::infinity();
    const auto dy = test::dev(tensor<double, 2>{{inf, nan, inf, 3.0}});
    const tensor<double, 2> dx = test::host(relu.backward(dy));
    BOOST_TEST(dx(0, 0) == 0.0);
    BOOST_TEST(std::isnan(dx(0, 1)));
    BOOST_TEST(dx(0, 2) == 0.0);
    BOOST_TEST(dx(0, 3) == 3.0);
}

/* ------------------------------------------------------------------ own output */

namespace
{
// A parameter's gradient, whatever its rank, on the host.
template <class Ref>
std::vector<float> grad_values(const Ref& p)
{
    const auto g = p.grad();
    std::vector<float> v(g.size());
    test_device::download(g.data(), g.size(), v.data());
    return v;
}

// `m(m(x))`, the module given its own output (a layer applied twice, an unrolled loop
// `h = &fc(*h)`), must compute what a copy of `m` computes given a copy of that output: the
// same forward, input gradient and parameter gradients, to the bit. `seed` is set before each
// forward, so dropout draws the same masks both ways.
template <class M>
void check_own_output(M m, const tensor<float, 2>& x, const tensor<float, 2>& dy, const char* what)
{
    BOOST_TEST_CONTEXT(what)
    {
        M copy = m;
        const auto dx_in = test::dev(x);
        const auto ddy = test::dev(dy);

        manual_seed(7);
        const auto h = copy(dx_in); // a copy of the first output
        manual_seed(8);
        const tensor<float, 2> y_expected = test::host(copy(h));
        const tensor<float, 2> dx_expected = test::host(copy.backward(ddy));

        manual_seed(7);
        const auto& first = m(dx_in);
        manual_seed(8);
        const tensor<float, 2> y = test::host(m(first));
        const tensor<float, 2> dx = test::host(m.backward(ddy));

        BOOST_TEST(y == y_expected, boost::test_tools::per_element());
        BOOST_TEST(dx == dx_expected, boost::test_tools::per_element());
        const auto params = m.named_parameters();
        const auto expected = copy.named_parameters();
        BOOST_REQUIRE_EQUAL(params.size(), expected.size());
        for (std::size_t i = 0; i < params.size(); ++i)
            BOOST_TEST(grad_values(params[i].second) == grad_values(expected[i].second),
                       params[i].first << ": " << boost::test_tools::per_element());
    }
}
} // namespace

BOOST_AUTO_TEST_CASE(a_module_given_its_own_output_computes_what_it_computes_on_a_copy)
{
    generator g(31);
    for (const std::size_t batch : {3u, 16u}) // linear's product both ways round (m3l)
    {
        const tensor<float, 2> x = randn<float>({batch, 5}, g);
        const tensor<float, 2> dy = randn<float>({batch, 5}, g);
        manual_seed(3);
        check_own_output(dnn::linear<>(5, 5), x, dy, "linear");
        check_own_output(dnn::linear<>(5, 5, /*bias=*/false), x, dy, "linear without bias");
        check_own_output(dnn::relu<>(), x, dy, "relu");
        check_own_output(dnn::leaky_relu<>(0.2), x, dy, "leaky_relu");
        check_own_output(dnn::sigmoid<>(), x, dy, "sigmoid");
        check_own_output(dnn::tanh<>(), x, dy, "tanh");
        check_own_output(dnn::gelu<>(), x, dy, "gelu");
        check_own_output(dnn::gelu<>("tanh"), x, dy, "gelu tanh");
        check_own_output(dnn::softmax<>(), x, dy, "softmax");
        check_own_output(dnn::log_softmax<>(), x, dy, "log_softmax");
        check_own_output(dnn::dropout<>(0.3), x, dy, "dropout");
        check_own_output(dnn::identity<>(), x, dy, "identity");
        dnn::batch_norm1d<> bn(5);
        bn.weight.value = test::dev(tensor<float, 1>{2.f, 0.5f, -1.f, 1.5f, -0.25f});
        bn.bias.value = test::dev(tensor<float, 1>{1.f, -1.f, 0.5f, 0.f, 2.f});
        check_own_output(bn, x, dy, "batch_norm1d in training");
        bn.eval();
        check_own_output(bn, x, dy, "batch_norm1d in eval");
        check_own_output(nn::sequential{dnn::linear<>(5, 5), dnn::tanh<>()}, x, dy, "sequential");
        no_grad guard; // forward only: the layers keep nothing, and must still read x first
        manual_seed(3);
        dnn::linear<> fc(5, 5);
        dnn::linear<> fc_copy = fc;
        const auto first = fc_copy(test::dev(x)); // a copy, on the device
        const tensor<float, 2> expected = test::host(fc_copy(first));
        BOOST_TEST(test::host(fc(fc(test::dev(x)))) == expected, boost::test_tools::per_element());
    }
}

BOOST_AUTO_TEST_CASE(float_log_softmax_keeps_its_digits_for_large_logits)
{
    // PyTorch's order, (x - max) - log(sum): the result is accurate to the float rounding of
    // its own size however large the logits. x - (max + log(sum)) rounds the shift at the
    // scale of max and was off by 3e-5 at logits near 1000 and 5e-4 near 10000.
    generator g(41);
    for (const float scale : {1.f, 1000.f, 10000.f})
    {
        tensor<float, 2> x = randn<float>({8, 37}, g);
        for (auto& v : x)
            v = v * 3.f + scale;
        dnn::log_softmax<> log_softmax;
        const tensor<float, 2> y = test::host(log_softmax(test::dev(x)));
        double worst = 0;
        for (std::size_t r = 0; r < 8; ++r)
        {
            double mx = x(r, 0);
            for (std::size_t j = 0; j < 37; ++j)
                mx = std::max(mx, static_cast<double>(x(r, j)));
            double sum = 0;
            for (std::size_t j = 0; j < 37; ++j)
                sum += std::exp(static_cast<double>(x(r, j)) - mx);
            for (std::size_t j = 0; j < 37; ++j)
            {
                const double exact = static_cast<double>(x(r, j)) - mx - std::log(sum);
                worst = std::max(worst, std::abs(y(r, j) - exact));
            }
        }
        BOOST_TEST(worst < 4e-6, "logits near " << scale << ": off by " << worst);
    }
}

/* ------------------------------------------------------------------ device memory */

#if defined(EMBER_TEST_HAS_THRUST)
namespace
{
// Thrust's sequential back end, declared not host-readable: the code paths a GPU takes
// (dropout's mask drawn into a host buffer and uploaded, gradcheck's element transfers) run
// here, on machines without one.
struct not_host_backend : ember::thrust_cpp_backend
{
    static constexpr bool host_memory = false;
};
using not_host = ember::thrust_device<not_host_backend>;
} // namespace

BOOST_AUTO_TEST_CASE(dropout_uploads_the_mask_cpu_draws_where_the_host_cannot_write)
{
    generator g(5);
    const tensor<double, 2> x = randn<double>({9, 11}, g);
    const tensor<double, 2> dy = randn<double>({9, 11}, g);
    nn::dropout<double> on_cpu(0.35);
    nn::dropout<double, 2, not_host> elsewhere(0.35);
    for (int step = 0; step < 3; ++step)
    {
        manual_seed(step);
        const tensor<double, 2> y_cpu = on_cpu(x);
        manual_seed(step);
        BOOST_TEST((ember::to_host(elsewhere(ember::to<not_host>(x))) == y_cpu));
        const tensor<double, 2> dx_cpu = on_cpu.backward(dy);
        BOOST_TEST((ember::to_host(elsewhere.backward(ember::to<not_host>(dy))) == dx_cpu));
    }
    manual_seed(2);
    nn::sequential model{nn::linear<double, not_host>(11, 5), nn::batch_norm1d<double, not_host>(5),
                         nn::dropout<double, 2, not_host>(0.2), nn::gelu<double, 2, not_host>()};
    const auto r = nn::gradcheck(model, x);
    BOOST_TEST(r.ok, r.message);
}
#endif

// The optimizers' cpu loops in every instruction set ember compiles them for
// (detail/simd_dispatch.hpp), and in parts on several threads, against plain scalar loops in
// PyTorch's order of operations, bit for bit. Built at the build's optimization level (-O3 in a
// release build), not at the -O1 of the other test files: at -O1 GCC neither vectorizes nor
// contracts, so the loops users run would go unchecked.
#include "test_files.hpp"

#include <ember/detail/parallel.hpp>
#include <ember/detail/simd_dispatch.hpp>
#include <ember/nn/parameter.hpp>
#include <ember/optim/optimizers.hpp>

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <iomanip>
#include <random>
#include <sstream>
#include <tuple>
#include <type_traits>
#include <vector>

using namespace ember;

// On the cpu, the optimizers' loops run in the widest instruction set the CPU has that ember
// compiles them for (baseline x86-64, AVX2 or AVX-512: detail/simd_dispatch.hpp). Every variant
// must give, bit for bit, what a plain scalar loop in PyTorch's order of operations gives: one
// multiply-add contracted into an FMA, or any other reordering, changes last bits within a few
// steps.
namespace
{

// The reference loops are plain code compiled for the build's target; keep them uncontracted
// even where that target has FMA (-march=native).
#if defined(__clang__)
#define REFERENCE_NO_FP_CONTRACT _Pragma("clang fp contract(off)")
#define REFERENCE_ATTRIBUTES
#elif defined(__GNUC__)
#define REFERENCE_NO_FP_CONTRACT
#define REFERENCE_ATTRIBUTES __attribute__((optimize("fp-contract=off")))
#else
#define REFERENCE_NO_FP_CONTRACT
#define REFERENCE_ATTRIBUTES
#endif

// `a + alpha * b` as PyTorch's add(alpha=): an FMA where the build's target has one (see
// detail::add_scaled).
template <class T>
REFERENCE_ATTRIBUTES T reference_add_scaled(T a, T alpha, T b)
{
    REFERENCE_NO_FP_CONTRACT
#if defined(__FMA__)
    return std::fma(alpha, b, a);
#else
    return a + alpha * b;
#endif
}

template <class T>
T reference_maximum(T a, T b)
{
    return (a != a || a > b) ? a : b; // torch.maximum: NaN wins
}

// torch.optim.Adam (Decoupled: AdamW), one element at a time.
template <class T, class Options, bool Decoupled>
struct adam_reference
{
    Options o;
    std::vector<T> m, v, vmax;
    float step = 0;

    REFERENCE_ATTRIBUTES void update(std::vector<T>& x, const std::vector<T>& g)
    {
        REFERENCE_NO_FP_CONTRACT
        const std::size_t n = x.size();
        m.resize(n), v.resize(n), vmax.resize(n);
        step += 1.0f;
        const double bc1 = 1 - std::pow(o.betas[0], double(step));
        const double bc2 = 1 - std::pow(o.betas[1], double(step));
        const T sign = o.maximize ? T(-1) : T(1);
        const T wd = static_cast<T>(o.weight_decay);
        const T shrink = static_cast<T>(1 - o.lr * o.weight_decay);
        const T beta1 = static_cast<T>(o.betas[0]), beta2 = static_cast<T>(o.betas[1]);
        const T omb1 = static_cast<T>(1 - o.betas[0]), omb2 = static_cast<T>(1 - o.betas[1]);
        const T bc2_sqrt = static_cast<T>(std::sqrt(bc2));
        const T eps = static_cast<T>(o.eps);
        const T neg_step_size = static_cast<T>(-(o.lr / bc1));
        for (std::size_t i = 0; i < n; ++i)
        {
            T gi = sign * g[i];
            if (Decoupled)
                x[i] = x[i] * shrink;
            else if (o.weight_decay != 0)
                gi = reference_add_scaled(gi, wd, x[i]);
            m[i] = reference_add_scaled(m[i] * beta1, omb1, gi);
            v[i] = v[i] * beta2 + omb2 * gi * gi;
            vmax[i] = reference_maximum(vmax[i], v[i]);
            const T denom = std::sqrt(o.amsgrad ? vmax[i] : v[i]) / bc2_sqrt + eps;
            x[i] = x[i] + neg_step_size * m[i] / denom;
        }
    }
};

// torch.optim.SGD, one element at a time.
template <class T>
struct sgd_reference
{
    optim::sgd_options o;
    std::vector<T> buf;

    REFERENCE_ATTRIBUTES void update(std::vector<T>& x, const std::vector<T>& g)
    {
        REFERENCE_NO_FP_CONTRACT
        const std::size_t n = x.size();
        const bool first = buf.empty();
        buf.resize(n);
        const T sign = o.maximize ? T(-1) : T(1);
        const T wd = static_cast<T>(o.weight_decay);
        const T momentum = static_cast<T>(o.momentum);
        const T keep = static_cast<T>(1 - o.dampening);
        const T neg_lr = static_cast<T>(-o.lr);
        for (std::size_t i = 0; i < n; ++i)
        {
            T d = sign * g[i];
            if (o.weight_decay != 0)
                d = reference_add_scaled(d, wd, x[i]);
            if (o.momentum != 0)
            {
                // the first step clones d
                buf[i] = first ? d : reference_add_scaled(buf[i] * momentum, keep, d);
                d = o.nesterov ? reference_add_scaled(d, momentum, buf[i]) : buf[i];
            }
            x[i] = reference_add_scaled(x[i], neg_lr, d);
        }
    }
};

// torch.optim.RMSprop, one element at a time.
template <class T>
struct rmsprop_reference
{
    optim::rmsprop_options o;
    std::vector<T> sq, buf, ga;

    REFERENCE_ATTRIBUTES void update(std::vector<T>& x, const std::vector<T>& g)
    {
        REFERENCE_NO_FP_CONTRACT
        const std::size_t n = x.size();
        sq.resize(n), buf.resize(n), ga.resize(n);
        const T sign = o.maximize ? T(-1) : T(1);
        const T wd = static_cast<T>(o.weight_decay);
        const T alpha = static_cast<T>(o.alpha), oma = static_cast<T>(1 - o.alpha);
        const T eps = static_cast<T>(o.eps), momentum = static_cast<T>(o.momentum);
        const T neg_lr = static_cast<T>(-o.lr);
        for (std::size_t i = 0; i < n; ++i)
        {
            T gi = sign * g[i];
            if (o.weight_decay != 0)
                gi = reference_add_scaled(gi, wd, x[i]);
            sq[i] = sq[i] * alpha + oma * gi * gi;
            T root = sq[i];
            if (o.centered)
            {
                ga[i] = reference_add_scaled(ga[i] * alpha, oma, gi);
                root = sq[i] + T(-1) * ga[i] * ga[i];
            }
            const T avg = std::sqrt(root) + eps;
            if (o.momentum > 0)
            {
                buf[i] = buf[i] * momentum + gi / avg;
                x[i] = reference_add_scaled(x[i], neg_lr, buf[i]);
            }
            else
                x[i] = x[i] + neg_lr * gi / avg;
        }
    }
};

// Puts the dispatch limit back however a test ends.
struct simd_limit_guard
{
    ~simd_limit_guard() { ember::detail::reset_simd_isa(); }
};

const char* isa_name(ember::detail::simd_isa isa)
{
    switch (isa)
    {
    case ember::detail::simd_isa::avx512:
        return "avx512";
    case ember::detail::simd_isa::avx2:
        return "avx2";
    case ember::detail::simd_isa::baseline:
        break;
    }
    return "baseline";
}

// The variants to check: every one the CPU runs, also those host_simd_isa() does not pick on it
// (AVX-512 on Zen 4 and Intel). A build whose own target has FMA (-march=native) contracts the
// baseline loop as the compiler likes; the dispatched variants never contract, so there the
// baseline is left out.
std::vector<ember::detail::simd_isa> variants_to_check()
{
    using ember::detail::simd_isa;
#if defined(__FMA__)
    const simd_isa first = simd_isa::avx2;
#else
    const simd_isa first = simd_isa::baseline;
#endif
    std::vector<simd_isa> out;
    for (auto isa = first; isa <= ember::detail::runnable_simd_isa(); isa = simd_isa(int(isa) + 1))
        out.push_back(isa);
    return out;
}

// `steps` steps of Optimizer(options) on one parameter of n elements (by default several
// 256-element blocks and a ragged tail), random values and gradients of mixed magnitudes, in
// every variant this CPU runs; after each step the parameter must equal the reference's bit for
// bit.
template <class T, class Optimizer, class Options, class Reference>
void check_variants_against_reference(const Options& options, Reference reference, const char* what,
                                      std::size_t n = 3 * 256 + 77, int steps = 300)
{
    using ember::detail::simd_isa;
    std::mt19937 rng(20261129);
    std::uniform_real_distribution<T> unit(T(-1), T(1));
    std::uniform_int_distribution<int> exponent(-6, 2);
    std::vector<T> x0(n);
    for (T& v : x0)
        v = unit(rng);
    std::vector<std::vector<T>> grads(steps, std::vector<T>(n));
    for (auto& g : grads)
        for (T& v : g)
            v = std::ldexp(unit(rng), exponent(rng));

    simd_limit_guard guard;
    for (const simd_isa isa : variants_to_check())
    {
        ember::detail::limit_simd_isa(isa);
        BOOST_TEST(isa_name(ember::detail::active_simd_isa()) == isa_name(isa));
        nn::parameter<T, 1, cpu> p{tensor<T, 1>::from_shape({n})};
        std::copy(x0.begin(), x0.end(), p.value.data());
        Optimizer opt({nn::param_ref<T, cpu>(p)}, options);
        Reference ref = reference;
        std::vector<T> x = x0;
        for (int s = 0; s < steps; ++s)
        {
            std::copy(grads[s].begin(), grads[s].end(), p.grad().data());
            opt.step();
            ref.update(x, grads[s]);
            if (std::memcmp(p.value.data(), x.data(), n * sizeof(T)) != 0)
            {
                std::size_t i = 0;
                while (std::memcmp(p.value.data() + i, x.data() + i, sizeof(T)) == 0)
                    ++i;
                std::ostringstream msg;
                msg.precision(std::is_same_v<T, float> ? 9 : 17);
                msg << what << " (" << isa_name(isa) << "): step " << s + 1 << ", element " << i
                    << ": " << p.value.data()[i] << ", the scalar loop gives " << x[i];
                BOOST_ERROR(msg.str());
                break;
            }
        }
        BOOST_TEST_MESSAGE(what << ": " << isa_name(isa) << " checked");
    }
}

using float_types = std::tuple<float, double>;

// At batch 1 a linear layer keeps its weight gradient as the outer product of two vectors, and
// the optimizers write it out a piece at a time inside their own variant
// (optim::detail::grad_pieces). Every variant must step as the scalar loop does from the
// product's gradient, computed here as std::fma(u_i, v_j, +0): 37 x 61 = 2,257 weights, so that
// pieces and blocks start mid-row, and zeros of both signs among the vectors.
template <class T, class Optimizer, class Options, class Reference>
void check_outer_product_variants(const Options& options, Reference reference, const char* what)
{
    using ember::detail::simd_isa;
    const std::size_t rows = 37, cols = 61, n = rows * cols;
    const int steps = 20;
    std::mt19937 rng(20261205);
    std::uniform_real_distribution<T> unit(T(-1), T(1));
    std::vector<T> x0(n);
    for (T& v : x0)
        v = unit(rng);
    std::vector<std::vector<T>> left(steps, std::vector<T>(rows)),
        right(steps, std::vector<T>(cols));
    for (int s = 0; s < steps; ++s)
    {
        for (T& v : left[s])
            v = unit(rng);
        for (T& v : right[s])
            v = unit(rng);
        left[s][s % rows] = T(-0.0);
        right[s][(3 * s) % cols] = T(-0.0);
        right[s][(3 * s + 1) % cols] = T(0);
    }
    simd_limit_guard guard;
    for (const simd_isa isa : variants_to_check())
    {
        ember::detail::limit_simd_isa(isa);
        nn::parameter<T, 2, cpu> p{tensor<T, 2>::from_shape({rows, cols})};
        std::copy(x0.begin(), x0.end(), p.value.data());
        Optimizer opt({nn::param_ref<T, cpu>(p)}, options);
        Reference ref = reference;
        std::vector<T> x = x0, g(n);
        for (int s = 0; s < steps; ++s)
        {
            p.zero_grad();
            BOOST_REQUIRE(p.keep_grad_as_outer(left[s], right[s]));
            opt.step();
            for (std::size_t i = 0; i < rows; ++i)
                for (std::size_t j = 0; j < cols; ++j)
                    g[i * cols + j] = std::fma(left[s][i], right[s][j], T(0));
            ref.update(x, g);
            const std::size_t differ = [&]
            {
                std::size_t d = 0;
                for (std::size_t k = 0; k < n; ++k)
                    d += std::memcmp(p.value.data() + k, x.data() + k, sizeof(T)) != 0;
                return d;
            }();
            BOOST_TEST(differ == 0u, what << " (" << isa_name(isa) << "), step " << s + 1);
            if (differ != 0)
                break;
        }
        BOOST_TEST(std::memcmp(p.grad().data(), g.data(), n * sizeof(T)) == 0,
                   what << " (" << isa_name(isa) << "): grad() writes the last product out");
    }
}

} // namespace

BOOST_AUTO_TEST_CASE_TEMPLATE(every_cpu_simd_variant_matches_a_scalar_loop_bit_for_bit, T,
                              float_types)
{
    BOOST_TEST_MESSAGE("this CPU: " << isa_name(ember::detail::host_simd_isa()) << " (runs "
                                    << isa_name(ember::detail::runnable_simd_isa()) << ")");
    using adam_ref = adam_reference<T, optim::adam_options, false>;
    using adamw_ref = adam_reference<T, optim::adamw_options, true>;
    const optim::adam_options adam_default{};
    check_variants_against_reference<T, optim::adam<T, cpu>>(adam_default, adam_ref{adam_default},
                                                             "adam");
    const optim::adam_options adam_all{.lr = 3e-3,
                                       .betas = {0.8, 0.99},
                                       .eps = 1e-6,
                                       .weight_decay = 0.1,
                                       .amsgrad = true,
                                       .maximize = true};
    check_variants_against_reference<T, optim::adam<T, cpu>>(adam_all, adam_ref{adam_all},
                                                             "adam, weight decay, amsgrad");
    const optim::adamw_options adamw_all{.lr = 1e-2, .amsgrad = true};
    check_variants_against_reference<T, optim::adamw<T, cpu>>(adamw_all, adamw_ref{adamw_all},
                                                              "adamw, amsgrad");
    const optim::sgd_options sgd_momentum{.lr = 0.01, .momentum = 0.9, .dampening = 0.1};
    check_variants_against_reference<T, optim::sgd<T, cpu>>(
        sgd_momentum, sgd_reference<T>{sgd_momentum}, "sgd, momentum, dampening");
    const optim::sgd_options sgd_nesterov{
        .lr = 0.05, .momentum = 0.9, .weight_decay = 1e-3, .nesterov = true};
    check_variants_against_reference<T, optim::sgd<T, cpu>>(
        sgd_nesterov, sgd_reference<T>{sgd_nesterov}, "sgd, nesterov, weight decay");
    const optim::rmsprop_options rmsprop_all{
        .lr = 1e-3, .weight_decay = 1e-2, .momentum = 0.5, .centered = true};
    check_variants_against_reference<T, optim::rmsprop<T, cpu>>(
        rmsprop_all, rmsprop_reference<T>{rmsprop_all}, "rmsprop, centered, momentum");
    const optim::rmsprop_options rmsprop_plain{};
    check_variants_against_reference<T, optim::rmsprop<T, cpu>>(
        rmsprop_plain, rmsprop_reference<T>{rmsprop_plain}, "rmsprop");
}

BOOST_AUTO_TEST_CASE_TEMPLATE(every_cpu_simd_variant_steps_from_a_kept_outer_product_bit_for_bit, T,
                              float_types)
{
    const optim::sgd_options sgd_nesterov{
        .lr = 0.05, .momentum = 0.9, .weight_decay = 1e-3, .nesterov = true};
    check_outer_product_variants<T, optim::sgd<T, cpu>>(
        sgd_nesterov, sgd_reference<T>{sgd_nesterov}, "sgd, nesterov, weight decay");
    const optim::adam_options adam_all{
        .lr = 3e-3, .weight_decay = 0.1, .amsgrad = true, .maximize = true};
    check_outer_product_variants<T, optim::adam<T, cpu>>(
        adam_all, adam_reference<T, optim::adam_options, false>{adam_all},
        "adam, weight decay, amsgrad");
    const optim::rmsprop_options rmsprop_all{
        .lr = 1e-3, .weight_decay = 1e-2, .momentum = 0.5, .centered = true};
    check_outer_product_variants<T, optim::rmsprop<T, cpu>>(
        rmsprop_all, rmsprop_reference<T>{rmsprop_all}, "rmsprop, centered, momentum");
}

// A large parameter's update runs in parts on ember's threads (optim::detail::update_in_parts):
// on any number of them, every element must still get the scalar loop's value bit for bit.
BOOST_AUTO_TEST_CASE(updates_in_parts_on_several_threads_match_a_scalar_loop_bit_for_bit)
{
    // Five minimum parts and a ragged tail: 2, 3 and 4 threads cut it differently.
    const std::size_t n = 5 * ember::detail::parallel_min_elements + 3 * 256 + 77;
    const optim::sgd_options sgd_momentum{.lr = 0.01, .momentum = 0.9, .dampening = 0.1};
    const optim::adam_options adam_all{
        .lr = 3e-3, .weight_decay = 0.1, .amsgrad = true, .maximize = true};
    const optim::rmsprop_options rmsprop_all{
        .lr = 1e-3, .weight_decay = 1e-2, .momentum = 0.5, .centered = true};
    for (int threads : {1, 2, 3, 4})
    {
        const test::threads_for_scope scope(threads);
        BOOST_TEST_CONTEXT(threads << " threads")
        {
            check_variants_against_reference<float, optim::sgd<float, cpu>>(
                sgd_momentum, sgd_reference<float>{sgd_momentum}, "sgd, momentum", n, 4);
            check_variants_against_reference<float, optim::adam<float, cpu>>(
                adam_all, adam_reference<float, optim::adam_options, false>{adam_all},
                "adam, weight decay, amsgrad", n, 4);
            check_variants_against_reference<double, optim::rmsprop<double, cpu>>(
                rmsprop_all, rmsprop_reference<double>{rmsprop_all}, "rmsprop, centered, momentum",
                n, 4);
        }
    }
}

// Adam divides each square root by bias_correction2_sqrt with a double multiply, not a division
// (optim::detail::divided_by_bias_correction, which argues it is exact). Whether a double
// product rounds to the division's float depends only on the two significands (barring
// overflow), so every float of one binade is checked against each divisor: the divisors of
// the first steps for several β2, and divisors whose significands are extreme (all ones, one
// bit past a power of two). Then roots of every exponent, and the top binade, where quotients
// overflow to inf.
BOOST_AUTO_TEST_CASE(adams_bias_correction_divide_without_a_division_gives_the_quotients_bits)
{
    std::vector<float> divisors{std::nextafter(1.0f, 0.0f), std::nextafter(0.5f, 1.0f), 0.75f,
                                1e-8f};
    for (double beta2 : {0.999, 0.3, 0.9, 0.99999})
        for (int step = 1; step <= 24; ++step)
        {
            const auto c = static_cast<float>(std::sqrt(1 - std::pow(beta2, double(step))));
            if (c != 1.0f)
                divisors.push_back(c);
        }
    const auto bits = [](float f)
    {
        std::uint32_t u;
        std::memcpy(&u, &f, sizeof u);
        return u;
    };
    std::mt19937 rng(7);
    std::uniform_int_distribution<std::uint32_t> any_finite(0, 0x7f7fffffu);
    std::uniform_int_distribution<std::uint32_t> top_binade(0x7f000000u, 0x7f7fffffu);
    std::size_t checked = 0;
    for (std::size_t d = 0; d < divisors.size(); ++d)
    {
        optim::detail::adam_scalars<float> k{};
        k.set_bias_correction2_sqrt(divisors[d]);
        std::size_t wrong = 0;
        float first_wrong = 0;
        const auto check = [&](float x)
        {
            const float expected = x / divisors[d];
            if (bits(optim::detail::divided_by_bias_correction(x, k)) != bits(expected) &&
                wrong++ == 0)
                first_wrong = x;
            ++checked;
        };
        // The whole binade [1, 2) for a dozen divisors; a sample of it for the rest.
        const std::uint32_t stride = d < 12 ? 1 : 97;
        for (std::uint32_t u = 0x3f800000u; u < 0x40000000u; u += stride)
        {
            float x;
            std::memcpy(&x, &u, sizeof x);
            check(x);
        }
        for (int i = 0; i < 100000; ++i)
        {
            std::uint32_t u = i % 2 ? any_finite(rng) : top_binade(rng);
            float x;
            std::memcpy(&x, &u, sizeof x);
            check(x);
        }
        BOOST_TEST(wrong == 0u, std::setprecision(9)
                                    << "divisor " << divisors[d] << ": " << wrong
                                    << " quotients differ, the first of " << first_wrong);
    }
    BOOST_TEST_MESSAGE(checked << " quotients checked");
}

// Optimizers against PyTorch 1.13: trajectories, state_dict layout and values, load_state_dict
// (from PyTorch's state, round trips, and the ways a load can fail), option checks; on the
// device the suite is built for (test_device.hpp), and state_dicts moving between it and cpu.
#include "golden/optimizers.hpp"
#include "test_device.hpp"
#include "test_files.hpp"

#include <ember/core/threads.hpp>
#include <ember/nn/clip_grad.hpp>
#include <ember/nn/linear.hpp>
#include <ember/nn/module.hpp>
#include <ember/optim/optimizers.hpp>

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

using namespace ember;
namespace gold = golden::optimizers;

// Counts every allocation through operator new, to show that step() makes none.
static std::atomic<std::size_t> allocations{0};
// Not inlined either way, so GCC never pairs malloc() or free() with the other side's operator
// and warns (-Wmismatched-new-delete).
[[gnu::noinline]] void* operator new(std::size_t n)
{
    ++allocations;
    if (void* p = std::malloc(n ? n : 1))
        return p;
    throw std::bad_alloc();
}
[[gnu::noinline]] void operator delete(void* p) noexcept
{
    std::free(p);
}
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept
{
    std::free(p);
}

namespace
{

// The golden toy problem: loss = sum(c * p^2) + sum(d * p), so grad = (2 * c) * p + d. Its
// parameters live on Device; values and gradients go through the host (fixed-size arrays, so
// that nothing allocates).
template <class T, class Device = test_device>
struct toy : nn::module<toy<T, Device>, Device>
{
    using value_type = T;
    using array0 = std::array<T, 6>;
    using array1 = std::array<T, 4>;
    nn::parameter<T, 2, Device> p0{
        Device::template tensor_type<T, 2>::from_shape(std::array<std::size_t, 2>{2, 3})};
    nn::parameter<T, 1, Device> p1{
        Device::template tensor_type<T, 1>::from_shape(std::array<std::size_t, 1>{4})};

    toy() { set(gold::p0, gold::p1); }

    template <class V>
    void visit(V&& v)
    {
        v("p0", p0);
        v("p1", p1);
    }

    void set(const double* v0, const double* v1)
    {
        array0 h0;
        array1 h1;
        std::copy(v0, v0 + 6, h0.begin());
        std::copy(v1, v1 + 4, h1.begin());
        Device::upload(h0.data(), 6, p0.value.data());
        Device::upload(h1.data(), 4, p1.value.data());
    }

    // The same operations in the same order and precision as the golden script; p1 gets a
    // gradient even when frozen, which the optimizer must ignore.
    void compute_grads()
    {
        array0 x0, g0;
        array1 x1, g1;
        Device::download(p0.value.data(), 6, x0.data());
        Device::download(p1.value.data(), 4, x1.data());
        for (std::size_t i = 0; i < 6; ++i)
            g0[i] = T(2) * static_cast<T>(gold::c0[i]) * x0[i] + static_cast<T>(gold::d0[i]);
        for (std::size_t i = 0; i < 4; ++i)
            g1[i] = T(2) * static_cast<T>(gold::c1[i]) * x1[i] + static_cast<T>(gold::d1[i]);
        Device::upload(g0.data(), 6, p0.grad().data());
        Device::upload(g1.data(), 4, p1.grad().data());
    }

    T at(std::size_t k) const
    {
        T out{};
        Device::download(k < 6 ? p0.value.data() + k : p1.value.data() + (k - 6), 1, &out);
        return out;
    }

    // Gradients as host vectors (p0's elements, then p1's).
    std::vector<T> grads() const
    {
        std::vector<T> out(10);
        Device::download(p0.grad().data(), 6, out.data());
        Device::download(p1.grad().data(), 4, out.data() + 6);
        return out;
    }
};

// The golden cases name optimizers on cpu (`optim::sgd<T>`); the same optimizer on Device.
template <class Optimizer, class Device>
struct on_device;
template <template <class, class> class Optimizer, class T, class From, class Device>
struct on_device<Optimizer<T, From>, Device>
{
    using type = Optimizer<T, Device>;
};
template <class Optimizer, class Device>
using on_device_t = typename on_device<Optimizer, Device>::type;

template <class Case, class T>
struct config
{
    using case_type = Case;
    using value_type = T;
    using optimizer_type = on_device_t<typename Case::template optimizer<T>, test_device>;
    static constexpr double rtol = std::is_same_v<T, double> ? 1e-6 : 1e-5;

    static const double (&trajectory())[gold::steps][10]
    {
        if constexpr (std::is_same_v<T, double>)
            return Case::trajectory_f64;
        else
            return Case::trajectory_f32;
    }

    static optimizer_type make(toy<T>& m)
    {
        m.p1.requires_grad = !Case::frozen_p1;
        auto options = Case::groups();
        if (options.size() == 1)
            return optimizer_type(m.parameters(), options[0]);
        std::vector<typename optimizer_type::group_type> groups;
        for (std::size_t g = 0; g < options.size(); ++g)
            groups.emplace_back(std::vector{g == 0 ? nn::param_ref<T, test_device>(m.p0)
                                                   : nn::param_ref<T, test_device>(m.p1)},
                                options[g]);
        return optimizer_type(std::move(groups));
    }
};

template <class... Cases>
using both_dtypes = std::tuple<config<Cases, double>..., config<Cases, float>...>;
using configs = both_dtypes<EMBER_GOLDEN_OPTIMIZER_CASES>;

// Relative to the expected value, with values under 1 in magnitude compared absolutely (they
// pass through zero, where a relative error means nothing).
bool close(double got, double expected, double rtol)
{
    return std::abs(got - expected) <= rtol * std::max(1.0, std::abs(expected));
}

template <class T, class D>
void run_steps(toy<T, D>& m, auto& opt, std::size_t n)
{
    for (std::size_t s = 0; s < n; ++s)
    {
        opt.zero_grad();
        m.compute_grads();
        opt.step();
    }
}

// Same layout (indices, keys, order, types, every non-tensor value exactly), tensors of the
// same dtype and shape with values within rtol.
void check_same_state(const optim::optimizer_state& got, const optim::optimizer_state& expected,
                      double rtol)
{
    BOOST_TEST(got.param_groups.size() == expected.param_groups.size());
    for (std::size_t g = 0; g < std::min(got.param_groups.size(), expected.param_groups.size());
         ++g)
    {
        BOOST_TEST_CONTEXT("param_groups[" << g << "]")
        {
            BOOST_TEST(got.param_groups[g].options.keys() ==
                           expected.param_groups[g].options.keys(),
                       boost::test_tools::per_element());
            BOOST_TEST((got.param_groups[g] == expected.param_groups[g]));
        }
    }
    BOOST_TEST(got.state.size() == expected.state.size());
    for (const auto& [index, want] : expected.state)
    {
        BOOST_TEST_CONTEXT("state[" << index << "]")
        {
            auto it = got.state.find(index);
            BOOST_TEST_REQUIRE((it != got.state.end()));
            const auto& have = it->second;
            BOOST_TEST(have.keys() == want.keys(), boost::test_tools::per_element());
            for (const auto& [key, value] : want)
            {
                BOOST_TEST_CONTEXT("key '" << key << "'")
                {
                    const optim::state_value* mine = have.find(key);
                    BOOST_TEST_REQUIRE(mine);
                    BOOST_TEST_REQUIRE(mine->index() == value.index());
                    const auto* t = std::get_if<host_tensor>(&value);
                    if (!t)
                    {
                        BOOST_TEST((*mine == value));
                        continue;
                    }
                    const auto& h = std::get<host_tensor>(*mine);
                    BOOST_TEST_REQUIRE((h.dtype() == t->dtype()));
                    BOOST_TEST(h.shape() == t->shape(), boost::test_tools::per_element());
                    auto compare = [&](auto tag)
                    {
                        using E = decltype(tag);
                        auto a = h.data<E>();
                        auto b = t->data<E>();
                        for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i)
                            BOOST_TEST(close(a[i], b[i], rtol),
                                       "element " << i << ": " << a[i] << " vs " << b[i]);
                    };
                    if (h.dtype() == dtype::float64)
                        compare(double{});
                    else
                        compare(float{});
                }
            }
        }
    }
}

template <class T, class D>
std::vector<T> values_of(const toy<T, D>& m)
{
    std::vector<T> v;
    for (std::size_t k = 0; k < 10; ++k)
        v.push_back(m.at(k));
    return v;
}

template <class Opt>
std::string error_of(Opt&& f)
{
    try
    {
        f();
    }
    catch (const std::exception& e)
    {
        return e.what();
    }
    return "(nothing thrown)";
}

bool contains(const std::string& s, const std::string& part)
{
    return s.find(part) != std::string::npos;
}

} // namespace

BOOST_AUTO_TEST_CASE_TEMPLATE(trajectories_match_pytorch, C, configs)
{
    using T = typename C::value_type;
    toy<T> m;
    auto opt = C::make(m);
    const auto& expected = C::trajectory();
    for (std::size_t s = 0; s < gold::steps; ++s)
    {
        run_steps(m, opt, 1);
        for (std::size_t k = 0; k < 10; ++k)
            BOOST_TEST(close(m.at(k), expected[s][k], C::rtol),
                       C::case_type::name << " step " << s + 1 << " element " << k << ": "
                                          << m.at(k) << " vs torch " << expected[s][k]);
    }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(state_dict_has_pytorchs_layout_and_values, C, configs)
{
    using T = typename C::value_type;
    toy<T> m;
    auto opt = C::make(m);
    run_steps(m, opt, gold::state_step);
    check_same_state(opt.state_dict(), C::case_type::template state<T>(), C::rtol);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(loading_pytorchs_state_continues_pytorchs_trajectory, C, configs)
{
    using T = typename C::value_type;
    const auto& expected = C::trajectory();
    toy<T> m;
    m.set(expected[gold::state_step - 1], expected[gold::state_step - 1] + 6);
    auto opt = C::make(m);
    opt.load_state_dict(C::case_type::template state<T>());
    for (std::size_t s = gold::state_step; s < gold::steps; ++s)
    {
        run_steps(m, opt, 1);
        for (std::size_t k = 0; k < 10; ++k)
            BOOST_TEST(close(m.at(k), expected[s][k], C::rtol),
                       C::case_type::name << " step " << s + 1 << " element " << k << ": "
                                          << m.at(k) << " vs torch " << expected[s][k]);
    }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(state_dict_round_trip_continues_identically, C, configs)
{
    using T = typename C::value_type;
    toy<T> a;
    auto opt_a = C::make(a);
    run_steps(a, opt_a, gold::state_step);
    const auto saved = opt_a.state_dict();

    toy<T> b;
    b.p0.value = a.p0.value;
    b.p1.value = a.p1.value;
    auto opt_b = C::make(b);
    for (auto& g : opt_b.param_groups())
        g.options.lr = 123.0; // load_state_dict restores the saved options
    opt_b.load_state_dict(saved);
    BOOST_TEST((opt_b.state_dict() == saved));

    run_steps(a, opt_a, gold::steps - gold::state_step);
    run_steps(b, opt_b, gold::steps - gold::state_step);
    BOOST_TEST(values_of(b) == values_of(a), boost::test_tools::per_element());
    BOOST_TEST((opt_b.state_dict() == opt_a.state_dict()));
}

// An optimizer's state moves between devices through its state_dict, both ways: the device
// run and a cpu run that takes over (or hands over) half way end at the same numbers, up to
// rounding off cpu (bit for bit when the suite runs on cpu).
BOOST_AUTO_TEST_CASE_TEMPLATE(state_dict_moves_between_cpu_and_the_device, C, configs)
{
    using T = typename C::value_type;
    using cpu_optimizer = on_device_t<typename C::optimizer_type, cpu>;
    const double rtol = test::exact ? 0.0 : C::rtol;

    toy<T> a; // on the device throughout
    auto opt_a = C::make(a);
    run_steps(a, opt_a, gold::state_step);

    toy<T, cpu> b; // cpu from the device's state, and back again
    b.p1.requires_grad = !C::case_type::frozen_p1;
    const auto values = values_of(a);
    b.set(std::vector<double>(values.begin(), values.begin() + 6).data(),
          std::vector<double>(values.begin() + 6, values.end()).data());
    std::vector<typename cpu_optimizer::group_type> groups;
    for (const auto& g : opt_a.param_groups())
        groups.emplace_back(std::vector<nn::param_ref<T, cpu>>{}, g.options);
    std::size_t k = 0;
    for (std::size_t g = 0; g < groups.size(); ++g)
        for (std::size_t j = 0; j < opt_a.param_groups()[g].params.size(); ++j, ++k)
            groups[g].params.push_back(k == 0 ? nn::param_ref<T, cpu>(b.p0)
                                              : nn::param_ref<T, cpu>(b.p1));
    cpu_optimizer opt_b(std::move(groups));
    opt_b.load_state_dict(opt_a.state_dict());
    BOOST_TEST((opt_b.state_dict() == opt_a.state_dict()));

    const std::size_t half = (gold::steps - gold::state_step) / 2;
    run_steps(a, opt_a, half);
    run_steps(b, opt_b, half);
    toy<T> c; // back on the device
    auto opt_c = C::make(c);
    const auto on_cpu = values_of(b);
    c.set(std::vector<double>(on_cpu.begin(), on_cpu.begin() + 6).data(),
          std::vector<double>(on_cpu.begin() + 6, on_cpu.end()).data());
    opt_c.load_state_dict(opt_b.state_dict());
    run_steps(a, opt_a, gold::steps - gold::state_step - half);
    run_steps(c, opt_c, gold::steps - gold::state_step - half);
    const auto got = values_of(c);
    const auto expected = values_of(a);
    for (std::size_t i = 0; i < 10; ++i)
        BOOST_TEST(close(got[i], expected[i], rtol),
                   "element " << i << ": " << got[i] << " vs " << expected[i]);
    check_same_state(opt_c.state_dict(), opt_a.state_dict(), rtol);
}

// A parameter whose size changed after its state was made: step() and state_dict() say so
// instead of reading or writing past a buffer.
BOOST_AUTO_TEST_CASE(a_parameter_resized_after_stepping_is_a_shape_error)
{
    toy<float> m;
    optim::adam opt(m.parameters());
    run_steps(m, opt, 1);
    m.p0 = nn::parameter<float, 2, test_device>(test::dev(tensor<float, 2>({{1.0f, 2.0f}})));
    m.p0.grad(); // a gradient of zeros, so that step() does not skip it as a None grad
    const std::string saving = error_of([&] { (void)opt.state_dict(); });
    BOOST_TEST(contains(saving, "adam: state_dict: state[0]: a state tensor has 6 elements, its "
                                "parameter's shape [1, 2] has 2"),
               saving);
    BOOST_CHECK_THROW((void)opt.state_dict(), shape_error);
    const std::string stepping = error_of([&] { opt.step(); });
    BOOST_TEST(contains(stepping, "adam: state[0]['exp_avg'] has 6 elements, the parameter has 2"),
               stepping);
    BOOST_CHECK_THROW(opt.step(), shape_error);
}

BOOST_AUTO_TEST_CASE(frozen_parameters_are_not_stepped_and_have_no_state)
{
    toy<double> m;
    m.p1.requires_grad = false;
    optim::adam opt(m.parameters(), {.lr = 0.1});
    const auto p0 = test::host(m.p0.value);
    const auto p1 = test::host(m.p1.value);
    run_steps(m, opt, 3);
    BOOST_TEST((test::host(m.p1.value) == p1));
    BOOST_TEST((test::host(m.p0.value) != p0));
    auto sd = opt.state_dict();
    BOOST_TEST(sd.state.size() == 1u);
    BOOST_TEST(sd.state.count(0) == 1u);
}

BOOST_AUTO_TEST_CASE(zero_grad_fills_every_gradient_with_zero)
{
    toy<float> m;
    m.p1.requires_grad = false;
    optim::sgd opt(m.parameters(), {.lr = 0.1});
    m.compute_grads();
    const auto before = m.grads();
    BOOST_TEST(std::any_of(before.begin(), before.end(), [](float g) { return g != 0; }));
    opt.zero_grad();
    const auto grads = m.grads();
    BOOST_TEST(std::all_of(grads.begin(), grads.end(), [](float g) { return g == 0; }));
}

// zero_grad() only marks the gradients (nn::parameter); a parameter that no backward reaches
// afterwards must still be stepped on zeros, as PyTorch 1.13 steps it: its momentum carries it.
BOOST_AUTO_TEST_CASE(a_parameter_no_backward_reached_after_zero_grad_is_stepped_on_zeros)
{
    toy<double> m;
    optim::sgd opt(m.parameters(), {.lr = 0.1, .momentum = 0.5});
    m.compute_grads();
    const auto g = m.grads();
    const auto x0 = test::host(m.p0.value);
    opt.step(); // buf = g, x1 = x0 - 0.1 g
    opt.zero_grad();
    opt.step(); // no backward: buf = 0.5 g + 0, x2 = x1 - 0.1 (0.5 g)
    const auto x2 = test::host(m.p0.value);
    for (std::size_t i = 0; i < 6; ++i)
    {
        const double x1 = x0.data()[i] - 0.1 * g[i];
        BOOST_TEST(x2.data()[i] == x1 - 0.1 * (0.5 * g[i]));
    }
    const auto zeros = m.grads();
    BOOST_TEST(std::all_of(zeros.begin(), zeros.end(), [](double v) { return v == 0; }));
}

// PyTorch fills what a new group leaves out from optimizer.defaults (1.13:
// SGD([p0], lr=0.1, momentum=0.9, weight_decay=1e-4).add_param_group({'params': [p1],
// 'lr': 0.01}) gives the group momentum 0.9 and weight_decay 1e-4); add_param_group(params) and
// add_param_group(params, edit) do the same. A group's options written out whole stay whole.
template <class Optimizer, class Edit>
concept can_add_group_with = requires(Optimizer& o, Edit& e)
{
    o.add_param_group(std::vector<nn::param_ref<double, test_device>>{}, e);
};

BOOST_AUTO_TEST_CASE(a_group_added_with_params_alone_or_an_edit_takes_the_optimizers_defaults)
{
    // An edit that takes the options by value would change a copy: it does not compile.
    auto by_reference = [](optim::sgd_options& o) { o.lr = 0.01; };
    auto generic = [](auto& o) { o.lr = 0.01; };
    auto by_value = [](optim::sgd_options o) { o.lr = 0.01, static_cast<void>(o); };
    auto by_const = [](const optim::sgd_options&) {};
    using sgd_t = optim::sgd<double, test_device>;
    static_assert(can_add_group_with<sgd_t, decltype(by_reference)>);
    static_assert(can_add_group_with<sgd_t, decltype(generic)>);
    static_assert(!can_add_group_with<sgd_t, decltype(by_value)>);
    static_assert(!can_add_group_with<sgd_t, decltype(by_const)>);

    toy<double> m;
    using ref = nn::param_ref<double, test_device>;
    optim::sgd<double, test_device> opt(std::vector{ref(m.p0)},
                                        {.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-4});
    BOOST_TEST(opt.defaults().momentum == 0.9);
    opt.add_param_group(std::vector{ref(m.p1)}, [](optim::sgd_options& o) { o.lr = 0.01; });
    const auto& added = opt.param_groups()[1].options;
    BOOST_TEST(added.lr == 0.01);
    BOOST_TEST(added.momentum == 0.9);
    BOOST_TEST(added.weight_decay == 1e-4);
    BOOST_TEST(opt.defaults().lr == 0.1); // the edit changed the group's copy only

    optim::adam<double, test_device> adam(std::vector{ref(m.p0)},
                                          {.lr = 0.5, .betas = {0.8, 0.9}, .amsgrad = true});
    adam.add_param_group(std::vector{ref(m.p1)});
    const auto& plain = adam.param_groups()[1].options;
    BOOST_TEST(plain.lr == 0.5);
    BOOST_TEST(plain.betas[0] == 0.8);
    BOOST_TEST(plain.amsgrad);
    // The defaults of a multi-group optimizer are its first group's; a bad edit is refused
    // as a bad group is, and adds nothing.
    optim::sgd<double, test_device> two(std::vector{
        optim::sgd<double, test_device>::group_type({ref(m.p0)}, {.lr = 0.2, .momentum = 0.5})});
    BOOST_TEST(two.defaults().momentum == 0.5);
    BOOST_CHECK_THROW(
        two.add_param_group(std::vector{ref(m.p1)}, [](optim::sgd_options& o) { o.lr = -1; }),
        value_error);
    BOOST_TEST(two.param_groups().size() == 1u);
}

// zero_grad(true) is PyTorch's zero_grad(set_to_none=True): a parameter no backward reaches
// afterwards is passed over, momentum and weight decay included, and keeps its state (PyTorch
// 1.13: SGD(lr=0.1, momentum=0.5, weight_decay=0.1) leaves such a parameter where it was and
// saves state for both).
BOOST_AUTO_TEST_CASE(after_zero_grad_set_to_none_a_parameter_no_backward_reaches_is_not_stepped)
{
    toy<double> m;
    optim::sgd opt(m.parameters(), {.lr = 0.1, .momentum = 0.5, .weight_decay = 0.1});
    m.compute_grads();
    opt.step();
    const auto p0 = test::host(m.p0.value);
    const auto p1 = test::host(m.p1.value);

    opt.zero_grad(true);
    BOOST_TEST(!m.p0.has_grad());
    BOOST_TEST(!m.p1.has_grad());
    const std::array<double, 6> g0{3, 4, 0, 0, 0, 0};
    test_device::upload(g0.data(), 6, m.p0.grad().data()); // a backward that reaches p0 alone
    opt.step();
    BOOST_TEST((test::host(m.p1.value) == p1));
    BOOST_TEST((test::host(m.p0.value) != p0));
    BOOST_TEST(opt.state_dict().state.size() == 2u);

    // Reached again, it is stepped again: from zeros, not from the gradient it had before.
    opt.zero_grad(true);
    m.p1.grad();
    BOOST_TEST(m.p1.has_grad());
    const auto grads = m.grads();
    BOOST_TEST(std::all_of(grads.begin() + 6, grads.end(), [](double v) { return v == 0; }));
    opt.step();
    BOOST_TEST((test::host(m.p1.value) != p1));

    // The module's zero_grad takes the same flag.
    m.zero_grad(true);
    BOOST_TEST(!m.p0.has_grad());
    BOOST_TEST(!m.p1.has_grad());
    m.zero_grad();
    BOOST_TEST(!m.p1.has_grad()); // zeroing a None gradient leaves it None, as in PyTorch
}

// A gradient nothing has written is PyTorch's None: torch.optim and clip_grad_norm_ leave such a
// parameter out, so weight decay does not shrink an unused branch and it gets no state (PyTorch
// 1.13: AdamW(lr=0.1, weight_decay=0.1) keeps [1, -3] and saves state for the other only).
BOOST_AUTO_TEST_CASE(a_parameter_no_backward_ever_reached_is_skipped_as_a_none_grad)
{
    toy<double> m;
    optim::adamw opt(m.parameters(), {.lr = 0.1, .weight_decay = 0.1});
    const auto p1 = test::host(m.p1.value);
    BOOST_TEST(!m.p0.has_grad());
    BOOST_TEST(!m.p1.has_grad());
    for (int step = 0; step < 2; ++step)
    {
        opt.zero_grad();
        const std::array<double, 6> g0{3, 4, 0, 0, 0, 0};
        test_device::upload(g0.data(), 6, m.p0.grad().data());
        opt.step();
    }
    BOOST_TEST(m.p0.has_grad());
    BOOST_TEST(!m.p1.has_grad());
    BOOST_TEST((test::host(m.p1.value) == p1));
    const auto sd = opt.state_dict();
    BOOST_TEST(sd.state.size() == 1u);
    BOOST_TEST(sd.state.count(0) == 1u);

    // The total norm is p0's alone, as PyTorch's over the grads that are not None; and the
    // clipping leaves p1's gradient unwritten.
    BOOST_TEST(nn::clip_grad_norm_(opt.param_groups()[0].params, 1.0) == 5.0);
    BOOST_TEST(!m.p1.has_grad());

    // Reading a gradient through the const grad() does not make one; writing one does, and
    // zero_grad() does not undo that (PyTorch 1.13 zeroes a gradient, it does not drop it).
    std::as_const(m.p1).grad();
    BOOST_TEST(!m.p1.has_grad());
    m.p1.grad();
    opt.zero_grad();
    BOOST_TEST(m.p1.has_grad());
    opt.step();
    BOOST_TEST((test::host(m.p1.value) != p1));
    BOOST_TEST(opt.state_dict().state.count(1) == 1u);
}

BOOST_AUTO_TEST_CASE(step_allocates_nothing_once_state_exists)
{
    toy<float> m;
    optim::sgd s(m.parameters(), {.lr = 0.01, .momentum = 0.9, .nesterov = true});
    optim::adam a(m.parameters(), {.amsgrad = true});
    optim::adamw w(m.parameters());
    optim::rmsprop r(m.parameters(), {.momentum = 0.5, .centered = true});
    m.compute_grads();
    s.step();
    a.step();
    w.step();
    r.step();
    const std::size_t before = allocations.load();
    for (int i = 0; i < 5; ++i)
    {
        s.zero_grad();
        m.compute_grads();
        s.step();
        a.step();
        w.step();
        r.step();
    }
    BOOST_TEST(allocations.load() - before == 0u);
}

// At batch 1 a linear layer keeps its weight gradient as the outer product of dy and x, and the
// optimizers write it out a piece at a time into a buffer on the stack (grad_pieces). Each must
// step as from the gradient the matrix product writes: two layers from one seed, in one of which
// grad() writes the zeros before the backward (so that its product adds to them and nothing is
// kept), stay equal to the bit, and so do their gradients after the step and their optimizers'
// state. 300 -> 70 is 21,000 weights: pieces of 1,024 that start mid-row and a short last one;
// at one thread and at two, which split the update in parts.
template <class Optimizer, class Options>
void check_steps_from_a_kept_outer_product(const Options& options, const std::string& what)
{
    for (int threads : {1, 2})
    {
        ember::set_num_threads(threads);
        manual_seed(5);
        nn::linear<float, cpu> kept(300, 70);
        manual_seed(5);
        nn::linear<float, cpu> written(300, 70);
        Optimizer a(kept.parameters(), options), b(written.parameters(), options);
        manual_seed(6);
        std::size_t differ = 0, kept_outer = 0;
        for (int step = 0; step < 4; ++step)
        {
            tensor<float, 2> x = randn<float>({1, 300});
            x.data()[3] = -0.f;
            x.data()[4] = 0.f;
            const tensor<float, 2> dy = randn<float>({1, 70});
            a.zero_grad();
            b.zero_grad();
            kept(x);
            kept.backward(dy);
            written(x);
            written.weight.grad(); // zeros written: the backward adds its product to them
            written.backward(dy);
            kept_outer += kept.weight.view_grad().is_outer();
            kept_outer += written.weight.view_grad().is_outer() ? 100 : 0;
            a.step();
            b.step();
            kept_outer += kept.weight.view_grad().is_outer(); // the step left it kept
            const auto bits = [&](const auto& p, const auto& q)
            { return std::memcmp(p.data(), q.data(), p.size() * sizeof(float)) != 0; };
            differ += bits(kept.weight.value, written.weight.value);
            differ += bits(kept.bias.value, written.bias.value);
            differ += bits(kept.weight.grad(), written.weight.grad());
        }
        BOOST_TEST(kept_outer == 8u, what << ", " << threads << " threads");
        BOOST_TEST(differ == 0u, what << ", " << threads << " threads");
        const optim::optimizer_state sa = a.state_dict(), sb = b.state_dict();
        for (const auto& [index, state] : sa.state)
            for (const auto& [key, value] : state)
                if (const auto* t = std::get_if<host_tensor>(&value))
                {
                    const auto& u = std::get<host_tensor>(sb.state.at(index).at(key));
                    BOOST_TEST(
                        std::memcmp(t->bytes().data(), u.bytes().data(), t->bytes().size()) == 0,
                        what << ": state[" << index << "]['" << key << "']");
                }
    }
    ember::set_num_threads(1);
}

BOOST_AUTO_TEST_CASE(every_optimizer_steps_from_a_kept_outer_product_as_from_the_written_gradient)
{
    check_steps_from_a_kept_outer_product<optim::sgd<float>>(optim::sgd_options{.lr = 0.1}, "sgd");
    check_steps_from_a_kept_outer_product<optim::sgd<float>>(
        optim::sgd_options{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01, .nesterov = true},
        "sgd nesterov, weight decay");
    check_steps_from_a_kept_outer_product<optim::sgd<float>>(
        optim::sgd_options{.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .maximize = true},
        "sgd dampening, maximize");
    check_steps_from_a_kept_outer_product<optim::adam<float>>(optim::adam_options{}, "adam");
    check_steps_from_a_kept_outer_product<optim::adam<float>>(
        optim::adam_options{.weight_decay = 0.01, .amsgrad = true, .maximize = true},
        "adam amsgrad, weight decay, maximize");
    check_steps_from_a_kept_outer_product<optim::adamw<float>>(optim::adamw_options{}, "adamw");
    check_steps_from_a_kept_outer_product<optim::rmsprop<float>>(optim::rmsprop_options{},
                                                                 "rmsprop");
    check_steps_from_a_kept_outer_product<optim::rmsprop<float>>(
        optim::rmsprop_options{.weight_decay = 0.01, .momentum = 0.9, .centered = true},
        "rmsprop centered, momentum, weight decay");
}

BOOST_AUTO_TEST_CASE(class_template_argument_deduction_reads_like_pytorch)
{
    toy<float> m;
    optim::sgd s(m.parameters(), {.lr = 0.01, .momentum = 0.9});
    optim::adam a(m.parameters());
    optim::adamw w(m.parameters(), {.lr = 3e-4, .betas = {0.9, 0.95}});
    optim::rmsprop r(m.parameters(), {.lr = 1e-3});
    optim::sgd g(std::vector{
        optim::param_group{std::vector{nn::param_ref(m.p0)}, optim::sgd_options{.lr = 0.1}},
        optim::param_group{std::vector{nn::param_ref(m.p1)}, optim::sgd_options{.lr = 0.01}}});
    toy<double> md;
    optim::adam ad(md.parameters());
    // The device comes from the parameters.
    static_assert(std::is_same_v<decltype(s), optim::sgd<float, test_device>>);
    static_assert(std::is_same_v<decltype(a), optim::adam<float, test_device>>);
    static_assert(std::is_same_v<decltype(w), optim::adamw<float, test_device>>);
    static_assert(std::is_same_v<decltype(r), optim::rmsprop<float, test_device>>);
    static_assert(std::is_same_v<decltype(g), optim::sgd<float, test_device>>);
    static_assert(std::is_same_v<decltype(ad), optim::adam<double, test_device>>);
    // Groups in braces, on cpu (where T defaults to float and Device to cpu).
    toy<float, cpu> mc;
    optim::sgd gc({{std::vector{nn::param_ref<float>(mc.p0)}, {.lr = 0.1}},
                   {std::vector{nn::param_ref<float>(mc.p1)}, {.lr = 0.01}}});
    static_assert(std::is_same_v<decltype(gc), optim::sgd<float>>);
    static_assert(std::is_same_v<optim::sgd<float>, optim::sgd<float, cpu>>);
    BOOST_TEST(g.param_groups().size() == 2u);
    BOOST_TEST(gc.param_groups().size() == 2u);
    BOOST_TEST(w.param_groups()[0].options.weight_decay == 0.01); // AdamW's default
    BOOST_TEST(a.param_groups()[0].options.weight_decay == 0.0);
}

BOOST_AUTO_TEST_CASE(learning_rate_changes_between_steps_take_effect)
{
    toy<double> m;
    optim::sgd opt(m.parameters(), {.lr = 0.1});
    opt.param_groups()[0].options.lr = 0.0;
    const auto before = values_of(m);
    run_steps(m, opt, 2);
    BOOST_TEST(values_of(m) == before, boost::test_tools::per_element());
    opt.param_groups()[0].options.lr = 0.1;
    run_steps(m, opt, 1);
    BOOST_TEST(m.at(0) != before[0]);
    BOOST_TEST((opt.state_dict().param_groups[0].options.at("lr") == optim::state_value(0.1)));
}

BOOST_AUTO_TEST_CASE(add_param_group_extends_the_optimizer)
{
    toy<double> m;
    using ref = nn::param_ref<double, test_device>;
    optim::adam opt(std::vector{ref(m.p0)}, {.lr = 0.1});
    opt.add_param_group({std::vector{ref(m.p1)}, {.lr = 0.01}});
    const auto p1 = test::host(m.p1.value);
    run_steps(m, opt, 1);
    BOOST_TEST((test::host(m.p1.value) != p1));
    auto sd = opt.state_dict();
    BOOST_TEST(sd.param_groups.size() == 2u);
    BOOST_TEST(sd.param_groups[1].params == std::vector<std::int64_t>{1});
    BOOST_TEST(sd.state.size() == 2u);
    // A parameter may be in one group only, as in PyTorch.
    BOOST_TEST(contains(error_of(
                            [&] {
                                opt.add_param_group({std::vector{ref(m.p0)}, {}});
                            }),
                        "some parameters appear in more than one parameter group"));
    BOOST_CHECK_THROW(opt.add_param_group({std::vector{ref(m.p0)}, {}}), value_error);
    BOOST_CHECK_THROW(opt.add_param_group({{}, {.lr = -1}}), value_error);
    BOOST_TEST(opt.param_groups().size() == 2u);
}

BOOST_AUTO_TEST_CASE(sgd_with_zero_momentum_saves_none_as_pytorch_does)
{
    toy<float> m;
    optim::sgd opt(m.parameters(), {.lr = 0.1});
    BOOST_TEST(opt.state_dict().state.empty()); // nothing before the first step
    run_steps(m, opt, 1);
    auto sd = opt.state_dict();
    BOOST_TEST(sd.state.size() == 2u);
    BOOST_TEST(std::holds_alternative<std::monostate>(sd.state.at(0).at("momentum_buffer")));
    // Switching momentum on later starts the buffer from the gradient, as PyTorch does.
    opt.param_groups()[0].options.momentum = 0.9;
    run_steps(m, opt, 1);
    sd = opt.state_dict();
    const auto& buf = std::get<host_tensor>(sd.state.at(0).at("momentum_buffer"));
    BOOST_TEST(buf.shape() == (std::vector<std::int64_t>{2, 3}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(sgds_first_momentum_buffer_is_the_gradient_bit_for_bit_signed_zeros_too)
{
    // torch 1.13, two steps of grad [-0, -0, 0] from param [-0, 0, -0], lr 0.1, momentum 0.9:
    // PyTorch's first buffer is a clone of d, so its -0 stays; maximize flips every sign.
    struct expected
    {
        optim::sgd_options options;
        std::array<float, 3> param, buffer;
    };
    const float z = 0.f, n = -0.f;
    for (const expected& e :
         {expected{{.lr = 0.1, .momentum = 0.9}, {z, z, n}, {n, n, z}},
          expected{{.lr = 0.1, .momentum = 0.9, .nesterov = true}, {z, z, n}, {n, n, z}},
          expected{{.lr = 0.1, .momentum = 0.9, .dampening = 0.5}, {z, z, n}, {n, n, z}},
          expected{{.lr = 0.1, .momentum = 0.9, .maximize = true}, {n, z, z}, {z, z, n}}})
    {
        nn::parameter<float, 1> p(tensor<float, 1>{n, z, n});
        optim::sgd<float> opt({nn::param_ref<float>(p)}, e.options);
        for (int step = 0; step < 2; ++step)
        {
            p.grad() = tensor<float, 1>{n, n, z};
            opt.step();
        }
        const auto sd = opt.state_dict();
        const host_tensor& buf = std::get<host_tensor>(sd.state.at(0).at("momentum_buffer"));
        for (std::size_t i = 0; i < 3; ++i)
        {
            BOOST_TEST(std::signbit(p.value(i)) == std::signbit(e.param[i]), i);
            BOOST_TEST(std::signbit(buf.data<float>()[i]) == std::signbit(e.buffer[i]), i);
        }
    }
}

// --- load_state_dict failures: a typed error naming the place, and nothing changed ---

namespace
{
struct stepped_adam
{
    toy<float> m;
    optim::adam<float, test_device> opt{m.parameters(), {.lr = 0.05}};
    stepped_adam() { run_steps(m, opt, 2); }
};

// Loads `sd` expecting error E; checks the message names `where` and that the optimizer
// (options and state) is unchanged, then that it still steps as before.
template <class E>
void expect_rejected(const optim::optimizer_state& sd, const std::string& where)
{
    stepped_adam a;
    stepped_adam b; // the same run, never given the bad state_dict
    const auto before = a.opt.state_dict();
    std::string message;
    try
    {
        a.opt.load_state_dict(sd);
    }
    catch (const E& e)
    {
        message = e.what();
    }
    BOOST_TEST(!message.empty(), "expected an exception of the right type");
    BOOST_TEST(contains(message, where), message);
    BOOST_TEST((a.opt.state_dict() == before));
    run_steps(a.m, a.opt, 1);
    run_steps(b.m, b.opt, 1);
    BOOST_TEST(values_of(a.m) == values_of(b.m), boost::test_tools::per_element());
}

optim::optimizer_state valid_state()
{
    stepped_adam a;
    auto sd = a.opt.state_dict();
    // A load that applied options before checking the rest would show this lr.
    sd.param_groups[0].options.insert_or_assign("lr", 0.5);
    return sd;
}
} // namespace

BOOST_AUTO_TEST_CASE(load_rejects_a_different_number_of_groups)
{
    auto sd = valid_state();
    sd.param_groups.push_back(sd.param_groups[0]);
    expect_rejected<value_error>(sd, "different number of parameter groups: expected 1, got 2");
}

BOOST_AUTO_TEST_CASE(load_rejects_a_group_of_another_size)
{
    auto sd = valid_state();
    sd.param_groups[0].params.push_back(2);
    expect_rejected<value_error>(sd, "param_groups[0]: loaded state dict contains a parameter "
                                     "group that doesn't match the size of optimizer's group: "
                                     "expected 2 parameters, got 3");
}

BOOST_AUTO_TEST_CASE(load_rejects_a_state_tensor_of_another_shape)
{
    auto sd = valid_state();
    sd.state[1].insert_or_assign("exp_avg", host_tensor(dtype::float32, {3}));
    expect_rejected<shape_error>(sd, "state[1]['exp_avg']: expected shape [4] (the parameter's), "
                                     "got [3]");
}

BOOST_AUTO_TEST_CASE(load_rejects_a_state_tensor_of_a_dtype_it_cannot_convert)
{
    auto sd = valid_state();
    sd.state[0].insert_or_assign("exp_avg_sq", host_tensor(dtype::float16, {2, 3}));
    expect_rejected<dtype_error>(sd, "state[0]['exp_avg_sq']: expected dtype float32 (the "
                                     "parameter's, or float32 or float64 to convert), got "
                                     "float16");
    sd = valid_state();
    sd.state[0].insert_or_assign("exp_avg", host_tensor(dtype::int64, {2, 3}));
    expect_rejected<dtype_error>(sd, "got int64");
}

// PyTorch 1.13 casts a floating state tensor to its parameter's dtype on load (SGD's momentum
// saved over float64 parameters continues in a float32 optimizer, rounded); so does ember.
BOOST_AUTO_TEST_CASE(load_converts_float64_state_to_a_float32_optimizer_and_back)
{
    toy<double> wide;
    optim::adam<double, test_device> from(wide.parameters(), {.lr = 0.05});
    run_steps(wide, from, 2);
    const auto saved = from.state_dict();

    toy<float> narrow;
    optim::adam<float, test_device> to(narrow.parameters(), {.lr = 0.05});
    to.load_state_dict(saved);
    const auto got = to.state_dict();
    for (const char* key : {"exp_avg", "exp_avg_sq"})
    {
        const auto& d = std::get<host_tensor>(saved.state.at(1).at(key)).data<double>();
        const auto& f = std::get<host_tensor>(got.state.at(1).at(key)).data<float>();
        BOOST_TEST_REQUIRE(f.size() == d.size());
        for (std::size_t i = 0; i < d.size(); ++i)
            BOOST_TEST(f[i] == static_cast<float>(d[i]));
    }
    // And back into float64: float32's values exactly.
    optim::adam<double, test_device> back(wide.parameters(), {.lr = 0.05});
    back.load_state_dict(got);
    const auto reloaded = back.state_dict();
    const auto& b = std::get<host_tensor>(reloaded.state.at(0).at("exp_avg"));
    const auto& f = std::get<host_tensor>(got.state.at(0).at("exp_avg")).data<float>();
    for (std::size_t i = 0; i < f.size(); ++i)
        BOOST_TEST(b.data<double>()[i] == static_cast<double>(f[i]));
}

BOOST_AUTO_TEST_CASE(load_rejects_unknown_and_missing_keys)
{
    auto sd = valid_state();
    sd.state[0].insert("momentum_buffer", host_tensor(dtype::float32, {2, 3}));
    expect_rejected<key_error>(sd, "state[0]: unexpected key(s) 'momentum_buffer'");

    // Another optimizer's option is refused, not kept as the group's own key: it would mean an
    // update this optimizer does not make.
    sd = valid_state();
    sd.param_groups[0].options.insert("momentum", 0.9);
    expect_rejected<key_error>(sd, "param_groups[0]: unexpected key(s) 'momentum' (options of "
                                   "another PyTorch optimizer");

    // Recent PyTorch marks Adam's groups decoupled_weight_decay=False and AdamW's True: an
    // AdamW state in an Adam would continue with the other weight decay.
    sd = valid_state();
    sd.param_groups[0].options.insert("decoupled_weight_decay", true);
    expect_rejected<value_error>(sd, "['decoupled_weight_decay'] is True: the state is AdamW's; "
                                     "load it into optim::adamw");
    sd.param_groups[0].options.insert_or_assign("decoupled_weight_decay", false);
    stepped_adam accepts;
    accepts.opt.load_state_dict(sd);
    BOOST_TEST(accepts.opt.param_groups()[0].extra.empty());

    // Another optimizer's state: SGD's group has none of Adam's betas, eps, amsgrad.
    sd = valid_state();
    toy<float> other;
    optim::sgd<float, test_device> sgd(other.parameters(), {.lr = 0.1, .momentum = 0.9});
    run_steps(other, sgd, 1);
    optim::optimizer_state from_sgd = sgd.state_dict();
    from_sgd.state.clear();
    expect_rejected<key_error>(from_sgd, "param_groups[0]: missing key 'betas'");

    sd = valid_state();
    optim::optimizer_state stripped;
    stripped.param_groups = sd.param_groups;
    stripped.state[0] = sd.state[0];
    stripped.state[1].insert("step", sd.state[1].at("step"));
    expect_rejected<key_error>(stripped, "state[1]: missing key 'exp_avg'");

    sd = valid_state();
    sd.state[7] = sd.state[0];
    expect_rejected<key_error>(sd, "state[7]: no parameter group lists parameter 7");
}

// PyTorch keeps a group's keys beyond the optimizer's options (`'name'`, timm's `'lr_scale'`)
// through state_dict and load_state_dict; so does ember, in param_group::extra.
BOOST_AUTO_TEST_CASE(a_groups_keys_of_its_own_are_kept_through_state_dict_and_load)
{
    auto sd = valid_state();
    sd.param_groups[0].options.insert("name", std::string("backbone"));
    sd.param_groups[0].options.insert("lr_scale", 0.25);
    stepped_adam a;
    a.opt.load_state_dict(sd);
    const auto& extra = a.opt.param_groups()[0].extra;
    BOOST_TEST(extra.size() == 2u);
    BOOST_TEST(std::get<std::string>(extra.at("name")) == "backbone");
    BOOST_TEST(std::get<double>(extra.at("lr_scale")) == 0.25);
    BOOST_TEST(a.opt.param_groups()[0].options.lr == 0.5);
    BOOST_TEST((a.opt.state_dict() == sd)); // saved back where they were: after the options

    // Stepping ignores them; a new load replaces them.
    run_steps(a.m, a.opt, 1);
    a.opt.load_state_dict(valid_state());
    BOOST_TEST(a.opt.param_groups()[0].extra.empty());

    // Set from C++, they may not take an option's name, this optimizer's or another's, nor
    // params or initial_lr: the state could not be loaded back, or not as it was.
    for (const char* name : {"lr", "fused", "initial_lr", "params", "momentum"})
    {
        a.opt.param_groups()[0].extra = {};
        a.opt.param_groups()[0].extra.insert(name, 1.0);
        BOOST_CHECK_EXCEPTION(a.opt.state_dict(), value_error,
                              [&](const value_error& e) {
                                  return contains(e.what(), std::string("extra key '") + name +
                                                                "' is the name of an option");
                              });
    }
}

BOOST_AUTO_TEST_CASE(load_rejects_bad_option_values_and_types)
{
    auto sd = valid_state();
    sd.param_groups[0].options.insert_or_assign("betas", std::vector<double>{0.9, 1.0});
    expect_rejected<value_error>(sd, "Invalid beta parameter at index 1: 1.0");

    sd = valid_state();
    sd.param_groups[0].options.insert_or_assign("amsgrad", std::int64_t{1});
    expect_rejected<value_error>(sd, "param_groups[0]['amsgrad']: expected a bool, got int");
}

BOOST_AUTO_TEST_CASE(load_accepts_what_pytorch_accepts)
{
    stepped_adam a;
    auto sd = a.opt.state_dict();
    // Keys older PyTorch versions did not save, an LR scheduler's initial_lr, and a plain
    // number for step (pre-1.12 Adam).
    for (const char* key : {"maximize", "foreach", "capturable", "differentiable", "fused"})
    {
        optim::param_group_state g;
        for (const auto& [k, v] : sd.param_groups[0].options)
            if (k != key)
                g.options.insert(k, v);
        g.params = sd.param_groups[0].params;
        sd.param_groups[0] = g;
    }
    sd.param_groups[0].options.insert("initial_lr", 0.05);
    sd.state[0].insert_or_assign("step", 2.0);
    stepped_adam b;
    b.opt.load_state_dict(sd);
    BOOST_TEST((b.opt.param_groups()[0].initial_lr == std::optional<double>(0.05)));
    const auto out = b.opt.state_dict();
    BOOST_TEST(out.param_groups[0].options.keys().back() == "initial_lr");
    BOOST_TEST(std::get<host_tensor>(out.state.at(0).at("step")).item<float>() == 2.0f);
}

// --- invalid options: value_error with PyTorch's message ---

BOOST_AUTO_TEST_CASE(invalid_options_throw_value_error_with_pytorchs_message)
{
    toy<float> m;
    auto p = m.parameters();
    auto message = [](auto f) { return error_of(f); };
    BOOST_TEST(message([&] { optim::sgd o(p, {.lr = -0.1}); }) ==
               "sgd: param group 0: Invalid learning rate: -0.1");
    BOOST_TEST(contains(message([&] { optim::sgd o(p, {}); }), "lr is required"));
    BOOST_TEST(message([&] { optim::sgd o(p, {.lr = 0.1, .momentum = -1}); }) ==
               "sgd: param group 0: Invalid momentum value: -1.0");
    BOOST_TEST(message([&] { optim::sgd o(p, {.lr = 0.1, .weight_decay = -1e-4}); }) ==
               "sgd: param group 0: Invalid weight_decay value: -0.0001");
    BOOST_TEST(message([&] { optim::sgd o(p, {.lr = 0.1, .nesterov = true}); }) ==
               "sgd: param group 0: Nesterov momentum requires a momentum and zero dampening");
    BOOST_TEST(
        message(
            [&] {
                optim::sgd o(p, {.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = true});
            }) == "sgd: param group 0: Nesterov momentum requires a momentum and zero dampening");
    BOOST_TEST(message(
                   [&] {
                       optim::adam o(p, {.betas = {1.0, 0.999}});
                   }) == "adam: param group 0: Invalid beta parameter at index 0: 1.0");
    BOOST_TEST(message(
                   [&] {
                       optim::adamw o(p, {.betas = {0.9, -0.1}});
                   }) == "adamw: param group 0: Invalid beta parameter at index 1: -0.1");
    BOOST_TEST(message([&] { optim::adam o(p, {.eps = -1e-8}); }) ==
               "adam: param group 0: Invalid epsilon value: -1e-08");
    BOOST_TEST(message([&] { optim::adam o(p, {.lr = std::nan("")}); }) ==
               "adam: param group 0: Invalid learning rate: nan");
    BOOST_TEST(message([&] { optim::adamw o(p, {.weight_decay = -0.01}); }) ==
               "adamw: param group 0: Invalid weight_decay value: -0.01");
    BOOST_TEST(message([&] { optim::rmsprop o(p, {.alpha = -0.5}); }) ==
               "rmsprop: param group 0: Invalid alpha value: -0.5");
    BOOST_TEST(message([&] { optim::rmsprop o(p, {.momentum = -0.5}); }) ==
               "rmsprop: param group 0: Invalid momentum value: -0.5");
    BOOST_TEST(message(
                   [&] {
                       optim::rmsprop<float, test_device> o(
                           std::vector<nn::param_ref<float, test_device>>{});
                   }) == "rmsprop: optimizer got an empty parameter list");
    BOOST_CHECK_THROW(optim::adam o(p, {.lr = -1}), value_error);
    BOOST_TEST(
        contains(message(
                     [&] {
                         optim::sgd<float, test_device> o({{p, {.lr = 0.1}}, {p, {.lr = 0.2}}});
                     }),
                 "some parameters appear in more than one parameter group"));
}

// Gradient clipping's overflow, here with the optimizers it runs before (its other checks are in
// test_training_tools.cpp).
BOOST_AUTO_TEST_CASE(clip_grad_norm_of_float_grads_overflows_to_infinity_as_pytorchs)
{
    // PyTorch 1.13 sums |g|^p in float32: for float grads whose sum of squares passes FLT_MAX
    // the norm is inf, so clip_grad_norm_ returns inf and multiplies every grad by
    // 1 / (inf + 1e-6) = 0, or raises with error_if_nonfinite. In torch:
    // p.grad = torch.tensor([1e20] * 4); clip_grad_norm_([p], 1.0) -> tensor(inf), grads 0.
    auto grads_of = [](std::initializer_list<std::initializer_list<float>> values)
    {
        std::vector<std::unique_ptr<nn::parameter<float, 1, test_device>>> ps;
        for (auto v : values)
        {
            ps.push_back(std::make_unique<nn::parameter<float, 1, test_device>>(
                test::dtensor<float, 1>::from_shape({v.size()})));
            const std::vector<float> h(v);
            test_device::upload(h.data(), h.size(), ps.back()->grad().data());
        }
        return ps;
    };
    auto refs_of = [](const auto& ps)
    {
        std::vector<nn::param_ref<float, test_device>> refs;
        for (const auto& p : ps)
            refs.emplace_back(*p);
        return refs;
    };
    auto host_grads = [](const auto& ps)
    {
        std::vector<float> out;
        for (const auto& p : ps)
        {
            std::vector<float> h(p->grad().size());
            test_device::download(p->grad().data(), h.size(), h.data());
            out.insert(out.end(), h.begin(), h.end());
        }
        return out;
    };

    // One parameter whose sum of squares overflows: inf, grads zeroed.
    auto one = grads_of({{1e20f, 1e20f, 1e20f, 1e20f}});
    BOOST_TEST(std::isinf(nn::clip_grad_norm_(refs_of(one), 1.0)));
    BOOST_TEST(host_grads(one) == std::vector<float>(4, 0.f), boost::test_tools::per_element());
    // error_if_nonfinite raises, as PyTorch's RuntimeError, and leaves the grads alone.
    auto raised = grads_of({{1e20f, 1e20f, 1e20f, 1e20f}});
    BOOST_CHECK_THROW(nn::clip_grad_norm_(refs_of(raised), 1.0, 2.0, true), value_error);
    BOOST_TEST(host_grads(raised) == std::vector<float>(4, 1e20f),
               boost::test_tools::per_element());
    // Finite per-parameter norms (2e19 each) whose norm of norms overflows: inf too.
    auto two = grads_of({{2e19f}, {-2e19f}});
    BOOST_TEST(std::isinf(nn::clip_grad_norm_(refs_of(two), 1.0)));
    // Another p: |1e19|^3 overflows float.
    auto cubes = grads_of({{1e19f, 1e19f}});
    BOOST_TEST(std::isinf(nn::clip_grad_norm_(refs_of(cubes), 1.0, 3.0)));
    // Below the overflow the norm is finite: [3e18, 4e18] has norm 5e18 in PyTorch
    // (4.99999999e18 in float), grads scaled to [0.6, 0.8]; [1.2e19, 1.6e19] overflows.
    auto finite = grads_of({{3e18f, 4e18f}});
    BOOST_TEST(nn::clip_grad_norm_(refs_of(finite), 1.0) == 4.999999990253224e+18f);
    BOOST_TEST(host_grads(finite) == (std::vector<float>{0.6f, 0.8f}),
               boost::test_tools::per_element());
    auto over = grads_of({{1.2e19f, 1.6e19f}});
    BOOST_TEST(std::isinf(nn::clip_grad_norm_(refs_of(over), 1.0)));
}

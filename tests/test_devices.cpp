// Devices: choosing one at run time, moving tensors, models and optimizer state between them,
// files that load onto any device, and the same training giving the same numbers on each.
// Built with g++ (cpu, and thrust_omp when Meson found Thrust and OpenMP) and, when Meson's
// cuda option is on, again by nvcc, where the cuda cases run if a GPU is usable and the
// no-GPU behaviour is checked otherwise.
#include "ember/device/dispatch.hpp"
#include "ember/device/transfer.hpp"
#include "ember/loss/mse.hpp"
#include "ember/nn/linear.hpp"
#include "ember/optim/sgd.hpp"
#include "ember/serialize/file.hpp"

#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

using namespace ember;

namespace
{

#if defined(__CUDACC__)
#define DEVICES_CUDA , ember::cuda
#else
#define DEVICES_CUDA
#endif
#if defined(EMBER_WITH_THRUST_OMP) && defined(_OPENMP)
#define DEVICES_OMP , ember::thrust_omp
#else
#define DEVICES_OMP
#endif
// Every device compiled into this test.
using devices = boost::mpl::list<ember::cpu DEVICES_OMP DEVICES_CUDA>;

template <class Device>
bool usable()
{
    if (Device::is_available())
        return true;
    BOOST_TEST_MESSAGE(std::string(Device::name) + " is compiled in but not usable here: skipped");
    return false;
}

tensor<float, 2> batch()
{
    tensor<float, 2> x = tensor<float, 2>::from_shape({6, 3});
    for (std::size_t i = 0; i < x.size(); ++i)
        x.data()[i] = static_cast<float>(i % 5) * 0.25f - 0.5f;
    return x;
}

std::filesystem::path temp_file(const std::string& name)
{
    return std::filesystem::temp_directory_path() / ("ember-test-devices-" + name);
}

// `steps` of SGD with momentum on a linear layer, from manual_seed(1); returns the state_dict.
template <class Device>
state_dict train(int steps)
{
    manual_seed(1);
    nn::linear<float, Device> layer(3, 2);
    nn::mse_loss<float, 2, Device> loss;
    optim::sgd opt(layer.parameters(), {.lr = 0.1, .momentum = 0.9});
    const auto x = to<Device>(batch());
    const auto y = to<Device>(tensor<float, 2>(xt::ones<float>({6, 2})));
    for (int s = 0; s < steps; ++s)
    {
        loss(layer(x), y);
        opt.zero_grad();
        layer.backward(loss.backward());
        opt.step();
    }
    return layer.state_dict();
}

void check_close(const state_dict& a, const state_dict& b, double tol)
{
    BOOST_TEST_REQUIRE(a.size() == b.size());
    for (const auto& [key, t] : a)
    {
        const host_tensor* u = b.find(key);
        BOOST_TEST_REQUIRE(u != nullptr, "missing key " << key);
        BOOST_TEST_REQUIRE((t.shape() == u->shape()));
        auto x = t.data<float>(), y = u->data<float>();
        for (std::size_t i = 0; i < x.size(); ++i)
            BOOST_TEST(std::abs(x[i] - y[i]) <= tol * (1 + std::abs(x[i])), key << "[" << i << "]");
    }
}

} // namespace

BOOST_AUTO_TEST_CASE(device_names_parse_and_unknown_names_are_refused)
{
    BOOST_TEST((parse_device("cpu") == device_kind::cpu));
    BOOST_TEST((parse_device("cuda") == device_kind::cuda));
    BOOST_TEST((parse_device("thrust_omp") == device_kind::thrust_omp));
    BOOST_TEST(device_name(device_kind::thrust_cpp) == "thrust_cpp");
    try
    {
        parse_device("gpu0");
        BOOST_FAIL("no error");
    }
    catch (const value_error& e)
    {
        BOOST_TEST(std::string(e.what()) ==
                   "unknown device 'gpu0': expected cpu, cuda, thrust_omp or thrust_cpp");
    }
}

BOOST_AUTO_TEST_CASE(cpu_is_always_there_and_cuda_only_when_usable)
{
    BOOST_TEST(is_available(device_kind::cpu));
    BOOST_TEST(cuda_is_available() == is_available(device_kind::cuda));
    BOOST_TEST((default_device() == (cuda_is_available() ? device_kind::cuda : device_kind::cpu)));
#if !defined(__CUDACC__)
    BOOST_TEST(!cuda_is_available()); // built without CUDA: false, not a crash
#endif
}

BOOST_AUTO_TEST_CASE(with_device_runs_the_chosen_policy_and_refuses_a_missing_one)
{
    const std::string name =
        with_device(device_kind::cpu, []<class D>() { return std::string(D::name); });
    BOOST_TEST(name == "cpu");
    if (!cuda_is_available())
    {
        try
        {
            with_device(device_kind::cuda, []<class D>() { return 0; });
            BOOST_FAIL("no error");
        }
        catch (const device_error& e)
        {
            const std::string what = e.what();
            BOOST_TEST(what.find("device 'cuda' is not") == 0, what);
        }
    }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(tensors_move_to_a_device_and_back_unchanged, Device, devices)
{
    if (!usable<Device>())
        return;
    const auto x = batch();
    const auto d = to<Device>(x);
    BOOST_TEST(d.size() == x.size());
    const auto back = to_host(d);
    BOOST_TEST((back == x));
}

BOOST_AUTO_TEST_CASE_TEMPLATE(the_same_training_gives_the_same_numbers_on_every_device, Device,
                              devices)
{
    if (!usable<Device>())
        return;
    // Sums run in another order on parallel devices: equal to cpu up to float rounding.
    check_close(train<Device>(5), train<cpu>(5), 1e-5);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(a_file_saved_on_one_device_loads_onto_every_other, Device, devices)
{
    if (!usable<Device>())
        return;
    manual_seed(3);
    nn::linear<float, Device> on_device(3, 2);
    const auto path = temp_file(std::string(Device::name) + ".pth");
    save(on_device.state_dict(), path);
    // map_location: the same file onto cpu, and onto this device again.
    nn::linear<float> on_cpu(3, 2);
    on_cpu.load_state_dict(load<state_dict>(path));
    BOOST_TEST((on_cpu.state_dict() == on_device.state_dict()));
    nn::linear<float, Device> again(3, 2);
    again.load_state_dict(load<state_dict>(path));
    BOOST_TEST((again.state_dict() == on_device.state_dict()));
    std::filesystem::remove(path);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(a_model_and_its_optimizer_move_between_devices_mid_training, Device,
                              devices)
{
    if (!usable<Device>())
        return;
    manual_seed(1);
    nn::linear<float> model(3, 2);
    nn::mse_loss<float> loss;
    optim::sgd opt(model.parameters(), {.lr = 0.1, .momentum = 0.9});
    const auto x = batch();
    const tensor<float, 2> y = xt::ones<float>({6, 2});
    auto step = [](auto& m, auto& l, auto& o, const auto& in, const auto& target)
    {
        l(m(in), target);
        o.zero_grad();
        m.backward(l.backward());
        o.step();
    };
    for (int s = 0; s < 3; ++s)
        step(model, loss, opt, x, y);

    // model.to(device), and the optimizer's state with it (momentum buffers).
    auto moved = to<nn::linear<float, Device>>(model, 3, 2);
    BOOST_TEST((moved.state_dict() == model.state_dict()));
    optim::sgd moved_opt(moved.parameters(), {.lr = 0.1, .momentum = 0.9});
    moved_opt.load_state_dict(opt.state_dict());
    nn::mse_loss<float, 2, Device> moved_loss;
    const auto xd = to<Device>(x);
    const auto yd = to<Device>(y);
    for (int s = 0; s < 3; ++s)
    {
        step(model, loss, opt, x, y);
        step(moved, moved_loss, moved_opt, xd, yd);
    }
    check_close(moved.state_dict(), model.state_dict(), 1e-5);
}

/* ------------------------------------------------------------------ thrust_omp's loops */

#if defined(EMBER_WITH_THRUST_OMP) && defined(_OPENMP)
namespace
{
// Loop lengths around every place the split changes: one chunk, two, many, the most.
constexpr std::size_t grain = detail::omp_grain;
const std::size_t loop_lengths[] = {
    1, 2, grain - 1, grain, grain + 1, 3 * grain + 7, 64 * grain, 64 * grain + 13};

std::vector<float> ramp(std::size_t n)
{
    std::vector<float> v(n);
    generator g(3);
    for (auto& x : v)
        x = static_cast<float>(g.random() % 2001) * 0.001f - 1.0f;
    return v;
}
} // namespace

BOOST_AUTO_TEST_CASE(thrust_omp_splits_a_loop_by_its_length_into_at_most_64_chunks)
{
    BOOST_TEST(detail::omp_chunk_count(1) == 1u);
    BOOST_TEST(detail::omp_chunk_count(grain) == 1u);
    BOOST_TEST(detail::omp_chunk_count(grain + 1) == 2u);
    BOOST_TEST(detail::omp_chunk_count(64 * grain) == 64u);
    BOOST_TEST(detail::omp_chunk_count(1000 * grain) == 64u);
}

BOOST_AUTO_TEST_CASE(thrust_omp_runs_every_index_exactly_once)
{
    for (const std::size_t n : loop_lengths)
    {
        std::vector<int> seen(n, 0);
        int* s = seen.data();
        thrust_omp::for_each(
            n, EMBER_KERNEL(std::size_t i) { s[i] += 1; });
        BOOST_TEST((std::count(seen.begin(), seen.end(), 1) == static_cast<std::ptrdiff_t>(n)),
                   "n = " << n);
    }
    thrust_omp::for_each(
        0, EMBER_KERNEL(std::size_t) { BOOST_FAIL("a loop of 0 ran"); });
}

BOOST_AUTO_TEST_CASE(thrust_omp_sums_chunk_by_chunk_the_same_on_any_number_of_threads)
{
    const int threads = omp_get_max_threads();
    for (const std::size_t n : loop_lengths)
    {
        const std::vector<float> v = ramp(n);
        const float* x = v.data();
        auto sum_at = [&](int t)
        {
            omp_set_num_threads(t);
            return thrust_omp::sum<float>(
                n, EMBER_KERNEL(std::size_t i) { return x[i]; });
        };
        // The documented order: each chunk left to right, then the chunks in order.
        const std::size_t chunks = detail::omp_chunk_count(n);
        float expected = 0;
        for (std::size_t c = 0; c < chunks; ++c)
        {
            float part = 0;
            for (std::size_t i = n * c / chunks; i < n * (c + 1) / chunks; ++i)
                part += x[i];
            expected = c == 0 ? part : expected + part;
        }
        const float one = sum_at(1), two = sum_at(2), four = sum_at(4);
        BOOST_TEST(one == expected, "n = " << n);
        BOOST_TEST(two == expected, "n = " << n);
        BOOST_TEST(four == expected, "n = " << n);
        if (n <= grain)
            BOOST_TEST(one == cpu::sum<float>(n, [&](std::size_t i) { return x[i]; }));
    }
    omp_set_num_threads(threads);
    BOOST_TEST(thrust_omp::sum<double>(
                   0, EMBER_KERNEL(std::size_t) { return 1.0; }) == 0.0);
}

BOOST_AUTO_TEST_CASE(thrust_omp_fills_and_copies_long_buffers_whole)
{
    const std::size_t n = 5 * grain + 3;
    const std::vector<float> v = ramp(n);
    std::vector<float> out(n, 0.0f);
    thrust_omp::copy(v.data(), n, out.data());
    BOOST_TEST((out == v));
    thrust_omp::fill(out.data(), n, 2.5f);
    BOOST_TEST((std::count(out.begin(), out.end(), 2.5f) == static_cast<std::ptrdiff_t>(n)));
    // A device tensor's storage is zeros when made, and fill() reaches its every element.
    thrust_omp::tensor_type<float, 2> t({3 * grain, 2});
    BOOST_TEST(
        (std::count(t.data(), t.data() + t.size(), 0.0f) == static_cast<std::ptrdiff_t>(t.size())));
    t.fill(-1.0f);
    BOOST_TEST((std::count(t.data(), t.data() + t.size(), -1.0f) ==
                static_cast<std::ptrdiff_t>(t.size())));
}

BOOST_AUTO_TEST_CASE(thrust_omp_holds_tensors_of_every_dtype_bool_included)
{
    const tensor<bool, 1> flags = {true, false, true, true};
    const auto on_device = to<thrust_omp>(flags);
    BOOST_TEST((to_host(on_device) == flags));
    const tensor<std::int64_t, 1> labels = {7, -1, 3};
    BOOST_TEST((to_host(to<thrust_omp>(labels)) == labels));
}

BOOST_AUTO_TEST_CASE(thrust_omp_storage_grows_keeping_its_elements_and_zeroing_the_rest)
{
    detail::host_vector<float> v(3);
    BOOST_TEST((std::count(v.begin(), v.end(), 0.0f) == 3));
    std::iota(v.begin(), v.end(), 1.0f);
    v.resize(5); // beyond its memory: moved, kept
    BOOST_TEST((std::vector<float>(v.begin(), v.end()) == std::vector<float>{1, 2, 3, 0, 0}));
    v.resize(2);
    v.resize(4); // within its memory: what was cut off is zeros again
    BOOST_TEST((std::vector<float>(v.begin(), v.end()) == std::vector<float>{1, 2, 0, 0}));

    detail::host_vector<float> copy = v;
    copy.data()[0] = 9;
    BOOST_TEST(v.data()[0] == 1.0f);
    const float* memory = copy.data();
    copy = v; // fits: the same memory, v's elements
    BOOST_TEST(copy.data() == memory);
    BOOST_TEST((std::vector<float>(copy.begin(), copy.end()) == std::vector<float>{1, 2, 0, 0}));

    copy.assign(6, 0.5f); // beyond its memory: new memory, all 0.5
    BOOST_TEST((std::vector<float>(copy.begin(), copy.end()) == std::vector<float>(6, 0.5f)));
    memory = copy.data();

    detail::host_vector<float> moved = std::move(copy);
    BOOST_TEST(moved.data() == memory);
    BOOST_TEST(copy.size() == 0u);
    BOOST_CHECK_THROW(detail::host_vector<double>(static_cast<std::size_t>(-1) / 4),
                      std::length_error);
}
#endif

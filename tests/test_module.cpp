// The module concept: names, train/eval, zero_grad, state_dict and load_state_dict, on the
// test device (test_device.hpp).
#include <ember/core/generator.hpp>
#include <ember/device/kernel.hpp>
#include <ember/nn/module.hpp>

#include "test_device.hpp"

#include <boost/test/unit_test.hpp>

#include <utility>

using namespace ember;
using test::dtensor;

namespace
{
// The lesson's custom model, written as a user would: once, for any device, its arithmetic in
// kernels over raw pointers (device/kernel.hpp).
template <class Device>
struct linear_regression : nn::module<linear_regression<Device>, Device>
{
    using tensor_type = typename Device::template tensor_type<float, 2>;

    // Drawn on the host, as PyTorch's CPU generator draws, then moved to the device.
    nn::parameter<float, 1, Device> weight{ember::to<Device>(randn<float>({1}))};
    nn::parameter<float, 1, Device> bias{ember::to<Device>(randn<float>({1}))};
    tensor_type x, y, dx;

    template <class V>
    void visit(V&& v)
    {
        v("weight", weight);
        v("bias", bias);
    }

    const tensor_type& forward(const tensor_type& input)
    {
        if (this->caching())
            assign<Device>(x, input);
        resize_if_needed(y, input.shape());
        const float* w = weight.value.data();
        const float* b = bias.value.data();
        const float* in = input.data();
        float* out = y.data();
        Device::for_each(
            input.size(), EMBER_KERNEL(std::size_t i) { out[i] = w[0] * in[i] + b[0]; });
        return y;
    }

    const tensor_type& backward(const tensor_type& dy)
    {
        const float* g = dy.data();
        const float* in = x.data();
        const float sw = Device::template sum<float>(
            dy.size(), EMBER_KERNEL(std::size_t i) { return g[i] * in[i]; });
        const float sb = Device::template sum<float>(
            dy.size(), EMBER_KERNEL(std::size_t i) { return g[i]; });
        float* gw = weight.grad().data();
        float* gb = bias.grad().data();
        Device::for_each(
            1, EMBER_KERNEL(std::size_t) {
                gw[0] += sw;
                gb[0] += sb;
            });
        resize_if_needed(dx, dy.shape());
        const float* w = weight.value.data();
        float* out = dx.data();
        Device::for_each(
            dy.size(), EMBER_KERNEL(std::size_t i) { out[i] = w[0] * g[i]; });
        return dx;
    }
};
using model = linear_regression<test_device>;

// Element 0 of a one-element tensor on the test device.
template <class Tensor>
auto first(const Tensor& t)
{
    return test::host(t).data()[0];
}

struct inner : nn::module<inner, test_device>
{
    nn::parameter<float, 2, test_device> weight{dtensor<float, 2>::from_shape({2, 3})};
    nn::buffer<std::int64_t, 0, test_device> count{test::dev(tensor<std::int64_t, 0>(7))};
    template <class V>
    void visit(V&& v)
    {
        v("weight", weight);
        v("count", count);
    }
};

struct outer : nn::module<outer, test_device>
{
    inner fc1;
    nn::parameter<float, 1, test_device> scale{test::dev(tensor<float, 1>{1.f, 2.f})};
    template <class V>
    void visit(V&& v)
    {
        v("fc1", fc1);
        v("scale", scale);
    }
};
// A module that keeps its inner module in eval whatever train() asks, as a frozen batch norm
// is kept in PyTorch by overriding train().
struct frozen_inner : nn::module<frozen_inner, test_device>
{
    inner body;
    template <class V>
    void visit(V&& v)
    {
        v("body", body);
    }
    void train(bool mode = true)
    {
        nn::module<frozen_inner, test_device>::train(mode);
        body.eval();
    }
};

struct holds_frozen : nn::module<holds_frozen, test_device>
{
    frozen_inner part;
    inner other;
    template <class V>
    void visit(V&& v)
    {
        v("part", part);
        v("other", other);
    }
};
} // namespace

BOOST_AUTO_TEST_CASE(custom_model_starts_at_torch_weights_under_seed_42)
{
    manual_seed(42);
    model m;
    BOOST_TEST(m.weight.item() == 0.33669036626815796f);
    BOOST_TEST(m.bias.item() == 0.12880940735340118f);
}

BOOST_AUTO_TEST_CASE(state_dict_names_parameters_in_declaration_order)
{
    model m;
    auto sd = m.state_dict();
    BOOST_TEST(sd.keys() == (std::vector<std::string>{"weight", "bias"}));
    BOOST_TEST(sd.at("weight").item<float>() == m.weight.item());
}

BOOST_AUTO_TEST_CASE(nested_names_are_dotted_and_buffers_are_saved)
{
    outer m;
    auto sd = m.state_dict();
    // PyTorch's order, not visit()'s: a module's parameters, its buffers, then its submodules
    // (outer visits fc1 before scale; torch.nn.Module puts scale first all the same).
    BOOST_TEST(sd.keys() == (std::vector<std::string>{"scale", "fc1.weight", "fc1.count"}));
    const auto named = m.named_parameters();
    BOOST_TEST(named.size() == 2u);
    BOOST_TEST(named[0].first == "scale");
    BOOST_TEST(named[1].first == "fc1.weight");
    BOOST_TEST(sd.at("fc1.count").item<std::int64_t>() == 7);
    BOOST_TEST(sd.at("fc1.count").dim() == 0u);
    BOOST_TEST(m.parameters().size() == 2u);
    BOOST_TEST(m.num_parameters() == 8u);
}

BOOST_AUTO_TEST_CASE(train_and_eval_reach_submodules)
{
    outer m;
    BOOST_TEST(m.fc1.is_training());
    m.eval();
    BOOST_TEST(!m.is_training());
    BOOST_TEST(!m.fc1.is_training());
    m.train();
    BOOST_TEST(m.fc1.is_training());
}

BOOST_AUTO_TEST_CASE(train_calls_each_submodules_own_train)
{
    // The parent's train() set the flags itself, so a submodule's own train() was never asked.
    holds_frozen m;
    m.train();
    BOOST_TEST(m.part.is_training());
    BOOST_TEST(!m.part.body.is_training());
    BOOST_TEST(m.other.is_training());
    m.eval();
    BOOST_TEST(!m.part.is_training());
    BOOST_TEST(!m.other.is_training());
    m.train();
    BOOST_TEST(!m.part.body.is_training());
}

BOOST_AUTO_TEST_CASE(backward_accumulates_and_zero_grad_clears)
{
    model m;
    const auto x = test::dev(tensor<float, 2>{{1.f}, {2.f}});
    m.forward(x);
    const auto dy = test::dev(tensor<float, 2>{{1.f}, {1.f}});
    m.backward(dy);
    m.backward(dy);
    BOOST_TEST(first(m.weight.grad()) == 6.f);
    BOOST_TEST(first(m.bias.grad()) == 4.f);
    m.zero_grad();
    BOOST_TEST(first(m.weight.grad()) == 0.f);
    BOOST_TEST(first(m.bias.grad()) == 0.f);
}

// zero_grad() only marks the gradients; grad(), const or not, writes the zeros before anyone
// sees them, so a user's backward that adds to grad() starts from zero, as in PyTorch.
BOOST_AUTO_TEST_CASE(a_users_backward_after_zero_grad_adds_to_zeros)
{
    model m;
    const auto x = test::dev(tensor<float, 2>{{1.f}, {2.f}});
    const auto dy = test::dev(tensor<float, 2>{{1.f}, {1.f}});
    m.forward(x);
    m.backward(dy);
    m.backward(dy);
    m.zero_grad();
    BOOST_TEST(first(std::as_const(m).bias.grad()) == 0.f);
    m.backward(dy);
    BOOST_TEST(first(m.weight.grad()) == 3.f);
    BOOST_TEST(first(m.bias.grad()) == 2.f);
    m.zero_grad();
    m.zero_grad();
    m.backward(dy);
    BOOST_TEST(first(m.weight.grad()) == 3.f);
}

BOOST_AUTO_TEST_CASE(no_grad_forward_caches_nothing)
{
    model m;
    const auto x = test::dev(tensor<float, 2>{{1.f}, {2.f}});
    {
        no_grad guard;
        BOOST_TEST(!is_grad_enabled());
        m.forward(x);
    }
    BOOST_TEST(is_grad_enabled());
    BOOST_TEST(m.x.size() == 0u);
}

BOOST_AUTO_TEST_CASE(load_state_dict_round_trips)
{
    manual_seed(1);
    model a;
    model b;
    BOOST_TEST(a.weight.item() != b.weight.item());
    auto r = b.load_state_dict(a.state_dict());
    BOOST_TEST(r.missing_keys.empty());
    BOOST_TEST(b.weight.item() == a.weight.item());
    BOOST_TEST(b.bias.item() == a.bias.item());
}

BOOST_AUTO_TEST_CASE(shape_mismatch_names_key_and_both_shapes_and_changes_nothing)
{
    model m;
    float before = m.weight.item();
    auto sd = m.state_dict();
    sd.insert_or_assign("bias", host_tensor(dtype::float32, {2}));
    sd.at("weight").data<float>()[0] = before + 1;
    try
    {
        m.load_state_dict(sd);
        BOOST_FAIL("expected shape_error");
    }
    catch (const shape_error& e)
    {
        std::string msg = e.what();
        BOOST_TEST(msg.find("'bias'") != std::string::npos);
        BOOST_TEST(msg.find("[2]") != std::string::npos);
        BOOST_TEST(msg.find("[1]") != std::string::npos);
    }
    BOOST_TEST(m.weight.item() == before);
}

BOOST_AUTO_TEST_CASE(float64_loads_into_float32_rounded_and_other_dtypes_are_refused)
{
    // PyTorch's load_state_dict copies with a cast: a double run's weights load into a float
    // model, rounded to nearest (0.1 as a double becomes 0.1f).
    model m;
    auto sd = m.state_dict();
    host_tensor w(dtype::float64, {1});
    w.data<double>()[0] = 0.1;
    sd.insert_or_assign("weight", w);
    m.load_state_dict(sd);
    BOOST_TEST(m.weight.item() == 0.1f);

    const float before = m.weight.item();
    for (const dtype other : {dtype::int64, dtype::float16, dtype::boolean})
    {
        sd.insert_or_assign("weight", host_tensor(other, {1}));
        BOOST_CHECK_EXCEPTION(m.load_state_dict(sd), dtype_error,
                              [](const dtype_error& e) {
                                  return std::string(e.what()).find(
                                             "dtype mismatch for 'weight'") != std::string::npos;
                              });
    }
    BOOST_TEST(m.weight.item() == before);

    // An int64 buffer takes no float, and a float entry converts only into a float member.
    outer o;
    auto osd = o.state_dict();
    osd.insert_or_assign("fc1.count", host_tensor(dtype::float64, {}));
    BOOST_CHECK_THROW(o.load_state_dict(osd), dtype_error);
}

BOOST_AUTO_TEST_CASE(missing_and_unexpected_keys_strict_and_not)
{
    model m;
    state_dict sd;
    sd.insert("weight", host_tensor(dtype::float32, {1}));
    sd.insert("extra", host_tensor(dtype::float32, {1}));
    try
    {
        m.load_state_dict(sd);
        BOOST_FAIL("expected key_error");
    }
    catch (const key_error& e)
    {
        std::string msg = e.what();
        BOOST_TEST(msg.find("missing key(s): 'bias'") != std::string::npos);
        BOOST_TEST(msg.find("unexpected key(s): 'extra'") != std::string::npos);
    }
    float before = m.bias.item();
    auto r = m.load_state_dict(sd, false);
    BOOST_TEST(r.missing_keys == std::vector<std::string>{"bias"});
    BOOST_TEST(r.unexpected_keys == std::vector<std::string>{"extra"});
    BOOST_TEST(m.weight.item() == 0.f);
    BOOST_TEST(m.bias.item() == before);
}

BOOST_AUTO_TEST_CASE(custom_model_moves_between_devices_with_its_state)
{
    manual_seed(3);
    model m;
    m.eval();
    auto on_cpu = ember::to<linear_regression<ember::cpu>>(m);
    BOOST_TEST(on_cpu.weight.item() == m.weight.item());
    BOOST_TEST(on_cpu.bias.item() == m.bias.item());
    BOOST_TEST(!on_cpu.is_training());
    const tensor<float, 2> x = {{1.f}, {-2.f}, {0.5f}};
    const tensor<float, 2> y_cpu = on_cpu.forward(x);
    const tensor<float, 2> y_dev = test::host(m.forward(test::dev(x)));
    BOOST_TEST(y_dev == y_cpu, boost::test_tools::per_element());
}

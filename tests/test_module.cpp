// The module concept: names, train/eval, zero_grad, state_dict and load_state_dict.
#include <ember/core/generator.hpp>
#include <ember/nn/module.hpp>

#include <boost/test/unit_test.hpp>

using namespace ember;

namespace
{
// The lesson's custom model, written as a user would.
struct linear_regression : nn::module<linear_regression>
{
    nn::parameter<float, 1> weight{randn<float>({1})};
    nn::parameter<float, 1> bias{randn<float>({1})};
    tensor<float, 2> x, y, dx;

    template <class V>
    void visit(V&& v)
    {
        v("weight", weight);
        v("bias", bias);
    }

    const tensor<float, 2>& forward(const tensor<float, 2>& input)
    {
        if (caching())
            x = input;
        y = weight.value(0) * input + bias.value(0);
        return y;
    }

    const tensor<float, 2>& backward(const tensor<float, 2>& dy)
    {
        weight.grad(0) += xt::sum(dy * x)();
        bias.grad(0) += xt::sum(dy)();
        dx = weight.value(0) * dy;
        return dx;
    }
};

struct inner : nn::module<inner>
{
    nn::parameter<float, 2> weight{tensor<float, 2>::from_shape({2, 3})};
    nn::buffer<std::int64_t, 0> count{tensor<std::int64_t, 0>(7)};
    template <class V>
    void visit(V&& v)
    {
        v("weight", weight);
        v("count", count);
    }
};

struct outer : nn::module<outer>
{
    inner fc1;
    nn::parameter<float, 1> scale{tensor<float, 1>{1.f, 2.f}};
    template <class V>
    void visit(V&& v)
    {
        v("fc1", fc1);
        v("scale", scale);
    }
};
} // namespace

BOOST_AUTO_TEST_CASE(custom_model_starts_at_torch_weights_under_seed_42)
{
    manual_seed(42);
    linear_regression m;
    BOOST_TEST(m.weight.item() == 0.33669036626815796f);
    BOOST_TEST(m.bias.item() == 0.12880940735340118f);
}

BOOST_AUTO_TEST_CASE(state_dict_names_parameters_in_declaration_order)
{
    linear_regression m;
    auto sd = m.state_dict();
    BOOST_TEST(sd.keys() == (std::vector<std::string>{"weight", "bias"}));
    BOOST_TEST(sd.at("weight").item<float>() == m.weight.item());
}

BOOST_AUTO_TEST_CASE(nested_names_are_dotted_and_buffers_are_saved)
{
    outer m;
    auto sd = m.state_dict();
    BOOST_TEST(sd.keys() == (std::vector<std::string>{"fc1.weight", "fc1.count", "scale"}));
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

BOOST_AUTO_TEST_CASE(backward_accumulates_and_zero_grad_clears)
{
    linear_regression m;
    tensor<float, 2> x = {{1.f}, {2.f}};
    m.forward(x);
    tensor<float, 2> dy = {{1.f}, {1.f}};
    m.backward(dy);
    m.backward(dy);
    BOOST_TEST(m.weight.grad(0) == 6.f);
    BOOST_TEST(m.bias.grad(0) == 4.f);
    m.zero_grad();
    BOOST_TEST(m.weight.grad(0) == 0.f);
}

BOOST_AUTO_TEST_CASE(no_grad_forward_caches_nothing)
{
    linear_regression m;
    tensor<float, 2> x = {{1.f}, {2.f}};
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
    linear_regression a;
    linear_regression b;
    BOOST_TEST(a.weight.item() != b.weight.item());
    auto r = b.load_state_dict(a.state_dict());
    BOOST_TEST(r.missing_keys.empty());
    BOOST_TEST(b.weight.item() == a.weight.item());
    BOOST_TEST(b.bias.item() == a.bias.item());
}

BOOST_AUTO_TEST_CASE(shape_mismatch_names_key_and_both_shapes_and_changes_nothing)
{
    linear_regression m;
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

BOOST_AUTO_TEST_CASE(dtype_mismatch_is_a_dtype_error)
{
    linear_regression m;
    auto sd = m.state_dict();
    sd.insert_or_assign("weight", host_tensor(dtype::float64, {1}));
    BOOST_CHECK_THROW(m.load_state_dict(sd), dtype_error);
}

BOOST_AUTO_TEST_CASE(missing_and_unexpected_keys_strict_and_not)
{
    linear_regression m;
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

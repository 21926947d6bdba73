// ember's precompiled part (src/ember_precompiled.cpp, EMBER_PRECOMPILED): this file sees only
// the declarations of the file formats and the figure, and the optimizers over float as extern
// templates, so it parses none of the format code; the definitions come from the library it
// links. Saving, loading, probing, drawing and training with every optimizer must still work
// (and link), on the cpu.
#include <ember/core/generator.hpp>
#include <ember/loss/mse.hpp>
#include <ember/nn/activation.hpp>
#include <ember/nn/linear.hpp>
#include <ember/nn/sequential.hpp>
#include <ember/optim/optimizers.hpp>
#include <ember/plot/svg.hpp>
#include <ember/serialize/file.hpp>
#include <ember/serialize/module.hpp>

#include "test_files.hpp"

#include <boost/test/unit_test.hpp>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#if !defined(EMBER_PRECOMPILED) || EMBER_DEFINITIONS
#error "test_precompiled is compiled with EMBER_PRECOMPILED (ember_precompiled_dep)"
#endif
// What the precompiled part saves this file from parsing.
#if defined(CEREAL_CEREAL_HPP_)
#error "a file built with EMBER_PRECOMPILED parsed cereal"
#endif

using namespace ember;
using namespace test; // temp_dir, read_bytes, write_bytes, message_of, contains

namespace
{
using model_type = nn::sequential<nn::linear<float>, nn::relu<float>, nn::linear<float>>;

model_type make_model(std::uint64_t seed)
{
    manual_seed(seed);
    return model_type(nn::linear<float>(4, 8), nn::relu<float>(), nn::linear<float>(8, 2));
}

std::vector<float> flat(const state_dict& sd)
{
    std::vector<float> out;
    for (const auto& [key, t] : sd)
    {
        const auto d = t.data<float>();
        out.insert(out.end(), d.begin(), d.end());
    }
    return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b)
{
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The same keys with the same bits, in any order (safetensors keeps its keys sorted).
bool same_tensors(const state_dict& a, const state_dict& b)
{
    if (a.size() != b.size())
        return false;
    for (const auto& [key, t] : a)
    {
        const host_tensor* other = b.find(key);
        if (!other || other->shape() != t.shape() ||
            !same_bits(
                std::vector<float>(t.data<float>().begin(), t.data<float>().end()),
                std::vector<float>(other->data<float>().begin(), other->data<float>().end())))
            return false;
    }
    return true;
}

// A few steps on fixed data; returns the model's parameters afterwards.
template <class Optimizer>
void train(model_type& model, Optimizer& optimizer, int steps)
{
    manual_seed(7);
    const tensor<float, 2> x = randn<float>({16, 4}), y = randn<float>({16, 2});
    nn::mse_loss<float> criterion;
    for (int i = 0; i < steps; ++i)
    {
        criterion(model(x), y);
        optimizer.zero_grad();
        model.backward(criterion.backward());
        optimizer.step();
    }
}

// Three steps, the optimizer's state through a file into a fresh model and optimizer, three more
// steps on each: the two runs end with the same bits.
template <class Optimizer, class Options>
void check_resume_through_file(const Options& options, const std::string& file)
{
    temp_dir dir("ember_precompiled");
    model_type model = make_model(1);
    Optimizer optimizer(model.parameters(), options);
    train(model, optimizer, 3);

    checkpoint c;
    c.model_state_dict = model.state_dict();
    c.optimizer_state_dict = optimizer.state_dict();
    save(c, dir.path / file);

    model_type resumed = make_model(2);
    Optimizer resumed_optimizer(resumed.parameters(), options);
    const auto loaded = load<checkpoint>(dir.path / file);
    resumed.load_state_dict(loaded.model_state_dict);
    resumed_optimizer.load_state_dict(loaded.optimizer_state_dict);

    train(model, optimizer, 3);
    train(resumed, resumed_optimizer, 3);
    BOOST_TEST(same_bits(flat(model.state_dict()), flat(resumed.state_dict())));
}
} // namespace

BOOST_AUTO_TEST_CASE(state_dicts_round_trip_in_every_format)
{
    temp_dir dir("ember_precompiled");
    const state_dict sd = make_model(1).state_dict();
    for (const char* name : {"m.ember", "m.pth", "m.safetensors", "m.json", "m.xml", "m.bin"})
    {
        save(sd, dir.path / name);
        BOOST_TEST(same_tensors(load<state_dict>(dir.path / name), sd), name);
    }
    save(sd, dir.path / "raw", file_format::cereal_binary);
    BOOST_TEST(
        same_bits(flat(load<state_dict>(dir.path / "raw", file_format::cereal_binary)), flat(sd)));
}

BOOST_AUTO_TEST_CASE(the_format_functions_are_linked)
{
    BOOST_TEST(format_name(format_from_extension("a.pth")) == "PyTorch");
    BOOST_TEST(content_name(file_content::checkpoint) == "checkpoint");
    BOOST_TEST(contains(message_of<value_error>([] { format_from_extension("a.txt"); }), ".txt"));

    temp_dir dir("ember_precompiled");
    save(make_model(1).state_dict(), dir.path / "m.ember");
    const file_info info = probe(dir.path / "m.ember");
    BOOST_TEST((info.format == file_format::ember));
    BOOST_TEST((info.content == file_content::state_dict));
    BOOST_TEST((probe(dir.path / "m.ember", file_format::ember).format == file_format::ember));
}

BOOST_AUTO_TEST_CASE(models_save_and_load_in_place_and_reject_a_corrupt_file)
{
    temp_dir dir("ember_precompiled");
    const model_type saved = make_model(1);
    for (const char* name : {"m.ember", "m.pth", "m.json"})
    {
        save(saved, dir.path / name);
        model_type model = make_model(2);
        load(model, dir.path / name);
        BOOST_TEST(same_bits(flat(model.state_dict()), flat(saved.state_dict())), name);
    }

    // One flipped byte in the last tensor: the load fails and the model keeps its values.
    auto bytes = read_bytes(dir.path / "m.ember");
    bytes[bytes.size() - 5] ^= 0x10;
    write_bytes(dir.path / "bad.ember", bytes);
    model_type model = make_model(2);
    const std::vector<float> before = flat(model.state_dict());
    BOOST_TEST(contains(message_of<format_error>([&] { load(model, dir.path / "bad.ember"); }),
                        "bad.ember"));
    BOOST_TEST(same_bits(flat(model.state_dict()), before));
}

BOOST_AUTO_TEST_CASE(every_optimizer_resumes_bit_for_bit_through_a_checkpoint_file)
{
    check_resume_through_file<optim::sgd<float>>(
        optim::sgd_options{.lr = 0.05, .momentum = 0.9, .nesterov = true}, "sgd.ember");
    check_resume_through_file<optim::adam<float>>(optim::adam_options{.lr = 0.01}, "adam.pth");
    check_resume_through_file<optim::adamw<float>>(
        optim::adamw_options{.lr = 0.01, .amsgrad = true}, "adamw.ember");
    check_resume_through_file<optim::rmsprop<float>>(
        optim::rmsprop_options{.lr = 0.01, .momentum = 0.5, .centered = true}, "rmsprop.json");
}

BOOST_AUTO_TEST_CASE(the_figure_is_linked)
{
    plot::figure fig(6, 4);
    fig.subplot(1, 1, 1).plot(std::vector<double>{1, 2, 3}, {.label = "loss"}).legend();
    const std::string svg = fig.to_svg();
    BOOST_TEST(contains(svg, "<svg"));
    BOOST_TEST(contains(svg, "loss"));
}

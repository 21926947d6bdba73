// ember's precompiled part (src/ember_precompiled.cpp, EMBER_PRECOMPILED): this file sees only
// the declarations of the file formats, the figure and the training tools, and the optimizers
// over float as extern templates, so it parses none of the format code; the definitions come
// from the library it links. Saving, loading, probing, drawing, recording a history, drawing a
// progress bar, PyTorch's own functions and training with every optimizer must still work (and
// link), on the cpu.
#include <ember/core/generator.hpp>
#include <ember/data/split.hpp>
#include <ember/history.hpp>
#include <ember/loss/cross_entropy.hpp>
#include <ember/loss/l1.hpp>
#include <ember/loss/mse.hpp>
#include <ember/nn/activation.hpp>
#include <ember/nn/linear.hpp>
#include <ember/nn/sequential.hpp>
#include <ember/optim/optimizers.hpp>
#include <ember/plot/history.hpp>
#include <ember/plot/svg.hpp>
#include <ember/progress.hpp>
#include <ember/serialize/file.hpp>
#include <ember/serialize/module.hpp>
#include <ember/serialize/pytorch.hpp>

#include "test_files.hpp"

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <sstream>
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

// The same keys holding the same bytes (host_tensor's ==), in any order: safetensors keeps its
// keys sorted.
bool same_tensors(const state_dict& a, const state_dict& b)
{
    if (a.size() != b.size())
        return false;
    for (const auto& [key, t] : a)
        if (const host_tensor* other = b.find(key); !other || !(*other == t))
            return false;
    return true;
}

// A few training steps on fixed data.
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
    BOOST_TEST((model.state_dict() == resumed.state_dict())); // bit for bit
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
    BOOST_TEST((load<state_dict>(dir.path / "raw", file_format::cereal_binary) == sd));
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

BOOST_AUTO_TEST_CASE(the_precompiled_losses_give_their_values_and_gradients)
{
    // mse_loss, l1_loss and cross_entropy_loss over float are extern here, compiled in
    // src/ember_precompiled.cpp: the values and gradients worked out by hand.
    const tensor<float, 2> x{{1.f, -2.f}, {3.f, 0.5f}}, y{{0.f, 0.f}, {1.f, 0.5f}};
    nn::mse_loss<float> mse;
    BOOST_TEST(mse(x, y) == 2.25f);                            // (1 + 4 + 4 + 0) / 4
    const tensor<float, 2> mse_grad{{0.5f, -1.f}, {1.f, 0.f}}; // 2 (x - y) / 4
    BOOST_TEST((mse.backward() == mse_grad));

    nn::l1_loss<float> l1;
    BOOST_TEST(l1(x, y) == 1.25f);                                 // (1 + 2 + 2 + 0) / 4
    const tensor<float, 2> l1_grad{{0.25f, -0.25f}, {0.25f, 0.f}}; // sign(x - y) / 4
    BOOST_TEST((l1.backward() == l1_grad));

    // Equal scores over 4 classes: every sample's loss is log 4, its gradient (softmax - one
    // hot) / batch.
    const tensor<float, 2> scores = xt::zeros<float>({2, 4});
    const tensor<std::int64_t, 1> target{1, 3};
    nn::cross_entropy_loss<float> ce;
    BOOST_TEST(ce(scores, target) == std::log(4.f), boost::test_tools::tolerance(1e-6f));
    const tensor<float, 2> ce_grad{{0.125f, -0.375f, 0.125f, 0.125f},
                                   {0.125f, 0.125f, 0.125f, -0.375f}};
    BOOST_TEST((ce.backward() == ce_grad));
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
        BOOST_TEST((model.state_dict() == saved.state_dict()), name);
    }

    // One flipped byte in the last tensor: the load fails and the model keeps its values.
    auto bytes = read_bytes(dir.path / "m.ember");
    bytes[bytes.size() - 5] ^= 0x10;
    write_bytes(dir.path / "bad.ember", bytes);
    model_type model = make_model(2);
    const state_dict before = model.state_dict();
    BOOST_TEST(contains(message_of<format_error>([&] { load(model, dir.path / "bad.ember"); }),
                        "bad.ember"));
    BOOST_TEST((model.state_dict() == before));
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

// The dictionaries behind a state_dict, an optimizer's state, a value and a checkpoint's
// generators are extern templates here (EMBER_PRECOMPILED_EXTERN_CLASS): their members come
// from the library, and must link and behave.
BOOST_AUTO_TEST_CASE(the_dictionaries_are_linked)
{
    checkpoint c;
    c.epoch = 7;
    c.train_loss = 0.25; // NaN by default, and NaN != NaN
    c.val_loss = 0.5;
    c.hyperparameters = {{"learning_rate", 0.01}, {"layers", value::list{4, 8, 2}}};
    c.extras.insert_or_assign("note", "resumed");
    c.generators.insert("default", default_generator().state());
    c.model_state_dict = make_model(3).state_dict();
    BOOST_TEST((c.hyperparameters.keys() == std::vector<std::string>{"learning_rate", "layers"}));
    BOOST_TEST(c.hyperparameters.at("learning_rate").to_double() == 0.01);
    BOOST_TEST(c.generators.contains("default"));
    BOOST_TEST(c.model_state_dict.find("no such key") == nullptr);
    BOOST_TEST(contains(message_of<key_error>([&] { c.hyperparameters.insert("layers", 3); }),
                        "duplicate key 'layers'"));

    temp_dir dir("ember_precompiled");
    save(c, dir.path / "c.tar");
    const auto loaded = load<checkpoint>(dir.path / "c.tar");
    BOOST_TEST((loaded == c));
    BOOST_TEST(loaded.extras.at("note").as<std::string>() == "resumed");
}

// A value's copies, moves and destructor (which a checkpoint's own copies call), stream_copy,
// the normal fill behind randn, load_state_dict's checks and host_tensor's dtype checks are
// declared here and compiled in the library (EMBER_SHARED_DEFINITIONS): they must link and
// behave.
BOOST_AUTO_TEST_CASE(the_shared_definitions_are_linked)
{
    value v = value::dict{{"layers", value::list{4, 8, value::dict{{"p", 0.5}}}}, {"name", "mlp"}};
    value copy = v;
    BOOST_TEST((copy == v));
    value moved = std::move(copy);
    BOOST_TEST((moved == v));
    copy = moved; // copy assignment into a moved-from value
    moved = value(2.5);
    BOOST_TEST((copy == v));
    BOOST_TEST(moved.to_double() == 2.5);

    checkpoint c;
    c.epoch = 3;
    c.train_loss = c.val_loss = 0.5;
    c.hyperparameters.insert("lr", 0.01);
    c.model_state_dict = make_model(4).state_dict();
    checkpoint d = c;
    BOOST_TEST((d == c));
    checkpoint e = std::move(d);
    BOOST_TEST((e == c));
    d = e;
    e = checkpoint{};
    BOOST_TEST((d == c));
    BOOST_TEST(e.epoch == 0);
    BOOST_TEST(e.ember_version == std::string(ember::version));

    // Over 1 MiB: the non-temporal route, in parts on ember's threads.
    std::vector<unsigned char> from(3 << 20), to(from.size());
    for (std::size_t i = 0; i < from.size(); ++i)
        from[i] = static_cast<unsigned char>(i * 7 + 3);
    detail::stream_copy(to.data() + 1, from.data() + 1, from.size() - 1);
    BOOST_TEST(std::equal(from.begin() + 1, from.end(), to.begin() + 1));

    // torch.manual_seed(0); torch.randn(20)[:2], in float: the 16-wide fill.
    generator g(0);
    const auto r = randn<float>({20}, g);
    BOOST_TEST(r(0) == -1.1258398294448853f);
    BOOST_TEST(r(1) == -1.152360200881958f);

    model_type model = make_model(5);
    state_dict wrong = model.state_dict();
    wrong.insert_or_assign("0.weight",
                           host_tensor::from(tensor<float, 2>(xt::zeros<float>({3, 4}))));
    BOOST_TEST(contains(message_of<shape_error>([&] { model.load_state_dict(wrong); }),
                        "size mismatch for '0.weight'"));
    state_dict partial;
    for (const auto& [key, t] : model.state_dict())
        if (key != "0.weight")
            partial.insert(key, t);
    BOOST_TEST(contains(message_of<key_error>([&] { model.load_state_dict(partial); }),
                        "missing key(s): '0.weight'"));
    const host_tensor bias = model.state_dict().at("0.bias");
    BOOST_TEST(contains(message_of<dtype_error>([&] { (void)bias.data<double>(); }),
                        "tensor holds float32, not float64"));
    BOOST_TEST(
        contains(message_of<dtype_error>([&] { bias.check_matches<double>(std::array{8}, "b"); }),
                 "b: expected dtype float64, got float32"));
    BOOST_TEST(
        contains(message_of<shape_error>([&] { bias.check_matches<float>(std::array{9}, "b"); }),
                 "b: expected shape [9], got [8]"));
}

BOOST_AUTO_TEST_CASE(the_figure_is_linked)
{
    plot::figure fig(6, 4);
    fig.subplot(1, 1, 1).plot(std::vector<double>{1, 2, 3}, {.label = "loss"}).legend();
    const std::string svg = fig.to_svg();
    BOOST_TEST(contains(svg, "<svg"));
    BOOST_TEST(contains(svg, "loss"));
}

BOOST_AUTO_TEST_CASE(the_training_tools_are_linked)
{
    temp_dir dir("ember_precompiled");
    history h;
    h.append({{"epoch", 1}, {"train_loss", 0.5}});
    h.append({{"epoch", 2}, {"train_loss", 0.25}, {"val_loss", 0.3}});
    h.save_csv(dir.path / "history.csv");
    const history back = history::load_csv(dir.path / "history.csv");
    BOOST_TEST((back == h));
    BOOST_TEST((history::from_value(h.to_value()) == h));
    BOOST_TEST(h.last("val_loss") == 0.3);
    BOOST_TEST(contains(message_of<key_error>([&] { h["accuracy"]; }), "accuracy"));

    std::ostringstream out;
    double t = 0;
    progress_bar bar(1, 2, {.out = &out, .terminal = false, .clock = [&t] { return t; }});
    bar.begin_epoch(0);
    bar.update(1.0, 10);
    t = 1;
    bar.update(3.0, 10);
    BOOST_TEST(bar.end_epoch({{"val_loss", 0.5}}) == 2.0);
    BOOST_TEST(contains(out.str(), "Epoch 1/1"));
    BOOST_TEST(contains(out.str(), "val_loss"));

    plot::figure fig(6, 4);
    plot::plot_history(fig.subplot(1, 1, 1), h);
    BOOST_TEST(contains(fig.to_svg(), plot::history_label("train_loss")));

    const std::vector<double> fractions = {0.7, 0.3};
    BOOST_TEST((data::split_lengths(10, fractions, true) == std::vector<std::size_t>{7, 3}));
    BOOST_TEST(contains(message_of<value_error>([&] { data::split_lengths(10, {}, true); }),
                        "no lengths"));
}

BOOST_AUTO_TEST_CASE(pytorch_s_own_functions_are_linked)
{
    temp_dir dir("ember_precompiled");
    const value v = value::dict{{"epoch", value(std::int64_t{3})}, {"name", value("run")}};
    pytorch::save(v, dir.path / "v.pt");
    BOOST_TEST((pytorch::load<value>(dir.path / "v.pt") == v));
    BOOST_TEST(pytorch::folder_for(dir.path / "model.pth") == "model");
    const state_dict sd = make_model(1).state_dict();
    BOOST_TEST(same_tensors(pytorch::from_bytes<state_dict>(pytorch::to_bytes(sd)), sd));
    const generator_state g = default_generator().state();
    BOOST_TEST((pytorch::from_torch_rng_state(pytorch::to_torch_rng_state(g)) == g));
}

// The C++ side of scripts/torch_roundtrip.py (the 'pytorch_roundtrip' test):
//   torch_tool write DIR        writes ember's files into DIR, and DIR/expect.tsv with the
//                               canonical dump (tests/torch_dump.hpp) of what each holds
//   torch_tool dump FILE KIND   loads FILE as KIND (value, state_dict, optimizer, checkpoint,
//                               safetensors) and prints its canonical dump
//   torch_tool big-write FILE   writes a state_dict past 4 GiB (ZIP64 sizes and offsets)
//   torch_tool big-check FILE   loads one and prints its marker bytes
//   torch_tool parity DIR       training parity, ember -> PyTorch (scripts/torch_parity.py):
//                               for each optimizer, trains tests/pytorch_parity.hpp's MLP
//                               golden::parity::warm_steps steps, saves DIR/ember_<opt>_model.pth
//                               and _optimizer.pth, continues golden::parity::steps steps and
//                               saves the outcome in DIR/ember_<opt>_result.pth
#include <ember/ember.hpp>
#include <ember/serialize/pytorch.hpp>
#include <ember/serialize/safetensors.hpp>

#include "pytorch_parity.hpp"
#include "torch_dump.hpp"

#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <string>

namespace fs = std::filesystem;
namespace nn = ember::nn;
namespace pt = ember::pytorch;
using ember::value;

namespace
{

value checkpoint_value(const ember::checkpoint& c)
{
    // The dict ember writes, in its key order.
    value::dict gens;
    for (const auto& [name, s] : c.generators)
        gens.insert(name, pt::to_torch_rng_state(s));
    value::dict em;
    em.insert("global_step", c.global_step);
    em.insert("generators", gens);
    em.insert("scheduler_state", c.scheduler_state);
    em.insert("data_state", c.data_state);
    value::dict d;
    d.insert("epoch", c.epoch);
    d.insert("model_state_dict", torch_dump::to_value(c.model_state_dict));
    d.insert("optimizer_state_dict", torch_dump::to_value(c.optimizer_state_dict));
    d.insert("train_loss", c.train_loss);
    d.insert("val_loss", c.val_loss);
    d.insert("hyperparameters", c.hyperparameters);
    d.insert("timestamp", c.timestamp);
    d.insert("ember_version", c.ember_version);
    d.insert("ember", em);
    for (const auto& [k, v] : c.extras)
        d.insert(k, v);
    return d;
}

std::string sorted_dump(const ember::state_dict& sd)
{
    std::map<std::string, ember::host_tensor> sorted(sd.begin(), sd.end());
    value::dict d;
    for (const auto& [k, t] : sorted)
        d.insert(k, t);
    return torch_dump::dump(d);
}

int dump(const fs::path& file, const std::string& kind)
{
    if (kind == "value")
        std::cout << torch_dump::dump(pt::load<value>(file));
    else if (kind == "state_dict")
        std::cout << torch_dump::dump(torch_dump::to_value(pt::load<ember::state_dict>(file)));
    else if (kind == "optimizer")
        std::cout << torch_dump::dump(
            torch_dump::to_value(pt::load<ember::optim::optimizer_state>(file)));
    else if (kind == "checkpoint")
        std::cout << torch_dump::dump(checkpoint_value(pt::load<ember::checkpoint>(file)));
    else if (kind == "safetensors")
        std::cout << sorted_dump(ember::safetensors::load<ember::state_dict>(file));
    else
    {
        std::cerr << "unknown kind '" << kind << "'\n";
        return 2;
    }
    std::cout << "\n";
    return 0;
}

ember::state_dict every_dtype()
{
    ember::state_dict sd;
    auto add = [&](const char* name, ember::dtype d, std::vector<std::int64_t> shape)
    {
        ember::host_tensor t(d, shape);
        for (std::size_t i = 0; i < t.nbytes(); ++i)
            t.bytes()[i] =
                static_cast<std::byte>((i * 37 + 5) & (d == ember::dtype::boolean ? 1 : 0x7f));
        sd.insert(name, t);
    };
    add("f32", ember::dtype::float32, {2, 3});
    add("f64", ember::dtype::float64, {4});
    add("f16", ember::dtype::float16, {3, 1});
    add("bf16", ember::dtype::bfloat16, {2, 2});
    add("i64", ember::dtype::int64, {});
    add("i32", ember::dtype::int32, {5});
    add("i16", ember::dtype::int16, {1, 1, 2});
    add("i8", ember::dtype::int8, {3});
    add("u8", ember::dtype::uint8, {2, 2, 2, 2});
    add("bool", ember::dtype::boolean, {4});
    add("empty", ember::dtype::float32, {0, 3});
    return sd;
}

template <class Model, class Optimizer>
double train(Model& model, Optimizer& opt, int steps, ember::generator& data)
{
    nn::mse_loss criterion;
    double loss = 0;
    for (int i = 0; i < steps; ++i)
    {
        ember::tensor<float, 2> x = ember::randn<float>({6, 4}, data);
        ember::tensor<float, 2> y = ember::randn<float>({6, 3}, data);
        loss = criterion(model(x), y);
        opt.zero_grad();
        model.backward(criterion.backward());
        opt.step();
    }
    return loss;
}

int write(const fs::path& dir)
{
    fs::create_directories(dir);
    std::ofstream expect(dir / "expect.tsv");
    auto record = [&](const std::string& name, const std::string& kind, const value& v)
    { expect << name << "\t" << kind << "\t" << torch_dump::dump(v) << "\n"; };

    // The Python side's mlp(): Linear(4, 8), BatchNorm1d(8), ReLU, Dropout(0.25), Linear(8, 3).
    ember::manual_seed(0);
    nn::sequential model{nn::linear(4, 8), nn::batch_norm1d(8), nn::relu(), nn::dropout(0.25),
                         nn::linear(8, 3)};
    ember::generator data(1);
    ember::optim::sgd sgd(model.parameters(),
                          {.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-4, .nesterov = true});
    train(model, sgd, 2, data);
    const auto sd_after_sgd = model.state_dict();
    pt::save(sd_after_sgd, dir / "ember_mlp.pth");
    record("ember_mlp.pth", "state_dict", torch_dump::to_value(sd_after_sgd));
    pt::save(sgd.state_dict(), dir / "ember_sgd.pth");
    record("ember_sgd.pth", "optimizer", torch_dump::to_value(sgd.state_dict()));

    ember::optim::adam adam(model.parameters(), {.lr = 1e-2});
    const double loss = train(model, adam, 2, data);
    pt::save(adam.state_dict(), dir / "ember_adam.pth");
    record("ember_adam.pth", "optimizer", torch_dump::to_value(adam.state_dict()));

    ember::checkpoint ck;
    ck.epoch = 3;
    ck.model_state_dict = model.state_dict();
    ck.optimizer_state_dict = adam.state_dict();
    ck.train_loss = loss;
    ck.val_loss = loss * 1.5;
    ck.hyperparameters.insert("learning_rate", 0.01);
    ck.hyperparameters.insert("layers", value::list{value(4), value(8), value(3)});
    ck.hyperparameters.insert("name", "mlp");
    ck.timestamp = ember::iso8601_now();
    ck.global_step = 4;
    ck.generators.insert("default", ember::default_generator().state());
    ck.generators.insert("data", data.state());
    ck.extras.insert("note", "written by ember");
    pt::save(ck, dir / "ember_checkpoint.tar");
    record("ember_checkpoint.tar", "checkpoint", checkpoint_value(ck));
    // What torch.rand(5) gives after torch.set_rng_state(ck['ember']['generators']['default']).
    ember::generator next = ember::default_generator();
    ember::tensor<float, 1> draws = ember::rand<float>({5}, next);
    record("rng_next", "tensor", ember::host_tensor::from(draws));

    {
        // MultiStepLR resumed in PyTorch from ember's checkpoint: the lrs ember's scheduler
        // goes on to set, which PyTorch's must set too (its milestones a Counter of int keys).
        nn::parameter<float, 1> p{ember::tensor<float, 1>::from_shape({1})};
        p.value.fill(0.f);
        ember::optim::sgd opt({nn::param_ref<float>(p)}, {.lr = 0.1});
        ember::optim::multi_step_lr sched(opt, {.milestones = {2, 4, 4, 6}, .gamma = 0.5});
        for (int i = 0; i < 3; ++i)
        {
            opt.step();
            sched.step();
        }
        ember::checkpoint mck;
        mck.model_state_dict.insert("p", ember::host_tensor::from(p.value));
        mck.optimizer_state_dict = opt.state_dict();
        mck.scheduler_state = sched.state_dict();
        pt::save(mck, dir / "ember_multistep.tar");
        value::list lrs;
        for (int i = 0; i < 5; ++i)
        {
            opt.step();
            sched.step();
            lrs.push_back(opt.param_groups()[0].options.lr);
        }
        record("ember_multistep.tar", "multistep", value(std::move(lrs)));
    }

    const auto dtypes = every_dtype();
    pt::save(dtypes, dir / "ember_dtypes.pt");
    record("ember_dtypes.pt", "state_dict", torch_dump::to_value(dtypes));

    {
        pt::detail::archive_writer w("ember_zip64");
        w.write(dtypes);
        const auto bytes = w.finish({.force_zip64 = true});
        ember::detail::atomic_write(dir / "ember_zip64.pth", bytes);
        record("ember_zip64.pth", "state_dict", torch_dump::to_value(dtypes));
    }

    value::dict values;
    values.insert("none", value());
    values.insert("flags", value::list{value(true), value(false)});
    values.insert("ints",
                  value::list{value(0), value(-1), value(255), value(65536),
                              value(std::int64_t{1} << 40), value(INT64_MIN), value(INT64_MAX)});
    values.insert("float", 0.1);
    values.insert("text", "h\xc3\xa9llo \xe2\x98\x83");
    values.insert("nested", value::dict{{"a", value::list{value(value::dict{})}}});
    values.insert("tensor", ember::host_tensor::from(draws));
    pt::save(value(values), dir / "ember_values.pt");
    record("ember_values.pt", "value", values);

    ember::ordered_dict<std::string> meta{{"format", "pt"}};
    ember::safetensors::save(dtypes, dir / "ember.safetensors", meta);
    expect << "ember.safetensors\tsafetensors\t" << sorted_dump(dtypes) << "\n";
    return expect ? 0 : 1;
}

// A 4.3 GB uint8 tensor with markers at both ends and the middle, then a small one whose
// record lies past 4 GiB.
constexpr std::int64_t big_numel = 4'300'000'000;

int big_write(const fs::path& file)
{
    ember::state_dict sd;
    ember::host_tensor big(ember::dtype::uint8, {big_numel});
    auto d = big.data<std::uint8_t>();
    d[0] = 7;
    d[d.size() / 2] = 5;
    d[d.size() - 1] = 9;
    sd.insert("big", std::move(big));
    ember::host_tensor small(ember::dtype::float32, {2});
    small.data<float>()[1] = 2.5f;
    sd.insert("small", std::move(small));
    pt::save(sd, file);
    return 0;
}

int big_check(const fs::path& file)
{
    const auto sd = pt::load<ember::state_dict>(file, {.max_tensor_bytes = std::uint64_t{1} << 34});
    const auto d = sd.at("big").data<std::uint8_t>();
    std::cout << d.size() << " " << int(d[0]) << " " << int(d[d.size() / 2]) << " "
              << int(d[d.size() - 1]) << " " << sd.at("small").data<float>()[1] << "\n";
    return 0;
}

ember::host_tensor floats(const std::vector<float>& v)
{
    ember::host_tensor t(ember::dtype::float32, {static_cast<std::int64_t>(v.size())});
    std::copy(v.begin(), v.end(), t.data<float>().begin());
    return t;
}

// One optimizer's run of the parity check. The result holds the model's state_dict after the
// continuation plus `eval_before`, `eval_after` (eval-mode outputs) and `losses`.
template <class Optimizer, class Options>
void parity_run(const fs::path& dir, const std::string& name, const Options& options)
{
    namespace g = golden::parity;
    ember::manual_seed(g::model_seed);
    parity::model_type model = parity::mlp();
    Optimizer optimizer(model.parameters(), options);
    ember::generator warm(g::warm_data_seed);
    parity::train(model, optimizer, g::warm_steps, warm);
    pt::save(model.state_dict(), dir / ("ember_" + name + "_model.pth"));
    pt::save(optimizer.state_dict(), dir / ("ember_" + name + "_optimizer.pth"));

    ember::state_dict result;
    result.insert("eval_before", ember::host_tensor::from(parity::eval_output(model)));
    ember::manual_seed(g::dropout_seed);
    ember::generator data(g::data_seed);
    const auto losses = parity::train(model, optimizer, g::steps, data);
    for (const auto& [key, t] : model.state_dict())
        result.insert(key, t);
    result.insert("eval_after", ember::host_tensor::from(parity::eval_output(model)));
    result.insert("losses", floats(losses));
    pt::save(result, dir / ("ember_" + name + "_result.pth"));
}

int parity_write(const fs::path& dir)
{
    namespace g = golden::parity;
    fs::create_directories(dir);
    parity_run<ember::optim::sgd<float>>(dir, "sgd", g::sgd::options);
    parity_run<ember::optim::adam<float>>(dir, "adam", g::adam::options);
    parity_run<ember::optim::adamw<float>>(dir, "adamw", g::adamw::options);
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    try
    {
        if (argc == 3 && std::string(argv[1]) == "write")
            return write(argv[2]);
        if (argc == 4 && std::string(argv[1]) == "dump")
            return dump(argv[2], argv[3]);
        if (argc == 3 && std::string(argv[1]) == "big-write")
            return big_write(argv[2]);
        if (argc == 3 && std::string(argv[1]) == "big-check")
            return big_check(argv[2]);
        if (argc == 3 && std::string(argv[1]) == "parity")
            return parity_write(argv[2]);
        std::cerr << "usage: torch_tool write DIR | dump FILE KIND | big-write FILE | "
                     "big-check FILE | parity DIR\n";
        return 2;
    }
    catch (const std::exception& e)
    {
        std::cerr << "torch_tool: " << e.what() << "\n";
        return 1;
    }
}

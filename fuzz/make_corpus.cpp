// Seeds for the fuzz targets: valid files of every content type, written by ember itself, so
// the fuzzers start from inputs that parse all the way through.
//
//   make_corpus TARGET DIR            writes TARGET's seeds into DIR
//   make_corpus seal KIND IN OUT      wraps the payload IN in a container of content KIND
//                                     (1 state_dict, 2 optimizer state, 3 checkpoint) with valid
//                                     checksums: turns a fuzz_ember_payload finding into a file
#include "fuzz_common.hpp"

#include <ember/core/generator.hpp>
#include <ember/serialize/pytorch.hpp>
#include <ember/serialize/safetensors.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <string>

namespace fs = std::filesystem;
using namespace ember;

namespace
{

host_tensor filled(dtype type, std::vector<std::int64_t> shape, unsigned seed)
{
    host_tensor t(type, std::move(shape));
    auto b = t.bytes();
    for (std::size_t i = 0; i < b.size(); ++i)
        b[i] = static_cast<std::byte>((i * 37 + seed * 11) & 0x7f);
    return t;
}

std::vector<state_dict> state_dicts()
{
    std::vector<state_dict> all;
    all.emplace_back();
    state_dict lesson;
    lesson.insert("weight", host_tensor::from(tensor<float, 1>{0.4398f}));
    lesson.insert("bias", host_tensor::from(tensor<float, 1>{0.3607f}));
    all.push_back(lesson);
    state_dict kinds;
    unsigned seed = 0;
    for (auto d : {dtype::float32, dtype::float64, dtype::int64, dtype::int32, dtype::int16,
                   dtype::int8, dtype::uint8, dtype::boolean, dtype::float16, dtype::bfloat16})
        kinds.insert("t." + std::string(dtype_name(d)), filled(d, {2}, ++seed));
    all.push_back(kinds);
    state_dict shapes;
    shapes.insert("scalar", filled(dtype::float32, {}, 1));
    shapes.insert("empty", host_tensor(dtype::float32, {0, 3}));
    shapes.insert("fc1.weight", filled(dtype::float32, {2, 3}, 2));
    shapes.insert("rank4", filled(dtype::int8, {1, 2, 1, 2}, 3));
    shapes.insert("bn.num_batches_tracked", host_tensor::from(tensor<std::int64_t, 0>(42)));
    all.push_back(shapes);
    state_dict specials;
    const double inf = std::numeric_limits<double>::infinity();
    specials.insert("specials",
                    host_tensor::from(tensor<double, 1>{std::nan(""), -inf, inf, -0.0, 5e-324,
                                                        1.7976931348623157e308}));
    specials.insert("f", host_tensor::from(tensor<float, 1>{std::nanf(""), -0.f, 1e-45f}));
    all.push_back(specials);
    return all;
}

std::vector<optim::optimizer_state> optimizer_states()
{
    std::vector<optim::optimizer_state> all;
    all.emplace_back();
    optim::optimizer_state sgd;
    sgd.state[0].insert("momentum_buffer", host_tensor::from(tensor<float, 1>{1.f, 2.f}));
    sgd.state[1].insert("momentum_buffer", optim::state_value{});
    optim::param_group_state g;
    g.options.insert("lr", 0.01);
    g.options.insert("momentum", 0.9);
    g.options.insert("nesterov", false);
    g.options.insert("foreach", std::monostate{});
    g.options.insert("name", std::string("backbone")); // a group's own key, as a string
    g.params = {0, 1};
    sgd.param_groups.push_back(g);
    all.push_back(sgd);
    optim::optimizer_state adam;
    adam.state[0].insert("step", host_tensor::from(tensor<float, 0>(3.f)));
    adam.state[0].insert("exp_avg", host_tensor::from(tensor<float, 1>{0.1f}));
    adam.state[0].insert("exp_avg_sq", host_tensor::from(tensor<float, 1>{0.01f}));
    optim::param_group_state a;
    a.options.insert("lr", 0.001);
    a.options.insert("betas", std::vector<double>{0.9, 0.999});
    a.options.insert("amsgrad", true);
    a.options.insert("count", std::int64_t{7});
    a.params = {0};
    adam.param_groups.push_back(a);
    all.push_back(adam);
    return all;
}

std::vector<checkpoint> checkpoints()
{
    std::vector<checkpoint> all;
    all.emplace_back();
    checkpoint c;
    c.epoch = 100;
    c.model_state_dict = state_dicts()[1];
    c.optimizer_state_dict = optimizer_states()[1];
    c.train_loss = 0.0245;
    c.val_loss = 0.0311;
    c.hyperparameters.insert("lr", 0.01);
    c.hyperparameters.insert("epochs", 100);
    c.hyperparameters.insert("name", "linear");
    c.hyperparameters.insert("shuffle", true);
    c.hyperparameters.insert("layers", value::list{value(1), value(2.5), value("x"), value()});
    value::dict nested;
    nested.insert("decay", value::list{value(0.1)});
    c.hyperparameters.insert("schedule", nested);
    c.timestamp = "2024-01-02T03:04:05.000006";
    c.global_step = 4200;
    generator g(42);
    g.uniform<float>(0.f, 1.f);
    g.normal();
    c.generators.insert("default", g.state());
    // A MultiStepLR state: its milestones go into PyTorch files as a collections.Counter.
    value::dict scheduler;
    scheduler.insert("milestones", value::dict{{"3", value(1)}, {"5", value(2)}});
    scheduler.insert("gamma", 0.5);
    scheduler.insert("base_lrs", value::list{value(0.1)});
    scheduler.insert("last_epoch", 4);
    c.scheduler_state = value(std::move(scheduler));
    c.data_state = value(value::list{value(3), value(1), value(2)});
    c.extras.insert("note", "seed");
    c.extras.insert("tensor", filled(dtype::float32, {2}, 9));
    all.push_back(c);
    return all;
}

int counter = 0;

void write(const fs::path& dir, const std::string& stem, std::span<const std::byte> bytes)
{
    std::ofstream f(dir / (stem + "-" + std::to_string(counter++)), std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

template <class F>
void each_object(F&& f)
{
    for (const auto& x : state_dicts())
        f(x, "state_dict");
    for (const auto& x : optimizer_states())
        f(x, "optimizer");
    for (const auto& x : checkpoints())
        f(x, "checkpoint");
}

int usage()
{
    std::cerr << "usage: make_corpus {ember_file|ember_payload|cereal_binary|cereal_text|pytorch|"
                 "pickle|zip|safetensors} DIR\n"
                 "       make_corpus seal KIND IN OUT\n";
    return 2;
}

} // namespace

int main(int argc, char** argv)
{
    if (argc == 5 && std::string(argv[1]) == "seal")
    {
        std::ifstream in(argv[3], std::ios::binary);
        std::vector<char> raw{std::istreambuf_iterator<char>(in), {}};
        const auto file =
            ember_fuzz::seal(static_cast<std::uint32_t>(std::stoul(argv[2])),
                             {reinterpret_cast<const std::byte*>(raw.data()), raw.size()});
        std::ofstream out(argv[4], std::ios::binary);
        out.write(reinterpret_cast<const char*>(file.data()),
                  static_cast<std::streamsize>(file.size()));
        return out ? 0 : 1;
    }
    if (argc != 3)
        return usage();
    const std::string target = argv[1];
    const fs::path dir = argv[2];
    fs::create_directories(dir);
    if (target == "ember_file")
        each_object([&](const auto& x, const char* what)
                    { write(dir, what, detail::encode(x, file_format::ember)); });
    else if (target == "ember_payload")
        each_object(
            [&](const auto& x, const char* what)
            {
                const auto file = detail::encode(x, file_format::ember);
                write(dir, what, std::span(file).subspan(detail::header_size));
            });
    else if (target == "cereal_binary")
        each_object(
            [&](const auto& x, const char* what)
            {
                write(dir, what, detail::encode(x, file_format::cereal_portable_binary));
                write(dir, what, detail::encode(x, file_format::cereal_binary));
            });
    else if (target == "cereal_text")
        each_object(
            [&](const auto& x, const char* what)
            {
                write(dir, what, detail::encode(x, file_format::json));
                write(dir, what, detail::encode(x, file_format::xml));
            });
    else if (target == "pytorch" || target == "zip" || target == "pickle")
    {
        std::vector<std::vector<std::byte>> files;
        each_object([&](const auto& x, const char*) { files.push_back(pytorch::to_bytes(x)); });
        value v(value::dict{});
        v.as<value::dict>().insert("list", value::list{value(1), value("two"), value(3.0)});
        files.push_back(pytorch::to_bytes(v));
        for (const auto& file : files)
        {
            if (target != "pickle")
            {
                write(dir, target, file);
                continue;
            }
            const pytorch::zip_reader zip(file, "seed");
            for (const auto& e : zip.entries())
                if (e.name.ends_with("/data.pkl"))
                    write(dir, target, zip.data(e));
        }
    }
    else if (target == "safetensors")
    {
        ordered_dict<std::string> metadata;
        metadata.insert("format", "pt");
        for (const auto& sd : state_dicts())
        {
            write(dir, target, safetensors::to_bytes(sd));
            write(dir, target, safetensors::to_bytes(sd, metadata));
        }
    }
    else
        return usage();
    std::cout << counter << " seeds in " << dir.string() << "\n";
    return 0;
}

// PyTorch's file format: files written by PyTorch 1.13 and 2.x (tests/data/pytorch/, made by
// scripts/make_torch_files.py) load as what PyTorch saved; what ember writes has torch.save's
// layout and loads back; hostile pickles and zips fail with a format_error naming the fault.
// Live round trips through real PyTorch run in the 'pytorch_roundtrip' test.
#include <ember/core/generator.hpp>
#include <ember/detail/crc32.hpp>
#include <ember/nn/module.hpp>
#include <ember/optim/lr_scheduler.hpp>
#include <ember/optim/sgd.hpp>
#include <ember/serialize/module.hpp>
#include <ember/serialize/pytorch.hpp>

#include "golden/pytorch_files.hpp"
#include "torch_dump.hpp"

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <span>
#include <string>
#include <vector>

namespace fs = std::filesystem;
namespace pt = ember::pytorch;
using ember::host_tensor;
using ember::value;
using bytes = std::vector<std::byte>;

namespace
{

fs::path data_folder()
{
    if (const char* env = std::getenv("EMBER_TEST_DATA"))
        return env;
    // __FILE__ is relative to the build root, the parent of this executable's folder.
    fs::path source = __FILE__;
    if (source.is_relative())
        source = fs::read_symlink("/proc/self/exe").parent_path().parent_path() / source;
    return source.parent_path() / "data";
}

bytes read(const fs::path& p)
{
    std::ifstream in(p, std::ios::binary);
    std::vector<char> raw{std::istreambuf_iterator<char>(in), {}};
    bytes out(raw.size());
    std::memcpy(out.data(), raw.data(), raw.size());
    return out;
}

bytes raw(const std::string& s)
{
    bytes out(s.size());
    std::memcpy(out.data(), s.data(), s.size());
    return out;
}

/// The bytes of a literal, embedded NULs included.
template <std::size_t N>
bytes raw(const char (&s)[N])
{
    return raw(std::string(s, N - 1));
}

/// A torch.save-shaped archive around a pickle and storage records.
bytes archive(const bytes& pkl, const std::vector<std::pair<std::string, bytes>>& records = {},
              std::string folder = "archive", pt::zip_writer_options options = {})
{
    pt::zip_writer zip(options);
    zip.add(folder + "/data.pkl", pkl);
    for (const auto& [name, data] : records)
        zip.add(folder + "/" + name, data);
    zip.add(folder + "/version", std::string_view("3\n"));
    return zip.finish();
}

/// A pickle of {'t': tensor} over storage "0" of `numel` float32 elements.
bytes tensor_pickle(std::uint64_t numel, std::int64_t offset, std::vector<std::int64_t> size,
                    std::vector<std::int64_t> stride, std::string_view type = "FloatStorage")
{
    pt::pickler p;
    p.empty_dict();
    p.string("t");
    p.global("torch._utils", "_rebuild_tensor_v2");
    p.mark();
    p.mark();
    p.string("storage");
    p.global("torch", type);
    p.string("0");
    p.string("cpu");
    p.integer(static_cast<std::int64_t>(numel));
    p.tuple(5);
    p.persistent_id();
    p.integer(offset);
    p.mark();
    for (auto s : size)
        p.integer(s);
    p.tuple_from_mark();
    p.mark();
    for (auto s : stride)
        p.integer(s);
    p.tuple_from_mark();
    p.boolean(false);
    p.ordered_dict();
    p.tuple(6);
    p.reduce();
    p.setitem();
    return p.finish();
}

bytes floats(std::initializer_list<float> v)
{
    bytes out(v.size() * 4);
    std::memcpy(out.data(), std::data(v), out.size());
    return out;
}

/// The message of the format_error `f` throws; fails the test if it throws nothing or
/// anything else.
template <class F>
std::string format_error_of(F&& f)
{
    try
    {
        f();
    }
    catch (const ember::format_error& e)
    {
        return e.what();
    }
    catch (const std::exception& e)
    {
        BOOST_ERROR("expected format_error, got " << typeid(e).name() << ": " << e.what());
        return "";
    }
    BOOST_ERROR("expected format_error, nothing was thrown");
    return "";
}

#define CHECK_FORMAT_ERROR(expr, fragment)                                                         \
    do                                                                                             \
    {                                                                                              \
        const std::string message_ = format_error_of([&] { (void)(expr); });                       \
        BOOST_TEST(message_.find(fragment) != std::string::npos,                                   \
                   "message '" << message_ << "' lacks '" << fragment << "'");                     \
    } while (0)

value load_value(const bytes& b)
{
    return pt::from_bytes<value>(b, "test");
}

void check_same(const std::string& actual, std::string_view expected, const std::string& what)
{
    if (actual == expected)
    {
        BOOST_TEST(actual == expected, what);
        return;
    }
    std::size_t i = 0;
    while (i < actual.size() && i < expected.size() && actual[i] == expected[i])
        ++i;
    BOOST_ERROR(what << ": dumps differ at character " << i << ":\n  ember:   ..."
                     << actual.substr(i > 40 ? i - 40 : 0, 160) << "\n  PyTorch: ..."
                     << expected.substr(i > 40 ? i - 40 : 0, 160));
}

std::vector<const golden::torch_files::file*> golden_files(std::string_view kind = "")
{
    std::vector<const golden::torch_files::file*> out;
    for (const auto& f : golden::torch_files::files)
        if (f.path.starts_with("pytorch/") && (kind.empty() || f.kind == kind))
            out.push_back(&f);
    return out;
}

} // namespace

// ---- Files PyTorch wrote -----------------------------------------------------------------

BOOST_AUTO_TEST_CASE(every_golden_file_loads_as_the_value_pytorch_saved)
{
    const auto files = golden_files();
    BOOST_TEST_REQUIRE(files.size() >= 20u); // both PyTorch versions' files are there
    for (const auto* f : files)
    {
        BOOST_TEST_CONTEXT(f->path)
        {
            const value v = pt::load<value>(data_folder() / f->path);
            check_same(torch_dump::dump(v), f->dump, std::string(f->path));
        }
    }
}

BOOST_AUTO_TEST_CASE(state_dicts_from_pytorch_load_with_their_keys_dtypes_and_values)
{
    for (const auto* f : golden_files("state_dict"))
    {
        BOOST_TEST_CONTEXT(f->path)
        {
            const auto sd = pt::load<ember::state_dict>(data_folder() / f->path);
            check_same(torch_dump::dump(torch_dump::to_value(sd)), f->dump, std::string(f->path));
        }
    }
    // The MLP's BatchNorm1d counter is a 0-d int64 tensor; the script saved the model after
    // its four training steps (state_dict() tensors alias the live parameters and buffers).
    const auto sd = pt::load<ember::state_dict>(data_folder() / "pytorch/torch-1.13/mlp.pth");
    const host_tensor& count = sd.at("1.num_batches_tracked");
    BOOST_TEST((count.dtype() == ember::dtype::int64));
    BOOST_TEST(count.dim() == 0u);
    BOOST_TEST(count.item<std::int64_t>() == 4);
    BOOST_TEST(sd.keys().front() == "0.weight");
}

BOOST_AUTO_TEST_CASE(optimizer_state_dicts_from_pytorch_load_in_pytorch_layout)
{
    const auto files = golden_files("optimizer");
    BOOST_TEST_REQUIRE(files.size() >= 4u);
    for (const auto* f : files)
    {
        BOOST_TEST_CONTEXT(f->path)
        {
            const auto s = pt::load<ember::optim::optimizer_state>(data_folder() / f->path);
            check_same(torch_dump::dump(torch_dump::to_value(s)), f->dump, std::string(f->path));
        }
    }
    const auto adam =
        pt::load<ember::optim::optimizer_state>(data_folder() / "pytorch/torch-2.15/adam.pth");
    const auto& betas = std::get<std::vector<double>>(adam.param_groups.at(0).options.at("betas"));
    BOOST_TEST(betas == (std::vector<double>{0.9, 0.999}));
    BOOST_TEST(adam.state.size() == 6u); // the MLP's six parameter tensors
    BOOST_TEST(std::get<host_tensor>(adam.state.at(0).at("step")).item<float>() == 2.0f);
}

// PyTorch 1.13's SGD over two groups that carry keys of their own ('name', 'lr_scale'): an ember
// optimizer takes them into param_group::extra and saves them back, in a file PyTorch reads.
BOOST_AUTO_TEST_CASE(an_optimizer_takes_a_pytorch_groups_own_keys_and_saves_them_back)
{
    using param = ember::nn::parameter<float, 2>;
    using vec = ember::nn::parameter<float, 1>;
    param w0(ember::tensor<float, 2>::from_shape({8, 4})),
        w4(ember::tensor<float, 2>::from_shape({3, 8}));
    vec b0(ember::tensor<float, 1>::from_shape({8})), b4(ember::tensor<float, 1>::from_shape({3}));
    using ref = ember::nn::param_ref<float>;
    using sgd = ember::optim::sgd<float>;
    auto make = [&]
    {
        return sgd(std::vector{sgd::group_type({ref(w0), ref(b0)}, {.lr = 0.1}),
                               sgd::group_type({ref(w4), ref(b4)}, {.lr = 0.1})});
    };
    sgd opt = make();
    opt.load_state_dict(pt::load<ember::optim::optimizer_state>(
        data_folder() / "pytorch/torch-1.13/sgd_named_groups.pth"));
    const auto& first = opt.param_groups()[0];
    const auto& head = opt.param_groups()[1];
    BOOST_TEST(std::get<std::string>(first.extra.at("name")) == "first");
    BOOST_TEST(std::get<double>(first.extra.at("lr_scale")) == 0.5);
    BOOST_TEST(std::get<std::string>(head.extra.at("name")) == "head");
    BOOST_TEST(head.extra.size() == 1u);
    BOOST_TEST(head.options.lr == 0.05);
    BOOST_TEST(first.options.momentum == 0.9);

    const fs::path saved = fs::temp_directory_path() / "ember_named_groups_test.pth";
    pt::save(opt.state_dict(), saved);
    const auto back = pt::load<ember::optim::optimizer_state>(saved);
    fs::remove(saved);
    BOOST_TEST(std::get<std::string>(back.param_groups.at(1).options.at("name")) == "head");
    sgd again = make();
    again.load_state_dict(back);
    BOOST_TEST((again.state_dict() == opt.state_dict()));

    // A string that is not UTF-8 would make a file neither PyTorch nor ember reads: refused.
    opt.param_groups()[0].extra.insert_or_assign("name", std::string("caf\xe9"));
    BOOST_CHECK_EXCEPTION(
        pt::save(opt.state_dict(), saved), ember::value_error,
        [](const ember::value_error& e)
        { return std::string(e.what()).find("not valid UTF-8") != std::string::npos; });
    BOOST_TEST(!fs::exists(saved));
}

// MultiStepLR(milestones=[30.0, 60.0, 60.0]) in torch 1.13: a Counter with float keys, which
// Python treats as the ints they hold; they load as those ints' decimal strings.
BOOST_AUTO_TEST_CASE(a_counter_with_float_keys_holding_ints_loads_as_their_ints)
{
    const value state =
        pt::load<value>(data_folder() / "pytorch/torch-1.13/multi_step_float_milestones.pt");
    BOOST_TEST(torch_dump::dump(state.as<value::dict>().at("milestones")) == "{'30':1,'60':2}");
    ember::nn::parameter<float, 1> w(ember::tensor<float, 1>::from_shape({1}));
    ember::optim::sgd<float> opt({ember::nn::param_ref<float>(w)}, {.lr = 0.1});
    ember::optim::multi_step_lr sched(opt, {.milestones = {1}});
    sched.load_state_dict(state);
    BOOST_TEST((sched.options().milestones == std::vector<std::int64_t>{30, 60, 60}));
}

BOOST_AUTO_TEST_CASE(the_lessons_checkpoint_from_pytorch_loads_as_a_checkpoint)
{
    for (const char* version : {"torch-1.13", "torch-2.15"})
    {
        BOOST_TEST_CONTEXT(version)
        {
            const fs::path path = data_folder() / "pytorch" / version / "checkpoint.tar";
            const auto ck = pt::load<ember::checkpoint>(path);
            const value v = pt::load<value>(path);
            const auto& d = v.as<value::dict>();
            BOOST_TEST(ck.epoch == 100);
            BOOST_TEST(ck.train_loss == d.at("train_loss").as<double>());
            BOOST_TEST(ck.val_loss == d.at("val_loss").as<double>());
            BOOST_TEST(ck.timestamp == d.at("timestamp").as<std::string>());
            BOOST_TEST(ck.hyperparameters.at("learning_rate").as<double>() == 0.01);
            BOOST_TEST(torch_dump::dump(torch_dump::to_value(ck.model_state_dict)) ==
                       torch_dump::dump(d.at("model_state_dict")));
            BOOST_TEST(torch_dump::dump(torch_dump::to_value(ck.optimizer_state_dict)) ==
                       torch_dump::dump(d.at("optimizer_state_dict")));
            // The lesson stores torch.__version__; ember keeps unknown keys as extras.
            BOOST_TEST(ck.extras.at("pytorch_version").as<std::string>() ==
                       d.at("pytorch_version").as<std::string>());
            BOOST_TEST(ck.ember_version.empty());
            BOOST_TEST(ck.global_step == 0);
            BOOST_TEST(ck.generators.empty());
            // The learned weight the lesson prints (0.4398).
            BOOST_TEST(std::abs(ck.model_state_dict.at("weight").item<float>() - 0.4398f) < 1e-4f);
        }
    }
}

BOOST_AUTO_TEST_CASE(pytorchs_rng_state_is_embers_generator_state)
{
    // rng.pt holds torch.get_rng_state() after manual_seed(42), rand(3), randn(1).
    ember::generator g(42);
    for (int i = 0; i < 3; ++i)
        (void)g.uniform<float>(0.0f, 1.0f);
    (void)g.normal();
    for (const char* version : {"torch-1.13", "torch-2.15"})
    {
        BOOST_TEST_CONTEXT(version)
        {
            const value v = pt::load<value>(data_folder() / "pytorch" / version / "rng.pt");
            const host_tensor& torch_state = v.as<value::dict>().at("state").as<host_tensor>();
            BOOST_TEST((pt::from_torch_rng_state(torch_state) == g.state()));
            BOOST_TEST((pt::to_torch_rng_state(g.state()) == torch_state));
        }
    }
}

BOOST_AUTO_TEST_CASE(golden_files_saved_again_by_ember_load_as_the_same_value)
{
    for (const auto* f : golden_files())
    {
        BOOST_TEST_CONTEXT(f->path)
        {
            const value v = pt::load<value>(data_folder() / f->path);
            const bytes again = pt::to_bytes(v);
            check_same(torch_dump::dump(load_value(again)), f->dump, std::string(f->path));
        }
    }
}

BOOST_AUTO_TEST_CASE(the_archive_folder_is_taken_from_the_file_not_assumed)
{
    // PyTorch names the folder after the file: checkpoint/, linear_model/, mlp/.
    const bytes b = read(data_folder() / "pytorch/torch-1.13/linear_model.pth");
    pt::zip_reader zip(b);
    BOOST_TEST(zip.folder() == "linear_model");
    const auto sd = pt::from_bytes<ember::state_dict>(b);
    BOOST_TEST(sd.keys() == (std::vector<std::string>{"weight", "bias"}));
    // Any folder name works.
    const bytes renamed = pt::to_bytes(sd, "some_other_name");
    BOOST_TEST(pt::zip_reader(renamed).folder() == "some_other_name");
    BOOST_TEST((pt::from_bytes<ember::state_dict>(renamed) == sd));
}

// ---- What ember writes -------------------------------------------------------------------

namespace
{

ember::state_dict every_dtype()
{
    ember::state_dict sd;
    auto add = [&](const char* name, ember::dtype d, std::vector<std::int64_t> shape)
    {
        host_tensor t(d, shape);
        for (std::size_t i = 0; i < t.nbytes(); ++i)
            t.bytes()[i] =
                static_cast<std::byte>((i * 37 + 11) & (d == ember::dtype::boolean ? 1 : 0xff));
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

} // namespace

BOOST_AUTO_TEST_CASE(a_state_dict_of_every_dtype_round_trips_through_a_file)
{
    const fs::path path = fs::temp_directory_path() / "ember_pytorch_every_dtype.pth";
    const auto sd = every_dtype();
    pt::save(sd, path);
    BOOST_TEST((pt::load<ember::state_dict>(path) == sd));
    fs::remove(path);
}

BOOST_AUTO_TEST_CASE(saved_files_have_torch_saves_records_aligned_to_64_bytes)
{
    const auto sd = every_dtype();
    const bytes b = pt::to_bytes(sd, "model");
    pt::zip_reader zip(b);
    BOOST_TEST(zip.folder() == "model");
    std::vector<std::string> names;
    for (const auto& e : zip.entries())
    {
        names.push_back(e.name);
        BOOST_TEST(e.data_offset % 64 == 0u, e.name << " at " << e.data_offset);
    }
    BOOST_TEST(names.front() == "model/data.pkl");
    BOOST_TEST(names.at(1) == "model/byteorder");
    BOOST_TEST(names.back() == "model/version");
    BOOST_TEST(names.size() == sd.size() + 3);
    BOOST_TEST(names.at(2) == "model/data/0");
    auto version = zip.data(*zip.find("model/version"));
    BOOST_TEST(std::string(reinterpret_cast<const char*>(version.data()), version.size()) == "3\n");
    // Deterministic: the same object gives the same bytes.
    BOOST_TEST((pt::to_bytes(sd, "model") == b));
    // Saving names the folder after the file, as torch.save does.
    BOOST_TEST(pt::folder_for("/x/linear_model.pth") == "linear_model");
    BOOST_TEST(pt::folder_for("checkpoint.tar") == "checkpoint");
}

BOOST_AUTO_TEST_CASE(an_optimizer_state_round_trips_with_int_keys_and_tuples)
{
    ember::optim::optimizer_state s;
    host_tensor m(ember::dtype::float32, {2});
    m.data<float>()[0] = 1.5f;
    host_tensor step(ember::dtype::float32, {});
    step.data<float>()[0] = 3.0f;
    s.state[0].insert("momentum_buffer", m);
    s.state[0].insert("step", step);
    s.state[7].insert("momentum_buffer", std::monostate{});
    ember::optim::param_group_state g;
    g.options.insert("lr", 0.01);
    g.options.insert("betas", std::vector<double>{0.9, 0.999});
    g.options.insert("nesterov", true);
    g.options.insert("weight_decay", std::int64_t{0});
    g.options.insert("foreach", std::monostate{});
    g.params = {0, 7};
    s.param_groups.push_back(g);
    s.param_groups.push_back({{}, {}});
    const bytes b = pt::to_bytes(s);
    BOOST_TEST((pt::from_bytes<ember::optim::optimizer_state>(b) == s));
    // In the generic view the parameter indices are decimal strings.
    const value v = load_value(b);
    BOOST_TEST(v.as<value::dict>().at("state").as<value::dict>().contains("7"));
}

BOOST_AUTO_TEST_CASE(a_checkpoint_round_trips_every_field_including_exact_resume_state)
{
    ember::checkpoint c;
    c.epoch = 12;
    c.model_state_dict = every_dtype();
    c.optimizer_state_dict.param_groups.push_back({{{"lr", 0.5}}, {0, 1}});
    c.train_loss = 0.25;
    c.val_loss = 0.5;
    c.hyperparameters.insert("learning_rate", 0.01);
    c.hyperparameters.insert("layers", value::list{value(4), value(8)});
    c.timestamp = "2024-01-02T03:04:05.000006";
    c.global_step = 1234;
    ember::generator g(7);
    (void)g.normal();
    c.generators.insert("default", g.state());
    c.generators.insert("dropout", ember::generator(9).state());
    c.scheduler_state = value::dict{{"last_epoch", value(3)}};
    c.data_state = value::list{value(2), value(0), value(1)};
    c.extras.insert("note", "hello");
    const fs::path path = fs::temp_directory_path() / "ember_pytorch_checkpoint.tar";
    pt::save(c, path);
    const auto back = pt::load<ember::checkpoint>(path);
    BOOST_TEST((back == c));
    // Python sees the lesson's keys, ember_version, the 'ember' dict, then the extras.
    const value v = pt::load<value>(path);
    BOOST_TEST(v.as<value::dict>().keys() ==
               (std::vector<std::string>{"epoch", "model_state_dict", "optimizer_state_dict",
                                         "train_loss", "val_loss", "hyperparameters", "timestamp",
                                         "ember_version", "ember", "note"}));
    BOOST_TEST(v.as<value::dict>().at("ember_version").as<std::string>() == ember::version);
    fs::remove(path);
}

BOOST_AUTO_TEST_CASE(checkpoint_extras_may_not_shadow_its_fields)
{
    ember::checkpoint c;
    c.extras.insert("epoch", 3);
    BOOST_CHECK_THROW(pt::to_bytes(c), ember::value_error);
}

BOOST_AUTO_TEST_CASE(a_generic_value_round_trips_and_follows_the_documented_mapping)
{
    value::dict d;
    d.insert("none", value());
    d.insert("ints", value::list{value(0), value(255), value(256), value(65535), value(65536),
                                 value(-1), value(std::numeric_limits<std::int64_t>::max()),
                                 value(std::numeric_limits<std::int64_t>::min()),
                                 value(std::int64_t{1} << 40)});
    d.insert("float", 0.1);
    d.insert("nan", std::numeric_limits<double>::quiet_NaN());
    d.insert("text", "h\xc3\xa9llo");
    d.insert("tensor", host_tensor(ember::dtype::int16, {2}));
    d.insert("nested", value::dict{{"a", value::list{value(true), value(false)}}});
    const value v(d);
    const bytes b = pt::to_bytes(v);
    BOOST_TEST(torch_dump::dump(load_value(b)) == torch_dump::dump(v));
}

BOOST_AUTO_TEST_CASE(zip64_archives_load)
{
    const auto sd = every_dtype();
    pt::detail::archive_writer w("archive");
    w.write(sd);
    const bytes b = w.finish({.force_zip64 = true});
    BOOST_TEST((pt::from_bytes<ember::state_dict>(b) == sd));
}

BOOST_AUTO_TEST_CASE(big_endian_files_are_swapped_on_load)
{
    pt::pickler p;
    p.ordered_dict();
    p.string("w");
    p.tensor(ember::dtype::float32, {2}, "0", 2);
    p.setitem();
    bytes big = floats({1.5f, -2.0f});
    for (std::size_t i = 0; i < big.size(); i += 4)
        std::reverse(big.begin() + static_cast<std::ptrdiff_t>(i),
                     big.begin() + static_cast<std::ptrdiff_t>(i + 4));
    const bytes b = archive(p.finish(), {{"byteorder", raw("big")}, {"data/0", big}});
    const auto sd = pt::from_bytes<ember::state_dict>(b);
    BOOST_TEST(sd.at("w").data<float>()[0] == 1.5f);
    BOOST_TEST(sd.at("w").data<float>()[1] == -2.0f);
}

BOOST_AUTO_TEST_CASE(loading_the_wrong_kind_says_what_the_file_holds)
{
    const fs::path ck = data_folder() / "pytorch/torch-1.13/checkpoint.tar";
    CHECK_FORMAT_ERROR(pt::load<ember::state_dict>(ck), "load it as ember::checkpoint");
    const fs::path sgd = data_folder() / "pytorch/torch-1.13/sgd.pth";
    CHECK_FORMAT_ERROR(pt::load<ember::state_dict>(sgd), "load it as optim::optimizer_state");
    const fs::path mlp = data_folder() / "pytorch/torch-1.13/mlp.pth";
    CHECK_FORMAT_ERROR(pt::load<ember::optim::optimizer_state>(mlp), "unexpected key '0.weight'");
    CHECK_FORMAT_ERROR(pt::load<ember::checkpoint>(mlp), "no 'model_state_dict'");
    BOOST_CHECK_THROW(pt::load<ember::state_dict>(data_folder() / "no such file.pth"),
                      ember::io_error);
}

// ---- Views, offsets, shared storage -------------------------------------------------------

BOOST_AUTO_TEST_CASE(views_are_materialised_contiguous_from_their_storage)
{
    // A 3x2 view with strides (1, 3) at offset 1 of storage [0..7].
    const bytes pkl = tensor_pickle(8, 1, {3, 2}, {1, 3});
    const bytes b = archive(pkl, {{"data/0", floats({0, 1, 2, 3, 4, 5, 6, 7})}});
    const auto sd = pt::from_bytes<ember::state_dict>(b);
    const auto d = sd.at("t").data<float>();
    BOOST_TEST((std::vector<float>(d.begin(), d.end()) == std::vector<float>{1, 4, 2, 5, 3, 6}));
    // Stride 0 (expand) repeats the element.
    const bytes e = archive(tensor_pickle(2, 1, {3}, {0}), {{"data/0", floats({5, 9})}});
    const auto expanded = pt::from_bytes<ember::state_dict>(e);
    const auto x = expanded.at("t").data<float>();
    BOOST_TEST((std::vector<float>(x.begin(), x.end()) == std::vector<float>{9, 9, 9}));
}

namespace
{
// A module shaped like scripts/make_torch_files.py's views.pt: contiguous tensors (read in
// place by ember::load(model, path)) beside strided, transposed, expanded and permuted views
// (materialised), in four dtypes.
struct views_model : ember::nn::module<views_model>
{
    template <class T, std::size_t N>
    using buf = ember::nn::buffer<T, N>;
    buf<float, 2> base{ember::tensor<float, 2>::from_shape({4, 6})};
    buf<float, 2> transposed{ember::tensor<float, 2>::from_shape({6, 4})};
    buf<float, 2> strided{ember::tensor<float, 2>::from_shape({3, 3})};
    buf<std::int32_t, 1> offset{ember::tensor<std::int32_t, 1>::from_shape({4})};
    buf<double, 1> shared_a{ember::tensor<double, 1>::from_shape({4})};
    buf<double, 1> shared_b{ember::tensor<double, 1>::from_shape({4})};
    buf<float, 2> expanded{ember::tensor<float, 2>::from_shape({2, 3})};
    buf<float, 1> column{ember::tensor<float, 1>::from_shape({4})};
    buf<std::int16_t, 3> permuted{ember::tensor<std::int16_t, 3>::from_shape({4, 2, 3})};

    template <class V>
    void visit(V&& v)
    {
        v("base", base);
        v("transposed", transposed);
        v("strided", strided);
        v("offset", offset);
        v("shared_a", shared_a);
        v("shared_b", shared_b);
        v("expanded", expanded);
        v("column", column);
        v("permuted", permuted);
    }
};
} // namespace

BOOST_AUTO_TEST_CASE(a_model_loads_pytorch_views_in_place_and_copies_the_strided_ones)
{
    for (const char* version : {"torch-1.13", "torch-2.15"})
    {
        BOOST_TEST_CONTEXT(version)
        {
            const fs::path file = data_folder() / "pytorch" / version / "views.pt";
            views_model model;
            const auto result = ember::load(model, file);
            BOOST_TEST(result.missing_keys.empty());
            const auto expected = pt::load<ember::state_dict>(file);
            BOOST_TEST((model.state_dict() == expected));
            BOOST_TEST(model.permuted.value(3, 1, 2) ==
                       expected.at("permuted").data<std::int16_t>()[23]);
        }
    }
    // A file for another model: key_error naming the file, nothing changed.
    views_model model;
    model.base.value.fill(7.f);
    const fs::path mlp = data_folder() / "pytorch/torch-1.13/mlp.pth";
    try
    {
        ember::load(model, mlp);
        BOOST_FAIL("expected key_error");
    }
    catch (const ember::key_error& e)
    {
        BOOST_TEST(std::string(e.what()).find("mlp.pth") != std::string::npos, e.what());
    }
    BOOST_TEST(model.base.value(3, 5) == 7.f);
}

// ---- Hostile pickles ---------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(a_counter_reads_as_a_new_dict_as_in_python)
{
    // [d, Counter(d)], then c['x'] = 1: Python's Counter copies d, so d stays empty.
    const bytes pkl = raw("\x80\x02](}q\x00"
                          "ccollections\nCounter\nh\x00\x85R"
                          "X\x01\x00\x00\x00xK\x01se.");
    const value expected =
        value::list{value(value::dict{}), value(value::dict{{"x", value(std::int64_t{1})}})};
    BOOST_TEST((load_value(archive(pkl)) == expected));
    BOOST_TEST((load_value(archive(raw("\x80\x02"
                                       "ccollections\nCounter\n)R."))) == value(value::dict{})));
    CHECK_FORMAT_ERROR(load_value(archive(raw("\x80\x02"
                                              "ccollections\nCounter\n](K\x01"
                                              "e\x85R."))),
                       "collections.Counter takes a dict");
}

BOOST_AUTO_TEST_CASE(forbidden_globals_are_refused_by_name)
{
    // os.system('echo pwned') as pickle.dumps writes it.
    const bytes system = raw("\x80\x02"
                             "cos\nsystem\nq\x00X\x0a\x00\x00\x00"
                             "echo pwned\x85R.");
    CHECK_FORMAT_ERROR(load_value(archive(system)), "'os.system'");
    CHECK_FORMAT_ERROR(pt::unpickle(system), "at offset 2");
    const bytes eval = raw("\x80\x02"
                           "cbuiltins\neval\nX\x01\x00\x00\x00"
                           "1\x85R.");
    CHECK_FORMAT_ERROR(load_value(archive(eval)), "'builtins.eval'");
    CHECK_FORMAT_ERROR(pt::unpickle(raw("\x80\x02\x8c\x02os\x8c\x06system\x93.")), "'os.system'");
}

BOOST_AUTO_TEST_CASE(reduce_on_something_not_callable_is_refused)
{
    // An allowed global that is a type, not a rebuild function.
    CHECK_FORMAT_ERROR(pt::unpickle(raw("\x80\x02"
                                        "ctorch\nFloatStorage\n)R.")),
                       "would call torch.FloatStorage");
    // A string as the callable.
    CHECK_FORMAT_ERROR(pt::unpickle(raw("\x80\x02X\x01\x00\x00\x00x)R.")), "REDUCE calls a str");
    // OrderedDict with arguments it is never pickled with.
    CHECK_FORMAT_ERROR(pt::unpickle(raw("\x80\x02"
                                        "ccollections\nOrderedDict\nK\x01\x85R.")),
                       "takes 0 arguments");
    CHECK_FORMAT_ERROR(pt::unpickle(raw("\x80\x02"
                                        "ctorch\nTensor\n)\x81.")),
                       "NEWOBJ of torch.Tensor");
}

BOOST_AUTO_TEST_CASE(malformed_opcode_streams_fail_with_offsets)
{
    CHECK_FORMAT_ERROR(pt::unpickle(raw("\x80\x02h\x05.")), "memo index 5 was never stored");
    CHECK_FORMAT_ERROR(pt::unpickle(raw("\x80\x02j\xff\xff\xff\xff.")), "memo index 4294967295");
    CHECK_FORMAT_ERROR(pt::unpickle(raw("\x80\x02](K\x01K\x02u.")), "SETITEMS on a list");
    CHECK_FORMAT_ERROR(pt::unpickle(raw("\x80\x02}K\x01\x61.")), "APPEND on a dict");
    CHECK_FORMAT_ERROR(pt::unpickle(raw("\x80\x02.")), "stack underflow at offset 2");
    CHECK_FORMAT_ERROR(pt::unpickle(raw("\x80\x02t.")), "no MARK");
    CHECK_FORMAT_ERROR(pt::unpickle(raw("\x80\x02}(K\x01u.")), "odd number of items");
    CHECK_FORMAT_ERROR(pt::unpickle(raw("\x80\x02X\xff\xff\xff\x00"
                                        "abc")),
                       "runs past the end");
    CHECK_FORMAT_ERROR(pt::unpickle(raw("\x80\x02J\x01\x02")), "truncated");
    CHECK_FORMAT_ERROR(pt::unpickle(raw("\x80\x02N")), "without a STOP");
    CHECK_FORMAT_ERROR(pt::unpickle(raw("\x80\x02\xff.")), "unknown pickle opcode 0xff");
    CHECK_FORMAT_ERROR(pt::unpickle(raw("\x80\x02(i__main__\nX\n.")), "opcode INST");
    CHECK_FORMAT_ERROR(pt::unpickle(raw("\x80\x06N.")), "protocol 6");
    CHECK_FORMAT_ERROR(pt::unpickle(raw("\x80\x02X\x02\x00\x00\x00\xc3\x28.")), "UTF-8");
    CHECK_FORMAT_ERROR(pt::unpickle(raw("\x80\x02]]b.")), "BUILD on a list");
    CHECK_FORMAT_ERROR(pt::unpickle(raw("\x80\x02K\x01Q.")), "persistent id is an int");
}

BOOST_AUTO_TEST_CASE(deep_nesting_is_capped)
{
    // 2000 MARKs.
    CHECK_FORMAT_ERROR(pt::unpickle(raw("\x80\x02" + std::string(2000, '(') + ".")),
                       "MARKs nested deeper than 1000");
    // A tuple nested 5000 deep (TUPLE1 over and over) unpickles, and converting it stops.
    const bytes deep = raw("\x80\x02N" + std::string(5000, '\x85') + ".");
    BOOST_TEST(pt::unpickle(deep).node_count() > 5000u);
    CHECK_FORMAT_ERROR(load_value(archive(deep)), "nested deeper than 1000");
    // A list that contains itself.
    CHECK_FORMAT_ERROR(load_value(archive(raw("\x80\x02]q\x00h\x00"
                                              "a."))),
                       "nested deeper");
}

BOOST_AUTO_TEST_CASE(a_reference_bomb_is_stopped_before_it_expands)
{
    // t0 = (); t(i+1) = (t(i), t(i)): 40 levels is 2^40 leaves in a 300-byte pickle.
    std::string p("\x80\x02)q\x00", 5);
    for (int i = 0; i < 40; ++i)
    {
        p += "h";
        p += static_cast<char>(i);
        p += "h";
        p += static_cast<char>(i);
        p += "\x86q";
        p += static_cast<char>(i + 1);
    }
    p += ".";
    CHECK_FORMAT_ERROR(load_value(archive(raw(p))), "reference bomb");
}

BOOST_AUTO_TEST_CASE(ints_beyond_int64_are_an_error_naming_where)
{
    // {'seed': 2**64} (LONG1 with 9 bytes).
    const bytes p = raw("\x80\x02}X\x04\x00\x00\x00seed\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00"
                        "\x01s.");
    CHECK_FORMAT_ERROR(load_value(archive(p)), "['seed']: int of 9 bytes does not fit in int64");
    // The int64 extremes themselves are fine (LONG1 of 8 bytes).
    const bytes q = raw("\x80\x02\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80.");
    BOOST_TEST(load_value(archive(q)).as<std::int64_t>() ==
               std::numeric_limits<std::int64_t>::min());
}

BOOST_AUTO_TEST_CASE(dict_keys_that_collide_after_int_conversion_are_an_error)
{
    const bytes p = raw("\x80\x02}(K\x01N"
                        "X\x01\x00\x00\x00"
                        "1Nu.");
    CHECK_FORMAT_ERROR(load_value(archive(p)), "has the key '1' twice");
}

BOOST_AUTO_TEST_CASE(a_storage_smaller_than_its_view_needs_is_refused)
{
    // A 10-element view of a 4-element storage.
    CHECK_FORMAT_ERROR(pt::unpickle(tensor_pickle(4, 0, {10}, {1})),
                       "needs 10 elements, but storage '0' has 4");
    // Offset pushes it past the end.
    CHECK_FORMAT_ERROR(pt::unpickle(tensor_pickle(4, 2, {3}, {1})), "needs 5 elements");
    // Strides that overflow, negative sizes and strides.
    CHECK_FORMAT_ERROR(pt::unpickle(tensor_pickle(4, 0, {5}, {std::int64_t{1} << 62})),
                       "overflows");
    CHECK_FORMAT_ERROR(pt::unpickle(tensor_pickle(4, 0, {-1}, {1})), "negative");
    CHECK_FORMAT_ERROR(pt::unpickle(tensor_pickle(4, 0, {2}, {-1})), "negative");
    CHECK_FORMAT_ERROR(pt::unpickle(tensor_pickle(4, 0, {2, 2}, {1})), "2 sizes but 1 strides");
    CHECK_FORMAT_ERROR(pt::unpickle(tensor_pickle(4, 0, {1}, {1}, "ComplexFloatStorage")),
                       "'torch.ComplexFloatStorage' at offset");
}

BOOST_AUTO_TEST_CASE(a_record_that_disagrees_with_its_storage_is_refused)
{
    // The pickle declares 4 floats; the record holds 2.
    CHECK_FORMAT_ERROR(
        load_value(archive(tensor_pickle(4, 0, {4}, {1}), {{"data/0", floats({1, 2})}})),
        "holds 8 bytes, but its storage declares 4 float32 elements");
    // A huge declared count.
    CHECK_FORMAT_ERROR(load_value(archive(tensor_pickle(std::uint64_t{1} << 61, 0, {4}, {1}),
                                          {{"data/0", floats({1, 2})}})),
                       "storage declares 2305843009213693952");
    // No record at all.
    CHECK_FORMAT_ERROR(load_value(archive(tensor_pickle(4, 0, {4}, {1}))),
                       "has no record 'archive/data/0'");
}

BOOST_AUTO_TEST_CASE(a_small_file_cannot_allocate_gigabytes_through_a_view)
{
    // One float viewed 2^40 times with stride 0: 4 TiB if materialised.
    const bytes b =
        archive(tensor_pickle(1, 0, {std::int64_t{1} << 40}, {0}), {{"data/0", floats({1})}});
    CHECK_FORMAT_ERROR(load_value(b), "past this load's limit");
    // The limit is an option.
    const bytes small = archive(tensor_pickle(1, 0, {100}, {0}), {{"data/0", floats({1})}});
    CHECK_FORMAT_ERROR((pt::from_bytes<value>(small, "x", {.max_tensor_bytes = 100})),
                       "past this load's limit");
    BOOST_TEST((pt::from_bytes<value>(small, "x", {.max_tensor_bytes = 400})
                    .as<value::dict>()
                    .at("t")
                    .as<host_tensor>()
                    .numel() == 100u));
}

BOOST_AUTO_TEST_CASE(storages_referenced_twice_must_agree)
{
    pt::pickler p;
    p.empty_list();
    p.mark();
    p.tensor(ember::dtype::float32, {2}, "0", 2);
    p.tensor(ember::dtype::float64, {1}, "0", 1);
    p.appends();
    CHECK_FORMAT_ERROR(pt::unpickle(p.finish()), "storage '0' referenced as 1 float64");
}

BOOST_AUTO_TEST_CASE(shared_storage_loads_into_independent_tensors)
{
    pt::pickler p;
    p.ordered_dict();
    p.mark();
    p.string("a");
    p.tensor(ember::dtype::float32, {2}, "0", 2);
    p.string("b");
    p.tensor(ember::dtype::float32, {2}, "0", 2);
    p.setitems();
    auto sd = pt::from_bytes<ember::state_dict>(archive(p.finish(), {{"data/0", floats({3, 4})}}));
    sd.at("a").data<float>()[0] = 10;
    BOOST_TEST(sd.at("b").data<float>()[0] == 3.0f);
}

// ---- Hostile zips ------------------------------------------------------------------------

namespace
{

/// A two-record archive and the offsets a test patches.
struct two_records
{
    bytes b;
    std::size_t first_local = 0, first_central = 0;
};

two_records make_two_records()
{
    pt::zip_writer zip;
    zip.add("archive/a", floats({1, 2, 3, 4}));
    zip.add("archive/b", floats({5, 6}));
    two_records r{zip.finish()};
    pt::zip_reader reader(r.b);
    r.first_local = reader.entries().at(0).header_offset;
    // The central directory starts right after the last record.
    const auto& last = reader.entries().back();
    r.first_central = last.data_offset + last.size;
    return r;
}

void put32(bytes& b, std::size_t at, std::uint32_t v)
{
    for (int i = 0; i < 4; ++i)
        b[at + i] = static_cast<std::byte>(v >> (8 * i));
}

} // namespace

BOOST_AUTO_TEST_CASE(zip_entries_that_overlap_or_run_past_their_area_are_refused)
{
    {
        // Record a claims 24 bytes: it runs over b's local header.
        auto r = make_two_records();
        put32(r.b, r.first_local + 18, 24);
        put32(r.b, r.first_local + 22, 24);
        put32(r.b, r.first_central + 20, 24);
        put32(r.b, r.first_central + 24, 24);
        CHECK_FORMAT_ERROR(pt::zip_reader(r.b), "overlap");
    }
    {
        // Record a claims more bytes than precede the central directory.
        auto r = make_two_records();
        put32(r.b, r.first_local + 18, 100000);
        put32(r.b, r.first_local + 22, 100000);
        put32(r.b, r.first_central + 20, 100000);
        put32(r.b, r.first_central + 24, 100000);
        CHECK_FORMAT_ERROR(pt::zip_reader(r.b), "run past the data area");
    }
    {
        // A local header offset outside the file.
        auto r = make_two_records();
        put32(r.b, r.first_central + 42, 0x7fffffff);
        CHECK_FORMAT_ERROR(pt::zip_reader(r.b), "outside the archive's data area");
    }
    {
        // Two central entries naming the same record.
        auto r = make_two_records();
        pt::zip_reader reader(r.b);
        const std::size_t second_central = r.first_central + 46 + 9;
        put32(r.b, second_central + 42, static_cast<std::uint32_t>(r.first_local));
        std::copy_n(r.b.begin() + static_cast<std::ptrdiff_t>(r.first_central + 16), 12,
                    r.b.begin() + static_cast<std::ptrdiff_t>(second_central + 16));
        // Rename b to a (same length) so the local header agrees.
        r.b[second_central + 46 + 8] = std::byte{'a'};
        CHECK_FORMAT_ERROR(pt::zip_reader(r.b), "duplicate entry 'archive/a'");
    }
}

BOOST_AUTO_TEST_CASE(zip_structure_faults_are_refused)
{
    const auto r = make_two_records();
    {
        // More entries than the directory can hold.
        auto b = r.b;
        const std::size_t end = b.size() - 22;
        b[end + 8] = b[end + 10] = std::byte{0xfe};
        b[end + 9] = b[end + 11] = std::byte{0xff};
        CHECK_FORMAT_ERROR(pt::zip_reader(b), "more than a");
    }
    {
        // Truncated: the end record is gone.
        bytes b(r.b.begin(), r.b.begin() + static_cast<std::ptrdiff_t>(r.b.size() / 2));
        CHECK_FORMAT_ERROR(pt::zip_reader(b), "no end of central directory record (truncated?)");
    }
    {
        // A compressed entry.
        auto b = r.b;
        b[r.first_central + 10] = std::byte{8};
        CHECK_FORMAT_ERROR(pt::zip_reader(b), "is compressed (method 8)");
    }
    {
        // A flipped data byte fails the CRC when the archive is opened, read or not.
        auto b = r.b;
        pt::zip_reader clean(b);
        b[clean.entries().at(1).data_offset] ^= std::byte{1};
        CHECK_FORMAT_ERROR(pt::zip_reader(b), "record 'archive/b' at offset");
        CHECK_FORMAT_ERROR(pt::zip_reader(b), "fails its CRC-32 check");
    }
    {
        // The directory's offset disagrees with where it is.
        auto b = r.b;
        const std::size_t end = b.size() - 22;
        put32(b, end + 16, static_cast<std::uint32_t>(r.first_central - 4));
        CHECK_FORMAT_ERROR(pt::zip_reader(b), "does not end where the end record begins");
    }
    CHECK_FORMAT_ERROR(pt::zip_reader(raw("not a zip file at all, no no no")), "not a zip archive");
    CHECK_FORMAT_ERROR(pt::zip_reader(raw("PK")), "too short");
}

BOOST_AUTO_TEST_CASE(zip64_records_that_disagree_are_refused)
{
    pt::zip_writer zip({.force_zip64 = true});
    zip.add("archive/a", floats({1}));
    bytes b = zip.finish();
    BOOST_TEST(pt::zip_reader(b).entries().size() == 1u);
    // The classic end record says 1 entry; make the ZIP64 one say 2.
    const std::size_t z = b.size() - 22 - 20 - 56;
    b[z + 32] = std::byte{2};
    CHECK_FORMAT_ERROR(pt::zip_reader(b), "end records disagree on the entry count");
}

BOOST_AUTO_TEST_CASE(a_large_record_gets_its_checksum_written_into_its_header_after_its_data)
{
    // From 64 KiB a record is checksummed as it is written (each tensor read once) and its
    // CRC-32 goes into the local header at the end; with and without ZIP64 fields, the reader
    // (which checks local header, central entry and data against each other) must agree.
    std::vector<float> big(70000);
    for (std::size_t i = 0; i < big.size(); ++i)
        big[i] = static_cast<float>(i) * 0.5f;
    const auto big_bytes = std::as_bytes(std::span<const float>(big));
    for (bool zip64 : {false, true})
    {
        BOOST_TEST_CONTEXT("zip64 " << zip64)
        {
            pt::zip_writer zip({.force_zip64 = zip64});
            zip.add("archive/small", floats({1, 2, 3}));
            zip.add("archive/big", big_bytes);
            zip.add("archive/after", floats({4}));
            const bytes b = zip.finish();
            pt::zip_reader reader(b);
            const auto& e = reader.entries().at(1);
            BOOST_TEST(e.crc32 == ember::detail::crc32_of(big_bytes));
            std::uint32_t local_crc = 0;
            std::memcpy(&local_crc, b.data() + e.header_offset + 14, 4);
            BOOST_TEST(local_crc == e.crc32);
            BOOST_TEST(e.data_offset % 64 == 0u);
            const auto data = reader.data(e);
            BOOST_TEST(std::equal(data.begin(), data.end(), big_bytes.begin(), big_bytes.end()));
        }
    }
}

BOOST_AUTO_TEST_CASE(other_pytorch_formats_get_a_clear_message)
{
    CHECK_FORMAT_ERROR(load_value(raw("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
                                      ".rest")),
                       "legacy PyTorch file");
    pt::zip_writer zip;
    zip.add("model/constants.pkl", raw("\x80\x02)."));
    zip.add("model/version", std::string_view("3\n"));
    CHECK_FORMAT_ERROR(load_value(zip.finish()), "TorchScript");
    pt::zip_writer plain;
    plain.add("data.pkl", raw("\x80\x02N."));
    CHECK_FORMAT_ERROR(load_value(plain.finish()), "not in a folder");
}

// ---- Every single-bit flip -------------------------------------------------------------

namespace
{

std::uint64_t le(const bytes& b, std::size_t at, std::size_t width)
{
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < width; ++i)
        v |= static_cast<std::uint64_t>(b[at + i]) << (8 * i);
    return v;
}

/// Per byte, the bits whose flip zip.hpp lets through because the field carries no meaning
/// for a reader of stored records: "version made by", internal and external attributes and
/// comments of central entries; the id and payload of local extra blocks other than ZIP64
/// (PyTorch's "FB" padding); the ZIP64 end record's two version fields; bit 0 of the ZIP64
/// locator's disk count (0 and 1 both mean one disk). Found by walking `b` independently of
/// zip_reader, trusting its layout (the file is whole).
std::vector<std::uint8_t> meaning_free_bits(const bytes& b)
{
    std::vector<std::uint8_t> mask(b.size(), 0);
    auto free = [&](std::size_t from, std::size_t n)
    {
        for (std::size_t i = from; i < from + n; ++i)
            mask[i] = 0xff;
    };
    const std::size_t end = b.size() - 22;
    std::uint64_t count = le(b, end + 10, 2);
    std::uint64_t cd = le(b, end + 16, 4);
    if (end >= 20 && le(b, end - 20, 4) == 0x07064b50)
    {
        const std::size_t z = le(b, end - 20 + 8, 8);
        free(z + 12, 4);
        mask[end - 20 + 16] = 0x01;
        count = le(b, z + 32, 8);
        cd = le(b, z + 48, 8);
    }
    for (std::uint64_t i = 0; i < count; ++i)
    {
        const std::size_t nlen = le(b, cd + 28, 2), xlen = le(b, cd + 30, 2),
                          clen = le(b, cd + 32, 2);
        free(cd + 4, 2);
        free(cd + 36, 6);
        free(cd + 46 + nlen + xlen, clen);
        std::uint64_t lho = le(b, cd + 42, 4);
        if (lho == 0xffffffffu)
        {
            // The ZIP64 extra's last field here (ember writes sizes, then the offset).
            lho = le(b, cd + 46 + nlen + le(b, cd + 46 + nlen + 2, 2) + 4 - 8, 8);
        }
        const std::size_t lnlen = le(b, lho + 26, 2), lxlen = le(b, lho + 28, 2);
        for (std::size_t x = lho + 30 + lnlen; x < lho + 30 + lnlen + lxlen;)
        {
            const std::size_t len = le(b, x + 2, 2);
            if (le(b, x, 2) != 1)
            {
                free(x, 2);
                free(x + 4, len);
            }
            x += 4 + len;
        }
        cd += 46 + nlen + xlen + clen;
    }
    return mask;
}

struct flip_outcome
{
    std::size_t rejected = 0, harmless = 0;
};

/// Flips each bit of `file` in turn and loads the result as a state_dict: it must throw
/// format_error naming where the damage is, or, for a bit of meaning_free_bits(), load the
/// tensors of the whole file bit for bit.
flip_outcome flip_every_bit(const bytes& file, const std::string& what)
{
    const auto clean = pt::from_bytes<ember::state_dict>(file, what);
    const auto mask = meaning_free_bits(file);
    flip_outcome out;
    bytes b = file;
    for (std::size_t i = 0; i < b.size(); ++i)
        for (int bit = 0; bit < 8; ++bit)
        {
            b[i] ^= std::byte(1u << bit);
            const std::string where = what + ": bit " + std::to_string(bit) + " of byte " +
                                      std::to_string(i) + " flipped";
            try
            {
                const auto loaded = pt::from_bytes<ember::state_dict>(b, what);
                ++out.harmless;
                if (!(loaded == clean))
                    BOOST_ERROR(where << ": loaded different tensors");
                else if (!(mask[i] & (1u << bit)))
                    BOOST_ERROR(where << ": loaded, though the field there has a meaning");
            }
            catch (const ember::format_error& e)
            {
                ++out.rejected;
                const std::string m = e.what();
                if (m.find(what) != 0 ||
                    (m.find("offset") == std::string::npos &&
                     m.find("entry") == std::string::npos && m.find("record") == std::string::npos))
                    BOOST_ERROR(where << ": the message names no entry or offset: " << m);
            }
            catch (const std::exception& e)
            {
                BOOST_ERROR(where << ": not a format_error: " << e.what());
            }
            b[i] ^= std::byte(1u << bit);
        }
    BOOST_TEST_MESSAGE(what << ": " << b.size() * 8 << " single-bit flips, " << out.rejected
                            << " refused, " << out.harmless << " harmless");
    BOOST_TEST(out.rejected + out.harmless == b.size() * 8, what);
    BOOST_TEST(out.rejected > out.harmless, what); // most bits mean something
    return out;
}

template <class U>
void put(bytes& out, U v)
{
    for (std::size_t i = 0; i < sizeof(U); ++i)
        out.push_back(static_cast<std::byte>((static_cast<std::uint64_t>(v) >> (8 * i)) & 0xff));
}

/// `archive`'s records rewritten as Python's zipfile writes to a stream it cannot seek: flag 8,
/// local CRC and sizes zero, a data descriptor after each record (signature, CRC, sizes of 8
/// bytes each when `zip64`, with a ZIP64 extra of zero sizes in the local header, else 4).
bytes with_data_descriptors(const bytes& archive, bool zip64)
{
    const pt::zip_reader in(archive);
    bytes out;
    std::vector<std::uint64_t> offsets;
    for (const auto& e : in.entries())
    {
        const auto d = in.data(e);
        offsets.push_back(out.size());
        put<std::uint32_t>(out, 0x04034b50);
        put<std::uint16_t>(out, 45);
        put<std::uint16_t>(out, 0x08);
        put<std::uint16_t>(out, 0);
        put<std::uint16_t>(out, 0);
        put<std::uint16_t>(out, 33);
        put<std::uint32_t>(out, 0);
        put<std::uint32_t>(out, 0);
        put<std::uint32_t>(out, 0);
        put<std::uint16_t>(out, static_cast<std::uint16_t>(e.name.size()));
        put<std::uint16_t>(out, zip64 ? 20 : 0);
        out.insert(out.end(), reinterpret_cast<const std::byte*>(e.name.data()),
                   reinterpret_cast<const std::byte*>(e.name.data()) + e.name.size());
        if (zip64)
        {
            put<std::uint16_t>(out, 1);
            put<std::uint16_t>(out, 16);
            put<std::uint64_t>(out, 0);
            put<std::uint64_t>(out, 0);
        }
        out.insert(out.end(), d.begin(), d.end());
        put<std::uint32_t>(out, 0x08074b50);
        put<std::uint32_t>(out, e.crc32);
        if (zip64)
        {
            put<std::uint64_t>(out, e.size);
            put<std::uint64_t>(out, e.size);
        }
        else
        {
            put<std::uint32_t>(out, static_cast<std::uint32_t>(e.size));
            put<std::uint32_t>(out, static_cast<std::uint32_t>(e.size));
        }
    }
    const std::uint64_t cd = out.size();
    for (std::size_t i = 0; i < in.entries().size(); ++i)
    {
        const auto& e = in.entries()[i];
        put<std::uint32_t>(out, 0x02014b50);
        put<std::uint16_t>(out, 0x032d);
        put<std::uint16_t>(out, 45);
        put<std::uint16_t>(out, 0x08);
        put<std::uint16_t>(out, 0);
        put<std::uint16_t>(out, 0);
        put<std::uint16_t>(out, 33);
        put<std::uint32_t>(out, e.crc32);
        put<std::uint32_t>(out, static_cast<std::uint32_t>(e.size));
        put<std::uint32_t>(out, static_cast<std::uint32_t>(e.size));
        put<std::uint16_t>(out, static_cast<std::uint16_t>(e.name.size()));
        put<std::uint16_t>(out, 0);
        put<std::uint16_t>(out, 0);
        put<std::uint16_t>(out, 0);
        put<std::uint16_t>(out, 0);
        put<std::uint32_t>(out, 0x01800000);
        put<std::uint32_t>(out, static_cast<std::uint32_t>(offsets[i]));
        out.insert(out.end(), reinterpret_cast<const std::byte*>(e.name.data()),
                   reinterpret_cast<const std::byte*>(e.name.data()) + e.name.size());
    }
    const std::uint64_t cd_size = out.size() - cd;
    put<std::uint32_t>(out, 0x06054b50);
    put<std::uint16_t>(out, 0);
    put<std::uint16_t>(out, 0);
    put<std::uint16_t>(out, static_cast<std::uint16_t>(in.entries().size()));
    put<std::uint16_t>(out, static_cast<std::uint16_t>(in.entries().size()));
    put<std::uint32_t>(out, static_cast<std::uint32_t>(cd_size));
    put<std::uint32_t>(out, static_cast<std::uint32_t>(cd));
    put<std::uint16_t>(out, 0);
    return out;
}

ember::state_dict small_state_dict()
{
    ember::state_dict sd;
    host_tensor w(ember::dtype::float32, {2, 3});
    for (std::size_t i = 0; i < 6; ++i)
        w.data<float>()[i] = 0.25f * static_cast<float>(i) - 0.5f;
    sd.insert("0.weight", w);
    host_tensor n(ember::dtype::int64, {});
    n.data<std::int64_t>()[0] = 7;
    sd.insert("1.num_batches_tracked", n);
    return sd;
}

} // namespace

BOOST_AUTO_TEST_CASE(every_single_bit_flip_of_a_small_pth_is_refused_or_harmless)
{
    // ember's layout, classic and ZIP64.
    const auto sd = small_state_dict();
    const auto out = flip_every_bit(pt::to_bytes(sd, "model"), "model.pth");
    BOOST_TEST(out.harmless > 0u); // the meaning-free fields exist, and are let through
    pt::detail::archive_writer w("model");
    w.write(sd);
    flip_every_bit(w.finish({.force_zip64 = true}), "model_zip64.pth");
}

BOOST_AUTO_TEST_CASE(records_with_data_descriptors_of_both_widths_load_and_are_checked)
{
    // 16-byte descriptors (PyTorch's small records) and 24-byte ones (PyTorch's records past
    // 4 GiB, Python's zipfile with force_zip64), in the layout Python's zipfile streams.
    const auto sd = small_state_dict();
    for (const bool zip64 : {false, true})
    {
        const std::string what = zip64 ? "descriptors64.pth" : "descriptors.pth";
        const bytes b = with_data_descriptors(pt::to_bytes(sd, "model"), zip64);
        BOOST_TEST((pt::from_bytes<ember::state_dict>(b, what) == sd), what);
        flip_every_bit(b, what);
    }
}

BOOST_AUTO_TEST_CASE(every_single_bit_flip_of_a_small_pytorch_file_is_refused_or_harmless)
{
    // PyTorch's layout: data descriptors after each record, a ZIP64 end record always, and
    // in 2.x the newer records (.format_version, .data/serialization_id...).
    for (const char* version : {"torch-1.13", "torch-2.15"})
        flip_every_bit(read(data_folder() / "pytorch" / version / "linear_model.pth"),
                       std::string(version) + "/linear_model.pth");
}

// Checkpoints you can trust: the checkpoint and ember::value through every cereal archive,
// exact floats in JSON/XML (NaN, infinities, -0.0, every float32/float64), users' own cereal
// types, formats by extension, the container's per-tensor checksums and version 1 files, and
// checkpoint_manager's keep-last-N and resume-from-newest-whole.
#include <ember/serialize/cereal.hpp>
#include <ember/serialize/checkpoint_manager.hpp>
#include <ember/serialize/file.hpp>

#include "golden/container_v1.hpp"
#include "test_files.hpp"

#include <cereal/archives/binary.hpp>
#include <cereal/archives/json.hpp>
#include <cereal/archives/portable_binary.hpp>
#include <cereal/archives/xml.hpp>

#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>

#include <bit>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>

#include <unistd.h>

using namespace ember;
namespace fs = std::filesystem;
using test::temp_dir;

namespace
{

constexpr double inf_d = std::numeric_limits<double>::infinity();
constexpr double nan_d = std::numeric_limits<double>::quiet_NaN();

std::string read_text(const fs::path& p)
{
    std::ifstream f(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), {}};
}

void write_text(const fs::path& p, const std::string& s)
{
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(s.data(), static_cast<std::streamsize>(s.size()));
}

template <class T>
host_tensor tensor_of(std::vector<T> values)
{
    host_tensor t(dtype_of<T>(), {static_cast<std::int64_t>(values.size())});
    std::memcpy(t.bytes().data(), values.data(), t.nbytes());
    return t;
}

host_tensor raw16(dtype type, std::vector<std::uint16_t> bits)
{
    host_tensor t(type, {static_cast<std::int64_t>(bits.size())});
    std::memcpy(t.bytes().data(), bits.data(), t.nbytes());
    return t;
}

// Every special float the text archives must keep bit for bit.
std::vector<float> special_floats()
{
    return {0.f,
            -0.f,
            0.1f,
            -1.5f,
            std::numeric_limits<float>::infinity(),
            -std::numeric_limits<float>::infinity(),
            std::numeric_limits<float>::quiet_NaN(),
            -std::numeric_limits<float>::quiet_NaN(),
            std::bit_cast<float>(0x7fc00001u), // NaN with a payload
            std::bit_cast<float>(0xff800001u), // signalling NaN, negative
            std::numeric_limits<float>::denorm_min(),
            std::numeric_limits<float>::min(),
            std::numeric_limits<float>::max(),
            -std::numeric_limits<float>::max(),
            16777217.f,
            3.4028235e38f};
}

std::vector<double> special_doubles()
{
    return {0.0,
            -0.0,
            0.1,
            1.0 / 3.0,
            inf_d,
            -inf_d,
            nan_d,
            -nan_d,
            std::bit_cast<double>(0x7ff0000000000001ull),
            std::numeric_limits<double>::denorm_min(),
            std::numeric_limits<double>::min(),
            std::numeric_limits<double>::max(),
            9007199254740993.0,
            5e-324};
}

checkpoint sample_checkpoint()
{
    checkpoint c;
    c.epoch = 100;
    c.model_state_dict.insert("weight", host_tensor::from(tensor<float, 1>{0.4398f}));
    c.model_state_dict.insert("bias", host_tensor::from(tensor<float, 1>{0.3607f}));
    c.model_state_dict.insert("specials", tensor_of(special_floats()));
    c.model_state_dict.insert("doubles", tensor_of(special_doubles()));
    // float16: 1, -0, inf, nan, a payload nan, the smallest subnormal, 65504; bfloat16 alike.
    c.model_state_dict.insert("half", raw16(dtype::float16, {0x3c00, 0x8000, 0x7c00, 0x7e00, 0x7e01,
                                                             0x0001, 0x7bff, 0x2e66}));
    c.model_state_dict.insert("bf16", raw16(dtype::bfloat16, {0x3f80, 0x8000, 0x7f80, 0xffc0,
                                                              0x7fc1, 0x0001, 0x7f7f, 0x3dcd}));
    c.model_state_dict.insert(
        "ints", tensor_of<std::int64_t>({std::numeric_limits<std::int64_t>::min(), -1, 0,
                                         std::numeric_limits<std::int64_t>::max()}));
    c.model_state_dict.insert("small", tensor_of<std::int8_t>({-128, 0, 127}));
    c.model_state_dict.insert("mask", tensor_of<std::uint8_t>({0, 1, 255}));
    c.model_state_dict.insert("matrix", host_tensor::from(tensor<double, 2>{{1, 2, 3}, {4, 5, 6}}));
    c.model_state_dict.insert("empty", host_tensor(dtype::float32, {0, 3}));
    c.model_state_dict.insert("scalar", host_tensor::from(tensor<std::int64_t, 0>(7)));

    c.optimizer_state_dict.state[0].insert("momentum_buffer", tensor_of<float>({1.f, -0.f}));
    c.optimizer_state_dict.state[1].insert("step", tensor_of<float>({3.f}));
    optim::param_group_state g;
    g.options.insert("lr", 0.01);
    g.options.insert("betas", std::vector<double>{0.9, 0.999, -0.0, inf_d});
    g.options.insert("weird", nan_d);
    g.options.insert("nesterov", false);
    g.options.insert("foreach", std::monostate{});
    g.params = {0, 1};
    c.optimizer_state_dict.param_groups.push_back(g);

    c.train_loss = 0.0031629;
    c.val_loss = -inf_d;
    c.hyperparameters.insert("learning_rate", 0.01);
    c.hyperparameters.insert("weight", 0.7);
    c.hyperparameters.insert("bias", 0.3);
    c.hyperparameters.insert("epochs", 100);
    c.hyperparameters.insert("nesterov", true);
    c.hyperparameters.insert("name", "lesson \"linear\" <regression> & co");
    c.hyperparameters.insert("nothing", nullptr);
    c.hyperparameters.insert("grid", value::list{value(1), value(-0.0), value(nan_d), value(inf_d),
                                                 value(value::list{}), value("x")});
    value::dict inner;
    inner.insert("gamma", 0.5);
    inner.insert("milestones", value::list{value(30), value(60)});
    inner.insert("tensor", value(tensor_of<double>({-nan_d, 2.5})));
    c.hyperparameters.insert("scheduler", inner);
    c.timestamp = "2024-05-01T12:34:56.789012";
    c.global_step = 12345;
    generator gen(42);
    gen.normal();
    c.generators.insert("default", gen.state());
    c.generators.insert("dropout", generator(7).state());
    value::dict sched;
    sched.insert("last_epoch", 99);
    sched.insert("_last_lr", value::list{value(0.001)});
    c.scheduler_state = sched;
    value::dict data;
    data.insert("order", value(tensor_of<std::int64_t>({3, 1, 2, 0})));
    data.insert("position", 2);
    c.data_state = data;
    c.extras.insert("note", "");
    c.extras.insert("best", -0.0);
    return c;
}

// Bitwise equality: two objects are the same when their portable-binary archives are.
template <class T>
std::string archive_bytes(const T& x)
{
    std::stringstream ss;
    {
        cereal::PortableBinaryOutputArchive ar(ss);
        ar(x);
    }
    return ss.str();
}

template <class T>
bool same_bits(const T& a, const T& b)
{
    return archive_bytes(a) == archive_bytes(b);
}

template <class Out, class In, class T>
T round_trip(const T& value, std::string* text = nullptr)
{
    std::stringstream ss;
    {
        Out ar(ss);
        ar(cereal::make_nvp("value", value));
    }
    if (text)
        *text = ss.str();
    T back{};
    {
        In ar(ss);
        ar(cereal::make_nvp("value", back));
    }
    return back;
}

struct binary_archives
{
    using out = cereal::BinaryOutputArchive;
    using in = cereal::BinaryInputArchive;
};
struct portable_archives
{
    using out = cereal::PortableBinaryOutputArchive;
    using in = cereal::PortableBinaryInputArchive;
};
struct json_archives
{
    using out = cereal::JSONOutputArchive;
    using in = cereal::JSONInputArchive;
};
struct xml_archives
{
    using out = cereal::XMLOutputArchive;
    using in = cereal::XMLInputArchive;
};
using all_archives =
    boost::mpl::list<binary_archives, portable_archives, json_archives, xml_archives>;
using text_archives = boost::mpl::list<json_archives, xml_archives>;

std::string what_of(auto&& f)
{
    try
    {
        f();
    }
    catch (const std::exception& e)
    {
        return e.what();
    }
    return "(no exception)";
}

bool contains(const std::string& s, const std::string& part)
{
    return s.find(part) != std::string::npos;
}

} // namespace

// ---- cereal ---------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE_TEMPLATE(a_full_checkpoint_round_trips_bit_for_bit_through_every_archive, A,
                              all_archives)
{
    const checkpoint c = sample_checkpoint();
    const checkpoint back = round_trip<typename A::out, typename A::in>(c);
    BOOST_TEST(same_bits(back, c));
    // Spot checks that do not go through the comparison's own archive.
    BOOST_TEST(back.epoch == 100);
    BOOST_TEST(back.global_step == 12345);
    BOOST_TEST(back.timestamp == c.timestamp);
    BOOST_TEST(back.ember_version == std::string(ember::version));
    BOOST_TEST(back.train_loss == 0.0031629);
    BOOST_TEST((std::isinf(back.val_loss) && back.val_loss < 0));
    BOOST_TEST(back.model_state_dict.keys() == c.model_state_dict.keys());
    BOOST_TEST((back.model_state_dict == c.model_state_dict)); // bytes, so NaNs compare
    BOOST_TEST(back.hyperparameters.keys() == c.hyperparameters.keys());
    BOOST_TEST(back.hyperparameters.at("name").as<std::string>() ==
               c.hyperparameters.at("name").as<std::string>());
    BOOST_TEST((back.generators == c.generators));
    BOOST_TEST((back.data_state == c.data_state));
}

BOOST_AUTO_TEST_CASE_TEMPLATE(nan_infinities_and_negative_zero_are_exact_in_text_archives, A,
                              text_archives)
{
    checkpoint c;
    for (double x : special_doubles())
    {
        c.train_loss = x;
        c.val_loss = -x;
        c.hyperparameters.insert_or_assign("leaf", x);
        c.model_state_dict.insert_or_assign("t", tensor_of<float>(special_floats()));
        checkpoint back = round_trip<typename A::out, typename A::in>(c);
        BOOST_TEST(std::bit_cast<std::uint64_t>(back.train_loss) ==
                   std::bit_cast<std::uint64_t>(x));
        BOOST_TEST(std::bit_cast<std::uint64_t>(back.val_loss) == std::bit_cast<std::uint64_t>(-x));
        BOOST_TEST(std::bit_cast<std::uint64_t>(back.hyperparameters.at("leaf").as<double>()) ==
                   std::bit_cast<std::uint64_t>(x));
        BOOST_TEST((back.model_state_dict == c.model_state_dict));
    }
}

BOOST_AUTO_TEST_CASE(json_is_standard_json_with_nan_and_inf_as_strings)
{
    checkpoint c;
    c.train_loss = nan_d;
    c.val_loss = -inf_d;
    c.hyperparameters.insert("lr", inf_d);
    c.model_state_dict.insert(
        "w", tensor_of<float>({0.1f, -0.f, std::numeric_limits<float>::quiet_NaN()}));
    std::string text;
    round_trip<cereal::JSONOutputArchive, cereal::JSONInputArchive>(c, &text);
    BOOST_TEST(contains(text, "\"train_loss\": \"nan\""));
    BOOST_TEST(contains(text, "\"val_loss\": \"-inf\""));
    BOOST_TEST(contains(text, "\"value\": \"inf\""));
    BOOST_TEST(contains(text, "0.1,")); // float32 0.1 written as 0.1, not 0.10000000149011612
    BOOST_TEST(contains(text, "-0.0,"));
    BOOST_TEST(!contains(text, "NaN"));
    BOOST_TEST(!contains(text, "Infinity"));
    // Strict JSON (no NaN/Infinity tokens) accepts it.
    EMBER_RAPIDJSON::Document d;
    d.Parse<EMBER_RAPIDJSON::kParseFullPrecisionFlag>(text.c_str());
    BOOST_TEST(!d.HasParseError());
}

BOOST_AUTO_TEST_CASE(xml_writes_the_shortest_exact_decimal)
{
    checkpoint c;
    c.train_loss = 0.1;
    c.model_state_dict.insert("w", tensor_of<float>({0.1f, 1e-45f, -0.f}));
    c.hyperparameters.insert("lr", 0.01);
    std::string text;
    round_trip<cereal::XMLOutputArchive, cereal::XMLInputArchive>(c, &text);
    BOOST_TEST(contains(text, "<train_loss>0.1</train_loss>"));
    BOOST_TEST(contains(text, ">0.1</value0>"));
    BOOST_TEST(contains(text, ">1e-45</value1>"));
    BOOST_TEST(contains(text, ">-0</value2>"));
    BOOST_TEST(contains(text, "<value>0.01</value>"));
    BOOST_TEST(contains(text, "<val_loss>nan</val_loss>"));
}

BOOST_AUTO_TEST_CASE_TEMPLATE(random_float_bit_patterns_survive_text_archives, A, text_archives)
{
    std::mt19937_64 rng(2024);
    std::vector<float> f32(3000);
    std::vector<double> f64(3000);
    std::vector<std::uint16_t> f16(3000), bf16(3000);
    for (auto& x : f32)
        x = std::bit_cast<float>(static_cast<std::uint32_t>(rng()));
    for (auto& x : f64)
        x = std::bit_cast<double>(rng());
    for (auto& x : f16)
        x = static_cast<std::uint16_t>(rng());
    for (auto& x : bf16)
        x = static_cast<std::uint16_t>(rng());
    state_dict sd;
    sd.insert("f32", tensor_of(f32));
    sd.insert("f64", tensor_of(f64));
    sd.insert("f16", raw16(dtype::float16, f16));
    sd.insert("bf16", raw16(dtype::bfloat16, bf16));
    auto back = round_trip<typename A::out, typename A::in>(sd);
    for (const auto& key : sd.keys())
        BOOST_TEST((back.at(key) == sd.at(key)), key);
}

BOOST_AUTO_TEST_CASE(half_precision_tensors_are_written_as_their_values)
{
    state_dict sd;
    sd.insert("h", raw16(dtype::float16, {0x3c00, 0x2e66, 0x7c00, 0x7e00}));  // 1, 0.1, inf, nan
    sd.insert("b", raw16(dtype::bfloat16, {0x3f80, 0x3dcd, 0xff80, 0x7fc0})); // 1, 0.1, -inf, nan
    std::string text;
    round_trip<cereal::JSONOutputArchive, cereal::JSONInputArchive>(sd, &text);
    BOOST_TEST(contains(text, "1.0,\n"));
    BOOST_TEST(contains(text, "0.1,\n"));
    BOOST_TEST(contains(text, "\"inf\""));
    BOOST_TEST(contains(text, "\"-inf\""));
    BOOST_TEST(!contains(text, "15360")); // not the raw bits of 1.0
}

BOOST_AUTO_TEST_CASE_TEMPLATE(values_of_every_kind_round_trip, A, all_archives)
{
    value::dict d;
    d.insert("none", nullptr);
    d.insert("bool", false);
    d.insert("int", std::numeric_limits<std::int64_t>::min());
    d.insert("float", -0.0);
    d.insert("str", "  spaces kept  ");
    d.insert("unicode", "\xce\xbb = 0.01");
    d.insert("tensor", value(host_tensor::from(tensor<float, 2>{{1, 2}, {3, 4}})));
    d.insert("list", value::list{value(1), value(value::list{value("a"), value(nullptr)})});
    value::dict nested;
    nested.insert("deeper", value::dict{});
    d.insert("dict", nested);
    value v = d;
    value back = round_trip<typename A::out, typename A::in>(v);
    BOOST_TEST((back == v));
    BOOST_TEST(std::signbit(back.as<value::dict>().at("float").as<double>()));
}

BOOST_AUTO_TEST_CASE(a_value_nested_too_deep_is_refused_on_save_and_on_load)
{
    value v = 1;
    for (std::size_t i = 0; i < max_value_depth; ++i)
        v = value::list{v};
    std::stringstream ss;
    {
        cereal::PortableBinaryOutputArchive ar(ss);
        BOOST_CHECK_THROW(ar(v), value_error);
    }
    // Saved to a file, the message names the file, its format and the key that holds it, and
    // nothing is written.
    temp_dir dir;
    checkpoint c = sample_checkpoint();
    c.hyperparameters.insert("schedule", v);
    for (const char* name : {"c.json", "c.xml", "c.bin"})
    {
        const fs::path p = dir.path / name;
        BOOST_CHECK_THROW(save(c, p), value_error);
        const std::string msg = what_of([&] { save(c, p); });
        BOOST_TEST(contains(msg, "'" + p.string() + "' ("), msg);
        BOOST_TEST(contains(msg, "key 'schedule': values nested deeper than 64 levels"), msg);
        BOOST_TEST(!fs::exists(p));
    }
    // A hand-written JSON one level deeper than allowed.
    std::string json = "{\"value\": {\"cereal_class_version\": 1, ";
    for (std::size_t i = 0; i < max_value_depth; ++i)
        json += "\"kind\": \"list\", \"value\": [{";
    json += "\"kind\": \"None\"";
    for (std::size_t i = 0; i < max_value_depth; ++i)
        json += "}]";
    json += "}}";
    std::stringstream in(json);
    cereal::JSONInputArchive ar(in);
    value back;
    const std::string msg = what_of([&] { ar(cereal::make_nvp("value", back)); });
    BOOST_TEST(contains(msg, "nested deeper than 64 levels"), msg);
}

namespace
{
// A user's own type, as in their program: ember's types are ordinary cereal members.
struct training_run
{
    std::string name;
    state_dict best_weights;
    checkpoint last;

    template <class Archive>
    void serialize(Archive& ar, std::uint32_t)
    {
        ar(CEREAL_NVP(name), CEREAL_NVP(best_weights), CEREAL_NVP(last));
    }
};
} // namespace
CEREAL_CLASS_VERSION(training_run, 1);

BOOST_AUTO_TEST_CASE_TEMPLATE(users_own_cereal_types_hold_state_dicts_and_checkpoints, A,
                              all_archives)
{
    training_run run;
    run.name = "lesson";
    run.best_weights = sample_checkpoint().model_state_dict;
    run.last = sample_checkpoint();
    auto back = round_trip<typename A::out, typename A::in>(run);
    BOOST_TEST(back.name == "lesson");
    BOOST_TEST(same_bits(back.best_weights, run.best_weights));
    BOOST_TEST(same_bits(back.last, run.last));
}

BOOST_AUTO_TEST_CASE(a_corrupt_tensor_inside_a_text_archive_is_named_by_its_key)
{
    state_dict sd;
    sd.insert("fc1.weight", tensor_of<float>({1.5f, 2.5f}));
    std::string text;
    round_trip<cereal::JSONOutputArchive, cereal::JSONInputArchive>(sd, &text);
    const auto at = text.find("2.5");
    BOOST_REQUIRE(at != std::string::npos);
    text.replace(at, 3, "2.4");
    std::stringstream ss(text);
    cereal::JSONInputArchive ar(ss);
    state_dict back;
    const std::string msg = what_of([&] { ar(cereal::make_nvp("value", back)); });
    BOOST_TEST(contains(msg, "key 'fc1.weight'"), msg);
    BOOST_TEST(contains(msg, "checksum mismatch"), msg);
}

BOOST_AUTO_TEST_CASE(a_non_number_in_a_text_archive_is_a_format_error)
{
    checkpoint c;
    std::string text;
    round_trip<cereal::JSONOutputArchive, cereal::JSONInputArchive>(c, &text);
    const auto at = text.find("\"train_loss\": \"nan\"");
    BOOST_REQUIRE(at != std::string::npos);
    text.replace(at, 19, "\"train_loss\": \"fast\"");
    std::stringstream ss(text);
    cereal::JSONInputArchive ar(ss);
    checkpoint back;
    try
    {
        ar(cereal::make_nvp("value", back));
        BOOST_FAIL("expected format_error");
    }
    catch (const format_error& e)
    {
        BOOST_TEST(contains(e.what(), "checkpoint field 'train_loss'"), e.what());
        BOOST_TEST(contains(e.what(), "'fast' is not a number"), e.what());
    }
}

// ---- files ----------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(the_format_follows_the_extension)
{
    BOOST_TEST((format_from_extension("a/b.ember") == file_format::ember));
    BOOST_TEST((format_from_extension("checkpoint.tar") == file_format::pytorch));
    BOOST_TEST((format_from_extension("model.pth") == file_format::pytorch));
    BOOST_TEST((format_from_extension("model.PT") == file_format::pytorch));
    BOOST_TEST((format_from_extension("model.safetensors") == file_format::safetensors));
    BOOST_TEST((format_from_extension("ckpt.json") == file_format::json));
    BOOST_TEST((format_from_extension("ckpt.xml") == file_format::xml));
    BOOST_TEST((format_from_extension("ckpt.bin") == file_format::cereal_portable_binary));
    BOOST_TEST((format_from_extension("ckpt.cereal") == file_format::cereal_portable_binary));
}

BOOST_AUTO_TEST_CASE(an_unknown_extension_is_a_value_error_naming_it)
{
    const std::string msg = what_of([] { save(sample_checkpoint(), "/tmp/ckpt.weights"); });
    BOOST_TEST(contains(msg, "'.weights'"), msg);
    BOOST_TEST(contains(msg, "/tmp/ckpt.weights"), msg);
    BOOST_CHECK_THROW(save(sample_checkpoint(), "/tmp/ckpt.weights"), value_error);
    BOOST_CHECK_THROW(format_from_extension("no_extension"), value_error);
    BOOST_TEST(contains(what_of([] { format_from_extension("noext"); }), "missing extension"));
}

BOOST_AUTO_TEST_CASE(every_extension_saves_and_loads_the_same_checkpoint)
{
    temp_dir dir;
    const checkpoint c = sample_checkpoint();
    for (const char* name : {"c.ember", "c.tar", "c.pth", "c.json", "c.xml", "c.bin", "c.cereal"})
    {
        const fs::path p = dir.path / name;
        save(c, p);
        BOOST_TEST(same_bits(load<checkpoint>(p), c), name);
        const file_info info = probe(p);
        BOOST_TEST((info.format == format_from_extension(p)), name);
        BOOST_TEST((info.content == file_content::checkpoint), name);
        BOOST_TEST(info.writer == std::string(ember::version), name);
        BOOST_TEST(info.size == fs::file_size(p), name);
        std::size_t files = 0;
        for ([[maybe_unused]] auto& e : fs::directory_iterator(dir.path))
            ++files;
        BOOST_TEST(files == 1u, "a temporary was left beside " << name);
        fs::remove(p);
    }
}

BOOST_AUTO_TEST_CASE(an_explicit_format_overrides_the_extension)
{
    temp_dir dir;
    const checkpoint c = sample_checkpoint();
    save(c, dir.path / "ckpt.dat", file_format::json);
    BOOST_TEST(read_text(dir.path / "ckpt.dat").front() == '{');
    BOOST_TEST(same_bits(load<checkpoint>(dir.path / "ckpt.dat", file_format::json), c));
    save(c, dir.path / "ckpt.json", file_format::cereal_binary);
    BOOST_TEST(same_bits(load<checkpoint>(dir.path / "ckpt.json", file_format::cereal_binary), c));
    BOOST_CHECK_THROW(load<checkpoint>(dir.path / "ckpt.json"), format_error); // not JSON
}

BOOST_AUTO_TEST_CASE(a_container_is_recognised_by_its_magic_whatever_its_name)
{
    temp_dir dir;
    save(sample_checkpoint(), dir.path / "ckpt.ember");
    fs::copy_file(dir.path / "ckpt.ember", dir.path / "ckpt.json");
    BOOST_TEST(same_bits(load<checkpoint>(dir.path / "ckpt.json"), sample_checkpoint()));
    // Asked for JSON explicitly, it says what the file is.
    const std::string msg =
        what_of([&] { load<checkpoint>(dir.path / "ckpt.json", file_format::json); });
    BOOST_TEST(contains(msg, "is an ember container file"), msg);
}

BOOST_AUTO_TEST_CASE(loading_the_wrong_content_kind_names_both_in_every_format)
{
    temp_dir dir;
    for (const char* name : {"opt.ember", "opt.json", "opt.xml", "opt.bin"})
    {
        optim::optimizer_state s;
        s.param_groups.emplace_back();
        save(s, dir.path / name);
        try
        {
            load<checkpoint>(dir.path / name);
            BOOST_FAIL("expected format_error");
        }
        catch (const format_error& e)
        {
            BOOST_TEST(contains(e.what(), name), e.what());
            BOOST_TEST(contains(e.what(), "holds an optimizer state"), e.what());
            BOOST_TEST(contains(e.what(), "not a checkpoint"), e.what());
        }
        BOOST_TEST((probe(dir.path / name).content == file_content::optimizer_state));
    }
}

BOOST_AUTO_TEST_CASE(raw_archives_fail_cleanly_at_every_truncation)
{
    temp_dir dir;
    checkpoint c;
    c.model_state_dict.insert("w", tensor_of<float>({1.f, 2.f}));
    c.hyperparameters.insert("lr", 0.01);
    for (const char* name : {"c.bin", "c.json", "c.xml"})
    {
        const fs::path p = dir.path / name;
        save(c, p);
        const std::string whole = read_text(p);
        // Text files end in a newline or so that may go without harm; cut at least that deep.
        const std::size_t spare = name == std::string("c.bin") ? 0 : 2;
        for (std::size_t n = 0; n + spare < whole.size(); ++n)
        {
            write_text(p, whole.substr(0, n));
            try
            {
                load<checkpoint>(p);
                BOOST_ERROR(name << " cut to " << n << " bytes loaded");
            }
            catch (const format_error& e)
            {
                if (!contains(e.what(), p.string()))
                    BOOST_ERROR(name << " cut to " << n
                                     << ": message without the file: " << e.what());
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(raw_archive_errors_say_where)
{
    temp_dir dir;
    const fs::path p = dir.path / "c.json";
    save(sample_checkpoint(), p);
    std::string text = read_text(p);
    write_text(p, text + "garbage");
    std::string msg = what_of([&] { load<checkpoint>(p); });
    BOOST_TEST(contains(msg, "not valid JSON at offset " + std::to_string(text.size())), msg);

    // rapidjson stops at a NUL byte: what follows one must not pass unread.
    write_text(p, text + std::string(1, '\0') + "garbage");
    msg = what_of([&] { load<checkpoint>(p); });
    BOOST_TEST(contains(msg, "a NUL byte at offset " + std::to_string(text.size())), msg);

    write_text(p, std::string(600, '[') + std::string(600, ']'));
    msg = what_of([&] { load<checkpoint>(p); });
    BOOST_TEST(contains(msg, "nested deeper than 512 levels"), msg);

    write_text(p, "{\"something\": 1}");
    msg = what_of([&] { load<checkpoint>(p); });
    BOOST_TEST(contains(msg, "not an ember archive"), msg);

    const fs::path x = dir.path / "c.xml";
    write_text(x, "<?xml version=\"1.0\"?><cereal><a x=1></a></cereal>");
    msg = what_of([&] { load<checkpoint>(x); });
    BOOST_TEST(contains(msg, "not well-formed XML at offset"), msg);

    // cereal's XML parser does not match closing tags to their elements: ember does.
    const std::string prologue = "<?xml version=\"1.0\"?>";
    write_text(x, prologue + "<cereal><a>1</b></cereal>");
    msg = what_of([&] { load<checkpoint>(x); });
    BOOST_TEST(contains(msg, "not well-formed XML at offset 33: the closing tag of 'b' does not "
                             "match the element 'a' opened at offset 29"),
               msg);
    write_text(x, prologue + "<cereal></cereal></x>");
    msg = what_of([&] { load<checkpoint>(x); });
    BOOST_TEST(contains(msg, "the closing tag of 'x' closes no open element"), msg);
    save(sample_checkpoint(), x);
    std::string xml = read_text(x);
    const std::size_t close = xml.rfind("</value0>");
    BOOST_REQUIRE(close != std::string::npos);
    xml.replace(close, 9, "</value7>");
    write_text(x, xml);
    msg = what_of([&] { load<checkpoint>(x); });
    BOOST_TEST(contains(msg, "the closing tag of 'value7' does not match the element 'value0'"),
               msg);

    std::string deep;
    for (int i = 0; i < 600; ++i)
        deep += "<a>";
    write_text(x, "<cereal>" + deep + "</cereal>");
    msg = what_of([&] { load<checkpoint>(x); });
    BOOST_TEST(contains(msg, "XML nested deeper than 512 levels"), msg);

    const fs::path b = dir.path / "c.bin";
    save(sample_checkpoint(), b);
    write_text(b, read_text(b) + "xy");
    msg = what_of([&] { load<checkpoint>(b); });
    BOOST_TEST(contains(msg, "2 trailing bytes"), msg);
}

namespace
{
// Finds `needle` in `bytes`, flips a bit just after it, and re-seals the container's payload and
// header checksums, as a bit going bad before the file checksum was computed would look.
void corrupt_and_reseal(std::string& bytes, std::size_t at)
{
    bytes[at] = static_cast<char>(bytes[at] ^ 0x10);
    auto* b = reinterpret_cast<std::byte*>(bytes.data());
    const auto payload_crc = detail::crc32_of({b + 40, bytes.size() - 40});
    detail::put_le<std::uint32_t>(b + 32, payload_crc);
    detail::put_le<std::uint32_t>(b + 36, detail::crc32_of({b, 36}));
}
} // namespace

BOOST_AUTO_TEST_CASE(each_tensor_carries_its_own_checksum)
{
    temp_dir dir;
    state_dict sd;
    sd.insert("fc1.weight", tensor_of<float>({1.5f, 2.5f, 3.5f}));
    sd.insert("fc1.bias", tensor_of<float>({-1.f}));
    const fs::path p = dir.path / "m.ember";
    save(sd, p);
    std::string bytes = read_text(p);
    const float v = 2.5f;
    const auto at = bytes.find(std::string(reinterpret_cast<const char*>(&v), 4));
    BOOST_REQUIRE(at != std::string::npos);
    corrupt_and_reseal(bytes, at);
    write_text(p, bytes);
    const std::string msg = what_of([&] { load<state_dict>(p); });
    BOOST_TEST(contains(msg, "key 'fc1.weight'"), msg);
    BOOST_TEST(contains(msg, "data checksum mismatch"), msg);
    BOOST_TEST(contains(msg, p.string()), msg);
    BOOST_CHECK_THROW(load<state_dict>(p), format_error);
}

BOOST_AUTO_TEST_CASE(checkpoints_are_content_kind_3_in_a_version_2_container)
{
    temp_dir dir;
    save(sample_checkpoint(), dir.path / "c.ember");
    const std::string bytes = read_text(dir.path / "c.ember");
    auto* b = reinterpret_cast<const std::byte*>(bytes.data());
    BOOST_TEST(detail::get_le<std::uint32_t>(b + 8) == 2u);
    BOOST_TEST(detail::get_le<std::uint32_t>(b + 12) == 3u);
    BOOST_TEST(detail::get_le<std::uint32_t>(b + 16) == version_number);
    const file_info info = probe(dir.path / "c.ember");
    BOOST_TEST(info.container_version == 2u);
    BOOST_TEST((info.content == file_content::checkpoint));
    const std::string msg = what_of([&] { load<state_dict>(dir.path / "c.ember"); });
    BOOST_TEST(contains(msg, "holds a checkpoint (content kind 3), not a state_dict"), msg);
}

BOOST_AUTO_TEST_CASE(container_version_1_files_still_load)
{
    temp_dir dir;
    const fs::path sd_path = dir.path / "v1.pth";
    write_text(sd_path, std::string(reinterpret_cast<const char*>(fixture::container_v1_state_dict),
                                    sizeof fixture::container_v1_state_dict));
    BOOST_TEST(probe(sd_path).container_version == 1u);
    const state_dict sd = load<state_dict>(sd_path);
    BOOST_TEST(sd.keys() == (std::vector<std::string>{"fc1.weight", "fc1.bias", "steps"}));
    BOOST_TEST((sd.at("fc1.weight") ==
                host_tensor::from(tensor<float, 2>{{1.5f, -2.f, 3.25f}, {0.f, 1e-30f, -7.f}})));
    BOOST_TEST((sd.at("fc1.bias") == host_tensor::from(tensor<double, 1>{0.1, -0.2})));
    BOOST_TEST(sd.at("steps").item<std::int64_t>() == 42);

    const fs::path opt_path = dir.path / "v1_opt.ember";
    write_text(opt_path,
               std::string(reinterpret_cast<const char*>(fixture::container_v1_optimizer_state),
                           sizeof fixture::container_v1_optimizer_state));
    const auto s = load<optim::optimizer_state>(opt_path);
    BOOST_TEST((std::get<host_tensor>(s.state.at(0).at("momentum_buffer")) ==
                host_tensor::from(tensor<float, 1>{1.f, 2.f})));
    BOOST_TEST(std::get<double>(s.param_groups.at(0).options.at("lr")) == 0.01);
    BOOST_TEST((std::get<std::vector<double>>(s.param_groups.at(0).options.at("betas")) ==
                std::vector<double>{0.9, 0.999}));
    // Saved again, it becomes a version 2 file with the same content.
    save(sd, dir.path / "v2.ember");
    BOOST_TEST(probe(dir.path / "v2.ember").container_version == 2u);
    BOOST_TEST((load<state_dict>(dir.path / "v2.ember") == sd));
}

// ---- checkpoint_manager ---------------------------------------------------------------------

namespace
{
checkpoint at_step(std::int64_t step)
{
    checkpoint c;
    c.global_step = step;
    c.epoch = step / 10;
    c.model_state_dict.insert("w", tensor_of<float>({static_cast<float>(step)}));
    return c;
}

std::vector<std::string> names(const std::vector<fs::path>& paths)
{
    std::vector<std::string> n;
    for (auto& p : paths)
        n.push_back(p.filename().string());
    return n;
}
} // namespace

BOOST_AUTO_TEST_CASE(the_manager_keeps_the_last_n_by_number)
{
    temp_dir dir;
    checkpoint_manager m(dir.path / "run", {.keep_last = 3});
    for (std::int64_t step : {5, 10, 15, 20, 999999, 1000000})
        BOOST_TEST(m.save(at_step(step)).filename().string() ==
                   m.path_for(step).filename().string());
    BOOST_TEST(
        names(m.checkpoints()) ==
        (std::vector<std::string>{"ckpt-000020.ember", "ckpt-999999.ember", "ckpt-1000000.ember"}));
    auto latest = m.load_latest();
    BOOST_REQUIRE(latest.has_value());
    BOOST_TEST(latest->global_step == 1000000);
    BOOST_TEST(m.skipped().empty());
}

BOOST_AUTO_TEST_CASE(the_manager_numbers_by_epoch_when_asked)
{
    temp_dir dir;
    checkpoint_manager m(dir.path, {.keep_last = 0,
                                    .number_by = checkpoint_numbering::epoch,
                                    .prefix = "epoch-",
                                    .extension = ".json",
                                    .format = file_format::json});
    m.save(at_step(120));
    m.save(at_step(130));
    BOOST_TEST(names(m.checkpoints()) ==
               (std::vector<std::string>{"epoch-000012.json", "epoch-000013.json"}));
    BOOST_TEST(read_text(m.checkpoints().back()).front() == '{');
    BOOST_TEST(m.load_latest()->epoch == 13);
}

BOOST_AUTO_TEST_CASE(a_corrupt_newest_checkpoint_resumes_from_the_one_before)
{
    temp_dir dir;
    checkpoint_manager m(dir.path, {.keep_last = 3});
    m.save(at_step(1));
    m.save(at_step(2));
    const fs::path newest = m.save(at_step(3));
    std::string bytes = read_text(newest);
    bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 1);
    write_text(newest, bytes);
    auto resumed = m.load_latest();
    BOOST_REQUIRE(resumed.has_value());
    BOOST_TEST(resumed->global_step == 2);
    BOOST_REQUIRE(m.skipped().size() == 1u);
    BOOST_TEST(contains(m.skipped()[0], "ckpt-000003.ember"), m.skipped()[0]);
    BOOST_TEST(contains(m.skipped()[0], "checksum mismatch"), m.skipped()[0]);
    BOOST_TEST(m.latest()->filename().string() == "ckpt-000002.ember");
}

BOOST_AUTO_TEST_CASE(a_truncated_newest_checkpoint_resumes_from_the_one_before)
{
    temp_dir dir;
    checkpoint_manager m(dir.path, {.keep_last = 2});
    m.save(at_step(7));
    const fs::path newest = m.save(at_step(8));
    fs::resize_file(newest, fs::file_size(newest) - 1);
    BOOST_TEST(m.load_latest()->global_step == 7);
    fs::resize_file(newest, 10);
    BOOST_TEST(m.load_latest()->global_step == 7);
    fs::resize_file(m.path_for(7), 0);
    BOOST_TEST(!m.load_latest().has_value());
    BOOST_TEST(m.skipped().size() == 2u);
}

BOOST_AUTO_TEST_CASE(temporaries_are_never_taken_for_checkpoints_and_are_cleaned)
{
    temp_dir dir;
    // What an interrupted atomic_write leaves: whole-looking but hidden temporaries.
    checkpoint_manager m(dir.path);
    save(at_step(50), dir.path / ".ckpt-000050.ember.tmp-12345", file_format::ember);
    write_text(dir.path / ".ckpt-000060.ember.tmp-999", "partial");
    write_text(dir.path / "notes.txt", "not ours");
    BOOST_TEST(m.checkpoints().empty());
    BOOST_TEST(!m.latest().has_value());
    BOOST_TEST(!m.load_latest().has_value());
    BOOST_TEST(!fs::exists(dir.path / ".ckpt-000050.ember.tmp-12345"));
    BOOST_TEST(!fs::exists(dir.path / ".ckpt-000060.ember.tmp-999"));
    BOOST_TEST(fs::exists(dir.path / "notes.txt"));
    // A stale temporary beside real checkpoints is removed by the next save.
    m.save(at_step(1));
    write_text(dir.path / ".ckpt-000002.ember.tmp-1", "partial");
    m.save(at_step(2));
    BOOST_TEST(!fs::exists(dir.path / ".ckpt-000002.ember.tmp-1"));
    BOOST_TEST(m.load_latest()->global_step == 2);
}

BOOST_AUTO_TEST_CASE(a_failed_save_prunes_nothing)
{
    temp_dir dir;
    checkpoint_manager m(dir.path, {.keep_last = 2});
    m.save(at_step(1));
    m.save(at_step(2));
    {
        detail::file_ops ops;
        ops.write = [](int, const void*, std::size_t) -> ssize_t
        {
            errno = ENOSPC;
            return -1;
        };
        detail::scoped_file_ops failing(ops);
        BOOST_CHECK_THROW(m.save(at_step(3)), io_error);
    }
    BOOST_TEST(names(m.checkpoints()) ==
               (std::vector<std::string>{"ckpt-000001.ember", "ckpt-000002.ember"}));
    BOOST_TEST(m.load_latest()->global_step == 2);
}

BOOST_AUTO_TEST_CASE(the_one_just_written_is_never_pruned)
{
    temp_dir dir;
    checkpoint_manager m(dir.path, {.keep_last = 2});
    m.save(at_step(10));
    m.save(at_step(20));
    m.save(at_step(5)); // a restarted run writing a lower number
    BOOST_TEST(names(m.checkpoints()) ==
               (std::vector<std::string>{"ckpt-000005.ember", "ckpt-000020.ember"}));
    BOOST_CHECK_THROW(m.save(at_step(-1)), value_error);
}

BOOST_AUTO_TEST_CASE(a_corrupt_or_truncated_file_never_takes_a_good_checkpoints_place)
{
    // Pruning counts only files whose header says they are whole checkpoints. Before, a
    // damaged ckpt-000009 took a place among the last 2, and the save of 3 deleted 2: one good
    // checkpoint was left, and a corrupt 3 would have left none to resume from.
    temp_dir dir;
    checkpoint_manager m(dir.path, {.keep_last = 2});
    m.save(at_step(1));
    m.save(at_step(2));
    write_text(m.path_for(9), "EMBR and then garbage"); // newer than anything saved after it
    m.save(at_step(3));
    BOOST_TEST(
        names(m.checkpoints()) ==
        (std::vector<std::string>{"ckpt-000002.ember", "ckpt-000003.ember", "ckpt-000009.ember"}));
    // A truncated checkpoint and a whole file of another content are not counted either.
    fs::resize_file(m.path_for(3), fs::file_size(m.path_for(3)) - 1);
    state_dict sd;
    sd.insert("w", tensor_of<float>({1.f}));
    save(sd, m.path_for(5), file_format::ember);
    m.save(at_step(4));
    BOOST_TEST(
        names(m.checkpoints()) ==
        (std::vector<std::string>{"ckpt-000002.ember", "ckpt-000003.ember", "ckpt-000004.ember",
                                  "ckpt-000005.ember", "ckpt-000009.ember"}));
    // Once keep_last good ones are kept, everything older goes, damaged or not.
    m.save(at_step(6));
    BOOST_TEST(names(m.checkpoints()) ==
               (std::vector<std::string>{"ckpt-000004.ember", "ckpt-000005.ember",
                                         "ckpt-000006.ember", "ckpt-000009.ember"}));
    BOOST_TEST(m.load_latest()->global_step == 6);
    BOOST_TEST(m.skipped().size() == 1u); // ckpt-000009
}

BOOST_AUTO_TEST_CASE(a_pytorch_file_that_does_not_end_as_a_whole_zip_is_not_counted)
{
    // In PyTorch's format the prune reads a file's end records: a file cut short (they are
    // gone), one with bytes after them, or not a zip at all takes no good checkpoint's place.
    temp_dir dir;
    checkpoint_manager m(dir.path,
                         {.keep_last = 2, .extension = ".pth", .format = file_format::pytorch});
    m.save(at_step(1));
    m.save(at_step(2));
    m.save(at_step(3));
    const auto size = fs::file_size(m.path_for(3));
    fs::resize_file(m.path_for(3), size - 1); // the end record's last byte gone
    write_text(m.path_for(7), "PK\x03\x04 and then garbage");
    fs::copy_file(m.path_for(2), m.path_for(8));
    {
        std::ofstream out(m.path_for(8), std::ios::binary | std::ios::app);
        out << "trailing bytes";
    }
    BOOST_TEST(!detail::zip_looks_whole(m.path_for(3)));
    BOOST_TEST(!detail::zip_looks_whole(m.path_for(7)));
    BOOST_TEST(!detail::zip_looks_whole(m.path_for(8)));
    BOOST_TEST(!detail::zip_looks_whole(dir.path / "no such file.pth"));
    BOOST_TEST(detail::zip_looks_whole(m.path_for(2)));
    m.save(at_step(4));
    // 4 and 2 are the two whole ones kept; the damaged files newer than 2 stay.
    BOOST_TEST(names(m.checkpoints()) ==
               (std::vector<std::string>{"ckpt-000002.pth", "ckpt-000003.pth", "ckpt-000004.pth",
                                         "ckpt-000007.pth", "ckpt-000008.pth"}));
    m.save(at_step(5));
    // Now 5 and 4: 3 and 2 are older and go, damaged or not.
    BOOST_TEST(names(m.checkpoints()) ==
               (std::vector<std::string>{"ckpt-000004.pth", "ckpt-000005.pth", "ckpt-000007.pth",
                                         "ckpt-000008.pth"}));
    BOOST_TEST(m.load_latest()->global_step == 5);
    // A ZIP64 archive's end records (its locator and ZIP64 end record) are read too.
    pytorch::zip_writer zip({.force_zip64 = true});
    zip.add("archive/data.pkl", std::string_view("a record"));
    const std::vector<std::byte> bytes = zip.finish();
    const auto big = dir.path / "zip64.pth";
    write_text(big, std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
    BOOST_TEST(detail::zip_looks_whole(big));
    fs::resize_file(big, fs::file_size(big) - 30); // into the ZIP64 locator
    BOOST_TEST(!detail::zip_looks_whole(big));
}

BOOST_AUTO_TEST_CASE(the_manager_prunes_checkpoints_of_every_format_it_writes)
{
    // The container's checkpoints count by their headers, which the check must recognise, or
    // nothing would ever be pruned; the other formats' count by their names.
    for (auto [format, extension] :
         {std::pair{file_format::ember, ".ember"}, std::pair{file_format::pytorch, ".pth"},
          std::pair{file_format::json, ".json"},
          std::pair{file_format::cereal_portable_binary, ".bin"}})
    {
        temp_dir dir;
        checkpoint_manager m(dir.path, {.keep_last = 2, .extension = extension, .format = format});
        for (std::int64_t step : {1, 2, 3})
            m.save(at_step(step));
        BOOST_TEST(m.checkpoints().size() == 2u, extension);
        BOOST_TEST(m.load_latest()->global_step == 3, extension);
    }
}

namespace
{
checkpoint_manager* g_other_manager = nullptr;
int g_writes = 0;
} // namespace

BOOST_AUTO_TEST_CASE(a_second_manager_on_the_folder_leaves_a_save_in_progress_alone)
{
    // save() and load_latest() remove the temporaries interrupted saves left. The temporary of
    // a save still going on (another manager's, another process's) is locked by its writer and
    // left alone; it was removed under it, and that save failed at its rename ("No such file
    // or directory"): two processes saving into one folder lost about every third save.
    temp_dir dir;
    checkpoint_manager first(dir.path, {.keep_last = 0}), second(dir.path, {.keep_last = 0});
    g_other_manager = &second;
    g_writes = 0;
    detail::file_ops ops;
    ops.write = [](int fd, const void* b, std::size_t n) -> ssize_t
    {
        if (++g_writes == 1) // first's save has begun writing its temporary
        {
            g_other_manager->save(at_step(2));
            (void)g_other_manager->load_latest();
        }
        return ::write(fd, b, n);
    };
    {
        detail::scoped_file_ops writing(ops);
        BOOST_CHECK_NO_THROW(first.save(at_step(1)));
    }
    BOOST_TEST(names(first.checkpoints()) ==
               (std::vector<std::string>{"ckpt-000001.ember", "ckpt-000002.ember"}));
    BOOST_TEST(load<checkpoint>(first.path_for(1)).global_step == 1);
    // What a writer that is gone left is still removed.
    write_text(dir.path / ".ckpt-000003.ember.tmp-1", "partial");
    BOOST_TEST(second.remove_temporaries() == 1u);
    BOOST_TEST(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator{}) == 2);
}

BOOST_AUTO_TEST_CASE(a_checkpoint_of_any_number_is_listed_resumed_and_pruned)
{
    // save() takes any number from 0 to the largest int64 (19 digits); every file it writes
    // must be one the manager lists, resumes from and counts when it prunes. A 19-digit file
    // once went unseen: it was never loaded or pruned, and took no place among the last N.
    temp_dir dir;
    checkpoint_manager m(dir.path, {.keep_last = 2});
    const std::int64_t largest = std::numeric_limits<std::int64_t>::max();
    m.save(at_step(999999999999999999)); // 18 digits
    m.save(at_step(1000000000000000000));
    m.save(at_step(largest));
    BOOST_TEST(names(m.checkpoints()) ==
               (std::vector<std::string>{"ckpt-1000000000000000000.ember",
                                         "ckpt-9223372036854775807.ember"}));
    auto latest = m.load_latest();
    BOOST_REQUIRE(latest.has_value());
    BOOST_TEST(latest->global_step == largest);
    // Digits beyond the largest number are not a checkpoint's name: passed over, no exception.
    write_text(dir.path / "ckpt-9223372036854775808.ember", "not ours");
    write_text(dir.path / "ckpt-99999999999999999999.ember", "not ours");
    BOOST_TEST(m.checkpoints().size() == 2u);
    m.save(at_step(3));
    BOOST_TEST(fs::exists(dir.path / "ckpt-9223372036854775808.ember"));
    BOOST_TEST(names(m.checkpoints()) ==
               (std::vector<std::string>{"ckpt-000003.ember", "ckpt-9223372036854775807.ember"}));
}

// ---- content checksums of raw archives ------------------------------------------------------

BOOST_AUTO_TEST_CASE(every_bit_flip_in_a_raw_binary_archives_content_is_caught)
{
    temp_dir dir;
    checkpoint c;
    c.epoch = 3;
    c.model_state_dict.insert("w", tensor_of<float>({1.f, 2.f}));
    c.hyperparameters.insert("lr", 0.01);
    c.generators.insert("default", generator(1).state());
    const fs::path p = dir.path / "c.bin";
    save(c, p);
    const std::string whole = read_text(p);
    // The envelope: the endianness byte, "checkpoint" and "0.1.0" with their 8-byte lengths.
    // The CRC-32 and everything after it is covered.
    const std::size_t covered = 1 + 8 + 10 + 8 + std::string(ember::version).size();
    BOOST_REQUIRE(whole.substr(9, 10) == "checkpoint");
    for (std::size_t i = covered; i < whole.size(); ++i)
        for (int bit = 0; bit < 8; ++bit)
        {
            std::string flipped = whole;
            flipped[i] = static_cast<char>(flipped[i] ^ (1 << bit));
            write_text(p, flipped);
            try
            {
                load<checkpoint>(p);
                BOOST_ERROR("flipping bit " << bit << " of byte " << i << " went unnoticed");
            }
            catch (const error&)
            {
            }
        }
}

BOOST_AUTO_TEST_CASE(an_edited_json_file_fails_its_checksum_unless_the_checksum_is_removed)
{
    temp_dir dir;
    checkpoint c;
    c.hyperparameters.insert("learning_rate", 0.01);
    const fs::path p = dir.path / "c.json";
    save(c, p);
    std::string text = read_text(p);
    const auto at = text.find("0.01");
    BOOST_REQUIRE(at != std::string::npos);
    text.replace(at, 4, "0.02");
    write_text(p, text);
    const std::string msg = what_of([&] { load<checkpoint>(p); });
    BOOST_TEST(contains(msg, "content checksum mismatch"), msg);
    BOOST_TEST(contains(msg, "remove its ember_crc32 member"), msg);

    const auto line = text.find("    \"ember_crc32\"");
    BOOST_REQUIRE(line != std::string::npos);
    text.erase(line, text.find('\n', line) + 1 - line);
    write_text(p, text);
    BOOST_TEST(load<checkpoint>(p).hyperparameters.at("learning_rate").as<double>() == 0.02);
}

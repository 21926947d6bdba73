// ember::save / ember::load / ember::probe with PyTorch's format and safetensors: the extension
// picks the format for saving, the bytes decide for loading (so ember 0.1's container files
// named .pth or .tar still load), and safetensors refuses what it cannot hold.
#include <ember/core/tensor.hpp>
#include <ember/serialize/file.hpp>

#include "test_files.hpp"

#include <boost/test/unit_test.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <unistd.h>

using namespace ember;
namespace fs = std::filesystem;
using test::temp_dir;

namespace
{

std::vector<char> file_bytes(const fs::path& p)
{
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

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

bool contains(const std::string& s, std::string_view part)
{
    return s.find(part) != std::string::npos;
}

state_dict sample_state_dict()
{
    state_dict sd;
    sd.insert("fc.weight", host_tensor::from(tensor<float, 2>{{1.5f, -2.f}, {0.25f, 1e-30f}}));
    sd.insert("fc.bias", host_tensor::from(tensor<float, 1>{0.1f, -0.2f}));
    sd.insert("bn.num_batches_tracked", host_tensor::from(tensor<std::int64_t, 1>{7}));
    return sd;
}

optim::optimizer_state sample_optimizer_state()
{
    optim::optimizer_state s;
    s.state[0].insert("momentum_buffer", host_tensor::from(tensor<float, 1>{1.f, 2.f}));
    optim::param_group_state g;
    g.options.insert("lr", 0.01);
    g.options.insert("momentum", 0.9);
    g.params = {0};
    s.param_groups.push_back(g);
    return s;
}

checkpoint sample_checkpoint()
{
    checkpoint c;
    c.epoch = 3;
    c.model_state_dict = sample_state_dict();
    c.optimizer_state_dict = sample_optimizer_state();
    c.train_loss = 0.125;
    c.val_loss = 0.25;
    c.timestamp = "2026-01-02T03:04:05.000006";
    return c;
}

bool starts_with(const std::vector<char>& bytes, std::string_view prefix)
{
    return bytes.size() >= prefix.size() &&
           std::memcmp(bytes.data(), prefix.data(), prefix.size()) == 0;
}

} // namespace

BOOST_AUTO_TEST_CASE(pth_pt_and_tar_are_written_in_pytorchs_format)
{
    temp_dir dir;
    for (const char* name : {"model.pth", "model.pt", "model.tar"})
    {
        const fs::path p = dir.path / name;
        save(sample_state_dict(), p);
        BOOST_TEST(starts_with(file_bytes(p), "PK\x03\x04"), name);
        // Exactly what pytorch::save writes (records in a folder named after the file).
        const fs::path direct = dir.path / "direct" / name;
        fs::create_directories(direct.parent_path());
        pytorch::save(sample_state_dict(), direct);
        BOOST_TEST((file_bytes(p) == file_bytes(direct)), name);
        BOOST_TEST((load<state_dict>(p) == sample_state_dict()), name);
        BOOST_TEST((pytorch::load<state_dict>(p) == sample_state_dict()), name);
        const file_info info = probe(p);
        BOOST_TEST((info.format == file_format::pytorch), name);
        BOOST_TEST((info.content == file_content::state_dict), name);
        BOOST_TEST(info.size == fs::file_size(p), name);
    }
}

BOOST_AUTO_TEST_CASE(a_checkpoint_and_an_optimizer_state_go_through_pytorchs_format)
{
    temp_dir dir;
    const checkpoint c = sample_checkpoint();
    save(c, dir.path / "checkpoint.tar");
    const checkpoint back = load<checkpoint>(dir.path / "checkpoint.tar");
    BOOST_TEST((back.model_state_dict == c.model_state_dict));
    BOOST_TEST((back.optimizer_state_dict == c.optimizer_state_dict));
    BOOST_TEST(back.epoch == c.epoch);
    BOOST_TEST(back.train_loss == c.train_loss);
    BOOST_TEST(back.timestamp == c.timestamp);
    const file_info info = probe(dir.path / "checkpoint.tar");
    BOOST_TEST((info.content == file_content::checkpoint));
    BOOST_TEST(info.writer == std::string(ember::version));

    save(sample_optimizer_state(), dir.path / "optim.pt");
    BOOST_TEST((load<optim::optimizer_state>(dir.path / "optim.pt") == sample_optimizer_state()));
    BOOST_TEST((probe(dir.path / "optim.pt").content == file_content::optimizer_state));
}

BOOST_AUTO_TEST_CASE(safetensors_holds_a_state_dict_as_the_reference_writes_it)
{
    temp_dir dir;
    const fs::path p = dir.path / "model.safetensors";
    save(sample_state_dict(), p);
    const std::vector<std::byte> expected = safetensors::to_bytes(sample_state_dict());
    const std::vector<char> got = file_bytes(p);
    BOOST_TEST((got.size() == expected.size() &&
                std::memcmp(got.data(), expected.data(), got.size()) == 0));
    // safetensors orders tensors by dtype and name; the tensors are the same.
    const state_dict back = load<state_dict>(p);
    BOOST_TEST(back.size() == sample_state_dict().size());
    for (const auto& [k, v] : sample_state_dict())
        BOOST_TEST((back.at(k) == v), k);
    const file_info info = probe(p);
    BOOST_TEST((info.format == file_format::safetensors));
    BOOST_TEST((info.content == file_content::state_dict));
}

BOOST_AUTO_TEST_CASE(safetensors_refuses_a_checkpoint_naming_the_format_and_writes_nothing)
{
    temp_dir dir;
    const fs::path p = dir.path / "ckpt.safetensors";
    const std::string msg = what_of([&] { save(sample_checkpoint(), p); });
    BOOST_TEST(contains(msg, "safetensors"), msg);
    BOOST_TEST(contains(msg, "checkpoint"), msg);
    BOOST_CHECK_THROW(save(sample_checkpoint(), p), value_error);
    BOOST_CHECK_THROW(save(sample_optimizer_state(), p), value_error);
    BOOST_TEST(!fs::exists(p));

    save(sample_state_dict(), p);
    BOOST_CHECK_THROW(load<checkpoint>(p), value_error);
    const std::string lmsg = what_of([&] { load<optim::optimizer_state>(p); });
    BOOST_TEST((contains(lmsg, "safetensors") && contains(lmsg, "optimizer state")), lmsg);
}

BOOST_AUTO_TEST_CASE(xml_refuses_the_control_characters_xml_cannot_hold_and_json_keeps_them)
{
    // XML 1.0 holds no control character but tab, newline and carriage return: the file was
    // written, read back by ember, and refused by every other XML reader (xmllint).
    temp_dir dir;
    state_dict sd = sample_state_dict();
    sd.insert("esc\x1b[31m", host_tensor::from(tensor<float, 1>{1.f}));
    const fs::path xml = dir.path / "m.xml";
    const std::string msg = what_of([&] { save(sd, xml); });
    BOOST_TEST((contains(msg, "'esc\\x1b[31m'") && contains(msg, "control byte 0x1b") &&
                contains(msg, "offset 3") && contains(msg, "an XML archive")),
               msg);
    BOOST_TEST(!fs::exists(xml));
    state_dict tabs = sample_state_dict();
    tabs.insert("tab\tnew\nline", host_tensor::from(tensor<float, 1>{2.f}));
    save(tabs, xml);
    BOOST_TEST((load<state_dict>(xml) == tabs));
    const fs::path json = dir.path / "m.json"; // JSON escapes it: \u001b
    save(sd, json);
    BOOST_TEST((load<state_dict>(json) == sd));
}

BOOST_AUTO_TEST_CASE(a_string_holding_a_nul_byte_is_refused_by_json_and_xml_and_the_old_file_stays)
{
    // cereal's JSON archive reads a string back only up to a NUL byte and XML cannot hold one:
    // such a save used to succeed and its file then failed to load (a checksum mismatch).
    temp_dir dir;
    const std::string key("fc\0weight", 9);
    state_dict sd = sample_state_dict();
    sd.insert(key, host_tensor::from(tensor<float, 1>{1.f}));
    checkpoint c = sample_checkpoint();
    c.timestamp = std::string("2026\0", 5);
    for (const char* name : {"m.json", "m.xml"})
    {
        const fs::path p = dir.path / name;
        save(sample_state_dict(), p);
        const std::vector<char> before = file_bytes(p);
        const std::string msg = what_of([&] { save(sd, p); });
        BOOST_TEST((contains(msg, "NUL") && contains(msg, "offset 2") && contains(msg, "'fc")),
                   msg);
        BOOST_CHECK_THROW(save(sd, p), value_error);
        BOOST_CHECK_THROW(save(c, p), value_error);
        BOOST_TEST(file_bytes(p) == before, name << ": the previous file is intact");
        BOOST_TEST(load<state_dict>(p).size() == sample_state_dict().size());
    }
    for (const char* name : {"m.ember", "m.pth", "m.bin"}) // formats that hold any bytes
    {
        const fs::path p = dir.path / name;
        save(sd, p);
        BOOST_TEST(load<state_dict>(p).find(key) != nullptr, name);
        save(c, p);
        BOOST_TEST(load<checkpoint>(p).timestamp == c.timestamp, name);
    }
}

BOOST_AUTO_TEST_CASE(the_bytes_decide_the_format_when_loading_by_extension)
{
    temp_dir dir;
    // ember 0.1 wrote its container under .pth and .tar: those files still load.
    save(sample_checkpoint(), dir.path / "old.tar", file_format::ember);
    BOOST_TEST((load<checkpoint>(dir.path / "old.tar").model_state_dict == sample_state_dict()));
    BOOST_TEST((probe(dir.path / "old.tar").format == file_format::ember));
    save(sample_state_dict(), dir.path / "old.pth", file_format::ember);
    BOOST_TEST((load<state_dict>(dir.path / "old.pth") == sample_state_dict()));

    // A PyTorch zip and a safetensors file load whatever they are called.
    save(sample_state_dict(), dir.path / "zip.ember", file_format::pytorch);
    BOOST_TEST((load<state_dict>(dir.path / "zip.ember") == sample_state_dict()));
    BOOST_TEST((probe(dir.path / "zip.ember").format == file_format::pytorch));
    save(sample_state_dict(), dir.path / "st.pth", file_format::safetensors);
    BOOST_TEST((probe(dir.path / "st.pth").format == file_format::safetensors));
    BOOST_TEST(load<state_dict>(dir.path / "st.pth").size() == 3u);

    // An explicit format is taken as given.
    const std::string msg =
        what_of([&] { load<state_dict>(dir.path / "st.pth", file_format::pytorch); });
    BOOST_TEST(contains(msg, "st.pth"), msg);
    BOOST_CHECK_THROW(load<state_dict>(dir.path / "old.pth", file_format::pytorch), format_error);
}

BOOST_AUTO_TEST_CASE(a_file_of_neither_format_is_a_format_error_naming_it)
{
    temp_dir dir;
    {
        std::ofstream out(dir.path / "notes.pth", std::ios::binary);
        out << "this is a text file that happens to be long enough for a header\n";
    }
    BOOST_CHECK_THROW(load<state_dict>(dir.path / "notes.pth"), format_error);
    BOOST_TEST(contains(what_of([&] { load<state_dict>(dir.path / "notes.pth"); }), "notes.pth"));
    BOOST_CHECK_THROW(probe(dir.path / "notes.pth"), format_error);
    {
        std::ofstream out(dir.path / "notes.safetensors", std::ios::binary);
        out << "not safetensors at all";
    }
    BOOST_CHECK_THROW(load<state_dict>(dir.path / "notes.safetensors"), format_error);
}

BOOST_AUTO_TEST_CASE(the_format_names_read_well_in_messages)
{
    BOOST_TEST(format_name(file_format::pytorch) == "PyTorch");
    BOOST_TEST(format_name(file_format::safetensors) == "safetensors");
    BOOST_TEST((format_from_extension("W.SAFETENSORS") == file_format::safetensors));
    BOOST_TEST(contains(what_of([] { format_from_extension("x.weights"); }), ".safetensors"));
}

// ember::save(model, path) and ember::load(model, path): the same files as the state_dict
// route, written from the parameters and loaded into them without a state_dict in between,
// and every way such a load can fail leaves the model as it was. On the test device.
#include <ember/core/generator.hpp>
#include <ember/detail/simd_dispatch.hpp>
#include <ember/detail/stream_copy.hpp>
#include <ember/nn/batchnorm.hpp>
#include <ember/nn/linear.hpp>
#include <ember/nn/sequential.hpp>
#include <ember/serialize/module.hpp>
#include <ember/serialize/pytorch.hpp>
#include <ember/serialize/safetensors.hpp>

#include "golden/container_v1.hpp"
#include "test_device.hpp"
#include "test_files.hpp"

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

using namespace ember;
using test::contains;
using test::message_of;
using test::read_bytes;
using test::temp_dir;
using test::write_bytes;
namespace fs = std::filesystem;

namespace
{
using model_type =
    nn::sequential<nn::linear<float, test_device>, nn::batch_norm1d<float, test_device>,
                   nn::linear<float, test_device>>;

// 300 × 512 floats (600 KB) is above detail::large_block, so its bytes take the in-place path
// (checksummed where they are mapped); the file is above the mapping threshold too.
model_type make_model(std::uint64_t seed)
{
    manual_seed(seed);
    return model_type(nn::linear<float, test_device>(512, 300),
                      nn::batch_norm1d<float, test_device>(300),
                      nn::linear<float, test_device>(300, 3));
}

} // namespace

BOOST_AUTO_TEST_CASE(saving_a_model_writes_the_file_its_state_dict_would)
{
    // The container, PyTorch's zip and safetensors stream the parameters from where they are
    // (a 600 KB weight, whose zip record gets its CRC-32 after its data); cereal's archives go
    // through memory. The same bytes as the state_dict's file and its in-memory encoding (same
    // file name: PyTorch's zip names its folder after it).
    temp_dir dir;
    auto model = make_model(1);
    const state_dict sd = model.state_dict();
    fs::create_directories(dir.path / "a");
    fs::create_directories(dir.path / "b");
    for (const char* name : {"m.ember", "m.pth", "m.safetensors", "m.json"})
    {
        BOOST_TEST_CONTEXT(name)
        {
            save(model, dir.path / "a" / name);
            save(sd, dir.path / "b" / name);
            const auto bytes = read_bytes(dir.path / "a" / name);
            BOOST_TEST((bytes == read_bytes(dir.path / "b" / name)));
            // (safetensors stores its tensors sorted by dtype and name)
            const state_dict loaded = load<state_dict>(dir.path / "a" / name);
            BOOST_TEST(loaded.size() == sd.size());
            for (const auto& [key, t] : sd)
                BOOST_TEST((loaded.find(key) && *loaded.find(key) == t), key);
            auto chars = [](const std::vector<std::byte>& b)
            {
                const auto* p = reinterpret_cast<const char*>(b.data());
                return std::vector<char>(p, p + b.size());
            };
            const std::string n = name;
            if (n.ends_with(".pth"))
                BOOST_TEST((bytes == chars(pytorch::to_bytes(sd, "m"))));
            if (n.ends_with(".safetensors"))
                BOOST_TEST((bytes == chars(safetensors::to_bytes(sd))));
        }
    }
}

BOOST_AUTO_TEST_CASE(state_dict_view_views_the_parameters_themselves)
{
    auto model = make_model(1);
    const state_dict_view views = model.state_dict_view();
    const state_dict sd = model.state_dict();
    BOOST_TEST(views.keys() == sd.keys());
    for (const auto& [key, t] : sd)
    {
        const host_tensor_view& v = views.at(key);
        BOOST_TEST((v.dtype() == t.dtype()));
        BOOST_TEST(v.shape() == t.shape());
        BOOST_TEST(v.nbytes() == t.nbytes());
        if constexpr (test_device::host_memory)
            BOOST_TEST((v.nbytes() == 0 ||
                        std::memcmp(v.bytes().data(), t.bytes().data(), t.nbytes()) == 0));
    }
    BOOST_TEST((views.at("0.weight").bytes().data() ==
                reinterpret_cast<const std::byte*>(model.get<0>().weight.value.data())));
}

BOOST_AUTO_TEST_CASE(loading_into_a_model_restores_every_parameter_and_buffer)
{
    temp_dir dir;
    auto saved = make_model(1);
    saved.get<1>().running_mean.value.fill(0.5f); // buffers are state too
    save(saved, dir.path / "m.ember");
    auto model = make_model(2);
    BOOST_TEST(!(model.state_dict() == saved.state_dict()));
    const nn::load_result r = load(model, dir.path / "m.ember");
    BOOST_TEST(r.missing_keys.empty());
    BOOST_TEST(r.unexpected_keys.empty());
    BOOST_TEST((model.state_dict() == saved.state_dict()));
}

BOOST_AUTO_TEST_CASE(loading_into_a_model_reads_every_format_a_state_dict_does)
{
    temp_dir dir;
    auto saved = make_model(1);
    for (const char* name : {"m.pth", "m.safetensors", "m.json", "m.ember"})
    {
        BOOST_TEST_CONTEXT(name)
        {
            save(saved.state_dict(), dir.path / name);
            auto model = make_model(2);
            load(model, dir.path / name);
            BOOST_TEST((model.state_dict() == saved.state_dict()));
        }
    }
    // An explicit format, whatever the extension.
    save(saved, dir.path / "weights.bin", file_format::ember);
    auto model = make_model(2);
    load(model, dir.path / "weights.bin", file_format::ember);
    BOOST_TEST((model.state_dict() == saved.state_dict()));
}

BOOST_AUTO_TEST_CASE(stream_copy_copies_every_byte_at_every_alignment_and_size)
{
    // Sizes around the threshold and the 64-byte lines of the non-temporal loops and around the
    // streams' pieces they are read in (a row: a piece of each stream; what is left after the
    // last whole row is copied as one stream), the source and the destination each at offsets
    // from a cache line's start across a line, in every instruction set the CPU runs
    // (detail/simd_dispatch.hpp: the loops' stores are 16, 32 or 64 bytes wide; with AVX-512
    // VBMI a source off a line is read a line at a time).
    const std::size_t t = detail::stream_copy_threshold;
    const std::size_t row = detail::stream_copy_streams * detail::stream_copy_piece;
    const std::size_t size = 63 + t + 3 * row; // the largest offset and size below
    std::vector<std::byte> src_buffer(size + 63), dst_buffer(size + 63);
    const auto on_line = [](std::vector<std::byte>& v)
    { return v.data() + ((64 - (reinterpret_cast<std::uintptr_t>(v.data()) & 63)) & 63); };
    std::byte* const src = on_line(src_buffer);
    const std::span<std::byte> dst(on_line(dst_buffer), size);
    for (std::size_t i = 0; i < size; ++i)
        src[i] = static_cast<std::byte>((i * 131 + 7) % 251);
    const auto runnable = static_cast<int>(detail::runnable_simd_isa());
    for (int isa = 0; isa <= runnable; ++isa)
    {
        detail::limit_simd_isa(static_cast<detail::simd_isa>(isa));
        BOOST_TEST(static_cast<int>(detail::active_memory_simd_isa()) == isa);
        for (std::size_t n : {std::size_t(0), std::size_t(1), std::size_t(15), std::size_t(64),
                              std::size_t(100), t - 1, t, t + 1, t + 63, t + 64, t + 200,
                              t + row + 64, t + 3 * row - 64, t + 3 * row})
            for (std::size_t s_off = 0; s_off < 64; s_off += 21)
                for (std::size_t d_off = 0; d_off < 64; d_off += 21)
                {
                    std::fill(dst.begin(), dst.end(), std::byte{0xAA});
                    detail::stream_copy(dst.data() + d_off, src + s_off, n);
                    BOOST_TEST_CONTEXT("instruction set " << isa << ", n " << n << ", source +"
                                                          << s_off << ", destination +" << d_off)
                    {
                        BOOST_TEST(std::memcmp(dst.data() + d_off, src + s_off, n) == 0);
                        // Nothing outside [d_off, d_off + n) is touched.
                        const auto untouched = [&](std::size_t from, std::size_t to)
                        {
                            return std::all_of(dst.begin() + from, dst.begin() + to,
                                               [](std::byte b) { return b == std::byte{0xAA}; });
                        };
                        BOOST_TEST(untouched(0, d_off));
                        BOOST_TEST(untouched(d_off + n, dst.size()));
                    }
                }
    }
    detail::reset_simd_isa();
}

BOOST_AUTO_TEST_CASE(a_large_host_tensor_is_zeroed_and_on_huge_page_boundaries)
{
    // 5 MiB: from detail::huge_page_threshold up the bytes come from the huge-page allocator.
    host_tensor big(dtype::float32, {5, 256, 1024});
    BOOST_TEST(big.nbytes() == std::size_t{5} << 20);
    BOOST_TEST(std::all_of(big.bytes().begin(), big.bytes().end(),
                           [](std::byte b) { return b == std::byte{0}; }));
#if defined(__linux__)
    BOOST_TEST(reinterpret_cast<std::uintptr_t>(big.bytes().data()) % detail::huge_page_size == 0u);
#endif
    // Copies, moves and comparisons behave as before.
    big.data<float>()[12345] = 1.5f;
    host_tensor copy = big;
    BOOST_TEST((copy == big));
    host_tensor moved = std::move(copy);
    BOOST_TEST(moved.data<float>()[12345] == 1.5f);
    host_tensor small(dtype::float32, {4});
    BOOST_TEST(!(small == big));
}

BOOST_AUTO_TEST_CASE(a_host_tensor_is_zeroed_even_in_memory_a_freed_one_left_written)
{
    // Bytes are not zeroed by their allocator (host_tensor::empty leaves them): the
    // constructor must zero them itself, also where malloc hands back a block just freed.
    for (int round = 0; round < 4; ++round)
    {
        {
            host_tensor used(dtype::uint8, {4000});
            std::fill(used.bytes().begin(), used.bytes().end(), std::byte{0xAB});
        }
        host_tensor fresh(dtype::uint8, {4000});
        BOOST_TEST(std::all_of(fresh.bytes().begin(), fresh.bytes().end(),
                               [](std::byte b) { return b == std::byte{0}; }));
    }
}

BOOST_AUTO_TEST_CASE(an_empty_host_tensor_has_its_dtype_and_shape_and_checks_them_alike)
{
    host_tensor e = host_tensor::empty(dtype::float64, {3, 0, 2});
    BOOST_TEST((e.dtype() == dtype::float64));
    BOOST_TEST((e.shape() == std::vector<std::int64_t>{3, 0, 2}));
    BOOST_TEST(e.nbytes() == 0u);
    host_tensor big = host_tensor::empty(dtype::float32, {5, 256, 1024});
    BOOST_TEST(big.numel() == std::size_t{5} << 18);
#if defined(__linux__)
    BOOST_TEST(reinterpret_cast<std::uintptr_t>(big.bytes().data()) % detail::huge_page_size == 0u);
#endif
    const std::string msg = test::message_of<value_error>(
        [] {
            (void)host_tensor::empty(dtype::float32, {2, -1});
        });
    BOOST_TEST(test::contains(msg, "-1"));
}

BOOST_AUTO_TEST_CASE(a_large_tensor_is_on_huge_page_boundaries_and_works_as_any_xtensor)
{
    // 1280 × 1024 floats (5 MiB), a parameter's or a batch's size where huge pages pay.
    auto big = ember::tensor<float, 2>::from_shape({1280, 1024});
#if defined(__linux__)
    BOOST_TEST(reinterpret_cast<std::uintptr_t>(big.data()) % detail::huge_page_size == 0u);
#endif
    for (std::size_t i = 0; i < big.size(); ++i)
        big.data()[i] = static_cast<float>(i % 1000);
    // Copies, moves, expressions, and xtensor's own containers (another allocator) both ways.
    ember::tensor<float, 2> copy = big;
    BOOST_TEST((copy == big));
    ember::tensor<float, 2> doubled = 2.0f * big;
    BOOST_TEST(doubled(1279, 1023) == 2.0f * big(1279, 1023));
    const xt::xtensor<float, 2> plain = big;
    BOOST_TEST((plain == big));
    ember::tensor<float, 2> back = plain;
    BOOST_TEST((back == big));
    ember::tensor<float, 2> moved = std::move(copy);
    BOOST_TEST(moved(640, 512) == big(640, 512));
    // Resized below the threshold, and a small tensor, use the ordinary allocation.
    moved.resize({3, 4});
    BOOST_TEST(moved.size() == 12u);
    ember::tensor<float, 1> small = {1.0f, 2.0f};
    BOOST_TEST(small(1) == 2.0f);
}

BOOST_AUTO_TEST_CASE(a_tensor_past_the_streaming_threshold_loads_exactly_in_every_format)
{
    // 1024 × 300 floats (1.2 MB): its copy into the model goes around the cache.
    static_assert(1024 * 300 * sizeof(float) > detail::stream_copy_threshold);
    temp_dir dir;
    auto make = [](std::uint64_t seed)
    {
        manual_seed(seed);
        return nn::sequential<nn::linear<float, test_device>>(
            nn::linear<float, test_device>(1024, 300));
    };
    auto saved = make(1);
    for (const char* name : {"m.ember", "m.pth", "m.safetensors"})
    {
        BOOST_TEST_CONTEXT(name)
        {
            save(saved.state_dict(), dir.path / name);
            auto model = make(2);
            load(model, dir.path / name);
            BOOST_TEST((model.state_dict() == saved.state_dict()));
            // and through a state_dict, whose tensors the formats decode with the same copy
            auto other = make(3);
            other.load_state_dict(load<state_dict>(dir.path / name));
            BOOST_TEST((other.state_dict() == saved.state_dict()));
        }
    }
}

BOOST_AUTO_TEST_CASE(a_corrupt_tensor_is_a_format_error_and_the_model_is_unchanged)
{
    temp_dir dir;
    auto saved = make_model(1);
    save(saved, dir.path / "m.ember");
    auto bytes = read_bytes(dir.path / "m.ember");
    bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x04); // in 0.weight
    write_bytes(dir.path / "bad.ember", bytes);
    auto model = make_model(2);
    const state_dict before = model.state_dict();
    const std::string msg = message_of<format_error>([&] { load(model, dir.path / "bad.ember"); });
    BOOST_TEST_INFO(msg);
    BOOST_TEST(contains(msg, "bad.ember"));
    BOOST_TEST(contains(msg, "checksum mismatch"));
    BOOST_TEST((model.state_dict() == before));
}

BOOST_AUTO_TEST_CASE(a_truncated_file_is_a_format_error_and_the_model_is_unchanged)
{
    temp_dir dir;
    save(make_model(1), dir.path / "m.ember");
    const auto bytes = read_bytes(dir.path / "m.ember");
    auto model = make_model(2);
    const state_dict before = model.state_dict();
    for (std::size_t n : {std::size_t{10}, std::size_t{100}, bytes.size() / 2, bytes.size() - 1})
    {
        write_bytes(dir.path / "cut.ember", {bytes.begin(), bytes.begin() + static_cast<long>(n)});
        BOOST_CHECK_THROW(load(model, dir.path / "cut.ember"), format_error);
    }
    BOOST_TEST((model.state_dict() == before));
}

BOOST_AUTO_TEST_CASE(a_safetensors_file_loads_into_a_model_from_where_its_tensors_lie)
{
    temp_dir dir;
    auto saved = make_model(1);
    save(saved, dir.path / "m.safetensors");
    // Views of the mapped file, as for ember's container and PyTorch's zip, not a decoded copy.
    {
        const detail::state_dict_file file(dir.path / "m.safetensors", std::nullopt);
        BOOST_TEST(file.views() != nullptr);
    }
    auto model = make_model(2);
    load(model, dir.path / "m.safetensors");
    BOOST_TEST((model.state_dict() == saved.state_dict()));
    // Cut short anywhere: a format error before anything is copied.
    const auto bytes = read_bytes(dir.path / "m.safetensors");
    auto other = make_model(3);
    const state_dict before = other.state_dict();
    for (std::size_t n : {std::size_t{10}, std::size_t{100}, bytes.size() / 2, bytes.size() - 1})
    {
        write_bytes(dir.path / "cut.safetensors",
                    {bytes.begin(), bytes.begin() + static_cast<long>(n)});
        BOOST_CHECK_THROW(load(other, dir.path / "cut.safetensors"), format_error);
    }
    BOOST_TEST((other.state_dict() == before));
}

BOOST_AUTO_TEST_CASE(a_safetensors_file_with_unaligned_tensors_loads_exactly)
{
    // The format does not align its data section: a header of odd length puts every tensor at
    // an odd offset, so the in-place copy reads floats from unaligned bytes.
    std::string header = R"({"weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
                         R"("bias":{"dtype":"F32","shape":[2],"data_offsets":[24,32]}})";
    if (header.size() % 2 == 0)
        header += ' ';
    std::vector<char> file;
    for (int i = 0; i < 8; ++i)
        file.push_back(static_cast<char>((header.size() >> (8 * i)) & 0xFF));
    file.insert(file.end(), header.begin(), header.end());
    const float values[8] = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -0.5f, 10.0f, -11.0f};
    const auto* raw = reinterpret_cast<const char*>(values);
    file.insert(file.end(), raw, raw + sizeof values);
    temp_dir dir;
    write_bytes(dir.path / "odd.safetensors", file);

    nn::linear<float, test_device> layer(3, 2);
    load(layer, dir.path / "odd.safetensors");
    const state_dict sd = layer.state_dict();
    const auto weight = sd.find("weight")->data<float>();
    const auto bias = sd.find("bias")->data<float>();
    BOOST_TEST(std::vector<float>(weight.begin(), weight.end()) ==
                   std::vector<float>(values, values + 6),
               boost::test_tools::per_element());
    BOOST_TEST(std::vector<float>(bias.begin(), bias.end()) ==
                   std::vector<float>(values + 6, values + 8),
               boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(a_model_of_another_shape_is_a_shape_error_naming_file_and_key)
{
    temp_dir dir;
    manual_seed(3);
    nn::sequential other(nn::linear<float, test_device>(512, 300),
                         nn::batch_norm1d<float, test_device>(300),
                         nn::linear<float, test_device>(300, 4));
    save(other, dir.path / "four.ember");
    auto model = make_model(2);
    const state_dict before = model.state_dict();
    const std::string msg = message_of<shape_error>([&] { load(model, dir.path / "four.ember"); });
    BOOST_TEST_INFO(msg);
    BOOST_TEST(contains(msg, "four.ember"));
    BOOST_TEST(contains(msg, "'2.weight'"));
    BOOST_TEST(contains(msg, "[4, 300]"));
    BOOST_TEST((model.state_dict() == before));
}

BOOST_AUTO_TEST_CASE(missing_keys_throw_when_strict_and_are_returned_when_not)
{
    temp_dir dir;
    auto saved = make_model(1);
    state_dict partial;
    for (const auto& [key, t] : saved.state_dict())
        if (key.rfind("2.", 0) != 0)
            partial.insert(key, t);
    save(partial, dir.path / "partial.ember");
    auto model = make_model(2);
    const state_dict before = model.state_dict();
    const std::string msg = message_of<key_error>([&] { load(model, dir.path / "partial.ember"); });
    BOOST_TEST_INFO(msg);
    BOOST_TEST(contains(msg, "partial.ember"));
    BOOST_TEST(contains(msg, "'2.weight'"));
    BOOST_TEST((model.state_dict() == before));

    const nn::load_result r = load(model, dir.path / "partial.ember", /*strict=*/false);
    BOOST_TEST(r.missing_keys == (std::vector<std::string>{"2.weight", "2.bias"}));
    BOOST_TEST((model.state_dict().at("0.weight") == saved.state_dict().at("0.weight")));
    BOOST_TEST((model.state_dict().at("2.weight") == before.at("2.weight")));
}

BOOST_AUTO_TEST_CASE(a_file_holding_something_else_says_what_it_holds)
{
    temp_dir dir;
    optim::optimizer_state s;
    save(s, dir.path / "opt.ember");
    auto model = make_model(2);
    const std::string msg = message_of<format_error>([&] { load(model, dir.path / "opt.ember"); });
    BOOST_TEST_INFO(msg);
    BOOST_TEST(contains(msg, "optimizer state"));
    BOOST_CHECK_THROW(load(model, dir.path / "missing.ember"), io_error);
}

namespace
{
// The model behind tests/golden/container_v1.hpp's state_dict (ember 0.1's container, whose
// tensor records carry no checksum): mixed dtypes and a 0-d buffer, all small records.
struct v1_layer : nn::module<v1_layer>
{
    nn::parameter<float, 2> weight{tensor<float, 2>::from_shape({2, 3})};
    nn::parameter<double, 1> bias{tensor<double, 1>::from_shape({2})};

    template <class V>
    void visit(V&& v)
    {
        v("weight", weight);
        v("bias", bias);
    }
};

struct v1_model : nn::module<v1_model>
{
    v1_layer fc1;
    nn::buffer<std::int64_t, 0> steps{tensor<std::int64_t, 0>(0)};

    template <class V>
    void visit(V&& v)
    {
        v("fc1", fc1);
        v("steps", steps);
    }
};
} // namespace

BOOST_AUTO_TEST_CASE(an_ember_0_1_container_loads_into_a_model_in_place)
{
    temp_dir dir;
    const auto& bytes = fixture::container_v1_state_dict;
    write_bytes(dir.path / "v1.ember",
                std::vector<char>(reinterpret_cast<const char*>(bytes),
                                  reinterpret_cast<const char*>(bytes) + sizeof bytes));
    v1_model model;
    load(model, dir.path / "v1.ember");
    v1_model expected;
    expected.load_state_dict(load<state_dict>(dir.path / "v1.ember"));
    BOOST_TEST((model.state_dict() == expected.state_dict()));
    BOOST_TEST(model.steps.value() == 42);
    BOOST_TEST(model.fc1.bias.value(1) == -0.2);
}

// The program every packaging check builds against ember: the installed package through
// pkg-config and through CMake, and ember as a Meson subproject. It has to compile, link and
// agree with PyTorch: the generator and the module concept, plus one call into each library the
// headers link (BLAS through nn::linear, zlib and cereal through ember::save/load), so a package
// that forgets a link flag fails here. Usage: app [scratch-file] (default ./consumer.ember).
#include <ember/core/generator.hpp>
#include <ember/nn/linear.hpp>
#include <ember/nn/module.hpp>
#include <ember/serialize/file.hpp>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace
{
struct affine : ember::nn::module<affine>
{
    ember::nn::parameter<float, 1> weight{ember::randn<float>({1})};
    ember::nn::parameter<float, 1> bias{ember::randn<float>({1})};

    template <class V>
    void visit(V&& v)
    {
        v("weight", weight);
        v("bias", bias);
    }
};

int failures = 0;

void check(bool ok, const char* what)
{
    if (!ok)
    {
        std::fprintf(stderr, "consumer: FAILED: %s\n", what);
        ++failures;
    }
}
} // namespace

int main(int argc, char** argv)
{
    // torch.manual_seed(42); torch.randn(1) -> 0.33669036626815796 (PyTorch 1.13, float32),
    // the value tests/test_generator.cpp checks too.
    constexpr float torch_first_randn = 0.33669036626815796f;

    ember::manual_seed(42);
    check(ember::randn<float>({1})(0) == torch_first_randn,
          "randn<float>({1}) after manual_seed(42)");

    ember::manual_seed(42);
    affine m;
    check(m.weight.item() == torch_first_randn, "first parameter drawn after manual_seed(42)");

    const auto sd = m.state_dict();
    check(sd.keys() == std::vector<std::string>{"weight", "bias"},
          "state_dict keys are {weight, bias}");

    // cblas_sgemm: a [4, 2] batch through Linear(2, 3) is [4, 3].
    ember::nn::linear<float> fc(2, 3);
    ember::tensor<float, 2> x = ember::tensor<float, 2>::from_shape({4, 2});
    x.fill(1.f);
    const auto& y = fc.forward(x);
    check(y.shape(0) == 4 && y.shape(1) == 3, "linear(2, 3) maps [4, 2] to [4, 3]");

    // cereal and zlib's crc32: a state_dict survives a file round trip.
    const std::filesystem::path file = argc > 1 ? argv[1] : "consumer.ember";
    ember::save(sd, file);
    const auto loaded = ember::load<ember::state_dict>(file);
    std::filesystem::remove(file);
    check(loaded.keys() == sd.keys(), "state_dict keys survive save/load");
    check(loaded.at("weight").item<float>() == torch_first_randn, "weight survives save/load");

    if (failures != 0)
        return 1;
    std::puts("consumer: ok");
    return 0;
}

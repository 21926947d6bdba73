// The program every packaging check builds against ember: the installed package through
// pkg-config and through CMake, and ember as a Meson subproject. It only has to compile, link
// and agree with PyTorch, so it touches the generator and the module concept and nothing more.
#include <ember/core/generator.hpp>
#include <ember/nn/module.hpp>

#include <cstdio>
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

int main()
{
    // torch.manual_seed(42); torch.randn(1) -> 0.33669036626815796 (PyTorch 1.13, float32),
    // the value tests/test_generator.cpp checks too.
    constexpr float torch_first_randn = 0.33669036626815796f;

    ember::manual_seed(42);
    check(ember::randn<float>({1})(0) == torch_first_randn, "randn<float>({1}) after manual_seed(42)");

    ember::manual_seed(42);
    affine m;
    check(m.weight.item() == torch_first_randn, "first parameter drawn after manual_seed(42)");

    const auto sd = m.state_dict();
    check(sd.keys() == std::vector<std::string>{"weight", "bias"}, "state_dict keys are {weight, bias}");

    if (failures != 0)
        return 1;
    std::puts("consumer: ok");
    return 0;
}

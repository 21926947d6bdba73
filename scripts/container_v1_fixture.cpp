// Writes two files in ember's container version 1 (the format of ember 0.1.0 before per-tensor
// checksums) to stdout as a C++ header, so tests can check that later builds still read them.
// Built against the headers of the commit that wrote version 1 by
// scripts/make_container_v1_fixture.sh; do not build it against the current headers.
#include <ember/serialize/file.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

using namespace ember;

static void dump(const char* name, const std::filesystem::path& path)
{
    std::ifstream f(path, std::ios::binary);
    std::vector<unsigned char> b{std::istreambuf_iterator<char>(f), {}};
    std::printf("inline constexpr unsigned char %s[] = {", name);
    for (std::size_t i = 0; i < b.size(); ++i)
        std::printf("%s0x%02x,", i % 16 == 0 ? "\n    " : " ", b[i]);
    std::printf("\n};\n\n");
}

int main(int argc, char** argv)
{
    const std::filesystem::path dir = argc > 1 ? argv[1] : ".";
    // The same values as tests/test_checkpoint.cpp's v1 expectations.
    state_dict sd;
    sd.insert("fc1.weight",
              host_tensor::from(tensor<float, 2>{{1.5f, -2.f, 3.25f}, {0.f, 1e-30f, -7.f}}));
    sd.insert("fc1.bias", host_tensor::from(tensor<double, 1>{0.1, -0.2}));
    sd.insert("steps", host_tensor::from(tensor<std::int64_t, 0>(42)));
    save(sd, dir / "sd.ember");

    optim::optimizer_state s;
    s.state[0].insert("momentum_buffer", host_tensor::from(tensor<float, 1>{1.f, 2.f}));
    optim::param_group_state g;
    g.options.insert("lr", 0.01);
    g.options.insert("betas", std::vector<double>{0.9, 0.999});
    g.params = {0};
    s.param_groups.push_back(g);
    save(s, dir / "opt.ember");

    std::printf("#pragma once\n// ember container version 1 files, written by ember 0.1.0 (commit "
                "eef3fb0) through\n// scripts/make_container_v1_fixture.sh. Do not edit.\n\n"
                "namespace fixture\n{\n\n");
    dump("container_v1_state_dict", dir / "sd.ember");
    dump("container_v1_optimizer_state", dir / "opt.ember");
    std::printf("} // namespace fixture\n");
}

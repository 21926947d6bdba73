#pragma once
// The state_dicts the SIGKILL stress test writes: version v is a function of v alone, so a
// loaded file names its version (key "version") and can be compared with the whole expected
// state_dict. Shared by test_crash_safety.cpp and crash_writer.cpp.
#include <ember/core/state_dict.hpp>

#include <cstdint>

namespace crash_test
{

inline ember::state_dict version_state(std::int64_t v, std::size_t words)
{
    ember::state_dict sd;
    ember::host_tensor version(ember::dtype::int64, {});
    version.data<std::int64_t>()[0] = v;
    sd.insert("version", std::move(version));
    // Every word depends on v, so a file stitched from two versions cannot pass for either.
    ember::host_tensor body(ember::dtype::int32, {static_cast<std::int64_t>(words)});
    auto data = body.data<std::int32_t>();
    for (std::size_t i = 0; i < words; ++i)
        data[i] = static_cast<std::int32_t>(static_cast<std::uint32_t>(v) * 2654435761u ^
                                            static_cast<std::uint32_t>(i));
    sd.insert("body", std::move(body));
    ember::host_tensor tail(ember::dtype::int64, {1});
    tail.data<std::int64_t>()[0] = -v;
    sd.insert("tail", std::move(tail));
    return sd;
}

} // namespace crash_test

// libFuzzer target: PyTorch files (zip container, data.pkl through the allowlisted unpickler,
// storage records) loaded as each type ember::pytorch::load accepts.
#include "fuzz_common.hpp"

#include <ember/serialize/pytorch.hpp>

namespace
{
// Loads a T; if that succeeds, writing it and loading the result must be a fixed point.
template <class T>
void check(ember_fuzz::bytes_view bytes)
{
    T obj{};
    if (!ember_fuzz::loads([&] { obj = ember::pytorch::from_bytes<T>(bytes, "fuzz input"); }))
        return;
    std::vector<std::byte> once;
    try
    {
        once = ember::pytorch::to_bytes(obj);
    }
    catch (const ember::value_error&)
    {
        return; // documented: something PyTorch's format cannot hold
    }
    catch (const std::exception& e)
    {
        ember_fuzz::finding("saving what was loaded threw", e.what());
    }
    T again{};
    try
    {
        again = ember::pytorch::from_bytes<T>(once, "re-encoded");
    }
    catch (const std::exception& e)
    {
        ember_fuzz::finding("what was loaded, saved again, does not load", e.what());
    }
    if (ember::pytorch::to_bytes(again) != once)
        ember_fuzz::finding("load and save are not a fixed point", "the second save differs");
}
} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const auto bytes = ember_fuzz::as_bytes(data, size);
    check<ember::state_dict>(bytes);
    check<ember::optim::optimizer_state>(bytes);
    check<ember::checkpoint>(bytes);
    check<ember::value>(bytes);
    return 0;
}

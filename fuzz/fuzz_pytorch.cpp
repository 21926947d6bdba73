// libFuzzer target: PyTorch files (zip container, data.pkl through the allowlisted unpickler,
// storage records) loaded as each type ember::pytorch::load accepts, and as the in-place views
// ember::load(model, path) reads, which must agree with the copying load.
#include "fuzz_common.hpp"

#include <ember/serialize/pytorch.hpp>

#include <optional>
#include <string>

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

// The views must load exactly when the copy loads, with the same tensors. One difference is
// by design: views allocate nothing, so only the copy can run out of max_tensor_bytes (a
// storage shared by many tensors is copied for each).
void check_views(ember_fuzz::bytes_view bytes)
{
    ember::state_dict copied;
    bool ok_copy = true;
    try
    {
        copied = ember::pytorch::from_bytes<ember::state_dict>(bytes, "fuzz input");
    }
    catch (const ember::format_error& e)
    {
        if (std::string(e.what()).find("past this load's limit") != std::string::npos)
            return;
        ok_copy = false;
    }
    catch (const std::exception&)
    {
        return; // check<state_dict> reports it
    }
    std::optional<ember::pytorch::detail::archive_reader> reader; // the views' bytes
    ember::state_dict copies;
    ember::state_dict_view viewed;
    const bool ok_view = ember_fuzz::loads(
        [&]
        {
            reader.emplace(bytes, "fuzz input", ember::pytorch::load_options{});
            viewed = reader->to_state_dict_view(reader->root(), "", copies);
        });
    if (ok_copy != ok_view)
        ember_fuzz::finding("the in-place decode disagrees with the copying one",
                            ok_copy ? "only the copy loaded" : "only the views loaded");
    if (ok_copy)
        ember_fuzz::check_views_match(copied, viewed);
}
} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const auto bytes = ember_fuzz::as_bytes(data, size);
    check<ember::state_dict>(bytes);
    check_views(bytes);
    check<ember::optim::optimizer_state>(bytes);
    check<ember::checkpoint>(bytes);
    check<ember::value>(bytes);
    return 0;
}

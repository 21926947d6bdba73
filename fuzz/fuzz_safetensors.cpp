// libFuzzer target: the safetensors reader. What it accepts must tile the data exactly, copy
// out as a state_dict, and survive writing and reading again unchanged (the writer reorders
// tensors, so the second write must equal the first byte for byte).
#include "fuzz_common.hpp"

#include <ember/serialize/safetensors.hpp>

#include <optional>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    namespace st = ember::safetensors;
    const auto bytes = ember_fuzz::as_bytes(data, size);
    std::optional<st::reader> reader;
    if (!ember_fuzz::loads([&] { reader.emplace(bytes, "fuzz input"); }))
        return 0;

    std::uint64_t covered = 0;
    for (std::size_t i = 0; i < reader->size(); ++i)
    {
        const auto v = reader->view_at(i);
        if (v.bytes().data() < bytes.data() ||
            v.bytes().data() + v.bytes().size() > bytes.data() + size)
            ember_fuzz::finding("a view outside the file was accepted", v.name().c_str());
        covered += v.bytes().size();
    }
    if (reader->info().data_start + covered != size)
        ember_fuzz::finding("the tensors do not tile the data section", "");

    ember::state_dict sd;
    try
    {
        sd = reader->to_state_dict();
    }
    catch (const std::exception& e)
    {
        ember_fuzz::finding("an accepted file does not copy out", e.what());
    }
    std::vector<std::byte> once;
    try
    {
        once = st::to_bytes(sd, reader->metadata());
    }
    catch (const ember::value_error&)
    {
        return 0; // documented: a header over the limit after re-encoding
    }
    ember::state_dict again;
    try
    {
        st::reader r(once, "re-encoded");
        again = r.to_state_dict();
        if (!(r.metadata() == reader->metadata()))
            ember_fuzz::finding("metadata changed in a round trip", "");
    }
    catch (const std::exception& e)
    {
        ember_fuzz::finding("what was loaded, saved again, does not load", e.what());
    }
    if (again.size() != sd.size())
        ember_fuzz::finding("a round trip lost tensors", "");
    for (const auto& [name, t] : sd)
        if (!again.contains(name) || !(again.at(name) == t))
            ember_fuzz::finding("a round trip changed a tensor", name.c_str());
    if (st::to_bytes(again, reader->metadata()) != once)
        ember_fuzz::finding("load and save are not a fixed point", "the second save differs");
    return 0;
}

// libFuzzer target: the input is a container's payload (cereal portable binary); the target
// seals it with a valid header and checksums for each content kind, so every mutation reaches
// the parser. (Tensor data still carries its own CRC-32 in record version 2, which mutations
// of the data rarely pass; everything before the data is parsed.) The in-place decode that
// ember::load(model, path) uses must accept exactly what the copying one accepts, with the
// same tensors.
#include "fuzz_common.hpp"

namespace
{
void check_in_place_agrees(ember_fuzz::bytes_view file)
{
    using ember::detail::decode_container;
    ember::state_dict copied;
    ember::state_dict_view viewed;
    const bool ok_copy =
        ember_fuzz::loads([&] { copied = decode_container<ember::state_dict>(file, "fuzz"); });
    const bool ok_view =
        ember_fuzz::loads([&] { viewed = decode_container<ember::state_dict_view>(file, "fuzz"); });
    if (ok_copy != ok_view)
        ember_fuzz::finding("the in-place decode disagrees with the copying one",
                            ok_copy ? "only the copy loaded" : "only the views loaded");
    if (!ok_copy)
        return;
    ember_fuzz::check_views_match(copied, viewed);
}
} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const auto payload = ember_fuzz::as_bytes(data, size);
    using ember::file_content;
    const auto state_dict_file =
        ember_fuzz::seal(static_cast<std::uint32_t>(file_content::state_dict), payload);
    ember_fuzz::check_decode<ember::state_dict>(state_dict_file, ember::file_format::ember);
    check_in_place_agrees(state_dict_file);
    ember_fuzz::check_decode<ember::optim::optimizer_state>(
        ember_fuzz::seal(static_cast<std::uint32_t>(file_content::optimizer_state), payload),
        ember::file_format::ember);
    ember_fuzz::check_decode<ember::checkpoint>(
        ember_fuzz::seal(static_cast<std::uint32_t>(file_content::checkpoint), payload),
        ember::file_format::ember);
    return 0;
}

// libFuzzer target: the input is a container's payload (cereal portable binary); the target
// seals it with a valid header and checksums for each content kind, so every mutation reaches
// the parser. (Tensor data still carries its own CRC-32 in record version 2, which mutations
// of the data rarely pass; everything before the data is parsed.)
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const auto payload = ember_fuzz::as_bytes(data, size);
    using ember::file_content;
    ember_fuzz::check_decode<ember::state_dict>(
        ember_fuzz::seal(static_cast<std::uint32_t>(file_content::state_dict), payload),
        ember::file_format::ember);
    ember_fuzz::check_decode<ember::optim::optimizer_state>(
        ember_fuzz::seal(static_cast<std::uint32_t>(file_content::optimizer_state), payload),
        ember::file_format::ember);
    ember_fuzz::check_decode<ember::checkpoint>(
        ember_fuzz::seal(static_cast<std::uint32_t>(file_content::checkpoint), payload),
        ember::file_format::ember);
    return 0;
}

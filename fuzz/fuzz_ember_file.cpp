// libFuzzer target: whole ember container files (header, checksums, payload) loaded as each
// content type. Random mutations mostly meet the checksums; fuzz_ember_payload gets past them.
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const auto bytes = ember_fuzz::as_bytes(data, size);
    ember_fuzz::check_decode<ember::state_dict>(bytes, ember::file_format::ember);
    ember_fuzz::check_decode<ember::optim::optimizer_state>(bytes, ember::file_format::ember);
    ember_fuzz::check_decode<ember::checkpoint>(bytes, ember::file_format::ember);
    return 0;
}

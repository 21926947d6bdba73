// libFuzzer target: cereal JSON and XML archives as every content type. The first byte picks
// the format, so each input is parsed by one parser (the JSON and XML seeds start with '{' and
// '<'; any other byte means JSON).
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const auto bytes = ember_fuzz::as_bytes(data, size);
    const auto format =
        size > 0 && data[0] == '<' ? ember::file_format::xml : ember::file_format::json;
    ember_fuzz::check_decode<ember::state_dict>(bytes, format);
    ember_fuzz::check_decode<ember::optim::optimizer_state>(bytes, format);
    ember_fuzz::check_decode<ember::checkpoint>(bytes, format);
    return 0;
}

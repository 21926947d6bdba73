// libFuzzer target: raw cereal binary and portable binary archives (no container, no
// checksums), as every content type — what ember::load reads from .bin/.cereal files and what
// users' own binary archives meet.
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const auto bytes = ember_fuzz::as_bytes(data, size);
    for (auto format :
         {ember::file_format::cereal_portable_binary, ember::file_format::cereal_binary})
    {
        ember_fuzz::check_decode<ember::state_dict>(bytes, format);
        ember_fuzz::check_decode<ember::optim::optimizer_state>(bytes, format);
        ember_fuzz::check_decode<ember::checkpoint>(bytes, format);
    }
    return 0;
}

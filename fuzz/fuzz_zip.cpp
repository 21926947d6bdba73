// libFuzzer target: the zip container reader. Whatever it accepts must keep its promises
// (every entry inside the archive, no two sharing bytes, names unique; every record's CRC is
// checked when the archive opens, so an opened archive's records all passed it), and rewriting
// the records with zip_writer gives an archive that reads back with the same names and bytes.
#include "fuzz_common.hpp"

#include <ember/serialize/pytorch/zip.hpp>

#include <algorithm>
#include <optional>
#include <set>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    namespace pt = ember::pytorch;
    const auto bytes = ember_fuzz::as_bytes(data, size);
    std::optional<pt::zip_reader> reader;
    if (!ember_fuzz::loads([&] { reader.emplace(bytes, "fuzz input"); }))
        return 0;

    std::set<std::string> names;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> spans;
    for (const auto& e : reader->entries())
    {
        if (e.data_offset > size || e.size > size - e.data_offset ||
            e.header_offset > e.data_offset)
            ember_fuzz::finding("an entry outside the archive was accepted", e.name.c_str());
        if (!names.insert(e.name).second)
            ember_fuzz::finding("a duplicate entry name was accepted", e.name.c_str());
        if (reader->find(e.name) != &e)
            ember_fuzz::finding("find() does not return the entry", e.name.c_str());
        spans.emplace_back(e.header_offset, e.data_offset + e.size);
    }
    std::sort(spans.begin(), spans.end());
    for (std::size_t i = 1; i < spans.size(); ++i)
        if (spans[i - 1].second > spans[i].first)
            ember_fuzz::finding("overlapping entries were accepted", "");

    pt::zip_writer writer;
    std::vector<std::pair<std::string, std::span<const std::byte>>> good;
    for (const auto& e : reader->entries())
    {
        std::span<const std::byte> d;
        if (ember_fuzz::loads([&] { d = reader->data(e); }))
        {
            writer.add(e.name, d);
            good.emplace_back(e.name, d);
        }
    }
    const auto again = writer.finish();
    std::optional<pt::zip_reader> back;
    try
    {
        back.emplace(again, "rewritten");
    }
    catch (const std::exception& e)
    {
        ember_fuzz::finding("a rewritten archive does not read", e.what());
    }
    if (back->entries().size() != good.size())
        ember_fuzz::finding("a rewritten archive lost entries", "");
    for (std::size_t i = 0; i < good.size(); ++i)
    {
        const auto& e = back->entries()[i];
        const auto d = back->data(e);
        if (e.name != good[i].first ||
            !std::equal(d.begin(), d.end(), good[i].second.begin(), good[i].second.end()))
            ember_fuzz::finding("a rewritten record differs", e.name.c_str());
    }
    return 0;
}

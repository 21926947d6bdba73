// libFuzzer target: the allowlisted, non-executing unpickler on its own (data.pkl bytes), a
// bounded walk over the tree it built, and the same pickle in an archive with a zero-filled
// record for every storage it names, loaded as a value (so fuzzed sizes, strides and offsets
// reach tensor materialisation).
#include "fuzz_common.hpp"

#include <ember/serialize/pytorch.hpp>

namespace
{

namespace pt = ember::pytorch;

// Touches every node reachable from `n` the way a converter would: depth-capped, and with a
// budget so shared references cannot make the walk exponential.
void walk(const pt::pickle_node& n, std::size_t depth, std::size_t& budget)
{
    if (depth > pt::pickle_limits::max_depth || budget == 0)
        return;
    --budget;
    switch (n.kind)
    {
    case pt::pickle_kind::tuple:
    case pt::pickle_kind::list:
    case pt::pickle_kind::set:
        for (const auto* item : n.items())
            walk(*item, depth + 1, budget);
        break;
    case pt::pickle_kind::dict:
        for (const auto& [k, v] : n.entries())
        {
            walk(*k, depth + 1, budget);
            walk(*v, depth + 1, budget);
        }
        break;
    case pt::pickle_kind::tensor:
    {
        const auto& t = n.tensor();
        const auto& s = t.storage->storage();
        // The unpickler promised these bounds.
        const auto extent = pt::storage_extent(t.offset, t.size, t.stride);
        if (!extent || *extent > s.numel)
            ember_fuzz::finding("a tensor outside its storage was accepted", s.key.c_str());
        break;
    }
    default:
        (void)kind_name(n);
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const auto bytes = ember_fuzz::as_bytes(data, size);
    pt::pickle_document doc;
    if (!ember_fuzz::loads([&] { doc = pt::unpickle(bytes, "fuzz input"); }))
        return 0;
    std::size_t budget = 16 * size + 4096;
    walk(doc.root(), 0, budget);

    pt::zip_writer zip;
    zip.add("archive/data.pkl", bytes);
    for (const auto* s : doc.storages())
    {
        const auto& st = s->storage();
        const std::uint64_t n = st.numel * ember::dtype_size(st.dtype);
        if (st.numel > (1u << 20) || n > (1u << 20))
            continue; // left out: the load must then refuse the missing record
        // Bytes 0x01 are a valid value of every dtype, bool included.
        const std::vector<std::byte> record(static_cast<std::size_t>(n), std::byte{1});
        zip.add("archive/data/" + st.key, record);
    }
    const auto file = zip.finish();
    ember_fuzz::loads([&] { (void)pt::from_bytes<ember::value>(file, "fuzz archive"); });
    return 0;
}

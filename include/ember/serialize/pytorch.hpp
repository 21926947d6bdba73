#pragma once
/// @file
/// PyTorch's own files, both ways: what `torch.save` writes (PyTorch 1.6 through 2.x) and what
/// `torch.load(path, weights_only=True)` reads.
///
/// ```cpp
/// namespace pt = ember::pytorch;
/// pt::save(model.state_dict(), "model.pth"); // Python: model.load_state_dict(torch.load(...))
/// auto sd = pt::load<ember::state_dict>("model.pth");
/// auto ck = pt::load<ember::checkpoint>("checkpoint.tar");
/// ember::value anything = pt::load<ember::value>("file.pt");
/// ```
///
/// Loading maps the file, validates the zip container (zip.hpp), runs data.pkl through a
/// non-executing allowlisted unpickler (pickle.hpp), checks every storage record's size and
/// CRC-32, and copies tensors out as contiguous host_tensors (views, offsets, strides and
/// shared storages included). It never allocates more tensor data than
/// load_options::max_tensor_bytes, so a small hostile file cannot ask for gigabytes.
///
/// How Python objects map to C++:
/// - `state_dict`: a dict or OrderedDict of str → tensor (its `_metadata` is ignored).
/// - `optim::optimizer_state`: `{"state": {int: {str: value}}, "param_groups": [...]}`.
/// - `checkpoint`: the lesson's dict (`epoch`, `model_state_dict`, `optimizer_state_dict`,
///   `train_loss`, `val_loss`, `hyperparameters`, `timestamp`) plus `ember_version` and an
///   `ember` dict with the exact-resume state: `global_step`, `generators` (name → the uint8
///   tensor `torch.get_rng_state()` returns, so Python can `torch.set_rng_state()` it),
///   `scheduler_state`, `data_state`. Every other top-level key is read into `extras` and
///   written back as a top-level key. Missing keys keep the struct's defaults, except
///   `model_state_dict`, which is required; a file without `ember_version` loads with it empty.
/// - `value`: the whole pickle. Tuples and sets become lists, OrderedDicts dicts, dtypes
///   (`torch.float32`) strings; dict keys that are ints become their decimal strings (a dict
///   with both 1 and "1" is an error). Ints beyond int64, bytes and other keys are errors
///   naming where they are.
///
/// Saving writes what `torch.save` writes — protocol-2 `data.pkl`, `byteorder`, `data/<n>`
/// (64-byte aligned), `version` — under a folder named after the file (as PyTorch does),
/// crash-safely through detail::atomic_write_with. The output is deterministic (no
/// timestamps). Saving streams: each tensor is written from where it lies and checksummed on
/// the way, so it needs no second copy of the model (to_bytes builds the file in memory).
/// Files are little-endian; loading a `byteorder: big` file swaps bytes. Beyond PyTorch's
/// weights_only allowlist ember also reads `torch.torch_version.TorchVersion` (a str; the
/// lesson's checkpoint stores `torch.__version__`, which PyTorch 2.x's weights_only refuses) and
/// `collections.Counter` (a dict: MultiStepLR's `milestones`, which ember writes back as one).

#include "ember/core/dtype.hpp"
#include "ember/core/error.hpp"
#include "ember/core/generator.hpp"
#include "ember/core/host_tensor.hpp"
#include "ember/core/state_dict.hpp"
#include "ember/core/value.hpp"
#include "ember/detail/precompiled.hpp"
#include "ember/optim/optimizer_state.hpp"
#include "ember/serialize/checkpoint.hpp"

#include <bit>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace ember::pytorch
{

static_assert(std::endian::native == std::endian::little,
              "ember::pytorch: host tensors are little-endian like PyTorch's files");

/// @brief Limits for loading.
struct load_options
{
    /// Most bytes of tensor data one load may create. 0 means 4 × the file's size + 64 MiB:
    /// enough for every tensor of a real file even when views overlap, too little for a small
    /// file whose views would expand a tiny storage into gigabytes.
    std::uint64_t max_tensor_bytes = 0;
};

/// @brief Writes `obj` as a PyTorch file at `path`, crash-safely (the old file stays whole if
/// anything fails). Throws io_error, or value_error for something PyTorch's format cannot hold.
void save(const state_dict& obj, const std::filesystem::path& path);
/// @brief Saves tensors that stay where they are (a module's parameters: state_dict_view).
void save(const state_dict_view& obj, const std::filesystem::path& path);
void save(const optim::optimizer_state& obj, const std::filesystem::path& path);
void save(const checkpoint& obj, const std::filesystem::path& path);
void save(const value& obj, const std::filesystem::path& path);

/// @brief Reads a T — state_dict, optim::optimizer_state, checkpoint or value — from the
/// PyTorch file at `path`. Throws io_error if it cannot be read, format_error (naming the file,
/// the record or key, and the offset) if its bytes are not a valid file holding a T.
template <class T>
T load(const std::filesystem::path& path, const load_options& options = {});

/// @brief The bytes save() would write, with records under `folder/`.
template <class T>
std::vector<std::byte> to_bytes(const T& obj, std::string_view folder = "archive");

/// @brief load() from bytes in memory; `what` names them in errors.
template <class T>
T from_bytes(std::span<const std::byte> bytes, std::string_view what = "<memory>",
             const load_options& options = {});

/// @brief `torch.get_rng_state()`'s 5056 bytes for a generator state (PyTorch's CPU
/// generator layout), and back. Throws value_error if the state cannot be expressed there.
host_tensor to_torch_rng_state(const generator_state& state);
generator_state from_torch_rng_state(const host_tensor& bytes, std::string_view what = "rng state");

/// @brief The archive folder PyTorch would use for `path`: its stem, or "archive".
std::string folder_for(const std::filesystem::path& path);

} // namespace ember::pytorch

/*******************
 * implementation  *
 *******************/

// With EMBER_PRECOMPILED these are compiled once, in src/ember_precompiled.cpp
// (detail/precompiled.hpp).
#if EMBER_DEFINITIONS

#include "ember/detail/file_io.hpp"
#include "ember/detail/mapped_file.hpp"
#include "ember/detail/memory_stream.hpp"
#include "ember/serialize/pytorch/pickle.hpp"
#include "ember/serialize/pytorch/zip.hpp"

#include <cmath>
#include <cstring>
#include <deque>
#include <unordered_map>

namespace ember::pytorch
{

namespace detail
{

inline constexpr std::size_t torch_rng_state_size = 5056;

inline std::string key_repr(std::string_view key)
{
    return "['" + std::string(key) + "']";
}

template <class T>
inline constexpr bool loadable_v =
    std::is_same_v<T, state_dict> || std::is_same_v<T, optim::optimizer_state> ||
    std::is_same_v<T, checkpoint> || std::is_same_v<T, value>;

/// Reads one archive: zip, pickle, storages; converts nodes to ember types.
class archive_reader
{
public:
    archive_reader(std::span<const std::byte> bytes, std::string what, const load_options& options);

    const pickle_node& root() const { return m_doc.root(); }

    value to_value(const pickle_node& n, const std::string& path, std::size_t depth = 0);
    state_dict to_state_dict(const pickle_node& n, const std::string& path);
    /// The same as views: of the archive's own bytes for contiguous tensors, of copies added
    /// to `copies` for the others.
    state_dict_view to_state_dict_view(const pickle_node& n, const std::string& path,
                                       state_dict& copies);
    optim::optimizer_state to_optimizer_state(const pickle_node& n, const std::string& path);
    checkpoint to_checkpoint(const pickle_node& n);
    host_tensor to_tensor(const pickle_node& n, const std::string& path);

private:
    template <class Dict, class Make>
    Dict tensor_dict(const pickle_node& n, const std::string& path, Make&& make);
    [[noreturn]] void fail(const std::string& path, const std::string& message) const
    {
        throw format_error(m_what + ": " + (path.empty() ? "" : path + ": ") + message);
    }
    void count_node(const std::string& path);
    optim::state_value to_state_value(const pickle_node& n, const std::string& path);
    std::string dict_key(const pickle_node& key, const std::string& path);
    std::int64_t to_int(const pickle_node& n, const std::string& path);
    double to_double(const pickle_node& n, const std::string& path);
    std::string to_string(const pickle_node& n, const std::string& path);
    const pickle_node* find(const pickle_node& dict, std::string_view key);

    std::string m_what;
    zip_reader m_zip;
    pickle_document m_doc;
    bool m_swap = false;
    std::uint64_t m_bytes_left = 0;
    std::uint64_t m_nodes_left = 0;
    std::unordered_map<const pickle_node*, std::span<const std::byte>> m_storage_data;
};

inline bool looks_like_legacy(std::span<const std::byte> bytes)
{
    // Pre-1.6 files start with a pickled magic number (a LONG1 of 0x1950a86a20f9469cfc6c).
    static constexpr unsigned char magic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c,
                                              0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
    return bytes.size() >= sizeof magic && std::memcmp(bytes.data(), magic, sizeof magic) == 0;
}

inline zip_reader open_zip(std::span<const std::byte> bytes, const std::string& what)
{
    if (looks_like_legacy(bytes))
        throw format_error(what + ": a legacy PyTorch file (torch.save before 1.6, or with "
                                  "_use_new_zipfile_serialization=False), which ember does not "
                                  "read; re-save it with PyTorch 1.6 or newer");
    if (bytes.size() >= 262 && std::memcmp(bytes.data() + 257, "ustar", 5) == 0)
        throw format_error(what + ": a tar archive (PyTorch's pre-1.6 tar format), which "
                                  "ember does not read; re-save it with PyTorch 1.6 or newer");
    return zip_reader(bytes, what);
}

inline archive_reader::archive_reader(std::span<const std::byte> bytes, std::string what,
                                      const load_options& options)
    : m_what(std::move(what)), m_zip(open_zip(bytes, m_what))
{
    if (m_zip.folder().empty())
        fail("", "the first zip entry is not in a folder; not a torch.save file");
    const zip_entry* pkl = m_zip.find_record("data.pkl");
    if (pkl == nullptr)
    {
        if (m_zip.find_record("constants.pkl") != nullptr)
            fail("", "a TorchScript archive (torch.jit.save), not a torch.save file");
        fail("", "no record '" + m_zip.folder() + "/data.pkl'; not a torch.save file");
    }
    if (const zip_entry* order = m_zip.find_record("byteorder"))
    {
        auto d = m_zip.data(*order);
        std::string_view s(reinterpret_cast<const char*>(d.data()), d.size());
        if (s == "big")
            m_swap = true;
        else if (s != "little")
            fail("", "record 'byteorder' says '" + std::string(s.substr(0, 16)) +
                         "', expected 'little' or 'big'");
    }
    m_doc = unpickle(m_zip.data(*pkl), m_what + " (" + pkl->name + ")");

    // Every storage the pickle names must have its record, exactly as large as declared.
    for (const pickle_node* s : m_doc.storages())
    {
        const auto& st = s->storage();
        const zip_entry* rec = m_zip.find_record("data/" + st.key);
        if (rec == nullptr)
            fail("", "storage '" + st.key + "' has no record '" + m_zip.folder() + "/data/" +
                         st.key + "'");
        const std::uint64_t es = dtype_size(st.dtype);
        if (st.numel > UINT64_MAX / es || rec->size != st.numel * es)
            fail("", "record '" + rec->name + "' holds " + std::to_string(rec->size) +
                         " bytes, but its storage declares " + std::to_string(st.numel) + " " +
                         std::string(dtype_name(st.dtype)) + " elements");
        m_storage_data.emplace(s, m_zip.data(*rec));
    }

    m_bytes_left = options.max_tensor_bytes != 0 ? options.max_tensor_bytes
                                                 : 4 * std::uint64_t{bytes.size()} + (64u << 20);
    // Shared references can make a DAG whose tree is exponentially larger than the pickle.
    m_nodes_left = 16 * std::uint64_t{pkl->size} + 4096;
}

inline void archive_reader::count_node(const std::string& path)
{
    if (m_nodes_left == 0)
        fail(path, "the pickle's shared references expand to more objects than it could "
                   "hold (a reference bomb?)");
    --m_nodes_left;
}

inline const pickle_node* archive_reader::find(const pickle_node& dict, std::string_view key)
{
    for (const auto& [k, v] : dict.entries())
        if (k->kind == pickle_kind::string && k->as_string() == key)
            return v;
    return nullptr;
}

inline std::int64_t archive_reader::to_int(const pickle_node& n, const std::string& path)
{
    if (n.kind == pickle_kind::integer)
        return n.as_int();
    if (n.kind == pickle_kind::big_integer)
        fail(path,
             "int of " + std::to_string(n.as_string().size()) + " bytes does not fit in int64");
    fail(path, std::string("is ") + ember::detail::a_or_an(kind_name(n)) + ", expected an int");
}

inline double archive_reader::to_double(const pickle_node& n, const std::string& path)
{
    if (n.kind == pickle_kind::floating)
        return n.as_double();
    if (n.kind == pickle_kind::integer)
        return static_cast<double>(n.as_int());
    fail(path, std::string("is ") + ember::detail::a_or_an(kind_name(n)) + ", expected a float");
}

inline std::string archive_reader::to_string(const pickle_node& n, const std::string& path)
{
    if (n.kind == pickle_kind::string)
        return n.as_string();
    fail(path, std::string("is ") + ember::detail::a_or_an(kind_name(n)) + ", expected a str");
}

inline std::string archive_reader::dict_key(const pickle_node& key, const std::string& path)
{
    if (key.kind == pickle_kind::string)
        return key.as_string();
    if (key.kind == pickle_kind::integer)
        return std::to_string(key.as_int());
    // Python's 30.0 and 30 are one key (equal, with one hash), so a float key holding an int
    // reads as the int does: MultiStepLR(milestones=[30.0, 60.0]) keeps them in its Counter.
    if (key.kind == pickle_kind::floating)
    {
        const double d = key.as_double();
        if (std::trunc(d) == d && d >= -0x1p63 && d < 0x1p63)
            return std::to_string(static_cast<std::int64_t>(d));
    }
    fail(path, std::string("has a key of type ") + kind_name(key) +
                   " (ember's dicts have str keys; int keys, and float keys holding an int, "
                   "become decimal strings)");
}

/// Whether a tensor's elements lie in its storage in row-major order without gaps.
inline bool is_contiguous(const pickle_tensor& t)
{
    std::int64_t expected = 1;
    for (std::size_t i = t.size.size(); i-- > 0;)
    {
        if (t.size[i] != 1 && t.stride[i] != expected)
            return false;
        expected *= t.size[i];
    }
    return true;
}

inline host_tensor archive_reader::to_tensor(const pickle_node& n, const std::string& path)
{
    if (n.kind != pickle_kind::tensor)
        fail(path,
             std::string("is ") + ember::detail::a_or_an(kind_name(n)) + ", expected a tensor");
    const pickle_tensor& t = n.tensor();
    const pickle_storage& st = t.storage->storage();
    const std::size_t es = dtype_size(st.dtype);
    const std::size_t numel = host_tensor::checked_numel(t.size, es);
    const std::uint64_t nbytes = std::uint64_t{numel} * es;
    if (nbytes > m_bytes_left)
        fail(path, "tensor of shape " + shape_string(t.size) + " would take " +
                       std::to_string(nbytes) + " bytes, past this load's limit (" +
                       std::to_string(m_bytes_left) +
                       " bytes left; see pytorch::load_options::max_tensor_bytes)");
    m_bytes_left -= nbytes;

    host_tensor out = host_tensor::empty(st.dtype, t.size); // both copies below write it all
    if (numel == 0)
        return out;
    // Bounds were checked when the tensor was unpickled (storage_extent ≤ numel) and the
    // record's size against numel when the archive was opened.
    const std::byte* src = m_storage_data.at(t.storage).data() + t.offset * es;
    std::byte* dst = out.bytes().data();
    const std::size_t rank = t.size.size();

    if (is_contiguous(t))
        ember::detail::stream_copy(dst, src, numel * es);
    else
    {
        // Walk the outer dimensions with a counter; copy the innermost one as a run when it
        // is dense, element by element otherwise.
        const std::size_t inner = static_cast<std::size_t>(t.size[rank - 1]);
        const std::size_t inner_stride = static_cast<std::size_t>(t.stride[rank - 1]);
        std::vector<std::int64_t> index(rank, 0);
        std::size_t base = 0; // element offset of the current row
        for (std::size_t done = 0; done < numel; done += inner)
        {
            const std::byte* row = src + base * es;
            if (inner_stride == 1)
                std::memcpy(dst, row, inner * es);
            else
                for (std::size_t j = 0; j < inner; ++j)
                    std::memcpy(dst + j * es, row + j * inner_stride * es, es);
            dst += inner * es;
            for (std::size_t d = rank - 1; d-- > 0;)
            {
                base += static_cast<std::size_t>(t.stride[d]);
                if (++index[d] < t.size[d])
                    break;
                base -= static_cast<std::size_t>(t.stride[d] * t.size[d]);
                index[d] = 0;
            }
        }
    }
    if (m_swap && es > 1)
    {
        std::byte* p = out.bytes().data();
        for (std::size_t i = 0; i < numel; ++i, p += es)
            std::reverse(p, p + es);
    }
    return out;
}

inline value archive_reader::to_value(const pickle_node& n, const std::string& path,
                                      std::size_t depth)
{
    count_node(path);
    if (depth > pickle_limits::max_depth)
        fail(path, "nested deeper than " + std::to_string(pickle_limits::max_depth));
    switch (n.kind)
    {
    case pickle_kind::none:
        return value();
    case pickle_kind::boolean:
        return value(n.as_bool());
    case pickle_kind::integer:
        return value(n.as_int());
    case pickle_kind::floating:
        return value(n.as_double());
    case pickle_kind::string:
        return value(n.as_string());
    case pickle_kind::tensor:
        return value(to_tensor(n, path));
    case pickle_kind::tuple:
    case pickle_kind::list:
    case pickle_kind::set:
    {
        value::list out;
        out.reserve(n.items().size());
        for (std::size_t i = 0; i < n.items().size(); ++i)
            out.push_back(to_value(*n.items()[i], path + "[" + std::to_string(i) + "]", depth + 1));
        return value(std::move(out));
    }
    case pickle_kind::dict:
    {
        value::dict out;
        for (const auto& [k, v] : n.entries())
        {
            std::string key = dict_key(*k, path);
            if (out.contains(key))
                fail(path, "has the key '" + key + "' twice (after int keys became strings)");
            value child = to_value(*v, path + key_repr(key), depth + 1);
            out.insert(std::move(key), std::move(child));
        }
        return value(std::move(out));
    }
    case pickle_kind::global:
        if (n.global().id == pickle_global::torch_dtype)
            return value(n.global().name);
        fail(path, "is the global " + n.global().name + ", which has no ember value");
    case pickle_kind::big_integer:
        to_int(n, path);
        break;
    case pickle_kind::bytes:
    case pickle_kind::storage:
        break;
    }
    fail(path,
         std::string("is ") + ember::detail::a_or_an(kind_name(n)) + ", which has no ember value");
}

template <class Dict, class Make>
Dict archive_reader::tensor_dict(const pickle_node& n, const std::string& path, Make&& make)
{
    if (n.kind != pickle_kind::dict)
        fail(path, std::string("is ") + ember::detail::a_or_an(kind_name(n)) +
                       ", not a state_dict (a dict of str to tensor)");
    Dict out;
    for (const auto& [k, v] : n.entries())
    {
        if (k->kind != pickle_kind::string)
            fail(path, std::string("has a key of type ") + kind_name(*k) +
                           "; a state_dict's keys are str");
        const std::string& key = k->as_string();
        if (v->kind != pickle_kind::tensor)
        {
            std::string hint;
            if (path.empty() && find(n, "model_state_dict") != nullptr)
                hint = " (it looks like a checkpoint: load it as ember::checkpoint)";
            else if (path.empty() && find(n, "param_groups") != nullptr)
                hint = " (it looks like an optimizer state: load it as optim::optimizer_state)";
            fail(path, "is not a state_dict: key '" + key + "' holds " +
                           ember::detail::a_or_an(kind_name(*v)) + ", not a tensor" + hint);
        }
        if (out.contains(key))
            fail(path, "has the key '" + key + "' twice");
        out.insert(key, make(*v, path + key_repr(key)));
    }
    return out;
}

inline state_dict archive_reader::to_state_dict(const pickle_node& n, const std::string& path)
{
    return tensor_dict<state_dict>(
        n, path, [this](const pickle_node& v, const std::string& p) { return to_tensor(v, p); });
}

inline state_dict_view archive_reader::to_state_dict_view(const pickle_node& n,
                                                          const std::string& path,
                                                          state_dict& copies)
{
    auto view = [&](const pickle_node& v, const std::string& p) -> host_tensor_view
    {
        if (!m_swap && v.kind == pickle_kind::tensor && is_contiguous(v.tensor()))
        {
            // In place: the record's bytes, whose bounds and CRC-32 the archive checked when it
            // opened; no copy, so nothing counts against max_tensor_bytes. (A big-endian file's
            // tensors are swapped into copies.)
            const pickle_tensor& t = v.tensor();
            const pickle_storage& st = t.storage->storage();
            const std::size_t es = dtype_size(st.dtype);
            const std::size_t numel = host_tensor::checked_numel(t.size, es);
            const std::byte* data =
                numel == 0 ? nullptr : m_storage_data.at(t.storage).data() + t.offset * es;
            return host_tensor_view(st.dtype, t.size, {data, numel * es});
        }
        return copies.insert(p, to_tensor(v, p));
    };
    return tensor_dict<state_dict_view>(n, path, view);
}

inline optim::state_value archive_reader::to_state_value(const pickle_node& n,
                                                         const std::string& path)
{
    switch (n.kind)
    {
    case pickle_kind::none:
        return std::monostate{};
    case pickle_kind::boolean:
        return n.as_bool();
    case pickle_kind::integer:
        return n.as_int();
    case pickle_kind::floating:
        return n.as_double();
    case pickle_kind::tensor:
        return to_tensor(n, path);
    case pickle_kind::string:
        return n.as_string();
    case pickle_kind::tuple:
    case pickle_kind::list:
    {
        std::vector<double> out;
        for (std::size_t i = 0; i < n.items().size(); ++i)
            out.push_back(to_double(*n.items()[i], path + "[" + std::to_string(i) + "]"));
        return out;
    }
    default:
        fail(path, std::string("is ") + ember::detail::a_or_an(kind_name(n)) +
                       "; optimizer state holds None, bool, int, float, str, tuples of floats "
                       "and tensors");
    }
}

inline optim::optimizer_state archive_reader::to_optimizer_state(const pickle_node& n,
                                                                 const std::string& path)
{
    if (n.kind != pickle_kind::dict)
        fail(path, std::string("is ") + ember::detail::a_or_an(kind_name(n)) +
                       ", not an optimizer state_dict");
    optim::optimizer_state out;
    const pickle_node* state = nullptr;
    const pickle_node* groups = nullptr;
    for (const auto& [k, v] : n.entries())
    {
        const std::string key = k->kind == pickle_kind::string ? k->as_string() : "";
        if (key == "state" && state == nullptr)
            state = v;
        else if (key == "param_groups" && groups == nullptr)
            groups = v;
        else
            fail(path,
                 "is not an optimizer state_dict: unexpected key " +
                     (k->kind == pickle_kind::string ? "'" + key + "'"
                                                     : std::string("of type ") + kind_name(*k)) +
                     " (expected 'state' and 'param_groups')");
    }
    if (state == nullptr || groups == nullptr)
        fail(path, "is not an optimizer state_dict: it lacks '" +
                       std::string(state == nullptr ? "state" : "param_groups") + "'");

    const std::string spath = path + "['state']";
    if (state->kind != pickle_kind::dict)
        fail(spath,
             std::string("is ") + ember::detail::a_or_an(kind_name(*state)) + ", expected a dict");
    for (const auto& [k, v] : state->entries())
    {
        const std::int64_t index = to_int(*k, spath + " key");
        const std::string ipath = spath + "[" + std::to_string(index) + "]";
        if (out.state.contains(index))
            fail(spath, "has the parameter " + std::to_string(index) + " twice");
        if (v->kind != pickle_kind::dict)
            fail(ipath,
                 std::string("is ") + ember::detail::a_or_an(kind_name(*v)) + ", expected a dict");
        ordered_dict<optim::state_value> entry;
        for (const auto& [name, x] : v->entries())
        {
            const std::string key = to_string(*name, ipath + " key");
            if (entry.contains(key))
                fail(ipath, "has the key '" + key + "' twice");
            entry.insert(key, to_state_value(*x, ipath + key_repr(key)));
        }
        out.state.emplace(index, std::move(entry));
    }

    const std::string gpath = path + "['param_groups']";
    if (groups->kind != pickle_kind::list && groups->kind != pickle_kind::tuple)
        fail(gpath,
             std::string("is ") + ember::detail::a_or_an(kind_name(*groups)) + ", expected a list");
    for (std::size_t g = 0; g < groups->items().size(); ++g)
    {
        const pickle_node& group = *groups->items()[g];
        const std::string ppath = gpath + "[" + std::to_string(g) + "]";
        if (group.kind != pickle_kind::dict)
            fail(ppath, std::string("is ") + ember::detail::a_or_an(kind_name(group)) +
                            ", expected a dict");
        optim::param_group_state pg;
        bool has_params = false;
        for (const auto& [name, x] : group.entries())
        {
            const std::string key = to_string(*name, ppath + " key");
            if (key == "params")
            {
                if (has_params)
                    fail(ppath, "has 'params' twice");
                has_params = true;
                if (x->kind != pickle_kind::list && x->kind != pickle_kind::tuple)
                    fail(ppath + "['params']", std::string("is ") +
                                                   ember::detail::a_or_an(kind_name(*x)) +
                                                   ", expected a list of ints");
                for (std::size_t i = 0; i < x->items().size(); ++i)
                    pg.params.push_back(
                        to_int(*x->items()[i], ppath + "['params'][" + std::to_string(i) + "]"));
                continue;
            }
            if (pg.options.contains(key))
                fail(ppath, "has the key '" + key + "' twice");
            pg.options.insert(key, to_state_value(*x, ppath + key_repr(key)));
        }
        if (!has_params)
            fail(ppath, "has no 'params'");
        out.param_groups.push_back(std::move(pg));
    }
    return out;
}

inline checkpoint archive_reader::to_checkpoint(const pickle_node& n)
{
    if (n.kind != pickle_kind::dict)
        fail("", std::string("holds ") + ember::detail::a_or_an(kind_name(n)) +
                     ", not a checkpoint dict");
    checkpoint out;
    out.ember_version.clear();
    bool has_model = false;
    for (const auto& [k, v] : n.entries())
    {
        if (k->kind != pickle_kind::string)
        {
            const std::string key = dict_key(*k, "");
            if (out.extras.contains(key))
                fail("", "has the key '" + key + "' twice");
            out.extras.insert(key, to_value(*v, key_repr(key)));
            continue;
        }
        const std::string& key = k->as_string();
        const std::string path = key;
        if (key == "epoch")
            out.epoch = to_int(*v, path);
        else if (key == "model_state_dict")
        {
            out.model_state_dict = to_state_dict(*v, path);
            has_model = true;
        }
        else if (key == "optimizer_state_dict")
            out.optimizer_state_dict = to_optimizer_state(*v, path);
        else if (key == "train_loss")
            out.train_loss = to_double(*v, path);
        else if (key == "val_loss")
            out.val_loss = to_double(*v, path);
        else if (key == "hyperparameters")
        {
            value h = to_value(*v, path);
            if (!h.is_dict())
                fail(path, std::string("is a ") + h.type_name() + ", expected a dict");
            out.hyperparameters = std::move(h.as<value::dict>());
        }
        else if (key == "timestamp")
            out.timestamp = to_string(*v, path);
        else if (key == "ember_version")
            out.ember_version = to_string(*v, path);
        else if (key == "ember")
        {
            if (v->kind != pickle_kind::dict)
                fail(path, std::string("is ") + ember::detail::a_or_an(kind_name(*v)) +
                               ", expected a dict");
            for (const auto& [ek, ev] : v->entries())
            {
                const std::string name = to_string(*ek, "ember key");
                const std::string epath = "ember" + key_repr(name);
                if (name == "global_step")
                    out.global_step = to_int(*ev, epath);
                else if (name == "generators")
                {
                    if (ev->kind != pickle_kind::dict)
                        fail(epath, std::string("is ") + ember::detail::a_or_an(kind_name(*ev)) +
                                        ", expected a dict");
                    for (const auto& [gk, gv] : ev->entries())
                    {
                        const std::string gname = to_string(*gk, epath + " key");
                        const std::string gpath = epath + key_repr(gname);
                        if (out.generators.contains(gname))
                            fail(epath, "has the generator '" + gname + "' twice");
                        try
                        {
                            out.generators.insert(
                                gname, from_torch_rng_state(to_tensor(*gv, gpath), gpath));
                        }
                        catch (const value_error& e)
                        {
                            fail("", e.what());
                        }
                    }
                }
                else if (name == "scheduler_state")
                    out.scheduler_state = to_value(*ev, epath);
                else if (name == "data_state")
                    out.data_state = to_value(*ev, epath);
                else
                    fail(epath, "is not a key ember writes (global_step, generators, "
                                "scheduler_state, data_state)");
            }
        }
        else
        {
            if (out.extras.contains(key))
                fail("", "has the key '" + key + "' twice");
            out.extras.insert(key, to_value(*v, key_repr(key)));
        }
    }
    if (!has_model)
        fail("", "is not a checkpoint: it has no 'model_state_dict'");
    return out;
}

/// Builds one archive: the pickle, then the storages it names.
class archive_writer
{
public:
    explicit archive_writer(std::string folder) : m_folder(std::move(folder))
    {
        if (m_folder.empty())
            m_folder = "archive";
    }

    pickler& out() noexcept { return m_pickle; }

    /// A tensor whose bytes stay where they are until finish().
    void tensor(const host_tensor_view& t)
    {
        const std::string key = std::to_string(m_tensors.size());
        m_pickle.tensor(t.dtype(), t.shape(), key, t.numel());
        m_tensors.push_back(t.bytes());
    }
    /// A tensor this writer keeps alive until finish().
    void owned_tensor(host_tensor t) { tensor(m_owned.emplace_back(std::move(t))); }

    void write(const value& v, std::size_t depth = 0);
    template <class Tensor>
    void write(const ordered_dict<Tensor>& sd);
    void write(const optim::state_value& v);
    void write(const optim::optimizer_state& s);
    void write(const checkpoint& c);

    /// The archive's bytes.
    std::vector<std::byte> finish(zip_writer_options options = {});
    /// Writes the archive through `out` (zip_stream_writer's Out); may be called again, as
    /// sizing the file and then writing it do.
    template <class Out>
    void finish_into(Out& out, zip_writer_options options = {});

private:
    /// torch.optim.lr_scheduler.MultiStepLR keeps its milestones as a collections.Counter
    /// {epoch: count}, and its step() asks `last_epoch in milestones` with an int. ember's dicts
    /// have str keys (a file's int keys become decimal strings), so a dict holding
    /// MultiStepLR's state (`milestones` beside `gamma`, `last_epoch` and `base_lrs`) writes
    /// its milestones back as a Counter with int keys: with str keys a PyTorch scheduler
    /// resumed from the file would never decay.
    static bool is_multi_step_milestones(const value::dict& state, std::string_view key,
                                         const value& v);
    /// `s` as an int64 if it is one's canonical decimal form.
    static std::optional<std::int64_t> decimal_int(std::string_view s);
    void write_counter(const value::dict& counts, std::size_t depth);

    template <class Range, class F>
    void dict_items(const Range& items, F&& emit)
    {
        // MARK ... SETITEMS in batches of 1000, as Python's pickler batches them.
        std::size_t in_batch = 0;
        for (const auto& item : items)
        {
            if (in_batch == 0)
                m_pickle.mark();
            emit(item);
            if (++in_batch == 1000)
            {
                m_pickle.setitems();
                in_batch = 0;
            }
        }
        if (in_batch != 0)
            m_pickle.setitems();
    }

    std::string m_folder;
    pickler m_pickle;
    std::vector<std::span<const std::byte>> m_tensors;
    std::vector<std::byte> m_pkl; // the pickle, once finished
    std::deque<host_tensor> m_owned;
    std::deque<value> m_owned_values;
};

inline void archive_writer::write(const value& v, std::size_t depth)
{
    if (depth > pickle_limits::max_depth)
        throw value_error("pytorch::save: value nested deeper than " +
                          std::to_string(pickle_limits::max_depth));
    const auto& data = v.data();
    if (v.is_none())
        m_pickle.none();
    else if (v.is_bool())
        m_pickle.boolean(std::get<bool>(data));
    else if (v.is_int())
        m_pickle.integer(std::get<std::int64_t>(data));
    else if (v.is_double())
        m_pickle.floating(std::get<double>(data));
    else if (v.is_string())
        m_pickle.string(std::get<std::string>(data));
    else if (v.is_tensor())
        tensor(std::get<host_tensor>(data));
    else if (v.is_list())
    {
        const auto& list = std::get<value::list>(data);
        m_pickle.empty_list();
        std::size_t in_batch = 0;
        for (const auto& item : list)
        {
            if (in_batch == 0)
                m_pickle.mark();
            write(item, depth + 1);
            if (++in_batch == 1000)
            {
                m_pickle.appends();
                in_batch = 0;
            }
        }
        if (in_batch != 0)
            m_pickle.appends();
    }
    else
    {
        const auto& dict = std::get<value::dict>(data);
        m_pickle.empty_dict();
        dict_items(dict,
                   [&](const auto& kv)
                   {
                       m_pickle.string(kv.first);
                       if (is_multi_step_milestones(dict, kv.first, kv.second))
                           write_counter(kv.second.template as<value::dict>(), depth + 1);
                       else
                           write(kv.second, depth + 1);
                   });
    }
}

inline bool archive_writer::is_multi_step_milestones(const value::dict& state, std::string_view key,
                                                     const value& v)
{
    if (key != "milestones" || !v.is_dict() || !state.contains("gamma") ||
        !state.contains("last_epoch") || !state.contains("base_lrs"))
        return false;
    for (const auto& [epoch, count] : v.as<value::dict>())
        if (!decimal_int(epoch) || !count.is_int())
            return false;
    return true;
}

inline std::optional<std::int64_t> archive_writer::decimal_int(std::string_view s)
{
    std::int64_t i = 0;
    const char* end = s.data() + s.size();
    const auto [ptr, ec] = std::from_chars(s.data(), end, i);
    if (ec != std::errc{} || ptr != end || std::to_string(i) != s) // canonical: no "007", "-0"
        return std::nullopt;
    return i;
}

inline void archive_writer::write_counter(const value::dict& counts, std::size_t depth)
{
    m_pickle.global("collections", "Counter");
    m_pickle.empty_dict();
    dict_items(counts,
               [&](const auto& kv)
               {
                   m_pickle.integer(*decimal_int(kv.first));
                   write(kv.second, depth + 1);
               });
    m_pickle.tuple(1);
    m_pickle.reduce();
}

template <class Tensor>
void archive_writer::write(const ordered_dict<Tensor>& sd)
{
    m_pickle.ordered_dict();
    dict_items(sd,
               [&](const auto& kv)
               {
                   m_pickle.string(kv.first);
                   tensor(kv.second);
               });
}

inline void archive_writer::write(const optim::state_value& v)
{
    std::visit(
        [&](const auto& x)
        {
            using X = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<X, std::monostate>)
                m_pickle.none();
            else if constexpr (std::is_same_v<X, bool>)
                m_pickle.boolean(x);
            else if constexpr (std::is_same_v<X, std::int64_t>)
                m_pickle.integer(x);
            else if constexpr (std::is_same_v<X, double>)
                m_pickle.floating(x);
            else if constexpr (std::is_same_v<X, std::vector<double>>)
            {
                // Adam's betas: a tuple, as PyTorch keeps it.
                if (x.size() > 3)
                    m_pickle.mark();
                for (double d : x)
                    m_pickle.floating(d);
                m_pickle.tuple(x.size());
            }
            else if constexpr (std::is_same_v<X, std::string>)
                m_pickle.string(x);
            else
                tensor(x);
        },
        v);
}

inline void archive_writer::write(const optim::optimizer_state& s)
{
    m_pickle.empty_dict();
    m_pickle.mark();
    m_pickle.string("state");
    m_pickle.empty_dict();
    dict_items(s.state,
               [&](const auto& kv)
               {
                   m_pickle.integer(kv.first);
                   m_pickle.empty_dict();
                   dict_items(kv.second,
                              [&](const auto& e)
                              {
                                  m_pickle.string(e.first);
                                  write(e.second);
                              });
               });
    m_pickle.string("param_groups");
    m_pickle.empty_list();
    for (const auto& g : s.param_groups)
    {
        m_pickle.empty_dict();
        dict_items(g.options,
                   [&](const auto& e)
                   {
                       m_pickle.string(e.first);
                       write(e.second);
                   });
        m_pickle.string("params");
        m_pickle.empty_list();
        if (!g.params.empty())
        {
            m_pickle.mark();
            for (auto p : g.params)
                m_pickle.integer(p);
            m_pickle.appends();
        }
        m_pickle.setitem();
        m_pickle.append();
    }
    m_pickle.setitems();
}

inline void archive_writer::write(const checkpoint& c)
{
    static constexpr std::string_view reserved[] = {
        "epoch",           "model_state_dict", "optimizer_state_dict", "train_loss", "val_loss",
        "hyperparameters", "timestamp",        "ember_version",        "ember"};
    for (const auto& kv : c.extras)
        for (auto r : reserved)
            if (kv.first == r)
                throw value_error("pytorch::save: checkpoint extras key '" + kv.first +
                                  "' clashes with a checkpoint field of that name");

    m_pickle.empty_dict();
    m_pickle.mark();
    m_pickle.string("epoch");
    m_pickle.integer(c.epoch);
    m_pickle.string("model_state_dict");
    write(c.model_state_dict);
    m_pickle.string("optimizer_state_dict");
    write(c.optimizer_state_dict);
    m_pickle.string("train_loss");
    m_pickle.floating(c.train_loss);
    m_pickle.string("val_loss");
    m_pickle.floating(c.val_loss);
    m_pickle.string("hyperparameters");
    // A value the writer keeps: tensor() holds pointers until finish(), so a temporary
    // would leave the hyperparameters' tensors dangling.
    write(m_owned_values.emplace_back(c.hyperparameters));
    m_pickle.string("timestamp");
    m_pickle.string(c.timestamp);
    m_pickle.string("ember_version");
    m_pickle.string(c.ember_version);
    m_pickle.string("ember");
    {
        m_pickle.empty_dict();
        m_pickle.mark();
        m_pickle.string("global_step");
        m_pickle.integer(c.global_step);
        m_pickle.string("generators");
        m_pickle.empty_dict();
        dict_items(c.generators,
                   [&](const auto& kv)
                   {
                       m_pickle.string(kv.first);
                       owned_tensor(to_torch_rng_state(kv.second));
                   });
        m_pickle.string("scheduler_state");
        write(c.scheduler_state);
        m_pickle.string("data_state");
        write(c.data_state);
        m_pickle.setitems();
    }
    for (const auto& kv : c.extras)
    {
        m_pickle.string(kv.first);
        write(kv.second);
    }
    m_pickle.setitems();
}

inline std::vector<std::byte> archive_writer::finish(zip_writer_options options)
{
    zip_counting_out size;
    finish_into(size, options);
    zip_memory_out out;
    out.bytes.reserve(size.written());
    finish_into(out, options);
    return std::move(out.bytes);
}

template <class Out>
void archive_writer::finish_into(Out& out, zip_writer_options options)
{
    if (m_pkl.empty())
        m_pkl = m_pickle.finish();
    zip_stream_writer<Out> zip(out, options);
    const std::string prefix = m_folder + "/";
    zip.add(prefix + "data.pkl", m_pkl);
    zip.add(prefix + "byteorder", std::string_view("little"));
    for (std::size_t i = 0; i < m_tensors.size(); ++i)
        zip.add(prefix + "data/" + std::to_string(i), m_tensors[i]);
    zip.add(prefix + "version", std::string_view("3\n"));
    zip.finish();
}

/// zip_stream_writer's output into the temporary file of an atomic write.
struct zip_file_out
{
    static constexpr bool counts_only = false;
    ember::detail::atomic_file_writer& file;

    void write(std::span<const std::byte> b) { file.write(b); }
    std::size_t written() const noexcept { return file.written(); }
    std::uint32_t write_checksummed(std::span<const std::byte> b)
    {
        return ember::detail::write_checksummed(file, b);
    }
    void rewrite_at(std::size_t offset, std::span<const std::byte> b)
    {
        file.rewrite_at(offset, b);
    }
};

/// Saves `obj` at `path` crash-safely without building the file in memory: the archive is
/// sized first (nothing read), then written into the temporary file as it is produced.
template <class T>
void save_streamed(const T& obj, const std::filesystem::path& path)
{
    archive_writer w{folder_for(path)};
    w.write(obj);
    zip_counting_out size;
    w.finish_into(size);
    ember::detail::atomic_write_with(path, size.written(),
                                     [&](ember::detail::atomic_file_writer& file)
                                     {
                                         zip_file_out out{file};
                                         w.finish_into(out);
                                     });
}

template <class T>
T convert(archive_reader& reader)
{
    if constexpr (std::is_same_v<T, state_dict>)
        return reader.to_state_dict(reader.root(), "");
    else if constexpr (std::is_same_v<T, optim::optimizer_state>)
        return reader.to_optimizer_state(reader.root(), "");
    else if constexpr (std::is_same_v<T, checkpoint>)
        return reader.to_checkpoint(reader.root());
    else
        return reader.to_value(reader.root(), "");
}

} // namespace detail

EMBER_PRECOMPILED_INLINE std::string folder_for(const std::filesystem::path& path)
{
    std::string stem = path.stem().string();
    for (char& c : stem)
        if (static_cast<unsigned char>(c) < 0x20 || c == '/' || c == '\\' || c == 0x7f)
            c = '_';
    return stem.empty() ? "archive" : stem;
}

EMBER_PRECOMPILED_INLINE host_tensor to_torch_rng_state(const generator_state& s)
{
    // PyTorch's CPUGeneratorImplState: the legacy THGenerator POD (initial seed, left,
    // seeded, next, 624 state words widened to 64 bits, the double normal cache), then the
    // float normal cache; 5056 bytes with padding. PyTorch's engine counts `left` down to a
    // regeneration and `next` up; ember's `index` is PyTorch's `next`, with left = 625 − next.
    if (s.index == 0 || s.index > 624)
        throw value_error("generator state index " + std::to_string(s.index) +
                          " has no PyTorch equivalent (expected 1 to 624)");
    host_tensor t(dtype::uint8, {static_cast<std::int64_t>(detail::torch_rng_state_size)});
    std::byte* p = t.bytes().data();
    auto put = [&](std::size_t off, auto v) { std::memcpy(p + off, &v, sizeof v); };
    put(0, s.seed);
    put(8, static_cast<std::int32_t>(625 - s.index));
    put(12, std::int32_t{1});
    // At 624 the next draw regenerates whatever `next` is; write 0, as torch.manual_seed does.
    put(16, static_cast<std::uint64_t>(s.index == 624 ? 0 : s.index));
    for (std::size_t i = 0; i < 624; ++i)
        put(24 + 8 * i, static_cast<std::uint64_t>(s.mt[i]));
    put(5024, s.has_next_normal ? s.next_normal : 0.0);
    put(5040, std::int32_t{s.has_next_normal ? 1 : 0});
    return t;
}

EMBER_PRECOMPILED_INLINE generator_state from_torch_rng_state(const host_tensor& t,
                                                              std::string_view what)
{
    if (t.dtype() != dtype::uint8 || t.shape().size() != 1 ||
        t.nbytes() != detail::torch_rng_state_size)
        throw value_error(std::string(what) + ": a generator state is a uint8 tensor of shape [" +
                          std::to_string(detail::torch_rng_state_size) + "], got " +
                          std::string(dtype_name(t.dtype())) + " " + shape_string(t.shape()));
    const std::byte* p = t.bytes().data();
    auto get = [&]<class U>(std::size_t off, U)
    {
        U v;
        std::memcpy(&v, p + off, sizeof v);
        return v;
    };
    generator_state s;
    s.seed = get(0, std::uint64_t{});
    const auto left = get(8, std::int32_t{});
    const auto next = get(16, std::uint64_t{});
    for (std::size_t i = 0; i < 624; ++i)
    {
        const auto word = get(24 + 8 * i, std::uint64_t{});
        if (word > 0xffffffffu)
            throw value_error(std::string(what) + ": state word " + std::to_string(i) +
                              " does not fit in 32 bits");
        s.mt[i] = static_cast<std::uint32_t>(word);
    }
    if (left == 1)
        s.index = 624; // the next draw regenerates, wherever `next` points
    else if (left > 1 && left <= 624 && next == static_cast<std::uint64_t>(625 - left))
        s.index = static_cast<std::uint32_t>(next);
    else
        throw value_error(std::string(what) + ": engine position (left " + std::to_string(left) +
                          ", next " + std::to_string(next) + ") is not one mt19937 reaches");
    s.has_next_normal = get(5040, std::int32_t{}) != 0;
    s.next_normal = s.has_next_normal ? get(5024, double{}) : 0.0;
    return s;
}

template <class T>
std::vector<std::byte> to_bytes(const T& obj, std::string_view folder)
{
    detail::archive_writer w{std::string(folder)};
    w.write(obj);
    return w.finish();
}

template <class T>
T from_bytes(std::span<const std::byte> bytes, std::string_view what, const load_options& options)
{
    static_assert(detail::loadable_v<T>, "ember::pytorch::load<T>: T must be state_dict, "
                                         "optim::optimizer_state, checkpoint or value");
    detail::archive_reader reader(bytes, std::string(what), options);
    return detail::convert<T>(reader);
}

template <class T>
T load(const std::filesystem::path& path, const load_options& options)
{
    static_assert(detail::loadable_v<T>, "ember::pytorch::load<T>: T must be state_dict, "
                                         "optim::optimizer_state, checkpoint or value");
    const ember::detail::mapped_file file(path);
    file.read_ahead(); // every record is read
    const std::string name = path.string();
    return file.decode_checked(
        name,
        [&] { return from_bytes<T>(file.bytes(), ember::detail::quoted_name(name), options); });
}

EMBER_PRECOMPILED_INLINE void save(const state_dict& obj, const std::filesystem::path& path)
{
    detail::save_streamed(obj, path);
}

EMBER_PRECOMPILED_INLINE void save(const state_dict_view& obj, const std::filesystem::path& path)
{
    detail::save_streamed(obj, path);
}

EMBER_PRECOMPILED_INLINE void save(const optim::optimizer_state& obj,
                                   const std::filesystem::path& path)
{
    detail::save_streamed(obj, path);
}

EMBER_PRECOMPILED_INLINE void save(const checkpoint& obj, const std::filesystem::path& path)
{
    detail::save_streamed(obj, path);
}

EMBER_PRECOMPILED_INLINE void save(const value& obj, const std::filesystem::path& path)
{
    detail::save_streamed(obj, path);
}

} // namespace ember::pytorch

#endif // EMBER_DEFINITIONS

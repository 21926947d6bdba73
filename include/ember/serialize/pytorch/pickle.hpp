#pragma once
/// @file
/// Python pickles as PyTorch writes them (protocol 2), read by a machine that executes nothing.
///
/// The reader runs the pickle's opcodes over a tree of pickle_nodes. Like PyTorch's own
/// `weights_only` unpickler it resolves globals against a fixed allowlist — OrderedDict, the
/// tensor and parameter rebuild functions, the storage types, torch.Size, set, dtypes,
/// TorchVersion — and refuses any other global, any call of something that is not a rebuild
/// function, and any opcode outside the list below, with a format_error naming the global or opcode
/// and its offset. Nothing is imported or called: a "call" of an allowed function just builds a
/// node.
///
/// Memory is bounded by the input: each opcode makes at most one node, strings are bounded by
/// the bytes that hold them, the memo is a map (a huge memo index costs nothing), MARK nesting
/// is capped, and shared or cyclic references are plain pointers into the document's arena.
///
/// Opcodes read: PROTO FRAME STOP MARK POP POP_MARK DUP NONE NEWTRUE NEWFALSE BININT BININT1
/// BININT2 LONG1 LONG4 BINFLOAT BINUNICODE SHORT_BINUNICODE BINUNICODE8 BINSTRING
/// SHORT_BINSTRING BINBYTES SHORT_BINBYTES BINBYTES8 EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3
/// EMPTY_LIST LIST APPEND APPENDS EMPTY_DICT DICT SETITEM SETITEMS EMPTY_SET ADDITEMS FROZENSET
/// BINPUT LONG_BINPUT MEMOIZE BINGET LONG_BINGET GLOBAL STACK_GLOBAL REDUCE BUILD BINPERSID, and
/// NEWOBJ for torch.nn.Parameter and TorchVersion (the lesson's checkpoint stores
/// `torch.__version__`, a str subclass; PyTorch 2.x's weights_only loader refuses it, ember
/// reads it as the str it is).
///
/// The writer (pickler) emits protocol 2 with the opcodes `torch.save` uses.

#include "ember/core/dtype.hpp"
#include "ember/core/error.hpp"
#include "ember/core/host_tensor.hpp"
#include "ember/detail/utf8.hpp"

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

namespace ember::pytorch
{

/// @brief What a pickle_node holds.
enum class pickle_kind : std::uint8_t
{
    none,
    boolean,
    integer,     ///< fits in int64
    big_integer, ///< a Python int beyond int64 (little-endian two's complement bytes)
    floating,
    string,
    bytes,
    tuple,
    list,
    dict, ///< dict or OrderedDict (see pickle_node::ordered)
    set,
    global,  ///< an allowed global (a type or rebuild function, or a dtype)
    storage, ///< a tensor storage in the archive (from a persistent id)
    tensor,  ///< a view of a storage: offset, sizes, strides
};

/// @brief The globals ember's unpickler accepts.
enum class pickle_global : std::uint8_t
{
    ordered_dict,                 ///< collections.OrderedDict
    counter,                      ///< collections.Counter (MultiStepLR's milestones)
    rebuild_tensor,               ///< torch._utils._rebuild_tensor
    rebuild_tensor_v2,            ///< torch._utils._rebuild_tensor_v2
    rebuild_parameter,            ///< torch._utils._rebuild_parameter
    rebuild_parameter_with_state, ///< torch._utils._rebuild_parameter_with_state
    rebuild_from_type_v2,         ///< torch._tensor._rebuild_from_type_v2
    storage_type,                 ///< torch.FloatStorage, torch.LongStorage, ...
    tensor_type,                  ///< torch.Tensor
    parameter_type,               ///< torch.nn.parameter.Parameter
    torch_size,                   ///< torch.Size
    set_type,                     ///< builtins.set
    frozenset_type,               ///< builtins.frozenset
    torch_dtype,                  ///< torch.float32, torch.int64, ...
    torch_version,                ///< torch.torch_version.TorchVersion (a str)
};

struct pickle_node;

struct pickle_global_ref
{
    pickle_global id;
    ember::dtype dtype = ember::dtype::float32; ///< for storage types and dtypes
    std::string name;                           ///< "module.name"
};

struct pickle_storage
{
    std::string key;      ///< the record `data/<key>`
    ember::dtype dtype;   ///< from the storage type
    std::uint64_t numel;  ///< elements the record holds
    std::string location; ///< "cpu", "cuda:0", ...
};

struct pickle_tensor
{
    const pickle_node* storage = nullptr; ///< a storage node
    std::uint64_t offset = 0;             ///< in elements
    std::vector<std::int64_t> size;
    std::vector<std::int64_t> stride;
    bool requires_grad = false;
};

/// @brief One Python object of an unpickled document. Containers point at other nodes of the
/// same document (shared and cyclic references are possible: walk with a depth limit).
struct pickle_node
{
    using items_type = std::vector<const pickle_node*>;
    using entries_type = std::vector<std::pair<const pickle_node*, const pickle_node*>>;

    pickle_kind kind = pickle_kind::none;
    bool ordered = false;     ///< dict: an OrderedDict
    std::uint64_t offset = 0; ///< where in the pickle the object was made
    std::variant<std::monostate, bool, std::int64_t, double, std::string, items_type, entries_type,
                 pickle_global_ref, pickle_storage, pickle_tensor>
        payload;

    bool as_bool() const { return std::get<bool>(payload); }
    std::int64_t as_int() const { return std::get<std::int64_t>(payload); }
    double as_double() const { return std::get<double>(payload); }
    /// string, bytes, and big_integer's bytes
    const std::string& as_string() const { return std::get<std::string>(payload); }
    /// tuple, list, set
    const items_type& items() const { return std::get<items_type>(payload); }
    const entries_type& entries() const { return std::get<entries_type>(payload); }
    const pickle_global_ref& global() const { return std::get<pickle_global_ref>(payload); }
    const pickle_storage& storage() const { return std::get<pickle_storage>(payload); }
    const pickle_tensor& tensor() const { return std::get<pickle_tensor>(payload); }
};

/// @brief "None", "int", "tuple", "OrderedDict", "tensor", ... (Python's names).
const char* kind_name(const pickle_node& node) noexcept;

/// @brief An unpickled object tree; owns every node.
class pickle_document
{
public:
    pickle_document() = default;
    pickle_document(pickle_document&&) = default;
    pickle_document& operator=(pickle_document&&) = default;

    const pickle_node& root() const noexcept { return *m_root; }
    std::size_t node_count() const noexcept { return m_nodes.size(); }
    /// @brief The storages the pickle refers to, in order of first reference.
    const std::vector<const pickle_node*>& storages() const noexcept { return m_storages; }

private:
    friend class unpickler;
    std::deque<pickle_node> m_nodes;
    const pickle_node* m_root = nullptr;
    std::vector<const pickle_node*> m_storages;
};

/// @brief Limits the unpickler enforces.
struct pickle_limits
{
    /// Deepest MARK nesting accepted, and deepest container nesting that converters walk.
    static constexpr std::size_t max_depth = 1000;
};

/// @brief Runs the pickle in `bytes` (non-executing, allowlisted); throws format_error naming
/// `what`, the offending opcode or global, and its offset.
pickle_document unpickle(std::span<const std::byte> bytes, std::string_view what = "pickle");

/// @brief PyTorch's storage type name for a dtype ("FloatStorage", "LongStorage", ...).
constexpr std::string_view storage_type_name(ember::dtype d) noexcept;

/// @brief Elements of storage a view needs (offset + Σ (size−1)·stride + 1, or 0 when empty),
/// or nullopt if that overflows or a size or stride is negative.
std::optional<std::uint64_t> storage_extent(std::uint64_t offset,
                                            const std::vector<std::int64_t>& size,
                                            const std::vector<std::int64_t>& stride);

/// @brief Writes protocol-2 pickles opcode by opcode, the way `torch.save` lays them out.
class pickler
{
public:
    pickler();

    void none() { op(0x4e); }
    void boolean(bool b) { op(b ? 0x88 : 0x89); }
    void integer(std::int64_t v);
    void floating(double v);
    void string(std::string_view s);
    /// @brief Pushes `s`, memoised: a repeat costs two bytes.
    void memo_string(std::string_view s);

    void mark() { op(0x28); }
    void empty_tuple() { op(0x29); }
    /// @brief The last `n` pushed objects (n ≤ 3) or everything since the MARK (n > 3) as a
    /// tuple, choosing the opcode Python's pickler would.
    void tuple(std::size_t n);
    /// @brief Everything since the last MARK as a tuple (TUPLE).
    void tuple_from_mark() { op(0x74); }
    void empty_list() { op(0x5d); }
    void empty_dict() { op(0x7d); }
    void append() { op(0x61); }
    void appends() { op(0x65); }
    void setitem() { op(0x73); }
    void setitems() { op(0x75); }
    /// @brief Pushes `module.name`, memoised after its first use.
    void global(std::string_view module, std::string_view name);
    void reduce() { op(0x52); }
    void build() { op(0x62); }
    void persistent_id() { op(0x51); }

    /// @brief An empty collections.OrderedDict.
    void ordered_dict();
    /// @brief `torch._utils._rebuild_tensor_v2` of a contiguous tensor of `shape` over the
    /// whole storage `key` holding `numel` elements of `type`.
    void tensor(ember::dtype type, const std::vector<std::int64_t>& shape, std::string_view key,
                std::uint64_t numel);

    /// @brief Appends STOP and returns the pickle.
    std::vector<std::byte> finish();

private:
    void op(std::uint8_t code) { m_out.push_back(static_cast<std::byte>(code)); }
    template <class U>
    void le(U v)
    {
        for (std::size_t i = 0; i < sizeof(U); ++i)
            m_out.push_back(
                static_cast<std::byte>((static_cast<std::uint64_t>(v) >> (8 * i)) & 0xffu));
    }
    void raw(std::string_view s)
    {
        for (char c : s)
            m_out.push_back(static_cast<std::byte>(c));
    }
    void put_memo(); ///< BINPUT the top of stack under the next index
    void get_memo(std::uint32_t index);

    std::vector<std::byte> m_out;
    std::unordered_map<std::string, std::uint32_t> m_memo;
    std::uint32_t m_next_memo = 0;
};

/*******************
 * implementation  *
 *******************/

inline const char* kind_name(const pickle_node& node) noexcept
{
    switch (node.kind)
    {
    case pickle_kind::none:
        return "None";
    case pickle_kind::boolean:
        return "bool";
    case pickle_kind::integer:
    case pickle_kind::big_integer:
        return "int";
    case pickle_kind::floating:
        return "float";
    case pickle_kind::string:
        return "str";
    case pickle_kind::bytes:
        return "bytes";
    case pickle_kind::tuple:
        return "tuple";
    case pickle_kind::list:
        return "list";
    case pickle_kind::dict:
        return node.ordered ? "OrderedDict" : "dict";
    case pickle_kind::set:
        return "set";
    case pickle_kind::global:
        return "global";
    case pickle_kind::storage:
        return "storage";
    case pickle_kind::tensor:
        return "tensor";
    }
    return "object";
}

constexpr std::string_view storage_type_name(ember::dtype d) noexcept
{
    switch (d)
    {
    case ember::dtype::float32:
        return "FloatStorage";
    case ember::dtype::float64:
        return "DoubleStorage";
    case ember::dtype::float16:
        return "HalfStorage";
    case ember::dtype::bfloat16:
        return "BFloat16Storage";
    case ember::dtype::int64:
        return "LongStorage";
    case ember::dtype::int32:
        return "IntStorage";
    case ember::dtype::int16:
        return "ShortStorage";
    case ember::dtype::int8:
        return "CharStorage";
    case ember::dtype::uint8:
        return "ByteStorage";
    case ember::dtype::boolean:
        return "BoolStorage";
    }
    return "";
}

inline std::optional<std::uint64_t> storage_extent(std::uint64_t offset,
                                                   const std::vector<std::int64_t>& size,
                                                   const std::vector<std::int64_t>& stride)
{
    if (size.size() != stride.size())
        return std::nullopt;
    bool empty = false;
    for (std::size_t i = 0; i < size.size(); ++i)
    {
        if (size[i] < 0 || stride[i] < 0)
            return std::nullopt;
        if (size[i] == 0)
            empty = true;
    }
    if (empty)
        return 0;
    std::uint64_t last = offset; // index of the last element reached
    for (std::size_t i = 0; i < size.size(); ++i)
    {
        const auto n = static_cast<std::uint64_t>(size[i] - 1);
        const auto s = static_cast<std::uint64_t>(stride[i]);
        if (s != 0 && n > (UINT64_MAX - last) / s)
            return std::nullopt;
        last += n * s;
    }
    if (last == UINT64_MAX)
        return std::nullopt;
    return last + 1;
}

namespace detail
{

inline const char* opcode_name(std::uint8_t code) noexcept
{
    switch (code)
    {
    case 0x28:
        return "MARK";
    case 0x2e:
        return "STOP";
    case 0x30:
        return "POP";
    case 0x31:
        return "POP_MARK";
    case 0x32:
        return "DUP";
    case 0x46:
        return "FLOAT";
    case 0x49:
        return "INT";
    case 0x4a:
        return "BININT";
    case 0x4b:
        return "BININT1";
    case 0x4c:
        return "LONG";
    case 0x4d:
        return "BININT2";
    case 0x4e:
        return "NONE";
    case 0x50:
        return "PERSID";
    case 0x51:
        return "BINPERSID";
    case 0x52:
        return "REDUCE";
    case 0x53:
        return "STRING";
    case 0x54:
        return "BINSTRING";
    case 0x55:
        return "SHORT_BINSTRING";
    case 0x56:
        return "UNICODE";
    case 0x58:
        return "BINUNICODE";
    case 0x61:
        return "APPEND";
    case 0x62:
        return "BUILD";
    case 0x63:
        return "GLOBAL";
    case 0x64:
        return "DICT";
    case 0x7d:
        return "EMPTY_DICT";
    case 0x65:
        return "APPENDS";
    case 0x67:
        return "GET";
    case 0x68:
        return "BINGET";
    case 0x69:
        return "INST";
    case 0x6a:
        return "LONG_BINGET";
    case 0x6c:
        return "LIST";
    case 0x5d:
        return "EMPTY_LIST";
    case 0x6f:
        return "OBJ";
    case 0x70:
        return "PUT";
    case 0x71:
        return "BINPUT";
    case 0x72:
        return "LONG_BINPUT";
    case 0x73:
        return "SETITEM";
    case 0x74:
        return "TUPLE";
    case 0x29:
        return "EMPTY_TUPLE";
    case 0x75:
        return "SETITEMS";
    case 0x47:
        return "BINFLOAT";
    case 0x80:
        return "PROTO";
    case 0x81:
        return "NEWOBJ";
    case 0x82:
        return "EXT1";
    case 0x83:
        return "EXT2";
    case 0x84:
        return "EXT4";
    case 0x85:
        return "TUPLE1";
    case 0x86:
        return "TUPLE2";
    case 0x87:
        return "TUPLE3";
    case 0x88:
        return "NEWTRUE";
    case 0x89:
        return "NEWFALSE";
    case 0x8a:
        return "LONG1";
    case 0x8b:
        return "LONG4";
    case 0x42:
        return "BINBYTES";
    case 0x43:
        return "SHORT_BINBYTES";
    case 0x8c:
        return "SHORT_BINUNICODE";
    case 0x8d:
        return "BINUNICODE8";
    case 0x8e:
        return "BINBYTES8";
    case 0x8f:
        return "EMPTY_SET";
    case 0x90:
        return "ADDITEMS";
    case 0x91:
        return "FROZENSET";
    case 0x92:
        return "NEWOBJ_EX";
    case 0x93:
        return "STACK_GLOBAL";
    case 0x94:
        return "MEMOIZE";
    case 0x95:
        return "FRAME";
    case 0x96:
        return "BYTEARRAY8";
    case 0x97:
        return "NEXT_BUFFER";
    case 0x98:
        return "READONLY_BUFFER";
    }
    return nullptr;
}

/// The allowed global called `module.name`, or nullopt.
inline std::optional<pickle_global_ref> allowed_global(std::string_view module,
                                                       std::string_view name)
{
    std::string full = std::string(module) + "." + std::string(name);
    auto make = [&](pickle_global id, ember::dtype d = ember::dtype::float32) {
        return pickle_global_ref{id, d, full};
    };
    if (module == "collections" && name == "OrderedDict")
        return make(pickle_global::ordered_dict);
    if (module == "collections" && name == "Counter")
        return make(pickle_global::counter);
    if (module == "torch._utils")
    {
        if (name == "_rebuild_tensor_v2")
            return make(pickle_global::rebuild_tensor_v2);
        if (name == "_rebuild_tensor")
            return make(pickle_global::rebuild_tensor);
        if (name == "_rebuild_parameter")
            return make(pickle_global::rebuild_parameter);
        if (name == "_rebuild_parameter_with_state")
            return make(pickle_global::rebuild_parameter_with_state);
        return std::nullopt;
    }
    if (module == "torch._tensor" && name == "_rebuild_from_type_v2")
        return make(pickle_global::rebuild_from_type_v2);
    if (module == "torch.torch_version" && name == "TorchVersion")
        return make(pickle_global::torch_version);
    if (module == "torch.nn.parameter" && name == "Parameter")
        return make(pickle_global::parameter_type);
    if ((module == "builtins" || module == "__builtin__") && name == "set")
        return make(pickle_global::set_type);
    if ((module == "builtins" || module == "__builtin__") && name == "frozenset")
        return make(pickle_global::frozenset_type);
    if (module != "torch")
        return std::nullopt;
    if (name == "Tensor")
        return make(pickle_global::tensor_type);
    if (name == "Size")
        return make(pickle_global::torch_size);
    for (auto d :
         {ember::dtype::float32, ember::dtype::float64, ember::dtype::float16,
          ember::dtype::bfloat16, ember::dtype::int64, ember::dtype::int32, ember::dtype::int16,
          ember::dtype::int8, ember::dtype::uint8, ember::dtype::boolean})
    {
        if (name == storage_type_name(d))
            return make(pickle_global::storage_type, d);
        if (name == dtype_name(d))
            return make(pickle_global::torch_dtype, d);
    }
    return std::nullopt;
}

} // namespace detail

/// The machine behind unpickle(); one per document.
class unpickler
{
public:
    unpickler(std::span<const std::byte> bytes, std::string_view what) : m_in(bytes), m_what(what)
    {
    }

    pickle_document run();

private:
    using node = pickle_node;

    [[noreturn]] void fail(const std::string& message) const
    {
        throw format_error(std::string(m_what) + ": " + message);
    }
    [[noreturn]] void fail_at(const std::string& message) const
    {
        fail(message + " at offset " + std::to_string(m_op_offset) + " (opcode " + m_op_name + ")");
    }

    const std::byte* take(std::size_t n)
    {
        if (m_in.size() - m_pos < n)
            fail("pickle ends inside opcode " + std::string(m_op_name) + " at offset " +
                 std::to_string(m_op_offset) + " (truncated)");
        const std::byte* p = m_in.data() + m_pos;
        m_pos += n;
        return p;
    }
    template <class U>
    U read_le()
    {
        const std::byte* p = take(sizeof(U));
        std::uint64_t v = 0;
        for (std::size_t i = 0; i < sizeof(U); ++i)
            v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
        return static_cast<U>(v);
    }
    std::string read_string(std::uint64_t n)
    {
        if (n > m_in.size() - m_pos)
            fail_at("length " + std::to_string(n) + " runs past the end of the pickle");
        const std::byte* p = take(static_cast<std::size_t>(n));
        return std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
    }
    std::string read_line()
    {
        const auto* begin = reinterpret_cast<const char*>(m_in.data() + m_pos);
        const std::size_t left = m_in.size() - m_pos;
        const void* nl = std::memchr(begin, '\n', left);
        if (nl == nullptr)
            fail_at("no end of line");
        const auto len = static_cast<std::size_t>(static_cast<const char*>(nl) - begin);
        m_pos += len + 1;
        return std::string(begin, len);
    }

    node* make(pickle_kind kind)
    {
        node& n = m_doc.m_nodes.emplace_back();
        n.kind = kind;
        n.offset = m_op_offset;
        return &n;
    }
    node* make_int(std::int64_t v)
    {
        node* n = make(pickle_kind::integer);
        n->payload = v;
        return n;
    }
    node* make_string(pickle_kind kind, std::string s)
    {
        node* n = make(kind);
        n->payload = std::move(s);
        return n;
    }
    node* make_items(pickle_kind kind, node::items_type items)
    {
        node* n = make(kind);
        n->payload = std::move(items);
        return n;
    }

    void push(const node* n) { m_stack.push_back(n); }
    const node* pop()
    {
        if (m_stack.empty())
            fail_at("stack underflow");
        const node* n = m_stack.back();
        m_stack.pop_back();
        return n;
    }
    const node* top()
    {
        if (m_stack.empty())
            fail_at("stack underflow");
        return m_stack.back();
    }
    std::vector<const node*> pop_mark()
    {
        if (m_metastack.empty())
            fail_at("no MARK to pop to");
        std::vector<const node*> items = std::move(m_stack);
        m_stack = std::move(m_metastack.back());
        m_metastack.pop_back();
        return items;
    }
    /// The container on top of the stack, which this opcode mutates (nodes are built here,
    /// so mutation through the arena is sound).
    node* top_container(pickle_kind kind, const char* what)
    {
        const node* t = top();
        if (t->kind != kind)
            fail_at(std::string(what) + " on " + ember::detail::a_or_an(kind_name(*t)) +
                    ", expected a " +
                    (kind == pickle_kind::dict   ? "dict"
                     : kind == pickle_kind::list ? "list"
                                                 : "set"));
        return const_cast<node*>(t);
    }
    void add_entries(node* dict, const std::vector<const node*>& items)
    {
        if (items.size() % 2 != 0)
            fail_at("odd number of items (" + std::to_string(items.size()) +
                    ") for key-value pairs");
        auto& entries = std::get<node::entries_type>(dict->payload);
        for (std::size_t i = 0; i < items.size(); i += 2)
            entries.emplace_back(items[i], items[i + 1]);
    }

    void do_global(std::string_view module, std::string_view name);
    void do_reduce();
    const node* call(const pickle_global_ref& fn, const node& args);
    const node* rebuild_tensor(const node& args, bool v2);
    void do_persistent_id();
    void do_long(std::string bytes);

    std::span<const std::byte> m_in;
    std::string_view m_what;
    std::size_t m_pos = 0;
    std::size_t m_op_offset = 0;
    const char* m_op_name = "";

    pickle_document m_doc;
    std::vector<const node*> m_stack;
    std::vector<std::vector<const node*>> m_metastack;
    std::unordered_map<std::uint64_t, const node*> m_memo;
    std::unordered_map<std::string, const node*> m_storages;
    const node* m_none = nullptr;
    const node* m_true = nullptr;
    const node* m_false = nullptr;
    const node* m_empty_tuple = nullptr;
};

inline pickle_document unpickler::run()
{
    {
        node* n = make(pickle_kind::none);
        m_none = n;
        n = make(pickle_kind::boolean);
        n->payload = true;
        m_true = n;
        n = make(pickle_kind::boolean);
        n->payload = false;
        m_false = n;
        m_empty_tuple = make_items(pickle_kind::tuple, {});
    }

    while (true)
    {
        if (m_pos >= m_in.size())
            fail("pickle ends without a STOP opcode (truncated?)");
        m_op_offset = m_pos;
        const auto code = static_cast<std::uint8_t>(m_in[m_pos++]);
        const char* name = detail::opcode_name(code);
        m_op_name = name ? name : "?";
        switch (code)
        {
        case 0x80: // PROTO
        {
            const auto version = read_le<std::uint8_t>();
            if (version > 5)
                fail_at("pickle protocol " + std::to_string(version) + " is newer than 5");
            break;
        }
        case 0x95: // FRAME: a length hint; the opcodes follow inline
        {
            const auto len = read_le<std::uint64_t>();
            if (len > m_in.size() - m_pos)
                fail_at("frame of " + std::to_string(len) + " bytes runs past the end");
            break;
        }
        case 0x2e: // STOP
        {
            const node* result = pop();
            m_doc.m_root = result;
            return std::move(m_doc);
        }
        case 0x28: // MARK
            if (m_metastack.size() >= pickle_limits::max_depth)
                fail_at("MARKs nested deeper than " + std::to_string(pickle_limits::max_depth));
            m_metastack.push_back(std::move(m_stack));
            m_stack.clear();
            break;
        case 0x30: // POP
            pop();
            break;
        case 0x31: // POP_MARK
            pop_mark();
            break;
        case 0x32: // DUP
            push(top());
            break;
        case 0x4e: // NONE
            push(m_none);
            break;
        case 0x88: // NEWTRUE
            push(m_true);
            break;
        case 0x89: // NEWFALSE
            push(m_false);
            break;
        case 0x4a: // BININT
            push(make_int(static_cast<std::int32_t>(read_le<std::uint32_t>())));
            break;
        case 0x4b: // BININT1
            push(make_int(read_le<std::uint8_t>()));
            break;
        case 0x4d: // BININT2
            push(make_int(read_le<std::uint16_t>()));
            break;
        case 0x8a: // LONG1
        {
            const auto n = read_le<std::uint8_t>();
            do_long(read_string(n));
            break;
        }
        case 0x8b: // LONG4
        {
            const auto n = read_le<std::uint32_t>();
            if (n > 0x7fffffffu)
                fail_at("negative length");
            do_long(read_string(n));
            break;
        }
        case 0x47: // BINFLOAT: big-endian IEEE double
        {
            const std::byte* p = take(8);
            std::uint64_t bits = 0;
            for (int i = 0; i < 8; ++i)
                bits = (bits << 8) | static_cast<std::uint64_t>(p[i]);
            node* n = make(pickle_kind::floating);
            n->payload = std::bit_cast<double>(bits);
            push(n);
            break;
        }
        case 0x58: // BINUNICODE
        case 0x8c: // SHORT_BINUNICODE
        case 0x8d: // BINUNICODE8
        case 0x54: // BINSTRING (Python 2 str; torch.load decodes it as UTF-8)
        case 0x55: // SHORT_BINSTRING
        {
            std::uint64_t n = 0;
            if (code == 0x58)
                n = read_le<std::uint32_t>();
            else if (code == 0x8d)
                n = read_le<std::uint64_t>();
            else if (code == 0x54)
            {
                const auto signed_n = static_cast<std::int32_t>(read_le<std::uint32_t>());
                if (signed_n < 0)
                    fail_at("negative length");
                n = static_cast<std::uint64_t>(signed_n);
            }
            else
                n = read_le<std::uint8_t>();
            std::string s = read_string(n);
            if (!ember::detail::valid_utf8(s, true))
                fail_at("string is not valid UTF-8");
            push(make_string(pickle_kind::string, std::move(s)));
            break;
        }
        case 0x42: // BINBYTES
        case 0x43: // SHORT_BINBYTES
        case 0x8e: // BINBYTES8
        {
            std::uint64_t n = code == 0x42   ? read_le<std::uint32_t>()
                              : code == 0x43 ? read_le<std::uint8_t>()
                                             : read_le<std::uint64_t>();
            push(make_string(pickle_kind::bytes, read_string(n)));
            break;
        }
        case 0x29: // EMPTY_TUPLE
            push(m_empty_tuple);
            break;
        case 0x74: // TUPLE
        {
            auto items = pop_mark();
            push(items.empty() ? m_empty_tuple : make_items(pickle_kind::tuple, std::move(items)));
            break;
        }
        case 0x85: // TUPLE1
        case 0x86: // TUPLE2
        case 0x87: // TUPLE3
        {
            const std::size_t n = code - 0x84u;
            if (m_stack.size() < n)
                fail_at("stack underflow");
            node::items_type items(m_stack.end() - static_cast<std::ptrdiff_t>(n), m_stack.end());
            m_stack.resize(m_stack.size() - n);
            push(make_items(pickle_kind::tuple, std::move(items)));
            break;
        }
        case 0x5d: // EMPTY_LIST
            push(make_items(pickle_kind::list, {}));
            break;
        case 0x6c: // LIST
            push(make_items(pickle_kind::list, pop_mark()));
            break;
        case 0x61: // APPEND
        {
            const node* item = pop();
            node* list = top_container(pickle_kind::list, "APPEND");
            std::get<node::items_type>(list->payload).push_back(item);
            break;
        }
        case 0x65: // APPENDS
        {
            auto items = pop_mark();
            node* list = top_container(pickle_kind::list, "APPENDS");
            auto& dest = std::get<node::items_type>(list->payload);
            dest.insert(dest.end(), items.begin(), items.end());
            break;
        }
        case 0x8f: // EMPTY_SET
            push(make_items(pickle_kind::set, {}));
            break;
        case 0x90: // ADDITEMS
        {
            auto items = pop_mark();
            node* set = top_container(pickle_kind::set, "ADDITEMS");
            auto& dest = std::get<node::items_type>(set->payload);
            dest.insert(dest.end(), items.begin(), items.end());
            break;
        }
        case 0x91: // FROZENSET
            push(make_items(pickle_kind::set, pop_mark()));
            break;
        case 0x7d: // EMPTY_DICT
        {
            node* n = make(pickle_kind::dict);
            n->payload = node::entries_type{};
            push(n);
            break;
        }
        case 0x64: // DICT
        {
            auto items = pop_mark();
            node* n = make(pickle_kind::dict);
            n->payload = node::entries_type{};
            add_entries(n, items);
            push(n);
            break;
        }
        case 0x73: // SETITEM
        {
            const node* value = pop();
            const node* key = pop();
            node* dict = top_container(pickle_kind::dict, "SETITEM");
            std::get<node::entries_type>(dict->payload).emplace_back(key, value);
            break;
        }
        case 0x75: // SETITEMS
        {
            auto items = pop_mark();
            add_entries(top_container(pickle_kind::dict, "SETITEMS"), items);
            break;
        }
        case 0x71: // BINPUT
        case 0x72: // LONG_BINPUT
        case 0x94: // MEMOIZE
        {
            const std::uint64_t index = code == 0x71   ? read_le<std::uint8_t>()
                                        : code == 0x72 ? read_le<std::uint32_t>()
                                                       : m_memo.size();
            m_memo[index] = top();
            break;
        }
        case 0x68: // BINGET
        case 0x6a: // LONG_BINGET
        {
            const std::uint64_t index =
                code == 0x68 ? read_le<std::uint8_t>() : read_le<std::uint32_t>();
            auto it = m_memo.find(index);
            if (it == m_memo.end())
                fail_at("memo index " + std::to_string(index) + " was never stored (memo has " +
                        std::to_string(m_memo.size()) + " entries)");
            push(it->second);
            break;
        }
        case 0x63: // GLOBAL
        {
            const std::string module = read_line();
            const std::string name_ = read_line();
            do_global(module, name_);
            break;
        }
        case 0x93: // STACK_GLOBAL
        {
            const node* name_ = pop();
            const node* module = pop();
            if (name_->kind != pickle_kind::string || module->kind != pickle_kind::string)
                fail_at("module and name are not strings");
            do_global(module->as_string(), name_->as_string());
            break;
        }
        case 0x52: // REDUCE
            do_reduce();
            break;
        case 0x81: // NEWOBJ: cls.__new__(cls, *args), for the two classes pickled this way
        {
            const node* args = pop();
            const node* cls = pop();
            if (cls->kind != pickle_kind::global || args->kind != pickle_kind::tuple)
                fail_at("NEWOBJ needs a class and an argument tuple");
            const auto& g = cls->global();
            const auto& a = args->items();
            if (g.id == pickle_global::torch_version && a.size() == 1 &&
                a[0]->kind == pickle_kind::string)
                push(a[0]); // a str subclass: the lesson's checkpoint stores torch.__version__
            else if (g.id == pickle_global::parameter_type && !a.empty() && a.size() <= 2 &&
                     a[0]->kind == pickle_kind::tensor)
                push(a[0]);
            else
                fail_at("NEWOBJ of " + g.name + " is not allowed");
            break;
        }
        case 0x62: // BUILD
        {
            const node* state = pop();
            const node* inst = top();
            // OrderedDict carries attributes this way (a state_dict's `_metadata`, PyTorch's
            // per-module versions), which ember does not need; nothing else may be built.
            if (inst->kind == pickle_kind::dict && inst->ordered)
                break;
            (void)state;
            fail_at(std::string("BUILD on ") + ember::detail::a_or_an(kind_name(*inst)) +
                    " (only an OrderedDict's attributes can be set)");
        }
        case 0x51: // BINPERSID
            do_persistent_id();
            break;
        default:
            if (name)
                fail("pickle opcode " + std::string(name) + " at offset " +
                     std::to_string(m_op_offset) +
                     " is not allowed (ember reads what torch.save writes, and runs no code)");
            {
                char buf[8];
                std::snprintf(buf, sizeof buf, "0x%02x", code);
                fail("unknown pickle opcode " + std::string(buf) + " at offset " +
                     std::to_string(m_op_offset));
            }
        }
    }
}

inline void unpickler::do_long(std::string bytes)
{
    // Little-endian two's complement, as Python's encode_long writes it.
    if (bytes.empty())
    {
        push(make_int(0));
        return;
    }
    const bool negative = static_cast<unsigned char>(bytes.back()) & 0x80;
    // Drop redundant sign bytes, then see whether the rest fits in int64.
    std::size_t len = bytes.size();
    while (len > 1)
    {
        const auto last = static_cast<unsigned char>(bytes[len - 1]);
        const auto below = static_cast<unsigned char>(bytes[len - 2]);
        if ((last == 0x00 && !(below & 0x80)) || (last == 0xff && (below & 0x80)))
            --len;
        else
            break;
    }
    if (len <= 8)
    {
        std::uint64_t v = negative ? ~std::uint64_t{0} : 0;
        for (std::size_t i = 0; i < len; ++i)
        {
            v &= ~(std::uint64_t{0xff} << (8 * i));
            v |= static_cast<std::uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
        }
        push(make_int(static_cast<std::int64_t>(v)));
        return;
    }
    bytes.resize(len);
    push(make_string(pickle_kind::big_integer, std::move(bytes)));
}

inline void unpickler::do_global(std::string_view module, std::string_view name)
{
    auto ref = detail::allowed_global(module, name);
    if (!ref)
        fail("pickle global '" + std::string(module) + "." + std::string(name) + "' at offset " +
             std::to_string(m_op_offset) +
             " is not allowed: ember loads tensors, containers and plain values and calls "
             "nothing else (like torch.load(weights_only=True))");
    node* n = make(pickle_kind::global);
    n->payload = std::move(*ref);
    push(n);
}

inline void unpickler::do_reduce()
{
    const node* args = pop();
    const node* fn = pop();
    if (fn->kind != pickle_kind::global)
        fail_at(std::string("REDUCE calls ") + ember::detail::a_or_an(kind_name(*fn)) +
                ", not an allowed function");
    if (args->kind != pickle_kind::tuple)
        fail_at(std::string("REDUCE arguments are ") + ember::detail::a_or_an(kind_name(*args)) +
                ", not a tuple");
    push(call(fn->global(), *args));
}

inline const pickle_node* unpickler::call(const pickle_global_ref& fn, const node& args)
{
    const auto& a = args.items();
    auto arity = [&](std::size_t lo, std::size_t hi)
    {
        if (a.size() < lo || a.size() > hi)
            fail_at(fn.name + " takes " + std::to_string(lo) +
                    (lo == hi ? "" : " to " + std::to_string(hi)) + " arguments, got " +
                    std::to_string(a.size()));
    };
    switch (fn.id)
    {
    case pickle_global::ordered_dict:
    {
        arity(0, 0);
        node* n = make(pickle_kind::dict);
        n->ordered = true;
        n->payload = node::entries_type{};
        return n;
    }
    case pickle_global::counter:
    {
        // Counter(mapping), as a Counter pickles itself: read as a new dict holding the
        // mapping's items (a copy, as in Python: later SETITEMs on one must not reach the other).
        arity(0, 1);
        if (!a.empty() && a[0]->kind != pickle_kind::dict)
            fail_at("collections.Counter takes a dict");
        node* n = make(pickle_kind::dict);
        n->payload = a.empty() ? node::entries_type{} : a[0]->entries();
        return n;
    }
    case pickle_global::rebuild_tensor_v2:
        arity(6, 7);
        return rebuild_tensor(args, true);
    case pickle_global::rebuild_tensor:
        arity(4, 4);
        return rebuild_tensor(args, false);
    case pickle_global::rebuild_parameter:
    case pickle_global::rebuild_parameter_with_state:
    {
        if (fn.id == pickle_global::rebuild_parameter)
            arity(3, 3);
        else
            arity(4, 4);
        if (a[0]->kind != pickle_kind::tensor)
            fail_at(fn.name + ": data is " + ember::detail::a_or_an(kind_name(*a[0])) +
                    ", not a tensor");
        return a[0];
    }
    case pickle_global::rebuild_from_type_v2:
    {
        arity(4, 4);
        if (a[0]->kind != pickle_kind::global || a[2]->kind != pickle_kind::tuple)
            fail_at(fn.name + ": expected a rebuild function and an argument tuple");
        const auto& inner = a[0]->global();
        if (inner.id != pickle_global::rebuild_tensor_v2 &&
            inner.id != pickle_global::rebuild_tensor &&
            inner.id != pickle_global::rebuild_parameter &&
            inner.id != pickle_global::rebuild_parameter_with_state)
            fail_at(fn.name + " would call " + inner.name + ", which is not a rebuild function");
        if (a[1]->kind != pickle_kind::global ||
            (a[1]->global().id != pickle_global::tensor_type &&
             a[1]->global().id != pickle_global::parameter_type))
            fail_at(fn.name + ": the new type must be torch.Tensor or torch.nn.Parameter");
        return call(inner, *a[2]);
    }
    case pickle_global::torch_size:
    {
        arity(1, 1);
        if (a[0]->kind != pickle_kind::tuple)
            fail_at("torch.Size takes a tuple");
        return a[0];
    }
    case pickle_global::torch_version:
    {
        // `torch.__version__`, as the lesson's checkpoint stores it: a str subclass.
        arity(1, 1);
        if (a[0]->kind != pickle_kind::string)
            fail_at("TorchVersion takes a str");
        return a[0];
    }
    case pickle_global::set_type:
    case pickle_global::frozenset_type:
    {
        arity(0, 1);
        node::items_type items;
        if (a.size() == 1)
        {
            if (a[0]->kind != pickle_kind::list && a[0]->kind != pickle_kind::tuple)
                fail_at(fn.name + " takes a list");
            items = a[0]->items();
        }
        return make_items(pickle_kind::set, std::move(items));
    }
    default:
        fail_at("REDUCE would call " + fn.name + ", which ember never calls");
    }
}

inline const pickle_node* unpickler::rebuild_tensor(const node& args, bool v2)
{
    const auto& a = args.items();
    const char* fn = v2 ? "_rebuild_tensor_v2" : "_rebuild_tensor";
    if (a[0]->kind != pickle_kind::storage)
        fail_at(std::string(fn) + ": first argument is " +
                ember::detail::a_or_an(kind_name(*a[0])) + ", not a storage");
    if (a[1]->kind != pickle_kind::integer || a[1]->as_int() < 0)
        fail_at(std::string(fn) + ": storage offset is not a non-negative int");
    auto ints = [&](const node* t, const char* what)
    {
        if (t->kind != pickle_kind::tuple)
            fail_at(std::string(fn) + ": " + what + " is " + ember::detail::a_or_an(kind_name(*t)) +
                    ", not a tuple");
        std::vector<std::int64_t> out;
        out.reserve(t->items().size());
        for (const node* x : t->items())
        {
            if (x->kind != pickle_kind::integer)
                fail_at(std::string(fn) + ": " + what + " holds " +
                        ember::detail::a_or_an(kind_name(*x)) + ", not an int");
            out.push_back(x->as_int());
        }
        return out;
    };
    pickle_tensor t;
    t.storage = a[0];
    t.offset = static_cast<std::uint64_t>(a[1]->as_int());
    t.size = ints(a[2], "size");
    t.stride = ints(a[3], "stride");
    if (v2)
    {
        if (a[4]->kind != pickle_kind::boolean)
            fail_at(std::string(fn) + ": requires_grad is not a bool");
        t.requires_grad = a[4]->as_bool();
    }
    if (t.size.size() != t.stride.size())
        fail_at(std::string(fn) + ": " + std::to_string(t.size.size()) + " sizes but " +
                std::to_string(t.stride.size()) + " strides");
    const auto& storage = a[0]->storage();
    const auto extent = storage_extent(t.offset, t.size, t.stride);
    if (!extent)
        fail_at(std::string(fn) + ": tensor of shape " + shape_string(t.size) + " with strides " +
                shape_string(t.stride) + " has a negative size or stride or overflows");
    if (*extent > storage.numel)
        fail_at("tensor of shape " + shape_string(t.size) + " with strides " +
                shape_string(t.stride) + " at storage offset " + std::to_string(t.offset) +
                " needs " + std::to_string(*extent) + " elements, but storage '" + storage.key +
                "' has " + std::to_string(storage.numel));
    // The element count times the element size must be a representable byte size.
    try
    {
        (void)host_tensor::checked_numel(t.size, dtype_size(storage.dtype));
    }
    catch (const value_error&)
    {
        fail_at("tensor of shape " + shape_string(t.size) + " is too large");
    }
    node* n = make(pickle_kind::tensor);
    n->payload = std::move(t);
    return n;
}

inline void unpickler::do_persistent_id()
{
    const node* pid = pop();
    if (pid->kind != pickle_kind::tuple || pid->items().size() != 5)
        fail_at(std::string("persistent id is ") + ember::detail::a_or_an(kind_name(*pid)) +
                ", not ('storage', type, key, location, numel)");
    const auto& p = pid->items();
    if (p[0]->kind != pickle_kind::string || p[0]->as_string() != "storage")
        fail_at("persistent id is not a storage (only storages can be loaded)");
    if (p[1]->kind != pickle_kind::global || p[1]->global().id != pickle_global::storage_type)
        fail_at("persistent id's storage type is not a torch storage type");
    if (p[2]->kind != pickle_kind::string || p[3]->kind != pickle_kind::string)
        fail_at("persistent id's key and location must be strings");
    if (p[4]->kind != pickle_kind::integer || p[4]->as_int() < 0)
        fail_at("persistent id's element count is not a non-negative int");
    const std::string& key = p[2]->as_string();
    const ember::dtype type = p[1]->global().dtype;
    const auto numel = static_cast<std::uint64_t>(p[4]->as_int());
    if (auto it = m_storages.find(key); it != m_storages.end())
    {
        // torch.load keeps the first storage loaded under a key; a disagreeing second
        // reference would be read as something it is not.
        const auto& seen = it->second->storage();
        if (seen.dtype != type || seen.numel != numel)
            fail_at("storage '" + key + "' referenced as " + std::to_string(numel) + " " +
                    std::string(dtype_name(type)) + " elements, earlier as " +
                    std::to_string(seen.numel) + " " + std::string(dtype_name(seen.dtype)));
        push(it->second);
        return;
    }
    node* n = make(pickle_kind::storage);
    n->payload = pickle_storage{key, type, numel, p[3]->as_string()};
    m_storages.emplace(key, n);
    m_doc.m_storages.push_back(n);
    push(n);
}

inline pickle_document unpickle(std::span<const std::byte> bytes, std::string_view what)
{
    return unpickler(bytes, what).run();
}

inline pickler::pickler()
{
    op(0x80);
    op(2);
}

inline void pickler::integer(std::int64_t v)
{
    if (v >= 0 && v <= 0xff)
    {
        op(0x4b);
        le<std::uint8_t>(static_cast<std::uint8_t>(v));
    }
    else if (v >= 0 && v <= 0xffff)
    {
        op(0x4d);
        le<std::uint16_t>(static_cast<std::uint16_t>(v));
    }
    else if (v >= INT32_MIN && v <= INT32_MAX)
    {
        op(0x4a);
        le<std::uint32_t>(static_cast<std::uint32_t>(static_cast<std::int32_t>(v)));
    }
    else
    {
        // LONG1 with the fewest two's-complement bytes, as Python's encode_long.
        std::uint8_t buf[8];
        const auto u = static_cast<std::uint64_t>(v);
        for (int i = 0; i < 8; ++i)
            buf[i] = static_cast<std::uint8_t>(u >> (8 * i));
        int n = 8;
        while (n > 1 && ((buf[n - 1] == 0x00 && !(buf[n - 2] & 0x80)) ||
                         (buf[n - 1] == 0xff && (buf[n - 2] & 0x80))))
            --n;
        op(0x8a);
        le<std::uint8_t>(static_cast<std::uint8_t>(n));
        for (int i = 0; i < n; ++i)
            le<std::uint8_t>(buf[i]);
    }
}

inline void pickler::floating(double v)
{
    op(0x47);
    const auto bits = std::bit_cast<std::uint64_t>(v);
    for (int i = 7; i >= 0; --i)
        m_out.push_back(static_cast<std::byte>((bits >> (8 * i)) & 0xffu));
}

inline void pickler::string(std::string_view s)
{
    if (s.size() > 0xffffffffu)
        throw value_error("pickler: string of " + std::to_string(s.size()) + " bytes");
    // PyTorch (and ember's reader) decode a pickle's strings as UTF-8: a file with any other
    // bytes would load in neither, so it is refused before it is written.
    if (!ember::detail::valid_utf8(s, true))
        throw value_error("cannot save the string " + ember::detail::quoted(s, '\'', 64, true) +
                          " in PyTorch's format: it is not valid UTF-8, which pickle strings "
                          "must be");
    op(0x58);
    le<std::uint32_t>(static_cast<std::uint32_t>(s.size()));
    raw(s);
}

inline void pickler::put_memo()
{
    if (m_next_memo <= 0xff)
    {
        op(0x71);
        le<std::uint8_t>(static_cast<std::uint8_t>(m_next_memo));
    }
    else
    {
        op(0x72);
        le<std::uint32_t>(m_next_memo);
    }
    ++m_next_memo;
}

inline void pickler::get_memo(std::uint32_t index)
{
    if (index <= 0xff)
    {
        op(0x68);
        le<std::uint8_t>(static_cast<std::uint8_t>(index));
    }
    else
    {
        op(0x6a);
        le<std::uint32_t>(index);
    }
}

inline void pickler::memo_string(std::string_view s)
{
    std::string key = "s\n" + std::string(s);
    if (auto it = m_memo.find(key); it != m_memo.end())
        return get_memo(it->second);
    string(s);
    m_memo.emplace(std::move(key), m_next_memo);
    put_memo();
}

inline void pickler::global(std::string_view module, std::string_view name)
{
    std::string key = "g\n" + std::string(module) + "\n" + std::string(name);
    if (auto it = m_memo.find(key); it != m_memo.end())
        return get_memo(it->second);
    op(0x63);
    raw(module);
    raw("\n");
    raw(name);
    raw("\n");
    m_memo.emplace(std::move(key), m_next_memo);
    put_memo();
}

inline void pickler::tuple(std::size_t n)
{
    if (n == 0)
        empty_tuple();
    else if (n <= 3)
        op(static_cast<std::uint8_t>(0x84 + n));
    else
        op(0x74);
}

inline void pickler::ordered_dict()
{
    global("collections", "OrderedDict");
    empty_tuple();
    reduce();
}

inline void pickler::tensor(ember::dtype type, const std::vector<std::int64_t>& shape,
                            std::string_view key, std::uint64_t numel)
{
    global("torch._utils", "_rebuild_tensor_v2");
    mark();
    {
        mark();
        memo_string("storage");
        global("torch", storage_type_name(type));
        string(key);
        memo_string("cpu");
        integer(static_cast<std::int64_t>(numel));
        tuple(5);
        persistent_id();
    }
    integer(0); // storage offset
    if (shape.size() > 3)
        mark();
    for (auto d : shape)
        integer(d);
    tuple(shape.size());
    // Contiguous row-major strides.
    std::vector<std::int64_t> stride(shape.size(), 1);
    for (std::size_t i = shape.size(); i-- > 1;)
        stride[i - 1] = stride[i] * std::max<std::int64_t>(shape[i], 1);
    if (stride.size() > 3)
        mark();
    for (auto s : stride)
        integer(s);
    tuple(stride.size());
    boolean(false); // requires_grad
    ordered_dict(); // backward hooks
    tuple(6);
    reduce();
}

inline std::vector<std::byte> pickler::finish()
{
    op(0x2e);
    return std::move(m_out);
}

} // namespace ember::pytorch

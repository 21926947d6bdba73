#pragma once
/// @file
/// The base every optimizer shares: parameter groups, zero_grad(), step(), and
/// state_dict()/load_state_dict() in PyTorch 1.13's layout. The algorithm itself is a CRTP
/// derived class (sgd, adam, adamw, rmsprop) that updates one parameter at a time with one
/// kernel over its value and grad, so there is no virtual call, and once a parameter's state
/// exists step() allocates nothing.
///
/// Every optimizer runs on the device its parameters live on (`Device`, deduced from
/// `model.parameters()`): state buffers are the device's vectors, kernels go through
/// `Device::for_each`, and state_dict() moves the state to host tensors (load_state_dict()
/// back), so a state_dict saved on one device loads onto any other.
///
/// A kernel is written once, as a function over a block of elements [begin, end) (see
/// detail::block_size): one element per GPU thread, 256 on host memory, where the block's
/// loops vectorize and its square roots go through detail::sqrt_inplace. On the `cpu` device
/// with GCC or Clang on x86-64 the kernels of Adam/AdamW, SGD and RMSprop are also compiled
/// for AVX2 and AVX-512 and picked at run time where the CPU has them (AVX-512 on AMD Zen 5 and
/// later only), with the same results bit for bit (see detail/simd_dispatch.hpp).
///
/// What a derived class `D` provides (all may be static):
/// - `static constexpr std::string_view name` for messages;
/// - `check_options(const Options&, std::string_view where)`: throws value_error on bad values;
/// - `write_options(const Options&, ordered_dict<state_value>&)`: PyTorch's keys, in order;
/// - `read_options(detail::dict_reader&) -> Options`;
/// - `update(const Options&, std::span<T> value, const nn::grad_view<T>& grad, State&, index)`
///   (device memory; the gradient an array or an outer product, see grad_pieces);
/// - `write_state(const State&, const std::vector<std::int64_t>& shape, ordered_dict<..>&)`;
/// - `read_state(detail::dict_reader&, const Options&, const std::vector<std::int64_t>& shape)
///    -> State`.
/// `State` has a `bool initialized` (PyTorch's `state[p]` is non-empty).

#include "ember/core/dtype.hpp"
#include "ember/core/error.hpp"
#include "ember/core/host_tensor.hpp"
#include "ember/core/ordered_dict.hpp"
#include "ember/detail/parallel.hpp"
#include "ember/detail/precompiled.hpp"
#include "ember/detail/simd_dispatch.hpp"
#include "ember/device/cpu.hpp"
#include "ember/device/kernel.hpp"
#include "ember/nn/parameter.hpp"
#include "ember/optim/optimizer_state.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <iterator>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

#if !defined(__CUDA_ARCH__)
#if defined(__AVX__)
#include <immintrin.h>
#elif defined(__SSE2__)
#include <emmintrin.h>
#elif defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#endif
#endif

// EMBER_OPTIMIZER_INSTANCE(EXTERN, NAME, OPTIONS, STATE, DEVICE): optimizer NAME over float on
// DEVICE and its base, as an explicit instantiation declaration (EXTERN = extern) or definition
// (EXTERN empty). Each optimizer's header wraps it as EMBER_<NAME>_INSTANCES(EXTERN, DEVICE).
#define EMBER_OPTIMIZER_INSTANCE(EXTERN, NAME, OPTIONS, STATE, DEVICE)                             \
    EXTERN template class ember::optim::optimizer<ember::optim::NAME<float, DEVICE>, float,        \
                                                  ember::optim::OPTIONS,                           \
                                                  ember::optim::STATE<float, DEVICE>, DEVICE>;     \
    EXTERN template class ember::optim::NAME<float, DEVICE>;

// EMBER_OPTIMIZER_EXTERN(INSTANCES): at the end of an optimizer's header, its instances declared
// extern where ember's precompiled part compiles them (EMBER_PRECOMPILED_EXTERN).
#if defined(EMBER_PRECOMPILED_THRUST_OMP)
#include "ember/device/thrust_omp.hpp"
#endif
#define EMBER_OPTIMIZER_EXTERN(INSTANCES) EMBER_PRECOMPILED_EXTERN(INSTANCES)

namespace ember::optim
{

/// @brief Parameters that share options (PyTorch's param group), e.g. a smaller lr for a
/// pretrained backbone. Change `options` between steps freely (LR schedulers do); add
/// parameters only through add_param_group().
template <class T, class Options, class Device = cpu>
struct param_group
{
    using value_type = T;
    using options_type = Options;
    using device_type = Device;

    param_group() = default;
    /// @brief `{model.parameters(), {.lr = 0.1}}`.
    param_group(std::vector<nn::param_ref<T, Device>> p, const Options& o)
        : params(std::move(p)), options(o)
    {
    }

    std::vector<nn::param_ref<T, Device>> params;
    Options options;
    /// @brief Set by LR schedulers; saved as PyTorch's `initial_lr` key when present.
    std::optional<double> initial_lr;
    /// @brief Keys of the group's own beside the optimizer's options, as PyTorch keeps them in a
    /// group's dict (`'name': 'backbone'`, timm's `'lr_scale'`): saved after the options by
    /// state_dict() and taken from a loaded state by load_state_dict(); ember's optimizers do
    /// not read them. A key here may not be one of the options' names.
    ordered_dict<state_value> extra;
};

namespace detail
{

using ember::detail::active_simd_isa;
using ember::detail::simd_isa;

/// @brief Calls `f.template operator()<b...>()` with each runtime bool as a template argument,
/// so kernels test their options at compile time and their loop bodies have no branches. The
/// optimizers pass named functors (sgd_launch...) whose operator() calls the kernel.
template <bool... Fixed, class F>
void with_flags(F&& f)
{
    std::forward<F>(f).template operator()<Fixed...>();
}
template <bool... Fixed, class F, class... Bools>
void with_flags(F&& f, bool first, Bools... rest)
{
    if (first)
        with_flags<Fixed..., true>(std::forward<F>(f), rest...);
    else
        with_flags<Fixed..., false>(std::forward<F>(f), rest...);
}

/// @brief A float as Python's repr() writes it (`0.1`, `1e-08`, `2.0`), for messages.
std::string repr(double v);

/// @brief Python's name for the type a state_value holds (`None`, `float`, `tensor`, ...).
std::string type_name(const state_value& v);

/// @brief A zero option whose PyTorch default is the int 0 is saved as int, as 1.13 prints it.
state_value int_if_zero(double v);

/// @brief The first element of a device vector (`Device::vector_type`), as a raw pointer
/// (Thrust's vectors hand out fancy pointers).
template <class Vector>
auto data_of(Vector& v) noexcept;

/// @brief A host tensor of `shape` holding device vector `v` (the state of one parameter);
/// throws shape_error if their sizes differ.
template <class Device, class Vector>
host_tensor to_host(const Vector& v, const std::vector<std::int64_t>& shape);

/// @brief Device vector `out` takes the size and values of host tensor `h`, whose dtype
/// dict_reader::tensor has checked.
template <class Device, class Vector>
void from_host(const host_tensor& h, Vector& out);

/// @brief Elements per block of an optimizer kernel on `Device`: one per thread on a GPU; on
/// host memory blocks long enough to vectorize and small enough that a kernel's scratch
/// arrays stay on the stack.
template <class Device>
inline constexpr std::size_t block_size = Device::host_memory ? 256 : 1;

/// @brief How many blocks of `block` elements cover n.
inline constexpr std::size_t block_count(std::size_t n, std::size_t block) noexcept
{
    return (n + block - 1) / block;
}

/// @brief `p + offset`, or nullptr for an array that a kernel's flags leave out.
template <class P>
P* shifted(P* p, std::size_t offset) noexcept
{
    return p == nullptr ? p : p + offset;
}

/// @brief Runs `update(first, last)` over the elements [0, n) of one parameter: on the cpu in
/// parts on several threads (ember::detail::parallel_elements: OpenMP's, where oneDNN's products
/// run on them, else ember's own), on other devices in one call. An optimizer's update is bound
/// by what a core's caches deliver: SGD with momentum reads three arrays and writes two, so two
/// cores update a layer of 200k weights in about half the time.
/// The parts start on multiples of block_size, so every element sees the same arithmetic as in
/// one call.
template <class Device, class Update>
void update_in_parts(std::size_t n, const Update& update)
{
#if !defined(__CUDACC__)
    if constexpr (std::is_same_v<Device, cpu>)
        return ember::detail::parallel_elements(n, block_size<cpu>, update);
#endif
    update(std::size_t{0}, n);
}

/// @brief `a + alpha * b`: PyTorch's `add(b, alpha=...)`, an FMA in its AVX2 kernels; ours is
/// one where the target has FMA (and on GPUs) and otherwise differs from PyTorch by at most
/// an ulp. PyTorch's AVX2 `addcmul` is an FMA too, which ember's kernels do not repeat
/// (docs/formats.md, on bit-for-bit agreement).
template <class T>
EMBER_HOST_DEVICE T add_scaled(T a, T alpha, T b) noexcept;

/// @brief torch.maximum: NaN in either argument wins.
template <class T>
EMBER_HOST_DEVICE T maximum(T a, T b) noexcept;

/// @brief `t[i] = sqrt(t[i])` for i < n, vectorized on the host. GCC keeps std::sqrt scalar
/// unless -fno-math-errno (it may have to set errno; PyTorch builds without errno), which made
/// Adam several times slower, so this one loop uses the (correctly rounded) vector
/// instructions; kernels collect a block's square roots in an array and call it once. `Isa`
/// is the dispatched variant calling it.
template <simd_isa Isa = simd_isa::baseline, class T>
EMBER_HOST_DEVICE void sqrt_inplace(T* t, std::size_t n) noexcept;

/// @brief Runs an optimizer's kernel over the n elements of one parameter, a block at a time:
/// `kernel.template block<Block, Isa>(begin, end)` for each [begin, end) of at most
/// Block = Width elements (block_size<Device> unless said), `Isa` the variant it is compiled
/// into. A kernel is a
/// small struct holding its arrays and scalars (a GPU lambda cannot capture a parameter pack).
/// On the `cpu` with dispatch on, the loop is also compiled for AVX2 and AVX-512 and runs in the
/// variant active_simd_isa() names; the kernels contract nothing, so every variant gives the
/// same bits. Elsewhere it goes through `Device::for_each`, a block per call.
template <class Device, std::size_t Width = block_size<Device>, class Kernel>
void blockwise_step(std::size_t n, const Kernel& kernel);

/// @brief Elements of a gradient kept as an outer product (nn::grad_view) that an update writes
/// out at a time, into a buffer on the stack: 4 KiB of floats, in L1 with the state it updates.
/// (Written a 256-element block at a time, the MLP's SGD step at batch 1 took 5% longer.)
inline constexpr std::size_t grad_piece = 1024;

/// @brief blockwise_step over the elements [first, last) of one parameter with `Kernel` (built
/// from `arrays.part_from(first)`). Where the gradient is an outer product (nn::grad_view, on
/// the `cpu` only), blockwise_step runs over pieces of grad_piece elements: each piece of the
/// gradient is written first into a buffer on the stack, in the variant the piece runs in, and
/// `Kernel` then runs over it block by block with `g` pointed at the buffer. The update reads
/// the gradient from L1, and the whole gradient is never written.
template <class Device, class Kernel, class T, class Arrays>
void grad_pieces(const nn::grad_view<T>& grad, const Arrays& arrays, std::size_t first,
                 std::size_t last);

/// @brief Throws shape_error unless a state buffer still has one element per parameter
/// element (a parameter resized after its state was created).
void check_state_size(std::string_view name, std::size_t index, std::string_view key,
                      std::size_t state_size, std::size_t param_size);

/// @brief Reads one dict of a loaded state_dict (a param group's options or a parameter's
/// state), checking types and remembering which keys were read, so finish() can reject the
/// rest. Every message starts with `where` (`sgd: load_state_dict: param_groups[1]`).
class dict_reader
{
public:
    dict_reader(const ordered_dict<state_value>& dict, std::string where)
        : m_dict(&dict), m_where(std::move(where))
    {
    }

    /// @brief `where['key']`, for messages.
    std::string where(std::string_view key) const
    {
        return m_where + "['" + std::string(key) + "']";
    }
    const std::string& where() const noexcept { return m_where; }

    /// @brief The value of `key`, or nullptr; marks it as read.
    const state_value* find(std::string_view key);

    /// @brief A number (int or float) that must be present.
    double number(std::string_view key);
    /// @brief A number, or `fallback` when absent.
    double number(std::string_view key, double fallback);
    /// @brief A number, or nullopt when absent.
    std::optional<double> optional_number(std::string_view key);
    /// @brief A bool, or `fallback` when absent.
    bool boolean(std::string_view key, bool fallback);
    /// @brief A key ember has no use for (`foreach`, `capturable`...): absent, None or a bool.
    void ignored_flag(std::string_view key);
    /// @brief A pair of numbers (Adam's `betas`).
    std::array<double, 2> pair(std::string_view key);

    /// @brief A tensor of dtype T and `shape`, or nullptr when absent (or None, if
    /// `none_ok`); throws key_error if absent and `required`. A float32 or float64 tensor is
    /// converted to T, as PyTorch casts state to its parameter's dtype; others are dtype_error.
    template <class T>
    const host_tensor* tensor(std::string_view key, const std::vector<std::int64_t>& shape,
                              bool required, bool none_ok = false);

    /// @brief A step count: an int, a float or a one-element tensor, non-negative and finite.
    double step(std::string_view key);

    /// @brief Throws key_error naming every key nothing read.
    void finish() const;
    /// @brief The entries nothing read, in order: a group's keys of its own. Throws key_error
    /// naming those that are reserved_group_key()s, another optimizer's options.
    ordered_dict<state_value> unread_extras() const;

private:
    const state_value& required(std::string_view key);
    bool was_read(std::string_view key) const;
    /// The keys nothing read that `pick` accepts, quoted and comma-separated: `'a', 'b'`.
    template <class Pick>
    std::string unread_keys(Pick&& pick) const;

    const ordered_dict<state_value>* m_dict;
    std::string m_where;
    std::vector<std::string> m_read;
    std::deque<host_tensor> m_converted; // tensor()'s conversions, at stable addresses
};

/// @brief Whether `key` names an option of one of PyTorch's optimizers (or `params`), which a
/// group's keys of its own (param_group::extra) may not: loaded into an optimizer that does not
/// read it, such a key is another optimizer's state or an option ember does not have, and is
/// refused, not kept.
inline bool reserved_group_key(std::string_view key) noexcept
{
    // clang-format off
    static constexpr std::string_view names[] = {
        "params", "initial_lr", "lr", "weight_decay", "maximize", "foreach", "differentiable",
        "fused", "capturable",                                                // all of them
        "momentum", "dampening", "nesterov",                                  // SGD
        "betas", "eps", "amsgrad", "decoupled_weight_decay",                  // Adam, AdamW
        "alpha", "centered",                                                  // RMSprop
        "lr_decay", "initial_accumulator_value", "rho", "momentum_decay",     // the others
        "lambd", "t0", "etas", "step_sizes", "max_iter", "max_eval", "tolerance_grad",
        "tolerance_change", "history_size", "line_search_fn"};
    // clang-format on
    return std::find(std::begin(names), std::end(names), key) != std::end(names);
}

/// @brief A callable that edits Options in place: it takes them by reference (`Options&`,
/// `auto&`); one that takes a copy, or a const reference, would change nothing.
template <class Edit, class Options>
concept options_edit = std::invocable<Edit&, Options&> && !std::invocable<Edit&, Options&&>;

/// @brief The parameters of a single-group constructor; PyTorch refuses an empty list.
template <class T, class Options, class Device>
std::vector<param_group<T, Options, Device>>
single_group(std::vector<nn::param_ref<T, Device>> params, const Options& options,
             std::string_view name)
{
    if (params.empty())
        throw value_error(std::string(name) + ": optimizer got an empty parameter list");
    std::vector<param_group<T, Options, Device>> groups;
    groups.emplace_back(std::move(params), options);
    return groups;
}

} // namespace detail

/// @brief CRTP base of the optimizers: groups, zero_grad(), step(), state_dict(), over
/// parameters of element type T on `Device`.
template <class Derived, class T, class Options, class State, class Device = cpu>
class optimizer
{
    static_assert(device_policy<Device>, "ember::optim: Device must be a device policy");

public:
    using value_type = T;
    using device_type = Device;
    using options_type = Options;
    using group_type = param_group<T, Options, Device>;
    using param_state_type = State;

    /// @brief Sets the gradient of every parameter in every group to zero (lazily: the next
    /// backward overwrites it; see nn::parameter), PyTorch 1.13's default. With `set_to_none`,
    /// to None, as PyTorch's `zero_grad(set_to_none=True)` (its default from 2.0): step() then
    /// passes over a parameter no backward reaches before it (no weight decay, no momentum, no
    /// change to its state), where on zeros it would move it.
    void zero_grad(bool set_to_none = false);

    /// @brief One update of every parameter with requires_grad and a gradient (has_grad(),
    /// PyTorch's `grad is not None`), group by group. A parameter frozen after a backward is
    /// skipped too, where PyTorch steps it until its gradient is None: a hand-written backward
    /// may write a frozen parameter's gradient, and freezing must hold all the same.
    void step();

    /// @brief PyTorch's `optimizer.state_dict()`: state by global parameter index (only the
    /// parameters stepped so far), then each group's options and parameter indices. The
    /// state tensors are host copies, whatever the device.
    optimizer_state state_dict() const;

    /// @brief Restores state and per-group options from `sd`. Everything is checked first
    /// (group count, parameters per group, option keys and values, state keys, dtypes and
    /// shapes); on any mismatch a typed error names the group, index or key with what was
    /// expected, and the optimizer is left unchanged. A group's keys that are none of the
    /// options (`'name'`...) become its `extra`, as PyTorch keeps them.
    void load_state_dict(const optimizer_state& sd);

    /// @brief Adds a group (PyTorch's add_param_group); a parameter may be in one group only.
    /// Its options are whole, as written: an option left out of `{.lr = 0.01}` takes the
    /// options struct's default (momentum 0...), not the optimizer's, where PyTorch fills what
    /// a group leaves out from `optimizer.defaults`. For that, the two overloads below.
    void add_param_group(group_type group);
    /// @brief Adds a group of `params` with defaults(): PyTorch's
    /// `add_param_group({'params': params})`. (A template taking a vector of param_refs alone,
    /// so that a braced `{params, {.lr = 0.1}}` still means a group_type.)
    template <class Params>
    requires std::same_as<std::remove_cvref_t<Params>, std::vector<nn::param_ref<T, Device>>>
    void add_param_group(Params&& params)
    {
        add_param_group(group_type(std::forward<Params>(params), m_defaults));
    }
    /// @brief Adds a group of `params` with defaults() as `edit` changes them: PyTorch's
    /// `add_param_group({'params': params, 'lr': 0.01})`, the other options the optimizer's:
    /// `opt.add_param_group(backbone.parameters(), [](auto& o) { o.lr = 0.01; })`.
    /// (`edit` must take the options by reference, `Options&` or `auto&`: one that takes a copy
    /// would edit the copy, so it does not compile.)
    template <detail::options_edit<Options> Edit>
    void add_param_group(std::vector<nn::param_ref<T, Device>> params, Edit&& edit)
    {
        Options options = m_defaults;
        edit(options);
        add_param_group(group_type(std::move(params), options));
    }

    /// @brief PyTorch's `optimizer.defaults`: the options the optimizer was made with (with
    /// several groups, the first group's), which add_param_group(params) gives a new group.
    const Options& defaults() const noexcept { return m_defaults; }

    /// @brief The groups, to read or change their options (lr...) between steps.
    std::span<group_type> param_groups() noexcept { return m_groups; }
    std::span<const group_type> param_groups() const noexcept { return m_groups; }

protected:
    /// @brief Validates every group; throws value_error if there is none.
    explicit optimizer(std::vector<group_type> groups);

private:
    Derived& derived() noexcept { return static_cast<Derived&>(*this); }
    static std::string prefix() { return std::string(Derived::name) + ": "; }

    Options m_defaults;
    std::vector<group_type> m_groups;
    // m_state[g][j]: state of m_groups[g].params[j].
    std::vector<std::vector<State>> m_state;
};

/*******************
 * implementation  *
 *******************/

namespace detail
{

inline std::string repr(double v)
{
    if (std::isnan(v))
        return "nan";
    if (std::isinf(v))
        return v > 0 ? "inf" : "-inf";
    // Python's repr: the shortest digits that round-trip, in fixed notation for decimal
    // exponents from -4 to 15 and scientific otherwise.
    char buf[64];
    auto sci = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific);
    const std::string_view s(buf, static_cast<std::size_t>(sci.ptr - buf));
    const int exponent = std::stoi(std::string(s.substr(s.find('e') + 1)));
    if (exponent < -4 || exponent >= 16)
        return std::string(s);
    auto fixed = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed);
    std::string out(buf, fixed.ptr);
    if (out.find('.') == std::string::npos)
        out += ".0";
    return out;
}

inline std::string type_name(const state_value& v)
{
    switch (v.index())
    {
    case 0:
        return "None";
    case 1:
        return "bool";
    case 2:
        return "int";
    case 3:
        return "float";
    case 4:
        return "tuple";
    case 5:
        return "tensor";
    default:
        return "str";
    }
}

inline state_value int_if_zero(double v)
{
    if (v == 0)
        return std::int64_t{0};
    return v;
}

template <class Vector>
auto data_of(Vector& v) noexcept
{
    if constexpr (std::is_pointer_v<decltype(v.data())>)
        return v.data();
    else
        return v.data().get(); // thrust::pointer
}

template <class Device, class Vector>
host_tensor to_host(const Vector& v, const std::vector<std::int64_t>& shape)
{
    using T = typename Vector::value_type;
    host_tensor h(dtype_of<T>(), shape);
    if (static_cast<std::size_t>(h.numel()) != v.size())
        throw shape_error("a state tensor has " + std::to_string(v.size()) +
                          " elements, its parameter's shape " + shape_string(shape) + " has " +
                          std::to_string(h.numel()) +
                          " (was the parameter resized after the optimizer stepped?)");
    Device::download(data_of(v), v.size(), h.template data<T>().data());
    return h;
}

template <class Device, class Vector>
void from_host(const host_tensor& h, Vector& out)
{
    using T = typename Vector::value_type;
    const auto data = h.template data<T>();
    out.resize(data.size());
    Device::upload(data.data(), data.size(), data_of(out));
}

template <class T>
EMBER_HOST_DEVICE T add_scaled(T a, T alpha, T b) noexcept
{
    EMBER_NO_FP_CONTRACT
#if defined(__CUDA_ARCH__)
    if constexpr (std::is_same_v<T, float>)
        return fmaf(alpha, b, a);
    else
        return fma(alpha, b, a);
#elif defined(__GNUC__) && (defined(__FMA__) || defined(__ARM_FEATURE_FMA))
    if constexpr (std::is_same_v<T, float>)
        return __builtin_fmaf(alpha, b, a);
    else
        return __builtin_fma(alpha, b, a);
#else
    return a + alpha * b;
#endif
}

template <class T>
EMBER_HOST_DEVICE T maximum(T a, T b) noexcept
{
    return (a != a || a > b) ? a : b;
}

#if EMBER_SIMD_DISPATCH
// sqrt_inplace's loop for the AVX2 variants (and the AVX-512 ones' tail). Builtins, not
// <immintrin.h>, which would add half a second to the compilation of every file that includes
// an optimizer.
template <class T>
__attribute__((target("avx"))) inline std::size_t sqrt_avx(T* t, std::size_t n) noexcept
{
    std::size_t i = 0;
    if constexpr (std::is_same_v<T, float>)
    {
        typedef float v8sf __attribute__((vector_size(32)));
        for (; i + 8 <= n; i += 8)
        {
            v8sf r;
            __builtin_memcpy(&r, t + i, sizeof(r));
            r = __builtin_ia32_sqrtps256(r);
            __builtin_memcpy(t + i, &r, sizeof(r));
        }
    }
    else
    {
        typedef double v4df __attribute__((vector_size(32)));
        for (; i + 4 <= n; i += 4)
        {
            v4df r;
            __builtin_memcpy(&r, t + i, sizeof(r));
            r = __builtin_ia32_sqrtpd256(r);
            __builtin_memcpy(t + i, &r, sizeof(r));
        }
    }
    return i;
}

// sqrt_inplace's loop for the AVX-512 variants: 16 floats or 8 doubles a vector. The builtins'
// names differ: GCC has only the masked form (all lanes, current rounding: 4).
template <class T>
__attribute__((target("avx512f"))) inline std::size_t sqrt_avx512(T* t, std::size_t n) noexcept
{
    std::size_t i = 0;
    if constexpr (std::is_same_v<T, float>)
    {
        typedef float v16sf __attribute__((vector_size(64)));
        for (; i + 16 <= n; i += 16)
        {
            v16sf r;
            __builtin_memcpy(&r, t + i, sizeof(r));
#if defined(__clang__)
            r = __builtin_ia32_sqrtps512(r, 4);
#else
            r = __builtin_ia32_sqrtps512_mask(r, r, (unsigned short)-1, 4);
#endif
            __builtin_memcpy(t + i, &r, sizeof(r));
        }
    }
    else
    {
        typedef double v8df __attribute__((vector_size(64)));
        for (; i + 8 <= n; i += 8)
        {
            v8df r;
            __builtin_memcpy(&r, t + i, sizeof(r));
#if defined(__clang__)
            r = __builtin_ia32_sqrtpd512(r, 4);
#else
            r = __builtin_ia32_sqrtpd512_mask(r, r, (unsigned char)-1, 4);
#endif
            __builtin_memcpy(t + i, &r, sizeof(r));
        }
    }
    return i;
}
#endif

template <simd_isa Isa, class T>
EMBER_HOST_DEVICE void sqrt_inplace(T* t, std::size_t n) noexcept
{
    std::size_t i = 0;
#if EMBER_SIMD_DISPATCH
    if constexpr (Isa == simd_isa::avx512)
    {
        i = sqrt_avx512(t, n);
        i += sqrt_avx(t + i, n - i); // a ragged tail's 8 or 4 at a time
    }
    else if constexpr (Isa != simd_isa::baseline)
    {
        i = sqrt_avx(t, n);
    }
#endif
#if defined(__CUDA_ARCH__)
    // GPUs have no errno: the plain loop below is the fast one.
#elif defined(__AVX__)
    if constexpr (std::is_same_v<T, float>)
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(t + i, _mm256_sqrt_ps(_mm256_loadu_ps(t + i)));
    else
        for (; i + 4 <= n; i += 4)
            _mm256_storeu_pd(t + i, _mm256_sqrt_pd(_mm256_loadu_pd(t + i)));
#elif defined(__SSE2__)
    if constexpr (std::is_same_v<T, float>)
        for (; i + 4 <= n; i += 4)
            _mm_storeu_ps(t + i, _mm_sqrt_ps(_mm_loadu_ps(t + i)));
    else
        for (; i + 2 <= n; i += 2)
            _mm_storeu_pd(t + i, _mm_sqrt_pd(_mm_loadu_pd(t + i)));
#elif defined(__ARM_NEON) && defined(__aarch64__)
    if constexpr (std::is_same_v<T, float>)
        for (; i + 4 <= n; i += 4)
            vst1q_f32(t + i, vsqrtq_f32(vld1q_f32(t + i)));
    else
        for (; i + 2 <= n; i += 2)
            vst1q_f64(t + i, vsqrtq_f64(vld1q_f64(t + i)));
#endif
    for (; i < n; ++i)
        t[i] = std::sqrt(t[i]);
}

#if EMBER_SIMD_DISPATCH
// kernel over [0, n) on the cpu, block by block as cpu::for_each runs them, compiled for the
// instruction set of the variant it is inlined into (blockwise_avx2, blockwise_avx512).
template <simd_isa Isa, std::size_t Width, class Kernel>
inline void blockwise_cpu(std::size_t n, const Kernel& kernel)
{
    for (std::size_t begin = 0; begin < n; begin += Width)
        kernel.template block<Width, Isa>(begin, n - begin < Width ? n : begin + Width);
}

template <std::size_t Width, class Kernel>
EMBER_TARGET_AVX2 void blockwise_avx2(std::size_t n, const Kernel& kernel)
{
    blockwise_cpu<simd_isa::avx2, Width>(n, kernel);
}

template <std::size_t Width, class Kernel>
EMBER_TARGET_AVX512 void blockwise_avx512(std::size_t n, const Kernel& kernel)
{
    blockwise_cpu<simd_isa::avx512, Width>(n, kernel);
}
#endif

template <class Device, std::size_t Width, class Kernel>
void blockwise_step(std::size_t n, const Kernel& kernel)
{
#if EMBER_SIMD_DISPATCH
    if constexpr (std::is_same_v<Device, cpu>)
        switch (active_simd_isa())
        {
        case simd_isa::avx512:
            return blockwise_avx512<Width>(n, kernel);
        case simd_isa::avx2:
            return blockwise_avx2<Width>(n, kernel);
        case simd_isa::baseline:
            break;
        }
#endif
    Device::for_each(
        block_count(n, Width), EMBER_KERNEL(std::size_t b) {
            constexpr std::size_t width = Width;
            const std::size_t begin = b * width;
            kernel.template block<width, simd_isa::baseline>(begin,
                                                             n - begin < width ? n : begin + width);
        });
}

// `Kernel` on a part of a parameter whose gradient is an outer product, run by blockwise_step
// a piece of grad_piece elements at a time: the piece of the gradient written first into a
// buffer on the stack, then the kernel over the piece in blocks of block_size.
template <class Kernel, class Arrays, class T>
struct from_outer_product
{
    Arrays arrays; // from element `first` of the parameter on; `g` unused
    nn::grad_view<T> grad;
    std::size_t first;

    template <std::size_t Piece, simd_isa Isa>
    EMBER_SIMD_INLINE EMBER_HOST_DEVICE void block(std::size_t begin, std::size_t end) const
    {
        constexpr std::size_t width = block_size<cpu>;
        alignas(64) T piece[Piece];
        const std::size_t len = end - begin;
        grad.write(first + begin, len, piece);
        Arrays part = arrays.part_from(begin);
        part.g = piece;
        const Kernel kernel{part};
        for (std::size_t b = 0; b < len; b += width)
            kernel.template block<width, Isa>(b, len - b < width ? len : b + width);
    }
};

template <class Device, class Kernel, class T, class Arrays>
void grad_pieces(const nn::grad_view<T>& grad, const Arrays& arrays, std::size_t first,
                 std::size_t last)
{
    if constexpr (std::is_same_v<Device, cpu>)
        if (grad.is_outer())
            return blockwise_step<cpu, grad_piece>(
                last - first,
                from_outer_product<Kernel, Arrays, T>{arrays.part_from(first), grad, first});
    blockwise_step<Device>(last - first, Kernel{arrays.part_from(first)});
}

inline void check_state_size(std::string_view name, std::size_t index, std::string_view key,
                             std::size_t state_size, std::size_t param_size)
{
    if (state_size != param_size)
        throw shape_error(std::string(name) + ": state[" + std::to_string(index) + "]['" +
                          std::string(key) + "'] has " + std::to_string(state_size) +
                          " elements, the parameter has " + std::to_string(param_size) +
                          " (was the parameter resized after the optimizer stepped?)");
}

inline const state_value* dict_reader::find(std::string_view key)
{
    const state_value* v = m_dict->find(key);
    if (v)
        m_read.emplace_back(key);
    return v;
}

inline const state_value& dict_reader::required(std::string_view key)
{
    if (const state_value* v = find(key))
        return *v;
    throw key_error(m_where + ": missing key '" + std::string(key) + "'");
}

inline double dict_reader::number(std::string_view key)
{
    const state_value& v = required(key);
    if (const auto* i = std::get_if<std::int64_t>(&v))
        return static_cast<double>(*i);
    if (const auto* d = std::get_if<double>(&v))
        return *d;
    throw value_error(where(key) + ": expected a number, got " + type_name(v));
}

inline double dict_reader::number(std::string_view key, double fallback)
{
    return m_dict->contains(key) ? number(key) : fallback;
}

inline std::optional<double> dict_reader::optional_number(std::string_view key)
{
    if (!m_dict->contains(key))
        return std::nullopt;
    return number(key);
}

inline bool dict_reader::boolean(std::string_view key, bool fallback)
{
    const state_value* v = find(key);
    if (!v)
        return fallback;
    if (const auto* b = std::get_if<bool>(v))
        return *b;
    throw value_error(where(key) + ": expected a bool, got " + type_name(*v));
}

inline void dict_reader::ignored_flag(std::string_view key)
{
    const state_value* v = find(key);
    if (v && !std::holds_alternative<std::monostate>(*v) && !std::holds_alternative<bool>(*v))
        throw value_error(where(key) + ": expected None or a bool, got " + type_name(*v));
}

inline std::array<double, 2> dict_reader::pair(std::string_view key)
{
    const state_value& v = required(key);
    const auto* t = std::get_if<std::vector<double>>(&v);
    if (!t)
        throw value_error(where(key) + ": expected a tuple of 2 floats, got " + type_name(v));
    if (t->size() != 2)
        throw value_error(where(key) + ": expected a tuple of 2 floats, got " +
                          std::to_string(t->size()));
    return {(*t)[0], (*t)[1]};
}

template <class T>
const host_tensor* dict_reader::tensor(std::string_view key, const std::vector<std::int64_t>& shape,
                                       bool required, bool none_ok)
{
    const state_value* v = find(key);
    if (!v)
    {
        if (required)
            throw key_error(m_where + ": missing key '" + std::string(key) + "'");
        return nullptr;
    }
    if (none_ok && std::holds_alternative<std::monostate>(*v))
        return nullptr;
    const auto* t = std::get_if<host_tensor>(v);
    if (!t)
        throw value_error(where(key) + ": expected a tensor, got " + type_name(*v));
    const bool wide_float = t->dtype() == dtype::float32 || t->dtype() == dtype::float64;
    if (t->dtype() != dtype_of<T>() && !(wide_float && std::is_floating_point_v<T>))
        throw dtype_error(where(key) + ": expected dtype " +
                          std::string(dtype_name(dtype_of<T>())) + " (the parameter's, or " +
                          "float32 or float64 to convert), got " +
                          std::string(dtype_name(t->dtype())));
    if (t->shape() != shape)
        throw shape_error(where(key) + ": expected shape " + shape_string(shape) +
                          " (the parameter's), got " + shape_string(t->shape()));
    if (t->dtype() == dtype_of<T>())
        return t;
    // As PyTorch's load_state_dict casts a state tensor to its parameter's dtype: a double
    // run's momentum continues a float one's, rounded to nearest (or the other way, exactly).
    host_tensor& converted = m_converted.emplace_back(host_tensor::empty(dtype_of<T>(), shape));
    const std::span<T> out = converted.template data<T>();
    if (t->dtype() == dtype::float32)
        std::copy(t->data<float>().begin(), t->data<float>().end(), out.begin());
    else
        std::transform(t->data<double>().begin(), t->data<double>().end(), out.begin(),
                       [](double x) { return static_cast<T>(x); });
    return &converted;
}

inline double dict_reader::step(std::string_view key)
{
    const state_value& v = required(key);
    double s = 0;
    if (const auto* i = std::get_if<std::int64_t>(&v))
        s = static_cast<double>(*i);
    else if (const auto* d = std::get_if<double>(&v))
        s = *d;
    else if (const auto* t = std::get_if<host_tensor>(&v); t && t->numel() == 1)
    {
        switch (t->dtype())
        {
        case dtype::float32:
            s = t->data<float>()[0];
            break;
        case dtype::float64:
            s = t->data<double>()[0];
            break;
        case dtype::int64:
            s = static_cast<double>(t->data<std::int64_t>()[0]);
            break;
        default:
            throw dtype_error(where(key) + ": expected a float32, float64 or int64 tensor, got " +
                              std::string(dtype_name(t->dtype())));
        }
    }
    else
        throw value_error(where(key) + ": expected a number or a one-element tensor, got " +
                          (t ? "a tensor of shape " + shape_string(t->shape()) : type_name(v)));
    if (!(s >= 0) || std::isinf(s))
        throw value_error(where(key) + ": expected a non-negative step count, got " + repr(s));
    return s;
}

inline bool dict_reader::was_read(std::string_view key) const
{
    return std::find(m_read.begin(), m_read.end(), key) != m_read.end();
}

template <class Pick>
std::string dict_reader::unread_keys(Pick&& pick) const
{
    std::string keys;
    for (const auto& [key, value] : *m_dict)
        if (!was_read(key) && pick(key))
            keys += (keys.empty() ? "'" : ", '") + key + "'";
    return keys;
}

inline void dict_reader::finish() const
{
    if (const std::string unknown = unread_keys([](std::string_view) { return true; });
        !unknown.empty())
        throw key_error(m_where + ": unexpected key(s) " + unknown);
}

inline ordered_dict<state_value> dict_reader::unread_extras() const
{
    if (const std::string reserved = unread_keys(reserved_group_key); !reserved.empty())
        throw key_error(m_where + ": unexpected key(s) " + reserved +
                        " (options of another PyTorch optimizer, or ones this one does not "
                        "have)");
    ordered_dict<state_value> out;
    for (const auto& [key, value] : *m_dict)
        if (!was_read(key))
            out.insert(key, value);
    return out;
}

} // namespace detail

template <class Derived, class T, class Options, class State, class Device>
optimizer<Derived, T, Options, State, Device>::optimizer(std::vector<group_type> groups)
{
    if (groups.empty())
        throw value_error(prefix() + "optimizer got an empty parameter list");
    m_defaults = groups.front().options;
    m_groups.reserve(groups.size());
    m_state.reserve(groups.size());
    for (auto& g : groups)
        add_param_group(std::move(g));
}

template <class Derived, class T, class Options, class State, class Device>
void optimizer<Derived, T, Options, State, Device>::add_param_group(group_type group)
{
    const std::string where = prefix() + "param group " + std::to_string(m_groups.size());
    Derived::check_options(group.options, where);
    std::unordered_set<const void*> seen;
    for (const auto& g : m_groups)
        for (const auto& p : g.params)
            seen.insert(p.address());
    for (const auto& p : group.params)
        if (!seen.insert(p.address()).second)
        {
            bool within = std::count(group.params.begin(), group.params.end(), p) > 1;
            throw value_error(where + (within ? ": a parameter appears twice in the group"
                                              : ": some parameters appear in more than one "
                                                "parameter group"));
        }
    m_state.emplace_back(group.params.size());
    m_groups.push_back(std::move(group));
}

template <class Derived, class T, class Options, class State, class Device>
void optimizer<Derived, T, Options, State, Device>::zero_grad(bool set_to_none)
{
    for (auto& g : m_groups)
        for (const auto& p : g.params)
            p.zero_grad(set_to_none); // lazily: see nn::parameter
}

template <class Derived, class T, class Options, class State, class Device>
void optimizer<Derived, T, Options, State, Device>::step()
{
    std::size_t index = 0;
    for (std::size_t g = 0; g < m_groups.size(); ++g)
    {
        group_type& group = m_groups[g];
        std::vector<State>& states = m_state[g];
        if (group.params.size() != states.size())
            throw value_error(prefix() + "param group " + std::to_string(g) + " has " +
                              std::to_string(group.params.size()) + " parameters, it had " +
                              std::to_string(states.size()) +
                              " (add parameters with add_param_group, not through param_groups())");
        for (std::size_t j = 0; j < group.params.size(); ++j, ++index)
        {
            const nn::param_ref<T, Device>& p = group.params[j];
            if (!p.requires_grad() || !p.has_grad()) // PyTorch skips a grad that is None
                continue;
            std::span<T> value = p.value();
            const nn::grad_view<T> grad = p.view_grad();
            if (grad.size != value.size())
                throw shape_error(prefix() + "parameter " + std::to_string(index) + " has " +
                                  std::to_string(value.size()) + " elements but its grad has " +
                                  std::to_string(grad.size));
            derived().update(group.options, value, grad, states[j], index);
        }
    }
}

template <class Derived, class T, class Options, class State, class Device>
optimizer_state optimizer<Derived, T, Options, State, Device>::state_dict() const
{
    optimizer_state sd;
    std::int64_t index = 0;
    for (std::size_t g = 0; g < m_groups.size(); ++g)
    {
        const group_type& group = m_groups[g];
        param_group_state packed;
        Derived::write_options(group.options, packed.options);
        if (group.initial_lr)
            packed.options.insert("initial_lr", *group.initial_lr);
        for (const auto& [key, value] : group.extra)
        {
            if (packed.options.contains(key) || detail::reserved_group_key(key))
                throw value_error(prefix() + "state_dict: param_groups[" + std::to_string(g) +
                                  "]: extra key '" + key +
                                  "' is the name of an option; a group's own keys need names "
                                  "of their own");
            packed.options.insert(key, value);
        }
        for (std::size_t j = 0; j < group.params.size(); ++j, ++index)
        {
            packed.params.push_back(index);
            const State& s = m_state[g][j];
            if (!s.initialized)
                continue;
            try
            {
                Derived::write_state(s, group.params[j].shape(), sd.state[index]);
            }
            catch (const shape_error& e)
            {
                throw shape_error(prefix() + "state_dict: state[" + std::to_string(index) +
                                  "]: " + e.what());
            }
        }
        sd.param_groups.push_back(std::move(packed));
    }
    return sd;
}

template <class Derived, class T, class Options, class State, class Device>
void optimizer<Derived, T, Options, State, Device>::load_state_dict(const optimizer_state& sd)
{
    const std::string where = prefix() + "load_state_dict";
    if (sd.param_groups.size() != m_groups.size())
        throw value_error(where +
                          ": loaded state dict has a different number of parameter groups: "
                          "expected " +
                          std::to_string(m_groups.size()) + ", got " +
                          std::to_string(sd.param_groups.size()));

    // Everything is read into new objects first; the optimizer changes only at the end.
    std::vector<Options> options;
    std::vector<std::optional<double>> initial_lrs;
    std::vector<ordered_dict<state_value>> extras;
    std::map<std::int64_t, std::pair<std::size_t, std::size_t>> slot_of; // saved index → (g, j)
    for (std::size_t g = 0; g < m_groups.size(); ++g)
    {
        const param_group_state& saved = sd.param_groups[g];
        const std::string at = where + ": param_groups[" + std::to_string(g) + "]";
        if (saved.params.size() != m_groups[g].params.size())
            throw value_error(at +
                              ": loaded state dict contains a parameter group that doesn't "
                              "match the size of optimizer's group: expected " +
                              std::to_string(m_groups[g].params.size()) + " parameters, got " +
                              std::to_string(saved.params.size()));
        detail::dict_reader reader(saved.options, at);
        initial_lrs.push_back(reader.optional_number("initial_lr"));
        options.push_back(Derived::read_options(reader));
        // Keys no option reads are the group's own, kept as PyTorch keeps them; an option
        // missing or of the wrong type was an error above.
        extras.push_back(reader.unread_extras());
        Derived::check_options(options.back(), at);
        for (std::size_t j = 0; j < saved.params.size(); ++j)
            if (!slot_of.emplace(saved.params[j], std::pair{g, j}).second)
                throw value_error(at + ": parameter index " + std::to_string(saved.params[j]) +
                                  " appears more than once in param_groups");
    }

    std::vector<std::vector<State>> state;
    state.reserve(m_groups.size());
    for (const auto& g : m_groups)
        state.emplace_back(g.params.size());
    for (const auto& [index, dict] : sd.state)
    {
        const std::string at = where + ": state[" + std::to_string(index) + "]";
        auto it = slot_of.find(index);
        if (it == slot_of.end())
            throw key_error(at + ": no parameter group lists parameter " + std::to_string(index));
        if (dict.empty())
            continue;
        auto [g, j] = it->second;
        detail::dict_reader reader(dict, at);
        state[g][j] = Derived::read_state(reader, options[g], m_groups[g].params[j].shape());
        reader.finish();
    }

    for (std::size_t g = 0; g < m_groups.size(); ++g)
    {
        m_groups[g].options = options[g];
        m_groups[g].initial_lr = initial_lrs[g];
        m_groups[g].extra = std::move(extras[g]);
    }
    m_state = std::move(state);
}

} // namespace ember::optim

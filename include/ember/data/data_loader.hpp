#pragma once
/// @file
/// data_loader (torch.utils.data.DataLoader without workers): mini-batches of a dataset, in
/// order or shuffled, assembled into two buffers it keeps (one for full batches, one for a
/// shorter last batch), so that after the first epoch no batch allocates. Its order and position
/// go into a checkpoint: a run resumed in the middle of an epoch sees the batches that a run that
/// never stopped would have seen.
///
/// @code
/// ember::data::data_loader loader(train, {.batch_size = 8, .shuffle = true, .seed = 42});
/// for (int epoch = 0; epoch < epochs; ++epoch)
///     for (const auto& [x, y] : loader)
///         ... // x: [8, F], y: [8, 1], the same objects for every full batch
/// ckpt.data_state = loader.state();       // ... later: loader.load_state(ckpt.data_state)
/// @endcode
///
/// Random numbers are drawn as PyTorch 1.13 draws them, so the batches equal PyTorch's:
/// - with `seed`, from the loader's own generator, as `DataLoader(..., generator=g)` with
///   `g = torch.Generator().manual_seed(seed)`;
/// - with `generator`, from that one, shared with whatever else draws from it, as PyTorch's
///   `DataLoader(..., generator=g)` with the `g` that `random_split(..., generator=g)` used;
/// - without, from ember's default generator, as a DataLoader without a generator draws from
///   torch's default one. Like PyTorch, such a loader draws from it at every epoch even when it
///   does not shuffle (the workers' base seed), which a training loop with dropout notices.
///
/// An epoch ends when next() finds no batch left (a range-for loop that runs to its end). A loop
/// left early, or a loader given a state saved in the middle of an epoch, continues that epoch at
/// the next next() or begin().

#include "ember/core/error.hpp"
#include "ember/core/generator.hpp"
#include "ember/core/host_tensor.hpp"
#include "ember/core/value.hpp"
#include "ember/data/dataset.hpp"
#include "ember/data/randperm.hpp"

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <limits>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace ember::data
{

/// @brief DataLoader's arguments (the ones that mean something without workers).
struct data_loader_options
{
    std::size_t batch_size = 1;
    bool shuffle = false;
    bool drop_last = false;
    /// Seeds the loader's own generator; without it (nor `generator`), the default generator
    /// is drawn from.
    std::optional<std::uint64_t> seed;
    /// A generator to draw from, not the loader's own: PyTorch's `generator=g` for a `g` also
    /// drawn from elsewhere (random_split). It must outlive the loader, and it is the program's
    /// to save (state() holds None for it, as for the default generator). Not with `seed`.
    ember::generator* generator = nullptr;
};

/// @brief Mini-batches of a dataset, epoch after epoch (torch DataLoader, no workers). It refers
/// to the dataset, which must outlive it.
template <dataset D>
class data_loader
{
public:
    using dataset_type = D;
    using batch_type = typename D::batch_type;
    class iterator;

    /// @brief Throws value_error if batch_size is 0, if shuffle is asked of an empty dataset, or
    /// if both seed and generator are given.
    explicit data_loader(const D& data, const data_loader_options& options = {});
    data_loader(const D&&, const data_loader_options& = {}) = delete; // would dangle

    const D& dataset() const noexcept { return *m_data; }
    const data_loader_options& options() const noexcept { return m_options; }
    /// @brief Batches in an epoch (len(loader)).
    std::size_t size() const noexcept;

    /// @brief The next batch of the current epoch, starting a new epoch if none is under way;
    /// nullptr when the epoch has no batch left, which ends it. The batch is a member buffer,
    /// overwritten by the next call.
    const batch_type* next();

    /// @brief Continues the epoch under way, or starts one; `for (const auto& [x, y] : loader)`.
    iterator begin() { return iterator(this, next()); }
    std::default_sentinel_t end() const noexcept { return {}; }

    /// @brief Epochs finished so far.
    std::int64_t epoch() const noexcept { return m_epoch; }
    /// @brief Whether an epoch is under way (started and not yet ended).
    bool in_epoch() const noexcept { return m_in_epoch; }
    /// @brief Samples handed out in the epoch under way.
    std::size_t position() const noexcept { return m_position; }
    /// @brief The epoch's order of sample indices (valid while in_epoch()).
    std::span<const std::size_t> order() const noexcept { return m_order; }
    /// @brief The generator epochs draw from: options().generator when given, the loader's own
    /// when seeded, else the default.
    ember::generator& random_source() noexcept;

    /// @brief Everything needed to continue exactly here, as a dict for checkpoint.data_state:
    /// `version` (2), `epoch`, `in_epoch`, `tail_pending` (the sampler's trailing permutation
    /// not yet drawn), `position`, `size`, `order` (int64 tensor, or None
    /// between epochs) and `generator` (the own generator's state, or None when unseeded, since
    /// the default generator is saved with the checkpoint's generators).
    value state() const;
    /// @brief Restores a state(); checks all of it first and throws value_error (or key_error)
    /// naming what does not fit this loader, leaving the loader as it was.
    void load_state(const value& state);

private:
    void start_epoch();

    const D* m_data;
    data_loader_options m_options;
    ember::generator m_generator; // the loader's own, used when options().seed is set
    std::vector<std::size_t> m_order;
    std::size_t m_position = 0;
    std::int64_t m_epoch = 0;
    bool m_in_epoch = false;
    // RandomSampler(generator=g) draws one more permutation once its indices run out (lazily,
    // as the Python generator it is): still to draw in the epoch under way.
    bool m_tail_pending = false;
    batch_type m_full; // full batches
    batch_type m_tail; // a last batch shorter than batch_size
};

/// @brief Input iterator over the batches of the current epoch.
template <dataset D>
class data_loader<D>::iterator
{
public:
    using iterator_category = std::input_iterator_tag;
    using value_type = batch_type;
    using difference_type = std::ptrdiff_t;
    using reference = const batch_type&;
    using pointer = const batch_type*;

    iterator() = default;
    reference operator*() const noexcept { return *m_batch; }
    pointer operator->() const noexcept { return m_batch; }
    iterator& operator++()
    {
        m_batch = m_loader->next();
        return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) noexcept
    {
        return it.m_batch == nullptr;
    }

private:
    friend class data_loader;
    iterator(data_loader* loader, pointer batch) noexcept : m_loader(loader), m_batch(batch) {}

    data_loader* m_loader = nullptr;
    pointer m_batch = nullptr;
};

/*******************
 * implementation  *
 *******************/

namespace detail
{

inline value generator_state_to_value(const generator_state& s)
{
    host_tensor mt(dtype::int64, {static_cast<std::int64_t>(s.mt.size())});
    auto words = mt.data<std::int64_t>();
    for (std::size_t i = 0; i < s.mt.size(); ++i)
        words[i] = s.mt[i];
    value::dict d;
    d.insert("seed", static_cast<std::int64_t>(s.seed)); // two's complement above 2^63
    d.insert("mt", std::move(mt));
    d.insert("index", static_cast<std::int64_t>(s.index));
    d.insert("has_next_normal", s.has_next_normal);
    d.insert("next_normal", s.next_normal);
    return d;
}

// Finds `key` of `d` as a T, or throws naming the key and what was found.
template <class T>
const T& state_entry(const value::dict& d, const char* key, const char* what)
{
    const value* v = d.find(key);
    if (!v)
        throw key_error(std::string("data_loader: load_state: ") + what + " has no key '" + key +
                        "'");
    if (!std::holds_alternative<T>(v->data()))
        throw value_error(std::string("data_loader: load_state: ") + what + "'s '" + key + "' is " +
                          ember::detail::a_or_an(v->type_name()));
    return std::get<T>(v->data());
}

inline generator_state generator_state_from_value(const value& v)
{
    const char* what = "state['generator']";
    if (!v.is_dict())
        throw value_error(std::string("data_loader: load_state: ") + what + " is " +
                          ember::detail::a_or_an(v.type_name()) + ", expected a dict");
    const auto& d = v.as<value::dict>();
    generator_state s;
    s.seed = static_cast<std::uint64_t>(state_entry<std::int64_t>(d, "seed", what));
    const auto& mt = state_entry<host_tensor>(d, "mt", what);
    if (mt.dtype() != dtype::int64 || mt.numel() != s.mt.size() || mt.dim() != 1)
        throw value_error("data_loader: load_state: state['generator']['mt'] has dtype " +
                          std::string(dtype_name(mt.dtype())) + " and shape " +
                          shape_string(mt.shape()) + ", expected int64 [624]");
    auto words = mt.data<std::int64_t>();
    for (std::size_t i = 0; i < s.mt.size(); ++i)
    {
        if (words[i] < 0 || words[i] > std::numeric_limits<std::uint32_t>::max())
            throw value_error("data_loader: load_state: state['generator']['mt'][" +
                              std::to_string(i) + "] = " + std::to_string(words[i]) +
                              " is not a 32-bit word");
        s.mt[i] = static_cast<std::uint32_t>(words[i]);
    }
    const std::int64_t index = state_entry<std::int64_t>(d, "index", what);
    if (index < 0 || index > 624)
        throw value_error("data_loader: load_state: state['generator']['index'] = " +
                          std::to_string(index) + ", expected 0 to 624");
    s.index = static_cast<std::uint32_t>(index);
    s.has_next_normal = state_entry<bool>(d, "has_next_normal", what);
    s.next_normal = state_entry<double>(d, "next_normal", what);
    return s;
}

} // namespace detail

template <dataset D>
data_loader<D>::data_loader(const D& data, const data_loader_options& options)
    : m_data(&data), m_options(options), m_generator(options.seed.value_or(0))
{
    if (options.batch_size == 0)
        throw value_error("data_loader: batch_size should be a positive integer value, but got "
                          "batch_size=0");
    if (options.shuffle && data.size() == 0)
        throw value_error("data_loader: cannot shuffle an empty dataset (num_samples should be a "
                          "positive integer value, but got num_samples=0)");
    if (options.seed && options.generator)
        throw value_error("data_loader: give a seed (the loader's own generator) or a generator "
                          "to share, not both");
}

template <dataset D>
std::size_t data_loader<D>::size() const noexcept
{
    const std::size_t n = m_data->size(), b = m_options.batch_size;
    return n / b + (!m_options.drop_last && n % b != 0); // not (n + b - 1) / b: b may be huge
}

template <dataset D>
ember::generator& data_loader<D>::random_source() noexcept
{
    if (m_options.generator)
        return *m_options.generator;
    return m_options.seed ? m_generator : default_generator();
}

template <dataset D>
void data_loader<D>::start_epoch()
{
    const std::size_t n = m_data->size();
    ember::generator& g = random_source();
    // _BaseDataLoaderIter draws the workers' base seed first, shuffling or not.
    static_cast<void>(g.random64());
    m_order.resize(n);
    if (!m_options.shuffle)
        std::iota(m_order.begin(), m_order.end(), std::size_t{0});
    else if (m_options.seed || m_options.generator) // RandomSampler(generator=g)
    {
        randperm(std::span<std::size_t>(m_order), g);
        // RandomSampler's `randperm(n)[:num_samples % n]` after its loop: one more permutation,
        // none of it used, drawn when the batches ask for an index past the last (next()), as
        // a generator shared with other draws shows.
        m_tail_pending = true;
    }
    else
    {
        // RandomSampler without a generator seeds a new one from the default generator
        // (`int(torch.empty((), dtype=torch.int64).random_())`, 63 bits) each epoch.
        ember::generator fresh(g.random64() & std::numeric_limits<std::int64_t>::max());
        randperm(std::span<std::size_t>(m_order), fresh);
    }
    m_position = 0;
    m_in_epoch = true;
}

template <dataset D>
auto data_loader<D>::next() -> const batch_type*
{
    if (!m_in_epoch)
        start_epoch();
    const std::size_t n = m_order.size(), b = m_options.batch_size;
    const std::size_t left = n - m_position;
    if (left < b && m_tail_pending) // the batch sampler asks past the last index
    {
        ember::detail::discard_randperm(n, random_source());
        m_tail_pending = false;
    }
    if (left == 0 || (m_options.drop_last && left < b))
    {
        m_in_epoch = false;
        ++m_epoch;
        return nullptr;
    }
    const std::size_t k = left < b ? left : b;
    batch_type& out = k == b ? m_full : m_tail;
    m_data->gather(std::span<const std::size_t>(m_order.data() + m_position, k), out);
    m_position += k;
    return &out;
}

template <dataset D>
value data_loader<D>::state() const
{
    value::dict d;
    d.insert("version", 2);
    d.insert("epoch", m_epoch);
    d.insert("in_epoch", m_in_epoch);
    d.insert("tail_pending", m_in_epoch && m_tail_pending);
    d.insert("position", static_cast<std::int64_t>(m_position));
    d.insert("size", static_cast<std::int64_t>(m_data->size()));
    if (m_in_epoch)
    {
        host_tensor order(dtype::int64, {static_cast<std::int64_t>(m_order.size())});
        auto o = order.data<std::int64_t>();
        for (std::size_t i = 0; i < m_order.size(); ++i)
            o[i] = static_cast<std::int64_t>(m_order[i]);
        d.insert("order", std::move(order));
    }
    else
        d.insert("order", value());
    d.insert("generator",
             m_options.seed ? detail::generator_state_to_value(m_generator.state()) : value());
    return d;
}

template <dataset D>
void data_loader<D>::load_state(const value& state)
{
    const char* what = "state";
    if (!state.is_dict())
        throw value_error("data_loader: load_state: the state is " +
                          ember::detail::a_or_an(state.type_name()) +
                          ", expected the dict that state() returns");
    const auto& d = state.as<value::dict>();
    using detail::state_entry;
    const std::int64_t version = state_entry<std::int64_t>(d, "version", what);
    if (version != 1 && version != 2)
        throw value_error("data_loader: load_state: the state has version " +
                          std::to_string(version) + "; this ember reads versions 1 and 2");
    const std::int64_t epoch = state_entry<std::int64_t>(d, "epoch", what);
    const bool in_epoch = state_entry<bool>(d, "in_epoch", what);
    // Version 1 drew the trailing permutation as an epoch began: none is pending.
    const bool tail_pending = version >= 2 && state_entry<bool>(d, "tail_pending", what);
    if (tail_pending && !(in_epoch && (m_options.seed || m_options.generator) && m_options.shuffle))
        throw value_error("data_loader: load_state: state['tail_pending'] is true, but only a "
                          "shuffling loader with a seed or a generator in an epoch has one");
    const std::int64_t position = state_entry<std::int64_t>(d, "position", what);
    const std::int64_t size = state_entry<std::int64_t>(d, "size", what);
    const std::size_t n = m_data->size();
    if (size < 0 || static_cast<std::uint64_t>(size) != n)
        throw value_error("data_loader: load_state: the state is for a dataset of " +
                          std::to_string(size) + " samples, this loader's has " +
                          std::to_string(n));
    if (epoch < 0)
        throw value_error("data_loader: load_state: negative epoch " + std::to_string(epoch));
    if (position < 0 || static_cast<std::uint64_t>(position) > n)
        throw value_error("data_loader: load_state: position " + std::to_string(position) +
                          " is outside the dataset's " + std::to_string(n) + " samples");

    std::vector<std::size_t> order;
    if (in_epoch)
    {
        const auto& o = state_entry<host_tensor>(d, "order", what);
        if (o.dtype() != dtype::int64 || o.dim() != 1 || o.numel() != n)
            throw value_error("data_loader: load_state: state['order'] has dtype " +
                              std::string(dtype_name(o.dtype())) + " and shape " +
                              shape_string(o.shape()) + ", expected int64 [" + std::to_string(n) +
                              "]");
        // A permutation, or the loader would repeat or skip samples (and index out of range).
        std::vector<bool> seen(n, false);
        order.resize(n);
        auto values = o.template data<std::int64_t>();
        for (std::size_t i = 0; i < n; ++i)
        {
            const std::int64_t j = values[i];
            if (j < 0 || static_cast<std::uint64_t>(j) >= n || seen[static_cast<std::size_t>(j)])
                throw value_error("data_loader: load_state: state['order'] is not a "
                                  "permutation of 0.." +
                                  std::to_string(n - 1) + ": entry " + std::to_string(i) + " is " +
                                  std::to_string(j));
            seen[static_cast<std::size_t>(j)] = true;
            order[i] = static_cast<std::size_t>(j);
        }
    }

    const value* g = d.find("generator");
    if (!g)
        throw key_error("data_loader: load_state: state has no key 'generator'");
    std::optional<generator_state> gs;
    if (m_options.seed)
    {
        if (g->is_none())
            throw value_error("data_loader: load_state: the state comes from a loader without "
                              "its own generator (no seed), this one has a seed");
        gs = detail::generator_state_from_value(*g);
    }
    else if (!g->is_none())
        throw value_error(
            "data_loader: load_state: the state comes from a loader with its own "
            "generator (a seed), this one draws from " +
            std::string(m_options.generator ? "a shared generator" : "the default generator"));

    // Everything checked: commit.
    m_epoch = epoch;
    m_in_epoch = in_epoch;
    m_tail_pending = tail_pending;
    m_position = in_epoch ? static_cast<std::size_t>(position) : 0;
    if (in_epoch)
        m_order = std::move(order);
    if (gs)
        m_generator.set_state(*gs);
}

} // namespace ember::data

#pragma once
/// @file
/// Learning-rate schedulers with PyTorch 1.13's semantics: step_lr, multi_step_lr,
/// exponential_lr, cosine_annealing_lr, linear_lr (warm-up) and reduce_lr_on_plateau.
///
/// ```cpp
/// ember::optim::sgd opt(model.parameters(), {.lr = 0.1});
/// ember::optim::cosine_annealing_lr sched(opt, {.T_max = 100, .eta_min = 1e-4});
/// for (int epoch = 0; epoch < 100; ++epoch)
/// {
///     train_one_epoch(model, opt); // opt.step() per batch
///     sched.step();
/// }
/// ck.scheduler_state = sched.state_dict(); // into ember::checkpoint, any format
/// ```
///
/// A scheduler works with any ember optimizer: it reads and writes `param_groups()[g].options.lr`
/// and sets `param_groups()[g].initial_lr` (saved as PyTorch's `initial_lr`). Like PyTorch's,
/// constructing one performs the first step (last_epoch becomes 0); step() after each epoch
/// uses the chainable (recursive) form, which follows an lr changed from outside between steps;
/// step(epoch) uses the closed form (PyTorch's deprecated `scheduler.step(epoch)`). Every lr is
/// computed with the operations PyTorch's get_lr() performs, in the same order, in double, so
/// the sequences are PyTorch's bit for bit.
///
/// state_dict() is an ember::value dict with PyTorch's keys, in PyTorch's order (`step_size`,
/// `gamma`, `base_lrs`, `last_epoch`, `verbose`, `_step_count`, `_get_lr_called_within_step`,
/// `_last_lr`...), the shape `ember::checkpoint::scheduler_state` holds and every file format
/// saves. load_state_dict() checks every key and type first and changes nothing on error.
/// One difference: multi_step_lr's `milestones` (a Counter `{epoch: count}` in PyTorch) is a
/// dict whose keys are the epochs' decimal strings, as ember's PyTorch loader reads int keys;
/// a `.pth` file gets them back as a Counter of int epochs (serialize/pytorch.hpp).
///
/// Epochs, periods and counts are int64 where Python's ints are unbounded: ember's schedulers
/// take them up to ±2^53 (`detail::max_epoch`), from options, step(epoch) or a file, so that
/// no step's arithmetic overflows. A file's integral float (`T_max=10.0`, which PyTorch runs
/// as 10) reads as the int.
///
/// The scheduler keeps a pointer to the optimizer, which must outlive it.

#include "ember/core/error.hpp"
#include "ember/core/value.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <numbers>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ember::optim
{

/// @brief What a scheduler needs from an optimizer: param groups with `options.lr` and
/// `initial_lr` (every ember optimizer has them).
template <class O>
concept lr_schedulable = requires(O& o, std::size_t g)
{
    {
        o.param_groups().size()
        } -> std::convertible_to<std::size_t>;
    o.param_groups()[g].options.lr = 0.0;
    o.param_groups()[g].initial_lr = std::optional<double>{};
};

namespace detail
{

/// @brief A double as Python's repr() writes it, for messages.
std::string py_float(double v);

/// @brief The largest epoch, period or count a scheduler takes (and its negative the least):
/// 2^53, where a double stops counting exactly. Steps add 1 at a time, and the cosine's
/// 2 × T_max and last_epoch - 1 - T_max stay far from int64's limits.
inline constexpr std::int64_t max_epoch = std::int64_t{1} << 53;

/// @brief Throws value_error naming `what` where |v| > max_epoch.
void check_epoch(std::int64_t v, const std::string& what);

/// @brief Reads a scheduler's state dict: typed getters that name the key and what was
/// expected, and finish() rejecting any key nothing read.
class state_reader
{
public:
    state_reader(const value::dict& dict, std::string where)
        : m_dict(&dict), m_where(std::move(where))
    {
    }

    const value* find(std::string_view key);
    bool contains(std::string_view key) const noexcept { return m_dict->contains(key); }
    double number(std::string_view key);
    std::int64_t integer(std::string_view key);
    bool boolean(std::string_view key);
    const std::string& string(std::string_view key);
    /// @brief A list of numbers, of `size` elements.
    std::vector<double> numbers(std::string_view key, std::size_t size);
    /// @brief multi_step_lr's milestones: a dict of decimal epoch → count, or a list of epochs.
    std::vector<std::int64_t> milestones(std::string_view key);
    /// @brief The most milestones a state may hold, repeats counted (a Counter's counts come
    /// from a file and would otherwise size the list).
    static constexpr std::uint64_t max_milestones = std::uint64_t{1} << 20;
    void finish() const;

    std::string where(std::string_view key) const
    {
        return m_where + "['" + std::string(key) + "']";
    }

private:
    const value& required(std::string_view key);

    const value::dict* m_dict;
    std::string m_where;
    std::vector<std::string> m_read;
};

/// @brief A list of doubles as a value.
value to_list(const std::vector<double>& v);

/// @brief 0 as the int PyTorch's defaults are (`eta_min=0`, `min_lr=0`), anything else a float.
value int_or_float(double v);

/// @brief Python's floor division, for step(epoch) with a negative epoch.
constexpr std::int64_t floor_div(std::int64_t a, std::int64_t b) noexcept
{
    const std::int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

} // namespace detail

/// @brief CRTP base of the epoch-driven schedulers (PyTorch's `_LRScheduler`): base_lrs,
/// last_epoch, step(), get_last_lr(), state_dict(). `Derived` provides `name`, `Options`
/// (with `last_epoch` and `verbose`), `check(const Options&)`, `chain_lr(g, lr)`,
/// `closed_lr(g)`, `write_options(const Options&, value::dict&)` and
/// `read_options(detail::state_reader&) -> Options`.
template <class Derived, class Optimizer, class Options>
class lr_scheduler
{
    static_assert(lr_schedulable<Optimizer>,
                  "ember::optim: a scheduler needs an optimizer with param_groups() whose groups "
                  "have options.lr and initial_lr");

public:
    using optimizer_type = Optimizer;
    using options_type = Options;

    /// @brief One scheduler step, after the epoch's optimizer steps: last_epoch + 1, and each
    /// group's lr from its current lr (PyTorch's chainable form).
    void step();

    /// @brief Sets last_epoch to `epoch` and each group's lr by the closed form (PyTorch's
    /// deprecated `step(epoch)`).
    void step(std::int64_t epoch);

    /// @brief The lrs the last step set, one per group.
    const std::vector<double>& get_last_lr() const noexcept { return m_last_lr; }
    /// @brief The groups' `initial_lr`s when the scheduler was made.
    const std::vector<double>& base_lrs() const noexcept { return m_base_lrs; }
    std::int64_t last_epoch() const noexcept { return m_last_epoch; }
    /// @brief Steps taken, the constructor's included (PyTorch's `_step_count`).
    std::int64_t step_count() const noexcept { return m_step_count; }
    /// @brief The options; `last_epoch` is the one it was made with.
    const Options& options() const noexcept { return m_options; }
    Optimizer& optimizer() const noexcept { return *m_optimizer; }

    /// @brief PyTorch's state_dict(), as a dict value (see the file comment).
    value::dict state_dict() const;
    /// @brief Restores what state_dict() returned (or PyTorch saved); checks everything first
    /// and throws key_error / value_error naming the key, leaving the scheduler unchanged.
    void load_state_dict(const value::dict& state);
    /// @brief The same from a value that must be a dict (`checkpoint::scheduler_state`).
    void load_state_dict(const value& state);

protected:
    /// @brief With last_epoch == -1 sets each group's initial_lr to its lr where unset;
    /// otherwise every group must have one (a resume). Then base_lrs = the initial_lrs.
    lr_scheduler(Optimizer& optimizer, const Options& options);
    /// @brief PyTorch's `_initial_step`: the derived constructor's last statement.
    void initial_step();

    std::int64_t m_last_epoch;
    std::int64_t m_step_count = 0;
    std::vector<double> m_base_lrs;
    Options m_options;

private:
    Derived& derived() noexcept { return static_cast<Derived&>(*this); }
    static std::string prefix() { return std::string(Derived::name) + ": "; }
    void check_groups() const;
    void finish_step(std::optional<std::int64_t> epoch);

    Optimizer* m_optimizer;
    bool m_verbose;
    std::vector<double> m_last_lr;
};

/// @brief StepLR: lr × gamma every `step_size` epochs.
struct step_lr_options
{
    std::int64_t step_size = 0; ///< required, > 0
    double gamma = 0.1;
    std::int64_t last_epoch = -1;
    bool verbose = false;
};

/// @brief MultiStepLR: lr × gamma at each milestone (× gamma^k for a milestone listed k times).
struct multi_step_lr_options
{
    std::vector<std::int64_t> milestones;
    double gamma = 0.1;
    std::int64_t last_epoch = -1;
    bool verbose = false;
};

/// @brief ExponentialLR: lr × gamma every epoch.
struct exponential_lr_options
{
    double gamma = std::numeric_limits<double>::quiet_NaN(); ///< required
    std::int64_t last_epoch = -1;
    bool verbose = false;
};

/// @brief CosineAnnealingLR: from the initial lr down to eta_min over T_max epochs, and back
/// up over the next T_max (SGDR's cosine without restarts).
struct cosine_annealing_lr_options
{
    std::int64_t T_max = 0; ///< required, > 0 (PyTorch's name)
    double eta_min = 0;
    std::int64_t last_epoch = -1;
    bool verbose = false;
};

/// @brief LinearLR: lr × a factor going linearly from start_factor to end_factor over
/// total_iters epochs (a warm-up when start_factor < end_factor).
struct linear_lr_options
{
    double start_factor = 1.0 / 3; ///< in (0, 1]
    double end_factor = 1.0;       ///< in [0, 1]
    std::int64_t total_iters = 5;  ///< > 0
    std::int64_t last_epoch = -1;
    bool verbose = false;
};

template <class Optimizer>
class step_lr : public lr_scheduler<step_lr<Optimizer>, Optimizer, step_lr_options>
{
    using base_type = lr_scheduler<step_lr<Optimizer>, Optimizer, step_lr_options>;
    friend base_type;

public:
    static constexpr std::string_view name = "step_lr";
    step_lr(Optimizer& optimizer, const step_lr_options& options);

private:
    static void check(const step_lr_options& o);
    double chain_lr(std::size_t g, double lr) const;
    double closed_lr(std::size_t g) const;
    static void write_options(const step_lr_options& o, value::dict& out);
    static step_lr_options read_options(detail::state_reader& in);
};

template <class Optimizer>
class multi_step_lr
    : public lr_scheduler<multi_step_lr<Optimizer>, Optimizer, multi_step_lr_options>
{
    using base_type = lr_scheduler<multi_step_lr<Optimizer>, Optimizer, multi_step_lr_options>;
    friend base_type;

public:
    static constexpr std::string_view name = "multi_step_lr";
    multi_step_lr(Optimizer& optimizer, const multi_step_lr_options& options);

private:
    static void check(const multi_step_lr_options& o);
    double chain_lr(std::size_t g, double lr) const;
    double closed_lr(std::size_t g) const;
    static void write_options(const multi_step_lr_options& o, value::dict& out);
    static multi_step_lr_options read_options(detail::state_reader& in);
};

template <class Optimizer>
class exponential_lr
    : public lr_scheduler<exponential_lr<Optimizer>, Optimizer, exponential_lr_options>
{
    using base_type = lr_scheduler<exponential_lr<Optimizer>, Optimizer, exponential_lr_options>;
    friend base_type;

public:
    static constexpr std::string_view name = "exponential_lr";
    exponential_lr(Optimizer& optimizer, const exponential_lr_options& options);

private:
    static void check(const exponential_lr_options& o);
    double chain_lr(std::size_t g, double lr) const;
    double closed_lr(std::size_t g) const;
    static void write_options(const exponential_lr_options& o, value::dict& out);
    static exponential_lr_options read_options(detail::state_reader& in);
};

template <class Optimizer>
class cosine_annealing_lr
    : public lr_scheduler<cosine_annealing_lr<Optimizer>, Optimizer, cosine_annealing_lr_options>
{
    using base_type =
        lr_scheduler<cosine_annealing_lr<Optimizer>, Optimizer, cosine_annealing_lr_options>;
    friend base_type;

public:
    static constexpr std::string_view name = "cosine_annealing_lr";
    cosine_annealing_lr(Optimizer& optimizer, const cosine_annealing_lr_options& options);

private:
    static void check(const cosine_annealing_lr_options& o);
    double chain_lr(std::size_t g, double lr) const;
    double closed_lr(std::size_t g) const;
    static void write_options(const cosine_annealing_lr_options& o, value::dict& out);
    static cosine_annealing_lr_options read_options(detail::state_reader& in);
};

template <class Optimizer>
class linear_lr : public lr_scheduler<linear_lr<Optimizer>, Optimizer, linear_lr_options>
{
    using base_type = lr_scheduler<linear_lr<Optimizer>, Optimizer, linear_lr_options>;
    friend base_type;

public:
    static constexpr std::string_view name = "linear_lr";
    linear_lr(Optimizer& optimizer, const linear_lr_options& options);

private:
    static void check(const linear_lr_options& o);
    double chain_lr(std::size_t g, double lr) const;
    double closed_lr(std::size_t g) const;
    static void write_options(const linear_lr_options& o, value::dict& out);
    static linear_lr_options read_options(detail::state_reader& in);
};

/// @brief Whether a smaller (min) or a larger (max) metric is better.
enum class plateau_mode
{
    min,
    max
};

/// @brief How much better counts as better: relative to the best (rel) or by a fixed amount
/// (abs).
enum class plateau_threshold
{
    rel,
    abs
};

/// @brief ReduceLROnPlateau's options, PyTorch's defaults.
struct reduce_lr_on_plateau_options
{
    plateau_mode mode = plateau_mode::min;
    double factor = 0.1; ///< new lr = lr × factor; < 1
    /// Bad epochs tolerated before a reduction. As in PyTorch, a negative patience is allowed
    /// and reduces the lrs at every step, and a negative cooldown is no cooldown.
    std::int64_t patience = 10;
    double threshold = 1e-4; ///< what counts as an improvement (see threshold_mode)
    plateau_threshold threshold_mode = plateau_threshold::rel;
    std::int64_t cooldown = 0;   ///< epochs after a reduction during which bad ones don't count
    double min_lr = 0;           ///< lower bound of every group's lr...
    std::vector<double> min_lrs; ///< ...or one per group, when not empty
    double eps = 1e-8;           ///< reductions smaller than this are skipped
    bool verbose = false;
};

/// @brief ReduceLROnPlateau: multiplies the lrs by `factor` once a metric has not improved for
/// more than `patience` epochs. step(metric) after each validation.
template <class Optimizer>
class reduce_lr_on_plateau
{
    static_assert(lr_schedulable<Optimizer>,
                  "ember::optim: a scheduler needs an optimizer with param_groups() whose groups "
                  "have options.lr and initial_lr");

public:
    using optimizer_type = Optimizer;
    using options_type = reduce_lr_on_plateau_options;
    static constexpr std::string_view name = "reduce_lr_on_plateau";

    reduce_lr_on_plateau(Optimizer& optimizer, const reduce_lr_on_plateau_options& options = {});

    /// @brief Records this epoch's metric and reduces the lrs if it is time.
    void step(double metric);

    /// @brief The lrs after the last step (empty before the first, as PyTorch has none).
    const std::vector<double>& get_last_lr() const noexcept { return m_last_lr; }
    std::int64_t last_epoch() const noexcept { return m_last_epoch; }
    double best() const noexcept { return m_best; }
    std::int64_t num_bad_epochs() const noexcept { return m_num_bad_epochs; }
    std::int64_t cooldown_counter() const noexcept { return m_cooldown_counter; }
    bool in_cooldown() const noexcept { return m_cooldown_counter > 0; }
    /// @brief Whether `a` improves on `best` by the threshold.
    bool is_better(double a, double best) const noexcept;
    const reduce_lr_on_plateau_options& options() const noexcept { return m_options; }
    Optimizer& optimizer() const noexcept { return *m_optimizer; }

    value::dict state_dict() const;
    void load_state_dict(const value::dict& state);
    void load_state_dict(const value& state);

private:
    static std::string prefix() { return std::string(name) + ": "; }
    static double worse(plateau_mode m) noexcept;
    void check_groups() const;

    Optimizer* m_optimizer;
    reduce_lr_on_plateau_options m_options; // min_lrs always one per group
    std::int64_t m_cooldown_counter = 0;
    double m_best;
    std::int64_t m_num_bad_epochs = 0;
    std::int64_t m_last_epoch = 0;
    std::vector<double> m_last_lr;
};

/*******************
 * implementation  *
 *******************/

namespace detail
{

inline std::string py_float(double v)
{
    if (std::isnan(v))
        return "nan";
    if (std::isinf(v))
        return v > 0 ? "inf" : "-inf";
    char buf[64];
    auto sci = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
    const std::string_view s(buf, static_cast<std::size_t>(sci.ptr - buf));
    const int exponent = std::stoi(std::string(s.substr(s.find('e') + 1)));
    if (exponent < -4 || exponent >= 16)
        return std::string(s);
    auto fixed = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed);
    std::string out(buf, fixed.ptr);
    if (out.find('.') == std::string::npos)
        out += ".0";
    return out;
}

inline const value* state_reader::find(std::string_view key)
{
    const value* v = m_dict->find(key);
    if (v)
        m_read.emplace_back(key);
    return v;
}

inline const value& state_reader::required(std::string_view key)
{
    if (const value* v = find(key))
        return *v;
    throw key_error(m_where + ": missing key '" + std::string(key) + "'");
}

inline double state_reader::number(std::string_view key)
{
    const value& v = required(key);
    if (!v.is_int() && !v.is_double())
        throw value_error(where(key) + ": expected a number, got " + v.type_name());
    return v.to_double();
}

inline void check_epoch(std::int64_t v, const std::string& what)
{
    if (v > max_epoch || v < -max_epoch)
        throw value_error(what + ": " + std::to_string(v) +
                          " is past the ±2^53 epochs ember's schedulers count");
}

/// @brief An int, or a float holding one (PyTorch runs `T_max=10.0` as 10), within ±max_epoch.
inline std::int64_t integral(const value& v, const std::string& where)
{
    if (v.is_double())
    {
        const double d = v.as<double>();
        if (!(std::trunc(d) == d && std::abs(d) <= static_cast<double>(max_epoch)))
            throw value_error(where + ": expected an int, got the float " + py_float(d));
        return static_cast<std::int64_t>(d);
    }
    if (!v.is_int())
        throw value_error(where + ": expected an int, got " + v.type_name());
    check_epoch(v.as<std::int64_t>(), where);
    return v.as<std::int64_t>();
}

inline std::int64_t state_reader::integer(std::string_view key)
{
    return integral(required(key), where(key));
}

inline bool state_reader::boolean(std::string_view key)
{
    const value& v = required(key);
    if (!v.is_bool())
        throw value_error(where(key) + ": expected a bool, got " + v.type_name());
    return v.as<bool>();
}

inline const std::string& state_reader::string(std::string_view key)
{
    const value& v = required(key);
    if (!v.is_string())
        throw value_error(where(key) + ": expected a str, got " + v.type_name());
    return v.as<std::string>();
}

inline std::vector<double> state_reader::numbers(std::string_view key, std::size_t size)
{
    const value& v = required(key);
    if (!v.is_list())
        throw value_error(where(key) + ": expected a list of " + std::to_string(size) +
                          " numbers, got " + v.type_name());
    const auto& list = v.as<value::list>();
    if (list.size() != size)
        throw value_error(where(key) + ": expected " + std::to_string(size) +
                          " numbers (one per param group), got " + std::to_string(list.size()));
    std::vector<double> out;
    out.reserve(size);
    for (std::size_t i = 0; i < list.size(); ++i)
    {
        if (!list[i].is_int() && !list[i].is_double())
            throw value_error(where(key) + "[" + std::to_string(i) + "]: expected a number, got " +
                              list[i].type_name());
        out.push_back(list[i].to_double());
    }
    return out;
}

inline std::vector<std::int64_t> state_reader::milestones(std::string_view key)
{
    const value& v = required(key);
    std::vector<std::int64_t> out;
    if (v.is_list())
    {
        const auto& list = v.as<value::list>();
        for (std::size_t i = 0; i < list.size(); ++i)
            out.push_back(integral(list[i], where(key) + "[" + std::to_string(i) + "]"));
        return out;
    }
    if (!v.is_dict())
        throw value_error(where(key) + ": expected a dict of epoch → count, got " + v.type_name());
    for (const auto& [epoch_text, count] : v.as<value::dict>())
    {
        std::int64_t epoch = 0;
        const char* end = epoch_text.data() + epoch_text.size();
        auto [ptr, ec] = std::from_chars(epoch_text.data(), end, epoch);
        if (ec != std::errc{} || ptr != end)
            throw value_error(where(key) + ": key '" + epoch_text + "' is not an int epoch");
        check_epoch(epoch, where(key) + "['" + epoch_text + "']");
        if (!count.is_int() || count.as<std::int64_t>() < 0)
            throw value_error(where(key) + "['" + epoch_text +
                              "']: expected a non-negative int count, got " +
                              (count.is_int() ? std::to_string(count.as<std::int64_t>())
                                              : std::string(count.type_name())));
        // A count comes from a file: bounded before it sizes anything.
        const auto n = static_cast<std::uint64_t>(count.as<std::int64_t>());
        if (n > max_milestones - out.size())
            throw value_error(where(key) + "['" + epoch_text + "']: a count of " +
                              std::to_string(n) + " makes more than " +
                              std::to_string(max_milestones) + " milestones");
        out.insert(out.end(), static_cast<std::size_t>(n), epoch);
    }
    return out;
}

inline void state_reader::finish() const
{
    std::string unknown;
    for (const auto& item : *m_dict)
        if (std::find(m_read.begin(), m_read.end(), item.first) == m_read.end())
            unknown += (unknown.empty() ? "'" : ", '") + item.first + "'";
    if (!unknown.empty())
        throw key_error(m_where + ": unexpected key(s) " + unknown);
}

inline value to_list(const std::vector<double>& v)
{
    value::list out(v.begin(), v.end());
    return out;
}

inline value int_or_float(double v)
{
    if (v == 0)
        return std::int64_t{0};
    return v;
}

} // namespace detail

// ---- lr_scheduler ----

template <class Derived, class Optimizer, class Options>
lr_scheduler<Derived, Optimizer, Options>::lr_scheduler(Optimizer& optimizer,
                                                        const Options& options)
    : m_last_epoch(options.last_epoch), m_options(options), m_optimizer(&optimizer),
      m_verbose(options.verbose)
{
    Derived::check(options);
    auto groups = optimizer.param_groups();
    if (options.last_epoch < -1)
        throw value_error(prefix() +
                          "last_epoch must be -1 (a new run) or the index of the last "
                          "epoch done, got " +
                          std::to_string(options.last_epoch));
    detail::check_epoch(options.last_epoch, prefix() + "last_epoch");
    if (options.last_epoch != -1)
        for (std::size_t g = 0; g < groups.size(); ++g)
            if (!groups[g].initial_lr)
                throw key_error(prefix() + "param 'initial_lr' is not specified in param_groups[" +
                                std::to_string(g) + "] when resuming an optimizer (last_epoch = " +
                                std::to_string(options.last_epoch) +
                                "): load the optimizer's state_dict first");
    for (auto& group : groups)
    {
        if (!group.initial_lr)
            group.initial_lr = static_cast<double>(group.options.lr);
        m_base_lrs.push_back(*group.initial_lr);
    }
    m_last_lr.resize(groups.size());
}

template <class Derived, class Optimizer, class Options>
void lr_scheduler<Derived, Optimizer, Options>::initial_step()
{
    m_step_count = 0;
    step();
}

template <class Derived, class Optimizer, class Options>
void lr_scheduler<Derived, Optimizer, Options>::check_groups() const
{
    const std::size_t n = m_optimizer->param_groups().size();
    if (n != m_base_lrs.size())
        throw value_error(prefix() + "the optimizer has " + std::to_string(n) +
                          " param groups, the scheduler was made for " +
                          std::to_string(m_base_lrs.size()) +
                          " (make a new scheduler after add_param_group)");
}

template <class Derived, class Optimizer, class Options>
void lr_scheduler<Derived, Optimizer, Options>::step()
{
    check_groups();
    ++m_step_count;
    ++m_last_epoch;
    // Each group's new lr depends on its own lr only, so groups update one by one.
    auto groups = m_optimizer->param_groups();
    for (std::size_t g = 0; g < groups.size(); ++g)
        groups[g].options.lr = derived().chain_lr(g, static_cast<double>(groups[g].options.lr));
    finish_step(std::nullopt);
}

template <class Derived, class Optimizer, class Options>
void lr_scheduler<Derived, Optimizer, Options>::step(std::int64_t epoch)
{
    check_groups();
    detail::check_epoch(epoch, prefix() + "step(epoch)");
    ++m_step_count;
    m_last_epoch = epoch;
    auto groups = m_optimizer->param_groups();
    for (std::size_t g = 0; g < groups.size(); ++g)
        groups[g].options.lr = derived().closed_lr(g);
    finish_step(epoch);
}

template <class Derived, class Optimizer, class Options>
void lr_scheduler<Derived, Optimizer, Options>::finish_step(std::optional<std::int64_t> epoch)
{
    auto groups = m_optimizer->param_groups();
    for (std::size_t g = 0; g < groups.size(); ++g)
    {
        m_last_lr[g] = static_cast<double>(groups[g].options.lr);
        if (m_verbose)
        {
            if (epoch)
                std::printf("Epoch %.5lld: adjusting learning rate of group %zu to %.4e.\n",
                            static_cast<long long>(*epoch), g, m_last_lr[g]);
            else
                std::printf("Adjusting learning rate of group %zu to %.4e.\n", g, m_last_lr[g]);
        }
    }
}

template <class Derived, class Optimizer, class Options>
value::dict lr_scheduler<Derived, Optimizer, Options>::state_dict() const
{
    value::dict out;
    Derived::write_options(m_options, out);
    out.insert("base_lrs", detail::to_list(m_base_lrs));
    out.insert("last_epoch", m_last_epoch);
    out.insert("verbose", m_verbose);
    out.insert("_step_count", m_step_count);
    out.insert("_get_lr_called_within_step", false);
    out.insert("_last_lr", detail::to_list(m_last_lr));
    return out;
}

template <class Derived, class Optimizer, class Options>
void lr_scheduler<Derived, Optimizer, Options>::load_state_dict(const value::dict& state)
{
    const std::size_t groups = m_base_lrs.size();
    detail::state_reader in(state, prefix() + "load_state_dict");
    Options options = Derived::read_options(in);
    std::vector<double> base_lrs = in.numbers("base_lrs", groups);
    const std::int64_t last_epoch = in.integer("last_epoch");
    const bool verbose = in.boolean("verbose");
    const std::int64_t step_count = in.integer("_step_count");
    if (in.contains("_get_lr_called_within_step"))
        in.boolean("_get_lr_called_within_step");
    std::vector<double> last_lr = in.numbers("_last_lr", groups);
    in.finish();
    options.last_epoch = m_options.last_epoch;
    options.verbose = verbose;
    Derived::check(options);
    if (step_count < 0)
        throw value_error(in.where("_step_count") + ": expected a non-negative count, got " +
                          std::to_string(step_count));

    m_options = std::move(options);
    m_base_lrs = std::move(base_lrs);
    m_last_epoch = last_epoch;
    m_verbose = verbose;
    m_step_count = step_count;
    m_last_lr = std::move(last_lr);
}

template <class Derived, class Optimizer, class Options>
void lr_scheduler<Derived, Optimizer, Options>::load_state_dict(const value& state)
{
    if (!state.is_dict())
        throw value_error(prefix() + "load_state_dict: expected a dict, got " + state.type_name() +
                          (state.is_none() ? " (the checkpoint has no scheduler state)" : ""));
    load_state_dict(state.as<value::dict>());
}

// ---- step_lr ----

template <class Optimizer>
step_lr<Optimizer>::step_lr(Optimizer& optimizer, const step_lr_options& options)
    : base_type(optimizer, options)
{
    this->initial_step();
}

template <class Optimizer>
void step_lr<Optimizer>::check(const step_lr_options& o)
{
    if (o.step_size <= 0)
        throw value_error("step_lr: step_size must be a positive number of epochs, got " +
                          std::to_string(o.step_size));
    detail::check_epoch(o.step_size, "step_lr: step_size");
}

template <class Optimizer>
double step_lr<Optimizer>::chain_lr(std::size_t, double lr) const
{
    const std::int64_t e = this->m_last_epoch;
    if (e == 0 || e % this->m_options.step_size != 0)
        return lr;
    return lr * this->m_options.gamma;
}

template <class Optimizer>
double step_lr<Optimizer>::closed_lr(std::size_t g) const
{
    const auto k = detail::floor_div(this->m_last_epoch, this->m_options.step_size);
    return this->m_base_lrs[g] * std::pow(this->m_options.gamma, static_cast<double>(k));
}

template <class Optimizer>
void step_lr<Optimizer>::write_options(const step_lr_options& o, value::dict& out)
{
    out.insert("step_size", o.step_size);
    out.insert("gamma", o.gamma);
}

template <class Optimizer>
step_lr_options step_lr<Optimizer>::read_options(detail::state_reader& in)
{
    step_lr_options o;
    o.step_size = in.integer("step_size");
    o.gamma = in.number("gamma");
    return o;
}

// ---- multi_step_lr ----

template <class Optimizer>
multi_step_lr<Optimizer>::multi_step_lr(Optimizer& optimizer, const multi_step_lr_options& options)
    : base_type(optimizer, options)
{
    this->initial_step();
}

template <class Optimizer>
void multi_step_lr<Optimizer>::check(const multi_step_lr_options&)
{
    // PyTorch takes any milestones (a Counter): unsorted, repeated, even negative.
}

template <class Optimizer>
double multi_step_lr<Optimizer>::chain_lr(std::size_t, double lr) const
{
    const auto& m = this->m_options.milestones;
    const auto count = std::count(m.begin(), m.end(), this->m_last_epoch);
    if (count == 0)
        return lr;
    return lr * std::pow(this->m_options.gamma, static_cast<double>(count));
}

template <class Optimizer>
double multi_step_lr<Optimizer>::closed_lr(std::size_t g) const
{
    // bisect_right over the sorted milestones: how many are <= last_epoch.
    const auto& m = this->m_options.milestones;
    const auto passed =
        std::count_if(m.begin(), m.end(), [e = this->m_last_epoch](auto x) { return x <= e; });
    return this->m_base_lrs[g] * std::pow(this->m_options.gamma, static_cast<double>(passed));
}

template <class Optimizer>
void multi_step_lr<Optimizer>::write_options(const multi_step_lr_options& o, value::dict& out)
{
    // Counter order: each epoch at its first occurrence.
    value::dict counter;
    for (std::int64_t e : o.milestones)
    {
        const std::string key = std::to_string(e);
        if (!counter.contains(key))
            counter.insert(key, static_cast<std::int64_t>(
                                    std::count(o.milestones.begin(), o.milestones.end(), e)));
    }
    out.insert("milestones", std::move(counter));
    out.insert("gamma", o.gamma);
}

template <class Optimizer>
multi_step_lr_options multi_step_lr<Optimizer>::read_options(detail::state_reader& in)
{
    multi_step_lr_options o;
    o.milestones = in.milestones("milestones");
    o.gamma = in.number("gamma");
    return o;
}

// ---- exponential_lr ----

template <class Optimizer>
exponential_lr<Optimizer>::exponential_lr(Optimizer& optimizer,
                                          const exponential_lr_options& options)
    : base_type(optimizer, options)
{
    this->initial_step();
}

template <class Optimizer>
void exponential_lr<Optimizer>::check(const exponential_lr_options& o)
{
    if (std::isnan(o.gamma))
        throw value_error("exponential_lr: gamma is required (e.g. {.gamma = 0.95})");
}

template <class Optimizer>
double exponential_lr<Optimizer>::chain_lr(std::size_t, double lr) const
{
    if (this->m_last_epoch == 0)
        return lr;
    return lr * this->m_options.gamma;
}

template <class Optimizer>
double exponential_lr<Optimizer>::closed_lr(std::size_t g) const
{
    return this->m_base_lrs[g] *
           std::pow(this->m_options.gamma, static_cast<double>(this->m_last_epoch));
}

template <class Optimizer>
void exponential_lr<Optimizer>::write_options(const exponential_lr_options& o, value::dict& out)
{
    out.insert("gamma", o.gamma);
}

template <class Optimizer>
exponential_lr_options exponential_lr<Optimizer>::read_options(detail::state_reader& in)
{
    exponential_lr_options o;
    o.gamma = in.number("gamma");
    return o;
}

// ---- cosine_annealing_lr ----

template <class Optimizer>
cosine_annealing_lr<Optimizer>::cosine_annealing_lr(Optimizer& optimizer,
                                                    const cosine_annealing_lr_options& options)
    : base_type(optimizer, options)
{
    this->initial_step();
}

template <class Optimizer>
void cosine_annealing_lr<Optimizer>::check(const cosine_annealing_lr_options& o)
{
    if (o.T_max <= 0)
        throw value_error("cosine_annealing_lr: T_max must be a positive number of epochs, got " +
                          std::to_string(o.T_max));
    detail::check_epoch(o.T_max, "cosine_annealing_lr: T_max");
}

template <class Optimizer>
double cosine_annealing_lr<Optimizer>::chain_lr(std::size_t g, double lr) const
{
    // PyTorch's get_lr(), operation for operation (Python evaluates left to right).
    constexpr double pi = std::numbers::pi;
    const double e = static_cast<double>(this->m_last_epoch);
    const double t_max = static_cast<double>(this->m_options.T_max);
    const double eta_min = this->m_options.eta_min;
    const double base_lr = this->m_base_lrs[g];
    if (this->m_last_epoch == 0)
        return lr;
    if (this->m_step_count == 1 && this->m_last_epoch > 0)
        return eta_min + (base_lr - eta_min) * (1 + std::cos(e * pi / t_max)) / 2;
    if ((this->m_last_epoch - 1 - this->m_options.T_max) % (2 * this->m_options.T_max) == 0)
        return lr + (base_lr - eta_min) * (1 - std::cos(pi / t_max)) / 2;
    return (1 + std::cos(pi * e / t_max)) / (1 + std::cos(pi * (e - 1) / t_max)) * (lr - eta_min) +
           eta_min;
}

template <class Optimizer>
double cosine_annealing_lr<Optimizer>::closed_lr(std::size_t g) const
{
    constexpr double pi = std::numbers::pi;
    const double eta_min = this->m_options.eta_min;
    return eta_min + (this->m_base_lrs[g] - eta_min) *
                         (1 + std::cos(pi * static_cast<double>(this->m_last_epoch) /
                                       static_cast<double>(this->m_options.T_max))) /
                         2;
}

template <class Optimizer>
void cosine_annealing_lr<Optimizer>::write_options(const cosine_annealing_lr_options& o,
                                                   value::dict& out)
{
    out.insert("T_max", o.T_max);
    out.insert("eta_min", detail::int_or_float(o.eta_min));
}

template <class Optimizer>
cosine_annealing_lr_options cosine_annealing_lr<Optimizer>::read_options(detail::state_reader& in)
{
    cosine_annealing_lr_options o;
    o.T_max = in.integer("T_max");
    o.eta_min = in.number("eta_min");
    return o;
}

// ---- linear_lr ----

template <class Optimizer>
linear_lr<Optimizer>::linear_lr(Optimizer& optimizer, const linear_lr_options& options)
    : base_type(optimizer, options)
{
    this->initial_step();
}

template <class Optimizer>
void linear_lr<Optimizer>::check(const linear_lr_options& o)
{
    // PyTorch 1.13 accepts start_factor 0, then divides by zero at the first step.
    if (!(o.start_factor > 0 && o.start_factor <= 1))
        throw value_error("linear_lr: start_factor must be in (0, 1], got " +
                          detail::py_float(o.start_factor));
    if (!(o.end_factor >= 0 && o.end_factor <= 1))
        throw value_error("linear_lr: end_factor must be in [0, 1], got " +
                          detail::py_float(o.end_factor));
    if (o.total_iters <= 0)
        throw value_error("linear_lr: total_iters must be a positive number of epochs, got " +
                          std::to_string(o.total_iters));
    detail::check_epoch(o.total_iters, "linear_lr: total_iters");
}

template <class Optimizer>
double linear_lr<Optimizer>::chain_lr(std::size_t, double lr) const
{
    const auto& o = this->m_options;
    const std::int64_t e = this->m_last_epoch;
    if (e == 0)
        return lr * o.start_factor;
    if (e > o.total_iters)
        return lr;
    return lr * (1. + (o.end_factor - o.start_factor) /
                          (static_cast<double>(o.total_iters) * o.start_factor +
                           static_cast<double>(e - 1) * (o.end_factor - o.start_factor)));
}

template <class Optimizer>
double linear_lr<Optimizer>::closed_lr(std::size_t g) const
{
    const auto& o = this->m_options;
    const auto done = std::min(o.total_iters, this->m_last_epoch);
    return this->m_base_lrs[g] *
           (o.start_factor + (o.end_factor - o.start_factor) * static_cast<double>(done) /
                                 static_cast<double>(o.total_iters));
}

template <class Optimizer>
void linear_lr<Optimizer>::write_options(const linear_lr_options& o, value::dict& out)
{
    out.insert("start_factor", o.start_factor);
    out.insert("end_factor", o.end_factor);
    out.insert("total_iters", o.total_iters);
}

template <class Optimizer>
linear_lr_options linear_lr<Optimizer>::read_options(detail::state_reader& in)
{
    linear_lr_options o;
    o.start_factor = in.number("start_factor");
    o.end_factor = in.number("end_factor");
    o.total_iters = in.integer("total_iters");
    return o;
}

// ---- reduce_lr_on_plateau ----

template <class Optimizer>
reduce_lr_on_plateau<Optimizer>::reduce_lr_on_plateau(Optimizer& optimizer,
                                                      const reduce_lr_on_plateau_options& options)
    : m_optimizer(&optimizer), m_options(options), m_best(worse(options.mode))
{
    const std::size_t groups = optimizer.param_groups().size();
    if (!(options.factor < 1.0))
        throw value_error(prefix() + "factor should be < 1.0, got " +
                          detail::py_float(options.factor));
    if (options.min_lrs.empty())
        m_options.min_lrs.assign(groups, options.min_lr);
    else if (options.min_lrs.size() != groups)
        throw value_error(prefix() + "expected " + std::to_string(groups) +
                          " min_lrs (one per param group), got " +
                          std::to_string(options.min_lrs.size()));
}

template <class Optimizer>
double reduce_lr_on_plateau<Optimizer>::worse(plateau_mode m) noexcept
{
    return m == plateau_mode::min ? std::numeric_limits<double>::infinity()
                                  : -std::numeric_limits<double>::infinity();
}

template <class Optimizer>
bool reduce_lr_on_plateau<Optimizer>::is_better(double a, double best) const noexcept
{
    const double t = m_options.threshold;
    if (m_options.mode == plateau_mode::min)
        return m_options.threshold_mode == plateau_threshold::rel ? a < best * (1. - t)
                                                                  : a < best - t;
    return m_options.threshold_mode == plateau_threshold::rel ? a > best * (t + 1.) : a > best + t;
}

template <class Optimizer>
void reduce_lr_on_plateau<Optimizer>::check_groups() const
{
    const std::size_t n = m_optimizer->param_groups().size();
    if (n != m_options.min_lrs.size())
        throw value_error(prefix() + "the optimizer has " + std::to_string(n) +
                          " param groups, the scheduler was made for " +
                          std::to_string(m_options.min_lrs.size()) +
                          " (make a new scheduler after add_param_group)");
}

template <class Optimizer>
void reduce_lr_on_plateau<Optimizer>::step(double metric)
{
    check_groups();
    ++m_last_epoch;
    if (is_better(metric, m_best))
    {
        m_best = metric;
        m_num_bad_epochs = 0;
    }
    else
        ++m_num_bad_epochs;
    if (in_cooldown())
    {
        --m_cooldown_counter;
        m_num_bad_epochs = 0; // bad epochs in cooldown don't count
    }
    auto groups = m_optimizer->param_groups();
    if (m_num_bad_epochs > m_options.patience)
    {
        for (std::size_t g = 0; g < groups.size(); ++g)
        {
            const double old_lr = static_cast<double>(groups[g].options.lr);
            const double reduced = old_lr * m_options.factor;
            // Python's max(reduced, min_lr) keeps the first unless the second is larger.
            const double new_lr = m_options.min_lrs[g] > reduced ? m_options.min_lrs[g] : reduced;
            if (old_lr - new_lr > m_options.eps)
            {
                groups[g].options.lr = new_lr;
                if (m_options.verbose)
                    std::printf("Epoch %.5lld: reducing learning rate of group %zu to %.4e.\n",
                                static_cast<long long>(m_last_epoch), g, new_lr);
            }
        }
        m_cooldown_counter = m_options.cooldown;
        m_num_bad_epochs = 0;
    }
    m_last_lr.resize(groups.size());
    for (std::size_t g = 0; g < groups.size(); ++g)
        m_last_lr[g] = static_cast<double>(groups[g].options.lr);
}

template <class Optimizer>
value::dict reduce_lr_on_plateau<Optimizer>::state_dict() const
{
    value::list min_lrs;
    for (double m : m_options.min_lrs)
        min_lrs.push_back(detail::int_or_float(m));
    value::dict out;
    out.insert("factor", m_options.factor);
    out.insert("min_lrs", std::move(min_lrs));
    out.insert("patience", m_options.patience);
    out.insert("verbose", m_options.verbose);
    out.insert("cooldown", m_options.cooldown);
    out.insert("cooldown_counter", m_cooldown_counter);
    out.insert("mode", m_options.mode == plateau_mode::min ? "min" : "max");
    out.insert("threshold", m_options.threshold);
    out.insert("threshold_mode",
               m_options.threshold_mode == plateau_threshold::rel ? "rel" : "abs");
    out.insert("best", m_best);
    out.insert("num_bad_epochs", m_num_bad_epochs);
    out.insert("mode_worse", worse(m_options.mode));
    out.insert("eps", m_options.eps);
    out.insert("last_epoch", m_last_epoch);
    if (!m_last_lr.empty())
        out.insert("_last_lr", detail::to_list(m_last_lr));
    return out;
}

template <class Optimizer>
void reduce_lr_on_plateau<Optimizer>::load_state_dict(const value::dict& state)
{
    const std::size_t groups = m_options.min_lrs.size();
    detail::state_reader in(state, prefix() + "load_state_dict");
    reduce_lr_on_plateau_options o;
    o.factor = in.number("factor");
    o.min_lrs = in.numbers("min_lrs", groups);
    o.patience = in.integer("patience");
    o.verbose = in.boolean("verbose");
    o.cooldown = in.integer("cooldown");
    const std::int64_t cooldown_counter = in.integer("cooldown_counter");
    const std::string& mode = in.string("mode");
    if (mode != "min" && mode != "max")
        throw value_error(in.where("mode") + ": expected 'min' or 'max', got '" + mode + "'");
    o.mode = mode == "min" ? plateau_mode::min : plateau_mode::max;
    o.threshold = in.number("threshold");
    const std::string& threshold_mode = in.string("threshold_mode");
    if (threshold_mode != "rel" && threshold_mode != "abs")
        throw value_error(in.where("threshold_mode") + ": expected 'rel' or 'abs', got '" +
                          threshold_mode + "'");
    o.threshold_mode = threshold_mode == "rel" ? plateau_threshold::rel : plateau_threshold::abs;
    const double best = in.number("best");
    const std::int64_t num_bad_epochs = in.integer("num_bad_epochs");
    in.number("mode_worse"); // follows from mode, as PyTorch's _init_is_better resets it
    o.eps = in.number("eps");
    const std::int64_t last_epoch = in.integer("last_epoch");
    std::vector<double> last_lr;
    if (in.contains("_last_lr"))
        last_lr = in.numbers("_last_lr", groups);
    in.finish();
    if (!(o.factor < 1.0))
        throw value_error(in.where("factor") + ": should be < 1.0, got " +
                          detail::py_float(o.factor));
    if (num_bad_epochs < 0) // PyTorch's count starts at 0 and only grows
        throw value_error(in.where("num_bad_epochs") + ": must be >= 0, got " +
                          std::to_string(num_bad_epochs));

    m_options = std::move(o);
    m_cooldown_counter = cooldown_counter;
    m_best = best;
    m_num_bad_epochs = num_bad_epochs;
    m_last_epoch = last_epoch;
    m_last_lr = std::move(last_lr);
}

template <class Optimizer>
void reduce_lr_on_plateau<Optimizer>::load_state_dict(const value& state)
{
    if (!state.is_dict())
        throw value_error(prefix() + "load_state_dict: expected a dict, got " + state.type_name() +
                          (state.is_none() ? " (the checkpoint has no scheduler state)" : ""));
    load_state_dict(state.as<value::dict>());
}

} // namespace ember::optim

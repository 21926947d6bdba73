#pragma once
/// @file
/// Splitting a dataset into subsets by counts or by fractions, in order or shuffled.
///
/// Two rules turn fractions into counts, and they differ:
/// - `split` cuts where the lesson's slicing cuts: {0.7, 0.15, 0.15} of n samples ends the
///   parts at int(0.7 n) and int(0.85 n) (50 samples: 35, 7, 8);
/// - `random_split` is torch.utils.data.random_split: floor(f n) each, then one more to each part
///   in turn until all are used (50 samples: 36, 7, 7), over torch.randperm's order.
///
/// @code
/// ember::data::tensor_dataset ds(X, y);
/// auto [train, val, test] = ember::data::split(ds, {0.7, 0.15, 0.15});   // the lesson's slices
/// ember::generator g(42);
/// auto [a, b] = ember::data::random_split(ds, {0.8, 0.2}, g);           // as PyTorch, seed 42
/// @endcode
/// The subsets refer to `ds`, which must outlive them.

#include "ember/core/error.hpp"
#include "ember/core/generator.hpp"
#include "ember/data/dataset.hpp"
#include "ember/data/randperm.hpp"
#include "ember/detail/precompiled.hpp"

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace ember::data
{

/// @brief Consecutive parts of `data`; `lengths` are counts that add up to `data.size()` or
/// fractions that add up to 1 (cut as the lesson's slicing cuts).
template <class D, std::size_t K>
std::array<subset<std::remove_cvref_t<D>>, K> split(D&& data, const double (&lengths)[K]);

/// @brief As above, over the order `torch.randperm(n, generator=g)` draws.
template <class D, std::size_t K>
std::array<subset<std::remove_cvref_t<D>>, K> split(D&& data, const double (&lengths)[K],
                                                    generator& g);

/// @brief torch.utils.data.random_split, exactly: the same parts as PyTorch after the same seed.
/// Fractions must add up (from the left, as Python's sum) to 1 or to a hair less, as there:
/// {0.4, 0.2, 0.3, 0.1} adds up to 1.0000000000000002 and is refused, as PyTorch refuses it.
template <class D, std::size_t K>
std::array<subset<std::remove_cvref_t<D>>, K> random_split(D&& data, const double (&lengths)[K],
                                                           generator& g = default_generator());

/// @brief The sizes `split` (slicing = true) or `random_split` (slicing = false) gives to n
/// samples; throws value_error on negative or non-integer counts, fractions outside [0, 1], or
/// lengths that add up to neither n nor 1.
std::vector<std::size_t> split_lengths(std::size_t n, std::span<const double> lengths,
                                       bool slicing);

/*******************
 * implementation  *
 *******************/

// With EMBER_PRECOMPILED split_lengths is compiled once, in src/ember_precompiled.cpp
// (detail/precompiled.hpp).
#if EMBER_DEFINITIONS
namespace detail
{
// 49, 0.7, 1.0000000000000002: as Python prints a float, shortest first.
inline std::string number(double v)
{
    char buf[32];
    if (v == std::floor(v) && std::fabs(v) < 1e15)
    {
        std::snprintf(buf, sizeof buf, "%.0f", v);
        return buf;
    }
    for (int precision = 1; precision <= 17; ++precision)
    {
        std::snprintf(buf, sizeof buf, "%.*g", precision, v);
        if (std::strtod(buf, nullptr) == v)
            break;
    }
    return buf;
}
} // namespace detail

EMBER_PRECOMPILED_INLINE std::vector<std::size_t>
split_lengths(std::size_t n, std::span<const double> lengths, bool slicing)
{
    const char* where = slicing ? "split" : "random_split";
    if (lengths.empty())
        throw value_error(std::string(where) + ": no lengths given");
    for (std::size_t i = 0; i < lengths.size(); ++i)
        if (!(lengths[i] >= 0.0))
            throw value_error(std::string(where) + ": length at index " + std::to_string(i) +
                              " is " + detail::number(lengths[i]) +
                              "; counts and fractions cannot be negative");
    const double sum = std::accumulate(lengths.begin(), lengths.end(), 0.0);
    bool counts = true;
    for (double l : lengths)
        counts = counts && l == std::floor(l);
    std::vector<std::size_t> sizes(lengths.size());
    if (counts && sum == static_cast<double>(n))
    {
        for (std::size_t i = 0; i < lengths.size(); ++i)
            sizes[i] = static_cast<std::size_t>(lengths[i]);
        return sizes;
    }
    // math.isclose(sum, 1), as PyTorch decides that lengths are fractions; random_split also
    // wants sum <= 1, as torch.utils.data.random_split does (its sum, like this one, adds from
    // the left: 0.4 + 0.2 + 0.3 + 0.1 is 1.0000000000000002, which it refuses).
    const bool close_to_one = std::fabs(sum - 1.0) <= 1e-9 * std::max(std::fabs(sum), 1.0);
    if (!close_to_one)
        throw value_error(std::string(where) + ": lengths add up to " + detail::number(sum) +
                          ", which is neither the dataset's size (" + std::to_string(n) +
                          ") nor 1");
    if (!slicing && sum > 1.0)
        throw value_error(std::string(where) + ": fractions add up to " + detail::number(sum) +
                          ", more than 1 (PyTorch's random_split refuses them too; make the "
                          "last one 1 minus the others, or pass counts)");
    for (std::size_t i = 0; i < lengths.size(); ++i)
        if (!(lengths[i] <= 1.0))
            throw value_error(std::string(where) + ": fraction at index " + std::to_string(i) +
                              " is " + detail::number(lengths[i]) + ", not between 0 and 1");
    const double total = static_cast<double>(n);
    if (slicing)
    {
        // data[:int(f0 n)], data[int(f0 n):int((f0 + f1) n)], ..., data[...:]
        std::size_t start = 0;
        double cumulative = 0;
        for (std::size_t i = 0; i + 1 < lengths.size(); ++i)
        {
            cumulative += lengths[i];
            const std::size_t end =
                std::min(n, std::max(start, static_cast<std::size_t>(cumulative * total)));
            sizes[i] = end - start;
            start = end;
        }
        sizes.back() = n - start;
        return sizes;
    }
    std::size_t used = 0;
    for (std::size_t i = 0; i < lengths.size(); ++i)
    {
        sizes[i] = static_cast<std::size_t>(std::floor(total * lengths[i]));
        used += sizes[i];
    }
    for (std::size_t i = 0; used < n; ++i, ++used)
        ++sizes[i % sizes.size()];
    // Fractions a little above 1 can floor to more than n (n from about 10^9 on); PyTorch
    // refuses sizes that do not add up to the dataset's length, and the parts would run past it.
    if (used > n)
        throw value_error(std::string(where) + ": the fractions give " + std::to_string(used) +
                          " samples, the dataset has " + std::to_string(n));
    return sizes;
}
#endif // EMBER_DEFINITIONS

namespace detail
{

template <class D, std::size_t K>
std::array<subset<D>, K> make_parts(const D& data, const std::vector<std::size_t>& sizes,
                                    const std::vector<std::size_t>& order)
{
    std::size_t start = 0;
    auto part = [&](std::size_t i)
    {
        std::vector<std::size_t> indices(order.begin() + static_cast<std::ptrdiff_t>(start),
                                         order.begin() +
                                             static_cast<std::ptrdiff_t>(start + sizes[i]));
        start += sizes[i];
        return subset<D>(data, std::move(indices));
    };
    return [&]<std::size_t... I>(std::index_sequence<I...>)
    {
        return std::array<subset<D>, K>{part(I)...};
    }
    (std::make_index_sequence<K>{});
}

template <class D, std::size_t K>
auto split_impl(const D& data, const double (&lengths)[K], generator* g, bool slicing)
{
    static_assert(dataset<D>, "ember::data::split: the first argument has to model "
                              "ember::data::dataset (size() and gather(indices, batch))");
    const std::size_t n = data.size();
    const auto sizes = split_lengths(n, std::span<const double>(lengths, K), slicing);
    std::vector<std::size_t> order(n);
    if (g)
        randperm(std::span<std::size_t>(order), *g);
    else
        std::iota(order.begin(), order.end(), std::size_t{0});
    return make_parts<D, K>(data, sizes, order);
}

template <class D>
constexpr void check_not_temporary()
{
    static_assert(std::is_lvalue_reference_v<D>,
                  "ember::data::split: the subsets refer to the dataset, so it has to be a named "
                  "object that outlives them, not a temporary");
}

} // namespace detail

template <class D, std::size_t K>
std::array<subset<std::remove_cvref_t<D>>, K> split(D&& data, const double (&lengths)[K])
{
    detail::check_not_temporary<D>();
    return detail::split_impl(data, lengths, nullptr, true);
}

template <class D, std::size_t K>
std::array<subset<std::remove_cvref_t<D>>, K> split(D&& data, const double (&lengths)[K],
                                                    generator& g)
{
    detail::check_not_temporary<D>();
    return detail::split_impl(data, lengths, &g, true);
}

template <class D, std::size_t K>
std::array<subset<std::remove_cvref_t<D>>, K> random_split(D&& data, const double (&lengths)[K],
                                                           generator& g)
{
    detail::check_not_temporary<D>();
    return detail::split_impl(data, lengths, &g, false);
}

} // namespace ember::data

#pragma once
/// @file
/// A run's ember::history drawn into a plot::axes: the training and validation curves of the
/// lesson's "Training Progress" panel (or any other columns, e.g. accuracy), one line per
/// column, against the `epoch` column when there is one.
///
/// @code
/// ember::history h;                           // {"epoch", "train_loss", "val_loss"} per epoch
/// ember::plot::figure fig(12, 5);
/// ember::plot::plot_history(fig.subplot(1, 2, 1), h);   // the *loss columns, "Train"/"Validation"
/// ember::plot::plot_history(fig.subplot(1, 2, 2), h,
///                           {.columns = {"val_accuracy"}, .ylabel = "Accuracy", .title =
///                           "Accuracy"});
/// fig.save("training.svg");
/// @endcode

#include "ember/core/error.hpp"
#include "ember/detail/precompiled.hpp"
#include "ember/history.hpp"
#include "ember/plot/svg.hpp"

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ember::plot
{

/// @brief What plot_history draws and how it labels it.
struct history_plot_options
{
    /// @brief Columns to draw, in this order. Empty: every column whose name ends in "loss".
    std::vector<std::string> columns;
    /// @brief Legend labels, one per drawn column. Empty: history_label() of each name.
    std::vector<std::string> labels;
    /// @brief Line colours, one per drawn column (CSS or matplotlib's letters). Empty: the
    /// figure's default cycle.
    std::vector<std::string> colors;
    /// @brief The x column; when the history has no such column, x is 0, 1, 2...
    std::string x = "epoch";
    std::string xlabel = "Epoch";
    /// @brief Empty: "Loss" when every drawn column is a loss, else none.
    std::string ylabel;
    std::string title = "Training Progress";
    double width = 2;
    bool legend = true;
    bool grid = true;
};

/// @brief Draws `h`'s columns as lines into `ax` with the labels, title and grid of
/// `options`; returns `ax`. Epochs where a column is NaN are left out of its line.
/// Throws key_error naming a column that `h` lacks, value_error if no column is left to draw
/// or `labels` or `colors` is given without one entry per column.
axes& plot_history(axes& ax, const history& h, const history_plot_options& options = {});

/// @brief A column's legend label: "train_loss" → "Train", "val_loss" → "Validation",
/// "test_accuracy" → "Test accuracy"; other names as they are.
std::string history_label(std::string_view column);

} // namespace ember::plot

/*******************
 * implementation  *
 *******************/

// With EMBER_PRECOMPILED these are compiled once, in src/ember_precompiled.cpp
// (detail/precompiled.hpp).
#if EMBER_DEFINITIONS

namespace ember::plot
{

namespace detail
{
inline bool ends_with(std::string_view s, std::string_view suffix) noexcept
{
    return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}
} // namespace detail

EMBER_PRECOMPILED_INLINE std::string history_label(std::string_view column)
{
    static constexpr std::pair<std::string_view, std::string_view> prefixes[] = {
        {"train_", "Train"}, {"val_", "Validation"}, {"valid_", "Validation"}, {"test_", "Test"}};
    for (const auto& [prefix, word] : prefixes)
    {
        if (column.substr(0, prefix.size()) != prefix)
            continue;
        const std::string_view rest = column.substr(prefix.size());
        // The loss is what a curve shows by default, so "Train" says enough.
        if (rest == "loss")
            return std::string(word);
        std::string label(word);
        label += ' ';
        for (char c : rest)
            label += c == '_' ? ' ' : c;
        return label;
    }
    return std::string(column);
}

EMBER_PRECOMPILED_INLINE axes& plot_history(axes& ax, const history& h,
                                            const history_plot_options& options)
{
    std::vector<std::string> columns = options.columns;
    if (columns.empty())
        for (const auto& name : h.names())
            if (detail::ends_with(name, "loss"))
                columns.push_back(name);
    if (columns.empty())
    {
        std::string known;
        for (const auto& n : h.names())
            known += (known.empty() ? "'" : ", '") + n + "'";
        throw value_error("plot_history: no column name ends in 'loss' (the columns are " +
                          (known.empty() ? std::string("none") : known) +
                          "); name the columns to draw in options.columns");
    }
    auto check_count = [&](const std::vector<std::string>& given, const char* what)
    {
        if (!given.empty() && given.size() != columns.size())
            throw value_error("plot_history: " + std::to_string(given.size()) + " " + what +
                              " for " + std::to_string(columns.size()) +
                              " columns, expected one per column");
    };
    check_count(options.labels, "labels");
    check_count(options.colors, "colors");

    std::vector<double> x(h.size());
    if (h.contains(options.x))
        x = h[options.x];
    else
        for (std::size_t i = 0; i < x.size(); ++i)
            x[i] = static_cast<double>(i);

    bool all_losses = true;
    for (std::size_t c = 0; c < columns.size(); ++c)
    {
        const std::vector<double>& y = h[columns[c]]; // key_error names a missing column
        all_losses = all_losses && detail::ends_with(columns[c], "loss");
        ax.plot(x, y,
                {.label = options.labels.empty() ? history_label(columns[c]) : options.labels[c],
                 .color = options.colors.empty() ? std::string() : options.colors[c],
                 .width = options.width});
    }
    ax.xlabel(options.xlabel);
    if (!options.ylabel.empty())
        ax.ylabel(options.ylabel);
    else if (all_losses)
        ax.ylabel("Loss");
    if (!options.title.empty())
        ax.title(options.title);
    if (options.legend)
        ax.legend();
    if (options.grid)
        ax.grid(true, 0.3);
    return ax;
}

} // namespace ember::plot

#endif // EMBER_DEFINITIONS

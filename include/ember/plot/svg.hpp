#pragma once
/// @file
/// A small matplotlib-like figure that writes SVG: subplots with lines, scatter points, axis
/// labels, a title, a legend and a grid — enough for training curves and prediction plots
/// without a plotting dependency. The file opens in any browser.
///
/// @code
/// ember::plot::figure fig(12, 5);            // inches, as plt.figure(figsize=(12, 5))
/// auto& ax = fig.subplot(1, 2, 1);
/// ax.plot(train_losses, {.label = "Train", .width = 2});
/// ax.xlabel("Epoch"); ax.ylabel("Loss (MSE)"); ax.title("Training Progress");
/// ax.legend(); ax.grid(true, 0.3);
/// fig.save("training.svg");
/// @endcode

#include "ember/core/error.hpp"
#include "ember/detail/file_io.hpp"
#include "ember/detail/precompiled.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <limits>
#include <span>
#include <string>
#include <vector>

namespace ember::plot
{

/// @brief How a series is drawn. Colours are CSS colours; empty picks the next default.
struct style
{
    std::string label;
    std::string color;
    double width = 1.5;
    bool dashed = false;
    double alpha = 1.0;
    double marker_size = 4.0;
};

/// @brief One panel of a figure (matplotlib's Axes).
class axes
{
public:
    /// @brief A line through (x[i], y[i]).
    axes& plot(std::span<const double> x, std::span<const double> y, style s = {});
    /// @brief A line through (i, y[i]) for i = 0, 1, ...
    axes& plot(std::span<const double> y, style s = {});
    /// @brief Points at (x[i], y[i]).
    axes& scatter(std::span<const double> x, std::span<const double> y, style s = {});

    axes& xlabel(std::string text)
    {
        m_xlabel = std::move(text);
        return *this;
    }
    axes& ylabel(std::string text)
    {
        m_ylabel = std::move(text);
        return *this;
    }
    axes& title(std::string text)
    {
        m_title = std::move(text);
        return *this;
    }
    axes& legend(bool on = true)
    {
        m_legend = on;
        return *this;
    }
    axes& grid(bool on = true, double alpha = 0.3)
    {
        m_grid = on;
        m_grid_alpha = alpha;
        return *this;
    }

    /// @brief The panel as SVG elements inside the rectangle (x, y, w, h), in pixels.
    std::string render(double x, double y, double w, double h) const;

private:
    struct series
    {
        std::vector<double> x, y;
        style s;
        bool points;
    };
    const std::string& next_color(std::string& c);

    std::vector<series> m_series;
    std::string m_xlabel, m_ylabel, m_title;
    bool m_legend = false, m_grid = false;
    double m_grid_alpha = 0.3;
};

/// @brief A figure of rows × cols panels, saved as an SVG file.
class figure
{
public:
    /// @brief Size in inches at 100 pixels per inch, like matplotlib's figsize.
    explicit figure(double width_in = 6.4, double height_in = 4.8)
        : m_width(width_in * 100), m_height(height_in * 100)
    {
    }
    // The destructor out of line, compiled with the rest of the figure (precompiled, it is the
    // deque of panels that a program drawing one would otherwise compile).
    ~figure();
    figure(const figure&) = default;
    figure(figure&&) = default;
    figure& operator=(const figure&) = default;
    figure& operator=(figure&&) = default;

    /// @brief The panel at 1-based `index` of a rows × cols grid (plt.subplot(rows, cols, i)).
    /// The reference stays valid for the figure's lifetime, as more panels are added.
    axes& subplot(int rows, int cols, int index);

    /// @brief The whole figure as an SVG document.
    std::string to_svg() const;

    /// @brief Writes the SVG to `path` (crash-safe, like every ember file).
    void save(const std::filesystem::path& path) const;

private:
    struct panel
    {
        int rows, cols, index;
        axes ax;
    };
    double m_width, m_height;
    // A deque: adding a panel keeps the references subplot() returned for the others valid.
    std::deque<panel> m_panels;
};

/*******************
 * implementation  *
 *******************/

} // namespace ember::plot

// With EMBER_PRECOMPILED the figure is compiled once, with the file formats, in
// src/ember_precompiled.cpp (which defines EMBER_PRECOMPILED_DEFINITIONS): a program that draws
// then compiles none of this.
#if EMBER_DEFINITIONS

namespace ember::plot
{

EMBER_PRECOMPILED_INLINE figure::~figure() = default;

namespace detail
{
inline constexpr const char* default_colors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
                                                 "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};

// matplotlib's one-letter colours, which SVG does not know.
inline std::string css_color(const std::string& c)
{
    if (c.size() != 1)
        return c;
    switch (c[0])
    {
    case 'b':
        return "#0000ff";
    case 'g':
        return "#008000";
    case 'r':
        return "#ff0000";
    case 'c':
        return "#00bfbf";
    case 'm':
        return "#bf00bf";
    case 'y':
        return "#bfbf00";
    case 'k':
        return "#000000";
    case 'w':
        return "#ffffff";
    default:
        return c;
    }
}

inline std::string num(double v)
{
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f", v);
    return buf;
}

inline std::string escape(const std::string& s)
{
    std::string out;
    for (char c : s)
    {
        switch (c)
        {
        case '&':
            out += "&amp;";
            break;
        case '<':
            out += "&lt;";
            break;
        case '>':
            out += "&gt;";
            break;
        case '"':
            out += "&quot;";
            break;
        default:
            out += c;
        }
    }
    return out;
}

// Half of hi - lo, which stays finite for any finite lo <= hi where hi - lo itself overflows
// (data at ±1e308). Halving is exact above the subnormals, so ratios of half spans are the
// ratios of the spans to the bit.
inline double half_span(double lo, double hi) noexcept
{
    return hi / 2 - lo / 2;
}

// Tick positions at 1, 2 or 5 times a power of ten, about `target` of them.
inline std::vector<double> nice_ticks(double lo, double hi, int target = 6)
{
    std::vector<double> ticks;
    const double half = half_span(lo, hi);
    if (!(half > 0) || !std::isfinite(half))
        return {lo};
    double raw = half / target * 2;
    double mag = std::pow(10.0, std::floor(std::log10(raw)));
    double step = mag;
    for (double m : {1.0, 2.0, 5.0, 10.0})
        if (m * mag >= raw)
        {
            step = m * mag;
            break;
        }
    // Finite t only: next to the largest doubles, hi + step * 1e-9 rounds to infinity, and so
    // does t + step. Never more than a few dozen, whatever the rounding of tiny steps.
    const double end = hi + step * 1e-9;
    for (double t = std::ceil(lo / step) * step;
         std::isfinite(t) && t <= end && ticks.size() < static_cast<std::size_t>(4 * target);
         t += step)
        ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
    return ticks;
}

inline std::string tick_label(double v)
{
    char buf[32];
    double a = std::abs(v);
    if (a != 0 && (a < 1e-3 || a >= 1e5))
        std::snprintf(buf, sizeof buf, "%.1e", v);
    else
        std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
}
} // namespace detail

EMBER_PRECOMPILED_INLINE const std::string& axes::next_color(std::string& c)
{
    if (c.empty())
        c = detail::default_colors[m_series.size() % std::size(detail::default_colors)];
    c = detail::css_color(c);
    return c;
}

EMBER_PRECOMPILED_INLINE axes& axes::plot(std::span<const double> x, std::span<const double> y,
                                          style s)
{
    if (x.size() != y.size())
        throw shape_error("plot: x has " + std::to_string(x.size()) + " values, y has " +
                          std::to_string(y.size()));
    next_color(s.color);
    m_series.push_back({{x.begin(), x.end()}, {y.begin(), y.end()}, std::move(s), false});
    return *this;
}

EMBER_PRECOMPILED_INLINE axes& axes::plot(std::span<const double> y, style s)
{
    std::vector<double> x(y.size());
    for (std::size_t i = 0; i < x.size(); ++i)
        x[i] = static_cast<double>(i);
    return plot(x, y, std::move(s));
}

EMBER_PRECOMPILED_INLINE axes& axes::scatter(std::span<const double> x, std::span<const double> y,
                                             style s)
{
    if (x.size() != y.size())
        throw shape_error("scatter: x has " + std::to_string(x.size()) + " values, y has " +
                          std::to_string(y.size()));
    next_color(s.color);
    m_series.push_back({{x.begin(), x.end()}, {y.begin(), y.end()}, std::move(s), true});
    return *this;
}

EMBER_PRECOMPILED_INLINE std::string axes::render(double x0, double y0, double w, double h) const
{
    using detail::num;
    // Room for tick labels, axis labels and the title.
    const double left = x0 + 70, right = x0 + w - 20, top = y0 + 40, bottom = y0 + h - 55;
    double xmin = std::numeric_limits<double>::infinity(), xmax = -xmin, ymin = xmin, ymax = -xmin;
    for (const auto& s : m_series)
    {
        for (double v : s.x)
            if (std::isfinite(v))
                xmin = std::min(xmin, v), xmax = std::max(xmax, v);
        for (double v : s.y)
            if (std::isfinite(v))
                ymin = std::min(ymin, v), ymax = std::max(ymax, v);
    }
    if (!(xmin <= xmax))
        xmin = 0, xmax = 1;
    if (!(ymin <= ymax))
        ymin = 0, ymax = 1;
    // One value, or two a subnormal step apart (whose half span rounds to 0): a unit range.
    if (!(detail::half_span(xmin, xmax) > 0))
        xmin -= 0.5, xmax += 0.5;
    if (!(detail::half_span(ymin, ymax) > 0))
        ymin -= 0.5, ymax += 0.5;
    // matplotlib's 5% margins (10% of the half span), kept within the doubles.
    using detail::half_span;
    const double dx = half_span(xmin, xmax) * 0.1, dy = half_span(ymin, ymax) * 0.1;
    constexpr double most = std::numeric_limits<double>::max();
    xmin = std::max(xmin - dx, -most), xmax = std::min(xmax + dx, most);
    ymin = std::max(ymin - dy, -most), ymax = std::min(ymax + dy, most);
    auto px = [&](double v)
    { return left + half_span(xmin, v) / half_span(xmin, xmax) * (right - left); };
    auto py = [&](double v)
    { return bottom - half_span(ymin, v) / half_span(ymin, ymax) * (bottom - top); };

    std::string out;
    out += "<g>\n<rect x=\"" + num(left) + "\" y=\"" + num(top) + "\" width=\"" +
           num(right - left) + "\" height=\"" + num(bottom - top) +
           "\" fill=\"white\" stroke=\"black\" stroke-width=\"1\"/>\n";
    for (double t : detail::nice_ticks(xmin, xmax))
    {
        double p = px(t);
        if (m_grid)
            out += "<line x1=\"" + num(p) + "\" y1=\"" + num(top) + "\" x2=\"" + num(p) +
                   "\" y2=\"" + num(bottom) + "\" stroke=\"black\" stroke-opacity=\"" +
                   num(m_grid_alpha) + "\" stroke-width=\"0.8\"/>\n";
        out += "<line x1=\"" + num(p) + "\" y1=\"" + num(bottom) + "\" x2=\"" + num(p) +
               "\" y2=\"" + num(bottom + 5) + "\" stroke=\"black\"/>\n";
        out += "<text x=\"" + num(p) + "\" y=\"" + num(bottom + 19) +
               "\" text-anchor=\"middle\" font-size=\"12\">" + detail::tick_label(t) + "</text>\n";
    }
    for (double t : detail::nice_ticks(ymin, ymax))
    {
        double p = py(t);
        if (m_grid)
            out += "<line x1=\"" + num(left) + "\" y1=\"" + num(p) + "\" x2=\"" + num(right) +
                   "\" y2=\"" + num(p) + "\" stroke=\"black\" stroke-opacity=\"" +
                   num(m_grid_alpha) + "\" stroke-width=\"0.8\"/>\n";
        out += "<line x1=\"" + num(left - 5) + "\" y1=\"" + num(p) + "\" x2=\"" + num(left) +
               "\" y2=\"" + num(p) + "\" stroke=\"black\"/>\n";
        out += "<text x=\"" + num(left - 8) + "\" y=\"" + num(p + 4) +
               "\" text-anchor=\"end\" font-size=\"12\">" + detail::tick_label(t) + "</text>\n";
    }
    out += "<clipPath id=\"clip" + num(x0) + "_" + num(y0) + "\"><rect x=\"" + num(left) +
           "\" y=\"" + num(top) + "\" width=\"" + num(right - left) + "\" height=\"" +
           num(bottom - top) + "\"/></clipPath>\n";
    out += "<g clip-path=\"url(#clip" + num(x0) + "_" + num(y0) + ")\">\n";
    for (const auto& s : m_series)
    {
        if (s.points)
        {
            for (std::size_t i = 0; i < s.x.size(); ++i)
                out += "<circle cx=\"" + num(px(s.x[i])) + "\" cy=\"" + num(py(s.y[i])) +
                       "\" r=\"" + num(s.s.marker_size) + "\" fill=\"" + s.s.color +
                       "\" fill-opacity=\"" + num(s.s.alpha) + "\"/>\n";
            continue;
        }
        out += "<polyline fill=\"none\" stroke=\"" + s.s.color + "\" stroke-width=\"" +
               num(s.s.width) + "\" stroke-opacity=\"" + num(s.s.alpha) + "\"" +
               (s.s.dashed ? " stroke-dasharray=\"8,5\"" : "") + " points=\"";
        for (std::size_t i = 0; i < s.x.size(); ++i)
            if (std::isfinite(s.x[i]) && std::isfinite(s.y[i]))
                out += num(px(s.x[i])) + "," + num(py(s.y[i])) + " ";
        out += "\"/>\n";
    }
    out += "</g>\n";
    if (!m_title.empty())
        out += "<text x=\"" + num((left + right) / 2) + "\" y=\"" + num(top - 12) +
               "\" text-anchor=\"middle\" font-size=\"15\">" + detail::escape(m_title) +
               "</text>\n";
    if (!m_xlabel.empty())
        out += "<text x=\"" + num((left + right) / 2) + "\" y=\"" + num(bottom + 42) +
               "\" text-anchor=\"middle\" font-size=\"13\">" + detail::escape(m_xlabel) +
               "</text>\n";
    if (!m_ylabel.empty())
        out += "<text transform=\"translate(" + num(x0 + 18) + "," + num((top + bottom) / 2) +
               ") rotate(-90)\" text-anchor=\"middle\" font-size=\"13\">" +
               detail::escape(m_ylabel) + "</text>\n";
    if (m_legend)
    {
        std::size_t labelled = 0;
        std::size_t longest = 0;
        for (const auto& s : m_series)
            if (!s.s.label.empty())
                ++labelled, longest = std::max(longest, s.s.label.size());
        if (labelled > 0)
        {
            double lw = 45 + 7.0 * static_cast<double>(longest), lh = 8 + 20.0 * labelled;
            // matplotlib's loc="best": the corner that covers the fewest data points.
            double lx = right - lw - 10, ly = top + 10;
            std::size_t fewest = std::numeric_limits<std::size_t>::max();
            for (auto [cx, cy] :
                 {std::pair{right - lw - 10, top + 10}, std::pair{left + 10, top + 10},
                  std::pair{left + 10, bottom - lh - 10},
                  std::pair{right - lw - 10, bottom - lh - 10}})
            {
                std::size_t covered = 0;
                for (const auto& s : m_series)
                    for (std::size_t i = 0; i < s.x.size(); ++i)
                    {
                        double sx = px(s.x[i]), sy = py(s.y[i]);
                        covered += sx >= cx && sx <= cx + lw && sy >= cy && sy <= cy + lh;
                    }
                if (covered < fewest)
                    fewest = covered, lx = cx, ly = cy;
            }
            out += "<rect x=\"" + num(lx) + "\" y=\"" + num(ly) + "\" width=\"" + num(lw) +
                   "\" height=\"" + num(lh) +
                   "\" fill=\"white\" fill-opacity=\"0.85\" stroke=\"#cccccc\" rx=\"3\"/>\n";
            double row = ly + 18;
            for (const auto& s : m_series)
            {
                if (s.s.label.empty())
                    continue;
                if (s.points)
                    out += "<circle cx=\"" + num(lx + 18) + "\" cy=\"" + num(row - 4) + "\" r=\"" +
                           num(s.s.marker_size) + "\" fill=\"" + s.s.color + "\" fill-opacity=\"" +
                           num(s.s.alpha) + "\"/>\n";
                else
                    out += "<line x1=\"" + num(lx + 6) + "\" y1=\"" + num(row - 4) + "\" x2=\"" +
                           num(lx + 30) + "\" y2=\"" + num(row - 4) + "\" stroke=\"" + s.s.color +
                           "\" stroke-width=\"" + num(s.s.width) + "\"" +
                           (s.s.dashed ? " stroke-dasharray=\"6,4\"" : "") + "/>\n";
                out += "<text x=\"" + num(lx + 38) + "\" y=\"" + num(row) + "\" font-size=\"12\">" +
                       detail::escape(s.s.label) + "</text>\n";
                row += 20;
            }
        }
    }
    out += "</g>\n";
    return out;
}

EMBER_PRECOMPILED_INLINE axes& figure::subplot(int rows, int cols, int index)
{
    if (rows < 1 || cols < 1 || index < 1 || index > rows * cols)
        throw value_error("subplot(" + std::to_string(rows) + ", " + std::to_string(cols) + ", " +
                          std::to_string(index) + "): index must be in 1.." +
                          std::to_string(rows * cols));
    for (auto& p : m_panels)
        if (p.rows == rows && p.cols == cols && p.index == index)
            return p.ax;
    m_panels.push_back({rows, cols, index, axes{}});
    return m_panels.back().ax;
}

EMBER_PRECOMPILED_INLINE std::string figure::to_svg() const
{
    std::string out = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" +
                      detail::num(m_width) + "\" height=\"" + detail::num(m_height) +
                      "\" viewBox=\"0 0 " + detail::num(m_width) + " " + detail::num(m_height) +
                      "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n"
                      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
    for (const auto& p : m_panels)
    {
        double w = m_width / p.cols, h = m_height / p.rows;
        int r = (p.index - 1) / p.cols, c = (p.index - 1) % p.cols;
        out += p.ax.render(c * w, r * h, w, h);
    }
    return out + "</svg>\n";
}

EMBER_PRECOMPILED_INLINE void figure::save(const std::filesystem::path& path) const
{
    const std::string svg = to_svg();
    ember::detail::atomic_write(path, {reinterpret_cast<const std::byte*>(svg.data()), svg.size()});
}

} // namespace ember::plot

#endif

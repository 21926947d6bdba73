#pragma once
/// @file
/// Progress of a long training run. On a terminal, one line redrawn in place with '\r':
///
///     Epoch 3/100 [=========>          ] 12/40 loss 0.1234 1523 samples/s eta 4:12
///
/// When the output is not a terminal (a log file, CI), redrawing would fill it with
/// carriage returns, so the bar becomes a plain line every `line_interval` seconds (and every
/// `line_every` batches, if set), plus one at the end of each epoch:
///
///     Epoch 3/100 12/40 loss 0.1234 1523 samples/s eta 4:12
///     Epoch 3/100 40/40 loss 0.1187 1530 samples/s 0:26 val_loss 0.1302
///
/// ```cpp
/// ember::progress_bar bar(epochs, loader.size());
/// for (std::size_t epoch = 0; epoch < epochs; ++epoch)
/// {
///     bar.begin_epoch(epoch);
///     for (auto& [x, y] : loader) { ...; bar.update(loss, x.shape()[0]); }
///     bar.end_epoch({{"val_loss", val_loss}});
/// }
/// ```
///
/// `loss` is the epoch's mean so far, weighted by batch size; samples/s the epoch's rate; eta
/// the time the whole run still needs at its average pace so far. The stream and the clock are
/// options, so output can be captured and tested. update() allocates nothing: lines are
/// formatted into a fixed buffer, and redraws are throttled to `min_interval`.

#include "ember/detail/precompiled.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <functional>
#include <initializer_list>
#include <iostream>
#include <limits>
#include <optional>
#include <ostream>
#include <string_view>
#include <utility>

namespace ember
{

/// @brief How and where a progress_bar draws.
struct progress_options
{
    /// @brief Where to draw; progress goes to stderr by default, like tqdm, so that stdout
    /// keeps only the program's results.
    std::ostream* out = &std::cerr;
    /// @brief Redraw one line in place (a terminal) or print plain lines. Unset: whether `out`
    /// is std::cout/std::cerr/std::clog on a terminal (isatty); any other stream is not.
    std::optional<bool> terminal;
    /// @brief Terminal: the least seconds between two redraws (the last batch always draws).
    double min_interval = 0.1;
    /// @brief Not a terminal: seconds between two progress lines within an epoch.
    double line_interval = 30;
    /// @brief Not a terminal: also a line every this many batches (0: by time only).
    std::size_t line_every = 0;
    /// @brief Characters between the bar's brackets.
    std::size_t bar_width = 20;
    /// @brief Seconds from any fixed origin; std::chrono::steady_clock when unset.
    std::function<double()> clock;
};

/// @brief A progress bar over epochs of batches (see the file comment).
class progress_bar
{
public:
    /// @brief `batches_per_epoch` may be 0 when unknown (no bar and no eta then).
    progress_bar(std::size_t epochs, std::size_t batches_per_epoch, progress_options options = {});

    /// @brief Starts epoch `epoch` (0-based, as `for (epoch = 0; ...)` counts; shown 1-based).
    void begin_epoch(std::size_t epoch);
    /// @brief One batch done, with its mean loss and its number of samples.
    void update(double loss, std::size_t samples);
    /// @brief Ends the epoch: its last line with the epoch's mean loss, rate, duration and
    /// `metrics` (e.g. `{{"val_loss", 0.13}}`). Returns the epoch's mean loss.
    double end_epoch(std::initializer_list<std::pair<std::string_view, double>> metrics = {});

    /// @brief Whether lines are redrawn in place.
    bool terminal() const noexcept { return m_terminal; }
    /// @brief The mean loss of the current (or last) epoch so far.
    double epoch_loss() const noexcept;

private:
    double now() const;
    void draw(bool final, std::initializer_list<std::pair<std::string_view, double>> metrics);
    void append(const char* format, ...);

    progress_options m_options;
    std::size_t m_epochs;
    std::size_t m_batches;
    bool m_terminal;

    std::size_t m_epoch = 0;
    std::size_t m_batch = 0;   // batches done this epoch
    std::size_t m_done = 0;    // batches done in the run, counted from the first epoch
    double m_loss_sum = 0;     // sum of loss × samples this epoch
    std::size_t m_samples = 0; // samples this epoch
    double m_run_start = std::nan("");
    double m_epoch_start = 0;
    double m_last_draw = -std::numeric_limits<double>::infinity();
    std::size_t m_drawn_width = 0; // what the terminal line holds, to blank what is left of it

    std::array<char, 512> m_line{};
    std::size_t m_length = 0;
};

} // namespace ember

/*******************
 * implementation  *
 *******************/

// With EMBER_PRECOMPILED these are compiled once, in src/ember_precompiled.cpp
// (detail/precompiled.hpp).
#if EMBER_DEFINITIONS

#include <chrono>
#include <cstdarg>
#include <unistd.h>

namespace ember
{

namespace detail
{

/// @brief Whether `out` is the standard output or error stream and that is a terminal.
inline bool stream_is_terminal(const std::ostream* out) noexcept
{
    if (out == &std::cout)
        return ::isatty(STDOUT_FILENO) == 1;
    if (out == &std::cerr || out == &std::clog)
        return ::isatty(STDERR_FILENO) == 1;
    return false;
}

/// @brief "4:07" or "1:02:03" for a number of seconds; "?" when unknown.
inline void format_duration(double seconds, char* out, std::size_t size)
{
    if (!(seconds >= 0) || seconds > 1e9)
    {
        std::snprintf(out, size, "?");
        return;
    }
    const auto s = static_cast<long long>(seconds + 0.5);
    if (s >= 3600)
        std::snprintf(out, size, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
    else
        std::snprintf(out, size, "%lld:%02lld", s / 60, s % 60);
}

} // namespace detail

EMBER_PRECOMPILED_INLINE progress_bar::progress_bar(std::size_t epochs,
                                                    std::size_t batches_per_epoch,
                                                    progress_options options)
    : m_options(std::move(options)), m_epochs(epochs), m_batches(batches_per_epoch)
{
    if (!m_options.out)
        throw value_error("progress_bar: the output stream is null");
    m_terminal = m_options.terminal.value_or(detail::stream_is_terminal(m_options.out));
}

EMBER_PRECOMPILED_INLINE double progress_bar::now() const
{
    if (m_options.clock)
        return m_options.clock();
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
}

EMBER_PRECOMPILED_INLINE double progress_bar::epoch_loss() const noexcept
{
    return m_samples ? m_loss_sum / static_cast<double>(m_samples)
                     : std::numeric_limits<double>::quiet_NaN();
}

EMBER_PRECOMPILED_INLINE void progress_bar::begin_epoch(std::size_t epoch)
{
    const double t = now();
    if (std::isnan(m_run_start))
        m_run_start = t;
    m_epoch = epoch;
    m_batch = 0;
    m_loss_sum = 0;
    m_samples = 0;
    m_epoch_start = t;
    m_last_draw = t; // a line per interval, counted from the epoch's start
    if (m_terminal)
        draw(false, {});
}

EMBER_PRECOMPILED_INLINE void progress_bar::update(double loss, std::size_t samples)
{
    ++m_batch;
    ++m_done;
    // A batch weighs its samples: one without any (its mean loss NaN) adds nothing, where
    // 0 * NaN would make the epoch's loss NaN.
    if (samples != 0)
        m_loss_sum += loss * static_cast<double>(samples);
    m_samples += samples;
    const double t = now();
    bool show = false;
    if (m_terminal)
        show = t - m_last_draw >= m_options.min_interval || m_batch == m_batches;
    else
        show = t - m_last_draw >= m_options.line_interval ||
               (m_options.line_every != 0 && m_batch % m_options.line_every == 0);
    // The epoch's last batch on a plain stream: end_epoch prints the line.
    if (show && !(!m_terminal && m_batch == m_batches))
    {
        m_last_draw = t;
        draw(false, {});
    }
}

EMBER_PRECOMPILED_INLINE double
progress_bar::end_epoch(std::initializer_list<std::pair<std::string_view, double>> metrics)
{
    draw(true, metrics);
    m_last_draw = now();
    return epoch_loss();
}

EMBER_PRECOMPILED_INLINE void progress_bar::append(const char* format, ...)
{
    if (m_length >= m_line.size())
        return;
    va_list args;
    va_start(args, format);
    const int n = std::vsnprintf(m_line.data() + m_length, m_line.size() - m_length, format, args);
    va_end(args);
    if (n > 0)
        m_length = std::min(m_line.size() - 1, m_length + static_cast<std::size_t>(n));
}

EMBER_PRECOMPILED_INLINE void
progress_bar::draw(bool final, std::initializer_list<std::pair<std::string_view, double>> metrics)
{
    const double t = now();
    const double epoch_time = t - m_epoch_start;
    m_length = 0;
    if (m_terminal)
        append("\r");
    append("Epoch %zu/%zu", m_epoch + 1, m_epochs);
    if (m_terminal && m_batches != 0)
    {
        const std::size_t width = m_options.bar_width;
        const std::size_t filled = std::min(width, m_batch * width / m_batches);
        append(" [");
        for (std::size_t i = 0; i < width; ++i)
            append("%c", i < filled ? '=' : (i == filled ? '>' : ' '));
        append("]");
    }
    if (m_batches != 0)
        append(" %zu/%zu", m_batch, m_batches);
    else
        append(" %zu", m_batch);
    if (m_samples != 0)
        append(" loss %.4g", epoch_loss());
    if (m_samples != 0 && epoch_time > 0)
    {
        const double rate = static_cast<double>(m_samples) / epoch_time;
        append(rate >= 100 ? " %.0f samples/s" : " %.3g samples/s", rate);
    }
    char time[32];
    if (final)
    {
        detail::format_duration(epoch_time, time, sizeof time);
        append(" %s", time);
    }
    else if (m_batches != 0 && m_done != 0)
    {
        const double per_batch = (t - m_run_start) / static_cast<double>(m_done);
        const double left_batches =
            static_cast<double>(m_epochs > m_epoch + 1 ? m_epochs - m_epoch - 1 : 0) *
                static_cast<double>(m_batches) +
            static_cast<double>(m_batches > m_batch ? m_batches - m_batch : 0);
        detail::format_duration(per_batch * left_batches, time, sizeof time);
        append(" eta %s", time);
    }
    for (const auto& [name, v] : metrics)
        append(" %.*s %.4g", static_cast<int>(name.size()), name.data(), v);

    std::ostream& out = *m_options.out;
    if (m_terminal)
    {
        // Blank what a longer previous line left behind.
        const std::size_t width = m_length - 1;
        out.write(m_line.data(), static_cast<std::streamsize>(m_length));
        for (std::size_t i = width; i < m_drawn_width; ++i)
            out.put(' ');
        m_drawn_width = final ? 0 : width;
        if (final)
            out.put('\n');
    }
    else
    {
        out.write(m_line.data(), static_cast<std::streamsize>(m_length));
        out.put('\n');
    }
    out.flush();
}

} // namespace ember

#endif // EMBER_DEFINITIONS

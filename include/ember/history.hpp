#pragma once
/// @file
/// ember::history: a training run's per-epoch numbers (losses, metrics, lr...) as named
/// columns, saved as CSV crash-safely and kept in a checkpoint so a resumed run carries its
/// whole history.
///
/// ```cpp
/// ember::history h;
/// h.append({{"epoch", epoch}, {"train_loss", train}, {"val_loss", val}});
/// h.save_csv("history.csv");            // epoch,train_loss,val_loss
/// ck.extras.insert("history", h.to_value());
/// ```
///
/// A column first appended at a later epoch is NaN in the rows before it, and a row that does
/// not name a column has NaN there. The CSV holds each double's shortest exact decimal (NaN as
/// `nan`, infinities as `inf`/`-inf`, all of which pandas and ember::data::read_csv read), so
/// load_csv() gives back the same numbers bit for bit.

#include "ember/core/error.hpp"
#include "ember/core/value.hpp"
#include "ember/detail/precompiled.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ember
{

/// @brief Per-epoch named columns of doubles.
class history
{
public:
    /// @brief Adds one row (an epoch): `h.append({{"train_loss", 0.3}, {"val_loss", 0.4}})`.
    /// Throws value_error if the row is empty (a row of no values would not survive save_csv
    /// nor a checkpoint, which keep columns), or a name is empty or given twice.
    void append(std::initializer_list<std::pair<std::string_view, double>> row);
    void append(std::span<const std::pair<std::string, double>> row);

    /// @brief Rows (epochs) recorded.
    std::size_t size() const noexcept { return m_rows; }
    bool empty() const noexcept { return m_rows == 0; }
    /// @brief Column names, in the order they first appeared.
    const std::vector<std::string>& names() const noexcept { return m_names; }
    bool contains(std::string_view name) const noexcept;
    /// @brief One column, a value per row; throws key_error naming the columns there are.
    const std::vector<double>& operator[](std::string_view name) const;
    /// @brief The last row's value of a column.
    double last(std::string_view name) const;

    /// @brief Writes a header row and one row per epoch, crash-safely (detail::atomic_write:
    /// the file is the old one or the new one, never half of each). Throws io_error.
    void save_csv(const std::filesystem::path& path) const;
    /// @brief Reads what save_csv() wrote (or any numeric CSV with a header).
    static history load_csv(const std::filesystem::path& path);

    /// @brief A dict of name → list of floats, for ember::checkpoint (extras).
    value to_value() const;
    /// @brief Back from to_value(); throws value_error if `v` is not such a dict of lists of
    /// one length, or a name is one append() refuses.
    static history from_value(const value& v);

    friend bool operator==(const history& a, const history& b);

private:
    static void check_name(std::string_view name);
    std::size_t column(std::string_view name);

    std::vector<std::string> m_names;
    std::vector<std::vector<double>> m_columns;
    std::size_t m_rows = 0;
};

} // namespace ember

/*******************
 * implementation  *
 *******************/

// With EMBER_PRECOMPILED these are compiled once, in src/ember_precompiled.cpp
// (detail/precompiled.hpp).
#if EMBER_DEFINITIONS

#include "ember/data/csv.hpp"
#include "ember/detail/file_io.hpp"

#include <charconv>

namespace ember
{

namespace detail
{

/// @brief The shortest decimal that reads back as `v`; `nan`, `inf`, `-inf`.
inline std::string shortest_decimal(double v)
{
    if (std::isnan(v))
        return "nan";
    if (std::isinf(v))
        return v > 0 ? "inf" : "-inf";
    char buf[32];
    auto res = std::to_chars(buf, buf + sizeof buf, v);
    return std::string(buf, res.ptr);
}

/// @brief A CSV field: quoted when it holds a comma, a quote, a line end or outer spaces.
inline std::string csv_field(std::string_view s)
{
    const bool quote = s.find_first_of(",\"\r\n") != std::string_view::npos ||
                       (!s.empty() && (s.front() == ' ' || s.back() == ' ' || s.front() == '\t' ||
                                       s.back() == '\t'));
    if (!quote)
        return std::string(s);
    std::string out = "\"";
    for (char c : s)
    {
        if (c == '"')
            out += '"';
        out += c;
    }
    return out + '"';
}

} // namespace detail

EMBER_PRECOMPILED_INLINE void history::check_name(std::string_view name)
{
    if (name.empty())
        throw value_error("history: a column name cannot be empty");
    if (name.find_first_of("\r\n") != std::string_view::npos)
        throw value_error("history: column name '" + std::string(name) +
                          "' has a line break (it could not be a CSV header)");
}

EMBER_PRECOMPILED_INLINE std::size_t history::column(std::string_view name)
{
    auto it = std::find(m_names.begin(), m_names.end(), name);
    if (it != m_names.end())
        return static_cast<std::size_t>(it - m_names.begin());
    m_names.emplace_back(name);
    m_columns.emplace_back(m_rows, std::numeric_limits<double>::quiet_NaN());
    return m_names.size() - 1;
}

EMBER_PRECOMPILED_INLINE void
history::append(std::initializer_list<std::pair<std::string_view, double>> row)
{
    std::vector<std::pair<std::string, double>> copy;
    copy.reserve(row.size());
    for (const auto& [name, v] : row)
        copy.emplace_back(std::string(name), v);
    append(copy);
}

EMBER_PRECOMPILED_INLINE void history::append(std::span<const std::pair<std::string, double>> row)
{
    if (row.empty())
        throw value_error("history::append: the row has no values; give it at least one "
                          "(h.append({{\"epoch\", e}}))");
    for (std::size_t i = 0; i < row.size(); ++i)
        for (std::size_t j = 0; j < i; ++j)
            if (row[i].first == row[j].first)
                throw value_error("history::append: column '" + row[i].first +
                                  "' is given twice in one row");
    // Names are checked first, so a bad one changes nothing.
    for (const auto& item : row)
        check_name(item.first);
    std::vector<std::size_t> where;
    where.reserve(row.size());
    for (const auto& item : row)
        where.push_back(column(item.first));
    for (auto& c : m_columns)
        c.push_back(std::numeric_limits<double>::quiet_NaN());
    for (std::size_t i = 0; i < row.size(); ++i)
        m_columns[where[i]].back() = row[i].second;
    ++m_rows;
}

EMBER_PRECOMPILED_INLINE bool history::contains(std::string_view name) const noexcept
{
    return std::find(m_names.begin(), m_names.end(), name) != m_names.end();
}

EMBER_PRECOMPILED_INLINE const std::vector<double>& history::operator[](std::string_view name) const
{
    auto it = std::find(m_names.begin(), m_names.end(), name);
    if (it == m_names.end())
    {
        std::string known;
        for (const auto& n : m_names)
            known += (known.empty() ? "'" : ", '") + n + "'";
        throw key_error("history: no column '" + std::string(name) + "' (the columns are " +
                        (known.empty() ? std::string("none yet") : known) + ")");
    }
    return m_columns[static_cast<std::size_t>(it - m_names.begin())];
}

EMBER_PRECOMPILED_INLINE double history::last(std::string_view name) const
{
    const auto& c = (*this)[name];
    if (c.empty())
        throw value_error("history: no rows yet");
    return c.back();
}

EMBER_PRECOMPILED_INLINE void history::save_csv(const std::filesystem::path& path) const
{
    std::string text;
    for (std::size_t c = 0; c < m_names.size(); ++c)
    {
        if (c != 0)
            text += ',';
        text += detail::csv_field(m_names[c]);
    }
    text += '\n';
    for (std::size_t r = 0; r < m_rows; ++r)
    {
        for (std::size_t c = 0; c < m_columns.size(); ++c)
        {
            if (c != 0)
                text += ',';
            text += detail::shortest_decimal(m_columns[c][r]);
        }
        text += '\n';
    }
    detail::atomic_write(path, std::as_bytes(std::span(text.data(), text.size())));
}

EMBER_PRECOMPILED_INLINE history history::load_csv(const std::filesystem::path& path)
{
    data::csv_table<double> table;
    try
    {
        table = data::read_csv_table<double>(path);
    }
    catch (const format_error&)
    {
        // save_csv writes a history without columns as a header without names, a blank line,
        // which read_csv refuses as an empty file: it reads back as the empty history it was.
        const std::vector<std::byte> bytes = detail::read_file(path);
        const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
        if (text.find_first_not_of(" \t\r\n") == std::string_view::npos)
            return history();
        throw;
    }
    history h;
    h.m_names = table.names;
    const std::size_t rows = table.values.shape()[0];
    const std::size_t cols = table.values.shape()[1];
    for (std::size_t c = 0; c < cols; ++c)
        for (std::size_t d = 0; d < c; ++d)
            if (h.m_names[c] == h.m_names[d])
                throw format_error("history::load_csv: " + path.string() + ": column '" +
                                   h.m_names[c] + "' appears twice in the header");
    h.m_columns.assign(cols, std::vector<double>(rows));
    for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t c = 0; c < cols; ++c)
            h.m_columns[c][r] = table.values(r, c);
    h.m_rows = rows;
    return h;
}

EMBER_PRECOMPILED_INLINE value history::to_value() const
{
    value::dict out;
    for (std::size_t c = 0; c < m_names.size(); ++c)
        out.insert(m_names[c], value::list(m_columns[c].begin(), m_columns[c].end()));
    return out;
}

EMBER_PRECOMPILED_INLINE history history::from_value(const value& v)
{
    if (!v.is_dict())
        throw value_error(std::string("history::from_value: expected a dict of columns, got ") +
                          v.type_name());
    history h;
    bool first = true;
    for (const auto& [name, column] : v.as<value::dict>())
    {
        if (!column.is_list())
            throw value_error("history::from_value: column '" + name + "' is " +
                              ember::detail::a_or_an(column.type_name()) +
                              ", expected a list of numbers");
        // The names append accepts, or save_csv could write a header load_csv refuses.
        check_name(name);
        const auto& list = column.as<value::list>();
        if (!first && list.size() != h.m_rows)
            throw value_error("history::from_value: column '" + name + "' has " +
                              std::to_string(list.size()) + " rows, the others " +
                              std::to_string(h.m_rows));
        std::vector<double> values;
        values.reserve(list.size());
        for (const value& x : list)
        {
            if (!x.is_int() && !x.is_double())
                throw value_error("history::from_value: column '" + name + "' holds " +
                                  ember::detail::a_or_an(x.type_name()) + ", expected numbers");
            values.push_back(x.to_double());
        }
        h.m_rows = list.size();
        first = false;
        h.m_names.push_back(name);
        h.m_columns.push_back(std::move(values));
    }
    return h;
}

EMBER_PRECOMPILED_INLINE bool operator==(const history& a, const history& b)
{
    if (a.m_names != b.m_names || a.m_rows != b.m_rows)
        return false;
    // NaN equals NaN here: a column with gaps equals its copy.
    for (std::size_t c = 0; c < a.m_columns.size(); ++c)
        for (std::size_t r = 0; r < a.m_rows; ++r)
        {
            const double x = a.m_columns[c][r];
            const double y = b.m_columns[c][r];
            if (!(x == y || (std::isnan(x) && std::isnan(y))))
                return false;
        }
    return true;
}

} // namespace ember

#endif // EMBER_DEFINITIONS

#pragma once
/// @file
/// Reading numeric CSV files into tensors: a [rows, columns] tensor, with an optional header
/// row, any one-character delimiter and a choice of columns by name or index, and a split into
/// feature and target columns ready for a tensor_dataset.
///
/// ```cpp
/// auto table = ember::data::read_csv_table<float>("houses.csv");   // header: area,rooms,price
/// auto [X, y] = ember::data::split_columns(table, {"price"});       // X [N, 2], y [N, 1]
/// ember::data::tensor_dataset ds(std::move(X), std::move(y));
/// auto all = ember::data::read_csv<double>("points.csv", {.header = false, .columns = {0, 2}});
/// ```
///
/// Numbers are read as float64 (std::from_chars: decimal or scientific, `nan`, `inf`, an
/// optional leading `+`; one too small for float64, like `1e-400`, is 0) and then rounded to T,
/// as `pandas.read_csv(...).to_numpy(float32)` does; integer T reads integers only. Fields may
/// be double-quoted (`"1,5"` is one field, `""` a quote inside one); spaces and tabs around a
/// field are ignored; blank lines are skipped; `\r\n` and lone `\r` line ends and a UTF-8 byte
/// order mark are accepted. A quoted field cannot span lines.
/// Every error names the file and line, and the column by name and index: a row with the
/// wrong number of fields, a field that is not a number, a number out of T's range
/// (format_error); a column that does not exist (key_error, value_error); a file that cannot be
/// read (io_error).

#include "ember/core/error.hpp"
#include "ember/core/tensor.hpp"
#include "ember/detail/file_io.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

namespace ember::data
{

/// @brief A column chosen by its header name (`"price"`) or its 0-based index (`2`).
class csv_column
{
public:
    csv_column(std::string name) : m_name(std::move(name)), m_by_name(true) {}
    csv_column(const char* name) : m_name(name), m_by_name(true) {}
    csv_column(std::size_t index) : m_index(index) {}
    csv_column(int index);

    bool by_name() const noexcept { return m_by_name; }
    const std::string& name() const noexcept { return m_name; }
    std::size_t index() const noexcept { return m_index; }

private:
    std::string m_name;
    std::size_t m_index = 0;
    bool m_by_name = false;
};

/// @brief How to read a CSV file.
struct csv_options
{
    char delimiter = ',';
    /// @brief Whether the first (non-blank) line holds the column names.
    bool header = true;
    /// @brief The columns to read, in this order; empty reads them all.
    std::vector<csv_column> columns;
};

/// @brief A CSV file's numbers and its column names (empty without a header).
template <class T>
struct csv_table
{
    std::vector<std::string> names; ///< one per column of `values`, or none
    tensor<T, 2> values;            ///< [rows, columns]

    /// @brief The index in `values` of a column; throws key_error for an unknown name (listing
    /// the names), value_error for an index out of range or a name without a header.
    std::size_t column_index(const csv_column& column) const;
};

/// @brief The numbers of a CSV file with its column names (see the file comment).
template <class T = float>
csv_table<T> read_csv_table(const std::filesystem::path& path, const csv_options& options = {});

/// @brief The numbers of a CSV file as a [rows, columns] tensor.
template <class T = float>
tensor<T, 2> read_csv(const std::filesystem::path& path, const csv_options& options = {});

/// @brief The given columns of `table`, in that order, as a [rows, columns.size()] tensor.
template <class T>
tensor<T, 2> select_columns(const csv_table<T>& table, const std::vector<csv_column>& columns);

/// @brief Features (every column not in `targets`, in file order) and targets (in the order
/// given): `auto [X, y] = split_columns(table, {"price"});`. Throws value_error if a column is
/// listed twice or nothing is left for the features.
template <class T>
std::pair<tensor<T, 2>, tensor<T, 2>> split_columns(const csv_table<T>& table,
                                                    const std::vector<csv_column>& targets);

/// @brief Features and targets each chosen explicitly.
template <class T>
std::pair<tensor<T, 2>, tensor<T, 2>> split_columns(const csv_table<T>& table,
                                                    const std::vector<csv_column>& features,
                                                    const std::vector<csv_column>& targets);

/*******************
 * implementation  *
 *******************/

inline csv_column::csv_column(int index)
{
    if (index < 0)
        throw value_error("csv_column: index " + std::to_string(index) + " is negative");
    m_index = static_cast<std::size_t>(index);
}

namespace detail
{

/// @brief A column's name as messages quote it: control bytes escaped (a NUL in a header
/// would cut the message short), at most 64 bytes.
inline std::string quoted_column(std::string_view name)
{
    return ember::detail::quoted(name, '\'', 64);
}

/// @brief "'name' (index 2)" or "index 2", for messages.
inline std::string describe_column(const std::vector<std::string>& names, std::size_t index)
{
    if (index < names.size())
        return quoted_column(names[index]) + " (index " + std::to_string(index) + ")";
    return "index " + std::to_string(index);
}

template <class T>
std::string_view csv_type_name()
{
    if constexpr (std::is_same_v<T, float>)
        return "float32";
    else if constexpr (std::is_same_v<T, double>)
        return "float64";
    else if constexpr (std::is_same_v<T, std::int64_t>)
        return "int64";
    else if constexpr (std::is_same_v<T, std::int32_t>)
        return "int32";
    else if constexpr (std::is_integral_v<T>)
        return "an integer";
    else
        return "a number";
}

/// @brief One line split into fields, quotes resolved, spaces around fields dropped. Fields
/// are views of the line, or of `scratch` where a quote had to be unescaped. Returns false
/// with `error` set if a quote is malformed.
class csv_splitter
{
public:
    bool split(std::string_view line, char delimiter, std::string& error);
    const std::vector<std::string_view>& fields() const noexcept { return m_fields; }

private:
    std::vector<std::string_view> m_fields;
    // Storage for quoted fields holding "": a deque, whose push_back moves no element, so the
    // views of the earlier ones stay valid (a vector reserved to the line's length would
    // reserve 32 bytes a byte of the line).
    std::deque<std::string> m_unquoted;
};

inline bool is_blank(char c, char delimiter) noexcept
{
    return (c == ' ' || c == '\t') && c != delimiter;
}

inline bool csv_splitter::split(std::string_view line, char delimiter, std::string& error)
{
    m_fields.clear();
    m_unquoted.clear();
    std::size_t i = 0;
    const std::size_t n = line.size();
    while (true)
    {
        while (i < n && is_blank(line[i], delimiter))
            ++i;
        if (i < n && line[i] == '"')
        {
            ++i;
            std::string text;
            bool closed = false;
            bool escaped = false;
            std::size_t start = i;
            for (; i < n; ++i)
            {
                if (line[i] != '"')
                    continue;
                if (i + 1 < n && line[i + 1] == '"')
                {
                    text.append(line.substr(start, i + 1 - start));
                    escaped = true;
                    start = i + 2;
                    ++i;
                    continue;
                }
                closed = true;
                break;
            }
            if (!closed)
            {
                error = "a quoted field has no closing quote (fields cannot span lines)";
                return false;
            }
            if (escaped)
            {
                text.append(line.substr(start, i - start));
                m_unquoted.push_back(std::move(text));
                m_fields.emplace_back(m_unquoted.back());
            }
            else
                m_fields.push_back(line.substr(start, i - start));
            ++i; // the closing quote
            while (i < n && is_blank(line[i], delimiter))
                ++i;
            if (i < n && line[i] != delimiter)
            {
                error = "text after the closing quote of field " + std::to_string(m_fields.size());
                return false;
            }
        }
        else
        {
            const std::size_t start = i;
            while (i < n && line[i] != delimiter)
                ++i;
            std::size_t end = i;
            while (end > start && is_blank(line[end - 1], delimiter))
                --end;
            m_fields.push_back(line.substr(start, end - start));
        }
        if (i >= n)
            return true;
        ++i; // the delimiter
    }
}

/// @brief Whether a decimal that std::from_chars found out of double's range is too small for
/// it rather than too large: its first significant digit stands at a negative power of ten.
inline bool decimal_is_tiny(std::string_view text)
{
    if (!text.empty() && text.front() == '-')
        text.remove_prefix(1);
    const std::size_t e = std::min(text.find_first_of("eE"), text.size());
    const std::string_view mantissa = text.substr(0, e);
    const std::size_t point = std::min(mantissa.find('.'), mantissa.size());
    const std::size_t first = mantissa.find_first_of("123456789");
    if (first == std::string_view::npos)
        return true;
    // The power of ten of the first significant digit, before the exponent.
    const long long power = first < point ? static_cast<long long>(point - first) - 1
                                          : -static_cast<long long>(first - point);
    std::string_view exponent = text.substr(std::min(e + 1, text.size()));
    if (exponent.starts_with('+'))
        exponent.remove_prefix(1);
    long long x = 0;
    const auto res = std::from_chars(exponent.data(), exponent.data() + exponent.size(), x);
    if (res.ec == std::errc::result_out_of_range)
        return exponent.starts_with('-');
    return x < -power;
}

/// @brief A field as an error message quotes it: at most 64 bytes, control bytes escaped.
inline std::string quoted_field(std::string_view text)
{
    return ember::detail::quoted(text, '"', 64);
}

/// @brief Parses one field as T; returns an empty string, or what is wrong.
template <class T>
std::string parse_number(std::string_view text, T& out)
{
    if (text.empty())
        return "the field is empty";
    std::string_view digits = text;
    if (digits.front() == '+' && digits.size() > 1 && digits[1] != '-' && digits[1] != '+')
        digits.remove_prefix(1);
    const char* first = digits.data();
    const char* last = first + digits.size();
    if constexpr (std::is_floating_point_v<T>)
    {
        double v = 0;
        auto [ptr, ec] = std::from_chars(first, last, v, std::chars_format::general);
        if (ec == std::errc::result_out_of_range && ptr == last && decimal_is_tiny(digits))
        {
            // Below the smallest double, not above the largest: zero, as Python and pandas read
            // 1e-400.
            out = digits.front() == '-' ? -T(0) : T(0);
            return {};
        }
        if (ptr != last || (ec != std::errc{} && ec != std::errc::result_out_of_range))
            return "cannot read " + quoted_field(text) + " as a number"; // 1e999x: not a number
        if (ec == std::errc::result_out_of_range)
            return quoted_field(text) + " is out of range for " + std::string(csv_type_name<T>());
        // Out of T's range is what rounds to infinity in T: float32's largest value, which numpy
        // prints 3.4028235e+38, is above it as a double but rounds to it.
        if (std::isfinite(v) && std::isinf(static_cast<T>(v)))
            return quoted_field(text) + " is out of range for " + std::string(csv_type_name<T>());
        out = static_cast<T>(v);
    }
    else
    {
        auto [ptr, ec] = std::from_chars(first, last, out);
        if (ptr != last || (ec != std::errc{} && ec != std::errc::result_out_of_range))
            return "cannot read " + quoted_field(text) + " as " + std::string(csv_type_name<T>());
        if (ec == std::errc::result_out_of_range)
            return quoted_field(text) + " is out of range for " + std::string(csv_type_name<T>());
    }
    return {};
}

/// @brief Resolves `wanted` against `names` (or a count of columns without a header).
inline std::size_t find_column(const std::vector<std::string>& names, std::size_t count,
                               const csv_column& wanted, const std::string& where)
{
    if (!wanted.by_name())
    {
        if (wanted.index() >= count)
            throw value_error(where + ": column index " + std::to_string(wanted.index()) +
                              " is out of range for " + std::to_string(count) + " columns");
        return wanted.index();
    }
    const std::string name = quoted_column(wanted.name());
    if (names.empty())
        throw value_error(where + ": column " + name +
                          " chosen by name, but there is no header row (select by index)");
    auto it = std::find(names.begin(), names.end(), wanted.name());
    if (it == names.end())
    {
        constexpr std::size_t listed = 20; // a file of a million columns lists the first few
        std::string known;
        for (std::size_t i = 0; i < names.size() && i < listed; ++i)
            known += (i == 0 ? "" : ", ") + quoted_column(names[i]);
        if (names.size() > listed)
            known += ", ... (" + std::to_string(names.size()) + " in all)";
        throw key_error(where + ": no column " + name + " (the columns are " + known + ")");
    }
    const auto first = static_cast<std::size_t>(it - names.begin());
    auto again = std::find(it + 1, names.end(), wanted.name());
    if (again != names.end())
        throw value_error(where + ": column name " + name + " appears more than once (indices " +
                          std::to_string(first) + " and " + std::to_string(again - names.begin()) +
                          "): select by index");
    return first;
}

} // namespace detail

template <class T>
std::size_t csv_table<T>::column_index(const csv_column& column) const
{
    return detail::find_column(names, values.shape()[1], column, "csv_table");
}

template <class T>
csv_table<T> read_csv_table(const std::filesystem::path& path, const csv_options& options)
{
    static_assert(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>,
                  "ember::data::read_csv: T must be a floating-point or integer type");
    const std::string file = path.string();
    if (options.delimiter == '"' || options.delimiter == '\n' || options.delimiter == '\r')
        throw value_error("read_csv: '" + file +
                          "': the delimiter cannot be a quote or a line end");
    const std::vector<std::byte> bytes = ember::detail::read_file(path);
    std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    if (text.starts_with("\xEF\xBB\xBF"))
        text.remove_prefix(3);

    csv_table<T> table;
    detail::csv_splitter splitter;
    std::string error;
    std::vector<std::size_t> selected; // file column of each output column
    std::size_t width = 0;             // fields per row
    std::size_t width_line = 0;        // the line that set it
    bool have_width = false;
    std::vector<T> values;
    std::size_t rows = 0;

    auto select = [&](const std::string& where)
    {
        if (options.columns.empty())
            for (std::size_t c = 0; c < width; ++c)
                selected.push_back(c);
        else
            for (const auto& col : options.columns)
                selected.push_back(detail::find_column(table.names, width, col, where));
        if (!table.names.empty())
        {
            std::vector<std::string> chosen;
            for (std::size_t c : selected)
                chosen.push_back(table.names[c]);
            table.names = std::move(chosen);
        }
    };

    std::size_t line_no = 0;
    std::size_t pos = 0;
    std::vector<std::string> header; // names of every file column, for messages
    while (pos < text.size())
    {
        // A line ends at \n, \r\n or a lone \r (classic Mac OS), as pandas reads them: a lone
        // \r kept inside a line would run the file's lines together into one row.
        std::size_t end = text.find_first_of("\r\n", pos);
        if (end == std::string_view::npos)
            end = text.size();
        std::string_view line = text.substr(pos, end - pos);
        pos = end + (text.substr(end).starts_with("\r\n") ? 2 : 1);
        ++line_no;
        if (std::all_of(line.begin(), line.end(),
                        [&](char c) { return detail::is_blank(c, options.delimiter); }))
            continue; // a blank line; with '\t' the delimiter, a line of tabs is empty fields
        const std::string where = "read_csv: " + file + ":" + std::to_string(line_no);
        if (!splitter.split(line, options.delimiter, error))
            throw format_error(where + ": " + error);
        const auto& fields = splitter.fields();
        if (!have_width)
        {
            width = fields.size();
            width_line = line_no;
            have_width = true;
            if (options.header)
            {
                table.names.assign(fields.begin(), fields.end());
                header = table.names;
                select("read_csv: " + file);
                continue;
            }
            select("read_csv: " + file);
        }
        if (fields.size() != width)
            throw format_error(where + ": " + std::to_string(fields.size()) + " fields, expected " +
                               std::to_string(width) + " (as " +
                               (options.header ? "in the header on line " : "on line ") +
                               std::to_string(width_line) + ")");
        for (std::size_t c : selected)
        {
            T v{};
            const std::string problem = detail::parse_number(fields[c], v);
            if (!problem.empty())
                throw format_error(where + ": column " + detail::describe_column(header, c) + ": " +
                                   problem);
            values.push_back(v);
        }
        ++rows;
    }
    if (!have_width && options.header)
        throw format_error("read_csv: " + file + ": the file is empty (expected a header row)");
    if (!have_width)
        select("read_csv: " + file);

    table.values = tensor<T, 2>::from_shape({rows, selected.size()});
    std::copy(values.begin(), values.end(), table.values.data());
    return table;
}

template <class T>
tensor<T, 2> read_csv(const std::filesystem::path& path, const csv_options& options)
{
    return read_csv_table<T>(path, options).values;
}

template <class T>
tensor<T, 2> select_columns(const csv_table<T>& table, const std::vector<csv_column>& columns)
{
    std::vector<std::size_t> index;
    for (const auto& c : columns)
        index.push_back(
            detail::find_column(table.names, table.values.shape()[1], c, "select_columns"));
    const std::size_t rows = table.values.shape()[0];
    const std::size_t width = table.values.shape()[1];
    tensor<T, 2> out = tensor<T, 2>::from_shape({rows, index.size()});
    const T* from = table.values.data();
    T* to = out.data();
    for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t k = 0; k < index.size(); ++k)
            to[r * index.size() + k] = from[r * width + index[k]];
    return out;
}

template <class T>
std::pair<tensor<T, 2>, tensor<T, 2>> split_columns(const csv_table<T>& table,
                                                    const std::vector<csv_column>& targets)
{
    const std::size_t width = table.values.shape()[1];
    std::vector<bool> is_target(width, false);
    for (const auto& c : targets)
    {
        const std::size_t i = detail::find_column(table.names, width, c, "split_columns");
        if (is_target[i])
            throw value_error("split_columns: target column " +
                              detail::describe_column(table.names, i) + " is listed twice");
        is_target[i] = true;
    }
    std::vector<csv_column> features;
    for (std::size_t i = 0; i < width; ++i)
        if (!is_target[i])
            features.emplace_back(i);
    if (features.empty())
        throw value_error("split_columns: every column is a target; no feature column is left");
    return {select_columns(table, features), select_columns(table, targets)};
}

template <class T>
std::pair<tensor<T, 2>, tensor<T, 2>> split_columns(const csv_table<T>& table,
                                                    const std::vector<csv_column>& features,
                                                    const std::vector<csv_column>& targets)
{
    const std::size_t width = table.values.shape()[1];
    std::vector<bool> used(width, false);
    for (const auto* list : {&features, &targets})
        for (const auto& c : *list)
        {
            const std::size_t i = detail::find_column(table.names, width, c, "split_columns");
            if (used[i])
                throw value_error("split_columns: column " +
                                  detail::describe_column(table.names, i) +
                                  " is listed twice (a column is a feature or a target)");
            used[i] = true;
        }
    return {select_columns(table, features), select_columns(table, targets)};
}

} // namespace ember::data

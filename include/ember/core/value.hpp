#pragma once
/// @file
/// ember::value: a dynamically typed value — None, bool, int, float, string, tensor, list or
/// string-keyed dict — the C++ shape of the Python objects that go into a checkpoint's
/// `hyperparameters` and user extras, and of what a pickle holds.

#include "ember/core/error.hpp"
#include "ember/core/host_tensor.hpp"
#include "ember/core/ordered_dict.hpp"
#include "ember/detail/precompiled.hpp"

#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

namespace ember
{

/// @brief None, bool, int64, double, string, host_tensor, list of values or dict of values.
class value
{
public:
    using list = std::vector<value>;
    using dict = ordered_dict<value>;
    using storage_type = std::variant<std::monostate, bool, std::int64_t, double, std::string,
                                      host_tensor, list, dict>;

    /// @brief None.
    value() = default;
    value(std::nullptr_t) {}
    value(bool b) : m_data(std::in_place_type<bool>, b) {}
    /// @brief Any integer type becomes an int64 (Python's int).
    template <class I>
    requires(std::is_integral_v<I> && !std::is_same_v<I, bool>) value(I i)
        : m_data(std::in_place_type<std::int64_t>, static_cast<std::int64_t>(i))
    {
    }
    /// @brief float and double become a double (Python's float).
    template <class F>
    requires std::is_floating_point_v<F> value(F f)
        : m_data(std::in_place_type<double>, static_cast<double>(f))
    {
    }
    value(const char* s) : m_data(std::in_place_type<std::string>, s) {}
    value(std::string s) : m_data(std::in_place_type<std::string>, std::move(s)) {}
    value(host_tensor t) : m_data(std::in_place_type<host_tensor>, std::move(t)) {}
    value(list l) : m_data(std::in_place_type<list>, std::move(l)) {}
    value(dict d) : m_data(std::in_place_type<dict>, std::move(d)) {}

    // Copies, moves and destruction: declared here, defined out of line below, so that a
    // program linking the precompiled part does not compile them.
    value(const value&);
    value(value&&) noexcept;
    value& operator=(const value&);
    value& operator=(value&&) noexcept;
    ~value();

    bool is_none() const noexcept { return std::holds_alternative<std::monostate>(m_data); }
    bool is_bool() const noexcept { return std::holds_alternative<bool>(m_data); }
    bool is_int() const noexcept { return std::holds_alternative<std::int64_t>(m_data); }
    bool is_double() const noexcept { return std::holds_alternative<double>(m_data); }
    bool is_string() const noexcept { return std::holds_alternative<std::string>(m_data); }
    bool is_tensor() const noexcept { return std::holds_alternative<host_tensor>(m_data); }
    bool is_list() const noexcept { return std::holds_alternative<list>(m_data); }
    bool is_dict() const noexcept { return std::holds_alternative<dict>(m_data); }

    /// @brief The held value as T; throws value_error naming both types otherwise. `as<double>()`
    /// also accepts an int, as Python code expects.
    template <class T>
    const T& as() const;
    template <class T>
    T& as();
    double to_double() const;

    /// @brief "None", "bool", "int", "float", "str", "tensor", "list", "dict".
    const char* type_name() const noexcept;

    const storage_type& data() const noexcept { return m_data; }
    storage_type& data() noexcept { return m_data; }

    friend bool operator==(const value& a, const value& b) { return a.m_data == b.m_data; }

private:
    storage_type m_data;
};

/*******************
 * implementation  *
 *******************/

// Copying, moving and destroying a value visits an eight-way std::variant, two of whose
// alternatives hold values again: compiled in every file that copies a checkpoint, unless
// precompiled (detail/precompiled.hpp), where src/ember_precompiled.cpp compiles them once.
#if EMBER_SHARED_DEFINITIONS
EMBER_PRECOMPILED_INLINE value::value(const value&) = default;
EMBER_PRECOMPILED_INLINE value::value(value&&) noexcept = default;
EMBER_PRECOMPILED_INLINE value& value::operator=(const value&) = default;
EMBER_PRECOMPILED_INLINE value& value::operator=(value&&) noexcept = default;
EMBER_PRECOMPILED_INLINE value::~value() = default;
#endif

inline const char* value::type_name() const noexcept
{
    constexpr const char* names[] = {"None", "bool",   "int",  "float",
                                     "str",  "tensor", "list", "dict"};
    return names[m_data.index()];
}

template <class T>
const T& value::as() const
{
    if (const T* p = std::get_if<T>(&m_data))
        return *p;
    throw value_error(std::string("value is ") + ember::detail::a_or_an(type_name()) +
                      ", not the type asked for");
}

template <class T>
T& value::as()
{
    if (T* p = std::get_if<T>(&m_data))
        return *p;
    throw value_error(std::string("value is ") + ember::detail::a_or_an(type_name()) +
                      ", not the type asked for");
}

inline double value::to_double() const
{
    if (const auto* d = std::get_if<double>(&m_data))
        return *d;
    if (const auto* i = std::get_if<std::int64_t>(&m_data))
        return static_cast<double>(*i);
    throw value_error(std::string("value is ") + ember::detail::a_or_an(type_name()) +
                      ", not a number");
}

EMBER_PRECOMPILED_EXTERN_CLASS(ordered_dict<value>) // value::dict

} // namespace ember

#pragma once
/// @file
/// An insertion-ordered string-keyed map, the shape of Python's dict and PyTorch's OrderedDict.

#include "ember/core/error.hpp"

#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ember
{

/// @brief Keys keep the order they were inserted in; lookup is by hash.
template <class V>
class ordered_dict
{
public:
    using key_type = std::string;
    using mapped_type = V;
    using value_type = std::pair<std::string, V>;
    using iterator = typename std::vector<value_type>::iterator;
    using const_iterator = typename std::vector<value_type>::const_iterator;

    ordered_dict() = default;
    ordered_dict(std::initializer_list<value_type> items)
    {
        for (const auto& kv : items)
            insert(kv.first, kv.second);
    }

    /// @brief Adds a new key at the end; throws key_error if the key is already there.
    V& insert(std::string key, V value);
    /// @brief Replaces the value of an existing key in place, or adds it at the end.
    V& insert_or_assign(std::string key, V value);

    /// @brief The value of `key`; throws key_error naming the key if it is absent.
    V& at(std::string_view key);
    const V& at(std::string_view key) const;
    V& operator[](std::string_view key) { return at(key); }
    const V& operator[](std::string_view key) const { return at(key); }

    V* find(std::string_view key) noexcept;
    const V* find(std::string_view key) const noexcept;
    bool contains(std::string_view key) const noexcept { return find(key) != nullptr; }

    std::vector<std::string> keys() const;
    std::size_t size() const noexcept { return m_items.size(); }
    bool empty() const noexcept { return m_items.empty(); }
    void clear() noexcept
    {
        m_items.clear();
        m_index.clear();
    }

    iterator begin() noexcept { return m_items.begin(); }
    iterator end() noexcept { return m_items.end(); }
    const_iterator begin() const noexcept { return m_items.begin(); }
    const_iterator end() const noexcept { return m_items.end(); }

    friend bool operator==(const ordered_dict& a, const ordered_dict& b)
    {
        return a.m_items == b.m_items;
    }

private:
    std::vector<value_type> m_items;
    std::unordered_map<std::string, std::size_t> m_index;
};

/*******************
 * implementation  *
 *******************/

template <class V>
V& ordered_dict<V>::insert(std::string key, V value)
{
    if (m_index.contains(key))
        throw key_error("duplicate key '" + key + "'");
    m_index.emplace(key, m_items.size());
    m_items.emplace_back(std::move(key), std::move(value));
    return m_items.back().second;
}

template <class V>
V& ordered_dict<V>::insert_or_assign(std::string key, V value)
{
    if (V* existing = find(key))
    {
        *existing = std::move(value);
        return *existing;
    }
    return insert(std::move(key), std::move(value));
}

template <class V>
V* ordered_dict<V>::find(std::string_view key) noexcept
{
    auto it = m_index.find(std::string(key));
    return it == m_index.end() ? nullptr : &m_items[it->second].second;
}

template <class V>
const V* ordered_dict<V>::find(std::string_view key) const noexcept
{
    auto it = m_index.find(std::string(key));
    return it == m_index.end() ? nullptr : &m_items[it->second].second;
}

template <class V>
V& ordered_dict<V>::at(std::string_view key)
{
    if (V* v = find(key))
        return *v;
    throw key_error("no key '" + std::string(key) + "'");
}

template <class V>
const V& ordered_dict<V>::at(std::string_view key) const
{
    if (const V* v = find(key))
        return *v;
    throw key_error("no key '" + std::string(key) + "'");
}

template <class V>
std::vector<std::string> ordered_dict<V>::keys() const
{
    std::vector<std::string> k;
    k.reserve(m_items.size());
    for (const auto& kv : m_items)
        k.push_back(kv.first);
    return k;
}

} // namespace ember

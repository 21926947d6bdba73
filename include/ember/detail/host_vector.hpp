#pragma once
/// @file
/// host_vector<T>: the storage of thrust_omp's tensors. What device_tensor and the optimizers
/// need of a vector (value_type, data(), size(), resize(), assign(), copies and moves), with
/// std::vector's semantics: elements are value-initialized (zeros), growth keeps them, copy
/// assignment reuses the memory when it is large enough. Unlike std::vector it has data() for
/// every T, bool included (std::vector<bool> packs bits), as Thrust's vectors do; its memory
/// comes from ember's tensor_allocator (huge pages for large blocks).

#include "ember/detail/tensor_allocator.hpp"

#include <algorithm>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

namespace ember::detail
{

template <class T>
class host_vector
{
    static_assert(std::is_trivially_copyable_v<T>, "host_vector holds tensor elements");

public:
    using value_type = T;
    using size_type = std::size_t;

    host_vector() = default;
    explicit host_vector(std::size_t n) { resize(n); }
    host_vector(const host_vector& other) { *this = other; }
    host_vector(host_vector&& other) noexcept
        : m_data(std::exchange(other.m_data, nullptr)), m_size(std::exchange(other.m_size, 0)),
          m_capacity(std::exchange(other.m_capacity, 0))
    {
    }
    host_vector& operator=(const host_vector& other)
    {
        if (this != &other)
        {
            make_room_discarding(other.m_size);
            std::copy_n(other.m_data, other.m_size, m_data);
            m_size = other.m_size;
        }
        return *this;
    }
    host_vector& operator=(host_vector&& other) noexcept
    {
        if (this != &other)
        {
            release();
            m_data = std::exchange(other.m_data, nullptr);
            m_size = std::exchange(other.m_size, 0);
            m_capacity = std::exchange(other.m_capacity, 0);
        }
        return *this;
    }
    ~host_vector() { release(); }

    T* data() noexcept { return m_data; }
    const T* data() const noexcept { return m_data; }
    std::size_t size() const noexcept { return m_size; }
    T* begin() noexcept { return m_data; }
    const T* begin() const noexcept { return m_data; }
    T* end() noexcept { return m_data + m_size; }
    const T* end() const noexcept { return m_data + m_size; }

    /// @brief n elements: the first min(n, size()) kept, the rest zeros.
    void resize(std::size_t n)
    {
        if (n > m_capacity)
        {
            host_vector grown;
            grown.reserve_exactly(n);
            std::copy_n(m_data, m_size, grown.m_data);
            grown.m_size = m_size;
            *this = std::move(grown);
        }
        if (n > m_size)
            std::fill(m_data + m_size, m_data + n, T());
        m_size = n;
    }

    /// @brief n elements, all `value`.
    void assign(std::size_t n, const T& value)
    {
        make_room_discarding(n);
        std::fill_n(m_data, n, value);
        m_size = n;
    }

    bool empty() const noexcept { return m_size == 0; }

private:
    /// Memory for n elements, what was there not kept (copy assignment and assign() overwrite).
    void make_room_discarding(std::size_t n)
    {
        if (n > m_capacity)
        {
            release();
            reserve_exactly(n);
        }
    }
    void reserve_exactly(std::size_t n)
    {
        if (n > static_cast<std::size_t>(-1) / sizeof(T)) // as std::vector's max_size()
            throw std::length_error("ember: a device tensor of " + std::to_string(n) +
                                    " elements does not fit in memory");
        if (n != 0)
            m_data = tensor_allocator<T>().allocate(n);
        m_capacity = n;
    }
    void release() noexcept
    {
        if (m_data != nullptr)
            tensor_allocator<T>().deallocate(m_data, m_capacity);
        m_data = nullptr;
        m_size = m_capacity = 0;
    }

    T* m_data = nullptr;
    std::size_t m_size = 0;
    std::size_t m_capacity = 0;
};

} // namespace ember::detail

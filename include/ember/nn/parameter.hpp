#pragma once
/// @file
/// parameter (a learned tensor with its gradient), buffer (state that is saved but not learned,
/// like BatchNorm's running mean), and param_ref, the rank-erased handle optimizers hold.

#include "ember/core/tensor.hpp"
#include "ember/device/cpu.hpp"
#include "ember/nn/grad_view.hpp"

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace ember::nn
{

/// @brief A learned tensor (`value`) and the gradient that backward accumulates into it
/// (`grad()`, same shape, starts at zero), like torch.nn.Parameter with its `.grad`.
///
/// zero_grad() sets the gradient to zero lazily: it only marks it, and the next backward writes
/// its gradient over the old numbers (a product with beta = 0) instead of adding it to a tensor
/// of zeros. That saves a pass over every gradient and a read of it per training step (the MLP
/// step of docs/benchmarks.md, m3r: SGD's step at batch 16 within 1.28× of its products,
/// interleaved, 1.45× before). grad() fills in the zeros first when it is asked for a marked
/// gradient, so a parameter that a backward reached once and not since zero_grad() reads, and
/// is stepped on, as zeros, as in PyTorch with `zero_grad(set_to_none=False)`. The one
/// difference a program can see: a pointer into the gradient (`grad().data()`) kept across
/// zero_grad() still shows the old numbers; ask grad() again after zero_grad().
///
/// A gradient that nothing has written yet (has_grad() false: no backward reached the
/// parameter, nor did the program take grad() to write to) is PyTorch's `.grad` that is None:
/// optimizers and clip_grad_norm_ skip the parameter, so an unused branch is not decayed by
/// weight decay nor given optimizer state. The first backward that reaches it, or a call of
/// the non-const grad(), makes it a gradient; zero_grad() does not undo that, as in PyTorch
/// 1.13, whose zero_grad() leaves a None gradient None and zeroes the others.
///
/// A backward whose gradient is the outer product of two vectors (a linear layer's weight at
/// batch 1) may keep the two instead of writing the product (keep_grad_as_outer()). grad()
/// writes it out when asked, to the same bits; an optimizer's step reads it through
/// param_ref::view_grad() and leaves it kept. The gradient is as large as the weight:
/// not writing it out and reading it back took 39% off the time of SGD's MLP step at batch 1
/// (docs/benchmarks.md), and 21% off Adam's.
template <class T, std::size_t N, class Device = cpu>
class parameter
{
public:
    using value_type = T;
    using device_type = Device;
    using tensor_type = typename Device::template tensor_type<T, N>;
    static constexpr std::size_t rank = N;

    tensor_type value;
    bool requires_grad = true;

    parameter() = default;
    /// @brief Takes the initial value; the gradient starts as zeros of the same shape.
    explicit parameter(tensor_type initial)
        : value(std::move(initial)), m_grad(tensor_type::from_shape(value.shape()))
    {
        m_grad.fill(T(0));
    }

    /// @brief The gradient, zeros after zero_grad() until a backward adds to it. Const or not,
    /// the first call after zero_grad() writes the zeros, so two threads must not make that
    /// call on the same parameter at once (nor read a module's gradients concurrently then).
    /// This one is for writing: from here on the parameter has a gradient (has_grad()).
    tensor_type& grad()
    {
        settle_grad();
        m_has_grad = true;
        return m_grad;
    }
    const tensor_type& grad() const
    {
        settle_grad();
        return m_grad;
    }

    /// @brief Sets the gradient to zero (lazily: see the class comment); with `set_to_none`,
    /// to PyTorch's None as well (has_grad() false), so that optimizers and clip_grad_norm_
    /// skip the parameter until a backward reaches it again, as after PyTorch's
    /// `zero_grad(set_to_none=True)` (the default from PyTorch 2.0).
    void zero_grad(bool set_to_none = false) noexcept
    {
        m_grad_zeroed = true;
        m_grad_outer = false;
        if (set_to_none)
            m_has_grad = false;
    }
    /// @brief False until a backward or the non-const grad() writes the gradient: PyTorch's
    /// `p.grad is not None`. Optimizers step only parameters that have one.
    bool has_grad() const noexcept { return m_has_grad; }

    /// @brief For a backward whose gradient is the outer product of `left` (one number per row
    /// of this [rows, cols] parameter) and `right` (one per column): keeps copies of the two
    /// instead of the product and returns true, where the gradient is zero (after zero_grad(),
    /// with nothing to add to) and the parameter a matrix on the `cpu`. Otherwise returns false
    /// and changes nothing: write the product through grad_to_write(). Throws shape_error if
    /// the vectors do not match the parameter's shape.
    bool keep_grad_as_outer(std::span<const T> left, std::span<const T> right)
    {
        if constexpr (N != 2 || !std::is_same_v<Device, cpu>)
            return false;
        else
        {
            if (left.size() != value.shape()[0] || right.size() != value.shape()[1] ||
                m_grad.size() != value.size())
                throw shape_error("parameter::keep_grad_as_outer: vectors of " +
                                  std::to_string(left.size()) + " and " +
                                  std::to_string(right.size()) + " elements for a parameter of " +
                                  "shape " + shape_string(value.shape()) + " and gradient " +
                                  shape_string(m_grad.shape()));
            if (!m_grad_zeroed)
                return false;
            // assign() reuses the capacity of the step before: nothing is allocated after it.
            m_outer_left.assign(left.begin(), left.end());
            m_outer_right.assign(right.begin(), right.end());
            m_grad_outer = true;
            m_grad_zeroed = false;
            m_has_grad = true;
            return true;
        }
    }

    /// @brief The gradient as an optimizer reads it: the two vectors of a kept outer product,
    /// which stays kept (see keep_grad_as_outer()), or else grad()'s elements.
    grad_view<T> view_grad()
    {
        if (m_grad_outer)
            return {nullptr, m_outer_left.data(), m_outer_right.data(), m_outer_right.size(),
                    m_grad.size()};
        tensor_type& g = grad();
        return {g.data(), nullptr, nullptr, 0, g.size()};
    }

    /// @brief For a backward that writes every element of the gradient in one go (a product):
    /// the gradient, and whether to add to what it holds (`false` after zero_grad(): overwrite
    /// it, as with beta = 0, never reading the stale numbers there). Call grad_written() once
    /// the write has succeeded; if it throws first, the gradient stays marked as zeros.
    std::pair<tensor_type&, bool> grad_to_write() noexcept
    {
        if (m_grad_outer) // a kept outer product is written out first, to be added to
            settle_grad();
        return {m_grad, !m_grad_zeroed};
    }
    /// @brief After the write grad_to_write() was for: the gradient holds what it wrote.
    void grad_written() noexcept
    {
        m_grad_zeroed = false;
        m_has_grad = true;
    }

    /// @brief The only element of a one-element parameter (PyTorch's `.item()`).
    T item() const
    {
        if (value.size() != 1)
            throw shape_error("parameter::item(): shape " + shape_string(value.shape()) + " has " +
                              std::to_string(value.size()) + " elements, expected 1");
        T out{};
        Device::download(value.data(), 1, &out);
        return out;
    }

private:
    void settle_grad() const
    {
        if (m_grad_outer)
        {
            grad_view<T>{nullptr, m_outer_left.data(), m_outer_right.data(), m_outer_right.size(),
                         m_grad.size()}
                .write(0, m_grad.size(), m_grad.data());
            m_grad_outer = false;
        }
        else if (m_grad_zeroed)
        {
            m_grad.fill(T(0));
            m_grad_zeroed = false;
        }
    }

    // mutable: grad() const fills in the zeros that zero_grad() left pending.
    mutable tensor_type m_grad;
    mutable bool m_grad_zeroed = false;
    // A gradient kept as the outer product of two vectors, not yet written into m_grad.
    mutable bool m_grad_outer = false;
    std::vector<T> m_outer_left, m_outer_right;
    bool m_has_grad = false;
};

/// @brief Saved, not learned: appears in state_dict, never in parameters().
template <class T, std::size_t N, class Device = cpu>
struct buffer
{
    using value_type = T;
    using device_type = Device;
    using tensor_type = typename Device::template tensor_type<T, N>;
    static constexpr std::size_t rank = N;

    tensor_type value;

    buffer() = default;
    explicit buffer(tensor_type initial) : value(std::move(initial)) {}
};

template <class X>
struct is_parameter : std::false_type
{
};
template <class T, std::size_t N, class D>
struct is_parameter<parameter<T, N, D>> : std::true_type
{
};
template <class X>
inline constexpr bool is_parameter_v = is_parameter<std::remove_cvref_t<X>>::value;

template <class X>
struct is_buffer : std::false_type
{
};
template <class T, std::size_t N, class D>
struct is_buffer<buffer<T, N, D>> : std::true_type
{
};
template <class X>
inline constexpr bool is_buffer_v = is_buffer<std::remove_cvref_t<X>>::value;

/// @brief A handle on one parameter of element type T and any rank on `Device`, held by
/// optimizers. It points at the parameter object, not its buffer, so it stays valid when the
/// parameter's tensor is reassigned; it must not outlive the module. value() and grad() are
/// spans of device memory: the host reads them only when `Device::host_memory`.
template <class T, class Device = cpu>
class param_ref
{
public:
    using value_type = T;
    using device_type = Device;

    template <std::size_t N>
    explicit param_ref(parameter<T, N, Device>& p) noexcept
        : m_param(&p), m_requires_grad(&p.requires_grad), m_value(&value_of<N, Device>),
          m_grad(&grad_of<N, Device>), m_view_grad(&view_grad_of<N, Device>),
          m_has_grad(&has_grad_of<N, Device>), m_zero_grad(&zero_grad_of<N, Device>),
          m_shape(&shape_of<N, Device>)
    {
    }

    std::span<T> value() const noexcept { return m_value(m_param); }
    /// @brief The gradient (zeros filled in first if zero_grad() left them pending, hence not
    /// for two threads at once then; see parameter::grad()).
    std::span<T> grad() const { return m_grad(m_param); }
    /// @brief parameter::view_grad(): the gradient as an optimizer reads it, an outer product
    /// left unwritten.
    grad_view<T> view_grad() const { return m_view_grad(m_param); }
    /// @brief parameter::has_grad(): whether a gradient was ever written (`grad is not None`).
    /// Ask it before grad(), which makes one.
    bool has_grad() const noexcept { return m_has_grad(m_param); }
    /// @brief parameter::zero_grad(): sets the gradient to zero, lazily (and to None with
    /// `set_to_none`).
    void zero_grad(bool set_to_none = false) const noexcept { m_zero_grad(m_param, set_to_none); }
    std::vector<std::int64_t> shape() const { return m_shape(m_param); }
    std::size_t size() const noexcept { return value().size(); }
    /// @brief False for a frozen parameter, which optimizers skip.
    bool requires_grad() const noexcept { return *m_requires_grad; }
    const void* address() const noexcept { return m_param; }

    friend bool operator==(const param_ref& a, const param_ref& b) noexcept
    {
        return a.m_param == b.m_param;
    }

private:
    template <std::size_t N, class D>
    static std::span<T> value_of(void* p) noexcept
    {
        auto& v = static_cast<parameter<T, N, D>*>(p)->value;
        return {v.data(), v.size()};
    }
    template <std::size_t N, class D>
    static std::span<T> grad_of(void* p)
    {
        auto& g = static_cast<parameter<T, N, D>*>(p)->grad();
        return {g.data(), g.size()};
    }
    template <std::size_t N, class D>
    static grad_view<T> view_grad_of(void* p)
    {
        return static_cast<parameter<T, N, D>*>(p)->view_grad();
    }
    template <std::size_t N, class D>
    static bool has_grad_of(const void* p) noexcept
    {
        return static_cast<const parameter<T, N, D>*>(p)->has_grad();
    }
    template <std::size_t N, class D>
    static void zero_grad_of(void* p, bool set_to_none) noexcept
    {
        static_cast<parameter<T, N, D>*>(p)->zero_grad(set_to_none);
    }
    template <std::size_t N, class D>
    static std::vector<std::int64_t> shape_of(void* p)
    {
        const auto& s = static_cast<parameter<T, N, D>*>(p)->value.shape();
        return {s.begin(), s.end()};
    }

    void* m_param;
    const bool* m_requires_grad;
    std::span<T> (*m_value)(void*) noexcept;
    std::span<T> (*m_grad)(void*);
    grad_view<T> (*m_view_grad)(void*);
    bool (*m_has_grad)(const void*) noexcept;
    void (*m_zero_grad)(void*, bool) noexcept;
    std::vector<std::int64_t> (*m_shape)(void*);
};

} // namespace ember::nn

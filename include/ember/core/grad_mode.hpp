#pragma once
/// @file
/// Whether forward passes record what backward needs, per thread (torch.no_grad()).

namespace ember
{

namespace detail
{
inline bool& grad_enabled_flag() noexcept
{
    thread_local bool enabled = true;
    return enabled;
}
} // namespace detail

/// @brief True unless a no_grad guard is alive on this thread.
inline bool is_grad_enabled() noexcept
{
    return detail::grad_enabled_flag();
}

/// @brief Turns gradient recording on or off for this thread.
inline void set_grad_enabled(bool enabled) noexcept
{
    detail::grad_enabled_flag() = enabled;
}

/// @brief RAII guard like `with torch.no_grad():` — modules cache nothing for backward while it
/// lives; the previous mode returns when it dies.
class no_grad
{
public:
    no_grad() noexcept : m_previous(is_grad_enabled()) { set_grad_enabled(false); }
    ~no_grad() { set_grad_enabled(m_previous); }
    no_grad(const no_grad&) = delete;
    no_grad& operator=(const no_grad&) = delete;

private:
    bool m_previous;
};

} // namespace ember

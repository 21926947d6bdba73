#pragma once
/// @file
/// tensor_allocator: the allocator of every host tensor's bytes (ember::tensor, so parameters,
/// gradients and optimizer state; host_tensor, so state_dicts and decoded files). On Linux,
/// blocks from huge_page_threshold up are aligned to 2 MiB and advised as huge pages
/// (MADV_HUGEPAGE), so where transparent huge pages are on (`always` or `madvise` in
/// /sys/kernel/mm/transparent_hugepage/enabled) the kernel backs them with 2 MiB pages. Measured,
/// 400 MB in 16 MB tensors: a fresh state_dict takes 200 page faults instead of 100 000
/// (`model.load_state_dict(load<state_dict>(path))` 305-322 ms with glibc's plain malloc, 124 ms
/// so advised; GLIBC_TUNABLES=glibc.malloc.hugetlb=1 does the same, but a library cannot set it
/// for its users), and the copy of a loaded file into existing parameters misses the TLB 512
/// times less often (21 ms against 32 ms). The cost: the last huge page of a block may be touched
/// past its end, up to 2 MiB more per tensor of at least 4 MiB. Elsewhere, and for smaller
/// blocks, it is operator new.

#include <cstddef>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace ember::detail
{

inline constexpr std::size_t huge_page_size = std::size_t{2} << 20;
inline constexpr std::size_t huge_page_threshold = std::size_t{4} << 20;

template <class T>
struct tensor_allocator
{
    using value_type = T;

    tensor_allocator() = default;
    template <class U>
    tensor_allocator(const tensor_allocator<U>&) noexcept
    {
    }

    T* allocate(std::size_t n)
    {
        if (!huge(n))
            return static_cast<T*>(::operator new(n * sizeof(T)));
        // The aligned operator new, which a program (or a test watching allocations) can replace
        // like the plain one; whole huge pages, so the advice covers the block to its end.
        const std::size_t size =
            (n * sizeof(T) + huge_page_size - 1) / huge_page_size * huge_page_size;
        void* p = ::operator new (size, std::align_val_t{huge_page_size});
#if defined(MADV_HUGEPAGE)
        ::madvise(p, size, MADV_HUGEPAGE); // advice: a kernel without THP just ignores it
#endif
        return static_cast<T*>(p);
    }

    void deallocate(T* p, std::size_t n) noexcept
    {
        if (huge(n))
            ::operator delete (p, std::align_val_t{huge_page_size});
        else
            ::operator delete(p);
    }

    friend bool operator==(const tensor_allocator&, const tensor_allocator&) noexcept
    {
        return true;
    }

private:
    /// Whether `n` elements take the huge-page path: on Linux, from huge_page_threshold up
    /// (n <= max_size(), which std::vector checks, so the product does not overflow).
    static bool huge(std::size_t n) noexcept
    {
#if defined(__linux__)
        return n * sizeof(T) >= huge_page_threshold;
#else
        (void)n;
        return false;
#endif
    }
};

/// tensor_allocator whose vectors leave new elements uninitialized where value-initialization
/// would zero them: host_tensor's bytes, so a tensor a loader is about to overwrite whole is
/// not written twice, and its fresh pages are first touched by the loader's copy (on ember's
/// threads, detail/parallel.hpp) rather than by a zero-fill on one. host_tensor zeroes the
/// tensors it promises zeros in.
template <class T>
struct default_init_allocator : tensor_allocator<T>
{
    template <class U>
    struct rebind
    {
        using other = default_init_allocator<U>;
    };

    default_init_allocator() = default;
    template <class U>
    default_init_allocator(const default_init_allocator<U>&) noexcept
    {
    }

    template <class U>
    void construct(U* p) noexcept(noexcept(::new (static_cast<void*>(p)) U))
    {
        ::new (static_cast<void*>(p)) U; // default-initialization: nothing, for bytes
    }
    template <class U, class... Args>
    void construct(U* p, Args&&... args)
    {
        ::new (static_cast<void*>(p)) U(static_cast<Args&&>(args)...);
    }
};

} // namespace ember::detail

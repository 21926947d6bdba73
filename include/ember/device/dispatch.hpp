#pragma once
/// @file
/// Choosing the device at run time, as the lesson does with
/// `device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')`. Devices are types in
/// ember, so the code to run is a generic lambda (or any object with a `template <class Device>
/// operator()`) that with_device() instantiates for every device compiled in and calls for the
/// one chosen:
///
/// @code
/// const ember::device_kind device = ember::default_device();   // cuda when usable, else cpu
/// std::printf("Using device: %s\n", ember::device_name(device).data());
/// ember::with_device(device, [&]<class Device>() { train<Device>(); });
/// @endcode
///
/// cpu is always compiled in; cuda when this translation unit is compiled by nvcc; thrust_omp
/// when it is built with OpenMP and EMBER_WITH_THRUST_OMP (Meson's thrust_omp option);
/// thrust_cpp when EMBER_WITH_THRUST_CPP is defined.

#include "ember/core/error.hpp"
#include "ember/device/cpu.hpp"

// Which policies this translation unit has, decided once here.
#if defined(__CUDACC__)
#define EMBER_DISPATCH_CUDA
#include "ember/device/cuda.hpp"
#endif
#if defined(EMBER_WITH_THRUST_OMP) && defined(_OPENMP)
#define EMBER_DISPATCH_THRUST_OMP
#include "ember/device/thrust_omp.hpp"
#endif
#if defined(EMBER_WITH_THRUST_CPP) || defined(EMBER_TEST_DEVICE_THRUST_CPP)
#define EMBER_DISPATCH_THRUST_CPP
#include "ember/device/thrust_cpp.hpp"
#endif

#include <string>
#include <string_view>
#include <utility>

namespace ember
{

/// @brief The devices ember knows by name.
enum class device_kind
{
    cpu,
    cuda,
    thrust_omp,
    thrust_cpp,
};

/// @brief "cpu", "cuda", "thrust_omp" or "thrust_cpp".
constexpr std::string_view device_name(device_kind kind) noexcept;

/// @brief The device called `name`; throws value_error naming the known devices otherwise.
device_kind parse_device(std::string_view name);

/// @brief Whether this program was built with the policy for `kind`.
constexpr bool is_compiled(device_kind kind) noexcept;

/// @brief Whether `kind` is compiled in and usable now (a GPU is present, its driver works).
bool is_available(device_kind kind) noexcept;

/// @brief PyTorch's torch.cuda.is_available(): false, not a crash, without a GPU, without a
/// driver, with a driver older than the runtime, or when ember was not built with CUDA.
bool cuda_is_available() noexcept;

/// @brief cuda when it is available, else cpu: the lesson's choice.
device_kind default_device() noexcept;

/// @brief Calls `f.template operator()<Device>()` with the policy of `kind` and returns what it
/// returns (every instantiation must return the same type). Throws device_error when `kind` is
/// not compiled in or not usable.
template <class F>
decltype(auto) with_device(device_kind kind, F&& f);

/*******************
 * implementation  *
 *******************/

constexpr std::string_view device_name(device_kind kind) noexcept
{
    switch (kind)
    {
    case device_kind::cpu:
        return "cpu";
    case device_kind::cuda:
        return "cuda";
    case device_kind::thrust_omp:
        return "thrust_omp";
    case device_kind::thrust_cpp:
        return "thrust_cpp";
    }
    return "unknown";
}

inline device_kind parse_device(std::string_view name)
{
    for (auto k :
         {device_kind::cpu, device_kind::cuda, device_kind::thrust_omp, device_kind::thrust_cpp})
        if (name == device_name(k))
            return k;
    throw value_error("unknown device '" + std::string(name) +
                      "': expected cpu, cuda, thrust_omp or thrust_cpp");
}

constexpr bool is_compiled(device_kind kind) noexcept
{
    switch (kind)
    {
    case device_kind::cpu:
        return true;
    case device_kind::cuda:
#if defined(EMBER_DISPATCH_CUDA)
        return true;
#else
        return false;
#endif
    case device_kind::thrust_omp:
#if defined(EMBER_DISPATCH_THRUST_OMP)
        return true;
#else
        return false;
#endif
    case device_kind::thrust_cpp:
#if defined(EMBER_DISPATCH_THRUST_CPP)
        return true;
#else
        return false;
#endif
    }
    return false;
}

inline bool cuda_is_available() noexcept
{
#if defined(EMBER_DISPATCH_CUDA)
    return cuda::is_available();
#else
    return false;
#endif
}

inline bool is_available(device_kind kind) noexcept
{
    if (!is_compiled(kind))
        return false;
    return kind == device_kind::cuda ? cuda_is_available() : true;
}

inline device_kind default_device() noexcept
{
    return cuda_is_available() ? device_kind::cuda : device_kind::cpu;
}

template <class F>
decltype(auto) with_device(device_kind kind, F&& f)
{
    if (!is_available(kind))
        throw device_error("device '" + std::string(device_name(kind)) + "' is not " +
                           (is_compiled(kind) ? "available on this machine (no usable GPU)"
                                              : "compiled into this program"));
    switch (kind)
    {
#if defined(EMBER_DISPATCH_CUDA)
    case device_kind::cuda:
        return std::forward<F>(f).template operator()<cuda>();
#endif
#if defined(EMBER_DISPATCH_THRUST_OMP)
    case device_kind::thrust_omp:
        return std::forward<F>(f).template operator()<thrust_omp>();
#endif
#if defined(EMBER_DISPATCH_THRUST_CPP)
    case device_kind::thrust_cpp:
        return std::forward<F>(f).template operator()<thrust_cpp>();
#endif
    default:
        return std::forward<F>(f).template operator()<cpu>();
    }
}

} // namespace ember

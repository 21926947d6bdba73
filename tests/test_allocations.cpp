// Heap allocations per training step after warm-up: none. Every global operator new (and, on
// glibc, malloc itself, which aligned allocators and BLAS call directly) is replaced by a
// counting version; a step that allocates shows up as a non-zero count, and the failing case
// names the part of the step (forward, loss, zero_grad, backward, step) that did it.
//
// "After warm-up" means once every buffer has met its shape: the same step repeated. A model
// fed two batch sizes in turn (35 training rows, then 7 validation rows) resizes the buffers
// whose shape changed, each time; each mode is checked in its own steady state.
//
// OpenBLAS, when it runs a matrix product on several threads, mallocs its job table on every
// call (driver/level3/level3_thread.c). That is BLAS's, not ember's: malloc is counted with
// BLAS on one thread, and with BLAS threaded only operator new is. oneDNN's sgemm (the float
// products in a build with EMBER_WITH_ONEDNN, detail/blas.hpp) mallocs a packing workspace in
// every call of more than a few thousand multiply-adds and frees it before it returns, and on
// several threads takes a few blocks from operator new as well: an allocation whose caller's
// code lies in libdnnl is oneDNN's and is not counted; every other one is.
//
// EMBER_ALLOC_TRAP=1 stops at the first allocation of a measured step, for a backtrace in gdb.
#include <ember/core/generator.hpp>
#include <ember/core/grad_mode.hpp>
#include <ember/loss/cross_entropy.hpp>
#include <ember/loss/mse.hpp>
#include <ember/nn/activation.hpp>
#include <ember/nn/batchnorm.hpp>
#include <ember/nn/dropout.hpp>
#include <ember/nn/linear.hpp>
#include <ember/nn/module.hpp>
#include <ember/nn/sequential.hpp>
#include <ember/optim/adam.hpp>
#include <ember/optim/rmsprop.hpp>
#include <ember/optim/sgd.hpp>

#include <boost/test/unit_test.hpp>

#include <cblas.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#if defined(EMBER_WITH_ONEDNN)
#include <link.h> // dl_iterate_phdr: where libdnnl's code is
#endif

#include "../examples/lesson_model.hpp" // the lesson's LinearRegressionModel
#include "test_files.hpp"               // threads_for_scope

// ---- the counting allocator ----------------------------------------------------------------

#if defined(__GLIBC__)
// glibc's own entry points, so the replacements below can allocate without counting twice.
extern "C" void* __libc_malloc(std::size_t);
extern "C" void* __libc_calloc(std::size_t, std::size_t);
extern "C" void* __libc_realloc(void*, std::size_t);
extern "C" void* __libc_memalign(std::size_t, std::size_t);
#endif

namespace
{
std::atomic<bool> g_counting{false};
std::atomic<long> g_allocations{0};
// Set while the steps that must not allocate run (not during warm-up).
std::atomic<bool> g_armed{false};
// Whether direct malloc calls count (off while BLAS is threaded).
std::atomic<bool> g_count_malloc{true};

const bool g_trap = std::getenv("EMBER_ALLOC_TRAP") != nullptr;

bool from_onednn(const void* caller);

// `caller`: the return address of the allocation call, to tell oneDNN's own from the rest.
void count_one(const void* caller)
{
    // from_onednn second: its first call asks the dynamic loader, which must not happen inside
    // an allocation the loader itself makes while the program starts
    if (g_counting.load(std::memory_order_relaxed) && !from_onednn(caller))
    {
        g_allocations.fetch_add(1, std::memory_order_relaxed);
        if (g_trap && g_armed.load(std::memory_order_relaxed))
            __builtin_trap();
    }
}

#if defined(EMBER_WITH_ONEDNN)
// The address range of libdnnl's loaded segments, found once (dl_iterate_phdr does not
// allocate); {0, 0} where it is not loaded.
struct code_range
{
    std::uintptr_t begin = 0, end = 0;
};

const code_range& onednn_code()
{
    static const code_range range = []
    {
        code_range r;
        dl_iterate_phdr(
            [](dl_phdr_info* info, std::size_t, void* out) -> int
            {
                if (info->dlpi_name == nullptr ||
                    std::strstr(info->dlpi_name, "libdnnl") == nullptr)
                    return 0;
                auto& rr = *static_cast<code_range*>(out);
                for (int i = 0; i < info->dlpi_phnum; ++i)
                    if (info->dlpi_phdr[i].p_type == PT_LOAD)
                    {
                        const std::uintptr_t b = info->dlpi_addr + info->dlpi_phdr[i].p_vaddr;
                        const std::uintptr_t e = b + info->dlpi_phdr[i].p_memsz;
                        rr.begin = rr.begin == 0 ? b : std::min(rr.begin, b);
                        rr.end = std::max(rr.end, e);
                    }
                return 1;
            },
            &r);
        return r;
    }();
    return range;
}
#endif

bool from_onednn([[maybe_unused]] const void* caller)
{
#if defined(EMBER_WITH_ONEDNN)
    const auto at = reinterpret_cast<std::uintptr_t>(caller);
    return at >= onednn_code().begin && at < onednn_code().end;
#else
    return false;
#endif
}

void count_malloc(const void* caller)
{
    if (g_count_malloc.load(std::memory_order_relaxed))
        count_one(caller);
}

void* raw_malloc(std::size_t n)
{
#if defined(__GLIBC__)
    return __libc_malloc(n);
#else
    return std::malloc(n);
#endif
}

void* raw_aligned(std::size_t alignment, std::size_t n)
{
#if defined(__GLIBC__)
    return __libc_memalign(alignment, n);
#else
    // aligned_alloc wants a size that is a multiple of the alignment
    return std::aligned_alloc(alignment, (n + alignment - 1) / alignment * alignment);
#endif
}

void* counted(std::size_t n, const void* caller)
{
    count_one(caller);
    if (void* p = raw_malloc(n == 0 ? 1 : n))
        return p;
    throw std::bad_alloc();
}

void* counted_aligned(std::size_t n, std::align_val_t al, const void* caller)
{
    count_one(caller);
    if (void* p = raw_aligned(static_cast<std::size_t>(al), n == 0 ? 1 : n))
        return p;
    throw std::bad_alloc();
}
} // namespace

void* operator new(std::size_t n)
{
    return counted(n, __builtin_return_address(0));
}
void* operator new[](std::size_t n)
{
    return counted(n, __builtin_return_address(0));
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept
{
    try
    {
        return counted(n, __builtin_return_address(0));
    }
    catch (...)
    {
        return nullptr;
    }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept
{
    try
    {
        return counted(n, __builtin_return_address(0));
    }
    catch (...)
    {
        return nullptr;
    }
}
void* operator new(std::size_t n, std::align_val_t al)
{
    return counted_aligned(n, al, __builtin_return_address(0));
}
void* operator new[](std::size_t n, std::align_val_t al)
{
    return counted_aligned(n, al, __builtin_return_address(0));
}
// Not inlined, so GCC never pairs free() with an operator new it sees (-Wmismatched-new-delete).
[[gnu::noinline]] void operator delete(void* p) noexcept
{
    std::free(p);
}
[[gnu::noinline]] void operator delete[](void* p) noexcept
{
    std::free(p);
}
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept
{
    std::free(p);
}
[[gnu::noinline]] void operator delete[](void* p, std::size_t) noexcept
{
    std::free(p);
}
void operator delete(void* p, std::align_val_t) noexcept
{
    std::free(p);
}
void operator delete[](void* p, std::align_val_t) noexcept
{
    std::free(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept
{
    std::free(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept
{
    std::free(p);
}

#if defined(__GLIBC__)
// malloc itself, for allocations that bypass operator new (xsimd's aligned allocator, BLAS).
extern "C" void* malloc(std::size_t n)
{
    count_malloc(__builtin_return_address(0));
    return __libc_malloc(n);
}
extern "C" void* calloc(std::size_t n, std::size_t size)
{
    count_malloc(__builtin_return_address(0));
    return __libc_calloc(n, size);
}
extern "C" void* realloc(void* p, std::size_t n)
{
    count_malloc(__builtin_return_address(0));
    return __libc_realloc(p, n);
}
extern "C" int posix_memalign(void** out, std::size_t alignment, std::size_t n)
{
    count_malloc(__builtin_return_address(0));
    void* p = __libc_memalign(alignment, n);
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}
extern "C" void* aligned_alloc(std::size_t alignment, std::size_t n)
{
    count_malloc(__builtin_return_address(0));
    return __libc_memalign(alignment, n);
}
#endif

namespace
{

/// Counts the allocations made while `f` runs.
template <class F>
long allocations_in(F&& f)
{
    // Warm-up steps go through here too; only the measured steps arm the trap.
    g_allocations.store(0);
    g_counting.store(true);
    f();
    g_counting.store(false);
    return g_allocations.load();
}

// OpenBLAS's thread count, when the BLAS is OpenBLAS (weak: other BLASes lack the call).
extern "C" void openblas_set_num_threads(int) __attribute__((weak));
extern "C" int openblas_get_num_threads() __attribute__((weak));

/// Runs BLAS on `threads` threads for its lifetime (if the BLAS is OpenBLAS; oneDNN's products
/// follow ember's thread count, set likewise); while BLAS is threaded, direct malloc calls are
/// not counted.
class blas_threads
{
public:
    explicit blas_threads(int threads)
        : m_previous(openblas_get_num_threads ? openblas_get_num_threads() : 1),
          m_previous_ember(ember::get_num_threads())
    {
        if (openblas_set_num_threads)
            openblas_set_num_threads(threads);
#if defined(EMBER_WITH_ONEDNN)
        ember::set_num_threads(threads);
#endif
        g_count_malloc.store(threads == 1 || !openblas_set_num_threads);
    }
    ~blas_threads()
    {
        if (openblas_set_num_threads)
            openblas_set_num_threads(m_previous);
#if defined(EMBER_WITH_ONEDNN)
        ember::set_num_threads(m_previous_ember);
#endif
        g_count_malloc.store(true);
    }
    blas_threads(const blas_threads&) = delete;
    blas_threads& operator=(const blas_threads&) = delete;

private:
    int m_previous;
    int m_previous_ember;
};

/// Marks the steps that must not allocate, for EMBER_ALLOC_TRAP.
struct measured
{
    measured() noexcept { g_armed.store(true); }
    ~measured() { g_armed.store(false); }
    measured(const measured&) = delete;
    measured& operator=(const measured&) = delete;
};

} // namespace

// ---- the models -----------------------------------------------------------------------------

using namespace ember;

namespace
{

tensor<float, 2> column(std::size_t n, float from, float step)
{
    tensor<float, 2> t = tensor<float, 2>::from_shape({n, 1});
    for (std::size_t i = 0; i < n; ++i)
        t(i, 0) = from + step * static_cast<float>(i);
    return t;
}

auto make_mlp()
{
    return nn::sequential{nn::linear(784, 256), nn::relu(), nn::linear(256, 256), nn::relu(),
                          nn::linear(256, 10)};
}

// What one step of each part allocated, so a failure says where.
struct step_counts
{
    long forward = 0, loss = 0, zero_grad = 0, backward = 0, step = 0;

    long total() const { return forward + loss + zero_grad + backward + step; }
    std::string str() const
    {
        return "forward " + std::to_string(forward) + ", loss " + std::to_string(loss) +
               ", zero_grad " + std::to_string(zero_grad) + ", backward " +
               std::to_string(backward) + ", step " + std::to_string(step);
    }
};

template <class Model, class Loss, class Optimizer, class X, class Y>
step_counts train_step(Model& model, Loss& loss_fn, Optimizer& opt, const X& x, const Y& y)
{
    step_counts c;
    const X* out = nullptr;
    c.forward = allocations_in([&] { out = &model(x); });
    float loss = 0;
    c.loss = allocations_in([&] { loss = loss_fn(*out, y); });
    c.zero_grad = allocations_in([&] { opt.zero_grad(); });
    c.backward = allocations_in([&] { model.backward(loss_fn.backward()); });
    c.step = allocations_in([&] { opt.step(); });
    BOOST_REQUIRE(std::isfinite(loss));
    return c;
}

template <class Model, class Loss, class X, class Y>
long eval_forward(Model& model, Loss& loss_fn, const X& x, const Y& y)
{
    return allocations_in(
        [&]
        {
            ember::no_grad guard;
            const float l = loss_fn(model(x), y);
            BOOST_REQUIRE(std::isfinite(l));
        });
}

struct mlp_data
{
    tensor<float, 2> x;
    tensor<std::int64_t, 1> y;
    explicit mlp_data(std::size_t batch)
        : x(tensor<float, 2>::from_shape({batch, 784})),
          y(tensor<std::int64_t, 1>::from_shape({batch}))
    {
        manual_seed(3);
        uniform_(x, 0.0, 1.0);
        for (std::size_t i = 0; i < batch; ++i)
            y(i) = static_cast<std::int64_t>(i % 10);
    }
};

} // namespace

// ---- the checks -----------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(the_counter_sees_allocations)
{
    // A test that cannot fail proves nothing: make sure the replacements are the ones in use.
    const long n = allocations_in(
        []
        {
            auto* v = new std::vector<float>(100);
            delete v;
        });
    BOOST_TEST(n == 2);
    const long m = allocations_in(
        []
        {
            ember::tensor<float, 2> t = ember::tensor<float, 2>::from_shape({3, 4});
            t.fill(0);
        });
    BOOST_TEST(m >= 1);
#if defined(__GLIBC__)
    const long c = allocations_in(
        []
        {
            void* volatile p = std::malloc(64);
            std::free(p);
        });
    BOOST_TEST(c == 1);
#endif
}

BOOST_AUTO_TEST_CASE(the_lessons_training_step_and_validation_allocate_nothing_after_warm_up)
{
    const blas_threads one(1);
    manual_seed(42);
    const auto X_train = column(35, 0.0f, 0.02f);
    const auto y_train = column(35, 0.3f, 0.014f);
    const auto X_val = column(7, 0.7f, 0.02f);
    const auto y_val = column(7, 0.79f, 0.014f);
    LinearRegressionModel<> model;
    nn::mse_loss<float> criterion;
    optim::sgd optimizer(model.parameters(), {.lr = 0.01});

    model.train();
    for (int warm = 0; warm < 2; ++warm)
        train_step(model, criterion, optimizer, X_train, y_train);
    {
        const measured scope;
        const step_counts c = train_step(model, criterion, optimizer, X_train, y_train);
        BOOST_TEST(c.total() == 0, "training step allocated: " << c.str());
        const long mode = allocations_in([&] { model.eval(); });
        BOOST_TEST(mode == 0, "eval() allocated " << mode << " times");
    }
    eval_forward(model, criterion, X_val, y_val);
    {
        const measured scope;
        const long val = eval_forward(model, criterion, X_val, y_val);
        BOOST_TEST(val == 0, "validation forward under no_grad allocated " << val << " times");
        const long mode = allocations_in([&] { model.train(); });
        BOOST_TEST(mode == 0, "train() allocated " << mode << " times");
    }
}

namespace
{
template <class Optimizer, class Options>
void check_mlp(Options options, std::size_t batch, int threads = 1, bool input_grad = true,
               int ember_threads = 2)
{
    const blas_threads blas(threads);
    // Two of ember's threads: the optimizer updates the 784x256 and 256x256 weights in parts,
    // one on a worker of ember's pool, which a step must not allocate for either.
    const test::threads_for_scope ember_scope(ember_threads);
    manual_seed(0);
    auto model = make_mlp();
    model.requires_input_grad(input_grad);
    nn::cross_entropy_loss<float> loss_fn;
    Optimizer opt(model.parameters(), options);
    const mlp_data data(batch);
    for (int warm = 0; warm < 2; ++warm)
        train_step(model, loss_fn, opt, data.x, data.y);
    const measured scope;
    const step_counts c = train_step(model, loss_fn, opt, data.x, data.y);
    BOOST_TEST(c.total() == 0, "batch " << batch << ", " << threads << " BLAS threads, "
                                        << ember_threads
                                        << " of ember's: training step allocated: " << c.str());
    // A module's own zero_grad() walks the tree; it must not build names.
    const long zero = allocations_in([&] { model.zero_grad(); });
    BOOST_TEST(zero == 0, "module zero_grad() allocated " << zero << " times");

    // The forward buffers already have this batch's shape: evaluating needs nothing new.
    model.eval();
    const long val = eval_forward(model, loss_fn, data.x, data.y);
    BOOST_TEST(val == 0,
               "batch " << batch << ": eval forward under no_grad allocated " << val << " times");
}
} // namespace

BOOST_AUTO_TEST_CASE(an_mlp_step_with_sgd_momentum_allocates_nothing_after_warm_up)
{
    // 16: linear's forward takes its other route there (the product into y^T, then transposed)
    for (std::size_t batch : {1, 16, 64})
        check_mlp<optim::sgd<float>>(optim::sgd_options{.lr = 0.01, .momentum = 0.9}, batch);
}

BOOST_AUTO_TEST_CASE(an_mlp_step_with_nesterov_and_weight_decay_allocates_nothing)
{
    check_mlp<optim::sgd<float>>(
        optim::sgd_options{.lr = 0.01, .momentum = 0.9, .weight_decay = 1e-4, .nesterov = true},
        16);
}

BOOST_AUTO_TEST_CASE(an_mlp_step_with_adam_allocates_nothing_after_warm_up)
{
    for (std::size_t batch : {1, 64})
        check_mlp<optim::adam<float>>(optim::adam_options{}, batch);
    check_mlp<optim::adam<float>>(optim::adam_options{.amsgrad = true}, 16);
}

BOOST_AUTO_TEST_CASE(an_mlp_step_with_adamw_and_rmsprop_allocates_nothing)
{
    check_mlp<optim::adamw<float>>(optim::adamw_options{}, 16);
    check_mlp<optim::rmsprop<float>>(optim::rmsprop_options{.momentum = 0.9, .centered = true}, 16);
}

BOOST_AUTO_TEST_CASE(an_mlp_step_without_input_grad_allocates_nothing_after_warm_up)
{
    check_mlp<optim::sgd<float>>(optim::sgd_options{.lr = 0.01, .momentum = 0.9}, 64, 1, false);
}

BOOST_AUTO_TEST_CASE(an_mlp_step_on_one_of_embers_threads_allocates_nothing_after_warm_up)
{
    check_mlp<optim::sgd<float>>(optim::sgd_options{.lr = 0.01, .momentum = 0.9}, 16, 1, false, 1);
}

BOOST_AUTO_TEST_CASE(with_threaded_blas_ember_itself_allocates_nothing)
{
    // Only operator new counts here (OpenBLAS mallocs per threaded call, see the top).
    check_mlp<optim::adam<float>>(optim::adam_options{}, 256, 2);
}

BOOST_AUTO_TEST_CASE(dropout_and_batch_norm_steps_allocate_nothing_after_warm_up)
{
    const blas_threads one(1);
    manual_seed(0);
    nn::sequential model{nn::linear(784, 64), nn::batch_norm1d(64), nn::relu(), nn::dropout(0.2),
                         nn::linear(64, 10)};
    nn::cross_entropy_loss<float> loss_fn;
    optim::sgd opt(model.parameters(), {.lr = 0.01, .momentum = 0.9});
    const mlp_data data(32);
    for (int warm = 0; warm < 2; ++warm)
        train_step(model, loss_fn, opt, data.x, data.y);
    {
        const measured scope;
        const step_counts c = train_step(model, loss_fn, opt, data.x, data.y);
        BOOST_TEST(c.total() == 0, "training step allocated: " << c.str());
    }
    model.eval();
    eval_forward(model, loss_fn, data.x, data.y);
    const measured scope;
    const long val = eval_forward(model, loss_fn, data.x, data.y);
    BOOST_TEST(val == 0, "eval forward under no_grad allocated " << val << " times");
}

BOOST_AUTO_TEST_CASE(a_new_batch_size_allocates_once_then_never_again)
{
    // The documented contract: buffers are resized when a shape changes, then reused.
    const blas_threads one(1);
    manual_seed(0);
    auto model = make_mlp();
    nn::cross_entropy_loss<float> loss_fn;
    optim::sgd opt(model.parameters(), {.lr = 0.01, .momentum = 0.9});
    const mlp_data big(64), small(16);
    for (int warm = 0; warm < 2; ++warm)
        train_step(model, loss_fn, opt, big.x, big.y);
    train_step(model, loss_fn, opt, small.x, small.y); // the new shape gets its buffers
    const measured scope;
    const step_counts again = train_step(model, loss_fn, opt, small.x, small.y);
    BOOST_TEST(again.total() == 0, "second step at the new batch size allocated: " << again.str());
}

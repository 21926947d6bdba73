#pragma once
/// @file
/// A pass over a large buffer (a checksum, a copy, touching a mapping's pages) cut into parts,
/// one a thread, as many as get_num_threads() allows from parallel_min_part bytes a part up;
/// likewise an elementwise loop (an optimizer's update) from parallel_min_elements up, which
/// runs on OpenMP's threads where oneDNN's products do (detail/openmp.hpp).
/// Such a pass is bound by the bandwidth one core gets from memory, so parts on two cores take
/// about half the time: on the 2-vCPU Xeon of docs/benchmarks.md, the checksum of 400 MB of
/// mapped file 25-30 ms on one thread, 13-17 ms on two; the copy 33 and 17 ms.
///
/// The parts run on the calling thread and on a few POSIX threads kept for them (part_pool,
/// below): started by the first pass that needs them, asleep between loads. <pthread.h> costs
/// a fraction of <thread> to parse.

#include "ember/core/flush_denormal.hpp"
#include "ember/core/threads.hpp"
#if defined(EMBER_WITH_ONEDNN)
#include "ember/detail/openmp.hpp"
#endif

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <utility>

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

namespace ember::detail
{

/// Bytes a part must have at least. Starting and joining a thread takes 30-40 µs on the
/// machine above, about what one core takes to checksum or copy half a megabyte: a 2 MiB part
/// saves several times what its thread costs.
inline constexpr std::size_t parallel_min_part = std::size_t{2} << 20;
/// Parts at most, whatever get_num_threads() says: memory bandwidth stops growing long before.
inline constexpr std::size_t parallel_max_parts = 64;

/// Elements a part of an elementwise loop over a few arrays (an optimizer's update of a
/// parameter) has at least. On the machine above SGD with momentum updates 32768 floats in
/// about 20 µs on one core, bound by the bandwidth of its caches; in the MLP benchmark the
/// caller waited 1-15 µs a pass for a worker's part.
inline constexpr std::size_t parallel_min_elements = std::size_t{1} << 15;

/// How many parts a pass over `n` bytes (or elements) is cut into: one a thread, each at least
/// `min_part` long, so 1 below 2 * min_part.
inline std::size_t parallel_parts(std::size_t n, std::size_t min_part = parallel_min_part) noexcept
{
    const auto threads = static_cast<std::size_t>(get_num_threads());
    return std::clamp<std::size_t>(std::min(n / min_part, threads), 1, parallel_max_parts);
}

/// The range [first, second) of part `i` of `n` bytes (or elements) cut into `parts`: nearly
/// equal, every boundary a multiple of `grain` from the start (by default whole pages of a
/// page-aligned buffer).
inline std::pair<std::size_t, std::size_t>
part_range(std::size_t n, std::size_t parts, std::size_t i, std::size_t grain = 4096) noexcept
{
    const std::size_t grains = (n + grain - 1) / grain;
    auto boundary = [&](std::size_t k) { return std::min(n, grains * k / parts * grain); };
    return {boundary(i), boundary(i + 1)};
}

/// The threads that run the parts, kept between passes. A thread started for each pass began
/// its part 0.4 ms late on the machine above (the wake-up of an idle virtual CPU), about what
/// a 4 MiB part takes: a model's load, one checksum and one copy per tensor, lost a third of
/// what the second thread gave. So the workers are started when a pass first needs them and
/// stay; after each part a worker spins for part_pool::spin_ns, which spans the gap between
/// one tensor's pass and the next (and between training steps), and then sleeps (a futex, through
/// std::atomic::wait) until the next pass. A worker blocks every signal but the synchronous ones (a
/// fault on a mapped file reaches ember's SIGBUS handler, detail/mapped_file.hpp), so the program's
/// own signals go to its own threads.
///
/// A pass is published as one 64-bit ticket: generation (48 bits), parts (8), next part to
/// claim (8). Workers and the caller claim parts by incrementing it; a worker that sees
/// another generation, or no part left, stops claiming. The caller runs parts too and returns
/// when all are done. One pass uses the pool at a time: a second thread's pass, meanwhile,
/// starts threads of its own (run_parts_on_new_threads).
class part_pool
{
public:
    using part_fn = void (*)(const void* context, std::size_t index);

    /// How long a worker spins for the next pass before it sleeps: longer than a step of a
    /// small model's training, between one step's optimizer updates and the next (0.5 ms gave
    /// the worker fewer of those parts in the MLP benchmark at batch 16 and 64).
    static constexpr long spin_ns = 2000000;

    /// The process's pool, held until release(); nullptr while another thread holds it.
    static part_pool* try_acquire() noexcept
    {
        static std::atomic<part_pool*> current{nullptr};
        part_pool* pool = current.load(std::memory_order_acquire);
        if (pool == nullptr || pool->m_pid != ::getpid())
        {
            // First use, or a child of fork(), which has none of its parent's workers. Never
            // freed: workers read it until the process ends.
            auto* fresh = new (std::nothrow) part_pool;
            if (fresh == nullptr)
                return nullptr;
            if (current.compare_exchange_strong(pool, fresh, std::memory_order_acq_rel))
                pool = fresh;
            else
                delete fresh; // another thread made one first
        }
        return pool->m_busy.test_and_set(std::memory_order_acquire) ? nullptr : pool;
    }

    void release() noexcept { m_busy.clear(std::memory_order_release); }

    /// Runs fn(context, i) for every i in [0, parts) (1 to parallel_max_parts) on the workers
    /// and the calling thread, and returns once all have run.
    void run(std::size_t parts, part_fn fn, const void* context) noexcept
    {
        const std::uint64_t generation = (m_ticket.load(std::memory_order_relaxed) >> 16) + 1;
        while (m_workers + 1 < parts && start_worker(generation - 1))
            ++m_workers;
        m_fn = fn;
        m_context = context;
        m_fp_control = fp_control();
        m_done.store(0, std::memory_order_relaxed);
        m_ticket.store(generation << 16 | std::uint64_t{parts} << 8, std::memory_order_release);
        m_ticket.notify_all();
        claim_parts(generation);
        for (unsigned spins = 1; m_done.load(std::memory_order_acquire) < parts; ++spins)
            if (spins % 1024 == 0)
                ::sched_yield(); // a worker was descheduled: let it run
            else
                pause();
    }

private:
    part_pool() = default;

    static void pause() noexcept
    {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }

    static long now_ns() noexcept
    {
        timespec t{};
        ::clock_gettime(CLOCK_MONOTONIC, &t);
        return t.tv_sec * 1000000000L + t.tv_nsec;
    }

    /// Claims and runs parts of `generation` until none is left.
    void claim_parts(std::uint64_t generation) noexcept
    {
        for (;;)
        {
            std::uint64_t t = m_ticket.load(std::memory_order_acquire);
            do
            {
                if (t >> 16 != generation || (t & 0xff) >= ((t >> 8) & 0xff))
                    return;
            } while (!m_ticket.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel,
                                                     std::memory_order_acquire));
            // Read once a part is claimed: the holder cannot start its next pass before then.
            set_fp_control(m_fp_control); // its caller's floating-point mode (set_flush_denormal)
            m_fn(m_context, static_cast<std::size_t>(t & 0xff));
            m_done.fetch_add(1, std::memory_order_release);
        }
    }

    struct start_info
    {
        part_pool* pool;
        std::uint64_t seen; // the generation before the one it is started for
    };

    bool start_worker(std::uint64_t seen) noexcept
    {
        auto* info = new (std::nothrow) start_info{this, seen};
        if (info == nullptr)
            return false;
        pthread_attr_t attr;
        bool started = false;
        if (::pthread_attr_init(&attr) == 0)
        {
            pthread_t thread;
            started = ::pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0 &&
                      ::pthread_create(&thread, &attr, &worker_main, info) == 0;
            ::pthread_attr_destroy(&attr);
        }
        if (!started)
            delete info;
        return started;
    }

    static void* worker_main(void* p) noexcept
    {
        const start_info info = *static_cast<start_info*>(p);
        delete static_cast<start_info*>(p);
        sigset_t blocked;
        ::sigfillset(&blocked);
        for (int sync : {SIGBUS, SIGSEGV, SIGFPE, SIGILL})
            ::sigdelset(&blocked, sync);
        ::pthread_sigmask(SIG_SETMASK, &blocked, nullptr);
        info.pool->work(info.seen);
        return nullptr;
    }

    [[noreturn]] void work(std::uint64_t seen) noexcept
    {
        for (;;)
        {
            std::uint64_t t = m_ticket.load(std::memory_order_acquire);
            // The spin yields now and then: a thread of the BLAS waiting on this CPU for its
            // part of a product (an optimizer's pass falls between a model's products) runs
            // at once instead of after the scheduler's time slice.
            unsigned spins = 0;
            for (const long until = now_ns() + spin_ns; t >> 16 == seen && now_ns() < until;
                 t = m_ticket.load(std::memory_order_acquire))
                if (++spins % 4 == 0)
                    ::sched_yield();
                else
                    pause();
            while (t >> 16 == seen)
            {
                m_ticket.wait(t, std::memory_order_acquire);
                t = m_ticket.load(std::memory_order_acquire);
            }
            seen = t >> 16;
            claim_parts(seen);
        }
    }

    std::atomic_flag m_busy = ATOMIC_FLAG_INIT;
    std::atomic<std::uint64_t> m_ticket{0};
    std::atomic<std::size_t> m_done{0};
    part_fn m_fn = nullptr; // written by the holder before it publishes a ticket
    const void* m_context = nullptr;
    unsigned m_fp_control = 0; // the holder's, for its pass (set_flush_denormal)
    std::size_t m_workers = 0; // started; the holder's alone
    const pid_t m_pid = ::getpid();
};

/// run_parts with a thread started for each part but the first, for a pass that finds the
/// pool in use: joined before it returns; a part whose thread cannot start runs here.
template <class Part>
void run_parts_on_new_threads(std::size_t parts, const Part& part) noexcept
{
    struct job
    {
        const Part* part;
        std::size_t index;
    };
    job jobs[parallel_max_parts];
    pthread_t threads[parallel_max_parts];
    bool started[parallel_max_parts] = {};
    void* (*run)(void*) = [](void* p) -> void*
    {
        const job& j = *static_cast<const job*>(p);
        (*j.part)(j.index);
        return nullptr;
    };
    for (std::size_t i = 1; i < parts; ++i)
    {
        jobs[i] = {&part, i};
        started[i] = ::pthread_create(&threads[i], nullptr, run, &jobs[i]) == 0;
    }
    part(0);
    for (std::size_t i = 1; i < parts; ++i)
    {
        if (started[i])
            ::pthread_join(threads[i], nullptr);
        else
            part(i);
    }
}

/// Runs `part(i)` for every i in [0, parts) (at most parallel_max_parts) and returns once all
/// have run: on the calling thread and the pool's workers (part_pool); while the pool is in use,
/// on threads of its own, or on the calling thread alone where `new_threads_if_busy` is false;
/// all on the calling thread where no thread can start. `part` must not throw.
template <class Part>
void run_parts(std::size_t parts, const Part& part, bool new_threads_if_busy = true) noexcept
{
    parts = std::min(parts, parallel_max_parts);
    if (parts <= 1)
    {
        if (parts == 1)
            part(0);
        return;
    }
    part_pool* pool = part_pool::try_acquire();
    if (pool == nullptr && new_threads_if_busy)
        return run_parts_on_new_threads(parts, part);
    if (pool == nullptr)
    {
        for (std::size_t i = 0; i < parts; ++i)
            part(i);
        return;
    }
    pool->run(
        parts, [](const void* p, std::size_t i) { (*static_cast<const Part*>(p))(i); }, &part);
    pool->release();
}

/// Runs `pass(first, last)` over the parts of [0, n) that parallel_parts(n) cuts it into.
template <class Pass>
void parallel_pass(std::size_t n, const Pass& pass) noexcept
{
    const std::size_t parts = parallel_parts(n);
    run_parts(parts,
              [&](std::size_t i)
              {
                  const auto [first, last] = part_range(n, parts, i);
                  pass(first, last);
              });
}

/// Whether parallel_elements runs its parts on OpenMP's threads: built with oneDNN, whose
/// products run on them, unless OMP_WAIT_POLICY=PASSIVE has them sleep between passes (waking
/// one took longer than the part: Adam's update in the MLP step, two threads, 318-330 µs
/// against 123-128 on ember's pool, docs/benchmarks.md's Xeon), or in a child of fork() that
/// lost them (openmp_team_lost()). See detail/openmp.hpp.
inline bool elementwise_parts_on_openmp() noexcept
{
#if defined(EMBER_WITH_ONEDNN)
    return !openmp_threads_sleep() && !openmp_team_lost();
#else
    return false;
#endif
}

/// Runs `pass(first, last)` over the parts of the elements [0, n): as many as
/// get_num_threads() allows from parallel_min_elements a part up, every boundary a multiple of
/// `grain` elements; on OpenMP's threads where elementwise_parts_on_openmp(), else on the pool,
/// and while the pool is in use one after another here: a loop this short does not pay for
/// starting threads.
template <class Pass>
void parallel_elements(std::size_t n, std::size_t grain, const Pass& pass) noexcept
{
    const std::size_t parts = parallel_parts(n, parallel_min_elements);
    const auto part = [&](std::size_t i)
    {
        const auto [first, last] = part_range(n, parts, i, grain);
        pass(first, last);
    };
#if defined(EMBER_WITH_ONEDNN)
    if (parts > 1 && elementwise_parts_on_openmp())
        return run_parts_on_openmp(parts, part);
#endif
    run_parts(parts, part, false);
}

} // namespace ember::detail

// The threads the kernels split work between. libdispatch's concurrentPerform woke its worker
// too late on this kind of machine (a 2-vCPU VM: waking an idle vCPU goes through the
// hypervisor): two parts of a 43 µs loop took 137 µs where one thread took 86 µs. Here the
// workers spin for a while after each job (a step graph runs its parallel ops back to back) and
// only then sleep on a condition variable.
#include "ckernels.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

#define MAX_WORKERS 63
// How long an idle worker spins before it sleeps.
#define SPIN_NANOSECONDS 2000000L

// The job's claim word: generation (32 bits) | parts (16) | next unclaimed part (16). A part is
// claimed by a compare-and-swap on the whole word, so a worker late from an earlier job can never
// claim a part of it after the fact, nor mistake its parts for the new job's.
static _Atomic uint64_t claim;
static _Atomic(zo_task_fn) job_fn;
static _Atomic(void *) job_ctx;
static atomic_int done;
static atomic_int sleepers;
static int workers;
static pthread_mutex_t caller = PTHREAD_MUTEX_INITIALIZER;   // one job at a time
static pthread_mutex_t sleep_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;

static inline uint32_t generation_of(uint64_t w) { return (uint32_t)(w >> 32); }

// Claims and runs parts of generation g until none is left.
static void run_parts(uint32_t g) {
    uint64_t w = atomic_load_explicit(&claim, memory_order_acquire);
    for (;;) {
        const uint32_t parts = (uint32_t)(w >> 16) & 0xFFFF, next = (uint32_t)w & 0xFFFF;
        if (generation_of(w) != g || next >= parts) return;
        if (atomic_compare_exchange_weak_explicit(&claim, &w, w + 1, memory_order_acq_rel, memory_order_acquire)) {
            atomic_load_explicit(&job_fn, memory_order_relaxed)(atomic_load_explicit(&job_ctx, memory_order_relaxed), (int)next);
            atomic_fetch_add_explicit(&done, 1, memory_order_release);
            w = atomic_load_explicit(&claim, memory_order_acquire);
        }
    }
}

static long nanoseconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void *worker(void *unused) {
    (void)unused;
    uint32_t seen = generation_of(atomic_load(&claim));
    for (;;) {
        long since = nanoseconds();
        for (unsigned spins = 1;; spins++) {
            if (generation_of(atomic_load_explicit(&claim, memory_order_acquire)) != seen) break;
            CPU_RELAX();
            if ((spins & 1023) == 0 && nanoseconds() - since > SPIN_NANOSECONDS) {
                pthread_mutex_lock(&sleep_lock);
                atomic_fetch_add(&sleepers, 1);
                while (generation_of(atomic_load(&claim)) == seen) pthread_cond_wait(&wake, &sleep_lock);
                atomic_fetch_sub(&sleepers, 1);
                pthread_mutex_unlock(&sleep_lock);
                break;
            }
        }
        seen = generation_of(atomic_load_explicit(&claim, memory_order_acquire));
        run_parts(seen);
    }
    return NULL;
}

void zo_parallel_for(int parts, int threads, zo_task_fn fn, void *ctx) {
    if (parts <= 0) return;
    if (parts == 1 || threads <= 1 || parts > 0xFFFF || pthread_mutex_trylock(&caller) != 0) {
        // One part, one thread, or a job already running (a caller inside a part): run here.
        for (int p = 0; p < parts; p++) fn(ctx, p);
        return;
    }
    const int want = threads - 1 < MAX_WORKERS ? threads - 1 : MAX_WORKERS;
    while (workers < want) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker, NULL) != 0) break;
        pthread_detach(t);
        workers++;
    }
    atomic_store_explicit(&job_fn, fn, memory_order_relaxed);
    atomic_store_explicit(&job_ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&done, 0, memory_order_relaxed);
    const uint32_t g = generation_of(atomic_load(&claim)) + 1;
    atomic_store(&claim, ((uint64_t)g << 32) | ((uint64_t)parts << 16));
    if (atomic_load(&sleepers) > 0) {
        pthread_mutex_lock(&sleep_lock);
        pthread_cond_broadcast(&wake);
        pthread_mutex_unlock(&sleep_lock);
    }
    run_parts(g);
    while (atomic_load_explicit(&done, memory_order_acquire) < parts) CPU_RELAX();
    pthread_mutex_unlock(&caller);
}

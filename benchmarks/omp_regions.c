/* Every OpenMP parallel region a process opens, timed: an LD_PRELOAD shim over libgomp's
 * GOMP_parallel. It shows what a thread-scaling figure hides -- which kernels' regions split
 * well, and how long the master works alone between regions (the other threads idle, and past
 * GOMP_SPINCOUNT asleep). omp_regions.py reads the trace.
 *
 *     gcc -O2 -shared -fPIC benchmarks/omp_regions.c -o omp_regions.so -ldl
 *     OMP_REGIONS_OUT=trace.txt LD_PRELOAD=./omp_regions.so \
 *         python benchmarks/step_time.py --steps 10 --threads 2
 *     python benchmarks/omp_regions.py trace.txt --steps 10
 *
 * One line per region, written at exit: start and end (microseconds, CLOCK_MONOTONIC) and the
 * outlined function as "library+0xoffset" (the C core's kernels are hidden symbols, so the
 * reader looks the offset up with nm). Regions opened by GOMP_parallel only (gcc's
 * `omp parallel` and `omp parallel for`); at most CAP are kept. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef void (*gomp_parallel_fn)(void (*)(void *), void *, unsigned, unsigned);

#define CAP 2000000
static gomp_parallel_fn real_parallel;
static double t_start[CAP], t_end[CAP];
static void *fns[CAP];
static long count;

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec * 1e-3;
}

void GOMP_parallel(void (*fn)(void *), void *data, unsigned nthreads, unsigned flags) {
    if (!real_parallel) { /* libgomp is loaded by the extension, not in the global scope */
        void *h = dlopen("libgomp.so.1", RTLD_LAZY | RTLD_NOLOAD);
        real_parallel = (gomp_parallel_fn)dlsym(h ? h : RTLD_NEXT, "GOMP_parallel");
        if (!real_parallel) abort();
    }
    const double a = now_us();
    real_parallel(fn, data, nthreads, flags);
    const double b = now_us();
    if (count < CAP) {
        t_start[count] = a;
        t_end[count] = b;
        fns[count] = (void *)fn;
        count++;
    }
}

__attribute__((destructor)) static void write_trace(void) {
    const char *path = getenv("OMP_REGIONS_OUT");
    FILE *f = fopen(path ? path : "omp_regions.txt", "w");
    if (!f) return;
    for (long i = 0; i < count; i++) {
        Dl_info info;
        if (dladdr(fns[i], &info) && info.dli_fname)
            fprintf(f, "%.1f %.1f %s+0x%lx\n", t_start[i], t_end[i], info.dli_fname,
                    (unsigned long)((char *)fns[i] - (char *)info.dli_fbase));
        else
            fprintf(f, "%.1f %.1f ?+%p\n", t_start[i], t_end[i], fns[i]);
    }
    fclose(f);
}

/* What an OpenMP parallel region costs after the master has worked alone for a while: the
 * measure behind gptlab's GOMP_SPINCOUNT and its spun waits (docs/benchmarks.md).
 *
 * Between two regions the other threads spin for GOMP_SPINCOUNT rounds, then sleep; a region
 * that starts after they fell asleep pays a wake-up. This times an empty 2-thread region after
 * a serial gap of 0 us to 1 ms, 2000 times each, and prints the mean and the worst.
 *
 *     gcc -O2 -fopenmp benchmarks/omp_wake.c -o omp_wake
 *     GOMP_SPINCOUNT=1000 ./omp_wake        (gptlab's setting)
 *     GOMP_SPINCOUNT=30000 ./omp_wake
 */
#include <omp.h>
#include <stdio.h>
#include <time.h>

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec * 1e-3;
}

int main(void) {
    const double gaps[] = {0, 1, 2, 5, 10, 20, 50, 100, 1000};
    const int reps = 2000;
    volatile int sink = 0;
    for (size_t i = 0; i < sizeof gaps / sizeof gaps[0]; i++) {
        double total = 0, worst = 0;
        for (int r = 0; r < reps; r++) {
            const double t0 = now_us();
            while (now_us() - t0 < gaps[i]) { /* the master alone: a serial gap */
            }
            const double t1 = now_us();
#pragma omp parallel num_threads(2)
            sink++;
            const double dt = now_us() - t1;
            total += dt;
            if (dt > worst) worst = dt;
        }
        printf("serial gap %6.0f us: region %6.2f us mean, %7.1f us worst\n", gaps[i],
               total / reps, worst);
    }
    return 0;
}

/* The optimizer: AdamW on one contiguous tensor, the sum of squares behind the global gradient
 * norm, in-place scaling (gradient clipping), and the warmup + cosine learning-rate schedule. */
#include <math.h>

#include "gptlab.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* gl_sumsq keeps one partial sum per thread on the stack; more threads than this are not used. */
#define MAX_THREADS 256

static const double PI = 3.14159265358979323846;

void gl_adamw_update(float *p, float *m, float *v, const float *g, float lr, float beta1,
                     float beta2, float eps, float weight_decay, int t, size_t n) {
    /* as torch.optim.AdamW: bias corrections in double, folded into two scalars */
    double bc1 = 1.0 - pow((double)beta1, t), bc2 = 1.0 - pow((double)beta2, t);
    float step_size = (float)(lr / bc1);
    float bc2_sqrt = (float)sqrt(bc2);
    float decay = (float)(1.0 - (double)lr * weight_decay);
    float a1 = 1.0f - beta1, a2 = 1.0f - beta2;
    long long N = (long long)n;
#pragma omp parallel for schedule(static) if (n >= GL_PAR_MIN)
    for (long long i = 0; i < N; i++) {
        float gi = g[i];
        float mi = beta1 * m[i] + a1 * gi;
        float vi = beta2 * v[i] + a2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        p[i] = p[i] * decay - step_size * mi / denom;
    }
}

double gl_sumsq(const float *x, size_t n) {
    double partial[MAX_THREADS];
    int nt = 1, used = 1;
#ifdef _OPENMP
    nt = omp_get_max_threads();
    if (nt > MAX_THREADS) nt = MAX_THREADS;
    if (n < GL_PAR_MIN) nt = 1;
#else
    (void)nt;
#endif
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int tid = 0, T = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        T = omp_get_num_threads();
#endif
        if (tid == 0) used = T;
        /* thread tid sums the contiguous range [lo, hi) in four double lanes */
        size_t q = n / T, rem = n % T, id = (size_t)tid;
        size_t lo = q * id + (id < rem ? id : rem);
        size_t hi = lo + q + (id < rem);
        double s[4] = {0, 0, 0, 0};
        size_t i = lo;
        for (; i + 4 <= hi; i += 4)
            for (int j = 0; j < 4; j++) s[j] += (double)x[i + j] * x[i + j];
        for (; i < hi; i++) s[0] += (double)x[i] * x[i];
        partial[tid] = (s[0] + s[1]) + (s[2] + s[3]);
    }
    double total = 0.0;
    for (int k = 0; k < used; k++) total += partial[k]; /* in thread order */
    return total;
}

void gl_scale(float *x, float s, size_t n) {
    long long N = (long long)n;
#pragma omp parallel for schedule(static) if (n >= GL_PAR_MIN)
    for (long long i = 0; i < N; i++) x[i] *= s;
}

float gl_lr_cosine(int step, int warmup, int total, float lr_max, float lr_min) {
    if (step < 0) step = 0;
    if (step < warmup) return (float)((double)lr_max * (step + 1) / warmup);
    if (step >= total) return lr_min;
    double ratio = (double)(step - warmup) / (double)(total - warmup); /* in [0, 1) */
    double coeff = 0.5 * (1.0 + cos(PI * ratio));
    return (float)(lr_min + coeff * ((double)lr_max - lr_min));
}

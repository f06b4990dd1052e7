/* The optimizer: AdamW on one tensor or on all of a model's at once (one parallel region, the
 * clipping factor applied in the same pass), the sum of squares behind the global gradient
 * norm, in-place scaling (gradient clipping), and the warmup + cosine learning-rate schedule. */
#include <math.h>

#include "gptlab.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* gl_sumsq_many keeps its partial sums on the stack; more threads than this are not used. */
#define MAX_THREADS 256

static const double PI = 3.14159265358979323846;

/* Thread tid's share of n elements cut into nt contiguous ranges, the first n % nt one longer:
 * [*lo, *hi). */
static void thread_range(size_t n, int tid, int nt, size_t *lo, size_t *hi) {
    const size_t q = n / (size_t)nt, rem = n % (size_t)nt, id = (size_t)tid;
    *lo = q * id + (id < rem ? id : rem);
    *hi = *lo + q + (id < rem);
}

static int team_size(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

static int team_rank(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* AdamW on elements [lo, hi) of one tensor, as torch.optim.AdamW; g is first scaled by gs
 * (gradient clipping: the scaled value is written back, as gl_scale would; gs == 1: g is only
 * read). step_size = lr / (1 - b1^t) and bc2_sqrt = sqrt(1 - b2^t) come from adamw_step. */
typedef struct {
    float beta1, beta2, eps, step_size, bc2_sqrt, gs;
} adamw_step;

static adamw_step adamw_prepare(float lr, float beta1, float beta2, float eps, int t, float gs) {
    /* bias corrections in double, folded into two scalars */
    const double bc1 = 1.0 - pow((double)beta1, t), bc2 = 1.0 - pow((double)beta2, t);
    return (adamw_step){beta1, beta2, eps, (float)(lr / bc1), (float)sqrt(bc2), gs};
}

GL_CLONES static void adamw_range(const adamw_step *c, float decay, float *restrict p,
                                  float *restrict m, float *restrict v, float *restrict g,
                                  size_t lo, size_t hi) {
    const float a1 = 1.0f - c->beta1, a2 = 1.0f - c->beta2;
    for (size_t i = lo; i < hi; i++) {
        float gi = g[i];
        if (c->gs != 1.0f) g[i] = gi = gi * c->gs;
        float mi = c->beta1 * m[i] + a1 * gi;
        float vi = c->beta2 * v[i] + a2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / c->bc2_sqrt + c->eps;
        p[i] = p[i] * decay - c->step_size * mi / denom;
    }
}

void gl_adamw_update_many(int count, float *const *p, float *const *m, float *const *v,
                          float *const *g, const size_t *n, const float *weight_decay,
                          float grad_scale, float lr, float beta1, float beta2, float eps,
                          int t) {
    const adamw_step c = adamw_prepare(lr, beta1, beta2, eps, t, grad_scale);
    size_t total = 0;
    for (int k = 0; k < count; k++) total += n[k];
#pragma omp parallel if (total >= GL_PAR_MIN)
    {
        /* this thread's range of the tensors' elements laid end to end */
        size_t from, to, base = 0;
        thread_range(total, team_rank(), team_size(), &from, &to);
        for (int k = 0; k < count && base < to; base += n[k], k++) {
            const size_t end = base + n[k];
            if (end <= from) continue;
            const float decay = (float)(1.0 - (double)lr * weight_decay[k]);
            adamw_range(&c, decay, p[k], m[k], v[k], g[k], (from > base ? from : base) - base,
                        (to < end ? to : end) - base);
        }
    }
}

void gl_adamw_update(float *p, float *m, float *v, const float *g, float lr, float beta1,
                     float beta2, float eps, float weight_decay, int t, size_t n) {
    float *gm = (float *)g; /* grad_scale 1: g is only read */
    gl_adamw_update_many(1, &p, &m, &v, &gm, &n, &weight_decay, 1.0f, lr, beta1, beta2, eps, t);
}

/* sum of x[i]^2 over [lo, hi) in double: 32 lanes (lane j sums the terms lo + 32 q + j in
 * order), a fixed tree, then the last terms in order -- the same bits in every build. Each
 * square of a float is exact in double, so only the adds round. Four double lanes, as this
 * was, made a chain of dependent adds: gpt2's 124M gradients took 55 ms on two threads of the
 * Intel Xeon of docs/benchmarks.md (a streaming read of them: 19 ms); these lanes: 23 ms. */
GL_CLONES static double sumsq_range(const float *x, size_t lo, size_t hi) {
    size_t i = lo;
#if defined(__GNUC__)
    gl_v8d s[4] = {{0}};
    for (; i + 32 <= hi; i += 32)
        for (int j = 0; j < 4; j++) {
            const gl_v8d a = __builtin_convertvector(*(const gl_v8f *)(x + i + 8 * j), gl_v8d);
            s[j] += a * a;
        }
#else
    double s[4][8] = {{0}};
    for (; i + 32 <= hi; i += 32)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 8; l++) s[j][l] += (double)x[i + 8 * j + l] * x[i + 8 * j + l];
#endif
    double t[8];
    for (int l = 0; l < 8; l++) t[l] = (s[0][l] + s[1][l]) + (s[2][l] + s[3][l]);
    double r = ((t[0] + t[4]) + (t[1] + t[5])) + ((t[2] + t[6]) + (t[3] + t[7]));
    for (; i < hi; i++) r += (double)x[i] * x[i];
    return r;
}

/* Partial sums kept on the stack by gl_sumsq_many: tensors x threads per parallel region. */
#define SUMSQ_PARTIALS 4096

double gl_sumsq_many(int count, const float *const *x, const size_t *n) {
    double partial[SUMSQ_PARTIALS], total = 0.0;
    int nt = 1;
#ifdef _OPENMP
    nt = omp_get_max_threads();
    if (nt > MAX_THREADS) nt = MAX_THREADS;
#endif
    const int group = SUMSQ_PARTIALS / nt; /* tensors per region */
    for (int k0 = 0; k0 < count; k0 += group) {
        const int kn = count - k0 < group ? count - k0 : group;
        size_t work = 0;
        for (int k = k0; k < k0 + kn; k++) work += n[k];
        int used = 1;
#pragma omp parallel num_threads(nt) if (nt > 1 && work >= GL_PAR_MIN)
        {
            const int tid = team_rank(), T = team_size();
            if (tid == 0) used = T;
            for (int k = k0; k < k0 + kn; k++) {
                double *pk = partial + (size_t)(k - k0) * nt;
                if (n[k] >= GL_PAR_MIN || T == 1) { /* each thread a contiguous range */
                    size_t lo, hi;
                    thread_range(n[k], tid, T, &lo, &hi);
                    pk[tid] = sumsq_range(x[k], lo, hi);
                } else if (tid == k % T) { /* a small tensor: one thread, one partial */
                    pk[0] = sumsq_range(x[k], 0, n[k]);
                    for (int j = 1; j < T; j++) pk[j] = 0.0;
                }
            }
        }
        for (int k = k0; k < k0 + kn; k++) {
            const double *pk = partial + (size_t)(k - k0) * nt;
            double s = 0.0;
            for (int j = 0; j < used; j++) s += pk[j]; /* in thread order */
            total += s;
        }
    }
    return total;
}

double gl_sumsq(const float *x, size_t n) { return gl_sumsq_many(1, &x, &n); }

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

/* The losses of the four training stages, each a forward/backward pair.
 *
 *   pretraining, SFT   gl_crossentropy_*   next-token cross-entropy, averaged over masked rows
 *   PPO rollouts       gl_logprobs_*       log-probability of the sampled tokens, and entropy
 *   reward modeling    gl_ranking_loss_*   InstructGPT K-way ranking loss (pairwise is K = 2)
 *   PPO update         gl_ppo_policy_*     clipped surrogate objective
 *                      gl_value_loss_*     clipped value loss
 *                      gl_kl_*             per-token KL estimates against the reference model
 *   DPO                gl_dpo_*            direct preference optimisation (sigmoid loss)
 *
 * Every reduction (a mean over tokens or prompts, a softmax's sum: eight float lanes flushed
 * into double every 512 terms) runs in a fixed order, so results do not depend on the number
 * of threads. The vocabulary-sized row kernels use exp_approx, a branch-free exp the compiler
 * vectorises, and exist in three builds of the same C (portable, AVX2, AVX-512) with identical
 * results. */
#include <math.h>
#include <string.h>

#include "gptlab.h"
#include "fastexp.h"

/* Rows of a (N, V) softmax handled per parallel region in the cross-entropy forward pass;
 * their losses are summed serially afterwards, in row order. */
#define CE_BLOCK 256

/* ---- row kernels over the vocabulary (portable C, and AVX2 and AVX-512 builds of it) ---- */

#if defined(__GNUC__)
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE static inline
#endif
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define HAVE_AVX2_PATH 1
#endif

/* e^x (fastexp.h) with x clamped to [-87, 88]: a softmax term never underflows to exactly
 * 0; NaN propagates. */
ALWAYS_INLINE float exp_approx(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    return exp_poly(x, 0);
}

#if defined(__GNUC__)
/* The eight-lane loops below keep their lanes in gl_v8f vectors: the compilers left them as
 * scalar code, one lane after another (the small preset's cross-entropy: 3.3 ms per step on
 * two threads of the Intel Xeon of docs/benchmarks.md); as vectors each lane is the same
 * chain of the same float operations. */
typedef int v8i __attribute__((vector_size(32)));

/* m = x > m ? x : m, lane by lane (a macro: a function passing vectors by value would change
 * the ABI of the baseline build). */
#define MAX_LANES(m, xv)                                                                           \
    do {                                                                                           \
        const gl_v8f x_ = (xv);                                                                    \
        const v8i gt_ = x_ > (m); /* all ones where x > m */                                       \
        (m) = (gl_v8f)(((v8i)x_ & gt_) | ((v8i)(m) & ~gt_));                                       \
    } while (0)
#endif

/* Largest element of x (V), in eight lanes (four vectors of them, then one: a maximum is
 * exact in any order, and a zero's sign, the only thing the order could change, changes no
 * x - max). A NaN is skipped here but reaches the sums through exp. */
ALWAYS_INLINE float row_max(const float *x, int V) {
    float m[8];
    int i = 0;
#if defined(__GNUC__)
    const gl_v8f ninf = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY,
                      -INFINITY, -INFINITY};
    gl_v8f m0 = ninf, m1 = ninf, m2 = ninf, m3 = ninf;
    for (; i + 32 <= V; i += 32) { /* four independent chains: a compare-blend has latency */
        MAX_LANES(m0, *(const gl_v8f *)(x + i));
        MAX_LANES(m1, *(const gl_v8f *)(x + i + 8));
        MAX_LANES(m2, *(const gl_v8f *)(x + i + 16));
        MAX_LANES(m3, *(const gl_v8f *)(x + i + 24));
    }
    for (; i + 8 <= V; i += 8) MAX_LANES(m0, *(const gl_v8f *)(x + i));
    MAX_LANES(m0, m1);
    MAX_LANES(m2, m3);
    MAX_LANES(m0, m2);
    memcpy(m, &m0, sizeof m);
#else
    for (int j = 0; j < 8; j++) m[j] = -INFINITY;
    for (; i + 8 <= V; i += 8)
        for (int j = 0; j < 8; j++) m[j] = x[i + j] > m[j] ? x[i + j] : m[j];
#endif
    for (; i < V; i++) m[0] = x[i] > m[0] ? x[i] : m[0];
    float r = m[0];
    for (int j = 1; j < 8; j++) r = m[j] > r ? m[j] : r;
    return r;
}

/* Sum of x (V): eight float lanes, flushed into double every 512 elements. */
ALWAYS_INLINE double row_sum(const float *x, int V) {
    double S = 0.0;
    int i = 0;
    while (i + 8 <= V) {
        float s[8] = {0};
        int end = i + 512 <= V ? i + 512 : V - (V - i) % 8;
#if defined(__GNUC__)
        gl_v8f sv = {0};
        for (; i < end; i += 8) sv += *(const gl_v8f *)(x + i);
        memcpy(s, &sv, sizeof s);
#else
        for (; i < end; i += 8)
            for (int j = 0; j < 8; j++) s[j] += x[i + j];
#endif
        for (int j = 0; j < 8; j++) S += s[j];
    }
    for (; i < V; i++) S += x[i];
    return S;
}

/* Sums for the softmax of z = x inv_t, with m = max(x): returns S = sum_i e_i, where
 * e_i = e^{(x_i - m) inv_t}, and sets *dot = sum_i e_i (x_i - m) inv_t (for the entropy).
 * Eight float lanes, flushed into double every 512 elements. */
ALWAYS_INLINE double row_sumexp(double *dot, const float *x, float m, float inv_t, int V) {
    double S = 0.0, D = 0.0;
    int i = 0;
    while (i + 8 <= V) {
        float s[8] = {0}, d[8] = {0};
        int end = i + 512 <= V ? i + 512 : V - (V - i) % 8;
#if defined(__GNUC__)
        /* the terms first, in a loop the compiler vectorises, then the lanes' sums */
        float e[512], ez[512];
        const int n = end - i;
        for (int k = 0; k < n; k++) {
            const float z = (x[i + k] - m) * inv_t, ek = exp_approx(z);
            e[k] = ek;
            ez[k] = ek * z;
        }
        gl_v8f sv = {0}, dv = {0};
        for (int k = 0; k < n; k += 8) {
            sv += *(const gl_v8f *)(e + k);
            dv += *(const gl_v8f *)(ez + k);
        }
        memcpy(s, &sv, sizeof s);
        memcpy(d, &dv, sizeof d);
        i = end;
#else
        for (; i < end; i += 8)
            for (int j = 0; j < 8; j++) {
                float z = (x[i + j] - m) * inv_t;
                float e = exp_approx(z);
                s[j] += e;
                d[j] += e * z;
            }
#endif
        for (int j = 0; j < 8; j++) {
            S += s[j];
            D += d[j];
        }
    }
    for (; i < V; i++) {
        float z = (x[i] - m) * inv_t;
        float e = exp_approx(z);
        S += e;
        D += (double)e * z;
    }
    *dot = D;
    return S;
}

/* Cross-entropy of one row: -log softmax(x)[t], x: (V). */
ALWAYS_INLINE float ce_row_loss_impl(const float *x, int t, int V) {
    double D;
    float m = row_max(x, V);
    double S = row_sumexp(&D, x, m, 1.0f, V);
    return (float)(log(S) - (double)(x[t] - m));
}

/* In place, x (V) becomes g (softmax(x) - onehot(t)); returns -log softmax(x)[t]. The row
 * becomes e_i = e^{x_i - m} first, then g e_i / S - g [i == t]: one exp per logit. The sum S
 * adds the same floats in the same order as row_sumexp, so the loss equals ce_row_loss_impl's
 * bit for bit. */
ALWAYS_INLINE float ce_row_loss_grad_impl(float *x, int t, float g, int V) {
    float m = row_max(x, V), xt = x[t];
    for (int k = 0; k < V; k++) x[k] = exp_approx(x[k] - m);
    double S = row_sum(x, V);
    float gs = (float)(g / S);
    for (int k = 0; k < V; k++) x[k] *= gs;
    x[t] -= g;
    return (float)(log(S) - (double)(xt - m));
}

/* dx (V) += g (softmax(x) - onehot(t)); with dx == x, dx = g (softmax(x) - onehot(t)). */
ALWAYS_INLINE void ce_row_grad_impl(float *dx, const float *x, int t, float g, int V) {
    if (dx == x) {
        (void)ce_row_loss_grad_impl(dx, t, g, V);
        return;
    }
    double D;
    float m = row_max(x, V);
    float gs = (float)(g / row_sumexp(&D, x, m, 1.0f, V));
    for (int k = 0; k < V; k++) dx[k] += gs * exp_approx(x[k] - m);
    dx[t] -= g;
}

/* Log-probability of t and entropy of softmax(x inv_t), x: (V). */
ALWAYS_INLINE void lp_row_forward_impl(float *logp, float *entropy, const float *x, int t,
                                       float inv_t, int V) {
    double D;
    float m = row_max(x, V);
    double S = row_sumexp(&D, x, m, inv_t, V);
    double logS = log(S);
    *logp = (float)((double)((x[t] - m) * inv_t) - logS);
    *entropy = (float)(logS - D / S);
}

/* dx (V) += (gl (onehot(t) - p) - ge p (log p + H)) inv_t, p = softmax(x inv_t), H its entropy. */
ALWAYS_INLINE void lp_row_backward_impl(float *dx, const float *x, int t, float gl, float ge,
                                        float inv_t, int V) {
    double D;
    float m = row_max(x, V);
    double S = row_sumexp(&D, x, m, inv_t, V);
    float logS = (float)log(S), H = (float)(log(S) - D / S), invS = (float)(1.0 / S);
    gl *= inv_t; /* chain rule through z = x / T */
    ge *= inv_t;
    for (int k = 0; k < V; k++) {
        float z = (x[k] - m) * inv_t; /* log p_k = z - logS */
        float p = exp_approx(z) * invS;
        dx[k] -= p * (gl + ge * (z - logS + H));
    }
    dx[t] += gl;
}

/* The row kernels compiled for one instruction set. Every build does the same float operations
 * in the same order (no FMA contraction: -std=c11 -ffp-contract=off), so results are bitwise
 * equal across paths; AVX2 runs 8 lanes per instruction instead of 4, AVX-512 up to 16. */
typedef struct {
    const char *name;
    float (*ce_loss)(const float *x, int t, int V);
    void (*ce_grad)(float *dx, const float *x, int t, float g, int V);
    float (*ce_loss_grad)(float *x, int t, float g, int V);
    void (*lp_forward)(float *logp, float *entropy, const float *x, int t, float inv_t, int V);
    void (*lp_backward)(float *dx, const float *x, int t, float gl, float ge, float inv_t, int V);
} row_ops;

static float ce_loss_portable(const float *x, int t, int V) { return ce_row_loss_impl(x, t, V); }
static void ce_grad_portable(float *dx, const float *x, int t, float g, int V) {
    ce_row_grad_impl(dx, x, t, g, V);
}
static float ce_loss_grad_portable(float *x, int t, float g, int V) {
    return ce_row_loss_grad_impl(x, t, g, V);
}
static void lp_forward_portable(float *logp, float *entropy, const float *x, int t, float inv_t,
                                int V) {
    lp_row_forward_impl(logp, entropy, x, t, inv_t, V);
}
static void lp_backward_portable(float *dx, const float *x, int t, float gl, float ge,
                                 float inv_t, int V) {
    lp_row_backward_impl(dx, x, t, gl, ge, inv_t, V);
}
static const row_ops ops_portable = {"portable", ce_loss_portable, ce_grad_portable,
                                     ce_loss_grad_portable, lp_forward_portable,
                                     lp_backward_portable};

#ifdef HAVE_AVX2_PATH
#define AVX2 __attribute__((target("avx2")))
AVX2 static float ce_loss_avx2(const float *x, int t, int V) { return ce_row_loss_impl(x, t, V); }
AVX2 static void ce_grad_avx2(float *dx, const float *x, int t, float g, int V) {
    ce_row_grad_impl(dx, x, t, g, V);
}
AVX2 static float ce_loss_grad_avx2(float *x, int t, float g, int V) {
    return ce_row_loss_grad_impl(x, t, g, V);
}
AVX2 static void lp_forward_avx2(float *logp, float *entropy, const float *x, int t, float inv_t,
                                 int V) {
    lp_row_forward_impl(logp, entropy, x, t, inv_t, V);
}
AVX2 static void lp_backward_avx2(float *dx, const float *x, int t, float gl, float ge,
                                  float inv_t, int V) {
    lp_row_backward_impl(dx, x, t, gl, ge, inv_t, V);
}
static const row_ops ops_avx2 = {"avx2", ce_loss_avx2, ce_grad_avx2, ce_loss_grad_avx2,
                                 lp_forward_avx2, lp_backward_avx2};
#define AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2")))
AVX512 static float ce_loss_avx512(const float *x, int t, int V) {
    return ce_row_loss_impl(x, t, V);
}
AVX512 static void ce_grad_avx512(float *dx, const float *x, int t, float g, int V) {
    ce_row_grad_impl(dx, x, t, g, V);
}
AVX512 static float ce_loss_grad_avx512(float *x, int t, float g, int V) {
    return ce_row_loss_grad_impl(x, t, g, V);
}
AVX512 static void lp_forward_avx512(float *logp, float *entropy, const float *x, int t,
                                     float inv_t, int V) {
    lp_row_forward_impl(logp, entropy, x, t, inv_t, V);
}
AVX512 static void lp_backward_avx512(float *dx, const float *x, int t, float gl, float ge,
                                      float inv_t, int V) {
    lp_row_backward_impl(dx, x, t, gl, ge, inv_t, V);
}
static const row_ops ops_avx512 = {"avx512", ce_loss_avx512, ce_grad_avx512,
                                   ce_loss_grad_avx512, lp_forward_avx512, lp_backward_avx512};

static int cpu_has_avx512(void) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}
#endif

static const row_ops *row_ops_forced = NULL; /* the one global: ISA dispatch, NULL = auto */

static const row_ops *best_row_ops(void) {
#ifdef HAVE_AVX2_PATH
    if (cpu_has_avx512()) return &ops_avx512;
    if (__builtin_cpu_supports("avx2")) return &ops_avx2;
#endif
    return &ops_portable;
}

static const row_ops *active_ops(void) {
    return row_ops_forced ? row_ops_forced : best_row_ops();
}

const char *gl_losses_isa(void) { return active_ops()->name; }

int gl_losses_set_isa(const char *name) {
    if (strcmp(name, "auto") == 0) {
        row_ops_forced = NULL;
        return 0;
    }
    if (strcmp(name, "portable") == 0) {
        row_ops_forced = &ops_portable;
        return 0;
    }
#ifdef HAVE_AVX2_PATH
    if (strcmp(name, "avx2") == 0 && __builtin_cpu_supports("avx2")) {
        row_ops_forced = &ops_avx2;
        return 0;
    }
    if (strcmp(name, "avx512") == 0 && cpu_has_avx512()) {
        row_ops_forced = &ops_avx512;
        return 0;
    }
#endif
    return -1;
}

/* ---- scalar helpers ------------------------------------------------------------------ */

/* log(sigmoid(x)) = -softplus(-x), without overflow for any x. */
static double log_sigmoid(double x) { return fmin(x, 0.0) - log1p(exp(-fabs(x))); }

/* sigmoid(x), without overflow for any x. */
static double sigmoid(double x) {
    if (x >= 0) return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

/* Number of rows with mask != 0 (all N when mask is NULL). */
static long mask_count(const float *mask, int N) {
    if (!mask) return N;
    long c = 0;
    for (int n = 0; n < N; n++) c += mask[n] != 0.0f;
    return c;
}

/* ---- cross-entropy ------------------------------------------------------------------- */

/* The row loop of both cross-entropy forward passes: each row's loss (0 where masked) in
 * blocks of CE_BLOCK rows, summed serially in row order. With grad == NULL the logits are only
 * read; with grad == logits each selected row is turned into its gradient for dloss (and a
 * masked row into zeros) as its loss is taken. */
static float ce_rows(float *losses, const float *logits, float *grad, const int32_t *targets,
                     const float *mask, float dloss, int N, int V) {
    const row_ops *ops = active_ops();
    const long count = mask_count(mask, N);
    const float g = count ? (float)((double)dloss / count) : 0.0f; /* weight of one row */
    double total = 0.0;
    float rowloss[CE_BLOCK];
    for (int n0 = 0; n0 < N; n0 += CE_BLOCK) {
        int nb = N - n0 < CE_BLOCK ? N - n0 : CE_BLOCK;
#pragma omp parallel for schedule(static) if ((size_t)nb * V >= GL_PAR_MIN)
        for (int i = 0; i < nb; i++) {
            int n = n0 + i;
            int skip = mask && mask[n] == 0.0f;
            if (!grad)
                rowloss[i] = skip ? 0.0f : ops->ce_loss(logits + (size_t)n * V, targets[n], V);
            else if (skip) {
                rowloss[i] = 0.0f;
                memset(grad + (size_t)n * V, 0, sizeof(float) * (size_t)V);
            } else {
                rowloss[i] = ops->ce_loss_grad(grad + (size_t)n * V, targets[n], g, V);
            }
        }
        for (int i = 0; i < nb; i++) { /* in row order, whatever the thread count */
            int n = n0 + i;
            if (!mask || mask[n] != 0.0f) total += rowloss[i];
            if (losses) losses[n] = rowloss[i];
        }
    }
    return count ? (float)(total / count) : NAN;
}

float gl_crossentropy_forward(float *losses, const float *logits, const int32_t *targets,
                              const float *mask, int N, int V) {
    return ce_rows(losses, logits, NULL, targets, mask, 0.0f, N, V);
}

void gl_crossentropy_backward(float *dlogits, const float *logits, const int32_t *targets,
                              const float *mask, float dloss, int N, int V) {
    const row_ops *ops = active_ops();
    long count = mask_count(mask, N);
    float g = count ? (float)((double)dloss / count) : 0.0f; /* weight of one selected row */
#pragma omp parallel for schedule(static) if ((size_t)N * V >= GL_PAR_MIN)
    for (int n = 0; n < N; n++) {
        float *dx = dlogits + (size_t)n * V;
        if (count == 0 || (mask && mask[n] == 0.0f)) {
            if (dlogits == logits) memset(dx, 0, sizeof(float) * (size_t)V);
            continue;
        }
        ops->ce_grad(dx, logits + (size_t)n * V, targets[n], g, V);
    }
}

/* Both passes at once, in place: returns gl_crossentropy_forward's mean loss (losses, if not
 * NULL, gets each row's) and overwrites logits with gl_crossentropy_backward's gradient for
 * dloss, each bit for bit as the two functions give them, while every row is read from memory
 * once and exponentiated once instead of twice (the training step's loss). */
float gl_crossentropy_forward_backward(float *losses, float *logits, const int32_t *targets,
                                       const float *mask, float dloss, int N, int V) {
    return ce_rows(losses, logits, logits, targets, mask, dloss, N, V);
}

/* ---- log-probabilities and entropy --------------------------------------------------- */

void gl_logprobs_forward(float *logp, float *entropy, const float *logits,
                         const int32_t *targets, float temperature, int N, int V) {
    const row_ops *ops = active_ops();
    float inv_t = 1.0f / temperature;
#pragma omp parallel for schedule(static) if ((size_t)N * V >= GL_PAR_MIN)
    for (int n = 0; n < N; n++) {
        float h;
        ops->lp_forward(&logp[n], &h, logits + (size_t)n * V, targets[n], inv_t, V);
        if (entropy) entropy[n] = h;
    }
}

void gl_logprobs_backward(float *dlogits, const float *logits, const int32_t *targets,
                          const float *dlogp, const float *dentropy, float temperature, int N,
                          int V) {
    const row_ops *ops = active_ops();
    float inv_t = 1.0f / temperature;
#pragma omp parallel for schedule(static) if ((size_t)N * V >= GL_PAR_MIN)
    for (int n = 0; n < N; n++) {
        ops->lp_backward(dlogits + (size_t)n * V, logits + (size_t)n * V, targets[n], dlogp[n],
                         dentropy ? dentropy[n] : 0.0f, inv_t, V);
    }
}

/* ---- InstructGPT ranking loss -------------------------------------------------------- */

float gl_ranking_loss_forward(float *losses, gl_ranking_stats *stats, const float *rewards,
                              const int32_t *counts, float margin, float center_coef, int P,
                              int K) {
    double total = 0.0, gap = 0.0;
    long pairs = 0, correct = 0;
    for (int p = 0; p < P; p++) {
        const float *r = rewards + (size_t)p * K;
        int k = counts ? counts[p] : K;
        double npairs = 0.5 * k * (k - 1), sum = 0.0, sq = 0.0;
        for (int i = 0; i < k; i++) {
            for (int j = i + 1; j < k; j++) {
                double d = (double)r[i] - r[j];
                sum += log_sigmoid(d - margin);
                gap += d;
                correct += r[i] > r[j];
            }
            sq += (double)r[i] * r[i];
        }
        pairs += (long)npairs;
        double lp = -sum / npairs + center_coef * sq / k; /* one division by C(k,2) */
        if (losses) losses[p] = (float)lp;
        total += lp;
    }
    if (stats) {
        stats->accuracy = pairs ? (float)((double)correct / pairs) : NAN;
        stats->margin = pairs ? (float)(gap / pairs) : NAN;
    }
    return P ? (float)(total / P) : NAN;
}

void gl_ranking_loss_backward(float *drewards, const float *rewards, const int32_t *counts,
                              float margin, float center_coef, float dloss, int P, int K) {
    for (int p = 0; p < P; p++) {
        const float *r = rewards + (size_t)p * K;
        float *dr = drewards + (size_t)p * K;
        int k = counts ? counts[p] : K;
        double w = (double)dloss / P / (0.5 * k * (k - 1)); /* weight of one pair */
        for (int i = 0; i < k; i++) {
            double g = 2.0 * center_coef * (double)dloss / P / k * r[i];
            for (int j = 0; j < k; j++) {
                if (j == i) continue;
                /* d/dd [-log sigmoid(d - margin)] = -sigmoid(margin - d), d = r_better - r_worse */
                double d = i < j ? (double)r[i] - r[j] : (double)r[j] - r[i];
                double s = sigmoid(margin - d);
                g += i < j ? -w * s : w * s;
            }
            dr[i] += (float)g;
        }
    }
}

/* ---- PPO clipped surrogate ----------------------------------------------------------- */

/* One token of the surrogate: returns max(-A ratio, -A clip(ratio, 1 - eps, 1 + eps)) and sets
 * the ratio and whether the clipped term is the strictly larger one (TRL's clip indicator). */
static double ppo_token(double *ratio, int *clipped, double logp, double old_logp, double adv,
                        double clip) {
    double r = exp(logp - old_logp);
    double rc = r < 1.0 - clip ? 1.0 - clip : (r > 1.0 + clip ? 1.0 + clip : r);
    *ratio = r;
    *clipped = -adv * rc > -adv * r;
    return *clipped ? -adv * rc : -adv * r;
}

float gl_ppo_policy_forward(gl_ppo_stats *stats, const float *logp, const float *old_logp,
                            const float *advantages, const float *mask, float clip, int N) {
    double loss = 0.0, kl = 0.0, rsum = 0.0;
    long count = 0, nclip = 0;
    for (int n = 0; n < N; n++) {
        if (mask && mask[n] == 0.0f) continue;
        double r, diff = (double)logp[n] - old_logp[n];
        int c;
        loss += ppo_token(&r, &c, logp[n], old_logp[n], advantages[n], clip);
        nclip += c;
        kl += 0.5 * diff * diff;
        rsum += r;
        count++;
    }
    if (stats) {
        stats->clipfrac = count ? (float)((double)nclip / count) : NAN;
        stats->approx_kl = count ? (float)(kl / count) : NAN;
        stats->ratio_mean = count ? (float)(rsum / count) : NAN;
    }
    return count ? (float)(loss / count) : NAN;
}

void gl_ppo_policy_backward(float *dlogp, const float *logp, const float *old_logp,
                            const float *advantages, const float *mask, float clip, float dloss,
                            int N) {
    long count = mask_count(mask, N);
    if (count == 0) return;
    double w = (double)dloss / count;
    for (int n = 0; n < N; n++) {
        if (mask && mask[n] == 0.0f) continue;
        double r;
        int c;
        ppo_token(&r, &c, logp[n], old_logp[n], advantages[n], clip);
        /* unclipped term: d(-A ratio)/dlogp = -A ratio; the clipped one is flat when larger */
        if (!c) dlogp[n] += (float)(w * -(double)advantages[n] * r);
    }
}

/* ---- clipped value loss -------------------------------------------------------------- */

/* Per token: the clipped value and whether its squared error is the larger. */
static double value_clipped(int *clipped, double v, double v_old, double R, double clip) {
    double vc = v < v_old - clip ? v_old - clip : (v > v_old + clip ? v_old + clip : v);
    *clipped = (vc - R) * (vc - R) > (v - R) * (v - R);
    return vc;
}

float gl_value_loss_forward(float *clipfrac, const float *values, const float *old_values,
                            const float *returns, const float *mask, float clip, int N) {
    double loss = 0.0;
    long count = 0, nclip = 0;
    for (int n = 0; n < N; n++) {
        if (mask && mask[n] == 0.0f) continue;
        int c;
        double R = returns[n];
        double vc = value_clipped(&c, values[n], old_values[n], R, clip);
        double e = c ? vc - R : values[n] - R;
        loss += 0.5 * e * e;
        nclip += c;
        count++;
    }
    if (clipfrac) *clipfrac = count ? (float)((double)nclip / count) : NAN;
    return count ? (float)(loss / count) : NAN;
}

void gl_value_loss_backward(float *dvalues, const float *values, const float *old_values,
                            const float *returns, const float *mask, float clip, float dloss,
                            int N) {
    long count = mask_count(mask, N);
    if (count == 0) return;
    double w = (double)dloss / count;
    for (int n = 0; n < N; n++) {
        if (mask && mask[n] == 0.0f) continue;
        int c;
        value_clipped(&c, values[n], old_values[n], returns[n], clip);
        if (!c) dvalues[n] += (float)(w * ((double)values[n] - returns[n]));
    }
}

/* ---- per-token KL estimates ---------------------------------------------------------- */

void gl_kl_forward(float *kl, const float *logp, const float *ref_logp, int kind, int N) {
    for (int n = 0; n < N; n++) {
        double d = (double)ref_logp[n] - logp[n]; /* log r, r = pi_ref / pi */
        double k = kind == 1 ? -d : kind == 2 ? 0.5 * d * d : expm1(d) - d;
        kl[n] = (float)k;
    }
}

void gl_kl_backward(float *dlogp, const float *logp, const float *ref_logp, const float *dkl,
                    int kind, int N) {
    for (int n = 0; n < N; n++) {
        double d = (double)ref_logp[n] - logp[n];
        double g = kind == 1 ? 1.0 : kind == 2 ? -d : -expm1(d); /* d kl / d logp */
        dlogp[n] += (float)(dkl[n] * g);
    }
}

/* ---- DPO ----------------------------------------------------------------------------- */

float gl_dpo_forward(float *chosen_rewards, float *rejected_rewards, gl_dpo_stats *stats,
                     const float *policy_chosen, const float *policy_rejected,
                     const float *ref_chosen, const float *ref_rejected, float beta, int P) {
    double loss = 0.0, csum = 0.0, rsum = 0.0;
    long correct = 0;
    for (int p = 0; p < P; p++) {
        double c = beta * ((double)policy_chosen[p] - ref_chosen[p]);
        double r = beta * ((double)policy_rejected[p] - ref_rejected[p]);
        loss -= log_sigmoid(c - r);
        csum += c;
        rsum += r;
        correct += c > r;
        if (chosen_rewards) chosen_rewards[p] = (float)c;
        if (rejected_rewards) rejected_rewards[p] = (float)r;
    }
    if (stats) {
        stats->accuracy = P ? (float)((double)correct / P) : NAN;
        stats->chosen_reward = P ? (float)(csum / P) : NAN;
        stats->rejected_reward = P ? (float)(rsum / P) : NAN;
        stats->margin = P ? (float)((csum - rsum) / P) : NAN;
    }
    return P ? (float)(loss / P) : NAN;
}

void gl_dpo_backward(float *dpolicy_chosen, float *dpolicy_rejected, const float *policy_chosen,
                     const float *policy_rejected, const float *ref_chosen,
                     const float *ref_rejected, float beta, float dloss, int P) {
    for (int p = 0; p < P; p++) {
        double c = beta * ((double)policy_chosen[p] - ref_chosen[p]);
        double r = beta * ((double)policy_rejected[p] - ref_rejected[p]);
        /* d/dh [-log sigmoid(h)] = -sigmoid(-h), h = c - r */
        double g = (double)dloss / P * beta * sigmoid(r - c);
        dpolicy_chosen[p] -= (float)g;
        dpolicy_rejected[p] += (float)g;
    }
}

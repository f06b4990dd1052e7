/* The layers of GPT-2 as forward/backward pairs on raw float32 arrays.
 *
 * Read it top to bottom like a textbook: embedding, layernorm, matmul (the affine maps),
 * attention, GELU, residual, and the scalar head of the reward/value models. Every backward
 * ACCUMULATES (+=) into its gradient outputs.
 *
 * Determinism: every sum is taken in a fixed order that does not depend on the number of
 * threads. Work that reduces over rows (dw, db of layernorm/matmul/scalar head, the embedding
 * tables) is split by columns: each thread owns a block of columns and walks all rows in order,
 * so there are no atomics and no cross-thread float reductions. Attention splits by heads
 * (backward) or by query tiles (forward), which write disjoint outputs.
 *
 * Speed: the inner loops are plain C the compiler vectorizes (restrict pointers, no reductions
 * across the vector, a polynomial exp instead of libm's); attention, GELU and layernorm are also
 * compiled for AVX2 and AVX-512 and chosen at run time, with the same arithmetic in the same
 * order. Layernorm gives bitwise-identical results in every build; attention (its register-
 * blocked products and softmax exponentials) and GELU fuse their multiply-adds in the AVX2 and
 * AVX-512 builds (FMA: fewer instructions, one rounding), which agree bitwise with each other,
 * while the portable build (a multiply, then an add) agrees with them to float32 rounding.
 */
#include "gptlab.h"
#include "fastexp.h"

#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#endif

/* Columns per block when a reduction over rows is split by columns between threads. */
#define COL_BLOCK 64
/* The column sums of the backward passes (bias and layernorm weight gradients) give each
 * thread a contiguous range of blocks of SUM_COLS columns -- 32, so that C = 192 splits 3:3
 * between two threads (blocks of 64: 2:1) -- and walk the rows once per SUM_WIDE columns of
 * it. A row's SUM_WIDE floats are one contiguous stream; 32 columns a pass read 128 bytes per
 * row, rows a page or more apart, a stride the hardware prefetchers do not follow, and each
 * pass waited on memory (Intel Xeon: bias_grad 2% of the gpt-mini step). */
#define SUM_COLS 32
#define SUM_WIDE 256
_Static_assert(SUM_WIDE % SUM_COLS == 0, "a wide pass holds whole blocks");
/* Rows per block of the column sums of gl_layernorm_backward and gl_matmul_backward (the
 * weight and bias gradients): each block's sums in double, rows in order, then the blocks in
 * order -- bits that do not depend on the thread count. */
#define SUM_ROWS 128

/* ---- small helpers ---------------------------------------------------------------------- */

#if defined(__GNUC__)
#define GL_INLINE static inline __attribute__((always_inline))
#else
#define GL_INLINE static inline
#endif

/* The hot kernels (attention, GELU, layernorm) also exist compiled for AVX2 and for AVX-512
 * (x86 with GCC or Clang). */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define GL_X86 1
#define GL_AVX2 __attribute__((target("avx2,fma")))
#define GL_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")))
#else
#define GL_X86 0
#endif

/* Which build of the hot kernels runs: 2 (AVX-512) or 1 (AVX2) when the CPU has it and
 * gl_sgemm runs that path too, else 0 (portable). gl_gemm_set_isa switches the whole core, so
 * the tests can check every path against the portable one. */
static int simd_level(void) {
#if GL_X86
    const char *isa = gl_gemm_isa();
    if (strcmp(isa, "avx512") == 0 && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl"))
        return 2;
    if (strcmp(isa, "portable") != 0 && __builtin_cpu_supports("avx2") &&
        __builtin_cpu_supports("fma"))
        return 1;
#endif
    return 0;
}

/* The builds of one kernel, indexed by simd_level(): {name_portable, name_avx2, name_avx512}
 * (the portable one thrice where there are no others). Dispatch: builds[simd_level()]. */
#if GL_X86
#define SIMD_BUILDS(name) {name##_portable, name##_avx2, name##_avx512}
#else
#define SIMD_BUILDS(name) {name##_portable, name##_portable, name##_portable}
#endif

#if defined(__GNUC__)
/* Vectors of 4 floats (GCC/Clang; 8 floats and 8 doubles: gl_v8f, gl_v8d), for loops the
 * compiler would not vectorise on its own; elementwise, so they do what the scalar loops they
 * replace do. */
typedef float v4f __attribute__((vector_size(16), aligned(4), may_alias));
#endif

/* a . b in float with 8 independent partial sums, lane j summing the terms i = j mod 8 in
 * order, then a fixed tree: the same bits in every build. The partial sums are a vector:
 * written as an array of 8, they were compiled into scalar adds where attention inlines them
 * (GCC 12: a fifth of the forward pass's time in sumf). */
GL_INLINE float dotf(const float *restrict a, const float *restrict b, int n) {
    int i = 0;
#if defined(__GNUC__)
    gl_v8f acc = {0, 0, 0, 0, 0, 0, 0, 0};
    for (; i + 8 <= n; i += 8) acc += *(const gl_v8f *)(a + i) * *(const gl_v8f *)(b + i);
#else
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[i + j] * b[i + j];
#endif
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* sum of x (n) in float: the partial sums and tree of dotf. */
GL_INLINE float sumf(const float *restrict x, int n) {
    int i = 0;
#if defined(__GNUC__)
    gl_v8f acc = {0, 0, 0, 0, 0, 0, 0, 0};
    for (; i + 8 <= n; i += 8) acc += *(const gl_v8f *)(x + i);
#else
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += x[i + j];
#endif
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += x[i];
    return s;
}

/* max of x (n >= 1, no NaN). Each float is compared through its bits, read as a signed
 * integer with the magnitude bits flipped when negative, which orders them like the floats:
 * compilers vectorize an integer maximum, not a float one (whose NaN rules differ). */
GL_INLINE float maxf(const float *restrict x, int n) {
    int32_t m = INT32_MIN;
    for (int i = 0; i < n; i++) {
        int32_t key;
        memcpy(&key, x + i, sizeof key);
        key ^= (key >> 31) & 0x7fffffff;
        m = key > m ? key : m;
    }
    m ^= (m >> 31) & 0x7fffffff;
    float r;
    memcpy(&r, &m, sizeof r);
    return r;
}

/* a . b accumulated in double (4 partial sums), for row statistics that must be accurate. */
GL_INLINE double dotd(const float *restrict a, const float *restrict b, int n) {
    double acc[4] = {0, 0, 0, 0};
    int i = 0;
    for (; i + 4 <= n; i += 4)
        for (int j = 0; j < 4; j++) acc[j] += (double)a[i + j] * (double)b[i + j];
    double s = (acc[0] + acc[2]) + (acc[1] + acc[3]);
    for (; i < n; i++) s += (double)a[i] * (double)b[i];
    return s;
}

/* x *= a, (n): by vectors, which the compiler did not make of this loop inside attention. */
GL_INLINE void scalef(float *restrict x, float a, int n) {
    int i = 0;
#if defined(__GNUC__)
    for (; i + 8 <= n; i += 8) *(gl_v8f *)(x + i) *= a;
#endif
    for (; i < n; i++) x[i] *= a;
}

/* y += a * x, (n) each. */
GL_INLINE void axpyf(float *restrict y, float a, const float *restrict x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

/* e^x in float, vectorizable (no libm call; fastexp.h): below -87.3 the result is 0 (no
 * denormals), above 88.3 it saturates at e^88.3 (about 2e38), NaN stays NaN. */
GL_INLINE float exp_f(float x0, int fused) {
    float x = x0 < -87.3f ? -87.3f : x0;
    x = x > 88.3f ? 88.3f : x;
    return x0 < -87.3f ? 0.0f : exp_poly(x, fused);
}

static inline int imin(int a, int b) { return a < b ? a : b; }

/* The calling thread's columns [*c0, *c1) of a column sum over C columns: a contiguous range
 * of whole SUM_COLS blocks, near-equal by thread number (all of them outside a parallel
 * region). */
static void thread_cols(int C, int *c0, int *c1) {
#ifdef _OPENMP
    const long long t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
    const long long t = 0, nt = 1;
#endif
    const long long nblk = (C + SUM_COLS - 1) / SUM_COLS;
    *c0 = (int)(nblk * t / nt) * SUM_COLS;
    *c1 = imin((int)(nblk * (t + 1) / nt) * SUM_COLS, C);
}

/* dst[j] = (accumulate ? dst[j] : 0) + s[j] rounded to float, j < n: a column sum stored. */
GL_INLINE void store_col_sums(float *restrict dst, const double *restrict s, int n,
                              int accumulate) {
    for (int j = 0; j < n; j++) dst[j] = (float)s[j] + (accumulate ? dst[j] : 0.0f);
}

/* ---- embedding -------------------------------------------------------------------------- */

/* out[b,t,:] = wte[idx[b,t],:] + wpe[t,:]. idx: (B,T); wte: (V,C); wpe: (maxT,C); out: (B,T,C). */
void gl_embedding_forward(float *out, const int32_t *idx, const float *wte, const float *wpe,
                          int B, int T, int C) {
    ptrdiff_t BT = (ptrdiff_t)B * T;
#pragma omp parallel for schedule(static) if ((size_t)BT * C >= GL_PAR_MIN)
    for (ptrdiff_t bt = 0; bt < BT; bt++) {
        float *restrict o = out + (size_t)bt * C;
        const float *restrict e = wte + (size_t)idx[bt] * C;
        const float *restrict p = wpe + (size_t)(bt % T) * C;
        for (int c = 0; c < C; c++) o[c] = e[c] + p[c];
    }
}

/* dwte[idx[b,t],:] += dout[b,t,:]; dwpe[t,:] += sum_b dout[b,t,:]. dout: (B,T,C).
 * Several positions may hold the same token, so the rows of dwte are a scatter-add: each
 * thread owns a block of columns and adds the positions in order (no races, fixed order). */
void gl_embedding_backward(float *dwte, float *dwpe, const float *dout, const int32_t *idx,
                           int B, int T, int C) {
    int nblk = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static)
    for (int cb = 0; cb < nblk; cb++) {
        int c0 = cb * COL_BLOCK, nc = imin(COL_BLOCK, C - c0);
        for (ptrdiff_t bt = 0; bt < (ptrdiff_t)B * T; bt++) {
            float *restrict g = dwte + (size_t)idx[bt] * C + c0;
            const float *restrict d = dout + (size_t)bt * C + c0;
            for (int c = 0; c < nc; c++) g[c] += d[c];
        }
        for (int t = 0; t < T; t++) {
            float acc[COL_BLOCK];
            for (int c = 0; c < nc; c++) acc[c] = 0.0f;
            for (int b = 0; b < B; b++) {
                const float *restrict d = dout + ((size_t)b * T + t) * C + c0;
                for (int c = 0; c < nc; c++) acc[c] += d[c];
            }
            float *restrict g = dwpe + (size_t)t * C + c0;
            for (int c = 0; c < nc; c++) g[c] += acc[c];
        }
    }
}

/* ---- layernorm -------------------------------------------------------------------------- */

#define LN_EPS 1e-5

/* The rows' sums in double take LN_LANES = 16 partial sums, lane j the terms i = j mod 16 (i
 * below the last whole multiple of 16) in order, then the tail in order. One chain of C / 4
 * dependent adds (four lanes, as this was) held layernorm to about a float per cycle; the 16
 * lanes are two chains of eight-wide adds on AVX-512 (one instruction converts eight floats to
 * double). Layernorm forward 2048 x 192 on two threads of the Intel Xeon of
 * docs/benchmarks.md: 203 -> 92 us; backward 281 -> 201 us. */
#define LN_LANES 16

/* The lanes' fixed tree: t_j = (L_j + L_8+j) + (L_4+j + L_12+j), then (t_0 + t_2) + (t_1 +
 * t_3) -- with vector types, the lanes in two vectors of eight; without, in four of four. */
#if defined(__GNUC__)
GL_INLINE double lanes_total(const gl_v8d *acc) {
    const gl_v8d a = acc[0] + acc[1];
    const double t0 = a[0] + a[4], t1 = a[1] + a[5], t2 = a[2] + a[6], t3 = a[3] + a[7];
    return (t0 + t2) + (t1 + t3);
}
#else
GL_INLINE double lanes_total(const double (*acc)[4]) {
    double a[4];
    for (int j = 0; j < 4; j++) a[j] = (acc[0][j] + acc[2][j]) + (acc[1][j] + acc[3][j]);
    return (a[0] + a[2]) + (a[1] + a[3]);
}
#endif

/* sum_i x_i (squares = 0) or sum_i (x_i - m)^2 (squares = 1) of x (n) in double, in
 * LN_LANES lanes. Written with vector types where the compiler has them (it does not vectorise
 * the plain loop); the same operations in the same order either way. */
GL_INLINE double sum_sq_dev(const float *restrict x, int n, double m, int squares) {
    int i = 0;
    double s;
#if defined(__GNUC__)
    gl_v8d acc[2] = {{0}, {0}};
    for (; i + LN_LANES <= n; i += LN_LANES)
        for (int k = 0; k < 2; k++) {
            gl_v8d d = __builtin_convertvector(*(const gl_v8f *)(x + i + 8 * k), gl_v8d);
            if (squares) {
                d = d - m;
                d = d * d;
            }
            acc[k] += d;
        }
#else
    double acc[4][4] = {{0}};
    for (; i + LN_LANES <= n; i += LN_LANES)
        for (int k = 0; k < 4; k++)
            for (int j = 0; j < 4; j++) {
                double d = (double)x[i + 4 * k + j];
                if (squares) {
                    d = d - m;
                    d = d * d;
                }
                acc[k][j] += d;
            }
#endif
    s = lanes_total(acc);
    for (; i < n; i++) {
        double d = (double)x[i];
        if (squares) {
            d = d - m;
            d = d * d;
        }
        s += d;
    }
    return s;
}

/* Rows [n0, n1) of gl_layernorm_forward. */
GL_INLINE void layernorm_forward_rows(float *restrict out, float *restrict mean,
                                      float *restrict rstd, const float *restrict x,
                                      const float *restrict w, const float *restrict b, int n0,
                                      int n1, int C) {
    for (int n = n0; n < n1; n++) {
        const float *restrict xr = x + (size_t)n * C;
        float *restrict o = out + (size_t)n * C;
        double m = sum_sq_dev(xr, C, 0.0, 0) / C, v = sum_sq_dev(xr, C, m, 1);
        float mf = (float)m, rs = (float)(1.0 / sqrt(v / C + LN_EPS));
        for (int c = 0; c < C; c++) o[c] = (xr[c] - mf) * rs * w[c] + b[c];
        mean[n] = mf;
        rstd[n] = rs;
    }
}

/* Rows [n0, n1) of gl_residual_layernorm_forward: each row's sum res = a + b, then its
 * layernorm while the row is in L1. res may be a (the decode step adds in place), so neither
 * is restrict. */
GL_INLINE void residual_layernorm_rows(float *res, float *restrict out, float *restrict mean,
                                       float *restrict rstd, const float *a,
                                       const float *restrict b, const float *restrict w,
                                       const float *restrict bias, int n0, int n1, int C) {
    for (int n = n0; n < n1; n++) {
        float *r = res + (size_t)n * C;
        const float *ar = a + (size_t)n * C, *restrict br = b + (size_t)n * C;
        for (int c = 0; c < C; c++) r[c] = ar[c] + br[c];
        layernorm_forward_rows(out, mean, rstd, res, w, bias, n, n + 1, C);
    }
}

/* Rows [n0, n1) of dx in gl_layernorm_backward. */
GL_INLINE void layernorm_backward_rows(float *restrict dx, const float *restrict dout,
                                       const float *restrict x, const float *restrict w,
                                       const float *restrict mean, const float *restrict rstd,
                                       int n0, int n1, int C) {
    for (int n = n0; n < n1; n++) {
        const float *restrict xr = x + (size_t)n * C;
        const float *restrict d = dout + (size_t)n * C;
        float *restrict g = dx + (size_t)n * C;
        float mf = mean[n], rs = rstd[n];
        /* sg = sum_c g_c, sgn = sum_c g_c norm_c in double, in LN_LANES lanes each */
        int i = 0;
        double sg, sgn;
#if defined(__GNUC__)
        gl_v8d acc_g[2] = {{0}, {0}}, acc_gn[2] = {{0}, {0}};
        for (; i + LN_LANES <= C; i += LN_LANES)
            for (int k = 0; k < 2; k++) {
                const int c = i + 8 * k;
                const gl_v8f xv = *(const gl_v8f *)(xr + c);
                const gl_v8d gi = __builtin_convertvector(*(const gl_v8f *)(d + c), gl_v8d) *
                               __builtin_convertvector(*(const gl_v8f *)(w + c), gl_v8d);
                acc_g[k] += gi;
                acc_gn[k] += gi * __builtin_convertvector((xv - mf) * rs, gl_v8d);
            }
#else
        double acc_g[4][4] = {{0}}, acc_gn[4][4] = {{0}};
        for (; i + LN_LANES <= C; i += LN_LANES)
            for (int k = 0; k < 4; k++)
                for (int j = 0; j < 4; j++) {
                    const int c = i + 4 * k + j;
                    double gi = (double)d[c] * w[c];
                    acc_g[k][j] += gi;
                    acc_gn[k][j] += gi * ((xr[c] - mf) * rs);
                }
#endif
        sg = lanes_total(acc_g);
        sgn = lanes_total(acc_gn);
        for (; i < C; i++) {
            double gi = (double)d[i] * w[i];
            sg += gi;
            sgn += gi * ((xr[i] - mf) * rs);
        }
        float mg = (float)(sg / C), mgn = (float)(sgn / C);
        for (int c = 0; c < C; c++) {
            float norm = (xr[c] - mf) * rs;
            g[c] += rs * (d[c] * w[c] - mg - norm * mgn);
        }
    }
}

/* One block's share of dw, db in gl_layernorm_backward: for columns [c0, c0 + nc),
 * pw[c] = sum_n dout * norm and pb[c] = sum_n dout over the block's rows [n0, n1), in order, in
 * double. */
GL_INLINE void layernorm_backward_partials(double *restrict pw, double *restrict pb,
                                           const float *restrict dout, const float *restrict x,
                                           const float *restrict mean,
                                           const float *restrict rstd, int n0, int n1, int C,
                                           int c0, int nc) {
    for (int c = 0; c < nc; c++) pw[c] = pb[c] = 0.0;
    for (int n = n0; n < n1; n++) {
        const float *restrict xr = x + (size_t)n * C + c0;
        const float *restrict d = dout + (size_t)n * C + c0;
        float mf = mean[n], rs = rstd[n];
        for (int c = 0; c < nc; c++) {
            pw[c] += (double)d[c] * ((xr[c] - mf) * rs);
            pb[c] += (double)d[c];
        }
    }
}

/* The three layernorm pieces compiled for each instruction set (same arithmetic, same bits). */
typedef struct {
    void (*forward_rows)(float *, float *, float *, const float *, const float *, const float *,
                         int, int, int);
    void (*residual_rows)(float *, float *, float *, float *, const float *, const float *,
                          const float *, const float *, int, int, int);
    void (*backward_rows)(float *, const float *, const float *, const float *, const float *,
                          const float *, int, int, int);
    void (*backward_partials)(double *, double *, const float *, const float *, const float *,
                              const float *, int, int, int, int, int);
} layernorm_ops;

#define LAYERNORM_BUILD(suffix, attr)                                                           \
    attr static void ln_fwd_##suffix(float *out, float *mean, float *rstd, const float *x,     \
                                     const float *w, const float *b, int n0, int n1, int C) {  \
        layernorm_forward_rows(out, mean, rstd, x, w, b, n0, n1, C);                           \
    }                                                                                          \
    attr static void ln_res_##suffix(float *res, float *out, float *mean, float *rstd,         \
                                     const float *a, const float *b, const float *w,           \
                                     const float *bias, int n0, int n1, int C) {               \
        residual_layernorm_rows(res, out, mean, rstd, a, b, w, bias, n0, n1, C);               \
    }                                                                                          \
    attr static void ln_bwd_rows_##suffix(float *dx, const float *dout, const float *x,        \
                                          const float *w, const float *mean,                   \
                                          const float *rstd, int n0, int n1, int C) {          \
        layernorm_backward_rows(dx, dout, x, w, mean, rstd, n0, n1, C);                        \
    }                                                                                          \
    attr static void ln_bwd_part_##suffix(double *pw, double *pb, const float *dout,           \
                                          const float *x, const float *mean,                   \
                                          const float *rstd, int n0, int n1, int C, int c0,    \
                                          int nc) {                                            \
        layernorm_backward_partials(pw, pb, dout, x, mean, rstd, n0, n1, C, c0, nc);           \
    }                                                                                          \
    static const layernorm_ops ln_ops_##suffix = {ln_fwd_##suffix, ln_res_##suffix,            \
                                                  ln_bwd_rows_##suffix, ln_bwd_part_##suffix};
LAYERNORM_BUILD(portable, )
#if GL_X86
LAYERNORM_BUILD(avx2, GL_AVX2)
LAYERNORM_BUILD(avx512, GL_AVX512)
#endif

static const layernorm_ops *layernorm_build(void) {
    static const layernorm_ops *const builds[] = SIMD_BUILDS(&ln_ops);
    return builds[simd_level()];
}

/* Rows per work item of the layernorm passes. */
#define LN_ROWS 16

/* For each row n of x (N,C): mean = sum x / C, var = sum (x - mean)^2 / C (biased, as
 * PyTorch), rstd = 1/sqrt(var + eps); out = (x - mean) * rstd * w + b. The statistics are
 * accumulated in double, two passes, so float32 stays accurate even for large C or an offset. */
void gl_layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w,
                          const float *b, int N, int C) {
    const layernorm_ops *ops = layernorm_build();
    const int items = (N + LN_ROWS - 1) / LN_ROWS;
#pragma omp parallel for schedule(static) if ((size_t)N * C >= GL_PAR_MIN)
    for (int it = 0; it < items; it++)
        ops->forward_rows(out, mean, rstd, x, w, b, it * LN_ROWS, imin(N, (it + 1) * LN_ROWS), C);
}

/* res = a + b and out = layernorm(res), (N,C) each (mean, rstd (N)): a transformer block's
 * residual sum and the layernorm that reads it, in one pass -- the row is normalised while it
 * is in L1, instead of being written and read back from memory by a second parallel region.
 * The same bits as gl_residual_forward, then gl_layernorm_forward. res may be a. */
void gl_residual_layernorm_forward(float *res, float *out, float *mean, float *rstd,
                                   const float *a, const float *b, const float *w,
                                   const float *bias, int N, int C) {
    const layernorm_ops *ops = layernorm_build();
    const int items = (N + LN_ROWS - 1) / LN_ROWS;
#pragma omp parallel for schedule(static) if ((size_t)N * C >= GL_PAR_MIN)
    for (int it = 0; it < items; it++)
        ops->residual_rows(res, out, mean, rstd, a, b, w, bias, it * LN_ROWS,
                           imin(N, (it + 1) * LN_ROWS), C);
}

/* With norm = (x - mean) * rstd and g = dout * w (the gradient reaching norm):
 *   dx += rstd * (g - mean_c(g) - norm * mean_c(g * norm))
 *   dw += sum_n dout * norm,   db += sum_n dout   (written, not added, when !accumulate).
 * dx is computed row by row. dw, db are summed in double over blocks of SUM_ROWS rows, each
 * block's rows in order, then the blocks in order: bits that do not depend on the thread
 * count. A block's sums are taken right after its rows of dx, while its rows of dout and x are
 * in cache (a second pass over them, by columns, read half of them from the other core's
 * cache: the small preset's layernorm backward scaled 1.36x on two threads of the Intel Xeon
 * of docs/benchmarks.md), and added up by columns once every block is done. Without memory
 * for the blocks' sums the same sums are taken by columns, SUM_WIDE at a time. */
void gl_layernorm_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                           const float *w, const float *mean, const float *rstd, int N, int C,
                           int accumulate) {
    const layernorm_ops *ops = layernorm_build();
    const int blocks = (N + SUM_ROWS - 1) / SUM_ROWS;
    /* block b's sums: pw at part + 2bC, pb after */
    double *part =
        gl_thread_scratch(GL_SCRATCH_COLSUMS, (size_t)blocks * 2 * C * sizeof(double));
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (int b = 0; b < blocks; b++) {
            const int n0 = b * SUM_ROWS, n1 = imin(N, n0 + SUM_ROWS);
            ops->backward_rows(dx, dout, x, w, mean, rstd, n0, n1, C);
            if (part)
                ops->backward_partials(part + (size_t)2 * b * C, part + (size_t)(2 * b + 1) * C,
                                       dout, x, mean, rstd, n0, n1, C, 0, C);
        }
        int c0, c1;
        thread_cols(C, &c0, &c1);
        for (int c = c0; c < c1; c += SUM_WIDE) {
            const int nc = imin(SUM_WIDE, c1 - c);
            double sw[SUM_WIDE] = {0}, sb[SUM_WIDE] = {0}, pw[SUM_WIDE], pb[SUM_WIDE];
            for (int b = 0; b < blocks; b++) {
                const double *bw = pw, *bb = pb;
                if (part) {
                    bw = part + (size_t)2 * b * C + c;
                    bb = bw + C;
                } else {
                    ops->backward_partials(pw, pb, dout, x, mean, rstd, b * SUM_ROWS,
                                           imin(N, (b + 1) * SUM_ROWS), C, c, nc);
                }
                for (int j = 0; j < nc; j++) {
                    sw[j] += bw[j];
                    sb[j] += bb[j];
                }
            }
            store_col_sums(dw + c, sw, nc, accumulate);
            store_col_sums(db + c, sb, nc, accumulate);
        }
    }
}

/* ---- matmul (affine map, Conv1D layout) ------------------------------------------------- */

/* out = x @ w + b. x: (N,C); w: (C,OC); b: (OC) or NULL; out: (N,OC).
 * With a bias, gl_sgemm_bias adds it to each tile of the product as the tile is stored. */
void gl_matmul_forward(float *out, const float *x, const float *w, const float *b, int N, int C,
                       int OC) {
    if (N <= 0 || OC <= 0) return;
    if (b) gl_sgemm_bias(0, 0, N, OC, C, x, C, w, OC, b, out, OC);
    else gl_sgemm(0, 0, N, OC, C, 1.0f, x, C, w, OC, 0.0f, out, OC);
}

/* p[c] = sum of dout[n][c0 + c] over the rows [n0, n1), in order, in double, for c < nc: one
 * block's share of a bias gradient. */
GL_INLINE void bias_sums_block(double *restrict p, const float *restrict dout, int n0, int n1,
                               int OC, int c0, int nc) {
    for (int c = 0; c < nc; c++) p[c] = 0.0;
    for (int n = n0; n < n1; n++) {
        const float *restrict d = dout + (size_t)n * OC + c0;
        for (int c = 0; c < nc; c++) p[c] += (double)d[c];
    }
}

/* The same sums in each instruction set's vectors (the baseline build converts two floats
 * to double at a time): the same chains, the same bits. */
static void bias_sums_portable(double *p, const float *dout, int n0, int n1, int OC, int c0,
                               int nc) {
    bias_sums_block(p, dout, n0, n1, OC, c0, nc);
}
#if GL_X86
GL_AVX2 static void bias_sums_avx2(double *p, const float *dout, int n0, int n1, int OC, int c0,
                                   int nc) {
    bias_sums_block(p, dout, n0, n1, OC, c0, nc);
}
GL_AVX512 static void bias_sums_avx512(double *p, const float *dout, int n0, int n1, int OC,
                                       int c0, int nc) {
    bias_sums_block(p, dout, n0, n1, OC, c0, nc);
}
#endif

/* dx += dout @ w^T: (N,OC) @ (OC,C); dw += x^T @ dout: (C,N) @ (N,OC); db += sum_n dout.
 * dx and db may be NULL (the input needs no gradient; the layer has no bias). accumulate == 0
 * writes dw and db instead of adding to them: the product with beta 0 never reads dw.
 * db is summed as layernorm's weight gradients are: each block of SUM_ROWS rows by the thread
 * whose static share of rows holds it -- whole rows, where the kernel that wrote dout (GELU's,
 * layernorm's backward) left them in that core's cache -- then the blocks in order, by
 * columns. Summed by columns straight away, each thread read every row, half of them from the
 * other core (the small preset: 1.47x on two threads). Without memory for the blocks' sums,
 * each block's are taken by columns, SUM_WIDE at a time: the same bits. */
void gl_matmul_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                        const float *w, int N, int C, int OC, int accumulate) {
    if (dx) gl_sgemm(0, 1, N, C, OC, 1.0f, dout, OC, w, OC, 1.0f, dx, C);
    gl_sgemm(1, 0, C, OC, N, 1.0f, x, C, dout, OC, accumulate ? 1.0f : 0.0f, dw, OC);
    if (!db) return;
    static void (*const builds[])(double *, const float *, int, int, int, int, int) =
        SIMD_BUILDS(bias_sums);
    void (*const sums)(double *, const float *, int, int, int, int, int) = builds[simd_level()];
    const int blocks = (N + SUM_ROWS - 1) / SUM_ROWS;
    double *part = gl_thread_scratch(GL_SCRATCH_COLSUMS, (size_t)blocks * OC * sizeof(double));
#pragma omp parallel if ((size_t)N * OC >= GL_PAR_MIN)
    {
        if (part) {
#pragma omp for schedule(static)
            for (int b = 0; b < blocks; b++)
                sums(part + (size_t)b * OC, dout, b * SUM_ROWS, imin(N, (b + 1) * SUM_ROWS), OC,
                     0, OC);
        }
        int c0, c1;
        thread_cols(OC, &c0, &c1);
        for (int c = c0; c < c1; c += SUM_WIDE) {
            const int nc = imin(SUM_WIDE, c1 - c);
            double s[SUM_WIDE] = {0}, pb[SUM_WIDE];
            for (int b = 0; b < blocks; b++) {
                const double *bb = pb;
                if (part) bb = part + (size_t)b * OC + c;
                else sums(pb, dout, b * SUM_ROWS, imin(N, (b + 1) * SUM_ROWS), OC, c, nc);
                for (int j = 0; j < nc; j++) s[j] += bb[j];
            }
            store_col_sums(db + c, s, nc, accumulate);
        }
    }
}

/* ---- attention -------------------------------------------------------------------------- */

/* Tiles of the flash-style attention: Q_TILE queries meet K_TILE keys at a time (KF_TILE in
 * the forward pass, where fewer key blocks mean fewer online-softmax updates per row), and the
 * head dimension is walked in chunks of D_CHUNK, so the scratch (fixed arrays on the stack,
 * 96 KB per thread in the forward pass, 104 KB in the backward) depends neither on T nor on the
 * head size. Inside a tile every product (Q K^T, dO V^T, P V, dS K, P^T dO, dS^T Q) is cut
 * into register blocks of MR rows x NR columns by mm_rows. */
#define Q_TILE 64
#define K_TILE 64
#define KF_TILE 128
#define D_CHUNK 64
/* The backward pass computes D_t = dout_t . out_t once per head for up to D_ROWS rows (a
 * stack array), else once per key block and query row. */
#define D_ROWS 2048
/* Square backward tiles: a key block's diagonal query tile starts at its first key, so the
 * row groups and key groups of the backward's masking line up. */
_Static_assert(Q_TILE == K_TILE, "the backward's attention tiles must be square");
#define MR 6
#define NR 16

/* n rounded up to whole register blocks of NR columns. */
static inline int round_nr(int n) { return (n + NR - 1) / NR * NR; }

/* The register block every attention product is made of: for i < mr <= MR rows, c < nc <= NR
 * columns
 *   C[i * ldc + c] = (load ? C[i * ldc + c] : 0) + sum_{r < n} A(i, r) B[r * ldb + c],
 * A(i, r) = a[i * lai + r * lar] (the strides read A as stored or transposed). Each output is
 * one chain of multiply-adds in r order. In the SIMD builds (fused = 1) each multiply-add is
 * fused, one rounding (fmaf here, FMA instructions in mm_fused_*), so they agree bitwise with
 * each other; the portable build (fused = 0) rounds the product and the sum separately.
 * mm_edge is the plain-C form: the tile edges in every build, and the whole product where no
 * vector types exist. */
GL_INLINE void mm_edge(float *restrict c, size_t ldc, const float *restrict a, size_t lai,
                       size_t lar, const float *restrict b, size_t ldb, int mr, int nc, int n,
                       int load, int fused) {
    for (int i = 0; i < mr; i++) {
        float acc[NR];
        for (int k = 0; k < nc; k++) acc[k] = load ? c[i * ldc + k] : 0.0f;
        for (int r = 0; r < n; r++) {
            const float ai = a[i * lai + r * lar];
            for (int k = 0; k < nc; k++)
                acc[k] = fused ? fmaf(ai, b[r * ldb + k], acc[k]) : acc[k] + ai * b[r * ldb + k];
        }
        for (int k = 0; k < nc; k++) c[i * ldc + k] = acc[k];
    }
}

#if GL_X86
/* The register blocks of the SIMD builds: mr (MR or 4) rows of nv vectors of W floats each
 * (AVX-512: W = 16, nv = 1 to 4, up to 24 accumulators of the 32 registers; AVX2: W = 8,
 * nv = 2, 12 of 16), one fused multiply-add per accumulator and k -- half the arithmetic
 * instructions of a multiply and an add, which held these products to a quarter of the FMA
 * peak. A row's broadcast of A feeds nv multiply-adds: with 2 vectors, 6 broadcasts per 12
 * of them, the broadcasts took as many samples as the multiply-adds in the forward pass; 4
 * vectors (64 columns, a whole head of 64 in one pass) halve them. FUSED_BLOCK defines
 * NAME(c, ldc, a, lai, lar, b, ldb, n, load, mr, nv) for one ISA from its intrinsics; the
 * switch hands the body constant sizes, so the accumulators stay in registers. */
/* NAME##_body for M rows and nv (1 to NVMAX) vectors, each a constant. */
#define FUSED_NV(NAME, NVMAX, M)                                                                \
    do {                                                                                        \
        if (nv == 1) NAME##_body(c, ldc, a, lai, lar, b, ldb, n, load, M, 1);                   \
        else if (nv == 2 || NVMAX == 2) NAME##_body(c, ldc, a, lai, lar, b, ldb, n, load, M, 2); \
        else if (nv == 3) NAME##_body(c, ldc, a, lai, lar, b, ldb, n, load, M, 3);              \
        else NAME##_body(c, ldc, a, lai, lar, b, ldb, n, load, M, NVMAX);                       \
    } while (0)
#define FUSED_BLOCK(NAME, TARGET, VEC, W, NVMAX, LOADU, STOREU, SET1, ZERO, FMADD)               \
    TARGET __attribute__((always_inline)) static inline void NAME##_body(                       \
        float *restrict c, size_t ldc, const float *restrict a, size_t lai, size_t lar,         \
        const float *restrict b, size_t ldb, int n, int load, const int mr, const int nv) {     \
        VEC acc[MR][NVMAX];                                                                     \
        for (int i = 0; i < mr; i++)                                                            \
            for (int v = 0; v < nv; v++) acc[i][v] = load ? LOADU(c + i * ldc + v * W) : ZERO(); \
        for (int r = 0; r < n; r++) {                                                           \
            const float *restrict br = b + r * ldb;                                             \
            VEC bv[NVMAX];                                                                      \
            for (int v = 0; v < nv; v++) bv[v] = LOADU(br + v * W);                             \
            for (int i = 0; i < mr; i++) {                                                      \
                const VEC ai = SET1(a[i * lai + r * lar]);                                      \
                for (int v = 0; v < nv; v++) acc[i][v] = FMADD(ai, bv[v], acc[i][v]);           \
            }                                                                                   \
        }                                                                                       \
        for (int i = 0; i < mr; i++)                                                            \
            for (int v = 0; v < nv; v++) STOREU(c + i * ldc + v * W, acc[i][v]);                \
    }                                                                                           \
    TARGET static void NAME(float *restrict c, size_t ldc, const float *restrict a, size_t lai, \
                            size_t lar, const float *restrict b, size_t ldb, int n, int load,   \
                            int mr, int nv) {                                                   \
        if (mr == MR) FUSED_NV(NAME, NVMAX, MR);                                                \
        else FUSED_NV(NAME, NVMAX, 4);                                                          \
    }
FUSED_BLOCK(mm_fused_avx512, GL_AVX512, __m512, 16, 4, _mm512_loadu_ps, _mm512_storeu_ps,
            _mm512_set1_ps, _mm512_setzero_ps, _mm512_fmadd_ps)
FUSED_BLOCK(mm_fused_avx2, GL_AVX2, __m256, 8, 2, _mm256_loadu_ps, _mm256_storeu_ps,
            _mm256_set1_ps, _mm256_setzero_ps, _mm256_fmadd_ps)
#undef FUSED_BLOCK
#undef FUSED_NV
#endif

#if defined(__GNUC__)
/* The portable build's register block with GCC/Clang vector types: NR = 16 columns in two
 * halves of mr x 2 vectors of 4 (SSE2 and NEON registers), mr a constant (MR or 4); the sums
 * of mm_edge with fused = 0. */
GL_INLINE void mm_block(float *restrict c, size_t ldc, const float *restrict a, size_t lai,
                        size_t lar, const float *restrict b, size_t ldb, int n, int load,
                        const int mr) {
    for (int h = 0; h < NR; h += 8) {
        v4f acc[MR][2];
        for (int i = 0; i < mr; i++)
            for (int k = 0; k < 2; k++)
                acc[i][k] = load ? *(const v4f *)(c + i * ldc + h + 4 * k) : (v4f){0};
        for (int r = 0; r < n; r++) {
            const float *restrict br = b + r * ldb + h;
            const v4f b0 = *(const v4f *)br, b1 = *(const v4f *)(br + 4);
            for (int i = 0; i < mr; i++) {
                const float ai = a[i * lai + r * lar];
                acc[i][0] += ai * b0;
                acc[i][1] += ai * b1;
            }
        }
        for (int i = 0; i < mr; i++)
            for (int k = 0; k < 2; k++) *(v4f *)(c + i * ldc + h + 4 * k) = acc[i][k];
    }
}
#endif

/* C (mr, nc) (+)= A (mr, n) B (n, nc) for mr <= MR rows, in register blocks of NR columns
 * (MR or 4 rows, the rest through mm_edge; in the AVX-512 build up to four blocks side by side
 * where they fit, 64 columns); C rows are ldc apart, B rows ldb apart, A(i, r) = a[i * lai + r * lar].
 * simd: 0 portable, 1 AVX2, 2 AVX-512 (a constant in each build). */
GL_INLINE void mm_rows(float *restrict c, size_t ldc, const float *restrict a, size_t lai,
                       size_t lar, const float *restrict b, size_t ldb, int mr, int nc, int n,
                       int load, int simd) {
    for (int k = 0; k < nc;) {
        const int rows = k + NR <= nc && mr >= 4 ? (mr == MR ? MR : 4) : 0; /* in a block */
        int width = imin(NR, nc - k); /* the columns of this pass */
#if GL_X86
        if (rows && simd == 2) {
            const int nv = imin(4, (nc - k) / NR); /* 1 to 4 vectors of 16: up to 64 columns */
            mm_fused_avx512(c + k, ldc, a, lai, lar, b + k, ldb, n, load, rows, nv);
            width = nv * NR;
        } else if (rows && simd == 1) {
            mm_fused_avx2(c + k, ldc, a, lai, lar, b + k, ldb, n, load, rows, 2);
        }
#endif
#if defined(__GNUC__)
        if (rows && simd == 0) mm_block(c + k, ldc, a, lai, lar, b + k, ldb, n, load, rows);
        const int done = rows; /* rows the blocks computed */
#else
        const int done = 0;
        (void)rows;
#endif
        for (int j = k; j < k + width && done < mr; j += NR) /* the rest, NR columns a time */
            mm_edge(c + j + done * ldc, ldc, a + done * lai, lai, lar, b + j, ldb, mr - done,
                    imin(NR, nc - j), n, load, simd > 0);
        k += width;
    }
}

/* dst[d * ldd + j] = src[j * lds + d] for j < ns, d < nd, and 0 for ns <= j < ncols: a
 * (ns, nd) block of keys or values turned (nd, ldd), so that the score blocks Q K^T and
 * dO V^T read whole rows of NR keys; the zero columns pad the block to whole register blocks. */
GL_INLINE void transpose_block(float *restrict dst, int ldd, const float *restrict src,
                               size_t lds, int ns, int ncols, int nd) {
    for (int j = 0; j < ns; j++)
        for (int d = 0; d < nd; d++) dst[d * ldd + j] = src[(size_t)j * lds + d];
    for (int d = 0; d < nd; d++)
        for (int j = ns; j < ncols; j++) dst[d * ldd + j] = 0.0f;
}

#if GL_X86
/* transpose_block with 8 x 8 sub-blocks turned in registers: the same result, moved faster. */
GL_AVX2 static void transpose_block_avx2(float *restrict dst, int ldd, const float *restrict src,
                                         size_t lds, int ns, int ncols, int nd) {
    int j = 0;
    for (; j + 8 <= ns; j += 8) {
        int d = 0;
        for (; d + 8 <= nd; d += 8) {
            __m256 r[8];
            for (int x = 0; x < 8; x++) r[x] = _mm256_loadu_ps(src + (size_t)(j + x) * lds + d);
            __m256 t[8], s[8];
            for (int x = 0; x < 8; x += 2) {
                t[x] = _mm256_unpacklo_ps(r[x], r[x + 1]);
                t[x + 1] = _mm256_unpackhi_ps(r[x], r[x + 1]);
            }
            for (int x = 0; x < 8; x += 4) {
                s[x] = _mm256_shuffle_ps(t[x], t[x + 2], 0x44);
                s[x + 1] = _mm256_shuffle_ps(t[x], t[x + 2], 0xEE);
                s[x + 2] = _mm256_shuffle_ps(t[x + 1], t[x + 3], 0x44);
                s[x + 3] = _mm256_shuffle_ps(t[x + 1], t[x + 3], 0xEE);
            }
            for (int x = 0; x < 4; x++) {
                float *restrict row = dst + (d + x) * ldd + j;
                _mm256_storeu_ps(row, _mm256_permute2f128_ps(s[x], s[x + 4], 0x20));
                _mm256_storeu_ps(row + 4 * ldd, _mm256_permute2f128_ps(s[x], s[x + 4], 0x31));
            }
        }
        for (; d < nd; d++)
            for (int x = 0; x < 8; x++) dst[d * ldd + j + x] = src[(size_t)(j + x) * lds + d];
    }
    transpose_block(dst + j, ldd, src + (size_t)j * lds, lds, ns - j, ncols - j, nd);
}
#endif

/* transpose_block, through the AVX2 version when simd is set (a constant in each build). */
GL_INLINE void transpose_kv(int simd, float *restrict dst, int ldd, const float *restrict src,
                            size_t lds, int ns, int ncols, int nd) {
#if GL_X86
    if (simd) {
        transpose_block_avx2(dst, ldd, src, lds, ns, ncols, nd);
        return;
    }
#endif
    (void)simd;
    transpose_block(dst, ldd, src, lds, ns, ncols, nd);
}

/* Asks the cache for rows r < n of a block whose rows are ld floats apart and hs long (a hint
 * only). The rows of one head lie 3C floats apart, a stride the hardware prefetchers follow
 * poorly, so the kernels ask for the next tile's rows while they work on this one. */
GL_INLINE void prefetch_rows(const float *p, size_t ld, int n, int hs) {
#if defined(__GNUC__)
    for (int r = 0; r < n; r++, p += ld) {
        for (int d = 0; d < hs; d += 16) __builtin_prefetch(p + d);
        __builtin_prefetch(p + hs - 1);
    }
#else
    (void)p, (void)ld, (void)n, (void)hs;
#endif
}

/* The backward pass's prefetch: rows [tn + r0, tn + r1) of q, dq, dout, out (the next query
 * tile) and rows [sn + r0, sn + r1) of k, v, dk, dv (the next key block), those below T and
 * below Q_TILE (K_TILE) rows of the tile. */
GL_INLINE void prefetch_next(const float *q, const float *dq, const float *dob, const float *ob,
                             const float *k, const float *v, const float *dk, const float *dv,
                             int tn, int sn, int T, int C, int hs, int r0, int r1) {
    const size_t C3 = (size_t)3 * C;
    if (tn + r0 < T && r0 < Q_TILE) {
        const int n = imin(imin(Q_TILE, r1) - r0, T - tn - r0);
        prefetch_rows(q + (tn + r0) * C3, C3, n, hs);
        prefetch_rows(dq + (tn + r0) * C3, C3, n, hs);
        prefetch_rows(dob + (size_t)(tn + r0) * C, (size_t)C, n, hs);
        prefetch_rows(ob + (size_t)(tn + r0) * C, (size_t)C, n, hs);
    }
    if (sn + r0 < T && r0 < K_TILE) {
        const int n = imin(imin(K_TILE, r1) - r0, T - sn - r0);
        prefetch_rows(k + (sn + r0) * C3, C3, n, hs);
        prefetch_rows(v + (sn + r0) * C3, C3, n, hs);
        prefetch_rows(dk + (sn + r0) * C3, C3, n, hs);
        prefetch_rows(dv + (sn + r0) * C3, C3, n, hs);
    }
}

/* The online-softmax update of one query row against one key block. row: (ncols) raw scores
 * q . k_j on entry, the first jn (>= 1) unmasked; on exit row[j] = exp(score_j * scale - m)
 * for j < jn and 0 after. m, l: the row's running maximum of the scaled scores and sum of
 * exponentials; when m grows, l and the partial output o (hs) are rescaled. */
GL_INLINE void softmax_update(float *restrict row, float *restrict o, float *restrict m,
                              float *restrict l, int jn, int ncols, float scale, int hs,
                              int fused) {
    const float bm = maxf(row, jn) * scale; /* rounding keeps the order: max(x) s = max(x s) */
    if (*m == -INFINITY) {
        *m = bm;
    } else if (bm > *m) { /* a new maximum: rescale what was accumulated so far */
        const float corr = exp_f(*m - bm, fused);
        *l *= corr;
        scalef(o, corr, hs);
        *m = bm;
    }
    const float mi = *m;
    const int j8 = (jn + 7) / 8 * 8; /* whole vectors of 8 hold the unmasked keys */
    for (int j = 0; j < j8; j++)
        row[j] = j < jn ? exp_neg(madd(row[j], scale, -mi, fused), fused) : 0.0f;
    for (int j = j8; j < ncols; j++) row[j] = 0.0f;
    *l += sumf(row, j8);
}

/* dst[i * D_CHUNK + d] = src[i * lds + d] for i < n, d < nd: rows of one head gathered into a
 * contiguous block. A head's rows lie 3C floats apart, and for many C that stride maps them
 * onto a few cache sets that evict one another; the products read their row operand from
 * such a block instead. */
GL_INLINE void pack_rows(float *restrict dst, const float *restrict src, size_t lds, int n,
                         int nd) {
    for (int i = 0; i < n; i++, dst += D_CHUNK, src += lds) {
        int d = 0;
#if defined(__GNUC__)
        for (; d + 8 <= nd; d += 8) *(gl_v8f *)(dst + d) = *(const gl_v8f *)(src + d);
#endif
        for (; d < nd; d++) dst[d] = src[d];
    }
}

/* One tile of the forward pass: queries t0 .. t0+nq-1 of head h of sequence b against all keys
 * s <= t. The keys come in blocks of KF_TILE; for each query row a running maximum m and sum l
 * of exp(score - m) (the "online softmax") let a block rescale the partial output instead of
 * revisiting earlier blocks:  out_t = sum_s exp(s_ts - m) v_s / l,  lse_t = m + log(l).
 * Per key block and group of MR query rows: S = Q K^T (against the transposed keys, only the
 * key columns some row of the group may see), the softmax update, then O += P V (V packed). */
GL_INLINE void attention_forward_tile(float *restrict out, float *restrict lse,
                                      const float *restrict qkv, int b, int h, int t0, int nq,
                                      int T, int C, int NH, int simd) {
    const int hs = C / NH;
    const size_t C3 = (size_t)3 * C, hoff = (size_t)h * hs;
    const float scale = 1.0f / sqrtf((float)hs);
    const float *restrict q = qkv + ((size_t)b * T + t0) * C3 + hoff; /* q_(t0+i) = q + i C3 */
    const float *restrict k = qkv + (size_t)b * T * C3 + C + hoff;    /* k_s = k + s C3 */
    const float *restrict v = k + C;                                  /* v_s = v + s C3 */
    float *restrict o = out + ((size_t)b * T + t0) * C + hoff;        /* out_(t0+i) = o + i C */
    float S[Q_TILE][KF_TILE], KT[D_CHUNK][KF_TILE], Vp[KF_TILE][D_CHUNK], m[Q_TILE], l[Q_TILE];
    for (int i = 0; i < nq; i++) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
    }
    const int tend = t0 + nq;
    for (int s0 = 0; s0 < tend; s0 += KF_TILE) {
        const int ns = imin(KF_TILE, tend - s0);
        if (s0 + KF_TILE < tend) { /* the next key block's rows */
            const int nn = imin(KF_TILE, tend - s0 - KF_TILE);
            prefetch_rows(k + (s0 + KF_TILE) * C3, C3, nn, hs);
            prefetch_rows(v + (s0 + KF_TILE) * C3, C3, nn, hs);
        }
        /* S[i][j] = q_(t0+i) . k_(s0+j), j < jmax: the keys the group's last row may see */
        for (int d0 = 0; d0 < hs; d0 += D_CHUNK) {
            const int nd = imin(D_CHUNK, hs - d0);
            transpose_kv(simd, &KT[0][0], KF_TILE, k + s0 * C3 + d0, C3, ns, round_nr(ns), nd);
            for (int i0 = 0; i0 < nq; i0 += MR) {
                const int mr = imin(MR, nq - i0), jmax = imin(ns, t0 + i0 + mr - s0);
                if (jmax > 0)
                    mm_rows(S[i0], KF_TILE, q + i0 * C3 + d0, C3, 1, &KT[0][0], KF_TILE, mr,
                            round_nr(jmax), nd, d0 > 0, simd);
            }
        }
        /* P = the softmax numerators of S, row by row (on the group's columns) */
        for (int i = 0; i < nq; i++) {
            const int jn = imin(ns, t0 + i + 1 - s0), i0 = i - i % MR;
            const int nc = round_nr(imin(ns, t0 + i0 + imin(MR, nq - i0) - s0));
            if (jn > 0) softmax_update(S[i], o + i * C, &m[i], &l[i], jn, nc, scale, hs, simd > 0);
            else if (nc > 0) memset(S[i], 0, sizeof(float) * (size_t)nc);
        }
        /* out = P V on the first key block (which every row sees), out += P V after it */
        for (int d0 = 0; d0 < hs; d0 += D_CHUNK) {
            const int nd = imin(D_CHUNK, hs - d0);
            pack_rows(&Vp[0][0], v + s0 * C3 + d0, C3, ns, nd);
            for (int i0 = 0; i0 < nq; i0 += MR) {
                const int mr = imin(MR, nq - i0), jmax = imin(ns, t0 + i0 + mr - s0);
                if (jmax > 0)
                    mm_rows(o + i0 * C + d0, C, S[i0], KF_TILE, 1, &Vp[0][0], D_CHUNK, mr, nd,
                            jmax, s0 > 0, simd);
            }
        }
    }
    for (int i = 0; i < nq; i++) {
        const float inv = 1.0f / l[i];
        scalef(o + i * C, inv, hs);
        lse[((size_t)b * NH + h) * T + t0 + i] = m[i] + logf(l[i]);
    }
}

/* dX_s (+)= sum_t W_ts X_t for the keys s = s0 + j (j < ns) of a key block and the query rows
 * t = t0 + i >= s (i >= ilo) of a tile: W (Q_TILE, K_TILE) read transposed, X packed in Xp
 * (nd columns); dX rows are ld apart; load == 0 overwrites them. The dv (W = P, X = dout) and
 * dk (W = dS, X = q) sums. */
GL_INLINE void add_key_rows(float *restrict dx, size_t ld, float (*W)[K_TILE],
                            float (*Xp)[D_CHUNK], int s0, int t0, int ilo, int ns, int nq,
                            int nd, int load, int simd) {
    for (int j0 = 0; j0 < ns; j0 += MR) {
        const int mk = imin(MR, ns - j0);
        const int i1 = s0 + j0 > t0 + ilo ? s0 + j0 - t0 : ilo;
        if (i1 < nq)
            mm_rows(dx + (s0 + j0) * ld, ld, &W[i1][j0], 1, K_TILE, Xp[i1], D_CHUNK, mk, nd,
                    nq - i1, load, simd);
    }
}

/* D_t = dout_t . out_t of one head (rows C floats apart, hs long). */
GL_INLINE float row_d(const float *restrict dob, const float *restrict ob, int t, int C, int hs) {
    return dotf(dob + (size_t)t * C, ob + (size_t)t * C, hs);
}

/* The backward pass of one head (b, h), recomputing the probabilities from lse:
 *   P_ts = exp(q_t . k_s / sqrt(hs) - lse_t)          for s <= t
 *   D_t = dout_t . out_t  (= sum_s P_ts dout_t . v_s)
 *   dS_ts = P_ts (dout_t . v_s - D_t)                 (softmax backward)
 *   dq_t += sum_s dS_ts k_s / sqrt(hs);  dk_s += sum_t dS_ts q_t / sqrt(hs);
 *   dv_s += sum_t P_ts dout_t.
 * Key blocks outside, query tiles inside. Per (key block, query tile): P = Q K^T and
 * G = dO V^T in register blocks against the transposed K and V blocks, both turned in place
 * into P and dS / sqrt(hs), then dQ += G K, dV += P^T dO, dK += G^T Q in register blocks of MR
 * queries (resp. keys) by NR head columns. Scores walk the head dimension in chunks of
 * D_CHUNK; when one chunk holds it, the transposed blocks serve all the key block's query
 * tiles. Every sum runs in a fixed order (dk, dv over t ascending; dq over s ascending).
 * accumulate == 0: the first term of each sum is stored over what dqkv held (dq on the first
 * key block, which every query sees; dk, dv on the key block's diagonal tile, where each of
 * its keys meets its first query), from a zero register: the bits of adding to +0. */
GL_INLINE void attention_backward_head(float *restrict dqkv, const float *restrict dout,
                                       const float *restrict qkv, const float *restrict out,
                                       const float *restrict lse, int b, int h, int T, int C,
                                       int NH, int accumulate, int simd) {
    const int hs = C / NH, whole = hs <= D_CHUNK; /* whole: one chunk holds the head */
    const size_t C3 = (size_t)3 * C, hoff = (size_t)h * hs;
    const float scale = 1.0f / sqrtf((float)hs);
    const float *restrict q = qkv + (size_t)b * T * C3 + hoff; /* q_t = q + t C3 */
    const float *restrict k = q + C, *restrict v = q + 2 * (size_t)C;
    float *restrict dq = dqkv + (size_t)b * T * C3 + hoff; /* dq_t = dq + t C3 */
    float *restrict dk = dq + C, *restrict dv = dq + 2 * (size_t)C;
    const float *restrict dob = dout + (size_t)b * T * C + hoff; /* dout_t = dob + t C */
    const float *restrict ob = out + (size_t)b * T * C + hoff;   /* out_t = ob + t C */
    const float *restrict L = lse + ((size_t)b * NH + h) * T;
    float P[Q_TILE][K_TILE], G[Q_TILE][K_TILE], KT[D_CHUNK][K_TILE], VT[D_CHUNK][K_TILE];
    float Kp[K_TILE][D_CHUNK], Xp[Q_TILE][D_CHUNK]; /* packed k rows; dout, then q rows */
    float Dh[D_ROWS]; /* D_t of the whole head, when it holds them */
    const int d_once = T <= D_ROWS;
    if (d_once)
        for (int t = 0; t < T; t++) {
            if (t + 8 < T) { /* rows C apart: ask for them ahead */
                prefetch_rows(dob + (size_t)(t + 8) * C, (size_t)C, 1, hs);
                prefetch_rows(ob + (size_t)(t + 8) * C, (size_t)C, 1, hs);
            }
            Dh[t] = row_d(dob, ob, t, C, hs);
        }
    for (int s0 = 0; s0 < T; s0 += K_TILE) {
        const int ns = imin(K_TILE, T - s0), tfirst = s0 - s0 % Q_TILE;
        for (int t0 = tfirst; t0 < T; t0 += Q_TILE) {
            const int nq = imin(Q_TILE, T - t0), ilo = s0 > t0 ? s0 - t0 : 0; /* rows t >= s0 */
            const int first = t0 == tfirst; /* the key block's first query tile */
            /* the next tile's rows are asked for a few at a time, `per` rows of each array per
             * row of the softmax loop below: all at once (2560 prefetches at gpt-mini's shapes)
             * they filled the line-fill buffers and stalled the tile's start (Intel Xeon,
             * ab_builds.py --attention gpt-mini backward: 0.936 on 1 thread, 0.931 on 2) */
            const int tn = t0 + Q_TILE, sn = first ? s0 + K_TILE : T;
            const int per = (Q_TILE + nq - ilo - 1) / (nq - ilo);
            /* P = Q K^T and G = dO V^T on the keys each group of rows may see */
            for (int d0 = 0; d0 < hs; d0 += D_CHUNK) {
                const int nd = imin(D_CHUNK, hs - d0);
                if (first || !whole) {
                    transpose_kv(simd, &KT[0][0], K_TILE, k + s0 * C3 + d0, C3, ns, round_nr(ns),
                                 nd);
                    transpose_kv(simd, &VT[0][0], K_TILE, v + s0 * C3 + d0, C3, ns, round_nr(ns),
                                 nd);
                }
                for (int i0 = ilo; i0 < nq; i0 += MR) {
                    const int mr = imin(MR, nq - i0);
                    const int nc = round_nr(imin(ns, t0 + i0 + mr - s0));
                    mm_rows(P[i0], K_TILE, q + (t0 + i0) * C3 + d0, C3, 1, &KT[0][0], K_TILE,
                            mr, nc, nd, d0 > 0, simd);
                    mm_rows(G[i0], K_TILE, dob + (size_t)(t0 + i0) * C + d0, (size_t)C, 1,
                            &VT[0][0], K_TILE, mr, nc, nd, d0 > 0, simd);
                }
            }
            /* P <- probabilities, G <- dS / sqrt(hs), both 0 on masked keys */
            for (int i = ilo; i < nq; i++) {
                const int t = t0 + i, jn = imin(ns, t + 1 - s0), i0 = ilo + (i - ilo) / MR * MR;
                const int nc = round_nr(imin(ns, t0 + i0 + imin(MR, nq - i0) - s0));
                const float D = d_once ? Dh[t] : row_d(dob, ob, t, C, hs);
                const float lt = L[t];
                float *restrict pr = P[i], *restrict gr = G[i];
                prefetch_next(q, dq, dob, ob, k, v, dk, dv, tn, sn, T, C, hs, (i - ilo) * per,
                              (i - ilo + 1) * per);
                const int j8 = (jn + 7) / 8 * 8; /* whole vectors of 8 hold the unmasked keys */
                for (int j = 0; j < j8; j++) {
                    const float p = j < jn ? exp_neg(madd(pr[j], scale, -lt, simd > 0), simd > 0)
                                           : 0.0f;
                    pr[j] = p;
                    gr[j] = p * (gr[j] - D) * scale;
                }
                for (int j = j8; j < nc; j++) pr[j] = gr[j] = 0.0f;
            }
            /* dq_t += sum_s G_ts k_s;  dv_s += sum_t P_ts dout_t;  dk_s += sum_t G_ts q_t
             * (rows t >= s only), by chunks of head columns, each row operand packed */
            for (int d0 = 0; d0 < hs; d0 += D_CHUNK) {
                const int nd = imin(D_CHUNK, hs - d0);
                if (first || !whole) pack_rows(&Kp[0][0], k + s0 * C3 + d0, C3, ns, nd);
                for (int i0 = ilo; i0 < nq; i0 += MR) {
                    const int mr = imin(MR, nq - i0), jmax = imin(ns, t0 + i0 + mr - s0);
                    mm_rows(dq + (t0 + i0) * C3 + d0, C3, G[i0], K_TILE, 1, &Kp[0][0], D_CHUNK,
                            mr, nd, jmax, accumulate || s0 > 0, simd);
                }
                pack_rows(&Xp[ilo][0], dob + (size_t)(t0 + ilo) * C + d0, (size_t)C, nq - ilo,
                          nd);
                add_key_rows(dv + d0, C3, P, Xp, s0, t0, ilo, ns, nq, nd, accumulate || !first,
                             simd);
                pack_rows(&Xp[ilo][0], q + (t0 + ilo) * C3 + d0, C3, nq - ilo, nd);
                add_key_rows(dk + d0, C3, G, Xp, s0, t0, ilo, ns, nq, nd, accumulate || !first,
                             simd);
            }
        }
    }
}

/* The same tile and head kernels compiled three times: plain C (the compiler's baseline
 * vectors), with AVX2 enabled (simd = 1: 8-float accumulators, 8 x 8 register transposes) and
 * with AVX-512 (simd = 2: 16-float accumulators, 32 registers); the arithmetic and its order
 * are identical, the products' multiply-adds fused in the two SIMD builds. simd_level() picks
 * one per call. */
typedef void (*attn_tile_fn)(float *, float *, const float *, int, int, int, int, int, int, int);
typedef void (*attn_head_fn)(float *, const float *, const float *, const float *,
                             const float *, int, int, int, int, int, int);

static void attn_tile_portable(float *out, float *lse, const float *qkv, int b, int h, int t0,
                               int nq, int T, int C, int NH) {
    attention_forward_tile(out, lse, qkv, b, h, t0, nq, T, C, NH, 0);
}
static void attn_head_portable(float *dqkv, const float *dout, const float *qkv,
                               const float *out, const float *lse, int b, int h, int T, int C,
                               int NH, int accumulate) {
    attention_backward_head(dqkv, dout, qkv, out, lse, b, h, T, C, NH, accumulate, 0);
}
#if GL_X86
GL_AVX2 static void attn_tile_avx2(float *out, float *lse, const float *qkv, int b, int h,
                                   int t0, int nq, int T, int C, int NH) {
    attention_forward_tile(out, lse, qkv, b, h, t0, nq, T, C, NH, 1);
}
GL_AVX2 static void attn_head_avx2(float *dqkv, const float *dout, const float *qkv,
                                   const float *out, const float *lse, int b, int h, int T,
                                   int C, int NH, int accumulate) {
    attention_backward_head(dqkv, dout, qkv, out, lse, b, h, T, C, NH, accumulate, 1);
}
GL_AVX512 static void attn_tile_avx512(float *out, float *lse, const float *qkv, int b, int h,
                                       int t0, int nq, int T, int C, int NH) {
    attention_forward_tile(out, lse, qkv, b, h, t0, nq, T, C, NH, 2);
}
GL_AVX512 static void attn_head_avx512(float *dqkv, const float *dout, const float *qkv,
                                       const float *out, const float *lse, int b, int h, int T,
                                       int C, int NH, int accumulate) {
    attention_backward_head(dqkv, dout, qkv, out, lse, b, h, T, C, NH, accumulate, 2);
}
#endif

/* Causal self-attention; qkv: (B,T,3C) rows [q | k | v]; out: (B,T,C); lse: (B,NH,T).
 * Work items are query tiles of one head, handed out head by head, each head's largest
 * (latest) tile first: the threads work on the tiles of one head at a time, whose keys and
 * values stay in cache between them. (Every head's latest tile first, then every head's next,
 * read each head's keys and values from memory again for each tile: on the Intel Xeon of
 * docs/benchmarks.md, benchmarks/ab_builds.py --attention small forward 0.81-0.89, gpt-mini
 * 0.91, --step small 0.990-0.993; one item per head, all its tiles, was slower, 1.04-1.06.)
 * Each item writes only its own rows of out and lse, whatever thread runs it, so the dynamic
 * schedule (which evens out the causal triangle's uneven tiles) keeps the result
 * deterministic. */
void gl_attention_forward(float *out, float *lse, const float *qkv, int B, int T, int C, int NH) {
    if (B <= 0 || T <= 0) return;
    static const attn_tile_fn builds[] = SIMD_BUILDS(attn_tile);
    const attn_tile_fn tile = builds[simd_level()];
    const int ntiles = (T + Q_TILE - 1) / Q_TILE;
    const ptrdiff_t items = (ptrdiff_t)B * NH * ntiles;
#pragma omp parallel for schedule(dynamic, 1)
    for (ptrdiff_t it = 0; it < items; it++) {
        const int k = ntiles - 1 - (int)(it % ntiles); /* a head's tiles, latest first */
        const int bh = (int)(it / ntiles);
        const int t0 = k * Q_TILE;
        tile(out, lse, qkv, bh / NH, bh % NH, t0, imin(Q_TILE, T - t0), T, C, NH);
    }
}

/* Gradients of gl_attention_forward: dqkv (B,T,3C) accumulates (accumulate == 0: is
 * overwritten -- each head's first terms are stored, so the caller needs no memset); dout,
 * out: (B,T,C). One thread per (b, h): a head only touches its own columns of dqkv, so the
 * threads never write the same element. */
void gl_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *out,
                           const float *lse, int B, int T, int C, int NH, int accumulate) {
    static const attn_head_fn builds[] = SIMD_BUILDS(attn_head);
    const attn_head_fn head = builds[simd_level()];
    const int pairs = B * NH;
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < pairs; bh++)
        head(dqkv, dout, qkv, out, lse, bh / NH, bh % NH, T, C, NH, accumulate);
}

/* ---- GELU ------------------------------------------------------------------------------- */

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_A 0.044715f
#define GELU_CHUNK 4096

/* GELU(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3). Since 1 + tanh(u) =
 * 2 sigmoid(2u), it is computed as x / (1 + exp(-2u)): one exponential, exact in both tails. */
GL_INLINE void gelu_forward_body(float *restrict out, const float *restrict x, size_t n,
                                 int fused) {
    for (size_t i = 0; i < n; i++) {
        const float xi = x[i];
        const float u = GELU_K * madd(GELU_A * xi * xi, xi, xi, fused);
        out[i] = xi / (1.0f + exp_f(-2.0f * u, fused));
    }
}

/* gelu'(x) = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) du/dx
 *          = sg + 2 x sg (1 - sg) du/dx,  sg = sigmoid(2u), 1 - sg = e sg with e = exp(-2u),
 * du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2); dx = (accumulate ? dx : 0) + gelu'(x) * dout
 * (0 + v, not v: the same bits as accumulating into a zeroed dx, -0 included). */
GL_INLINE void gelu_backward_body(float *restrict dx, const float *restrict x,
                                  const float *restrict dout, size_t n, int accumulate,
                                  int fused) {
    for (size_t i = 0; i < n; i++) {
        const float xi = x[i];
        const float u = GELU_K * madd(GELU_A * xi * xi, xi, xi, fused);
        const float e = exp_f(-2.0f * u, fused);
        const float sg = 1.0f / (1.0f + e);
        const float du = GELU_K * madd(3.0f * GELU_A * xi, xi, 1.0f, fused);
        const float g = madd(2.0f * xi * sg * (e * sg), du, sg, fused); /* gelu'(x) */
        dx[i] = (accumulate ? dx[i] : 0.0f) + g * dout[i];
    }
}

static void gelu_forward_portable(float *out, const float *x, size_t n) {
    gelu_forward_body(out, x, n, 0);
}
static void gelu_backward_portable(float *dx, const float *x, const float *dout, size_t n,
                                   int accumulate) {
    gelu_backward_body(dx, x, dout, n, accumulate, 0);
}
#if GL_X86
GL_AVX2 static void gelu_forward_avx2(float *out, const float *x, size_t n) {
    gelu_forward_body(out, x, n, 1);
}
GL_AVX2 static void gelu_backward_avx2(float *dx, const float *x, const float *dout, size_t n,
                                       int accumulate) {
    gelu_backward_body(dx, x, dout, n, accumulate, 1);
}
GL_AVX512 static void gelu_forward_avx512(float *out, const float *x, size_t n) {
    gelu_forward_body(out, x, n, 1);
}
GL_AVX512 static void gelu_backward_avx512(float *dx, const float *x, const float *dout,
                                           size_t n, int accumulate) {
    gelu_backward_body(dx, x, dout, n, accumulate, 1);
}
#endif

/* out = gelu(x), (N) each; chunks of GELU_CHUNK elements in parallel. */
void gl_gelu_forward(float *out, const float *x, size_t N) {
    static void (*const builds[])(float *, const float *, size_t) = SIMD_BUILDS(gelu_forward);
    void (*const fn)(float *, const float *, size_t) = builds[simd_level()];
    const ptrdiff_t nchunks = (ptrdiff_t)((N + GELU_CHUNK - 1) / GELU_CHUNK);
#pragma omp parallel for schedule(static) if (N >= GL_PAR_MIN)
    for (ptrdiff_t c = 0; c < nchunks; c++) {
        const size_t i0 = (size_t)c * GELU_CHUNK;
        fn(out + i0, x + i0, N - i0 < GELU_CHUNK ? N - i0 : GELU_CHUNK);
    }
}

/* dx += gelu'(x) * dout, (N) each; accumulate == 0: dx = gelu'(x) * dout (dx is not read, so
 * the model's backward pass skips zeroing it: a pass over 4 C floats per token). */
void gl_gelu_backward(float *dx, const float *x, const float *dout, size_t N, int accumulate) {
    static void (*const builds[])(float *, const float *, const float *, size_t, int) =
        SIMD_BUILDS(gelu_backward);
    void (*const fn)(float *, const float *, const float *, size_t, int) = builds[simd_level()];
    const ptrdiff_t nchunks = (ptrdiff_t)((N + GELU_CHUNK - 1) / GELU_CHUNK);
#pragma omp parallel for schedule(static) if (N >= GL_PAR_MIN)
    for (ptrdiff_t c = 0; c < nchunks; c++) {
        const size_t i0 = (size_t)c * GELU_CHUNK;
        fn(dx + i0, x + i0, dout + i0, N - i0 < GELU_CHUNK ? N - i0 : GELU_CHUNK, accumulate);
    }
}

/* ---- residual --------------------------------------------------------------------------- */

/* out = a + b, (N) each. */
void gl_residual_forward(float *out, const float *a, const float *b, size_t N) {
#pragma omp parallel for schedule(static) if (N >= GL_PAR_MIN)
    for (size_t i = 0; i < N; i++) out[i] = a[i] + b[i];
}

/* da += dout; db += dout. */
void gl_residual_backward(float *da, float *db, const float *dout, size_t N) {
#pragma omp parallel for schedule(static) if (N >= GL_PAR_MIN)
    for (size_t i = 0; i < N; i++) {
        da[i] += dout[i];
        db[i] += dout[i];
    }
}

/* ---- scalar head ------------------------------------------------------------------------ */

/* out[n] = x[n,:] . w + b[0]. x: (N,C); w: (C); b: (1); out: (N). Dots in double. */
void gl_scalar_head_forward(float *out, const float *x, const float *w, const float *b, int N,
                            int C) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) out[n] = (float)(dotd(x + (size_t)n * C, w, C) + b[0]);
}

/* dx[n,:] += dout[n] w (dx may be NULL); dw += sum_n dout[n] x[n,:]; db += sum_n dout[n]. */
void gl_scalar_head_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                             const float *w, int N, int C) {
    int nblk = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel
    {
        if (dx) {
#pragma omp for schedule(static) nowait
            for (int n = 0; n < N; n++) axpyf(dx + (size_t)n * C, dout[n], w, C);
        }
#pragma omp for schedule(static)
        for (int cb = 0; cb < nblk; cb++) {
            int c0 = cb * COL_BLOCK, nc = imin(COL_BLOCK, C - c0);
            double acc[COL_BLOCK];
            for (int c = 0; c < nc; c++) acc[c] = 0.0;
            for (int n = 0; n < N; n++) {
                const float *restrict xr = x + (size_t)n * C + c0;
                double d = dout[n];
                for (int c = 0; c < nc; c++) acc[c] += d * xr[c];
            }
            for (int c = 0; c < nc; c++) dw[c0 + c] += (float)acc[c];
        }
    }
    double s = 0.0;
    for (int n = 0; n < N; n++) s += dout[n];
    db[0] += (float)s;
}

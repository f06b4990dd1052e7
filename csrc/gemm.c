/* Matrix multiplication: gl_sgemm, C = alpha op(A) op(B) + beta C (row-major, see gptlab.h).
 *
 * The BLIS design, in five loops around a register-blocked micro-kernel:
 *
 *   for jc in N step NC:                 B panel  (KC x NC)  packed once, shared, lives in L3
 *     for pc in K step KC:
 *       pack B[pc:pc+KC, jc:jc+NC] into NR-wide micro-panels        (all threads share the work)
 *       for ic in M step MC:             A block  (MC x KC)  packed per thread, lives in L2
 *         pack A[ic:ic+MC, pc:pc+KC] into MR-tall micro-panels
 *         for jr in NC step NR:          B micro-panel (KC x NR) stays in L1 across ir
 *           for ir in MC step MR:
 *             micro-kernel: C[MR x NR] (+)= A micro-panel @ B micro-panel, in registers
 *
 * Packing turns the four transposition cases into one: the micro-kernel always reads A as
 * MR floats per k and B as NR floats per k, contiguous and aligned, so it can keep the whole
 * MR x NR tile of C in vector registers and issue one FMA per loaded float of B per row.
 * Panels at the edges are padded with zeros, so the kernel always computes a full tile;
 * edge tiles go through a small buffer and only the valid part is written to C.
 *
 * Threads split C into a grid of rectangles (rows x column panels); each C element is computed
 * by one thread, summing k in the same order whatever the thread count, so results are
 * bitwise reproducible (and even independent of the thread count).
 *
 * Instruction sets, chosen at run time: AVX-512 (12x32 tile), AVX2+FMA (6x16 tile), and a
 * portable C kernel (4x8 tile) that compiles anywhere, aarch64 included. */
#include "gptlab.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define GL_X86 1
#include <immintrin.h>
#else
#define GL_X86 0
#endif

/* Micro-kernel: C[MR x NR] = alpha * (a @ b) + beta * C, where a holds kc groups of MR floats
 * (one column of A per k) and b holds kc groups of NR floats (one row of B per k).
 * beta == 0 writes C without reading it (C may hold NaN). */
typedef void (*kernel_fn)(int kc, const float *a, const float *b, float *c, ptrdiff_t ldc,
                          float alpha, float beta);
/* Packs a w-wide, kc-deep panel: dst[k*w + i] = element (k, i) for i < wv, 0 for wv <= i < w.
 * "rows" layout: element (k, i) at src[k*ld + i]; "cols" layout: at src[i*ld + k]. */
typedef void (*pack_fn)(float *dst, const float *src, ptrdiff_t ld, int w, int wv, int kc);

typedef struct {
    const char *name;
    int mr, nr;         /* register tile */
    int mc, kc, nc;     /* cache blocks: A block MC x KC (L2), B panel KC x NC (L3) */
    kernel_fn kernel;
    pack_fn pack_rows, pack_cols;
} isa_desc;

#define MAX_MR 16
#define MAX_NR 32
#define ALIGN 64

/* ---- portable path ------------------------------------------------------------------------ */

static void pack_rows_portable(float *dst, const float *src, ptrdiff_t ld, int w, int wv,
                               int kc) {
    for (int k = 0; k < kc; k++) {
        const float *s = src + (ptrdiff_t)k * ld;
        float *d = dst + (ptrdiff_t)k * w;
        for (int i = 0; i < wv; i++) d[i] = s[i];
        for (int i = wv; i < w; i++) d[i] = 0.0f;
    }
}

static void pack_cols_portable(float *dst, const float *src, ptrdiff_t ld, int w, int wv,
                               int kc) {
    for (int i = 0; i < wv; i++) {
        const float *s = src + (ptrdiff_t)i * ld;
        for (int k = 0; k < kc; k++) dst[(ptrdiff_t)k * w + i] = s[k];
    }
    for (int i = wv; i < w; i++)
        for (int k = 0; k < kc; k++) dst[(ptrdiff_t)k * w + i] = 0.0f;
}

#define P_MR 4
#define P_NR 8

/* Plain C, written so -O3 vectorises the j loops (SSE2 on x86-64, NEON on aarch64). */
static void kernel_portable(int kc, const float *restrict a, const float *restrict b,
                            float *restrict c, ptrdiff_t ldc, float alpha, float beta) {
    float acc[P_MR][P_NR] = {{0.0f}};
    for (int k = 0; k < kc; k++) {
        for (int i = 0; i < P_MR; i++) {
            const float ai = a[i];
            for (int j = 0; j < P_NR; j++) acc[i][j] += ai * b[j];
        }
        a += P_MR;
        b += P_NR;
    }
    for (int i = 0; i < P_MR; i++) {
        float *ci = c + (ptrdiff_t)i * ldc;
        if (beta == 0.0f)
            for (int j = 0; j < P_NR; j++) ci[j] = alpha * acc[i][j];
        else
            for (int j = 0; j < P_NR; j++) ci[j] = alpha * acc[i][j] + beta * ci[j];
    }
}

/* ---- AVX2 + FMA path ------------------------------------------------------------------------ */
#if GL_X86

#define A2_MR 6
#define A2_NR 16

/* 6x16 tile: 12 accumulators (6 rows x two 8-float vectors), 2 vectors of B, 1 broadcast of A:
 * 15 of the 16 ymm registers. Per k: 2 loads + 6 broadcasts feed 12 FMAs, so both FMA pipes
 * of Zen 3 / Haswell stay busy, and 12 independent chains cover the 4-cycle FMA latency. */
__attribute__((target("avx2,fma"))) static void kernel_avx2(int kc, const float *restrict a,
                                                            const float *restrict b,
                                                            float *restrict c, ptrdiff_t ldc,
                                                            float alpha, float beta) {
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    for (int i = 0; i < A2_MR; i++) _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
#pragma GCC unroll 4
    for (int k = 0; k < kc; k++) {
        const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
        __m256 ai;
        ai = _mm256_broadcast_ss(a + 0);
        c00 = _mm256_fmadd_ps(ai, b0, c00);
        c01 = _mm256_fmadd_ps(ai, b1, c01);
        ai = _mm256_broadcast_ss(a + 1);
        c10 = _mm256_fmadd_ps(ai, b0, c10);
        c11 = _mm256_fmadd_ps(ai, b1, c11);
        ai = _mm256_broadcast_ss(a + 2);
        c20 = _mm256_fmadd_ps(ai, b0, c20);
        c21 = _mm256_fmadd_ps(ai, b1, c21);
        ai = _mm256_broadcast_ss(a + 3);
        c30 = _mm256_fmadd_ps(ai, b0, c30);
        c31 = _mm256_fmadd_ps(ai, b1, c31);
        ai = _mm256_broadcast_ss(a + 4);
        c40 = _mm256_fmadd_ps(ai, b0, c40);
        c41 = _mm256_fmadd_ps(ai, b1, c41);
        ai = _mm256_broadcast_ss(a + 5);
        c50 = _mm256_fmadd_ps(ai, b0, c50);
        c51 = _mm256_fmadd_ps(ai, b1, c51);
        a += A2_MR;
        b += A2_NR;
    }
    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
#define STORE_ROW(i, lo, hi)                                                                     \
    do {                                                                                         \
        float *ci = c + (i) * ldc;                                                               \
        __m256 r0 = _mm256_mul_ps(va, lo), r1 = _mm256_mul_ps(va, hi);                           \
        if (beta != 0.0f) {                                                                      \
            r0 = _mm256_add_ps(r0, _mm256_mul_ps(vb, _mm256_loadu_ps(ci)));                      \
            r1 = _mm256_add_ps(r1, _mm256_mul_ps(vb, _mm256_loadu_ps(ci + 8)));                  \
        }                                                                                        \
        _mm256_storeu_ps(ci, r0);                                                                \
        _mm256_storeu_ps(ci + 8, r1);                                                            \
    } while (0)
    STORE_ROW(0, c00, c01);
    STORE_ROW(1, c10, c11);
    STORE_ROW(2, c20, c21);
    STORE_ROW(3, c30, c31);
    STORE_ROW(4, c40, c41);
    STORE_ROW(5, c50, c51);
#undef STORE_ROW
}

/* In-register transpose of 8 rows of 8 floats: r[i][k] -> r[k][i]. */
__attribute__((target("avx2,fma"))) static inline void transpose8(__m256 r[8]) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

/* "cols" layout (k contiguous in src): transpose 8x8 blocks in registers. */
__attribute__((target("avx2,fma"))) static void pack_cols_avx2(float *dst, const float *src,
                                                               ptrdiff_t ld, int w, int wv,
                                                               int kc) {
    int k = 0;
    for (; k + 8 <= kc; k += 8) {
        for (int i0 = 0; i0 < w; i0 += 8) {
            __m256 r[8];
            for (int ii = 0; ii < 8; ii++)
                r[ii] = i0 + ii < wv ? _mm256_loadu_ps(src + (ptrdiff_t)(i0 + ii) * ld + k)
                                     : _mm256_setzero_ps();
            transpose8(r);
            const int n = w - i0 < 8 ? w - i0 : 8;
            if (n == 8) {
                for (int kk = 0; kk < 8; kk++) _mm256_storeu_ps(dst + (k + kk) * w + i0, r[kk]);
            } else {
                _Alignas(32) float t[8];
                for (int kk = 0; kk < 8; kk++) {
                    _mm256_store_ps(t, r[kk]);
                    memcpy(dst + (k + kk) * w + i0, t, sizeof(float) * (size_t)n);
                }
            }
        }
    }
    for (; k < kc; k++)
        for (int i = 0; i < w; i++) dst[k * w + i] = i < wv ? src[(ptrdiff_t)i * ld + k] : 0.0f;
}

/* "rows" layout (i contiguous in src): straight copies, full vectors when the panel is full. */
__attribute__((target("avx2,fma"))) static void pack_rows_avx2(float *dst, const float *src,
                                                               ptrdiff_t ld, int w, int wv,
                                                               int kc) {
    if (wv == w && (w & 7) == 0) {
        for (int k = 0; k < kc; k++) {
            const float *s = src + (ptrdiff_t)k * ld;
            float *d = dst + (ptrdiff_t)k * w;
            for (int i = 0; i < w; i += 8) _mm256_storeu_ps(d + i, _mm256_loadu_ps(s + i));
        }
    } else {
        pack_rows_portable(dst, src, ld, w, wv, kc);
    }
}

/* ---- AVX-512 path ---------------------------------------------------------------------------- */

#define A5_MR 12
#define A5_NR 32

/* 12x32 tile, the AVX2 kernel's structure with 16-float vectors: 24 accumulators, 2 vectors
 * of B and 1 broadcast = 27 of the 32 zmm registers. (Not run on the development machine,
 * which has no AVX-512; gl_gemm_set_isa("avx512") refuses on such CPUs.) */
__attribute__((target("avx512f"))) static void kernel_avx512(int kc, const float *restrict a,
                                                             const float *restrict b,
                                                             float *restrict c, ptrdiff_t ldc,
                                                             float alpha, float beta) {
    __m512 lo[A5_MR], hi[A5_MR];
#pragma GCC unroll 12
    for (int i = 0; i < A5_MR; i++) {
        lo[i] = _mm512_setzero_ps();
        hi[i] = _mm512_setzero_ps();
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + 16), _MM_HINT_T0);
    }
#pragma GCC unroll 2
    for (int k = 0; k < kc; k++) {
        const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 12
        for (int i = 0; i < A5_MR; i++) {
            const __m512 ai = _mm512_set1_ps(a[i]);
            lo[i] = _mm512_fmadd_ps(ai, b0, lo[i]);
            hi[i] = _mm512_fmadd_ps(ai, b1, hi[i]);
        }
        a += A5_MR;
        b += A5_NR;
    }
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 12
    for (int i = 0; i < A5_MR; i++) {
        float *ci = c + i * ldc;
        __m512 r0 = _mm512_mul_ps(va, lo[i]), r1 = _mm512_mul_ps(va, hi[i]);
        if (beta != 0.0f) {
            r0 = _mm512_add_ps(r0, _mm512_mul_ps(vb, _mm512_loadu_ps(ci)));
            r1 = _mm512_add_ps(r1, _mm512_mul_ps(vb, _mm512_loadu_ps(ci + 16)));
        }
        _mm512_storeu_ps(ci, r0);
        _mm512_storeu_ps(ci + 16, r1);
    }
}

#endif /* GL_X86 */

/* ---- instruction-set table and dispatch ------------------------------------------------------ */

enum { ISA_PORTABLE, ISA_AVX2, ISA_AVX512, ISA_COUNT };

/* Block sizes. AVX2 (Zen 3: 32 KB L1d, 512 KB L2): B micro-panel 16 x 256 floats = 16 KB in
 * L1, A block 144 x 256 = 144 KB in L2, B panel 256 x 4096 = 4 MB in L3.
 * AVX-512 (Zen 4/5, Skylake-X: 48/32 KB L1d, 1-2 MB L2): B micro-panel 32 x 192 = 24 KB. */
static const isa_desc isa_table[ISA_COUNT] = {
    {"portable", P_MR, P_NR, 128, 256, 4096, kernel_portable, pack_rows_portable,
     pack_cols_portable},
#if GL_X86
    {"avx2", A2_MR, A2_NR, 144, 256, 4096, kernel_avx2, pack_rows_avx2, pack_cols_avx2},
    {"avx512", A5_MR, A5_NR, 240, 192, 4096, kernel_avx512, pack_rows_avx2, pack_cols_avx2},
#else
    {"avx2", 0, 0, 0, 0, 0, NULL, NULL, NULL},
    {"avx512", 0, 0, 0, 0, 0, NULL, NULL, NULL},
#endif
};

static int isa_supported(int isa) {
    if (isa == ISA_PORTABLE) return 1;
#if GL_X86
    __builtin_cpu_init();
    if (isa == ISA_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (isa == ISA_AVX512) return __builtin_cpu_supports("avx512f");
#endif
    return 0;
}

static int best_isa(void) {
    for (int isa = ISA_COUNT - 1; isa > ISA_PORTABLE; isa--)
        if (isa_supported(isa)) return isa;
    return ISA_PORTABLE;
}

static int current_isa = -1; /* -1: not chosen yet; the one global, as the conventions allow */

static const isa_desc *active_isa(void) {
    int isa = current_isa;
    if (isa < 0) current_isa = isa = best_isa();
    return &isa_table[isa];
}

const char *gl_gemm_isa(void) { return active_isa()->name; }

int gl_gemm_set_isa(const char *name) {
    if (strcmp(name, "auto") == 0) {
        current_isa = best_isa();
        return 0;
    }
    for (int isa = 0; isa < ISA_COUNT; isa++) {
        if (strcmp(name, isa_table[isa].name) == 0) {
            if (!isa_supported(isa)) return -1;
            current_isa = isa;
            return 0;
        }
    }
    return -1;
}

/* ---- packing buffers -------------------------------------------------------------------------- */

/* Each thread keeps its buffers (slot 0: its A block, slot 1: the shared B panel when it is
 * the calling thread) and grows them when a larger problem comes; no allocation per call in
 * steady state. Returns NULL if memory runs out. */
static float *thread_buffer(int slot, size_t nfloats) {
    static _Thread_local float *buf[2];
    static _Thread_local size_t cap[2];
    if (cap[slot] < nfloats) {
        size_t bytes = (nfloats * sizeof(float) + ALIGN - 1) / ALIGN * ALIGN;
        free(buf[slot]);
        buf[slot] = aligned_alloc(ALIGN, bytes);
        cap[slot] = buf[slot] ? nfloats : 0;
    }
    return buf[slot];
}

/* ---- the blocked driver ---------------------------------------------------------------------- */

typedef struct {
    const isa_desc *d;
    int transA, transB, M, N, K;
    float alpha, beta;
    const float *A, *B;
    float *C;
    ptrdiff_t lda, ldb, ldc;
    float *bpack; /* shared B panel: KC x round_up(min(N, NC), NR) */
    int failed;
} gemm_job;

static inline int min_int(int a, int b) { return a < b ? a : b; }
static inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

/* Splits nth threads into a tm x tn grid (tm row ranges, tn column-panel ranges), choosing the
 * split with the least estimated time of the slowest thread: its share of the FMAs (at 16 per
 * cycle) plus re-packing of A, which every column group repeats. */
static void choose_grid(const gemm_job *g, int nth, int *tm_out, int *tn_out) {
    const isa_desc *d = g->d;
    const int mt = ceil_div(g->M, d->mr), np = ceil_div(g->N, d->nr);
    double best = 0.0;
    for (int tm = nth; tm >= 1; tm--) {
        if (nth % tm) continue;
        const int tn = nth / tm;
        const double rows = (double)ceil_div(mt, tm) * d->mr;
        const double cols = (double)ceil_div(np, tn) * d->nr;
        const double cost = rows * cols * g->K / 16.0 + 2.0 * rows * g->K * ceil_div(g->N, d->nc);
        if (tm == nth || cost < best) {
            best = cost;
            *tm_out = tm;
            *tn_out = tn;
        }
    }
}

/* The work of thread tid of nth (all threads call it; barriers keep them in step). */
static void gemm_thread(gemm_job *g, int tid, int nth) {
    const isa_desc *d = g->d;
    const int MR = d->mr, NR = d->nr, M = g->M, N = g->N, K = g->K;
    int tm = 1, tn = 1;
    choose_grid(g, nth, &tm, &tn);
    const int ti = tid / tn, tj = tid % tn;
    const int mt = ceil_div(M, MR);
    const int m0 = mt * ti / tm * MR, m1 = min_int(mt * (ti + 1) / tm * MR, M);

    float *apack = thread_buffer(0, (size_t)d->mc * d->kc);
    if (!apack) g->failed = 1; /* every thread writes the same value; read after the barrier */
#pragma omp barrier
    if (g->failed) return;
    float *bpack = g->bpack;
    _Alignas(ALIGN) float edge[MAX_MR * MAX_NR];

    for (int jc = 0; jc < N; jc += d->nc) {
        const int nc = min_int(d->nc, N - jc), np = ceil_div(nc, NR);
        for (int pc = 0; pc < K; pc += d->kc) {
            const int kc = min_int(d->kc, K - pc);
            const float beta = pc == 0 ? g->beta : 1.0f;
            /* pack this thread's share of the B panel */
            for (int p = np * tid / nth; p < np * (tid + 1) / nth; p++) {
                const int j = jc + p * NR, wv = min_int(NR, N - j);
                float *dst = bpack + (size_t)p * NR * kc;
                if (g->transB) d->pack_cols(dst, g->B + j * g->ldb + pc, g->ldb, NR, wv, kc);
                else d->pack_rows(dst, g->B + pc * g->ldb + j, g->ldb, NR, wv, kc);
            }
#pragma omp barrier
            const int q0 = np * tj / tn, q1 = np * (tj + 1) / tn;
            for (int ic = m0; ic < m1; ic += d->mc) {
                const int mc = min_int(d->mc, m1 - ic);
                for (int r = 0; r * MR < mc; r++) {
                    const int i = ic + r * MR, wv = min_int(MR, m1 - i);
                    float *dst = apack + (size_t)r * MR * kc;
                    if (g->transA) d->pack_rows(dst, g->A + pc * g->lda + i, g->lda, MR, wv, kc);
                    else d->pack_cols(dst, g->A + i * g->lda + pc, g->lda, MR, wv, kc);
                }
                for (int p = q0; p < q1; p++) {
                    const int j = jc + p * NR, nv = min_int(NR, N - j);
                    const float *bp = bpack + (size_t)p * NR * kc;
                    for (int r = 0; r * MR < mc; r++) {
                        const int i = ic + r * MR, mv = min_int(MR, m1 - i);
                        const float *ap = apack + (size_t)r * MR * kc;
                        float *c = g->C + i * g->ldc + j;
                        if (mv == MR && nv == NR) {
                            d->kernel(kc, ap, bp, c, g->ldc, g->alpha, beta);
                            continue;
                        }
                        /* edge tile: full tile into a buffer, then the valid part into C with
                         * the same arithmetic as the kernel's store */
                        d->kernel(kc, ap, bp, edge, NR, 1.0f, 0.0f);
                        for (int ii = 0; ii < mv; ii++) {
                            float *ci = c + ii * g->ldc;
                            const float *e = edge + ii * NR;
                            if (beta == 0.0f)
                                for (int jj = 0; jj < nv; jj++) ci[jj] = g->alpha * e[jj];
                            else
                                for (int jj = 0; jj < nv; jj++)
                                    ci[jj] = g->alpha * e[jj] + beta * ci[jj];
                        }
                    }
                }
            }
#pragma omp barrier
        }
    }
}

/* Unblocked reference loops: used when K == 0 and if the packing buffers cannot be allocated. */
static void sgemm_simple(const gemm_job *g) {
    for (int i = 0; i < g->M; i++) {
        float *c = g->C + i * g->ldc;
        for (int j = 0; j < g->N; j++) {
            float s = 0.0f;
            for (int k = 0; k < g->K; k++) {
                const float a = g->transA ? g->A[k * g->lda + i] : g->A[i * g->lda + k];
                const float b = g->transB ? g->B[j * g->ldb + k] : g->B[k * g->ldb + j];
                s += a * b;
            }
            c[j] = g->beta == 0.0f ? g->alpha * s : g->alpha * s + g->beta * c[j];
        }
    }
}

/* Products smaller than this many multiply-adds run on the calling thread alone; above it,
 * each extra thread needs at least this much work to pay for waking it. */
#define GEMM_WORK_PER_THREAD (1 << 18)

void gl_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    gemm_job g = {active_isa(), transA, transB, M, N, K < 0 ? 0 : K, alpha, beta, A, B, C,
                  lda, ldb, ldc, NULL, 0};
    if (g.K == 0) {
        sgemm_simple(&g);
        return;
    }
    const isa_desc *d = g.d;
    g.bpack = thread_buffer(1, (size_t)d->kc * ceil_div(min_int(N, d->nc), d->nr) * d->nr);
    if (!g.bpack) {
        sgemm_simple(&g);
        return;
    }
    int nth = 1;
#ifdef _OPENMP
    const double work = (double)M * N * K;
    if (!omp_in_parallel() && work >= 2.0 * GEMM_WORK_PER_THREAD) {
        nth = omp_get_max_threads();
        if (work < (double)nth * GEMM_WORK_PER_THREAD) nth = (int)(work / GEMM_WORK_PER_THREAD);
    }
#endif
    if (nth <= 1) {
        gemm_thread(&g, 0, 1);
    } else {
#pragma omp parallel num_threads(nth)
        {
#ifdef _OPENMP
            gemm_thread(&g, omp_get_thread_num(), omp_get_num_threads());
#endif
        }
    }
    if (g.failed) sgemm_simple(&g);
}

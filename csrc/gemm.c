/* Matrix multiplication: gl_sgemm, C = alpha op(A) op(B) + beta C (row-major, see gptlab.h).
 *
 * The BLIS design: loops around a register-blocked micro-kernel.
 *
 *   for jc in N step NC:
 *     for pc in K step KC:
 *       pack B[pc:pc+KC, jc:jc+NC] into NR-wide micro-panels       (threads share the work)
 *       for each work item (rows of at most MC, all panels):        (one thread each)
 *         pack the item's rows of A[:, pc:pc+KC] into MR-tall micro-panels:  A block in L2
 *         for jr over the panels:               B micro-panel (KC x NR) stays in L1 across ir
 *           for ir over the item's row tiles:
 *             micro-kernel: C[MR x NR] (+)= A micro-panel @ B micro-panel, in registers
 *
 * Packing turns the four transposition cases into one: the micro-kernel always reads A as
 * MR floats per k and B as NR floats per k, contiguous and aligned, so it keeps the whole
 * MR x NR tile of C in vector registers and issues one FMA per loaded float of B per row.
 * Panels at the edges are padded with zeros, so the kernel always computes a full tile;
 * edge tiles go through a small buffer and only the valid part is written to C.
 *
 * Threads (OpenMP) take packing groups and work items dynamically, so a thread that loses
 * its core to another process does not hold the others up. Each C tile is computed by one
 * thread per KC step, summing k in the same order whoever computes it, so results are bitwise
 * reproducible, and even independent of the thread count. Short products (packed A and B
 * under 2M floats) skip the team barriers between those loops: gemm_whole packs every KC
 * step at once and flags each packed group, and a work item waits only for the groups it
 * reads -- same tiles, same order, same bits. Where packing A costs more than it saves
 * (narrow products, on the AVX2 tile), gemm_whole packs only B and the micro-kernel reads A
 * where it lies (a_in_place_pays).
 *
 * Instruction sets, chosen at run time: AVX-512 (12x32 tile), AVX2+FMA (6x16 tile), and a
 * portable C kernel (4x8 tile) that compiles anywhere, aarch64 included. Products under 32^3
 * multiply-adds skip all this and run plain loops. With gl_gemm_set_precision("bfloat16"),
 * the same loops run a bfloat16 kernel: AMX tiles (32x32 tile of C) or AVX512-BF16 (12x32). */
#define _DEFAULT_SOURCE /* syscall() for the AMX permission, madvise() (Linux) */
#include "gptlab.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <sched.h>
#include <sys/mman.h> /* madvise */
#define GL_YIELD() sched_yield()
#else
#define GL_YIELD() ((void)0)
#endif

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define GL_X86 1
#include <immintrin.h>
#else
#define GL_X86 0
#endif

/* Micro-kernel: C[MR x NR] = alpha * (a @ b) + beta * S, where a holds kc groups of MR floats
 * (one column of A per k) and b holds kc groups of NR floats (one row of B per k), and row i
 * of S is at s + i * lds: C itself (s = c, lds = ldc), or one bias row for every row (lds = 0).
 * beta == 0 writes C without reading S (C may hold NaN; s may be NULL). */
typedef void (*kernel_fn)(int kc, const float *a, const float *b, float *c, ptrdiff_t ldc,
                          float alpha, float beta, const float *s, ptrdiff_t lds);
/* Packs np consecutive w-wide, kc-deep panels of a (kc x np*w) grid: panel p goes to
 * dst + p*w*kc, with dst[p*w*kc + k*w + i] = element (k, p*w + i), or 0 past the wv valid
 * columns (wv counts from the first panel; the zeros pad the last tile of the matrix).
 * "rows" layout: element (k, i) at src[k*ld + i]; "cols" layout: at src[i*ld + k]. */
typedef void (*pack_fn)(float *dst, const float *src, ptrdiff_t ld, int w, int wv, int kc,
                        int np);
/* The micro-kernel with A read in place, not packed: element (i, k) of the MR x kc block of
 * op(A) at a[i * rs + k * ks] -- rs = lda, ks = 1 for a row-major A ("cols" layout), rs = 1,
 * ks = lda for a transposed one ("rows" layout). */
typedef void (*kernel_in_place_fn)(int kc, const float *a, ptrdiff_t rs, ptrdiff_t ks,
                                   const float *b, float *c, ptrdiff_t ldc, float alpha,
                                   float beta, const float *s, ptrdiff_t lds);

typedef struct {
    const char *name;
    int mr, nr;         /* register tile */
    int mc, kc, nc;     /* cache blocks: A block MC x KC (L2), B panel KC x NC (L3) */
    kernel_fn kernel;
    pack_fn pack_rows, pack_cols;
    kernel_in_place_fn kernel_in_place; /* NULL: this path always packs A */
    pack_fn pack_a_rows, pack_a_cols;   /* A's own layout (NULL: pack_rows, pack_cols) */
    void (*begin)(void), (*end)(void);  /* each thread, around its share of a product */
} isa_desc;

#define MAX_MR 32
#define MAX_NR 32
#define MAX_MR_IN_PLACE 16
#define MAX_KC 512
#define ALIGN 64

/* ---- portable path ------------------------------------------------------------------------ */

static inline int clamp_int(int x, int lo, int hi) { return x < lo ? lo : (x > hi ? hi : x); }
static inline int min_int(int a, int b) { return a < b ? a : b; }
static inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

/* rows layout, k outer: each row of src is read once, contiguously, across all np panels */
static void pack_rows_portable(float *dst, const float *src, ptrdiff_t ld, int w, int wv,
                               int kc, int np) {
    for (int k = 0; k < kc; k++) {
        const float *s = src + (ptrdiff_t)k * ld;
        for (int p = 0; p < np; p++) {
            float *d = dst + ((ptrdiff_t)p * kc + k) * w;
            const int n = clamp_int(wv - p * w, 0, w);
            for (int i = 0; i < n; i++) d[i] = s[p * w + i];
            for (int i = n; i < w; i++) d[i] = 0.0f;
        }
    }
}

static void pack_cols_portable(float *dst, const float *src, ptrdiff_t ld, int w, int wv,
                               int kc, int np) {
    for (int p = 0; p < np; p++) {
        float *d = dst + (ptrdiff_t)p * kc * w;
        const int n = clamp_int(wv - p * w, 0, w);
        for (int i = 0; i < n; i++) {
            const float *s = src + (ptrdiff_t)(p * w + i) * ld;
            for (int k = 0; k < kc; k++) d[(ptrdiff_t)k * w + i] = s[k];
        }
        for (int i = n; i < w; i++)
            for (int k = 0; k < kc; k++) d[(ptrdiff_t)k * w + i] = 0.0f;
    }
}

#define P_MR 4
#define P_NR 8

/* Plain C, written so -O3 vectorises the j loops (SSE2 on x86-64, NEON on aarch64). */
static void kernel_portable(int kc, const float *restrict a, const float *restrict b,
                            float *c, ptrdiff_t ldc, float alpha, float beta, const float *s,
                            ptrdiff_t lds) {
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
            for (int j = 0; j < P_NR; j++) ci[j] = alpha * acc[i][j] + beta * s[i * lds + j];
    }
}

/* ---- AVX2 + FMA path ------------------------------------------------------------------------ */
#if GL_X86

#define A2_MR 6
#define A2_NR 16

/* 6x16 tile: 12 accumulators (6 rows x two 8-float vectors), 2 vectors of B, 1 broadcast of A:
 * 15 of the 16 ymm registers. Per k: 2 loads + 6 broadcasts feed 12 FMAs, so both FMA pipes
 * of Zen 3 / Haswell stay busy, and 12 independent chains cover the 4-cycle FMA latency.
 * Element (i, k) of the A panel is a[i * rs + k * ks]: packed (rs 1, ks MR), or read in place
 * (kernel_avx2_in_place). Each k prefetches A pf floats ahead (pf 0: none). */
__attribute__((target("avx2,fma"), always_inline)) static inline void
tile_avx2(int kc, const float *restrict a, ptrdiff_t rs, ptrdiff_t ks, ptrdiff_t pf,
          const float *restrict b, float *c, ptrdiff_t ldc, float alpha, float beta,
          const float *s, ptrdiff_t lds) {
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    for (int i = 0; i < A2_MR; i++) {
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + 15), _MM_HINT_T0);
    }
    const float *a0 = a, *a1 = a + rs, *a2 = a + 2 * rs, *a3 = a + 3 * rs, *a4 = a + 4 * rs,
                *a5 = a + 5 * rs;
#pragma GCC unroll 4
    for (int k = 0; k < kc; k++) {
        if (pf) _mm_prefetch((const char *)(a0 + pf), _MM_HINT_T0);
        const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
        __m256 ai;
        ai = _mm256_broadcast_ss(a0);
        c00 = _mm256_fmadd_ps(ai, b0, c00);
        c01 = _mm256_fmadd_ps(ai, b1, c01);
        ai = _mm256_broadcast_ss(a1);
        c10 = _mm256_fmadd_ps(ai, b0, c10);
        c11 = _mm256_fmadd_ps(ai, b1, c11);
        ai = _mm256_broadcast_ss(a2);
        c20 = _mm256_fmadd_ps(ai, b0, c20);
        c21 = _mm256_fmadd_ps(ai, b1, c21);
        ai = _mm256_broadcast_ss(a3);
        c30 = _mm256_fmadd_ps(ai, b0, c30);
        c31 = _mm256_fmadd_ps(ai, b1, c31);
        ai = _mm256_broadcast_ss(a4);
        c40 = _mm256_fmadd_ps(ai, b0, c40);
        c41 = _mm256_fmadd_ps(ai, b1, c41);
        ai = _mm256_broadcast_ss(a5);
        c50 = _mm256_fmadd_ps(ai, b0, c50);
        c51 = _mm256_fmadd_ps(ai, b1, c51);
        a0 += ks, a1 += ks, a2 += ks, a3 += ks, a4 += ks, a5 += ks;
        b += A2_NR;
    }
    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
#define STORE_ROW(i, lo, hi)                                                                     \
    do {                                                                                         \
        float *ci = c + (i) * ldc;                                                               \
        __m256 r0 = _mm256_mul_ps(va, lo), r1 = _mm256_mul_ps(va, hi);                           \
        if (beta != 0.0f) {                                                                      \
            const float *si = s + (i) * lds;                                                     \
            r0 = _mm256_add_ps(r0, _mm256_mul_ps(vb, _mm256_loadu_ps(si)));                      \
            r1 = _mm256_add_ps(r1, _mm256_mul_ps(vb, _mm256_loadu_ps(si + 8)));                  \
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

__attribute__((target("avx2,fma"))) static void kernel_avx2(int kc, const float *restrict a,
                                                            const float *restrict b,
                                                            float *c, ptrdiff_t ldc,
                                                            float alpha, float beta,
                                                            const float *s, ptrdiff_t lds) {
    tile_avx2(kc, a, 1, A2_MR, 16 * A2_MR, b, c, ldc, alpha, beta, s, lds);
}

/* The same tile with A read where it lies: a row-major A gives six row streams (ks 1), a
 * transposed one kc rows of six adjacent floats (rs 1), prefetched 16 rows ahead. The same
 * multiply-adds in the same order as packing A and calling kernel_avx2: the same bits. */
__attribute__((target("avx2,fma"))) static void
kernel_avx2_in_place(int kc, const float *restrict a, ptrdiff_t rs, ptrdiff_t ks,
                     const float *restrict b, float *c, ptrdiff_t ldc, float alpha, float beta,
                     const float *s, ptrdiff_t lds) {
    if (ks == 1) tile_avx2(kc, a, rs, 1, 0, b, c, ldc, alpha, beta, s, lds);
    else tile_avx2(kc, a, 1, ks, 16 * ks, b, c, ldc, alpha, beta, s, lds);
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

/* Rows ahead that the packing routines prefetch. */
#define PACK_AHEAD 4

/* dst[0:n] = the first n floats of v, 0 <= n <= 8, without touching dst[n:]. */
__attribute__((target("avx2,fma"))) static inline void store_first(float *dst, __m256 v, int n) {
    if (n == 8) {
        _mm256_storeu_ps(dst, v);
        return;
    }
    __m128 x = _mm256_castps256_ps128(v);
    if (n >= 4) {
        _mm_storeu_ps(dst, x);
        x = _mm256_extractf128_ps(v, 1);
        dst += 4;
        n -= 4;
    }
    if (n >= 2) {
        _mm_storel_pi((__m64 *)dst, x);
        x = _mm_movehl_ps(x, x);
        dst += 2;
        n -= 2;
    }
    if (n) _mm_store_ss(dst, x);
}

/* The first n floats of src (0 <= n <= 8) in a vector, zeros after, reading only src[0:n]. */
__attribute__((target("avx2,fma"))) static inline __m256 load_first(const float *src, int n) {
    if (n == 8) return _mm256_loadu_ps(src);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane);
    return _mm256_maskload_ps(src, mask);
}

/* "cols" layout (k contiguous in src): transpose 8x8 blocks in registers, panel by panel.
 * Panels narrower than 8 (the 6-wide A panels) are stored 8 wide like in pack_rows_avx2. */
__attribute__((target("avx2,fma"))) static void pack_cols_avx2(float *dst, const float *src,
                                                               ptrdiff_t ld, int w, int wv,
                                                               int kc, int np) {
    for (int p = 0; p < np; p++, dst += (ptrdiff_t)w * kc, src += (ptrdiff_t)w * ld) {
        const int pv = clamp_int(wv - p * w, 0, w);
        int k = 0;
        for (; k + 8 <= kc; k += 8) {
            if ((k & 15) == 0) /* each of the w rows is a stream along k: fetch ahead */
                for (int i = 0; i < pv; i++)
                    _mm_prefetch((const char *)(src + (ptrdiff_t)i * ld + k + 64), _MM_HINT_T0);
            for (int i0 = 0; i0 < w; i0 += 8) {
                __m256 r[8];
                for (int ii = 0; ii < 8; ii++)
                    r[ii] = i0 + ii < pv ? _mm256_loadu_ps(src + (ptrdiff_t)(i0 + ii) * ld + k)
                                         : _mm256_setzero_ps();
                transpose8(r);
                const int n = w - i0 < 8 ? w - i0 : 8;
                if (w < 8) /* 8 wide: the spill lands where row k + kk + 1 goes, written next */
                    for (int kk = 0; kk < 8; kk++)
                        if (k + kk + 1 < kc) _mm256_storeu_ps(dst + (k + kk) * w, r[kk]);
                        else store_first(dst + (k + kk) * w, r[kk], n);
                else
                    for (int kk = 0; kk < 8; kk++)
                        store_first(dst + (k + kk) * w + i0, r[kk], n);
            }
        }
        for (; k < kc; k++)
            for (int i = 0; i < w; i++)
                dst[k * w + i] = i < pv ? src[(ptrdiff_t)i * ld + k] : 0.0f;
    }
}

/* "rows" layout (i contiguous in src), k outer: each row of src is read once, contiguously,
 * across all np panels, by vectors (masked at the matrix edge). When every panel is full,
 * the common case, the copies are plain vector moves; a w < 8 panel row (the 6-wide A
 * panels) is then stored 8 wide, the 2 floats past it landing where the next k's row goes
 * (written next), except on the panel's last row. */
__attribute__((target("avx2,fma"))) static void pack_rows_avx2(float *dst, const float *src,
                                                               ptrdiff_t ld, int w, int wv,
                                                               int kc, int np) {
    const int width = wv < np * w ? wv : np * w; /* floats to read per row */
    const int full = wv >= np * w;
    for (int k = 0; k < kc; k++) {
        const float *s = src + (ptrdiff_t)k * ld;
        if (k + PACK_AHEAD < kc) /* rows are ld apart: fetch a few ahead, line by line */
            for (int i = 0; i < width; i += 16)
                _mm_prefetch((const char *)(s + PACK_AHEAD * ld + i), _MM_HINT_T0);
        if (full && w % 8 == 0) {
            for (int p = 0; p < np; p++) {
                float *d = dst + ((ptrdiff_t)p * kc + k) * w;
                for (int i = 0; i < w; i += 8)
                    _mm256_storeu_ps(d + i, _mm256_loadu_ps(s + p * w + i));
            }
        } else if (full && w < 8) {
            for (int p = 0; p < np; p++) {
                float *d = dst + ((ptrdiff_t)p * kc + k) * w;
                const __m256 v = p * w + 8 <= wv ? _mm256_loadu_ps(s + p * w)
                                                 : load_first(s + p * w, w);
                if (k + 1 < kc) _mm256_storeu_ps(d, v);
                else store_first(d, v, w);
            }
        } else {
            for (int p = 0; p < np; p++) {
                float *d = dst + ((ptrdiff_t)p * kc + k) * w;
                for (int i = 0; i < w; i += 8) {
                    const int nv = clamp_int(wv - p * w - i, 0, 8);
                    store_first(d + i, load_first(s + p * w + i, nv), w - i < 8 ? w - i : 8);
                }
            }
        }
    }
}

/* ---- AVX-512 path ---------------------------------------------------------------------------- */

#define A5_MR 12
#define A5_NR 32

#ifdef GL_GEMM_EMULATE_AVX512
/* Test builds only (-DGL_GEMM_EMULATE_AVX512): the AVX-512 kernel's source, unchanged, runs on
 * an AVX2 machine with each 512-bit vector emulated by two 256-bit halves, so the 12x32 tile,
 * its packing and blocking are tested where no AVX-512 CPU is at hand. */
#define AVX512_TARGET "avx2,fma"
typedef struct {
    __m256 lo, hi;
} emu512;
#define EMU __attribute__((target("avx2,fma"))) static inline emu512
EMU emu512_setzero_ps(void) { return (emu512){_mm256_setzero_ps(), _mm256_setzero_ps()}; }
EMU emu512_set1_ps(float x) { return (emu512){_mm256_set1_ps(x), _mm256_set1_ps(x)}; }
EMU emu512_loadu_ps(const float *p) { return (emu512){_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
EMU emu512_load_ps(const float *p) { return (emu512){_mm256_load_ps(p), _mm256_load_ps(p + 8)}; }
EMU emu512_mul_ps(emu512 a, emu512 b) {
    return (emu512){_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)};
}
EMU emu512_add_ps(emu512 a, emu512 b) {
    return (emu512){_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)};
}
EMU emu512_fmadd_ps(emu512 a, emu512 b, emu512 c) {
    return (emu512){_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)};
}
__attribute__((target("avx2,fma"))) static inline void emu512_storeu_ps(float *p, emu512 v) {
    _mm256_storeu_ps(p, v.lo);
    _mm256_storeu_ps(p + 8, v.hi);
}
#undef EMU
#define __m512 emu512
#define _mm512_setzero_ps emu512_setzero_ps
#define _mm512_set1_ps emu512_set1_ps
#define _mm512_loadu_ps emu512_loadu_ps
#define _mm512_load_ps emu512_load_ps
#define _mm512_mul_ps emu512_mul_ps
#define _mm512_add_ps emu512_add_ps
#define _mm512_fmadd_ps emu512_fmadd_ps
#define _mm512_storeu_ps emu512_storeu_ps
#else
#define AVX512_TARGET "avx512f"
#endif

/* Zeroes the 12 x 32 accumulators of a tile and asks for its rows of C. A row's 32 floats
 * span three cache lines unless C is 64-byte aligned (NumPy arrays and malloc'ed buffers are
 * 16-byte aligned); fetching only two of them cost 12% of a 2048 x 768 x 2304 product on Zen 5. */
__attribute__((target(AVX512_TARGET), always_inline)) static inline void start_tile_avx512(const float *c,
                                                                          ptrdiff_t ldc,
                                                                          __m512 *lo,
                                                                          __m512 *hi) {
#pragma GCC unroll 12
    for (int i = 0; i < A5_MR; i++) {
        lo[i] = _mm512_setzero_ps();
        hi[i] = _mm512_setzero_ps();
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + 16), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + 31), _MM_HINT_T0);
    }
}

/* C[12 x 32] = alpha * (lo | hi) + beta * S (see kernel_fn); beta == 0 does not read S. */
__attribute__((target(AVX512_TARGET), always_inline)) static inline void update_tile_avx512(
    float *c, ptrdiff_t ldc, const __m512 *lo, const __m512 *hi, float alpha, float beta,
    const float *s, ptrdiff_t lds) {
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 12
    for (int i = 0; i < A5_MR; i++) {
        float *ci = c + i * ldc;
        __m512 r0 = _mm512_mul_ps(va, lo[i]), r1 = _mm512_mul_ps(va, hi[i]);
        if (beta != 0.0f) {
            const float *si = s + i * lds;
            r0 = _mm512_add_ps(r0, _mm512_mul_ps(vb, _mm512_loadu_ps(si)));
            r1 = _mm512_add_ps(r1, _mm512_mul_ps(vb, _mm512_loadu_ps(si + 16)));
        }
        _mm512_storeu_ps(ci, r0);
        _mm512_storeu_ps(ci + 16, r1);
    }
}

/* 12x32 tile, the AVX2 kernel's structure with 16-float vectors: 24 accumulators, 2 vectors
 * of B and 1 broadcast = 27 of the 32 zmm registers. Per k: 2 loads + 12 broadcasts feed 24
 * FMAs, 12 cycles of Zen 5's two 512-bit FMA pipes; in L1 or L2 it runs at 99% of the FMA
 * peak (235 of 237 GFLOP/s on one core), so what the driver loses is outside it. */
__attribute__((target(AVX512_TARGET))) static void kernel_avx512(int kc, const float *restrict a,
                                                             const float *restrict b,
                                                             float *c, ptrdiff_t ldc,
                                                             float alpha, float beta,
                                                             const float *s, ptrdiff_t lds) {
    __m512 lo[A5_MR], hi[A5_MR];
    start_tile_avx512(c, ldc, lo, hi);
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
    update_tile_avx512(c, ldc, lo, hi, alpha, beta, s, lds);
}

#ifndef GL_GEMM_EMULATE_AVX512
/* In-register transpose of 16 rows of 16 floats: r[i][k] -> r[k][i]. Pairs of rows are
 * interleaved, then 4 x 4 blocks within each 128-bit lane, then the lanes are gathered. */
__attribute__((target("avx512f"))) static inline void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    /* r[4g + j], lane L: column 4L + j of rows 4g .. 4g + 3 */
    for (int g = 0; g < 16; g += 4) {
        r[g] = _mm512_shuffle_ps(t[g], t[g + 2], 0x44);
        r[g + 1] = _mm512_shuffle_ps(t[g], t[g + 2], 0xEE);
        r[g + 2] = _mm512_shuffle_ps(t[g + 1], t[g + 3], 0x44);
        r[g + 3] = _mm512_shuffle_ps(t[g + 1], t[g + 3], 0xEE);
    }
    for (int j = 0; j < 4; j++) {
        const __m512 u0 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88);
        const __m512 u1 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xDD);
        const __m512 u2 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
        const __m512 u3 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xDD);
        t[j] = _mm512_shuffle_f32x4(u0, u2, 0x88);
        t[8 + j] = _mm512_shuffle_f32x4(u0, u2, 0xDD);
        t[4 + j] = _mm512_shuffle_f32x4(u1, u3, 0x88);
        t[12 + j] = _mm512_shuffle_f32x4(u1, u3, 0xDD);
    }
    for (int i = 0; i < 16; i++) r[i] = t[i];
}

static inline __mmask16 first_lanes(int n) { return (__mmask16)((1u << n) - 1); }

/* Stores n (<= 16) floats of v at dst. A row narrower than 16 (the 12-wide A panels) is
 * stored 16 wide when more of the panel follows it (spill = 1): the 4 extra floats land where
 * the next row goes, which is written after this one. */
__attribute__((target("avx512f"))) static inline void store_panel_row(float *dst, __m512 v, int n,
                                                                     int spill) {
    if (n == 16 || spill) _mm512_storeu_ps(dst, v);
    else _mm512_mask_storeu_ps(dst, first_lanes(n), v);
}

/* "rows" layout (i contiguous in src), k outer, as pack_rows_avx2, 16 floats at a time. */
__attribute__((target("avx512f"))) static void pack_rows_avx512(float *dst, const float *src,
                                                                ptrdiff_t ld, int w, int wv,
                                                                int kc, int np) {
    const int width = wv < np * w ? wv : np * w; /* floats to read per row */
    for (int k = 0; k < kc; k++) {
        const float *s = src + (ptrdiff_t)k * ld;
        if (k + PACK_AHEAD < kc)
            for (int i = 0; i < width; i += 16)
                _mm_prefetch((const char *)(s + PACK_AHEAD * ld + i), _MM_HINT_T0);
        for (int p = 0; p < np; p++) {
            float *d = dst + ((ptrdiff_t)p * kc + k) * w;
            for (int i = 0; i < w; i += 16) {
                const int nv = clamp_int(width - p * w - i, 0, 16), n = min_int(16, w - i);
                const __m512 v = nv == 16 ? _mm512_loadu_ps(s + p * w + i)
                                          : _mm512_maskz_loadu_ps(first_lanes(nv), s + p * w + i);
                store_panel_row(d + i, v, n, k + 1 < kc);
            }
        }
    }
}

/* "cols" layout (k contiguous in src): 16 x 16 blocks transposed in registers. */
__attribute__((target("avx512f"))) static void pack_cols_avx512(float *dst, const float *src,
                                                                ptrdiff_t ld, int w, int wv,
                                                                int kc, int np) {
    for (int p = 0; p < np; p++, dst += (ptrdiff_t)w * kc, src += (ptrdiff_t)w * ld) {
        const int pv = clamp_int(wv - p * w, 0, w);
        int k = 0;
        for (; k + 16 <= kc; k += 16) {
            for (int i = 0; i < pv; i++) /* each of the w rows is a stream along k */
                _mm_prefetch((const char *)(src + (ptrdiff_t)i * ld + k + 64), _MM_HINT_T0);
            for (int i0 = 0; i0 < w; i0 += 16) {
                __m512 r[16];
                for (int ii = 0; ii < 16; ii++)
                    r[ii] = i0 + ii < pv ? _mm512_loadu_ps(src + (ptrdiff_t)(i0 + ii) * ld + k)
                                         : _mm512_setzero_ps();
                transpose16(r);
                const int n = min_int(16, w - i0);
                for (int kk = 0; kk < 16; kk++)
                    store_panel_row(dst + (ptrdiff_t)(k + kk) * w + i0, r[kk], n,
                                    i0 + 16 >= w && k + kk + 1 < kc);
            }
        }
        for (; k < kc; k++)
            for (int i = 0; i < w; i++)
                dst[(ptrdiff_t)k * w + i] = i < pv ? src[(ptrdiff_t)i * ld + k] : 0.0f;
    }
}
#define PACK_ROWS_AVX512 pack_rows_avx512
#define PACK_COLS_AVX512 pack_cols_avx512
/* ---- bfloat16 path (AVX512-BF16), float32 accumulation ---------------------------------------
 *
 * gl_gemm_set_precision("bfloat16"): the packers round A and B to bfloat16 (8 bits of mantissa,
 * round to nearest even) as they pack them, two consecutive k in one 32-bit unit, and the
 * micro-kernel multiplies pairs with VDPBF16PS, which adds both products of a pair to a float32
 * accumulator: 32 multiply-adds per instruction instead of 16. Everything stored stays float32
 * -- C, the caller's A and B (master weights, activations, gradients) -- only the packed copies
 * are rounded. The packed layout is the float32 one with k-pairs in place of k: a w-wide panel
 * of a KC slice holds ceil(kc/2) rows of w units (pair (k, k+1) of element i: low half k), at
 * the same place as a float32 panel (panel p at p * w * kc floats; the second half is unused). */
#define BF16_TARGET "avx512f,avx512bw,avx512bf16"

/* 12x32 tile: a holds ceil(kc/2) groups of 12 pairs, b ceil(kc/2) groups of 32 pairs. Per pair:
 * 2 loads + 12 broadcasts feed 24 VDPBF16PS, each 16 x 2 multiply-adds. */
__attribute__((target(BF16_TARGET))) static void kernel_bf16(int kc, const float *restrict a,
                                                             const float *restrict b,
                                                             float *c, ptrdiff_t ldc,
                                                             float alpha, float beta,
                                                             const float *s, ptrdiff_t lds) {
    __m512 lo[A5_MR], hi[A5_MR];
    start_tile_avx512(c, ldc, lo, hi);
    const int pairs = (kc + 1) / 2;
#pragma GCC unroll 2
    for (int p = 0; p < pairs; p++) {
        const __m512bh b0 = (__m512bh)_mm512_load_ps(b), b1 = (__m512bh)_mm512_load_ps(b + 16);
#pragma GCC unroll 12
        for (int i = 0; i < A5_MR; i++) { /* the pair's 32 bits, broadcast as they are */
            const __m512bh ai = (__m512bh)_mm512_set1_ps(a[i]);
            lo[i] = _mm512_dpbf16_ps(lo[i], ai, b0);
            hi[i] = _mm512_dpbf16_ps(hi[i], ai, b1);
        }
        a += A5_MR;
        b += A5_NR;
    }
    update_tile_avx512(c, ldc, lo, hi, alpha, beta, s, lds);
}

/* Two vectors of 16 floats rounded to bfloat16 and interleaved: unit j = (x[j], y[j]). */
__attribute__((target(BF16_TARGET))) static inline __m512 pair_rows_bf16(__m512 x, __m512 y) {
    const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10,
                                                25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3,
                                                18, 2, 17, 1, 16, 0);
    const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(y, x); /* x in words 0-15, y in 16-31 */
    return (__m512)_mm512_permutexvar_epi16(interleave, both);
}

/* 32 consecutive floats rounded to bfloat16, as 16 units of (x[2j], x[2j + 1]). */
__attribute__((target(BF16_TARGET))) static inline __m512 pair_run_bf16(__m512 lo16,
                                                                       __m512 hi16) {
    return (__m512)_mm512_cvtne2ps_pbh(hi16, lo16);
}

/* "rows" layout (element (k, i) at src[k * ld + i]): rows k and k + 1 paired, k outer. */
__attribute__((target(BF16_TARGET))) static void pack_rows_bf16(float *dst, const float *src,
                                                                ptrdiff_t ld, int w, int wv,
                                                                int kc, int np) {
    const int width = wv < np * w ? wv : np * w, pairs = (kc + 1) / 2;
    for (int q = 0; q < pairs; q++) {
        const float *s0 = src + (ptrdiff_t)(2 * q) * ld, *s1 = s0 + ld;
        const int second = 2 * q + 1 < kc; /* an odd kc pairs the last row with zeros */
        if (2 * q + 2 + PACK_AHEAD < kc)
            for (int i = 0; i < width; i += 16) {
                _mm_prefetch((const char *)(s0 + PACK_AHEAD * ld + i), _MM_HINT_T0);
                _mm_prefetch((const char *)(s1 + PACK_AHEAD * ld + i), _MM_HINT_T0);
            }
        for (int p = 0; p < np; p++) {
            float *d = dst + (ptrdiff_t)p * w * kc + (ptrdiff_t)q * w;
            for (int i = 0; i < w; i += 16) {
                const int nv = clamp_int(width - p * w - i, 0, 16), n = min_int(16, w - i);
                const __mmask16 m = first_lanes(nv);
                const __m512 x = _mm512_maskz_loadu_ps(m, s0 + p * w + i);
                const __m512 y = second ? _mm512_maskz_loadu_ps(m, s1 + p * w + i)
                                        : _mm512_setzero_ps();
                store_panel_row(d + i, pair_rows_bf16(x, y), n, q + 1 < pairs);
            }
        }
    }
}

/* "cols" layout (element (k, i) at src[i * ld + k], k contiguous): 32 k of 16 rows rounded to
 * 16 x 16 units and transposed in registers (the units move as floats would). */
__attribute__((target(BF16_TARGET))) static void pack_cols_bf16(float *dst, const float *src,
                                                                ptrdiff_t ld, int w, int wv,
                                                                int kc, int np) {
    const int pairs = (kc + 1) / 2;
    for (int p = 0; p < np; p++, dst += (ptrdiff_t)w * kc, src += (ptrdiff_t)w * ld) {
        const int pv = clamp_int(wv - p * w, 0, w);
        for (int k = 0; k < kc; k += 32) {
            const int nk = min_int(32, kc - k), q0 = k / 2, nq = (nk + 1) / 2;
            const __mmask16 m0 = first_lanes(min_int(16, nk)), m1 = first_lanes(nk > 16 ? nk - 16 : 0);
            for (int i = 0; i < pv; i++)
                _mm_prefetch((const char *)(src + (ptrdiff_t)i * ld + k + 64), _MM_HINT_T0);
            for (int i0 = 0; i0 < w; i0 += 16) {
                __m512 r[16];
                for (int ii = 0; ii < 16; ii++) {
                    const float *s = src + (ptrdiff_t)(i0 + ii) * ld + k;
                    r[ii] = i0 + ii < pv ? pair_run_bf16(_mm512_maskz_loadu_ps(m0, s),
                                                         _mm512_maskz_loadu_ps(m1, s + 16))
                                         : _mm512_setzero_ps();
                }
                transpose16(r);
                const int n = min_int(16, w - i0);
                for (int q = 0; q < nq; q++)
                    store_panel_row(dst + (ptrdiff_t)(q0 + q) * w + i0, r[q], n,
                                    i0 + 16 >= w && q0 + q + 1 < pairs);
            }
        }
    }
}
#define HAVE_BF16_PATH 1

/* ---- bfloat16 path on AMX tiles (Intel Sapphire Rapids and later) -----------------------------
 *
 * The same bfloat16 products on the Advanced Matrix Extensions: eight tile registers of 16 rows
 * x 64 bytes, and TDPBF16PS, which multiplies a 16 x 32 bfloat16 tile of A by a 32 x 16 one of
 * B (16 rows of 16 k-pairs) into a 16 x 16 float32 tile of C -- 16384 multiply-adds in one
 * instruction, some eight times what the AVX-512 FMA pipes do in the same time. A 32 x 32 tile
 * of C lives in tiles 0-3 (rows 0-15 / 16-31 x columns 0-15 / 16-31), A's two halves in 4-5,
 * B's in 6-7: per 32 k, four tile loads feed four TDPBF16PS.
 *
 * Operands are rounded to bfloat16 as they are packed, as on the AVX512-BF16 path; the sums
 * are float32 but grouped differently by the hardware, so the two paths agree to float32
 * rounding, not bit for bit (each tested against float64). B keeps the AVX512-BF16 layout
 * (rows of 32 k-pair units; a B tile is 16 such rows, 128 bytes apart), padded with zero
 * rows to whole 32-k chunks. A is packed as the tiles load it: per 32-k chunk, rows 0-15 then
 * 16-31, 32 bfloat16 (64 bytes) a row. Both fit a
 * panel's float32 space (w * kc floats) when the slice is at least 16 deep (kc >= 16); a
 * product whose last KC slice is shallower takes the AVX512-BF16 path (product_isa).
 *
 * Linux hands out the tile registers only to a process that asks (arch_prctl), once; each
 * thread loads the tile configuration as it starts its share of a product and releases the
 * tiles after it (amx_begin, amx_end), so no other code's configuration is ever assumed. */
#if defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#define AMX_TARGET "avx512f,avx512bw,avx512bf16,amx-tile,amx-bf16"
#define AMX_MR 32
#define AMX_NR 32
#define AMX_CHUNK 32 /* k per TDPBF16PS */

/* The tile configuration (palette 1): every tile 16 rows of 64 bytes. */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_config;

/* A constant in memory, not built on the stack: GCC 12's _tile_loadconfig tells the compiler
 * it reads 8 bytes, so stores to the rest of a local configuration were dropped as dead. */
static const _Alignas(64) amx_config amx_tiles16x64 = {
    .palette = 1,
    .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
    .rows = {16, 16, 16, 16, 16, 16, 16, 16}};

__attribute__((target(AMX_TARGET))) static void amx_begin(void) {
    _tile_loadconfig(&amx_tiles16x64);
}

__attribute__((target(AMX_TARGET))) static void amx_end(void) { _tile_release(); }

/* 32x32 tile: a holds ceil(kc/32) chunks of two 16 x 32 bfloat16 tiles (2 KB), b ceil(kc/32)
 * chunks of 16 rows of 32 k-pair units (2 KB). alpha == 1 with beta 0 or 1 -- every call of a
 * training step -- works in the tiles alone: C starts from S (or 0), and the sums are stored
 * straight into C; other alpha and beta go through a buffer. */
__attribute__((target(AMX_TARGET))) static void kernel_amx(int kc, const float *restrict a,
                                                           const float *restrict b, float *c,
                                                           ptrdiff_t ldc, float alpha, float beta,
                                                           const float *s, ptrdiff_t lds) {
    const int direct = alpha == 1.0f && (beta == 0.0f || beta == 1.0f);
    if (direct && beta == 1.0f) {
        const size_t stride = (size_t)lds * sizeof(float); /* 0 for a bias row */
        _tile_loadd(0, s, stride);
        _tile_loadd(1, s + 16, stride);
        _tile_loadd(2, s + 16 * lds, stride);
        _tile_loadd(3, s + 16 * lds + 16, stride);
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }
    const char *pa = (const char *)a, *pb = (const char *)b;
    for (int k = 0; k < kc; k += AMX_CHUNK, pa += 2048, pb += 2048) {
        _tile_loadd(4, pa, 64);
        _tile_loadd(5, pa + 1024, 64);
        _tile_loadd(6, pb, 128);
        _tile_loadd(7, pb + 64, 128);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    if (direct) {
        const size_t stride = (size_t)ldc * sizeof(float);
        _tile_stored(0, c, stride);
        _tile_stored(1, c + 16, stride);
        _tile_stored(2, c + 16 * ldc, stride);
        _tile_stored(3, c + 16 * ldc + 16, stride);
        return;
    }
    _Alignas(ALIGN) float acc[AMX_MR * AMX_NR];
    _tile_stored(0, acc, AMX_NR * sizeof(float));
    _tile_stored(1, acc + 16, AMX_NR * sizeof(float));
    _tile_stored(2, acc + 16 * AMX_NR, AMX_NR * sizeof(float));
    _tile_stored(3, acc + 16 * AMX_NR + 16, AMX_NR * sizeof(float));
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (int i = 0; i < AMX_MR; i++)
        for (int j = 0; j < AMX_NR; j += 16) {
            __m512 r = _mm512_mul_ps(va, _mm512_load_ps(acc + i * AMX_NR + j));
            if (beta != 0.0f)
                r = _mm512_add_ps(r, _mm512_mul_ps(vb, _mm512_loadu_ps(s + i * lds + j)));
            _mm512_storeu_ps(c + i * ldc + j, r);
        }
}

/* A, "cols" layout (element (k, i) at src[i * ld + k], k contiguous): each row's 32 k of a
 * chunk rounded to bfloat16 in place -- a row of the tile. Rows past wv and k past kc: 0. */
__attribute__((target(AMX_TARGET))) static void pack_a_amx_cols(float *dst, const float *src,
                                                                ptrdiff_t ld, int w, int wv,
                                                                int kc, int np) {
    for (int p = 0; p < np; p++, dst += (ptrdiff_t)w * kc, src += (ptrdiff_t)w * ld) {
        const int pv = clamp_int(wv - p * w, 0, w);
        uint16_t *d = (uint16_t *)dst;
        for (int k = 0; k < kc; k += AMX_CHUNK, d += AMX_MR * AMX_CHUNK) {
            const int nk = min_int(AMX_CHUNK, kc - k);
            const __mmask16 m0 = first_lanes(min_int(16, nk)), m1 = first_lanes(nk > 16 ? nk - 16 : 0);
            for (int i = 0; i < AMX_MR; i++) {
                const float *s = src + (ptrdiff_t)i * ld + k;
                const __m512 v = i < pv ? pair_run_bf16(_mm512_maskz_loadu_ps(m0, s),
                                                        _mm512_maskz_loadu_ps(m1, s + 16))
                                        : _mm512_setzero_ps();
                if (i < pv && k + 2 * AMX_CHUNK <= kc) /* the row's next chunk */
                    _mm_prefetch((const char *)(s + 2 * AMX_CHUNK), _MM_HINT_T0);
                _mm512_store_ps((float *)(d + i * AMX_CHUNK), v);
            }
        }
    }
}

/* A, "rows" layout (element (k, i) at src[k * ld + i]: a transposed A): rows k and k + 1 of
 * 16 columns rounded and paired into 16 units (pair_rows_bf16), 16 pairs of a chunk, then the
 * 16 x 16 units transposed in registers -- one transpose per chunk, on data already halved
 * (two float transposes and then the rounding cost 1.5x as much: benchmarks/bench_pack.c). */
__attribute__((target(AMX_TARGET))) static void pack_a_amx_rows(float *dst, const float *src,
                                                                ptrdiff_t ld, int w, int wv,
                                                                int kc, int np) {
    for (int p = 0; p < np; p++, dst += (ptrdiff_t)w * kc, src += w) {
        const int pv = clamp_int(wv - p * w, 0, w);
        uint16_t *d = (uint16_t *)dst;
        for (int k = 0; k < kc; k += AMX_CHUNK, d += AMX_MR * AMX_CHUNK)
            for (int i0 = 0; i0 < AMX_MR; i0 += 16) {
                const __mmask16 m = first_lanes(clamp_int(pv - i0, 0, 16));
                __m512 u[16]; /* u[q]: k + 2q and k + 2q + 1 of rows i0 .. i0 + 15 */
                for (int q = 0; q < 16; q++) {
                    const int k0 = k + 2 * q;
                    const float *s = src + (ptrdiff_t)k0 * ld + i0;
                    const __m512 x = k0 < kc ? _mm512_maskz_loadu_ps(m, s) : _mm512_setzero_ps();
                    const __m512 y = k0 + 1 < kc ? _mm512_maskz_loadu_ps(m, s + ld)
                                                 : _mm512_setzero_ps();
                    u[q] = pair_rows_bf16(x, y);
                }
                transpose16(u);
                for (int ii = 0; ii < 16; ii++)
                    _mm512_store_ps((float *)(d + (i0 + ii) * AMX_CHUNK), u[ii]);
            }
    }
}

/* B: the AVX512-BF16 panels, then zero k-pair rows up to a whole chunk (16 rows). */
static void amx_zero_tail(float *dst, int w, int kc, int np) {
    const int pairs = (kc + 1) / 2, rows = ceil_div(kc, AMX_CHUNK) * (AMX_CHUNK / 2);
    for (int p = 0; p < np; p++)
        memset(dst + (ptrdiff_t)p * w * kc + (ptrdiff_t)pairs * w, 0,
               sizeof(float) * (size_t)(rows - pairs) * w);
}

static void pack_b_amx_rows(float *dst, const float *src, ptrdiff_t ld, int w, int wv, int kc,
                            int np) {
    pack_rows_bf16(dst, src, ld, w, wv, kc, np);
    amx_zero_tail(dst, w, kc, np);
}

static void pack_b_amx_cols(float *dst, const float *src, ptrdiff_t ld, int w, int wv, int kc,
                            int np) {
    pack_cols_bf16(dst, src, ld, w, wv, kc, np);
    amx_zero_tail(dst, w, kc, np);
}

/* Whether the CPU has AMX-BF16 and Linux lets this process use the tiles (asked once). */
static int amx_usable(void) {
    static int state; /* 0: not asked yet, 1: usable, -1: not */
    if (state == 0) {
        unsigned eax, ebx, ecx, edx;
        const int cpu = __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) &&
                        (edx & (1u << 22)) && (edx & (1u << 24)); /* AMX-BF16, AMX-TILE */
        /* ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA */
        state = cpu && syscall(SYS_arch_prctl, 0x1023, 18) == 0 ? 1 : -1;
    }
    return state > 0;
}
#define HAVE_AMX_PATH 1
#endif /* __linux__ */

#else
#define PACK_ROWS_AVX512 pack_rows_avx2
#define PACK_COLS_AVX512 pack_cols_avx2
#endif

#endif /* GL_X86 */

/* ---- instruction-set table and dispatch ------------------------------------------------------ */

enum { ISA_PORTABLE, ISA_AVX2, ISA_AVX512, ISA_COUNT };

/* Block sizes. AVX2 (Zen 3: 32 KB L1d, 512 KB L2): B micro-panel 16 x 384 floats = 24 KB in
 * L1, A block 144 x 384 = 216 KB in L2, B panel 384 x 4096 = 6 MB in L3 (KC 384 measured a
 * few % faster than 256 on Zen 3: C is loaded and stored half as often).
 * AVX-512 (Zen 5: 48 KB L1d, 1 MB L2): KC 512, A block 240 x 512 = 480 KB in L2, B
 * micro-panel 32 x 512 = 64 KB, streamed from L2 at full speed. On one core KC 256 (the B
 * micro-panel in L1) was 2% faster across the GPT shapes, but with two threads sharing L3 and
 * memory, loading and storing C half as often wins (benchmarks/ab_builds.py against KC 256:
 * --step small B/A 0.966, 0.967, 0.960, --step gpt-mini 0.929; --gemm over 35 of bench_gemm's
 * 36 shapes: geometric mean 0.975, 0.895-1.086; one thread: --step small 0.999). */
static const isa_desc isa_table[ISA_COUNT] = {
    {"portable", P_MR, P_NR, 128, 256, 4096, kernel_portable, pack_rows_portable,
     pack_cols_portable},
#if GL_X86
    {"avx2", A2_MR, A2_NR, 144, 384, 4096, kernel_avx2, pack_rows_avx2, pack_cols_avx2,
     kernel_avx2_in_place},
    {"avx512", A5_MR, A5_NR, 240, 512, 4096, kernel_avx512, PACK_ROWS_AVX512, PACK_COLS_AVX512},
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
#ifdef GL_GEMM_EMULATE_AVX512
    if (isa == ISA_AVX512) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    if (isa == ISA_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
               __builtin_cpu_supports("fma");
#endif
#endif
    return 0;
}

#ifdef HAVE_BF16_PATH
/* The bfloat16 path: the AVX-512 tile and blocking, with KC counted in floats as everywhere
 * (512 floats = 256 pairs: the B micro-panel is 32 KB in L1, as in float32 with KC 256). */
static const isa_desc bf16_desc = {"avx512bf16", A5_MR, A5_NR, 240, 512, 4096, kernel_bf16,
                                   pack_rows_bf16, pack_cols_bf16};
#endif
#ifdef HAVE_AMX_PATH
/* The bfloat16 path on AMX tiles: KC 1024 k (a 32-row panel of A and a micro-panel of B are
 * 64 KB each), MC 64: work items of two tile rows, whose A panels stay in L1 across the
 * panels of B when K is shallow (the small and gpt-mini presets). benchmarks/ab_builds.py
 * --precision bfloat16 --step, B/A on the Xeon of docs/benchmarks.md: KC 1024 against 512
 * small 0.965, gpt-mini 0.972, gpt2 0.942 (KC 256 1.015 / 1.032; 2048 against 1024 1.006 /
 * 0.972 / 1.034); MC 64 against 128 small 0.930, 0.959, gpt-mini 0.966, gpt2 1.022, 1.029
 * (128 against 256: 0.973 / - / 0.970). */
static const isa_desc amx_desc = {"amx", AMX_MR, AMX_NR, 64, 1024, 4096, kernel_amx,
                                  pack_b_amx_rows, pack_b_amx_cols, NULL, pack_a_amx_rows,
                                  pack_a_amx_cols, amx_begin, amx_end};
#endif

static int bf16_supported(void) {
#ifdef HAVE_BF16_PATH
    __builtin_cpu_init();
    return isa_supported(ISA_AVX512) && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512bf16");
#else
    return 0;
#endif
}

static int amx_supported(void) {
#ifdef HAVE_AMX_PATH
    return bf16_supported() && amx_usable();
#else
    return 0;
#endif
}

static int best_isa(void) {
    for (int isa = ISA_COUNT - 1; isa > ISA_PORTABLE; isa--)
        if (isa_supported(isa)) return isa;
    return ISA_PORTABLE;
}

static int current_isa = -1; /* -1: not chosen yet; the one global, as the conventions allow */
static int use_bf16 = 0;      /* gl_gemm_set_precision("bfloat16") */
static int bf16_kernel = -1;  /* gl_gemm_set_bf16_kernel: 1 AMX, 0 AVX512-BF16, -1 not chosen */

/* The float32 path in force. */
static const isa_desc *fp32_isa(void) {
    int isa = current_isa;
    if (isa < 0) current_isa = isa = best_isa();
    return &isa_table[isa];
}

/* Chooses the bfloat16 kernel if nothing has yet: AMX where the CPU and the OS allow, else
 * AVX512-BF16. Called where the precision or the kernel is set or asked for (from Python,
 * under the GIL), so that products, which may run in several threads at once, only read it. */
static void choose_bf16_kernel(void) {
    if (bf16_kernel < 0) bf16_kernel = amx_supported();
}

/* The bfloat16 path in force (after choose_bf16_kernel). */
static const isa_desc *bf16_isa(void) {
#ifdef HAVE_AMX_PATH
    if (bf16_kernel > 0) return &amx_desc;
#endif
#ifdef HAVE_BF16_PATH
    return &bf16_desc;
#else
    return NULL;
#endif
}

/* What the blocked products run: the bfloat16 path when asked for and the AVX-512 path is in
 * force, else the float32 one. */
static const isa_desc *active_isa(void) {
    const isa_desc *d = fp32_isa();
    if (use_bf16 && d == &isa_table[ISA_AVX512] && bf16_isa()) return bf16_isa();
    return d;
}

/* The path of one product: AMX needs every KC slice at least 16 deep (see amx_desc), so a
 * product with a shallower last slice takes the AVX512-BF16 path instead. */
static const isa_desc *product_isa(int K) {
    const isa_desc *d = active_isa();
#ifdef HAVE_AMX_PATH
    if (d == &amx_desc && K % d->kc != 0 && K % d->kc < 16) return &bf16_desc;
#else
    (void)K;
#endif
    return d;
}

static int is_bf16(const isa_desc *d) { return d != fp32_isa(); }

const char *gl_gemm_isa(void) { return fp32_isa()->name; }

const char *gl_gemm_precision(void) { return is_bf16(active_isa()) ? "bfloat16" : "float32"; }

const char *gl_gemm_bf16_kernel(void) {
    choose_bf16_kernel();
    const isa_desc *d = bf16_isa();
    return d ? d->name : "none";
}

int gl_gemm_set_bf16_kernel(const char *name) {
    if (strcmp(name, "auto") == 0) bf16_kernel = amx_supported();
    else if (strcmp(name, "amx") == 0 && amx_supported()) bf16_kernel = 1;
    else if (strcmp(name, "avx512bf16") == 0 && bf16_supported()) bf16_kernel = 0;
    else return -1;
    return 0;
}

int gl_gemm_set_precision(const char *name) {
    if (strcmp(name, "float32") == 0) {
        use_bf16 = 0;
        return 0;
    }
    if (strcmp(name, "bfloat16") == 0 && bf16_supported()) {
        choose_bf16_kernel();
        use_bf16 = 1;
        return 0;
    }
    return -1;
}

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

/* ---- buffers --------------------------------------------------------------------------------- */

/* Transparent huge pages: Linux backs memory with 2 MB pages, instead of 4 KB ones, where a
 * program asks for them (madvise) -- on this project's machines the default mode. A pass over
 * gpt2's 124M gradients touches 121K pages of 4 KB, each a TLB miss and a page walk; packing
 * a weight matrix by columns touches a page per row. NumPy asks for huge pages for its large
 * arrays (the optimizer's moments); the model's arenas did not: gpt2's step ran 0.974 of the
 * time with them, small 0.951, gpt-mini 0.980 (docs/benchmarks.md). */
#define HUGE_PAGE ((size_t)2 << 20)

void *gl_alloc(size_t bytes) {
    const size_t align = bytes < HUGE_PAGE ? ALIGN : HUGE_PAGE; /* aligned_alloc: a multiple */
    const size_t rounded = bytes ? (bytes + align - 1) / align * align : ALIGN;
    void *p = aligned_alloc(align, rounded);
#ifdef MADV_HUGEPAGE
    if (p && align == HUGE_PAGE) madvise(p, rounded, MADV_HUGEPAGE); /* only a request */
#endif
    return p;
}

/* ---- packing buffers -------------------------------------------------------------------------- */

/* The calling thread's scratch buffer number `slot` (GL_SCRATCH_SLOTS of them), at least
 * `bytes` long and 64-byte aligned, kept and grown when a larger problem comes: no allocation
 * per call in steady state. Thread-local, so concurrent calls from several threads never
 * share one. NULL if memory runs out. gl_sgemm keeps its packed A in slot 0 and B in slot 1. */
void *gl_thread_scratch(int slot, size_t bytes) {
    static _Thread_local void *buf[GL_SCRATCH_SLOTS];
    static _Thread_local size_t cap[GL_SCRATCH_SLOTS];
    if (cap[slot] < bytes) {
        free(buf[slot]);
        buf[slot] = gl_alloc(bytes);
        cap[slot] = buf[slot] ? bytes : 0;
    }
    return buf[slot];
}

/* Slot 0 or 1 of the scratch as floats. */
static float *thread_buffer(int slot, size_t nfloats) {
    return gl_thread_scratch(slot, nfloats * sizeof(float));
}

/* ---- the blocked driver ---------------------------------------------------------------------- */

/* Micro-panels packed by one work item: rows of A^T / B are then read 8 panels at a time. */
#define PACK_GROUP 8

typedef struct {
    const isa_desc *d;
    int transA, transB, M, N, K;
    float alpha, beta;
    const float *A, *B;
    float *C;
    ptrdiff_t lda, ldb, ldc;
    float *apack; /* packed A, MR-tall micro-panels (gemm_loops: loops_apack_floats) */
    float *bpack; /* B panel: KC x round_up(min(N, NC), NR), NR-wide micro-panels */
    atomic_int *ready; /* gemm_whole only: one flag per packing unit, set once it is packed */
    atomic_int *finished; /* team_barrier's count of arrivals (gemm_whole, gemm_loops) */
    int nth; /* threads planned for (the team may be smaller) */
    const float *bias; /* gl_sgemm_bias: N floats added to every row of C (then beta == 0) */
    int a_in_place; /* gemm_whole reads A where it lies (d->kernel_in_place): nothing packs it */
    int own_b; /* each work item packs its own panels of B (few rows of C: OWN_B_MAX_M) */
    int own_a; /* gemm_whole: each work item packs its own rows of A (OWN_A) */
} gemm_job;

/* Cuts an mt x np grid of tiles (tile rows x column panels) into nmb x nnb near-equal work
 * items. One thread: row blocks of at most MC rows (the A block L2 holds). Several threads: a
 * multiple of nth row blocks, and if that makes fewer than 4 per thread, column ranges too:
 * per_thread items per thread where the panels allow (4 at least per item), so that threads
 * taking items dynamically finish together, even when another process steals part of a core. */
static void plan_items(const isa_desc *d, int mt, int np, int nth, int per_thread, int *nmb,
                       int *nnb) {
    int m = ceil_div(mt, d->mc / d->mr), n = 1;
    if (nth > 1) {
        m = min_int(ceil_div(m, nth) * nth, mt);
        if (m < 4 * nth) n = min_int(ceil_div(per_thread * nth, m), ceil_div(np, 4));
    }
    *nmb = m;
    *nnb = n;
}

/* c = alpha * (A panel x B panel) + beta * s for one MR x NR tile, with the A panel packed at
 * ap or, with a_in_place, read where it lies (ap points into A). */
static inline void run_kernel(const gemm_job *g, int kc, const float *ap, const float *bp,
                              float *c, ptrdiff_t ldc, float alpha, float beta, const float *s,
                              ptrdiff_t lds) {
    const isa_desc *d = g->d;
    if (!g->a_in_place) d->kernel(kc, ap, bp, c, ldc, alpha, beta, s, lds);
    else if (g->transA) d->kernel_in_place(kc, ap, 1, g->lda, bp, c, ldc, alpha, beta, s, lds);
    else d->kernel_in_place(kc, ap, g->lda, 1, bp, c, ldc, alpha, beta, s, lds);
}

/* One tile of C from packed micro-panels; edge tiles go through a buffer so that only the
 * valid part is written, with the same arithmetic as the kernel's store. `bias` (the first KC
 * slice of gl_sgemm_bias, else NULL) takes the place of C in the kernel's store: alpha acc +
 * 1 * bias, the bits of filling C with the bias first, without that pass over C. */
static void tile(const gemm_job *g, const float *ap, const float *bp, int kc, int i, int j,
                 float beta, const float *bias) {
    const isa_desc *d = g->d;
    const int MR = d->mr, NR = d->nr, mv = min_int(MR, g->M - i), nv = min_int(NR, g->N - j);
    float *c = g->C + i * g->ldc + j;
    if (mv == MR && nv == NR) {
        if (bias) run_kernel(g, kc, ap, bp, c, g->ldc, g->alpha, 1.0f, bias + j, 0);
        else run_kernel(g, kc, ap, bp, c, g->ldc, g->alpha, beta, c, g->ldc);
        return;
    }
    _Alignas(ALIGN) float edge[MAX_MR * MAX_NR];
    if (g->a_in_place && mv < MR) { /* the last, short rows: padded with zeros, as packing does */
        _Alignas(ALIGN) float panel[MAX_MR_IN_PLACE * MAX_KC];
        if (g->transA) d->pack_rows(panel, ap, g->lda, MR, mv, kc, 1);
        else d->pack_cols(panel, ap, g->lda, MR, mv, kc, 1);
        d->kernel(kc, panel, bp, edge, NR, 1.0f, 0.0f, NULL, 0);
    } else {
        run_kernel(g, kc, ap, bp, edge, NR, 1.0f, 0.0f, NULL, 0); /* beta 0: no S read */
    }
    for (int ii = 0; ii < mv; ii++) {
        float *ci = c + ii * g->ldc;
        const float *e = edge + ii * NR;
        if (bias)
            for (int jj = 0; jj < nv; jj++) ci[jj] = g->alpha * e[jj] + bias[j + jj];
        else if (beta == 0.0f)
            for (int jj = 0; jj < nv; jj++) ci[jj] = g->alpha * e[jj];
        else
            for (int jj = 0; jj < nv; jj++) ci[jj] = g->alpha * e[jj] + beta * ci[jj];
    }
}

/* Packs n micro-panels of the KC slice at depth pc, kc deep, into dst: of A (b == 0), the
 * MR-tall panels from row `first` of op(A); of B (b == 1), the NR-wide panels from column
 * `first` of op(B). The matrix edge is padded with zeros. */
static void pack_panels(const gemm_job *g, int b, float *dst, int pc, int kc, int first, int n) {
    const isa_desc *d = g->d;
    if (!b) {
        const int wv = min_int(n * d->mr, g->M - first);
        const pack_fn rows = d->pack_a_rows ? d->pack_a_rows : d->pack_rows;
        const pack_fn cols = d->pack_a_cols ? d->pack_a_cols : d->pack_cols;
        if (g->transA) rows(dst, g->A + pc * g->lda + first, g->lda, d->mr, wv, kc, n);
        else cols(dst, g->A + first * g->lda + pc, g->lda, d->mr, wv, kc, n);
    } else {
        const int wv = min_int(n * d->nr, g->N - first);
        if (g->transB) d->pack_cols(dst, g->B + first * g->ldb + pc, g->ldb, d->nr, wv, kc, n);
        else d->pack_rows(dst, g->B + pc * g->ldb + first, g->ldb, d->nr, wv, kc, n);
    }
}

/* A product with few rows of C (at most OWN_B_MAX_M: gpt2's B*T = 256) and more of B than
 * of A to pack -- a weight matrix multiplied by a short batch -- uses each packed float of B
 * for only M / MR tile rows, and B packed by the team (megabytes: 768 x 2304 floats is 7 MB)
 * is written to L3 and read back from there. With own_b, the team packs only A, and each
 * work item, OWN_B_PANELS micro-panels of C's columns over all its rows, packs its own panels
 * of B, slice by slice, into its thread's buffer (L2) and multiplies them by every row at
 * once. Same tiles, same order of k: the bits of the other paths. */
#define OWN_B_MAX_M 256
#define OWN_B_PANELS 4

/* Whether a product should run with own_b: several threads, few rows, more of B than of A
 * to pack (asz, bsz: floats per KC slice or in all), at least two items per thread. */
static int own_b_pays(int M, int np, int nth, size_t asz, size_t bsz) {
    return nth > 1 && M <= OWN_B_MAX_M && bsz > asz && ceil_div(np, OWN_B_PANELS) >= 2 * nth;
}

/* own_b's buffer per thread: OWN_B_PANELS micro-panels, a KC slice deep (or K). */
static size_t own_b_floats(const isa_desc *d, int K) {
    return (size_t)OWN_B_PANELS * d->nr * min_int(d->kc, K);
}

/* gemm_loops' work items per thread where items share rows: the last item a thread takes
 * before a team barrier leaves the other idle for part of its length, twice per KC slice
 * (Zen 5, benchmarks/ab_builds.py --gemm TN 8192 768 2304: 16 against 4 per thread B/A 0.94
 * and 0.88 in two runs, 32 against 16 0.97). */
#define LOOPS_ITEMS 32

/* gemm_loops' work items for an mt x np grid of tiles: nmb x nnb, as plan_items with
 * LOOPS_ITEMS. Returns whether each item has a row block of its own (nnb == 1 for any np), so
 * that items pack their own rows of A. */
static int loops_plan(const isa_desc *d, int mt, int np, int nth, int *nmb, int *nnb) {
    plan_items(d, mt, np, nth, LOOPS_ITEMS, nmb, nnb);
    return nth == 1 || *nmb >= 4 * nth;
}

/* With own rows, each thread's slice of apack: the tallest of nmb items' rows, a KC slice deep
 * (or K, if shallower). */
static size_t own_a_floats(const isa_desc *d, int mt, int nmb, int K) {
    return (size_t)ceil_div(mt, nmb) * d->mr * min_int(d->kc, K);
}

/* Floats of packed A that gemm_loops needs: with own rows, one slice per thread holding the
 * tallest item's rows (an A block for L2); otherwise all of op(A)'s rows, packed once. */
static size_t loops_apack_floats(const isa_desc *d, int M, int K, int nth) {
    const int mt = ceil_div(M, d->mr);
    int nmb, nnb;
    if (!loops_plan(d, mt, 1, nth, &nmb, &nnb)) return (size_t)min_int(d->kc, K) * mt * d->mr;
    return (size_t)nth * own_a_floats(d, mt, nmb, K);
}

/* A barrier spun here instead of in libgomp: a thread done with its share counts itself in
 * `arrived` and spins (yielding the core now and then) until all `team` threads have, for the
 * round-th time (the count only grows: round r waits for r * team arrivals, so one counter
 * serves every barrier of a product). The others are finishing their last work now, but that
 * can outlast libgomp's spin (GOMP_SPINCOUNT, ~20-40 us), after which a waiting thread sleeps
 * and costs a wake-up (~30-50 us on the Zen VMs, 65-113 us on the Intel Xeon of
 * docs/benchmarks.md) -- and a late thread then finds the next region's partner asleep in
 * turn, so short products can fall into a mode where every call pays both. */
static void team_barrier(atomic_int *arrived, int team, int round) {
    atomic_fetch_add_explicit(arrived, 1, memory_order_acq_rel);
    for (int spins = 0; atomic_load_explicit(arrived, memory_order_acquire) < round * team;
         spins++)
        if ((spins & 255) == 255) GL_YIELD();
}

/* The end of a parallel region, spun: the one barrier of gemm_whole. */
static void team_settle(atomic_int *arrived, int team) { team_barrier(arrived, team, 1); }

/* The loops around the micro-kernel, run by every thread of the team (or by the caller alone:
 * the worksharing loops then run all their iterations). For each KC slice the team packs the
 * B panel together and waits for it; then each work item -- a block of tile rows, all the
 * panels -- packs its own rows of A into its thread's slice of apack and multiplies them at
 * once, from L2, while the other thread does the same with its rows (no A pass through L3,
 * no wait between packing A and using it). Where items share rows (few rows, many threads),
 * the team packs A once beside B instead. Packing and work items are handed out dynamically;
 * which thread computes a tile never changes its value, because every tile sums k in the same
 * order, so results are bitwise reproducible for any thread count. The team waits for itself
 * after the packing and after the multiplication of each slice in team_barrier, not in
 * libgomp's barrier, where a thread that waits past its spin sleeps: the small step's two
 * products with K = 2048 (the lm head's dx and dW) slept about 50 times per step. */
static void gemm_loops(const gemm_job *g, int team) {
    const isa_desc *d = g->d;
    const int MR = d->mr, NR = d->nr, M = g->M, N = g->N, K = g->K, mt = ceil_div(M, MR);
#ifdef _OPENMP
    const int thread = omp_get_thread_num();
#else
    const int thread = 0;
#endif
    float *const mine_b = g->own_b ? g->bpack + thread * own_b_floats(d, K) : NULL; /* own_b */
    int round = 0; /* of team_barrier */
    for (int jc = 0; jc < N; jc += d->nc) {
        const int nc = min_int(d->nc, N - jc), np = ceil_div(nc, NR);
        int nmb = 1, nnb = ceil_div(np, OWN_B_PANELS); /* own_b: items of columns */
        const int own_a = !g->own_b && loops_plan(d, mt, np, g->nth, &nmb, &nnb);
        const size_t own_slice = own_a_floats(d, mt, nmb, K);
        for (int pc = 0; pc < K; pc += d->kc) {
            const int kc = min_int(d->kc, K - pc);
            const float beta = pc == 0 ? g->beta : 1.0f, *bias = pc == 0 ? g->bias : NULL;
            /* pack the B panel (unless own_b) and A (if items share rows) in groups of
             * PACK_GROUP panels */
            const int nga = own_a ? 0 : ceil_div(mt, PACK_GROUP);
            const int ngroups = nga + (g->own_b ? 0 : ceil_div(np, PACK_GROUP));
#pragma omp for schedule(dynamic, 1) nowait
            for (int t = 0; t < ngroups; t++) {
                if (t < nga) {
                    const int t0 = t * PACK_GROUP, n = min_int(PACK_GROUP, mt - t0);
                    pack_panels(g, 0, g->apack + (size_t)t0 * MR * kc, pc, kc, t0 * MR, n);
                } else {
                    const int p0 = (t - nga) * PACK_GROUP, n = min_int(PACK_GROUP, np - p0);
                    pack_panels(g, 1, g->bpack + (size_t)p0 * NR * kc, pc, kc, jc + p0 * NR, n);
                }
            }
            team_barrier(g->finished, team, ++round);
            /* multiply: item (b, c) covers tile rows [r0, r1) and panels [p0, p1);
             * panels outside, tile rows inside, so a B micro-panel stays in L1 */
#pragma omp for schedule(dynamic, 1) nowait
            for (int item = 0; item < nmb * nnb; item++) {
                const int b = item / nnb, c = item % nnb;
                const int r0 = mt * b / nmb, r1 = mt * (b + 1) / nmb;
                const int p0 = np * c / nnb, p1 = np * (c + 1) / nnb;
                const float *ap = g->apack + (size_t)r0 * MR * kc; /* row tile r0's panel */
                if (own_a) {
                    float *mine = g->apack + thread * own_slice;
                    pack_panels(g, 0, mine, pc, kc, r0 * MR, r1 - r0);
                    ap = mine;
                }
                const float *bs = g->bpack; /* panel bfirst's */
                int bfirst = 0;
                if (g->own_b) {
                    pack_panels(g, 1, mine_b, pc, kc, jc + p0 * NR, p1 - p0);
                    bs = mine_b;
                    bfirst = p0;
                }
                for (int p = p0; p < p1; p++) {
                    const float *bp = bs + (size_t)(p - bfirst) * NR * kc;
                    for (int r = r0; r < r1; r++)
                        tile(g, ap + (size_t)(r - r0) * MR * kc, bp, kc, r * MR, jc + p * NR,
                             beta, bias);
                }
            }
            team_barrier(g->finished, team, ++round); /* before the panels are packed again */
        }
    }
}

/* ---- short products: everything packed up front, no barrier ---------------------------------- */

/* With two or more threads, a product whose packed A and B fit in WHOLE_FLOATS floats -- or
 * in WHOLE_FLOATS_SMALL_A, A in WHOLE_A_FLOATS of them -- takes gemm_whole instead of
 * gemm_loops. gemm_loops waits twice per KC step for the whole team
 * (packing done, multiplication done), and with sleeping waits each wait costs a wake-up of
 * the other thread (~30 us on the development VM): 10-20% of a 1-2 ms product. Here the team
 * packs every KC slice of A and B at once, flagging each packing unit when it is done, and a
 * work item owns its C tiles across all KC slices, waiting only for the units it reads --
 * which another thread is packing right now -- so nothing waits for a sleeping thread. Each
 * tile still sums the KC slices in order with the same kernel: the bits equal gemm_loops'.
 * Its price is that A, packed up front, is read back from L3, where gemm_loops' items pack
 * their rows into L2 just before using them; with a small A (few rows: gpt2's B*T = 256) a
 * larger B pays too. On the Intel Xeon of docs/benchmarks.md (benchmarks/ab_builds.py --gemm,
 * 4M floats in all against 2M): NT 256 768 2304 0.862, NT 256 768 3072 0.886, NN 256 3072 768
 * 0.873, NN 256 768 2304 0.911, but with A of 3.1M floats NN 2048 1536 384 1.123, NT 2048 384
 * 1536 1.105 -- hence the limit on A. */
#define WHOLE_FLOATS (2 << 20)
#define WHOLE_FLOATS_SMALL_A (4 << 20)
#define WHOLE_A_FLOATS (1 << 20)
#define WHOLE_UNITS 4096
/* gemm_whole reads A in place (no packing of A) when the micro-kernel can and C is at most
 * A_IN_PLACE_MAX_N wide. Packing A costs the same whatever N is, so it weighs most on narrow
 * products; wide ones re-read each tile row of A for many panels, and there six row streams
 * were slower than one packed stream (AVX2, Zen 2, benchmarks/ab_builds.py --gemm, B/A in
 * place against packed: NN 2048x768x192 0.891, NT 2048x192x192 0.917, NN 2048x192x576 0.948,
 * NN 256x768x768 0.884, NN 2048x384x1152 0.994, but NN 256x768x2304 1.055 and 1.040). A
 * transposed A is read as kc rows of six floats, lda apart: one page per row once rows pass
 * 4 KB, more pages than the TLB holds (TN dW products, M K N as in bench_gemm.py: 2048 192 576
 * 0.877, 2048 192 192 0.840, 256 768 768 0.922, 2048 1536 384 1.004, 256 3072 768 2.480),
 * so that case also needs lda <= A_IN_PLACE_MAX_LDT. */
#define A_IN_PLACE_MAX_N 1536
#define A_IN_PLACE_MAX_LDT 1024

static int a_in_place_pays(const gemm_job *g) {
    return g->d->kernel_in_place && g->d->kc <= MAX_KC && g->N <= A_IN_PLACE_MAX_N &&
           (!g->transA || g->lda <= A_IN_PLACE_MAX_LDT);
}

/* Layout of the packed operands: KC slice s of A at apack + s * astride, of B at
 * bpack + s * bstride; within a slice, micro-panels of kc (the slice's depth) floats. Each
 * slice has nga A groups then ngb B groups of PACK_GROUP micro-panels: `units` in all. With
 * own_b, no B groups: thread t's panels at bpack + t * bstride (OWN_B_PANELS of them). */
typedef struct {
    int mt, np, nslices, nga, ngb, units;
    size_t astride, bstride;
} whole_plan;

/* gemm_whole's own_a, the mirror of own_b for a transposed A larger than B (the dW product
 * of a wide layer's output side, x^T dy with x 2048 x 768 and dy 2048 x 192): the team packs
 * B up front, and each work item, a block of tile rows over all columns, packs its own rows
 * of A slice by slice into its thread's buffer -- the blocked loops' own rows, without their
 * two barriers per KC slice -- instead of all of A going up front to L3 and back.
 * benchmarks/omp_regions.py, small preset's step, 2 threads: that product 3.62-3.68 ->
 * 2.79-2.94 ms. Not for a row-major A: the forward products (x W, A = x 2048 x 192) were
 * slower so (1.80-1.84 -> 1.90-1.98 ms). Tile rows per item: enough for two items per
 * thread, at most MC's. */
static int own_a_tiles(const isa_desc *d, int mt, int nth) {
    return clamp_int(ceil_div(mt, 4 * nth), 1, d->mc / d->mr);
}

static whole_plan plan_whole(const gemm_job *g) {
    const isa_desc *d = g->d;
    whole_plan w = {.mt = ceil_div(g->M, d->mr), .np = ceil_div(g->N, d->nr),
                    .nslices = ceil_div(g->K, d->kc)};
    w.nga = g->a_in_place || g->own_a ? 0 : ceil_div(w.mt, PACK_GROUP);
    w.ngb = g->own_b ? 0 : ceil_div(w.np, PACK_GROUP);
    w.units = w.nslices * (w.nga + w.ngb);
    const int kc = min_int(d->kc, g->K); /* every slice but the last is kc deep */
    w.astride = g->a_in_place ? 0
                : g->own_a    ? (size_t)own_a_tiles(d, w.mt, g->nth) * d->mr * kc
                              : (size_t)w.mt * d->mr * kc;
    w.bstride = g->own_b ? own_b_floats(d, g->K) : (size_t)w.np * d->nr * kc;
    return w;
}

/* Spins until packing unit u is done (a thread is packing it now), yielding the core now and
 * then in case that thread is waiting for one. */
static void wait_packed(const gemm_job *g, int u) {
    for (int spins = 0; !atomic_load_explicit(&g->ready[u], memory_order_acquire); spins++)
        if ((spins & 255) == 255) GL_YIELD();
}

static void gemm_whole(const gemm_job *g, int nth) {
    const isa_desc *d = g->d;
    const int MR = d->mr, NR = d->nr, K = g->K;
    const whole_plan w = plan_whole(g);
    const int per_slice = w.nga + w.ngb;
    /* packing units, slice by slice: A groups, then B groups, of PACK_GROUP micro-panels */
#pragma omp for schedule(dynamic, 1) nowait
    for (int u = 0; u < w.units; u++) {
        const int s = u / per_slice, t = u % per_slice;
        const int pc = s * d->kc, kc = min_int(d->kc, K - pc);
        if (t < w.nga) {
            const int t0 = t * PACK_GROUP, n = min_int(PACK_GROUP, w.mt - t0);
            pack_panels(g, 0, g->apack + s * w.astride + (size_t)t0 * MR * kc, pc, kc, t0 * MR,
                        n);
        } else {
            const int p0 = (t - w.nga) * PACK_GROUP, n = min_int(PACK_GROUP, w.np - p0);
            pack_panels(g, 1, g->bpack + s * w.bstride + (size_t)p0 * NR * kc, pc, kc, p0 * NR,
                        n);
        }
        atomic_store_explicit(&g->ready[u], 1, memory_order_release);
    }
    /* multiply: item (b, c) covers tile rows [r0, r1) and panels [p0, p1) for every slice */
    int nmb = 1, nnb = ceil_div(w.np, OWN_B_PANELS);
    if (g->own_a) {
        nmb = ceil_div(w.mt, own_a_tiles(d, w.mt, g->nth));
        nnb = 1;
    } else if (!g->own_b) {
        plan_items(d, w.mt, w.np, nth, 4, &nmb, &nnb);
    }
#ifdef _OPENMP
    const size_t thread = (size_t)omp_get_thread_num();
#else
    const size_t thread = 0;
#endif
    float *const mine = g->own_b ? g->bpack + thread * w.bstride : NULL;   /* own_b's panels */
    float *const mine_a = g->own_a ? g->apack + thread * w.astride : NULL; /* own_a's rows */
#pragma omp for schedule(dynamic, 1) nowait
    for (int item = 0; item < nmb * nnb; item++) {
        const int b = item / nnb, c = item % nnb;
        const int r0 = w.mt * b / nmb, r1 = w.mt * (b + 1) / nmb;
        const int p0 = w.np * c / nnb, p1 = w.np * (c + 1) / nnb;
        for (int s = 0; s < w.nslices; s++) {
            const int kc = min_int(d->kc, K - s * d->kc);
            const float beta = s == 0 ? g->beta : 1.0f, *bias = s == 0 ? g->bias : NULL;
            if (w.nga) /* no A units when A is read in place */
                for (int t = r0 / PACK_GROUP; t <= (r1 - 1) / PACK_GROUP; t++)
                    wait_packed(g, s * per_slice + t);
            const float *as = g->apack + s * w.astride, *bs = g->bpack + s * w.bstride;
            int afirst = 0, bfirst = 0; /* the tile row at as, the panel at bs */
            if (g->own_a) { /* this item's rows of the slice, into its thread's buffer */
                pack_panels(g, 0, mine_a, s * d->kc, kc, r0 * MR, r1 - r0);
                as = mine_a;
                afirst = r0;
            }
            if (g->own_b) { /* this item's panels of the slice, into its thread's buffer */
                pack_panels(g, 1, mine, s * d->kc, kc, p0 * NR, p1 - p0);
                bs = mine;
                bfirst = p0;
            } else {
                for (int t = p0 / PACK_GROUP; t <= (p1 - 1) / PACK_GROUP; t++)
                    wait_packed(g, s * per_slice + w.nga + t);
            }
            for (int p = p0; p < p1; p++)
                for (int r = r0; r < r1; r++) {
                    const float *ap = !g->a_in_place ? as + (size_t)(r - afirst) * MR * kc
                                      : g->transA ? g->A + (size_t)s * d->kc * g->lda + r * MR
                                                  : g->A + (size_t)r * MR * g->lda + s * d->kc;
                    tile(g, ap, bs + (size_t)(p - bfirst) * NR * kc, kc, r * MR, p * NR, beta,
                         bias);
                }
        }
    }
    /* the last items differ in length (Zen 5, benchmarks/ab_builds.py --step small against the
     * loop's own barrier: B/A 0.999 in a calm spell, 0.954 in a slow one) */
    team_settle(g->finished, nth);
}

/* Unblocked loops for tiny products (and K == 0, and if the packing buffers cannot be
 * allocated): no packing, no threads. Row i of C is built in chunks of 64 columns, summing k
 * in order, so the inner j loop vectorises when B is not transposed. */
static void sgemm_small(const gemm_job *g) {
    float acc[64];
    for (int i = 0; i < g->M; i++) {
        float *c = g->C + i * g->ldc;
        for (int j0 = 0; j0 < g->N; j0 += 64) {
            const int nj = min_int(64, g->N - j0);
            for (int j = 0; j < nj; j++) acc[j] = 0.0f;
            for (int k = 0; k < g->K; k++) {
                const float a = g->transA ? g->A[k * g->lda + i] : g->A[i * g->lda + k];
                if (g->transB) {
                    const float *b = g->B + j0 * g->ldb + k;
                    for (int j = 0; j < nj; j++) acc[j] += a * b[j * g->ldb];
                } else {
                    const float *b = g->B + k * g->ldb + j0;
                    for (int j = 0; j < nj; j++) acc[j] += a * b[j];
                }
            }
            float *cj = c + j0;
            if (g->beta == 0.0f)
                for (int j = 0; j < nj; j++) cj[j] = g->alpha * acc[j];
            else
                for (int j = 0; j < nj; j++) cj[j] = g->alpha * acc[j] + g->beta * cj[j];
        }
    }
}

/* Skinny products: at most SKINNY_M rows in C and A not transposed -- the decode step of
 * generation, where M is the batch. Packing B would cost more than multiplying by it, so B is
 * streamed once, straight from memory, and each thread owns a block of columns of C (so the
 * result does not depend on the thread count). No fused multiply-add contraction happens here
 * (ISO C mode), so every kernel gives the same bits. B not transposed (every decode-step
 * product): one kernel per instruction set (skinny.h), picked by the GEMM path in force, each
 * with vectors of its own register width. B transposed: target clones, chosen by CPU feature
 * ("avx2"), not by model: an "arch=haswell" clone is picked only on Intel CPUs, and AMD ones
 * ran the SSE2 baseline (gpt-mini B=8 decoding 1.41 -> 1.19-1.35 s). */
#define SKINNY_M 8
#define SKINNY_COLS 256
#define SKINNY_PREFETCH 16 /* B rows ahead (skinny.h) */
#define SKINNY_KG 8          /* M = 1: B rows per pass (skinny.h; 8 measured ahead of 4) */
#define SKINNY_ROW_COLS 1024 /* M = 1: columns per pass */
/* A skinny product streams B (K x N) once and does little with each float, so it is threaded
 * by the size of B, not by its multiply-adds: from 64K floats (256 KB, some 10 us to stream on
 * one Zen 5 core) a second thread's share of the memory traffic pays for waking it, now that
 * the region ends in team_settle. benchmarks/ab_builds.py --generate small --pause 0.05, 128K
 * against 64K (the small preset's qkv product, 110K floats, then threads): B=1 B/A 0.866,
 * 0.790, and 0.848 back to back; B=8 1.022, 0.837. 256K: B=1 1.385 (slower); 32K: within
 * the noise of 64K. */
#define SKINNY_FLOATS_PER_RUN (64.0 * 1024)

/* c = alpha * acc + beta * c (beta == 0: c is not read), n floats. */
static inline void skinny_store(float *c, const float *acc, int n, float alpha, float beta) {
    if (beta == 0.0f)
        for (int j = 0; j < n; j++) c[j] = alpha * acc[j];
    else
        for (int j = 0; j < n; j++) c[j] = alpha * acc[j] + beta * c[j];
}

/* Rows [i0, i0 + mr) of C over columns [j, j1) (fewer than SKINNY_COLS) in plain C: the last
 * few columns, after the register blocks. */
static void skinny_tail(const gemm_job *g, int i0, int mr, int j, int j1) {
    float acc[SKINNY_COLS];
    const int n = j1 - j;
    for (int i = i0; i < i0 + mr && n > 0; i++) {
        for (int c = 0; c < n; c++) acc[c] = 0.0f;
        for (int k = 0; k < g->K; k++) {
            const float a = g->A[(size_t)i * g->lda + k], *b = g->B + (size_t)k * g->ldb + j;
            for (int c = 0; c < n; c++) acc[c] += a * b[c];
        }
        skinny_store(g->C + (size_t)i * g->ldc + j, acc, n, g->alpha, g->beta);
    }
}

/* C[:, j0:j1] for B not transposed: acc (M, cols) += A[i, k] * B[k, j0:j1], k in order. */
typedef void (*skinny_fn)(const gemm_job *g, int j0, int j1);

#if GL_X86
#define SK_CAT2(a, b) a##b
#define SK_CAT(a, b) SK_CAT2(a, b)
typedef float v16f __attribute__((vector_size(64), aligned(4), may_alias)); /* one zmm */

#define SK_NAME skinny_nn_avx2
#define SK_TARGET "avx2"
#define SK_VEC gl_v8f
#define SK_LANES 8
#define SK_ACC 8
#include "skinny.h"
#undef SK_NAME
#undef SK_TARGET
#undef SK_VEC
#undef SK_LANES
#undef SK_ACC

#ifndef GL_GEMM_EMULATE_AVX512
#define SK_NAME skinny_nn_avx512
#define SK_TARGET "avx512f"
#define SK_VEC v16f
#define SK_LANES 16
#define SK_ACC 16
#include "skinny.h"
#undef SK_NAME
#undef SK_TARGET
#undef SK_VEC
#undef SK_LANES
#undef SK_ACC
#endif
#endif /* GL_X86 */

/* The plain-C skinny product (builds without the x86 kernels; the skinny path is only taken
 * on a SIMD path, so this is a fallback that keeps the dispatch total). */
static void skinny_nn_plain(const gemm_job *g, int j0, int j1) {
    for (int i0 = 0; i0 < g->M; i0 += SKINNY_M)
        for (int j = j0; j < j1; j += SKINNY_COLS)
            skinny_tail(g, i0, min_int(SKINNY_M, g->M - i0), j, min_int(j1, j + SKINNY_COLS));
}

/* The B-not-transposed kernel of the path in force: the AVX-512 one on the AVX-512 and
 * bfloat16 paths (real AVX-512 only: the emulated test build runs the AVX2 one), else AVX2. */
static skinny_fn skinny_nn_for(const isa_desc *d) {
#if GL_X86
#ifndef GL_GEMM_EMULATE_AVX512
    if (d == &isa_table[ISA_AVX512] || is_bf16(d))
        return skinny_nn_avx512;
#endif
    if (strcmp(d->name, "portable") != 0) return skinny_nn_avx2;
#endif
    (void)d;
    return skinny_nn_plain;
}

/* C[:, j0:j1] for B transposed: dot products of rows of A with rows of B, 8 partial sums
 * (lane l takes k = l mod 8) added in a fixed order. */
GL_CLONES static void skinny_nt(const gemm_job *g, int j0, int j1) {
    const int K = g->K, K8 = K & ~7;
    for (int j = j0; j < j1; j++) {
        const float *b = g->B + (size_t)j * g->ldb;
        for (int i = 0; i < g->M; i++) {
            const float *a = g->A + (size_t)i * g->lda;
            float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int k = 0; k < K8; k += 8)
                for (int l = 0; l < 8; l++) s[l] += a[k + l] * b[k + l];
            float t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
            for (int k = K8; k < K; k++) t += a[k] * b[k];
            float *c = g->C + (size_t)i * g->ldc + j;
            *c = g->beta == 0.0f ? g->alpha * t : g->alpha * t + g->beta * *c;
        }
    }
}

/* Each thread takes an equal share of the columns (a multiple of 16, so vectors stay whole),
 * walked in blocks of its kernel's own (skinny_nt: SKINNY_COLS). Equal shares matter: N =
 * 1152 (a qkv product) in fixed blocks of 256 split 3:2 between two threads. */
static void sgemm_skinny(const gemm_job *g, int nth) {
    const skinny_fn nn = skinny_nn_for(g->d);
    atomic_int arrived;
    atomic_init(&arrived, 0);
#pragma omp parallel num_threads(nth) if (nth > 1)
    {
#ifdef _OPENMP
        const int t = omp_get_thread_num(), team = omp_get_num_threads();
#else
        const int t = 0, team = 1;
#endif
        const int share = ceil_div(ceil_div(g->N, team), 16) * 16;
        const int c0 = min_int(g->N, t * share), c1 = min_int(g->N, c0 + share);
        if (!g->transB)
            nn(g, c0, c1);
        else
            for (int j0 = c0; j0 < c1; j0 += SKINNY_COLS)
                skinny_nt(g, j0, min_int(c1, j0 + SKINNY_COLS));
        /* a decode-step product takes 10-100 us, as long as one wake-up (Zen 5, ab_builds.py
         * --generate small --batch 1, with this and SKINNY_FLOATS_PER_RUN at 128K: B/A
         * 0.929-0.932 against the build without it) */
        if (team > 1) team_settle(&arrived, team);
    }
}

/* Products under SMALL_WORK multiply-adds take the unblocked loops; each extra thread needs
 * at least WORK_PER_THREAD of them (~20 us on one core) to pay for waking it. */
#define SMALL_WORK (32 * 32 * 32)
#define WORK_PER_THREAD (1 << 20)

/* The unblocked paths take gl_sgemm_bias's bias the plain way: copied into every row of C,
 * then added with beta = 1 (the bits the blocked paths give). */
static void bias_into_c(gemm_job *g) {
    if (!g->bias) return;
    for (int i = 0; i < g->M; i++) memcpy(g->C + i * g->ldc, g->bias, sizeof(float) * g->N);
    g->beta = 1.0f;
    g->bias = NULL;
}

/* Picks the path of a product: skinny (decode step), unblocked (tiny), gemm_whole (short,
 * several threads) or gemm_loops, and the team size. */
static void sgemm_run(gemm_job g) {
    const int M = g.M, N = g.N, K = g.K, transA = g.transA;
    const isa_desc *d = g.d;
    const double work = (double)M * N * K;
    if (M <= SKINNY_M && !transA && K > 0 && work >= SMALL_WORK &&
        strcmp(d->name, "portable") != 0) {
        int nth = 1;
#ifdef _OPENMP
        if (!omp_in_parallel() && (double)N * K >= SKINNY_FLOATS_PER_RUN)
            nth = omp_get_max_threads();
#endif
        bias_into_c(&g);
        sgemm_skinny(&g, nth);
        return;
    }
    int nth = 1;
#ifdef _OPENMP
    if (!omp_in_parallel() && work >= 2.0 * WORK_PER_THREAD) {
        nth = omp_get_max_threads();
        if (work < (double)nth * WORK_PER_THREAD) nth = (int)(work / WORK_PER_THREAD);
    }
#endif
    g.nth = nth;
    atomic_int ready[WHOLE_UNITS], finished;
    atomic_init(&finished, 0);
    g.finished = &finished;
    int whole = 0;
    const size_t own_b_all = (size_t)nth * own_b_floats(d, K); /* own_b's buffers */
    if (K > 0 && work >= SMALL_WORK) {
        whole_plan w = plan_whole(&g);
        size_t asz = w.nslices * w.astride;
        const size_t bsz = w.nslices * w.bstride;
        whole = nth > 1 && w.units <= WHOLE_UNITS &&
                (asz + bsz <= WHOLE_FLOATS ||
                 (asz <= WHOLE_A_FLOATS && asz + bsz <= WHOLE_FLOATS_SMALL_A));
        g.own_b = own_b_pays(M, w.np, nth, asz, bsz);
        if (g.own_b) { /* gemm_whole packs all of A up front, if it is small */
            whole = asz <= WHOLE_A_FLOATS && w.nslices * w.nga <= WHOLE_UNITS;
            w = plan_whole(&g);
        }
        if (whole && a_in_place_pays(&g)) {
            g.a_in_place = 1;
            w = plan_whole(&g);
            asz = 1; /* unused */
        } else if (whole && transA && !g.own_b && asz > bsz &&
                   ceil_div(w.mt, own_a_tiles(d, w.mt, nth)) >= 2 * nth) {
            g.own_a = 1;
            w = plan_whole(&g);
            asz = (size_t)nth * w.astride;
        }
        if (whole) {
            g.apack = thread_buffer(0, asz);
            g.bpack = thread_buffer(1, g.own_b ? own_b_all : bsz);
            for (int u = 0; u < w.units; u++) atomic_init(&ready[u], 0);
            g.ready = ready;
        } else {
            const int kc = min_int(d->kc, K);
            /* own_b: the team packs all rows of A, slice by slice */
            g.apack = thread_buffer(0, g.own_b ? (size_t)kc * ceil_div(M, d->mr) * d->mr
                                               : loops_apack_floats(d, M, K, nth));
            const size_t bpanel = (size_t)kc * ceil_div(min_int(N, d->nc), d->nr) * d->nr;
            g.bpack = thread_buffer(1, g.own_b ? own_b_all : bpanel);
        }
    }
    if (!g.apack || !g.bpack) { /* small, K == 0, or out of memory */
        bias_into_c(&g);
        sgemm_small(&g);
        return;
    }
    /* A team even of one thread: the worksharing loops inside must bind to this region, not
     * to a caller's enclosing one (gl_sgemm called from inside a parallel loop). */
#pragma omp parallel num_threads(nth) if (nth > 1)
    {
#ifdef _OPENMP
        const int team = omp_get_num_threads();
#else
        const int team = 1;
#endif
        if (d->begin) d->begin();
        if (whole) gemm_whole(&g, team);
        else gemm_loops(&g, team);
        if (d->end) d->end();
    }
}

void gl_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    const gemm_job g = {product_isa(K), transA, transB, M, N, K < 0 ? 0 : K, alpha, beta, A, B,
                        C, lda, ldb, ldc, NULL, NULL, NULL, NULL, 1, NULL, 0, 0, 0};
    sgemm_run(g);
}

void gl_sgemm_bias(int transA, int transB, int M, int N, int K, const float *A, int lda,
                   const float *B, int ldb, const float *bias, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    const gemm_job g = {product_isa(K), transA, transB, M, N, K < 0 ? 0 : K, 1.0f, 0.0f, A, B,
                        C, lda, ldb, ldc, NULL, NULL, NULL, NULL, 1, bias, 0, 0, 0};
    sgemm_run(g);
}

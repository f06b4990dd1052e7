/* Speed of the GEMM's packing routines alone (csrc/gemm.c), in ns per packed float, on the
 * small preset's activation shape: 2048 rows x 192 columns, packed in KC-deep slices and groups
 * of 8 micro-panels the way gl_sgemm packs them. "rows": the rows layout (A^T, and B not
 * transposed); "cols": the cols layout (A, and B transposed). AVX2 path: w = 6 (A micro-panel)
 * and 16 (B), KC 384; AVX-512 path, where the CPU has it: w = 12 and 32, KC 256; the
 * bfloat16 packers where the CPU has AVX512-BF16 (AMX's: KC 1024). x86-64:
 *
 *   gcc -O3 -std=c11 -fopenmp -ffp-contract=off -Icsrc benchmarks/bench_pack.c -o /tmp/bench_pack
 *   /tmp/bench_pack
 *
 * The figures in docs/benchmarks.md (packing) came from this program. */
#include "../csrc/gemm.c"

#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void run(const char *isa, pack_fn rows, pack_fn cols, int w, const float *src, float *dst,
                int K, int M, int KC) {
    const int panels = M / w;
    double best_rows = 1e9, best_cols = 1e9;
    for (int rep = 0; rep < 50; rep++) {
        double t = now();
        for (int pc = 0; pc < K; pc += KC) /* src: K rows of M floats */
            for (int p0 = 0; p0 < panels; p0 += 8) {
                const int n = panels - p0 < 8 ? panels - p0 : 8;
                rows(dst + (size_t)pc * M + (size_t)p0 * w * KC, src + (size_t)pc * M + p0 * w,
                     M, w, n * w, KC, n);
            }
        t = now() - t;
        if (t < best_rows) best_rows = t;
        t = now();
        for (int pc = 0; pc < K; pc += KC) /* src: M rows of K floats */
            for (int p0 = 0; p0 < panels; p0 += 8) {
                const int n = panels - p0 < 8 ? panels - p0 : 8;
                cols(dst + (size_t)pc * M + (size_t)p0 * w * KC, src + (size_t)p0 * w * K + pc,
                     K, w, n * w, KC, n);
            }
        t = now() - t;
        if (t < best_cols) best_cols = t;
    }
    printf("%-7s w = %2d: rows layout %.3f ns/float, cols layout %.3f ns/float\n", isa, w,
           best_rows / ((double)K * M) * 1e9, best_cols / ((double)K * M) * 1e9);
}

int main(void) {
    enum { K = 2048, M = 192 };
    float *src = aligned_alloc(64, sizeof(float) * K * M);
    float *dst = aligned_alloc(64, sizeof(float) * K * M * 2);
    if (!src || !dst) return 1;
    for (int i = 0; i < K * M; i++) src[i] = (float)i * 0.001f;
    run("avx2", pack_rows_avx2, pack_cols_avx2, 6, src, dst, K, M, 384);
    run("avx2", pack_rows_avx2, pack_cols_avx2, 16, src, dst, K, M, 384);
    if (isa_supported(ISA_AVX512)) {
        run("avx512", PACK_ROWS_AVX512, PACK_COLS_AVX512, 12, src, dst, K, M, 256);
        run("avx512", PACK_ROWS_AVX512, PACK_COLS_AVX512, 32, src, dst, K, M, 256);
        run("(avx2)", pack_rows_avx2, pack_cols_avx2, 12, src, dst, K, M, 256);
        run("(avx2)", pack_rows_avx2, pack_cols_avx2, 32, src, dst, K, M, 256);
    }
#ifdef HAVE_AMX_PATH
    if (bf16_supported()) { /* the bfloat16 packers: AMX's A and B (B = AVX512-BF16's + pad) */
        run("bf16", pack_rows_bf16, pack_cols_bf16, 32, src, dst, K, M, 512);
        run("amx A", pack_a_amx_rows, pack_a_amx_cols, 32, src, dst, K, M, 1024);
        run("amx B", pack_b_amx_rows, pack_b_amx_cols, 32, src, dst, K, M, 1024);
    }
#endif
    free(src);
    free(dst);
    return 0;
}

/* Speed of the GEMM's packing routines alone (csrc/gemm.c, AVX2 path), in ns per packed float,
 * on the small preset's activation shape: 2048 rows x 192 columns, packed in KC = 384 slices
 * and groups of 8 micro-panels the way gl_sgemm packs them. "rows": the rows layout
 * (pack_rows_avx2: A^T, and B not transposed); "cols": the cols layout (pack_cols_avx2: A, and
 * B transposed). w = 6 is the A micro-panel width, w = 16 the B one. x86-64 with AVX2 only:
 *
 *   gcc -O3 -std=c11 -fopenmp -ffp-contract=off -Icsrc benchmarks/bench_pack.c -o /tmp/bench_pack
 *   /tmp/bench_pack
 *
 * The figures in docs/benchmarks.md ("Faster packing") came from this program. */
#include "../csrc/gemm.c"

#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    enum { K = 2048, M = 192, KC = 384, REPEAT = 50 };
    float *src = aligned_alloc(64, sizeof(float) * K * M);
    float *dst = aligned_alloc(64, sizeof(float) * K * M * 2);
    if (!src || !dst) return 1;
    for (int i = 0; i < K * M; i++) src[i] = (float)i * 0.001f;
    for (int w = 6; w <= 16; w += 10) {
        const int panels = M / w;
        double best_rows = 1e9, best_cols = 1e9;
        for (int rep = 0; rep < REPEAT; rep++) {
            double t = now();
            for (int pc = 0; pc < K; pc += KC) /* src: K rows of M floats */
                for (int p0 = 0; p0 < panels; p0 += 8) {
                    const int n = panels - p0 < 8 ? panels - p0 : 8;
                    pack_rows_avx2(dst + (size_t)pc * M + (size_t)p0 * w * KC,
                                   src + (size_t)pc * M + p0 * w, M, w, n * w, KC, n);
                }
            t = now() - t;
            if (t < best_rows) best_rows = t;
            t = now();
            for (int pc = 0; pc < K; pc += KC) /* src: M rows of K floats */
                for (int p0 = 0; p0 < panels; p0 += 8) {
                    const int n = panels - p0 < 8 ? panels - p0 : 8;
                    pack_cols_avx2(dst + (size_t)pc * M + (size_t)p0 * w * KC,
                                   src + (size_t)p0 * w * K + pc, K, w, n * w, KC, n);
                }
            t = now() - t;
            if (t < best_cols) best_cols = t;
        }
        printf("w = %2d: rows layout %.3f ns/float, cols layout %.3f ns/float\n", w,
               best_rows / (K * M) * 1e9, best_cols / (K * M) * 1e9);
    }
    free(src);
    free(dst);
    return 0;
}

/* Matrix multiplication: gl_sgemm and its instruction-set dispatch.
 * This first version is the portable path: C loops ordered so the inner loop streams rows,
 * parallel over rows of C. The packed SIMD kernels replace it behind the same API. */
#include "gptlab.h"

#include <string.h>

/* C (M,N) = alpha op(A) op(B) + beta C, row-major; see gptlab.h. */
static void sgemm_portable(int transA, int transB, int M, int N, int K, float alpha,
                           const float *A, int lda, const float *B, int ldb, float beta,
                           float *C, int ldc) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < M; i++) {
        float *c = C + (size_t)i * ldc;
        if (beta == 0.0f) memset(c, 0, sizeof(float) * (size_t)N);
        else if (beta != 1.0f) for (int j = 0; j < N; j++) c[j] *= beta;
        if (!transB) {
            for (int k = 0; k < K; k++) {
                float a = alpha * (transA ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]);
                const float *b = B + (size_t)k * ldb;
                for (int j = 0; j < N; j++) c[j] += a * b[j];
            }
        } else {
            for (int j = 0; j < N; j++) {
                const float *b = B + (size_t)j * ldb;
                float s = 0.0f;
                if (!transA) {
                    const float *a = A + (size_t)i * lda;
                    for (int k = 0; k < K; k++) s += a[k] * b[k];
                } else {
                    for (int k = 0; k < K; k++) s += A[(size_t)k * lda + i] * b[k];
                }
                c[j] += alpha * s;
            }
        }
    }
}

void gl_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    sgemm_portable(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

const char *gl_gemm_isa(void) { return "portable"; }

int gl_gemm_set_isa(const char *name) {
    return (strcmp(name, "portable") == 0 || strcmp(name, "auto") == 0) ? 0 : -1;
}

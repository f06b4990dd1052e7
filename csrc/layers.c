/* The layers of GPT-2 as forward/backward pairs on raw float32 arrays.
 *
 * Read it top to bottom like a textbook: embedding, layernorm, matmul (the affine maps),
 * attention, GELU, residual, and the scalar head of the reward/value models. Every backward
 * ACCUMULATES (+=) into its gradient outputs.
 *
 * Determinism: every sum is taken in a fixed order that does not depend on the number of
 * threads. Work that reduces over rows (dw, db of layernorm/matmul/scalar head, the embedding
 * tables) is split by columns: each thread owns a block of columns and walks all rows in order,
 * so there are no atomics and no cross-thread float reductions.
 */
#include "gptlab.h"

#include <math.h>
#include <string.h>

/* Columns per block when a reduction over rows is split by columns between threads. */
#define COL_BLOCK 64
/* Keys per block in the attention forward pass (scores live on the stack). */
#define KEY_BLOCK 128
/* Below this many elements an elementwise kernel runs on one thread. */
#define PAR_MIN 32768

/* ---- small helpers ---------------------------------------------------------------------- */

/* a . b in float with 8 independent partial sums (vectorizable, fixed order). */
static inline float dotf(const float *restrict a, const float *restrict b, int n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[i + j] * b[i + j];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* a . b accumulated in double (4 partial sums), for row statistics that must be accurate. */
static inline double dotd(const float *restrict a, const float *restrict b, int n) {
    double acc[4] = {0, 0, 0, 0};
    int i = 0;
    for (; i + 4 <= n; i += 4)
        for (int j = 0; j < 4; j++) acc[j] += (double)a[i + j] * (double)b[i + j];
    double s = (acc[0] + acc[2]) + (acc[1] + acc[3]);
    for (; i < n; i++) s += (double)a[i] * (double)b[i];
    return s;
}

/* y += a * x, (n) each. */
static inline void axpyf(float *restrict y, float a, const float *restrict x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

static inline int imin(int a, int b) { return a < b ? a : b; }

/* ---- embedding -------------------------------------------------------------------------- */

/* out[b,t,:] = wte[idx[b,t],:] + wpe[t,:]. idx: (B,T); wte: (V,C); wpe: (maxT,C); out: (B,T,C). */
void gl_embedding_forward(float *out, const int32_t *idx, const float *wte, const float *wpe,
                          int B, int T, int C) {
    ptrdiff_t BT = (ptrdiff_t)B * T;
#pragma omp parallel for schedule(static)
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

/* For each row n of x (N,C): mean = sum x / C, var = sum (x - mean)^2 / C (biased, as
 * PyTorch), rstd = 1/sqrt(var + eps); out = (x - mean) * rstd * w + b. The statistics are
 * accumulated in double, two passes, so float32 stays accurate even for large C or an offset. */
void gl_layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w,
                          const float *b, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *restrict xr = x + (size_t)n * C;
        float *restrict o = out + (size_t)n * C;
        double acc[4] = {0, 0, 0, 0};
        int i = 0;
        for (; i + 4 <= C; i += 4)
            for (int j = 0; j < 4; j++) acc[j] += (double)xr[i + j];
        double s = (acc[0] + acc[2]) + (acc[1] + acc[3]);
        for (; i < C; i++) s += (double)xr[i];
        double m = s / C;
        double vacc[4] = {0, 0, 0, 0};
        i = 0;
        for (; i + 4 <= C; i += 4)
            for (int j = 0; j < 4; j++) {
                double d = (double)xr[i + j] - m;
                vacc[j] += d * d;
            }
        double v = (vacc[0] + vacc[2]) + (vacc[1] + vacc[3]);
        for (; i < C; i++) {
            double d = (double)xr[i] - m;
            v += d * d;
        }
        float mf = (float)m, rs = (float)(1.0 / sqrt(v / C + LN_EPS));
        for (int c = 0; c < C; c++) o[c] = (xr[c] - mf) * rs * w[c] + b[c];
        mean[n] = mf;
        rstd[n] = rs;
    }
}

/* With norm = (x - mean) * rstd and g = dout * w (the gradient reaching norm):
 *   dx += rstd * (g - mean_c(g) - norm * mean_c(g * norm))
 *   dw += sum_n dout * norm,   db += sum_n dout.
 * dx is computed row by row; dw, db by column blocks (rows summed in order, in double). */
void gl_layernorm_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                           const float *w, const float *mean, const float *rstd, int N, int C) {
    int nblk = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel
    {
        /* dx (rows) and dw, db (columns) are independent: no barrier between them */
#pragma omp for schedule(static) nowait
        for (int n = 0; n < N; n++) {
            const float *restrict xr = x + (size_t)n * C;
            const float *restrict d = dout + (size_t)n * C;
            float *restrict g = dx + (size_t)n * C;
            float mf = mean[n], rs = rstd[n];
            double acc_g[4] = {0, 0, 0, 0}, acc_gn[4] = {0, 0, 0, 0};
            int i = 0;
            for (; i + 4 <= C; i += 4)
                for (int j = 0; j < 4; j++) {
                    double gi = (double)d[i + j] * w[i + j];
                    acc_g[j] += gi;
                    acc_gn[j] += gi * ((xr[i + j] - mf) * rs);
                }
            double sg = (acc_g[0] + acc_g[2]) + (acc_g[1] + acc_g[3]);
            double sgn = (acc_gn[0] + acc_gn[2]) + (acc_gn[1] + acc_gn[3]);
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
#pragma omp for schedule(static)
        for (int cb = 0; cb < nblk; cb++) {
            int c0 = cb * COL_BLOCK, nc = imin(COL_BLOCK, C - c0);
            double aw[COL_BLOCK], ab[COL_BLOCK];
            for (int c = 0; c < nc; c++) aw[c] = ab[c] = 0.0;
            for (int n = 0; n < N; n++) {
                const float *restrict xr = x + (size_t)n * C + c0;
                const float *restrict d = dout + (size_t)n * C + c0;
                float mf = mean[n], rs = rstd[n];
                for (int c = 0; c < nc; c++) {
                    aw[c] += (double)d[c] * ((xr[c] - mf) * rs);
                    ab[c] += (double)d[c];
                }
            }
            for (int c = 0; c < nc; c++) {
                dw[c0 + c] += (float)aw[c];
                db[c0 + c] += (float)ab[c];
            }
        }
    }
}

/* ---- matmul (affine map, Conv1D layout) ------------------------------------------------- */

/* out = x @ w + b. x: (N,C); w: (C,OC); b: (OC) or NULL; out: (N,OC).
 * The bias is written first, then gl_sgemm adds x @ w on top (beta = 1). */
void gl_matmul_forward(float *out, const float *x, const float *w, const float *b, int N, int C,
                       int OC) {
    if (N <= 0 || OC <= 0) return;
    float beta = 0.0f;
    if (b) {
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) memcpy(out + (size_t)n * OC, b, sizeof(float) * (size_t)OC);
        beta = 1.0f;
    }
    gl_sgemm(0, 0, N, OC, C, 1.0f, x, C, w, OC, beta, out, OC);
}

/* dx += dout @ w^T: (N,OC) @ (OC,C); dw += x^T @ dout: (C,N) @ (N,OC); db += sum_n dout.
 * dx and db may be NULL (the input needs no gradient; the layer has no bias). */
void gl_matmul_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                        const float *w, int N, int C, int OC) {
    if (dx) gl_sgemm(0, 1, N, C, OC, 1.0f, dout, OC, w, OC, 1.0f, dx, C);
    gl_sgemm(1, 0, C, OC, N, 1.0f, x, C, dout, OC, 1.0f, dw, OC);
    if (!db) return;
    int nblk = (OC + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static)
    for (int cb = 0; cb < nblk; cb++) {
        int c0 = cb * COL_BLOCK, nc = imin(COL_BLOCK, OC - c0);
        double acc[COL_BLOCK];
        for (int c = 0; c < nc; c++) acc[c] = 0.0;
        for (int n = 0; n < N; n++) {
            const float *restrict d = dout + (size_t)n * OC + c0;
            for (int c = 0; c < nc; c++) acc[c] += (double)d[c];
        }
        for (int c = 0; c < nc; c++) db[c0 + c] += (float)acc[c];
    }
}

/* ---- attention -------------------------------------------------------------------------- */

/* Causal self-attention, one (b, h, t) query row at a time, flash style: the (T,T) matrix is
 * never stored. For the query q_t and keys k_0..k_t, scores s_j = q_t . k_j / sqrt(hs) are
 * taken in blocks of KEY_BLOCK; a running maximum m and sum l of exp(s - m) (the "online
 * softmax") let each block rescale the partial output instead of revisiting earlier blocks:
 *   out_t = sum_j exp(s_j - m) v_j / l,   lse_t = m + log(l).
 * qkv: (B,T,3C) rows [q | k | v]; out: (B,T,C); lse: (B,NH,T). */
void gl_attention_forward(float *out, float *lse, const float *qkv, int B, int T, int C, int NH) {
    const int hs = C / NH;
    const size_t C3 = (size_t)3 * C;
    const float scale = 1.0f / sqrtf((float)hs);
    const ptrdiff_t rows = (ptrdiff_t)B * NH * T;
    /* rows are independent; (static, 1) interleaves short (small t) and long rows */
#pragma omp parallel for schedule(static, 1)
    for (ptrdiff_t r = 0; r < rows; r++) {
        const int t = (int)(r % T);
        const int h = (int)((r / T) % NH);
        const size_t b = (size_t)(r / ((ptrdiff_t)T * NH));
        const float *base = qkv + b * T * C3; /* row 0 of sequence b */
        const float *restrict q = base + t * C3 + (size_t)h * hs;
        float *restrict o = out + (b * T + t) * C + (size_t)h * hs;
        float sc[KEY_BLOCK];
        float m = -INFINITY, l = 0.0f;
        for (int i = 0; i < hs; i++) o[i] = 0.0f;
        for (int s0 = 0; s0 <= t; s0 += KEY_BLOCK) {
            const int ns = imin(KEY_BLOCK, t + 1 - s0);
            float bm = -INFINITY;
            for (int j = 0; j < ns; j++) {
                const float *restrict k = base + (size_t)(s0 + j) * C3 + C + (size_t)h * hs;
                sc[j] = dotf(q, k, hs) * scale;
                bm = sc[j] > bm ? sc[j] : bm;
            }
            if (bm > m) { /* new maximum: rescale what was accumulated so far */
                float corr = expf(m - bm);
                l *= corr;
                for (int i = 0; i < hs; i++) o[i] *= corr;
                m = bm;
            }
            for (int j = 0; j < ns; j++) {
                const float *restrict v = base + (size_t)(s0 + j) * C3 + 2 * (size_t)C +
                                          (size_t)h * hs;
                float p = expf(sc[j] - m);
                l += p;
                axpyf(o, p, v, hs);
            }
        }
        const float inv = 1.0f / l;
        for (int i = 0; i < hs; i++) o[i] *= inv;
        lse[r] = m + logf(l);
    }
}

/* Backward of causal attention, recomputing the probabilities from lse:
 *   P_ts = exp(q_t . k_s / sqrt(hs) - lse_t)          for s <= t
 *   D_t = dout_t . out_t  (= sum_s P_ts dout_t . v_s)
 *   dS_ts = P_ts (dout_t . v_s - D_t)                 (softmax backward)
 *   dq_t += sum_s dS_ts k_s / sqrt(hs);  dk_s += sum_t dS_ts q_t / sqrt(hs);
 *   dv_s += sum_t P_ts dout_t.
 * One thread per (b, h): a head only touches its own columns of dqkv, so the threads never
 * write the same element and each sum runs in a fixed order (t ascending, then s ascending).
 * dqkv: (B,T,3C) accumulates; dout, out: (B,T,C); qkv: (B,T,3C); lse: (B,NH,T). */
void gl_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *out,
                           const float *lse, int B, int T, int C, int NH) {
    const int hs = C / NH;
    const size_t C3 = (size_t)3 * C;
    const float scale = 1.0f / sqrtf((float)hs);
    const int pairs = B * NH;
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < pairs; bh++) {
        const size_t b = (size_t)(bh / NH), hoff = (size_t)(bh % NH) * hs;
        const float *base = qkv + b * T * C3;
        float *dbase = dqkv + b * T * C3;
        const float *L = lse + (size_t)bh * T;
        for (int t = 0; t < T; t++) {
            const float *restrict q = base + t * C3 + hoff;
            const float *restrict dot_ = dout + (b * T + t) * C + hoff;
            const float *restrict ot = out + (b * T + t) * C + hoff;
            float *restrict dq = dbase + t * C3 + hoff;
            const float D = dotf(dot_, ot, hs);
            const float lt = L[t];
            for (int s = 0; s <= t; s++) {
                const float *restrict k = base + s * C3 + C + hoff;
                const float *restrict v = base + s * C3 + 2 * (size_t)C + hoff;
                float *restrict dk = dbase + s * C3 + C + hoff;
                float *restrict dv = dbase + s * C3 + 2 * (size_t)C + hoff;
                const float p = expf(dotf(q, k, hs) * scale - lt);
                const float ds = p * (dotf(dot_, v, hs) - D) * scale;
                axpyf(dq, ds, k, hs);
                axpyf(dk, ds, q, hs);
                axpyf(dv, p, dot_, hs);
            }
        }
    }
}

/* ---- GELU ------------------------------------------------------------------------------- */

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_A 0.044715f

/* out = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3). (N) each. */
void gl_gelu_forward(float *out, const float *x, size_t N) {
#pragma omp parallel for schedule(static) if (N >= PAR_MIN)
    for (size_t i = 0; i < N; i++) {
        float xi = x[i];
        float u = GELU_K * (xi + GELU_A * xi * xi * xi);
        out[i] = 0.5f * xi * (1.0f + tanhf(u));
    }
}

/* gelu'(x) = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2);
 * dx += gelu'(x) * dout. */
void gl_gelu_backward(float *dx, const float *x, const float *dout, size_t N) {
#pragma omp parallel for schedule(static) if (N >= PAR_MIN)
    for (size_t i = 0; i < N; i++) {
        float xi = x[i];
        float u = GELU_K * (xi + GELU_A * xi * xi * xi);
        float th = tanhf(u);
        float du = GELU_K * (1.0f + 3.0f * GELU_A * xi * xi);
        float g = 0.5f * (1.0f + th) + 0.5f * xi * (1.0f - th * th) * du;
        dx[i] += g * dout[i];
    }
}

/* ---- residual --------------------------------------------------------------------------- */

/* out = a + b, (N) each. */
void gl_residual_forward(float *out, const float *a, const float *b, size_t N) {
#pragma omp parallel for schedule(static) if (N >= PAR_MIN)
    for (size_t i = 0; i < N; i++) out[i] = a[i] + b[i];
}

/* da += dout; db += dout. */
void gl_residual_backward(float *da, float *db, const float *dout, size_t N) {
#pragma omp parallel for schedule(static) if (N >= PAR_MIN)
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

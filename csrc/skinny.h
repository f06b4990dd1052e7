/* The skinny (decode-step) product C[:, j0:j1] = alpha * A @ B[:, j0:j1] + beta * C for B not
 * transposed and M <= 8 rows, written once and compiled once per instruction set: gemm.c
 * includes this file with
 *   SK_NAME    the function's name,
 *   SK_TARGET  its target attribute ("avx512f", "avx2"),
 *   SK_VEC     a GCC vector type of SK_LANES floats that fills one register of that set,
 *   SK_ACC     how many SK_VEC accumulators a register block may hold: half the registers
 *              (32 zmm / 16 ymm), the rest hold the B vectors, the broadcast a and a product.
 * The vector type must match the set: a 64-byte vector in an AVX2 function fits no register
 * and GCC keeps it on the stack (every multiply-add a load and a store: 1-4 GFLOP/s on Zen 2).
 * Each C element is the plain loop's sum: acc += a * b, k ascending, no fused multiply-add,
 * so every instruction set gives the same bits. */

/* Rows [i0, i0 + mr) of C[:, jb : jb + SK_LANES nv], mr and nv constants: mr * nv vector
 * accumulators stay in registers while k walks all of K; each B row is read once per block.
 * A block reads 32-256 bytes of each B row, rows ldb floats apart, which the hardware
 * prefetchers do not follow: the row SKINNY_PREFETCH ahead is asked for by hand (on Zen 2,
 * gpt-mini B=8 decoding 1.40-1.56 -> 1.06-1.17 s; 8 or 32 rows ahead, or every line of a
 * wide block, did no better). */
__attribute__((target(SK_TARGET), always_inline)) static inline void SK_CAT(SK_NAME, _block)(
    const gemm_job *g, int i0, int jb, const int mr, const int nv) {
    SK_VEC acc[SKINNY_M][8];
    for (int i = 0; i < mr; i++)
        for (int v = 0; v < nv; v++) acc[i][v] = (SK_VEC){0};
    const float *a = g->A + (size_t)i0 * g->lda, *b = g->B + jb;
    for (int k = 0; k < g->K; k++, b += g->ldb) {
        if (k + SKINNY_PREFETCH < g->K) __builtin_prefetch(b + (size_t)SKINNY_PREFETCH * g->ldb);
        SK_VEC bv[8];
        for (int v = 0; v < nv; v++) bv[v] = *(const SK_VEC *)(b + SK_LANES * v);
        for (int i = 0; i < mr; i++) {
            const float ai = a[(size_t)i * g->lda + k];
            for (int v = 0; v < nv; v++) acc[i][v] += ai * bv[v];
        }
    }
    for (int i = 0; i < mr; i++)
        skinny_store(g->C + (size_t)(i0 + i) * g->ldc + jb, (const float *)acc[i],
                     SK_LANES * nv, g->alpha, g->beta);
}

/* Rows [i0, i0 + mr) over columns [j, j1) in blocks as wide as the accumulators allow (a few
 * rows need many independent vectors to hide the latency of the additions), then single
 * vectors; returns the first column left (fewer than SK_LANES remain). */
__attribute__((target(SK_TARGET), always_inline)) static inline int SK_CAT(SK_NAME, _rows)(
    const gemm_job *g, int i0, int j, int j1, const int mr) {
    const int rows = mr <= 1 ? 1 : mr <= 2 ? 2 : mr <= 4 ? 4 : 8; /* mr rounded up to 2^n */
    const int nv = SK_ACC / rows < 8 ? SK_ACC / rows : 8;
    for (; j + SK_LANES * nv <= j1; j += SK_LANES * nv) SK_CAT(SK_NAME, _block)(g, i0, j, mr, nv);
    if (nv > 1)
        for (; j + SK_LANES <= j1; j += SK_LANES) SK_CAT(SK_NAME, _block)(g, i0, j, mr, 1);
    return j;
}

/* M = 1 (one sequence decoding) with B rows a multiple of 4 KB apart (N = 1024, 2048, 3072,
 * 4096, 8192): c[j] = sum_k a[k] B[k, j], SKINNY_KG rows of B at a time, each read as one
 * contiguous run across up to SKINNY_ROW_COLS columns into partial sums in acc (in L1, loaded
 * and stored once per SKINNY_KG rows). The register blocks above read 256 bytes of a row and
 * jump to the next; at such strides every row's lines fall into the same few L1 sets and the
 * prefetched ones are evicted before use, where long runs of a few rows are what the hardware
 * prefetchers follow. On Zen 2, one process alternating the two builds: 1.2-2.3x on K x N =
 * 768 x 3072, 384 x 2048, 384 x 8192, 768 x 4096; at other strides the register blocks were as
 * fast or faster (384 x 1152, 1536 x 384: 0.7-0.8x with this loop), so they keep those. The
 * same sums in the same order: acc += a[k] B[k, j], k ascending. */
__attribute__((target(SK_TARGET))) static void SK_CAT(SK_NAME, _row)(const gemm_job *g, int j0,
                                                                      int j1) {
    float acc[SKINNY_ROW_COLS];
    const float *a = g->A;
    const size_t ldb = (size_t)g->ldb;
    for (int c0 = j0; c0 < j1; c0 += SKINNY_ROW_COLS) {
        const int n = min_int(SKINNY_ROW_COLS, j1 - c0), nv = n / SK_LANES * SK_LANES;
        for (int j = 0; j < n; j++) acc[j] = 0.0f;
        for (int k0 = 0; k0 < g->K; k0 += SKINNY_KG) {
            const int kn = min_int(SKINNY_KG, g->K - k0);
            const float *b = g->B + (size_t)k0 * ldb + c0;
            int j = 0; /* columns below j are done for these rows */
            if (kn == SKINNY_KG) {
                float ak[SKINNY_KG];
                for (int r = 0; r < SKINNY_KG; r++) ak[r] = a[k0 + r];
                for (; j < nv; j += SK_LANES) {
                    SK_VEC s = *(const SK_VEC *)(acc + j);
                    for (int r = 0; r < SKINNY_KG; r++)
                        s += ak[r] * *(const SK_VEC *)(b + r * ldb + j);
                    *(SK_VEC *)(acc + j) = s;
                }
            }
            for (int r = 0; r < kn; r++) /* the last rows of K, or the last columns */
                for (int jj = j; jj < n; jj++) acc[jj] += a[k0 + r] * b[r * ldb + jj];
        }
        skinny_store(g->C + c0, acc, n, g->alpha, g->beta);
    }
}

/* Row blocks of up to SKINNY_M rows, each with mr a constant (one copy of the loops per row
 * count), then the last columns of each row in plain C. */
__attribute__((target(SK_TARGET))) static void SK_NAME(const gemm_job *g, int j0, int j1) {
    if (g->M == 1 && g->ldb % 1024 == 0) { /* rows a multiple of 4 KB apart: see _row */
        SK_CAT(SK_NAME, _row)(g, j0, j1);
        return;
    }
    for (int i0 = 0; i0 < g->M; i0 += SKINNY_M) {
        const int mr = min_int(SKINNY_M, g->M - i0);
        int j = j0;
        switch (mr) {
        case 1: j = SK_CAT(SK_NAME, _rows)(g, i0, j0, j1, 1); break;
        case 2: j = SK_CAT(SK_NAME, _rows)(g, i0, j0, j1, 2); break;
        case 3: j = SK_CAT(SK_NAME, _rows)(g, i0, j0, j1, 3); break;
        case 4: j = SK_CAT(SK_NAME, _rows)(g, i0, j0, j1, 4); break;
        case 5: j = SK_CAT(SK_NAME, _rows)(g, i0, j0, j1, 5); break;
        case 6: j = SK_CAT(SK_NAME, _rows)(g, i0, j0, j1, 6); break;
        case 7: j = SK_CAT(SK_NAME, _rows)(g, i0, j0, j1, 7); break;
        default: j = SK_CAT(SK_NAME, _rows)(g, i0, j0, j1, 8); break;
        }
        skinny_tail(g, i0, mr, j, j1);
    }
}

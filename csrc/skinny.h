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

/* Row blocks of up to SKINNY_M rows, each with mr a constant (one copy of the loops per row
 * count), then the last columns of each row in plain C. */
__attribute__((target(SK_TARGET))) static void SK_NAME(const gemm_job *g, int j0, int j1) {
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

/* fastexp.h: the polynomial e^x that the layer and loss kernels share (internal, not API).
 *
 * x = n ln2 + r with |r| <= ln2/2 (Cody-Waite: ln2 in two parts, the first exact), e^r from
 * the Cephes expf polynomial (within about 2 ulp), and 2^n written straight into the exponent
 * bits. Branch-free plain C, so loops that call it vectorise. The caller clamps x to
 * [-87.3, 88.3] first (the range where 2^n is a normal float); each kernel chooses what happens
 * outside it. exp_neg is a shorter variant for softmax exponents (x <= 0). `fused` (a constant
 * in each build of a kernel): the polynomial's multiply-adds are fused (fmaf, one FMA
 * instruction per vector where the build targets FMA: a third fewer instructions), else a
 * multiply and an add, as a build without FMA computes them; builds that agree on `fused`
 * compute the same bits, whatever their vector width. */
#ifndef GPTLAB_FASTEXP_H
#define GPTLAB_FASTEXP_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__)
#define FASTEXP_INLINE static inline __attribute__((always_inline))
#else
#define FASTEXP_INLINE static inline
#endif

/* a * b + c, rounded once (fused) or twice. */
FASTEXP_INLINE float madd(float a, float b, float c, int fused) {
    return fused ? fmaf(a, b, c) : a * b + c;
}

/* 2^n as a float, from nm = y + 1.5 * 2^23 whose low mantissa bits hold n + 0x400000
 * (n = round(y) in [-127, 127]; n = -127 gives 0). */
FASTEXP_INLINE float pow2_of_magic(float nm) {
    uint32_t bits;
    memcpy(&bits, &nm, sizeof bits);
    bits = (bits - 0x4B400000u + 127u) << 23;
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    return two_n;
}

/* e^x for x in [-87.3, 88.3]. */
FASTEXP_INLINE float exp_poly(float x, int fused) {
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    const float nm = madd(x, 1.44269504088896341f, magic, fused);
    const float n = nm - magic;
    float r = x - n * 0.693359375f; /* exact: 0.693359375 has 9 bits */
    r = madd(n, 2.12194440e-4f, r, fused);
    float p = 1.9875691500e-4f;
    p = madd(p, r, 1.3981999507e-3f, fused);
    p = madd(p, r, 8.3334519073e-3f, fused);
    p = madd(p, r, 4.1665795894e-2f, fused);
    p = madd(p, r, 1.6666665459e-1f, fused);
    p = madd(p, r, 5.0000001201e-1f, fused);
    p = madd(p * r, r, r, fused) + 1.0f;
    return p * pow2_of_magic(nm);
}

/* e^x for the exponents of a softmax (x <= 0 up to rounding): 2^y, y = x log2(e) clamped to
 * [-127, 127], split as 2^n 2^f with n = round(y) and |f| <= 1/2; 2^f from the Cephes exp2f
 * polynomial (within about 2 ulp), 2^n written into the exponent bits. For y < -126.5 the
 * result is 0; e^-inf = 0, which masks a score. Half the operations of exp_f: one reduction
 * step, no overflow path. */
FASTEXP_INLINE float exp_neg(float x, int fused) {
    float y = x * 1.44269504088896341f;
    y = y < -127.0f ? -127.0f : y;
    y = y > 127.0f ? 127.0f : y;
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    const float nm = y + magic;
    const float f = y - (nm - magic); /* exact */
    float p = 1.535336188319500e-4f;
    p = madd(p, f, 1.339887440266574e-3f, fused);
    p = madd(p, f, 9.618437357674640e-3f, fused);
    p = madd(p, f, 5.550332471162809e-2f, fused);
    p = madd(p, f, 2.402264791363012e-1f, fused);
    p = madd(p, f, 6.931472028550421e-1f, fused);
    p = madd(p, f, 1.0f, fused);
    return p * pow2_of_magic(nm);
}

#endif

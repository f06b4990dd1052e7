/* fastexp.h: the polynomial e^x that the layer and loss kernels share (internal, not API).
 *
 * x = n ln2 + r with |r| <= ln2/2 (Cody-Waite: ln2 in two parts, the first exact), e^r from
 * the Cephes expf polynomial (within about 2 ulp), and 2^n written straight into the exponent
 * bits. Branch-free plain C, so loops that call it vectorise, and the portable and AVX2 builds
 * of a kernel compute the same bits. The caller clamps x to [-87.3, 88.3] first (the range
 * where 2^n is a normal float); each kernel chooses what happens outside it. */
#ifndef GPTLAB_FASTEXP_H
#define GPTLAB_FASTEXP_H

#include <stdint.h>
#include <string.h>

#if defined(__GNUC__)
#define FASTEXP_INLINE static inline __attribute__((always_inline))
#else
#define FASTEXP_INLINE static inline
#endif

/* e^x for x in [-87.3, 88.3]. */
FASTEXP_INLINE float exp_poly(float x) {
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    const float nm = x * 1.44269504088896341f + magic;
    const float n = nm - magic;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    uint32_t bits;
    memcpy(&bits, &nm, sizeof bits);          /* low bits of nm hold n + 0x400000 */
    bits = (bits - 0x4B400000u + 127u) << 23; /* the float 2^n */
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    return p * two_n;
}

#endif

/* The GPT-2 model: parameter/gradient/activation arenas, the forward pass over the layers,
 * the backward pass, and generation with a KV cache. */
#include "gptlab.h"

#ifdef _OPENMP
#include <omp.h>
#endif

void gl_set_num_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n < 1 ? 1 : n);
#else
    (void)n;
#endif
}

int gl_get_num_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

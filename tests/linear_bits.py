"""A check shared by the float32 and bfloat16 GEMM tests (a helper, not a test module)."""

from __future__ import annotations

import numpy as np

from gptlab import _core


def bias_has_the_bits_of_beta_one(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """matmul_forward(x, w, b) on 1, 2 and 3 threads must give the bits of filling C with b
    and calling sgemm with alpha = beta = 1 (the caller restores the thread count); returns
    the result."""
    for n in (1, 2, 3):
        _core.set_num_threads(n)
        got = _core.matmul_forward(x, w, b)
        want = np.tile(b, (x.shape[0], 1))
        _core.sgemm(0, 0, x, w, want, 1.0, 1.0)
        np.testing.assert_array_equal(got, want, err_msg=f"{x.shape} @ {w.shape}, {n} threads")
    return got

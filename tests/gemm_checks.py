"""Checks shared by the float32 and bfloat16 GEMM tests (helpers, not a test module)."""

from __future__ import annotations

import threading

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


def concurrent_calls_give_serial_bits(jobs: list[tuple[int, int, np.ndarray, np.ndarray]],
                                      n: int) -> None:
    """Each job (transA, transB, A, B), called 5 times from its own Python thread, all threads
    at once (the GIL released, packing buffers per calling thread), must give the bits of one
    call made alone; C is n columns wide."""
    expected = []
    for ta, tb, A, B in jobs:
        C = np.zeros((A.shape[1] if ta else A.shape[0], n), np.float32)
        _core.sgemm(ta, tb, A, B, C, 1.0, 0.0)
        expected.append(C)
    got = [np.zeros_like(C) for C in expected]

    def work(t):
        ta, tb, A, B = jobs[t]
        for _ in range(5):
            _core.sgemm(ta, tb, A, B, got[t], 1.0, 0.0)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(len(jobs))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for C, E in zip(got, expected):
        np.testing.assert_array_equal(C, E)

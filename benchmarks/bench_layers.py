"""Attention and GELU alone, on the training step's shapes: the figures behind the attention
and GELU changes in docs/benchmarks.md.

    python benchmarks/bench_layers.py [--threads 1 2] [--reps 20] [--gelu-floats 65536]

Attention: one layer's forward (`_core.attention_forward`) and backward
(`_core.attention_backward`, dqkv overwritten, as the model calls it) at the small preset's
shapes (B 16, T 128, C 192, 6 heads) and gpt-mini's (B 8, T 256, C 384, 6 heads), on random
q, k, v. GFLOP/s counts the causal half of the products: 4 B H T^2/2 hs in the forward
(Q K^T and P V), 2.5 times that in the backward (five products, one of them recomputed).
GELU: forward and backward (dx overwritten) on gpt-mini's 2048 x 1536 activations, and on
--gelu-floats elements (in cache), in ns per element. Each figure is the median of --reps
calls after one warm-up call; the thread counts alternate in the order given.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import gptlab as gl  # noqa: E402
from gptlab import _core  # noqa: E402

ATTENTION_SHAPES = {"small": (16, 128, 192, 6), "gpt-mini": (8, 256, 384, 6)}


def median_ms(fn, reps: int) -> float:
    """Median wall time of fn() over reps calls, after one warm-up call, in ms."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def attention_passes(B: int, T: int, C: int, NH: int, core=None):
    """Two callables on random q, k, v: one attention layer's forward pass and its backward pass
    (dqkv overwritten, as the model calls it), of `core` (a `_core` module; by default this
    checkout's)."""
    core = core or _core
    rng = np.random.default_rng(0)
    qkv = rng.standard_normal((B, T, 3 * C)).astype(np.float32)
    out, lse = core.attention_forward(qkv, NH)
    dout = rng.standard_normal((B, T, C)).astype(np.float32)
    dqkv = np.empty_like(qkv)
    return (lambda: core.attention_forward(qkv, NH),
            lambda: core.attention_backward(dqkv, dout, qkv, out, lse, NH, False))


def attention_row(B: int, T: int, C: int, NH: int, reps: int) -> tuple[float, float, float]:
    """(forward ms, backward ms, forward useful GFLOP) of one attention layer."""
    forward, backward = attention_passes(B, T, C, NH)
    fwd, bwd = median_ms(forward, reps), median_ms(backward, reps)
    return fwd, bwd, 4.0 * B * NH * T * T / 2 * (C // NH) / 1e9


def gelu_row(n: int, reps: int) -> tuple[float, float]:
    """(forward, backward) ns per element of GELU on n floats."""
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(n) * 2).astype(np.float32)
    dout = rng.standard_normal(n).astype(np.float32)
    dx = np.empty_like(x)
    fwd = median_ms(lambda: _core.gelu_forward(x), reps)
    bwd = median_ms(lambda: _core.gelu_backward(dx, x, dout, False), reps)
    return fwd * 1e6 / n, bwd * 1e6 / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--gelu-floats", type=int, default=65536, help="the in-cache GELU size")
    args = ap.parse_args()
    before = gl.get_num_threads()
    print(f"gemm isa {_core.gemm_isa()} (the layers' SIMD build follows it), reps {args.reps}")
    print("| kernel | shape | threads | forward | backward |")
    print("|---|---|---|---|---|")
    try:
        for th in args.threads:
            gl.set_num_threads(th)
            for name, (B, T, C, NH) in ATTENTION_SHAPES.items():
                fwd, bwd, gf = attention_row(B, T, C, NH, args.reps)
                print(f"| attention | {name} B{B} T{T} C{C} H{NH} | {th} | {fwd:.2f} ms "
                      f"({gf / fwd * 1e3:.0f} GFLOP/s) | {bwd:.2f} ms "
                      f"({2.5 * gf / bwd * 1e3:.0f} GFLOP/s) |")
            for n, where in ((2048 * 1536, "gpt-mini 2048 x 1536"),
                             (args.gelu_floats, f"{args.gelu_floats} floats, in cache")):
                fwd, bwd = gelu_row(n, args.reps)
                print(f"| GELU | {where} | {th} | {fwd:.3f} ns/element | {bwd:.3f} ns/element |")
    finally:
        gl.set_num_threads(before)


if __name__ == "__main__":
    main()

"""Median wall time of one gptlab training step (small preset, B=16, T=128), alone in one
process: the figure behind the OpenMP wait-policy comparison in docs/benchmarks.md.

    OMP_WAIT_POLICY=passive python benchmarks/step_time.py
    GOMP_SPINCOUNT=30000 python benchmarks/step_time.py
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import gptlab as gl  # noqa: E402


def main(steps: int = 15, warmup: int = 3) -> None:
    cfg = gl.GPTConfig.preset("small", vocab_size=2048)
    model, rng = gl.GPT(cfg, seed=0), np.random.default_rng(0)
    opt = gl.AdamW(model, 3e-4)
    x = rng.integers(0, 2048, (16, 128), dtype=np.int32)
    y = rng.integers(0, 2048, (16, 128), dtype=np.int32)

    def step() -> None:
        model.zero_grad()
        model.forward(x, y)
        model.backward()
        opt.clip_and_step(1.0)

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')} "
          f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')} threads={gl.get_num_threads()}: "
          f"{np.median(times) * 1e3:.1f} ms per step (median of {steps})")


if __name__ == "__main__":
    main()

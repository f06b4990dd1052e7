"""Median wall time of one gptlab training step (small preset, B=16, T=128), alone in one
process: the figure behind the OpenMP wait-policy comparison in docs/benchmarks.md.

    OMP_WAIT_POLICY=passive python benchmarks/step_time.py
    GOMP_SPINCOUNT=30000 python benchmarks/step_time.py
    python benchmarks/step_time.py --scaling [--preset gpt-mini]
    perf record -e cpu-clock -F 2000 -g python benchmarks/step_time.py --threads 1 --steps 40
    python benchmarks/step_time.py --precision bfloat16 --preset gpt-mini

--scaling measures thread scaling in one process: blocks of steps on 1 thread and on 2
alternate (so a slow spell of the machine hits both), and the ratio of the medians is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import gptlab as gl  # noqa: E402

SHAPES = {"small": (16, 128), "gpt-mini": (8, 256), "gpt2": (4, 64)}


def wait_settings() -> str:
    """The OpenMP wait variables in force (gptlab sets GOMP_SPINCOUNT unless the user did)."""
    return " ".join(f"{k}={os.environ.get(k)}" for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"))


def make_step(preset: str, zero_grad: bool = False):
    """One training step (forward, backward(accumulate=False), clip_and_step, as the stages
    step) of a fresh model of the preset at its SHAPES batch, on fixed random tokens, as a
    callable. zero_grad=True: zero_grad, forward, backward() instead (builds before 2026-12-07's
    fifth session have no accumulate=False)."""
    B, T = SHAPES[preset]
    V = 50257 if preset == "gpt2" else 2048  # gpt2 keeps its own LM head, the largest product
    model = gl.GPT(gl.GPTConfig.preset(preset, vocab_size=V), seed=0)
    opt = gl.AdamW(model, 3e-4)
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, (B, T), dtype=np.int32)
    y = rng.integers(0, V, (B, T), dtype=np.int32)

    def step() -> None:
        if zero_grad:
            model.zero_grad()
        model.forward(x, y)
        model.backward(accumulate=zero_grad)  # after zero_grad adding is writing
        opt.clip_and_step(1.0)
    return step


def main(steps: int = 15, warmup: int = 3) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scaling", action="store_true", help="1 thread against 2, alternating")
    ap.add_argument("--preset", default="small", choices=list(SHAPES))
    ap.add_argument("--rounds", type=int, default=6, help="--scaling: blocks per thread count")
    ap.add_argument("--threads", type=int, default=None, help="threads (default: gptlab's)")
    ap.add_argument("--steps", type=int, default=steps, help="timed steps")
    ap.add_argument("--precision", default="float32", choices=["float32", "bfloat16"],
                    help="of the matrix products (gl.set_matmul_precision)")
    args = ap.parse_args()
    if args.threads:
        gl.set_num_threads(args.threads)
    gl.set_matmul_precision(args.precision)
    B, T = SHAPES[args.preset]
    step = make_step(args.preset)

    if args.scaling:
        times = {1: [], 2: []}
        for _ in range(args.rounds):
            for n in (1, 2):
                gl.set_num_threads(n)
                step()  # untimed: the first step after a switch
                for _ in range(3):
                    t0 = time.perf_counter()
                    step()
                    times[n].append(time.perf_counter() - t0)
        med = {n: float(np.median(t)) * 1e3 for n, t in times.items()}
        print(f"{args.preset} B={B} T={T}: 1 thread {med[1]:.1f} ms, 2 threads {med[2]:.1f} ms "
              f"per step (medians of {len(times[1])}): scaling {med[1] / med[2]:.2f}x "
              f"({wait_settings()})")
        return
    for _ in range(warmup):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(f"{args.preset} {gl.get_matmul_precision()} {wait_settings()} "
          f"threads={gl.get_num_threads()}: "
          f"{np.median(times) * 1e3:.1f} ms per step (median of {args.steps})")


if __name__ == "__main__":
    main()

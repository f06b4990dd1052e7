"""Two builds of the C core, timed in one process, alternating: the A/B test behind a change.

On a shared virtual machine a run can be 30% slower than the one before it, so timing the old
build and then the new one measures the machine. Here both `_core` builds are loaded into one
process (they share one OpenMP runtime and one set of cores) and blocks of the same work
alternate between them, ABAB then BABA, so a slow spell hits both; the ratio of the medians
is printed. The Python side (gptlab's model and optimizer) is this checkout's, so the two
builds must offer the functions it calls.

    # build the old commit beside this checkout
    git worktree add /tmp/old <commit> && (cd /tmp/old && python setup.py build_ext --inplace)
    python benchmarks/ab_builds.py /tmp/old/gptlab/_core*.so gptlab/_core*.so \\
        [--step small|gpt-mini|gpt2] [--generate small|gpt-mini] [--batch 1]
        [--gemm CASE M K N] [--attention small|gpt-mini forward|backward]
        [--threads 2] [--rounds 8] [--pause 0.05] [--precision bfloat16]

--step times training steps (forward, backward(accumulate=False), clip_and_step; with
--zero-grad: zero_grad, forward, backward(), clip_and_step, for builds older than
accumulate=False) on random tokens at the step_time.py shapes; --generate times greedy
decoding of 128 tokens after a 16-token prompt (vocabulary 2048); --gemm times one product of
bench_gemm.py's table (CASE NN, NT or TN: y = x W, dx = dy W^T, dW = x^T dy, with x (M, K));
--attention times one layer's attention forward or backward pass (dqkv overwritten, as the
model calls it) on bench_layers.py's shapes. --pause sleeps that long before each timed call,
as an interactive session or a PPO rollout after a training step does: a thread that slept has
to be woken, which back-to-back calls never show. B/A < 1: B is faster.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench_gemm import operands  # noqa: E402  (this folder is on sys.path)
from bench_layers import ATTENTION_SHAPES, attention_passes  # noqa: E402
from step_time import SHAPES, make_step  # noqa: E402

import gptlab as gl  # noqa: E402
import gptlab.model as gl_model  # noqa: E402
import gptlab.optim as gl_optim  # noqa: E402


def load_core(path: str):
    """A `_core` extension module from a file, under its own module object."""
    spec = importlib.util.spec_from_file_location("_core", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def use(core) -> None:
    """Point gptlab's model and optimizer at one build."""
    gl_model._core = gl_optim._core = core


def generate_job(preset: str, batch: int):
    """A callable decoding 128 tokens greedily, on the build in use."""
    model = gl.GPT(gl.GPTConfig.preset(preset, vocab_size=2048, block_size=256), seed=0)
    prompt = np.random.default_rng(0).integers(0, 2048, (batch, 16), dtype=np.int32)
    return lambda: model.generate(prompt, 128, temperature=0)


def attention_job(core, preset: str, which: str):
    """A callable running one attention pass of `core` at bench_layers.py's shapes."""
    forward, backward = attention_passes(*ATTENTION_SHAPES[preset], core=core)
    return forward if which == "forward" else backward


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", help="the A build: a _core*.so file")
    ap.add_argument("b", help="the B build")
    ap.add_argument("--step", choices=list(SHAPES), default=None)
    ap.add_argument("--generate", choices=list(SHAPES), default=None)
    ap.add_argument("--batch", type=int, default=1, help="--generate: sequences")
    ap.add_argument("--gemm", nargs=4, metavar=("CASE", "M", "K", "N"), default=None)
    ap.add_argument("--attention", nargs=2, metavar=("PRESET", "PASS"), default=None)
    ap.add_argument("--zero-grad", action="store_true",
                    help="--step: zero_grad then backward() (builds before accumulate=False)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=8, help="blocks per build")
    ap.add_argument("--per-block", type=int, default=4, help="timed calls per block")
    ap.add_argument("--pause", type=float, default=0.0, help="seconds of sleep before a call")
    ap.add_argument("--precision", default="float32", choices=["float32", "bfloat16"],
                    help="of both builds' blocked products (gemm_set_precision)")
    args = ap.parse_args()
    if sum(x is not None for x in (args.step, args.generate, args.gemm, args.attention)) != 1:
        ap.error("give one of --step PRESET, --generate PRESET, --gemm CASE M K N or "
                 "--attention PRESET PASS")
    if args.attention and (args.attention[0] not in ATTENTION_SHAPES
                           or args.attention[1] not in ("forward", "backward")):
        ap.error("--attention: PRESET small or gpt-mini, PASS forward or backward")
    if args.gemm and args.gemm[0] not in ("NN", "NT", "TN"):
        ap.error("--gemm: CASE is NN, NT or TN")
    cores = {"A": load_core(args.a), "B": load_core(args.b)}
    jobs = {}
    for tag, core in cores.items():
        use(core)
        core.set_num_threads(args.threads)
        core.gemm_set_precision(args.precision)
        if args.step:
            jobs[tag] = make_step(args.step, args.zero_grad)
        elif args.generate:
            jobs[tag] = generate_job(args.generate, args.batch)
        elif args.attention:
            jobs[tag] = attention_job(core, *args.attention)
        else:
            case, (M, K, N) = args.gemm[0], map(int, args.gemm[1:])
            jobs[tag] = operands(case, M, K, N, np.random.default_rng(0), core)[0]
    times: dict[str, list[float]] = {"A": [], "B": []}
    for r in range(args.rounds):
        for tag in ("A", "B") if r % 2 == 0 else ("B", "A"):
            use(cores[tag])
            jobs[tag]()  # untimed: the block's first call wakes the threads and the caches
            for _ in range(args.per_block):
                time.sleep(args.pause)
                t = time.perf_counter()
                jobs[tag]()
                times[tag].append(time.perf_counter() - t)
    a, b = (float(np.median(times[t])) * 1e3 for t in ("A", "B"))
    if args.step:
        what = f"step {args.step}"
    elif args.generate:
        what = f"generate {args.generate} B={args.batch}, 128 tokens"
    elif args.attention:
        what = "attention {} {}".format(*args.attention)
    else:
        what = "gemm {} M={} K={} N={}".format(*args.gemm)
    pause = f", {args.pause} s pauses" if args.pause else ""
    print(f"{what}, {args.precision}, {args.threads} threads{pause}, "
          f"medians of {len(times['A'])}: "
          f"A {a:.1f} ms, B {b:.1f} ms, B/A {b / a:.3f}")


if __name__ == "__main__":
    main()

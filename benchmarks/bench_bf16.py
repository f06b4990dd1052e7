"""bfloat16 matrix products against float32: does training still reach the same loss, and how
much faster is it? (gptlab.set_matmul_precision, AVX512-BF16 CPUs only.)

Pretrains the `small` preset on TinyWorld (the pipeline's pretraining settings: B=16, T=128,
lr 3e-3 with warmup and cosine decay, AdamW) for --steps steps, once per seed in each
precision, and prints per seed the final training loss (mean of the last 20 steps), the
held-out loss and the wall time, then the mean over seeds and the relative difference
bfloat16 / float32 - 1. Different seeds give the run-to-run spread that any change of rounding
produces (training is chaotic: the two precisions' trajectories part after a few steps), so
the difference of the means is compared with it.

    python benchmarks/bench_bf16.py [--steps 600] [--seeds 0 1 2] [--json out.json]
                                    [--kernel auto|amx|avx512bf16]

--kernel picks the bfloat16 kernel (default: AMX where the CPU has it, else AVX512-BF16).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import gptlab as gl  # noqa: E402


def run(prec: str, seed: int, steps: int, tok, docs) -> dict:
    gl.set_matmul_precision(prec)
    try:
        model = gl.GPT(gl.GPTConfig.preset("small", vocab_size=tok.vocab_size), seed=seed)
        pre = gl.Pretrainer(model, tok, docs, max_steps=steps, eval_every=steps, seed=seed)
        t = time.perf_counter()
        pre.train(steps, progress=False)
        dt = time.perf_counter() - t
    finally:
        gl.set_matmul_precision("float32")
    train = statistics.mean(h["loss"] for h in pre.history[-20:])
    val = [h["val_loss"] for h in pre.history if "val_loss" in h][-1]
    return {"precision": prec, "seed": seed, "train_loss": train, "val_loss": val, "seconds": dt}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--json", default=None)
    ap.add_argument("--kernel", default="auto", choices=["auto", "amx", "avx512bf16"])
    args = ap.parse_args()
    try:
        gl.set_matmul_precision("bfloat16")
        gl.set_matmul_precision("float32")
        gl._core.gemm_set_bf16_kernel(args.kernel)
    except ValueError as e:
        print(f"skipped: {e}")
        return 0
    world = gl.data.TinyWorld(seed=0)
    docs = world.pretrain_documents()
    tok = gl.Tokenizer.train(world.pretrain_text(), vocab_size=2048)
    print(f"small preset, {args.steps} steps, {gl.get_num_threads()} threads, "
          f"GEMM path {gl._core.gemm_isa()}, bfloat16 kernel {gl._core.gemm_bf16_kernel()}")
    rows = []
    for seed in args.seeds:
        for prec in ("float32", "bfloat16"):
            r = run(prec, seed, args.steps, tok, docs)
            rows.append(r)
            print(f"seed {seed} {prec:8s}: train loss {r['train_loss']:.4f}  val loss "
                  f"{r['val_loss']:.4f}  {r['seconds']:.1f} s", flush=True)
    summary = {}
    for prec in ("float32", "bfloat16"):
        rs = [r for r in rows if r["precision"] == prec]
        summary[prec] = {k: statistics.mean(r[k] for r in rs)
                         for k in ("train_loss", "val_loss", "seconds")}
        summary[prec]["val_loss_spread"] = (max(r["val_loss"] for r in rs) -
                                            min(r["val_loss"] for r in rs))
    f, b = summary["float32"], summary["bfloat16"]
    print(f"\nmean over {len(args.seeds)} seeds | float32 | bfloat16 | bfloat16 / float32 - 1")
    for k in ("train_loss", "val_loss"):
        print(f"{k:10s} | {f[k]:.4f} | {b[k]:.4f} | {100 * (b[k] / f[k] - 1):+.2f}%")
    print(f"seconds    | {f['seconds']:.1f} | {b['seconds']:.1f} | speed-up "
          f"{f['seconds'] / b['seconds']:.2f}x")
    print(f"spread of the held-out loss over seeds: float32 {f['val_loss_spread']:.4f}, "
          f"bfloat16 {b['val_loss_spread']:.4f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"runs": rows, "summary": summary,
                       "bf16_kernel": gl._core.gemm_bf16_kernel()}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

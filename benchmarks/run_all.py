"""The whole benchmark suite in one command: prints every table and writes one JSON file.

    python benchmarks/run_all.py [--quick] [--threads 2] [--json results.json] [--peak GFLOPS]
                                 [--skip gemm train generate] [--bf16]

Runs, each in its own process: bench_gemm.py (GEMM against numpy/OpenBLAS, when present),
bench_train.py (training step, MFU, peak RSS against PyTorch) and bench_generate.py
(KV-cache generation against Hugging Face). The JSON holds each script's own JSON under its
name, plus the machine's load average at the start: the suite assumes the cores are free,
and on a shared machine (load above the core count) every OpenMP barrier can wait for a
descheduled thread. docs/benchmarks.md runs it with GOMP_SPINCOUNT=1000 (gptlab's default
wait policy) set for both frameworks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = {"gemm": "bench_gemm.py", "train": "bench_train.py", "generate": "bench_generate.py"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer shapes, presets and rounds")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--peak", type=float, default=None, help="FMA peak GFLOP/s (skip measuring)")
    ap.add_argument("--skip", nargs="*", default=[], choices=list(SCRIPTS))
    ap.add_argument("--bf16", action="store_true",
                    help="bench_train.py also times gptlab with bfloat16 matrix products")
    ap.add_argument("--json", default=None, help="write all results here")
    args = ap.parse_args(argv)

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"threads {args.threads}, cpus {os.cpu_count()}, load average {load}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    if load and load[0] > (os.cpu_count() or 1):
        print("warning: the machine is busy (load > cores); timings are noisy, see "
              "docs/benchmarks.md")
    peak = args.peak
    if peak is None and not ({"gemm", "train"} <= set(args.skip)):
        sys.path.insert(0, HERE)
        from bench_train import fma_peak
        measured = fma_peak(args.threads)
        peak = measured[1] if measured else None
    out = {"threads": args.threads, "load_average": load, "peak_gflops": peak,
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    status = 0
    with tempfile.TemporaryDirectory() as d:
        for key, script in SCRIPTS.items():
            path = os.path.join(HERE, script)
            if key in args.skip or not os.path.isfile(path):
                continue
            print(f"\n===== {script} =====", flush=True)
            jpath = os.path.join(d, key + ".json")
            cmd = [sys.executable, path, "--threads", str(args.threads), "--json", jpath]
            if args.quick:
                cmd.append("--quick")
            if args.bf16 and key == "train":
                cmd.append("--bf16")
            if peak and key in ("gemm", "train"):
                cmd += ["--peak", str(peak)]
            env = dict(os.environ)
            if key == "gemm":  # OpenBLAS picks its kernel for this CPU itself (bench_gemm.py)
                for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
                    env.pop(var, None)
            rc = subprocess.call(cmd, env=env)
            if rc != 0:
                print(f"{script} failed with exit code {rc}")
                status = 1
                continue
            with open(jpath) as f:
                out[key] = json.load(f)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"\nwrote {args.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())

"""Training-step benchmark: gptlab against an equivalent PyTorch GPT-2 in float32 eager mode.

One training step = forward + cross-entropy + backward + gradient-norm clipping (1.0) + AdamW
(betas 0.9/0.95, weight decay 0.1 on 2-D weights), on a fixed random batch, for the presets

    small    (L4 H6 C192,  V2048)   B=16, T=128
    gpt-mini (L6 H6 C384,  V2048)   B=8,  T=256
    gpt2     (L12 H12 C768, V50257) B=4,  T=64     (124M parameters)

The PyTorch model is the fastest honest eager GPT-2 a PyTorch user would write (nanoGPT's):
`nn.Linear`, `F.scaled_dot_product_attention(is_causal=True)`, GELU(tanh), LM head tied to the
token embedding, `torch.optim.AdamW` on its default (foreach) path, `clip_grad_norm_`, with
`torch.set_num_threads` equal to gptlab's thread count. Same parameter shapes and vocabulary.

Each framework runs in its own worker process (so its peak RSS is its own: `ru_maxrss` after
the warm-up and timed steps, whole process, imports included). The parent alternates rounds
of steps between the two workers, so both see the same background load, and reports the
median step time of each; the ratio gptlab/torch is tokens/s over tokens/s (higher = gptlab
faster). Model-FLOPs utilisation is 6 * N * tokens/s / peak, N = parameter count (the tied
head counted once, attention's own FLOPs not counted), peak = the float32 FMA peak that
../shared/tools/fma_peak.c measures with the same thread count, counted per CPU-second so a
busy machine does not lower it (or --peak). Every step is also timed in CPU time (all threads
of the worker): on a shared machine, tokens per CPU-second times the thread count is a
steadier estimate of what free cores would do than the wall clock.

The per-kernel breakdown times gptlab's `_core` layer bindings on the step's shapes (median of
repeats, times the number of calls per step) next to the measured forward, backward and
optimizer phases of the real model, to show what limits the step.

    python benchmarks/bench_train.py [--quick] [--threads 2] [--presets small gpt-mini gpt2]
                                     [--rounds 5] [--peak GFLOPS] [--no-breakdown] [--bf16]
                                     [--isa avx2] [--json out]

--bf16 adds two workers: gptlab with bfloat16 matrix products (float32 master weights; the
AMX or AVX512-BF16 kernel, as the worker reports), and PyTorch's own mixed precision as a
PyTorch user writes it: the forward pass and loss under torch.autocast("cpu",
dtype=torch.bfloat16) (oneDNN's bfloat16 kernels, AMX where the CPU has it), the same float32
parameters and AdamW. The bf16 table compares each with both float32 steps and with each other.
--isa avx2 runs an AVX2 machine's code on an AVX-512 one: gptlab on its AVX2 path
(gemm_set_isa, which switches the whole core), PyTorch with its kernels capped the same way
(ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2, MKL_ENABLE_INSTRUCTIONS=AVX2; each worker
reports the path it ran), and the FMA peak measured with 8-lane FMAs (-mno-avx512f). The
caches and memory stay this machine's: a stand-in for an AVX2 CPU, not a measurement of one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")

# name -> (B, T) of the benchmark
PRESETS = {"small": (16, 128), "gpt-mini": (8, 256), "gpt2": (4, 64)}
LR, BETAS, EPS, WD, CLIP = 3e-4, (0.9, 0.95), 1e-8, 0.1, 1.0


# -- shared helpers (bench_generate.py imports these) -------------------------------------------
def fma_peak(threads: int, flags: tuple[str, ...] = ()) -> tuple[float, float] | None:
    """Compiles ../shared/tools/fma_peak.c with -O2 -march=native -fopenmp (and `flags`, e.g.
    -mno-avx512f for the AVX2 peak) in a temp dir and runs it with OMP_NUM_THREADS=threads
    (best of three runs).

    Returns (wall, cpu): `wall` is the GFLOP/s it prints (FLOPs / wall time); `cpu` is FLOPs
    per CPU-second of the process times `threads` -- the peak of `threads` free cores, which
    a shared machine (where the program only gets part of each core) still measures right.
    None if no compiler or no source."""
    candidates = [os.environ.get("GPTLAB_FMA_PEAK_SRC", ""),
                  os.path.join(ROOT, "..", "shared", "tools", "fma_peak.c"),
                  os.path.join(ROOT, "..", "..", "shared", "tools", "fma_peak.c"),
                  "/work/shared/tools/fma_peak.c"]
    src = next((p for p in candidates if p and os.path.isfile(p)), None)
    cc = shutil.which("gcc") or shutil.which("cc")
    if src is None or cc is None:
        return None
    wall = cpu = 0.0
    with tempfile.TemporaryDirectory() as d:
        exe = os.path.join(d, "fma_peak")
        r = subprocess.run([cc, "-O2", "-march=native", *flags, "-fopenmp", src, "-o", exe],
                           capture_output=True, text=True)
        if r.returncode != 0:
            return None
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        for _ in range(3):
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            out = subprocess.run([exe], capture_output=True, text=True, env=env).stdout
            dt = time.perf_counter() - t0
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            used = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
            m = re.search(r"([\d.]+) GFLOP/s", out)
            if m and used > 0:
                g = float(m.group(1))
                wall = max(wall, g)
                cpu = max(cpu, g * dt / used * threads)  # dt ~ the program's own wall time
    return (wall, cpu) if wall else None


def rss_mb() -> float:
    """Current resident set size of this process in MB (from /proc; 0 if unavailable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def maxrss_mb() -> float:
    """Peak resident set size of this process so far in MB (ru_maxrss is KB on Linux)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def have_torch() -> bool:
    try:
        import importlib.util
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


class Worker:
    """A benchmark worker in its own process, driven by one-line commands over pipes.

    The child runs `python <script> --worker ...`, prints one JSON line when ready, then
    answers each command line ("run k", "rss", "breakdown", "quit") with one JSON line."""

    def __init__(self, script: str, args: list[str]):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [os.path.abspath(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
        self.proc = subprocess.Popen([sys.executable, script, "--worker", *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, bufsize=1)
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.proc.args} exited with {self.proc.wait()}")
        return json.loads(line)

    def ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass
        self.proc.wait(timeout=60)


def serve(step, extra: dict | None = None) -> None:
    """Worker loop: answer the parent's commands on stdin (see Worker). `extra` maps other
    command words to callables returning a JSON-able dict."""
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        if words[0] == "run":
            times, cpu = [], []
            for _ in range(int(words[1])):
                c0, t0 = time.process_time(), time.perf_counter()
                info = step()
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)  # all threads of the process
            out = {"times": times, "cpu": cpu, **(info or {})}
        elif words[0] == "rss":
            out = {"maxrss_mb": maxrss_mb(), "rss_mb": rss_mb()}
        else:
            out = extra[words[0]]()
        print(json.dumps(out), flush=True)


def med(xs):
    return statistics.median(xs) if xs else float("nan")


# -- the PyTorch side ---------------------------------------------------------------------------
def torch_gpt(cfg: dict):
    """nanoGPT's GPT-2 in PyTorch: nn.Linear, SDPA(is_causal=True), GELU(tanh), tied LM head."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    C, H = cfg["n_embd"], cfg["n_head"]

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
            self.c_attn, self.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
            self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
            q = q.view(B, T, H, C // H).transpose(1, 2)  # (B, nh, T, hs)
            k = k.view(B, T, H, C // H).transpose(1, 2)
            v = v.view(B, T, H, C // H).transpose(1, 2)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
            return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(cfg["vocab_size"], C)
            self.wpe = nn.Embedding(cfg["block_size"], C)
            self.h = nn.ModuleList(Block() for _ in range(cfg["n_layer"]))
            self.ln_f = nn.LayerNorm(C)
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    std = 0.02 / (2 * cfg["n_layer"]) ** 0.5 if name.endswith("proj.weight") \
                        else 0.02
                    nn.init.normal_(p, 0.0, std)
                elif name.endswith("bias"):
                    nn.init.zeros_(p)

        def forward(self, idx, targets):
            T = idx.shape[1]
            x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
            for block in self.h:
                x = block(x)
            logits = F.linear(self.ln_f(x), self.wte.weight)  # tied head
            return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

    return GPT()


def torch_worker(cfg: dict, B: int, T: int, threads: int, warmup: int,
                 precision: str = "float32") -> None:
    import contextlib

    import numpy as np
    import torch
    torch.set_num_threads(threads)
    base = rss_mb()
    torch.manual_seed(0)
    model = torch_gpt(cfg)
    decay = [p for p in model.parameters() if p.dim() == 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD},
                             {"params": other, "weight_decay": 0.0}],
                            lr=LR, betas=BETAS, eps=EPS)  # default: the foreach path
    ids = np.random.default_rng(0).integers(0, cfg["vocab_size"], (B, T + 1))
    x = torch.from_numpy(ids[:, :-1].copy())
    y = torch.from_numpy(ids[:, 1:].copy())
    params = list(model.parameters())
    mixed = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bfloat16" \
        else contextlib.nullcontext

    def step():
        opt.zero_grad(set_to_none=True)
        with mixed():
            loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        return {"loss": loss.item()}

    first = step()["loss"]
    for _ in range(warmup - 1):
        step()
    n = sum(p.numel() for p in params)
    print(json.dumps({"params": n, "first_loss": first, "base_rss_mb": base,
                      "version": torch.__version__, "threads": torch.get_num_threads(),
                      "isa": torch.backends.cpu.get_cpu_capability()}), flush=True)
    serve(step)


# -- the gptlab side ----------------------------------------------------------------------------
def gptlab_worker(cfg: dict, B: int, T: int, threads: int, warmup: int,
                  precision: str = "float32", isa: str = "auto") -> None:
    import numpy as np

    import gptlab as gl
    from gptlab import _core
    _core.gemm_set_isa(isa)  # ValueError where the CPU lacks it
    gl.set_num_threads(threads)
    gl.set_matmul_precision(precision)
    base = rss_mb()
    model = gl.GPT(gl.GPTConfig(**cfg), seed=0)
    opt = gl.AdamW(model, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    ids = np.random.default_rng(0).integers(0, cfg["vocab_size"], (B, T + 1)).astype(np.int32)
    x, y = np.ascontiguousarray(ids[:, :-1]), np.ascontiguousarray(ids[:, 1:])

    def step():  # as the stages step: the backward writes the gradients (torch: set_to_none)
        loss = model.forward(x, y)
        model.backward(accumulate=False)
        opt.clip_and_step(CLIP)
        return {"loss": float(loss)}

    first = step()["loss"]
    for _ in range(warmup - 1):
        step()
    print(json.dumps({"params": model.num_params, "first_loss": first, "base_rss_mb": base,
                      "version": gl.__version__, "threads": gl.get_num_threads(),
                      "isa": _core.gemm_isa() if precision == "float32"
                      else f"{_core.gemm_isa()}, {_core.gemm_bf16_kernel()}"}), flush=True)

    def phases():
        """The real model's step split into its phases (median of 3 steps), in ms."""
        out = {"forward+loss": [], "backward": [], "clip+adamw": []}
        for _ in range(3):
            t1 = time.perf_counter()
            model.forward(x, y)
            t2 = time.perf_counter()
            model.backward(accumulate=False)
            t3 = time.perf_counter()
            opt.clip_and_step(CLIP)
            t4 = time.perf_counter()
            for k, a, b in (("forward+loss", t1, t2), ("backward", t2, t3),
                            ("clip+adamw", t3, t4)):
                out[k].append((b - a) * 1e3)
        return {k: med(v) for k, v in out.items()}

    def breakdown():
        return {"phases_ms": phases(), "kernels_ms": kernel_breakdown(cfg, B, T)}

    serve(step, {"breakdown": breakdown})


def kernel_breakdown(cfg: dict, B: int, T: int, reps: int = 5) -> dict:
    """Per-kernel time of one gptlab training step, from the `_core` layer bindings on the
    step's shapes: median of `reps` calls times the calls per step, in ms, grouped by kind.
    Forward bindings allocate their outputs (the model writes into its arena), so their
    figures include a little allocation the real step does not pay."""
    import numpy as np

    from gptlab import _core
    L, NH, C, V = cfg["n_layer"], cfg["n_head"], cfg["n_embd"], cfg["vocab_size"]
    N = B * T
    rng = np.random.default_rng(0)

    def r(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    x, w, b = r(N, C), 1 + r(C, scale=0.1), r(C, scale=0.1)
    ln_out, mean, rstd = _core.layernorm_forward(x, w, b)
    dx, dwc, dbc = np.zeros_like(x), np.zeros(C, np.float32), np.zeros(C, np.float32)
    qkv = r(B, T, 3 * C)
    att, lse = _core.attention_forward(qkv, NH)
    dqkv, datt = np.zeros_like(qkv), r(B, T, C)
    h = r(N, 4 * C)
    dh = np.zeros_like(h)
    wte, wpe = r(V, C, scale=0.02), r(cfg["block_size"], C, scale=0.02)
    dwte, dwpe = np.zeros_like(wte), np.zeros_like(wpe)
    idx = rng.integers(0, V, (B, T)).astype(np.int32)
    logits = r(N, V)
    dlogits = np.zeros_like(logits)
    targets = rng.integers(0, V, N).astype(np.int32)

    def mm(K, M):  # a (K -> M) linear layer, Conv1D layout
        xin, wm, bm = r(N, K), r(K, M, scale=0.02), r(M, scale=0.02)
        dout = r(N, M)
        dxin, dwm, dbm = np.zeros_like(xin), np.zeros_like(wm), np.zeros_like(bm)
        return (lambda: _core.matmul_forward(xin, wm, bm),
                lambda: _core.matmul_backward(dxin, dwm, dbm, dout, xin, wm))

    lin = {k: mm(*k) for k in {(C, 3 * C), (C, C), (C, 4 * C), (4 * C, C)}}
    lnf = r(N, C)
    dlnf = np.zeros_like(lnf)
    # (group, name, callable, calls per step)
    ops = [("embedding", "embedding fwd", lambda: _core.embedding_forward(idx, wte, wpe), 1),
           ("embedding", "embedding bwd", lambda: _core.embedding_backward(dwte, dwpe, x.reshape(
               B, T, C), idx), 1),
           ("layernorm", "layernorm fwd", lambda: _core.layernorm_forward(x, w, b), 1),
           # a block's residual sums, each with the layernorm that reads it (ln_2, then the
           # next block's ln_1 or ln_f)
           ("layernorm", "residual+layernorm fwd", lambda: _core.residual_layernorm_forward(
               x, x, w, b), 2 * L),
           ("layernorm", "layernorm bwd", lambda: _core.layernorm_backward(
               dx, dwc, dbc, x, x, w, mean, rstd), 2 * L + 1),
           ("attention", "attention fwd", lambda: _core.attention_forward(qkv, NH), L),
           ("attention", "attention bwd", lambda: _core.attention_backward(
               dqkv, datt, qkv, att, lse, NH, False), L),
           ("gelu", "gelu fwd", lambda: _core.gelu_forward(h), L),
           ("gelu", "gelu bwd", lambda: _core.gelu_backward(dh, h, h, False), L),
           # the step's one pass: loss, and the gradient written over the logits (timed on
           # its own output after the first call: finite values, the same work)
           ("cross-entropy", "cross-entropy fwd+bwd", lambda: _core.crossentropy_forward_backward(
               None, logits, targets, None, 1.0), 1),
           ("matmul (GEMM)", "lm head fwd  (N,C)x(C,V)", lambda: _core.sgemm(
               0, 1, lnf, wte, logits, 1.0, 0.0), 1),
           ("matmul (GEMM)", "lm head bwd dx", lambda: _core.sgemm(
               0, 0, dlogits, wte, dlnf, 1.0, 1.0), 1),
           ("matmul (GEMM)", "lm head bwd dW", lambda: _core.sgemm(
               1, 0, dlogits, lnf, dwte, 1.0, 1.0), 1)]
    for (K, M), (fwd, bwd) in sorted(lin.items()):
        ops.append(("matmul (GEMM)", f"linear {K}->{M} fwd", fwd, L))
        ops.append(("matmul (GEMM)", f"linear {K}->{M} bwd", bwd, L))
    rows, groups = {}, {}
    for group, name, fn, calls in ops:
        fn()  # warm caches, page in outputs
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        ms = med(ts) * 1e3 * calls
        rows[name] = ms
        groups[group] = groups.get(group, 0.0) + ms
    return {"ops": rows, "groups": groups}


# -- the parent ---------------------------------------------------------------------------------
def bf16_available() -> bool:
    """Whether gptlab can run its matrix products in bfloat16 here (AVX512-BF16)."""
    sys.path.insert(0, os.path.abspath(ROOT))
    import gptlab as gl
    try:
        gl.set_matmul_precision("bfloat16")
    except ValueError:
        return False
    gl.set_matmul_precision("float32")
    return True


def preset_config(name: str) -> dict:
    sys.path.insert(0, os.path.abspath(ROOT))
    from gptlab.config import GPTConfig
    return GPTConfig.preset(name).to_dict()


def bench_preset(name: str, threads: int, rounds: int, steps: int, warmup: int,
                 breakdown: bool, with_torch: bool, with_bf16: bool = False,
                 isa: str = "auto") -> dict:
    B, T = PRESETS[name]
    cfg = preset_config(name)
    args = ["--preset", name, "--threads", str(threads), "--warmup", str(warmup), "--isa", isa]
    workers = {"gptlab": Worker(__file__, ["gptlab", *args])}
    if with_torch:
        workers["torch"] = Worker(__file__, ["torch", *args])
    if with_bf16:
        workers["gptlab_bf16"] = Worker(__file__, ["gptlab", *args, "--precision", "bfloat16"])
        if with_torch:
            workers["torch_bf16"] = Worker(__file__, ["torch", *args, "--precision", "bfloat16"])
    times, cpu = {k: [] for k in workers}, {k: [] for k in workers}
    try:
        order = list(workers)
        for r in range(rounds):  # alternate who goes first, so drift hits both alike
            for k in (order if r % 2 == 0 else order[::-1]):
                a = workers[k].ask(f"run {steps}")
                times[k] += a["times"]
                cpu[k] += a["cpu"]
        res = {"B": B, "T": T, "tokens": B * T, "config": cfg}
        for k, w in workers.items():
            rss = w.ask("rss")
            ms, cms = med(times[k]) * 1e3, med(cpu[k]) * 1e3
            res[k] = {"ms_step": ms, "tokens_s": B * T / (ms / 1e3), "times_ms":
                      [t * 1e3 for t in times[k]], "cpu_ms_step": cms,
                      "cpu_tokens_s": B * T / (cms / 1e3) * threads,
                      "cpu_ms": [t * 1e3 for t in cpu[k]], "params": w.ready["params"],
                      "first_loss": w.ready["first_loss"], "version": w.ready["version"],
                      "threads": w.ready["threads"], "maxrss_mb": rss["maxrss_mb"],
                      "base_rss_mb": w.ready["base_rss_mb"], "isa": w.ready.get("isa")}
        if breakdown:
            res["gptlab"]["breakdown"] = workers["gptlab"].ask("breakdown")
    finally:
        for w in workers.values():
            w.close()
    if "torch" in res:
        res["ratio"] = res["gptlab"]["tokens_s"] / res["torch"]["tokens_s"]
        res["cpu_ratio"] = res["gptlab"]["cpu_tokens_s"] / res["torch"]["cpu_tokens_s"]
        res["rss_ratio"] = res["gptlab"]["maxrss_mb"] / res["torch"]["maxrss_mb"]
    if "gptlab_bf16" in res:
        res["bf16_speedup"] = res["gptlab_bf16"]["tokens_s"] / res["gptlab"]["tokens_s"]
        if "torch" in res:
            res["bf16_ratio"] = res["gptlab_bf16"]["tokens_s"] / res["torch"]["tokens_s"]
        if "torch_bf16" in res:
            res["bf16_vs_torch_bf16"] = (res["gptlab_bf16"]["tokens_s"]
                                         / res["torch_bf16"]["tokens_s"])
            res["torch_bf16_speedup"] = res["torch_bf16"]["tokens_s"] / res["torch"]["tokens_s"]
    return res


def print_tables(results: dict, peak: float | None, threads: int) -> None:
    def mfu(x, key="tokens_s"):
        return f"{6 * x['params'] * x[key] / (peak * 1e9):6.1%}" if peak else f"{'-':>6}"

    print(f"\nTraining step, float32, {threads} threads, wall clock (median over alternating "
          f"rounds; ratio = gptlab tokens/s / torch tokens/s)")
    print(f"{'preset':9} {'B':>3} {'T':>4} {'params':>8} | {'gptlab ms':>10} {'tok/s':>8} "
          f"{'MFU':>6} | {'torch ms':>9} {'tok/s':>8} {'MFU':>6} | {'ratio':>6}")
    for name, r in results.items():
        g, t = r["gptlab"], r.get("torch")
        line = (f"{name:9} {r['B']:3d} {r['T']:4d} {g['params'] / 1e6:7.2f}M | "
                f"{g['ms_step']:10.1f} {g['tokens_s']:8.0f} {mfu(g)} | ")
        if t:
            line += (f"{t['ms_step']:9.1f} {t['tokens_s']:8.0f} {mfu(t)} | "
                     f"{r['ratio']:5.2f}x")
        else:
            line += f"{'torch not installed':>26} |"
        print(line)
    print(f"\nThe same steps in CPU time (all threads of the worker; 'tok/s' = tokens per "
          f"CPU-second x {threads}: the throughput of {threads} free cores if the work splits "
          "evenly -- steadier than wall clock on a shared machine)")
    print(f"{'preset':9} | {'gptlab cpu ms':>13} {'tok/s':>8} {'MFU':>6} | "
          f"{'torch cpu ms':>12} {'tok/s':>8} {'MFU':>6} | {'ratio':>6}")
    for name, r in results.items():
        g, t = r["gptlab"], r.get("torch")
        line = f"{name:9} | {g['cpu_ms_step']:13.1f} {g['cpu_tokens_s']:8.0f} " \
               f"{mfu(g, 'cpu_tokens_s')} | "
        if t:
            line += (f"{t['cpu_ms_step']:12.1f} {t['cpu_tokens_s']:8.0f} "
                     f"{mfu(t, 'cpu_tokens_s')} | {r['cpu_ratio']:5.2f}x")
        print(line)
    print("\nPeak RSS of a training step (ru_maxrss of the worker process, imports included; "
          "in brackets: RSS after imports, before the model)")
    print(f"{'preset':9} | {'gptlab MB':>16} | {'torch MB':>16} | {'gptlab/torch':>12}")
    for name, r in results.items():
        g, t = r["gptlab"], r.get("torch")
        line = f"{name:9} | {g['maxrss_mb']:7.0f} ({g['base_rss_mb']:5.0f}) | "
        if t:
            line += f"{t['maxrss_mb']:7.0f} ({t['base_rss_mb']:5.0f}) | {r['rss_ratio']:11.2f}x"
        print(line)
    if any("gptlab_bf16" in r for r in results.values()):
        print("\nThe same step with bfloat16 matrix products (--bf16: gl.set_matmul_precision("
              "'bfloat16'), float32 master weights; MFU against the float32 peak)")
        print("and PyTorch's mixed precision (torch.autocast('cpu', dtype=torch.bfloat16) around "
              "forward + loss)")
        print(f"{'preset':9} | {'bf16 ms':>9} {'tok/s':>8} {'MFU':>6} | {'vs gptlab fp32':>14} | "
              f"{'vs torch fp32':>13} | {'torch bf16 ms':>13} {'vs its fp32':>11} | "
              f"{'gptlab/torch bf16':>17}")
        for name, r in results.items():
            b, tb = r.get("gptlab_bf16"), r.get("torch_bf16")
            if b:
                vs_torch = f"{r['bf16_ratio']:12.2f}x" if "bf16_ratio" in r else f"{'-':>13}"
                line = (f"{name:9} | {b['ms_step']:9.1f} {b['tokens_s']:8.0f} {mfu(b)} | "
                        f"{r['bf16_speedup']:13.2f}x | {vs_torch}")
                if tb:
                    line += (f" | {tb['ms_step']:13.1f} {r['torch_bf16_speedup']:10.2f}x | "
                             f"{r['bf16_vs_torch_bf16']:16.2f}x")
                print(line)
    for name, r in results.items():
        bd = r["gptlab"].get("breakdown")
        if not bd:
            continue
        step = r["gptlab"]["ms_step"]
        print(f"\ngptlab {name}: where a step goes (ms; the step measured {step:.1f} ms)")
        print("  phases of the real step: " + ", ".join(
            f"{k} {v:.1f}" for k, v in bd["phases_ms"].items()))
        total = sum(bd["kernels_ms"]["groups"].values())
        print(f"  kernels timed alone on the same shapes (sum {total:.1f} ms):")
        for g, ms in sorted(bd["kernels_ms"]["groups"].items(), key=lambda kv: -kv[1]):
            print(f"    {g:16} {ms:8.1f}  {ms / total:6.1%}")
        print("  largest single ops: " + ", ".join(
            f"{k} {v:.1f}" for k, v in sorted(bd["kernels_ms"]["ops"].items(),
                                             key=lambda kv: -kv[1])[:5]))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    ap.add_argument("--quick", action="store_true", help="small and gpt-mini, fewer rounds")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=0, help="alternating rounds (0: auto)")
    ap.add_argument("--peak", type=float, default=None, help="FMA peak GFLOP/s (skip measuring)")
    ap.add_argument("--no-breakdown", action="store_true", help="skip the per-kernel breakdown")
    ap.add_argument("--bf16", action="store_true",
                    help="also time gptlab with bfloat16 matrix products (AVX512-BF16 CPUs)")
    ap.add_argument("--isa", default="auto", choices=["auto", "avx2"],
                    help="avx2: both sides on AVX2 code (see the docstring)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    ap.add_argument("--preset", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--warmup", type=int, default=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        B, T = PRESETS[args.preset]
        cfg = preset_config(args.preset)
        if args.worker == "torch":
            torch_worker(cfg, B, T, args.threads, args.warmup, args.precision)
        else:
            gptlab_worker(cfg, B, T, args.threads, args.warmup, args.precision, args.isa)
        return {}
    if args.isa == "avx2":  # the workers inherit these; gptlab's worker switches itself
        os.environ.update(ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2",
                          MKL_ENABLE_INSTRUCTIONS="AVX2")

    presets = ["small", "gpt-mini"] if args.quick and argv_has_default(args) else args.presets
    with_torch = have_torch()
    if not with_torch:
        print("note: torch is not installed; the PyTorch column is skipped")
    with_bf16 = args.bf16 and bf16_available()
    if args.bf16 and not with_bf16:
        print("note: this CPU has no AVX512-BF16: the bfloat16 column is skipped")
    peak = args.peak
    if peak is None:
        measured = fma_peak(args.threads, ("-mno-avx512f",) if args.isa == "avx2" else ())
        if measured:
            print(f"FMA peak ({args.threads} threads): {measured[0]:.1f} GFLOP/s wall clock, "
                  f"{measured[1]:.1f} GFLOP/s per CPU-second x {args.threads} (used for MFU)")
            peak = measured[1]
        else:
            print("FMA peak unavailable: MFU not shown (use --peak)")
    else:
        print(f"FMA peak: {peak:.1f} GFLOP/s (--peak)")
    results = {}
    for name in presets:
        rounds = args.rounds or (2 if args.quick else (3 if name == "gpt2" else 5))
        steps = 1 if name == "gpt2" else (2 if args.quick else 3)
        results[name] = bench_preset(name, args.threads, rounds, steps,
                                     1 if name == "gpt2" else 2, not args.no_breakdown,
                                     with_torch, with_bf16, args.isa)
        r = results[name]
        print(f"  {name}: gptlab {r['gptlab']['ms_step']:.1f} ms/step ({r['gptlab']['isa']})"
              + (f", torch {r['torch']['ms_step']:.1f} ms/step ({r['torch']['isa']})"
                 if with_torch else "")
              + (f"; bfloat16: gptlab {r['gptlab_bf16']['ms_step']:.1f} ms/step "
                 f"({r['gptlab_bf16']['isa']})" if with_bf16 else "")
              + (f", torch autocast {r['torch_bf16']['ms_step']:.1f} ms/step"
                 if with_bf16 and with_torch else ""), flush=True)
    print_tables(results, peak, args.threads)
    for r in results.values():
        for k in ("gptlab", "torch", "gptlab_bf16", "torch_bf16"):
            if k in r and peak:
                r[k]["mfu"] = 6 * r[k]["params"] * r[k]["tokens_s"] / (peak * 1e9)
                r[k]["cpu_mfu"] = 6 * r[k]["params"] * r[k]["cpu_tokens_s"] / (peak * 1e9)
    out = {"threads": args.threads, "peak_gflops": peak, "presets": results, "isa": args.isa,
           "load_average": os.getloadavg(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
           "machine": os.uname().machine, "cpu_count": os.cpu_count()}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {args.json}")
    return out


def argv_has_default(args) -> bool:
    return args.presets == list(PRESETS)


if __name__ == "__main__":
    main()

"""Generation benchmark: gptlab's KV-cache `generate` against Hugging Face `GPT2LMHeadModel`.

Greedy decoding (gptlab `temperature=0`; HF `do_sample=False, use_cache=True`) of 128 new
tokens after a 16-token random prompt, batch B=1 and B=8, float32, the same thread count, for
the presets `small` (block_size raised to 256 so 16 + 128 tokens fit) and `gpt-mini`. Both
models hold the SAME weights (gptlab's, saved to a temporary .safetensors file and loaded into
HF under its `transformer.` names), so the generated tokens can be compared too: "same" is
the fraction of generated tokens equal in both outputs (float32 rounding can flip a near-tie
and the rows then diverge, so a little below 100% is not a bug).

tokens/s counts new tokens (B * 128 per call, the prompt's prefill included in the time), on
the wall clock and per CPU-second of the worker times the thread count (steadier on a shared
machine, see bench_train.py). Each
framework runs in its own worker process; the parent alternates rounds between them and
reports medians; ratio = gptlab tokens/s / HF tokens/s (higher = gptlab faster). Without
transformers the comparison is skipped with a note.

    python benchmarks/bench_generate.py [--quick] [--threads 2] [--rounds 5] [--json out]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train import ROOT, Worker, med, serve  # noqa: E402

PRESETS = {"small": {"block_size": 256}, "gpt-mini": {}}
BATCHES = [1, 8]
PROMPT, NEW = 16, 128


def config(name: str) -> dict:
    sys.path.insert(0, os.path.abspath(ROOT))
    from gptlab.config import GPTConfig
    return GPTConfig.preset(name, **PRESETS[name]).to_dict()


def prompts(cfg: dict, B: int):
    import numpy as np
    return np.random.default_rng(B).integers(0, cfg["vocab_size"], (B, PROMPT)).astype(np.int32)


def gptlab_worker(path: str, B: int, threads: int) -> None:
    import gptlab as gl
    gl.set_num_threads(threads)
    model = gl.GPT.load(path)
    idx = prompts(model.config.to_dict(), B)
    out = {}

    def step():
        out["tokens"] = model.generate(idx, NEW, temperature=0.0, seed=0)[:, PROMPT:]

    step()
    print(json.dumps({"version": gl.__version__}), flush=True)
    serve(step, {"tokens": lambda: {"tokens": out["tokens"].tolist()}})


def hf_worker(path: str, B: int, threads: int) -> None:
    import torch
    import transformers
    from safetensors.numpy import load_file
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.set_num_threads(threads)
    transformers.logging.set_verbosity_error()
    import gptlab  # only to read the config back from the checkpoint
    cfg = gptlab.GPT.load(path).config
    hf_cfg = GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.block_size,
                        n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head,
                        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0, layer_norm_epsilon=1e-5, tie_word_embeddings=True,
                        bos_token_id=None, eos_token_id=None, pad_token_id=0)
    model = GPT2LMHeadModel(hf_cfg).eval()
    sd = {"transformer." + k: torch.from_numpy(v) for k, v in load_file(path).items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all("lm_head" in k or k.endswith("attn.bias") for k in missing), \
        (missing, unexpected)
    model.tie_weights()
    idx = torch.from_numpy(prompts(cfg.to_dict(), B).astype("int64"))
    mask = torch.ones_like(idx)
    out = {}

    def step():
        with torch.inference_mode():
            out["tokens"] = model.generate(idx, attention_mask=mask, max_new_tokens=NEW,
                                           min_new_tokens=NEW, do_sample=False, use_cache=True,
                                           pad_token_id=0)[:, PROMPT:]

    step()
    print(json.dumps({"version": transformers.__version__,
                      "attn": getattr(model.config, "_attn_implementation", "?")}), flush=True)
    serve(step, {"tokens": lambda: {"tokens": out["tokens"].tolist()}})


def bench(name: str, B: int, path: str, threads: int, rounds: int, with_hf: bool) -> dict:
    args = ["--path", path, "--batch", str(B), "--threads", str(threads)]
    workers = {"gptlab": Worker(__file__, ["gptlab", *args])}
    if with_hf:
        workers["hf"] = Worker(__file__, ["hf", *args])
    times, cpu = {k: [] for k in workers}, {k: [] for k in workers}
    try:
        order = list(workers)
        for r in range(rounds):
            for k in (order if r % 2 == 0 else order[::-1]):
                a = workers[k].ask("run 1")
                times[k] += a["times"]
                cpu[k] += a["cpu"]
        res = {"B": B, "new_tokens": NEW, "prompt": PROMPT}
        toks = {}
        for k, w in workers.items():
            s, c = med(times[k]), med(cpu[k])
            res[k] = {"s_call": s, "tokens_s": B * NEW / s, "times_s": times[k],
                      "cpu_s_call": c, "cpu_tokens_s": B * NEW / c * threads, "cpu_s": cpu[k],
                      **w.ready}
            toks[k] = w.ask("tokens")["tokens"]
    finally:
        for w in workers.values():
            w.close()
    if with_hf:
        res["ratio"] = res["gptlab"]["tokens_s"] / res["hf"]["tokens_s"]
        res["cpu_ratio"] = res["gptlab"]["cpu_tokens_s"] / res["hf"]["cpu_tokens_s"]
        same = sum(a == b for ra, rb in zip(toks["gptlab"], toks["hf"], strict=True)
                   for a, b in zip(ra, rb, strict=True))
        res["same_tokens"] = same / (B * NEW)
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=0, help="alternating rounds (0: auto)")
    ap.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--path", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        (hf_worker if args.worker == "hf" else gptlab_worker)(args.path, args.batch,
                                                             args.threads)
        return {}

    with_hf = all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))
    if not with_hf:
        print("note: torch/transformers not installed; the Hugging Face column is skipped")
    rounds = args.rounds or (3 if args.quick else 5)
    sys.path.insert(0, os.path.abspath(ROOT))
    import gptlab as gl
    results = {}
    with tempfile.TemporaryDirectory() as d:
        for name in args.presets:
            path = os.path.join(d, f"{name}.safetensors")
            gl.GPT(gl.GPTConfig(**config(name)), seed=0).save(path)
            for B in BATCHES:
                r = bench(name, B, path, args.threads, rounds, with_hf)
                results[f"{name} B={B}"] = r
                print(f"  {name} B={B}: gptlab {r['gptlab']['tokens_s']:.0f} tok/s"
                      + (f", HF {r['hf']['tokens_s']:.0f} tok/s" if with_hf else ""),
                      flush=True)
    print(f"\nGeneration, greedy, KV cache, prompt {PROMPT} + {NEW} new tokens, float32, "
          f"{args.threads} threads (median; ratio = gptlab tok/s / HF tok/s)")
    print(f"{'':14} | {'wall clock':^38} | {'CPU time (tok/s = per CPU-s x threads)':^38} |")
    print(f"{'preset':14} | {'gptlab s':>9} {'tok/s':>6} {'HF s':>7} {'tok/s':>6} {'ratio':>6} | "
          f"{'gptlab s':>9} {'tok/s':>6} {'HF s':>7} {'tok/s':>6} {'ratio':>6} | {'same':>5}")
    for key, r in results.items():
        g, h = r["gptlab"], r.get("hf")
        if not h:
            print(f"{key:14} | {g['s_call']:9.3f} {g['tokens_s']:6.0f} {'HF skipped':>21} |")
            continue
        print(f"{key:14} | {g['s_call']:9.3f} {g['tokens_s']:6.0f} {h['s_call']:7.3f} "
              f"{h['tokens_s']:6.0f} {r['ratio']:5.2f}x | {g['cpu_s_call']:9.3f} "
              f"{g['cpu_tokens_s']:6.0f} {h['cpu_s_call']:7.3f} {h['cpu_tokens_s']:6.0f} "
              f"{r['cpu_ratio']:5.2f}x | {r['same_tokens']:5.0%}")
    out = {"threads": args.threads, "results": results, "load_average": os.getloadavg(),
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    main()

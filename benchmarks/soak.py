"""Soak test: many training steps of a very small model must hold the memory flat.

Each step runs every path of the C core a training session uses: a loss forward, backward,
gradient clipping and AdamW, plus (every 50 steps) a logits forward with
``backward(dlogits=...)``, a generation with log-probs, and a tokenizer encode/decode. After
a warm-up, the resident set size (RSS) is sampled; any growth beyond ``--max-growth-mb`` means
something is allocated per step and never freed, and the script exits with status 1.

    python benchmarks/soak.py                    # 10,000 steps, RSS growth must stay < 5 MB
    python benchmarks/soak.py --steps 2000       # quicker
    python benchmarks/soak.py --steps 20 --leak-check   # for LeakSanitizer (.ci/sanitize.sh)

With ``--leak-check`` the script frees everything it made and collects garbage before exit, so
that whatever LeakSanitizer still finds allocated was lost, not merely alive.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

import numpy as np

try:
    import gptlab as gl
except ImportError:  # run from a checkout built in place, without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import gptlab as gl


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run(steps: int, warmup: int, every: int = 50, verbose: bool = True) -> list[float]:
    """Train for `steps` steps; return the RSS samples (MB) taken after `warmup` steps."""
    gl.set_num_threads(1)
    tok = gl.Tokenizer.train("the cat sat on the mat. the dog ran to the cat. " * 20, 280)
    cfg = gl.GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2,
                       n_embd=16)
    model = gl.GPT(cfg, seed=0)
    opt = gl.AdamW(model, lr=1e-3)
    rng = np.random.default_rng(0)
    data = rng.integers(0, cfg.vocab_size, (64, 4, 17)).astype(np.int32)
    samples: list[float] = []
    t0 = time.perf_counter()
    for step in range(steps):
        batch = data[step % len(data)]
        model.zero_grad()
        loss = model.forward(batch[:, :-1], batch[:, 1:])
        model.backward()
        opt.clip_and_step(1.0)
        if step % every == 0:
            logits = model.forward(batch[:, :-1])
            _, dlogits = gl.losses.cross_entropy(logits.reshape(-1, cfg.vocab_size),
                                                 batch[:, 1:].reshape(-1))
            model.backward(dlogits=dlogits.reshape(logits.shape))
            out, logp = model.generate(batch[:2, :4], 8, temperature=1.0, seed=step,
                                       return_logprobs=True)
            tok.decode(tok.encode(tok.decode(out[0])))
        if step >= warmup and (step - warmup) % 250 == 0:
            samples.append(rss_mb())
        if verbose and step % 2000 == 0:
            print(f"step {step:6d}  loss {loss:.3f}  rss {rss_mb():7.1f} MB  "
                  f"{time.perf_counter() - t0:6.1f} s", flush=True)
    samples.append(rss_mb())
    del model, opt, tok
    gc.collect()
    return samples


def churn() -> None:
    """Create, save, load and drop models and tokenizers (for the leak check)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        for k in range(3):
            tok = gl.Tokenizer.train("a b ab ba abab " * 10, 262 + k)
            tok.save(os.path.join(d, "t.json"))
            gl.Tokenizer.load(os.path.join(d, "t.json")).encode_batch(["ab ba", "abab"])
            m = gl.GPT(gl.GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1,
                                    n_head=1, n_embd=8), seed=k)
            m.save(os.path.join(d, "m.safetensors"))
            m2 = gl.GPT.load(os.path.join(d, "m.safetensors")).copy()
            m2.generate(np.zeros((2, 1), np.int32), 5, top_k=3, top_p=0.9, seed=k)
            try:
                m2.forward(np.full((1, 2), 10**6))
            except ValueError:
                pass
            del tok, m, m2
    gc.collect()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--warmup", type=int, default=None, help="default: steps // 10")
    p.add_argument("--max-growth-mb", type=float, default=5.0)
    p.add_argument("--leak-check", action="store_true",
                   help="short run for LeakSanitizer: no RSS verdict")
    a = p.parse_args(argv)
    warmup = a.steps // 10 if a.warmup is None else a.warmup
    t0 = time.perf_counter()
    samples = run(a.steps, warmup, verbose=not a.leak_check)
    if a.leak_check:
        churn()
        gc.collect()
        print(f"leak-check run: {a.steps} steps done")
        return 0
    growth = max(samples) - samples[0]
    print(f"{a.steps} steps in {time.perf_counter() - t0:.1f} s; RSS after warm-up "
          f"{samples[0]:.1f} MB, max {max(samples):.1f} MB, growth {growth:.2f} MB "
          f"(limit {a.max_growth_mb} MB)")
    if growth >= a.max_growth_mb:
        print("FAIL: memory grows with the number of steps")
        return 1
    print("OK: RSS flat")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training end to end on the C core: memorisation, determinism, no leak."""

from __future__ import annotations

import numpy as np

import gptlab as gl


def train_steps(seed: int, steps: int, cfg=None) -> gl.GPT:
    cfg = cfg or gl.GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=32)
    model = gl.GPT(cfg, seed=seed)
    opt = gl.AdamW(model, lr=1e-2, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.integers(0, cfg.vocab_size, (4, cfg.block_size + 1))
        model.zero_grad()
        model.forward(idx[:, :-1], idx[:, 1:])
        model.backward()
        opt.clip_and_step(1.0)
    return model


def test_tiny_model_memorises_a_repeated_sequence():
    cfg = gl.GPTConfig(vocab_size=20, block_size=24, n_layer=2, n_head=2, n_embd=32)
    model = gl.GPT(cfg, seed=0)
    opt = gl.AdamW(model, lr=1e-2, weight_decay=0.0)
    seq = np.tile(np.random.default_rng(0).integers(0, 20, 8), 4)[: cfg.block_size + 1]
    idx, tgt = seq[None, :-1].repeat(4, 0), seq[None, 1:].repeat(4, 0)
    mask = np.ones_like(idx)
    mask[:, :7] = 0  # the first period cannot be predicted; the rest is pure memory
    for _ in range(200):
        model.zero_grad()
        loss = model.forward(idx, tgt, mask=mask)
        model.backward()
        opt.clip_and_step(1.0)
    assert loss < 0.05


def test_same_seed_and_threads_give_identical_bytes_after_20_steps():
    a = train_steps(seed=3, steps=20)
    b = train_steps(seed=3, steps=20)
    assert a._param_flat.tobytes() == b._param_flat.tobytes()
    c = train_steps(seed=4, steps=20)
    assert a._param_flat.tobytes() != c._param_flat.tobytes()


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_500_training_cycles_do_not_grow_memory():
    cfg = gl.GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32)
    model = gl.GPT(cfg, seed=0)
    opt = gl.AdamW(model, lr=1e-3)
    idx = np.random.default_rng(0).integers(0, 64, (4, 17)).astype(np.int32)

    def cycle():
        model.zero_grad()
        model.forward(idx[:, :-1], idx[:, 1:])
        model.backward()
        opt.clip_and_step(1.0)
        model.generate(idx[:1, :4], 4, temperature=0.8, seed=1)

    for _ in range(50):  # warm-up: arenas, caches, allocator pools
        cycle()
    before = rss_mb()
    for _ in range(500):
        cycle()
    assert rss_mb() - before < 5.0

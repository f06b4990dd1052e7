"""The C core against a float64 PyTorch GPT-2 built from the same weights (needs torch)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gptlab as gl

torch = pytest.importorskip("torch")
F = torch.nn.functional


def torch_gpt2(P: dict, idx, n_layer: int, n_head: int):
    """GPT-2 forward in float64 PyTorch from a dict of leaf tensors (HF names, Conv1D layout)."""
    B, T = idx.shape
    x = P["wte.weight"][idx] + P["wpe.weight"][:T]
    C = x.shape[-1]
    for i in range(n_layer):
        p = lambda n, i=i: P[f"h.{i}.{n}"]  # noqa: E731
        h = F.layer_norm(x, (C,), p("ln_1.weight"), p("ln_1.bias"), eps=1e-5)
        q, k, v = (h @ p("attn.c_attn.weight") + p("attn.c_attn.bias")).split(C, dim=-1)
        q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).reshape(B, T, C)
        x = x + y @ p("attn.c_proj.weight") + p("attn.c_proj.bias")
        h = F.layer_norm(x, (C,), p("ln_2.weight"), p("ln_2.bias"), eps=1e-5)
        h = F.gelu(h @ p("mlp.c_fc.weight") + p("mlp.c_fc.bias"), approximate="tanh")
        x = x + h @ p("mlp.c_proj.weight") + p("mlp.c_proj.bias")
    x = F.layer_norm(x, (C,), P["ln_f.weight"], P["ln_f.bias"], eps=1e-5)
    return x @ P["wte.weight"].T


def rel_err(a, b) -> float:
    b = b.detach().numpy() if hasattr(b, "detach") else b
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / (np.linalg.norm(b) + 1e-30))


@pytest.mark.parametrize("cfg", [
    gl.GPTConfig(vocab_size=97, block_size=24, n_layer=2, n_head=4, n_embd=32),
    gl.GPTConfig(vocab_size=50, block_size=17, n_layer=3, n_head=3, n_embd=24),
])
def test_logits_loss_and_all_gradients_match_pytorch_float64(cfg):
    m = gl.GPT(cfg, seed=1)
    rng = np.random.default_rng(0)
    for p in m.params.values():  # perturb every tensor so no gradient is trivial
        p += rng.normal(0, 0.05, p.shape).astype(np.float32)
    B, T = 3, cfg.block_size
    idx = rng.integers(0, cfg.vocab_size, (B, T))
    tgt = rng.integers(0, cfg.vocab_size, (B, T))
    mask = rng.random((B, T)) < 0.7

    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in m.params.items()}
    logits_t = torch_gpt2(P, torch.tensor(idx), cfg.n_layer, cfg.n_head)
    nll = F.cross_entropy(logits_t.reshape(-1, cfg.vocab_size), torch.tensor(tgt).reshape(-1),
                          reduction="none")
    mt = torch.tensor(mask.reshape(-1), dtype=torch.float64)
    loss_t = (nll * mt).sum() / mt.sum()
    loss_t.backward()

    assert rel_err(m.forward(idx), logits_t) < 1e-4
    m.zero_grad()
    loss = m.forward(idx, tgt, mask=mask)
    m.backward()
    assert math.isclose(loss, loss_t.item(), rel_tol=1e-5)
    for name in m.grads:
        assert rel_err(m.grads[name], P[name].grad) < 1e-4, name

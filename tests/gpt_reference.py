"""An independent float64 NumPy GPT-2: forward and hand-written backward.

Written for the tests only, straight from the equations (no code shared with gptlab), so that
the C core's forward pass, loss and every gradient can be compared against it.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-5


def ln_fwd(x, w, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + EPS)
    xh = (x - mu) * rstd
    return xh * w + b, (xh, rstd, w)


def ln_bwd(dout, cache):
    xh, rstd, w = cache
    dw = (dout * xh).reshape(-1, xh.shape[-1]).sum(0)
    db = dout.reshape(-1, xh.shape[-1]).sum(0)
    dxh = dout * w
    dx = rstd * (dxh - dxh.mean(-1, keepdims=True) - xh * (dxh * xh).mean(-1, keepdims=True))
    return dx, dw, db


GELU_K = np.sqrt(2.0 / np.pi)


def gelu_fwd(x):
    return 0.5 * x * (1.0 + np.tanh(GELU_K * (x + 0.044715 * x**3)))


def gelu_bwd(dout, x):
    u = GELU_K * (x + 0.044715 * x**3)
    t = np.tanh(u)
    du = GELU_K * (1.0 + 3 * 0.044715 * x**2)
    return dout * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t**2) * du)


def attn_fwd(qkv, n_head):
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // n_head
    q, k, v = (qkv[..., i * C:(i + 1) * C].reshape(B, T, n_head, hs).transpose(0, 2, 1, 3)
               for i in range(3))
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs)
    s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
    s = s - s.max(-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(-1, keepdims=True)
    y = (p @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
    return y, (q, k, v, p, hs)


def attn_bwd(dy, cache):
    q, k, v, p, hs = cache
    B, H, T, _ = q.shape
    dy = dy.reshape(B, T, H, hs).transpose(0, 2, 1, 3)
    dp = dy @ v.transpose(0, 1, 3, 2)
    dv = p.transpose(0, 1, 3, 2) @ dy
    ds = p * (dp - (dp * p).sum(-1, keepdims=True)) / np.sqrt(hs)
    dq = ds @ k
    dk = ds.transpose(0, 1, 3, 2) @ q
    merge = [d.transpose(0, 2, 1, 3).reshape(B, T, H * hs) for d in (dq, dk, dv)]
    return np.concatenate(merge, axis=-1)


def forward(P: dict, idx: np.ndarray, n_layer: int, n_head: int):
    """Returns (logits, hidden, cache) in float64. P maps HF names to float64 arrays."""
    B, T = idx.shape
    x = P["wte.weight"][idx] + P["wpe.weight"][:T]
    caches = []
    for layer in range(n_layer):
        p = lambda n, layer=layer: P[f"h.{layer}.{n}"]  # noqa: E731
        h1, c1 = ln_fwd(x, p("ln_1.weight"), p("ln_1.bias"))
        qkv = h1 @ p("attn.c_attn.weight") + p("attn.c_attn.bias")
        y, ca = attn_fwd(qkv, n_head)
        x2 = x + y @ p("attn.c_proj.weight") + p("attn.c_proj.bias")
        h2, c2 = ln_fwd(x2, p("ln_2.weight"), p("ln_2.bias"))
        f = h2 @ p("mlp.c_fc.weight") + p("mlp.c_fc.bias")
        g = gelu_fwd(f)
        x3 = x2 + g @ p("mlp.c_proj.weight") + p("mlp.c_proj.bias")
        caches.append((x, h1, c1, y, ca, x2, h2, c2, f, g))
        x = x3
    hf, cf = ln_fwd(x, P["ln_f.weight"], P["ln_f.bias"])
    logits = hf @ P["wte.weight"].T
    return logits, hf, (idx, caches, hf, cf)


def cross_entropy(logits, targets, mask=None):
    """Mean CE over masked positions and its gradient w.r.t. the logits."""
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    m = np.ones(targets.shape) if mask is None else mask.astype(np.float64)
    nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    loss = (nll * m).sum() / m.sum()
    d = np.exp(logp)
    np.put_along_axis(d, targets[..., None], np.take_along_axis(d, targets[..., None], -1) - 1, -1)
    return loss, d * (m / m.sum())[..., None]


def backward(P: dict, cache, n_layer: int, dlogits=None, dhidden=None) -> dict:
    """Gradients of every parameter given upstream dlogits and/or dhidden."""
    idx, caches, hf, cf = cache
    G = {k: np.zeros_like(v) for k, v in P.items()}
    dhf = np.zeros_like(hf)
    if dlogits is not None:
        dhf += dlogits @ P["wte.weight"]
        G["wte.weight"] += dlogits.reshape(-1, dlogits.shape[-1]).T @ hf.reshape(-1, hf.shape[-1])
    if dhidden is not None:
        dhf += dhidden
    dx, G["ln_f.weight"], G["ln_f.bias"] = ln_bwd(dhf, cf)
    for layer in reversed(range(n_layer)):
        x, h1, c1, y, ca, x2, h2, c2, f, g = caches[layer]
        p = lambda n, layer=layer: P[f"h.{layer}.{n}"]  # noqa: E731
        pre = f"h.{layer}."
        flat = lambda a: a.reshape(-1, a.shape[-1])  # noqa: E731
        # MLP
        G[pre + "mlp.c_proj.weight"] = flat(g).T @ flat(dx)
        G[pre + "mlp.c_proj.bias"] = flat(dx).sum(0)
        dg = dx @ p("mlp.c_proj.weight").T
        df = gelu_bwd(dg, f)
        G[pre + "mlp.c_fc.weight"] = flat(h2).T @ flat(df)
        G[pre + "mlp.c_fc.bias"] = flat(df).sum(0)
        dh2 = df @ p("mlp.c_fc.weight").T
        dx2, G[pre + "ln_2.weight"], G[pre + "ln_2.bias"] = ln_bwd(dh2, c2)
        dx2 = dx2 + dx
        # attention
        G[pre + "attn.c_proj.weight"] = flat(y).T @ flat(dx2)
        G[pre + "attn.c_proj.bias"] = flat(dx2).sum(0)
        dy = dx2 @ p("attn.c_proj.weight").T
        dqkv = attn_bwd(dy, ca)
        G[pre + "attn.c_attn.weight"] = flat(h1).T @ flat(dqkv)
        G[pre + "attn.c_attn.bias"] = flat(dqkv).sum(0)
        dh1 = dqkv @ p("attn.c_attn.weight").T
        dxa, G[pre + "ln_1.weight"], G[pre + "ln_1.bias"] = ln_bwd(dh1, c1)
        dx = dxa + dx2
    np.add.at(G["wte.weight"], idx.reshape(-1), dx.reshape(-1, dx.shape[-1]))
    G["wpe.weight"][: idx.shape[1]] += dx.sum(0)
    return G

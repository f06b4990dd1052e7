"""Tests of the layer kernels (csrc/layers.c) through their gptlab._core bindings.

Every kernel is compared with an independent float64 NumPy reference written here; every
reference backward is checked against central finite differences, and every C backward against
the reference backward. Backward kernels must ACCUMULATE (+=) into the gradients they are given.
Where torch is installed, attention, layernorm and GELU are also compared with torch autograd.
"""

import numpy as np
import pytest
from isa_paths import available

from gptlab import _core

TOL = 1e-4
EDGE = (1, 7, 17, 63, 65)


# ---- comparison helpers --------------------------------------------------------------------


def assert_close(got, want, tol=TOL, what=""):
    """Norm-based relative error and max-abs error scaled by the reference's magnitude."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert np.all(np.isfinite(got)), f"{what}: non-finite values"
    scale = max(np.linalg.norm(want), 1e-30)
    rel = np.linalg.norm(got - want) / scale
    assert rel <= tol, f"{what}: relative error {rel:.3e} > {tol:.0e}"
    mag = max(np.max(np.abs(want)) if want.size else 0.0, 1e-30)
    err = np.max(np.abs(got - want)) if want.size else 0.0
    assert err <= tol * mag, f"{what}: max abs error {err:.3e} > {tol:.0e} * {mag:.3e}"


def f32(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def fd_check(loss, x, grad, rng, n=12, eps=1e-6, tol=1e-6):
    """Central differences of the scalar loss() w.r.t. up to n random entries of x (float64,
    modified in place and restored) against grad."""
    flat = x.reshape(-1)
    pick = rng.choice(flat.size, size=min(n, flat.size), replace=False)
    num = np.empty(len(pick))
    for j, i in enumerate(pick):
        old = flat[i]
        flat[i] = old + eps
        up = loss()
        flat[i] = old - eps
        down = loss()
        flat[i] = old
        num[j] = (up - down) / (2 * eps)
    ana = grad.reshape(-1)[pick]
    assert np.linalg.norm(num - ana) <= tol * max(np.linalg.norm(ana), 1e-8), (num, ana)


# ---- float64 references --------------------------------------------------------------------


def ref_embedding(idx, wte, wpe):
    T = idx.shape[1]
    return wte[idx] + wpe[None, :T]


def ref_embedding_backward(dout, idx, V, maxT):
    B, T, C = dout.shape
    dwte = np.zeros((V, C))
    np.add.at(dwte, idx.reshape(-1), dout.reshape(-1, C))
    dwpe = np.zeros((maxT, C))
    dwpe[:T] = dout.sum(axis=0)
    return dwte, dwpe


def ref_layernorm(x, w, b, eps=1e-5):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    return (x - mean) * rstd * w + b, mean[..., 0], rstd[..., 0]


def ref_layernorm_backward(dout, x, w, eps=1e-5):
    _, mean, rstd = ref_layernorm(x, w, np.zeros_like(w), eps)
    norm = (x - mean[..., None]) * rstd[..., None]
    g = dout * w
    dx = rstd[..., None] * (g - g.mean(-1, keepdims=True)
                            - norm * (g * norm).mean(-1, keepdims=True))
    C = x.shape[-1]
    dw = (dout * norm).reshape(-1, C).sum(0)
    db = dout.reshape(-1, C).sum(0)
    return dx, dw, db


def ref_matmul(x, w, b):
    out = x @ w
    return out + b if b is not None else out


def ref_matmul_backward(dout, x, w):
    C, OC = w.shape
    return dout @ w.T, x.reshape(-1, C).T @ dout.reshape(-1, OC), dout.reshape(-1, OC).sum(0)


def _heads(qkv, NH):
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // NH
    q, k, v = (a.reshape(B, T, NH, hs).transpose(0, 2, 1, 3) for a in np.split(qkv, 3, -1))
    return q, k, v, hs


def _probs(q, k, hs):
    T = q.shape[2]
    S = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs)                 # (B, NH, T, T)
    S = np.where(np.tril(np.ones((T, T), dtype=bool)), S, -np.inf)  # causal mask
    m = S.max(-1, keepdims=True)
    E = np.exp(S - m)
    ls = E.sum(-1, keepdims=True)
    return E / ls, (m + np.log(ls))[..., 0]


def ref_attention(qkv, NH):
    B, T, C3 = qkv.shape
    q, k, v, hs = _heads(qkv, NH)
    P, lse = _probs(q, k, hs)
    return (P @ v).transpose(0, 2, 1, 3).reshape(B, T, C3 // 3), lse


def ref_attention_backward(dout, qkv, NH):
    B, T, C3 = qkv.shape
    q, k, v, hs = _heads(qkv, NH)
    P, _ = _probs(q, k, hs)
    dy = dout.reshape(B, T, NH, hs).transpose(0, 2, 1, 3)
    dP = dy @ v.transpose(0, 1, 3, 2)
    dv = P.transpose(0, 1, 3, 2) @ dy
    dS = P * (dP - (P * dP).sum(-1, keepdims=True))               # softmax Jacobian
    dq = dS @ k / np.sqrt(hs)
    dk = dS.transpose(0, 1, 3, 2) @ q / np.sqrt(hs)
    back = [a.transpose(0, 2, 1, 3).reshape(B, T, C3 // 3) for a in (dq, dk, dv)]
    return np.concatenate(back, axis=-1)


GK = np.sqrt(2.0 / np.pi)


def ref_gelu(x):
    return 0.5 * x * (1.0 + np.tanh(GK * (x + 0.044715 * x**3)))


def ref_gelu_backward(dout, x):
    th = np.tanh(GK * (x + 0.044715 * x**3))
    return dout * (0.5 * (1 + th) + 0.5 * x * (1 - th**2) * GK * (1 + 3 * 0.044715 * x**2))


def ref_scalar_head(x, w, b):
    return x @ w + b[0]


def ref_scalar_head_backward(dout, x, w):
    C = x.shape[-1]
    return dout[..., None] * w, x.reshape(-1, C).T @ dout.reshape(-1), np.array([dout.sum()])


# ---- the references agree with finite differences -----------------------------------------


def test_reference_backwards_match_finite_differences():
    rng = np.random.default_rng(0)
    # layernorm: x, w, b
    x, w, b = rng.standard_normal((3, 5, 7)), rng.standard_normal(7), rng.standard_normal(7)
    G = rng.standard_normal((3, 5, 7))
    dx, dw, db = ref_layernorm_backward(G, x, w)
    for arr, g in ((x, dx), (w, dw), (b, db)):
        fd_check(lambda: np.sum(ref_layernorm(x, w, b)[0] * G), arr, g, rng)
    # matmul
    x, w, b = rng.standard_normal((2, 3, 5)), rng.standard_normal((5, 4)), rng.standard_normal(4)
    G = rng.standard_normal((2, 3, 4))
    dx, dw, db = ref_matmul_backward(G, x, w)
    for arr, g in ((x, dx), (w, dw), (b, db)):
        fd_check(lambda: np.sum(ref_matmul(x, w, b) * G), arr, g, rng)
    # attention (includes T rows long enough for the mask to matter)
    qkv = rng.standard_normal((2, 6, 3 * 8))
    G = rng.standard_normal((2, 6, 8))
    fd_check(lambda: np.sum(ref_attention(qkv, 2)[0] * G), qkv,
             ref_attention_backward(G, qkv, 2), rng, n=40)
    # gelu
    x = rng.standard_normal(50) * 3
    G = rng.standard_normal(50)
    fd_check(lambda: np.sum(ref_gelu(x) * G), x, ref_gelu_backward(G, x), rng)
    # scalar head
    x, w, b = rng.standard_normal((4, 6)), rng.standard_normal(6), rng.standard_normal(1)
    G = rng.standard_normal(4)
    dx, dw, db = ref_scalar_head_backward(G, x, w)
    for arr, g in ((x, dx), (w, dw), (b, db)):
        fd_check(lambda: np.sum(ref_scalar_head(x, w, b) * G), arr, g, rng)
    # embedding (tables only; ids repeat so the scatter-add is exercised)
    idx = np.array([[1, 1, 0], [2, 1, 1]])
    wte, wpe = rng.standard_normal((4, 5)), rng.standard_normal((6, 5))
    G = rng.standard_normal((2, 3, 5))
    dwte, dwpe = ref_embedding_backward(G, idx, 4, 6)
    for arr, g in ((wte, dwte), (wpe, dwpe)):
        fd_check(lambda: np.sum(ref_embedding(idx, wte, wpe) * G), arr, g, rng)


# ---- C kernels against the references ------------------------------------------------------


@pytest.mark.parametrize("B,T,C", [(1, 1, 1), (2, 7, 17), (3, 17, 63), (1, 65, 65), (2, 5, 128)])
def test_embedding_matches_reference_and_accumulates(B, T, C):
    rng = np.random.default_rng(B * 1000 + T * 10 + C)
    V, maxT = 11, T + 3
    idx = rng.integers(0, V, size=(B, T)).astype(np.int32)
    wte, wpe = f32(rng, V, C), f32(rng, maxT, C)
    assert_close(_core.embedding_forward(idx, wte, wpe), ref_embedding(idx, wte, wpe), what="out")
    dout = f32(rng, B, T, C)
    dwte0, dwpe0 = f32(rng, V, C), f32(rng, maxT, C)
    dwte, dwpe = dwte0.copy(), dwpe0.copy()
    _core.embedding_backward(dwte, dwpe, dout, idx)
    want_wte, want_wpe = ref_embedding_backward(dout.astype(np.float64), idx, V, maxT)
    assert_close(dwte - dwte0.astype(np.float64), want_wte, what="dwte")
    assert_close(dwpe - dwpe0.astype(np.float64), want_wpe, what="dwpe")


@pytest.mark.parametrize("N", EDGE)
@pytest.mark.parametrize("C", EDGE + (1024,))
def test_layernorm_matches_reference(N, C):
    rng = np.random.default_rng(N * 7919 + C)
    x = f32(rng, N, C, scale=2.0) + np.float32(rng.standard_normal())
    w, b = f32(rng, C), f32(rng, C)
    out, mean, rstd = _core.layernorm_forward(x, w, b)
    want_out, want_mean, want_rstd = ref_layernorm(*(a.astype(np.float64) for a in (x, w, b)))
    assert_close(out, want_out, what="out")
    assert_close(mean, want_mean, what="mean")
    assert_close(rstd, want_rstd, what="rstd")
    dout = f32(rng, N, C)
    dx, dw, db = f32(rng, N, C), f32(rng, C), f32(rng, C)
    dx0, dw0, db0 = dx.astype(np.float64), dw.astype(np.float64), db.astype(np.float64)
    _core.layernorm_backward(dx, dw, db, dout, x, w, mean, rstd)
    want = ref_layernorm_backward(*(a.astype(np.float64) for a in (dout, x, w)))
    for got, base, ref, name in zip((dx, dw, db), (dx0, dw0, db0), want, ("dx", "dw", "db")):
        assert_close(got - base, ref, what=name)


def test_layernorm_keeps_leading_axes_and_handles_an_offset():
    """(B, T, C) input; a large common offset must not ruin the float32 statistics."""
    rng = np.random.default_rng(1)
    x = f32(rng, 2, 3, 1024) + np.float32(30.0)
    w, b = f32(rng, 1024), f32(rng, 1024)
    out, mean, rstd = _core.layernorm_forward(x, w, b)
    assert out.shape == (2, 3, 1024) and mean.shape == (2, 3) and rstd.shape == (2, 3)
    want = ref_layernorm(*(a.astype(np.float64) for a in (x, w, b)))
    for got, ref in zip((out, mean, rstd), want):
        assert_close(got, ref)


@pytest.mark.parametrize("N,C,OC", [(1, 1, 1), (7, 17, 63), (65, 63, 17), (17, 65, 7), (3, 7, 65)])
@pytest.mark.parametrize("bias", [True, False])
def test_matmul_matches_reference_and_accumulates(N, C, OC, bias):
    rng = np.random.default_rng(N * 10007 + C * 101 + OC)
    x, w = f32(rng, N, C), f32(rng, C, OC)
    b = f32(rng, OC) if bias else None
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    want = ref_matmul(x64, w64, b.astype(np.float64) if bias else None)
    assert_close(_core.matmul_forward(x, w, b), want, what="out")
    dout = f32(rng, N, OC)
    dx, dw, db = f32(rng, N, C), f32(rng, C, OC), f32(rng, OC)
    base = [a.astype(np.float64) for a in (dx, dw, db)]
    _core.matmul_backward(dx, dw, db if bias else None, dout, x, w)
    want_dx, want_dw, want_db = ref_matmul_backward(dout.astype(np.float64), x64, w64)
    assert_close(dx - base[0], want_dx, what="dx")
    assert_close(dw - base[1], want_dw, what="dw")
    if bias:
        assert_close(db - base[2], want_db, what="db")
    else:
        assert np.array_equal(db, base[2].astype(np.float32)), "db=None must leave db alone"


def test_matmul_backward_without_dx_only_touches_dw_and_db():
    rng = np.random.default_rng(2)
    x, w, dout = f32(rng, 2, 5, 6), f32(rng, 6, 3), f32(rng, 2, 5, 3)
    out = _core.matmul_forward(x, w)
    assert out.shape == (2, 5, 3)
    dw, db = np.zeros((6, 3), np.float32), np.zeros(3, np.float32)
    _core.matmul_backward(None, dw, db, dout, x, w)
    _, want_dw, want_db = ref_matmul_backward(dout.astype(np.float64), x.astype(np.float64),
                                              w.astype(np.float64))
    assert_close(dw, want_dw)
    assert_close(db, want_db)


@pytest.mark.parametrize("N,C,OC", [(0, 5, 3), (1, 1, 1), (7, 17, 63), (300, 65, 130)])
def test_matmul_and_layernorm_backward_write_weight_gradients_without_accumulate(N, C, OC):
    """accumulate=False: dw and db are written, never read (they start as NaN here), and equal
    the float64 reference; dx still accumulates. N = 0 rows writes zeros; 300 rows makes
    three of layernorm's 128-row blocks and a bias sum on both threads."""
    rng = np.random.default_rng(N + C + OC)
    x, w, dout = f32(rng, N, C), f32(rng, C, OC), f32(rng, N, OC)
    dx = f32(rng, N, C)
    dx0 = dx.astype(np.float64)
    dw, db = np.full((C, OC), np.nan, np.float32), np.full(OC, np.nan, np.float32)
    _core.matmul_backward(dx, dw, db, dout, x, w, False)
    want_dx, want_dw, want_db = ref_matmul_backward(dout.astype(np.float64),
                                                    x.astype(np.float64), w.astype(np.float64))
    assert_close(dx - dx0, want_dx, what="dx")
    assert_close(dw, want_dw, what="dw")
    assert_close(db, want_db, what="db")
    lw, lb = f32(rng, C), f32(rng, C)
    _, mean, rstd = _core.layernorm_forward(x, lw, lb)
    dout = f32(rng, N, C)
    dx = f32(rng, N, C)
    dx0 = dx.astype(np.float64)
    dw, db = np.full(C, np.nan, np.float32), np.full(C, np.nan, np.float32)
    _core.layernorm_backward(dx, dw, db, dout, x, lw, mean, rstd, False)
    want = ref_layernorm_backward(*(a.astype(np.float64) for a in (dout, x, lw)))
    assert_close(dx - dx0, want[0], what="ln dx")
    assert_close(dw, want[1], what="ln dw")
    assert_close(db, want[2], what="ln db")


ATTN_SHAPES = [
    (1, 1, 4, 1),      # T = 1: each query sees only itself
    (2, 7, 17, 1),     # NH = 1, odd head size
    (1, 17, 63, 7),    # hs = 9
    (2, 65, 16, 4),    # T over a 64 block
    (1, 63, 65, 5),    # hs = 13
    (1, 300, 8, 2),    # T over several 64-key blocks and 64-query tiles
    (1, 70, 130, 1),   # hs = 130: the head dimension walked in chunks of 64
    (2, 129, 192, 2),  # hs = 96, T just over two tiles
    (1, 130, 64, 2),   # hs = 32: whole 6 x 16 register blocks, T over one 128-key block
    (2, 100, 128, 2),  # hs = 64, T not a multiple of the 64-query tile
]


@pytest.mark.parametrize("B,T,C,NH", ATTN_SHAPES)
def test_attention_matches_explicit_causal_reference(B, T, C, NH):
    rng = np.random.default_rng(B * 31 + T * 7 + C * 3 + NH)
    qkv = f32(rng, B, T, 3 * C)
    out, lse = _core.attention_forward(qkv, NH)
    q64 = qkv.astype(np.float64)
    want_out, want_lse = ref_attention(q64, NH)
    assert out.shape == (B, T, C) and lse.shape == (B, NH, T)
    assert_close(out, want_out, what="out")
    assert_close(lse, want_lse, what="lse")
    dout = f32(rng, B, T, C)
    dqkv = f32(rng, B, T, 3 * C)
    base = dqkv.astype(np.float64)
    _core.attention_backward(dqkv, dout, qkv, out, lse, NH)
    assert_close(dqkv - base, ref_attention_backward(dout.astype(np.float64), q64, NH),
                 what="dqkv")


def test_attention_is_stable_with_peaked_softmax():
    """Large scores (near one-hot rows, maximum growing along the row) stay accurate: the
    online softmax rescales when a later key block holds a larger score."""
    rng = np.random.default_rng(3)
    B, T, C, NH = 1, 260, 16, 2
    qkv = f32(rng, B, T, 3 * C)
    qkv[..., :C] *= 6.0
    qkv[..., C:2 * C] *= np.linspace(0.2, 6.0, T, dtype=np.float32)[None, :, None]
    out, lse = _core.attention_forward(qkv, NH)
    want_out, want_lse = ref_attention(qkv.astype(np.float64), NH)
    assert_close(out, want_out, what="out")
    assert_close(lse, want_lse, what="lse")
    dout = f32(rng, B, T, C)
    dqkv = np.zeros_like(qkv)
    _core.attention_backward(dqkv, dout, qkv, out, lse, NH)
    want = ref_attention_backward(dout.astype(np.float64), qkv.astype(np.float64), NH)
    assert_close(dqkv, want, tol=3e-4, what="dqkv")


def test_attention_row_ignores_future_positions():
    """Changing keys/values at t > t0 must not change out[:, :t0+1] (causality)."""
    rng = np.random.default_rng(4)
    qkv = f32(rng, 2, 9, 3 * 12)
    out1, lse1 = _core.attention_forward(qkv, 3)
    qkv2 = qkv.copy()
    qkv2[:, 5:] = f32(rng, 2, 4, 36)
    out2, lse2 = _core.attention_forward(qkv2, 3)
    assert np.array_equal(out1[:, :5], out2[:, :5])
    assert np.array_equal(lse1[:, :, :5], lse2[:, :, :5])
    assert not np.array_equal(out1[:, 5:], out2[:, 5:])


@pytest.mark.parametrize("shape", [(1,), (7,), (17, 3), (63, 65), (4, 5, 65)])
def test_gelu_matches_reference_and_accumulates(shape):
    rng = np.random.default_rng(sum(shape))
    x = f32(rng, *shape, scale=3.0)
    assert_close(_core.gelu_forward(x), ref_gelu(x.astype(np.float64)), what="out")
    dout, dx = f32(rng, *shape), f32(rng, *shape)
    base = dx.astype(np.float64)
    _core.gelu_backward(dx, x, dout)
    want = ref_gelu_backward(dout.astype(np.float64), x.astype(np.float64))
    assert_close(dx - base, want, what="dx")



@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
@pytest.mark.parametrize("n", [1, 17, 100_003])
def test_gelu_backward_without_accumulate_overwrites_dx_with_the_bits_of_a_zeroed_one(isa, n):
    """accumulate=False (what the model's backward pass uses, skipping a memset of dx) must
    ignore dx's old contents -- NaN here -- and give exactly the bits of accumulating into
    zeros, on every SIMD path."""
    if isa not in ("portable", *SIMD_ISAS):
        pytest.skip(f"{isa} not available on this CPU")
    rng = np.random.default_rng(n)
    x, dout = f32(rng, n, scale=4.0), f32(rng, n)
    dout[: n // 2] = 0.0  # products of -0 and +0: the sign of zero must match too

    def run():
        zeroed, garbage = np.zeros(n, np.float32), np.full(n, np.nan, np.float32)
        _core.gelu_backward(zeroed, x, dout)
        _core.gelu_backward(garbage, x, dout, False)
        return zeroed, garbage

    zeroed, overwritten = _on_isa(isa, run)
    assert np.array_equal(zeroed.view(np.uint32), overwritten.view(np.uint32))
    assert_close(overwritten, ref_gelu_backward(dout.astype(np.float64), x.astype(np.float64)))

def test_gelu_large_array_runs_parallel_path():
    rng = np.random.default_rng(5)
    x = f32(rng, 100_003, scale=4.0)
    assert_close(_core.gelu_forward(x), ref_gelu(x.astype(np.float64)))
    dx = np.zeros_like(x)
    dout = f32(rng, 100_003)
    _core.gelu_backward(dx, x, dout)
    assert_close(dx, ref_gelu_backward(dout.astype(np.float64), x.astype(np.float64)))


@pytest.mark.parametrize("n", [1, 7, 65, 70_001])
def test_residual_adds_and_backward_accumulates_into_both(n):
    rng = np.random.default_rng(n)
    a, b = f32(rng, n), f32(rng, n)
    assert np.array_equal(_core.residual_forward(a, b), a + b)
    dout, da, db = f32(rng, n), f32(rng, n), f32(rng, n)
    da0, db0 = da.copy(), db.copy()
    _core.residual_backward(da, db, dout)
    assert np.array_equal(da, da0 + dout) and np.array_equal(db, db0 + dout)


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
@pytest.mark.parametrize("N,C", [(1, 1), (7, 17), (17, 63), (65, 65), (1000, 65), (3, 1024)])
def test_residual_layernorm_is_the_residual_then_the_layernorm(isa, N, C):
    """The fused residual + layernorm of the forward pass: res = a + x, then layernorm(res),
    bit for bit what the two kernels give one after the other on the same ISA path, and close
    to the float64 reference of layernorm(a + x)."""
    if isa not in ("portable", *SIMD_ISAS):
        pytest.skip(f"{isa} not available on this CPU")
    rng = np.random.default_rng(N * 31 + C)
    a, x = f32(rng, 2, N, C), f32(rng, 2, N, C, scale=3.0) + np.float32(2.0)
    w, b = f32(rng, C), f32(rng, C)
    _core.gemm_set_isa(isa)
    try:
        res, out, mean, rstd = _core.residual_layernorm_forward(a, x, w, b)
        want_res = _core.residual_forward(a, x)
        want = _core.layernorm_forward(want_res, w, b)
    finally:
        _core.gemm_set_isa("auto")
    assert res.shape == out.shape == (2, N, C) and mean.shape == rstd.shape == (2, N)
    assert np.array_equal(res, want_res)
    for got, ref in zip((out, mean, rstd), want):
        assert np.array_equal(got, ref)
    ref = ref_layernorm(a.astype(np.float64) + x, w.astype(np.float64), b.astype(np.float64))
    for got, r, name in zip((out, mean, rstd), ref, ("out", "mean", "rstd")):
        assert_close(got, r, what=name)


@pytest.mark.parametrize("N,C", [(1, 1), (7, 17), (65, 63), (17, 65), (3, 1024)])
def test_scalar_head_matches_reference_and_accumulates(N, C):
    rng = np.random.default_rng(N * 131 + C)
    x, w, b = f32(rng, N, C), f32(rng, C), f32(rng, 1)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    assert_close(_core.scalar_head_forward(x, w, b), ref_scalar_head(x64, w64, b.astype(float)))
    dout = f32(rng, N)
    dx, dw, db = f32(rng, N, C), f32(rng, C), f32(rng, 1)
    base = [a.astype(np.float64) for a in (dx, dw, db)]
    _core.scalar_head_backward(dx, dw, db, dout, x, w)
    want = ref_scalar_head_backward(dout.astype(np.float64), x64, w64)
    for got, b0, ref, name in zip((dx, dw, db), base, want, ("dx", "dw", "db")):
        assert_close(got - b0, ref, what=name)
    dw2 = np.zeros_like(dw)
    _core.scalar_head_backward(None, dw2, np.zeros(1, np.float32), dout, x, w)
    assert_close(dw2, want[1], what="dw without dx")


def test_scalar_head_keeps_leading_axes():
    rng = np.random.default_rng(6)
    x, w, b = f32(rng, 2, 3, 8), f32(rng, 8), f32(rng, 1)
    out = _core.scalar_head_forward(x, w, b)
    assert out.shape == (2, 3)
    assert_close(out, ref_scalar_head(x.astype(float), w.astype(float), b.astype(float)))


def test_backward_twice_doubles_the_gradient():
    """Accumulation, not assignment: two identical backward calls from zero give 2x one call."""
    rng = np.random.default_rng(7)
    qkv, dout = f32(rng, 2, 9, 24), f32(rng, 2, 9, 8)
    out, lse = _core.attention_forward(qkv, 2)
    once, twice = np.zeros_like(qkv), np.zeros_like(qkv)
    _core.attention_backward(once, dout, qkv, out, lse, 2)
    _core.attention_backward(twice, dout, qkv, out, lse, 2)
    _core.attention_backward(twice, dout, qkv, out, lse, 2)
    assert_close(twice, 2 * once.astype(np.float64), tol=1e-6)
    x, w, b = f32(rng, 5, 9), f32(rng, 9), f32(rng, 9)
    _, mean, rstd = _core.layernorm_forward(x, w, b)
    g = [np.zeros((5, 9), np.float32), np.zeros(9, np.float32), np.zeros(9, np.float32)]
    g2 = [np.zeros_like(a) for a in g]
    d = f32(rng, 5, 9)
    _core.layernorm_backward(*g, d, x, w, mean, rstd)
    for _ in range(2):
        _core.layernorm_backward(*g2, d, x, w, mean, rstd)
    for a, a2 in zip(g, g2):
        assert_close(a2, 2 * a.astype(np.float64), tol=1e-6)


@pytest.mark.parametrize("N, C", [(301, 300), (128, 7), (257, 1030)])
def test_layernorm_weight_gradients_sum_blocks_of_128_rows_in_order(N, C):
    """dw, db are summed in double over blocks of 128 rows (each block's rows in order, then
    the blocks in order) and added to the float32 gradients: exactly these bits, on 1, 2 and 3
    threads -- blocks cut short (301, 257 rows), columns past one 256-wide pass (300, 1030)."""
    rng = np.random.default_rng(N + C)
    x, w, b = f32(rng, N, C), f32(rng, C), f32(rng, C)
    dout, dw0, db0 = f32(rng, N, C), f32(rng, C), f32(rng, C)
    _, mean, rstd = _core.layernorm_forward(x, w, b)
    norm = (x - mean[:, None]) * rstd[:, None]  # float32, as the kernel computes it
    terms = (np.float64(dout) * np.float64(norm), np.float64(dout))
    want = []
    for t, g0 in zip(terms, (dw0, db0)):
        blocks = [np.cumsum(t[n0:n0 + 128], axis=0)[-1] for n0 in range(0, N, 128)]
        want.append(g0 + np.cumsum(blocks, axis=0)[-1].astype(np.float32))
    before = _core.get_num_threads()
    try:
        for threads in (1, 2, 3):
            _core.set_num_threads(threads)
            dx, dw, db = np.zeros_like(x), dw0.copy(), db0.copy()
            _core.layernorm_backward(dx, dw, db, dout, x, w, mean, rstd)
            np.testing.assert_array_equal(dw, want[0])
            np.testing.assert_array_equal(db, want[1])
    finally:
        _core.set_num_threads(before)


@pytest.mark.parametrize("N, OC", [(301, 300), (128, 7), (257, 1030), (2048, 576)])
def test_bias_gradient_sums_blocks_of_128_rows_in_order(N, OC):
    """db is summed as layernorm's weights are: in double over blocks of 128 rows (each
    block's rows in order, by the thread that owns them), then the blocks in order, and added
    to the float32 gradient: exactly these bits, on 1, 2 and 3 threads. Column 0, past 256
    rows, tells the order apart: 1e20, then ones, then -1e20 at row 128, then ones sums to 127
    in one chain (the first ones vanish beside 1e20) and to 0 by blocks (all of them do)."""
    rng = np.random.default_rng(N + OC)
    x, w, dout, db0 = f32(rng, N, 5), f32(rng, 5, OC), f32(rng, N, OC), f32(rng, OC)
    if N >= 256:
        dout[:256, 0] = 1.0
        dout[0, 0], dout[128, 0], db0[0] = 1e20, -1e20, 0.0
    blocks = [np.cumsum(np.float64(dout[n0:n0 + 128]), axis=0)[-1] for n0 in range(0, N, 128)]
    want = db0 + np.cumsum(blocks, axis=0)[-1].astype(np.float32)
    before = _core.get_num_threads()
    try:
        for threads in (1, 2, 3):
            _core.set_num_threads(threads)
            db = db0.copy()
            _core.matmul_backward(None, np.zeros((5, OC), np.float32), db, dout, x, w)
            np.testing.assert_array_equal(db, want)
    finally:
        _core.set_num_threads(before)
    if N >= 256:
        assert want[0] == np.float32(np.sum(np.float64(dout[256:, 0])))


def test_results_do_not_depend_on_thread_count():
    """Fixed-order sums: the layers kernels give bitwise-identical results on 1 and 2 threads."""
    rng = np.random.default_rng(8)
    qkv, dqout = f32(rng, 2, 40, 3 * 16), f32(rng, 2, 40, 16)
    x, w, b = f32(rng, 80, 130), f32(rng, 130), f32(rng, 130)
    idx = rng.integers(0, 5, size=(4, 20)).astype(np.int32)
    wte, wpe, eout = f32(rng, 5, 130), f32(rng, 20, 130), f32(rng, 4, 20, 130)

    def run():
        out, lse = _core.attention_forward(qkv, 4)
        dqkv = np.zeros_like(qkv)
        _core.attention_backward(dqkv, dqout, qkv, out, lse, 4)
        y, mean, rstd = _core.layernorm_forward(x, w, b)
        dx, dw, db = np.zeros_like(x), np.zeros_like(w), np.zeros_like(b)
        _core.layernorm_backward(dx, dw, db, x, x, w, mean, rstd)
        dwte, dwpe = np.zeros_like(wte), np.zeros_like(wpe)
        _core.embedding_backward(dwte, dwpe, eout, idx)
        return [out, lse, dqkv, y, dx, dw, db, dwte, dwpe]

    before = _core.get_num_threads()
    try:
        _core.set_num_threads(1)
        one = run()
        _core.set_num_threads(2)
        two = run()
        again = run()
    finally:
        _core.set_num_threads(before)
    for a, b2, c in zip(one, two, again):
        assert np.array_equal(a, b2) and np.array_equal(b2, c)


# The SIMD builds this CPU runs (gl_gemm_set_isa switches the whole core).
SIMD_ISAS = available(_core.gemm_set_isa, ("avx2", "avx512"))


def _on_isa(isa, fn):
    """fn() with the whole core forced onto one instruction-set path."""
    before = _core.gemm_isa()
    try:
        _core.gemm_set_isa(isa)
        return fn()
    finally:
        _core.gemm_set_isa(before)


@pytest.mark.parametrize("isa", ["avx2", "avx512"])
def test_simd_and_portable_paths_agree_bitwise(isa):
    """The AVX2 and AVX-512 builds of the bias gradient run the same arithmetic in the same
    order as the portable one (gl_gemm_set_isa("portable") switches the whole core). GELU and
    attention fuse their multiply-adds in the SIMD builds: see the tests below."""
    if isa not in SIMD_ISAS:
        pytest.skip(f"no {isa} path on this CPU/build")
    rng = np.random.default_rng(10)
    xm, wm, dy = f32(rng, 300, 20), f32(rng, 20, 197), f32(rng, 300, 197, scale=100.0)

    def run():
        db = np.full(197, 0.25, np.float32)
        _core.matmul_backward(None, np.zeros_like(wm), db, dy, xm, wm)
        return [db]

    simd, portable = _on_isa(isa, run), _on_isa("portable", run)
    for a, b in zip(simd, portable):
        assert np.array_equal(a, b)


def run_gelu(x, dout, dx_in):
    """gelu(x), and gelu'(x) * dout accumulated into a copy of dx_in and written over NaN."""
    dx, over = dx_in.copy(), np.full_like(x, np.nan)
    _core.gelu_backward(dx, x, dout)
    _core.gelu_backward(over, x, dout, False)
    return [_core.gelu_forward(x), dx, over]


def gelu_inputs(seed=10, n=50_003):
    """x over GELU's whole range (both tails, the exponential's clamps at |2u| > 87), dout, dx."""
    rng = np.random.default_rng(seed)
    x = f32(rng, n, scale=4.0)
    x[:7] = [0.0, -0.0, 40.0, -40.0, 1e-30, -9.0, 9.0]
    return x, f32(rng, n), f32(rng, n)


def test_gelu_avx2_and_avx512_agree_bitwise():
    """The AVX2 and AVX-512 builds of GELU fuse the same multiply-adds (fmaf: one rounding,
    whatever the vector width): the same bits, forward and backward."""
    if set(SIMD_ISAS) != {"avx2", "avx512"}:
        pytest.skip("needs both the AVX2 and the AVX-512 path")
    x, dout, dx_in = gelu_inputs()
    avx2 = _on_isa("avx2", lambda: run_gelu(x, dout, dx_in))
    avx512 = _on_isa("avx512", lambda: run_gelu(x, dout, dx_in))
    for a, b in zip(avx2, avx512):
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("isa", ["avx2", "avx512"])
def test_gelu_simd_paths_fuse_what_the_portable_path_rounds_twice(isa):
    """Against the portable build (a multiply, then an add) the SIMD builds' GELU differs by
    float32 rounding only -- and does differ: the fused path is really taken."""
    if isa not in SIMD_ISAS:
        pytest.skip(f"no {isa} path on this CPU/build")
    x, dout, dx_in = gelu_inputs()
    simd = _on_isa(isa, lambda: run_gelu(x, dout, dx_in))
    portable = _on_isa("portable", lambda: run_gelu(x, dout, dx_in))
    for a, b, what in zip(simd, portable, ("gelu", "dx", "dx over NaN")):
        assert_close(a, b.astype(np.float64), tol=1e-6, what=what)
        assert not np.array_equal(a, b), what


def run_attention(qkv, dout, NH):
    """(out, lse, dqkv) of one forward and one backward call, dqkv accumulated from zero."""
    out, lse = _core.attention_forward(qkv, NH)
    dqkv = np.zeros_like(qkv)
    _core.attention_backward(dqkv, dout, qkv, out, lse, NH)
    return out, lse, dqkv



@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
@pytest.mark.parametrize("B,T,C,NH", [(2, 67, 52, 4), (3, 130, 64, 2), (1, 1, 8, 1)])
def test_attention_backward_without_accumulate_overwrites_dqkv_with_the_bits_of_a_zeroed_one(
        isa, B, T, C, NH):
    """accumulate=False (the model's backward pass: each head zeroes its own columns, no memset
    of the whole buffer) must ignore dqkv's old contents -- NaN here, in every column of q, k
    and v -- and give exactly the bits of accumulating into zeros."""
    if isa not in ("portable", *SIMD_ISAS):
        pytest.skip(f"{isa} not available on this CPU")
    rng = np.random.default_rng(T)
    qkv, dout = f32(rng, B, T, 3 * C), f32(rng, B, T, C)

    def run():
        out, lse = _core.attention_forward(qkv, NH)
        zeroed, garbage = np.zeros_like(qkv), np.full_like(qkv, np.nan)
        _core.attention_backward(zeroed, dout, qkv, out, lse, NH)
        _core.attention_backward(garbage, dout, qkv, out, lse, NH, False)
        return zeroed, garbage

    zeroed, overwritten = _on_isa(isa, run)
    assert np.array_equal(zeroed.view(np.uint32), overwritten.view(np.uint32))

# Shapes that take every path of the tiled attention: hs = 32 and 64 (whole register blocks),
# hs = 130 (the head dimension in chunks of 64), hs = 13 (edge blocks only); T over several
# 64-row tiles (and 128-key forward blocks) and not a multiple of the 6-row register block.
ATTN_PATH_SHAPES = [(2, 130, 64, 2), (1, 100, 128, 2), (1, 70, 130, 1), (1, 67, 52, 4)]


@pytest.mark.parametrize("B,T,C,NH", ATTN_PATH_SHAPES)
def test_attention_avx2_and_avx512_agree_bitwise_on_every_block_path(B, T, C, NH):
    """The AVX2 and AVX-512 builds of the register-blocked attention compute the same sums in
    the same order, each multiply-add of the products fused (one rounding), for full and edge
    blocks and chunked head dimensions alike: the same bits, 8 or 16 floats to a vector."""
    if set(SIMD_ISAS) != {"avx2", "avx512"}:
        pytest.skip("needs both the AVX2 and the AVX-512 path")
    rng = np.random.default_rng(B * 7 + T + C + NH)
    qkv, dout = f32(rng, B, T, 3 * C), f32(rng, B, T, C)
    avx2 = _on_isa("avx2", lambda: run_attention(qkv, dout, NH))
    avx512 = _on_isa("avx512", lambda: run_attention(qkv, dout, NH))
    for a, b in zip(avx2, avx512):
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("isa", ["avx2", "avx512"])
@pytest.mark.parametrize("B,T,C,NH", ATTN_PATH_SHAPES)
def test_attention_simd_paths_fuse_what_the_portable_path_rounds_twice(B, T, C, NH, isa):
    """Against the portable build (a multiply, then an add) a SIMD build's fused products
    differ only by float32 rounding -- and they do differ: the fused path is really taken,
    in full blocks and edges alike."""
    if isa not in SIMD_ISAS:
        pytest.skip(f"no {isa} path on this CPU/build")
    rng = np.random.default_rng(B * 7 + T + C + NH)
    qkv, dout = f32(rng, B, T, 3 * C), f32(rng, B, T, C)
    simd = _on_isa(isa, lambda: run_attention(qkv, dout, NH))
    portable = _on_isa("portable", lambda: run_attention(qkv, dout, NH))
    for a, b, what in zip(simd, portable, ("out", "lse", "dqkv")):
        assert_close(a, b.astype(np.float64), tol=1e-5, what=what)
    assert not np.array_equal(simd[2], portable[2])


@pytest.mark.parametrize("B,T,C,NH", ATTN_PATH_SHAPES)
def test_attention_does_not_depend_on_thread_count_across_tiles(B, T, C, NH):
    """Query tiles (forward) and heads (backward) are shared out between threads, but every
    sum stays inside one of them: 1, 2 and 3 threads give the same bits."""
    rng = np.random.default_rng(B + T * 3 + C + NH)
    qkv, dout = f32(rng, B, T, 3 * C), f32(rng, B, T, C)
    before = _core.get_num_threads()
    try:
        runs = []
        for n in (1, 2, 3):
            _core.set_num_threads(n)
            runs.append(run_attention(qkv, dout, NH))
    finally:
        _core.set_num_threads(before)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert np.array_equal(a, b)


# ---- PyTorch parity (float64 autograd) -----------------------------------------------------


def test_attention_layernorm_gelu_match_torch_autograd():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(9)

    B, T, C, NH = 2, 33, 24, 3
    qkv, dout = f32(rng, B, T, 3 * C), f32(rng, B, T, C)
    out, lse = _core.attention_forward(qkv, NH)
    dqkv = np.zeros_like(qkv)
    _core.attention_backward(dqkv, dout, qkv, out, lse, NH)
    tq = torch.tensor(qkv, dtype=torch.float64, requires_grad=True)
    q, k, v = (a.view(B, T, NH, C // NH).transpose(1, 2) for a in tq.split(C, dim=2))
    ty = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
    ty.backward(torch.tensor(dout, dtype=torch.float64))
    assert_close(out, ty.detach().numpy(), what="attention out")
    assert_close(dqkv, tq.grad.numpy(), what="attention dqkv")

    x, w, b, d = f32(rng, 5, 7, 65), f32(rng, 65), f32(rng, 65), f32(rng, 5, 7, 65)
    y, mean, rstd = _core.layernorm_forward(x, w, b)
    dx, dw, db = np.zeros_like(x), np.zeros_like(w), np.zeros_like(b)
    _core.layernorm_backward(dx, dw, db, d, x, w, mean, rstd)
    tx, tw, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    ty = F.layer_norm(tx, (65,), tw, tb, eps=1e-5)
    ty.backward(torch.tensor(d, dtype=torch.float64))
    assert_close(y, ty.detach().numpy(), what="layernorm out")
    for got, t, name in ((dx, tx, "dx"), (dw, tw, "dw"), (db, tb, "db")):
        assert_close(got, t.grad.numpy(), what=f"layernorm {name}")

    x, d = f32(rng, 17, 63, scale=3.0), f32(rng, 17, 63)
    dx = np.zeros_like(x)
    _core.gelu_backward(dx, x, d)
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    ty = F.gelu(tx, approximate="tanh")
    ty.backward(torch.tensor(d, dtype=torch.float64))
    assert_close(_core.gelu_forward(x), ty.detach().numpy(), what="gelu out")
    assert_close(dx, tx.grad.numpy(), what="gelu dx")


# ---- bad input -----------------------------------------------------------------------------


def _bad_cases():
    z = np.zeros
    x, w, b = z((3, 4), np.float32), z(4, np.float32), z(4, np.float32)
    qkv = z((2, 5, 12), np.float32)
    idx = z((2, 5), np.int32)
    wte, wpe = z((10, 4), np.float32), z((8, 4), np.float32)
    ro = z((3, 4), np.float32)
    ro.flags.writeable = False
    lse = z((2, 2, 5), np.float32)
    out = z((2, 5, 4), np.float32)
    return [
        # wrong dtype
        (TypeError, _core.layernorm_forward, (x.astype(np.float64), w, b)),
        (TypeError, _core.layernorm_forward, (x.tolist(), w, b)),
        (TypeError, _core.matmul_forward, (x, z((4, 2), np.float16))),
        (TypeError, _core.embedding_forward, (idx.astype(np.int64), wte, wpe)),
        (TypeError, _core.embedding_forward, (idx.astype(np.float32), wte, wpe)),
        (TypeError, _core.attention_forward, (qkv.astype(np.float64), 2)),
        (TypeError, _core.gelu_forward, (x.astype(np.int32),)),
        (TypeError, _core.residual_forward, (x, x.astype(np.float64))),
        (TypeError, _core.residual_layernorm_forward, (x, x.astype(np.float64), w, b)),
        (TypeError, _core.scalar_head_forward, (x, w, [0.0])),
        # wrong rank or shape
        (ValueError, _core.layernorm_forward, (z((), np.float32), w, b)),
        (ValueError, _core.layernorm_forward, (x, z((4, 1), np.float32), b)),
        (ValueError, _core.layernorm_forward, (x, z(5, np.float32), b)),
        (ValueError, _core.layernorm_forward, (z((3, 0), np.float32), z(0, np.float32),
                                               z(0, np.float32))),
        (ValueError, _core.layernorm_backward, (z((3, 5), np.float32), w, b, x, x, w,
                                                z(3, np.float32), z(3, np.float32))),
        (ValueError, _core.layernorm_backward, (z((3, 4), np.float32), w, b, x, x, w,
                                                z(4, np.float32), z(3, np.float32))),
        (ValueError, _core.matmul_forward, (x, z((5, 2), np.float32))),
        (ValueError, _core.matmul_forward, (x, z((4, 2), np.float32), z(3, np.float32))),
        (ValueError, _core.matmul_backward, (None, z((4, 2), np.float32), None,
                                             z((3, 3), np.float32), x, z((4, 2), np.float32))),
        (ValueError, _core.matmul_backward, (ro, z((4, 2), np.float32), None,
                                             z((3, 2), np.float32), x, z((4, 2), np.float32))),
        (ValueError, _core.attention_forward, (z((5, 12), np.float32), 2)),
        (ValueError, _core.attention_forward, (z((2, 5, 13), np.float32), 1)),
        (ValueError, _core.attention_forward, (qkv, 3)),        # C = 4 not divisible by 3
        (ValueError, _core.attention_forward, (qkv, 0)),
        (ValueError, _core.attention_forward, (z((2, 5, 0), np.float32), 1)),
        (ValueError, _core.attention_backward, (z_like(qkv), out, qkv, out,
                                                z((2, 2, 4), np.float32), 2)),
        (ValueError, _core.attention_backward, (z_like(qkv), z((2, 5, 3), np.float32), qkv,
                                                out, lse, 2)),
        (ValueError, _core.attention_backward, (z((2, 5, 9), np.float32), out, qkv, out, lse,
                                                2)),
        (ValueError, _core.embedding_forward, (idx + 10, wte, wpe)),  # id out of range
        (ValueError, _core.embedding_forward, (idx - 1, wte, wpe)),
        (ValueError, _core.embedding_forward, (z((2, 9), np.int32), wte, wpe)),  # T > maxT
        (ValueError, _core.embedding_forward, (idx, wte, z((8, 3), np.float32))),
        (ValueError, _core.embedding_forward, (z(5, np.int32), wte, wpe)),
        (ValueError, _core.embedding_backward, (z_like(wte), z_like(wpe),
                                                z((2, 5, 3), np.float32), idx)),
        (ValueError, _core.gelu_backward, (z_like(x), x, z((4, 3), np.float32))),
        (ValueError, _core.gelu_forward, (np.zeros((8, 8), np.float32)[:, ::2],)),  # strided
        (ValueError, _core.residual_forward, (x, z((4, 3), np.float32))),
        (ValueError, _core.residual_layernorm_forward, (x, z((4, 3), np.float32), w, b)),
        (ValueError, _core.residual_layernorm_forward, (x, x, z(5, np.float32), b)),
        (ValueError, _core.residual_layernorm_forward, (x, x, w, z((4, 1), np.float32))),
        (ValueError, _core.residual_backward, (ro, z_like(x), x)),
        (ValueError, _core.scalar_head_forward, (x, w, z(2, np.float32))),
        (ValueError, _core.scalar_head_backward, (None, z_like(w), z(1, np.float32),
                                                  z(4, np.float32), x, w)),
    ]


def z_like(a):
    return np.zeros_like(a)


@pytest.mark.parametrize("case", range(len(_bad_cases())))
def test_bad_input_raises_with_clear_error(case):
    exc, fn, args = _bad_cases()[case]
    with pytest.raises(exc) as info:
        fn(*args)
    assert str(info.value), "the message must say what was expected"

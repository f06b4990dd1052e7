"""bfloat16 matrix products (gptlab.set_matmul_precision("bfloat16"), AVX512-BF16 CPUs).

The GEMM rounds both operands to bfloat16 as it packs them and sums the products in float32,
on one of two kernels: AMX tiles (Intel Sapphire Rapids and later) or AVX512-BF16 dot
products. Checked here, on each kernel the CPU has: against a float64 reference of the
*rounded* operands (so the rounding is round-to-nearest-even on every element, and nothing
else is lost), in every transposition case and on edge shapes (odd K pairs the last k with
zero; AMX's 32-k chunks padded with zeros); bits independent of thread count and alignment;
small and decode-step products stay float32; bad names are refused; and a model trained with
it reaches the float32 loss. Skipped where the CPU lacks AVX512-BF16.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from gemm_checks import bias_has_the_bits_of_beta_one, concurrent_calls_give_serial_bits
from isa_paths import available

import gptlab as gl
from gptlab import _core


def _has_bf16() -> bool:
    try:
        _core.gemm_set_precision("bfloat16")
    except ValueError:
        return False
    _core.gemm_set_precision("float32")
    return True


needs_bf16 = pytest.mark.skipif(not _has_bf16(), reason="no AVX512-BF16 on this CPU")

# the bfloat16 kernels this CPU (and OS) runs, best first; [] without AVX512-BF16
KERNELS = available(_core.gemm_set_bf16_kernel, ["amx", "avx512bf16"])


@pytest.fixture(params=KERNELS or ["none"])
def bf16(request):
    """bfloat16 products on each kernel in turn; float32, the best kernel and the default
    thread count restored after."""
    if request.param == "none":
        pytest.skip("no AVX512-BF16 on this CPU")
    threads = _core.get_num_threads()
    _core.gemm_set_bf16_kernel(request.param)
    _core.gemm_set_precision("bfloat16")
    yield request.param
    _core.gemm_set_precision("float32")
    _core.gemm_set_bf16_kernel("auto")
    _core.set_num_threads(threads)


def round_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> the nearest bfloat16 (ties to even), as float32: an independent reference of
    what the packers do (finite inputs)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16
    return u.astype(np.uint32).view(np.float32)


def operands(rng, M, N, K, ta, tb):
    A = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
    B = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
    return A, B


def check(ta, tb, A, B, C0, alpha, beta):
    """C = alpha op(A) op(B) + beta C0 in bfloat16 products against float64 on the rounded
    operands: within 1e-5 of the magnitude sum (float32 accumulation only)."""
    C = C0.copy()
    _core.sgemm(ta, tb, A, B, C, alpha, beta)
    a = round_bf16(A.T if ta else A).astype(np.float64)
    b = round_bf16(B.T if tb else B).astype(np.float64)
    ref = alpha * (a @ b) + beta * C0.astype(np.float64)
    tol = 1e-5 * (abs(alpha) * (np.abs(a) @ np.abs(b)) + abs(beta) * np.abs(C0)) + 1e-30
    bad = np.abs(C - ref) > tol
    assert not bad.any(), f"{bad.sum()} entries off, worst {np.abs(C - ref).max():.3g}"
    return C


# sizes around the 12 x 32 and 32 x 32 tiles, KC (AVX512-BF16: 512 floats = 256 pairs; AMX:
# 1024), odd K (the last k paired with 0), the packers' 16-row and 32-k blocks, and AMX's
# shallow last slices (K = 1040: 16 deep, the least AMX takes; 1032: 8, which the AVX512-BF16
# kernel takes); all blocked products (>= 32^3 multiply-adds, M > 8)
SHAPES = [(12, 32, 100), (13, 33, 97), (37, 65, 31), (100, 200, 301), (24, 64, 513),
          (96, 256, 1025), (250, 70, 64), (9, 300, 63), (33, 95, 1040), (70, 40, 1032),
          (64, 64, 16), (40, 70, 2100)]


@needs_bf16
@pytest.mark.parametrize("ta,tb", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_bfloat16_products_are_float32_sums_of_rounded_operands(bf16, ta, tb):
    rng = np.random.default_rng(40 + 2 * ta + tb)
    assert gl.get_matmul_precision() == "bfloat16"
    for M, N, K in SHAPES:
        A, B = operands(rng, M, N, K, ta, tb)
        C0 = rng.standard_normal((M, N)).astype(np.float32)
        check(ta, tb, A, B, C0, 1.0, 0.0)
        check(ta, tb, A, B, C0, -0.5, 1.0)
        check(ta, tb, A, B, C0, 1.0, 1.0)  # AMX starts its tiles from C
        check(ta, tb, A, B, C0, 2.0, 0.0)


@needs_bf16
def test_bfloat16_really_rounds_and_float32_comes_back(bf16):
    """The bfloat16 result differs from the float32 one by bfloat16's rounding (~2^-9
    relative per operand), and switching back gives the float32 bits again."""
    rng = np.random.default_rng(1)
    A, B = operands(rng, 200, 300, 400, 0, 0)
    C16 = np.zeros((200, 300), np.float32)
    _core.sgemm(0, 0, A, B, C16, 1.0, 0.0)
    gl.set_matmul_precision("float32")
    C32, again = np.zeros_like(C16), np.zeros_like(C16)
    _core.sgemm(0, 0, A, B, C32, 1.0, 0.0)
    ref = A.astype(np.float64) @ B
    rel16 = np.abs(C16 - ref).max() / np.abs(ref).max()
    rel32 = np.abs(C32 - ref).max() / np.abs(ref).max()
    assert 1e-4 < rel16 < 2e-2 and rel32 < 1e-5
    _core.sgemm(0, 0, A, B, again, 1.0, 0.0)
    np.testing.assert_array_equal(again, C32)


@needs_bf16
def test_bfloat16_bits_do_not_depend_on_threads_or_alignment(bf16):
    rng = np.random.default_rng(2)
    # the last two take the blocked loops (packed operands over 2M floats), with items that
    # own their rows and with items that share them
    for ta, tb, (M, N, K) in [(0, 0, (300, 200, 600)), (0, 1, (61, 67, 2000)),
                              (1, 0, (43, 250, 2100)), (1, 1, (130, 70, 800)),
                              (0, 0, (1453, 600, 1100)), (1, 0, (300, 4200, 1100))]:
        A, B = operands(rng, M, N, K, ta, tb)
        results = []
        for n, offset in [(1, 0), (2, 0), (3, 0), (2, 4), (2, 7)]:
            _core.set_num_threads(n)
            buf = np.empty(A.size + 16, np.float32)  # A at `offset` floats from the start
            a = buf[offset:offset + A.size].reshape(A.shape)
            a[...] = A
            C = np.full((M, N), np.nan, np.float32)
            _core.sgemm(ta, tb, a, B, C, 1.0, 0.0)
            results.append(C)
        for C in results[1:]:
            np.testing.assert_array_equal(C, results[0])


@needs_bf16
def test_small_and_decode_step_products_stay_float32(bf16):
    rng = np.random.default_rng(3)
    for M, N, K in [(7, 17, 63), (8, 500, 300), (1, 2048, 192)]:
        A, B = operands(rng, M, N, K, 0, 0)
        C16 = np.zeros((M, N), np.float32)
        _core.sgemm(0, 0, A, B, C16, 1.0, 0.0)
        gl.set_matmul_precision("float32")
        C32 = np.zeros_like(C16)
        _core.sgemm(0, 0, A, B, C32, 1.0, 0.0)
        gl.set_matmul_precision("bfloat16")
        np.testing.assert_array_equal(C16, C32)


@needs_bf16
def test_bfloat16_keeps_nan_and_inf(bf16):
    """A NaN or an infinity in A reaches exactly its row of C (no silent garbage)."""
    rng = np.random.default_rng(4)
    A, B = operands(rng, 64, 64, 128, 0, 0)
    A[3, 5], A[10, 0] = np.nan, np.inf
    C = np.zeros((64, 64), np.float32)
    _core.sgemm(0, 0, A, B, C, 1.0, 0.0)
    assert np.isnan(C[3]).all() and not np.isfinite(C[10]).any()
    rows = np.delete(np.arange(64), [3, 10])
    assert np.isfinite(C[rows]).all()


@needs_bf16
def test_linear_forward_in_bfloat16_adds_its_bias_with_the_bits_of_beta_one(bf16):
    """matmul_forward's bias enters the first KC slice's tiles (on AMX: the tiles start from
    it): the bits of filling C with the bias and multiplying with alpha = beta = 1, on 1-3
    threads, short and blocked-loop products; right against float64 of the rounded operands."""
    rng = np.random.default_rng(6)
    for N, C, OC in [(200, 192, 577), (64, 768, 96), (1453, 800, 1100)]:
        x = rng.standard_normal((N, C)).astype(np.float32)
        w = rng.standard_normal((C, OC)).astype(np.float32)
        b = rng.standard_normal(OC).astype(np.float32)
        bias_has_the_bits_of_beta_one(x, w, b)
        check(0, 0, x, w, np.tile(b, (N, 1)), 1.0, 1.0)


@needs_bf16
def test_bfloat16_products_from_several_python_threads_at_once(bf16):
    """Each thread sets up its own tile registers (AMX) and packing buffers: concurrent
    calls give the bits of the same calls one after another."""
    rng = np.random.default_rng(7)
    jobs = [(t % 2, t // 2, *operands(rng, 150 + 10 * t, 170, 300 + t, t % 2, t // 2))
            for t in range(4)]
    concurrent_calls_give_serial_bits(jobs, 170)


@needs_bf16
def test_the_two_bfloat16_kernels_agree_to_float32_rounding():
    """AMX and AVX512-BF16 multiply the same rounded operands; their sums differ only in
    float32 rounding. AMX is the default where the CPU and the OS have it."""
    if len(KERNELS) < 2:
        pytest.skip("one bfloat16 kernel on this CPU")
    assert _core.gemm_bf16_kernel() == "amx"
    rng = np.random.default_rng(8)
    A, B = operands(rng, 300, 200, 600, 0, 1)
    out = {}
    try:
        _core.gemm_set_precision("bfloat16")
        for name in KERNELS:
            _core.gemm_set_bf16_kernel(name)
            out[name] = np.zeros((300, 200), np.float32)
            _core.sgemm(0, 1, A, B, out[name], 1.0, 0.0)
    finally:
        _core.gemm_set_precision("float32")
        _core.gemm_set_bf16_kernel("auto")
    scale = np.abs(round_bf16(A)).astype(np.float64) @ np.abs(round_bf16(B)).T
    assert np.all(np.abs(out["amx"] - out["avx512bf16"]) <= 1e-5 * scale)


def test_gemm_set_bf16_kernel_refuses_unknown_names():
    before = _core.gemm_bf16_kernel()
    for bad in ("AMX", "avx512", "", "bfloat16"):
        with pytest.raises(ValueError, match="expected 'amx', 'avx512bf16' or 'auto'"):
            _core.gemm_set_bf16_kernel(bad)
    assert _core.gemm_bf16_kernel() == before


def test_set_matmul_precision_refuses_unknown_names():
    before = gl.get_matmul_precision()
    for bad in ("float16", "bf16", "", "FLOAT32"):
        with pytest.raises(ValueError, match="expected 'float32' or 'bfloat16'"):
            gl.set_matmul_precision(bad)
    with pytest.raises(ValueError, match="expected 'float32' or 'bfloat16'"):
        _core.gemm_set_precision("float64")
    assert gl.get_matmul_precision() == before == "float32"


@pytest.mark.skipif(_has_bf16(), reason="this CPU has AVX512-BF16")
def test_bfloat16_is_refused_with_a_clear_error_without_avx512_bf16():
    with pytest.raises(ValueError, match="AVX512-BF16"):
        gl.set_matmul_precision("bfloat16")
    assert gl.get_matmul_precision() == "float32"


@needs_bf16
def test_gradients_in_bfloat16_stay_close_to_float32(bf16):
    """One forward + backward of the small preset: every gradient tensor within a few
    bfloat16 roundings of the float32 one (cosine > 0.999)."""
    cfg = gl.GPTConfig.preset("small", vocab_size=512)
    idx = np.random.default_rng(5).integers(0, 512, (4, 65))
    grads = {}
    for prec in ("float32", "bfloat16"):
        gl.set_matmul_precision(prec)
        model = gl.GPT(cfg, seed=0)
        model.zero_grad()
        model.forward(idx[:, :-1], idx[:, 1:])
        model.backward()
        grads[prec] = {k: v.astype(np.float64).ravel() for k, v in model.grads.items()}
    for name, g32 in grads["float32"].items():
        g16 = grads["bfloat16"][name]
        if not g32.any():
            continue
        cos = g16 @ g32 / (np.linalg.norm(g16) * np.linalg.norm(g32))
        assert cos > 0.999, (name, cos)


@needs_bf16
def test_backward_without_accumulate_writes_every_gradient_in_bfloat16(bf16):
    """backward(accumulate=False) on the bfloat16 kernels (AMX and AVX512-BF16): over
    gradients full of NaN, the weight-gradient products with beta 0 must not read them, and
    every gradient equals zero_grad() then backward() on the same kernel."""
    cfg = gl.GPTConfig.preset("small", vocab_size=512)
    idx = np.random.default_rng(6).integers(0, 512, (4, 65))
    model = gl.GPT(cfg, seed=0)
    model.zero_grad()
    model.forward(idx[:, :-1], idx[:, 1:])
    model.backward()
    want = {k: v.copy() for k, v in model.grads.items()}
    for g in model.grads.values():
        g[...] = np.nan
    model.forward(idx[:, :-1], idx[:, 1:])
    model.backward(accumulate=False)
    for name, g in model.grads.items():
        np.testing.assert_array_equal(g, want[name], err_msg=name)


@needs_bf16
def test_pretraining_in_bfloat16_reaches_the_float32_loss(bf16):
    """The small preset pretrained on TinyWorld for 120 steps from three seeds: the last 20
    steps' mean training loss in bfloat16 within 1% of float32's on the median seed
    (benchmarks/bench_bf16.py runs the full 600 steps). One seed alone does not settle it: at
    120 steps a run can be on the edge of a plateau, where any change of rounding -- bfloat16,
    or float32's own attention fused or not -- moves the step at which the loss drops, and
    the two precisions then differ by several percent on that seed (seed 0: -4%) while the
    others agree to 0.6%. A bias of bfloat16 would move every seed, the median with them."""
    ratios = [_pretrain_loss("bfloat16", seed) / _pretrain_loss("float32", seed)
              for seed in (0, 1, 2)]
    assert abs(float(np.median(ratios)) - 1) < 0.01, ratios


@functools.cache
def _pretrain_docs():
    """TinyWorld's first 3000 pretraining documents and a 512-token BPE trained on them."""
    docs = gl.data.TinyWorld(seed=0).pretrain_documents()[:3000]
    tok = gl.Tokenizer.train("\n\n".join(d[1] if isinstance(d, tuple) else d for d in docs),
                             vocab_size=512)
    return docs, tok


def _pretrain_loss(precision: str, seed: int, steps: int = 120) -> float:
    """Mean training loss of the last 20 of `steps` pretraining steps of the small preset in
    `precision`; float32's is the same for every bfloat16 kernel, so it is kept."""
    key = (precision, seed, steps, _core.gemm_bf16_kernel() if precision == "bfloat16" else "")
    if key not in _PRETRAIN_LOSSES:
        docs, tok = _pretrain_docs()
        before = gl.get_matmul_precision()
        gl.set_matmul_precision(precision)
        try:
            model = gl.GPT(gl.GPTConfig.preset("small", vocab_size=tok.vocab_size), seed=seed)
            pre = gl.Pretrainer(model, tok, docs, batch_size=8, seq_len=64, max_steps=steps,
                                eval_every=1000, seed=seed)
            pre.train(steps, progress=False)
        finally:
            gl.set_matmul_precision(before)
        _PRETRAIN_LOSSES[key] = float(np.mean([h["loss"] for h in pre.history[-20:]]))
    return _PRETRAIN_LOSSES[key]


_PRETRAIN_LOSSES: dict = {}

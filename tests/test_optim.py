"""gptlab.optim (csrc/optim.c): AdamW against a float64 NumPy reference and torch.optim.AdamW,
gradient clipping, the non-finite guard, exact resume, and the learning-rate schedule."""

import math

import numpy as np
import pytest

import gptlab
from gptlab import _core
from gptlab.optim import AdamW, CosineSchedule, cosine_schedule

SHAPES = {"wte.weight": (17, 7), "h.0.ln_1.weight": (7,), "h.0.attn.c_attn.weight": (7, 21),
          "h.0.attn.c_attn.bias": (21,), "big.weight": (65, 63)}


class FakeModel:
    """Anything with .params and .grads dicts of float32 arrays will do."""

    def __init__(self, seed=0, shapes=SHAPES):
        rng = np.random.default_rng(seed)
        self.params = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
        self.grads = {k: np.zeros(s, np.float32) for k, s in shapes.items()}

    def fill_grads(self, rng, scale=1.0):
        for g in self.grads.values():
            g[...] = rng.standard_normal(g.shape) * scale


def assert_rel(a, ref, tol=1e-5):
    """max |a - ref| <= tol * max |ref|: float32 rounding, measured at the tensor's scale."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    assert a.shape == ref.shape
    assert np.max(np.abs(a - ref)) <= tol * np.max(np.abs(ref))


def ref_adamw(p, grads, lr, b1, b2, eps, wd):
    """float64 AdamW over a sequence of gradients (PyTorch semantics)."""
    p = np.float64(p)
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        p = p * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return p, m, v


def ref_schedule(step, warmup, total, lr_max, lr_min):
    if step < warmup:
        return lr_max * (step + 1) / warmup
    if step >= total:
        return lr_min
    ratio = (step - warmup) / (total - warmup)
    return lr_min + 0.5 * (1 + math.cos(math.pi * ratio)) * (lr_max - lr_min)


def test_adamw_matches_float64_reference_over_steps():
    model = FakeModel(1)
    rng = np.random.default_rng(2)
    init = {k: p.copy() for k, p in model.params.items()}
    opt = AdamW(model, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    history = {k: [] for k in SHAPES}
    for _ in range(6):
        model.fill_grads(rng, scale=rng.choice([1e-3, 1.0, 30.0]))
        for k, g in model.grads.items():
            history[k].append(np.float64(g))
        opt.step()
    assert opt.t == 6
    for k, shape in SHAPES.items():
        wd = 0.1 if len(shape) == 2 else 0.0
        p, m, v = ref_adamw(init[k], history[k], 1e-2, 0.9, 0.95, 1e-8, wd)
        # the total update, to float32 rounding of the weights it was added to
        assert_rel(model.params[k] - np.float64(init[k]), p - init[k], 1e-4)
        assert_rel(opt.m[k], m)
        assert_rel(opt.v[k], v)


def test_adamw_matches_torch_adamw():
    torch = pytest.importorskip("torch")
    model = FakeModel(3)
    rng = np.random.default_rng(4)
    init = {k: np.float64(p) for k, p in model.params.items()}
    tparams = {k: torch.tensor(np.float64(p), requires_grad=True)
               for k, p in model.params.items()}
    decay = [p for k, p in tparams.items() if p.ndim == 2]
    no_decay = [p for k, p in tparams.items() if p.ndim != 2]
    topt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=3e-3, betas=(0.9, 0.95), eps=1e-8)
    opt = AdamW(model, lr=3e-3)
    for step in range(5):
        model.fill_grads(rng)
        for k, p in tparams.items():
            p.grad = torch.tensor(np.float64(model.grads[k]))
        lr = 3e-3 * (step + 1) / 5  # a changing rate, as a schedule gives
        for group in topt.param_groups:
            group["lr"] = lr
        topt.step()
        opt.step(lr=lr)
    for k, p in tparams.items():
        assert_rel(model.params[k] - init[k], p.detach().numpy() - init[k], 1e-4)
        assert_rel(opt.m[k], topt.state[p]["exp_avg"].numpy())
        assert_rel(opt.v[k], topt.state[p]["exp_avg_sq"].numpy())


def test_weight_decay_applies_to_2d_weights_only():
    model = FakeModel(5)
    init = {k: p.copy() for k, p in model.params.items()}
    opt = AdamW(model, lr=0.1, weight_decay=0.5)
    for _ in range(3):
        opt.step()  # zero gradients: only the decay moves anything
    for k, p in model.params.items():
        if p.ndim == 2:
            np.testing.assert_allclose(p, init[k] * (1 - 0.1 * 0.5) ** 3, rtol=1e-6)
        else:
            np.testing.assert_array_equal(p, init[k])


def test_step_lr_argument_overrides_and_is_remembered():
    model = FakeModel(6)
    opt = AdamW(model, lr=1.0, weight_decay=0.0)
    model.grads["h.0.ln_1.weight"][...] = 1.0
    before = model.params["h.0.ln_1.weight"].copy()
    opt.step(lr=0.25)
    # first step of Adam: m_hat / sqrt(v_hat) = g / |g| = 1, so the move is exactly lr
    np.testing.assert_allclose(before - model.params["h.0.ln_1.weight"], 0.25, rtol=1e-6)
    assert opt.lr == 0.25


def test_grad_norm_is_global_l2_norm():
    model = FakeModel(7)
    model.fill_grads(np.random.default_rng(8))
    opt = AdamW(model, lr=1e-3)
    flat = np.concatenate([np.float64(g).ravel() for g in model.grads.values()])
    assert opt.grad_norm() == pytest.approx(np.linalg.norm(flat), rel=1e-12)


def test_clip_grad_norm_scales_to_max_norm_and_returns_preclip_norm():
    model = FakeModel(9)
    model.fill_grads(np.random.default_rng(10))
    opt = AdamW(model, lr=1e-3)
    before = {k: g.copy() for k, g in model.grads.items()}
    norm = opt.grad_norm()
    assert opt.clip_grad_norm(norm * 2) == pytest.approx(norm)  # below the limit: untouched
    for k, g in model.grads.items():
        np.testing.assert_array_equal(g, before[k])
    assert opt.clip_grad_norm(1.0) == pytest.approx(norm)
    assert opt.grad_norm() == pytest.approx(1.0, rel=1e-5)
    for k, g in model.grads.items():  # direction kept
        np.testing.assert_allclose(g, before[k] / (norm + 1e-6), rtol=1e-6)


def test_clip_and_step_clips_then_steps():
    a, b = FakeModel(11), FakeModel(11)
    rng = np.random.default_rng(12)
    a.fill_grads(rng, scale=10.0)
    for k in b.grads:
        b.grads[k][...] = a.grads[k]
    oa, ob = AdamW(a, lr=1e-2), AdamW(b, lr=1e-2)
    norm = oa.clip_and_step(1.0, lr=5e-3)
    assert norm == pytest.approx(ob.clip_grad_norm(1.0))
    ob.step(lr=5e-3)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert oa.t == 1 and oa.lr == 5e-3


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_clip_and_step_with_nonfinite_gradient_leaves_everything_untouched(bad):
    model = FakeModel(13)
    rng = np.random.default_rng(14)
    opt = AdamW(model, lr=1e-2)
    model.fill_grads(rng)
    opt.clip_and_step(1.0)
    params = {k: p.copy() for k, p in model.params.items()}
    m = {k: a.copy() for k, a in opt.m.items()}
    model.fill_grads(rng)
    model.grads["big.weight"][3, 4] = bad
    with pytest.raises(FloatingPointError):
        opt.clip_and_step(1.0)
    with pytest.warns(RuntimeWarning):
        norm = opt.clip_and_step(1.0, on_nonfinite="skip")
    assert not math.isfinite(norm)
    assert opt.t == 1
    for k in params:
        np.testing.assert_array_equal(model.params[k], params[k])
        np.testing.assert_array_equal(opt.m[k], m[k])
    skipper = AdamW(model, lr=1e-2, on_nonfinite="skip")
    with pytest.warns(RuntimeWarning):
        skipper.clip_and_step(None)
    assert skipper.t == 0


def test_state_dict_round_trip_continues_bit_identically():
    rng = np.random.default_rng(15)
    grads = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES.values()]
             for _ in range(6)]

    def run(model, opt, steps):
        for gs in steps:
            for g, dst in zip(gs, model.grads.values()):
                dst[...] = g
            opt.clip_and_step(1.0)

    a = FakeModel(16)
    oa = AdamW(a, lr=2e-3, betas=(0.8, 0.99), weight_decay=0.05)
    run(a, oa, grads[:3])
    state = oa.state_dict()
    b = FakeModel(99)
    for k in b.params:
        b.params[k][...] = a.params[k]
    ob = AdamW(b, lr=1.0)  # different hyperparameters: the state restores them
    ob.load_state_dict(state)
    assert (ob.t, ob.lr, ob.betas, ob.weight_decay) == (3, 2e-3, (0.8, 0.99), 0.05)
    run(a, oa, grads[3:])
    run(b, ob, grads[3:])
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
        np.testing.assert_array_equal(oa.v[k], ob.v[k])
    # the state is a copy, not a view of the live moments
    assert not np.array_equal(state["m"]["big.weight"], oa.m["big.weight"])


def test_load_state_dict_rejects_a_mismatched_state():
    opt = AdamW(FakeModel(17), lr=1e-3)
    good = opt.state_dict()
    bad_shape = {**good, "m": {**good["m"], "big.weight": np.zeros((2, 2), np.float32)}}
    missing = {k: v for k, v in good.items() if k != "v"}
    bad_name = {**good, "v": {"other": np.zeros(3, np.float32)}}
    for state in (bad_shape, missing, bad_name, {**good, "t": -1}, {**good, "lr": np.nan}):
        with pytest.raises(ValueError):
            opt.load_state_dict(state)


def test_adamw_refuses_bad_models_and_hyperparameters():
    class Obj:
        pass

    m = FakeModel(18)
    f64 = Obj()
    f64.params = {"w": np.zeros((2, 2))}
    f64.grads = {"w": np.zeros((2, 2))}
    keys = Obj()
    keys.params = {"w": np.zeros((2, 2), np.float32)}
    keys.grads = {"u": np.zeros((2, 2), np.float32)}
    shapes = Obj()
    shapes.params = {"w": np.zeros((2, 2), np.float32)}
    shapes.grads = {"w": np.zeros((2, 3), np.float32)}
    strided = Obj()
    strided.params = {"w": np.zeros((4, 4), np.float32)[:, ::2]}
    strided.grads = {"w": np.zeros((4, 2), np.float32)}
    with pytest.raises(TypeError):
        AdamW(Obj(), lr=1e-3)
    with pytest.raises(TypeError, match="float32"):
        AdamW(f64, lr=1e-3)
    for model in (keys, shapes, strided):
        with pytest.raises(ValueError):
            AdamW(model, lr=1e-3)
    for kwargs in ({"lr": -1.0}, {"lr": np.nan}, {"lr": 1e-3, "betas": (1.0, 0.9)},
                   {"lr": 1e-3, "eps": -1.0}, {"lr": 1e-3, "weight_decay": np.inf},
                   {"lr": 1e-3, "on_nonfinite": "ignore"}):
        with pytest.raises(ValueError):
            AdamW(m, **kwargs)
    opt = AdamW(m, lr=1e-3)
    with pytest.raises(ValueError, match="lr"):
        opt.step(lr=-1e-3)
    with pytest.raises(ValueError, match="max_norm"):
        opt.clip_and_step(-1.0)


def test_core_optim_bindings_refuse_bad_arrays():
    p = np.zeros(8, np.float32)
    m, v, g = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    args = (1e-3, 0.9, 0.95, 1e-8, 0.1, 1)
    cases = [
        (lambda: _core.adamw_update(p.astype(np.float64), m, v, g, *args), TypeError),
        (lambda: _core.adamw_update(p, m[:4], v, g, *args), ValueError),
        (lambda: _core.adamw_update(p, p, v, g, *args), ValueError),  # aliasing
        (lambda: _core.adamw_update(p, m, v, g, 1e-3, 0.9, 0.95, 1e-8, 0.1, 0), ValueError),
        (lambda: _core.adamw_update(p, m, v, g, np.nan, 0.9, 0.95, 1e-8, 0.1, 1), ValueError),
        (lambda: _core.adamw_update(p[::2], m[:4], v[:4], g[:4], *args), ValueError),
        (lambda: _core.sumsq([1.0, 2.0]), TypeError),
        (lambda: _core.scale(p, np.inf), ValueError),
        (lambda: _core.lr_cosine(-1, 1, 2, 1.0, 0.0), ValueError),
        (lambda: _core.lr_cosine(0, 1, 2, 1.0, 2.0), ValueError),
    ]
    for fn, err in cases:
        with pytest.raises(err):
            fn()


@pytest.mark.parametrize("n", [1, 7, 17, 63, 65, 100_003])
def test_sumsq_matches_float64_and_is_deterministic(n):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    ref = np.sum(np.float64(x) ** 2)
    threads = gptlab.get_num_threads()
    try:
        for t in (1, 2, 3):
            gptlab.set_num_threads(t)
            s = _core.sumsq(x)
            assert s == pytest.approx(ref, rel=1e-12)
            assert _core.sumsq(x) == s  # same thread count, same bits
    finally:
        gptlab.set_num_threads(threads)



# Tensor sizes around the parallel threshold (GL_PAR_MIN = 32768 floats, in total and per
# tensor): the threads' ranges of the concatenated elements start and end inside tensors.
MANY_SIZES = [1, 7, 17, 40_000, 65, 100_003, 3]


def _many(seed, sizes=MANY_SIZES):
    rng = np.random.default_rng(seed)
    p, m, g = ([rng.standard_normal(n).astype(np.float32) for n in sizes] for _ in range(3))
    v = [np.abs(rng.standard_normal(n)).astype(np.float32) for n in sizes]
    wd = [0.1 if k % 2 else 0.0 for k in range(len(sizes))]
    return p, m, v, g, wd


@pytest.mark.parametrize("grad_scale", [1.0, 0.37])
def test_adamw_update_many_equals_scale_then_adamw_update_tensor_by_tensor(grad_scale):
    """The fused call (what AdamW uses) must give the bits of the per-tensor calls, for any
    thread count, and the gradients come back scaled as gl_scale leaves them."""
    hyper = (3e-3, 0.9, 0.95, 1e-8)
    threads = gptlab.get_num_threads()
    try:
        for t in (1, 2, 3):
            gptlab.set_num_threads(t)
            a, b = _many(t), _many(t)
            for k in range(len(MANY_SIZES)):
                if grad_scale != 1.0:
                    _core.scale(b[3][k], grad_scale)
                _core.adamw_update(b[0][k], b[1][k], b[2][k], b[3][k], *hyper, b[4][k], 4)
            _core.adamw_update_many(*a, grad_scale, *hyper, 4)
            for x, y in zip(a[:4], b[:4]):
                for xk, yk in zip(x, y):
                    np.testing.assert_array_equal(xk, yk)
    finally:
        gptlab.set_num_threads(threads)
    # and against the float64 reference: one step from the given moments, at t = 1
    p, m, v, g, wd = _many(5)
    p0, m0, v0, g0 = ([np.float64(x) for x in arrs] for arrs in (p, m, v, g))
    _core.adamw_update_many(p, m, v, g, wd, grad_scale, 1e-2, 0.9, 0.95, 1e-8, 1)
    for k in range(len(MANY_SIZES)):
        gk = g0[k] * np.float32(grad_scale)
        mk, vk = 0.9 * m0[k] + 0.1 * gk, 0.95 * v0[k] + 0.05 * gk * gk
        pk = p0[k] * (1 - 1e-2 * wd[k]) - 1e-2 * (mk / 0.1) / (np.sqrt(vk / 0.05) + 1e-8)
        assert_rel(m[k], mk)
        assert_rel(v[k], vk)
        assert_rel(p[k], pk, 1e-5)
        assert_rel(g[k], gk, 1e-7)


def test_sumsq_many_equals_summing_sumsq_in_list_order():
    xs = _many(3)[3]
    ref = sum(np.sum(np.float64(x) ** 2) for x in xs)
    threads = gptlab.get_num_threads()
    try:
        for t in (1, 2, 3):
            gptlab.set_num_threads(t)
            loop = 0.0
            for x in xs:
                loop += _core.sumsq(x)
            assert _core.sumsq_many(xs) == loop  # the same bits
            assert loop == pytest.approx(ref, rel=1e-12)
    finally:
        gptlab.set_num_threads(threads)
    assert _core.sumsq_many([]) == 0.0


def test_many_optim_bindings_refuse_bad_lists_and_arrays():
    p, m, v, g, wd = _many(9, [5, 40_000])
    hyper = (1e-3, 0.9, 0.95, 1e-8, 1)
    frozen = [x.copy() for x in g]
    for x in frozen:
        x.flags.writeable = False
    cases = [
        (lambda: _core.adamw_update_many(p, m, v, g[:1], wd, 1.0, *hyper), "gs: expected 2"),
        (lambda: _core.adamw_update_many(p, m, v, g, wd[:1], 1.0, *hyper), "weight_decays"),
        (lambda: _core.adamw_update_many([p[0], p[1].astype(np.float64)], m, v, g, wd, 1.0,
                                         *hyper), "p[1]: expected dtype float32"),
        (lambda: _core.adamw_update_many(p, [m[0], p[1]], v, g, wd, 1.0, *hyper), "overlap"),
        (lambda: _core.adamw_update_many(p, m, v, [g[0], g[1][:9]], wd, 1.0, *hyper), "g[1]"),
        (lambda: _core.adamw_update_many(p, m, v, frozen, wd, 0.5, *hyper), "writeable"),
        (lambda: _core.adamw_update_many(p, m, v, g, wd, -1.0, *hyper), "grad_scale"),
        (lambda: _core.adamw_update_many(p, m, v, g, wd, np.nan, *hyper), "grad_scale"),
        (lambda: _core.adamw_update_many(p, m, v, g, [0.1, -0.1], 1.0, *hyper), "weight_dec"),
        (lambda: _core.adamw_update_many(p, m, v, g, wd, 1.0, 1e-3, 0.9, 0.95, 1e-8, 0), "t:"),
        (lambda: _core.adamw_update_many(p, m, v, 3, wd, 1.0, *hyper), "lists"),
        (lambda: _core.sumsq_many([g[0], [1.0, 2.0]]), "xs[1]: expected a numpy.ndarray"),
    ]
    before = [x.copy() for x in p]
    for fn, msg in cases:
        with pytest.raises((TypeError, ValueError), match=msg.replace("[", r"\[")):
            fn()
    for x, y in zip(p, before):  # nothing was written by a refused call
        np.testing.assert_array_equal(x, y)
    _core.adamw_update_many(p, m, v, frozen, wd, 1.0, *hyper)  # grad_scale 1: g is only read

def test_scale_multiplies_in_place():
    x = np.random.default_rng(19).standard_normal((65, 63)).astype(np.float32)
    y = x.copy()
    _core.scale(y, 0.37)
    np.testing.assert_array_equal(y, x * np.float32(0.37))


def test_cosine_schedule_warms_up_then_decays_to_lr_min():
    warmup, total, hi, lo = 10, 110, 6e-4, 6e-5
    for step in list(range(0, 120, 3)) + [9, 10, 60, 109, 110, 10**6]:
        assert cosine_schedule(step, warmup, total, hi, lo) == pytest.approx(
            ref_schedule(step, warmup, total, hi, lo), rel=1e-6)
    assert cosine_schedule(0, warmup, total, hi, lo) == pytest.approx(hi / warmup)
    assert cosine_schedule(warmup, warmup, total, hi, lo) == pytest.approx(hi)
    assert cosine_schedule(60, warmup, total, hi, lo) == pytest.approx((hi + lo) / 2)
    assert cosine_schedule(total, warmup, total, hi, lo) == pytest.approx(lo)
    lrs = [cosine_schedule(s, warmup, total, hi, lo) for s in range(warmup, total)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # monotone decay
    assert cosine_schedule(0, 0, 100, hi) == pytest.approx(hi)  # no warmup; lr_min 0 default
    assert cosine_schedule(99, 0, 100, hi) > 0
    sched = CosineSchedule(warmup, total, hi, lo)
    assert sched(37) == cosine_schedule(37, warmup, total, hi, lo)
    for bad in ((-1, 10, 100, 1e-3), (0, 10, 100, -1e-3), (0, 1.5, 100, 1e-3)):
        with pytest.raises(ValueError):
            cosine_schedule(*bad)
    with pytest.raises(ValueError):
        CosineSchedule(10, 100, 1e-3, lr_min=1e-2)

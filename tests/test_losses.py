"""gptlab.losses (csrc/losses.c) against independent float64 NumPy references, finite
differences, and PyTorch autograd where torch is installed."""

import itertools

import numpy as np
import pytest
from isa_paths import available

import gptlab
from gptlab import _core
from gptlab import losses as L

SIZES = [1, 7, 17, 63, 65]


def rel_err(a, ref):
    """Largest absolute error relative to the largest reference magnitude."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return np.max(np.abs(a - ref)) / max(np.max(np.abs(ref)), 1e-30)


def assert_close(a, ref, tol=1e-4):
    assert np.shape(a) == np.shape(ref)
    assert rel_err(a, ref) <= tol, rel_err(a, ref)


def fd_grad(f, x, h=1e-6):
    """Central finite differences of the scalar float64 function f at x."""
    x = np.array(x, np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        g[i] = (f(xp) - f(xm)) / (2 * h)
    return g


# ---- float64 references ------------------------------------------------------------------


def ref_log_softmax(z):
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def ref_ce(x, t, mask=None):
    x = np.asarray(x, np.float64)
    sel = np.ones(len(t), bool) if mask is None else np.asarray(mask) != 0
    lp = ref_log_softmax(x)
    rows = -lp[np.arange(len(t)), t]
    return rows[sel].mean()


def ref_ce_grad(x, t, mask=None):
    x = np.asarray(x, np.float64)
    sel = np.ones(len(t), bool) if mask is None else np.asarray(mask) != 0
    g = np.exp(ref_log_softmax(x))
    g[np.arange(len(t)), t] -= 1
    return g * sel[:, None] / sel.sum()


def ref_logprobs(x, t, T=1.0):
    lp = ref_log_softmax(np.asarray(x, np.float64) / T)
    return lp[np.arange(len(t)), t], -(np.exp(lp) * lp).sum(-1)


def ref_logprobs_grad(x, t, dlogp, dent, T=1.0):
    lp = ref_log_softmax(np.asarray(x, np.float64) / T)
    p = np.exp(lp)
    H = -(p * lp).sum(-1, keepdims=True)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(t)), t] = 1
    dz = dlogp[:, None] * (onehot - p) - dent[:, None] * p * (lp + H)
    return dz / T


def ref_log_sigmoid(x):
    return np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x)))


def ref_ranking(r, counts=None, margin=0.0, coef=0.0):
    r = np.asarray(r, np.float64)
    P, K = r.shape
    k = np.full(P, K) if counts is None else np.asarray(counts)
    i, j = np.triu_indices(K, 1)  # every pair i < j
    ranked = j[None, :] < k[:, None]  # (P, pairs): both responses ranked
    pair_loss = np.where(ranked, -ref_log_sigmoid(r[:, i] - r[:, j] - margin), 0.0)
    sq = np.where(np.arange(K)[None, :] < k[:, None], r, 0.0) ** 2
    per_prompt = pair_loss.sum(1) / ranked.sum(1) + coef * sq.sum(1) / k
    return per_prompt.mean()


def ref_ppo(logp, old, adv, mask, clip):
    ratio = np.exp(np.float64(logp) - old)
    pg1 = -adv * ratio
    pg2 = -adv * np.clip(ratio, 1 - clip, 1 + clip)
    sel = mask != 0
    loss = np.maximum(pg1, pg2)[sel].mean()
    stats = {"clipfrac": (pg2 > pg1)[sel].mean(),
             "approx_kl": (0.5 * (np.float64(logp) - old) ** 2)[sel].mean(),
             "ratio_mean": ratio[sel].mean()}
    return loss, stats


def ref_value(v, old, R, mask, clip):
    v = np.float64(v)
    vc = np.clip(v, old - clip, old + clip)
    e1, e2 = (v - R) ** 2, (vc - R) ** 2
    sel = mask != 0
    return 0.5 * np.maximum(e1, e2)[sel].mean(), (e2 > e1)[sel].mean()


def ref_kl(logp, ref, kind):
    d = np.float64(ref) - logp  # log r
    return {"k1": -d, "k2": 0.5 * d * d, "k3": np.expm1(d) - d}[kind]


def ref_dpo(pc, pr, rc, rr, beta):
    c, r = beta * (np.float64(pc) - rc), beta * (np.float64(pr) - rr)
    return -ref_log_sigmoid(c - r).mean(), c, r


def rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def rand_mask(rng, n):
    m = rng.random(n) < 0.6
    m[rng.integers(n)] = True  # at least one selected
    return m


# ---- cross-entropy -----------------------------------------------------------------------


@pytest.mark.parametrize("N,V", list(itertools.product(SIZES, SIZES)))
def test_cross_entropy_matches_float64_reference(N, V):
    rng = np.random.default_rng(N * 100 + V)
    x = rand(rng, N, V, scale=3.0)
    t = rng.integers(0, V, N)
    for mask in (None, rand_mask(rng, N)):
        loss, d = L.cross_entropy(x, t, mask)
        assert abs(loss - ref_ce(x, t, mask)) <= 1e-4 * max(1.0, abs(ref_ce(x, t, mask)))
        if V > 1:
            assert_close(d, ref_ce_grad(x, t, mask))
        else:  # one class: the loss and its gradient are exactly 0
            assert loss == 0 and not d.any()


def test_cross_entropy_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    x, t, mask = rand(rng, 7, 17), rng.integers(0, 17, 7), rand_mask(rng, 7)
    fd = fd_grad(lambda z: ref_ce(z, t, mask), x)
    assert_close(ref_ce_grad(x, t, mask), fd, 1e-6)
    assert_close(L.cross_entropy(x, t, mask)[1], fd)


def test_cross_entropy_any_leading_shape():
    rng = np.random.default_rng(2)
    x, t = rand(rng, 2, 3, 17), rng.integers(0, 17, (2, 3))
    mask = np.array([[1, 0, 1], [1, 1, 0]])
    loss, d = L.cross_entropy(x, t, mask)
    loss2, d2 = L.cross_entropy(x.reshape(6, 17), t.reshape(6), mask.reshape(6))
    assert loss == loss2 and d.shape == x.shape
    np.testing.assert_array_equal(d.reshape(6, 17), d2)


def test_cross_entropy_is_stable_for_huge_logits():
    rng = np.random.default_rng(3)
    x = rand(rng, 17, 65, scale=1e4)
    t = rng.integers(0, 65, 17)
    loss, d = L.cross_entropy(x, t)
    assert np.isfinite(loss) and np.isfinite(d).all()
    assert abs(loss - ref_ce(x, t)) <= 1e-4 * abs(ref_ce(x, t))
    # the softmax is shift invariant: adding a constant per row changes nothing
    shifted, _ = L.cross_entropy(x - 3e4, t)
    assert abs(shifted - loss) <= 1e-4 * abs(loss)


def test_cross_entropy_mask_selecting_nothing_gives_nan_and_zero_gradient():
    rng = np.random.default_rng(4)
    x, t = rand(rng, 7, 17), rng.integers(0, 17, 7)
    loss, d = L.cross_entropy(x, t, np.zeros(7, bool))
    assert np.isnan(loss) and not d.any()


def test_crossentropy_core_per_row_losses_are_zero_where_masked():
    rng = np.random.default_rng(5)
    x, t = rand(rng, 300, 17), rng.integers(0, 17, 300).astype(np.int32)  # > one 256-row block
    mask = rand_mask(rng, 300).astype(np.float32)
    losses = np.full(300, 7.0, np.float32)
    mean = _core.crossentropy_forward(losses, x, t, mask)
    rows = -ref_log_softmax(np.float64(x))[np.arange(300), t]
    assert_close(losses, rows * mask)
    assert abs(mean - rows[mask != 0].mean()) <= 1e-5 * rows.mean()


def test_crossentropy_core_backward_accumulates():
    rng = np.random.default_rng(6)
    x, t = rand(rng, 17, 63), rng.integers(0, 63, 17).astype(np.int32)
    d = np.ones_like(x)
    _core.crossentropy_backward(d, x, t, None, 2.5)
    assert_close(d - 1, 2.5 * ref_ce_grad(x, t))


def test_crossentropy_core_in_place_backward_overwrites_logits():
    rng = np.random.default_rng(7)
    x, t = rand(rng, 65, 63), rng.integers(0, 63, 65).astype(np.int32)
    mask = rand_mask(rng, 65).astype(np.float32)
    out = np.zeros_like(x)
    _core.crossentropy_backward(out, x, t, mask, 1.0)
    _core.crossentropy_backward(x, x, t, mask, 1.0)  # the model's path: no second buffer
    np.testing.assert_allclose(x, out, rtol=1e-6, atol=1e-9)
    assert not x[mask == 0].any()  # masked rows become zero gradient, not stale logits


def isa_paths() -> list[str]:
    """The loss kernels' builds this CPU runs, narrowest first."""
    return available(_core.losses_set_isa, ("portable", "avx2", "avx512"))


def test_crossentropy_same_bits_for_any_thread_count_and_isa():
    rng = np.random.default_rng(8)
    x, t = rand(rng, 600, 257, scale=2.0), rng.integers(0, 257, 600).astype(np.int32)
    threads = gptlab.get_num_threads()
    paths = isa_paths()  # the builds this CPU runs
    assert _core.losses_isa() == paths[-1]  # auto picks the widest
    results = []
    try:
        for n, path in [(n, p) for p in paths for n in (1, 2)]:
            gptlab.set_num_threads(n)
            _core.losses_set_isa(path)
            d = np.zeros_like(x)
            _core.crossentropy_backward(d, x, t, None, 1.0)
            lp, ent = L.logprobs(x, t, temperature=0.7)
            results.append((_core.crossentropy_forward(None, x, t, None), d, lp, ent))
    finally:
        gptlab.set_num_threads(threads)
        _core.losses_set_isa("auto")
    for r in results[1:]:
        assert r[0] == results[0][0]
        for a, b in zip(r[1:], results[0][1:]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("N,V", [(1, 1), (7, 17), (65, 63), (300, 1000), (257, 2048)])
def test_crossentropy_forward_backward_is_the_two_passes_bit_for_bit(N, V):
    """The training step's one-pass loss: the same loss, per-row losses and gradient as
    crossentropy_forward then the in-place crossentropy_backward, on every ISA, any mask."""
    rng = np.random.default_rng(N * V)
    x, t = rand(rng, N, V, scale=3.0), rng.integers(0, V, N).astype(np.int32)
    masks = [None, rand_mask(rng, N).astype(np.float32), np.zeros(N, np.float32)]
    try:
        for path, mask in itertools.product(isa_paths(), masks):
            _core.losses_set_isa(path)
            rows_ref = np.zeros(N, np.float32)
            loss_ref = _core.crossentropy_forward(rows_ref, x, t, mask)
            grad_ref = x.copy()
            _core.crossentropy_backward(grad_ref, grad_ref, t, mask, 1.5)
            rows, grad = np.full(N, 7.0, np.float32), x.copy()
            loss = _core.crossentropy_forward_backward(rows, grad, t, mask, 1.5)
            assert loss == loss_ref or (np.isnan(loss) and np.isnan(loss_ref))
            np.testing.assert_array_equal(rows, rows_ref)
            np.testing.assert_array_equal(grad, grad_ref)
    finally:
        _core.losses_set_isa("auto")
    # and against the float64 references
    grad = x.copy()
    loss = _core.crossentropy_forward_backward(None, grad, t, None, 1.0)
    assert abs(loss - ref_ce(x, t)) <= 1e-5 * max(1.0, abs(loss))
    assert_close(grad, ref_ce_grad(x, t))


def test_crossentropy_forward_backward_rejects_bad_input():
    x, t = np.zeros((4, 5), np.float32), np.zeros(4, np.int32)
    with pytest.raises(ValueError, match="targets"):
        _core.crossentropy_forward_backward(None, x, t + 5, None, 1.0)
    with pytest.raises(ValueError, match="logits"):
        _core.crossentropy_forward_backward(None, np.full((4, 5), np.nan, np.float32), t, None,
                                            1.0)
    ro = x.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="logits"):
        _core.crossentropy_forward_backward(None, ro, t, None, 1.0)
    with pytest.raises(TypeError, match="float32"):
        _core.crossentropy_forward_backward(None, x.astype(np.float64), t, None, 1.0)


# ---- log-probabilities and entropy -------------------------------------------------------


@pytest.mark.parametrize("N,V", [(1, 1), (7, 17), (17, 63), (65, 7), (63, 65)])
@pytest.mark.parametrize("T", [0.5, 1.0, 1.7])
def test_logprobs_and_entropy_match_float64_reference(N, V, T):
    rng = np.random.default_rng(N + V)
    x, t = rand(rng, N, V, scale=2.0), rng.integers(0, V, N)
    logp, ent = L.logprobs(x, t, temperature=T)
    rlogp, rent = ref_logprobs(x, t, T)
    np.testing.assert_allclose(logp, rlogp, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ent, rent, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("with_entropy", [False, True])
@pytest.mark.parametrize("T", [0.6, 1.0, 2.0])
def test_logprobs_backward_matches_reference_and_finite_differences(with_entropy, T):
    rng = np.random.default_rng(10)
    N, V = 7, 17
    x, t = rand(rng, N, V), rng.integers(0, V, N)
    dlogp = rand(rng, N)
    dent = rand(rng, N) if with_entropy else np.zeros(N, np.float32)

    def f(z):  # the scalar whose gradient logprobs_backward gives
        lp, h = ref_logprobs(z, t, T)
        return (dlogp * lp).sum() + (dent * h).sum()

    ref = ref_logprobs_grad(x, t, np.float64(dlogp), np.float64(dent), T)
    assert_close(ref, fd_grad(f, x), 1e-6)
    d = L.logprobs_backward(x, t, dlogp, dent if with_entropy else None, temperature=T)
    assert_close(d, ref)


def test_logprobs_core_backward_accumulates():
    rng = np.random.default_rng(11)
    x, t = rand(rng, 7, 17), rng.integers(0, 17, 7).astype(np.int32)
    dlogp = rand(rng, 7)
    d = np.full_like(x, 0.5)
    _core.logprobs_backward(d, x, t, dlogp, None, 1.0)
    assert_close(d - 0.5, ref_logprobs_grad(x, t, np.float64(dlogp), np.zeros(7)))


# ---- ranking loss ------------------------------------------------------------------------


@pytest.mark.parametrize("P,K", [(1, 2), (7, 2), (7, 4), (17, 9), (65, 3)])
def test_ranking_loss_matches_float64_reference_and_finite_differences(P, K):
    rng = np.random.default_rng(P * K)
    r = rand(rng, P, K)
    counts = rng.integers(2, K + 1, P)
    for c, margin, coef in [(None, 0.0, 0.0), (counts, 0.3, 0.0), (counts, 0.0, 0.05)]:
        loss, dr, stats = L.ranking_loss(r, c, margin=margin, center_coef=coef)
        ref = ref_ranking(r, c, margin, coef)
        assert abs(loss - ref) <= 1e-4 * abs(ref)
        fd = fd_grad(lambda z, c=c, m=margin, k=coef: ref_ranking(z, c, m, k), r)
        assert_close(dr, fd)
        np.testing.assert_allclose(stats["losses"].mean(), loss, rtol=1e-5)


def test_ranking_loss_divides_by_pairs_once():
    # all rewards equal: every pair costs log 2, so the per-prompt mean over pairs is log 2;
    # dividing by C(k,2) twice would give log 2 / C(k,2)
    for K in (2, 3, 4, 9):
        loss, dr, _ = L.ranking_loss(np.zeros((3, K)))
        assert abs(loss - np.log(2)) < 1e-6
        # d/dr_0: (K-1) pairs of weight 0.5, over C(K,2) pairs and 3 prompts
        np.testing.assert_allclose(dr[:, 0], -(K - 1) * 0.5 / (K * (K - 1) / 2) / 3, rtol=1e-5)
    counts = np.array([2, 4])
    loss, _, _ = L.ranking_loss(np.zeros((2, 4)), counts)
    assert abs(loss - np.log(2)) < 1e-6


def test_ranking_loss_pairwise_is_k2_bradley_terry():
    rng = np.random.default_rng(12)
    r = rand(rng, 17, 2)
    loss, dr, stats = L.ranking_loss(r)
    d = np.float64(r[:, 0]) - r[:, 1]
    assert abs(loss - (-ref_log_sigmoid(d)).mean()) <= 1e-5
    np.testing.assert_allclose(dr[:, 0], -1 / (1 + np.exp(d)) / 17, rtol=1e-4)
    np.testing.assert_allclose(dr[:, 1], -dr[:, 0], rtol=1e-6)
    assert stats["accuracy"] == pytest.approx((d > 0).mean())
    assert stats["reward_gap"] == pytest.approx(d.mean(), rel=1e-5, abs=1e-6)


def test_ranking_loss_ignores_entries_past_counts():
    rng = np.random.default_rng(13)
    r = rand(rng, 3, 5)
    counts = np.array([2, 5, 3])
    garbage = r.copy()
    garbage[0, 2:] = np.nan
    garbage[2, 3:] = 1e30
    loss, dr, stats = L.ranking_loss(r, counts)
    loss2, dr2, stats2 = L.ranking_loss(garbage, counts)
    assert loss == loss2 and stats["accuracy"] == stats2["accuracy"]
    np.testing.assert_array_equal(dr, dr2)
    assert not dr2[0, 2:].any() and not dr2[2, 3:].any()


def test_ranking_accuracy_counts_every_ranked_pair():
    r = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])  # 3 of 6 pairs in order
    _, _, stats = L.ranking_loss(r)
    assert stats["accuracy"] == pytest.approx(0.5)
    _, _, stats = L.ranking_loss(r, np.array([3, 2]))  # 3 + 0 of 4 pairs
    assert stats["accuracy"] == pytest.approx(0.75)


# ---- PPO ---------------------------------------------------------------------------------


@pytest.mark.parametrize("N", SIZES)
def test_ppo_policy_loss_matches_float64_reference_and_finite_differences(N):
    rng = np.random.default_rng(N)
    old = rand(rng, N) - 2
    logp = old + rand(rng, N, scale=0.3)  # ratios on both sides of the clip range
    adv, mask = rand(rng, N), rand_mask(rng, N)
    loss, dlogp, stats = L.ppo_policy_loss(logp, old, adv, mask, clip=0.2)
    rloss, rstats = ref_ppo(logp, old, adv, mask, 0.2)
    assert abs(loss - rloss) <= 1e-4 * max(abs(rloss), 1e-3)
    for k in rstats:
        assert stats[k] == pytest.approx(rstats[k], rel=1e-4, abs=1e-7)
    fd = fd_grad(lambda z: ref_ppo(z, old, adv, mask, 0.2)[0], logp)
    assert_close(dlogp, fd)


def test_ppo_clipped_tokens_get_no_gradient():
    old = np.zeros(4)
    logp = np.log([1.5, 0.5, 1.5, 0.5])  # ratios 1.5, 0.5, 1.5, 0.5
    adv = np.array([1.0, -1.0, -1.0, 1.0])
    _, d, stats = L.ppo_policy_loss(logp, old, adv, clip=0.2)
    # helpful moves already past the clip range stop; harmful ones keep their gradient
    assert d[0] == 0 and d[1] == 0
    np.testing.assert_allclose(d[2:], [1.5 / 4, -0.5 / 4], rtol=1e-6)
    assert stats["clipfrac"] == 0.5


def test_ppo_masked_mean_divides_by_mask_count():
    rng = np.random.default_rng(14)
    logp, old, adv = rand(rng, 8), rand(rng, 8), rand(rng, 8)
    mask = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    loss, d, _ = L.ppo_policy_loss(logp, old, adv, mask)
    loss3, d3, _ = L.ppo_policy_loss(logp[:3], old[:3], adv[:3])
    assert loss == pytest.approx(loss3, rel=1e-6)
    np.testing.assert_allclose(d[:3], d3, rtol=1e-6)
    assert not d[3:].any()


@pytest.mark.parametrize("N", SIZES)
def test_value_loss_matches_float64_reference_and_finite_differences(N):
    rng = np.random.default_rng(N + 1)
    old, R = rand(rng, N), rand(rng, N)
    v = old + rand(rng, N, scale=0.4)
    mask = rand_mask(rng, N)
    loss, dv, stats = L.value_loss(v, old, R, mask, clip=0.2)
    rloss, rclip = ref_value(v, old, R, mask, 0.2)
    assert abs(loss - rloss) <= 1e-4 * rloss
    assert stats["clipfrac"] == pytest.approx(rclip)
    fd = fd_grad(lambda z: ref_value(z, old, R, mask, 0.2)[0], v)
    assert_close(dv, fd)


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
def test_kl_estimates_match_float64_reference_and_finite_differences(kind):
    rng = np.random.default_rng(15)
    logp, ref = rand(rng, 3, 17) - 2, rand(rng, 3, 17) - 2
    kl, dlogp = L.kl_penalty(logp, ref, kind)
    assert_close(kl, ref_kl(logp, ref, kind))
    fd = fd_grad(lambda z: ref_kl(z, ref, kind).sum(), logp)
    assert_close(dlogp, fd)
    dkl = rand(rng, 3, 17)
    _, scaled = L.kl_penalty(logp, ref, kind, dkl=dkl)
    assert_close(scaled, dkl * fd)


def test_kl_k2_k3_are_nonnegative_and_zero_at_equality():
    rng = np.random.default_rng(16)
    logp, ref = rand(rng, 65, scale=3), rand(rng, 65, scale=3)
    for kind in ("k2", "k3"):
        assert (L.kl_penalty(logp, ref, kind)[0] >= 0).all()
        assert not L.kl_penalty(logp, logp, kind)[0].any()


# ---- DPO ---------------------------------------------------------------------------------


@pytest.mark.parametrize("P", SIZES)
def test_dpo_loss_matches_float64_reference_and_finite_differences(P):
    rng = np.random.default_rng(P + 2)
    pc, pr, rc, rr = (rand(rng, P, scale=5) - 20 for _ in range(4))
    loss, (dc, dr), stats = L.dpo_loss(pc, pr, rc, rr, beta=0.1)
    rloss, c, r = ref_dpo(pc, pr, rc, rr, 0.1)
    assert abs(loss - rloss) <= 1e-4 * rloss
    assert_close(dc, fd_grad(lambda z: ref_dpo(z, pr, rc, rr, 0.1)[0], pc))
    assert_close(dr, fd_grad(lambda z: ref_dpo(pc, z, rc, rr, 0.1)[0], pr))
    assert_close(stats["chosen_rewards"], c)
    assert_close(stats["rejected_rewards"], r)
    assert stats["accuracy"] == pytest.approx((c > r).mean())
    assert stats["margin"] == pytest.approx((c - r).mean(), rel=1e-4, abs=1e-6)


# ---- PyTorch autograd parity (float64) ---------------------------------------------------


def test_losses_match_torch_autograd():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(17)

    def leaf(a):
        return torch.tensor(np.float64(a), requires_grad=True)

    # cross-entropy with a mask
    x, t, mask = rand(rng, 17, 63, scale=2), rng.integers(0, 63, 17), rand_mask(rng, 17)
    xt = leaf(x)
    tl = F.cross_entropy(xt[torch.tensor(mask)], torch.tensor(t[mask]))
    tl.backward()
    loss, d = L.cross_entropy(x, t, mask)
    assert abs(loss - tl.item()) <= 1e-4 * tl.item()
    assert_close(d, xt.grad.numpy())

    # log-probs and entropy at a temperature, backward through both
    T, dlogp, dent = 0.8, rand(rng, 17), rand(rng, 17)
    xt = leaf(x)
    lp = F.log_softmax(xt / T, -1)
    tlogp = lp[torch.arange(17), torch.tensor(t)]
    tent = -(lp.exp() * lp).sum(-1)
    (tlogp * torch.tensor(np.float64(dlogp))).sum().add(
        (tent * torch.tensor(np.float64(dent))).sum()).backward()
    logp, ent = L.logprobs(x, t, temperature=T)
    assert_close(logp, tlogp.detach().numpy())
    assert_close(ent, tent.detach().numpy())
    assert_close(L.logprobs_backward(x, t, dlogp, dent, temperature=T), xt.grad.numpy())

    # 4-way ranking loss
    r = rand(rng, 7, 4)
    rt = leaf(r)
    idx = torch.tensor([(i, j) for i in range(4) for j in range(i + 1, 4)])
    tl = -F.logsigmoid(rt[:, idx[:, 0]] - rt[:, idx[:, 1]]).mean()
    tl.backward()
    loss, dr, _ = L.ranking_loss(r)
    assert abs(loss - tl.item()) <= 1e-4 * tl.item()
    assert_close(dr, rt.grad.numpy())

    # PPO surrogate and value loss (TRL's formulation)
    old, adv = rand(rng, 65) - 2, rand(rng, 65)
    logp = old + rand(rng, 65, scale=0.3)
    lt = leaf(logp)
    ratio = torch.exp(lt - torch.tensor(np.float64(old)))
    a = torch.tensor(np.float64(adv))
    tl = torch.max(-a * ratio, -a * torch.clamp(ratio, 0.8, 1.2)).mean()
    tl.backward()
    loss, d, _ = L.ppo_policy_loss(logp, old, adv)
    assert abs(loss - tl.item()) <= 1e-4 * abs(tl.item())
    assert_close(d, lt.grad.numpy())

    v, R = old + rand(rng, 65, scale=0.4), rand(rng, 65)
    vt = leaf(v)
    vo = torch.tensor(np.float64(old))
    vc = torch.clamp(vt, vo - 0.2, vo + 0.2)
    Rt = torch.tensor(np.float64(R))
    tl = 0.5 * torch.max((vt - Rt) ** 2, (vc - Rt) ** 2).mean()
    tl.backward()
    loss, d, _ = L.value_loss(v, old, R)
    assert abs(loss - tl.item()) <= 1e-4 * tl.item()
    assert_close(d, vt.grad.numpy())

    # DPO
    pc, pr, rc, rr = (rand(rng, 7, scale=5) - 20 for _ in range(4))
    pct, prt = leaf(pc), leaf(pr)
    h = 0.1 * ((pct - prt) - torch.tensor(np.float64(rc) - rr))
    tl = -F.logsigmoid(h).mean()
    tl.backward()
    loss, (dc, dr), _ = L.dpo_loss(pc, pr, rc, rr)
    assert abs(loss - tl.item()) <= 1e-4 * tl.item()
    assert_close(dc, pct.grad.numpy())
    assert_close(dr, prt.grad.numpy())


# ---- bad input ---------------------------------------------------------------------------


def test_python_layer_rejects_bad_input_naming_the_argument():
    rng = np.random.default_rng(18)
    x, t, v = rand(rng, 7, 17), rng.integers(0, 17, 7), rand(rng, 7)
    cases = [
        (lambda: L.cross_entropy(x, t[:5]), ValueError, "targets"),
        (lambda: L.cross_entropy(x, t.astype(np.float32)), TypeError, "targets"),
        (lambda: L.cross_entropy(x, t + 17), ValueError, "targets"),
        (lambda: L.cross_entropy(x, -t - 1), ValueError, "targets"),
        (lambda: L.cross_entropy(x, t, np.ones(6)), ValueError, "mask"),
        (lambda: L.cross_entropy(x, t, np.full(7, 0.5)), ValueError, "mask"),
        (lambda: L.cross_entropy(np.where(x > 1, np.nan, x), t), ValueError, "logits"),
        (lambda: L.cross_entropy(x.astype(str), t), TypeError, "logits"),
        (lambda: L.logprobs(x, t, temperature=0.0), ValueError, "temperature"),
        (lambda: L.logprobs_backward(x, t, v[:3]), ValueError, "dlogp"),
        (lambda: L.ranking_loss(v), ValueError, "rewards"),
        (lambda: L.ranking_loss(x, np.full(7, 18)), ValueError, "counts"),
        (lambda: L.ranking_loss(x, np.full(7, 1)), ValueError, "counts"),
        (lambda: L.ranking_loss(x, np.full(7, 2.0)), TypeError, "counts"),
        (lambda: L.ranking_loss(np.full((2, 3), np.inf)), ValueError, "rewards"),
        (lambda: L.ranking_loss(x, center_coef=-1.0), ValueError, "center_coef"),
        (lambda: L.ppo_policy_loss(v, v, v[:6]), ValueError, "advantages"),
        (lambda: L.ppo_policy_loss(v, v * np.inf, v), ValueError, "old_logp"),
        (lambda: L.ppo_policy_loss(v, v, v, clip=-0.1), ValueError, "clip"),
        (lambda: L.value_loss(v, v, v[:6]), ValueError, "returns"),
        (lambda: L.value_loss(v, v, v * np.nan), ValueError, "returns"),
        (lambda: L.kl_penalty(v, v, kind="k4"), ValueError, "kind"),
        (lambda: L.kl_penalty(v, v[:3]), ValueError, "ref_logp"),
        (lambda: L.dpo_loss(v, v, v, v[:3]), ValueError, "ref_rejected_logp"),
        (lambda: L.dpo_loss(v, v, v, v, beta=0.0), ValueError, "beta"),
        (lambda: L.ppo_policy_loss([], [], []), ValueError, "logp"),
    ]
    for fn, err, name in cases:
        with pytest.raises(err, match=name):
            fn()


def test_core_bindings_refuse_bad_arrays_without_crashing():
    rng = np.random.default_rng(19)
    x, t = rand(rng, 7, 17), rng.integers(0, 17, 7).astype(np.int32)
    v = rand(rng, 7)
    cases = [
        (lambda: _core.crossentropy_forward(None, x.astype(np.float64), t, None), TypeError),
        (lambda: _core.crossentropy_forward(None, x[:, ::2], t, None), ValueError),  # strided
        (lambda: _core.crossentropy_forward(None, x.reshape(-1), t, None), ValueError),
        (lambda: _core.crossentropy_forward(None, x, t.astype(np.int64), None), TypeError),
        (lambda: _core.crossentropy_forward(None, x, t + 17, None), ValueError),
        (lambda: _core.crossentropy_forward(np.zeros(6, np.float32), x, t, None), ValueError),
        (lambda: _core.crossentropy_forward(None, x, t, [1.0] * 7), TypeError),
        (lambda: _core.crossentropy_backward(x[:3], x, t, None, 1.0), ValueError),
        (lambda: _core.crossentropy_backward(np.zeros_like(x), x, t, None, np.nan), ValueError),
        (lambda: _core.crossentropy_backward(x[1:], x[:-1], t[:6], None, 1.0), ValueError),
        (lambda: _core.logprobs_forward(v, None, x, t, -1.0), ValueError),
        (lambda: _core.logprobs_backward(x, x, t, v, None, 1.0), ValueError),  # overlap
        (lambda: _core.ranking_loss_forward(None, x, t * 0 + 18, 0.0, 0.0), ValueError),  # > K
        (lambda: _core.ppo_policy_forward(v, v, v[:3], None, 0.2), ValueError),
        (lambda: _core.ppo_policy_backward(v[:3], v, v, v, None, 0.2, 1.0), ValueError),
        (lambda: _core.value_loss_forward(v, v, v, np.full(7, np.nan, np.float32), 0.2),
         ValueError),
        (lambda: _core.kl_forward(np.zeros(7, np.float32), v, v, 4), ValueError),
        (lambda: _core.kl_backward(np.zeros(7, np.float32), v, v, v.astype(np.float64), 1),
         TypeError),
        (lambda: _core.dpo_backward(v, v, v, v, v, v, 0.1, 1.0), ValueError),  # same output
        (lambda: _core.dpo_forward(None, None, v, v, v, np.zeros(0, np.float32), 0.1),
         ValueError),
        (lambda: _core.losses_set_isa("avx9000"), ValueError),
    ]
    for fn, err in cases:
        with pytest.raises(err):
            fn()

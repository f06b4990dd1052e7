"""The losses of the four training stages, on NumPy arrays.

Each function runs a forward/backward pair of the C core (`csrc/losses.c`) and returns the
loss together with the gradient of its input: the number a training step minimises and the
signal a backward pass pushes into the model (`model.backward(dlogits=...)`). Inputs may have
any shape as long as the shapes agree (they are flattened in C order; gradients come back in
the input's shape). Masks are bool or 0/1 arrays: a masked mean divides by the number of
selected entries, and when none is selected the loss is NaN and the gradient zero.

    stage                   loss                              function
    pretraining, SFT        next-token cross-entropy          cross_entropy
    reward modeling         InstructGPT K-way ranking loss    ranking_loss
    RLHF (PPO)              token log-probs and entropy       logprobs, logprobs_backward
                            clipped surrogate objective       ppo_policy_loss
                            clipped value loss                value_loss
                            KL penalty to the reference       kl_penalty
    (alternative to RLHF)   DPO                               dpo_loss
"""

from __future__ import annotations

import numpy as np

from . import _core

__all__ = [
    "cross_entropy",
    "logprobs",
    "logprobs_backward",
    "ranking_loss",
    "ppo_policy_loss",
    "value_loss",
    "kl_penalty",
    "dpo_loss",
]

_KL_KINDS = {"k1": 1, "k2": 2, "k3": 3}


# ---- input conversion ----------------------------------------------------------------------


def _floats(x, name: str) -> np.ndarray:
    """x as a C-contiguous float32 array; TypeError unless it holds real numbers."""
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected real numbers, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _ids(x, name: str, V: int) -> np.ndarray:
    """x as C-contiguous int32 token ids in [0, V); TypeError unless integers."""
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer token ids, got dtype {a.dtype}")
    if a.size and (a.min() < 0 or a.max() >= V):
        raise ValueError(f"{name}: expected ids in [0, {V}), got values in "
                         f"[{a.min()}, {a.max()}]")
    return np.ascontiguousarray(a, dtype=np.int32)


def _mask(mask, shape: tuple, what: str) -> np.ndarray | None:
    """A bool or 0/1 mask of the given shape as a flat float32 0/1 vector (None stays None)."""
    if mask is None:
        return None
    a = np.asarray(mask)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"mask: expected bool or 0/1 numbers, got dtype {a.dtype}")
    if a.shape != shape:
        raise ValueError(f"mask: expected shape {shape} (that of {what}), got {a.shape}")
    if a.dtype.kind != "b" and not np.isin(a, (0, 1)).all():
        raise ValueError("mask: expected only 0 and 1 (or booleans)")
    return np.ascontiguousarray(a.reshape(-1) != 0, dtype=np.float32)


def _same_shape(**arrays: np.ndarray) -> tuple:
    """The common shape of the arrays; ValueError naming them if they differ or are empty."""
    shapes = {name: a.shape for name, a in arrays.items()}
    first = next(iter(shapes.values()))
    if any(s != first for s in shapes.values()):
        listed = ", ".join(f"{name} {s}" for name, s in shapes.items())
        raise ValueError(f"shapes do not agree: {listed}")
    if int(np.prod(first)) == 0:
        raise ValueError(f"{', '.join(shapes)}: expected at least one element, got shape {first}")
    return first


def _logits_targets(logits, targets) -> tuple[np.ndarray, np.ndarray]:
    """logits (..., V) as float32 and targets (...) as int32 ids in [0, V)."""
    x = _floats(logits, "logits")
    if x.ndim < 1 or x.shape[-1] < 1 or x.size == 0:
        raise ValueError(f"logits: expected shape (..., V) with V >= 1, got {x.shape}")
    t = _ids(targets, "targets", x.shape[-1])
    if t.shape != x.shape[:-1]:
        raise ValueError(f"targets: expected shape {x.shape[:-1]} (logits.shape[:-1], logits "
                         f"{x.shape}), got {t.shape}")
    return x, t


def _temperature(temperature: float) -> float:
    t = float(temperature)
    if not (np.isfinite(t) and t > 0):
        raise ValueError(f"temperature: expected a finite number > 0, got {temperature}")
    return t


# ---- pretraining and SFT -------------------------------------------------------------------


def cross_entropy(logits, targets, mask=None) -> tuple[float, np.ndarray]:
    """Mean next-token cross-entropy, and its gradient with respect to the logits.

    A language model is trained to give high probability to the token that actually comes
    next: the loss of one position is -log softmax(logits)[target], the "surprise" in nats
    (log(V) for a uniform guess, 0 for a certain and correct one). Pretraining averages it over
    every position; SFT passes a mask so only the assistant's answer tokens count. The gradient
    is (softmax - onehot) / count on each selected row: push up the target, push down the rest.

    logits: (..., V); targets: (...) integer ids in [0, V); mask: (...) bool or 0/1, or None.
    Returns (loss, dlogits) with dlogits shaped like logits; NaN and zeros if the mask selects
    nothing. Per-token losses are -logprobs(logits, targets)[0].
    """
    x, t = _logits_targets(logits, targets)
    V = x.shape[-1]
    x2, t1 = x.reshape(-1, V), t.reshape(-1)
    m = _mask(mask, t.shape, "targets")
    loss = _core.crossentropy_forward(None, x2, t1, m)
    dlogits = np.zeros_like(x2)
    _core.crossentropy_backward(dlogits, x2, t1, m, 1.0)
    return float(loss), dlogits.reshape(x.shape)


# ---- log-probabilities (PPO rollouts and updates) ------------------------------------------


def logprobs(logits, targets, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Log-probability of given tokens, and the entropy of each distribution.

    RLHF works with the log-probability the policy gives to the tokens it sampled: PPO compares
    it with the same number under the old policy (the ratio) and under the frozen reference
    model (the KL penalty). The entropy -sum p log p says how spread the next-token distribution
    is; it is logged (it falls as the policy grows sure of itself) and can be rewarded. Both are
    of softmax(logits / temperature), the distribution the tokens were sampled from.

    logits: (..., V); targets: (...) ids in [0, V). Returns (logp, entropy), each of shape (...).
    """
    x, t = _logits_targets(logits, targets)
    V = x.shape[-1]
    N = t.size
    logp = np.empty(N, np.float32)
    entropy = np.empty(N, np.float32)
    _core.logprobs_forward(logp, entropy, x.reshape(-1, V), t.reshape(-1),
                           _temperature(temperature))
    return logp.reshape(t.shape), entropy.reshape(t.shape)


def logprobs_backward(logits, targets, dlogp, dentropy=None,
                      temperature: float = 1.0) -> np.ndarray:
    """Gradient of a loss with respect to the logits, given its gradient with respect to the
    outputs of `logprobs` (dlogp, and optionally dentropy, each shaped like targets).

    With z = logits / T and p = softmax(z): d logp / dz = onehot - p, d entropy / dz =
    -p (log p + entropy), and the 1/T of the chain rule. This is how a PPO loss on per-token
    log-probs reaches the model: loss -> dlogp -> dlogits -> model.backward(dlogits=...).

    Returns dlogits, shaped like logits.
    """
    x, t = _logits_targets(logits, targets)
    V = x.shape[-1]
    g = _floats(dlogp, "dlogp")
    if g.shape != t.shape:
        raise ValueError(f"dlogp: expected shape {t.shape} (that of targets), got {g.shape}")
    ge = None
    if dentropy is not None:
        ge = _floats(dentropy, "dentropy")
        if ge.shape != t.shape:
            raise ValueError(f"dentropy: expected shape {t.shape} (that of targets), got "
                             f"{ge.shape}")
        ge = ge.reshape(-1)
    dlogits = np.zeros((t.size, V), np.float32)
    _core.logprobs_backward(dlogits, x.reshape(-1, V), t.reshape(-1), g.reshape(-1), ge,
                            _temperature(temperature))
    return dlogits.reshape(x.shape)


# ---- reward modeling -----------------------------------------------------------------------


def ranking_loss(rewards, counts=None, margin: float = 0.0,
                 center_coef: float = 0.0) -> tuple[float, np.ndarray, dict]:
    """InstructGPT's K-way ranking loss for a reward model, and its gradient.

    Labelers rank k responses to a prompt, best first. Every one of the C(k,2) pairs (i above
    j) gives the Bradley-Terry loss -log sigmoid(r_i - r_j - margin): the reward model is
    pushed to score the preferred response higher. InstructGPT divides by C(k,2) once per
    prompt so a prompt weighs as one example however many responses it has (pairs of one
    prompt are correlated, and treating them as separate examples overfits). Pairwise data is
    k = 2. center_coef adds center_coef * mean(r^2) per prompt, which keeps rewards near 0
    (the loss only sees differences, so their level would otherwise drift).

    rewards: (P, K) rewards of K responses for P prompts, in ranked order; counts: (P) ints in
    [2, K] when prompt p has only counts[p] ranked responses (later entries ignored), or None.
    Returns (loss, drewards (P, K), stats): stats["accuracy"] is the fraction of ranked pairs
    with r_i > r_j, stats["reward_gap"] the mean r_i - r_j over them, stats["losses"] the (P)
    per-prompt losses.
    """
    r = _floats(rewards, "rewards")
    if r.ndim != 2 or r.shape[0] < 1 or r.shape[1] < 2:
        raise ValueError(f"rewards: expected shape (P, K) with P >= 1 and K >= 2, got {r.shape}")
    P, K = r.shape
    c = None
    if counts is not None:
        c = np.asarray(counts)
        if c.dtype.kind not in "iu":
            raise TypeError(f"counts: expected integers, got dtype {c.dtype}")
        if c.shape != (P,):
            raise ValueError(f"counts: expected shape ({P},) (one per row of rewards), got "
                             f"{c.shape}")
        if (c < 2).any() or (c > K).any():
            raise ValueError(f"counts: expected values in [2, {K}], got [{c.min()}, {c.max()}]")
        c = np.ascontiguousarray(c, dtype=np.int32)
    losses = np.empty(P, np.float32)
    loss, accuracy, gap = _core.ranking_loss_forward(losses, r, c, float(margin),
                                                     float(center_coef))
    drewards = np.zeros_like(r)
    _core.ranking_loss_backward(drewards, r, c, float(margin), float(center_coef), 1.0)
    return float(loss), drewards, {"accuracy": accuracy, "reward_gap": gap, "losses": losses}


# ---- RLHF with PPO -------------------------------------------------------------------------


def ppo_policy_loss(logp, old_logp, advantages, mask=None,
                    clip: float = 0.2) -> tuple[float, np.ndarray, dict]:
    """PPO's clipped surrogate objective (as a loss to minimise), and its gradient.

    ratio = exp(logp - old_logp) says how much more likely the updated policy makes a sampled
    token than the policy that sampled it. Minimising -advantage * ratio raises the probability
    of better-than-expected tokens; PPO takes the max with the same term at a ratio clipped to
    [1 - clip, 1 + clip], so once a token's probability has moved that far in the helpful
    direction its gradient is zero: many small steps on one batch of rollouts stay close to
    the policy that collected it.

    logp, old_logp, advantages, mask: same shape (one entry per generated token).
    Returns (loss, dlogp, stats) with stats "clipfrac" (fraction of tokens where the clipped
    term was taken), "approx_kl" (mean 0.5 (logp - old_logp)^2) and "ratio_mean".
    """
    lp, old, adv = (_floats(logp, "logp"), _floats(old_logp, "old_logp"),
                    _floats(advantages, "advantages"))
    shape = _same_shape(logp=lp, old_logp=old, advantages=adv)
    m = _mask(mask, shape, "logp")
    args = (lp.reshape(-1), old.reshape(-1), adv.reshape(-1), m, float(clip))
    loss, clipfrac, approx_kl, ratio_mean = _core.ppo_policy_forward(*args)
    dlogp = np.zeros(lp.size, np.float32)
    _core.ppo_policy_backward(dlogp, *args, 1.0)
    stats = {"clipfrac": clipfrac, "approx_kl": approx_kl, "ratio_mean": ratio_mean}
    return float(loss), dlogp.reshape(shape), stats


def value_loss(values, old_values, returns, mask=None,
               clip: float = 0.2) -> tuple[float, np.ndarray, dict]:
    """PPO's clipped value loss, and its gradient.

    The value head predicts the return (future reward) from each token so advantages can be
    estimated. Its loss is 0.5 (v - R)^2; as for the policy, PPO limits how far one update
    moves it: it also computes the error of v clipped to old_values +- clip and takes the
    larger of the two, so moving beyond the clip range earns no gradient.

    values, old_values, returns, mask: same shape. Returns (loss, dvalues, stats) with
    stats["clipfrac"], the fraction of tokens where the clipped error was the larger.
    """
    v, old, ret = (_floats(values, "values"), _floats(old_values, "old_values"),
                   _floats(returns, "returns"))
    shape = _same_shape(values=v, old_values=old, returns=ret)
    m = _mask(mask, shape, "values")
    args = (v.reshape(-1), old.reshape(-1), ret.reshape(-1), m, float(clip))
    loss, clipfrac = _core.value_loss_forward(*args)
    dvalues = np.zeros(v.size, np.float32)
    _core.value_loss_backward(dvalues, *args, 1.0)
    return float(loss), dvalues.reshape(shape), {"clipfrac": clipfrac}


def kl_penalty(logp, ref_logp, kind: str = "k1", dkl=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-token estimates of KL(policy || reference), and their derivative in logp.

    RLHF subtracts beta * KL from the reward so the policy stays close to the SFT model it
    started from (and does not drift into text that fools the reward model). Only the sampled
    tokens' log-probs are known, so the KL is estimated per token (Schulman, "Approximating KL
    divergence"), with log r = ref_logp - logp:
      k1 = logp - ref_logp       unbiased, but negative for some tokens
      k2 = 0.5 (log r)^2         biased, low variance, always >= 0
      k3 = (r - 1) - log r       unbiased and always >= 0
    Returns (kl, dlogp), both shaped like logp: dlogp = dkl * d kl / d logp, with dkl ones by
    default (the derivative of each token's estimate).
    """
    if kind not in _KL_KINDS:
        raise ValueError(f"kind: expected one of {sorted(_KL_KINDS)}, got {kind!r}")
    lp, ref = _floats(logp, "logp"), _floats(ref_logp, "ref_logp")
    shape = _same_shape(logp=lp, ref_logp=ref)
    g = np.ones(lp.size, np.float32) if dkl is None else _floats(dkl, "dkl")
    if dkl is not None:
        _same_shape(logp=lp, dkl=g)
    kl = np.empty(lp.size, np.float32)
    _core.kl_forward(kl, lp.reshape(-1), ref.reshape(-1), _KL_KINDS[kind])
    dlogp = np.zeros(lp.size, np.float32)
    _core.kl_backward(dlogp, lp.reshape(-1), ref.reshape(-1), g.reshape(-1), _KL_KINDS[kind])
    return kl.reshape(shape), dlogp.reshape(shape)


# ---- DPO -----------------------------------------------------------------------------------


def dpo_loss(policy_chosen_logp, policy_rejected_logp, ref_chosen_logp, ref_rejected_logp,
             beta: float = 0.1) -> tuple[float, tuple[np.ndarray, np.ndarray], dict]:
    """Direct Preference Optimisation (sigmoid loss), and its gradient.

    DPO skips the reward model and PPO: it reads beta * log(pi / pi_ref) of a whole response
    as an implicit reward and applies the pairwise ranking loss to it directly,
    -log sigmoid(chosen_reward - rejected_reward). The frozen reference keeps the policy close
    to where it started, as the KL penalty does in RLHF; beta sets how close.

    Inputs: (P) or any common shape, sums of token log-probs of each response under the
    policy and the reference. Returns (loss, (d_policy_chosen_logp, d_policy_rejected_logp),
    stats) with stats "accuracy" (fraction of pairs whose chosen reward is higher),
    "chosen_reward", "rejected_reward", "margin" (means) and the per-pair arrays
    "chosen_rewards", "rejected_rewards".
    """
    b = float(beta)
    names = ("policy_chosen_logp", "policy_rejected_logp", "ref_chosen_logp",
             "ref_rejected_logp")
    arrays = [_floats(a, n) for a, n in zip((policy_chosen_logp, policy_rejected_logp,
                                              ref_chosen_logp, ref_rejected_logp), names)]
    shape = _same_shape(**dict(zip(names, arrays)))
    flat = [a.reshape(-1) for a in arrays]
    P = flat[0].size
    chosen, rejected = np.empty(P, np.float32), np.empty(P, np.float32)
    loss, acc, cmean, rmean, margin = _core.dpo_forward(chosen, rejected, *flat, b)
    dc, dr = np.zeros(P, np.float32), np.zeros(P, np.float32)
    _core.dpo_backward(dc, dr, *flat, b, 1.0)
    stats = {"accuracy": acc, "chosen_reward": cmean, "rejected_reward": rmean,
             "margin": margin, "chosen_rewards": chosen.reshape(shape),
             "rejected_rewards": rejected.reshape(shape)}
    return float(loss), (dc.reshape(shape), dr.reshape(shape)), stats

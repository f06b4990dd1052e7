"""Stage 4: reinforcement learning from human feedback, with PPO.

The SFT model (the *policy*) now learns by trial: it answers a batch of prompts, the reward
model scores each answer, and the policy is nudged toward the answers that scored well. Four
models take part:

- the **policy** (starts as the SFT model, trained);
- the **reference** (a frozen copy of the SFT model): the reward is reduced by
  beta * KL(policy || reference), token by token, so the policy does not wander off into text
  the reward model was never trained on (and learns to fool it);
- the **reward model** (frozen): one score per answer, read at its end marker;
- the **value model** (starts as the reward model, trained): predicts, at each token, the
  reward still to come, so each token's *advantage* -- better or worse than expected? -- can
  be estimated with GAE.

One ``step()``:

1. rollout: sample a reply to each of ``batch_size`` prompts at the training temperature;
2. evaluate it: log-probs of the sampled tokens under the policy and the reference (forward
   passes at the same temperature), values, the reward model's score at the end marker (minus
   ``missing_eos_penalty`` when the reply never ended);
3. per-token rewards r_t = -beta * KL_t, plus the score on the last real token; advantages by
   GAE (gamma, lambda), whitened; returns = advantages + values are the value targets;
4. ``num_ppo_epochs`` passes over the batch in ``num_mini_batches`` minibatches: the clipped
   surrogate loss for the policy (plus an optional entropy bonus and the PPO-ptx pretraining
   loss), the clipped value loss for the value model.

The names of the metrics follow Hugging Face TRL's PPOTrainer, so curves can be compared.
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np

from .. import losses
from ..batching import Batches, windows
from ..chat import sample
from ..optim import AdamW
from .base import Trainer
from .reward import RecordBatches, RewardModel, pad_rows

CATEGORIES = ("improper", "contested", "out_of_scope")
RATE_NAMES = {"improper": "refuse_improper", "contested": "impartial",
              "out_of_scope": "decline_out_of_scope"}


def whiten(x: np.ndarray, mask: np.ndarray, shift_mean: bool = True) -> np.ndarray:
    """(x - mean) / std over the positions where ``mask`` is 1 (the mean is added back when
    ``shift_mean`` is False). Zero elsewhere. Whitened advantages keep the step size of the
    policy independent of the scale of the reward."""
    m = mask > 0
    vals = x[m].astype(np.float64)
    mean, var = vals.mean(), vals.var()
    out = (x - mean) / math.sqrt(var + 1e-8)
    if not shift_mean:
        out += mean
    return np.where(m, out, 0.0).astype(np.float32)


def gae(rewards: np.ndarray, values: np.ndarray, mask: np.ndarray, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation (Schulman et al. 2016) over reply tokens.

    With delta_t = r_t + gamma V_{t+1} - V_t (V after the last real token is 0), the advantage
    is A_t = delta_t + gamma lambda A_{t+1}: lambda = 1 is the Monte-Carlo return minus the
    value, lambda = 0 the one-step TD error. rewards, values, mask: (B, R), replies
    right-padded (mask 0 after each reply's last token). Returns (advantages, returns), both
    (B, R), zero on padding; returns = advantages + values (the value model's targets)."""
    m = (mask > 0)
    r = np.where(m, rewards, 0.0).astype(np.float64)
    v = np.where(m, values, 0.0).astype(np.float64)
    B, R = r.shape
    adv = np.zeros((B, R))
    last = np.zeros(B)
    for t in reversed(range(R)):
        next_v = v[:, t + 1] if t + 1 < R else np.zeros(B)
        delta = r[:, t] + gamma * next_v - v[:, t]
        last = delta + gamma * lam * last
        last = np.where(m[:, t], last, 0.0)
        adv[:, t] = last
    ret = adv + v
    return adv.astype(np.float32), np.where(m, ret, 0.0).astype(np.float32)


def layout(samples) -> tuple:
    """Arrange sampled replies (chat ``Sample`` objects) for PPO: ``idx`` (B, L) prompt + reply
    right-padded, ``lens`` (B,) real lengths, and over reply tokens (B, R): ``resp`` the token
    ids, ``pos`` the position in ``idx`` whose logits predict each of them (one before it),
    ``mask`` 1 on real tokens. The positions match generation exactly (no left padding)."""
    idx, lens = pad_rows([s.prompt_ids + s.ids for s in samples])
    n_resp = np.asarray([len(s.ids) for s in samples])
    B, R = len(samples), int(n_resp.max())
    mask = (np.arange(R)[None, :] < n_resp[:, None]).astype(np.float32)
    resp = np.zeros((B, R), np.int32)
    pos = np.zeros((B, R), np.int64)
    for b, s in enumerate(samples):
        q, n = len(s.prompt_ids), len(s.ids)
        resp[b, :n] = s.ids
        pos[b, :n] = np.arange(q - 1, q - 1 + n)
    return idx, lens, resp, pos, mask


def reply_logprobs(model, idx, resp, pos, temperature: float = 1.0, return_logits=False):
    """One forward pass of ``model`` on ``idx``; the log-probs and entropies (B, R) of the reply
    tokens at ``temperature`` (the sampling distribution), and the (B, R, V) logits they came
    from (plus the full (B, L, V) logits with ``return_logits``)."""
    logits = model.forward(idx)                                   # (B, L, V)
    g = logits[np.arange(len(idx))[:, None], pos]                 # (B, R, V)
    logp, ent = losses.logprobs(g, resp, temperature)
    return (logp, ent, g, logits) if return_logits else (logp, ent, g)


class AdaptiveKLController:
    """Ziegler et al. (2019): raise beta when the KL overshoots ``target``, lower it when it
    undershoots, by at most 20% of the error per ``horizon`` episodes."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        self.value, self.target, self.horizon = float(init_kl_coef), float(target), int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        error = float(np.clip(current_kl / self.target - 1.0, -0.2, 0.2))
        self.value *= 1.0 + error * n_steps / self.horizon


class PPOTrainer(Trainer):
    """RLHF with PPO on ``policy`` (trained), against a frozen ``ref`` and ``reward_model``.

    Args (the main ones):
        prompts: strings or dicts with ``prompt`` (and ``category`` for the behaviour rates).
        value_model: a ``RewardModel`` read at every position; default: a copy of the RM.
        labeler: a ``GoldLabeler``: adds ``gold/score`` and behaviour rates of each rollout.
        kl_coef: beta; with ``target_kl`` set, the adaptive controller moves it (``horizon``).
        kl_estimator: "k1" (logp - ref_logp) or "k3" (always >= 0) per-token KL.
        missing_eos_penalty: subtracted from the score of replies that never ended.
        ptx_coef, ptx_data: PPO-ptx, mix ``ptx_coef`` x the pretraining loss on ``ptx_data``
            (a token array or text) into every policy update.
    """

    name = "ppo"
    postfix_keys = ("objective/scores", "objective/kl", "gold/score")

    def __init__(self, policy, ref, reward_model: RewardModel, tok, prompts, value_model=None,
                 labeler=None, batch_size: int = 32, num_mini_batches: int = 2,
                 num_ppo_epochs: int = 4, lr: float = 3e-5, vf_lr: float | None = None,
                 max_new_tokens: int = 32, temperature: float = 1.0, kl_coef: float = 0.05,
                 kl_estimator: str = "k1", target_kl: float | None = None,
                 kl_horizon: int = 10000, whiten_rewards: bool = False, gamma: float = 1.0,
                 lam: float = 0.95, cliprange: float = 0.2, cliprange_value: float = 0.2,
                 vf_coef: float = 0.1, ent_coef: float = 0.0,
                 missing_eos_penalty: float | None = None, ptx_coef: float = 0.0,
                 ptx_data=None, ptx_batch_size: int = 8, grad_clip: float = 1.0, seed: int = 0,
                 on_nonfinite: str = "raise"):
        super().__init__(seed)
        if not isinstance(reward_model, RewardModel):
            raise TypeError("reward_model: expected a RewardModel")
        if kl_estimator not in ("k1", "k3"):
            raise ValueError(f"kl_estimator: expected 'k1' or 'k3', got {kl_estimator!r}")
        if not temperature > 0:
            raise ValueError(f"temperature: expected > 0 (log-probs need it), got {temperature}")
        if batch_size < num_mini_batches:
            raise ValueError("batch_size must be >= num_mini_batches")
        self.policy, self.ref, self.reward_model, self.tok = policy, ref, reward_model, tok
        self.value_model = reward_model.copy() if value_model is None else value_model
        self.labeler = labeler
        self.prompts = [p if isinstance(p, dict) else {"prompt": p} for p in prompts]
        if not self.prompts:
            raise ValueError("prompts: expected at least one prompt")
        self.batches = RecordBatches(len(self.prompts), min(batch_size, len(self.prompts)), seed)
        self.policy_opt = AdamW(policy, lr, weight_decay=0.0, on_nonfinite=on_nonfinite)
        self.value_opt = AdamW(self.value_model, lr if vf_lr is None else vf_lr,
                               weight_decay=0.0, on_nonfinite=on_nonfinite)
        self.lr, self.vf_lr = lr, lr if vf_lr is None else vf_lr
        self.num_mini_batches, self.num_ppo_epochs = num_mini_batches, num_ppo_epochs
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.kl = AdaptiveKLController(kl_coef, target_kl, kl_horizon) if target_kl else None
        self.kl_coef, self.kl_estimator = kl_coef, kl_estimator
        self.whiten_rewards, self.gamma, self.lam = whiten_rewards, gamma, lam
        self.cliprange, self.cliprange_value = cliprange, cliprange_value
        self.vf_coef, self.ent_coef = vf_coef, ent_coef
        self.missing_eos_penalty, self.grad_clip = missing_eos_penalty, grad_clip
        self.ptx_coef = ptx_coef
        self.ptx_batches = None
        if ptx_coef:
            if ptx_data is None:
                raise ValueError("ptx_coef > 0 needs ptx_data (pretraining text or tokens)")
            from .pretrain import tokenize_corpus
            tokens = ptx_data if isinstance(ptx_data, np.ndarray) else \
                tokenize_corpus(tok, ptx_data)
            T = policy.config.block_size
            self.ptx_batches = Batches(windows(tokens, T), ptx_batch_size, T, seed=seed)
        self._last: dict | None = None

    # -- one PPO step ----------------------------------------------------------------------
    def step(self) -> dict:
        """One rollout batch and its PPO updates. Returns TRL-style metrics."""
        t0 = time.perf_counter()
        ro = self.rollout()
        t1 = time.perf_counter()
        upd = self.update(ro)
        self.t += 1
        beta = self.kl_coef
        if self.kl is not None:
            self.kl.update(ro["mean_kl"], len(ro["samples"]))
            self.kl_coef = self.kl.value
        mask = ro["mask"]
        seq_kl = (ro["kl"] * mask).sum(1)
        non_score = (ro["non_score_reward"]).sum(1)
        stats = {
            "objective/scores": float(ro["scores"].mean()),
            "objective/rm_score": float(ro["raw_scores"].mean()),
            "objective/kl": float(seq_kl.mean()),
            "objective/entropy": float((-ro["logp"] * mask).sum(1).mean()),
            "objective/non_score_reward": float(non_score.mean()),
            "objective/rlhf_reward": float((ro["scores"] + non_score).mean()),
            **upd,
            "val/num_eos_tokens": float(sum(s.ended for s in ro["samples"])),
            "val/response_length": float(mask.sum(1).mean()),
            "lr": self.lr, "beta": beta,
            "time/rollout": t1 - t0, "time/update": time.perf_counter() - t1,
        }
        stats.update(self._gold(ro))
        self._warn(stats)
        return self._log(**stats)

    def rollout(self) -> dict:
        """Sample replies to the next batch of prompts and compute everything PPO needs:
        arrays (B, R) over reply tokens (right-padded, ``mask`` 1 on real tokens)."""
        items = [self.prompts[i] for i in self.batches.next()]
        seed = int(self.rng.integers(2**31))
        samples = sample(self.policy, self.tok, [it["prompt"] for it in items],
                         self.max_new_tokens, temperature=self.temperature, seed=seed,
                         batch_size=len(items))
        B = len(samples)
        idx, lens, resp, pos, mask = layout(samples)
        n_resp = mask.sum(1).astype(np.int64)
        logp, _, _ = reply_logprobs(self.policy, idx, resp, pos, self.temperature)
        ref_logp, _, _ = reply_logprobs(self.ref, idx, resp, pos, self.temperature)
        rows = np.arange(B)[:, None]
        values = self.value_model.values(idx)[rows, pos] * mask
        raw = self.reward_model.score(idx, lens)             # at the last real token
        ended = np.asarray([s.ended for s in samples])
        scores = raw.copy()
        if self.missing_eos_penalty is not None:
            scores[~ended] -= self.missing_eos_penalty
        kl, _ = losses.kl_penalty(logp, ref_logp, self.kl_estimator)
        kl = kl * mask
        non_score = -self.kl_coef * kl
        rewards = non_score.copy()
        rewards[np.arange(B), n_resp - 1] += scores          # the score lands on the last token
        if self.whiten_rewards:
            rewards = whiten(rewards, mask, shift_mean=False)
        adv, returns = gae(rewards, values, mask, self.gamma, self.lam)
        adv = whiten(adv, mask)
        self._last = dict(samples=samples, idx=idx, lens=lens, resp=resp, pos=pos, mask=mask,
                          logp=logp * mask, ref_logp=ref_logp * mask, kl=kl, values=values,
                          raw_scores=raw, scores=scores, non_score_reward=non_score,
                          rewards=rewards, advantages=adv, returns=returns, items=items,
                          mean_kl=float(kl.sum(1).mean()))
        return self._last

    def _logprobs(self, model, idx, resp, pos):
        """Forward ``idx``; the log-probs and entropies (B, R) of the reply tokens at the
        training temperature, and the (B, R, V) logits they came from."""
        logits = model.forward(idx)                                   # (B, L, V)
        g = logits[np.arange(len(idx))[:, None], pos]                 # (B, R, V)
        logp, ent = losses.logprobs(g, resp, self.temperature)
        return logp, ent, g

    def update(self, ro: dict) -> dict:
        """``num_ppo_epochs`` passes of minibatch PPO updates on one rollout batch."""
        B = len(ro["samples"])
        keys = ("approxkl", "clipfrac", "pg_loss", "vf_loss", "vf_clipfrac", "ratio",
                "entropy", "ptx_loss")
        acc = {k: [] for k in keys}
        first = None
        for _ in range(self.num_ppo_epochs):
            order = self.rng.permutation(B)
            for mb in np.array_split(order, self.num_mini_batches):
                st = self._minibatch(ro, np.sort(mb))
                if first is None:
                    first = st
                for k in keys:
                    acc[k].append(st.get(k, np.nan))
        out = {"policy/approxkl_avg": np.mean(acc["approxkl"]),
               "policy/clipfrac_avg": np.mean(acc["clipfrac"]),
               "policy/entropy_avg": np.mean(acc["entropy"]),
               "loss/policy_avg": np.mean(acc["pg_loss"]),
               "loss/value_avg": np.mean(acc["vf_loss"]),
               "val/clipfrac_avg": np.mean(acc["vf_clipfrac"]),
               "val/ratio": np.mean(acc["ratio"]), "val/ratio_var": np.var(acc["ratio"]),
               "sanity/first_ratio": first["ratio"], "sanity/first_approxkl": first["approxkl"]}
        if self.ptx_batches is not None:
            out["loss/ptx_avg"] = np.mean(acc["ptx_loss"])
        return out

    def _minibatch(self, ro: dict, mb: np.ndarray) -> dict:
        """One policy step and one value step on the rollout rows ``mb``."""
        L = int(ro["lens"][mb].max())
        idx, resp, pos, mask = ro["idx"][mb, :L], ro["resp"][mb], ro["pos"][mb], ro["mask"][mb]
        rows = np.arange(len(mb))[:, None]
        sel = mask > 0
        # policy: clipped surrogate (+ entropy bonus) through the log-probs into the trunk
        logp, ent, g, logits = reply_logprobs(self.policy, idx, resp, pos, self.temperature,
                                              return_logits=True)
        pg_loss, dlogp, st = losses.ppo_policy_loss(logp, ro["logp"][mb], ro["advantages"][mb],
                                                    mask, self.cliprange)
        dent = None
        if self.ent_coef:
            dent = (-self.ent_coef * mask / mask.sum()).astype(np.float32)
        dg = losses.logprobs_backward(g, resp, dlogp, dent, self.temperature)
        dlogits = np.zeros_like(logits)
        dlogits[np.broadcast_to(rows, pos.shape)[sel], pos[sel]] = dg[sel]
        self.policy.backward(dlogits=dlogits, accumulate=False)  # written: no zero_grad
        out = {"approxkl": st["approx_kl"], "clipfrac": st["clipfrac"], "pg_loss": pg_loss,
               "ratio": st["ratio_mean"], "entropy": float(ent[sel].mean())}
        if self.ptx_batches is not None:  # PPO-ptx: keep the pretraining distribution
            x, y, _ = self.ptx_batches.next()
            ptx_logits = self.policy.forward(x)
            ptx_loss, dptx = losses.cross_entropy(ptx_logits, y)
            self.policy.backward(dlogits=self.ptx_coef * dptx)
            out["ptx_loss"] = ptx_loss
        self._check_finite(pg_loss, "policy loss")
        self.policy_opt.clip_and_step(self.grad_clip, lr=self.lr)
        # value model: clipped value loss at the same positions
        self.value_model.zero_grad()
        v_all = self.value_model.values(idx)                           # (b, L)
        v = v_all[rows, pos]
        vf_loss, dv, vst = losses.value_loss(v, ro["values"][mb], ro["returns"][mb], mask,
                                             self.cliprange_value)
        dv_all = np.zeros_like(v_all)
        dv_all[np.broadcast_to(rows, pos.shape)[sel], pos[sel]] = self.vf_coef * dv[sel]
        self.value_model.backward(dv_all)
        self._check_finite(vf_loss, "value loss")
        self.value_opt.clip_and_step(self.grad_clip, lr=self.vf_lr)
        out.update(vf_loss=vf_loss, vf_clipfrac=vst["clipfrac"])
        return out

    # -- gold labeler and sanity -----------------------------------------------------------
    def _gold(self, ro: dict) -> dict:
        if self.labeler is None:
            return {}
        pairs = [(it["prompt"], s.text, s.ended)
                 for it, s in zip(ro["items"], ro["samples"], strict=True)]
        out = {"gold/score": float(np.mean([self.labeler.score(*p) for p in pairs]))}
        for cat in CATEGORIES:
            group = [{"prompt": p, "response": r, "category": cat}
                     for it, (p, r, _) in zip(ro["items"], pairs, strict=True)
                     if (it.get("category") or self.labeler.classify(p)["category"]) == cat]
            rate = self.labeler.behaviour_rates(group)[RATE_NAMES[cat]] if group else np.nan
            out[f"gold/{RATE_NAMES[cat]}"] = rate
        return out

    def _warn(self, s: dict) -> None:
        """Point at the usual PPO failures as they happen."""
        if abs(s["sanity/first_ratio"] - 1.0) > 1e-3:
            warnings.warn(f"ppo step {self.t}: ratio {s['sanity/first_ratio']:.4f} != 1 on the "
                          "first minibatch: rollout and update log-probs disagree (temperature "
                          "or padding mismatch)", RuntimeWarning, stacklevel=3)
        if not 0.8 <= s["val/ratio"] <= 1.25:
            warnings.warn(f"ppo step {self.t}: val/ratio = {s['val/ratio']:.3f} is far from 1: "
                          "the updates move the policy too much (lower lr or epochs)",
                          RuntimeWarning, stacklevel=3)
        if s["policy/approxkl_avg"] > 0.05:
            warnings.warn(f"ppo step {self.t}: approx KL between updates "
                          f"{s['policy/approxkl_avg']:.3f} > 0.05: steps are too large",
                          RuntimeWarning, stacklevel=3)

    def last_rollout_table(self, i: int = 0) -> list[dict]:
        """Per-token rows (token, logp, ref_logp, kl, reward, value, advantage, return) of
        sample ``i`` of the last rollout: what PPO saw, token by token."""
        if self._last is None:
            raise ValueError("last_rollout_table: no rollout yet (call step() first)")
        r = self._last
        if not 0 <= i < len(r["samples"]):
            raise ValueError(f"i: expected 0..{len(r['samples']) - 1}, got {i}")
        rows = []
        for j in range(int(r["mask"][i].sum())):
            tid = int(r["resp"][i, j])
            rows.append({"token": self.tok.decode([tid]), "id": tid,
                         "logp": float(r["logp"][i, j]), "ref_logp": float(r["ref_logp"][i, j]),
                         "kl": float(r["kl"][i, j]), "reward": float(r["rewards"][i, j]),
                         "value": float(r["values"][i, j]),
                         "advantage": float(r["advantages"][i, j]),
                         "return": float(r["returns"][i, j])})
        return rows

    # -- checkpoints -----------------------------------------------------------------------
    def _modules(self):
        return {"policy": self.policy, "ref": self.ref, "reward_model": self.reward_model,
                "value_model": self.value_model}

    def _optimizers(self):
        return {"policy_opt": self.policy_opt, "value_opt": self.value_opt}

    def _batchers(self):
        out = {"prompts": self.batches}
        if self.ptx_batches is not None:
            out["ptx"] = self.ptx_batches
        return out

    def _extra_state(self):
        return {"kl_coef": self.kl_coef}

    def _load_extra_state(self, d):
        self.kl_coef = float(d.get("kl_coef", self.kl_coef))
        if self.kl is not None:
            self.kl.value = self.kl_coef


def evaluate_policy(policy, tok, prompts, labeler=None, reward_model=None, ref=None,
                    max_new_tokens: int = 32, temperature: float = 0.0, seed: int = 0,
                    replies=None) -> dict:
    """Score a policy on ``prompts`` (dicts with ``prompt``/``category`` or strings): mean
    gold score and behaviour rates (with a labeler), mean reward-model score (with an RM),
    and, when ``temperature > 0`` and a ``ref`` is given, the mean per-reply KL(policy||ref)
    of the sampled tokens. ``replies`` (chat Samples) skips the sampling."""
    items = [p if isinstance(p, dict) else {"prompt": p} for p in prompts]
    if replies is None:
        replies = sample(policy, tok, [it["prompt"] for it in items], max_new_tokens,
                         temperature=temperature, seed=seed)
    out: dict = {}
    if labeler is not None:
        out["gold_score"] = float(np.mean([labeler.score(s.prompt, s.text, s.ended)
                                           for s in replies]))
        out["behaviour"] = labeler.behaviour_rates(
            [{"prompt": s.prompt, "response": s.text, "category": it.get("category")}
             for it, s in zip(items, replies, strict=True)])
    if reward_model is not None:
        out["rm_score"] = float(np.mean(reward_model.score_texts(
            tok, [s.prompt for s in replies], [s.text for s in replies],
            [s.ended for s in replies])))
    if ref is not None and temperature > 0:
        idx, _, resp, pos, mask = layout(replies)
        lp = reply_logprobs(policy, idx, resp, pos, temperature)[0]
        rp = reply_logprobs(ref, idx, resp, pos, temperature)[0]
        out["kl"] = float(((lp - rp) * mask).sum(1).mean())
    out["ended"] = float(np.mean([s.ended for s in replies]))
    out["response_tokens"] = float(np.mean([len(s.ids) for s in replies]))
    return out


__all__ = ["PPOTrainer", "AdaptiveKLController", "gae", "whiten", "evaluate_policy", "layout",
           "reply_logprobs"]

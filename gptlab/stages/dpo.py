"""Two cheaper relatives of RLHF with PPO: best-of-n sampling and DPO.

**Best-of-n** changes no weight: sample n replies, keep the one the reward model likes best.
It is the baseline PPO must beat (and a good estimate of what the reward model can offer);
its cost is n replies per question at inference.

**DPO** (Rafailov et al. 2023) skips both the reward model and the sampling loop. The reward
PPO optimises has a closed-form optimum, pi*(y|x) proportional to pi_ref(y|x) exp(r(x,y)/beta),
so a reward can be read off any policy as beta * log(pi(y|x) / pi_ref(y|x)). Putting that
implicit reward into the reward model's pairwise loss gives a loss on the policy itself::

    -log sigmoid(beta * [(log pi(chosen) - log pi_ref(chosen))
                         - (log pi(rejected) - log pi_ref(rejected))])

trained on the same preference data as the reward model, with a frozen reference. Here log pi
of a reply is the sum of its tokens' log-probabilities (the end marker included).
"""

from __future__ import annotations

import time

import numpy as np

from .. import losses
from ..batching import Batches
from ..chat import Sample, prompt_ids, render, sample
from ..optim import AdamW, CosineSchedule
from .base import Trainer
from .reward import RecordBatches, RewardModel, as_ranked


def _reply_tokens(tok, prompt: str, response: str, ended: bool, max_len: int):
    """Chat-template ids of one exchange and the 0/1 mask of its reply, cut from the left to
    ``max_len + 1`` tokens (the ``Batches`` convention: inputs and shifted targets)."""
    if ended:
        ids, mask = render(tok, prompt, response)
    else:
        head, reply = prompt_ids(tok, prompt), tok.encode(response)
        ids, mask = head + reply, [0] * len(head) + [1] * len(reply)
    return ids[-(max_len + 1):], mask[-(max_len + 1):]


def preference_pairs(data, pairs: str = "best_vs_worst") -> list[tuple]:
    """(prompt, chosen, chosen_ended, rejected, rejected_ended) from ranked or pairwise data:
    ``best_vs_worst`` (one pair per prompt, the clearest signal) or ``all`` (every C(K,2)).
    Pairs whose replies the labeler scored equally (``scores``) are left out."""
    if pairs not in ("best_vs_worst", "all"):
        raise ValueError(f"pairs: expected 'best_vs_worst' or 'all', got {pairs!r}")
    out = []
    for r in as_ranked(data):
        resp, ended, k = r["responses"], r["ended"], len(r["responses"])
        ij = [(0, k - 1)] if pairs == "best_vs_worst" else \
            [(i, j) for i in range(k) for j in range(i + 1, k)]
        if "scores" in r:  # a tie is no preference
            ij = [(i, j) for i, j in ij if r["scores"][i] != r["scores"][j]]
        out += [(r["prompt"], resp[i], ended[i], resp[j], ended[j]) for i, j in ij]
    return out


class DPOTrainer(Trainer):
    """Direct preference optimisation of ``policy`` against a frozen ``ref`` on preference
    ``data`` (ranked ``prompt``/``responses`` or pairwise ``chosen``/``rejected``)."""

    name = "dpo"
    postfix_keys = ("loss", "accuracy", "margin")

    def __init__(self, policy, ref, tok, data, beta: float = 0.1, val_data=None,
                 pairs: str = "best_vs_worst", batch_size: int = 8, lr: float = 1e-4,
                 min_lr: float | None = None, warmup: int = 10, max_steps: int = 200,
                 weight_decay: float = 0.0, grad_clip: float = 1.0, eval_every: int = 25,
                 seed: int = 0, on_nonfinite: str = "raise"):
        super().__init__(seed)
        self.policy, self.ref, self.tok, self.beta = policy, ref, tok, float(beta)
        self.pairs, self.ref_logp = self._encode(preference_pairs(data, pairs))
        self.val = None
        if val_data is not None:
            self.val = self._encode(preference_pairs(val_data, pairs))
        self.order = RecordBatches(len(self.ref_logp), min(batch_size, len(self.ref_logp)), seed)
        self.opt = AdamW(policy, lr, weight_decay=weight_decay, on_nonfinite=on_nonfinite)
        self.schedule = CosineSchedule(warmup, max_steps, lr, lr / 10 if min_lr is None else min_lr)
        self.grad_clip, self.eval_every = grad_clip, eval_every

    def _encode(self, pairs: list[tuple]) -> tuple[Batches, np.ndarray]:
        """Rows 2i (chosen) and 2i+1 (rejected) of a Batches; the reference's log-probs (P, 2)
        of every reply, computed once (the reference never changes)."""
        T = self.policy.config.block_size
        seqs, masks = [], []
        for prompt, ch, ch_end, rej, rej_end in pairs:
            for resp, ended in ((ch, ch_end), (rej, rej_end)):
                ids, m = _reply_tokens(self.tok, prompt, resp, ended, T)
                seqs.append(ids)
                masks.append(m)
        rows = Batches(seqs, 1, T, masks=masks)
        if len(rows) != len(seqs):
            raise ValueError("data: a reply has no token (empty response without end marker)")
        ref = np.concatenate([self._seq_logp(self.ref, rows, range(i, min(i + 32, len(seqs))))[0]
                              for i in range(0, len(seqs), 32)])
        return rows, ref.reshape(-1, 2)

    @staticmethod
    def _seq_logp(model, rows: Batches, which):
        """Sum of reply-token log-probs of the given rows; and what backward needs."""
        idx, tgt, mask = rows.collate(list(which))
        logits = model.forward(idx)                               # (N, T, V)
        logp, _ = losses.logprobs(logits, tgt)                    # (N, T)
        return (logp * mask).sum(1), logits, tgt, mask

    def step(self) -> dict:
        """One optimizer step of the DPO loss on ``batch_size`` preference pairs."""
        t0 = time.perf_counter()
        ids = self.order.next()
        which = np.stack([2 * ids, 2 * ids + 1], 1).reshape(-1)  # chosen, rejected, ...
        seq, logits, tgt, mask = self._seq_logp(self.policy, self.pairs, which)
        ref = self.ref_logp[ids]
        loss, (dc, dr), st = losses.dpo_loss(seq[0::2], seq[1::2], ref[:, 0], ref[:, 1],
                                             self.beta)
        self._check_finite(loss)
        dseq = np.stack([dc, dr], 1).reshape(-1)                  # d loss / d (sum of logp)
        dlogits = losses.logprobs_backward(logits, tgt, dseq[:, None] * mask)
        self.policy.backward(dlogits=dlogits, accumulate=False)   # written: no zero_grad
        lr = self.schedule(self.t)
        grad_norm = self.opt.clip_and_step(self.grad_clip, lr=lr)
        self.t += 1
        stats = dict(loss=loss, accuracy=st["accuracy"], chosen_reward=st["chosen_reward"],
                     rejected_reward=st["rejected_reward"], margin=st["margin"], lr=lr,
                     grad_norm=grad_norm, seconds=time.perf_counter() - t0)
        if self.val is not None and self.eval_every and self.t % self.eval_every == 0:
            stats.update({f"val_{k}": v for k, v in self.evaluate().items()})
        return self._log(**stats)

    def evaluate(self, data=None, batch_size: int = 16) -> dict:
        """DPO loss, accuracy (implicit reward of chosen > rejected), mean implicit rewards
        and margin on ``data`` (default: ``val_data``)."""
        if data is None:
            if self.val is None:
                raise ValueError("evaluate: no data given and no val_data")
            rows, ref = self.val
        else:
            rows, ref = self._encode(preference_pairs(data))
        pol = np.concatenate([self._seq_logp(self.policy, rows,
                                             range(i, min(i + batch_size, 2 * len(ref))))[0]
                              for i in range(0, 2 * len(ref), batch_size)]).reshape(-1, 2)
        loss, _, st = losses.dpo_loss(pol[:, 0], pol[:, 1], ref[:, 0], ref[:, 1], self.beta)
        return {"loss": loss, "accuracy": st["accuracy"], "chosen_reward": st["chosen_reward"],
                "rejected_reward": st["rejected_reward"], "margin": st["margin"]}

    def _modules(self):
        return {"policy": self.policy}

    def _optimizers(self):
        return {"opt": self.opt}

    def _batchers(self):
        return {"pairs": self.order}


def best_of_n(policy, rm: RewardModel, tok, prompts, n: int = 4, max_new_tokens: int = 32,
              temperature: float = 1.0, seed: int = 0, return_scores: bool = False):
    """For each prompt, sample ``n`` replies and keep the reward model's favourite.

    prompts: strings or dicts with ``prompt``. Returns a list of chat ``Sample`` (one per
    prompt), and with ``return_scores`` also the (P, n) reward-model scores of all samples."""
    if n < 1:
        raise ValueError(f"n: expected >= 1, got {n}")
    texts = [p["prompt"] if isinstance(p, dict) else p for p in prompts]
    samples: list[Sample] = sample(policy, tok, [t for t in texts for _ in range(n)],
                                   max_new_tokens, temperature=temperature, seed=seed)
    scores = rm.score_texts(tok, [s.prompt for s in samples], [s.text for s in samples],
                            [s.ended for s in samples]).reshape(len(texts), n)
    best = [samples[i * n + int(np.argmax(scores[i]))] for i in range(len(texts))]
    return (best, scores) if return_scores else best


__all__ = ["DPOTrainer", "best_of_n", "preference_pairs"]

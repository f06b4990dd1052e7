"""Stage 3: reward modeling -- learn, from rankings, a number that says how good a reply is.

People (here: the gold labeler) find it much easier to *compare* answers than to write ideal
ones. So for each prompt the SFT model samples K replies, the labeler ranks them, and a
**reward model** learns to agree with the ranking. It is the SFT transformer with its LM head
replaced by a scalar head: the whole exchange ``<|user|>prompt<|assistant|>reply<|end|>`` goes
in, and the final hidden state *at the end marker* -- the one position that has read the whole
reply -- is mapped to one number, the reward::

    reward = hidden[last real token] @ head.weight + head.bias

Training uses InstructGPT's K-way ranking loss: every one of the C(K,2) pairs of one prompt's
replies (i ranked above j) adds -log sigmoid(r_i - r_j), and the pairs of one prompt are
averaged, so a prompt weighs as one example. The loss only sees differences, so after training
the bias is shifted until SFT replies score 0 on average (``normalize``): a positive reward
then means "better than the SFT model usually does".

The same class serves as PPO's **value model**: ``values(idx)`` applies the head at every
position instead of only at the end marker (the expected reward from that point on).
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from .. import _core, losses
from ..batching import Batches
from ..chat import Sample, prompt_ids, render, sample
from ..config import GPTConfig
from ..io import load_safetensors, save_safetensors
from ..model import GPT
from ..optim import AdamW, CosineSchedule
from .base import Trainer

FORMAT = "gptlab.reward_model.v1"


class RewardModel:
    """A GPT trunk with a scalar head: ``score(idx, lengths)`` -> one reward per row.

    ``params`` / ``grads`` hold the trunk's tensors (Hugging Face names) plus ``head.weight``
    (n_embd,) and ``head.bias`` (1,), so ``AdamW(rm, ...)`` trains trunk and head together.
    """

    def __init__(self, trunk: GPT, head_weight=None, head_bias=None, seed: int = 0):
        if not isinstance(trunk, GPT):
            raise TypeError(f"trunk: expected a GPT, got {type(trunk).__name__}")
        C = trunk.config.n_embd
        self.trunk = trunk
        self.config = trunk.config
        if head_weight is None:  # std 1/sqrt(C+1), as in InstructGPT / TRL value heads
            head_weight = np.random.default_rng(seed).normal(0.0, 1.0 / np.sqrt(C + 1), C)
        self.head_weight = np.ascontiguousarray(head_weight, dtype=np.float32).reshape(C)
        self.head_bias = np.zeros(1, np.float32) if head_bias is None else \
            np.ascontiguousarray(head_bias, dtype=np.float32).reshape(1)
        self.params = dict(trunk.params)
        self.params["head.weight"], self.params["head.bias"] = self.head_weight, self.head_bias
        self.grads = dict(trunk.grads)
        self.grads["head.weight"] = np.zeros(C, np.float32)
        self.grads["head.bias"] = np.zeros(1, np.float32)
        self._saved = None  # (hidden (B,T,C), rows, cols) of the last forward, for backward

    @classmethod
    def from_gpt(cls, model: GPT, seed: int = 0) -> RewardModel:
        """A reward model on a COPY of ``model``'s trunk (the SFT model stays untouched)."""
        return cls(model.copy(), seed=seed)

    def copy(self) -> RewardModel:
        """An independent copy (trunk and head); PPO's value model starts as one."""
        return RewardModel(self.trunk.copy(), self.head_weight.copy(), self.head_bias.copy())

    def __repr__(self) -> str:
        return f"RewardModel(trunk={self.trunk!r})"

    # -- forward / backward ----------------------------------------------------------------
    def score(self, idx, lengths) -> np.ndarray:
        """Rewards (B,) float32 of token rows ``idx`` (B, T), right-padded: row b's real tokens
        are ``idx[b, :lengths[b]]`` and the head reads the hidden state of the last of them
        (the <|end|> marker of a finished reply). Tokens after it cannot change the score."""
        idx = np.asarray(idx)
        lens = np.asarray(lengths)
        if lens.ndim != 1 or idx.ndim != 2 or lens.shape[0] != idx.shape[0]:
            raise ValueError(f"lengths: expected shape ({idx.shape[0] if idx.ndim else '?'},) "
                             f"(one per row of idx {idx.shape}), got {lens.shape}")
        if lens.dtype.kind not in "iu" or lens.min() < 1 or lens.max() > idx.shape[1]:
            raise ValueError(f"lengths: expected integers in [1, {idx.shape[1]}]")
        hidden = self.trunk.forward_hidden(idx)                   # (B, T, C)
        rows, cols = np.arange(len(lens)), lens.astype(np.int64) - 1
        x = np.ascontiguousarray(hidden[rows, cols])              # (B, C) at the end marker
        self._saved = (hidden, rows, cols, x)
        return _core.scalar_head_forward(x, self.head_weight, self.head_bias)

    def values(self, idx) -> np.ndarray:
        """The head at EVERY position: (B, T) float32 -- PPO's value model, which predicts
        from each prefix the reward still to come."""
        hidden = self.trunk.forward_hidden(idx)                   # (B, T, C)
        self._saved = (hidden, None, None, hidden)
        return _core.scalar_head_forward(hidden, self.head_weight, self.head_bias)

    def backward(self, dout) -> None:
        """Back-propagate d(loss)/d(output) of the last ``score`` (B,) or ``values`` (B, T)
        call into head and trunk, accumulating into ``grads``."""
        if self._saved is None:
            raise ValueError("backward: no score/values call to go back through")
        hidden, rows, cols, x = self._saved
        g = np.ascontiguousarray(dout, dtype=np.float32)
        if g.shape != x.shape[:-1]:
            raise ValueError(f"dout: expected shape {x.shape[:-1]}, got {g.shape}")
        dx = np.zeros_like(x)
        _core.scalar_head_backward(dx, self.grads["head.weight"], self.grads["head.bias"], g, x,
                                   self.head_weight)
        if rows is None:
            dhidden = dx
        else:  # only the end-marker positions received a gradient
            dhidden = np.zeros_like(hidden)
            dhidden[rows, cols] = dx
        self.trunk.backward(dhidden=dhidden)

    def zero_grad(self) -> None:
        self.trunk.zero_grad()
        self.grads["head.weight"][:] = 0
        self.grads["head.bias"][:] = 0

    # -- texts -----------------------------------------------------------------------------
    def score_texts(self, tok, prompts: list[str], responses: list[str], ended=None,
                    batch_size: int = 32) -> np.ndarray:
        """Rewards (N,) of (prompt, response) pairs rendered in the chat template; a response
        with ``ended[i]`` False gets no end marker and is read at its last token."""
        seqs = encode_exchanges(tok, prompts, responses, ended, self.config.block_size)
        out = []
        for i in range(0, len(seqs), batch_size):
            idx, lens = pad_rows(seqs[i:i + batch_size])
            out.append(self.score(idx, lens))
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def normalize(self, tok, samples, batch_size: int = 32) -> float:
        """Shift ``head.bias`` so the mean reward of ``samples`` (chat ``Sample`` objects, e.g.
        the SFT model's replies, or (prompt, response) pairs) becomes 0. Returns the shift."""
        prompts, responses, ended = _unpack(samples)
        if not prompts:
            raise ValueError("normalize: expected at least one sample")
        mean = float(np.mean(self.score_texts(tok, prompts, responses, ended, batch_size)))
        self.head_bias -= np.float32(mean)
        return -mean

    # -- files -----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Trunk and head in one .safetensors file (the config in its metadata)."""
        save_safetensors(path, self.params, {"format": "pt", "gptlab.format": FORMAT,
                                             "gptlab.config": json.dumps(self.config.to_dict())})

    @classmethod
    def load(cls, path: str | os.PathLike) -> RewardModel:
        """Load a reward model written by :meth:`save`."""
        tensors, meta = load_safetensors(path)
        if meta.get("gptlab.format") != FORMAT:
            raise ValueError(f"{os.fspath(path)}: not a gptlab reward model file")
        trunk = GPT(GPTConfig(**json.loads(meta["gptlab.config"])))
        head_w, head_b = tensors.pop("head.weight", None), tensors.pop("head.bias", None)
        if head_w is None or head_b is None:
            raise ValueError(f"{os.fspath(path)}: head.weight or head.bias missing")
        trunk.load_state_dict(tensors)
        C = trunk.config.n_embd
        if head_w.shape != (C,) or head_b.shape != (1,):
            raise ValueError(f"{os.fspath(path)}: head tensors of the wrong shape")
        return cls(trunk, head_w, head_b)

    def save_hf(self, path: str | os.PathLike, tok=None) -> None:
        """Write a ``GPT2ForSequenceClassification`` folder (num_labels=1): the format TRL's
        reward and value models use. See :func:`gptlab.hf.save_reward_model_folder`."""
        from ..hf import save_reward_model_folder

        pad = tok.eot_id if tok is not None else self.config.vocab_size - 1
        save_reward_model_folder(self.trunk, self.head_weight, float(self.head_bias[0]), path,
                                 pad_token_id=pad, tokenizer=tok)


# ---- helpers shared with PPO and DPO -------------------------------------------------------


def _unpack(samples) -> tuple[list[str], list[str], list[bool]]:
    prompts, responses, ended = [], [], []
    for s in samples:
        if isinstance(s, Sample):
            prompts.append(s.prompt)
            responses.append(s.text)
            ended.append(s.ended)
        else:
            prompts.append(s[0])
            responses.append(s[1])
            ended.append(True)
    return prompts, responses, ended


def encode_exchange(tok, prompt: str, response: str, ended: bool, max_len: int) -> list[int]:
    """Token ids of ``<|user|>prompt<|assistant|>response<|end|>`` (no <|end|> when the reply
    never ended), cut from the left to ``max_len`` tokens so the reply is always whole."""
    if ended:
        ids, _ = render(tok, prompt, response)
    else:
        ids = prompt_ids(tok, prompt) + tok.encode(response)
    return ids[-max_len:]


def encode_exchanges(tok, prompts, responses, ended, max_len) -> list[list[int]]:
    ended = [True] * len(prompts) if ended is None else list(ended)
    if not (len(prompts) == len(responses) == len(ended)):
        raise ValueError("prompts, responses and ended must have the same length")
    return [encode_exchange(tok, p, r, e, max_len)
            for p, r, e in zip(prompts, responses, ended, strict=True)]


def pad_rows(seqs: list[list[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token lists into (B, T) int32 and their lengths (B,)."""
    lens = np.asarray([len(s) for s in seqs], dtype=np.int32)
    idx = np.full((len(seqs), int(lens.max())), pad_id, dtype=np.int32)
    for b, s in enumerate(seqs):
        idx[b, :len(s)] = s
    return idx, lens


class RecordBatches(Batches):
    """Shuffled batches of record *indices* (0..n-1), with the epoch order and exact resume
    of ``Batches``: ``next()`` returns an int array of ``batch_size`` record ids."""

    def __init__(self, n: int, batch_size: int, seed: int = 0):
        super().__init__([[0, 0]] * n, batch_size, 1, seed=seed)

    def collate(self, rows) -> np.ndarray:
        return np.asarray(rows, dtype=np.int64)


def as_ranked(data) -> list[dict]:
    """Preference records as {prompt, responses (best first), ended[, scores]}: ranked K-way
    records (``responses``) are kept, pairwise ones (``chosen``/``rejected``) become K = 2."""
    out = []
    for i, d in enumerate(data):
        if not isinstance(d, dict) or not isinstance(d.get("prompt"), str):
            raise ValueError(f"data[{i}]: expected a dict with a 'prompt' string")
        if "responses" in d:
            resp = list(d["responses"])
        elif "chosen" in d and "rejected" in d:
            resp = [d["chosen"], d["rejected"]]
        else:
            raise ValueError(f"data[{i}]: expected 'responses' (ranked best first) or "
                             "'chosen' and 'rejected'")
        if len(resp) < 2 or not all(isinstance(r, str) for r in resp):
            raise ValueError(f"data[{i}]: expected at least 2 response strings")
        ended = list(d.get("ended", [True] * len(resp)))
        if len(ended) != len(resp):
            raise ValueError(f"data[{i}]: 'ended' must have one flag per response")
        rec = {"prompt": d["prompt"], "responses": resp, "ended": ended}
        if d.get("scores") is not None:
            if len(d["scores"]) != len(resp):
                raise ValueError(f"data[{i}]: 'scores' must have one score per response")
            rec["scores"] = [float(x) for x in d["scores"]]
        out.append(rec)
    if not out:
        raise ValueError("data: expected at least one preference record")
    return out


def drop_ties(records: list[dict]) -> list[dict]:
    """Keep one reply per distinct labeler score in each record (the first, i.e. the random
    tie-break's pick) and drop records left with fewer than 2: a tied pair carries no
    preference, only noise for the loss and a coin flip for the accuracy. Records without
    ``scores`` are kept whole."""
    out = []
    for r in records:
        if "scores" not in r:
            out.append(r)
            continue
        keep = [i for i, sc in enumerate(r["scores"]) if i == 0 or sc != r["scores"][i - 1]]
        if len(keep) >= 2:
            out.append({k: [r[k][i] for i in keep] if isinstance(r[k], list) else r[k]
                        for k in r})
    return out


# ---- preference data -----------------------------------------------------------------------


def build_preferences(policy, tok, prompts, labeler, k: int = 4, max_new_tokens: int = 32,
                      temperature: float = 1.0, seed: int = 0,
                      off_prompt: int = 0) -> list[dict]:
    """The reward model's training data, as InstructGPT made it: for each prompt, ``k``
    replies sampled from ``policy`` (the SFT model), ranked best first by ``labeler`` (the
    "human"), ties broken at random and identical replies dropped. Prompts left with fewer
    than 2 distinct replies carry no comparison and are skipped.

    ``off_prompt``: add that many replies the policy gave to *other* prompts (of another
    category when the prompts carry one) to each ranking, as hard negatives. Without them a
    small reward model learns which replies are good in general -- "I can't help with that."
    wins every ranking it appears in, because SFT only says it to improper requests -- and
    PPO then answers every question with it (we measured exactly that on TinyWorld). An
    off-prompt reply, ranked low by the labeler, teaches that a reply must fit its prompt.
    Use it for training data; measure held-out accuracy on plain on-policy rankings.

    prompts: strings or dicts with ``prompt`` (``category`` is carried along).
    Returns records {prompt, responses (best first), ended, scores, category}.
    """
    if k < 2:
        raise ValueError(f"k: expected >= 2, got {k}")
    if off_prompt < 0:
        raise ValueError(f"off_prompt: expected >= 0, got {off_prompt}")
    items = [p if isinstance(p, dict) else {"prompt": p} for p in prompts]
    repeated = [it["prompt"] for it in items for _ in range(k)]
    samples = sample(policy, tok, repeated, max_new_tokens, temperature=temperature, seed=seed)
    rng = np.random.default_rng(seed)
    cats = np.asarray([str(it.get("category")) for it in items])
    records = []
    for i, it in enumerate(items):
        group = samples[i * k:(i + 1) * k]
        if off_prompt and len(items) > 1:
            others = np.flatnonzero(cats != cats[i])           # another category if any
            if not len(others):
                others = np.delete(np.arange(len(items)), i)
            for j in rng.choice(others, size=min(off_prompt, len(others)), replace=False):
                group = group + [samples[int(j) * k + int(rng.integers(k))]]
        texts, ended = [s.text for s in group], [s.ended for s in group]
        order = labeler.rank(it["prompt"], texts, ended, seed=seed + i)
        if len(order) < 2:
            continue
        records.append({"prompt": it["prompt"], "responses": [texts[j] for j in order],
                        "ended": [ended[j] for j in order],
                        "scores": [labeler.score(it["prompt"], texts[j], ended[j])
                                   for j in order],
                        "category": it.get("category")})
    return records


# ---- training ------------------------------------------------------------------------------


class RewardTrainer(Trainer):
    """Train a ``RewardModel`` on ranked (``prompt``/``responses``, best first) or pairwise
    (``prompt``/``chosen``/``rejected``) data with the K-way ranking loss.

    Each batch holds ``batch_size`` prompts; all K replies of a prompt are scored in the same
    forward pass and all C(K,2) of their pairs enter one row of ``losses.ranking_loss``.
    ``val_data`` (same format) gives the held-out pairwise accuracy every ``eval_every`` steps.
    With ``drop_ties`` (default) records that carry the labeler's ``scores`` (as
    ``build_preferences`` writes them) keep one reply per distinct score, so every pair of
    the loss and of the accuracy is a real preference.
    """

    name = "reward"
    postfix_keys = ("loss", "accuracy", "val_accuracy")

    def __init__(self, rm: RewardModel, tok, data, val_data=None, batch_size: int = 8,
                 lr: float = 3e-4, min_lr: float | None = None, warmup: int = 10,
                 max_steps: int = 200, weight_decay: float = 0.0, grad_clip: float = 1.0,
                 margin: float = 0.0, center_coef: float = 0.0, eval_every: int = 25,
                 drop_ties: bool = True, seed: int = 0, on_nonfinite: str = "raise"):
        super().__init__(seed)
        self.drop_ties = drop_ties
        if not isinstance(rm, RewardModel):
            raise TypeError(f"rm: expected a RewardModel, got {type(rm).__name__}")
        self.rm, self.tok = rm, tok
        self.data = self._encode(as_ranked(data))
        self.val_data = None if val_data is None else self._encode(as_ranked(val_data))
        self.batches = RecordBatches(len(self.data), min(batch_size, len(self.data)), seed)
        self.opt = AdamW(rm, lr, weight_decay=weight_decay, on_nonfinite=on_nonfinite)
        self.schedule = CosineSchedule(warmup, max_steps, lr, lr / 10 if min_lr is None else min_lr)
        self.grad_clip, self.margin, self.center_coef = grad_clip, margin, center_coef
        self.eval_every = eval_every

    def _encode(self, records: list[dict]) -> list[list[list[int]]]:
        T = self.rm.config.block_size
        if self.drop_ties:
            records = drop_ties(records)
            if not records:
                raise ValueError("data: no record has two replies with different scores")
        return [encode_exchanges(self.tok, [r["prompt"]] * len(r["responses"]), r["responses"],
                                 r["ended"], T) for r in records]

    def _rewards(self, groups: list[list[list[int]]]):
        """Score every reply of the given prompts in one forward pass: rewards (P, Kmax)
        (zero-padded), counts (P,) and the row of each reply in the flat batch."""
        seqs = [s for g in groups for s in g]
        idx, lens = pad_rows(seqs)
        flat = self.rm.score(idx, lens)
        counts = np.asarray([len(g) for g in groups], dtype=np.int32)
        K = int(counts.max())
        rewards = np.zeros((len(groups), K), np.float32)
        mask = np.arange(K)[None, :] < counts[:, None]
        rewards[mask] = flat
        return rewards, counts, mask

    @staticmethod
    def _pair_stats(rewards: np.ndarray, counts: np.ndarray) -> dict:
        """Mean reward of the preferred and the other reply over every ranked pair."""
        hi, lo = [], []
        for r, k in zip(rewards, counts, strict=True):
            i, j = np.triu_indices(int(k), 1)
            hi.append(r[i])
            lo.append(r[j])
        hi, lo = np.concatenate(hi), np.concatenate(lo)
        return {"accuracy": float(np.mean(hi > lo)), "chosen_reward": float(hi.mean()),
                "rejected_reward": float(lo.mean()), "margin": float(np.mean(hi - lo))}

    def step(self) -> dict:
        """One optimizer step of the K-way ranking loss on ``batch_size`` prompts."""
        t0 = time.perf_counter()
        groups = [self.data[i] for i in self.batches.next()]
        self.rm.zero_grad()
        rewards, counts, mask = self._rewards(groups)            # (P, K)
        loss, drewards, _ = losses.ranking_loss(rewards, counts, self.margin, self.center_coef)
        self._check_finite(loss)
        self.rm.backward(drewards[mask])                         # back to the end markers
        lr = self.schedule(self.t)
        grad_norm = self.opt.clip_and_step(self.grad_clip, lr=lr)
        self.t += 1
        stats = dict(loss=loss, **self._pair_stats(rewards, counts), lr=lr, grad_norm=grad_norm,
                     seconds=time.perf_counter() - t0)
        if self.val_data is not None and self.eval_every and self.t % self.eval_every == 0:
            stats.update({f"val_{k}": v for k, v in self.evaluate().items()})
        return self._log(**stats)

    def evaluate(self, data=None, batch_size: int = 16) -> dict:
        """Loss, pairwise accuracy, mean chosen/rejected reward and margin on ``data``
        (default: the held-out ``val_data``), without touching the gradients' use."""
        groups = self.val_data if data is None else self._encode(as_ranked(data))
        if groups is None:
            raise ValueError("evaluate: no data given and no val_data")
        all_r, all_c, total = [], [], 0.0
        for i in range(0, len(groups), batch_size):
            r, c, _ = self._rewards(groups[i:i + batch_size])
            total += losses.ranking_loss(r, c)[0] * len(c)
            all_r += list(r)
            all_c += list(c)
        K = max(len(r) for r in all_r)
        rewards = np.zeros((len(all_r), K), np.float32)
        for i, r in enumerate(all_r):
            rewards[i, :len(r)] = r
        return dict(loss=total / len(all_c),
                    **self._pair_stats(rewards, np.asarray(all_c, dtype=np.int32)))

    def _modules(self):
        return {"rm": self.rm}


__all__ = ["RewardModel", "RewardTrainer", "build_preferences", "encode_exchange",
           "pad_rows", "as_ranked", "drop_ties", "RecordBatches"]

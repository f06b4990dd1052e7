"""Stage 1: pretraining -- next-token prediction on a large pile of text.

This is where nearly all of the compute goes and where the model acquires its knowledge of
the world: after pretraining on TinyWorld it can complete "A spider has" with " 8 legs", and,
given a few ``subject -> answer`` examples, continue the pattern (in-context learning). It is
*not* an assistant yet: asked a question, it continues the text, it does not answer.

Each step: a batch of random windows of ``seq_len + 1`` tokens, the mean cross-entropy of
predicting every next token, one AdamW step with gradient clipping and a warmup + cosine
learning-rate schedule.
"""

from __future__ import annotations

import time

import numpy as np

from ..batching import Batches, windows
from ..optim import AdamW, CosineSchedule
from .base import Trainer


def tokenize_corpus(tok, data) -> np.ndarray:
    """Documents (a str, or a list of str / (source, str)) -> one token stream, documents
    separated by <|endoftext|>."""
    if isinstance(data, str):
        docs = data.split("\n\n")
    else:
        docs = [d[1] if isinstance(d, tuple) else d for d in data]
    if not docs or not all(isinstance(d, str) for d in docs):
        raise TypeError("data: expected text (str) or a list of documents (str)")
    eot = tok.eot_id
    ids = tok.encode_batch(docs)
    out = []
    for d in ids:
        out.extend(d)
        out.append(eot)
    return np.asarray(out, dtype=np.int32)


class Pretrainer(Trainer):
    """Pretrain ``model`` on ``data`` (text, or a list of documents) tokenized by ``tok``.

    The last ``val_fraction`` of the token stream is held out; ``val_loss`` is measured on it
    every ``eval_every`` steps. ``max_steps`` sets the length of the cosine schedule."""

    name = "pretrain"
    postfix_keys = ("loss", "val_loss")

    def __init__(self, model, tok, data, batch_size: int = 16, seq_len: int | None = None,
                 lr: float = 3e-3, min_lr: float | None = None, warmup: int = 20,
                 max_steps: int = 600, weight_decay: float = 0.1, grad_clip: float = 1.0,
                 val_fraction: float = 0.05, eval_every: int = 50, eval_windows: int = 64,
                 seed: int = 0, on_nonfinite: str = "raise"):
        super().__init__(seed)
        self.model, self.tok = model, tok
        T = seq_len or model.config.block_size
        if not 1 <= T <= model.config.block_size:
            raise ValueError(f"seq_len: expected 1..{model.config.block_size}, got {T}")
        tokens = data if isinstance(data, np.ndarray) else tokenize_corpus(tok, data)
        n_val = int(len(tokens) * val_fraction)
        if len(tokens) - n_val < T + 1:
            raise ValueError(f"data: {len(tokens)} tokens is too little for seq_len={T}")
        cut = len(tokens) - n_val
        self.train_tokens, self.val_tokens = tokens[:cut], tokens[cut:]
        # overlapping windows (stride T/2) give every token two contexts per epoch
        self.batches = Batches(windows(self.train_tokens, T, max(1, T // 2)), batch_size, T,
                               seed=seed)
        val = windows(self.val_tokens, T) if len(self.val_tokens) > T else []
        self.val_batches = Batches(val[:eval_windows], batch_size, T) if val else None
        self.opt = AdamW(model, lr, weight_decay=weight_decay, on_nonfinite=on_nonfinite)
        self.schedule = CosineSchedule(warmup, max_steps, lr, lr / 10 if min_lr is None else min_lr)
        self.grad_clip, self.eval_every = grad_clip, eval_every
        self.tokens_seen = 0

    def step(self) -> dict:
        """One optimizer step of next-token prediction on a random batch of windows."""
        t0 = time.perf_counter()
        idx, targets, _ = self.batches.next()               # (B, T) each
        loss = self.model.forward(idx, targets)             # mean cross-entropy
        self._check_finite(loss)
        self.model.backward(accumulate=False)               # grads written: no zero_grad
        lr = self.schedule(self.t)
        grad_norm = self.opt.clip_and_step(self.grad_clip, lr=lr)
        self.t += 1
        self.tokens_seen += idx.size
        stats = dict(loss=loss, lr=lr, grad_norm=grad_norm,
                     tokens_per_s=idx.size / (time.perf_counter() - t0))
        if self.eval_every and self.t % self.eval_every == 0:
            stats["val_loss"] = self.evaluate()
        return self._log(**stats)

    def evaluate(self) -> float:
        """Mean loss on the held-out windows (no gradient)."""
        if self.val_batches is None:
            return float("nan")
        losses, weights = [], []
        for idx, targets, _ in self.val_batches.all():
            losses.append(self.model.forward(idx, targets))
            weights.append(idx.size)
        return float(np.average(losses, weights=weights))

    def _extra_state(self):
        return {"tokens_seen": self.tokens_seen}

    def _load_extra_state(self, d):
        self.tokens_seen = int(d.get("tokens_seen", 0))

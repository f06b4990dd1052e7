"""Batches: the one helper that turns token sequences into training arrays for every stage.

A language model learns to predict token t+1 from tokens 0..t, so a sequence ``s`` of n+1
tokens gives one training row: inputs ``s[:-1]`` and targets ``s[1:]``. A *loss mask* says
which targets count: all of them in pretraining, only the assistant's reply in SFT.
Rows shorter than the batch's length are padded; padding is masked out.

The batcher shuffles with its own seeded generator and remembers where it is (epoch and
position), so a run resumed from a checkpoint sees exactly the same batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class Batches:
    """Random batches of (idx, targets, mask), each (batch_size, T), from token sequences.

    ``sequences``: list of token-id lists (each at least 2 long); ``masks``: optional list of
    0/1 lists of the same lengths, marking tokens whose *prediction* is trained (mask[i] = 1
    means token i is a target). Sequences longer than ``max_len + 1`` are cut. Each epoch visits
    every sequence once in a new random order.
    """

    def __init__(self, sequences: Sequence[Sequence[int]], batch_size: int, max_len: int,
                 masks: Sequence[Sequence[int]] | None = None, seed: int = 0, pad_id: int = 0):
        if batch_size < 1 or max_len < 1:
            raise ValueError("Batches: batch_size and max_len must be >= 1")
        seqs = [np.asarray(s, dtype=np.int32)[: max_len + 1] for s in sequences]
        if masks is None:
            mks = [np.ones(len(s), dtype=np.float32) for s in seqs]
        else:
            if len(masks) != len(sequences):
                raise ValueError("Batches: masks must match sequences one to one")
            mks = [np.asarray(m, dtype=np.float32)[: max_len + 1] for m in masks]
        keep = [i for i, (s, m) in enumerate(zip(seqs, mks)) if len(s) >= 2 and m[1:].any()]
        if not keep:
            raise ValueError("Batches: no sequence has 2+ tokens with a trained target")
        for i in keep:
            if len(mks[i]) != len(seqs[i]):
                raise ValueError(f"Batches: sequence {i} and its mask differ in length")
        self.seqs = [seqs[i] for i in keep]
        self.masks = [mks[i] for i in keep]
        self.batch_size, self.max_len, self.pad_id = batch_size, max_len, pad_id
        self.rng = np.random.default_rng(seed)
        self.epoch, self.pos = 0, 0
        self.order = self.rng.permutation(len(self.seqs))

    def __len__(self) -> int:
        return len(self.seqs)

    def next(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The next batch: idx, targets (int32) and mask (float32), each (B, T)."""
        rows = []
        for _ in range(self.batch_size):
            if self.pos == len(self.order):
                self.epoch, self.pos = self.epoch + 1, 0
                self.order = self.rng.permutation(len(self.seqs))
            rows.append(self.order[self.pos])
            self.pos += 1
        return self.collate(rows)

    def collate(self, rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pad the given sequences into (idx, targets, mask) arrays."""
        T = max(len(self.seqs[r]) for r in rows) - 1
        idx = np.full((len(rows), T), self.pad_id, dtype=np.int32)
        tgt = np.full((len(rows), T), self.pad_id, dtype=np.int32)
        mask = np.zeros((len(rows), T), dtype=np.float32)
        for b, r in enumerate(rows):
            s, m = self.seqs[r], self.masks[r]
            n = len(s) - 1
            idx[b, :n], tgt[b, :n], mask[b, :n] = s[:-1], s[1:], m[1:]
        return idx, tgt, mask

    def all(self):
        """Every sequence once, in order, in batches (for evaluation)."""
        for i in range(0, len(self.seqs), self.batch_size):
            yield self.collate(range(i, min(i + self.batch_size, len(self.seqs))))

    # -- exact resume ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "epoch": self.epoch, "pos": self.pos,
                "order": self.order.tolist()}

    def load_state_dict(self, d: dict) -> None:
        self.rng.bit_generator.state = d["rng"]
        self.epoch, self.pos = int(d["epoch"]), int(d["pos"])
        self.order = np.asarray(d["order"], dtype=np.int64)


def windows(tokens: np.ndarray, length: int, stride: int | None = None) -> list[np.ndarray]:
    """Cut a token stream into windows of ``length + 1`` tokens (inputs and shifted targets),
    ``stride`` apart (default: ``length``, so windows overlap by one token)."""
    tokens = np.asarray(tokens, dtype=np.int32)
    stride = stride or length
    return [tokens[i:i + length + 1] for i in range(0, len(tokens) - length, stride)]

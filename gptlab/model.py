"""The GPT-2 model: a thin Python face on the C core.

The architecture is GPT-2's (as in nanoGPT's model.py): token + learned position embeddings,
`n_layer` pre-LayerNorm blocks of causal self-attention and a 4x GELU MLP, a final LayerNorm,
and an LM head tied to the token embedding. The C core owns three memory arenas -- parameters,
gradients, activations -- and every parameter is visible here as a NumPy *view* named as in
Hugging Face's ``GPT2Model.state_dict()``: ``model.params["h.0.attn.c_attn.weight"]`` is the
(n_embd, 3*n_embd) matrix the C code multiplies with, and writing into it changes the model.

One training step is always the same three calls::

    model.zero_grad()
    loss = model.forward(idx, targets)   # mean cross-entropy; activations kept in C
    model.backward()                     # gradients accumulate into model.grads

(or two: ``model.backward(accumulate=False)`` writes the gradients instead of adding them, so
the ``zero_grad()`` before it is not needed -- the training stages step that way).

Later stages attach their own losses: ``model.forward(idx)`` gives the logits, a loss gives
d(loss)/d(logits), and ``model.backward(dlogits=...)`` carries it into the trunk (the reward and
value heads use ``forward_hidden`` and ``backward(dhidden=...)`` the same way).
"""

from __future__ import annotations

import json
import os

import numpy as np

from . import _core
from .config import GPTConfig
from .io import load_safetensors, save_safetensors

FORMAT = "gptlab.gpt.v1"


def as_tokens(x, name: str, vocab_size: int, ndim: int | None = 2) -> np.ndarray:
    """Check and convert token ids (any integer array-like) to a C-contiguous int32 array."""
    a = np.asarray(x)
    if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
        if a.size == 0 and a.dtype == np.float64:
            a = a.astype(np.int64)
        else:
            raise TypeError(f"{name}: expected integer token ids, got dtype {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array of token ids, got shape {a.shape}")
    if a.size and (a.min() < 0 or a.max() >= vocab_size):
        bad = a.min() if a.min() < 0 else a.max()
        raise ValueError(f"{name}: token id {int(bad)} is out of range [0, {vocab_size})")
    return np.ascontiguousarray(a, dtype=np.int32)


def as_mask(mask, shape: tuple, name: str = "mask") -> np.ndarray:
    """Check and convert a bool or 0/1 mask to C-contiguous float32 of the given shape."""
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {m.shape}")
    if m.dtype != bool:
        if not (np.issubdtype(m.dtype, np.integer) or np.issubdtype(m.dtype, np.floating)):
            raise TypeError(f"{name}: expected bool or 0/1 values, got dtype {m.dtype}")
        if not np.all((m == 0) | (m == 1)):
            raise ValueError(f"{name}: expected only 0/1 (or bool) values")
    return np.ascontiguousarray(m, dtype=np.float32)


def as_float32(x, name: str, shape: tuple) -> np.ndarray:
    """Check and convert a real array to C-contiguous float32 of the given shape, finite."""
    a = np.asarray(x)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)) \
            or a.dtype == bool:
        raise TypeError(f"{name}: expected a float array, got dtype {a.dtype}")
    if a.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: expected finite numbers, found NaN or Inf")
    return a


class GPT:
    """A GPT-2 language model whose arithmetic runs in gptlab's C core.

    ``GPT(config, seed=0)`` initialises the weights as GPT-2 does (normal, std 0.02; residual
    projections scaled by 1/sqrt(2 n_layer)). Same seed, same weights, bit for bit.
    """

    def __init__(self, config: GPTConfig, seed: int = 0):
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT: expected a GPTConfig, got {type(config).__name__}")
        self.config = config
        self._core = _core.Model(**config.to_dict())
        self._core.init_weights(int(seed) & 0xFFFFFFFFFFFFFFFF)
        self._shape: tuple | None = None  # (B, T) of the forward pass held in the C arenas
        self._param_flat = self._core.params()
        self._grad_flat = self._core.grads()
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        for name, offset, shape in self._core.tensors():
            size = int(np.prod(shape))
            self.params[name] = self._param_flat[offset:offset + size].reshape(shape)
            self.grads[name] = self._grad_flat[offset:offset + size].reshape(shape)

    # -- introspection ---------------------------------------------------------------------
    @property
    def num_params(self) -> int:
        """Number of parameters (the LM head shares the token embedding)."""
        return int(self._param_flat.size)

    def __repr__(self) -> str:
        c = self.config
        return (f"GPT(n_layer={c.n_layer}, n_head={c.n_head}, n_embd={c.n_embd}, "
                f"block_size={c.block_size}, vocab_size={c.vocab_size}, "
                f"params={self.num_params / 1e6:.2f}M)")

    def _idx(self, idx, name: str = "idx") -> np.ndarray:
        a = as_tokens(idx, name, self.config.vocab_size)
        if a.shape[0] < 1 or a.shape[1] < 1:
            raise ValueError(f"{name}: expected a non-empty (B, T) array, got shape {a.shape}")
        if a.shape[1] > self.config.block_size:
            raise ValueError(f"{name}: sequence length T={a.shape[1]} exceeds block_size="
                             f"{self.config.block_size}")
        return a

    # -- forward / backward ----------------------------------------------------------------
    def forward(self, idx, targets=None, mask=None):
        """Run the model on token ids ``idx`` of shape (B, T).

        Without targets: returns the logits, float32 (B, T, vocab_size).
        With targets (B, T): returns the mean cross-entropy (a float) over the positions where
        ``mask`` is true (every position when mask is None), and prepares ``backward()``.
        """
        idx = self._idx(idx)
        if targets is None:
            if mask is not None:
                raise ValueError("forward: mask needs targets")
            out = self._core.forward(idx, True)
            self._shape = idx.shape
            return out
        targets = as_tokens(targets, "targets", self.config.vocab_size)
        if targets.shape != idx.shape:
            raise ValueError(f"targets: expected shape {idx.shape} (as idx), got "
                             f"{targets.shape}")
        m = None if mask is None else as_mask(mask, idx.shape)
        loss = self._core.loss(idx, targets, m)
        self._shape = idx.shape
        return loss

    __call__ = forward

    def forward_hidden(self, idx) -> np.ndarray:
        """The final hidden states (after ln_f), float32 (B, T, n_embd): what a reward or value
        head reads. Skips the LM head."""
        idx = self._idx(idx)
        out = self._core.forward(idx, False)
        self._shape = idx.shape
        return out

    def zero_grad(self) -> None:
        """Set every gradient in ``model.grads`` to zero."""
        self._core.zero_grad()

    def backward(self, dlogits=None, dhidden=None, accumulate: bool = True) -> None:
        """Back-propagate through the last forward pass, accumulating into ``model.grads``.

        With no argument: the gradient of the loss computed by ``forward(idx, targets)``.
        With ``dlogits`` (B, T, V) and/or ``dhidden`` (B, T, C): any upstream gradient of the
        logits or hidden states of the last ``forward``/``forward_hidden`` call -- this is how
        the reward, value and PPO losses reach the transformer.

        ``accumulate=False`` writes this pass's gradients over ``model.grads`` instead of adding
        to them: the same numbers as ``zero_grad()`` then ``backward()``, without the pass
        that clears every gradient first (PyTorch's ``zero_grad(set_to_none=True)`` buys the
        same thing). Each gradient's first writer stores where it would have added, and the
        weight-gradient products skip reading the old values: on GPT-2 124M that saves two
        trips through 500 MB of memory per step. Accumulating over several batches (gradient
        accumulation) needs the default.
        """
        # the flag goes to C only when it is not the default, so that a _core built before it
        # still takes the default step (benchmarks/ab_builds.py --zero-grad times such builds)
        mode = () if accumulate else (False,)
        if dlogits is None and dhidden is None:
            self._core.backward(None, None, *mode)
            return
        shape = self._shape
        if shape is None:
            raise ValueError("backward: no forward pass to go back through (call forward first)")
        c = self.config
        dl = None if dlogits is None else as_float32(dlogits, "dlogits", shape + (c.vocab_size,))
        dh = None if dhidden is None else as_float32(dhidden, "dhidden", shape + (c.n_embd,))
        self._core.backward(dl, dh, *mode)

    # -- generation ------------------------------------------------------------------------
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, stop=None,
                 seed: int | None = None, return_logprobs: bool = False, prompt_lens=None):
        """Sample ``max_new_tokens`` after each prompt row of ``idx`` (B, T0), with a KV cache.

        Returns the int32 array (B, T0 + max_new_tokens), prompt included, as nanoGPT does.
        ``temperature=0`` is greedy; ``top_k`` keeps the k likeliest tokens, ``top_p`` the
        smallest set whose probability reaches p. A row that emits a token in ``stop`` is
        padded with it. ``return_logprobs=True`` also returns the new tokens' log-probabilities
        (B, max_new_tokens) under softmax(logits / temperature) -- what PPO needs.

        ``prompt_lens`` (B,) lets rows hold prompts of different lengths, left-aligned in
        ``idx``: row b's new tokens start right after its ``prompt_lens[b]`` tokens, and the
        positions after them are filled with the first stop token (or 0).
        """
        c = self.config
        idx = as_tokens(idx, "idx", c.vocab_size)
        B, T0 = idx.shape
        if B < 1 or T0 < 1:
            raise ValueError(f"idx: expected a non-empty (B, T) array, got shape {idx.shape}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)):
            raise TypeError("max_new_tokens: expected an int")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: expected >= 1, got {max_new_tokens}")
        if T0 + max_new_tokens > c.block_size:
            raise ValueError(f"generate: prompt length {T0} + max_new_tokens {max_new_tokens} "
                             f"exceeds block_size={c.block_size}")
        if not np.isfinite(temperature) or temperature < 0:
            raise ValueError(f"temperature: expected a finite number >= 0, got {temperature}")
        if top_k is not None and (int(top_k) != top_k or top_k < 1):
            raise ValueError(f"top_k: expected a positive int or None, got {top_k}")
        if top_p is not None and not (0.0 < top_p <= 1.0):
            raise ValueError(f"top_p: expected 0 < top_p <= 1 or None, got {top_p}")
        stops = as_tokens([] if stop is None else np.atleast_1d(stop), "stop", c.vocab_size,
                          ndim=1)
        if prompt_lens is None:
            lens = np.full(B, T0, dtype=np.int32)
        else:
            lens = as_tokens(prompt_lens, "prompt_lens", T0 + 1, ndim=1)
            if lens.shape != (B,) or lens.min() < 1:
                raise ValueError(f"prompt_lens: expected {B} lengths in [1, {T0}]")
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        pad = int(stops[0]) if stops.size else 0
        out = np.full((B, T0 + max_new_tokens), pad, dtype=np.int32)
        out[:, :T0] = idx
        for b in range(B):
            out[b, lens[b]:T0] = pad
        top_k = min(int(top_k or 0), c.vocab_size)  # k >= vocab_size keeps every token
        logp = self._core.generate(out, lens, int(max_new_tokens), float(temperature),
                                   float(top_p or 1.0), top_k, stops,
                                   int(seed) & 0xFFFFFFFFFFFFFFFF, bool(return_logprobs))
        self._shape = None  # generation reuses the activation arena
        return (out, logp) if return_logprobs else out

    # -- copies and files ------------------------------------------------------------------
    def copy(self) -> GPT:
        """A new model with the same config and weights (gradients zero)."""
        other = GPT(self.config, seed=0)
        other._param_flat[:] = self._param_flat
        return other

    def load_state_dict(self, tensors: dict[str, np.ndarray], strict: bool = True) -> None:
        """Copy tensors (name -> array, Hugging Face GPT2Model names) into the parameters."""
        missing = [k for k in self.params if k not in tensors]
        extra = [k for k in tensors if k not in self.params]
        if strict and (missing or extra):
            raise ValueError(f"load_state_dict: missing tensors {missing[:5]}, unexpected "
                             f"tensors {extra[:5]}")
        for name, value in tensors.items():
            if name not in self.params:
                continue
            v = np.asarray(value)
            if v.shape != self.params[name].shape:
                raise ValueError(f"load_state_dict: {name}: expected shape "
                                 f"{self.params[name].shape}, got {v.shape}")
            if not np.isfinite(v).all():
                raise ValueError(f"load_state_dict: {name}: contains NaN or Inf")
            self.params[name][...] = v

    def save(self, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
        """Save the weights to a .safetensors file (config and checksum in its metadata).
        The write is atomic: an interrupted save leaves any previous file intact."""
        meta = {"format": "pt", "gptlab.format": FORMAT,
                "gptlab.config": json.dumps(self.config.to_dict())}
        meta.update(metadata or {})
        save_safetensors(path, self.params, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> GPT:
        """Load a model written by :meth:`save`."""
        tensors, meta = load_safetensors(path, require_checksum=True)
        for name, t in tensors.items():
            if t.dtype != np.float32:
                raise ValueError(f"{os.fspath(path)}: tensor {name!r} is {t.dtype}, expected "
                                 "float32")
        if "gptlab.config" not in meta:
            raise ValueError(f"{os.fspath(path)}: not a gptlab checkpoint (no 'gptlab.config' "
                             "in its metadata)")
        try:
            cfg = GPTConfig(**json.loads(meta["gptlab.config"]))
        except (TypeError, ValueError, RecursionError) as e:
            raise ValueError(f"{os.fspath(path)}: invalid config in metadata: {e}") from None
        # the tensors read from the file must fill the config exactly: checked before the
        # model is allocated, so a small file cannot ask for a giant model
        size = sum(int(t.size) for t in tensors.values())
        if size != cfg.num_params():
            raise ValueError(f"{os.fspath(path)}: the file holds {size} numbers but its config "
                             f"{cfg} needs {cfg.num_params()}")
        model = cls(cfg)
        try:
            model.load_state_dict(tensors)
        except ValueError as e:
            raise ValueError(f"{os.fspath(path)}: {e}") from None
        return model

    # -- Hugging Face ----------------------------------------------------------------------
    @classmethod
    def from_hf(cls, path: str | os.PathLike, drop_untied_head: bool = False) -> GPT:
        """Load a Hugging Face GPT-2 folder (config.json + model.safetensors), any size; see
        :func:`gptlab.hf.load_gpt2_folder`."""
        from .hf import load_gpt2_folder
        return load_gpt2_folder(path, drop_untied_head=drop_untied_head)

    def save_hf(self, path: str | os.PathLike, tokenizer=None, *, bos_token_id: int | None = None,
                eos_token_id: int | None = None, pad_token_id: int | None = None) -> None:
        """Write a folder ``transformers.AutoModelForCausalLM.from_pretrained`` loads (with the
        tokenizer files when ``tokenizer`` is given); see :func:`gptlab.hf.save_gpt2_folder`."""
        from .hf import save_gpt2_folder
        save_gpt2_folder(self, path, tokenizer, bos_token_id=bos_token_id,
                         eos_token_id=eos_token_id, pad_token_id=pad_token_id)

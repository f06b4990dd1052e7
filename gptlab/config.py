"""Model configuration: the five numbers that define a GPT-2."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# name -> (n_layer, n_head, n_embd, block_size, vocab_size)
_PRESETS: dict[str, tuple[int, int, int, int, int]] = {
    "tiny": (2, 2, 64, 64, 2048),        # tests and smoke runs: trains in seconds
    "small": (4, 6, 192, 128, 2048),     # the lab's default: ~2M params, four stages in minutes
    "gpt-mini": (6, 6, 384, 256, 2048),  # minGPT's gpt-mini
    "gpt2": (12, 12, 768, 1024, 50257),  # GPT-2 124M
}


@dataclass(frozen=True)
class GPTConfig:
    """The shape of a GPT-2 model.

    vocab_size: number of token ids; block_size: longest sequence (learned positions);
    n_layer: transformer blocks; n_head: attention heads per block; n_embd: width of the
    residual stream (must be divisible by n_head).
    """

    vocab_size: int = 2048
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 6
    n_embd: int = 192

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"GPTConfig.{f.name}: expected an int, got {type(v).__name__}")
            if v < 1:
                raise ValueError(f"GPTConfig.{f.name}: expected >= 1, got {v}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd ({self.n_embd}) must be divisible by n_head "
                             f"({self.n_head})")

    @classmethod
    def preset(cls, name: str, **overrides: int) -> GPTConfig:
        """A named configuration: 'tiny', 'small', 'gpt-mini' (L6 H6 C384 T256) or 'gpt2'
        (124M: L12 H12 C768 T1024 V50257). Keyword overrides replace single fields, e.g.
        ``GPTConfig.preset("small", vocab_size=tok.vocab_size)``."""
        if name not in _PRESETS:
            raise ValueError(f"GPTConfig.preset: unknown preset {name!r}; expected one of "
                             f"{sorted(_PRESETS)}")
        L, H, C, T, V = _PRESETS[name]
        fields = dict(vocab_size=V, block_size=T, n_layer=L, n_head=H, n_embd=C)
        unknown = set(overrides) - set(fields)
        if unknown:
            raise TypeError(f"GPTConfig.preset: unknown field(s) {sorted(unknown)}")
        fields.update(overrides)
        return cls(**fields)

    @staticmethod
    def presets() -> list[str]:
        """Names accepted by :meth:`preset`."""
        return list(_PRESETS)

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def num_params(self) -> int:
        """Parameter count of this GPT-2 (LM head tied to the token embedding)."""
        V, T, L, C = self.vocab_size, self.block_size, self.n_layer, self.n_embd
        return V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C

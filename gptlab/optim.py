"""AdamW, gradient clipping and the learning-rate schedule that every stage uses.

The arithmetic runs in the C core (`csrc/optim.c`), one pass over each tensor; the state
(first and second moments, step count) lives in NumPy arrays you can print, plot and save.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from . import _core

__all__ = ["AdamW", "cosine_schedule", "CosineSchedule"]


def _number(x, name: str, lo: float, hi: float = math.inf, hi_open: bool = False) -> float:
    """x as a float in [lo, hi] (or [lo, hi)), else ValueError naming it."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a number, got {type(x).__name__}") from None
    if not (v >= lo and (v < hi if hi_open else v <= hi)) or math.isnan(v) or math.isinf(v):
        bracket = ")" if hi_open else "]"
        raise ValueError(f"{name}: expected a finite number in [{lo}, {hi}{bracket}, got {x}")
    return v


class AdamW:
    """Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW.

    Adam keeps, for every parameter, running averages of its gradient (m, "momentum") and of
    its squared gradient (v); each step moves the parameter by lr * m / (sqrt(v) + eps), so
    every coordinate gets a step of about lr whatever the scale of its gradient. Early
    averages are biased toward their zero start, hence the 1 - beta^t corrections. Weight
    decay shrinks weights toward 0 by lr * weight_decay per step, separately from the
    gradient (that is the "W"); as in GPT-2/nanoGPT it applies to 2-D weight matrices only,
    not to biases, LayerNorm gains, or other 1-D tensors.

    model: any object with `.params` and `.grads`, dicts name -> float32 C-contiguous array
    with the same keys and shapes (GPT exposes views into its C arenas; the update is in
    place). The moments are `opt.m[name]` and `opt.v[name]`; `opt.t` counts steps taken.
    on_nonfinite: what `clip_and_step` does when the gradient norm is NaN or Inf: "raise"
    (FloatingPointError) or "skip" (a warning); either way the weights are not touched.
    """

    def __init__(self, model, lr: float, betas: tuple[float, float] = (0.9, 0.95),
                 eps: float = 1e-8, weight_decay: float = 0.1, on_nonfinite: str = "raise"):
        params, grads = getattr(model, "params", None), getattr(model, "grads", None)
        if not isinstance(params, Mapping) or not isinstance(grads, Mapping):
            raise TypeError("model: expected an object with .params and .grads dicts of arrays")
        if set(params) != set(grads):
            raise ValueError(f"model: .params and .grads must have the same keys, got "
                             f"{sorted(set(params) ^ set(grads))} in only one of them")
        if not params:
            raise ValueError("model: .params is empty")
        for name in params:
            for kind, a in (("params", params[name]), ("grads", grads[name])):
                if not isinstance(a, np.ndarray) or a.dtype != np.float32:
                    raise TypeError(f"model.{kind}[{name!r}]: expected a float32 numpy array, "
                                    f"got {getattr(a, 'dtype', type(a).__name__)}")
                if not a.flags.c_contiguous or not a.flags.writeable:
                    raise ValueError(f"model.{kind}[{name!r}]: expected a C-contiguous "
                                     "writeable array (it is updated in place)")
            if params[name].shape != grads[name].shape:
                raise ValueError(f"model: {name!r} has shape {params[name].shape} in .params "
                                 f"but {grads[name].shape} in .grads")
        self.params: dict[str, np.ndarray] = dict(params)
        self.grads: dict[str, np.ndarray] = {name: grads[name] for name in params}
        self.lr = _number(lr, "lr", 0.0)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas: expected a pair (beta1, beta2), got {betas!r}")
        self.betas = (_number(betas[0], "betas[0]", 0.0, 1.0, hi_open=True),
                      _number(betas[1], "betas[1]", 0.0, 1.0, hi_open=True))
        self.eps = _number(eps, "eps", 0.0)
        self.weight_decay = _number(weight_decay, "weight_decay", 0.0)
        if on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"on_nonfinite: expected 'raise' or 'skip', got {on_nonfinite!r}")
        self.on_nonfinite = on_nonfinite
        self.m = {name: np.zeros_like(p) for name, p in self.params.items()}
        self.v = {name: np.zeros_like(p) for name, p in self.params.items()}
        self.decays = {name: p.ndim == 2 for name, p in self.params.items()}
        self.t = 0

    def step(self, lr: float | None = None) -> None:
        """One AdamW update of every parameter from the current gradients.

        lr: the learning rate of this step (it becomes `opt.lr`); None keeps `opt.lr`.
        The gradients are used as they are: `clip_and_step` is the guarded path.
        """
        self._update(lr, 1.0)

    def _update(self, lr: float | None, grad_scale: float) -> None:
        """The step of every tensor in one C call (one parallel region, however many tensors:
        a small model has dozens, each too short to be worth waking a thread for), the
        gradients first multiplied by grad_scale in the same pass (clipping)."""
        if lr is not None:
            self.lr = _number(lr, "lr", 0.0)
        self.t += 1
        b1, b2 = self.betas
        names = list(self.params)
        _core.adamw_update_many([self.params[n] for n in names], [self.m[n] for n in names],
                                [self.v[n] for n in names], [self.grads[n] for n in names],
                                [self.weight_decay if self.decays[n] else 0.0 for n in names],
                                grad_scale, self.lr, b1, b2, self.eps, self.t)

    def grad_norm(self) -> float:
        """Global L2 norm of all gradients, sqrt(sum of squares), accumulated in float64."""
        return math.sqrt(_core.sumsq_many(list(self.grads.values())))

    def clip_grad_norm(self, max_norm: float) -> float:
        """Scale all gradients by max_norm / norm when their global norm exceeds max_norm.

        Clipping bounds the size of one update when a batch produces an unusually large
        gradient (a loss spike), without changing its direction. As torch's
        clip_grad_norm_, the factor is max_norm / (norm + 1e-6). Returns the norm before
        clipping; a NaN or Inf norm is returned without touching the gradients.
        """
        max_norm = _number(max_norm, "max_norm", 0.0)
        norm = self.grad_norm()
        self._clip(norm, max_norm)
        return norm

    @staticmethod
    def _clip_factor(norm: float, max_norm: float | None) -> float:
        """What clipping multiplies the gradients by: max_norm / (norm + 1e-6) when that is
        below 1 (torch's clip_grad_norm_), else 1 -- also for no max_norm or a NaN/Inf norm."""
        if max_norm is None or not math.isfinite(norm):
            return 1.0
        return min(max_norm / (norm + 1e-6), 1.0)

    def _clip(self, norm: float, max_norm: float) -> None:
        coef = self._clip_factor(norm, max_norm)
        if coef < 1.0:
            for g in self.grads.values():
                _core.scale(g, coef)

    def clip_and_step(self, max_norm: float | None, lr: float | None = None,
                      on_nonfinite: str | None = None) -> float:
        """Clip the gradients to max_norm (None: no clipping), then take one step.

        Returns the global gradient norm before clipping (worth logging: spikes show up
        there first). If it is NaN or Inf nothing is updated (weights, moments, step count):
        on_nonfinite (default: the optimizer's) "raise" raises FloatingPointError, "skip"
        warns and returns the norm.
        """
        policy = self.on_nonfinite if on_nonfinite is None else on_nonfinite
        if policy not in ("raise", "skip"):
            raise ValueError(f"on_nonfinite: expected 'raise' or 'skip', got {policy!r}")
        if max_norm is not None:
            max_norm = _number(max_norm, "max_norm", 0.0)
        if lr is not None:
            lr = _number(lr, "lr", 0.0)
        norm = self.grad_norm()
        if not math.isfinite(norm):
            msg = (f"gradient norm is {norm} at step {self.t + 1}: weights left unchanged "
                   "(a NaN/Inf in the loss or the gradients)")
            if policy == "raise":
                raise FloatingPointError(msg)
            warnings.warn(msg + "; step skipped", RuntimeWarning, stacklevel=2)
            return norm
        self._update(lr, self._clip_factor(norm, max_norm))  # clipping rides along the update
        return norm

    def state_dict(self) -> dict:
        """Copies of everything needed to resume exactly: step count, hyperparameters and
        the moments (dicts name -> array)."""
        return {
            "t": self.t,
            "lr": self.lr,
            "betas": tuple(self.betas),
            "eps": self.eps,
            "weight_decay": self.weight_decay,
            "m": {name: a.copy() for name, a in self.m.items()},
            "v": {name: a.copy() for name, a in self.v.items()},
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Restore a state_dict(): the moments are copied into the existing arrays."""
        missing = {"t", "lr", "betas", "eps", "weight_decay", "m", "v"} - set(state)
        if missing:
            raise ValueError(f"state: missing keys {sorted(missing)}")
        for key in ("m", "v"):
            if set(state[key]) != set(self.params):
                raise ValueError(f"state[{key!r}]: expected the parameter names of the model, "
                                 f"differing in {sorted(set(state[key]) ^ set(self.params))}")
            for name, a in state[key].items():
                a = np.asarray(a)
                if a.shape != self.params[name].shape:
                    raise ValueError(f"state[{key!r}][{name!r}]: expected shape "
                                     f"{self.params[name].shape}, got {a.shape}")
                if not np.isfinite(a).all():
                    raise ValueError(f"state[{key!r}][{name!r}]: expected finite numbers")
        t = state["t"]
        if not isinstance(t, (int, np.integer)) or t < 0:
            raise ValueError(f"state['t']: expected an int >= 0, got {t!r}")
        lr = _number(state["lr"], "state['lr']", 0.0)
        betas = (_number(state["betas"][0], "state['betas'][0]", 0.0, 1.0, hi_open=True),
                 _number(state["betas"][1], "state['betas'][1]", 0.0, 1.0, hi_open=True))
        eps = _number(state["eps"], "state['eps']", 0.0)
        wd = _number(state["weight_decay"], "state['weight_decay']", 0.0)
        for key, dst in (("m", self.m), ("v", self.v)):
            for name, a in state[key].items():
                np.copyto(dst[name], np.asarray(a, dtype=np.float32))
        self.t, self.lr, self.betas, self.eps, self.weight_decay = int(t), lr, betas, eps, wd


def cosine_schedule(step: int, warmup: int, total: int, lr_max: float,
                    lr_min: float = 0.0) -> float:
    """Learning rate at `step` (0-based): linear warmup, then cosine decay.

    Steps 0 .. warmup-1 ramp linearly up to lr_max (lr_max * (step + 1) / warmup): Adam's
    moment estimates are noisy at first and a full-size step then can wreck a fresh model.
    From warmup to total the rate follows half a cosine from lr_max down to lr_min, large
    steps while far from a minimum and small ones to settle; after total it stays at lr_min.
    """
    for name, value in (("step", step), ("warmup", warmup), ("total", total)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name}: expected an int >= 0, got {value!r}")
    lr_max = _number(lr_max, "lr_max", 0.0)
    lr_min = _number(lr_min, "lr_min", 0.0, lr_max)
    big = 2**31 - 1
    return _core.lr_cosine(min(int(step), big), min(int(warmup), big), min(int(total), big),
                           lr_max, lr_min)


@dataclass(frozen=True)
class CosineSchedule:
    """cosine_schedule as a callable of the step: `lr = schedule(step)`. See cosine_schedule."""

    warmup: int
    total: int
    lr_max: float
    lr_min: float = 0.0

    def __post_init__(self):
        cosine_schedule(0, self.warmup, self.total, self.lr_max, self.lr_min)  # validates

    def __call__(self, step: int) -> float:
        return cosine_schedule(step, self.warmup, self.total, self.lr_max, self.lr_min)

"""What every stage's trainer shares: the history, the training loop, checkpoints.

A stage subclass writes only ``step()`` -- one optimizer step that returns a dict of metrics --
and lists what it trains (``_modules``, ``_optimizers``, ``_batchers``). This class adds:

- ``train(n)``: ``n`` steps with a progress bar; Ctrl-C stops cleanly *between* steps, so the
  model, optimizer and history always agree;
- ``history``: one dict per step, ready for ``gptlab.plot.curves``;
- ``save_checkpoint(path)`` / ``load_checkpoint(path)``: models, optimizer moments, step count,
  random-generator states and data position in one atomic ``.safetensors`` file, so a resumed
  run continues bit for bit as if never stopped.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
import warnings

import numpy as np

from ..io import load_safetensors, save_safetensors


def progress_bar(total: int, desc: str, enabled: bool = True):
    """A tqdm bar (tqdm.auto in notebooks) when tqdm is installed, else a silent stand-in."""
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc=desc, leave=True)
        except ImportError:
            pass

    class _Quiet:
        def update(self, n=1):
            pass

        def set_postfix(self, *a, **k):
            pass

        def close(self):
            pass

    return _Quiet()


class Trainer:
    """Base class of the stage trainers (see the module docstring)."""

    name = "stage"
    postfix_keys: tuple[str, ...] = ("loss",)

    def __init__(self, seed: int = 0):
        self.t = 0  # optimizer steps taken
        self.history: list[dict] = []
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._stop = False
        self._t0 = time.perf_counter()

    # -- to be provided by each stage ------------------------------------------------------
    def step(self) -> dict:
        raise NotImplementedError

    # The defaults fit a stage that trains one ``self.model`` with ``self.opt`` on
    # ``self.batches`` (pretraining, SFT); stages with other parts name them themselves.
    def _modules(self) -> dict:
        """name -> object with a ``params`` dict of arrays (models, heads) to checkpoint."""
        return {"model": self.model} if hasattr(self, "model") else {}

    def _optimizers(self) -> dict:
        """name -> optimizer whose state (moments, step count) is checkpointed."""
        return {"opt": self.opt} if hasattr(self, "opt") else {}

    def _batchers(self) -> dict:
        """name -> batcher whose position in its shuffled epoch is checkpointed."""
        return {"train": self.batches} if hasattr(self, "batches") else {}

    # -- logging ---------------------------------------------------------------------------
    def _log(self, **stats) -> dict:
        """Append one step's metrics to ``history`` (plain floats) and return them."""
        row = {"step": self.t}
        for k, v in stats.items():
            row[k] = float(v) if isinstance(v, (int, float, np.floating, np.integer)) else v
        row["time"] = time.perf_counter() - self._t0
        self.history.append(row)
        return row

    # -- the loop --------------------------------------------------------------------------
    def train(self, steps: int, progress: bool = True) -> list[dict]:
        """Run ``steps`` optimizer steps (fewer if interrupted). Returns their metrics.

        Ctrl-C (KeyboardInterrupt) finishes the step in progress and returns: the model and
        history stay consistent and ``train`` can simply be called again."""
        if steps < 0:
            raise ValueError(f"train: steps must be >= 0, got {steps}")
        bar = progress_bar(steps, self.name, progress)
        out: list[dict] = []
        self._stop = False
        restore = self._catch_sigint()
        try:
            for _ in range(steps):
                stats = self.step()
                out.append(stats)
                bar.update(1)
                bar.set_postfix({k: f"{stats[k]:.4g}" for k in self.postfix_keys
                                 if isinstance(stats.get(k), float)})
                if self._stop:
                    warnings.warn(f"{self.name}: interrupted after step {self.t}; the model "
                                  "and history are consistent", stacklevel=2)
                    break
        finally:
            restore()
            bar.close()
        return out

    def _catch_sigint(self):
        """While training, Ctrl-C sets a flag checked between steps (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):
            if self._stop:  # a second Ctrl-C: stop now
                signal.signal(signal.SIGINT, previous)
                raise KeyboardInterrupt
            self._stop = True

        try:
            signal.signal(signal.SIGINT, handler)
        except ValueError:
            return lambda: None
        return lambda: signal.signal(signal.SIGINT, previous)

    # -- non-finite guard ------------------------------------------------------------------
    def _check_finite(self, value: float, what: str = "loss") -> bool:
        """True if ``value`` is finite. Otherwise, as the optimizers' ``on_nonfinite`` says:
        "raise" (default) raises FloatingPointError before anything is updated; "skip" warns,
        fills the gradients with NaN (the backward pass that follows accumulates into them,
        so they stay NaN) and returns False: the optimizer's own guard then refuses the step,
        and the weights and moments stay as they were."""
        if math.isfinite(value):
            return True
        msg = f"{self.name}: {what} is {value} at step {self.t}; the weights were not updated"
        policies = {getattr(o, "on_nonfinite", "raise") for o in self._optimizers().values()}
        if policies != {"skip"}:
            raise FloatingPointError(msg)
        warnings.warn(msg + " (step skipped)", RuntimeWarning, stacklevel=3)
        for mod in self._modules().values():
            for g in getattr(mod, "grads", {}).values():
                g.fill(np.nan)
        return False

    # -- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self, path) -> None:
        """Everything needed to resume exactly, in one atomic .safetensors file."""
        tensors: dict[str, np.ndarray] = {}
        for name, mod in self._modules().items():
            for k, v in mod.params.items():
                tensors[f"{name}/{k}"] = v
        opt_meta = {}
        for name, opt in self._optimizers().items():
            meta = {}
            for k, v in opt.state_dict().items():
                if isinstance(v, dict):
                    for kk, arr in v.items():
                        tensors[f"{name}/{k}/{kk}"] = np.asarray(arr)
                    meta[k] = {"__arrays__": list(v)}
                elif isinstance(v, np.ndarray):
                    tensors[f"{name}/{k}"] = v
                    meta[k] = {"__array__": True}
                else:
                    meta[k] = v
            opt_meta[name] = meta
        state = {"t": self.t, "history": self.history, "rng": self.rng.bit_generator.state,
                 "optimizers": opt_meta, "extra": self._extra_state(),
                 "batchers": {k: b.state_dict() for k, b in self._batchers().items()}}
        save_safetensors(path, tensors, {"gptlab.format": f"gptlab.trainer.{self.name}",
                                         "gptlab.trainer_state": json.dumps(state)})

    def load_checkpoint(self, path) -> None:
        """Restore a checkpoint written by ``save_checkpoint`` of the same stage."""
        tensors, meta = load_safetensors(path, require_checksum=True)
        if meta.get("gptlab.format") != f"gptlab.trainer.{self.name}":
            raise ValueError(f"{path}: not a {self.name} trainer checkpoint")
        state = json.loads(meta["gptlab.trainer_state"])
        for name, mod in self._modules().items():
            for k, v in mod.params.items():
                key = f"{name}/{k}"
                if key not in tensors or tensors[key].shape != v.shape:
                    raise ValueError(f"{path}: tensor {key} missing or of the wrong shape")
                v[...] = tensors[key]
        for name, opt in self._optimizers().items():
            d = {}
            for k, v in state["optimizers"][name].items():
                if isinstance(v, dict) and "__arrays__" in v:
                    d[k] = {kk: tensors[f"{name}/{k}/{kk}"] for kk in v["__arrays__"]}
                elif isinstance(v, dict) and v.get("__array__"):
                    d[k] = tensors[f"{name}/{k}"]
                else:
                    d[k] = v
            opt.load_state_dict(d)
        for k, b in self._batchers().items():
            b.load_state_dict(state["batchers"][k])
        self.t = int(state["t"])
        self.history = state["history"]
        self.rng.bit_generator.state = state["rng"]
        self._load_extra_state(state.get("extra", {}))

    def _extra_state(self) -> dict:
        return {}

    def _load_extra_state(self, d: dict) -> None:
        pass

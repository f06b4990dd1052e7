"""The whole ChatGPT recipe in one call: pretraining -> SFT -> reward model -> PPO on TinyWorld.

``run_pipeline()`` runs the four stages one after the other, each one starting from the
previous stage's model, and writes a report card. Each stage is also a function of its own
(``pretrain_stage``, ``sft_stage``, ``reward_stage``, ``ppo_stage``) that takes the previous
stage (a returned ``Stage`` or its folder on disk) and writes into its own folder:

    runs/NAME/
      pretrain/  model.safetensors  tokenizer.json  metrics.jsonl  stage.json  loss.png
      sft/       model.safetensors  tokenizer.json  metrics.jsonl  stage.json  loss.png
      reward/    reward_model.safetensors  tokenizer.json  metrics.jsonl  preferences.jsonl ...
      ppo/       model.safetensors (the RLHF policy)  tokenizer.json  metrics.jsonl  ...
      report.json  report.md

``metrics.jsonl`` holds one JSON object per optimizer step (the trainer's ``history``);
``stage.json`` the settings, the headline figures and the folder of the parent stage.

Every hyperparameter lives in the two dicts below, ``FULL`` (the default, about 10 minutes on
2 cores) and ``FAST`` (``--fast``: a smoke run of a couple of minutes whose numbers are poor).
Keys a stage does not use itself are passed on to its trainer, so any trainer argument can
be tuned here.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from . import eval as ev
from .chat import sample
from .config import GPTConfig
from .data import GoldLabeler, TinyWorld
from .io import atomic_write, save_json
from .model import GPT
from .tokenizer import Tokenizer

# ---- every knob of the pipeline --------------------------------------------------------------

FULL: dict = {
    "world": {"corpus_chars": 2_500_000},          # TinyWorld pretraining text (characters)
    "tokenizer": {"vocab_size": 2048},
    # steps, then Pretrainer arguments (max_steps follows steps)
    "pretrain": {"steps": 600, "batch_size": 16, "lr": 3e-3, "warmup": 20, "eval_every": 100},
    # steps, examples (SFT demonstrations), then SFTTrainer arguments
    # (lr 1e-3 memorises the demonstrations and answers fewer held-out questions)
    "sft": {"steps": 150, "examples": 2000, "batch_size": 16, "lr": 3e-4, "warmup": 10,
            "pack": True},
    # prompts ranked for RM training / held out, k replies per prompt sampled at temperature,
    # normalize: SFT replies whose mean reward is set to 0; then RewardTrainer arguments
    # (on the small preset, 1200 x 6 reached 0.81 held-out pairwise accuracy);
    # off_prompt: replies to other prompts added to each training ranking as hard negatives
    # (see build_preferences: without them PPO learns to refuse or decline everything)
    "reward": {"steps": 300, "prompts": 1200, "val_prompts": 150, "k": 6, "off_prompt": 1,
               "max_new_tokens": 32,
               "temperature": 1.0, "normalize": 128, "batch_size": 8, "lr": 3e-4,
               "eval_every": 50},
    # steps (rollout batches), prompts (the PPO prompt set), then PPOTrainer arguments
    # (with the reward model trained on off-prompt negatives, beta 0.2 kept the KL near 3
    # nats per reply while the gold score rose; lr 5e-5 tripped the approx-KL warning once)
    "ppo": {"steps": 40, "prompts": 1000, "batch_size": 32, "num_mini_batches": 2,
            "num_ppo_epochs": 4, "lr": 4e-5, "vf_lr": 1e-4, "kl_coef": 0.2,
            "max_new_tokens": 32, "temperature": 1.0, "missing_eos_penalty": 1.0},
    # DPO on the reward model's preference data, for the comparison (steps 0: skip)
    "dpo": {"steps": 150, "beta": 0.1, "batch_size": 8, "lr": 5e-5, "warmup": 10},
    # probe sizes; rl_prompts: held-out prompts for before/after; samples: report-card rows
    # per prompt category; best_of_n: 0 to skip; overopt: a second PPO run without the KL
    # penalty (beta 0), for the over-optimisation plot (steps 0: skip)
    "eval": {"cloze": 150, "fewshot": 120, "sft": 120, "rl_prompts": 300, "samples": 3,
             "best_of_n": 4, "overopt": {"steps": 80, "kl_coef": 0.0, "lr": 5e-5}},
}

FAST: dict = {
    "world": {"corpus_chars": 300_000},
    "tokenizer": {"vocab_size": 2048},
    "pretrain": {"steps": 50, "batch_size": 16, "lr": 3e-3, "warmup": 5, "eval_every": 25,
                 "eval_windows": 16},
    "sft": {"steps": 25, "examples": 400, "batch_size": 16, "lr": 1e-3, "warmup": 3},
    # drop_ties False: replies of a barely trained model often all score alike, and a smoke
    # test must not run out of strictly ranked pairs (ties are then broken at random)
    "reward": {"steps": 10, "prompts": 40, "val_prompts": 20, "k": 4, "off_prompt": 1,
               "max_new_tokens": 20,
               "temperature": 1.0, "normalize": 16, "batch_size": 4, "lr": 3e-4,
               "eval_every": 5, "drop_ties": False},
    "ppo": {"steps": 3, "prompts": 48, "batch_size": 16, "num_mini_batches": 2,
            "num_ppo_epochs": 2, "lr": 5e-5, "vf_lr": 1e-4, "kl_coef": 0.05, "max_new_tokens": 20,
            "temperature": 1.0, "missing_eos_penalty": 1.0},
    "dpo": {"steps": 0, "beta": 0.1, "batch_size": 4, "lr": 5e-5, "warmup": 2},
    "eval": {"cloze": 40, "fewshot": 30, "sft": 30, "rl_prompts": 45, "samples": 1,
             "best_of_n": 0, "overopt": {"steps": 2, "kl_coef": 0.0, "lr": 5e-5}},
}

STAGES = ("pretrain", "sft", "reward", "ppo")
# the report.json keys outside checks read (DESIGN.md); all numbers
REPORT_KEYS = {
    "pretrain": ("val_loss", "cloze_accuracy", "fewshot_accuracy", "zeroshot_accuracy",
                 "seconds"),
    "sft": ("format_adherence", "heldout_accuracy", "seconds"),
    "reward_model": ("heldout_pairwise_accuracy", "seconds"),
    "ppo": ("gold_score_before", "gold_score_after", "rm_score_before", "rm_score_after", "kl",
            "seconds"),
}
BEHAVIOURS = ("refuse_improper", "impartial", "decline_out_of_scope")


def settings_for(fast: bool = False, overrides: dict | None = None) -> dict:
    """A deep copy of ``FAST`` or ``FULL`` with ``overrides`` ({stage: {key: value}}) applied."""
    s = copy.deepcopy(FAST if fast else FULL)
    for stage, d in (overrides or {}).items():
        if stage not in s:
            raise ValueError(f"settings: unknown section {stage!r}; expected one of {sorted(s)}")
        s[stage].update(d)
    return s


# ---- a finished stage -------------------------------------------------------------------------


@dataclass
class Stage:
    """What a stage leaves behind: its folder, headline figures and the trained objects.

    ``model``: the stage's GPT (for ``reward``: the ``RewardModel``); ``trainer``: the trainer
    with its ``history`` (None when loaded from disk); ``extra``: objects the next stage or a
    notebook may want (the SFT model for ``reward``, the preference data, ...)."""

    name: str
    dir: str
    summary: dict
    model: object = None
    tok: Tokenizer | None = None
    trainer: object = None
    settings: dict = field(default_factory=dict)
    parent: str | None = None
    seed: int = 0
    preset: str = "small"
    extra: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Stage({self.name!r}, dir={self.dir!r}, summary={self.summary})"


def load_stage(path: str | os.PathLike) -> Stage:
    """Load a stage folder written by one of the ``*_stage`` functions (model + tokenizer)."""
    path = os.path.abspath(os.fspath(path))
    meta_path = os.path.join(path, "stage.json")
    if not os.path.isfile(meta_path):
        raise FileNotFoundError(f"{path}: not a gptlab stage folder (no stage.json)")
    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    tok = Tokenizer.load(os.path.join(path, "tokenizer.json"))
    name = meta.get("stage")
    if name == "reward":
        from .stages.reward import RewardModel

        model = RewardModel.load(os.path.join(path, "reward_model.safetensors"))
    elif name in ("pretrain", "sft", "ppo"):
        model = GPT.load(os.path.join(path, "model.safetensors"))
    else:
        raise ValueError(f"{meta_path}: unknown stage {name!r}")
    parent = meta.get("parent")
    if parent:
        parent = os.path.normpath(os.path.join(path, parent))
    return Stage(name, path, meta.get("summary", {}), model, tok, None, meta.get("settings", {}),
                 parent, int(meta.get("seed", 0)), meta.get("preset", "small"))


def _as_stage(prev, expected: str) -> Stage:
    st = prev if isinstance(prev, Stage) else load_stage(prev)
    if st.name != expected:
        raise ValueError(f"{st.dir}: expected the folder of a {expected!r} stage, got a "
                         f"{st.name!r} stage")
    return st


def _settings_seed_world(parent: Stage, fast: bool, settings: dict | None, seed: int | None,
                         world: TinyWorld | None) -> tuple[dict, int, TinyWorld]:
    """What a stage after the first inherits from its parent unless given: the settings
    (else FULL/FAST), the seed and the TinyWorld (rebuilt from seed and settings if the
    parent was loaded from disk)."""
    s = settings or settings_for(fast)
    seed = parent.seed if seed is None else seed
    return s, seed, world or parent.extra.get("world") or _world(seed, s)


# ---- files ------------------------------------------------------------------------------------


def _finite(x):
    """JSON-safe: non-finite floats become None, NumPy scalars plain Python."""
    if isinstance(x, dict):
        return {str(k): _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.ndarray):
        return _finite(x.tolist())
    return x


def write_jsonl(path: str, rows) -> None:
    """One JSON object per line, written atomically."""
    with atomic_write(path, "w") as f:
        for r in rows:
            f.write(json.dumps(_finite(r)) + "\n")


CHECKPOINT = {"pretrain": "model.safetensors", "sft": "model.safetensors",
              "reward": "reward_model.safetensors", "ppo": "model.safetensors"}


def save_stage(st: Stage) -> None:
    """Write a stage's folder: its model checkpoint, ``tokenizer.json`` beside it,
    ``metrics.jsonl`` (one line per step of ``st.trainer.history``) and ``stage.json``
    (headline figures, settings, parent folder). Every file is written atomically."""
    if st.name not in CHECKPOINT:
        raise ValueError(f"save_stage: unknown stage {st.name!r}; expected one of {STAGES}")
    os.makedirs(st.dir, exist_ok=True)
    st.model.save(os.path.join(st.dir, CHECKPOINT[st.name]))
    _tok_save(st.tok, st.dir)
    if st.trainer is not None:
        write_jsonl(os.path.join(st.dir, "metrics.jsonl"), st.trainer.history)
    parent = os.path.relpath(st.parent, st.dir) if st.parent else None  # folders can move
    save_json(os.path.join(st.dir, "stage.json"),
              _finite({"stage": st.name, "summary": st.summary, "settings": st.settings,
                       "parent": parent, "seed": st.seed, "preset": st.preset}))


def _tok_save(tok: Tokenizer, folder: str) -> None:
    """tokenizer.json beside the model, written atomically (temporary file, then rename)."""
    part = os.path.join(folder, f".tokenizer.json.{os.getpid()}.tmp")
    try:
        tok.save(part)
        os.replace(part, os.path.join(folder, "tokenizer.json"))
    finally:
        if os.path.exists(part):
            os.unlink(part)


def _plot(folder: str, name: str, make, notes: list) -> str | None:
    """Save ``make()`` (a Figure) as folder/name.png; without matplotlib, note it and skip."""
    try:
        fig = make()
    except ImportError:
        if "matplotlib" not in " ".join(notes):
            notes.append("plots skipped: matplotlib is not installed "
                         '(pip install "gptlab[notebooks]")')
        return None
    path = os.path.join(folder, name)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


class _Log:
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, msg: str) -> None:
        if self.enabled:
            print(msg, file=sys.stderr, flush=True)


def _median(history, key) -> float:
    vals = [r[key] for r in history if isinstance(r.get(key), float) and math.isfinite(r[key])]
    return float(np.median(vals)) if vals else float("nan")


def _world(seed: int, s: dict) -> TinyWorld:
    return TinyWorld(seed=seed, **s["world"])


# ---- stage 1: pretraining ---------------------------------------------------------------------


def pretrain_stage(out: str, preset: str = "small", fast: bool = False,
                   settings: dict | None = None, seed: int = 0, world: TinyWorld | None = None,
                   progress: bool = True) -> Stage:
    """Train a BPE tokenizer and pretrain a fresh GPT on TinyWorld's corpus, then probe it.

    Headline figures: validation loss, cloze accuracy (world knowledge), few-shot and
    zero-shot accuracy (in-context learning), wall seconds and training tokens/s."""
    s = settings or settings_for(fast)
    log, notes = _Log(progress), []
    t_start = time.perf_counter()
    world = world or _world(seed, s)
    docs = world.pretrain_documents(s["world"].get("corpus_chars"))
    log(f"pretrain: {len(docs)} documents, training a {s['tokenizer']['vocab_size']}-token BPE")
    tok = Tokenizer.train([t for _, t in docs], vocab_size=s["tokenizer"]["vocab_size"])
    cfg = GPTConfig.preset(preset, vocab_size=tok.vocab_size)
    model = GPT(cfg, seed=seed)
    from .stages.pretrain import Pretrainer

    p = dict(s["pretrain"])
    steps = int(p.pop("steps"))
    trainer = Pretrainer(model, tok, docs, max_steps=steps, seed=seed, **p)
    log(f"pretrain: {model.num_params / 1e6:.2f}M parameters, {len(trainer.train_tokens):,} "
        f"training tokens, {steps} steps")
    t0 = time.perf_counter()
    trainer.train(steps, progress=progress)
    train_s = time.perf_counter() - t0
    e = s["eval"]
    summary = {
        "val_loss": trainer.evaluate(),
        "cloze_accuracy": ev.cloze_accuracy(model, tok, world, n=e["cloze"]),
        "fewshot_accuracy": ev.fewshot_accuracy(model, tok, world, k=3, n=e["fewshot"]),
        "zeroshot_accuracy": ev.fewshot_accuracy(model, tok, world, k=0, n=e["fewshot"]),
        "fewshot_transfer_accuracy": ev.fewshot_accuracy(model, tok, world, k=3,
                                                         n=e["fewshot"], split="heldout"),
        "zeroshot_transfer_accuracy": ev.fewshot_accuracy(model, tok, world, k=0,
                                                          n=e["fewshot"], split="heldout"),
        "train_loss": float(np.mean([r["loss"] for r in trainer.history[-10:]])),
        "steps": trainer.t, "tokens": trainer.tokens_seen, "params": model.num_params,
        "tokens_per_s": trainer.tokens_seen / train_s if train_s > 0 else float("nan"),
        "train_seconds": train_s,
    }
    os.makedirs(out, exist_ok=True)
    _plot(out, "loss.png", lambda: _curves(trainer.history, ["loss", "val_loss"],
                                           "pretraining: next-token loss"), notes)
    summary["seconds"] = time.perf_counter() - t_start
    st = Stage("pretrain", os.path.abspath(out), summary, model, tok, trainer, s, None, seed,
               preset, {"world": world, "notes": notes})
    save_stage(st)
    log(f"pretrain: val loss {summary['val_loss']:.3f}, cloze {summary['cloze_accuracy']:.2f}, "
        f"few-shot {summary['fewshot_accuracy']:.2f} vs zero-shot "
        f"{summary['zeroshot_accuracy']:.2f} ({summary['seconds']:.0f} s)")
    return st


def _curves(history, keys, title):
    from . import plot

    return plot.curves(history, keys, title=title)


# ---- stage 2: supervised fine-tuning ----------------------------------------------------------


def sft_stage(prev, out: str, fast: bool = False, settings: dict | None = None,
              seed: int | None = None, world: TinyWorld | None = None,
              progress: bool = True) -> Stage:
    """Fine-tune the pretrained model on chat demonstrations (loss on the replies only).

    ``prev``: the pretraining ``Stage`` or its folder. Headline figures: format adherence
    (replies that end with <|end|>) and accuracy on held-out questions, before (base) and
    after SFT."""
    base = _as_stage(prev, "pretrain")
    s, seed, world = _settings_seed_world(base, fast, settings, seed, world)
    log, notes = _Log(progress), []
    t_start = time.perf_counter()
    tok, model = base.tok, base.model.copy()
    from .stages.sft import SFTTrainer

    p = dict(s["sft"])
    steps, n_examples = int(p.pop("steps")), int(p.pop("examples"))
    examples = world.sft_examples(n=n_examples)
    trainer = SFTTrainer(model, tok, examples, max_steps=steps, seed=seed, **p)
    log(f"sft: {len(examples)} demonstrations, {steps} steps")
    t0 = time.perf_counter()
    trainer.train(steps, progress=progress)
    train_s = time.perf_counter() - t0
    e = s["eval"]
    before = ev.sft_metrics(base.model, tok, world, n=e["sft"])
    after = ev.sft_metrics(model, tok, world, n=e["sft"])
    summary = {
        "format_adherence": after["format_adherence"],
        "heldout_accuracy": after["heldout_accuracy"],
        "base_format_adherence": before["format_adherence"],
        "base_heldout_accuracy": before["heldout_accuracy"],
        "train_loss": float(np.mean([r["loss"] for r in trainer.history[-10:]])),
        "steps": trainer.t, "examples": len(examples),
        "tokens_per_s": _median(trainer.history, "tokens_per_s"), "train_seconds": train_s,
    }
    os.makedirs(out, exist_ok=True)
    _plot(out, "loss.png", lambda: _curves(trainer.history, ["loss"],
                                           "SFT: loss on the reply tokens"), notes)
    summary["seconds"] = time.perf_counter() - t_start
    st = Stage("sft", os.path.abspath(out), summary, model, tok, trainer, s, base.dir, seed,
               base.preset, {"world": world, "notes": notes, "base": base,
                             "examples": after["examples"]})
    save_stage(st)
    log(f"sft: format adherence {summary['base_format_adherence']:.2f} -> "
        f"{summary['format_adherence']:.2f}, held-out accuracy "
        f"{summary['heldout_accuracy']:.2f} ({summary['seconds']:.0f} s)")
    return st


# ---- stage 3: reward modeling -----------------------------------------------------------------


def reward_stage(prev, out: str, fast: bool = False, settings: dict | None = None,
                 seed: int | None = None, world: TinyWorld | None = None,
                 progress: bool = True) -> Stage:
    """Sample K replies per prompt from the SFT model, rank them with the gold labeler, and
    train a reward model (the SFT trunk + a scalar head) with the K-way ranking loss.

    ``prev``: the SFT ``Stage`` or its folder. Headline figure: pairwise accuracy on the
    rankings of held-out prompts."""
    from .stages.reward import RewardModel, RewardTrainer, build_preferences

    sft = _as_stage(prev, "sft")
    s, seed, world = _settings_seed_world(sft, fast, settings, seed, world)
    log, notes = _Log(progress), []
    t_start = time.perf_counter()
    labeler = GoldLabeler(world)
    tok, policy = sft.tok, sft.model
    p = dict(s["reward"])
    steps = int(p.pop("steps"))
    n_train, n_val, k = int(p.pop("prompts")), int(p.pop("val_prompts")), int(p.pop("k"))
    max_new, temp, n_norm = int(p.pop("max_new_tokens")), float(p.pop("temperature")), \
        int(p.pop("normalize"))
    log(f"reward: sampling {k} replies to {n_train} + {n_val} prompts, ranked by the labeler")
    t0 = time.perf_counter()
    off = int(p.pop("off_prompt", 0))
    prefs = build_preferences(policy, tok, world.ranking_prompts("train", n=n_train), labeler,
                              k=k, max_new_tokens=max_new, temperature=temp, seed=seed,
                              off_prompt=off)
    val = build_preferences(policy, tok, world.ranking_prompts("heldout", n=n_val), labeler,
                            k=k, max_new_tokens=max_new, temperature=temp, seed=seed + 1)
    data_s = time.perf_counter() - t0
    rm = RewardModel.from_gpt(policy, seed=seed)
    trainer = RewardTrainer(rm, tok, prefs, val_data=val, max_steps=steps, seed=seed, **p)
    before = trainer.evaluate()
    log(f"reward: {len(prefs)} ranked prompts ({sum(len(r['responses']) for r in prefs)} "
        f"replies), {steps} steps")
    t0 = time.perf_counter()
    trainer.train(steps, progress=progress)
    train_s = time.perf_counter() - t0
    if n_norm > 0:  # an SFT reply scores 0 on average
        norm = sample(policy, tok, [q["prompt"] for q in world.rl_prompts("train", n=n_norm)],
                      max_new, temperature=temp, seed=seed + 2)
        rm.normalize(tok, norm)
    after = trainer.evaluate()
    informative = [r for r in prefs if len(set(r.get("scores", [0, 1]))) > 1]  # not all tied
    train_acc = trainer.evaluate(informative[: max(1, len(val))])
    chosen, rejected = _best_worst_rewards(rm, tok, val)
    n_tok = [sum(len(x) for x in g) for g in trainer.data]
    per_step = float(np.mean(n_tok)) * trainer.batches.batch_size
    step_s = _median(trainer.history, "seconds")
    summary = {
        "heldout_pairwise_accuracy": after["accuracy"],
        "heldout_pairwise_accuracy_before": before["accuracy"],
        "train_pairwise_accuracy": train_acc["accuracy"],
        "heldout_loss": after["loss"], "heldout_margin": after["margin"],
        "prompts": len(prefs), "val_prompts": len(val), "k": k,
        "pairs": int(sum(len(r["responses"]) * (len(r["responses"]) - 1) // 2 for r in prefs)),
        "steps": trainer.t, "data_seconds": data_s, "train_seconds": train_s,
        "tokens_per_s": per_step / step_s if step_s > 0 else float("nan"),
    }
    os.makedirs(out, exist_ok=True)
    write_jsonl(os.path.join(out, "preferences.jsonl"), prefs)
    write_jsonl(os.path.join(out, "preferences_heldout.jsonl"), val)
    _plot(out, "accuracy.png", lambda: _rm_curves(trainer.history), notes)
    _plot(out, "reward_histogram.png", lambda: _rm_hist(chosen, rejected), notes)
    summary["seconds"] = time.perf_counter() - t_start
    st = Stage("reward", os.path.abspath(out), summary, rm, tok, trainer, s, sft.dir, seed,
               sft.preset, {"world": world, "notes": notes, "sft": sft, "preferences": prefs,
                            "val_preferences": val, "labeler": labeler})
    save_stage(st)
    log(f"reward: held-out pairwise accuracy {summary['heldout_pairwise_accuracy_before']:.2f}"
        f" -> {summary['heldout_pairwise_accuracy']:.2f} ({summary['seconds']:.0f} s)")
    return st


def read_jsonl(path: str) -> list[dict]:
    """The objects of a JSON-lines file (one per non-empty line)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _best_worst_rewards(rm, tok, records) -> tuple[np.ndarray, np.ndarray]:
    """Reward-model scores of the best and the worst reply of each ranked record."""
    if not records:
        return np.zeros(0), np.zeros(0)
    prompts = [r["prompt"] for r in records]
    best = rm.score_texts(tok, prompts, [r["responses"][0] for r in records],
                          [r["ended"][0] for r in records])
    worst = rm.score_texts(tok, prompts, [r["responses"][-1] for r in records],
                           [r["ended"][-1] for r in records])
    return best, worst


def _rm_curves(history):
    from . import plot

    keys = [k for k in ("accuracy", "val_accuracy") if any(k in r for r in history)]
    return plot.curves(history, keys, title="reward model: pairwise accuracy")


def _rm_hist(chosen, rejected):
    from . import plot

    return plot.reward_histogram(chosen, rejected,
                                 title="held-out rankings: best vs worst reply")


# ---- stage 4: RLHF with PPO -------------------------------------------------------------------


def ppo_stage(prev, out: str, sft=None, fast: bool = False, settings: dict | None = None,
              seed: int | None = None, world: TinyWorld | None = None,
              progress: bool = True) -> Stage:
    """Optimise the SFT policy against the reward model with PPO (KL-penalised to the SFT
    model), and measure it before and after on held-out prompts.

    ``prev``: the reward ``Stage`` or its folder; ``sft``: the SFT stage or folder (default:
    the reward stage's parent). Headline figures: gold and reward-model scores before/after,
    KL to the SFT model, behaviour rates before/after."""
    from .stages.ppo import PPOTrainer, evaluate_policy

    rst = _as_stage(prev, "reward")
    if sft is None:
        sft = rst.extra.get("sft") or rst.parent
        if sft is None:
            raise ValueError(f"{rst.dir}: the reward stage does not name its SFT folder; pass "
                             "sft=")
    sst = _as_stage(sft, "sft")
    s, seed, world = _settings_seed_world(rst, fast, settings, seed, world)
    log, notes = _Log(progress), []
    t_start = time.perf_counter()
    labeler = rst.extra.get("labeler") or GoldLabeler(world)
    tok, rm, ref = rst.tok, rst.model, sst.model
    p = dict(s["ppo"])
    steps, n_prompts = int(p.pop("steps")), int(p.pop("prompts"))
    max_new = int(p.get("max_new_tokens", 32))
    held = world.rl_prompts("heldout", n=s["eval"]["rl_prompts"])

    def measure(policy) -> dict:
        greedy = evaluate_policy(policy, tok, held, labeler=labeler, reward_model=rm,
                                 max_new_tokens=max_new, temperature=0.0, seed=seed)
        return greedy

    log(f"ppo: measuring the SFT policy on {len(held)} held-out prompts")
    before = measure(ref)
    policy = ref.copy()
    prompts = world.rl_prompts("train", n=n_prompts)
    trainer = PPOTrainer(policy, ref, rm, tok, prompts,
                         labeler=labeler, seed=seed, **p)
    log(f"ppo: {steps} steps of {trainer.batches.batch_size} rollouts")
    t0 = time.perf_counter()
    trainer.train(steps, progress=progress)
    train_s = time.perf_counter() - t0
    after = measure(policy)
    # sampled at the training temperature too: greedy replies show the likeliest behaviour,
    # sampled ones how reliably the model shows it (SFT may refuse 100% greedily, 80% sampled)
    temp = float(p.get("temperature", 1))
    sampled_before = evaluate_policy(ref, tok, held, labeler=labeler, reward_model=rm,
                                     max_new_tokens=max_new, temperature=temp, seed=seed + 3)
    sampled = evaluate_policy(policy, tok, held, labeler=labeler, reward_model=rm, ref=ref,
                              max_new_tokens=max_new, temperature=temp, seed=seed + 3)
    rollout_tokens = [trainer.batches.batch_size * r.get("val/response_length", 0.0)
                      for r in trainer.history]
    step_s = [r.get("time/rollout", 0.0) + r.get("time/update", 0.0) for r in trainer.history]
    summary = {
        "gold_score_before": before["gold_score"], "gold_score_after": after["gold_score"],
        "rm_score_before": before["rm_score"], "rm_score_after": after["rm_score"],
        "kl": sampled["kl"],
        "behaviour_before": {k: float(before["behaviour"][k]) for k in BEHAVIOURS},
        "behaviour_after": {k: float(after["behaviour"][k]) for k in BEHAVIOURS},
        "sampled_gold_score_before": sampled_before["gold_score"],
        "sampled_gold_score_after": sampled["gold_score"],
        "sampled_behaviour_before": {k: float(sampled_before["behaviour"][k])
                                     for k in BEHAVIOURS},
        "sampled_behaviour_after": {k: float(sampled["behaviour"][k]) for k in BEHAVIOURS},
        "ended_before": before["ended"], "ended_after": after["ended"],
        "steps": trainer.t, "heldout_prompts": len(held), "train_seconds": train_s,
        "tokens_per_s": sum(rollout_tokens) / sum(step_s) if sum(step_s) > 0 else float("nan"),
    }
    n_best = int(s["eval"].get("best_of_n", 0))
    if n_best > 1:
        from .stages.dpo import best_of_n

        best = best_of_n(ref, rm, tok, held, n=n_best, max_new_tokens=max_new,
                         temperature=1.0, seed=seed + 4)
        bo = evaluate_policy(ref, tok, held, labeler=labeler, reward_model=rm, replies=best)
        summary["best_of_n"] = {"n": n_best, "gold_score": bo["gold_score"],
                                "rm_score": bo["rm_score"],
                                "behaviour": {k: float(bo["behaviour"][k]) for k in BEHAVIOURS}}
    d = dict(s.get("dpo", {}))
    dpo_steps = int(d.pop("steps", 0))
    prefs = rst.extra.get("preferences")
    if dpo_steps > 0 and prefs is None and os.path.isfile(os.path.join(rst.dir,
                                                                        "preferences.jsonl")):
        prefs = read_jsonl(os.path.join(rst.dir, "preferences.jsonl"))
    if dpo_steps > 0 and prefs:
        from .stages.dpo import DPOTrainer

        log(f"ppo: DPO for comparison, {dpo_steps} steps on {len(prefs)} ranked prompts")
        dpo_policy = ref.copy()
        dpo = DPOTrainer(dpo_policy, ref, tok, prefs, max_steps=dpo_steps, seed=seed, **d)
        dpo.train(dpo_steps, progress=progress)
        do = evaluate_policy(dpo_policy, tok, held, labeler=labeler, reward_model=rm,
                             max_new_tokens=max_new, temperature=0.0, seed=seed)
        summary["dpo"] = {"steps": dpo.t, "gold_score": do["gold_score"],
                          "rm_score": do["rm_score"],
                          "behaviour": {k: float(do["behaviour"][k]) for k in BEHAVIOURS}}
    os.makedirs(out, exist_ok=True)
    _plot(out, "reward_curves.png", lambda: _ppo_curves(trainer.history), notes)
    o = dict(s["eval"].get("overopt") or {})
    over_steps = int(o.pop("steps", 0))
    if over_steps > 0:  # the same PPO from the SFT model, without the KL leash, for longer
        log(f"ppo: {over_steps} steps with beta={o.get('kl_coef', 0.0)} for the "
            "over-optimisation plot")
        greedy = PPOTrainer(ref.copy(), ref, rm, tok, prompts,
                            labeler=labeler, seed=seed, **{**p, **o})
        greedy.train(over_steps, progress=progress)
        write_jsonl(os.path.join(out, "overopt_metrics.jsonl"), greedy.history)
        summary["overopt"] = _overopt_summary(greedy.history, o.get("kl_coef", 0.0))
        _plot(out, "overoptimization.png", lambda: _overopt(greedy.history), notes)
    summary["seconds"] = time.perf_counter() - t_start
    st = Stage("ppo", os.path.abspath(out), summary, policy, tok, trainer, s, rst.dir, seed,
               rst.preset, {"world": world, "notes": notes, "ref": ref, "reward_model": rm,
                            "heldout": held, "labeler": labeler})
    save_stage(st)
    log(f"ppo: gold score {summary['gold_score_before']:+.3f} -> "
        f"{summary['gold_score_after']:+.3f}, RM score {summary['rm_score_before']:+.3f} -> "
        f"{summary['rm_score_after']:+.3f}, KL {summary['kl']:.3f} ({summary['seconds']:.0f} s)")
    return st


def _ppo_curves(history):
    from . import plot

    return plot.reward_curves(history, title="PPO: reward curves")


def _overopt(history):
    from . import plot

    return plot.overoptimization(history)


def _overopt_summary(history, beta: float, window: int = 10) -> dict:
    """Reward-model and gold scores of the KL-free run: at the gold score's best window of
    steps and over the last window (moving means, the rollouts are noisy)."""
    def smooth(key):
        x = np.asarray([r.get(key, np.nan) for r in history], dtype=float)
        w = min(window, len(x))
        return np.convolve(x, np.ones(w) / w, mode="valid")

    gold, rm, kl = smooth("gold/score"), smooth("objective/rm_score"), smooth("objective/kl")
    best = int(np.nanargmax(gold))
    return {"beta": beta, "steps": len(history), "gold_best": gold[best], "rm_at_gold_best":
            rm[best], "kl_at_gold_best": kl[best], "gold_last": gold[-1], "rm_last": rm[-1],
            "kl_last": kl[-1]}


# ---- load a stage, or build it (and the stages before it) -----------------------------------


def ensure_stage(name: str, runs: str, fast: bool = False, settings: dict | None = None,
                 seed: int = 0, preset: str = "small", progress: bool = True) -> Stage:
    """The stage ``name`` from ``runs/name`` if it is there, else built now -- together with
    any earlier stage that is missing -- with the pipeline's settings. This is how each
    notebook can run on its own: it loads what the previous notebook saved, or rebuilds it."""
    if name not in STAGES:
        raise ValueError(f"ensure_stage: unknown stage {name!r}; expected one of {STAGES}")
    folder = os.path.join(runs, name)
    if os.path.isfile(os.path.join(folder, "stage.json")):
        return load_stage(folder)
    s = settings or settings_for(fast)
    if name == "pretrain":
        return pretrain_stage(folder, preset, fast, s, seed, progress=progress)
    prev = ensure_stage(STAGES[STAGES.index(name) - 1], runs, fast, s, seed, preset, progress)
    if name == "sft":
        return sft_stage(prev, folder, fast, s, progress=progress)
    if name == "reward":
        return reward_stage(prev, folder, fast, s, progress=progress)
    return ppo_stage(prev, folder, None, fast, s, progress=progress)


# ---- the whole pipeline -----------------------------------------------------------------------


def sample_table(stages: dict, world: TinyWorld, n_per_category: int = 2,
                 max_new_tokens: int = 32) -> list[dict]:
    """Greedy answers of the base, SFT and PPO models to a few held-out prompts of every
    category: a base model continues the text, SFT answers, PPO (ideally) behaves."""
    held = world.rl_prompts("heldout")
    picked: list[dict] = []
    for cat in ("factual", "arithmetic", "improper", "contested", "out_of_scope"):
        picked += [q for q in held if q["category"] == cat][:n_per_category]
    prompts = [q["prompt"] for q in picked]
    tok = stages["sft"].tok
    rows = ev.side_by_side(stages["pretrain"].model, stages["sft"].model, tok, prompts,
                           max_new_tokens)
    out = [{"category": q["category"], "prompt": p, "base": b, "sft": a}
           for q, (p, b, a) in zip(picked, rows, strict=True)]
    if "ppo" in stages:
        ppo = sample(stages["ppo"].model, tok, prompts, max_new_tokens, temperature=0)
        for r, s in zip(out, ppo, strict=True):
            r["ppo"] = s.text
    return out


def run_pipeline(preset: str = "small", out: str = "runs/small", fast: bool = False,
                 seed: int = 0, threads: int | None = None, progress: bool = True,
                 settings: dict | None = None, resume: bool = False) -> dict:
    """Run pretraining, SFT, reward modeling and PPO on TinyWorld; write ``out/report.json``
    and ``out/report.md``. Returns the report (a dict).

    ``fast``: the ``FAST`` budgets (a smoke run); ``settings``: a full settings dict (see
    ``settings_for``) replacing ``FULL``/``FAST``; ``threads``: threads of the C kernels.
    ``resume``: reuse the stages already finished in ``out`` (an interrupted run goes on from
    the first missing stage; their figures, times included, come from their ``stage.json``)."""
    from . import __version__, get_matmul_precision, get_num_threads, set_num_threads

    if preset not in GPTConfig.presets():
        raise ValueError(f"preset: unknown {preset!r}; expected one of {GPTConfig.presets()}")
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"threads: expected >= 1, got {threads}")
        set_num_threads(int(threads))
    s = settings or settings_for(fast)
    log = _Log(progress)
    t_start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    world = _world(seed, s)
    stages: dict[str, Stage] = {}
    resumed: list[str] = []

    def reuse(name: str) -> bool:
        folder = os.path.join(out, name)
        if not (resume and os.path.isfile(os.path.join(folder, "stage.json"))):
            return False
        st = load_stage(folder)
        upto = ["world", "tokenizer", *STAGES[: STAGES.index(name) + 1]] + \
            (["dpo"] if name == "ppo" else [])

        def key(d):
            e = {k: v for k, v in d.get("eval", {}).items() if k != "samples"}
            return [d.get(k) for k in upto] + [e]

        if st.seed != seed or st.preset != preset or key(st.settings) != key(_finite(s)):
            raise ValueError(f"resume: {folder} was made with other settings, seed or preset; "
                             "remove it or choose another --out")
        stages[name] = st
        resumed.append(name)
        log(f"{name}: reusing {folder}")
        return True

    log(f"[1/4] pretraining ({preset}, {'fast' if fast else 'full'} settings, "
        f"{get_num_threads()} threads, {get_matmul_precision()} matrix products)")
    if not reuse("pretrain"):
        stages["pretrain"] = pretrain_stage(os.path.join(out, "pretrain"), preset, fast, s, seed,
                                            world, progress)
    log("[2/4] supervised fine-tuning")
    if not reuse("sft"):
        stages["sft"] = sft_stage(stages["pretrain"], os.path.join(out, "sft"), fast, s, seed,
                                  world, progress)
    log("[3/4] reward modeling")
    if not reuse("reward"):
        stages["reward"] = reward_stage(stages["sft"], os.path.join(out, "reward"), fast, s,
                                        seed, world, progress)
    log("[4/4] RLHF with PPO")
    if not reuse("ppo"):
        stages["ppo"] = ppo_stage(stages["reward"], os.path.join(out, "ppo"), stages["sft"],
                                  fast, s, seed, world, progress)
    samples = sample_table(stages, world, n_per_category=s["eval"]["samples"])
    notes = sorted({n for st in stages.values() for n in st.extra.get("notes", [])})
    report = {
        "gptlab_version": __version__, "preset": preset, "fast": bool(fast), "seed": seed,
        "threads": get_num_threads(), "matmul_precision": get_matmul_precision(),
        "config": stages["pretrain"].model.config.to_dict(),
        "pretrain": stages["pretrain"].summary, "sft": stages["sft"].summary,
        "reward_model": stages["reward"].summary, "ppo": stages["ppo"].summary,
        "total_seconds": time.perf_counter() - t_start,
        # with resume, this run's time plus the recorded time of the reused stages
        "resumed": resumed,
        "samples": samples, "settings": s, "notes": notes,
        "paths": {name: os.path.relpath(st.dir, out) for name, st in stages.items()},
    }
    report["total_seconds"] += sum(stages[n].summary.get("seconds", 0.0) for n in resumed)
    report = _finite(report)
    save_json(os.path.join(out, "report.json"), report)
    with atomic_write(os.path.join(out, "report.md"), "w") as f:
        f.write(report_markdown(report))
    log(f"done in {report['total_seconds']:.0f} s")
    return report


# ---- the report card --------------------------------------------------------------------------


def _fmt(v, spec: str = ".3f") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def _cell(text: str, limit: int = 80) -> str:
    text = (text or "").replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def report_markdown(r: dict) -> str:
    """The report card as Markdown: one table per stage, then samples side by side."""
    pre, sft, rm, ppo = r["pretrain"], r["sft"], r["reward_model"], r["ppo"]
    L = [f"# gptlab report card ({r['preset']}, {'fast' if r['fast'] else 'full'} settings)",
         "",
         f"gptlab {r['gptlab_version']}, seed {r['seed']}, {r['threads']} threads, "
         f"{r.get('matmul_precision', 'float32')} matrix products, model "
         f"{_cfg(r['config'])}, {pre.get('params', 0) / 1e6:.2f}M parameters; "
         f"total {r['total_seconds'] / 60:.1f} min.", ""]
    if r.get("fast"):
        L += ["*Fast settings: tiny budgets for a smoke test; the numbers are not meaningful.*",
              ""]
    L += ["| stage | measure | value |", "|---|---|---|",
          f"| 1. pretraining | validation loss (nats/token) | {_fmt(pre['val_loss'])} |",
          f"| | cloze accuracy (world knowledge) | {_fmt(pre['cloze_accuracy'], '.1%')} |",
          f"| | few-shot accuracy (3 examples in context) | "
          f"{_fmt(pre['fewshot_accuracy'], '.1%')} |",
          f"| | zero-shot accuracy (same queries, no examples) | "
          f"{_fmt(pre['zeroshot_accuracy'], '.1%')} |",
          f"| | few-shot vs zero-shot on facts met only in prose (transfer) | "
          f"{_fmt(pre.get('fewshot_transfer_accuracy'), '.1%')} vs "
          f"{_fmt(pre.get('zeroshot_transfer_accuracy'), '.1%')} |",
          f"| | steps / tokens | {pre['steps']} / {pre['tokens']:,} |",
          f"| | wall time: training / whole stage (tokenizer, probes) | "
          f"{_fmt(pre.get('train_seconds'), '.0f')} s / {_fmt(pre['seconds'], '.0f')} s |",
          f"| | training tokens per s | {_fmt(pre['tokens_per_s'], ',.0f')} |",
          f"| 2. SFT | format adherence (reply ends with <\\|end\\|>), base -> SFT | "
          f"{_fmt(sft['base_format_adherence'], '.1%')} -> "
          f"{_fmt(sft['format_adherence'], '.1%')} |",
          f"| | held-out question accuracy, base -> SFT | "
          f"{_fmt(sft['base_heldout_accuracy'], '.1%')} -> "
          f"{_fmt(sft['heldout_accuracy'], '.1%')} |",
          f"| | wall time: training / whole stage (probes) | "
          f"{_fmt(sft.get('train_seconds'), '.0f')} s / {_fmt(sft['seconds'], '.0f')} s |",
          f"| | training tokens per s | {_fmt(sft['tokens_per_s'], ',.0f')} |",
          f"| 3. reward model | held-out pairwise accuracy, before -> after training | "
          f"{_fmt(rm['heldout_pairwise_accuracy_before'], '.1%')} -> "
          f"{_fmt(rm['heldout_pairwise_accuracy'], '.1%')} |",
          f"| | training pairwise accuracy | {_fmt(rm['train_pairwise_accuracy'], '.1%')} |",
          f"| | ranked prompts (K={rm['k']}) / pairs | {rm['prompts']} / {rm['pairs']} |",
          f"| | wall time: sampling + ranking / training / whole stage | "
          f"{_fmt(rm.get('data_seconds'), '.0f')} s / {_fmt(rm.get('train_seconds'), '.0f')} s"
          f" / {_fmt(rm['seconds'], '.0f')} s |",
          f"| | tokens scored per s in training | {_fmt(rm['tokens_per_s'], ',.0f')} |",
          f"| 4. PPO | gold score, SFT -> PPO | {_fmt(ppo['gold_score_before'], '+.3f')} -> "
          f"{_fmt(ppo['gold_score_after'], '+.3f')} |",
          f"| | reward-model score, SFT -> PPO | {_fmt(ppo['rm_score_before'], '+.3f')} -> "
          f"{_fmt(ppo['rm_score_after'], '+.3f')} |",
          f"| | KL(PPO policy \\|\\| SFT) per reply | {_fmt(ppo['kl'])} |"]
    names = {"refuse_improper": "refuses improper requests", "impartial": "impartial on "
             "contested questions", "decline_out_of_scope": "declines past the cut-off"}
    for k, name in names.items():
        L.append(f"| | {name}, SFT -> PPO | {_fmt(ppo['behaviour_before'][k], '.0%')} -> "
                 f"{_fmt(ppo['behaviour_after'][k], '.0%')} |")
    if "sampled_behaviour_before" in ppo:
        sb, sa = ppo["sampled_behaviour_before"], ppo["sampled_behaviour_after"]
        L.append(f"| | sampled at temperature 1: gold score / refuses / impartial / declines, "
                 f"SFT -> PPO | {_fmt(ppo['sampled_gold_score_before'], '+.3f')} / "
                 + " / ".join(f"{_fmt(sb[k], '.0%')}" for k in names)
                 + f" -> {_fmt(ppo['sampled_gold_score_after'], '+.3f')} / "
                 + " / ".join(f"{_fmt(sa[k], '.0%')}" for k in names) + " |")
    if "best_of_n" in ppo:
        b = ppo["best_of_n"]
        L.append(f"| | best-of-{b['n']} sampling from SFT: gold score | "
                 f"{_fmt(b['gold_score'], '+.3f')} |")
    if "dpo" in ppo:
        L.append(f"| | DPO ({ppo['dpo']['steps']} steps) on the RM's preference data: gold "
                 f"score | {_fmt(ppo['dpo']['gold_score'], '+.3f')} |")
    if "overopt" in ppo:
        o = ppo["overopt"]
        L.append(f"| | over-optimisation, beta={o['beta']:g} for {o['steps']} steps: gold / RM "
                 f"score at the gold peak (KL {_fmt(o['kl_at_gold_best'], '.1f')}) -> at the "
                 f"end (KL {_fmt(o['kl_last'], '.1f')}) | {_fmt(o['gold_best'], '+.2f')} / "
                 f"{_fmt(o['rm_at_gold_best'], '+.2f')} -> {_fmt(o['gold_last'], '+.2f')} / "
                 f"{_fmt(o['rm_last'], '+.2f')} |")
    L.append(f"| | wall time: PPO training / whole stage (with evaluations and comparisons) "
             f"| {_fmt(ppo.get('train_seconds'), '.0f')} s / {_fmt(ppo['seconds'], '.0f')} s |")
    L.append(f"| | reply tokens sampled per s | {_fmt(ppo['tokens_per_s'], ',.0f')} |")
    L += ["", "Scores: the gold labeler's score in [-1, 1] of greedy replies to held-out "
          "prompts; behaviour rates are over the held-out prompts of each category.", ""]
    if r.get("samples"):
        L += ["## Samples (greedy, held-out prompts)", "",
              "A base model continues the text; the SFT model answers; PPO should answer and "
              "behave.", "", "| category | prompt | base | SFT | PPO |", "|---|---|---|---|---|"]
        for s in r["samples"]:
            L.append(f"| {s['category']} | {_cell(s['prompt'])} | {_cell(s['base'])} | "
                     f"{_cell(s['sft'])} | {_cell(s.get('ppo', ''))} |")
        L.append("")
    L += ["## Files", ""]
    for name, path in r.get("paths", {}).items():
        L.append(f"- `{path}/`: {name} checkpoint, `metrics.jsonl`, plots")
    for n in r.get("notes", []):
        L.append(f"- note: {n}")
    return "\n".join(L) + "\n"


def _cfg(c: dict) -> str:
    return (f"L{c['n_layer']} H{c['n_head']} C{c['n_embd']} T{c['block_size']} "
            f"V{c['vocab_size']}")


def check_report(report: dict) -> list[str]:
    """The documented keys that are missing or not finite numbers (empty when all is well)."""
    bad = []
    for section, keys in REPORT_KEYS.items():
        for k in keys:
            v = report.get(section, {}).get(k)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                bad.append(f"{section}.{k}")
    for side in ("behaviour_before", "behaviour_after"):
        d = report.get("ppo", {}).get(side, {})
        for k in BEHAVIOURS:
            v = d.get(k) if isinstance(d, dict) else None
            if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                bad.append(f"ppo.{side}.{k}")
    return bad


__all__ = ["FULL", "FAST", "Stage", "settings_for", "load_stage", "save_stage", "ensure_stage",
           "pretrain_stage", "sft_stage", "reward_stage", "ppo_stage", "run_pipeline",
           "report_markdown", "check_report", "sample_table", "REPORT_KEYS"]

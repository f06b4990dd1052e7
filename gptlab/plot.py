"""Plots for every stage: training curves, PPO's reward curves, the loss mask, the ranking.

Every function returns the matplotlib ``Figure`` (save it with ``fig.savefig("x.png")``); in a
notebook it is drawn below the cell. matplotlib is imported only when a plot is asked for,
so the rest of gptlab works without it (``pip install "gptlab[notebooks]"`` installs it).

Training curves are noisy: one batch is a small sample. ``smooth`` draws the raw values
faintly and an exponential moving average on top, the way TensorBoard does: ``smooth=0.9``
averages over roughly the last ten steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# colours of the seed's reward-model picture: prompt (blue), completion (yellow), reward (green)
PROMPT_COLOUR, COMPLETION_COLOUR, REWARD_COLOUR = "#9ec5fe", "#ffe08a", "#8fd19e"
MASKED_COLOUR = "#e9ecef"


def _pyplot():
    """Import pyplot lazily, with a message that says how to get it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError('gptlab.plot needs matplotlib: pip install "gptlab[notebooks]" '
                          "(or pip install matplotlib)") from None
    return plt


def ema(values: Sequence[float], smooth: float) -> np.ndarray:
    """Exponential moving average with bias correction (TensorBoard's smoothing):
    ``s_t = smooth * s_{t-1} + (1 - smooth) * x_t``, divided by ``1 - smooth**t`` so the
    first points are not pulled toward zero. NaN values are skipped (the average carries on).
    """
    if not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth: expected 0 <= smooth < 1, got {smooth}")
    out = np.full(len(values), np.nan)
    s, w = 0.0, 0.0
    for i, x in enumerate(values):
        if x is None or not math.isfinite(x):
            continue
        s = smooth * s + (1.0 - smooth) * x
        w = smooth * w + (1.0 - smooth)
        out[i] = s / w
    return out


def _series(history: Sequence[dict], key: str, x: str = "step") -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of the rows of ``history`` that hold a finite ``key``."""
    xs, ys = [], []
    for i, row in enumerate(history):
        v = row.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            xs.append(row.get(x, i + 1))
            ys.append(float(v))
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)


def _label(key: str) -> str:
    return key.replace("_", " ").replace("/", ": ")


def _plot_key(ax, history, key, smooth, colour=None, label=None):
    xs, ys = _series(history, key)
    if len(xs) == 0:
        return None
    label = label or _label(key)
    if smooth and len(xs) > 3:
        (line,) = ax.plot(xs, ys, alpha=0.25, color=colour, linewidth=1)
        ax.plot(xs, ema(ys, smooth), color=line.get_color(), linewidth=2, label=label)
    else:
        ax.plot(xs, ys, color=colour, linewidth=2, marker="o" if len(xs) < 30 else None,
                markersize=3, label=label)
    return xs, ys


def curves(history: Sequence[dict], keys: str | Sequence[str] = ("loss",), smooth: float = 0.6,
           title: str | None = None, separate: bool = False, logy: bool = False):
    """Plot metrics of a trainer's ``history`` (one dict per step) against the step.

    keys: one metric name or a list; keys logged only every few steps (``val_loss``) are
    drawn at the steps that have them. ``separate=True`` gives each key its own panel (for
    metrics on different scales). ``smooth``: exponential smoothing in [0, 1) (0: raw)."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    keys = [keys] if isinstance(keys, str) else list(keys)
    if not keys:
        raise ValueError("keys: expected at least one metric name")
    missing = [k for k in keys if not _series(history, k)[0].size]
    if len(missing) == len(keys):
        have = sorted({k for row in history for k in row})
        raise ValueError(f"curves: none of {keys} in history; it has {have}")
    n = len(keys) if separate else 1
    fig, axes = plt.subplots(1, n, figsize=(min(5.0 * n, 15), 3.6), squeeze=False)
    for i, key in enumerate(keys):
        ax = axes[0, i if separate else 0]
        _plot_key(ax, history, key, smooth)
        if separate:
            ax.set_title(_label(key))
        ax.set_xlabel("optimizer step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if logy:
            ax.set_yscale("log")
    if not separate:
        axes[0, 0].set_ylabel(", ".join(_label(k) for k in keys if k not in missing))
        axes[0, 0].legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def compare_curves(runs: dict[str, Sequence[dict]], key: str = "val_loss", x: str = "step",
                   smooth: float = 0.0, title: str | None = None, xlabel: str | None = None):
    """One metric of several runs on one plot: ``runs`` maps a label to a history. ``x`` is
    the history field on the horizontal axis (e.g. ``"tokens"`` or ``"flops"``)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, hist in runs.items():
        xs, ys = _series(hist, key, x)
        if not len(xs):
            continue
        ys_plot = ema(ys, smooth) if smooth else ys
        ax.plot(xs, ys_plot, linewidth=2, marker="o" if len(xs) < 30 else None, markersize=3,
                label=label)
    ax.set_xlabel(xlabel or _label(x))
    ax.set_ylabel(_label(key))
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


# PPO metrics -> panel title (names as in Hugging Face TRL's PPOTrainer); a panel draws all
# its keys, or with first=True only the first one the history has
REWARD_PANELS = (
    (("objective/rm_score", "objective/scores"), "reward-model score", False),
    (("gold/score",), "gold score (the labeler)", False),
    (("objective/kl",), "KL(policy || reference) per reply", False),
    (("policy/entropy_avg", "objective/entropy"), "entropy per token", True),
    (("policy/clipfrac_avg",), "clip fraction", False),
    (("gold/refuse_improper", "gold/impartial", "gold/decline_out_of_scope"), "behaviours", False),
)


def reward_curves(ppo_history: Sequence[dict], smooth: float = 0.6, title: str | None = None):
    """The dashboard of an RLHF run, one panel per quantity, against the PPO step:

    - reward-model score: what PPO maximises (it should climb);
    - gold score: what we really want (the labeler's verdict); if it stalls or falls while
      the reward-model score climbs, the policy is exploiting the reward model;
    - KL to the reference: how far the policy moved from the SFT model (the price paid);
    - entropy: how random the replies are (a collapse to one reply shows here);
    - clip fraction: share of tokens whose probability ratio hit PPO's clip (updates too big
      when it is large);
    - behaviours: rates of refusing improper requests, impartial answers, declining.
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    panels = []
    for keys, name, first in REWARD_PANELS:
        present = [k for k in keys if _series(ppo_history, k)[0].size]
        if present:
            panels.append((present[:1] if first else present, name))
    if not panels:
        raise ValueError("reward_curves: history has none of the PPO metrics "
                         "(objective/scores, gold/score, objective/kl, ...)")
    cols = 3 if len(panels) > 4 else len(panels)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.2 * rows), squeeze=False)
    for ax, (keys, name) in zip(axes.flat, panels, strict=False):
        for k in keys:
            short = k.split("/")[-1].replace("_", " ")
            _plot_key(ax, ppo_history, k, smooth, label=short)
        ax.set_title(name)
        ax.set_xlabel("PPO step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def overoptimization(ppo_history: Sequence[dict], bins: int = 10,
                     rm_key: str = "objective/rm_score", gold_key: str = "gold/score"):
    """Reward-model score and gold score against the KL travelled from the reference.

    Gao et al. (2022) found that as a policy moves away from its start (larger KL), the score
    of the learned reward model keeps rising while the true score rises, peaks and falls: the
    policy learns the reward model's blind spots. Points are PPO steps; the lines join the
    means of ``bins`` groups of steps of similar KL; the dashed line marks the KL where the
    gold score peaked. The two scores have different scales (the reward model's is
    arbitrary, the gold one lies in [-1, 1]), so each has its own axis: reward model on the
    left, gold on the right."""
    plt = _pyplot()
    rows = [r for r in ppo_history if isinstance(r.get("objective/kl"), float)
            and math.isfinite(r["objective/kl"])]
    if not rows:
        raise ValueError("overoptimization: history has no 'objective/kl'")
    kl = np.asarray([r["objective/kl"] for r in rows])
    order = np.argsort(kl, kind="stable")
    groups = [g for g in np.array_split(order, min(bins, len(order))) if len(g)]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    axes = {rm_key: ax, gold_key: ax.twinx()}
    lines = []
    for key, name, colour in ((rm_key, "reward-model score (optimised, left)", "tab:blue"),
                              (gold_key, "gold score (true, right)", "tab:orange")):
        ys = np.asarray([r.get(key, np.nan) for r in rows], dtype=float)
        if not np.isfinite(ys).any():
            continue
        a = axes[key]
        a.scatter(kl, ys, color=colour, alpha=0.25, s=10)
        gx = np.asarray([kl[g].mean() for g in groups])
        gy = np.asarray([np.nanmean(ys[g]) if np.isfinite(ys[g]).any() else np.nan
                         for g in groups])
        lines += a.plot(gx, gy, color=colour, linewidth=2, marker="o", markersize=4,
                        label=name)
        a.set_ylabel(name.split(" (")[0], color=colour)
        if key == gold_key and np.isfinite(gy).any():
            a.axvline(gx[int(np.nanargmax(gy))], color=colour, linestyle="--", alpha=0.6)
    ax.set_xlabel("KL(policy || reference) per reply, nats")
    ax.set_title("over-optimisation: proxy reward vs true reward")
    ax.grid(alpha=0.3)
    if lines:
        ax.legend(lines, [ln.get_label() for ln in lines], loc="lower right")
    fig.tight_layout()
    return fig


def _token_strip(pieces: Sequence[str], colours: Sequence[str], title: str | None = None,
                 legend: Sequence[tuple[str, str]] = (), width: int = 118):
    """Draw text pieces as coloured boxes in a monospace font, wrapped into lines of about
    ``width`` characters."""
    plt = _pyplot()
    from matplotlib.patches import Patch

    shown = [p.replace("\n", "\u21b5") if p else "\u2205" for p in pieces]
    lines, line, used = [], [], 0
    for i, p in enumerate(shown):
        n = len(p) + 1.5  # a box's padding takes about one and a half characters
        if line and used + n > width:
            lines.append(line)
            line, used = [], 0
        line.append((i, used, p))
        used += n
    if line:
        lines.append(line)
    fig_w, font = 11.0, 10
    char_w = 0.602 * font / (0.98 * fig_w * 72)  # DejaVu Sans Mono: 0.602 em per character
    head, foot = (0.45 if title else 0.1), (0.5 if legend else 0.1)
    fig_h = 0.42 * len(lines) + head + foot
    fig = plt.figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes([0.01, foot / fig_h, 0.98, 1 - (head + foot) / fig_h])
    ax.set_xlim(0, 1)
    ax.set_ylim(len(lines), 0)
    ax.axis("off")
    for r, items in enumerate(lines):
        for i, col, p in items:
            ax.text(col * char_w, r + 0.5, p, family="monospace", fontsize=font, va="center",
                    ha="left", bbox=dict(boxstyle="round,pad=0.2", facecolor=colours[i],
                                         edgecolor="#6c757d", linewidth=0.5))
    if legend:
        fig.legend(handles=[Patch(facecolor=c, edgecolor="#6c757d", label=t)
                            for t, c in legend],
                   loc="lower center", ncol=len(legend), frameon=False)
    if title:
        fig.suptitle(title, x=0.01, y=1 - 0.1 / fig_h, ha="left", va="top", fontsize=11)
    return fig


def loss_mask(tok, ids: Sequence[int], mask: Sequence[int], title: str | None = None):
    """Tokens of one training row, coloured by the loss mask: the tokens whose prediction is
    trained (mask 1: the assistant's reply in SFT) against the ones that only give context
    (mask 0: the user's prompt and the template). ``ids``/``mask`` as returned by
    ``gptlab.chat.render``."""
    ids, mask = list(ids), list(mask)
    if len(ids) != len(mask):
        raise ValueError(f"ids and mask differ in length ({len(ids)} vs {len(mask)})")
    pieces = [tok.decode([int(i)]) for i in ids]
    colours = [COMPLETION_COLOUR if m else MASKED_COLOUR for m in mask]
    return _token_strip(pieces, colours, title or "loss mask: only the reply is trained",
                        legend=[("context (mask 0, no loss)", MASKED_COLOUR),
                                ("trained (mask 1, loss)", COMPLETION_COLOUR)])


def reward_tokens(tok, prompt_ids: Sequence[int], reply_ids: Sequence[int], reward: float,
                  title: str | None = None):
    """The seed's reward-model picture on a real example: prompt tokens (blue), completion
    tokens (yellow), and the reward (green), read from the hidden state of the last token."""
    pieces = [tok.decode([int(i)]) for i in list(prompt_ids) + list(reply_ids)]
    colours = [PROMPT_COLOUR] * len(prompt_ids) + [COMPLETION_COLOUR] * len(reply_ids)
    pieces.append(f"reward = {reward:+.3f}")
    colours.append(REWARD_COLOUR)
    return _token_strip(pieces, colours, title or "reward model: one number per completion",
                        legend=[("prompt tokens", PROMPT_COLOUR),
                                ("completion tokens", COMPLETION_COLOUR),
                                ("reward read at the last token", REWARD_COLOUR)])


def ranking(responses: Sequence[str], rewards: Sequence[float] | None = None,
            scores: Sequence[float] | None = None, prompt: str | None = None,
            max_chars: int = 52):
    """A K-way ranking and the C(K,2) pairs the ranking loss is made of.

    ``responses`` are listed best first (rank 1 on top). Each arc joins a pair (better,
    worse); with ``rewards`` (the reward model's scores) the arc is labelled with its loss
    ``-log sigmoid(r_better - r_worse)`` and drawn green when the model already agrees with
    the ranking, red when it does not. ``scores``: the labeler's scores, shown beside."""
    plt = _pyplot()
    from matplotlib.patches import Arc

    K = len(responses)
    if K < 2:
        raise ValueError("ranking: expected at least 2 responses")
    if rewards is not None and len(rewards) != K:
        raise ValueError(f"rewards: expected {K} values, got {len(rewards)}")
    fig, ax = plt.subplots(figsize=(11, 0.75 * K + 1.3))
    x_arc, step = 1.02, 0.09
    ax.set_xlim(0, x_arc + step * (K - 1) + 0.16)
    ax.set_ylim(K - 0.5, -0.6)
    ax.axis("off")
    for i, r in enumerate(responses):
        text = r if len(r) <= max_chars else r[: max_chars - 1] + "\u2026"
        extra = []
        if scores is not None:
            extra.append(f"gold {scores[i]:+.2f}")
        if rewards is not None:
            extra.append(f"r = {rewards[i]:+.2f}")
        ax.text(0.0, i, f"#{i + 1}  {text}", family="monospace", fontsize=9, va="center",
                bbox=dict(boxstyle="round,pad=0.3", facecolor=COMPLETION_COLOUR,
                          edgecolor="#6c757d", linewidth=0.5))
        if extra:
            ax.text(0.80, i, "  ".join(extra), fontsize=9, va="center", color="#343a40")
    n_pairs, total = 0, 0.0
    for i in range(K):
        for j in range(i + 1, K):
            n_pairs += 1
            colour, label = "#6c757d", None
            if rewards is not None:
                d = float(rewards[i]) - float(rewards[j])
                loss = float(np.logaddexp(0.0, -d))  # -log sigmoid(d)
                total += loss
                colour = "tab:green" if d > 0 else "tab:red"
                label = f"{loss:.2f}"
            rx = step * (j - i)
            ax.add_patch(Arc((x_arc, (i + j) / 2), 2 * rx, j - i, theta1=-90, theta2=90,
                             color=colour, linewidth=1.6))
            if label:
                ax.text(x_arc + rx + 0.005, (i + j) / 2, label, fontsize=8, color=colour,
                        va="center")
    head = f"{K} ranked replies give C({K},2) = {n_pairs} pairs"
    if rewards is not None:
        head += f"; ranking loss = mean over pairs = {total / n_pairs:.3f}"
        head += " (green: the reward model agrees; number: the pair's loss)"
    ax.set_title((f"prompt: {prompt}\n" if prompt else "") + head, loc="left", fontsize=10)
    fig.tight_layout()
    return fig


def reward_histogram(chosen: Sequence[float], rejected: Sequence[float], bins: int = 30,
                     title: str | None = None):
    """Rewards of the preferred (chosen) and the other (rejected) reply of each pair. A good
    reward model pushes the two apart; the overlap is where it ranks pairs wrongly."""
    plt = _pyplot()
    chosen, rejected = np.asarray(chosen, float), np.asarray(rejected, float)
    if chosen.size == 0 or rejected.size == 0:
        raise ValueError("reward_histogram: expected non-empty chosen and rejected rewards")
    lo = float(min(chosen.min(), rejected.min()))
    hi = float(max(chosen.max(), rejected.max()))
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.hist(chosen, edges, alpha=0.6, color="tab:green",
            label=f"chosen (mean {chosen.mean():+.2f})")
    ax.hist(rejected, edges, alpha=0.6, color="tab:red",
            label=f"rejected (mean {rejected.mean():+.2f})")
    ax.set_xlabel("reward-model score")
    ax.set_ylabel("replies")
    ax.legend()
    ax.grid(alpha=0.3)
    ax.set_title(title or "reward of chosen vs rejected replies")
    fig.tight_layout()
    return fig


def data_mix(stats: dict, reference: dict | None = None, title: str | None = None):
    """Bar chart of a pretraining mix: ``stats`` maps a source to its share (a number, or a
    dict with ``fraction`` as ``TinyWorld.source_stats()`` gives). ``reference``: another mix
    drawn beside it (e.g. GPT-3's: ``{"Common Crawl": 0.60, "WebText2": 0.22, ...}``)."""
    plt = _pyplot()

    def shares(d):
        return {k: float(v["fraction"] if isinstance(v, dict) else v) for k, v in d.items()}

    mixes = [("TinyWorld" if reference else (title or "data mix"), shares(stats))]
    if reference:
        mixes.append(("reference", shares(reference)))
    fig, axes = plt.subplots(1, len(mixes), figsize=(5.5 * len(mixes), 3.6), squeeze=False)
    for ax, (name, mix) in zip(axes[0], mixes, strict=True):
        names = list(mix)
        vals = [100 * mix[k] for k in names]
        bars = ax.bar(names, vals, color="tab:blue", alpha=0.8)
        for b, v in zip(bars, vals, strict=True):
            ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.0f}%", ha="center", va="bottom",
                    fontsize=9)
        ax.set_ylabel("share of the corpus (%)")
        ax.set_title(name)
        ax.tick_params(axis="x", rotation=20)
        ax.set_ylim(0, max(vals) * 1.18)
    if title and reference:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def logprob_shift(labels: Sequence[str], before: Sequence[float], after: Sequence[float],
                  scores: Sequence[float] | None = None, title: str | None = None):
    """Log-probability of a few completions before and after an update: the RL picture.
    Completions with a positive advantage should go up, negative ones down."""
    plt = _pyplot()
    before, after = np.asarray(before, float), np.asarray(after, float)
    x = np.arange(len(labels))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    axes[0].bar(x - 0.2, before, 0.4, label="before", color="#adb5bd")
    axes[0].bar(x + 0.2, after, 0.4, label="after", color="tab:blue")
    axes[0].set_ylabel("log p(completion | prompt)")
    axes[0].legend()
    delta = after - before
    axes[1].bar(x, delta, color=["tab:green" if d > 0 else "tab:red" for d in delta])
    axes[1].axhline(0, color="black", linewidth=0.8)
    axes[1].set_ylabel("change in log-probability")
    for ax in axes:
        names = list(labels)
        if scores is not None:
            names = [f"{n}\n(score {s:+.2f})" for n, s in zip(names, scores, strict=True)]
        ax.set_xticks(x, names)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title or "one policy-gradient update: good completions up, bad ones down")
    fig.tight_layout()
    return fig


def bars(table: dict[str, dict], keys: str | Sequence[str], title: str | None = None,
         ylabel: str | None = None):
    """Bar chart of numbers across the rows of a table ({row name: {key: value}}), e.g. the
    gold score of SFT, best-of-n, PPO and DPO; several ``keys`` give grouped bars (e.g. the
    three behaviour rates, before and after PPO)."""
    plt = _pyplot()
    keys = [keys] if isinstance(keys, str) else list(keys)
    names = [k for k, row in table.items()
             if any(isinstance(row.get(key), (int, float)) for key in keys)]
    if not names:
        raise ValueError(f"bars: no row of the table has {keys}")
    x = np.arange(len(names))
    w = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(max(5.0, (1.2 + 0.5 * len(keys)) * len(names) + 2), 3.8))
    for j, key in enumerate(keys):
        vals = [float(table[n].get(key, np.nan)) for n in names]
        b = ax.bar(x + (j - (len(keys) - 1) / 2) * w, vals, w,
                   label=_label(key) if len(keys) > 1 else None,
                   color=None if len(keys) > 1 else "tab:blue", alpha=0.85)
        for r, v in zip(b, vals, strict=True):
            if math.isfinite(v):
                ax.text(r.get_x() + r.get_width() / 2, v, f"{v:.2f}", ha="center",
                        va="bottom" if v >= 0 else "top", fontsize=8)
    ax.set_xticks(x, names)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel(ylabel or (_label(keys[0]) if len(keys) == 1 else "value"))
    ax.grid(alpha=0.3, axis="y")
    if len(keys) > 1:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


__all__ = ["curves", "compare_curves", "reward_curves", "overoptimization", "loss_mask",
           "reward_tokens", "ranking", "reward_histogram", "data_mix", "logprob_shift", "bars",
           "ema"]

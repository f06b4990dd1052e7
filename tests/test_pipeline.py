"""The one-command pipeline and the CLI: report keys, files, exit codes, no-matplotlib runs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from child import PKG_ROOT, child_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# DESIGN.md's contract for report.json, written out here independently of gptlab.pipeline
DOCUMENTED = {
    "pretrain": ["val_loss", "cloze_accuracy", "fewshot_accuracy", "zeroshot_accuracy",
                 "seconds"],
    "sft": ["format_adherence", "heldout_accuracy", "seconds"],
    "reward_model": ["heldout_pairwise_accuracy", "seconds"],
    "ppo": ["gold_score_before", "gold_score_after", "rm_score_before", "rm_score_after", "kl",
            "seconds"],
}
RATES = ["refuse_improper", "impartial", "decline_out_of_scope"]


def gptlab_cli(*args: str, timeout: float = 60, cwd: str | None = None):
    return subprocess.run([sys.executable, "-m", "gptlab", *args], capture_output=True,
                          text=True, timeout=timeout, env=child_env(), cwd=cwd or PKG_ROOT)


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def test_pipeline_fast_writes_every_documented_key_with_finite_values(tmp_path):
    out = tmp_path / "run"
    r = gptlab_cli("pipeline", "--fast", "--out", str(out), "--threads", "2", "--quiet",
                   timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert str(out / "report.md") in r.stdout  # says where the report is
    report = json.loads((out / "report.json").read_text())
    for section, keys in DOCUMENTED.items():
        for k in keys:
            assert is_number(report[section].get(k)), f"{section}.{k} = {report[section].get(k)}"
    for side in ("behaviour_before", "behaviour_after", "sampled_behaviour_before",
                 "sampled_behaviour_after"):
        for k in RATES:
            v = report["ppo"][side][k]
            assert is_number(v) and 0.0 <= v <= 1.0, f"ppo.{side}.{k} = {v}"
    for section in DOCUMENTED:
        assert is_number(report[section]["tokens_per_s"]) and report[section]["tokens_per_s"] > 0
        assert report[section]["seconds"] > 0
    for acc in ("cloze_accuracy", "fewshot_accuracy", "zeroshot_accuracy"):
        assert 0.0 <= report["pretrain"][acc] <= 1.0
    assert "| 4. PPO |" in (out / "report.md").read_text()
    assert report["matmul_precision"] == "float32"  # the default
    # every stage: a checkpoint, the tokenizer beside it, one metrics line per step
    for stage, ckpt in (("pretrain", "model.safetensors"), ("sft", "model.safetensors"),
                        ("reward", "reward_model.safetensors"), ("ppo", "model.safetensors")):
        folder = out / stage
        assert (folder / ckpt).is_file() and (folder / "tokenizer.json").is_file()
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        steps = json.loads((folder / "stage.json").read_text())["summary"]["steps"]
        assert len(lines) == steps > 0
        assert [json.loads(x)["step"] for x in lines] == list(range(1, steps + 1))
    # the KL-free PPO run of the over-optimisation plot: its metrics and summary
    over = report["ppo"]["overopt"]
    assert over["beta"] == 0.0 and over["steps"] == 2
    assert len((out / "ppo" / "overopt_metrics.jsonl").read_text().splitlines()) == 2
    assert all(is_number(over[k]) for k in ("gold_best", "gold_last", "kl_last"))
    # a stage folder is enough to chat with the model it holds
    r = gptlab_cli("chat", "--from", str(out / "ppo"), "--prompt", "How many legs does a dog "
                   "have?", "--max-new-tokens", "8", timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("How many legs does a dog have?\n-> ")


@pytest.mark.parametrize("argv", [
    [],
    ["bogus"],
    ["pipeline", "--preset", "huge"],
    ["pipeline", "--threads", "0"],
    ["pipeline", "--fast", "--seed", "x"],
    ["sft"],
    ["sft", "--from", "/definitely/not/here"],
    ["ppo", "--from", ROOT],  # a folder, but not a stage folder
    ["chat", "--from", "/definitely/not/here"],
])
def test_usage_errors_exit_2_with_one_line_on_stderr(argv):
    r = gptlab_cli(*argv)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gptlab") and "error:" in lines[0], r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("cmd", [[], ["pipeline"], ["pretrain"], ["sft"], ["reward"], ["ppo"],
                                 ["chat"]])
def test_help_exits_0_for_every_command(cmd):
    r = gptlab_cli(*cmd, "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: gptlab")


def test_precision_option_runs_a_stage_in_bfloat16_or_refuses_clearly(tmp_path):
    r = gptlab_cli("pretrain", "--preset", "tiny", "--fast", "--steps", "3", "--quiet",
                   "--precision", "bfloat16", "--out", str(tmp_path / "pt"))
    import gptlab as gl

    try:
        gl.set_matmul_precision("bfloat16")
    except ValueError:  # no AVX512-BF16: one line, exit 1, nothing written
        assert r.returncode == 1 and "AVX512-BF16" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        return
    finally:
        gl.set_matmul_precision("float32")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "pt" / "model.safetensors").is_file()


def test_runtime_error_exits_1_with_one_line(tmp_path):
    (tmp_path / "stage.json").write_text(json.dumps({"stage": "sft"}))
    (tmp_path / "tokenizer.json").write_text("{ not json")
    r = gptlab_cli("chat", "--from", str(tmp_path), "--prompt", "hi")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gptlab: error:") and "tokenizer" in lines[0]


def tiny_settings():
    from gptlab.pipeline import settings_for

    return settings_for(True, {
        "world": {"corpus_chars": 60_000},
        "tokenizer": {"vocab_size": 400},
        "pretrain": {"steps": 3, "batch_size": 4, "seq_len": 32, "eval_every": 2,
                     "eval_windows": 4},
        "sft": {"steps": 2, "examples": 40, "batch_size": 4},
        "eval": {"cloze": 4, "fewshot": 4, "sft": 4, "rl_prompts": 10, "samples": 1,
                 "best_of_n": 0},
    })


def test_stages_run_without_matplotlib_and_chain_through_folders(tmp_path, monkeypatch):
    from gptlab import pipeline

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    s = tiny_settings()
    pre = pipeline.pretrain_stage(str(tmp_path / "pretrain"), "tiny", settings=s, seed=1,
                                  progress=False)
    assert not list((tmp_path / "pretrain").glob("*.png"))
    assert any("matplotlib" in n for n in pre.extra["notes"])
    lines = (tmp_path / "pretrain" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and "val_loss" in json.loads(lines[1])
    # the next stage starts from the folder alone: the same weights and tokenizer come back
    loaded = pipeline.load_stage(tmp_path / "pretrain")
    assert loaded.seed == 1 and loaded.preset == "tiny"
    for k, v in pre.model.params.items():
        np.testing.assert_array_equal(loaded.model.params[k], v)
    assert loaded.tok.encode("A spider has 8 legs.") == pre.tok.encode("A spider has 8 legs.")
    sft = pipeline.sft_stage(str(tmp_path / "pretrain"), str(tmp_path / "sft"), settings=s,
                             progress=False)
    assert sft.seed == 1 and sft.parent == str(tmp_path / "pretrain")
    assert 0.0 <= sft.summary["format_adherence"] <= 1.0
    changed = any(not np.array_equal(sft.model.params[k], v) for k, v in pre.model.params.items())
    assert changed  # SFT trained a copy ...
    for k, v in pre.model.params.items():  # ... and left the pretrained model as it was
        np.testing.assert_array_equal(loaded.model.params[k], v)
    with pytest.raises(ValueError, match="expected the folder of a 'pretrain' stage"):
        pipeline.sft_stage(str(tmp_path / "sft"), str(tmp_path / "x"), settings=s,
                           progress=False)


def test_check_report_names_missing_and_non_finite_values():
    from gptlab.pipeline import check_report

    good = {sec: {k: 0.5 for k in keys} for sec, keys in DOCUMENTED.items()}
    good["ppo"]["behaviour_before"] = dict.fromkeys(RATES, 0.0)
    good["ppo"]["behaviour_after"] = dict.fromkeys(RATES, 1.0)
    assert check_report(good) == []
    bad = json.loads(json.dumps(good))
    bad["pretrain"]["val_loss"] = float("nan")
    del bad["sft"]["heldout_accuracy"]
    bad["ppo"]["behaviour_after"]["impartial"] = 1.5
    assert check_report(bad) == ["pretrain.val_loss", "sft.heldout_accuracy",
                                 "ppo.behaviour_after.impartial"]


def test_settings_overrides_apply_to_a_copy():
    from gptlab import pipeline

    steps = pipeline.FULL["ppo"]["steps"]
    s = pipeline.settings_for(False, {"ppo": {"steps": steps + 1}})
    assert s["ppo"]["steps"] == steps + 1 and pipeline.FULL["ppo"]["steps"] == steps
    assert s["ppo"]["lr"] == pipeline.FULL["ppo"]["lr"]
    with pytest.raises(ValueError, match="unknown section"):
        pipeline.settings_for(True, {"nope": {}})


def test_resume_refuses_a_stage_made_with_other_settings(tmp_path):
    from gptlab import pipeline

    s = tiny_settings()
    pipeline.pretrain_stage(str(tmp_path / "pretrain"), "tiny", settings=s, seed=0,
                            progress=False)
    other = pipeline.settings_for(True, {k: dict(v) for k, v in s.items()})
    other["pretrain"]["steps"] = 4
    with pytest.raises(ValueError, match="other settings"):
        pipeline.run_pipeline("tiny", str(tmp_path), settings=other, resume=True,
                              progress=False)
    assert not (tmp_path / "report.json").exists()


def test_overopt_summary_finds_the_gold_peak_and_the_end():
    from gptlab import pipeline

    # the gold score rises then falls while the reward-model score keeps rising
    gold = [0.1 * min(t, 40 - t) for t in range(40)]
    hist = [{"gold/score": g, "objective/rm_score": 0.1 * t, "objective/kl": 0.5 * t}
            for t, g in enumerate(gold)]
    o = pipeline._overopt_summary(hist, beta=0.0, window=4)
    assert o["steps"] == 40 and o["beta"] == 0.0
    assert o["gold_best"] == pytest.approx(np.mean(gold[18:22]))   # the window around t = 20
    assert o["kl_at_gold_best"] == pytest.approx(0.5 * np.mean(range(18, 22)))
    assert o["gold_last"] == pytest.approx(np.mean(gold[-4:]))
    assert o["rm_last"] > o["rm_at_gold_best"] and o["gold_last"] < o["gold_best"]

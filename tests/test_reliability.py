"""Reliability promises (docs/reliability.md): nothing lost, exact resume, non-finite guard,
interrupts, threads, flat memory.

Tests that could kill the process they run in (SIGKILL mid-save, SIGINT during a C call) run
their subject in a child process.
"""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc

import numpy as np
import pytest
from child import PKG_ROOT, child_env  # noqa: E402

import gptlab as gl
from gptlab.data import TinyWorld
from gptlab.io import load_safetensors
from gptlab.stages.pretrain import Pretrainer
from gptlab.stages.sft import SFTTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(code: str, **kw) -> subprocess.Popen:
    """Start `python -c code` with gptlab importable; stdout is a pipe."""
    env = child_env(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=PKG_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


# ---- shared tiny setups -------------------------------------------------------------------

@pytest.fixture(scope="module")
def world():
    return TinyWorld(seed=0)


@pytest.fixture(scope="module")
def tok(world):
    return gl.Tokenizer.train(world.pretrain_text(n_chars=30_000), vocab_size=320)


def tiny_model(tok, seed=0) -> gl.GPT:
    cfg = gl.GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2,
                       n_embd=32)
    return gl.GPT(cfg, seed=seed)


def pretrainer(world, tok, model) -> Pretrainer:
    return Pretrainer(model, tok, world.pretrain_text(n_chars=20_000), batch_size=4,
                      seq_len=16, warmup=2, max_steps=12, eval_every=3, eval_windows=4, seed=7)


def sft_trainer(world, tok, model) -> SFTTrainer:
    return SFTTrainer(model, tok, world.sft_examples(n=40), batch_size=4, warmup=2,
                      max_steps=12, seed=7)


class _RewardStage:
    """A RewardTrainer seen through the attribute names the resume test reads."""

    def __new__(cls, world, tok, model):
        from gptlab import RewardModel, RewardTrainer

        data = [{"prompt": f"Question {i}?", "responses": [f"Yes {i}.", "No.", f"Maybe {i % 3}."]}
                for i in range(12)]
        rt = RewardTrainer(RewardModel(model, seed=1), tok, data, batch_size=4, warmup=2,
                           max_steps=12, eval_every=0, seed=7)
        rt.model = rt.rm.trunk
        return rt


def reward_trainer(world, tok, model):
    return _RewardStage(world, tok, model)


def numbers(history: list[dict]) -> list[dict]:
    """History rows without the wall-clock fields."""
    return [{k: v for k, v in row.items() if k not in ("time", "tokens_per_s", "seconds")}
            for row in history]


# ---- nothing lost -------------------------------------------------------------------------

def test_checkpoint_checksum_catches_a_flipped_data_byte(tmp_path):
    m = gl.GPT(gl.GPTConfig(vocab_size=11, block_size=4, n_layer=1, n_head=1, n_embd=4))
    path = tmp_path / "m.safetensors"
    m.save(path)
    raw = bytearray(path.read_bytes())
    n = struct.unpack("<Q", raw[:8])[0]
    raw[8 + n + 17] ^= 0x01  # one bit of one weight
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        gl.GPT.load(path)


def test_checkpoint_with_its_checksum_removed_or_a_dtype_changed_is_refused(tmp_path):
    m = gl.GPT(gl.GPTConfig(vocab_size=11, block_size=4, n_layer=1, n_head=1, n_embd=4))
    path = tmp_path / "m.safetensors"
    m.save(path)
    good = path.read_bytes()
    path.write_bytes(good.replace(b'"gptlab.sha256"', b'"gptlab.sha257"'))
    with pytest.raises(ValueError, match="sha256"):
        gl.GPT.load(path)
    path.write_bytes(good.replace(b'"F32"', b'"I32"', 1))  # same bytes, read as integers
    with pytest.raises(ValueError, match="float32"):
        gl.GPT.load(path)


def test_header_claiming_a_1tb_tensor_is_refused_before_allocating(tmp_path):
    header = {"w": {"dtype": "F32", "shape": [2**38], "data_offsets": [0, 2**40]},
              "__metadata__": {"gptlab.config": json.dumps(gl.GPTConfig().to_dict())}}
    raw = json.dumps(header).encode()
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 64)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="outside the data"):
            gl.GPT.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    # a config asking for a 30 GB model with the tensors of a tiny one: refused, not allocated
    small = gl.GPT(gl.GPTConfig(vocab_size=11, block_size=4, n_layer=1, n_head=1, n_embd=4))
    small.save(path, metadata={"gptlab.config": json.dumps(dict(
        vocab_size=50000, block_size=1024, n_layer=4, n_head=4, n_embd=40000))})
    with pytest.raises(ValueError, match="needs"):
        gl.GPT.load(path)


def test_saved_files_get_the_permissions_open_would_give_and_keep_them(tmp_path):
    # atomic_write renames a temporary file (mkstemp makes those 0o600) onto the target:
    # a new file must get 0o666 less the umask, like open(); a replaced file keeps its mode
    from gptlab.io import atomic_write

    old = os.umask(0o027)
    try:
        with atomic_write(tmp_path / "new.bin") as f:
            f.write(b"x")
        assert (tmp_path / "new.bin").stat().st_mode & 0o777 == 0o640
        (tmp_path / "shared.bin").write_bytes(b"old")
        os.chmod(tmp_path / "shared.bin", 0o664)
        with atomic_write(tmp_path / "shared.bin") as f:
            f.write(b"new")
        assert (tmp_path / "shared.bin").stat().st_mode & 0o777 == 0o664
        assert (tmp_path / "shared.bin").read_bytes() == b"new"
    finally:
        os.umask(old)


def test_tokenizer_save_is_atomic(tmp_path, tok, monkeypatch):
    path = tmp_path / "tok.json"
    tok.save(path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", boom)  # dies after writing, before the rename
    with pytest.raises(KeyboardInterrupt):
        gl.Tokenizer.train("zz yy " * 50, 270).save(path)
    with pytest.raises(KeyboardInterrupt):
        gl.Tokenizer.train("zz yy " * 50, 270).save_gpt2_files(path, tmp_path / "m.txt")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok.json"]  # no temporary left


SAVER = """
import sys
import numpy as np
import gptlab as gl
cfg = gl.GPTConfig(vocab_size=2048, block_size=64, n_layer=2, n_head=4, n_embd=256)
models = [gl.GPT(cfg, seed=0), gl.GPT(cfg, seed=1)]
toks = [gl.Tokenizer.train("ab ba abab " * 40, 262 + k) for k in range(2)]
models[0].save(sys.argv[1]); toks[0].save(sys.argv[2])
print("ready", flush=True)
i = 0
while True:
    i ^= 1
    models[i].save(sys.argv[1])
    toks[i].save(sys.argv[2])
"""


def test_sigkill_during_save_leaves_the_old_or_the_new_file(tmp_path):
    cfg = gl.GPTConfig(vocab_size=2048, block_size=64, n_layer=2, n_head=4, n_embd=256)
    weights = [gl.GPT(cfg, seed=s)._param_flat.tobytes() for s in (0, 1)]
    vocab_sizes = {262, 263}
    mpath, tpath = str(tmp_path / "m.safetensors"), str(tmp_path / "t.json")
    rnd = random.Random(0)
    for _ in range(4):
        p = subprocess.Popen([sys.executable, "-c", SAVER, mpath, tpath], cwd=PKG_ROOT,
                             env=child_env(OMP_NUM_THREADS="1"),
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(rnd.uniform(0.05, 0.6))
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert gl.GPT.load(mpath)._param_flat.tobytes() in weights
        assert gl.Tokenizer.load(tpath).vocab_size in vocab_sizes


# ---- exact resume -------------------------------------------------------------------------

@pytest.mark.parametrize("make", [pretrainer, sft_trainer, reward_trainer],
                         ids=["pretrain", "sft", "reward"])
def test_resumed_trainer_is_bit_identical_to_an_uninterrupted_run(make, world, tok, tmp_path):
    full = make(world, tok, tiny_model(tok))
    full.train(8, progress=False)

    first = make(world, tok, tiny_model(tok))
    first.train(5, progress=False)
    ckpt = tmp_path / "run.safetensors"
    first.save_checkpoint(ckpt)
    first.train(3, progress=False)  # keeps going: the checkpoint must not alias live arrays

    resumed = make(world, tok, tiny_model(tok, seed=99))  # other weights, fresh state
    resumed.load_checkpoint(ckpt)
    assert resumed.t == 5
    resumed.train(3, progress=False)

    for run in (first, resumed):
        assert run.t == full.t == 8
        assert run.model._param_flat.tobytes() == full.model._param_flat.tobytes()
        for k in full.opt.m:
            assert run.opt.m[k].tobytes() == full.opt.m[k].tobytes()
            assert run.opt.v[k].tobytes() == full.opt.v[k].tobytes()
        assert numbers(run.history) == numbers(full.history)
    # and the data stream continues identically
    for a, b in zip(full.batches.next(), resumed.batches.next(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_of_another_stage_or_size_is_refused(world, tok, tmp_path):
    pre = pretrainer(world, tok, tiny_model(tok))
    pre.save_checkpoint(tmp_path / "p.safetensors")
    with pytest.raises(ValueError, match="not a sft trainer checkpoint"):
        sft_trainer(world, tok, tiny_model(tok)).load_checkpoint(tmp_path / "p.safetensors")


# ---- non-finite guard ---------------------------------------------------------------------

def snapshot(trainer) -> tuple:
    return (trainer.model._param_flat.copy(), {k: v.copy() for k, v in trainer.opt.m.items()},
            trainer.opt.t, trainer.t, len(trainer.history))


def assert_unchanged(trainer, snap, poisoned):
    params, m, opt_t, t, n_hist = snap
    now = trainer.model._param_flat
    same = (now == params) | (np.isnan(now) & np.isnan(params))
    assert same.all(), "a weight changed in a step that should not have updated anything"
    assert np.isnan(trainer.model.params[poisoned][0, 0])
    for k in m:
        np.testing.assert_array_equal(trainer.opt.m[k], m[k])
    assert trainer.opt.t == opt_t


def test_nan_loss_raises_and_updates_nothing_then_training_goes_on(world, tok):
    pre = pretrainer(world, tok, tiny_model(tok))
    pre.train(2, progress=False)
    w = pre.model.params["h.0.mlp.c_fc.weight"]
    good = w[0, 0]
    w[0, 0] = np.nan                       # one poisoned weight -> NaN loss
    snap = snapshot(pre)
    with pytest.raises(FloatingPointError, match="not updated"):
        pre.step()
    assert_unchanged(pre, snap, "h.0.mlp.c_fc.weight")
    assert (pre.t, len(pre.history)) == snap[3:]
    w[0, 0] = good                         # repaired: the model and trainer carry on
    stats = pre.step()
    assert np.isfinite(stats["loss"]) and pre.t == 3
    assert np.isfinite(pre.model._param_flat).all()


def test_nan_loss_with_on_nonfinite_skip_warns_and_updates_nothing(world, tok):
    model = tiny_model(tok)
    sft = SFTTrainer(model, tok, world.sft_examples(n=40), batch_size=4, max_steps=12,
                     on_nonfinite="skip")
    sft.train(1, progress=False)
    model.params["ln_f.weight"][:] = np.nan  # every logit NaN
    snap = snapshot(sft)
    with pytest.warns(RuntimeWarning, match="skipped"):
        sft.step()
    params, m, opt_t, _, _ = snap
    now = model._param_flat
    assert ((now == params) | (np.isnan(now) & np.isnan(params))).all()
    assert sft.opt.t == opt_t
    for k in m:
        np.testing.assert_array_equal(sft.opt.m[k], m[k])
    model.params["ln_f.weight"][:] = 1.0
    assert np.isfinite(sft.step()["loss"])
    assert np.isfinite(model._param_flat).all()


def test_nonfinite_gradient_with_finite_loss_leaves_weights(world, tok):
    pre = pretrainer(world, tok, tiny_model(tok))
    before = pre.model._param_flat.copy()
    real_backward = pre.model.backward

    def bad_backward(*a, **k):
        real_backward(*a, **k)
        pre.model.grads["wpe.weight"][3, 1] = np.inf

    pre.model.backward = bad_backward
    with pytest.raises(FloatingPointError):
        pre.step()
    np.testing.assert_array_equal(pre.model._param_flat, before)


# ---- interrupts ---------------------------------------------------------------------------

def test_sigint_during_train_stops_at_a_step_boundary(world, tok):
    pre = pretrainer(world, tok, tiny_model(tok))
    step = pre.step

    def step_then_ctrl_c():
        stats = step()
        if pre.t == 3:
            signal.raise_signal(signal.SIGINT)  # the handler train() installed
        return stats

    pre.step = step_then_ctrl_c
    previous = signal.getsignal(signal.SIGINT)
    with pytest.warns(UserWarning, match="interrupted after step 3"):
        out = pre.train(50, progress=False)
    assert pre.t == len(pre.history) == len(out) == 3
    assert signal.getsignal(signal.SIGINT) is previous  # the handler is restored
    replay = pretrainer(world, tok, tiny_model(tok))
    replay.train(3, progress=False)
    assert replay.model._param_flat.tobytes() == pre.model._param_flat.tobytes()


TRAIN_CHILD = """
import warnings, numpy as np, gptlab as gl
from gptlab.data import TinyWorld
from gptlab.io import load_safetensors
from gptlab.stages.pretrain import Pretrainer
def make():
    text = ("the cat sat on the mat and the dog ran to the cat. " * 200)
    tok = gl.Tokenizer.train(text, 300)
    m = gl.GPT(gl.GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2,
                            n_embd=16), seed=0)
    return Pretrainer(m, tok, text, batch_size=2, seq_len=16, eval_every=0, max_steps=100000)
pre = make()
pre.step()
print("go", flush=True)
with warnings.catch_warnings(record=True):
    pre.train(100000, progress=False)
assert pre.t == len(pre.history) and 1 < pre.t < 100001
again = make()
again.train(pre.t, progress=False)
assert again.model._param_flat.tobytes() == pre.model._param_flat.tobytes()
print("stopped", pre.t, flush=True)
"""


def test_ctrl_c_in_a_real_process_stops_train_consistently():
    p = child(TRAIN_CHILD)
    assert p.stdout.readline().strip() == "go"
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert out.startswith("stopped")


GENERATE_CHILD = """
import time, numpy as np, gptlab as gl
m = gl.GPT(gl.GPTConfig(vocab_size=2048, block_size=4096, n_layer=2, n_head=2, n_embd=64))
idx = np.zeros((8, 1), np.int64)
m.generate(idx, 4, seed=0)
print("go", flush=True)
t0 = time.perf_counter()
try:
    m.generate(idx, 4095, seed=0)
    print("finished", time.perf_counter() - t0, flush=True)
except KeyboardInterrupt:
    out = m.generate(idx, 3, seed=0, temperature=0)   # the model is still usable
    assert out.shape == (8, 4)
    print("interrupted", time.perf_counter() - t0, flush=True)
"""


def test_ctrl_c_interrupts_a_long_generate_promptly():
    p = child(GENERATE_CHILD)
    assert p.stdout.readline().strip() == "go"
    time.sleep(0.3)
    t_sig = time.perf_counter()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    latency = time.perf_counter() - t_sig
    assert p.returncode == 0, err
    assert out.startswith("interrupted"), out
    assert latency < 3.0


# ---- threads ------------------------------------------------------------------------------

def test_two_models_trained_in_two_threads_match_sequential_runs(world, tok):
    def run(seed, out):
        pre = pretrainer(world, tok, tiny_model(tok, seed=seed))
        pre.train(6, progress=False)
        out[seed] = pre.model._param_flat.tobytes()

    sequential, parallel = {}, {}
    for s in (1, 2):
        run(s, sequential)
    threads = [threading.Thread(target=run, args=(s, parallel)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert parallel == sequential
    assert sequential[1] != sequential[2]


def test_one_model_used_from_two_threads_is_refused_not_corrupted():
    cfg = gl.GPTConfig(vocab_size=64, block_size=64, n_layer=2, n_head=2, n_embd=64)
    model = gl.GPT(cfg)
    idx = np.random.default_rng(0).integers(0, 64, (16, 64))
    errors, results = [], []

    def use():
        for _ in range(20):
            try:
                results.append(model.forward(idx))
            except RuntimeError as e:
                errors.append(e)

    threads = [threading.Thread(target=use) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = model.forward(idx)
    assert all(np.array_equal(r, expected) for r in results)
    assert all("in use" in str(e) for e in errors)


# ---- regressions found by the fuzzers -----------------------------------------------------

def test_failed_loss_call_that_grew_the_arena_invalidates_the_held_forward():
    m = gl.GPT(gl.GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=1, n_embd=4))
    m.forward(np.zeros((1, 2), np.int64))
    big = np.zeros((4, 8), np.int32)
    bad_targets = np.full((4, 8), 99, np.int32)
    with pytest.raises(ValueError, match="targets"):
        m._core.loss(big, bad_targets)       # grows the activation arena, then fails
    with pytest.raises(ValueError, match="no forward pass"):
        m._core.backward(np.zeros((1, 2, 16), np.float32), None)


def test_adamw_refuses_betas_that_are_not_a_pair():
    m = gl.GPT(gl.GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=1, n_embd=4))
    for betas in (0.9, np.int64(0), (0.9,), "ab"):
        with pytest.raises(TypeError, match="betas"):
            gl.AdamW(m, 1e-3, betas=betas)


@pytest.mark.parametrize("entry", [
    {"dtype": "F32", "shape": [1e400], "data_offsets": [0, 4]},
    {"dtype": "F32", "shape": [2**64 + 1], "data_offsets": [0, 4]},
    {"dtype": "F32", "shape": "12", "data_offsets": [0, 4]},
    {"dtype": "F32", "shape": [1], "data_offsets": [0, True]},
])
def test_safetensors_header_with_odd_numbers_is_a_value_error(tmp_path, entry):
    raw = json.dumps({"w": entry}).encode()
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 8)
    with pytest.raises(ValueError, match="malformed|outside|needs"):
        load_safetensors(path)
    deep = b'{"__metadata__": {"gptlab.config": "' + b"[" * 100_000 + b'"}}'
    path.write_bytes(struct.pack("<Q", len(deep)) + deep)
    with pytest.raises(ValueError):
        gl.GPT.load(path)


# ---- soak ---------------------------------------------------------------------------------

def test_10000_steps_hold_rss_flat():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "soak.py"),
                        "--steps", "10000"], capture_output=True, text=True, timeout=240,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK: RSS flat" in r.stdout


def test_generate_with_a_huge_top_k_keeps_every_token():
    m = gl.GPT(gl.GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=1, n_embd=4))
    idx = np.zeros((2, 1), np.int64)
    a = m.generate(idx, 5, top_k=2**40, seed=3)
    np.testing.assert_array_equal(a, m.generate(idx, 5, seed=3))


def _wait_settings_after_import(**env) -> dict:
    """The OpenMP wait variables a child process sees after `import gptlab`, with the three
    of them removed from its environment and then `env` added."""
    code = ("import os, json, gptlab; print(json.dumps({k: os.environ.get(k) for k in "
            "('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'KMP_BLOCKTIME')}))")
    base = {k: v for k, v in child_env().items()
            if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    out = subprocess.run([sys.executable, "-c", code], env=dict(base, **env),
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_openmp_threads_spin_briefly_then_sleep_unless_the_user_chose():
    """gptlab's default (docs/benchmarks.md, "Default wait policy"): spin ~20 us, then sleep
    (GOMP_SPINCOUNT=1000; KMP_BLOCKTIME=0 for LLVM's libomp), set before the C core loads
    OpenMP; any wait setting of the user's own is left alone."""
    assert _wait_settings_after_import() == {
        "OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "1000", "KMP_BLOCKTIME": "0"}
    assert _wait_settings_after_import(OMP_WAIT_POLICY="active") == {
        "OMP_WAIT_POLICY": "active", "GOMP_SPINCOUNT": None, "KMP_BLOCKTIME": None}
    assert _wait_settings_after_import(GOMP_SPINCOUNT="30000")["GOMP_SPINCOUNT"] == "30000"
    assert _wait_settings_after_import(KMP_BLOCKTIME="5")["GOMP_SPINCOUNT"] is None

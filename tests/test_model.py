"""The whole GPT-2 in the C core against an independent float64 NumPy reference (and PyTorch)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import gpt_reference as ref
import numpy as np
import pytest
from child import PKG_ROOT, child_env

import gptlab as gl

CONFIGS = [
    gl.GPTConfig(vocab_size=37, block_size=16, n_layer=2, n_head=2, n_embd=16),
    gl.GPTConfig(vocab_size=65, block_size=9, n_layer=1, n_head=3, n_embd=21),
    gl.GPTConfig(vocab_size=128, block_size=33, n_layer=3, n_head=4, n_embd=32),
]


def rel_err(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / (np.linalg.norm(b) + 1e-30))


def random_model(cfg, seed=0) -> gl.GPT:
    """A model whose every weight is random (biases and LayerNorm too), so no gradient is
    trivially zero."""
    m = gl.GPT(cfg, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for name, p in m.params.items():
        base = 1.0 if "ln_" in name and name.endswith("weight") else 0.0
        p[...] = base + rng.normal(0, 0.1 if p.ndim == 1 else 0.3, p.shape)
    return m


def ref_params(m) -> dict:
    return {k: v.astype(np.float64) for k, v in m.params.items()}


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"V{c.vocab_size}L{c.n_layer}C{c.n_embd}")
def test_forward_logits_match_float64_reference(cfg):
    m = random_model(cfg)
    rng = np.random.default_rng(2)
    for B, T in [(1, 1), (2, cfg.block_size), (3, max(1, cfg.block_size // 2))]:
        idx = rng.integers(0, cfg.vocab_size, (B, T))
        logits = m.forward(idx)
        assert logits.shape == (B, T, cfg.vocab_size) and logits.dtype == np.float32
        want, hidden, _ = ref.forward(ref_params(m), idx, cfg.n_layer, cfg.n_head)
        assert rel_err(logits, want) < 1e-4
        assert rel_err(m.forward_hidden(idx), hidden) < 1e-4


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"V{c.vocab_size}L{c.n_layer}C{c.n_embd}")
@pytest.mark.parametrize("masked", [False, True])
def test_loss_and_every_gradient_match_float64_reference(cfg, masked):
    m = random_model(cfg, seed=3)
    rng = np.random.default_rng(4)
    B, T = 3, cfg.block_size
    idx = rng.integers(0, cfg.vocab_size, (B, T))
    tgt = rng.integers(0, cfg.vocab_size, (B, T))
    mask = rng.random((B, T)) < 0.5 if masked else None
    if masked:
        mask[0, 0] = True
    m.zero_grad()
    loss = m.forward(idx, tgt, mask=mask)
    m.backward()
    P = ref_params(m)
    logits, _, cache = ref.forward(P, idx, cfg.n_layer, cfg.n_head)
    want_loss, dlogits = ref.cross_entropy(logits, tgt, mask)
    assert abs(loss - want_loss) / want_loss < 1e-5
    G = ref.backward(P, cache, cfg.n_layer, dlogits=dlogits)
    for name in m.grads:
        assert rel_err(m.grads[name], G[name]) < 1e-4, name


def test_backward_from_upstream_dlogits_and_dhidden_accumulates():
    cfg = CONFIGS[0]
    m = random_model(cfg, seed=5)
    rng = np.random.default_rng(6)
    idx = rng.integers(0, cfg.vocab_size, (2, 7))
    dl = rng.normal(size=(2, 7, cfg.vocab_size))
    dh = rng.normal(size=(2, 7, cfg.n_embd))
    m.zero_grad()
    m.forward(idx)
    m.backward(dlogits=dl, dhidden=dh)
    m.backward(dhidden=dh)  # a second call adds on top of the first
    P = ref_params(m)
    _, _, cache = ref.forward(P, idx, cfg.n_layer, cfg.n_head)
    G1 = ref.backward(P, cache, cfg.n_layer, dlogits=dl, dhidden=dh)
    G2 = ref.backward(P, cache, cfg.n_layer, dhidden=dh)
    for name in m.grads:
        assert rel_err(m.grads[name], G1[name] + G2[name]) < 1e-4, name


@pytest.mark.parametrize("upstream", ["loss", "dlogits", "dhidden", "both"])
def test_backward_without_accumulate_writes_every_gradient(upstream):
    """backward(accumulate=False) writes each gradient where backward() adds to it: over
    gradients full of NaN (so a tensor it forgot, or a product that read its old value, shows)
    it gives exactly what zero_grad() then backward() gives -- with T < block_size, so wpe's
    last rows get no gradient and must still come out 0 -- and matches the float64 reference.
    A second backward with the default then adds on top."""
    cfg = CONFIGS[0]
    m = random_model(cfg, seed=11)
    rng = np.random.default_rng(12)
    B, T = 2, cfg.block_size - 2
    idx = rng.integers(0, cfg.vocab_size, (B, T))
    tgt = rng.integers(0, cfg.vocab_size, (B, T))
    dl = rng.normal(size=(B, T, cfg.vocab_size)) if upstream in ("dlogits", "both") else None
    dh = rng.normal(size=(B, T, cfg.n_embd)) if upstream in ("dhidden", "both") else None

    def backward(**kw):
        if upstream == "loss":
            m.forward(idx, tgt)
            m.backward(**kw)
        else:
            m.forward(idx)
            m.backward(dlogits=dl, dhidden=dh, **kw)
    m.zero_grad()
    backward()
    want = {k: g.copy() for k, g in m.grads.items()}
    for g in m.grads.values():
        g[...] = np.nan
    backward(accumulate=False)
    for name, g in m.grads.items():
        np.testing.assert_array_equal(g, want[name], err_msg=name)
    assert not m.grads["wpe.weight"][T:].any()
    P = ref_params(m)
    logits, _, cache = ref.forward(P, idx, cfg.n_layer, cfg.n_head)
    if upstream == "loss":
        dl = ref.cross_entropy(logits, tgt)[1]
    G = ref.backward(P, cache, cfg.n_layer, dlogits=dl, dhidden=dh)
    for name in m.grads:
        assert rel_err(m.grads[name], G[name]) < 1e-4, name
    backward()  # the default adds: twice the gradient
    for name in m.grads:
        assert rel_err(m.grads[name], 2 * G[name]) < 1e-4, name


def test_reference_backward_passes_finite_differences():
    """The float64 reference's own gradients against central differences of its loss."""
    cfg = gl.GPTConfig(vocab_size=11, block_size=5, n_layer=2, n_head=2, n_embd=8)
    m = random_model(cfg, seed=7)
    P = ref_params(m)
    rng = np.random.default_rng(8)
    idx = rng.integers(0, 11, (2, 5))
    tgt = rng.integers(0, 11, (2, 5))

    def loss_of(P):
        logits, _, _ = ref.forward(P, idx, cfg.n_layer, cfg.n_head)
        return ref.cross_entropy(logits, tgt)[0]

    logits, _, cache = ref.forward(P, idx, cfg.n_layer, cfg.n_head)
    G = ref.backward(P, cache, cfg.n_layer, dlogits=ref.cross_entropy(logits, tgt)[1])
    h = 1e-6
    for name in P:
        flat = P[name].reshape(-1)
        for i in rng.choice(flat.size, size=min(4, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + h
            up = loss_of(P)
            flat[i] = old - h
            down = loss_of(P)
            flat[i] = old
            fd = (up - down) / (2 * h)
            assert abs(fd - G[name].reshape(-1)[i]) <= 1e-6 + 1e-5 * abs(fd), name


def test_c_gradient_matches_finite_differences_of_c_loss():
    """A float32 finite-difference check straight on the C model (loose, as float32 allows)."""
    cfg = gl.GPTConfig(vocab_size=13, block_size=6, n_layer=1, n_head=2, n_embd=8)
    m = random_model(cfg, seed=9)
    rng = np.random.default_rng(10)
    idx = rng.integers(0, 13, (2, 6))
    tgt = rng.integers(0, 13, (2, 6))
    m.zero_grad()
    m.forward(idx, tgt)
    m.backward()
    h = 1e-2
    for name in ["wte.weight", "h.0.attn.c_attn.weight", "h.0.mlp.c_fc.bias", "ln_f.weight"]:
        flat = m.params[name].reshape(-1)
        for i in rng.choice(flat.size, size=3, replace=False):
            old = float(flat[i])
            flat[i] = old + h
            up = m.forward(idx, tgt)
            flat[i] = old - h
            down = m.forward(idx, tgt)
            flat[i] = old
            fd = (up - down) / (2 * h)
            assert abs(fd - m.grads[name].reshape(-1)[i]) < 2e-3 + 2e-2 * abs(fd), name


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("vocab, n_embd, at_least", [(1001, 250, 1 << 20), (32771, 512, 16 << 20)])
def test_zero_grad_clears_every_gradient_on_any_thread_count(threads, vocab, n_embd, at_least):
    """zero_grad splits the arena between the threads from 1M floats on, and from 16M on
    writes with non-temporal stores: every float of a 1.3M- and a 23M-parameter model's
    gradients (counts no slice divides evenly) is 0 after it, and the parameters are
    untouched."""
    cfg = gl.GPTConfig(vocab_size=vocab, block_size=8, n_layer=2, n_head=2, n_embd=n_embd)
    m = gl.GPT(cfg, seed=0)
    assert m.num_params > at_least and m.num_params % (16 * 3) != 0
    before = {k: v.copy() for k, v in m.params.items()}
    n = gl.get_num_threads()
    try:
        gl.set_num_threads(threads)
        for g in m.grads.values():
            g[...] = np.nan
        m.zero_grad()
    finally:
        gl.set_num_threads(n)
    for name, g in m.grads.items():
        assert not g.any() and not np.isnan(g).any(), name
    for name, p in m.params.items():
        np.testing.assert_array_equal(p, before[name])


def test_params_are_views_named_like_hugging_face():
    cfg = gl.GPTConfig(vocab_size=50, block_size=8, n_layer=2, n_head=2, n_embd=12)
    m = gl.GPT(cfg)
    assert m.params["h.0.attn.c_attn.weight"].shape == (12, 36)
    assert m.params["h.1.mlp.c_proj.weight"].shape == (48, 12)
    assert m.params["wpe.weight"].shape == (8, 12)
    assert set(m.params) == set(m.grads)
    assert sum(p.size for p in m.params.values()) == m.num_params == cfg.num_params()
    idx = np.array([[1, 2, 3]])
    before = m.forward(idx)
    m.params["ln_f.bias"][...] = 0.5  # writing into a view changes the model
    assert not np.allclose(before, m.forward(idx))
    assert all(not p.flags.owndata for p in m.params.values())


def _mapping_fields(address: int) -> dict:
    """The fields of /proc/self/smaps for the mapping that holds `address`."""
    fields, inside = {}, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):  # a mapping's first line
                lo, hi = (int(x, 16) for x in head.split("-"))
                if inside:
                    break
                inside = lo <= address < hi
            elif inside:
                fields[head.rstrip(":")] = line.split()[1]
    return fields


def test_arenas_are_aligned_and_large_ones_ask_for_huge_pages():
    """The parameter and gradient arenas start on a cache line; from 2 MB on they start on a
    2 MB boundary and are marked for transparent huge pages (a pass over gpt2's gradients
    otherwise walks the page tables for each of 121K pages of 4 KB)."""
    small = gl.GPT(gl.GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=12))
    large = gl.GPT(gl.GPTConfig.preset("small", vocab_size=2048))  # 8.8 MB of parameters
    assert large._param_flat.nbytes >= 2 << 20
    for m in (small, large):
        for flat in (m._param_flat, m._grad_flat):
            address = flat.__array_interface__["data"][0]
            assert address % 64 == 0
            if flat.nbytes >= 2 << 20:
                assert address % (2 << 20) == 0
    thp = "/sys/kernel/mm/transparent_hugepage/enabled"
    if not os.path.exists(thp) or "[never]" in open(thp).read():
        pytest.skip("no transparent huge pages on this system")
    for flat in (large._param_flat, large._grad_flat):
        fields = _mapping_fields(flat.__array_interface__["data"][0])
        if "THPeligible" not in fields:
            pytest.skip("this kernel's smaps has no THPeligible field")
        assert fields["THPeligible"] == "1"


def test_same_seed_same_weights_and_gpt2_init_statistics():
    cfg = gl.GPTConfig.preset("tiny")
    a, b, c = gl.GPT(cfg, seed=1), gl.GPT(cfg, seed=1), gl.GPT(cfg, seed=2)
    assert a._param_flat.tobytes() == b._param_flat.tobytes()
    assert a._param_flat.tobytes() != c._param_flat.tobytes()
    w = a.params["wte.weight"]
    assert abs(w.std() - 0.02) < 0.002 and abs(w.mean()) < 0.002
    proj = a.params["h.0.attn.c_proj.weight"]
    assert abs(proj.std() - 0.02 / np.sqrt(2 * cfg.n_layer)) < 0.002
    assert np.all(a.params["h.0.ln_1.weight"] == 1) and np.all(a.params["h.0.ln_1.bias"] == 0)


def test_presets():
    assert gl.GPTConfig.preset("gpt2") == gl.GPTConfig(50257, 1024, 12, 12, 768)
    g = gl.GPTConfig.preset("gpt-mini")
    assert (g.n_layer, g.n_head, g.n_embd, g.block_size) == (6, 6, 384, 256)
    assert gl.GPTConfig.preset("small", vocab_size=300).vocab_size == 300
    assert gl.GPTConfig.preset("gpt2").num_params() == 124439808
    with pytest.raises(ValueError, match="unknown preset"):
        gl.GPTConfig.preset("huge")


# ---- generation ------------------------------------------------------------------------------

def test_greedy_generation_with_cache_equals_repeated_full_forward():
    cfg = CONFIGS[2]
    m = random_model(cfg, seed=11)
    rng = np.random.default_rng(12)
    idx = rng.integers(0, cfg.vocab_size, (3, 5))
    out, logp = m.generate(idx, 12, temperature=0, return_logprobs=True)
    seq = idx.copy()
    for i in range(12):
        logits = m.forward(seq)[:, -1].astype(np.float64)
        nxt = logits.argmax(-1)
        z = logits - logits.max(-1, keepdims=True)
        lp = z[np.arange(3), nxt] - np.log(np.exp(z).sum(-1))
        np.testing.assert_allclose(logp[:, i], lp, atol=1e-4)
        seq = np.concatenate([seq, nxt[:, None]], 1)
    np.testing.assert_array_equal(out, seq)


def test_sampled_logprobs_match_forward_at_temperature():
    cfg = CONFIGS[0]
    m = random_model(cfg, seed=13)
    idx = np.array([[1, 2], [3, 4]])
    out, logp = m.generate(idx, 6, temperature=0.7, top_k=5, seed=3, return_logprobs=True)
    logits = m.forward(out[:, :-1]).astype(np.float64)[:, 1:] / 0.7
    z = logits - logits.max(-1, keepdims=True)
    want = np.take_along_axis(z, out[:, 2:, None], -1)[..., 0] - np.log(np.exp(z).sum(-1))
    np.testing.assert_allclose(logp, want, atol=1e-4)
    again = m.generate(idx, 6, temperature=0.7, top_k=5, seed=3)
    np.testing.assert_array_equal(out, again)  # same seed, same samples


def test_top_k_one_is_greedy_and_top_p_tiny_is_greedy():
    cfg = CONFIGS[0]
    m = random_model(cfg, seed=14)
    idx = np.array([[5, 6, 7]])
    greedy = m.generate(idx, 8, temperature=0)
    np.testing.assert_array_equal(m.generate(idx, 8, temperature=1.3, top_k=1, seed=1), greedy)
    np.testing.assert_array_equal(m.generate(idx, 8, temperature=1.0, top_p=1e-6, seed=2), greedy)


def test_stop_token_pads_the_rest_of_the_row():
    cfg = CONFIGS[0]
    m = random_model(cfg, seed=15)
    idx = np.array([[1, 2, 3]])
    greedy = m.generate(idx, 10, temperature=0)
    stop = int(greedy[0, 5])  # the third new token
    out = m.generate(idx, 10, temperature=0, stop=stop)
    first = 3 + list(greedy[0, 3:]).index(stop)
    np.testing.assert_array_equal(out[0, : first + 1], greedy[0, : first + 1])
    assert np.all(out[0, first:] == stop)


def test_ragged_prompts_generate_as_if_alone():
    cfg = CONFIGS[2]
    m = random_model(cfg, seed=16)
    rng = np.random.default_rng(17)
    prompts = [rng.integers(0, cfg.vocab_size, n) for n in (2, 6, 4)]
    idx = np.zeros((3, 6), dtype=np.int64)
    for b, p in enumerate(prompts):
        idx[b, : len(p)] = p
    out = m.generate(idx, 7, temperature=0, prompt_lens=[len(p) for p in prompts])
    for b, p in enumerate(prompts):
        alone = m.generate(p[None], 7, temperature=0)
        np.testing.assert_array_equal(out[b, : len(p) + 7], alone[0])


# ---- files -----------------------------------------------------------------------------------

def test_save_load_round_trip_is_exact_and_readable_by_safetensors(tmp_path):
    cfg = CONFIGS[1]
    m = random_model(cfg, seed=18)
    path = tmp_path / "m.safetensors"
    m.save(path)
    m2 = gl.GPT.load(path)
    assert m2.config == cfg
    assert m2._param_flat.tobytes() == m._param_flat.tobytes()
    st = pytest.importorskip("safetensors.numpy")
    tensors = st.load_file(str(path))
    assert set(tensors) == set(m.params)
    np.testing.assert_array_equal(tensors["h.0.attn.c_attn.weight"],
                                  m.params["h.0.attn.c_attn.weight"])


def test_copy_is_independent():
    m = random_model(CONFIGS[0])
    c = m.copy()
    assert c._param_flat.tobytes() == m._param_flat.tobytes()
    c.params["wte.weight"][0, 0] += 1
    assert c.params["wte.weight"][0, 0] != m.params["wte.weight"][0, 0]


def test_truncated_corrupt_and_foreign_files_are_refused(tmp_path):
    m = random_model(CONFIGS[0])
    path = tmp_path / "m.safetensors"
    m.save(path)
    data = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a valid"):
        gl.GPT.load(tmp_path / "trunc.safetensors")
    flipped = bytearray(data)
    flipped[-10] ^= 0xFF
    (tmp_path / "flip.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="checksum"):
        gl.GPT.load(tmp_path / "flip.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError):
        gl.GPT.load(tmp_path / "junk.safetensors")
    st = pytest.importorskip("safetensors.numpy")
    st.save_file({"x": np.zeros(3, np.float32)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ValueError, match="not a gptlab checkpoint"):
        gl.GPT.load(tmp_path / "foreign.safetensors")


# ---- bad input -------------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors():
    cfg = CONFIGS[0]
    m = gl.GPT(cfg)
    with pytest.raises(TypeError, match="integer"):
        m.forward(np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        m.forward(np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="out of range"):
        m.forward(np.array([[1, cfg.vocab_size]]))
    with pytest.raises(ValueError, match="out of range"):
        m.forward(np.array([[-1, 2]]))
    with pytest.raises(ValueError, match="block_size"):
        m.forward(np.zeros((1, cfg.block_size + 1), np.int64))
    with pytest.raises(ValueError, match="targets"):
        m.forward(np.zeros((1, 3), np.int64), np.zeros((1, 4), np.int64))
    with pytest.raises(ValueError, match="mask"):
        m.forward(np.zeros((1, 3), np.int64), np.zeros((1, 3), np.int64), mask=np.zeros((1, 3)))
    with pytest.raises(ValueError, match="0/1"):
        m.forward(np.zeros((1, 3), np.int64), np.zeros((1, 3), np.int64), mask=np.full((1, 3), 2))
    m.forward(np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match="NaN"):
        m.backward(dlogits=np.full((2, 3, cfg.vocab_size), np.nan))
    with pytest.raises(ValueError, match="shape"):
        m.backward(dlogits=np.zeros((2, 4, cfg.vocab_size)))
    with pytest.raises(ValueError, match="block_size"):
        m.generate(np.zeros((1, 10), np.int64), cfg.block_size)
    with pytest.raises(TypeError):
        gl.GPT("small")
    with pytest.raises(ValueError, match="divisible"):
        gl.GPTConfig(vocab_size=10, block_size=4, n_layer=1, n_head=3, n_embd=8)


def test_core_refuses_non_contiguous_and_wrong_dtype_without_crashing():
    core = gl.GPT(CONFIGS[0])._core
    with pytest.raises(TypeError, match="int32"):
        core.forward(np.zeros((1, 3), np.int64), True)
    with pytest.raises(ValueError, match="contiguous"):
        core.forward(np.zeros((3, 4), np.int32)[:, ::2], True)
    with pytest.raises(ValueError, match="no forward"):
        gl.GPT(CONFIGS[0])._core.backward()


def test_bad_input_never_crashes_the_interpreter():
    code = textwrap.dedent("""
        import numpy as np, gptlab as gl
        m = gl.GPT(gl.GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8))
        bad = [lambda: m.forward(np.array([[99]])), lambda: m.forward(np.zeros((1, 9), int)),
               lambda: m._core.forward(np.zeros((2, 2), np.int64), True),
               lambda: m._core.backward(np.zeros(3, np.float32), None),
               lambda: m._core.loss(np.zeros((1, 2), np.int32), np.zeros((1, 3), np.int32)),
               lambda: m._core.generate(np.zeros((1, 4), np.int32), np.array([9], np.int32),
                                        2, 1.0, 1.0, 0, np.zeros(0, np.int32), 0, False),
               lambda: m.generate([[1]], 0)]
        n = 0
        for f in bad:
            try:
                f()
            except (ValueError, TypeError):
                n += 1
        print("refused", n)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=child_env(), cwd=PKG_ROOT)
    assert r.returncode == 0, r.stderr
    assert "refused 7" in r.stdout

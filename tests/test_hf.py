"""Hugging Face interop: gptlab against `transformers` itself (skipped without it and torch).

Models go both ways through folders on disk, exactly as users move them: transformers'
`save_pretrained` -> `GPT.from_hf`, and `save_hf` -> `from_pretrained`.
"""

from __future__ import annotations

import json
import os
import re
import struct

import numpy as np
import pytest

import gptlab as gl
from gptlab import hf
from gptlab.chat import render

torch = pytest.importorskip("torch", reason="Hugging Face parity needs torch")
transformers = pytest.importorskip("transformers", reason="Hugging Face parity needs transformers")
F = torch.nn.functional
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

SMALL = [  # (vocab_size, n_positions, n_layer, n_head, n_embd, activation)
    (97, 24, 2, 4, 32, "gelu_new"),
    (50, 17, 3, 3, 24, "gelu_pytorch_tanh"),
    (65, 33, 1, 1, 16, "gelu_new"),
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One thread each for gptlab and torch: these models are tiny, and two OpenMP runtimes
    (gptlab's and torch's) spinning on the same 2 busy cores slow each other down ~10x."""
    n, nt = gl.get_num_threads(), torch.get_num_threads()
    gl.set_num_threads(1)
    torch.set_num_threads(1)
    yield
    gl.set_num_threads(n)
    torch.set_num_threads(nt)


def hf_config(V, T, L, H, C, act="gelu_new", **kw):
    return transformers.GPT2Config(vocab_size=V, n_positions=T, n_layer=L, n_head=H, n_embd=C,
                                   activation_function=act, bos_token_id=None,
                                   eos_token_id=None, **kw)


def random_hf_model(cfg, seed=0, scale=0.05):
    """A transformers GPT-2 with every tensor perturbed, so no weight or gradient is trivial
    (fresh LayerNorms are exactly 1 and 0)."""
    torch.manual_seed(seed)
    m = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * scale)
    return m


def rel_err(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b.detach().numpy() if hasattr(b, "detach") else b, np.float64)
    return float(np.linalg.norm(a - b) / (np.linalg.norm(b) + 1e-30))


def perturbed_gpt(cfg: gl.GPTConfig, seed=0) -> gl.GPT:
    m = gl.GPT(cfg, seed=seed)
    rng = np.random.default_rng(seed)
    for p in m.params.values():
        p += rng.normal(0, 0.05, p.shape).astype(np.float32)
    return m


def tensors_of(path):
    return hf.load_safetensors(os.path.join(path, "model.safetensors"))[0]


def write_tensors(path, tensors):
    hf.save_safetensors(os.path.join(path, "model.safetensors"), tensors, {"format": "pt"})


def edit_config(path, **changes):
    p = os.path.join(path, "config.json")
    with open(p) as f:
        cfg = json.load(f)
    cfg.update(changes)
    with open(p, "w") as f:
        json.dump(cfg, f)


# ---- transformers -> gptlab -------------------------------------------------------------

@pytest.mark.parametrize("shape", SMALL, ids=lambda s: "V{}-T{}-L{}-H{}-C{}-{}".format(*s))
def test_hf_checkpoint_logits_and_loss_gradients_match_transformers(tmp_path, shape):
    V, T, L, H, C, act = shape
    ref = random_hf_model(hf_config(*shape), seed=L)
    ref.save_pretrained(tmp_path)
    model = gl.GPT.from_hf(tmp_path)
    assert model.config == gl.GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=H,
                                        n_embd=C)
    rng = np.random.default_rng(L)
    idx = rng.integers(0, V, (3, T))
    tgt = rng.integers(0, V, (3, T))

    ref64 = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, attn_implementation="eager")
    ref64 = ref64.double().eval()
    logits = ref64(torch.tensor(idx)).logits
    loss = F.cross_entropy(logits.reshape(-1, V), torch.tensor(tgt).reshape(-1))
    loss.backward()

    assert rel_err(model.forward(idx), logits) <= 1e-4
    model.zero_grad()
    assert abs(model.forward(idx, tgt) - loss.item()) <= 1e-5 * abs(loss.item())
    model.backward()
    grads = {k.removeprefix("transformer."): p.grad for k, p in ref64.named_parameters()}
    assert set(grads) == set(model.grads)  # lm_head is wte (tied): one parameter, one grad
    for name, g in model.grads.items():
        assert rel_err(g, grads[name]) <= 1e-4, name


def test_gpt2_124m_shape_loads_with_matching_logits(tmp_path):
    cfg = transformers.GPT2Config(bos_token_id=50256, eos_token_id=50256)  # the 124M shape
    torch.manual_seed(0)
    with torch.device("meta"):  # skip transformers' slow init; fill N(0, 0.02) below
        ref = transformers.GPT2LMHeadModel(cfg)
    ref = ref.to_empty(device="cpu").eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0.0, 0.02)
    ref.tie_weights()
    ref.save_pretrained(tmp_path)
    model = gl.GPT.from_hf(tmp_path)
    assert model.config == gl.GPTConfig.preset("gpt2")
    idx = np.random.default_rng(0).integers(0, 50257, (1, 8))
    ours = model.forward(idx)
    with torch.no_grad():
        assert rel_err(ours, ref(torch.tensor(idx)).logits) <= 1e-4


def test_unprefixed_checkpoint_with_mask_buffers_and_lm_head_loads(tmp_path):
    ref = random_hf_model(hf_config(*SMALL[0]))
    ref.save_pretrained(tmp_path)
    t = {k.removeprefix("transformer."): v for k, v in tensors_of(tmp_path).items()}
    for i in range(SMALL[0][2]):  # what the original GPT-2 checkpoints carry
        t[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 24, 24), np.float32))
        t[f"h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
    t["lm_head.weight"] = t["wte.weight"]
    write_tensors(tmp_path, t)
    model = gl.GPT.from_hf(tmp_path)
    for k, p in ref.transformer.state_dict().items():
        if k in model.params:
            assert np.array_equal(model.params[k], p.numpy()), k


def test_sharded_checkpoint_loads(tmp_path):
    ref = random_hf_model(hf_config(*SMALL[0]))
    ref.save_pretrained(tmp_path, max_shard_size="20KB")
    assert os.path.exists(tmp_path / "model.safetensors.index.json")
    model = gl.GPT.from_hf(tmp_path)
    for k, p in ref.transformer.state_dict().items():
        assert np.array_equal(model.params[k], p.numpy()), k


def test_hf_gptlab_hf_round_trip_is_bit_exact(tmp_path):
    ref = random_hf_model(hf_config(*SMALL[1]))
    ref.save_pretrained(tmp_path / "a")
    gl.GPT.from_hf(tmp_path / "a").save_hf(tmp_path / "b")
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "b")
    a, b = ref.state_dict(), back.state_dict()
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---- gptlab -> transformers -------------------------------------------------------------

def test_gptlab_hf_gptlab_round_trip_is_bit_exact(tmp_path):
    model = perturbed_gpt(gl.GPTConfig(vocab_size=61, block_size=19, n_layer=2, n_head=2,
                                       n_embd=16))
    model.save_hf(tmp_path)
    back = gl.GPT.from_hf(tmp_path)
    assert back.config == model.config
    assert hf._expected_shapes(model.config) == {k: p.shape for k, p in model.params.items()}
    for k, p in model.params.items():
        assert np.array_equal(back.params[k], p), k


def trained_model(steps=30):
    """A tiny model trained on a repeating pattern: its greedy continuations are confident,
    so the argmax is never a near-tie that float rounding could flip."""
    cfg = gl.GPTConfig(vocab_size=53, block_size=32, n_layer=2, n_head=2, n_embd=32)
    model = gl.GPT(cfg, seed=3)
    opt = gl.AdamW(model, lr=3e-3)
    rng = np.random.default_rng(0)
    pattern = rng.integers(0, cfg.vocab_size, 11)
    data = np.tile(pattern, 20)
    for _ in range(steps):
        starts = rng.integers(0, 11, 4)
        x = np.stack([data[s:s + 32] for s in starts])
        y = np.stack([data[s + 1:s + 33] for s in starts])
        model.zero_grad()
        model.forward(x, y)
        model.backward()
        opt.step()
    return model, data


def test_trained_gptlab_model_gives_same_logits_and_greedy_tokens_in_transformers(tmp_path):
    model, data = trained_model()
    model.save_hf(tmp_path)
    with open(tmp_path / "config.json") as f:
        cfg = json.load(f)
    assert cfg["model_type"] == "gpt2" and cfg["architectures"] == ["GPT2LMHeadModel"]
    ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(ref, transformers.GPT2LMHeadModel)
    idx = np.stack([data[:32], data[5:37]])
    with torch.no_grad():
        assert rel_err(model.forward(idx), ref(torch.tensor(idx)).logits) <= 1e-4

    prompts = np.stack([data[2:8], np.random.default_rng(1).integers(0, 53, 6)])
    ours = model.generate(prompts, 20, temperature=0)
    theirs = ref.generate(torch.tensor(prompts), do_sample=False, max_new_tokens=20,
                          pad_token_id=0, attention_mask=torch.ones(prompts.shape, dtype=int))
    assert theirs.shape == ours.shape  # no early stop: the folder names no eos token
    assert np.array_equal(ours, theirs.numpy())


def test_save_hf_with_tokenizer_sets_special_ids_and_stops_at_end(tmp_path, tok):
    cfg = gl.GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=1,
                       n_embd=8)
    gl.GPT(cfg).save_hf(tmp_path, tokenizer=tok)
    ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    eot, end = tok.special_tokens["<|endoftext|>"], tok.special_tokens["<|end|>"]
    assert ref.config.eos_token_id == ref.config.pad_token_id == eot
    assert ref.generation_config.eos_token_id == [end, eot]
    t = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert t.model_max_length == 16 and t.pad_token_id == eot


# ---- reward / value models --------------------------------------------------------------

@pytest.mark.parametrize("bias", [0.0, 0.7])
def test_reward_model_folder_scores_equal_trunk_times_head(tmp_path, bias):
    cfg = gl.GPTConfig(vocab_size=40, block_size=20, n_layer=2, n_head=2, n_embd=24)
    trunk = perturbed_gpt(cfg, seed=5)
    rng = np.random.default_rng(5)
    w = rng.normal(0, 0.3, cfg.n_embd).astype(np.float32)
    pad = 0
    hf.save_reward_model_folder(trunk, w, bias, tmp_path, pad_token_id=pad)
    ref = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert isinstance(ref, transformers.GPT2ForSequenceClassification)
    assert ref.config.num_labels == 1

    lens = [20, 13, 7]
    rows = [rng.integers(1, cfg.vocab_size, n) for n in lens]  # no pad id inside a row
    padded = np.zeros((len(rows), 20), dtype=np.int64)  # right-padded with pad = 0
    for i, r in enumerate(rows):
        padded[i, :len(r)] = r
    by_hand = np.array([trunk.forward_hidden(r[None])[0, -1].astype(np.float64) @ w + bias
                        for r in rows])
    with torch.no_grad():
        scores = ref(torch.tensor(padded)).logits[:, 0]
    assert rel_err(scores, by_hand) <= 1e-4

    back, w2, b2 = hf.load_reward_model_folder(tmp_path)
    assert np.array_equal(w2, w) and b2 == 0.0
    again = np.array([back.forward_hidden(r[None])[0, -1].astype(np.float64) @ w2 + b2
                      for r in rows])
    assert rel_err(again, by_hand) <= 1e-4
    for k, p in trunk.params.items():
        if k != "ln_f.bias" or bias == 0.0:
            assert np.array_equal(back.params[k], p), k


def test_reward_model_folder_refuses_bad_head(tmp_path):
    trunk = gl.GPT(gl.GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(ValueError, match="head_weight"):
        hf.save_reward_model_folder(trunk, np.ones(7), 0.0, tmp_path, pad_token_id=0)
    with pytest.raises(ValueError, match="pad_token_id"):
        hf.save_reward_model_folder(trunk, np.ones(8), 0.0, tmp_path, pad_token_id=None)
    with pytest.raises(ValueError, match="pad_token_id"):
        hf.save_reward_model_folder(trunk, np.ones(8), 0.0, tmp_path, pad_token_id=20)
    with pytest.raises(ValueError, match="head_bias"):
        hf.save_reward_model_folder(trunk, np.zeros(8), 1.0, tmp_path, pad_token_id=0)
    with pytest.raises(ValueError, match="finite"):
        hf.save_reward_model_folder(trunk, np.full(8, np.nan), 0.0, tmp_path, pad_token_id=0)


# ---- corrupt and unsupported folders ----------------------------------------------------

@pytest.fixture
def folder(tmp_path):
    random_hf_model(hf_config(*SMALL[0])).save_pretrained(tmp_path)
    return tmp_path


@pytest.mark.parametrize("field, value", [
    ("activation_function", "relu"),
    ("activation_function", "gelu"),
    ("scale_attn_by_inverse_layer_idx", True),
    ("scale_attn_weights", False),
    ("n_inner", 100),
    ("layer_norm_epsilon", 1e-6),
    ("model_type", "gpt_neo"),
    ("n_head", 5),
    ("n_layer", "2"),
])
def test_unsupported_config_field_is_refused_by_name(folder, field, value):
    edit_config(folder, **{field: value})
    with pytest.raises(ValueError, match=f"'{field}'"):
        gl.GPT.from_hf(folder)


def test_missing_tensor_is_named(folder):
    t = tensors_of(folder)
    del t["transformer.h.1.mlp.c_fc.weight"]
    write_tensors(folder, t)
    with pytest.raises(ValueError, match=r"missing tensor 'transformer\.h\.1\.mlp\.c_fc\.weight'"):
        gl.GPT.from_hf(folder)


def test_wrong_shape_is_named(folder):
    t = tensors_of(folder)
    t["transformer.h.0.attn.c_attn.weight"] = t["transformer.h.0.attn.c_attn.weight"].T.copy()
    write_tensors(folder, t)
    with pytest.raises(ValueError, match=r"'transformer\.h\.0\.attn\.c_attn\.weight' has shape"):
        gl.GPT.from_hf(folder)


def test_config_and_tensors_that_disagree_are_refused(folder):
    edit_config(folder, vocab_size=98)
    with pytest.raises(ValueError, match=r"'transformer\.wte\.weight' has shape \(97, 32\)"):
        gl.GPT.from_hf(folder)
    edit_config(folder, vocab_size=97, n_layer=1)
    with pytest.raises(ValueError, match=r"unexpected tensor 'transformer\.h\.1\."):
        gl.GPT.from_hf(folder)


def test_nan_and_bf16_and_pickle_only_folders_are_refused(folder, tmp_path_factory):
    t = tensors_of(folder)
    t["transformer.ln_f.bias"][3] = np.nan
    write_tensors(folder, t)
    with pytest.raises(ValueError, match="ln_f.bias"):
        gl.GPT.from_hf(folder)

    bf = tmp_path_factory.mktemp("bf16")
    random_hf_model(hf_config(*SMALL[0])).to(torch.bfloat16).save_pretrained(bf)
    with pytest.raises(ValueError, match="BF16"):
        gl.GPT.from_hf(bf)

    pickled = tmp_path_factory.mktemp("bin")
    (pickled / "config.json").write_text((folder / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(ValueError, match="pytorch_model.bin"):
        gl.GPT.from_hf(pickled)
    with pytest.raises(ValueError, match="config.json"):
        gl.GPT.from_hf(tmp_path_factory.mktemp("empty"))


def test_truncated_safetensors_is_refused(folder):
    p = folder / "model.safetensors"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(ValueError, match="model.safetensors"):
        gl.GPT.from_hf(folder)
    p.write_bytes(struct.pack("<Q", 10**12))
    with pytest.raises(ValueError, match="model.safetensors"):
        gl.GPT.from_hf(folder)


def test_untied_head_is_refused_unless_dropped(folder):
    t = tensors_of(folder)
    t["lm_head.weight"] = t["transformer.wte.weight"] + 1.0
    write_tensors(folder, t)
    edit_config(folder, tie_word_embeddings=False)
    with pytest.raises(ValueError, match="lm_head.weight"):
        gl.GPT.from_hf(folder)
    with pytest.warns(UserWarning, match="lm_head"):
        model = gl.GPT.from_hf(folder, drop_untied_head=True)
    assert np.array_equal(model.params["wte.weight"], t["transformer.wte.weight"])
    t["lm_head.weight"] = t["transformer.wte.weight"]  # untied in name only: accepted
    write_tensors(folder, t)
    gl.GPT.from_hf(folder)


def test_sequence_classification_folder_points_to_the_reward_loader(tmp_path):
    trunk = gl.GPT(gl.GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=1, n_embd=8))
    hf.save_reward_model_folder(trunk, np.ones(8), 0.0, tmp_path, pad_token_id=0)
    with pytest.raises(ValueError, match="'score.weight'.*load_reward_model_folder"):
        gl.GPT.from_hf(tmp_path)
    trunk.save_hf(tmp_path / "lm")
    with pytest.raises(ValueError, match="missing tensor 'score.weight'"):
        hf.load_reward_model_folder(tmp_path / "lm")
    t = tensors_of(tmp_path)
    t["score.weight"] = np.ones((2, 8), np.float32)
    write_tensors(tmp_path, t)
    with pytest.raises(ValueError, match="'score.weight' has shape.*num_labels 1"):
        hf.load_reward_model_folder(tmp_path)


# ---- tokenizer --------------------------------------------------------------------------

TEXT = ("The cat sat on the mat. The dog didn't sit on the log; it's 42 dogs' 1234 logs!\n"
        "  Spaces   and\ttabs, héllo wörld, 日本語, emoji 😀🐈 and 'quotes' we'll've\n\n")
PROBES = [
    "The cat sat on the mat.",
    " leading space and trailing  ",
    "<|user|>How many legs?<|assistant|>Four legs.<|end|>",
    "text<|endoftext|>more text<|endoftext|>",
    "unicode: héllo 日本語 😀🐈 \u00a0nbsp \u2028 sep",
    "numbers 3.14159 and 1,000,000 and 'll 've 're",
    "\n\n\t  mixed   whitespace \r\n",
    "<|user|>half a special <|end",
    "",
]


@pytest.fixture(scope="module")
def tok():
    return gl.Tokenizer.train(TEXT * 20, vocab_size=400)


def test_tokenizer_folder_encodes_like_transformers(tmp_path, tok):
    tok.save_hf(tmp_path, model_max_length=128)
    assert {"vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json"} <= set(os.listdir(tmp_path))
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path)
    fast = transformers.GPT2TokenizerFast.from_pretrained(tmp_path)
    assert auto.eos_token == auto.pad_token == "<|endoftext|>"
    assert set(auto.all_special_tokens) == set(tok.special_tokens)
    for text in PROBES + [TEXT]:
        ids = tok.encode(text, allowed_special="all")
        assert auto(text)["input_ids"] == ids, text
        assert fast(text)["input_ids"] == ids, text
        assert auto.decode(ids) == tok.decode(ids) == text


def test_vocab_and_merges_alone_encode_like_gpt2_tokenizer_fast(tmp_path, tok):
    tok.save_hf(tmp_path)
    only = tmp_path / "only"  # GPT-2's two classic files, nothing else
    only.mkdir()
    for name in ("vocab.json", "merges.txt"):
        (only / name).write_bytes((tmp_path / name).read_bytes())
    fast = transformers.GPT2TokenizerFast.from_pretrained(only)
    assert fast.all_special_tokens == ["<|endoftext|>"]  # GPT-2's default, the only one it knows
    for text in PROBES + [TEXT]:
        assert fast(text)["input_ids"] == tok.encode(text, allowed_special={"<|endoftext|>"})
    back = gl.Tokenizer.from_hf(only)
    assert back.merges == tok.merges and back.special_tokens == tok.special_tokens


def test_tokenizer_round_trips_through_hf_files(tmp_path, tok):
    tok.save_hf(tmp_path / "ours")
    back = gl.Tokenizer.from_hf(tmp_path / "ours")
    assert back.vocab_size == tok.vocab_size and back.merges == tok.merges
    assert back.special_tokens == tok.special_tokens
    assert all(back.token_bytes(i) == tok.token_bytes(i) for i in range(tok.vocab_size))
    # transformers 5 writes tokenizer.json alone; older versions also vocab.json/merges.txt
    transformers.AutoTokenizer.from_pretrained(tmp_path / "ours").save_pretrained(tmp_path / "hf")
    again = gl.Tokenizer.from_hf(tmp_path / "hf")
    assert again.merges == tok.merges and again.special_tokens == tok.special_tokens
    for text in PROBES:
        assert again.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")


def test_chat_template_renders_like_gptlab_with_assistant_mask(tmp_path, tok):
    tok.save_hf(tmp_path)
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path)
    msgs = [{"role": "user", "content": "How many legs does a cat have?"},
            {"role": "assistant", "content": "A cat has 4 legs."}]
    out = auto.apply_chat_template(msgs, tokenize=True, return_dict=True,
                                   return_assistant_tokens_mask=True)
    ids, mask = render(tok, msgs[0]["content"], msgs[1]["content"])
    assert out["input_ids"] == ids and out["assistant_masks"] == mask
    prompt = auto.apply_chat_template(msgs[:1], tokenize=True, add_generation_prompt=True,
                                      return_dict=True)["input_ids"]
    assert prompt == ids[:len(prompt)] and prompt[-1] == tok.special_tokens["<|assistant|>"]


def test_non_gpt2_tokenizer_json_is_refused_by_field(tmp_path, tok):
    tok.save_hf(tmp_path)
    p = tmp_path / "tokenizer.json"
    d = json.loads(p.read_text())
    d["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁"}
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="'pre_tokenizer'"):
        gl.Tokenizer.from_hf(tmp_path)
    d["pre_tokenizer"], d["model"]["type"] = {"type": "ByteLevel"}, "WordPiece"
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="'model.type'"):
        gl.Tokenizer.from_hf(tmp_path)
    d["model"]["type"] = "BPE"
    d["added_tokens"][0]["id"] = 3  # a special token claiming an ordinary token's id
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=re.escape("'<|endoftext|>' has id 3")):
        gl.Tokenizer.from_hf(tmp_path)


def test_reward_model_save_hf_scores_like_gptlab(tmp_path):
    tr = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    cfg = gl.GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16)
    rm = gl.RewardModel(gl.GPT(cfg, seed=3), seed=1)
    rm.head_bias[...] = 0.3
    rm.save_hf(tmp_path / "rm")
    hf = tr.GPT2ForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    idx = np.array([[1, 5, 7, 9, 2]])
    with torch.no_grad():
        want = hf(torch.tensor(idx)).logits[0, 0].item()
    got = float(rm.score(idx, np.array([5]))[0])
    assert abs(got - want) < 1e-4 * max(1.0, abs(want))

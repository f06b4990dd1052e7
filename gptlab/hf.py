"""Hugging Face interop: read and write the folders `transformers` uses.

gptlab's GPT *is* GPT-2, and `model.params` already carries Hugging Face's names and layouts
(``h.0.attn.c_attn.weight`` is the (n_embd, 3*n_embd) Conv1D matrix, input first). So moving
a model across is mostly bookkeeping:

* a **model folder** is ``config.json`` (the shape and the architecture switches) plus
  ``model.safetensors`` (the tensors; ``GPT2LMHeadModel`` prefixes them with ``transformer.``,
  a bare ``GPT2Model`` does not). :func:`load_gpt2_folder` reads any GPT-2 size and refuses,
  with one error naming the field or tensor, what gptlab's architecture cannot run;
  :func:`save_gpt2_folder` writes what ``GPT2LMHeadModel.from_pretrained`` loads.
* a **reward (or value) model folder** is a ``GPT2ForSequenceClassification`` with
  ``num_labels=1``: the trunk plus ``score.weight`` (1, n_embd), a linear layer *without bias*,
  read at the last non-padding token. This is the format TRL's ``RewardTrainer`` writes and its
  ``PPOTrainer`` reads (as reward model and as value model).
* a **tokenizer folder** is ``vocab.json`` + ``merges.txt`` (GPT-2's files), ``tokenizer.json``
  (the `tokenizers` library's one-file form, with the special tokens and pre-tokenizer),
  ``tokenizer_config.json`` (special-token roles and the chat template) and
  ``special_tokens_map.json``.

Every file is written atomically (:func:`gptlab.io.atomic_write`): an interrupted export leaves
each previous file whole. Files that mark a folder complete (``config.json``) are written last.

Example::

    model.save_hf("out/sft", tokenizer=tok)      # then, on a GPU machine:
    # AutoModelForCausalLM.from_pretrained("out/sft"); AutoTokenizer.from_pretrained("out/sft")
    model = GPT.from_hf("out/sft")               # and back, bit for bit
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings

import numpy as np

from .config import GPTConfig
from .io import atomic_write, load_safetensors, save_json, save_safetensors
from .model import GPT
from .tokenizer import Tokenizer

__all__ = ["load_gpt2_folder", "save_gpt2_folder", "load_reward_model_folder",
           "save_reward_model_folder", "load_tokenizer_folder", "save_tokenizer_folder"]

#: activation_function values that are GPT-2's tanh-approximated GELU, which gptlab's C runs.
SUPPORTED_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")
LAYER_NORM_EPS = 1e-5  # fixed in gptlab's C core
# GPT2Config's defaults, used for fields a config.json leaves out (as transformers does).
_HF_DEFAULTS = {"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12,
                "n_head": 12}
# Non-parameter buffers older GPT-2 checkpoints carry (the causal mask): skipped on load.
_BUFFER = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")
PREFIX = "transformer."
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|user|>{{ message['content'] }}"
    "{% elif message['role'] == 'assistant' %}<|assistant|>"
    "{% generation %}{{ message['content'] }}<|end|>{% endgeneration %}"
    "{% else %}{{ raise_exception('gptlab chat template: only user and assistant roles') }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
_CHAT_SPECIALS = ("<|user|>", "<|assistant|>", "<|end|>")


# ---- reading a model folder -------------------------------------------------------------

def _read_json(path: str, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{path}: missing ({what})") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return d


def _config_from_hf(cfg: dict, where: str) -> GPTConfig:
    """The GPTConfig of a Hugging Face GPT-2 config.json, refusing what gptlab cannot run."""

    def field(name, default):
        return cfg.get(name, default) if cfg.get(name) is not None else default

    def refuse(name, why):
        raise ValueError(f"{where}: field {name!r} = {cfg.get(name)!r}: {why}")

    if field("model_type", "gpt2") != "gpt2":
        refuse("model_type", "gptlab reads GPT-2 checkpoints only (model_type 'gpt2')")
    if field("activation_function", "gelu_new") not in SUPPORTED_ACTIVATIONS:
        refuse("activation_function", f"gptlab's MLP uses the tanh GELU; expected one of "
               f"{list(SUPPORTED_ACTIVATIONS)}")
    if field("scale_attn_by_inverse_layer_idx", False):
        refuse("scale_attn_by_inverse_layer_idx", "gptlab scales attention by 1/sqrt(head_dim) "
               "only, not by 1/(layer index + 1)")
    if not field("scale_attn_weights", True):
        refuse("scale_attn_weights", "gptlab always scales attention scores by 1/sqrt(head_dim)")
    if field("add_cross_attention", False):
        refuse("add_cross_attention", "gptlab's GPT-2 is a decoder without cross-attention")
    eps = field("layer_norm_epsilon", LAYER_NORM_EPS)
    if not isinstance(eps, (int, float)) or abs(eps - LAYER_NORM_EPS) > 1e-12:
        refuse("layer_norm_epsilon", f"gptlab's LayerNorm uses eps = {LAYER_NORM_EPS} (fixed)")
    # reorder_and_upcast_attn only changes the order and precision of the attention product
    # in fp16 training (it computes the same function); gptlab computes in float32 anyway.
    shape = {}
    for name, default in _HF_DEFAULTS.items():
        v = field(name, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            refuse(name, "expected a positive integer")
        shape[name] = v
    if shape["n_embd"] % shape["n_head"]:
        refuse("n_head", f"n_embd = {shape['n_embd']} is not divisible by it")
    n_inner = field("n_inner", 4 * shape["n_embd"])
    if n_inner != 4 * shape["n_embd"]:
        refuse("n_inner", f"gptlab's MLP is 4 x n_embd = {4 * shape['n_embd']} wide")
    return GPTConfig(vocab_size=shape["vocab_size"], block_size=shape["n_positions"],
                     n_layer=shape["n_layer"], n_head=shape["n_head"], n_embd=shape["n_embd"])


def _peek_dtypes(path: str) -> None:
    """Refuse bfloat16 files with a clear message (gptlab's reader holds F32/F16/F64)."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(min(n, 100 << 20)).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return  # load_safetensors gives the precise error
    for name, info in header.items() if isinstance(header, dict) else ():
        if isinstance(info, dict) and info.get("dtype") not in (None, "F32", "F16", "F64"):
            raise ValueError(f"{path}: tensor {name!r} has dtype {info.get('dtype')}; gptlab "
                             "reads float32/float16/float64 checkpoints (in transformers: "
                             "model.float().save_pretrained(folder))")


def _read_tensors(folder: str) -> dict[str, np.ndarray]:
    """All tensors of a folder: model.safetensors, or the shards its index.json lists."""
    single = os.path.join(folder, "model.safetensors")
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(single):
        files = [single]
    elif os.path.exists(index):
        weight_map = _read_json(index, "shard index").get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index}: expected a 'weight_map' object")
        files = [os.path.join(folder, f) for f in sorted(set(map(str, weight_map.values())))]
    elif os.path.exists(os.path.join(folder, "pytorch_model.bin")):
        raise ValueError(f"{folder}: has only pytorch_model.bin (a pickle, which gptlab does not "
                         "execute); convert it with transformers: model.save_pretrained(folder, "
                         "safe_serialization=True)")
    else:
        raise ValueError(f"{folder}: no model.safetensors (not a Hugging Face model folder?)")
    tensors: dict[str, np.ndarray] = {}
    for path in files:
        _peek_dtypes(path)
        part, meta = load_safetensors(path)
        for k, v in part.items():
            if k in tensors:
                raise ValueError(f"{path}: tensor {k!r} appears in two shards")
            tensors[k] = v
    return tensors


def _split_tensors(tensors: dict[str, np.ndarray], where: str) -> tuple[dict, dict]:
    """Split checkpoint tensors into trunk tensors (gptlab names, no prefix) and the rest
    (``lm_head.weight``, ``score.weight``, ...); drop the attention-mask buffers."""
    trunk: dict[str, np.ndarray] = {}
    rest: dict[str, np.ndarray] = {}
    for key, value in tensors.items():
        name = key[len(PREFIX):] if key.startswith(PREFIX) else key
        if _BUFFER.match(name):
            continue
        if name.startswith(("wte.", "wpe.", "h.", "ln_f.")):
            if name in trunk:
                raise ValueError(f"{where}: tensor {name!r} appears both with and without the "
                                 f"{PREFIX!r} prefix")
            trunk[name] = value
        else:
            rest[key] = value
    return trunk, rest


def _expected_shapes(c: GPTConfig) -> dict[str, tuple]:
    """Name -> shape of every trunk tensor (GPT2Model's state_dict, as in ``model.params``)."""
    C = c.n_embd
    shapes = {"wte.weight": (c.vocab_size, C), "wpe.weight": (c.block_size, C)}
    for i in range(c.n_layer):
        for name, shape in (("ln_1.weight", (C,)), ("ln_1.bias", (C,)),
                            ("attn.c_attn.weight", (C, 3 * C)), ("attn.c_attn.bias", (3 * C,)),
                            ("attn.c_proj.weight", (C, C)), ("attn.c_proj.bias", (C,)),
                            ("ln_2.weight", (C,)), ("ln_2.bias", (C,)),
                            ("mlp.c_fc.weight", (C, 4 * C)), ("mlp.c_fc.bias", (4 * C,)),
                            ("mlp.c_proj.weight", (4 * C, C)), ("mlp.c_proj.bias", (C,))):
            shapes[f"h.{i}.{name}"] = shape
    shapes.update({"ln_f.weight": (C,), "ln_f.bias": (C,)})
    return shapes


def _load_trunk(config: GPTConfig, trunk: dict[str, np.ndarray], where: str,
                prefix: str) -> GPT:
    """Check every tensor against the config (before allocating anything), then build."""
    expected = _expected_shapes(config)
    for name, shape in expected.items():
        if name not in trunk:
            raise ValueError(f"{where}: missing tensor {prefix + name!r}")
        if tuple(trunk[name].shape) != shape:
            raise ValueError(f"{where}: tensor {prefix + name!r} has shape "
                             f"{tuple(trunk[name].shape)}; config.json implies {shape}")
    extra = sorted(set(trunk) - set(expected))
    if extra:
        raise ValueError(f"{where}: unexpected tensor {prefix + extra[0]!r} (config.json says "
                         f"n_layer={config.n_layer})")
    model = GPT(config)
    try:
        model.load_state_dict(trunk)  # strict: also catches any drift from model.params
    except ValueError as e:  # NaN/Inf: the message names the tensor
        raise ValueError(f"{where}: {e}") from None
    return model


def _open_folder(path) -> tuple[str, dict, GPTConfig, dict, dict, str]:
    folder = os.fspath(path)
    if not os.path.isdir(folder):
        raise ValueError(f"{folder}: not a folder")
    cfg = _read_json(os.path.join(folder, "config.json"), "the model's config")
    config = _config_from_hf(cfg, os.path.join(folder, "config.json"))
    tensors = _read_tensors(folder)
    trunk, rest = _split_tensors(tensors, folder)
    prefix = PREFIX if any(k.startswith(PREFIX) for k in tensors) else ""
    return folder, cfg, config, trunk, rest, prefix


def load_gpt2_folder(path: str | os.PathLike, drop_untied_head: bool = False) -> GPT:
    """Load a Hugging Face GPT-2 folder (``config.json`` + ``model.safetensors``) of any size.

    Reads the folders ``GPT2LMHeadModel``/``GPT2Model.save_pretrained`` write (tensor names
    with or without the ``transformer.`` prefix; the causal-mask buffers ``attn.bias`` /
    ``attn.masked_bias`` of old checkpoints are skipped). gptlab ties the LM head to ``wte``:
    a checkpoint with ``tie_word_embeddings: false`` and a different ``lm_head.weight`` is
    refused unless ``drop_untied_head=True``, which keeps the trunk and uses ``wte`` as the head
    (the logits then differ from the checkpoint's). Anything else gptlab's architecture cannot
    run (another activation, other attention scaling, another LayerNorm epsilon, a different
    MLP width) or a missing, misshapen or extra tensor raises one ValueError naming it.
    """
    folder, cfg, config, trunk, rest, prefix = _open_folder(path)
    head = rest.pop("lm_head.weight", None)
    if rest:
        name = sorted(rest)[0]
        hint = (" (a GPT2ForSequenceClassification folder: use load_reward_model_folder)"
                if name.startswith("score.") else "")
        raise ValueError(f"{folder}: unexpected tensor {name!r}{hint}")
    tied = cfg.get("tie_word_embeddings", True) is not False
    if not tied:
        if head is None:
            raise ValueError(f"{folder}/config.json: field 'tie_word_embeddings' is false but "
                             "there is no tensor 'lm_head.weight'")
        wte = trunk.get("wte.weight")
        if wte is None or head.shape != wte.shape or not np.array_equal(head, wte):
            if not drop_untied_head:
                raise ValueError(
                    f"{folder}: tensor 'lm_head.weight' differs from 'wte.weight' "
                    "(config.json field 'tie_word_embeddings' is false); gptlab's LM head is "
                    "tied to wte: pass drop_untied_head=True to load the trunk and use wte")
            warnings.warn(f"{folder}: dropping the untied lm_head.weight; the LM head is now wte",
                          stacklevel=2)
    return _load_trunk(config, trunk, folder, prefix)


# ---- writing a model folder -------------------------------------------------------------

def _hf_config(model: GPT, architecture: str, bos, eos, pad) -> dict:
    c = model.config
    return {
        "architectures": [architecture],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_positions": c.block_size,
        "n_ctx": c.block_size,
        "n_embd": c.n_embd,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "resid_pdrop": 0.0,  # gptlab trains without dropout; raise these to add it
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "use_cache": True,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "dtype": "float32",
    }


def _check_id(v, name: str, vocab_size: int):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < vocab_size:
        raise ValueError(f"{name}: expected a token id in [0, {vocab_size}) or None, got {v!r}")
    return int(v)


def _special_ids(tokenizer: Tokenizer | None) -> tuple:
    """(bos, eos, pad, end) ids from a gptlab tokenizer: <|endoftext|> and <|end|>."""
    if tokenizer is None:
        return None, None, None, None
    eot = tokenizer.special_tokens.get("<|endoftext|>")
    return eot, eot, eot, tokenizer.special_tokens.get("<|end|>")


def _check_model(model, tokenizer) -> None:
    if not isinstance(model, GPT):
        raise TypeError(f"model: expected a gptlab GPT, got {type(model).__name__}")
    if tokenizer is not None:
        if not isinstance(tokenizer, Tokenizer):
            raise TypeError(f"tokenizer: expected a gptlab Tokenizer, got "
                            f"{type(tokenizer).__name__}")
        if tokenizer.vocab_size > model.config.vocab_size:
            raise ValueError(f"tokenizer: {tokenizer.vocab_size} tokens do not fit the model's "
                             f"vocab_size {model.config.vocab_size}")


def save_gpt2_folder(model: GPT, path: str | os.PathLike, tokenizer: Tokenizer | None = None,
                     *, bos_token_id: int | None = None, eos_token_id: int | None = None,
                     pad_token_id: int | None = None) -> None:
    """Write ``model`` as a folder ``transformers.GPT2LMHeadModel.from_pretrained`` (and
    ``AutoModelForCausalLM``) loads: ``config.json`` and ``model.safetensors`` (float32,
    ``transformer.``-prefixed names, the LM head tied to ``wte`` so it is not stored).

    With ``tokenizer``, the tokenizer files go into the same folder (see
    :func:`save_tokenizer_folder`), bos/eos/pad default to ``<|endoftext|>``, and
    ``generation_config.json`` stops generation at ``<|end|>`` or ``<|endoftext|>``.
    Dropout is written as 0 (gptlab trains without it).
    """
    _check_model(model, tokenizer)
    folder = os.fspath(path)
    os.makedirs(folder, exist_ok=True)
    V = model.config.vocab_size
    bos, eos, pad, end = _special_ids(tokenizer)
    bos = _check_id(bos if bos_token_id is None else bos_token_id, "bos_token_id", V)
    eos = _check_id(eos if eos_token_id is None else eos_token_id, "eos_token_id", V)
    pad = _check_id(pad if pad_token_id is None else pad_token_id, "pad_token_id", V)
    save_safetensors(os.path.join(folder, "model.safetensors"),
                     {PREFIX + k: v for k, v in model.params.items()}, {"format": "pt"})
    if tokenizer is not None:
        save_tokenizer_folder(tokenizer, folder, model_max_length=model.config.block_size)
    stops = [i for i in (end, eos) if i is not None]
    gen = {"bos_token_id": bos, "eos_token_id": stops[0] if len(stops) == 1 else stops or None,
           "pad_token_id": pad}
    save_json(os.path.join(folder, "generation_config.json"), gen)
    save_json(os.path.join(folder, "config.json"),
              _hf_config(model, "GPT2LMHeadModel", bos, eos, pad))


# ---- reward / value models --------------------------------------------------------------

def save_reward_model_folder(trunk: GPT, head_weight, head_bias: float,
                             path: str | os.PathLike, pad_token_id: int,
                             tokenizer: Tokenizer | None = None) -> None:
    """Write a scalar-head model (reward model or value model: the trunk's final hidden state
    ``h`` (after ``ln_f``) at a token, times ``head_weight`` (n_embd,), plus ``head_bias``) as
    a ``GPT2ForSequenceClassification`` folder with ``num_labels=1``, the format TRL's
    ``RewardTrainer`` writes and its ``PPOTrainer`` loads as reward and value model.

    Hugging Face's ``score`` layer has **no bias**. The bias is folded into ``ln_f.bias``
    instead, which is exact in real arithmetic: ``ln_f`` feeds only the score in this model,
    and with ``delta = b * w / (w . w)``, ``(h + delta) . w = h . w + b``. The exported
    ``transformer.ln_f.bias`` therefore differs from the trunk's by ``delta`` (and the value
    of ``b`` is recorded in config.json as ``gptlab_score_bias``); the scores agree to float32
    rounding. A nonzero bias with an all-zero weight cannot be folded and is refused.

    The score is read at the last token that is not ``pad_token_id`` (so pad on the right with
    it, and do not end a sequence with it); ``<|endoftext|>`` is the usual choice.
    """
    _check_model(trunk, tokenizer)
    C = trunk.config.n_embd
    w = np.asarray(head_weight, dtype=np.float64)
    if w.shape not in ((C,), (1, C)):
        raise ValueError(f"head_weight: expected shape ({C},) or (1, {C}), got {w.shape}")
    w = w.reshape(C)
    b = float(head_bias)
    if not (np.isfinite(w).all() and np.isfinite(b)):
        raise ValueError("head_weight/head_bias: expected finite numbers")
    pad = _check_id(pad_token_id, "pad_token_id", trunk.config.vocab_size)
    if pad is None:
        raise ValueError("pad_token_id: required (GPT2ForSequenceClassification finds the last "
                         "token of each row through it)")
    ww = float(w @ w)
    if b != 0.0 and ww == 0.0:
        raise ValueError("head_bias: a nonzero bias with an all-zero head_weight cannot be "
                         "folded into ln_f.bias (Hugging Face's score layer has no bias)")
    tensors = {PREFIX + k: v for k, v in trunk.params.items()}
    if b != 0.0:
        delta = b * w / ww
        tensors[PREFIX + "ln_f.bias"] = (trunk.params["ln_f.bias"] + delta).astype(np.float32)
    tensors["score.weight"] = w.astype(np.float32).reshape(1, C)
    folder = os.fspath(path)
    os.makedirs(folder, exist_ok=True)
    save_safetensors(os.path.join(folder, "model.safetensors"), tensors, {"format": "pt"})
    if tokenizer is not None:
        save_tokenizer_folder(tokenizer, folder, model_max_length=trunk.config.block_size)
    bos, eos, _, _ = _special_ids(tokenizer)
    cfg = _hf_config(trunk, "GPT2ForSequenceClassification", bos, eos, pad)
    cfg.update({"num_labels": 1, "id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0},
                "gptlab_score_bias": b})
    save_json(os.path.join(folder, "config.json"), cfg)


def load_reward_model_folder(path: str | os.PathLike) -> tuple[GPT, np.ndarray, float]:
    """Read a ``GPT2ForSequenceClassification`` folder with one label -> (trunk, head_weight
    (n_embd,) float32, head_bias). Hugging Face's score has no bias, so head_bias is 0.0 (a
    bias exported by :func:`save_reward_model_folder` lives in the trunk's ``ln_f.bias``)."""
    folder, _, config, trunk, rest, prefix = _open_folder(path)
    score = rest.pop("score.weight", None)
    if score is None:
        raise ValueError(f"{folder}: missing tensor 'score.weight' (not a "
                         "GPT2ForSequenceClassification folder?)")
    if score.ndim != 2 or score.shape[0] != 1:
        raise ValueError(f"{folder}: tensor 'score.weight' has shape {score.shape}: a reward "
                         "or value model has one output (num_labels 1)")
    if score.shape[1] != config.n_embd:
        raise ValueError(f"{folder}: tensor 'score.weight' has shape {score.shape}; expected "
                         f"(1, {config.n_embd})")
    if rest:
        raise ValueError(f"{folder}: unexpected tensor {sorted(rest)[0]!r}")
    model = _load_trunk(config, trunk, folder, prefix)
    return model, np.ascontiguousarray(score[0], dtype=np.float32), 0.0


# ---- tokenizers -------------------------------------------------------------------------

def _tokenizer_json(tok: Tokenizer) -> dict:
    names = [tok.id_to_token(i) for i in range(tok.vocab_size)]
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}
             for s, i in sorted(tok.special_tokens.items(), key=lambda kv: kv[1])]
    byte_level = {"add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", **byte_level},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True,
                           "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", **byte_level},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": False,
                  "byte_fallback": False, "ignore_merges": False,
                  "vocab": {s: i for i, s in enumerate(names)},
                  "merges": [[names[a], names[b]] for a, b in tok.merges]},
    }


def save_tokenizer_folder(tok: Tokenizer, path: str | os.PathLike,
                          model_max_length: int | None = None) -> None:
    """Write ``tok`` so ``transformers.AutoTokenizer.from_pretrained(path)`` (a
    ``GPT2Tokenizer``/``GPT2TokenizerFast``) encodes exactly as ``tok.encode(text,
    allowed_special="all")``: Hugging Face always turns special-token text into the special id.

    Files: ``vocab.json``, ``merges.txt``, ``tokenizer.json``, ``tokenizer_config.json`` (bos,
    eos, unk and pad = ``<|endoftext|>``; the other special tokens as additional special tokens;
    when the tokenizer has the chat tokens, a ``chat_template`` that renders
    ``<|user|>..<|assistant|>..<|end|>`` as gptlab's ``chat.render`` does, with
    ``{% generation %}`` marks for assistant-only losses) and ``special_tokens_map.json``.
    """
    if not isinstance(tok, Tokenizer):
        raise TypeError(f"tok: expected a gptlab Tokenizer, got {type(tok).__name__}")
    folder = os.fspath(path)
    os.makedirs(folder, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tokenizer.", dir=folder)
    try:  # save_gpt2_files writes in place; stage its files, then rename each atomically
        tok.save_gpt2_files(os.path.join(staging, "vocab.json"),
                            os.path.join(staging, "merges.txt"))
        for name in ("vocab.json", "merges.txt"):
            os.replace(os.path.join(staging, name), os.path.join(folder, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    with atomic_write(os.path.join(folder, "tokenizer.json"), "w") as f:
        json.dump(_tokenizer_json(tok), f, ensure_ascii=False)
    eot = "<|endoftext|>" if "<|endoftext|>" in tok.special_tokens else None
    roles = {"bos_token": eot, "eos_token": eot, "unk_token": eot, "pad_token": eot}
    extra = [s for s in tok.special_tokens if s != eot]
    special_map = {k: v for k, v in roles.items() if v is not None}
    special_map["additional_special_tokens"] = extra
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_prefix_space": False,
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "model_max_length": int(model_max_length) if model_max_length else 1 << 60,
        **special_map,
        "added_tokens_decoder": {
            str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                     "single_word": False, "special": True}
            for s, i in tok.special_tokens.items()},
    }
    if all(s in tok.special_tokens for s in _CHAT_SPECIALS):
        config["chat_template"] = CHAT_TEMPLATE
    save_json(os.path.join(folder, "special_tokens_map.json"), special_map)
    save_json(os.path.join(folder, "tokenizer_config.json"), config)


def _added_tokens(folder: str, tj: dict | None) -> dict[str, int]:
    """Special (added) tokens -> id, from tokenizer.json, else tokenizer_config.json."""
    out: dict[str, int] = {}
    if tj is not None:
        entries = tj.get("added_tokens") or []
        if not isinstance(entries, list):
            raise ValueError(f"{folder}/tokenizer.json: 'added_tokens' must be a list")
        for e in entries:
            if not (isinstance(e, dict) and isinstance(e.get("content"), str)
                    and type(e.get("id")) is int):
                raise ValueError(f"{folder}/tokenizer.json: malformed added token {e!r}")
            out[e["content"]] = e["id"]
        return out
    cfg_path = os.path.join(folder, "tokenizer_config.json")
    if os.path.exists(cfg_path):
        decoder = _read_json(cfg_path, "tokenizer config").get("added_tokens_decoder") or {}
        for i, e in decoder.items() if isinstance(decoder, dict) else ():
            if isinstance(e, dict) and isinstance(e.get("content"), str) and str(i).isdigit():
                out[e["content"]] = int(i)
    return out


def _check_tokenizer_json(tj: dict, where: str) -> None:
    model = tj.get("model")
    if not isinstance(model, dict) or model.get("type") != "BPE":
        raise ValueError(f"{where}: field 'model.type' must be 'BPE' (gptlab reads byte-level "
                         "BPE tokenizers)")
    pre = tj.get("pre_tokenizer")
    if not (isinstance(pre, dict) and pre.get("type") == "ByteLevel"
            and pre.get("use_regex", True) and not pre.get("add_prefix_space", False)):
        raise ValueError(f"{where}: field 'pre_tokenizer' = {pre!r}: gptlab implements GPT-2's "
                         "pre-tokenizer only (ByteLevel, use_regex true, add_prefix_space false)")
    if tj.get("normalizer") is not None:
        raise ValueError(f"{where}: field 'normalizer' must be null (GPT-2 has no normalizer)")
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            raise ValueError(f"{where}: field 'model.{key}' must be empty")
    if model.get("dropout"):
        raise ValueError(f"{where}: field 'model.dropout' must be null (BPE dropout)")


def load_tokenizer_folder(path: str | os.PathLike) -> Tokenizer:
    """Read a Hugging Face GPT-2-style tokenizer folder into a gptlab :class:`Tokenizer`.

    Uses ``tokenizer.json`` when present (that is what ``AutoTokenizer`` reads; transformers 5
    writes only it), else ``vocab.json`` + ``merges.txt``. Added tokens (from tokenizer.json,
    else ``tokenizer_config.json``'s ``added_tokens_decoder``) become gptlab special tokens with
    the same ids. Refuses, naming the field, tokenizers gptlab cannot reproduce (not byte-level
    BPE with GPT-2's pre-tokenizer).
    """
    folder = os.fspath(path)
    if not os.path.isdir(folder):
        raise ValueError(f"{folder}: not a folder")
    tj_path = os.path.join(folder, "tokenizer.json")
    tj = _read_json(tj_path, "tokenizer") if os.path.exists(tj_path) else None
    added = _added_tokens(folder, tj)
    with tempfile.TemporaryDirectory() as tmp:
        if tj is not None:
            _check_tokenizer_json(tj, tj_path)
            vocab, merges = tj["model"].get("vocab"), tj["model"].get("merges")
            if not isinstance(vocab, dict) or not isinstance(merges, list):
                raise ValueError(f"{tj_path}: fields 'model.vocab' and 'model.merges' must be "
                                 "an object and a list")
            vocab = dict(vocab)
            for s, i in added.items():  # added tokens may be outside model.vocab
                vocab.setdefault(s, i)
            vocab_json, merges_txt = os.path.join(tmp, "vocab.json"), os.path.join(tmp, "m.txt")
            with open(vocab_json, "w", encoding="utf-8") as f:
                json.dump(vocab, f, ensure_ascii=False)
            with open(merges_txt, "w", encoding="utf-8") as f:
                for m in merges:
                    if isinstance(m, list) and len(m) == 2 and all(isinstance(x, str) for x in m):
                        m = f"{m[0]} {m[1]}"
                    if not isinstance(m, str) or "\n" in m:
                        raise ValueError(f"{tj_path}: malformed merge {m!r} in 'model.merges'")
                    f.write(m + "\n")
        else:
            vocab_json = os.path.join(folder, "vocab.json")
            merges_txt = os.path.join(folder, "merges.txt")
            for p in (vocab_json, merges_txt):
                if not os.path.exists(p):
                    raise ValueError(f"{folder}: no tokenizer.json and no {os.path.basename(p)}")
        with open(vocab_json, encoding="utf-8") as f:
            in_vocab = json.load(f)
        if not isinstance(in_vocab, dict):
            raise ValueError(f"{vocab_json}: expected a JSON object {{token: id}}")
        extra = [s for s, _ in sorted(added.items(), key=lambda kv: kv[1]) if s not in in_vocab]
        tok = Tokenizer.from_gpt2_files(vocab_json, merges_txt,
                                        special_tokens=[s for s in added if s in in_vocab] + extra)
    for s, i in added.items():
        if tok.special_tokens.get(s) != i:
            raise ValueError(f"{folder}: added token {s!r} has id {i}, but gptlab would give it "
                             f"{tok.special_tokens.get(s)} (added-token ids must follow the "
                             "vocabulary without gaps)")
    return tok

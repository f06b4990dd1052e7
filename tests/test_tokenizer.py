"""Tests of the byte-level BPE tokenizer (csrc/bpe.c, gptlab/tokenizer.py).

Independent references written here: GPT-2's pattern run by the `regex` module, GPT-2's
original merge loop and a naive trainer that recounts every pair after each merge. Where
installed, Hugging Face `tokenizers` and `tiktoken` are compared too.
"""

import ast
import glob
import json
import os
import random
import re
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gptlab
from gptlab import _core
from gptlab.tokenizer import GPT2_PATTERN, SPECIAL_TOKENS, Tokenizer

try:  # the reference pre-tokeniser (a dependency of tiktoken; in the test extra)
    import regex
except ImportError:
    regex = None

needs_regex = pytest.mark.skipif(regex is None, reason="needs the regex module")

# ---- corpora ---------------------------------------------------------------------------

CHINESE = (
    "ChatGPT 發展流程\n\n## 參考資料\n\n分析OpenAI各模型的演進關係，理解OpenAI中各個模型API能力"
    "及ChatGPT發展。介紹ChatGPT 原理與訓練流程，包含如何訓練與應用。\n\n### 訓練階段如下\n"
    "* Pretraining(佔整體約99%的時間)\n* zero-shot prompting : 不須微調與訓練就能有基本的效果。\n"
    "* 語言生成 : 訓練包含 300B 的 Tokens，實現了由提示詞(prompt) → 生成補全的句子(completion)。\n"
    "* 情境學習(in-context learning) : 給予配對範例(如: 動物→幾隻腳，再問新的動物是幾隻腳)。\n"
    "獎勵模型對回答進行排序，再以強化學習（PPO）微調策略模型，使回答更符合人類偏好。\n"
)


def _docstrings(max_chars: int) -> str:
    """English text: docstrings of the standard library (no download needed)."""
    root = os.path.dirname(os.__file__)
    out, n = [], 0
    for path in sorted(glob.glob(os.path.join(root, "*.py"))):
        try:
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)):
                d = ast.get_docstring(node)
                if d:
                    out.append(d)
                    n += len(d)
        if n >= max_chars:
            break
    return "\n\n".join(out)[:max_chars]


ENGLISH = _docstrings(300_000)
with open(os.path.join(os.path.dirname(json.__file__), "decoder.py"), encoding="utf-8") as _f:
    CODE = _f.read()


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train([ENGLISH[:200_000], CHINESE, CODE], vocab_size=1024)


@pytest.fixture(scope="module")
def small_tok():
    return Tokenizer.train(ENGLISH[:20_000], vocab_size=300)


# ---- independent references ------------------------------------------------------------


def ref_pretokenize(text):
    return regex.findall(GPT2_PATTERN, text)


def ref_encode(tok, text):
    """GPT-2's encoder.py: per piece, merge the lowest-ranked bigram (leftmost) until none."""
    ranks = {pair: r for r, pair in enumerate(tok.merges)}
    by_bytes = {tok.token_bytes(i): i for i in range(tok.vocab_size)
                if i not in tok.special_tokens.values()}
    out = []
    for piece in ref_pretokenize(text):
        syms = [by_bytes[bytes([b])] for b in piece.encode("utf-8", "surrogatepass")]
        while len(syms) > 1:
            pairs = list(zip(syms, syms[1:]))
            k = min(range(len(pairs)), key=lambda i: ranks.get(pairs[i], float("inf")))
            if pairs[k] not in ranks:
                break
            merged = by_bytes[tok.token_bytes(syms[k]) + tok.token_bytes(syms[k + 1])]
            syms[k : k + 2] = [merged]
        out += syms
    return out


def ref_train(docs, vocab_size, specials):
    """Naive BPE training: recount all pairs after every merge; most frequent pair first,
    ties to the smallest (left id, right id). Returns the merges."""
    cut = "|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True))
    counts = Counter()
    for doc in docs:
        for part in re.split(cut, doc) if cut else [doc]:
            for piece in ref_pretokenize(part):
                counts[tuple(piece.encode("utf-8"))] += 1
    words = dict(counts)
    tokens = [bytes([b]) for b in range(256)]
    ids = {t: i for i, t in enumerate(tokens)}
    merges = []
    while len(tokens) < vocab_size - len(specials):
        pairs = Counter()
        for w, c in words.items():
            for p in zip(w, w[1:]):
                pairs[p] += c
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        new = tokens[best[0]] + tokens[best[1]]
        if new not in ids:
            ids[new] = len(tokens)
            tokens.append(new)
        z = ids[new]
        merges.append(best)
        nw = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(z)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            nw[tuple(out)] = c
        words = nw
    return merges


# ---- pre-tokenisation ------------------------------------------------------------------

PRETOKENIZE_CASES = [
    "Hello  world's   end\n\n  x",
    "don't I'll we've they're he'd She'S 'tis ''s",
    "   leading and trailing   ",
    "tabs\tand\r\nnewlines\n\nend\n",
    "numbers 123 4.5e6 ٣٤ ²³ Ⅻ",
    "naïve café e\u0301 a\u0300\u0301b",
    "中文没有空格，但有标点。日本語のテキスト",
    "emoji 😀😀 👍🏽 and NBSP\u00a0here\u3000ideographic space",
    "\x00nul\x00 \x1c\x1f controls",
    "!!! ... --> x==y;  ' ?",
]


@needs_regex
@pytest.mark.parametrize("text", PRETOKENIZE_CASES)
def test_pretokenize_matches_regex_module(small_tok, text):
    assert small_tok.pretokenize(text) == ref_pretokenize(text)


@needs_regex
def test_unicode_classes_match_regex_module_for_every_code_point(small_tok):
    # "a" + c + "1": pieces differ unless c is classed as letter / number / other alike
    text = "".join("a" + chr(cp) + "1" for cp in range(0x110000))
    assert small_tok.pretokenize(text) == ref_pretokenize(text)


@needs_regex
@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec=None, categories=None), max_size=60))
def test_pretokenize_matches_regex_module_on_random_text(small_tok, text):
    assert small_tok.pretokenize(text) == ref_pretokenize(text)


# ---- encode / decode -------------------------------------------------------------------

ROUNDTRIP_EXTRAS = st.sampled_from(
    ["😀", "👍🏽", "中文", "日本", "e\u0301", "\u0000", "\ud800", "\udfff", "\ud83d\ude00", " ",
     "  ", "\n", "'s", "<|endoftext|>", "<|user|>", "\u00a0", "Ⅻ", "\U0010ffff"]
)


LONE_SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(alphabet=st.characters(codec=None, categories=None),
                                  max_size=20), ROUNDTRIP_EXTRAS, LONE_SURROGATES),
                max_size=12).map("".join))
def test_decode_of_encode_is_identity_for_any_str(tok, text):
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(text, allowed_special="all")) == text


@needs_regex
@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec=None, categories=None), max_size=80))
def test_encode_matches_gpt2_reference_merge_loop_on_random_text(tok, text):
    assert tok.encode(text) == ref_encode(tok, text)


@needs_regex
@pytest.mark.parametrize("name", ["english", "chinese", "code"])
def test_encode_matches_gpt2_reference_merge_loop_on_corpora(tok, name):
    text = {"english": ENGLISH[200_000:230_000], "chinese": CHINESE, "code": CODE}[name]
    assert tok.encode(text) == ref_encode(tok, text)


@needs_regex
def test_long_pieces_use_the_same_merge_order(tok):
    # pieces longer than the small-piece path (128 bytes) go through the heap-based merge
    rng = random.Random(0)
    for text in ["a" * 1000, "ab" * 700, "中文字" * 200, "=" * 333 + "-" * 200,
                 "".join(rng.choice("abcdefghij") for _ in range(2000)), " " * 517 + "x"]:
        assert tok.encode(text) == ref_encode(tok, text)


def test_encode_to_numpy_and_encode_batch_agree_with_encode(tok):
    texts = [ENGLISH[i : i + 997] for i in range(0, 40_000, 1000)] + ["", CHINESE, CODE]
    want = [tok.encode(t) for t in texts]
    assert [tok.encode_to_numpy(t).tolist() for t in texts] == want
    old = gptlab.get_num_threads()
    try:
        for n in (1, 2, 3):
            gptlab.set_num_threads(n)
            assert tok.encode_batch(texts) == want
    finally:
        gptlab.set_num_threads(old)


def test_decode_replaces_invalid_utf8_and_decode_bytes_is_exact(tok):
    smile = "😀".encode()  # F0 9F 98 80
    cut = [tok.token_to_id(_byte_alphabet()[b]) for b in smile[:3]]  # a cut character
    assert tok.decode_bytes(cut) == smile[:3]
    assert tok.decode(cut) == "\ufffd"
    junk = [tok.token_to_id(_byte_alphabet()[b]) for b in (0xFF, ord("A"), 0xC3)]
    assert tok.decode(junk) == "\ufffdA\ufffd"
    assert tok.decode_bytes(tok.encode("😀")) == smile
    assert tok.decode([]) == "" and tok.decode_bytes(np.zeros(0, np.int64)) == b""


def test_every_token_round_trips_through_id_to_token(tok):
    for i in range(tok.vocab_size):
        assert tok.token_to_id(tok.id_to_token(i)) == i


# ---- special tokens --------------------------------------------------------------------


def test_special_tokens_are_the_last_ids_and_named(tok):
    V = tok.vocab_size
    assert list(tok.special_tokens) == list(SPECIAL_TOKENS)
    assert list(tok.special_tokens.values()) == list(range(V - len(SPECIAL_TOKENS), V))
    assert tok.eot_id == tok.special_tokens["<|endoftext|>"]
    for s, i in tok.special_tokens.items():
        assert tok.token_to_id(s) == i and tok.id_to_token(i) == s


def test_special_text_becomes_a_special_id_only_when_allowed(tok):
    sp = tok.special_tokens
    text = "<|user|>Hi!<|end|><|assistant|>Hello.<|end|><|endoftext|>"
    none = tok.encode(text)
    assert not set(none) & set(sp.values())
    assert tok.decode(none) == text
    ids = tok.encode(text, allowed_special="all")
    assert [i for i in ids if i in sp.values()] == [sp["<|user|>"], sp["<|end|>"],
                                                      sp["<|assistant|>"], sp["<|end|>"],
                                                      sp["<|endoftext|>"]]
    # the same as concatenating special ids and ordinary encodings
    assert ids == ([sp["<|user|>"]] + tok.encode("Hi!") + [sp["<|end|>"], sp["<|assistant|>"]]
                   + tok.encode("Hello.") + [sp["<|end|>"], sp["<|endoftext|>"]])
    some = tok.encode(text, allowed_special={"<|end|>"})
    assert [i for i in some if i in sp.values()] == [sp["<|end|>"]] * 2
    assert tok.decode(some) == text
    assert tok.encode_batch([text], allowed_special="all") == [ids]


def test_training_never_merges_across_or_into_special_tokens():
    eot = "<|endoftext|>"
    docs = [ENGLISH[i : i + 3000] for i in range(0, 30_000, 3000)]
    a = Tokenizer.train(eot.join(docs), vocab_size=400)
    b = Tokenizer.train(docs, vocab_size=400)
    assert a.merges == b.merges


# ---- training --------------------------------------------------------------------------


@needs_regex
def test_training_matches_naive_reference_trainer():
    text = ENGLISH[:15_000] + "<|endoftext|>" + CHINESE
    merges = ref_train([text], 460, list(SPECIAL_TOKENS))
    tok = Tokenizer.train(text, vocab_size=460)
    assert tok.merges == merges
    assert tok.vocab_size == 460


def test_training_is_deterministic_and_vocab_size_counts_specials():
    a = Tokenizer.train(ENGLISH[:50_000], vocab_size=700)
    b = Tokenizer.train(ENGLISH[:50_000], vocab_size=700)
    assert a.merges == b.merges and a.vocab_size == b.vocab_size == 700
    c = Tokenizer.train(ENGLISH[:50_000], vocab_size=700, special_tokens=[])
    assert c.vocab_size == 700 and c.special_tokens == {}
    assert len(c.merges) == len(a.merges) + len(SPECIAL_TOKENS)


def test_training_stops_when_no_pair_is_left():
    tok = Tokenizer.train("ab ab", vocab_size=1000)
    assert tok.vocab_size < 1000 and tok.encode("ab ab") == [tok.token_to_id("ab"),
                                                               tok.token_to_id("Ġab")]
    empty = Tokenizer.train([], vocab_size=300)
    assert empty.vocab_size == 256 + len(SPECIAL_TOKENS)
    assert empty.decode(empty.encode("any text ü")) == "any text ü"


# ---- files -----------------------------------------------------------------------------


def test_save_load_round_trip(tok, tmp_path):
    tok.save(tmp_path / "tok.json")
    back = Tokenizer.load(tmp_path / "tok.json")
    assert back.merges == tok.merges and back.special_tokens == tok.special_tokens
    assert [back.token_bytes(i) for i in range(back.vocab_size)] == \
        [tok.token_bytes(i) for i in range(tok.vocab_size)]
    text = CHINESE + "<|user|>" + ENGLISH[:5000]
    assert back.encode(text, "all") == tok.encode(text, "all")


def test_pickle_and_deepcopy_give_an_equal_tokenizer(tok):
    import copy
    import pickle

    for back in (pickle.loads(pickle.dumps(tok)), copy.deepcopy(tok)):
        assert back.merges == tok.merges and back.special_tokens == tok.special_tokens
        assert back.encode(CHINESE + "<|end|>", "all") == tok.encode(CHINESE + "<|end|>", "all")


def test_gpt2_files_round_trip(tok, tmp_path):
    tok.save_gpt2_files(tmp_path / "vocab.json", tmp_path / "merges.txt")
    back = Tokenizer.from_gpt2_files(tmp_path / "vocab.json", tmp_path / "merges.txt")
    assert back.merges == tok.merges and back.special_tokens == tok.special_tokens
    assert back.encode(CODE) == tok.encode(CODE)
    more = Tokenizer.from_gpt2_files(tmp_path / "vocab.json", tmp_path / "merges.txt",
                                     special_tokens=["<|end|>", "<|tool|>"])
    assert more.vocab_size == tok.vocab_size + 1
    assert more.special_tokens["<|tool|>"] == tok.vocab_size


def test_corrupted_tokenizer_files_raise_value_error_never_crash(small_tok, tmp_path):
    path = tmp_path / "tok.json"
    small_tok.save(path)
    good = path.read_bytes()
    rng = random.Random(1)
    mutants = [good[: rng.randrange(len(good))] for _ in range(40)]
    for _ in range(160):
        b = bytearray(good)
        for _ in range(rng.choice([1, 1, 2, 5])):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        mutants.append(bytes(b))
    mutants += [b"", b"{}", b"[]", b"null", b"\xff\xfe", b"[" * 100_000, good.replace(b"[", b"{")]
    loaded = 0
    for m in mutants:
        path.write_bytes(m)
        try:
            t = Tokenizer.load(path)
        except (ValueError, TypeError):
            continue
        loaded += 1  # a flip can leave a valid file (e.g. inside a token's text): still usable
        assert t.decode(t.encode("hello world")) == "hello world"
    assert loaded < len(mutants) // 2


def test_merges_file_with_unknown_token_raises(tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps(
        {**{c: i for i, c in enumerate(_byte_alphabet())}, "ab": 256}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\n")
    ok = Tokenizer.from_gpt2_files(tmp_path / "vocab.json", tmp_path / "merges.txt")
    assert ok.encode("ab") == [256]
    for bad in ["#version: 0.2\na zz\n", "#version: 0.2\nb a\n", "a b c\n", "ab\n"]:
        (tmp_path / "merges.txt").write_text(bad)
        with pytest.raises(ValueError):
            Tokenizer.from_gpt2_files(tmp_path / "vocab.json", tmp_path / "merges.txt")
    (tmp_path / "merges.txt").write_text("a b\n")
    (tmp_path / "vocab.json").write_text(json.dumps({"a": 0, "b": 1, "ab": 2}))
    with pytest.raises(ValueError, match="byte"):  # lacks the 253 other byte tokens
        Tokenizer.from_gpt2_files(tmp_path / "vocab.json", tmp_path / "merges.txt")


def _byte_alphabet():
    from gptlab.tokenizer import _BYTE_CHARS

    return _BYTE_CHARS


# ---- bad input -------------------------------------------------------------------------


def test_bad_input_raises_type_or_value_error(tok):
    with pytest.raises(TypeError):
        tok.encode(b"bytes")
    with pytest.raises(TypeError):
        tok.encode(None)
    with pytest.raises(TypeError):
        tok.encode_batch("not a list")
    with pytest.raises(TypeError):
        tok.encode_batch(["ok", 3])
    with pytest.raises(ValueError):
        tok.encode("x", allowed_special="some")
    with pytest.raises(ValueError):
        tok.encode("x", allowed_special={"<|nope|>"})
    with pytest.raises(TypeError):
        tok.encode("x", allowed_special=3)
    with pytest.raises(ValueError):
        tok.decode([0, tok.vocab_size])
    with pytest.raises(ValueError):
        tok.decode([-1])
    with pytest.raises(TypeError):
        tok.decode([1.5])
    with pytest.raises(ValueError):
        tok.decode([[1, 2]])
    with pytest.raises(ValueError):
        tok.id_to_token(tok.vocab_size)
    with pytest.raises(TypeError):
        tok.id_to_token("3")
    with pytest.raises(ValueError):
        tok.token_to_id("<|nope|>")
    with pytest.raises(ValueError):
        Tokenizer.train("text", vocab_size=256 + len(SPECIAL_TOKENS) - 1)
    with pytest.raises(ValueError):
        Tokenizer.train("text", vocab_size=255, special_tokens=[])
    with pytest.raises(TypeError):
        Tokenizer.train("text", vocab_size=300.0)
    with pytest.raises(TypeError):
        Tokenizer.train(b"bytes", vocab_size=300)
    with pytest.raises(TypeError):
        Tokenizer.train(["ok", None], vocab_size=300)
    with pytest.raises(ValueError):
        Tokenizer.train("text", vocab_size=300, special_tokens=["<|a|>", "<|a|>"])
    with pytest.raises(TypeError):
        Tokenizer.train("text", vocab_size=300, special_tokens=[""])


def test_core_rejects_foreign_handles_and_inconsistent_vocabularies():
    with pytest.raises(TypeError):
        _core.bpe_encode(object(), "x", None)
    trainer = _core.bpe_trainer_new([])
    with pytest.raises(TypeError):
        _core.bpe_encode(trainer, "x", None)
    blob = bytes(range(256))
    off = np.arange(257, dtype=np.int32)
    spec = np.zeros(256, np.int32)
    none = np.zeros((0, 2), np.int32)
    assert _core.bpe_info(_core.bpe_new(blob, off, spec, none))[0][65] == b"A"
    with pytest.raises(ValueError):  # last offset beyond the blob
        _core.bpe_new(blob[:-1], off, spec, none)
    with pytest.raises(ValueError):  # duplicate token bytes
        _core.bpe_new(blob[:-1] + b"A", off, spec, none)
    with pytest.raises(ValueError):  # merge result missing from the vocabulary
        _core.bpe_new(blob, off, spec, np.array([[65, 66]], np.int32))
    with pytest.raises(ValueError):  # merge id out of range
        _core.bpe_new(blob, off, spec, np.array([[65, 999]], np.int32))
    with pytest.raises(TypeError):
        _core.bpe_new(blob, off.astype(np.int64), spec, none)


# ---- parity with Hugging Face tokenizers and tiktoken ----------------------------------


def _hf_train(text, vocab_size, specials):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, min_frequency=0, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator([text], trainer)
    return hf


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
    text = ENGLISH[:200_000] + CHINESE * 5
    hf = _hf_train(text, 2048, ["<|endoftext|>"])
    d = tmp_path_factory.mktemp("hf")
    hf.model.save(str(d))
    ours = Tokenizer.from_gpt2_files(d / "vocab.json", d / "merges.txt")
    return hf, ours


@pytest.mark.parametrize("name", ["english", "chinese", "code"])
def test_encode_matches_huggingface_and_tiktoken_on_a_hf_trained_vocab(hf_pair, name):
    hf, ours = hf_pair
    text = {"english": ENGLISH[200_000:260_000], "chinese": CHINESE, "code": CODE}[name]
    ids = ours.encode(text)
    assert ids == hf.encode(text).ids
    assert ours.special_tokens == {"<|endoftext|>": hf.token_to_id("<|endoftext|>")}
    tiktoken = pytest.importorskip("tiktoken")
    ranks = {ours.token_bytes(i): i for i in range(ours.vocab_size) if i != ours.eot_id}
    enc = tiktoken.Encoding("hf", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                            special_tokens={})
    assert ids == enc.encode_ordinary(text)


def test_tokens_per_byte_within_one_percent_of_huggingface_trainer():
    text = ENGLISH[:200_000]
    hf = _hf_train(text, 1024, ["<|endoftext|>"])
    ours = Tokenizer.train(text, vocab_size=1024, special_tokens=["<|endoftext|>"])
    held_out = ENGLISH[200_000:300_000]
    ratio = len(ours.encode(held_out)) / len(hf.encode(held_out).ids)
    assert abs(ratio - 1) <= 0.01

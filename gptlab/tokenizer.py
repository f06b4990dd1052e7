"""Byte-level BPE tokenization, as in GPT-2 (the C code is in csrc/bpe.c).

A language model reads integers, not text. A *tokenizer* maps text to a list of integer ids
(`encode`) and back (`decode`). Byte-level Byte-Pair Encoding works like this:

1. **Bytes.** The text is taken as its UTF-8 bytes, so the 256 byte values are the first 256
   tokens and *any* string can be encoded: emoji, Chinese, code, binary junk. Nothing is ever
   "unknown", and decoding returns exactly the bytes that were encoded.
2. **Pre-tokenisation.** GPT-2's pattern cuts the text into pieces: contractions (`'s`, `'ll`),
   words with their leading space (`" dog"`), numbers, runs of punctuation, whitespace.
   Tokens never cross a piece boundary, so `" dog"` is the same token in `" dog."` and
   `" dog,"`. `tok.pretokenize(text)` shows the pieces.
3. **Merges.** Training counts every adjacent pair of tokens in the corpus, merges the most
   frequent pair into a new token (`"t" + "h" -> "th"`), updates the counts, and repeats until
   the vocabulary has `vocab_size` tokens. Encoding replays the merges on each piece, the
   earliest-learned (lowest rank) first. Frequent words end up as one token; rare words split
   into a few common pieces.
4. **Special tokens** such as `<|endoftext|>` or the chat markers `<|user|>`, `<|assistant|>`,
   `<|end|>` are ids that no text produces by accident: `encode` emits them only where you allow
   it (`allowed_special="all"`), otherwise their text is encoded like any other text.

Example::

    tok = Tokenizer.train(text, vocab_size=2048)
    ids = tok.encode("<|user|>Hi!<|end|>", allowed_special="all")
    tok.decode(ids)                         # '<|user|>Hi!<|end|>'
    [tok.id_to_token(i) for i in tok.encode(" the mat.")]   # e.g. ['Ġthe', 'Ġmat', '.']

`id_to_token` shows ordinary tokens in GPT-2's printable byte alphabet (a space is shown
as 'Ġ', a newline as 'Ċ'), the convention of Hugging Face's vocab.json files.
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Iterable, Sequence

import numpy as np

from . import _core
from .io import atomic_write

__all__ = ["Tokenizer", "SPECIAL_TOKENS", "GPT2_PATTERN"]

#: The special tokens of a trained tokenizer, in id order after the ordinary tokens.
SPECIAL_TOKENS = ("<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>")

#: GPT-2's pre-tokenisation pattern (implemented by hand in csrc/bpe.c, Unicode classes).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

FORMAT_NAME = "gptlab-bpe"
FORMAT_VERSION = 1
MAX_VOCAB_SIZE = 1 << 24

AllowedSpecial = str | Iterable[str]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from the 256 byte values to printable characters (vocab.json's alphabet).

    Printable Latin-1 bytes map to themselves; the others (control bytes, space, ...) map to
    the characters from U+0100 on, in order, so that every token can be written as text.
    """
    keep = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(keep, map(chr, chars)))


_BYTE_TO_CHAR = _bytes_to_unicode()
_CHAR_TO_BYTE = {c: b for b, c in _BYTE_TO_CHAR.items()}
_BYTE_CHARS = [_BYTE_TO_CHAR[b] for b in range(256)]


def _to_printable(b: bytes) -> str:
    return "".join(_BYTE_CHARS[x] for x in b)


def _from_printable(s: str, what: str) -> bytes:
    try:
        return bytes(_CHAR_TO_BYTE[c] for c in s)
    except KeyError as e:
        raise ValueError(f"{what}: {s!r} has a character outside GPT-2's byte alphabet") from e


def _surrogate_or_replace(err: UnicodeError):
    """Decoding error handler: like "replace" (U+FFFD for invalid UTF-8), except that the
    3-byte form of a lone surrogate, which `encode` writes for such characters of a Python
    str, decodes back to that surrogate, so that decode(encode(s)) == s for every str."""
    if not isinstance(err, UnicodeDecodeError):
        raise err
    b = err.object[err.start : err.start + 3]
    if len(b) == 3 and b[0] == 0xED and 0xA0 <= b[1] <= 0xBF and 0x80 <= b[2] <= 0xBF:
        return chr(0xD000 | ((b[1] & 0x3F) << 6) | (b[2] & 0x3F)), err.start + 3
    return "\ufffd", err.end


codecs.register_error("gptlab.surrogate_or_replace", _surrogate_or_replace)


def _check_text(text, what: str = "text") -> str:
    if not isinstance(text, str):
        raise TypeError(f"{what}: expected str, got {type(text).__name__}")
    return text


def _check_specials(special_tokens) -> list[str]:
    if isinstance(special_tokens, (str, bytes)) or not isinstance(special_tokens, Iterable):
        raise TypeError("special_tokens: expected a list of str")
    out = list(special_tokens)
    for s in out:
        if not isinstance(s, str) or not s:
            raise TypeError(f"special_tokens: expected non-empty str, got {s!r}")
        try:
            s.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"special_tokens: {s!r} is not valid Unicode") from e
    if len(set(out)) != len(out):
        raise ValueError(f"special_tokens: duplicates in {out}")
    return out


class Tokenizer:
    """A byte-level BPE tokenizer with special tokens (see the module docstring).

    Make one with `Tokenizer.train(text, vocab_size)`, `Tokenizer.load(path)` or
    `Tokenizer.from_gpt2_files(vocab_json, merges_txt)`. Immutable and thread-safe.
    """

    def __init__(self, handle):
        """Wraps a C tokenizer handle (use train/load/from_gpt2_files instead)."""
        tokens, special_ids, merges = _core.bpe_info(handle)
        self._h = handle
        self._tokens: list[bytes] = tokens
        self._merges: np.ndarray = merges
        self.special_tokens: dict[str, int] = {
            tokens[i].decode("utf-8", "surrogatepass"): i for i in special_ids
        }
        self._special_names = {i: s for s, i in self.special_tokens.items()}
        self._all_special = np.array(sorted(special_ids), dtype=np.int32)

    # ---- construction ------------------------------------------------------------------

    @classmethod
    def _build(cls, tokens: Sequence[bytes], special: Sequence[bool], merges) -> Tokenizer:
        if len(tokens) > MAX_VOCAB_SIZE:
            raise ValueError(f"vocabulary of {len(tokens)} tokens is larger than {MAX_VOCAB_SIZE}")
        lens = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=len(tokens))
        off = np.zeros(len(tokens) + 1, dtype=np.int64)
        np.cumsum(lens, out=off[1:])
        if off[-1] >= 2**31:
            raise ValueError("vocabulary bytes exceed 2 GiB")
        merges = np.ascontiguousarray(np.asarray(merges, dtype=np.int32).reshape(-1, 2))
        return cls(
            _core.bpe_new(
                b"".join(tokens),
                off.astype(np.int32),
                np.asarray(special, dtype=np.int32),
                merges,
            )
        )

    @classmethod
    def train(
        cls,
        text: str | Iterable[str],
        vocab_size: int,
        special_tokens: Iterable[str] = SPECIAL_TOKENS,
    ) -> Tokenizer:
        """Learns a vocabulary of `vocab_size` tokens (special tokens included) from text.

        `text` is a str or an iterable of str (documents; pieces never span two documents).
        Occurrences of the special tokens in the text are cut out before counting.
        Ids: 0-255 are the bytes, then the merged tokens in the order they were learned,
        then `special_tokens` in the order given. Training is deterministic: the most frequent
        pair is merged first; among pairs of equal count, the one with the smallest
        (left id, right id). If the corpus runs out of pairs the vocabulary is smaller.
        """
        specials = _check_specials(special_tokens)
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)):
            raise TypeError(f"vocab_size: expected int, got {type(vocab_size).__name__}")
        vocab_size = int(vocab_size)
        if not 256 + len(specials) <= vocab_size <= MAX_VOCAB_SIZE:
            raise ValueError(
                f"vocab_size: expected {256 + len(specials)} (256 bytes + {len(specials)} "
                f"special tokens) <= vocab_size <= {MAX_VOCAB_SIZE}, got {vocab_size}"
            )
        if isinstance(text, str):
            texts: Iterable = (text,)
        elif isinstance(text, (bytes, bytearray)) or not isinstance(text, Iterable):
            raise TypeError(f"text: expected str or an iterable of str, got {type(text).__name__}")
        else:
            texts = text
        trainer = _core.bpe_trainer_new([s.encode("utf-8") for s in specials])
        for i, t in enumerate(texts):
            _core.bpe_trainer_feed(trainer, _check_text(t, f"text[{i}]"))
        return cls(_core.bpe_trainer_train(trainer, vocab_size))

    # ---- basic facts -------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of tokens, special tokens included (ids are 0 .. vocab_size - 1)."""
        return len(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    @property
    def eot_id(self) -> int:
        """Id of `<|endoftext|>`, the separator between documents."""
        if "<|endoftext|>" not in self.special_tokens:
            raise ValueError("this tokenizer has no <|endoftext|> token")
        return self.special_tokens["<|endoftext|>"]

    @property
    def merges(self) -> list[tuple[int, int]]:
        """The merges in the order they were learned: (left id, right id)."""
        return [(int(a), int(b)) for a, b in self._merges]

    def token_bytes(self, i: int) -> bytes:
        """The exact bytes of token `i`."""
        return self._tokens[self._check_id(i)]

    def id_to_token(self, i: int) -> str:
        """Token `i` as text: a special token's text, else its bytes in GPT-2's printable
        byte alphabet (' the' is shown as 'Ġthe'), as in Hugging Face's vocab.json."""
        i = self._check_id(i)
        if i in self._special_names:
            return self._special_names[i]
        return _to_printable(self._tokens[i])

    def token_to_id(self, token: str) -> int:
        """Inverse of `id_to_token`: the id of a special token or of a token written in the
        printable byte alphabet. Raises ValueError if there is no such token."""
        _check_text(token, "token")
        if token in self.special_tokens:
            return self.special_tokens[token]
        try:
            b = _from_printable(token, "token")
        except ValueError:
            b = None
        i = _core.bpe_token_id(self._h, b) if b else -1
        if i < 0 or i in self._special_names:
            raise ValueError(f"token_to_id: {token!r} is not a token of this vocabulary")
        return i

    def _check_id(self, i) -> int:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"token id: expected int, got {type(i).__name__}")
        if not 0 <= i < len(self._tokens):
            raise ValueError(f"token id {i} is out of range [0, {len(self._tokens)})")
        return int(i)

    def __reduce__(self):
        """Pickling (and copy.deepcopy) rebuild the tokenizer from its tokens and merges."""
        special = [i in self._special_names for i in range(len(self._tokens))]
        return (Tokenizer._build, (list(self._tokens), special, self._merges.copy()))

    def __repr__(self) -> str:
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, merges={len(self._merges)}, "
            f"special_tokens={list(self.special_tokens)})"
        )

    # ---- encode / decode ---------------------------------------------------------------

    def _allowed(self, allowed_special: AllowedSpecial):
        if isinstance(allowed_special, str):
            if allowed_special == "all":
                return self._all_special
            if allowed_special == "none":
                return None
            raise ValueError(
                f"allowed_special: expected 'all', 'none' or a set of special tokens, "
                f"got {allowed_special!r}"
            )
        if not isinstance(allowed_special, Iterable):
            raise TypeError(
                f"allowed_special: expected 'all', 'none' or a set of str, "
                f"got {type(allowed_special).__name__}"
            )
        ids = []
        for s in allowed_special:
            if not isinstance(s, str):
                raise TypeError(f"allowed_special: expected str items, got {s!r}")
            if s not in self.special_tokens:
                raise ValueError(f"allowed_special: {s!r} is not a special token of this "
                                 f"tokenizer ({list(self.special_tokens)})")
            ids.append(self.special_tokens[s])
        return np.array(sorted(set(ids)), dtype=np.int32)

    def encode(self, text: str, allowed_special: AllowedSpecial = "none") -> list[int]:
        """Token ids of `text`.

        allowed_special: "none" (default: special-token text is encoded as ordinary text, so
        user text can never inject a control token), "all", or a set of special tokens whose
        text becomes their id. For a chat template either encode the whole template with
        "all", or concatenate `[tok.special_tokens["<|user|>"]] + tok.encode(msg) + ...`.
        """
        return _core.bpe_encode(self._h, _check_text(text), self._allowed(allowed_special))

    def encode_to_numpy(self, text: str, allowed_special: AllowedSpecial = "none") -> np.ndarray:
        """Like `encode` but returns an int32 NumPy array (cheaper for long corpora)."""
        return _core.bpe_encode(self._h, _check_text(text), self._allowed(allowed_special), True)

    def encode_batch(
        self, texts: Iterable[str], allowed_special: AllowedSpecial = "none"
    ) -> list[list[int]]:
        """`encode` of each text, in parallel on all threads (`gptlab.set_num_threads`)."""
        if isinstance(texts, (str, bytes)) or not isinstance(texts, Iterable):
            raise TypeError(f"texts: expected a list of str, got {type(texts).__name__}")
        return _core.bpe_encode_batch(self._h, list(texts), self._allowed(allowed_special))

    def _ids(self, ids) -> np.ndarray:
        a = np.asarray(ids)
        if a.size == 0:
            return np.zeros(0, dtype=np.int32)
        if a.dtype.kind not in "iu":
            raise TypeError(f"ids: expected integers, got dtype {a.dtype}")
        if a.ndim != 1:
            raise ValueError(f"ids: expected a 1-D sequence, got shape {a.shape}")
        lo, hi = a.min(), a.max()
        if lo < 0 or hi >= len(self._tokens):
            bad = lo if lo < 0 else hi
            raise ValueError(f"ids: token id {bad} is out of range [0, {len(self._tokens)})")
        return np.ascontiguousarray(a, dtype=np.int32)

    def decode_bytes(self, ids: Sequence[int] | np.ndarray) -> bytes:
        """The exact bytes the tokens stand for (possibly cut inside a UTF-8 character)."""
        return _core.bpe_decode(self._h, self._ids(ids))

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of the tokens. Byte sequences that are not valid UTF-8 (e.g. a prefix of a
        character, as a model may generate) become U+FFFD replacement characters."""
        return self.decode_bytes(ids).decode("utf-8", "gptlab.surrogate_or_replace")

    def pretokenize(self, text: str) -> list[str]:
        """The pieces GPT-2's pattern cuts `text` into (merges never cross them)."""
        return _core.bpe_pretokenize(self._h, _check_text(text))

    # ---- files -------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Writes the tokenizer to one JSON file (UTF-8), readable by `Tokenizer.load`:

        {"format": "gptlab-bpe", "version": 1, "pattern": "gpt2", "vocab_size": V,
         "special_tokens": {"<|endoftext|>": id, ...},
         "tokens": [token 0, token 1, ...],      # printable byte alphabet; specials as text
         "merges": [[left id, right id], ...]}   # in rank order
        """
        lines = [
            "{",
            f'"format": "{FORMAT_NAME}",',
            f'"version": {FORMAT_VERSION},',
            '"pattern": "gpt2",',
            f'"vocab_size": {self.vocab_size},',
            f'"special_tokens": {json.dumps(self.special_tokens, ensure_ascii=False)},',
            '"tokens": [',
            ",\n".join(
                json.dumps(self.id_to_token(i), ensure_ascii=False) for i in range(self.vocab_size)
            ),
            "],",
            '"merges": [',
            ",\n".join(f"[{a}, {b}]" for a, b in self._merges.tolist()),
            "]",
            "}",
        ]
        with atomic_write(path, "wb") as f:  # an interrupted save keeps the old file
            f.write(("\n".join(lines) + "\n").encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Reads a file written by `save`. A corrupt or foreign file raises ValueError."""
        with open(path, "rb") as f:
            raw = f.read()
        try:
            d = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise ValueError(f"{path}: not a gptlab tokenizer file (invalid JSON: {e})") from e
        if not isinstance(d, dict) or d.get("format") != FORMAT_NAME:
            raise ValueError(f"{path}: not a gptlab tokenizer file (no format '{FORMAT_NAME}')")
        if d.get("version") != FORMAT_VERSION or d.get("pattern") != "gpt2":
            raise ValueError(f"{path}: unsupported version/pattern "
                             f"{d.get('version')!r}/{d.get('pattern')!r}")
        tokens, specials, merges = d.get("tokens"), d.get("special_tokens"), d.get("merges")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ValueError(f"{path}: 'tokens' must be a list of str")
        if d.get("vocab_size") != len(tokens):
            raise ValueError(f"{path}: vocab_size {d.get('vocab_size')!r} != {len(tokens)} tokens")
        if not isinstance(specials, dict):
            raise ValueError(f"{path}: 'special_tokens' must be an object")
        special = [False] * len(tokens)
        for s, i in specials.items():
            if type(i) is not int or not 0 <= i < len(tokens) or tokens[i] != s or special[i]:
                raise ValueError(f"{path}: special token {s!r} has a bad id {i!r}")
            special[i] = True
        if not isinstance(merges, list):
            raise ValueError(f"{path}: 'merges' must be a list")
        for k, m in enumerate(merges):
            if not (isinstance(m, list) and len(m) == 2 and all(type(x) is int for x in m)
                    and all(0 <= x < len(tokens) for x in m)):
                raise ValueError(f"{path}: merge {k} {m!r} is not a pair of token ids")
        blobs = []
        for i, t in enumerate(tokens):
            if special[i]:
                try:
                    blobs.append(t.encode("utf-8"))
                except UnicodeEncodeError as e:
                    raise ValueError(f"{path}: special token {i} is not valid Unicode") from e
            else:
                blobs.append(_from_printable(t, f"{path}: token {i}"))
        return cls._build(blobs, special, merges)

    @classmethod
    def from_gpt2_files(
        cls,
        vocab_json: str | os.PathLike,
        merges_txt: str | os.PathLike,
        special_tokens: Iterable[str] | None = None,
    ) -> Tokenizer:
        """Reads Hugging Face's GPT-2 format: vocab.json ({token: id}, tokens in the printable
        byte alphabet) and merges.txt (one merge "left right" per line, in rank order).

        Tokens of vocab.json that are neither a byte nor the result of a merge (GPT-2's
        `<|endoftext|>`) become special tokens; `special_tokens` names more (those missing
        from vocab.json get new ids after the last one).
        """
        try:
            with open(vocab_json, encoding="utf-8") as f:
                vocab = json.load(f)
            with open(merges_txt, encoding="utf-8") as f:
                merge_lines = f.read().split("\n")
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise ValueError(f"not a GPT-2 vocab.json/merges.txt pair: {e}") from e
        if not isinstance(vocab, dict) or not all(
            isinstance(k, str) and type(v) is int for k, v in vocab.items()
        ):
            raise ValueError(f"{vocab_json}: expected a JSON object {{token: id}}")
        V = len(vocab)
        if sorted(vocab.values()) != list(range(V)):
            raise ValueError(f"{vocab_json}: ids must be exactly 0 .. {V - 1}")
        merges, results = [], set()
        for k, line in enumerate(merge_lines):
            if not line or (k == 0 and line.startswith("#version")):
                continue
            parts = line.rstrip("\r").split(" ")
            if len(parts) != 2:
                raise ValueError(f"{merges_txt} line {k + 1}: expected 'left right', got {line!r}")
            for p in parts:
                if p not in vocab:
                    raise ValueError(f"{merges_txt} line {k + 1}: {p!r} is not in {vocab_json}")
            if parts[0] + parts[1] not in vocab:
                raise ValueError(f"{merges_txt} line {k + 1}: the merge result "
                                 f"{parts[0] + parts[1]!r} is not in {vocab_json}")
            merges.append((vocab[parts[0]], vocab[parts[1]]))
            results.add(parts[0] + parts[1])
        extra = [] if special_tokens is None else _check_specials(special_tokens)
        tokens: list[bytes] = [b""] * V
        special = [False] * V
        for s, i in vocab.items():
            is_byte = len(s) == 1 and s in _CHAR_TO_BYTE
            if is_byte or s in results:
                tokens[i] = _from_printable(s, f"{vocab_json}: token {i}")
            else:
                tokens[i], special[i] = s.encode("utf-8", "surrogatepass"), True
        for s in extra:
            if s in vocab:
                if not special[vocab[s]]:
                    raise ValueError(f"special token {s!r} is an ordinary token of {vocab_json}")
            else:
                tokens.append(s.encode("utf-8"))
                special.append(True)
        return cls._build(tokens, special, merges)

    def save_gpt2_files(self, vocab_json: str | os.PathLike, merges_txt: str | os.PathLike) -> None:
        """Writes Hugging Face's GPT-2 format (vocab.json + merges.txt, see from_gpt2_files)."""
        names = [self.id_to_token(i) for i in range(self.vocab_size)]
        vocab = {s: i for i, s in enumerate(names)}
        if len(vocab) != len(names):
            raise ValueError("a special token has the same text as an ordinary token; "
                             "vocab.json cannot hold both")
        with atomic_write(vocab_json, "wb") as f:
            f.write(json.dumps(vocab, ensure_ascii=False).encode("utf-8"))
        with atomic_write(merges_txt, "wb") as f:
            lines = ["#version: 0.2\n"] + [f"{names[a]} {names[b]}\n"
                                           for a, b in self._merges.tolist()]
            f.write("".join(lines).encode("utf-8"))

    # ---- Hugging Face folders ------------------------------------------------------------

    @classmethod
    def from_hf(cls, path: str | os.PathLike) -> Tokenizer:
        """Read a Hugging Face tokenizer folder (tokenizer.json, or vocab.json + merges.txt);
        see :func:`gptlab.hf.load_tokenizer_folder`."""
        from .hf import load_tokenizer_folder
        return load_tokenizer_folder(path)

    def save_hf(self, path: str | os.PathLike, model_max_length: int | None = None) -> None:
        """Write a folder ``transformers.AutoTokenizer.from_pretrained`` loads; see
        :func:`gptlab.hf.save_tokenizer_folder`."""
        from .hf import save_tokenizer_folder
        save_tokenizer_folder(self, path, model_max_length)

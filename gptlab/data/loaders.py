"""Loaders for real data, returning the same shapes as TinyWorld.

- Pretraining: ``load_text(path)``: a ``.txt`` file, a folder of ``.txt`` files (sorted by
  name, joined by blank lines), or a ``.jsonl`` file / folder of ``{"text": ...}`` lines.
- SFT: ``load_sft(path)`` -> ``[{"prompt", "response"}]`` from JSONL lines in either usual
  format: ``{"prompt", "completion"}`` or ``{"messages": [{"role", "content"}, ...]}`` (the
  last message must be the assistant's; the user message before it is the prompt; earlier
  turns go to ``"history"`` and system messages to ``"system"``).
- Reward modeling: ``load_preferences(path)`` -> ``[{"prompt", "responses": [best, ..., worst]}]``
  from ``{"prompt", "chosen", "rejected"}`` or ``{"prompt", "responses"}`` (ranked, best first).

``load_jsonl(path)`` does all of it, detecting the format of each file from its first line.
A malformed line raises ``ValueError("file.jsonl:12: ...")``: the file, the line number, and
what was expected.
"""

from __future__ import annotations

import json
import os

FORMATS = {"text": "pretraining text", "sft": "SFT demonstrations",
           "ranked": "ranked responses (reward modeling)"}


def _files(path: str | os.PathLike, exts: tuple[str, ...]) -> list[str]:
    path = os.fspath(path)
    if os.path.isdir(path):
        found = sorted(os.path.join(root, f) for root, _, names in os.walk(path)
                       for f in names if f.endswith(exts))
        if not found:
            raise ValueError(f"{path}: folder holds no {' or '.join(exts)} file")
        return found
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file or folder")
    return [path]


def load_text(path: str | os.PathLike) -> str:
    """Plain text for pretraining: a file, or every ``.txt`` file of a folder (recursively,
    sorted, joined by blank lines). ``.jsonl`` input must hold ``{"text": ...}`` lines."""
    p = os.fspath(path)
    if p.endswith(".jsonl") or (os.path.isdir(p) and not _has_ext(p, ".txt")
                                and _has_ext(p, ".jsonl")):
        recs = load_jsonl(p, expect="text")
        return "\n\n".join(r["text"] for r in recs)
    parts = []
    for f in _files(p, (".txt",)):
        try:
            with open(f, encoding="utf-8") as fh:
                parts.append(fh.read())
        except UnicodeDecodeError as e:
            raise ValueError(f"{f}: expected UTF-8 text ({e})") from None
    return "\n\n".join(parts)


def _has_ext(folder: str, ext: str) -> bool:
    return any(f.endswith(ext) for _, _, names in os.walk(folder) for f in names)


def detect_format(record: dict) -> str:
    """``"text"``, ``"sft"`` or ``"ranked"`` from the keys of one JSONL record."""
    keys = set(record)
    if "messages" in keys or {"prompt", "completion"} <= keys:
        return "sft"
    if {"prompt", "chosen", "rejected"} <= keys or {"prompt", "responses"} <= keys:
        return "ranked"
    if "text" in keys:
        return "text"
    raise ValueError(f"unknown record with keys {sorted(keys)}; expected 'text', "
                     "'prompt'+'completion', 'messages', 'prompt'+'chosen'+'rejected' or "
                     "'prompt'+'responses'")


def _string(rec: dict, key: str, where: str) -> str:
    v = rec.get(key)
    if not isinstance(v, str):
        raise ValueError(f"{where}: expected {key!r} to be a string, got {type(v).__name__}")
    return v


def _normalise(rec: dict, fmt: str, where: str) -> dict:
    if fmt == "text":
        return {"text": _string(rec, "text", where)}
    if fmt == "sft":
        if "messages" in rec:
            return _from_messages(rec["messages"], where)
        return {"prompt": _string(rec, "prompt", where).strip(),
                "response": _string(rec, "completion", where).strip()}
    prompt = _string(rec, "prompt", where)
    if "responses" in rec:
        rs = rec["responses"]
        if not isinstance(rs, list) or len(rs) < 2 or not all(isinstance(r, str) for r in rs):
            raise ValueError(f"{where}: expected 'responses' to be a list of at least 2 strings "
                             "ranked best first")
        return {"prompt": prompt, "responses": list(rs)}
    return {"prompt": prompt,
            "responses": [_string(rec, "chosen", where), _string(rec, "rejected", where)]}


def _from_messages(msgs, where: str) -> dict:
    if not isinstance(msgs, list) or not msgs:
        raise ValueError(f"{where}: expected 'messages' to be a non-empty list of "
                         "{'role', 'content'} objects")
    for i, m in enumerate(msgs):
        if not (isinstance(m, dict) and isinstance(m.get("content"), str)
                and m.get("role") in ("system", "user", "assistant")):
            raise ValueError(f"{where}: expected messages[{i}] to be "
                             "{'role': 'system'|'user'|'assistant', 'content': str}")
    if msgs[-1]["role"] != "assistant":
        raise ValueError(f"{where}: expected the last message to be the assistant's")
    users = [i for i, m in enumerate(msgs) if m["role"] == "user"]
    if not users:
        raise ValueError(f"{where}: expected a user message before the assistant's")
    u = users[-1]
    out = {"prompt": msgs[u]["content"].strip(), "response": msgs[-1]["content"].strip()}
    system = [m["content"] for m in msgs if m["role"] == "system"]
    if system:
        out["system"] = "\n".join(system)
    history = [dict(role=m["role"], content=m["content"]) for m in msgs[:u]
               if m["role"] != "system"]
    if history:
        out["history"] = history
    return out


def load_jsonl(path: str | os.PathLike, expect: str | None = None) -> list[dict]:
    """Records of a JSONL file (or of every ``.jsonl`` file in a folder), normalised.

    The format of each file is detected from its first record and every line must follow
    it. ``expect`` (``"text"``, ``"sft"``, ``"ranked"``) refuses files of another format.
    Blank lines are skipped. Returns ``{"text"}``, ``{"prompt", "response"}`` or
    ``{"prompt", "responses"}`` dicts.
    """
    if expect is not None and expect not in FORMATS:
        raise ValueError(f"expect must be one of {sorted(FORMATS)}, got {expect!r}")
    out = []
    for f in _files(path, (".jsonl",)):
        fmt = None
        with open(f, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                where = f"{f}:{lineno}"
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{where}: expected one JSON object per line ({e.msg})") \
                        from None
                if not isinstance(rec, dict):
                    raise ValueError(f"{where}: expected a JSON object, got "
                                     f"{type(rec).__name__}")
                try:
                    this = detect_format(rec)
                except ValueError as e:
                    raise ValueError(f"{where}: {e}") from None
                if fmt is None:
                    fmt = this
                    if expect is not None and fmt != expect:
                        raise ValueError(f"{where}: expected {FORMATS[expect]}, but the file "
                                         f"holds {FORMATS[fmt]}")
                elif this != fmt:
                    raise ValueError(f"{where}: expected {FORMATS[fmt]} like the first line "
                                     f"of the file, got {FORMATS[this]}")
                out.append(_normalise(rec, fmt, where))
    return out


def load_sft(path: str | os.PathLike) -> list[dict]:
    """SFT demonstrations ``[{"prompt", "response"}]`` from JSONL (prompt/completion or
    messages)."""
    return load_jsonl(path, expect="sft")


def load_preferences(path: str | os.PathLike) -> list[dict]:
    """Ranked data ``[{"prompt", "responses": [best, ..., worst]}]`` from JSONL
    (prompt/chosen/rejected or prompt/responses)."""
    return load_jsonl(path, expect="ranked")

"""Files: safetensors checkpoints and atomic writes.

A `.safetensors` file is an 8-byte little-endian header length, a JSON header that maps each
tensor name to its dtype, shape and byte range, and the raw little-endian data. It cannot run
code when loaded (unlike pickle), which is why Hugging Face moved to it. gptlab writes the
format itself (no dependency) and adds two metadata entries: the model config and a SHA-256
of the data, checked on load, so a corrupt or truncated checkpoint is refused with a clear
error instead of silently loading garbage.

Every save goes through :func:`atomic_write`: write a temporary file in the same folder,
flush, fsync, then rename over the target. A crash or Ctrl-C mid-save leaves the previous file
intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import struct
import tempfile
from collections.abc import Iterator
from typing import IO

import numpy as np

_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64,
           "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}
MAX_HEADER = 100 * 1024 * 1024
CHECKSUM_KEY = "gptlab.sha256"


def _umask() -> int:
    """The process umask, read without changing it where the OS says it (Linux), else by the
    classic set-and-restore."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _new_file_mode(path: str) -> int:
    """Permissions the file at `path` should get: those it already has when it is replaced,
    else what `open(path, "w")` would give (0o666 less the umask). mkstemp's temporary files
    are 0o600, which would silently make every saved checkpoint private."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside `path`; on success fsync it and rename it onto `path`.

    On any exception (KeyboardInterrupt included) the temporary file is removed and `path`
    keeps its previous content."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=folder)
    try:
        os.chmod(tmp, _new_file_mode(path))
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        with contextlib.suppress(OSError):  # make the rename itself durable
            dfd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_safetensors(path: str | os.PathLike, tensors: dict[str, np.ndarray],
                     metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` (name -> array) to a .safetensors file, atomically, with a checksum."""
    header: dict = {}
    offset = 0
    arrays = []
    for name, a in tensors.items():
        a = np.asarray(a)
        if a.dtype not in _NAMES:
            raise TypeError(f"save_safetensors: {name}: unsupported dtype {a.dtype}")
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        header[name] = {"dtype": _NAMES[np.dtype(a.dtype.name)], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        arrays.append(a)
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(memoryview(a).cast("B"))
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta[CHECKSUM_KEY] = digest.hexdigest()
    header["__metadata__"] = meta
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # align the data to 8 bytes, as the reference writer does
    with atomic_write(path) as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for a in arrays:
            f.write(memoryview(a).cast("B"))


def load_safetensors(path: str | os.PathLike, verify: bool = True,
                     require_checksum: bool = False
                     ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a .safetensors file -> (tensors, metadata). Every field is checked; anything
    malformed raises ValueError naming the file and the problem. With `require_checksum`
    (gptlab's own checkpoints) a file whose checksum entry is missing is refused too."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    where = f"{path}: not a valid .safetensors file"
    if len(data) < 8:
        raise ValueError(f"{where} (only {len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if n < 2 or n > MAX_HEADER or 8 + n > len(data):
        raise ValueError(f"{where} (header length {n} does not fit the file of {len(data)} "
                         "bytes)")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{where} (header is not JSON: {e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{where} (header is not a JSON object)")
    meta = header.pop("__metadata__", {}) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError(f"{where} (__metadata__ must map strings to strings)")
    body = memoryview(data)[8 + n:]
    tensors: dict[str, np.ndarray] = {}
    spans = []
    for name, info in header.items():
        try:
            dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
            shape, offsets = info["shape"], info["data_offsets"]
            # JSON integers only: no floats (1e400 is inf), bools or strings
            if not (isinstance(shape, list) and isinstance(offsets, list) and len(offsets) == 2
                    and all(type(x) is int for x in shape + offsets)):
                raise TypeError
            lo, hi = offsets
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{where} (tensor {name!r} has a malformed entry: {info!r})") from None
        if any(d < 0 for d in shape) or not 0 <= lo <= hi <= len(body):
            raise ValueError(f"{where} (tensor {name!r}: offsets {lo}..{hi} outside the data "
                             f"of {len(body)} bytes, or negative shape)")
        count = math.prod(shape)  # exact (Python ints): a huge shape cannot wrap around
        if count * dtype.itemsize != hi - lo:
            raise ValueError(f"{where} (tensor {name!r}: shape {shape} of {info['dtype']} needs "
                             f"{count * dtype.itemsize} bytes, entry has {hi - lo})")
        spans.append((lo, hi, name))
        tensors[name] = np.frombuffer(body[lo:hi], dtype=dtype).reshape(shape).astype(
            dtype.newbyteorder("="), copy=True)
    spans.sort()
    for (_, hi1, a), (lo2, _, b) in zip(spans, spans[1:]):
        if lo2 < hi1:
            raise ValueError(f"{where} (tensors {a!r} and {b!r} overlap)")
    if verify and require_checksum and CHECKSUM_KEY not in meta:
        raise ValueError(f"{path}: no '{CHECKSUM_KEY}' entry: not a gptlab checkpoint, or a "
                         "corrupt one")
    if verify and CHECKSUM_KEY in meta:
        digest = hashlib.sha256()
        for lo, hi, _ in spans:
            digest.update(body[lo:hi])
        if digest.hexdigest() != meta[CHECKSUM_KEY]:
            raise ValueError(f"{path}: checksum mismatch: the file is corrupt")
    return tensors, dict(meta)


def save_json(path: str | os.PathLike, obj) -> None:
    """Write JSON atomically."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2)

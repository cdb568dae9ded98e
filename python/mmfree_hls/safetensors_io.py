"""Tensor-by-tensor safetensors I/O: the one place that knows the file format.

A safetensors file is an 8-byte little-endian header length, a JSON header
(``name -> {dtype, shape, data_offsets}`` plus an optional ``__metadata__``
of strings) and the raw little-endian tensor bytes, back to back.

Why more than the ``safetensors`` library:

* numpy has no bfloat16, so the library cannot return a BF16 tensor to
  numpy. BF16 is the upper half of an IEEE float32, so we read the raw
  uint16 words and shift them into float32: exact, no rounding.
* the library maps the whole file into memory and every page it touches
  stays in the resident set while the file is open; reading a multi-GB
  checkpoint through one open handle costs its whole size in RSS. Each
  tensor is therefore read with its own short-lived handle.
* its writer wants every tensor in memory at once. :class:`SafetensorsWriter`
  writes the header first and then each tensor as it is produced, so a
  checkpoint is imported or written one tensor at a time.

Files written here are read back by the library unchanged (tests check it).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from .fsio import io_errors

#: safetensors dtype code -> bytes per element.
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "U64": 8, "I32": 4, "U32": 4,
            "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1}
#: dtype codes numpy (and so the library's numpy side) can return directly.
NUMPY_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
                "U64": np.uint64, "I32": np.int32, "U32": np.uint32, "I16": np.int16,
                "U16": np.uint16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")

_HASH_PLACEHOLDER = "0" * 64       # a SHA-256 hex digest's length, filled in when the file is complete
_MAX_HEADER = 100 * 2**20          # a sane header is kilobytes; refuse to parse garbage
_CHUNK = 16 * 2**20                # raw copy / hash granularity


class CheckpointError(ValueError):
    """A checkpoint (file or directory) is not what it claims to be."""


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: file, dtype code, shape and absolute byte range."""

    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int
    stop: int

    @property
    def nbytes(self) -> int:
        return self.stop - self.start

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


# --------------------------------------------------------------- bfloat16
def bf16_to_float32(words: np.ndarray) -> np.ndarray:
    """Raw bfloat16 words (uint16) -> float32, exactly: bf16 is float32's upper 16 bits."""
    w = np.asarray(words, dtype=np.uint16)
    return (w.astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> raw bfloat16 words, rounding to nearest even (as PyTorch does); NaN stays NaN."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        rounded[nan] = ((bits[nan] >> 16) | np.uint32(0x0040)).astype(np.uint16)   # keep quiet NaN
    return rounded


# ----------------------------------------------------------------- reading
def read_header(path: str | Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse a safetensors header without reading tensor data.

    Returns ``(tensors by name, metadata)``; raises CheckpointError naming the
    file when it is truncated or not safetensors at all.
    """
    p = Path(path)
    size = p.stat().st_size

    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{p}: not a valid safetensors file ({why}); "
                               "re-download or re-export it")

    if size < 8:
        raise bad("shorter than the 8-byte header length")
    with open(p, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > min(_MAX_HEADER, size - 8):
            raise bad(f"header length {n} does not fit the file")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise bad(f"header is not JSON: {e}") from None
        except RecursionError:
            raise bad("header JSON is nested too deeply") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise bad("__metadata__ must map names to strings")
    base = 8 + n
    tensors: dict[str, TensorInfo] = {}
    end = 0
    for name, entry in header.items():
        try:
            dtype, shape, (a, b) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise bad(f"tensor {name!r} has a malformed entry {str(entry)[:200]}") from None
        if not all(_is_index(v) for v in (a, b, *shape)):
            raise bad(f"tensor {name!r}: shape {list(shape)} and data_offsets {[a, b]} must be "
                      "non-negative integers")
        if not isinstance(dtype, str) or dtype not in ITEMSIZE:
            raise bad(f"tensor {name!r} has unknown dtype {dtype!r}")
        if b - a != ITEMSIZE[dtype] * math.prod(shape):
            raise bad(f"tensor {name!r}: byte range {a}..{b} does not hold {dtype} {list(shape)}")
        tensors[name] = TensorInfo(name, p, dtype, shape, base + a, base + b)
        end = max(end, b)
    if base + end > size:
        raise bad(f"truncated: tensors end at byte {base + end}, file has {size}")
    return tensors, {str(k): str(v) for k, v in meta.items()}


def _is_index(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def iter_raw(info: TensorInfo, chunk: int = _CHUNK) -> Iterator[bytes]:
    """The tensor's bytes as stored, in chunks (for copying and hashing without holding it)."""
    with open(info.file, "rb") as f:
        f.seek(info.start)
        left = info.nbytes
        while left:
            block = f.read(min(chunk, left))
            if not block:
                raise CheckpointError(f"{info.file}: truncated inside tensor {info.name}")
            left -= len(block)
            yield block


def sha256_of(info: TensorInfo) -> str:
    h = hashlib.sha256()
    for block in iter_raw(info):
        h.update(block)
    return h.hexdigest()


def read_array(info: TensorInfo) -> np.ndarray:
    """One tensor as a numpy array in its stored dtype; BF16 comes back as float32 (exact).

    numpy dtypes go through the ``safetensors`` library, opened for this one
    tensor so its memory map is released right after (see module docstring).
    """
    if info.dtype == "BF16":
        words = np.fromfile(info.file, dtype="<u2", count=info.size, offset=info.start)
        if words.size != info.size:
            raise CheckpointError(f"{info.file}: truncated inside tensor {info.name}")
        return bf16_to_float32(words).reshape(info.shape)
    from safetensors import safe_open

    try:
        with safe_open(str(info.file), framework="numpy") as f:
            return f.get_tensor(info.name)
    except Exception as e:      # SafetensorError is not importable as a stable name
        raise CheckpointError(f"{info.file}: cannot read tensor {info.name}: {e}") from None


def read_float32(info: TensorInfo) -> np.ndarray:
    """A float tensor as float32 (fp16 and bf16 widen exactly)."""
    if info.dtype not in FLOAT_DTYPES:
        raise CheckpointError(f"{info.file}: tensor {info.name} has dtype {info.dtype}; "
                              f"a float ({', '.join(FLOAT_DTYPES)}) was expected")
    return np.asarray(read_array(info), dtype=np.float32)


def validate_with_library(path: str | Path) -> None:
    """Let the safetensors library check the whole header (overlaps, holes, sizes)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy"):
            pass
    except Exception as e:
        raise CheckpointError(f"{path}: the safetensors library rejects this file: {e}; "
                              "re-download or re-export it") from None


# ----------------------------------------------------------------- writing
@dataclass(frozen=True)
class TensorSpec:
    """A tensor to be written: name, dtype code and shape, data supplied later."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return ITEMSIZE[self.dtype] * int(np.prod(self.shape, dtype=np.int64))


class SafetensorsWriter:
    """Write a safetensors file one tensor at a time, in any order.

    The header (all names, dtypes, shapes) is written first; tensors are laid
    out widest dtype first so every tensor is aligned to its item size, and
    each :meth:`write` seeks to its slot. The file appears under its final
    name only when every tensor has been written (``with`` block exits
    cleanly); a failure leaves no half-written file behind.
    """

    def __init__(self, path: str | Path, specs: Sequence[TensorSpec],
                 metadata: Mapping[str, str] | None = None,
                 record_hashes: Mapping[str, str] | None = None):
        """``record_hashes``: metadata key -> tensor name; the tensor's SHA-256 is stored
        under that key when the file is complete (the header is rewritten in place)."""
        self.path = Path(path)
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError("duplicate tensor names in SafetensorsWriter")
        self._record = dict(record_hashes or {})
        unknown = sorted(set(self._record.values()) - set(names))
        if unknown:
            raise ValueError(f"record_hashes names tensors that are not in the file: {unknown[:5]}")
        self._hashes: dict[str, str] = {}
        order = sorted(range(len(specs)), key=lambda i: -ITEMSIZE[specs[i].dtype])  # stable
        header: dict = {}
        meta = {str(k): str(v) for k, v in (metadata or {}).items()}
        meta.update({k: _HASH_PLACEHOLDER for k in self._record})
        if meta:
            header["__metadata__"] = meta
        offset = 0
        self._slots: dict[str, tuple[TensorSpec, int]] = {}
        for i in order:
            s = specs[i]
            header[s.name] = {"dtype": s.dtype, "shape": list(s.shape),
                              "data_offsets": [offset, offset + s.nbytes]}
            self._slots[s.name] = (s, offset)
            offset += s.nbytes
        self._header = header
        blob = self._header_blob()
        self._base = 8 + len(blob)
        self._tmp = self.path.with_name(self.path.name + ".partial")
        with io_errors(self.path):
            self._f = open(self._tmp, "wb")
            try:
                self._f.write(struct.pack("<Q", len(blob)) + blob)
                self._f.truncate(self._base + offset)
            except BaseException:
                self._f.close()
                self._abort()
                raise
        self._pending = set(self._slots)

    def _header_blob(self) -> bytes:
        blob = json.dumps(self._header, separators=(",", ":")).encode()
        return blob + b" " * (-len(blob) % 8)           # data section starts 8-byte aligned

    def __enter__(self) -> "SafetensorsWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or self._pending:
            self._f.close()
            self._abort()
            if exc_type is None:
                raise CheckpointError(f"{self.path}: tensors never written: {sorted(self._pending)[:5]}")
            return
        try:
            with io_errors(self.path):
                if self._record:
                    # Same length as the placeholders, so the data offsets do not move.
                    self._header["__metadata__"].update(
                        {k: self._hashes[name] for k, name in self._record.items()})
                    self._f.seek(8)
                    self._f.write(self._header_blob())
                self._f.flush()
                os.fsync(self._f.fileno())
                self._f.close()
                os.replace(self._tmp, self.path)
        except BaseException:
            self._f.close()
            self._abort()
            raise

    def _abort(self) -> None:
        try:
            self._tmp.unlink()
        except FileNotFoundError:
            pass

    def _seek(self, name: str) -> TensorSpec:
        if name not in self._pending:
            raise ValueError(f"tensor {name!r} is not in this file or was already written")
        spec, offset = self._slots[name]
        self._f.seek(self._base + offset)
        self._pending.discard(name)
        return spec

    def write(self, name: str, array: np.ndarray) -> str:
        """Write one tensor (numpy array in the spec's dtype; BF16 as uint16 words). Returns its sha256."""
        spec = self._slots[name][0] if name in self._slots else None
        if spec is None:
            raise ValueError(f"tensor {name!r} is not in this file")
        a = np.ascontiguousarray(array)
        want = np.uint16 if spec.dtype == "BF16" else NUMPY_DTYPES[spec.dtype]
        if a.dtype != np.dtype(want) or tuple(a.shape) != tuple(spec.shape):
            raise ValueError(f"tensor {name!r}: got {a.dtype} {a.shape}, spec says {spec.dtype} {spec.shape}")
        if a.dtype.byteorder == ">":
            a = a.byteswap().newbyteorder()
        self._seek(name)
        data = memoryview(a).cast("B")
        with io_errors(self.path):
            self._f.write(data)
        self._hashes[name] = hashlib.sha256(data).hexdigest()
        return self._hashes[name]

    def copy(self, name: str, source: TensorInfo) -> str:
        """Copy a tensor's stored bytes from another file verbatim (no dtype change). Returns its sha256."""
        spec = self._slots[name][0] if name in self._slots else None
        if spec is None:
            raise ValueError(f"tensor {name!r} is not in this file")
        if (spec.dtype, tuple(spec.shape)) != (source.dtype, tuple(source.shape)):
            raise ValueError(f"tensor {name!r}: source is {source.dtype} {source.shape}, "
                             f"spec says {spec.dtype} {spec.shape}")
        self._seek(name)
        h = hashlib.sha256()
        with io_errors(self.path):
            for block in iter_raw(source):
                h.update(block)
                self._f.write(block)
        self._hashes[name] = h.hexdigest()
        return self._hashes[name]

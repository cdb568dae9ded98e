"""Ternary weight packing: the one place that knows the byte layouts.

Both layouts pack each output row separately (rows start on a byte boundary,
so a streaming unpacker never straddles two rows) in row-major (out, in) order.

``2bit``  four weights a byte, weight j of a group in bits [2j, 2j+2):
          00 → 0, 01 → +1, 11 → −1 (10 is never written). Decoding is a
          sign-extend of two bits: the simplest hardware.
``1.6bit`` five weights a byte as base-3 digits of (w+1): byte = Σ (w_k+1)·3^k,
          values 0..242. The storage optimum (log2(3) = 1.585 bits).
"""

from __future__ import annotations

import math

import numpy as np

LAYOUTS = {"2bit": 4, "1.6bit": 5}        # weights per byte
BITS_PER_WEIGHT = {"2bit": 2.0, "1.6bit": 8 / 5}


def _check_layout(layout: str) -> int:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown packing layout {layout!r}; choose one of {sorted(LAYOUTS)}")
    return LAYOUTS[layout]


def row_bytes(n_in: int, layout: str) -> int:
    return math.ceil(n_in / _check_layout(layout))


def packed_size(shape: tuple[int, int], layout: str) -> int:
    return shape[0] * row_bytes(shape[1], layout)


def pack_ternary(w_q: np.ndarray, layout: str = "2bit") -> np.ndarray:
    """(out, in) int8 in {−1,0,1} → (out, row_bytes) uint8."""
    per = _check_layout(layout)
    w = np.asarray(w_q)
    if w.ndim != 2:
        raise ValueError(f"pack_ternary wants a 2-D (out, in) weight, got shape {w.shape}")
    if not np.isin(w, (-1, 0, 1)).all():
        raise ValueError("pack_ternary: weights must be ternary (−1, 0, +1); quantise them first")
    n_out, n_in = w.shape
    padded = np.zeros((n_out, row_bytes(n_in, layout) * per), dtype=np.int16)
    padded[:, :n_in] = w
    groups = padded.reshape(n_out, -1, per)
    if layout == "2bit":
        codes = (groups & 0b11).astype(np.uint16)                  # two's complement, 2 bits
        shifts = np.arange(per, dtype=np.uint16) * 2
    else:
        codes = (groups + 1).astype(np.uint16)
        shifts = None
    if shifts is not None:
        return (codes << shifts).sum(axis=-1).astype(np.uint8)
    powers = 3 ** np.arange(per, dtype=np.uint16)
    return (codes * powers).sum(axis=-1).astype(np.uint8)


def unpack_ternary(packed: np.ndarray, n_in: int, layout: str = "2bit") -> np.ndarray:
    """Inverse of :func:`pack_ternary`: (out, row_bytes) uint8 → (out, n_in) int8."""
    per = _check_layout(layout)
    p = np.asarray(packed, dtype=np.uint8)
    if p.ndim != 2 or p.shape[1] != row_bytes(n_in, layout):
        raise ValueError(f"packed weight has shape {p.shape}, expected (out, {row_bytes(n_in, layout)}) "
                         f"for n_in={n_in} in layout {layout}")
    if layout == "2bit":
        codes = (p[..., None] >> (np.arange(per, dtype=np.uint8) * 2)) & 0b11
        w = np.where(codes == 0b11, -1, codes.astype(np.int8)).astype(np.int8)
        if (codes == 0b10).any():
            raise ValueError("packed 2-bit weights contain the unused code 0b10: the buffer is corrupt")
    else:
        if (p > 242).any():
            raise ValueError("packed 1.6-bit weights contain a byte > 242: the buffer is corrupt")
        digits = (p[..., None].astype(np.uint16) // (3 ** np.arange(per, dtype=np.uint16))) % 3
        w = digits.astype(np.int8) - 1
    return w.reshape(p.shape[0], -1)[:, :n_in]

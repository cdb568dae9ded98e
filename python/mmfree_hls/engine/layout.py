"""The engine's weight stream: what it holds, in the order compute uses it.

One token of the engine reads one stream of R-byte words (the same stream
from the on-chip image or from K DDR ports):

    group(attn 0)                                    token start
    for l < L:
        matrix(i), matrix(f), matrix(g)
        mlgru(l)                                     lb, g_norm, o_proj norm
        group(mlp l)
        matrix(o), matrix(gate)
        glu(l)                                       down_proj norm
        group(attn l+1 | head)
        matrix(down)
    matrix(head)

Records (a header word of 16-bit fields, then vectors of 32-bit values, all
little-endian, each record whole words):
    group   [ea, ec0, ec1, ec2, n_c, has_a]  a, c_0 .. c_{n_c-1}
            a is the preceding RMSNorm's weight, c_k = a ⊙ n_k its fold into
            consumer k's BitLinear norm (design/hls/mmfree_engine.h).
    mlgru   [e_gn, e_no, has_lb]             lb (2^-15 units), g_norm, n_o
    glu     [e_nd]                           n_down
    matrix  [1/γ mantissa lo16, hi8, exp]    tiles: n_rb x n_cg words, word
            (rb, cg) byte r = the PER inputs cg*PER.. of row rb*R + r.
A vector is stored as 24-bit mantissas m with one exponent e: v = m 2^-e;
the lower bound lb in 2^-23 units.

The streamed tier stripes every word over the K ports: port k holds bytes
[k*B, (k+1)*B) of each word (B = port bytes), so every record streams from
all ports at once, each port reading its own region front to back. The
weights buffer is a 4 KiB header followed by the K regions.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..config import ModelConfig
from ..packing import pack_ternary
from .presets import PACKINGS

MAGIC = b"MMFENGN1"
LAYOUT_VERSION = 1
HEADER_BYTES = 4096
REGION_ALIGN = 4096
_HEADER = struct.Struct("<8sIIIIIIIIIIQ")      # magic, version, d, e, M, L, V, per, R, K, port_bytes, words


class LayoutError(ValueError):
    """A weights buffer that does not belong to this engine build."""


@dataclass(frozen=True)
class Shape:
    """The engine's compile-time dimensions."""

    d: int
    e: int
    M: int
    L: int
    V: int
    use_lb: bool
    per: int            # inputs per byte
    R: int              # rows per tile = bytes per word

    @classmethod
    def of(cls, cfg: ModelConfig, packing: str, R: int) -> "Shape":
        if packing not in PACKINGS:
            raise ValueError(f"unknown packing {packing!r}; choose one of {sorted(PACKINGS)}")
        return cls(cfg.d, cfg.input_dim, cfg.ffn_dim, cfg.num_hidden_layers, cfg.vocab_size,
                   bool(cfg.use_lower_bound), PACKINGS[packing], R)

    def n_cg(self, n_in: int) -> int:
        return math.ceil(n_in / self.per)

    def n_rb(self, n_out: int) -> int:
        return math.ceil(n_out / self.R)

    def vec_words(self, n: int) -> int:
        return math.ceil(n / (self.R // 4))

    def matrices(self) -> list[tuple[str, int, int]]:
        """(name, n_in, n_out) of every BitLinear in stream order."""
        d, e, M = self.d, self.e, self.M
        out = []
        for l in range(self.L):
            out += [(f"{l}.i", d, e), (f"{l}.f", d, e), (f"{l}.g", d, e), (f"{l}.o", e, d),
                    (f"{l}.gate", d, 2 * M), (f"{l}.down", M, d)]
        return out + [("head", d, self.V)]

    def matrix_words(self, n_in: int, n_out: int) -> int:
        return 1 + self.n_rb(n_out) * self.n_cg(n_in)

    def records(self) -> list[tuple[str, str, int]]:
        """(kind, name, words) of every record of one token, in stream order."""
        d, e, M = self.d, self.e, self.M
        group = lambda n_c: 1 + (1 + n_c) * self.vec_words(d)
        recs = [("group", "attn.0", group(3))]
        mats = dict((n, (i, o)) for n, i, o in self.matrices())
        for l in range(self.L):
            for p in ("i", "f", "g"):
                recs.append(("matrix", f"{l}.{p}", self.matrix_words(*mats[f"{l}.{p}"])))
            has_lb = self.use_lb and l > 0
            recs.append(("mlgru", f"mlgru.{l}", 1 + (3 if has_lb else 2) * self.vec_words(e)))
            recs.append(("group", f"mlp.{l}", group(1)))
            recs.append(("matrix", f"{l}.o", self.matrix_words(*mats[f"{l}.o"])))
            recs.append(("matrix", f"{l}.gate", self.matrix_words(*mats[f"{l}.gate"])))
            recs.append(("glu", f"glu.{l}", 1 + self.vec_words(M)))
            nxt = f"attn.{l + 1}" if l + 1 < self.L else "head"
            recs.append(("group", nxt, group(3 if l + 1 < self.L else 1)))
            recs.append(("matrix", f"{l}.down", self.matrix_words(*mats[f"{l}.down"])))
        recs.append(("matrix", "head", self.matrix_words(*mats["head"])))
        return recs

    def words(self) -> int:
        return sum(w for _, _, w in self.records())

    def head_words(self) -> int:
        """Words of the LM head, the stream's last record: a pass without the head stops before them."""
        return self.matrix_words(self.d, self.V)

    def weight_bytes(self, head: bool = True) -> int:
        return (self.words() - (0 if head else self.head_words())) * self.R


# ------------------------------------------------------------------ encoding
MANT_BITS = 24


def encode_vector(v: np.ndarray) -> tuple[np.ndarray, int]:
    """24-bit mantissas and one exponent: v ≈ m 2^-e, max|m| in [2^22, 2^23)."""
    v = np.asarray(v, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise ValueError("a norm weight holds NaN or Inf")
    peak = float(np.max(np.abs(v))) if v.size else 0.0
    if peak == 0.0:
        return np.zeros(v.shape, np.int32), 0
    e = MANT_BITS - 2 - math.floor(math.log2(peak))
    lim = (1 << (MANT_BITS - 1)) - 1
    m = np.clip(np.round(v * 2.0 ** e), -lim, lim).astype(np.int32)
    return m, e


def encode_scalar(x: float) -> tuple[int, int]:
    """A positive scalar as a 24-bit mantissa in [2^23, 2^24) and an exponent: x ≈ m 2^-e."""
    if not (math.isfinite(x) and x > 0):
        raise ValueError(f"scale {x!r} must be finite and positive")
    e = 23 - math.floor(math.log2(x))
    m = int(round(x * 2.0 ** e))
    if m >= 1 << 24:
        m, e = int(round(x * 2.0 ** (e - 1))), e - 1
    return m, e


class _Writer:
    def __init__(self, R: int):
        self.R = R
        self.words: list[np.ndarray] = []

    def header(self, *fields: int) -> None:
        w = np.zeros(self.R // 2, np.int16)
        w[:len(fields)] = fields
        self.words.append(w.view(np.uint8).reshape(1, self.R))

    def vector(self, m: np.ndarray) -> None:
        per_word = self.R // 4
        n = math.ceil(len(m) / per_word)
        buf = np.zeros(n * per_word, np.int32)
        buf[:len(m)] = m
        self.words.append(buf.view(np.uint8).reshape(n, self.R))

    def matrix(self, w_q: np.ndarray, inv_gamma: float, shape: Shape, packing: str) -> None:
        m, e = encode_scalar(inv_gamma)
        self.header(np.int16(np.uint16(m & 0xFFFF)), m >> 16, e)
        n_out, n_in = w_q.shape
        n_rb, n_cg = shape.n_rb(n_out), shape.n_cg(n_in)
        padded = np.zeros((n_rb * shape.R, n_cg * shape.per), np.int8)
        padded[:n_out, :n_in] = w_q
        rows = pack_ternary(padded, packing)                        # (n_rb R, n_cg) bytes
        tiles = rows.reshape(n_rb, shape.R, n_cg).transpose(0, 2, 1)
        self.words.append(np.ascontiguousarray(tiles).reshape(n_rb * n_cg, shape.R))

    def image(self) -> np.ndarray:
        return np.concatenate(self.words, axis=0)


def _group(wr: _Writer, a: np.ndarray, ns: list[np.ndarray]) -> None:
    am, ea = encode_vector(a)
    cs = [encode_vector(np.asarray(a, np.float64) * np.asarray(n, np.float64)) for n in ns]
    ecs = [e for _, e in cs] + [0] * (3 - len(cs))
    wr.header(ea, *ecs, len(cs), 1)
    wr.vector(am)
    for m, _ in cs:
        wr.vector(m)


def build_image(model, packing: str, R: int) -> np.ndarray:
    """The token's weight stream as (words, R) bytes, for an :class:`~mmfree_hls.reference.MMFreeLM`."""
    cfg = model.config
    shape = Shape.of(cfg, packing, R)
    p = model.params
    t = model.ternary
    wr = _Writer(R)
    lp = lambda l, k: p[f"model.layers.{l}.{k}"]

    def attn_group(l: int) -> None:
        _group(wr, lp(l, "attn_norm.weight"), [lp(l, f"attn.{q}_proj.norm.weight") for q in "ifg"])

    attn_group(0)
    for l in range(cfg.num_hidden_layers):
        for q in "ifg":
            tw = t[f"model.layers.{l}.attn.{q}_proj"]
            wr.matrix(tw.w_q, tw.scale, shape, packing)
        has_lb = cfg.use_lower_bound and l > 0
        gn, egn = encode_vector(lp(l, "attn.g_norm.weight"))
        no, eno = encode_vector(lp(l, "attn.o_proj.norm.weight"))
        wr.header(egn, eno, int(has_lb))
        if has_lb:
            wr.vector(np.clip(np.round(model.lb[l] * 2.0 ** 23), 0, 2 ** 23 - 1).astype(np.int32))
        wr.vector(gn)
        wr.vector(no)
        _group(wr, lp(l, "mlp_norm.weight"), [lp(l, "mlp.gate_proj.norm.weight")])
        for name in ("attn.o_proj", "mlp.gate_proj"):
            tw = t[f"model.layers.{l}.{name}"]
            wr.matrix(tw.w_q, tw.scale, shape, packing)
        nd, end = encode_vector(lp(l, "mlp.down_proj.norm.weight"))
        wr.header(end)
        wr.vector(nd)
        if l + 1 < cfg.num_hidden_layers:
            attn_group(l + 1)
        else:
            _group(wr, p["model.norm.weight"], [p["lm_head.norm.weight"]])
        tw = t[f"model.layers.{l}.mlp.down_proj"]
        wr.matrix(tw.w_q, tw.scale, shape, packing)
    wr.matrix(t["lm_head"].w_q, t["lm_head"].scale, shape, packing)
    img = wr.image()
    if img.shape[0] != shape.words():
        raise AssertionError(f"stream has {img.shape[0]} words, the layout says {shape.words()}")
    return img


# ------------------------------------------------------------------ the weights buffer
def region_stride(words: int, port_bytes: int) -> int:
    """Bytes from one port's region to the next (4 KiB aligned)."""
    return math.ceil(words * port_bytes / REGION_ALIGN) * REGION_ALIGN


def weights_buffer(image: np.ndarray, shape: Shape, K: int, port_bytes: int) -> np.ndarray:
    """Header + K port regions: port k holds bytes [k B, (k+1) B) of every word."""
    words, R = image.shape
    if K * port_bytes != R:
        raise ValueError(f"K={K} ports x {port_bytes} bytes do not make a {R}-byte word")
    stride = region_stride(words, port_bytes)
    buf = np.zeros(HEADER_BYTES + K * stride, np.uint8)
    head = _HEADER.pack(MAGIC, LAYOUT_VERSION, shape.d, shape.e, shape.M, shape.L, shape.V,
                        shape.per, shape.R, K, port_bytes, words)
    buf[:len(head)] = np.frombuffer(head, np.uint8)
    slices = image.reshape(words, K, port_bytes)
    for k in range(K):
        off = HEADER_BYTES + k * stride
        buf[off:off + words * port_bytes] = slices[:, k, :].reshape(-1)
    return buf


def read_header(buf: np.ndarray) -> dict:
    raw = bytes(np.asarray(buf[:_HEADER.size], np.uint8))
    if len(raw) < _HEADER.size:
        raise LayoutError(f"weights buffer of {len(raw)} bytes is shorter than its header")
    magic, ver, d, e, M, L, V, per, R, K, pb, words = _HEADER.unpack(raw)
    if magic != MAGIC:
        raise LayoutError("weights buffer does not start with the engine's magic: not an engine "
                          "weight image (re-create it with `mmfree package`)")
    return dict(version=ver, d=d, e=e, M=M, L=L, V=V, per=per, R=R, K=K, port_bytes=pb, words=words)


def check_buffer(buf: np.ndarray, shape: Shape, K: int, port_bytes: int) -> None:
    """Once per session: the buffer was written for this engine build."""
    h = read_header(buf)
    want = dict(version=LAYOUT_VERSION, d=shape.d, e=shape.e, M=shape.M, L=shape.L, V=shape.V,
                per=shape.per, R=shape.R, K=K, port_bytes=port_bytes, words=shape.words())
    bad = {k: (h[k], v) for k, v in want.items() if h[k] != v}
    if bad:
        what = ", ".join(f"{k}={got} (expected {exp})" for k, (got, exp) in bad.items())
        raise LayoutError(f"weights buffer was written for another engine build: {what}")
    need = HEADER_BYTES + K * region_stride(h["words"], port_bytes)
    if len(buf) < need:
        raise LayoutError(f"weights buffer has {len(buf)} bytes, the header needs {need}")


def synthetic_image(shape: Shape, seed: int = 0) -> np.ndarray:
    """A well-formed stream of random weights for a shape, without building a model.

    Benches and cycle tests of published shapes (370M: 341 M weights) use it:
    norm vectors of random 18-bit mantissas, 1/γ near 1, random tile bytes (every
    byte decodes: 2-bit code 10 reads as 0, 1.6-bit bytes are drawn below 243).
    """
    rng = np.random.default_rng(seed)
    R = shape.R
    words: list[np.ndarray] = []

    def header(*fields: int) -> None:
        w = np.zeros(R // 2, np.int16)
        w[:len(fields)] = fields
        words.append(w.view(np.uint8).reshape(1, R))

    def vector(n: int, lo: int = 1 << 15, hi: int = 1 << 16) -> None:
        per = R // 4
        buf = np.zeros(shape.vec_words(n) * per, np.int32)
        buf[:n] = rng.integers(lo, hi, n) << 6
        words.append(buf.view(np.uint8).reshape(-1, R))

    for kind, name, n_words in shape.records():
        if kind == "group":
            n_c = 3 if name.startswith("attn") else 1
            header(22, *([22] * n_c), *([0] * (3 - n_c)), n_c, 1)     # norms in [0.5, 1)
            for _ in range(1 + n_c):
                vector(shape.d)
        elif kind == "mlgru":
            has_lb = n_words == 1 + 3 * shape.vec_words(shape.e)
            header(22, 22, int(has_lb))
            if has_lb:
                vector(shape.e, 0, 1 << 16)          # lb < 2^22 (2^-23 units)
            vector(shape.e)
            vector(shape.e)
        elif kind == "glu":
            header(22)
            vector(shape.M)
        else:
            header(0, 1 << 7, 29)                 # 1/γ = 2^23 · 2^-29 = 1/64, about a trained 1/sqrt(n_in)
            tiles = rng.integers(0, 243 if shape.per == 5 else 256, (n_words - 1, R), dtype=np.uint8)
            words.append(tiles)
    img = np.concatenate(words, axis=0)
    if img.shape[0] != shape.words():
        raise AssertionError(f"synthetic stream has {img.shape[0]} words, the layout says {shape.words()}")
    return img

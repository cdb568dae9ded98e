"""Streamed-weight tier: the one contiguous weight buffer the accelerator reads per token.

Models of the 370M class do not fit on chip, so every parameter lives in one
DDR buffer that the HLS top reads front to back, once per token, with burst
m_axi reads. This module is the one place that knows that buffer's layout;
the HLS top (``design/hls/mmfree_streamed_top.cpp``) walks the same order and
the performance model (:mod:`mmfree_hls.perf`) counts its bytes.

Layout (little-endian, every segment starts on an ``ALIGN``-byte boundary so a
burst never straddles two tensors)::

    header                      HEADER_BYTES: magic, version, packing, sizes
    for each layer l:
        attn_norm               (d,)  float32
        i_proj, f_proj, g_proj  BitLinear record each (below)
        lower_bound             (e,)  float32, lb_l (zeros for l = 0); only if use_lower_bound
        g_norm                  (e,)  float32
        o_proj                  BitLinear record
        mlp_norm                (d,)  float32
        gate_proj, down_proj    BitLinear records
    norm                        (d,)  float32
    lm_head                     BitLinear record

    BitLinear record:  norm (in,) float32 | scale 1/γ float32 | packed ternary rows
                       (out × row_bytes(in), :mod:`mmfree_hls.packing`)

Storing ``lb_l`` (already ``cumsum(softmax) − p₀``) rather than the raw
parameter keeps the softmax over layers off the accelerator; for layer 0 it is
exactly zero, so ``f = lb + (1 − lb)·f`` is the identity there, as in the
reference.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from .config import ModelConfig
from .packing import LAYOUTS, pack_ternary, row_bytes
from .reference import ATTN_PROJS, MLP_PROJS, MMFreeLM

#: Segment alignment in bytes: one 512-bit AXI beat.
ALIGN = 64
#: Norm weights, scales and lower bounds are stored as float32 (the reference dtype).
PARAM_DTYPE = np.dtype("<f4")
PARAM_BYTES = PARAM_DTYPE.itemsize
HEADER_BYTES = 64
MAGIC = b"MMFS"
LAYOUT_VERSION = 1
#: magic, version, weights per byte, d, L, e, m, V, use_lower_bound, align, total bytes
_HEADER = struct.Struct("<4s9iq")


class StreamedBufferError(ValueError):
    """A weight buffer does not belong to the model (or packing) it is used with."""


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@dataclass(frozen=True)
class Segment:
    """One tensor of the buffer: where it starts and how many payload bytes it has."""

    name: str            # reference key, e.g. "model.layers.0.attn.i_proj.weight"
    kind: str            # "header" | "vector" | "scale" | "ternary"
    shape: tuple
    offset: int
    nbytes: int          # payload, without the alignment padding that follows


@dataclass
class StreamedLayout:
    """Segments of the weight buffer in the order the accelerator reads them."""

    config: ModelConfig
    packing: str
    segments: list[Segment] = field(default_factory=list)
    total_bytes: int = 0

    def segment(self, name: str) -> Segment:
        for s in self.segments:
            if s.name == name:
                return s
        raise KeyError(f"no segment {name!r} in the streamed layout")

    def bytes_by_kind(self, padded: bool = False) -> dict[str, int]:
        """Payload bytes per kind; with ``padded`` the alignment padding is charged to the kind it follows."""
        out: dict[str, int] = {}
        for i, s in enumerate(self.segments):
            end = self.segments[i + 1].offset if i + 1 < len(self.segments) else self.total_bytes
            out[s.kind] = out.get(s.kind, 0) + ((end - s.offset) if padded else s.nbytes)
        return out


def _bitlinear_shapes(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    d, e, m = cfg.d, cfg.input_dim, cfg.ffn_dim
    return {"i_proj": (e, d), "f_proj": (e, d), "g_proj": (e, d), "o_proj": (d, e),
            "gate_proj": (2 * m, d), "down_proj": (d, m)}


def _segment_plan(cfg: ModelConfig, packing: str) -> list[tuple[str, str, tuple, int]]:
    """(name, kind, shape, payload bytes) in buffer order, from the config alone."""
    if packing not in LAYOUTS:
        raise ValueError(f"unknown packing {packing!r}; choose one of {sorted(LAYOUTS)}")
    shapes = _bitlinear_shapes(cfg)
    plan: list[tuple[str, str, tuple, int]] = [("header", "header", (HEADER_BYTES,), HEADER_BYTES)]

    def vector(name: str, n: int) -> None:
        plan.append((name, "vector", (n,), n * PARAM_BYTES))

    def bitlinear(prefix: str, shape: tuple[int, int]) -> None:
        n_out, n_in = shape
        vector(prefix + ".norm.weight", n_in)
        plan.append((prefix + ".scale", "scale", (1,), PARAM_BYTES))
        plan.append((prefix + ".weight", "ternary", shape, n_out * row_bytes(n_in, packing)))

    for l in range(cfg.num_hidden_layers):
        p = f"model.layers.{l}."
        vector(p + "attn_norm.weight", cfg.d)
        for name in ATTN_PROJS[:3]:
            bitlinear(p + f"attn.{name}", shapes[name])
        if cfg.use_lower_bound:
            vector(p + "attn.lower_bound", cfg.input_dim)
        vector(p + "attn.g_norm.weight", cfg.input_dim // cfg.num_heads)
        bitlinear(p + "attn.o_proj", shapes["o_proj"])
        vector(p + "mlp_norm.weight", cfg.d)
        for name in MLP_PROJS:
            bitlinear(p + f"mlp.{name}", shapes[name])
    vector("model.norm.weight", cfg.d)
    bitlinear("lm_head", (cfg.vocab_size, cfg.d))
    return plan


def layout(cfg: ModelConfig, packing: str = "2bit") -> StreamedLayout:
    """The buffer layout of a model, computed from its config (no weights needed)."""
    cfg.validate()
    out = StreamedLayout(config=cfg, packing=packing)
    offset = 0
    for name, kind, shape, nbytes in _segment_plan(cfg, packing):
        out.segments.append(Segment(name, kind, tuple(shape), offset, nbytes))
        offset = _round_up(offset + nbytes, ALIGN)
    out.total_bytes = offset
    return out


def _header_bytes(lay: StreamedLayout) -> bytes:
    cfg = lay.config
    raw = _HEADER.pack(MAGIC, LAYOUT_VERSION, LAYOUTS[lay.packing], cfg.d, cfg.num_hidden_layers,
                       cfg.input_dim, cfg.ffn_dim, cfg.vocab_size, int(cfg.use_lower_bound),
                       ALIGN, lay.total_bytes)
    return raw.ljust(HEADER_BYTES, b"\0")


def write_buffer(model: MMFreeLM, packing: str = "2bit") -> np.ndarray:
    """Pack a model's weights into the streamed buffer (uint8, ``layout().total_bytes`` long)."""
    lay = layout(model.config, packing)
    buf = np.zeros(lay.total_bytes, dtype=np.uint8)
    for seg in lay.segments:
        if seg.kind == "header":
            data = np.frombuffer(_header_bytes(lay), dtype=np.uint8)
        elif seg.kind == "ternary":
            prefix = seg.name[: -len(".weight")]
            data = pack_ternary(model.ternary[prefix].w_q, packing).ravel()
        elif seg.kind == "scale":
            prefix = seg.name[: -len(".scale")]
            data = np.array([model.ternary[prefix].scale], dtype=PARAM_DTYPE).view(np.uint8)
        elif seg.name.endswith("attn.lower_bound"):
            l = int(seg.name.split(".")[2])
            data = model.lb[l].astype(PARAM_DTYPE).view(np.uint8)
        else:
            data = np.ascontiguousarray(model.params[seg.name], dtype=PARAM_DTYPE).view(np.uint8)
        if data.size != seg.nbytes:
            raise AssertionError(f"{seg.name}: {data.size} bytes, layout says {seg.nbytes}")
        buf[seg.offset: seg.offset + seg.nbytes] = data
    return buf


def read_header(buf: np.ndarray) -> dict:
    """Decode and sanity-check the header of a streamed buffer."""
    raw = np.asarray(buf, dtype=np.uint8)[:HEADER_BYTES].tobytes()
    if len(raw) < _HEADER.size or raw[:4] != MAGIC:
        raise StreamedBufferError("not a streamed weight buffer (bad magic); write it with "
                                  "mmfree_hls.streamed.write_buffer")
    (_, version, per_byte, d, L, e, m, V, lb, align, total) = _HEADER.unpack(raw[:_HEADER.size])
    if version != LAYOUT_VERSION:
        raise StreamedBufferError(f"streamed buffer layout version {version}, this toolkit reads "
                                  f"{LAYOUT_VERSION}; rewrite the buffer with this version")
    packing = {v: k for k, v in LAYOUTS.items()}.get(per_byte)
    return {"version": version, "packing": packing, "d": d, "num_hidden_layers": L, "input_dim": e,
            "ffn_dim": m, "vocab_size": V, "use_lower_bound": bool(lb), "align": align,
            "total_bytes": total}


def check_buffer(buf: np.ndarray, cfg: ModelConfig, packing: str) -> None:
    """Raise StreamedBufferError unless ``buf`` was written for this config and packing."""
    head = read_header(buf)
    lay = layout(cfg, packing)
    want = {"packing": packing, "d": cfg.d, "num_hidden_layers": cfg.num_hidden_layers,
            "input_dim": cfg.input_dim, "ffn_dim": cfg.ffn_dim, "vocab_size": cfg.vocab_size,
            "use_lower_bound": cfg.use_lower_bound, "align": ALIGN, "total_bytes": lay.total_bytes}
    bad = {k: (head[k], v) for k, v in want.items() if head[k] != v}
    if bad:
        detail = ", ".join(f"{k}: buffer {b!r}, model {w!r}" for k, (b, w) in bad.items())
        raise StreamedBufferError(f"streamed buffer does not match the model ({detail}); "
                                  "rewrite it from this checkpoint with write_buffer")
    if np.asarray(buf).size != lay.total_bytes:
        raise StreamedBufferError(f"streamed buffer has {np.asarray(buf).size} bytes, the layout needs "
                                  f"{lay.total_bytes}; the file is truncated or padded")


# ------------------------------------------------------------ the HLS top's view of the layout
#: In-layer segments the HLS top addresses, by the macro suffix it uses.
_LAYER_MACROS = {
    "attn_norm.weight": "ATTN_NORM",
    **{f"attn.{p}.{part}": f"{p[0].upper()}_{tag}" for p in ("i_proj", "f_proj", "g_proj")
       for part, tag in (("norm.weight", "NORM"), ("scale", "SCALE"), ("weight", "ROWS"))},
    "attn.lower_bound": "LOWER_BOUND",
    "attn.g_norm.weight": "G_NORM_W",
    **{f"attn.o_proj.{part}": f"O_{tag}" for part, tag in (("norm.weight", "NORM"), ("scale", "SCALE"), ("weight", "ROWS"))},
    "mlp_norm.weight": "MLP_NORM",
    **{f"mlp.{p}.{part}": f"{p.split('_')[0].upper()}_{tag}" for p in ("gate_proj", "down_proj")
       for part, tag in (("norm.weight", "NORM"), ("scale", "SCALE"), ("weight", "ROWS"))},
}


def layer_offsets(lay: StreamedLayout) -> tuple[int, int, dict[str, int]]:
    """(offset of layer 0, layer stride, offsets inside a layer record by macro suffix).

    Every layer record has the same sizes and starts aligned, so one stride
    addresses them all; checked here rather than assumed by the HLS top.
    """
    L = lay.config.num_hidden_layers
    per_layer: list[dict[str, int]] = [{} for _ in range(L)]
    for seg in lay.segments:
        if seg.name.startswith("model.layers."):
            _, _, l, rest = seg.name.split(".", 3)
            per_layer[int(l)][rest] = seg.offset
    base0 = per_layer[0]["attn_norm.weight"]
    stride = (per_layer[1]["attn_norm.weight"] - base0) if L > 1 else (
        lay.segment("model.norm.weight").offset - base0)
    rel = {_LAYER_MACROS[k]: v - base0 for k, v in per_layer[0].items()}
    for l in range(L):
        if {_LAYER_MACROS[k]: v - base0 - l * stride for k, v in per_layer[l].items()} != rel:
            raise AssertionError(f"layer {l} record differs from layer 0: the stride addressing is wrong")
    return base0, stride, rel


#: Fixed-point knobs of the streamed top (ap_fixed total bits, integer bits; sigma table of
#: 2^bits + 1 points on [0, 16], shared by every layer).
#: Why these: every int8 absmax rounding downstream (x_q = round(127 x / max|x|)) amplifies a tiny
#: activation error by 127 / max|x|; a rounding that flips moves all later layers, and flips cascade.
#: Measured (relative logit error vs the float64 reference, 120 tokens each, demo checkpoint / random
#: d=256 L=4): act (32, 12) / norm (24, 6) / 12 bits -> median 2e-2 / 3e-2; act (40, 12) /
#: norm (32, 6) / 13 bits -> median 5e-8 / 5e-8 (97 % / 88 % of tokens below 1e-4; the rest are
#: near-tie flips, max 9e-3 / 1.4e-2). 14 bits changes nothing; 12 bits doubles the flips on the
#: random model. Norm weights need ~26 fractional bits to equal the checkpoint's float32 values.
PRECISION = {"act": (40, 12), "norm": (32, 6), "sigmoid_table_bits": 13}
#: Parallelism of the streamed top: packed bytes consumed per cycle and row (lanes = bytes × weights
#: per byte). 16 bytes = one 128-bit beat of a Zynq UltraScale+ HP port; perf.py models other widths.
ROW_CHUNK_BYTES = 16


def act_grid(precision: dict = PRECISION) -> float:
    """Resolution of the top's activations (the input embedding is rounded to it)."""
    width, integer = precision["act"]
    return 2.0 ** -(width - integer)


def config_header(cfg: ModelConfig, packing: str, precision: dict = PRECISION,
                  row_chunk_bytes: int = ROW_CHUNK_BYTES) -> str:
    """``mmfree_streamed_config.h`` for the HLS top: sizes, packing, precision and every offset of the layout."""
    lay = layout(cfg, packing)
    base0, stride, rel = layer_offsets(lay)
    lines = ["// Generated by mmfree_hls.streamed.config_header: the streamed-buffer layout as the",
             "// HLS top sees it. Do not edit; regenerate from the model config.",
             "#ifndef MMFREE_STREAMED_CONFIG_H_", "#define MMFREE_STREAMED_CONFIG_H_", ""]
    defs = {"MMFREE_D": cfg.d, "MMFREE_L": cfg.num_hidden_layers, "MMFREE_E": cfg.input_dim,
            "MMFREE_M": cfg.ffn_dim, "MMFREE_V": cfg.vocab_size, "MMFREE_PER_BYTE": LAYOUTS[packing],
            "MMFREE_USE_LOWER_BOUND": int(cfg.use_lower_bound), "MMFREE_RMS_EPS": repr(float(cfg.rms_norm_eps)),
            "MMFREE_ALIGN": ALIGN, "MMFREE_LAYOUT_VERSION": LAYOUT_VERSION,
            "MMFREE_TOTAL_BYTES": f"{lay.total_bytes}ULL", "MMFREE_OFF_LAYER0": f"{base0}ULL",
            "MMFREE_LAYER_STRIDE": f"{stride}ULL",
            "MMFREE_ACT_T": "ap_fixed<{}, {}, AP_RND, AP_SAT>".format(*precision["act"]),
            "MMFREE_NORM_T": "ap_fixed<{}, {}, AP_RND, AP_SAT>".format(*precision["norm"]),
            "MMFREE_SIGMOID_TABLE_BITS": int(precision["sigmoid_table_bits"]),
            "MMFREE_ROW_CHUNK_BYTES": int(row_chunk_bytes)}
    defs.update({f"MMFREE_REL_{k}": f"{v}ULL" for k, v in sorted(rel.items(), key=lambda kv: kv[1])})
    if not cfg.use_lower_bound:
        defs["MMFREE_REL_LOWER_BOUND"] = "0ULL"      # never read
    defs.update({"MMFREE_OFF_FINAL_NORM": f"{lay.segment('model.norm.weight').offset}ULL",
                 "MMFREE_OFF_HEAD_NORM": f"{lay.segment('lm_head.norm.weight').offset}ULL",
                 "MMFREE_OFF_HEAD_SCALE": f"{lay.segment('lm_head.scale').offset}ULL",
                 "MMFREE_OFF_HEAD_ROWS": f"{lay.segment('lm_head.weight').offset}ULL"})
    lines += [f"#define {k} {v}" for k, v in defs.items()]
    lines += ["", "#endif", ""]
    return "\n".join(lines)

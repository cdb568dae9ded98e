"""The engine's cost model: resources and tokens/s from its own units and knobs.

One model for both tiers, derived from design/hls/mmfree_engine.h as written
and from the generated top (codegen.top_source). Every figure is an analytic
ESTIMATE unless a synthesis report replaces it (``source``: ``vivado_impl``
over ``vitis_hls_report`` over ``analytic``; see :mod:`.reports`).

Resources (LUT, FF, BRAM_18K, URAM, DSP), itemised by unit
---------------------------------------------------------
* **MAC unit** (``bitlinear``, one for every projection): R rows, each a PER-input add/subtract/skip
  tree into an accumulator and a write-back copy (``acc``/``prev``); the 5-trit
  decode table per byte for 1.6-bit packing; the quantiser (PER lanes: scale
  product ``mul_exact``, 127/max product ``mul_wide``, and the output scale's
  sums of squares: ``mul_exact`` + 2 ``mul_wide``); the write-back lane
  (``prev[cg]`` R:1 select, the rescale ``mul_wide``, its sink: statistics on
  write are up to 4 ``mul_exact``); the scalar unit (``pf_recip``/``pf_rsqrt``,
  INLINE off); its ``xq`` buffer (PER banks).
  **One instance**: ``bitlinear`` takes its dimensions and its write-back
  target (plain, residual, logits) at run time, so every call of compute_pass
  is the same function and Vitis HLS builds one module: sized for the widest
  input (xq) and the longest accumulator, with all three sinks' logic.
  :data:`BITLINEAR_CALLS` lists the call sites of compute_pass;
  tests/test_cost.py checks it against the header.
* **Vector unit**: V lanes; each lane holds the products of the MLGRU pass
  (3 sigma lookups, 9 products, statistics: 4 more) and of the GLU pass; the two
  passes share the lanes (one loop runs at a time, so the binder may share their
  operators: per resource the larger pass is charged). Cross-lane max/sum trees.
  Risk, not charged: if Vitis HLS keeps each pipelined loop a module of its own,
  the GLU's operators come on top (``vector_lane["glu"]``: 7 DSP a lane).
* **Sigma tables**: 3 lookups per lane in the MLGRU, 2 reads per copy (dual
  port): ceil(3V/2) copies of (2^bits entries x (table + slope) bits), BRAM only
  (a ``static const`` ROM: never URAM, which the bitstream cannot initialise).
* **On-chip buffers** (``engine_state``), banked as the II=1 loops need: cyclic
  factor V (vector passes), PER (the quantiser's pass) and R/4 (``read_vector``
  writes R/4 values a cycle); the weight image (on-chip tier, BRAM ROM).
* **Loader** (streamed tier): per port an m_axi read adapter and a FIFO of
  ``fifo_words`` x port_bits; the combine stage; the I/O adapters (gmem_io,
  gmem_out); s_axilite control and the DATAFLOW/FSM overhead.

* **Token lanes** N = max(B, T) rounded up to a power of two (``batch_slots``, ``prefill_chunk``): the MAC applies every
  weight word to N activation vectors, so per lane group it carries the R row trees with their
  acc/prev, the PER quantiser lanes, the write-back lane and the xq buffer (x N; the 5-trit decode
  and the scalar unit once); the vector unit keeps its V lanes plus an N:1 select on each of its
  :data:`VECTOR_READS` per-token vector reads; the per-token buffers (x, i, f, g, o, u, z) exist
  N times, the states s (B x L x E, banked V ways) and s_max (B x L) once per slot; the logits
  writer keeps a top-k of ``topk`` (value, id) entries per lane (:func:`topk_unit`) and writes
  32N-bit rows. N = B = T = 1 is the single-token engine (the top-k unit and the pass's
  control registers are there too).

Placement: every memory bank goes where it costs the smallest share of the
board (LUTRAM up to 256 deep, BRAM_18K in its best aspect ratio, URAM only on
boards that have it and only for memories written at run time).

Unit costs (:data:`UNIT`) are estimates: carry-chain adders of 1 LUT a bit,
LUT multipliers at 0.55 LUT per partial-product bit, barrel shifters at
W*ceil(log2 S)/2 LUT, DSP48 products of at most 25x18 (every engine product is
written to fit one), the m_axi adapter at ~1.2 k LUT / 1.5 k FF, the scalar unit
at 1.5 k LUT / 6 DSP (reviews/engine_critique.md 1d). Widths are the ones the
values need (accumulators: ceil(log2(127 n_in)) + 1 bits), not the i64 the C++
declares.

Cycles and tokens/s
-------------------
Compute cycles are :func:`.schedule.token_cycles` (the C-sim counts the same).
Streamed tier: the loader runs beside compute (DATAFLOW, a FIFO of
``fifo_words`` per port), so a token takes max(compute, DDR, ports) when the
FIFO absorbs every stall of compute: while compute does work that reads no
weight word (scalar unit, a matrix's quantiser pass and drain, MLGRU/GLU passes, state I/O) the
loader keeps filling the FIFO at the supply rate r (words a cycle); after the
stall compute reads one word a cycle, faster than r, and catches up. The FIFO
absorbs a stall of S cycles when S * r <= fifo_words. :func:`stream_cycles`
checks that by running the token's segment sequence (the same records and
loop terms as the schedule) through a fluid FIFO model, so a FIFO that is too
shallow, or the state load at the token start that no FIFO can hide, costs
what it costs. The state, x and logits travel on gmem_io/gmem_out in compute's
own cycles (LOAD_X, LOAD_STATE, STORE_STATE); their bytes are added to the
DDR traffic. Port time assumes AXI efficiency :data:`AXI_EFFICIENCY`.

Batching and prefill
--------------------
:func:`throughput` takes a pass's run-time arguments: n active lanes, the head or not, full
logits or the top-k only, the state slots loaded and stored (:func:`.schedule.segments` scales
the scalar unit, the MLGRU/GLU passes and the x load by n; a head-less pass reads
``Shape.weight_bytes(head=False)``). DDR bytes a pass: weights + 4 n d (x) + logits (4 VOCAB N
when FULL_LOGITS, else 8 N topk; none without the head) + 4 (loads + stores) L e.
:func:`batch_throughput`: B sequences, one token each a pass (n = B, head, top-k, states on chip):
aggregate B / pass time, per sequence 1 / pass time, and :func:`compute_takeover`, the B from which
compute outlasts the weight stream. :func:`prefill_speedup`: ceil(P/T) passes of n = T (head on the
last only) against P single steps. :func:`batch_records` is ``mmfree perf --batch/--prefill``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from ..config import ModelConfig
from .codegen import SCALAR_ARGS, sigmoid_tables
from .layout import Shape
from .presets import (RESOURCES, TIERS, EnginePreset, PresetError, board_names, get_board, get_preset,
                      model_preset, model_preset_names)
from .reports import SOURCE_ANALYTIC, measured
from .schedule import cycles_of, pass_words, param_lanes, segments

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
DEMO_MODEL = DATA_DIR / "demo_model"
PUBLISHED = ("370M", "1.3B", "2.7B")

#: Every figure this module prints carries this label.
MODEL_LABEL = ("engine cost model: analytic estimate from the engine's units and knobs "
               "(not a measurement) unless `source` names a synthesis report")

#: Share of the m_axi port peak a 16-beat burst stream sustains (critique 1a/1b: 0.90-0.95; estimate).
AXI_EFFICIENCY = 0.92
#: Cycles from a port's first request to its first word at a token's start (DDR latency; estimate).
FIRST_WORD_CYCLES = 64

#: Unit costs (estimates; see the module docstring).
UNIT = {
    "lut_mult_per_bit2": 0.55,      # LUT6 per partial-product bit of a LUT multiplier
    "select_lut": 9,                # ternary add/subtract/skip of one int8 input (9-bit result)
    "dot_bits": 11,                 # width of the PER-input tree's adders
    "trit5_decode_lut": 40,         # 256 x 10-bit decode ROM per byte (LUT6 + F7/F8)
    "sigma_logic_lut": 125,         # range checks, index, interpolation add of one lookup
    "scalar_lut": 1500, "scalar_ff": 1500, "scalar_dsp": 6,   # pf_recip + pf_rsqrt + pf_mul/pf_add
    "fsm_lut": 300, "fsm_ff": 300,  # loop counters and control of one function
    "divider_lut": 100, "divider_dsp": 1,                     # i / N by a constant N that is no power of 2
    "float_conv_lut": 250,          # float32 <-> fixed (exponent shift, rounding, saturation)
    "token_scalar_lut": 800, "token_scalar_ff": 800, "token_scalar_dsp": 3,   # compute_pass's pf arithmetic
    "maxi_lut": 1200, "maxi_ff": 1500,                        # one m_axi adapter
    "axilite_lut": 400, "axilite_ff": 500, "axilite_reg_lut": 40,             # control + per 64-bit register
    "dataflow_lut": 300, "dataflow_ff": 300,
    "lutram_max_depth": 256,
    "uram_min_bram18": 4,           # a bank smaller than 4 BRAM_18K does not take a 288 Kb URAM
}
#: The vector unit's reads of per-token vectors per lane (i, f, g, o, u, z): each an N:1 select.
VECTOR_READS = 6
BRAM18_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
URAM_SHAPE = (4096, 72)

#: compute_pass's BitLinear call sites (mmfree_engine.h): (matrix, n_in, n_out, sink). One hardware
#: instance per distinct (n_in, n_out, sink): a template instantiation is its own function.
BITLINEAR_CALLS = (("i", "D", "E", "SINK_PLAIN"), ("f", "D", "E", "SINK_PLAIN"), ("g", "D", "E", "SINK_PLAIN"),
                   ("o", "E", "D", "SINK_RESIDUAL"), ("gate", "D", "2*M", "SINK_PLAIN"),
                   ("down", "M", "D", "SINK_RESIDUAL"), ("head", "D", "VOCAB", "SINK_LOGITS"))


class CostModelError(ValueError):
    """A model, board, tier or packing the cost model cannot evaluate (the message names the fix)."""


# ================================================================== resources
@dataclass
class Res:
    LUT: float = 0.0
    FF: float = 0.0
    BRAM_18K: float = 0.0
    URAM: float = 0.0
    DSP: float = 0.0

    def __add__(self, o: "Res") -> "Res":
        return Res(*(getattr(self, k) + getattr(o, k) for k in RESOURCES))

    def __mul__(self, n: float) -> "Res":
        return Res(*(getattr(self, k) * n for k in RESOURCES))

    __rmul__ = __mul__

    def max(self, o: "Res") -> "Res":
        return Res(*(max(getattr(self, k), getattr(o, k)) for k in RESOURCES))

    def rounded(self) -> dict:
        return {k: int(math.ceil(getattr(self, k) - 1e-9)) for k in RESOURCES}


def total(items: Iterable[Res]) -> Res:
    out = Res()
    for r in items:
        out = out + r
    return out


# ------------------------------------------------------------------ operators (unit-cost estimates)
def add(w: int) -> Res:
    return Res(LUT=w, FF=w)


def abs_max(w: int) -> Res:
    """|v| and a running maximum register."""
    return Res(LUT=2 * w, FF=w)


def sat(w: int) -> Res:
    return Res(LUT=w)


def shift(w: int, positions: int = 64) -> Res:
    """Variable barrel shift of w bits."""
    return Res(LUT=w * math.ceil(math.log2(max(2, positions))) / 2)


def round_shift(w: int, positions: int = 64) -> Res:
    """rshift_round with a variable shift: two negations, the half, the add, the shift, the select."""
    return Res(LUT=2.5 * w, FF=w) + shift(w, positions)


def mux(w: int, n: int) -> Res:
    """n:1 select of w bits (a LUT6 is a 4:1 mux)."""
    return Res(LUT=w * math.ceil((n - 1) / 3)) if n > 1 else Res()


def lut_mult(a: int, b: int) -> Res:
    return Res(LUT=UNIT["lut_mult_per_bit2"] * a * b, FF=a + b)


def mul_exact() -> Res:
    """v x w (w <= 18 bits): 25x18 on one DSP48 plus 7x18 in LUTs, and the add."""
    return Res(DSP=1) + lut_mult(7, 18) + add(43)


def mul_wide(a: int = 25, b: int = 25) -> Res:
    """a x b (<= 25 bits each): a x (b >> 7) on one DSP48 plus a x 7 bits in LUTs, and the add."""
    return Res(DSP=1) + lut_mult(a, 7) + add(a + b)


def sigma_lookup() -> Res:
    """One sigmoid(): range checks, index, table + slope read, interpolation product (1 DSP), add."""
    return Res(LUT=UNIT["sigma_logic_lut"], FF=60, DSP=1)


def silu() -> Res:
    return sigma_lookup() + shift(32, 32) + mul_wide() + round_shift(50)


def stats_update() -> Res:
    """Statistics on write: max|x|, max|x a| (one product), max|x c_k| for 3 consumers (3 products)."""
    return abs_max(32) + 4 * (mul_exact() + abs_max(50))


def divider(n: int) -> Res:
    """i / n and i % n by a constant n inside an II=1 loop: free for a power of 2."""
    if n & (n - 1) == 0:
        return Res()
    return Res(LUT=UNIT["divider_lut"], DSP=UNIT["divider_dsp"])


# ------------------------------------------------------------------ memories
@dataclass
class Placement:
    name: str
    elements: int
    width: int
    banks: int
    kind: str           # lutram | bram | uram
    res: Res
    options: dict = field(default_factory=dict, repr=False)   # kind -> Res of all banks

    def choose(self, kind: str) -> None:
        self.kind, self.res = kind, self.options[kind]

    def to_dict(self) -> dict:
        return {"name": self.name, "elements": self.elements, "width": self.width, "banks": self.banks,
                "depth": math.ceil(self.elements / self.banks), "in": self.kind, **self.res.rounded()}


def bram18(depth: int, width: int) -> int:
    return min(math.ceil(depth / d) * math.ceil(width / w) for d, w in BRAM18_SHAPES)


def _share(r: Res, budget: dict) -> float:
    return sum(getattr(r, k) / budget[k] for k in RESOURCES if budget.get(k))


def memory(name: str, elements: int, width: int, banks: int, budget: dict, *, rom: bool = False,
           allow_lutram: bool = True, allow_uram: Optional[bool] = None) -> Placement:
    """A memory of ``elements`` x ``width`` bits in ``banks`` cyclic banks, and where it may go.

    Options per bank: LUTRAM (<= 256 deep; 64 x 3 bits per 4 LUTs as simple dual port, 64 x 1 per LUT
    as ROM), BRAM_18K (best aspect ratio), URAM (4K x 72; boards that have it, run-time-written
    memories of at least 4 BRAM_18K a bank only). It starts in the option that costs the smallest share of the board;
    :func:`place` then balances all memories of a build.
    """
    depth = max(1, math.ceil(elements / banks))
    options: dict[str, Res] = {}
    if allow_lutram and depth <= UNIT["lutram_max_depth"]:
        lut = math.ceil(depth / 64) * (width if rom else math.ceil(width / 3) * 4)
        options["lutram"] = Res(LUT=lut, FF=width) * banks
    options["bram"] = Res(BRAM_18K=bram18(depth, width)) * banks
    uram_ok = (not rom) if allow_uram is None else allow_uram
    if uram_ok and budget.get("URAM") and bram18(depth, width) >= UNIT["uram_min_bram18"]:
        options["uram"] = Res(URAM=math.ceil(depth / URAM_SHAPE[0]) * math.ceil(width / URAM_SHAPE[1])) * banks
    kind = min(options, key=lambda k: _share(options[k], budget))
    return Placement(name, elements, width, banks, kind, options[kind], options)


def place(mems: list[Placement], fixed: Res, budget: dict) -> None:
    """Balance the memories over LUTRAM/BRAM/URAM: largest first, each where the sum of the squared
    utilisations of the build ends up lowest (a scarce resource weighs more than an idle one)."""
    running = fixed + total(m.res for m in mems if len(m.options) == 1)
    flexible = sorted((m for m in mems if len(m.options) > 1),
                      key=lambda m: -max(_share(r, budget) for r in m.options.values()))

    def load(r: Res) -> float:
        return sum((getattr(r, k) / budget[k]) ** 2 for k in RESOURCES if budget.get(k))

    for m in flexible:
        m.choose(min(m.options, key=lambda k: load(running + m.options[k])))
        running = running + m.res


# ------------------------------------------------------------------ the engine's units
def _dims(shape: Shape) -> dict:
    return {"D": shape.d, "E": shape.e, "M": shape.M, "2M": 2 * shape.M, "VOCAB": shape.V}


def bitlinear_instances(shape: Shape) -> list[dict]:
    """The BitLinear unit as written: one, for every call (widest input, longest output, every sink)."""
    dims = _dims(shape)
    dims["2*M"] = dims["2M"]
    calls = [(mat, dims[i], dims[o], sink) for mat, i, o, sink in BITLINEAR_CALLS]
    return [{"n_in": max(c[1] for c in calls), "n_out": max(c[2] for c in calls), "sink": "all",
             "matrices": [c[0] for c in calls]}]


def acc_bits(n_in: int) -> int:
    """Accumulator width a row needs: |sum| <= 127 n_in."""
    return math.ceil(math.log2(127 * n_in + 1)) + 1


def mac_instance(shape: Shape, n_in: int, n_out: int, sink: str, budget: dict, lanes: int = 1) -> dict[str, Res]:
    """The units of one bitlinear instance that applies every weight word to ``lanes`` (N) activation
    vectors: per lane group the row trees, acc/prev, quantiser lanes, write-back lane and xq buffer;
    the 5-trit decode of a byte and the scalar unit once."""
    R, per, N = shape.R, shape.per, lanes
    acc = acc_bits(n_in)
    n_cg = shape.n_cg(n_in)
    row = Res(LUT=per * UNIT["select_lut"] + (per - 1) * UNIT["dot_bits"] + acc,
              FF=2 * acc + 8 + per * UNIT["select_lut"]) * N
    if per == 5:
        row = row + Res(LUT=UNIT["trit5_decode_lut"])
    quant_lane = (mul_exact() + shift(43) + mul_wide(25, 24) + round_shift(50) + sat(8)      # bl_quantise
                  + mul_exact() + 2 * (shift(50) + mul_wide(22, 22) + add(64)))               # bl_square_sums
    sinks = {"plain": sat(50) + abs_max(32),
             "residual": add(32) + sat(34) + stats_update(),
             "logits": sat(50) + Res(LUT=UNIT["float_conv_lut"], FF=32)}
    # the one unit carries every sink's logic behind a 3-way select
    writeback = mux(acc, R) + mul_wide(25, 24) + round_shift(50) + total(sinks.values()) + mux(32, 3)
    xq = memory("xq", n_cg * per * N, 8, per * N, budget)          # lane dim completely partitioned
    return {"rows": row * R, "quantiser": quant_lane * per * N, "writeback": writeback * N,
            "scalar": Res(LUT=UNIT["scalar_lut"], FF=UNIT["scalar_ff"], DSP=UNIT["scalar_dsp"]),
            "control": Res(LUT=UNIT["fsm_lut"], FF=UNIT["fsm_ff"]) + divider(n_cg),
            "xq": xq.res}


def vector_lane() -> dict[str, Res]:
    """One lane of the MLGRU pass and of the GLU pass (mmfree_engine.h compute_pass)."""
    mlgru = (sigma_lookup()                                          # sigma(f)
             + add(25) + mul_wide() + Res(LUT=125, FF=50) + add(25)  # lb + (1 - lb) sigma(f)
             + silu()                                                # silu(i)
             + shift(32, 32) + add(25) + mul_wide() + round_shift(50)   # silu(i)(1 - f)
             + shift(32, 32) + mul_wide() + round_shift(50)          # f s_{t-1}
             + add(50) + sat(50) + abs_max(32)                       # s_t, max|s_t|
             + mul_exact() + shift(43)                               # g gn
             + silu()                                                # silu(s_t)
             + shift(32, 32) + mul_wide() + round_shift(50) + sat(50)   # o
             + stats_update()
             + shift(32) + mul_wide(22, 22) + add(64))               # sum g^2
    glu = (silu() + shift(32, 32) + mul_wide() + round_shift(50) + sat(50) + stats_update())
    trees = Res(LUT=6 * 50 + 64, FF=6 * 50 + 64)      # per lane: one node of 6 max trees and the g^2 sum
    return {"mlgru": mlgru, "glu": glu, "shared": mlgru.max(glu), "trees": trees}


def topk_unit(lanes: int, topk: int) -> Res:
    """The logits writer's top-k: per lane ``topk`` entries, each a 32-bit compare against the row's
    logit, a 49-bit (value, id) register and its keep / shift / insert select (one insertion a cycle)."""
    entry = add(32) + Res(FF=49 - 32) + mux(49, 3)
    return entry * (lanes * topk)


def lane_select(lanes: int, vector_lanes: int) -> Res:
    """The vector unit's N:1 lane select: each of the V lanes reads ~6 per-token vectors
    (i, f, g, o, u, z) of the active lane out of N partitioned copies."""
    return mux(32, lanes) * (VECTOR_READS * vector_lanes)


def sigma_table_bits(bits: int) -> int:
    """Width of one table entry: sigma (2^-23 units) and its slope, with a sign bit each."""
    sig, slope = sigmoid_tables(bits)
    return int(sig.max()).bit_length() + 1 + int(abs(slope).max()).bit_length() + 1


def buffers(shape: Shape, preset: EnginePreset, budget: dict) -> list[Placement]:
    """engine_state and its banking (mmfree_engine.h), 32-bit values. The per-token vectors
    (x, i, f, g, o, u, z) exist once per token lane (N copies, the lane dim completely partitioned);
    the states s (B slots x L x E, banked V ways) and s_max (B x L) once per state slot."""
    V, per, nf = preset.vector_lanes, shape.per, param_lanes(shape.R)
    N, B = preset.token_lanes, preset.batch_slots
    d, e, M, L = shape.d, shape.e, shape.M, shape.L
    max_n = max(d, e, M)
    grp = max(nf, per, V)
    mem = lambda name, n, banks: memory(name, n, 32, banks, budget)
    lane = lambda name, n, banks: memory(name, n * N, 32, banks * N, budget)
    out = [memory("s_max", B * L, 64, 1, budget), lane("x", d, per), lane("i", e, V), lane("f", e, V),
           lane("g", e, V), lane("o", e, max(V, per)), lane("u", 2 * M, V), lane("z", M, max(V, per)),
           mem("s", B * L * e, V), mem("lb", e, max(nf, V)), mem("gn", e, max(nf, V))]
    # group_params: a[MAX_N] and c[3][MAX_N] (dim 1 complete: stats read c[0..2][j] together);
    # o_grp and z_grp only ever write c[0].
    for g, arrays in (("attn", ("a", "c0", "c1", "c2")), ("mlp", ("a", "c0", "c1", "c2")),
                      ("o_grp", ("c0",)), ("z_grp", ("c0",))):
        out += [mem(f"{g}.{a}", max_n, grp) for a in arrays]
    return out


def loader_units(shape: Shape, preset: EnginePreset, budget: dict) -> tuple[dict[str, Res], list[Placement]]:
    units: dict[str, Res] = {}
    mems: list[Placement] = []
    b = preset.board
    out_io = 8 if b.family == "zynq7" else 16
    if preset.K:
        buf = Res(BRAM_18K=bram18(preset.burst_beats * preset.outstanding, preset.port_bits))
        units["m_axi weight ports"] = (Res(LUT=UNIT["maxi_lut"], FF=UNIT["maxi_ff"]) + buf) * preset.K
        fifo = [memory(f"fifo w{k}", preset.fifo_words, preset.port_bits, 1, budget, allow_lutram=False)
                for k in range(preset.K)]
        mems += fifo
        units["port FIFOs"] = total(p.res for p in fifo)
        units["loaders + combine"] = Res(LUT=100 * preset.K + 100, FF=100 * preset.K + shape.R * 8)
    else:
        img = memory("weight image", shape.words(), shape.R * 8, 1, budget, rom=True,
                     allow_lutram=False, allow_uram=False)
        mems.append(img)
        units["weight image"] = img.res
        units["image loader"] = Res(LUT=100, FF=100 + shape.R * 8)
    N = preset.token_lanes
    maxi = Res(LUT=UNIT["maxi_lut"], FF=UNIT["maxi_ff"])
    units["m_axi gmem_io, gmem_out"] = (maxi * 2 + Res(BRAM_18K=bram18(16 * out_io, 32))          # gmem_io
                                        + Res(BRAM_18K=bram18(16 * out_io, 32 * N)))              # 32N-bit rows
    units["streams (words, logits)"] = Res(LUT=shape.R * 8 + 64 * N, FF=shape.R * 8 + 32 * N)
    # pointer registers (x_in, state, logits, top, the K weight ports) and the 32-bit run-time
    # scalars of a pass (n, mode, slot, load_mask, store_mask) at half a 64-bit register each
    regs = 4 + preset.K + 0.5 * len(SCALAR_ARGS)
    units["control (s_axilite, dataflow)"] = Res(LUT=UNIT["axilite_lut"] + UNIT["axilite_reg_lut"] * regs
                                                 + UNIT["dataflow_lut"],
                                                 FF=UNIT["axilite_ff"] + 64 * regs + UNIT["dataflow_ff"])
    units["logits writer (top-k)"] = topk_unit(N, preset.topk)
    return units, mems


def resources(cfg: ModelConfig, preset: EnginePreset, packing: str) -> dict:
    """Analytic resources of one engine build, itemised by unit."""
    shape = Shape.of(cfg, packing, preset.R)
    budget = dict(preset.board.resources)
    V = preset.vector_lanes
    units: dict[str, Res] = {}
    instances = bitlinear_instances(shape)
    per_instance = []
    for inst in instances:
        parts = mac_instance(shape, inst["n_in"], inst["n_out"], inst["sink"], budget, preset.token_lanes)
        per_instance.append({**inst, **{k: v.rounded() for k, v in parts.items()},
                             "total": total(parts.values()).rounded()})
        for k, v in parts.items():
            units[f"mac.{k}"] = units.get(f"mac.{k}", Res()) + v
    lane = vector_lane()
    units["vector lanes"] = (lane["shared"] + lane["trees"]) * V
    if preset.token_lanes > 1:
        units["vector lane select (N:1)"] = lane_select(preset.token_lanes, V)
    copies = math.ceil(3 * V / 2)
    tbits = sigma_table_bits(preset.sigmoid_table_bits)
    sig = memory("sigma table", 1 << preset.sigmoid_table_bits, tbits, 1, budget, rom=True,
                 allow_lutram=False, allow_uram=False)
    units["sigma tables"] = sig.res * copies
    units["compute_pass (float I/O, scalars, FSM)"] = (
        Res(LUT=2 * UNIT["float_conv_lut"], FF=64)
        + Res(LUT=UNIT["token_scalar_lut"], FF=UNIT["token_scalar_ff"], DSP=UNIT["token_scalar_dsp"])
        + Res(LUT=UNIT["fsm_lut"], FF=UNIT["fsm_ff"]) + divider(shape.e))
    mems = buffers(shape, preset, budget)
    lu, lmems = loader_units(shape, preset, budget)
    fifo_names = {m.name for m in lmems}
    place(mems + lmems, total(units.values()) + total(v for k, v in lu.items()
                                                      if k not in ("port FIFOs", "weight image")), budget)
    units["buffers (engine_state)"] = total(p.res for p in mems)
    units.update(lu)
    if preset.K:
        units["port FIFOs"] = total(p.res for p in lmems if p.name in fifo_names)
    else:
        units["weight image"] = total(p.res for p in lmems)
    tot = total(units.values())
    return {"totals": tot.rounded(), "units": {k: v.rounded() for k, v in units.items()},
            "token_lanes": preset.token_lanes, "batch_slots": preset.batch_slots,
            "prefill_chunk": preset.prefill_chunk, "topk": preset.topk,
            "bitlinear_instances": per_instance,
            "vector_lane": {k: v.rounded() for k, v in lane.items()},
            "sigma_table": {"copies": copies, "entries": 1 << preset.sigmoid_table_bits, "bits": tbits,
                            "per_copy": sig.res.rounded()},
            "memories": [p.to_dict() for p in mems + lmems]}


# ================================================================== cycles and tokens/s
def stream_cycles(segs: list[tuple[str, int, str]], rate: float, fifo_words: int,
                  first_word: int = FIRST_WORD_CYCLES) -> float:
    """Cycles of one pass when words arrive at ``rate`` per cycle into a FIFO of ``fifo_words``.

    Fluid model: during a stall the FIFO fills (up to its depth, and no further than the words
    left); a read phase drains it at 1 - rate a cycle and, once empty, runs at the supply rate.
    """
    segs = [(seg[0], seg[1]) for seg in segs]
    words = sum(n for k, n in segs if k == "read")
    supplied = 0.0
    q = 0.0
    t = float(first_word)
    for kind, n in segs:
        if kind == "stall":
            add_w = min(rate * n, fifo_words - q, words - supplied)
            q += add_w
            supplied += add_w
            t += n
            continue
        if rate >= 1:
            t += n
            supplied = min(words, supplied + n)
            continue
        if n * (1 - rate) <= q:                     # the FIFO covers the whole phase
            t += n
            q -= n * (1 - rate)
            supplied += n * rate
        else:
            t1 = q / (1 - rate)                      # drain, then run at the supply rate
            t2 = (n - t1) / rate
            t += t1 + t2
            supplied += rate * (t1 + t2)
            q = 0.0
    return t


def _pass_setup(cfg: ModelConfig, preset: EnginePreset, shape: Shape, n: int, head: bool, full_logits: bool,
                loads: int, stores: int) -> dict:
    """Bytes and words of one pass (n active lanes of the build's N)."""
    N = preset.token_lanes
    if head:
        logits = 4 * cfg.vocab_size * N if full_logits else 8 * N * preset.topk
    else:
        logits = 0
    return {"weight_bytes": shape.weight_bytes(head), "words": pass_words(shape, head),
            "io_bytes": 4 * n * cfg.d + logits + 4 * (loads + stores) * shape.L * shape.e,
            "io": {"x": 4 * n * cfg.d, "logits": logits, "state": 4 * (loads + stores) * shape.L * shape.e}}


def throughput(cfg: ModelConfig, preset: EnginePreset, packing: str, n: int = 1, *, head: bool = True,
               full_logits: bool = True, loads: int = 1, stores: int = 1, _any_n: bool = False) -> dict:
    """Cycles and tokens/s of one pass of an engine build (accelerator time only): ``n`` active token
    lanes (at most the build's N = max(B, T)), the LM head when ``head``, every logit written when
    ``full_logits`` (else the device-side top-k), ``loads``/``stores`` state slots moved over gmem_io.
    The defaults are the single-token step (host-held state, full logits). A prefill pass (lanes =
    consecutive prompt tokens) has the same figures as a batch of n.
    ``*_per_token`` figures are per pass / n; ``*_per_pass`` per pass."""
    N = preset.token_lanes
    if not 1 <= n <= N and not _any_n:
        raise CostModelError(f"n={n}: a build with batch_slots={preset.batch_slots}, prefill_chunk="
                             f"{preset.prefill_chunk} has N={N} token lanes; n must be 1..{N}")
    if loads < 0 or stores < 0 or max(loads, stores) > preset.batch_slots:
        raise CostModelError(f"loads={loads}, stores={stores}: state slots moved, 0..{preset.batch_slots}")
    shape = Shape.of(cfg, packing, preset.R)
    V = preset.vector_lanes
    segs = segments(shape, V, n, head=head, loads=loads, stores=stores)
    cyc = cycles_of(segs)                  # schedule.token_cycles, from the segments already built
    f = preset.clock_mhz * 1e6
    io = _pass_setup(cfg, preset, shape, n, head, full_logits, loads, stores)
    weight_bytes, words, io_bytes = io["weight_bytes"], io["words"], io["io_bytes"]
    out = {"clock_mhz": preset.clock_mhz, "n": n, "token_lanes": N, "head": head, "full_logits": full_logits,
           "loads": loads, "stores": stores, "compute_cycles": cyc.total, "cycles": cyc.to_dict(),
           "words_per_pass": words, "weight_bytes_per_pass": weight_bytes, "io_bytes_per_pass": io_bytes,
           "io_bytes": io["io"], "words_per_token": words / n if n > 1 else words,
           "weight_bytes_per_token": weight_bytes / n if n > 1 else weight_bytes,
           "io_bytes_per_token": io_bytes / n if n > 1 else io_bytes}
    stalls = [(s.cycles, s.what) for s in segs if s.kind == "stall"]
    if preset.K == 0:
        t = cyc.total / f
        out.update(cycles_per_pass=cyc.total, pass_s=t, cycles_per_token=cyc.total / n if n > 1 else cyc.total,
                   tokens_per_s=n / t, bound_tokens_per_s=n * f / words,
                   bound_basis="on-chip image: one R-byte word a cycle", limit="compute",
                   time_s={"compute": t, "ddr": None, "ports": None, "with_fifo": t})
        out["share_of_bound"] = out["tokens_per_s"] / out["bound_tokens_per_s"]
        return out
    usable = preset.board.usable_gbps * 1e9
    ddr_rate = usable / (shape.R * f)                   # stream words a cycle the DDR can deliver
    port_rate = AXI_EFFICIENCY                          # one port word per port a cycle, at the AXI efficiency
    rate = min(ddr_rate, port_rate)
    between = [(c, w) for c, w in stalls if w not in ("load x", "load state", "store state")]
    longest = max(between) if between else (0, "")
    sim = stream_cycles(segs, rate, preset.fifo_words)
    t_compute = cyc.total / f
    t_ddr = (weight_bytes + io_bytes) / usable
    t_ports = words / (f * port_rate)
    t = max(sim / f, t_ddr, t_compute, t_ports)
    limit = max((("compute", t_compute), ("DDR", t_ddr), ("ports", t_ports)), key=lambda x: x[1])[0]
    if sim / f > 1.005 * max(t_compute, t_ddr, t_ports):
        limit += "+stalls"          # compute stalls the FIFO does not hide (state I/O, a shallow FIFO)
    bound = n * usable / weight_bytes
    cycles = int(round(t * f))
    out.update(cycles_per_pass=cycles, pass_s=t, cycles_per_token=cycles / n if n > 1 else cycles,
               tokens_per_s=n / t, bound_tokens_per_s=bound,
               bound_basis="usable DDR bandwidth / packed weight bytes per token",
               share_of_bound=(n / t) / bound, limit=limit,
               time_s={"compute": t_compute, "ddr": t_ddr, "ports": t_ports, "with_fifo": sim / f},
               supply_words_per_cycle=rate, axi_efficiency=AXI_EFFICIENCY,
               fifo={"words": preset.fifo_words, "longest_stall_cycles": longest[0],
                     "longest_stall": longest[1], "words_arriving_in_it": longest[0] * rate,
                     "absorbs_stalls": longest[0] * rate <= preset.fifo_words,
                     "lost_cycles": max(0.0, sim - max(cyc.total, words / rate))})
    return out


def _build_for(preset: EnginePreset, batch_slots: int = 1, prefill_chunk: int = 1) -> EnginePreset:
    """The preset itself when it has the lanes, else the same build with batch_slots / prefill_chunk raised."""
    changes = {}
    if batch_slots > preset.batch_slots:
        changes["batch_slots"] = batch_slots
    if prefill_chunk > preset.token_lanes:
        changes["prefill_chunk"] = prefill_chunk
    try:
        return preset.with_knobs(**changes) if changes else preset
    except PresetError as e:
        raise CostModelError(str(e)) from None


def _build_summary(cfg: ModelConfig, preset: EnginePreset, packing: str) -> dict:
    res = resources(cfg, preset, packing)
    util = utilisation(res["totals"], preset.board.resources)
    top = max(util, key=util.get)
    return {"batch_slots": preset.batch_slots, "prefill_chunk": preset.prefill_chunk, "topk": preset.topk,
            "token_lanes": preset.token_lanes, "vector_lanes": preset.vector_lanes, "R": preset.R,
            **res["totals"], "util": util, "util_max": util[top], "scarcest": top,
            "fits": fits({"util": util})}


def compute_takeover(cfg: ModelConfig, preset: EnginePreset, packing: str, limit: int = 64) -> Optional[int]:
    """The smallest batch B at which a pass's compute time reaches its bandwidth time (DDR or ports):
    below it a batch rides on the weight stream for free, above it every sequence adds compute.
    1 on the on-chip tier (always compute); None when bandwidth still dominates at ``limit``.
    Cycles depend on n only, not on the build's N, so the scan needs no build per B."""
    if preset.K == 0:
        return 1
    for b in range(1, limit + 1):
        t = throughput(cfg, preset, packing, b, head=True, full_logits=False, loads=0, stores=0, _any_n=True)
        ts = t["time_s"]
        if ts["compute"] >= max(ts["ddr"], ts["ports"]):
            return b
    return None


def batch_throughput(cfg: ModelConfig, preset: EnginePreset, packing: str, B: int) -> dict:
    """B sequences decoded together, one token each per pass (n = B, head, top-k only, the states
    on chip: loads = stores = 0): aggregate tokens/s = B / pass time, per-sequence = 1 / pass time.
    Evaluated on ``preset`` when it has B slots, else on the same build with batch_slots = B
    (``build`` gives its resources). ``speedup`` is against B = 1 on the same build and terms."""
    if B < 1:
        raise CostModelError(f"B={B}: a batch has at least one sequence")
    build = _build_for(preset, batch_slots=B)
    kw = dict(head=True, full_logits=False, loads=0, stores=0)
    t = throughput(cfg, build, packing, B, **kw)
    one = throughput(cfg, build, packing, 1, **kw)
    return {"B": B, "aggregate_tokens_per_s": t["tokens_per_s"], "per_sequence_tokens_per_s": 1.0 / t["pass_s"],
            "pass_s": t["pass_s"], "speedup": t["tokens_per_s"] / one["tokens_per_s"],
            "b1_tokens_per_s": one["tokens_per_s"], "limit": t["limit"],
            "time_s": t["time_s"], "cycles": t["cycles"], "compute_takes_over_at_B": compute_takeover(cfg, build, packing),
            "build": _build_summary(cfg, build, packing), "label": MODEL_LABEL}


def prefill_speedup(cfg: ModelConfig, preset: EnginePreset, packing: str, prompt: int = 256,
                    T: Optional[int] = None) -> dict:
    """A prompt of ``prompt`` tokens in ceil(P/T) prefill passes (n = T, the last chunk may be shorter,
    the LM head only on the last) against P single steps (n = 1, head each), states on chip and the
    top-k only in both. T defaults to the build's prefill_chunk; a build with fewer lanes is
    evaluated with prefill_chunk = T. ``speedup_vs_headless_steps``: against single steps that also
    skip the head until the last (the fairer baseline for a head-less engine)."""
    T = preset.prefill_chunk if T is None else T
    if prompt < 1 or T < 1:
        raise CostModelError(f"prompt={prompt}, T={T}: both at least 1")
    build = _build_for(preset, prefill_chunk=T)
    kw = dict(full_logits=False, loads=0, stores=0)
    full, last = divmod(prompt, T)
    chunks = [T] * full + ([last] if last else [])
    passes = [throughput(cfg, build, packing, n, head=(i == len(chunks) - 1), **kw) for i, n in enumerate(chunks)]
    t_prefill = sum(p["pass_s"] for p in passes)
    step = throughput(cfg, build, packing, 1, head=True, full_logits=False, loads=0, stores=0)
    step_nohead = throughput(cfg, build, packing, 1, head=False, full_logits=False, loads=0, stores=0)
    t_steps = prompt * step["pass_s"]
    t_steps_nohead = (prompt - 1) * step_nohead["pass_s"] + step["pass_s"]
    return {"prompt": prompt, "T": T, "passes": len(chunks), "prefill_s": t_prefill, "single_steps_s": t_steps,
            "speedup": t_steps / t_prefill, "speedup_vs_headless_steps": t_steps_nohead / t_prefill,
            "prompt_tokens_per_s": prompt / t_prefill, "chunk_limit": passes[0]["limit"],
            "chunk_time_s": passes[0]["time_s"], "build": _build_summary(cfg, build, packing),
            "label": MODEL_LABEL}

# ================================================================== records
def check_budget(record: dict, budget: float = 1.0) -> dict:
    """Per resource: does the record use at most ``budget`` (a fraction) of the board?"""
    return {k: record["util"][k] <= budget + 1e-12 for k in RESOURCES}


def fits(record: dict, budget: float = 1.0) -> bool:
    """Every resource at most ``budget`` of the board (1.0 = it fits; 0.6/0.7 = the issue's targets)."""
    return all(check_budget(record, budget).values())


def utilisation(used: dict, board_resources: dict) -> dict:
    out = {}
    for k in RESOURCES:
        have = board_resources.get(k) or 0
        u = used.get(k) or 0
        out[k] = (u / have) if have else (0.0 if u == 0 else math.inf)
    return out


def estimate(cfg: ModelConfig, preset: EnginePreset, packing: str = "2bit", model: str = "",
             project_dir: Optional[str | Path] = None) -> dict:
    """The record of one (board, model, tier, packing): resources, util, fits, tokens/s, source."""
    if packing not in ("2bit", "1.6bit"):
        raise CostModelError(f"unknown packing {packing!r}; choose 2bit or 1.6bit")
    res = resources(cfg, preset, packing)
    perf = throughput(cfg, preset, packing)
    used = dict(res["totals"])
    source = SOURCE_ANALYTIC
    rep = measured(project_dir, preset.board.name)
    if rep is not None:
        source = rep["source"]
        used = {k: int(rep["resources"].get(k) or 0) for k in RESOURCES}
    rec = {"board": preset.board.name, "model": model or f"d{cfg.d}xL{cfg.num_hidden_layers}",
           "tier": preset.tier, "packing": packing, **used}
    rec["util"] = utilisation(used, preset.board.resources)
    rec["fits"] = fits(rec)
    rec.update({k: perf[k] for k in ("cycles_per_token", "tokens_per_s", "bound_tokens_per_s", "share_of_bound")})
    rec["source"] = source
    rec.update({"flow": preset.board.flow, "clock_mhz": preset.clock_mhz, "K": preset.K, "R": preset.R,
                "lanes": preset.lanes(packing), "vector_lanes": preset.vector_lanes,
                "batch_slots": preset.batch_slots, "prefill_chunk": preset.prefill_chunk,
                "token_lanes": preset.token_lanes, "topk": preset.topk,
                "analytic": res["totals"], "units": res["units"],
                "bitlinear_instances": res["bitlinear_instances"], "memories": res["memories"],
                "sigma_table": res["sigma_table"], "vector_lane": res["vector_lane"],
                "throughput": {k: v for k, v in perf.items()
                               if k not in ("cycles_per_token", "tokens_per_s", "bound_tokens_per_s",
                                            "share_of_bound")}})
    if rep is not None:
        rec["report"] = rep["path"]
    return rec


# ------------------------------------------------------------------ models and sweeps over boards
def resolve_model(spec: str) -> tuple[str, ModelConfig]:
    """'370M' | '1.3B' | '2.7B' (data/model_presets.json), 'demo' (the shipped model), a checkpoint
    directory or a config.json."""
    presets = model_preset_names()
    if spec in presets:
        return spec, model_preset(spec)
    if spec == "demo":
        return "demo", ModelConfig.from_json(DEMO_MODEL / "config.json")
    p = Path(spec)
    if p.is_dir():
        p = p / "config.json"
    if p.is_file():
        return (p.parent.name if p.name == "config.json" else p.stem), ModelConfig.from_json(p)
    raise CostModelError(f"model {spec!r} is neither a published size ({', '.join(presets)}), 'demo', "
                         "nor a checkpoint directory / config.json")


def records(models: Iterable[tuple[str, ModelConfig]], boards: Optional[Iterable[str]] = None,
            tiers: Iterable[str] = ("streamed",), packings: Iterable[str] = ("2bit", "1.6bit"),
            project_dir: Optional[str | Path] = None, **knobs) -> list[dict]:
    """One record per (board, model, tier, packing); boards default to every board of the table."""
    out = []
    models, packings, tiers = list(models), list(packings), list(tiers)
    for t in tiers:
        if t not in TIERS:
            raise CostModelError(f"tier {t!r} is not one of {TIERS}")
    for b in (list(boards) if boards is not None else board_names()):
        for t in tiers:
            try:
                preset = get_preset(b, t, **knobs)
            except PresetError as e:
                raise CostModelError(str(e)) from None
            for name, cfg in models:
                for p in packings:
                    out.append(estimate(cfg, preset, p, name, project_dir))
    return out



def batch_records(models: Iterable[tuple[str, ModelConfig]], boards: Optional[Iterable[str]] = None,
                  tiers: Iterable[str] = ("streamed",), packings: Iterable[str] = ("2bit",),
                  batch: Optional[int] = None, prefill: Optional[int] = None, prompt: int = 256) -> list[dict]:
    """One batching / prefill record per (board, model, tier, packing): B sequences a pass
    (:func:`batch_throughput`) and a ``prompt``-token prefill at chunk T (:func:`prefill_speedup`), on
    one build with both: the board's preset with batch_slots / prefill_chunk raised to B / T where it
    has fewer (``build``: its resources, utilisation and fit). B and T default to the preset's."""
    out = []
    models, packings, tiers = list(models), list(packings), list(tiers)
    for t in tiers:
        if t not in TIERS:
            raise CostModelError(f"tier {t!r} is not one of {TIERS}")
    for v, what in ((batch, "--batch"), (prefill, "--prefill"), (prompt, "--prompt")):
        if v is not None and v < 1:
            raise CostModelError(f"{what} {v}: give a positive number")
    for b in (list(boards) if boards is not None else board_names()):
        for t in tiers:
            try:
                preset = get_preset(b, t)
            except PresetError as e:
                raise CostModelError(str(e)) from None
            B = preset.batch_slots if batch is None else batch
            T = preset.prefill_chunk if prefill is None else prefill
            build = _build_for(preset, batch_slots=B, prefill_chunk=T)
            for name, cfg in models:
                for p in packings:
                    if p not in ("2bit", "1.6bit"):
                        raise CostModelError(f"unknown packing {p!r}; choose 2bit or 1.6bit")
                    bt = batch_throughput(cfg, build, p, B)
                    pf = prefill_speedup(cfg, build, p, prompt, T)
                    out.append({
                        "board": b, "model": name, "tier": t, "packing": p, "flow": build.board.flow,
                        "B": B, "T": T, "prompt": prompt,
                        "aggregate_tokens_per_s": bt["aggregate_tokens_per_s"],
                        "per_sequence_tokens_per_s": bt["per_sequence_tokens_per_s"],
                        "b1_tokens_per_s": bt["b1_tokens_per_s"], "batch_speedup": bt["speedup"],
                        "batch_limit": bt["limit"], "compute_takes_over_at_B": bt["compute_takes_over_at_B"],
                        "prefill_speedup": pf["speedup"],
                        "prefill_speedup_vs_headless_steps": pf["speedup_vs_headless_steps"],
                        "prefill_passes": pf["passes"], "prefill_s": pf["prefill_s"],
                        "single_steps_s": pf["single_steps_s"], "prompt_tokens_per_s": pf["prompt_tokens_per_s"],
                        "prefill_limit": pf["chunk_limit"], "preset": {"batch_slots": preset.batch_slots,
                                                                       "prefill_chunk": preset.prefill_chunk},
                        "build": bt["build"], "source": SOURCE_ANALYTIC, "label": MODEL_LABEL})
    return out

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
  target (plain, residual, logits) at run time, so every call of compute_token
  is the same function and Vitis HLS builds one module: sized for the widest
  input (xq) and the longest accumulator, with all three sinks' logic.
  :data:`BITLINEAR_CALLS` lists the call sites of compute_token;
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
  factor V (vector passes), PER (the MAC's first block) and R/4 (``read_vector``
  writes R/4 values a cycle); the weight image (on-chip tier, BRAM ROM).
* **Loader** (streamed tier): per port an m_axi read adapter and a FIFO of
  ``fifo_words`` x port_bits; the combine stage; the I/O adapters (gmem_io,
  gmem_out); s_axilite control and the DATAFLOW/FSM overhead.

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
weight word (scalar unit, MLGRU/GLU passes, a matrix's drain, state I/O) the
loader keeps filling the FIFO at the supply rate r (words a cycle); after the
stall compute reads one word a cycle, faster than r, and catches up. The FIFO
absorbs a stall of S cycles when S * r <= fifo_words. :func:`stream_cycles`
checks that by running the token's segment sequence (the same records and
loop terms as the schedule) through a fluid FIFO model, so a FIFO that is too
shallow, or the state load at the token start that no FIFO can hide, costs
what it costs. The state, x and logits travel on gmem_io/gmem_out in compute's
own cycles (LOAD_X, LOAD_STATE, STORE_STATE); their bytes are added to the
DDR traffic. Port time assumes AXI efficiency :data:`AXI_EFFICIENCY`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from ..config import ModelConfig
from .codegen import sigmoid_tables
from .layout import Shape
from .presets import (RESOURCES, TIERS, EnginePreset, PresetError, board_names, get_board, get_preset,
                      model_preset, model_preset_names)
from .reports import SOURCE_ANALYTIC, measured
from .schedule import PIPELINE, param_lanes, token_cycles

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
    "token_scalar_lut": 800, "token_scalar_ff": 800, "token_scalar_dsp": 3,   # compute_token's pf arithmetic
    "maxi_lut": 1200, "maxi_ff": 1500,                        # one m_axi adapter
    "axilite_lut": 400, "axilite_ff": 500, "axilite_reg_lut": 40,             # control + per 64-bit register
    "dataflow_lut": 300, "dataflow_ff": 300,
    "lutram_max_depth": 256,
    "uram_min_bram18": 4,           # a bank smaller than 4 BRAM_18K does not take a 288 Kb URAM
}
BRAM18_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
URAM_SHAPE = (4096, 72)

#: compute_token's BitLinear call sites (mmfree_engine.h): (matrix, n_in, n_out, sink). One hardware
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


def mac_instance(shape: Shape, n_in: int, n_out: int, sink: str, budget: dict) -> dict[str, Res]:
    """The units of one bitlinear_stream instance."""
    R, per = shape.R, shape.per
    acc = acc_bits(n_in)
    n_cg = shape.n_cg(n_in)
    row = Res(LUT=per * UNIT["select_lut"] + (per - 1) * UNIT["dot_bits"] + acc,
              FF=2 * acc + 8 + per * UNIT["select_lut"])
    if per == 5:
        row = row + Res(LUT=UNIT["trit5_decode_lut"])
    quant_lane = (mul_exact() + shift(43) + mul_wide(25, 24) + round_shift(50) + sat(8)      # bl_quantise
                  + mul_exact() + 2 * (shift(50) + mul_wide(22, 22) + add(64)))               # bl_square_sums
    sinks = {"plain": sat(50) + abs_max(32),
             "residual": add(32) + sat(34) + stats_update(),
             "logits": sat(50) + Res(LUT=UNIT["float_conv_lut"], FF=32)}
    # the one unit carries every sink's logic behind a 3-way select
    writeback = mux(acc, R) + mul_wide(25, 24) + round_shift(50) + total(sinks.values()) + mux(32, 3)
    xq = memory("xq", n_cg * per, 8, per, budget)
    return {"rows": row * R, "quantiser": quant_lane * per, "writeback": writeback,
            "scalar": Res(LUT=UNIT["scalar_lut"], FF=UNIT["scalar_ff"], DSP=UNIT["scalar_dsp"]),
            "control": Res(LUT=UNIT["fsm_lut"], FF=UNIT["fsm_ff"]) + divider(n_cg),
            "xq": xq.res}


def vector_lane() -> dict[str, Res]:
    """One lane of the MLGRU pass and of the GLU pass (mmfree_engine.h compute_token)."""
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


def sigma_table_bits(bits: int) -> int:
    """Width of one table entry: sigma (2^-23 units) and its slope, with a sign bit each."""
    sig, slope = sigmoid_tables(bits)
    return int(sig.max()).bit_length() + 1 + int(abs(slope).max()).bit_length() + 1


def buffers(shape: Shape, preset: EnginePreset, budget: dict) -> list[Placement]:
    """engine_state and its banking (mmfree_engine.h), 32-bit values."""
    V, per, nf = preset.vector_lanes, shape.per, param_lanes(shape.R)
    d, e, M, L = shape.d, shape.e, shape.M, shape.L
    max_n = max(d, e, M)
    grp = max(nf, per, V)
    mem = lambda name, n, banks: memory(name, n, 32, banks, budget)
    out = [memory("s_max", L, 64, 1, budget), mem("x", d, per), mem("i", e, V), mem("f", e, V), mem("g", e, V), mem("o", e, max(V, per)),
           mem("u", 2 * M, V), mem("z", M, max(V, per)), mem("s", L * e, V),
           mem("lb", e, max(nf, V)), mem("gn", e, max(nf, V))]
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
    io_buf = Res(BRAM_18K=bram18(16 * out_io, 32))
    units["m_axi gmem_io, gmem_out"] = (Res(LUT=UNIT["maxi_lut"], FF=UNIT["maxi_ff"]) + io_buf) * 2
    units["streams (words, logits)"] = Res(LUT=shape.R * 8 + 64, FF=shape.R * 8 + 32)
    regs = 3 + preset.K
    units["control (s_axilite, dataflow)"] = Res(LUT=UNIT["axilite_lut"] + UNIT["axilite_reg_lut"] * regs
                                                 + UNIT["dataflow_lut"],
                                                 FF=UNIT["axilite_ff"] + 64 * regs + UNIT["dataflow_ff"])
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
        parts = mac_instance(shape, inst["n_in"], inst["n_out"], inst["sink"], budget)
        per_instance.append({**inst, **{k: v.rounded() for k, v in parts.items()},
                             "total": total(parts.values()).rounded()})
        for k, v in parts.items():
            units[f"mac.{k}"] = units.get(f"mac.{k}", Res()) + v
    lane = vector_lane()
    units["vector lanes"] = (lane["shared"] + lane["trees"]) * V
    copies = math.ceil(3 * V / 2)
    tbits = sigma_table_bits(preset.sigmoid_table_bits)
    sig = memory("sigma table", 1 << preset.sigmoid_table_bits, tbits, 1, budget, rom=True,
                 allow_lutram=False, allow_uram=False)
    units["sigma tables"] = sig.res * copies
    units["compute_token (float I/O, scalars, FSM)"] = (
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
            "bitlinear_instances": per_instance,
            "vector_lane": {k: v.rounded() for k, v in lane.items()},
            "sigma_table": {"copies": copies, "entries": 1 << preset.sigmoid_table_bits, "bits": tbits,
                            "per_copy": sig.res.rounded()},
            "memories": [p.to_dict() for p in mems + lmems]}


# ================================================================== cycles and tokens/s
def segments(shape: Shape, V: int) -> list[tuple[str, int, str]]:
    """compute_token as (kind, cycles, what): 'read' cycles consume one stream word each, 'stall'
    cycles read none. The same records and loop terms as :func:`.schedule.token_cycles`."""
    p = PIPELINE
    vw = shape.vec_words
    segs: list[tuple[str, int, str]] = []

    steps = (shape.R // 4) // param_lanes(shape.R)      # cycles per parameter word (read_vector)

    def rec_vec(n: int, what: str) -> None:
        segs.extend([("read", vw(n), what), ("stall", vw(n) * (steps - 1) + p["depth_io"], what)])

    def group(n: int, n_c: int, what: str) -> None:
        segs.append(("read", 1, what))
        for _ in range(1 + n_c):
            rec_vec(n, what)

    def matrix(name: str, n_in: int, n_out: int) -> None:
        n_cg, n_rb = shape.n_cg(n_in), shape.n_rb(n_out)
        segs.extend([("read", 1, name), ("stall", p["scalar_recip"], f"{name} 1/x"),
                     ("read", n_cg, name), ("stall", p["depth_mac"], name),
                     ("stall", p["scalar_rsqrt"], f"{name} 1/sqrt"),
                     ("read", (n_rb - 1) * n_cg, name), ("stall", shape.R + p["depth_mac"], f"{name} drain")])

    d, e, M, L = shape.d, shape.e, shape.M, shape.L
    group(d, 3, "attn.0")
    segs.append(("stall", d + p["depth_io"], "load x"))
    segs.append(("stall", L * e + p["depth_io"], "load state"))
    for l in range(L):
        for q in "ifg":
            matrix(f"{l}.{q}", d, e)
        segs.append(("read", 1, f"mlgru.{l}"))
        for _ in range(3 if (shape.use_lb and l > 0) else 2):
            rec_vec(e, f"mlgru.{l}")
        segs.append(("stall", math.ceil(e / V) + p["depth_vec"], f"MLGRU {l}"))
        group(d, 1, f"mlp.{l}")
        matrix(f"{l}.o", e, d)
        matrix(f"{l}.gate", d, 2 * M)
        segs.append(("read", 1, f"glu.{l}"))
        rec_vec(M, f"glu.{l}")
        segs.append(("stall", math.ceil(M / V) + p["depth_vec"], f"GLU {l}"))
        group(d, 3 if l + 1 < L else 1, "next group")
        matrix(f"{l}.down", M, d)
    matrix("head", d, shape.V)
    segs.append(("stall", L * e + p["depth_io"], "store state"))
    return segs


def stream_cycles(segs: list[tuple[str, int, str]], rate: float, fifo_words: int,
                  first_word: int = FIRST_WORD_CYCLES) -> float:
    """Cycles of one token when words arrive at ``rate`` per cycle into a FIFO of ``fifo_words``.

    Fluid model: during a stall the FIFO fills (up to its depth, and no further than the words
    left); a read phase drains it at 1 - rate a cycle and, once empty, runs at the supply rate.
    """
    words = sum(n for k, n, _ in segs if k == "read")
    supplied = 0.0
    q = 0.0
    t = float(first_word)
    for kind, n, _ in segs:
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


def throughput(cfg: ModelConfig, preset: EnginePreset, packing: str) -> dict:
    """Cycles per token and tokens/s of one engine build (accelerator time only)."""
    shape = Shape.of(cfg, packing, preset.R)
    V = preset.vector_lanes
    cyc = token_cycles(shape, V)
    segs = segments(shape, V)
    if sum(n for _, n, _ in segs) != cyc.total:
        raise AssertionError("cost.segments disagrees with schedule.token_cycles: keep them in step")
    f = preset.clock_mhz * 1e6
    weight_bytes = shape.weight_bytes()
    io_bytes = 4 * (cfg.d + 2 * shape.L * shape.e + cfg.vocab_size)
    out = {"clock_mhz": preset.clock_mhz, "compute_cycles": cyc.total, "cycles": cyc.to_dict(),
           "words_per_token": shape.words(), "weight_bytes_per_token": weight_bytes,
           "io_bytes_per_token": io_bytes}
    stalls = [(n, what) for k, n, what in segs if k == "stall"]
    if preset.K == 0:
        out.update(cycles_per_token=cyc.total, tokens_per_s=f / cyc.total,
                   bound_tokens_per_s=f * shape.R / weight_bytes,
                   bound_basis="on-chip image: one R-byte word a cycle", limit="compute")
        out["share_of_bound"] = out["tokens_per_s"] / out["bound_tokens_per_s"]
        return out
    usable = preset.board.usable_gbps * 1e9
    ddr_rate = usable / (shape.R * f)                   # stream words a cycle the DDR can deliver
    port_rate = AXI_EFFICIENCY                          # one port word per port a cycle, at the AXI efficiency
    rate = min(ddr_rate, port_rate)
    between = [(n, w) for n, w in stalls if w not in ("load x", "load state", "store state")]
    longest = max(between) if between else (0, "")
    sim = stream_cycles(segs, rate, preset.fifo_words)
    t_compute = cyc.total / f
    t_ddr = (weight_bytes + io_bytes) / usable
    t_ports = shape.words() / (f * port_rate)
    t = max(sim / f, t_ddr, t_compute, t_ports)
    limit = max((("compute", t_compute), ("DDR", t_ddr), ("ports", t_ports)), key=lambda x: x[1])[0]
    if sim / f > 1.005 * max(t_compute, t_ddr, t_ports):
        limit += "+stalls"          # compute stalls the FIFO does not hide (state I/O, a shallow FIFO)
    bound = usable / weight_bytes
    out.update(cycles_per_token=int(round(t * f)), tokens_per_s=1.0 / t, bound_tokens_per_s=bound,
               bound_basis="usable DDR bandwidth / packed weight bytes per token",
               share_of_bound=(1.0 / t) / bound, limit=limit,
               time_s={"compute": t_compute, "ddr": t_ddr, "ports": t_ports, "with_fifo": sim / f},
               supply_words_per_cycle=rate, axi_efficiency=AXI_EFFICIENCY,
               fifo={"words": preset.fifo_words, "longest_stall_cycles": longest[0],
                     "longest_stall": longest[1], "words_arriving_in_it": longest[0] * rate,
                     "absorbs_stalls": longest[0] * rate <= preset.fifo_words,
                     "lost_cycles": max(0.0, sim - max(cyc.total, shape.words() / rate))})
    return out


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


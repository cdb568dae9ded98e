"""FPGA resources of the on-chip decode-step design: analytic estimate or Vitis HLS report.

Two sources, and every result says which one it came from:

* ``"vitis_hls_report"`` — a ``*_csynth.xml`` of the project exists (Vitis HLS
  ran): its totals are read with :func:`mmfree_hls.perf.parse_csynth_report`.
* ``"analytic"`` — otherwise: the per-layer formulas below, applied to the
  layer graph of the step model (contract 1 names) with the types and reuse
  factors the precision config resolves for each layer
  (:meth:`PrecisionConfig.for_layer`, the same resolution the converter uses).

The formulas model the design *as written* in ``design/hls/nnet_*.h``:

BitLinear (n_in → n_out, reuse R, input type W_x, norm type W_n)
    quantise stage (``bitlinear_quantize``: loops fully unrolled, not
    shared by R): n_in products x·n (W_x × W_n), n_in squares x·x (W_x × W_x)
    and their adder tree into sumsq, an abs + max tree over the products,
    n_in normalise-and-round units (a barrel shift into ``quant_bits`` and a
    ``quant_bits`` × (mant_bits + act_bits + 1) product each), and the scalar block
    floating point: normalise, 1/absmax and 1/sqrt by Newton (2 resp. 3
    products of (mant_bits + 2) bits per iteration), two pf_mul.
    rows stage (``ROWS`` loop pipelined at II = R): 4·row_bytes/R add/sub/skip
    lanes of ``act_bits`` bits into an adder tree of ``accum_bits`` (auto: exact,
    ceil(log2(2^(act_bits−1)·n_in)) + 1 bits); for R > 1 each lane selects its input among
    R (an R:1 mux); one rescale product accum × (mant_bits + 2) and its shift.
    weights: a ROM of n_out·R words of 8·row_bytes/R bits (the ARRAY_RESHAPE).
    latency: quantise depth + n_out·R + rows pipeline depth; II (the layer's
    own interval): the same (the quantise and rows stages do not overlap).

RMSNorm / GatedRMSNorm / MLGRU / GLU (n values, reuse R)
    the function is one pipeline at II = R with its loop unrolled, so each
    operator exists ceil(n / R) times. RMSNorm: a square and an adder tree
    for sumsq, x·w and ·mant products and a barrel shift per lane, the 1/sqrt
    scalar. GatedRMSNorm: + a silu per lane (σ lookup + x·σ) and the gate
    product. MLGRU: σ(f) and silu(i) per lane, the lower-bound interpolation
    (1 − lb)·f, f·s and silu(i)·(1 − f). GLU: silu(gate)·up per lane.
    σ lookup: two table reads (k, k + 1) and the interpolation product
    frac_bits × table width; the table (table_size + 1 entries) is
    replicated once per lane (a ROM has two read ports, both used by k, k + 1).

Residual Add (d values): d adders of the residual width (hls4ml merge, unrolled).

Operator costs (:class:`CostModel`, each a stated figure or assumption):
    product a × b bits (a ≥ b): in DSP slices when b > ``lut_mult_max_bits``,
    ceil(a / A)·ceil(b / B) of them with the DSP multiplier geometry A × B of
    the device family (DSP48E1 25 × 18 on Zynq-7000, UG479; DSP48E2 27 × 18 on
    UltraScale+, UG579); else in LUTs, ``lut_per_mult_bit2``·a·b.
    adder / comparator / 2:1 mux: one LUT6 per bit (carry chain, UG474).
    N:1 mux: ceil((N − 1) / 3) LUT6 per bit (a LUT6 is a 4:1 mux).
    barrel shift of W bits over S positions: W·ceil(log2 S) / 2 LUTs (4:1 per level pair).
    ROM: ``lutrom_max_bits`` or fewer → distributed ROM, width·ceil(depth / 64)
    LUT6 (64 bits per LUT6, UG474); else BRAM_18K, the cheapest aspect ratio of
    16K×1, 8K×2, 4K×4, 2K×9, 1K×18, 512×36 (UG473).
    FF: every operator registers its result once per pipeline stage
    (``ff_per_result_bit``); DSP products use the slice's internal registers.
    latency: a DSP product ``mult_latency`` cycles, a LUT product 1, an adder-tree
    level 1 per ``tree_levels_per_cycle`` levels.
Top wrapper (``wrapper_*``): m_axi + s_axilite adapters and the float ↔ fixed
conversions of x, the state and the logits, streamed one word per cycle.

What the model is not: Vitis HLS reshapes, shares and retimes operators in ways
the formulas do not follow; treat analytic figures as a ranking of
configurations (what gets cheaper when a width shrinks) and as an order of
magnitude, and replace them by the report where Vitis HLS has run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from ..config import ModelConfig
from ..packing import row_bytes
from .precision import PrecisionConfig, load_precision, parse_type

RESOURCE_KEYS = ("LUT", "FF", "BRAM_18K", "DSP")
SOURCE_REPORT = "vitis_hls_report"
SOURCE_ANALYTIC = "analytic"
PACKING_LAYOUT = "2bit"     # the on-chip tier stores 2-bit codes (hls_layers.PACKING_LAYOUT)
DEFAULT_ACT_BITS = 8        # int8 activations of the reference BitLinear (config.ACT_QMAX = 127)

# BRAM_18K aspect ratios (depth, width), UG473 table 1-6 (true dual port up to 36 bits via SDP).
BRAM18_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
# DSP multiplier geometry (signed A × B) by PS family of boards.json.
DSP_GEOMETRY = {"zynq7": (25, 18), "zynq_ultra": (27, 18), "pcie": (27, 18)}


class ResourceEstimateError(ValueError):
    """A configuration the estimator (like the design) cannot build."""


@dataclass(frozen=True)
class CostModel:
    """Operator costs of the analytic estimate (see the module docstring)."""

    dsp_a_bits: int = 25
    dsp_b_bits: int = 18
    lut_mult_max_bits: int = 10       # narrower products are built from LUTs (Vitis' default binding)
    lut_per_mult_bit2: float = 0.55   # LUT6 per partial-product bit of a LUT multiplier
    lutrom_max_bits: int = 4096       # ROMs up to this size go to LUTs
    ff_per_result_bit: float = 1.0
    mult_latency: int = 3             # DSP product, registered in and out (100-200 MHz)
    tree_levels_per_cycle: int = 2    # adder-tree levels per cycle at the board clock
    wrapper_lut: int = 3500           # three m_axi masters + s_axilite + control FSM
    wrapper_ff: int = 4500
    wrapper_bram: int = 4             # burst buffers of the m_axi adapters
    wrapper_latency: int = 200        # AXI read/write round trips per call

    @classmethod
    def for_board(cls, board: Optional[str]) -> "CostModel":
        """The DSP geometry of the board's device family (boards.json 'ps': zynq7 → DSP48E1, else DSP48E2)."""
        if not board:
            return cls()
        import json
        from ..perf import BOARDS_FILE
        table = json.loads(Path(BOARDS_FILE).read_text())
        if board.startswith("_") or board not in table:
            raise ResourceEstimateError(f"unknown board {board!r}; choose one of "
                                        f"{sorted(k for k in table if not k.startswith('_'))}")
        a, b = DSP_GEOMETRY.get(table[board].get("ps", "zynq7"), DSP_GEOMETRY["zynq7"])
        return cls(dsp_a_bits=a, dsp_b_bits=b)


@dataclass
class Cost:
    """Resources and timing of one layer (or of the whole design)."""

    LUT: float = 0.0
    FF: float = 0.0
    BRAM_18K: float = 0.0
    DSP: float = 0.0
    latency: int = 0
    ii: int = 1

    def add(self, other: "Cost", times: float = 1) -> "Cost":
        self.LUT += other.LUT * times
        self.FF += other.FF * times
        self.BRAM_18K += other.BRAM_18K * times
        self.DSP += other.DSP * times
        return self


@dataclass
class LayerEstimate:
    name: str
    kind: str
    LUT: int
    FF: int
    BRAM_18K: int
    DSP: int
    latency_cycles: int
    ii_cycles: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ResourceEstimate:
    """Totals of a design plus, for the analytic source, the per-layer rows."""

    source: str
    LUT: int
    FF: int
    BRAM_18K: int
    DSP: int
    latency_cycles: Optional[int]
    ii_cycles: Optional[int]
    layers: list[LayerEstimate] = field(default_factory=list)
    report_path: Optional[str] = None

    def totals(self) -> dict:
        return {"LUT": self.LUT, "FF": self.FF, "BRAM_18K": self.BRAM_18K, "DSP": self.DSP,
                "latency_cycles": self.latency_cycles, "ii_cycles": self.ii_cycles,
                "resource_source": self.source}


# =================================================================== operators
def _type_bits(text: str) -> tuple[int, int]:
    t = parse_type(text)
    return t.width, t.integer


def mult(cm: CostModel, a: int, b: int) -> Cost:
    """One product of an a-bit and a b-bit operand."""
    a, b = max(a, b), min(a, b)
    if b <= cm.lut_mult_max_bits:
        return Cost(LUT=cm.lut_per_mult_bit2 * a * b, FF=cm.ff_per_result_bit * (a + b), latency=1)
    dsp = math.ceil(a / cm.dsp_a_bits) * math.ceil(b / cm.dsp_b_bits)
    # products wider than one slice add their partial results in LUTs
    glue = (a + b) if dsp > 1 else 0
    return Cost(DSP=dsp, LUT=glue, FF=cm.ff_per_result_bit * (a + b) if dsp > 1 else 0,
                latency=cm.mult_latency + (1 if dsp > 1 else 0))


def adder(cm: CostModel, bits: int) -> Cost:
    return Cost(LUT=bits, FF=cm.ff_per_result_bit * bits, latency=1)


def adder_tree(cm: CostModel, n: int, in_bits: int, out_bits: Optional[int] = None) -> Cost:
    """Sum of n values: n − 1 adders whose width grows by one bit a level (capped at out_bits)."""
    if n <= 1:
        return Cost()
    levels = math.ceil(math.log2(n))
    lut = 0.0
    width, remaining = in_bits, n
    for _ in range(levels):
        pairs = remaining // 2
        width = min(width + 1, out_bits or width + 1)
        lut += pairs * width
        remaining -= pairs
    return Cost(LUT=lut, FF=cm.ff_per_result_bit * lut / max(1, cm.tree_levels_per_cycle),
                latency=math.ceil(levels / cm.tree_levels_per_cycle))


def mux(bits: int, n: int) -> float:
    return bits * math.ceil((n - 1) / 3) if n > 1 else 0.0


def barrel_shift(bits: int, positions: int) -> float:
    return bits * math.ceil(math.log2(max(2, positions))) / 2


def rom(cm: CostModel, depth: int, width: int) -> Cost:
    """A read-only table: distributed ROM when small, else BRAM_18K in its best aspect ratio."""
    if depth * width <= cm.lutrom_max_bits:
        return Cost(LUT=width * math.ceil(depth / 64))
    brams = min(math.ceil(depth / d) * math.ceil(width / w) for d, w in BRAM18_SHAPES)
    return Cost(BRAM_18K=brams)


def scalar_bfp(cm: CostModel, mant_bits: int, newton: int, reciprocal: bool) -> Cost:
    """normalise + 1/sqrt (and 1/absmax) by Newton + two pf_mul, all on (mant_bits + 2)-bit mantissas."""
    m = mant_bits + 2
    c = Cost()
    products = 3 * newton + 2 + (2 * newton if reciprocal else 0)
    p = mult(cm, m, m)
    c.add(p, products)
    c.LUT += 2 * barrel_shift(m, 2 * m)          # normalise: leading-zero count + shift
    c.FF += cm.ff_per_result_bit * m * products
    c.latency = p.latency * (3 * newton + 2) + 2  # 1/absmax runs beside 1/sqrt
    return c


def sigmoid_lookup(cm: CostModel, sig: dict, lanes: int) -> Cost:
    """lanes σ lookups with interpolation; one table copy per lane."""
    table_w, _ = _type_bits(sig["table"])
    c = Cost()
    c.add(rom(cm, int(sig["table_size"]) + 1, table_w), lanes)
    if sig.get("interpolate", True):
        c.add(mult(cm, int(sig["frac_bits"]), table_w), lanes)
        c.add(adder(cm, table_w), 2 * lanes)     # hi − lo and lo + frac·(hi − lo)
    c.LUT += lanes * (table_w + 8)               # range checks and the index arithmetic
    c.latency = 2 + (mult(cm, int(sig["frac_bits"]), table_w).latency if sig.get("interpolate", True) else 0)
    return c


# =================================================================== layers
def bitlinear_cost(cm: CostModel, n_in: int, n_out: int, in_type: str, out_type: str, knobs: dict) -> Cost:
    R = int(knobs["reuse_factor"])
    rb = row_bytes(n_in, PACKING_LAYOUT)
    if rb % R:
        ok = [r for r in range(1, rb + 1) if rb % r == 0]
        raise ResourceEstimateError(f"reuse_factor {R} does not divide the {rb} packed bytes of a weight row "
                                    f"(n_in = {n_in}); choose one of {ok}")
    wx, ix = _type_bits(in_type)
    wn, _ = _type_bits(knobs["norm"])
    wy, _ = _type_bits(out_type)
    mb, qb, it = int(knobs["mant_bits"]), int(knobs["quant_bits"]), int(knobs["newton_iterations"])
    sumsq_w = (2 * wx + math.ceil(math.log2(max(2, n_in)))) if knobs["sumsq"] == "auto" else _type_bits(knobs["sumsq"])[0]
    prod_w = wx + wn
    ab = int(knobs.get("act_bits", DEFAULT_ACT_BITS))
    exact_accum = math.ceil(math.log2(n_in * 2 ** (ab - 1))) + 1
    accum_w = exact_accum if knobs.get("accum_bits", "auto") == "auto" else int(knobs["accum_bits"])
    c = Cost()
    # quantise stage
    c.add(mult(cm, wx, wn), n_in)
    c.add(mult(cm, wx, wx), n_in)
    sq_tree = adder_tree(cm, n_in, 2 * wx, sumsq_w)
    c.add(sq_tree)
    c.LUT += n_in * prod_w                               # |v|
    max_tree = adder_tree(cm, n_in, prod_w, prod_w)      # comparator + mux per node
    c.add(max_tree, 2)
    c.LUT += n_in * barrel_shift(qb, prod_w + qb)
    c.add(mult(cm, qb, mb + ab + 1), n_in)
    c.LUT += n_in * 2 * (ab + 1)                          # round, clip to ±Q
    c.FF += n_in * ab
    scal = scalar_bfp(cm, mb, it, reciprocal=True)
    c.add(scal)
    q_latency = (mult(cm, wx, wn).latency + max(sq_tree.latency, max_tree.latency) + scal.latency
                 + mult(cm, qb, mb + ab + 1).latency + 2)
    # rows stage
    lanes = 4 * rb // R
    c.LUT += lanes * ab + mux(ab, R) * lanes              # add/sub/skip select (+ R:1 input select)
    acc_tree = adder_tree(cm, lanes, ab + 1, accum_w)
    if accum_w < exact_accum:
        c.LUT += (lanes - 1) * 2                          # saturation check per adder
    c.add(acc_tree)
    resc = mult(cm, accum_w, mb + 2)
    c.add(resc)
    c.LUT += barrel_shift(wy, accum_w + mb + wy)
    c.add(rom(cm, n_out * R, 8 * rb // R))
    depth = 2 + acc_tree.latency + resc.latency + 1
    c.latency = q_latency + n_out * R + depth
    c.ii = c.latency
    return c


def _norm_lanes(cm: CostModel, n: int, R: int, in_w: int, w_w: int, out_w: int, knobs: dict) -> Cost:
    lanes = math.ceil(n / R)
    mb = int(knobs["mant_bits"])
    sumsq_w = (2 * in_w + math.ceil(math.log2(max(2, n)))) if knobs["sumsq"] == "auto" else _type_bits(knobs["sumsq"])[0]
    c = Cost()
    c.add(mult(cm, in_w, in_w), lanes)
    tree = adder_tree(cm, lanes, 2 * in_w, sumsq_w)
    c.add(tree)
    c.LUT += mux(in_w, R) * lanes
    c.add(mult(cm, in_w, w_w), lanes)
    c.add(mult(cm, in_w + w_w, mb + 2), lanes)
    c.LUT += lanes * barrel_shift(out_w, in_w + w_w + mb + out_w)
    scal = scalar_bfp(cm, mb, int(knobs["newton_iterations"]), reciprocal=False)
    c.add(scal)
    c.latency = (mult(cm, in_w, in_w).latency + tree.latency + scal.latency
                 + mult(cm, in_w, w_w).latency + mult(cm, in_w + w_w, mb + 2).latency + 1 + (R - 1))
    c.ii = R
    return c


def rmsnorm_cost(cm: CostModel, n: int, in_type: str, out_type: str, knobs: dict) -> Cost:
    return _norm_lanes(cm, n, int(knobs["reuse_factor"]), _type_bits(in_type)[0],
                       _type_bits(knobs["weight"])[0], _type_bits(out_type)[0], knobs)


def gated_rmsnorm_cost(cm: CostModel, n: int, g_type: str, s_type: str, out_type: str, knobs: dict) -> Cost:
    R = int(knobs["reuse_factor"])
    lanes = math.ceil(n / R)
    normed_w, act_w = _type_bits(knobs["normed"])[0], _type_bits(knobs["act"])[0]
    s_w, table_w = _type_bits(s_type)[0], _type_bits(knobs["sigmoid"]["table"])[0]
    c = _norm_lanes(cm, n, R, _type_bits(g_type)[0], _type_bits(knobs["weight"])[0], normed_w, knobs)
    base_latency = c.latency
    sig = sigmoid_lookup(cm, knobs["sigmoid"], lanes)
    c.add(sig)
    c.add(mult(cm, s_w, table_w), lanes)                 # silu = s·σ(s)
    c.add(mult(cm, normed_w, act_w), lanes)              # gate
    c.latency = max(base_latency, sig.latency + mult(cm, s_w, table_w).latency) + mult(cm, normed_w, act_w).latency
    c.ii = R
    return c


def mlgru_cost(cm: CostModel, n: int, i_type: str, s_type: str, knobs: dict, use_lower_bound: bool) -> Cost:
    R = int(knobs["reuse_factor"])
    lanes = math.ceil(n / R)
    gate_w, act_w = _type_bits(knobs["gate"])[0], _type_bits(knobs["act"])[0]
    lb_w, i_w, s_w = _type_bits(knobs["lower_bound"])[0], _type_bits(i_type)[0], _type_bits(s_type)[0]
    table_w = _type_bits(knobs["sigmoid"]["table"])[0]
    c = Cost()
    sig = sigmoid_lookup(cm, knobs["sigmoid"], 2 * lanes)    # σ(f) and σ(i) for silu(i)
    c.add(sig)
    c.add(mult(cm, i_w, table_w), lanes)                     # silu(i)
    if use_lower_bound:
        c.add(mult(cm, gate_w, lb_w), lanes)                 # (1 − lb)·f
        c.add(adder(cm, gate_w), 2 * lanes)
    c.add(adder(cm, gate_w), lanes)                          # 1 − f
    c.add(mult(cm, gate_w, s_w), lanes)                      # f·s
    c.add(mult(cm, act_w, gate_w), lanes)                    # silu(i)·(1 − f)
    c.add(adder(cm, s_w), lanes)
    c.LUT += mux(max(i_w, s_w), R) * 3 * lanes
    c.latency = (sig.latency + (mult(cm, gate_w, lb_w).latency + 1 if use_lower_bound else 0)
                 + mult(cm, gate_w, s_w).latency + 1 + (R - 1))
    c.ii = R
    return c


def glu_cost(cm: CostModel, n_out: int, in_type: str, knobs: dict) -> Cost:
    R = int(knobs["reuse_factor"])
    lanes = math.ceil(n_out / R)
    in_w, act_w = _type_bits(in_type)[0], _type_bits(knobs["act"])[0]
    table_w = _type_bits(knobs["sigmoid"]["table"])[0]
    c = Cost()
    sig = sigmoid_lookup(cm, knobs["sigmoid"], lanes)
    c.add(sig)
    c.add(mult(cm, in_w, table_w), lanes)
    c.add(mult(cm, act_w, in_w), lanes)
    c.LUT += mux(in_w, R) * 2 * lanes
    c.latency = sig.latency + mult(cm, in_w, table_w).latency + mult(cm, act_w, in_w).latency + (R - 1)
    c.ii = R
    return c


def add_cost(cm: CostModel, n: int, res_type: str) -> Cost:
    w = _type_bits(res_type)[0]
    c = Cost().add(adder(cm, w), n)
    c.latency, c.ii = 1, 1
    return c


# =================================================================== the graph
def step_layers(cfg: ModelConfig) -> list[tuple[str, str, dict]]:
    """(name, kind, shape info) of the step model in evaluation order (contract 1 names)."""
    d, e, m, V = cfg.d, cfg.input_dim, cfg.ffn_dim, cfg.vocab_size
    out: list[tuple[str, str, dict]] = []
    for l in range(cfg.num_hidden_layers):
        out += [(f"l{l}_attn_norm", "rmsnorm", {"n": d}),
                (f"l{l}_i_proj", "bitlinear", {"n_in": d, "n_out": e, "input": f"l{l}_attn_norm"}),
                (f"l{l}_f_proj", "bitlinear", {"n_in": d, "n_out": e, "input": f"l{l}_attn_norm"}),
                (f"l{l}_g_proj", "bitlinear", {"n_in": d, "n_out": e, "input": f"l{l}_attn_norm"}),
                (f"l{l}_mlgru", "mlgru", {"n": e, "input": f"l{l}_i_proj", "lower_bound": cfg.use_lower_bound and l > 0}),
                (f"l{l}_g_norm", "gated_rmsnorm", {"n": e, "input": f"l{l}_g_proj"}),
                (f"l{l}_o_proj", "bitlinear", {"n_in": e, "n_out": d, "input": f"l{l}_g_norm"}),
                (f"l{l}_attn_add", "add", {"n": d}),
                (f"l{l}_mlp_norm", "rmsnorm", {"n": d}),
                (f"l{l}_gate_proj", "bitlinear", {"n_in": d, "n_out": 2 * m, "input": f"l{l}_mlp_norm"}),
                (f"l{l}_glu", "glu", {"n": m, "input": f"l{l}_gate_proj"}),
                (f"l{l}_down_proj", "bitlinear", {"n_in": m, "n_out": d, "input": f"l{l}_glu"}),
                (f"l{l}_mlp_add", "add", {"n": d})]
    out += [("norm", "rmsnorm", {"n": d}),
            ("lm_head", "bitlinear", {"n_in": d, "n_out": V, "input": "norm", "head": True})]
    return out


def analytic_estimate(cfg: ModelConfig, precision=None, cost_model: Optional[CostModel] = None,
                      board: Optional[str] = None) -> ResourceEstimate:
    """Per-layer and total resources of the on-chip step design for ``cfg`` under ``precision``."""
    pc: PrecisionConfig = load_precision(precision)
    cm = cost_model or CostModel.for_board(board)
    residual, state, logits = (pc.tensor_type(k) for k in ("residual", "state", "logits"))
    out_type: dict[str, str] = {}
    rows: list[LayerEstimate] = []
    total = Cost()
    latency = 0
    ii = 1
    for name, kind, info in step_layers(cfg):
        if kind == "add":
            c = add_cost(cm, info["n"], residual)
            out_type[name] = residual
        else:
            knobs = pc.for_layer(kind, name)
            if kind == "rmsnorm":
                c = rmsnorm_cost(cm, info["n"], residual, knobs["result"], knobs)
                out_type[name] = knobs["result"]
            elif kind == "bitlinear":
                res = logits if info.get("head") else knobs["result"]
                c = bitlinear_cost(cm, info["n_in"], info["n_out"], out_type[info["input"]], res, knobs)
                out_type[name] = res
            elif kind == "mlgru":
                c = mlgru_cost(cm, info["n"], out_type[info["input"]], state, knobs, info["lower_bound"])
                out_type[name] = state
            elif kind == "gated_rmsnorm":
                c = gated_rmsnorm_cost(cm, info["n"], out_type[info["input"]], state, knobs["result"], knobs)
                out_type[name] = knobs["result"]
            elif kind == "glu":
                c = glu_cost(cm, info["n"], out_type[info["input"]], knobs)
                out_type[name] = knobs["result"]
            else:  # pragma: no cover - step_layers lists only the kinds above
                raise AssertionError(kind)
        rows.append(LayerEstimate(name, kind, int(math.ceil(c.LUT)), int(math.ceil(c.FF)),
                                  int(math.ceil(c.BRAM_18K)), int(math.ceil(c.DSP)), int(c.latency), int(c.ii)))
        total.add(c)
        latency += c.latency
        ii = max(ii, c.ii)
    io_words = cfg.d + 2 * cfg.num_hidden_layers * cfg.state_size + cfg.vocab_size
    total.LUT += cm.wrapper_lut
    total.FF += cm.wrapper_ff
    total.BRAM_18K += cm.wrapper_bram
    latency += io_words + cm.wrapper_latency
    # The top is not a dataflow region: a new step starts when the last one ends.
    return ResourceEstimate(SOURCE_ANALYTIC, int(math.ceil(total.LUT)), int(math.ceil(total.FF)),
                            int(math.ceil(total.BRAM_18K)), int(math.ceil(total.DSP)), int(latency),
                            int(latency + 1), rows)


# =================================================================== reports
def find_csynth_report(project_dir: str | Path, top: Optional[str] = None) -> Optional[Path]:
    """The top-level ``*_csynth.xml`` under a project, if Vitis HLS has run there."""
    root = Path(project_dir)
    if not root.is_dir():
        return None
    found = sorted(root.glob("**/syn/report/*_csynth.xml"))
    if not found:
        return None
    if top:
        named = [p for p in found if p.name == f"{top}_csynth.xml"]
        if named:
            return named[0]
    # Per-module reports sit next to the top's; the top's is the one 'csynth.xml' names, else the largest.
    plain = [p for p in found if p.name == "csynth.xml"]
    return plain[0] if plain else max(found, key=lambda p: p.stat().st_size)


def report_estimate(xml_path: str | Path) -> ResourceEstimate:
    from ..perf import parse_csynth_report
    rep = parse_csynth_report(xml_path)
    res = rep.resources
    return ResourceEstimate(SOURCE_REPORT, *(int(res.get(k) or 0) for k in RESOURCE_KEYS),
                            latency_cycles=rep.latency_worst, ii_cycles=rep.interval_max,
                            report_path=str(xml_path))


def estimate(cfg: ModelConfig, precision=None, project_dir: str | Path | None = None,
             board: Optional[str] = None, top: Optional[str] = None) -> ResourceEstimate:
    """The Vitis HLS report of ``project_dir`` when there is one, else the analytic estimate.

    The analytic per-layer rows are attached in both cases (a report gives totals only).
    """
    analytic = analytic_estimate(cfg, precision, board=board)
    xml = find_csynth_report(project_dir, top) if project_dir else None
    if xml is None:
        return analytic
    rep = report_estimate(xml)
    rep.layers = analytic.layers
    return rep


def utilisation(totals: dict, board: str) -> dict:
    """Share of the board's LUT/FF/BRAM_18K/DSP each total uses."""
    from ..perf import get_board
    b = get_board(board)
    return {k: (totals[k] / getattr(b, k)) if getattr(b, k) else math.inf for k in RESOURCE_KEYS}

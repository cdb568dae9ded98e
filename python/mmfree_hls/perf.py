"""Performance model of the streamed-weight accelerator: a model, not a measurement.

Per token the accelerator reads the whole weight buffer once
(:mod:`mmfree_hls.streamed`), so decode speed is bounded by

    bandwidth bound  =  usable memory bandwidth / bytes per token

The design reaches that bound only if it can (a) pull weights through its
m_axi ports as fast as the memory delivers them and (b) consume them as fast
as they arrive: ``lanes`` ternary MACs (add, subtract or skip) per cycle.
Between matrices it also spends cycles the weight stream cannot hide: the
RMSNorm / absmax / quantise passes over each BitLinear input, the element-wise
MLGRU, GLU and residual work, and a fixed pipeline latency per BitLinear.

    t_token = max(t_stream, t_mac) + t_serial + t_io
    t_stream = weight bytes / (min(DDR usable, ports × port peak) × efficiency)
    t_mac    = Σ_BitLinear  n_out · ⌈n_in / lanes⌉ / f_clk
    t_serial = (element-wise passes / vector_lanes + stages × stage_latency) / f_clk
    t_io     = (embedding row in + logits out) / design bandwidth

Every knob (lanes, ports, clock, efficiency, latencies, LUTs per lane) is a
parameter with a stated default; the board figures come from
``data/boards.json`` and the model sizes from ``data/model_presets.json``.
Plain arithmetic: this module imports with the runtime (numpy alone).
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Optional

from .config import ModelConfig
from .packing import BITS_PER_WEIGHT, LAYOUTS
from .streamed import PARAM_BYTES, ROW_CHUNK_BYTES, StreamedLayout, layout

DATA_DIR = Path(__file__).resolve().parent / "data"
BOARDS_FILE = DATA_DIR / "boards.json"
PRESETS_FILE = DATA_DIR / "model_presets.json"

#: Every performance figure this module prints carries this label.
MODEL_LABEL = "performance model (projection from datasheet figures and design knobs, not a measurement)"

#: On-chip memory per 18 Kb block RAM and per UltraRAM block, in bytes.
BRAM_18K_BYTES = 18 * 1024 // 8
URAM_BYTES = 288 * 1024 // 8


class PerfModelError(ValueError):
    """A board, model preset or knob the performance model cannot use."""


# ------------------------------------------------------------------ boards
@dataclass(frozen=True)
class Board:
    """One row of ``boards.json`` as the performance model reads it."""

    name: str
    part: str
    clock_mhz: float
    LUT: int
    FF: int
    BRAM_18K: int
    URAM: int
    DSP: int
    ddr_peak_gbps: float
    ddr_usable_fraction: float
    mem_ports: int
    mem_port_bits: int
    mem_port_max_mhz: float
    m_axi_bits: int
    memory: str = ""
    sources: tuple = ()

    @property
    def usable_gbps(self) -> float:
        return self.ddr_peak_gbps * self.ddr_usable_fraction

    @property
    def onchip_bytes(self) -> int:
        return self.BRAM_18K * BRAM_18K_BYTES + self.URAM * URAM_BYTES


_BOARD_FIELDS = ("part", "clock_mhz", "LUT", "FF", "BRAM_18K", "URAM", "DSP", "ddr_peak_gbps",
                 "ddr_usable_fraction", "mem_ports", "mem_port_bits", "mem_port_max_mhz", "m_axi_bits")


@lru_cache(maxsize=None)
def _board_table(path: str) -> dict:
    return json.loads(Path(path).read_text())


def load_boards(path: str | Path = BOARDS_FILE) -> dict[str, Board]:
    """Every board of the table (keys starting with '_' are comments)."""
    out = {}
    for name, row in _board_table(str(path)).items():
        if name.startswith("_"):
            continue
        missing = [f for f in _BOARD_FIELDS if f not in row]
        if missing:
            raise PerfModelError(f"{path}: board {name!r} lacks {', '.join(missing)}; "
                                 "add them (datasheet figures) to the board table")
        out[name] = Board(name=name, memory=row.get("memory", ""), sources=tuple(row.get("sources", ())),
                          **{f: row[f] for f in _BOARD_FIELDS})
    return out


def get_board(name: str) -> Board:
    boards = load_boards()
    if name not in boards:
        raise PerfModelError(f"unknown board {name!r}; choose one of {', '.join(boards)}")
    return boards[name]


# ----------------------------------------------------------- model presets
def load_presets(path: str | Path = PRESETS_FILE) -> dict[str, dict]:
    data = json.loads(Path(path).read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def model_preset(name: str) -> ModelConfig:
    """A published size ('370M', '1.3B', '2.7B') as a ModelConfig."""
    presets = load_presets()
    if name not in presets:
        raise PerfModelError(f"unknown model preset {name!r}; choose one of {', '.join(presets)} "
                             "or give a path to a config.json / checkpoint directory")
    return ModelConfig.from_dict(presets[name]["config"])


def resolve_model(spec: str) -> tuple[str, ModelConfig]:
    """A preset name, a config.json, or a checkpoint directory holding one."""
    if spec in load_presets():
        return spec, model_preset(spec)
    p = Path(spec)
    if p.is_dir():
        p = p / "config.json"
    if p.is_file():
        return p.parent.name if p.name == "config.json" else p.stem, ModelConfig.from_json(p)
    raise PerfModelError(f"model {spec!r} is neither a preset ({', '.join(load_presets())}) "
                         "nor a config.json / checkpoint directory")


# ---------------------------------------------------------- bytes per token
@dataclass(frozen=True)
class TokenTraffic:
    """Bytes moved through external memory for one decoded token."""

    ternary_weights: int     # packed rows of every BitLinear (LM head included)
    params: int              # norm weights, 1/γ scales, lower bounds (float32)
    header_and_padding: int  # buffer header + segment alignment
    embedding_row: int       # x_t written by the host
    logits: int              # V values read back by the host

    @property
    def weight_buffer(self) -> int:
        """The streamed buffer, read in full every token."""
        return self.ternary_weights + self.params + self.header_and_padding

    @property
    def io(self) -> int:
        return self.embedding_row + self.logits

    @property
    def total(self) -> int:
        return self.weight_buffer + self.io


def bytes_per_token(cfg: ModelConfig, packing: str = "2bit", *, io_value_bytes: int = 4) -> TokenTraffic:
    """Bytes per token of the streamed design at a packing ('2bit' or '1.6bit')."""
    lay = layout(cfg, packing)
    kinds = lay.bytes_by_kind()
    payload = sum(kinds.values())
    return TokenTraffic(
        ternary_weights=kinds["ternary"],
        params=kinds.get("vector", 0) + kinds.get("scale", 0),
        header_and_padding=lay.total_bytes - payload + kinds["header"],
        embedding_row=cfg.d * io_value_bytes,
        logits=cfg.vocab_size * io_value_bytes,
    )


def ideal_weight_bytes(cfg: ModelConfig, packing: str) -> float:
    """Ternary weights × bits per weight / 8: the packing's storage figure, no row rounding."""
    return cfg.ternary_weight_count() * BITS_PER_WEIGHT[packing] / 8


def bandwidth_bound(bytes_per_tok: float, usable_gbps: float) -> float:
    """Tokens/s if memory bandwidth were the only limit."""
    if bytes_per_tok <= 0:
        raise PerfModelError("bytes per token must be positive")
    return usable_gbps * 1e9 / bytes_per_tok


# ------------------------------------------------------------ design model
@dataclass(frozen=True)
class DesignKnobs:
    """Parallelism and overheads of the streamed design (each a stated assumption)."""

    lanes: Optional[int | str] = None  # ternary MACs per cycle; None = just enough for the port bandwidth;
                                       # "built" = the streamed top as configured (ROW_CHUNK_BYTES × weights/byte)
    ports: int = 1                     # m_axi weight-read masters (the top as written has one)
    clock_mhz: Optional[float] = None  # None = the board's clock_mhz
    m_axi_bits: Optional[int] = None   # None = the board's natural m_axi width
    efficiency: float = 0.9            # share of port peak a long burst stream sustains
    vector_lanes: int = 8              # element-wise values per cycle (norms, gates, GLU)
    stage_latency: int = 128           # cycles per BitLinear not hidden: memory latency, adder tree, 1/sqrt
    luts_per_lane: int = 14            # ternary lane: conditional negate + its share of the adder tree
    base_luts: int = 20000             # non-linearities, norms, m_axi adapters, control
    host_overhead_us: float = 0.0      # per-call start/wait on the host (not in the accelerator model)

    def validate(self) -> "DesignKnobs":
        for name in ("ports", "vector_lanes"):
            if getattr(self, name) < 1:
                raise PerfModelError(f"{name} must be ≥ 1")
        if self.lanes is not None and self.lanes != "built" and (not isinstance(self.lanes, int) or self.lanes < 1):
            raise PerfModelError("lanes must be a positive integer, None (automatic) or 'built'")
        if not 0 < self.efficiency <= 1:
            raise PerfModelError("efficiency must be in (0, 1]")
        return self


def _bitlinear_shapes(cfg: ModelConfig) -> list[tuple[int, int]]:
    d, e, m = cfg.d, cfg.input_dim, cfg.ffn_dim
    per_layer = [(e, d), (e, d), (e, d), (d, e), (2 * m, d), (d, m)]
    return per_layer * cfg.num_hidden_layers + [(cfg.vocab_size, d)]


def mac_cycles(cfg: ModelConfig, lanes: int) -> int:
    """Cycles of ternary accumulation with ``lanes`` MACs per cycle.

    Lanes span the input (c = min(lanes, n_in) columns); lanes beyond one row
    work on r = lanes // c rows at once: ⌈n_out / r⌉ · ⌈n_in / c⌉ cycles per BitLinear.
    """
    total = 0
    for n_out, n_in in _bitlinear_shapes(cfg):
        cols = min(lanes, n_in)
        rows = max(1, lanes // cols)
        total += math.ceil(n_out / rows) * math.ceil(n_in / cols)
    return total


def vector_ops(cfg: ModelConfig) -> int:
    """Element-wise values touched per token outside the ternary accumulation.

    Per BitLinear: sum of squares, scale-and-absmax, quantise over the input
    (3·n_in) and one rescale per output. Per layer: the two RMSNorms (2 passes
    each), the MLGRU gates and state (1 pass over e), the gated g_norm (2
    passes), the GLU (1 pass over m) and two residual adds. Final RMSNorm.
    """
    d, e, m = cfg.d, cfg.input_dim, cfg.ffn_dim
    bitlinear = sum(3 * n_in + n_out for n_out, n_in in _bitlinear_shapes(cfg))
    per_layer = 2 * d + e + 2 * e + 2 * d + m + 2 * d
    return bitlinear + cfg.num_hidden_layers * per_layer + 2 * d


def onchip_bytes(cfg: ModelConfig) -> int:
    """Activations and recurrent state kept on chip (float32 words as in the C-sim)."""
    d, e, m = cfg.d, cfg.input_dim, cfg.ffn_dim
    state = cfg.num_hidden_layers * e
    activations = 4 * d + 4 * e + 3 * m      # x, h, x̂/x_q, residual; i, f, g, o; u (2m) and GLU out
    return (state + activations) * PARAM_BYTES


@dataclass
class Projection:
    """One (board, model, packing) row of the performance model."""

    board: str
    model: str
    packing: str
    bytes_per_token: int
    weight_bytes: int
    usable_gbps: float
    design_gbps: float
    clock_mhz: float
    lanes: int
    bound_tps: float            # usable bandwidth / bytes per token
    port_tps: float             # the design's ports alone
    compute_tps: float          # lanes × clock alone
    projected_tps: float
    fraction_of_bound: float
    limit: str                  # "memory", "ports", "compute" (+ "+serial" when overheads dominate)
    cycles_per_token: int
    serial_cycles: int
    lut_fraction: float
    onchip_fraction: float
    fits: bool
    label: str = MODEL_LABEL

    def to_dict(self) -> dict:
        return asdict(self)


def design_bandwidth_gbps(board: Board, knobs: DesignKnobs) -> float:
    """What the design's m_axi ports can pull: min(memory, ports × per-port peak) × efficiency."""
    f_mhz = knobs.clock_mhz or board.clock_mhz
    axi_bits = knobs.m_axi_bits or board.m_axi_bits
    per_port = min(axi_bits / 8 * f_mhz, board.mem_port_bits / 8 * board.mem_port_max_mhz) / 1000
    ports = min(knobs.ports, board.mem_ports)
    return min(board.usable_gbps, ports * per_port) * knobs.efficiency


def auto_lanes(cfg: ModelConfig, stream_cycles: float, step: int = 16) -> int:
    """Fewest lanes (a multiple of ``step``) whose accumulation keeps up with the weight stream."""
    macs = cfg.ternary_weight_count()
    lanes = max(step, step * math.ceil(macs / max(stream_cycles, 1) / step))
    while mac_cycles(cfg, lanes) > stream_cycles:
        lanes += step
        if lanes > 64 * macs / max(stream_cycles, 1) + 4096:   # row rounding cannot cost 64×
            raise AssertionError("auto_lanes did not converge")
    return lanes


def project(cfg: ModelConfig, board: Board, packing: str = "2bit",
            knobs: DesignKnobs = DesignKnobs(), model_name: str = "") -> Projection:
    """Projected tokens/s of the streamed design for one model on one board."""
    knobs.validate()
    if packing not in LAYOUTS:
        raise PerfModelError(f"unknown packing {packing!r}; choose one of {sorted(LAYOUTS)}")
    traffic = bytes_per_token(cfg, packing)
    f = (knobs.clock_mhz or board.clock_mhz) * 1e6
    bw = design_bandwidth_gbps(board, knobs) * 1e9
    stream_cycles = traffic.weight_buffer / bw * f
    if knobs.lanes == "built":
        lanes = ROW_CHUNK_BYTES * LAYOUTS[packing]
    else:
        lanes = knobs.lanes or auto_lanes(cfg, stream_cycles)
    mac = mac_cycles(cfg, lanes)
    serial = math.ceil(vector_ops(cfg) / knobs.vector_lanes) + len(_bitlinear_shapes(cfg)) * knobs.stage_latency
    io_cycles = traffic.io / bw * f
    cycles = max(stream_cycles, mac) + serial + io_cycles
    seconds = cycles / f + knobs.host_overhead_us * 1e-6
    projected = 1.0 / seconds
    bound = bandwidth_bound(traffic.total, board.usable_gbps)
    port_tps = bw / traffic.total
    compute_tps = f / mac
    if mac > stream_cycles:
        limit = "compute"
    elif bw < board.usable_gbps * 1e9 * knobs.efficiency * 0.999:
        limit = "ports"
    else:
        limit = "memory"
    if serial > 0.25 * max(stream_cycles, mac):
        limit += "+serial"
    luts = knobs.base_luts + lanes * knobs.luts_per_lane
    return Projection(
        board=board.name, model=model_name or f"d{cfg.d}xL{cfg.num_hidden_layers}", packing=packing,
        bytes_per_token=traffic.total, weight_bytes=traffic.weight_buffer,
        usable_gbps=board.usable_gbps, design_gbps=bw / 1e9, clock_mhz=f / 1e6, lanes=lanes,
        bound_tps=bound, port_tps=port_tps, compute_tps=compute_tps, projected_tps=projected,
        fraction_of_bound=projected / bound, limit=limit, cycles_per_token=int(round(cycles)),
        serial_cycles=serial, lut_fraction=luts / board.LUT,
        onchip_fraction=onchip_bytes(cfg) / board.onchip_bytes,
        fits=luts <= 0.8 * board.LUT and onchip_bytes(cfg) <= 0.8 * board.onchip_bytes)


def project_all(models: Iterable[tuple[str, ModelConfig]], boards: Iterable[Board],
                packings: Iterable[str], knobs: DesignKnobs = DesignKnobs()) -> list[Projection]:
    models, boards, packings = list(models), list(boards), list(packings)
    return [project(cfg, b, p, knobs, name) for b in boards for name, cfg in models for p in packings]


# ------------------------------------------------------ Vitis HLS reports
@dataclass
class CsynthReport:
    """The figures of a Vitis HLS ``<top>_csynth.xml`` the model is checked against."""

    top: str = ""
    part: str = ""
    target_clock_ns: Optional[float] = None
    estimated_clock_ns: Optional[float] = None
    latency_best: Optional[int] = None
    latency_average: Optional[int] = None
    latency_worst: Optional[int] = None
    interval_min: Optional[int] = None
    interval_max: Optional[int] = None
    resources: dict = field(default_factory=dict)
    available: dict = field(default_factory=dict)
    loops: list = field(default_factory=list)

    def utilisation(self) -> dict:
        return {k: v / self.available[k] for k, v in self.resources.items() if self.available.get(k)}


def _number(text: Optional[str], kind=float):
    """Report numbers; Vitis writes 'undef' or '?' when a loop bound is unknown."""
    if text is None:
        return None
    t = text.strip()
    try:
        return kind(float(t)) if kind is int else kind(t)
    except ValueError:
        return None


def _loops(node: Optional[ET.Element], prefix: str = "") -> list[dict]:
    """Loops of SummaryOfLoopLatency: one element per loop, named after it; nested loops are children."""
    out: list[dict] = []
    for child in (node if node is not None else []):
        if not len(child):              # a scalar field (TripCount, Latency, ...), not a loop
            continue
        name = child.findtext("Name") or child.tag
        out.append({"name": prefix + name,
                    "trip_count": _number(child.findtext("TripCount"), int),
                    "latency": _number(child.findtext("Latency") or child.findtext("Worst-caseLatency"), int),
                    "iteration_latency": _number(child.findtext("IterationLatency"), int),
                    "pipeline_ii": _number(child.findtext("PipelineII"), int),
                    "pipeline_depth": _number(child.findtext("PipelineDepth"), int)})
        out.extend(_loops(child, prefix + name + "/"))
    return out


def parse_csynth_report(xml_path: str | Path) -> CsynthReport:
    """Latency, II, clock and resources from a Vitis HLS csynth.xml (``syn/report/<top>_csynth.xml``)."""
    p = Path(xml_path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no csynth report; run 'make hls' (Vitis HLS csynth) first")
    try:
        root = ET.parse(p).getroot()
    except ET.ParseError as e:
        raise PerfModelError(f"{p}: not a readable csynth.xml ({e})") from None
    perf = root.find("PerformanceEstimates")
    area = root.find("AreaEstimates")
    if perf is None and area is None:
        raise PerfModelError(f"{p}: no PerformanceEstimates or AreaEstimates: not a Vitis HLS csynth.xml")
    rep = CsynthReport(top=root.findtext("UserAssignments/TopModelName", ""),
                       part=root.findtext("UserAssignments/Part", ""),
                       target_clock_ns=_number(root.findtext("UserAssignments/TargetClockPeriod")))
    if perf is not None:
        rep.estimated_clock_ns = _number(perf.findtext("SummaryOfTimingAnalysis/EstimatedClockPeriod"))
        lat = perf.find("SummaryOfOverallLatency")
        if lat is not None:
            rep.latency_best = _number(lat.findtext("Best-caseLatency"), int)
            rep.latency_average = _number(lat.findtext("Average-caseLatency"), int)
            rep.latency_worst = _number(lat.findtext("Worst-caseLatency"), int)
            rep.interval_min = _number(lat.findtext("Interval-min"), int)
            rep.interval_max = _number(lat.findtext("Interval-max"), int)
        rep.loops = _loops(perf.find("SummaryOfLoopLatency"))
    if area is not None:
        def counts(node):
            # Older Vivado HLS calls the DSP column DSP48E; one name here.
            return {("DSP" if c.tag.startswith("DSP48") else c.tag): _number(c.text, int)
                    for c in (node if node is not None else [])}
        rep.resources = counts(area.find("Resources"))
        rep.available = counts(area.find("AvailableResources"))
    return rep


def compare_with_report(projection: Projection, report: CsynthReport) -> dict:
    """Model vs synthesis: cycles per token and LUT share, as ratios (1.0 = the model agrees)."""
    out = {"model_cycles": projection.cycles_per_token, "csynth_cycles": report.latency_worst,
           "cycles_ratio": None, "model_lut_fraction": projection.lut_fraction,
           "csynth_lut_fraction": report.utilisation().get("LUT"), "clock_ok": None}
    if report.latency_worst:
        out["cycles_ratio"] = report.latency_worst / projection.cycles_per_token
    if report.estimated_clock_ns and report.target_clock_ns:
        out["clock_ok"] = report.estimated_clock_ns <= report.target_clock_ns
    return out


def with_knobs(knobs: DesignKnobs, **changes) -> DesignKnobs:
    return replace(knobs, **{k: v for k, v in changes.items() if v is not None})

"""Board presets: the one validated reading of ``data/boards.json``.

A preset is everything the engine needs from a board for one tier: the part,
the clock, the vector lanes, and for the streamed tier the weight ports (PS
slave ports, their width, burst length, outstanding reads, FIFO depth).
The table in force is ``$MMFREE_BOARDS`` when set (a calibrated copy, a board
of your own), else the shipped one; adding a board is one entry there
(docs/ARCHITECTURE.md, "Adding a board").
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Optional

BOARDS_FILE = Path(__file__).resolve().parents[1] / "data" / "boards.json"      # the shipped table
BOARDS_ENV = "MMFREE_BOARDS"                 # path of a board table that replaces the shipped one
TIERS = ("on-chip", "streamed")
PACKINGS = {"2bit": 4, "1.6bit": 5}          # inputs per weight byte
RESOURCES = ("LUT", "FF", "BRAM_18K", "URAM", "DSP")


class PresetError(ValueError):
    """A board or tier that the table does not describe (the message names the fix)."""


@dataclass(frozen=True)
class Board:
    name: str
    part: str
    family: str                      # zynq7 | zynq_ultra | pcie
    resources: dict
    ddr_peak_gbps: float
    ddr_usable_fraction: float
    board_part: Optional[str] = None
    flow: str = "pynq"               # "pynq", or "model-only" (perf only)
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def usable_gbps(self) -> float:
        return self.ddr_peak_gbps * self.ddr_usable_fraction


@dataclass(frozen=True)
class EnginePreset:
    """The knobs of one engine build (board x tier), overridable for sweeps."""

    board: Board
    tier: str
    clock_mhz: float
    vector_lanes: int
    rows_per_tile: int               # on-chip; the streamed tier derives it from the ports
    ports: tuple = ()
    port_bits: int = 64
    burst_beats: int = 16
    outstanding: int = 8
    fifo_words: int = 2048
    frac_bits: int = 24              # fraction bits of every vector (32-bit values: range +-128)
    sigmoid_table_bits: int = 10     # sigma table entries = 2^bits over [-8, 8)
    batch_slots: int = 1             # B: recurrent-state slots on chip (sequences decoded together)
    prefill_chunk: int = 1           # T: prompt tokens one prefill pass takes
    topk: int = 8                    # entries of the device-side top-k, per lane

    @property
    def K(self) -> int:
        """Weight ports (0: the on-chip image)."""
        return len(self.ports) if self.tier == "streamed" else 0

    @property
    def port_bytes(self) -> int:
        return self.port_bits // 8

    @property
    def R(self) -> int:
        """Rows per tile = bytes per stream word."""
        return self.K * self.port_bytes if self.tier == "streamed" else self.rows_per_tile

    @property
    def token_lanes(self) -> int:
        """N: activation vectors every weight word is applied to (B sequences or T prompt tokens):
        max(B, T) rounded up to a power of two (a row of logits leaves as one 32N-bit AXI word)."""
        return 1 << (max(self.batch_slots, self.prefill_chunk) - 1).bit_length()

    def lanes(self, packing: str) -> int:
        """P: ternary MAC lanes (R rows x inputs per byte)."""
        return self.R * PACKINGS[packing]

    def with_knobs(self, **changes) -> "EnginePreset":
        known = {f for f in self.__dataclass_fields__}
        bad = sorted(set(changes) - known)
        if bad:
            raise PresetError(f"unknown engine knob(s) {bad}; knobs are {sorted(known - {'board', 'tier'})}")
        p = replace(self, **changes)
        p.validate()
        return p

    def validate(self) -> "EnginePreset":
        if self.tier not in TIERS:
            raise PresetError(f"tier {self.tier!r} is not one of {TIERS}")
        if self.R < 4 or self.R % 16:
            raise PresetError(f"{self.board.name}/{self.tier}: rows per tile R={self.R} must be a multiple of 16 "
                              "(a stream word holds whole groups of four 32-bit parameter values)")
        if self.vector_lanes < 1 or self.vector_lanes > 64:
            raise PresetError(f"{self.board.name}/{self.tier}: vector_lanes={self.vector_lanes} must be 1..64")
        if not 12 <= self.frac_bits <= 24:
            raise PresetError(f"frac_bits={self.frac_bits} must be 12..24 (vectors are 32-bit)")
        if not 6 <= self.sigmoid_table_bits <= 12:
            raise PresetError(f"sigmoid_table_bits={self.sigmoid_table_bits} must be 6..12 (64..4096 entries)")
        if not 1 <= self.batch_slots <= 32:
            raise PresetError(f"batch_slots={self.batch_slots} must be 1..32 (a 32-bit slot mask)")
        if not 1 <= self.prefill_chunk <= 32:
            raise PresetError(f"prefill_chunk={self.prefill_chunk} must be 1..32 (N lanes leave the logits as one "
                              "32N-bit AXI word, at most 1024 bits)")
        if not 1 <= self.topk <= 64:
            raise PresetError(f"topk={self.topk} must be 1..64")
        if self.tier == "streamed":
            if not self.ports:
                raise PresetError(f"{self.board.name}: the streamed preset names no weight ports")
            if self.port_bits not in (32, 64, 128, 256, 512):
                raise PresetError(f"{self.board.name}: port_bits={self.port_bits} is not an AXI width")
        return self


def boards_file() -> Path:
    """The board table in force: ``$MMFREE_BOARDS`` if set, else the shipped data/boards.json."""
    env = os.environ.get(BOARDS_ENV)
    return Path(env).expanduser() if env else BOARDS_FILE


def _require(d: dict, key: str, where: str):
    if key not in d:
        raise PresetError(f"{boards_file()}: {where} has no '{key}'")
    return d[key]


@lru_cache(maxsize=None)
def _table(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PresetError(f"cannot read the board table {path}: {e}") from None
    return {k: v for k, v in data.items() if not k.startswith("_")}


def board_table(path: Optional[Path] = None) -> dict:
    """Every board's raw entry (a copy), for the readers of fields beyond the preset (synth, manifest)."""
    return copy.deepcopy(_table(str(path or boards_file())))


def board_names(path: Optional[Path] = None) -> list[str]:
    return sorted(_table(str(path or boards_file())))


def get_board(name: str, path: Optional[Path] = None) -> Board:
    path = path or boards_file()
    table = _table(str(path))
    if name not in table:
        raise PresetError(f"unknown board {name!r}; known boards: {', '.join(sorted(table))}"
                          + (f" (board table {path}, from ${BOARDS_ENV})" if os.environ.get(BOARDS_ENV) else ""))
    b = table[name]
    engine = b.get("engine", {})
    return Board(name=name, part=_require(b, "part", name), family=_require(b, "ps", name),
                 resources={r: int(_require(b, r, name)) for r in RESOURCES},
                 ddr_peak_gbps=float(_require(b, "ddr_peak_gbps", name)),
                 ddr_usable_fraction=float(_require(b, "ddr_usable_fraction", name)),
                 board_part=b.get("board_part"),
                 flow="model-only" if str(engine.get("flow", "")).startswith("model-only") else "pynq",
                 raw=b)


def get_preset(board: str, tier: str = "on-chip", path: Optional[Path] = None, **knobs) -> EnginePreset:
    """The engine preset of ``board`` for ``tier``, with optional knob overrides."""
    if tier not in TIERS:
        raise PresetError(f"tier {tier!r} is not one of {TIERS}")
    b = get_board(board, path)
    engine = b.raw.get("engine") or {}
    if tier not in engine:
        raise PresetError(f"board {board!r} has no {tier} engine preset in {path or boards_file()}")
    t = engine[tier]
    where = f"{board}.engine.{tier}"
    preset = EnginePreset(
        board=b, tier=tier, clock_mhz=float(_require(t, "clock_mhz", where)),
        vector_lanes=int(_require(t, "vector_lanes", where)),
        rows_per_tile=int(t.get("rows_per_tile", 16)),
        ports=tuple(t.get("ports", ())), port_bits=int(t.get("port_bits", 64)),
        burst_beats=int(t.get("burst_beats", 16)), outstanding=int(t.get("outstanding", 8)),
        fifo_words=int(t.get("fifo_words", 2048)), batch_slots=int(t.get("batch_slots", 1)),
        prefill_chunk=int(t.get("prefill_chunk", 1)), topk=int(t.get("topk", 8)))
    return preset.with_knobs(**knobs) if knobs else preset.validate()


MODEL_PRESETS_FILE = BOARDS_FILE.with_name("model_presets.json")


def model_preset_names() -> list[str]:
    return sorted(k for k in _table(str(MODEL_PRESETS_FILE)))


def model_preset(name: str):
    """The ModelConfig of a published size (``370M``, ``1.3B``, ``2.7B``; data/model_presets.json)."""
    from ..config import ModelConfig
    table = _table(str(MODEL_PRESETS_FILE))
    if name not in table:
        raise PresetError(f"unknown model preset {name!r}; known: {', '.join(sorted(table))}")
    return ModelConfig.from_dict(dict(table[name]["config"]))

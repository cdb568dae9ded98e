"""An engine build on disk: ``hls_project/<name>/``.

    firmware/                 the engine's C++ (fixed headers + generated config, tables, top)
    weights.bin               streamed tier: the weights buffer (header + K port regions)
    mmfree_project.json       what was built: model, board, tier, packing, knobs, sources, ports
    csim/libmmfree_csim.so    the g++ build of the same C++ (the C-simulation backend)

The record is what `mmfree synth` (Vitis HLS / Vivado Tcl) and `mmfree package`
read; they never import the model to know the design.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import numpy as np

from ..hls_project import CSIM_LIBRARY, PROJECT_FILE, read_project
from .build import compile_csim, write_engine_sources
from .codegen import ABI_VERSION, TOP
from .layout import HEADER_BYTES, Shape, build_image, region_stride, weights_buffer
from .presets import EnginePreset, get_preset
from .schedule import token_cycles

WEIGHTS_FILE = "weights.bin"


class EngineShapeError(ValueError):
    """A model whose shape this engine build cannot run (the message names the knob to change)."""


def check_shape(cfg, preset: EnginePreset, packing: str) -> Shape:
    """The engine's compile-time constraints, checked before any C++ is written."""
    shape = Shape.of(cfg, packing, preset.R)
    narrowest = min(cfg.d, cfg.input_dim, cfg.ffn_dim)
    if shape.n_cg(narrowest) < preset.R:
        raise EngineShapeError(
            f"a {narrowest}-input BitLinear takes {shape.n_cg(narrowest)} cycles a row block, fewer than the "
            f"{preset.R} rows its write-back needs: this model is too narrow for the {preset.board.name} "
            f"{preset.tier} engine (R={preset.R}); " + ("lower rows_per_tile" if preset.K == 0 else "use the on-chip tier or a board with fewer or narrower weight ports"))
    if cfg.num_heads != 1:
        raise EngineShapeError(f"num_heads = {cfg.num_heads}: the engine's gated RMSNorm normalises one head; "
                               "convert a model with num_heads 1")
    return shape


def engine_record(cfg, preset: EnginePreset, packing: str) -> dict:
    """The engine section shared by the project record and the overlay manifest."""
    shape = check_shape(cfg, preset, packing)
    knobs = {k: v for k, v in asdict(preset).items() if k not in ("board", "ports")}
    knobs["ports"] = list(preset.ports)
    rec = {"abi": ABI_VERSION, "top": TOP, "board": preset.board.name, "tier": preset.tier,
           "packing": packing, "K": preset.K, "R": shape.R, "per": shape.per,
           "lanes": preset.lanes(packing), "words_per_token": shape.words(),
           "weight_bytes_per_token": shape.weight_bytes(),
           "cycles_per_token": token_cycles(shape, preset.vector_lanes).total, "knobs": knobs}
    if preset.K:
        rec.update({"port_bytes": preset.port_bytes, "region_offset": HEADER_BYTES,
                    "region_bytes": region_stride(shape.words(), preset.port_bytes),
                    "weights_file": WEIGHTS_FILE})
    return rec


#: Knobs an engine record carries that belong to the board's ports, not to the build.
_PORT_KNOBS = ("tier", "ports", "port_bits", "burst_beats", "outstanding", "fifo_words")


def preset_of(engine: dict) -> EnginePreset:
    """The preset an engine record (of a project or a manifest) was built with."""
    knobs = {k: v for k, v in engine["knobs"].items() if k not in _PORT_KNOBS}
    return get_preset(engine["board"], engine["tier"], **knobs)


def ports(cfg, preset: EnginePreset) -> list[dict]:
    """The top's arguments, in order (register map and C-sim ABI): the pass's scalars, the buffers,
    the weight ports."""
    from .codegen import SCALAR_ARGS
    N, B, K = preset.token_lanes, preset.batch_slots, preset.topk
    p = [{"name": a, "dtype": "int32", "kind": "scalar", "bundle": "control"} for a in SCALAR_ARGS]
    p += [{"name": "x_in", "dtype": "float32", "shape": [N * cfg.d], "direction": "in", "bundle": "gmem_io"},
          {"name": "state", "dtype": "float32", "shape": [B * cfg.num_hidden_layers * cfg.input_dim],
           "direction": "inout", "bundle": "gmem_io"},
          {"name": "logits", "dtype": f"ap_uint<{32 * N}>", "shape": [cfg.vocab_size], "direction": "out",
           "bundle": "gmem_out"},
          {"name": "top", "dtype": "uint64", "shape": [N * K], "direction": "out", "bundle": "gmem_out"}]
    for k in range(preset.K):
        p.append({"name": f"w{k}", "dtype": f"ap_uint<{preset.port_bits}>", "direction": "in",
                  "bundle": f"gmem_w{k}", "ps_port": preset.ports[k]})
    return p


def write_project(model, root: str | Path, preset: EnginePreset, packing: str, *, name: Optional[str] = None,
                  extra: Optional[dict] = None) -> dict:
    """Write firmware/, weights.bin (streamed) and mmfree_project.json under ``root``."""
    root = Path(root)
    cfg = model.config
    eng = engine_record(cfg, preset, packing)
    sources = write_engine_sources(root, model, preset, packing)
    if preset.K:
        img = build_image(model, packing, preset.R)
        buf = weights_buffer(img, Shape.of(cfg, packing, preset.R), preset.K, preset.port_bytes)
        tmp = root / (WEIGHTS_FILE + ".tmp")
        buf.tofile(tmp)
        tmp.replace(root / WEIGHTS_FILE)
    record = {
        "name": name or root.name, "top": TOP, "tier": preset.tier, "board": preset.board.name,
        "part": preset.board.part, "clock_mhz": preset.clock_mhz, "packing": packing,
        "model": cfg.to_dict(), "engine": eng, "ports": ports(cfg, preset),
        "control": {"interface": "s_axilite", "bundle": "control"},
        "dims": {"d": cfg.d, "L": cfg.num_hidden_layers, "e": cfg.input_dim, "V": cfg.vocab_size},
        "sources": ["firmware/mmfree_engine_top.cpp"], "include_dirs": ["firmware"],
        "headers": [f"firmware/{s}" for s in sources if s.endswith(".h")],
        "cflags": ["-std=c++14"], "csim_library": CSIM_LIBRARY,
    }
    record.update(extra or {})
    tmp = root / (PROJECT_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(root / PROJECT_FILE)
    return record


class EngineProject:
    """A project written by :func:`write_project` (what ``convert`` returns)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.info = read_project(self.root)
        self._csim = None

    @property
    def name(self) -> str:
        return self.info["name"]

    @property
    def tier(self) -> str:
        return self.info["tier"]

    @property
    def lib_path(self) -> Path:
        return self.root / CSIM_LIBRARY

    @property
    def content_hash(self) -> str:
        return self.info.get("content_hash", "")

    def weights(self) -> Optional[np.ndarray]:
        """The streamed tier's weights buffer (None on chip)."""
        f = self.root / WEIGHTS_FILE
        return np.fromfile(f, np.uint8) if self.info["engine"]["K"] else None

    def compile(self, opt: str = "-O3", force: bool = False, verbose: bool = True, fast: bool = True) -> Path:
        """g++ the C-simulation library (cached by a digest of the sources and the command)."""
        lib = compile_csim(self.root, opt=opt, fast=fast, force=force, verbose=verbose)
        self._csim = None
        return lib

    def is_compiled(self) -> bool:
        from .build import is_built
        return is_built(self.root)

    def compile_warnings(self) -> list[str]:
        log = self.lib_path.with_name("compile.log")
        if not log.is_file():
            return []
        return [ln for ln in log.read_text().splitlines() if ": warning:" in ln and "firmware/" in ln]

    def csim(self):
        """The compiled C-simulation bound to this project's weights (compiled first if needed)."""
        from ..runtime.backend_csim import CSimLibrary
        if self._csim is None:
            lib = self.compile(verbose=False)
            self._csim = CSimLibrary(lib, weights=self.weights())
        return self._csim


__all__ = ["EngineProject", "EngineShapeError", "write_project", "engine_record", "preset_of", "ports",
           "check_shape"]

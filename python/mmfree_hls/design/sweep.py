"""Accuracy-vs-resource sweeps over the decode engine's knobs.

A sweep file (YAML) names the models, the targets and a grid of engine knobs::

    name: demo
    models:
      demo: {checkpoint: python/mmfree_hls/data/demo_model}
      tiny: {random: {vocab_size: 64, hidden_size: 64, num_hidden_layers: 1}, seed: 0}
    board: pynq-z2               # defaults of the target axes (each may also be a grid axis)
    tier: on-chip                # on-chip | streamed
    packing: 2bit                # 2bit | 1.6bit
    base: {sigmoid_table_bits: 10}   # knob overrides of every point, over the board preset
    grid:                        # the cartesian product of the axes
      model: [demo]
      board: [pynq-z2, zcu104]
      frac_bits: [14, 20]
      vector_lanes: [4, 16]
      target:                    # a bundle axis: each value sets several things at once
        - {label: onchip, set: {tier: on-chip}}
        - {label: streamed, set: {tier: streamed, clock_mhz: 125}}
    points:                      # optional extra points, each {model, label, set}
      - {label: preset, set: {board: kv260}}
    random: {k: 8, seed: 0}      # optional: a random subset of the grid (the CLI can override)
    eval: {tokens: 256, prompt_tokens: 16, greedy_tokens: 32, greedy_prompts: 3}
    timeout_s: 900               # per point (convert + compile + evaluation)

A *point* is (model, board, tier, packing, engine knobs): the knobs are the
board preset's (``mmfree_hls.engine.presets``) with the sweep's overrides
(vector_lanes, rows_per_tile, clock_mhz, frac_bits, sigmoid_table_bits). Its
content hash (model identity + target + resolved preset + evaluation
settings) names it: a re-run skips every point already in ``results.jsonl``
(resume), failing points are recorded with their error, and results are
appended as groups finish. Accuracy comes from the engine's C-simulation
against the numpy reference; resources, ``fits`` (per resource and overall,
for the point's own board) and tokens/s from the engine's cost model (a
Vitis HLS / Vivado report of the point's project when one exists).

Compiling is the expensive part, so points are grouped: the C-simulation's
numbers depend only on the model and the numeric knobs (:data:`NUMERIC_KNOBS`:
frac_bits, sigmoid_table_bits). Board, tier, packing, clock, vector lanes
and rows per tile change the schedule and the hardware, not one value a
step computes (tests/test_sweep.py checks this bit for bit), so every point
of a group shares one g++ build and one evaluation, and gets its own cost
record. Every point writes its own engine project under
``<cache>/<project hash>/`` (``<out>/projects`` unless the sweep file names a
``cache_dir``; only the first of a group is compiled), reused across runs.
To replace a point's estimate by a synthesis report, run ``mmfree synth`` on
its project and then the sweep again (or ``--report-only``): rows whose
project gained a Vitis HLS / Vivado report are re-costed from it.

Every group runs in its own Python process (``sweep_eval``), driven by the
scheduler: a local pool of ``workers`` such processes by default, or Dask
distributed (``dask`` = a LocalCluster here, ``dask:ADDRESS`` = an existing
scheduler; the workers must see the output and cache directories and the
checkpoints, e.g. on a shared file system). A separate process per group
gives each point a hard timeout (the process group is killed) and keeps a
crashing C-simulation from taking the sweep down.

Interrupted and concurrent runs: local workers are killed with the driver
(Linux parent-death signal; Ctrl-C kills them too), so nothing keeps writing
into the output directory after it; a lock file refuses a second sweep into
the same output directory while one runs; a ``results.jsonl`` line cut short
by a killed writer (or otherwise damaged, or lacking a status) is skipped with
a warning, and its point runs again.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional

SPEC_KEYS = ("name", "models", "board", "tier", "packing", "base", "grid", "points", "random", "eval",
             "timeout_s", "runner", "cache_dir")
EVAL_DEFAULTS = {"tokens": 256, "offset": 0, "prompt_tokens": 16, "greedy_tokens": 32, "greedy_prompts": 3}
DEFAULT_TIMEOUT_S = 900.0
DEFAULT_BOARD = "pynq-z2"
DEFAULT_TIER = "on-chip"
DEFAULT_PACKING = "2bit"
DEFAULT_RUNNER = "mmfree_hls.design.sweep_eval:CSimRunner"
#: The engine knobs a sweep sets (fields of presets.EnginePreset), with their short label names.
KNOBS = {"vector_lanes": "V", "rows_per_tile": "R", "clock_mhz": "MHz", "frac_bits": "frac",
         "sigmoid_table_bits": "sig", "batch_slots": "B", "prefill_chunk": "T", "topk": "topk"}
#: The knobs the C-simulation's numbers depend on; the others (and board, tier, packing) only
#: change the schedule and the hardware, so points that differ only in those share one build.
NUMERIC_KNOBS = ("frac_bits", "sigmoid_table_bits")
#: What a point is aimed at, besides its knobs (each a grid axis or a top-level default).
TARGETS = ("board", "tier", "packing")
#: Version of what a point measures (sweep_eval's metrics): part of every point's hash, so a
#: change of definition re-runs points instead of mixing old and new numbers in one table.
MEASURE_VERSION = 4
RESULTS_FILE = "results.jsonl"
DAMAGED_FILE = "results.damaged.jsonl"
RUNS_FILE = "runs.jsonl"
REPO_ROOT = Path(__file__).resolve().parents[3]
STATUSES = ("ok", "overflow", "failed", "timeout", "crashed")
#: Statuses a resumed run re-tries only when asked (--retry-failed).
RETRYABLE = ("failed", "timeout", "crashed")


class SweepConfigError(ValueError):
    """A sweep file entry that cannot be expanded into points."""


class SweepLockedError(RuntimeError):
    """Another sweep is writing into the same output directory."""


class DamagedResultsWarning(UserWarning):
    """A results.jsonl line could not be used; its point runs again."""


LOCK_FILE = ".sweep.lock"
#: Metrics a result row must hold as numbers (or null) for the report to use them.
NUMERIC_METRICS = ("top1_agreement", "greedy_agreement", "perplexity", "max_logit_err")


# ===================================================================== hashing
def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def digest(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:n]


@functools.lru_cache(maxsize=None)
def engine_digest() -> str:
    """Digest of the engine's sources (its C++, the generator, layout, schedule and cost model): part of
    every point's hash, so a sweep run after the engine changed measures again instead of mixing
    numbers of two engines in one table."""
    from ..engine import build
    files = sorted(Path(build.__file__).resolve().parent.glob("*.py")) + sorted(build.hls_source_dir().glob("*.h"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def numeric_knobs(knobs: Mapping) -> dict:
    """The knobs the C-simulation's numbers depend on (what a group of points shares)."""
    return {k: knobs[k] for k in NUMERIC_KNOBS if k in knobs}


# ===================================================================== spec
@dataclass(frozen=True)
class ModelSpec:
    """A model choice of the sweep: a checkpoint directory or a seeded random model."""

    name: str
    checkpoint: Optional[str] = None
    random: Optional[dict] = None
    seed: int = 0

    def to_dict(self) -> dict:
        return {"name": self.name, "checkpoint": self.checkpoint, "random": self.random, "seed": self.seed}

    def identity(self) -> dict:
        """What the model's numbers depend on (its files' content, or its config and seed)."""
        if self.checkpoint:
            root = Path(self.checkpoint)
            files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors"))
            h = hashlib.sha256()
            for p in files:
                h.update(p.name.encode())
                with open(p, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
            return {"checkpoint_sha256": h.hexdigest()}
        return {"random": self.random, "seed": self.seed}


@dataclass
class Axis:
    name: str
    kind: str                   # "model" | "target" | "knob" | "bundle"
    values: list                # model names | target names | knob values | bundles {"label", "set"}

    def labels(self) -> list[str]:
        if self.kind == "bundle":
            return [b["label"] for b in self.values]
        return [format_value(v) for v in self.values]


@dataclass
class SweepSpec:
    name: str
    models: dict[str, ModelSpec]
    targets: dict               # default board, tier, packing
    base: dict                  # knob overrides of every point
    axes: list[Axis]
    extra_points: list[dict]
    random: Optional[dict]
    eval: dict
    timeout_s: float
    runner: str
    cache_dir: Optional[str]
    source: Optional[str] = None
    raw: dict = field(default_factory=dict)

    @property
    def board(self) -> str:
        """The default board (points may name others)."""
        return self.targets["board"]

    def digest(self) -> str:
        return digest(self.raw)


def _resolve_path(text: str, spec_dir: Optional[Path]) -> Path:
    p = Path(os.path.expanduser(text))
    if p.is_absolute():
        return p
    tried = [Path.cwd() / p] + ([spec_dir / p] if spec_dir else []) + [REPO_ROOT / p]
    for cand in tried:
        if cand.exists():
            return cand.resolve()
    raise FileNotFoundError(f"model checkpoint {text!r} not found (looked in {', '.join(str(t) for t in tried)}); "
                            "give an existing directory or train one with `mmfree train`")


def _model_spec(name: str, entry: Any, spec_dir: Optional[Path]) -> ModelSpec:
    if not isinstance(entry, Mapping):
        raise SweepConfigError(f"models.{name} must be {{checkpoint: DIR}} or {{random: {{...}}, seed: N}}")
    bad = sorted(set(entry) - {"checkpoint", "random", "seed"})
    if bad:
        raise SweepConfigError(f"models.{name}: unknown key(s) {bad}; use checkpoint, or random and seed")
    if ("checkpoint" in entry) == ("random" in entry):
        raise SweepConfigError(f"models.{name}: give exactly one of checkpoint or random")
    if "checkpoint" in entry:
        path = _resolve_path(str(entry["checkpoint"]), spec_dir)
        if not path.is_dir():
            raise FileNotFoundError(f"models.{name}: checkpoint directory {path} not found; give the directory "
                                    "that holds config.json and model.safetensors")
        return ModelSpec(name, checkpoint=str(path))
    from ..config import ModelConfig
    cfg = entry["random"]
    if not isinstance(cfg, Mapping):
        raise SweepConfigError(f"models.{name}.random must map config.json fields (hidden_size, ...) to values")
    ModelConfig.from_dict(dict(cfg))          # validates; raises ConfigError naming the field
    seed = entry.get("seed", 0)
    if not isinstance(seed, int):
        raise SweepConfigError(f"models.{name}.seed must be an integer")
    return ModelSpec(name, random=dict(cfg), seed=seed)


def _target_choices(name: str) -> list[str]:
    from ..engine.presets import PACKINGS, TIERS, board_names
    return {"board": board_names(), "tier": list(TIERS), "packing": sorted(PACKINGS)}[name]


def _check_target(name: str, value: Any, where: str) -> str:
    choices = _target_choices(name)
    if value not in choices:
        raise SweepConfigError(f"{where}: {name} {value!r} unknown; choose one of {choices}")
    return str(value)


def _check_knob(name: str, value: Any, where: str) -> Any:
    if name not in KNOBS:
        raise SweepConfigError(f"{where}: {name!r} is not an engine knob; sweep the knobs {sorted(KNOBS)} "
                               f"or the targets {list(TARGETS)} (and model)")
    ok = isinstance(value, (int, float)) if name == "clock_mhz" else isinstance(value, int)
    if isinstance(value, bool) or not ok:
        kind = "a number of MHz" if name == "clock_mhz" else "an integer"
        raise SweepConfigError(f"{where}: {name} = {value!r} must be {kind}")
    return float(value) if name == "clock_mhz" else value


def _settings(sets: Any, where: str) -> dict:
    """A mapping of knobs and targets (a bundle's or an extra point's ``set``, or ``base``), checked."""
    if sets is None:
        return {}
    if not isinstance(sets, Mapping):
        raise SweepConfigError(f"{where} must map engine knobs ({', '.join(KNOBS)}) or targets "
                               f"({', '.join(TARGETS)}) to values")
    out = {}
    for k, v in sets.items():
        out[k] = _check_target(k, v, where) if k in TARGETS else _check_knob(k, v, where)
    return out


def _bundle(axis: str, value: Any, i: int) -> dict:
    if not isinstance(value, Mapping) or "set" not in value:
        raise SweepConfigError(f"grid.{axis}[{i}]: a bundle axis takes mappings {{label: NAME, set: {{knob: value}}}}")
    bad = sorted(set(value) - {"label", "set"})
    if bad:
        raise SweepConfigError(f"grid.{axis}[{i}]: unknown key(s) {bad}; a bundle has label and set")
    return {"label": str(value.get("label", f"{axis}{i}")), "set": _settings(value["set"], f"grid.{axis}[{i}].set")}


def load_spec(source: str | Path | Mapping) -> SweepSpec:
    """Read and check a sweep file (or dict); every problem names its key and the fix."""
    spec_dir = None
    if isinstance(source, Mapping):
        raw, src = copy.deepcopy(dict(source)), None
    else:
        import yaml
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"sweep file {path} not found; see design/configs/sweep_demo.yaml for an example")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise SweepConfigError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(raw, dict):
            raise SweepConfigError(f"{path}: the top level must be a mapping with keys {list(SPEC_KEYS)}")
        src, spec_dir = str(path), path.resolve().parent
    bad = sorted(set(raw) - set(SPEC_KEYS))
    if bad:
        raise SweepConfigError(f"unknown sweep key(s) {bad}; valid keys are {list(SPEC_KEYS)}")
    name = str(raw.get("name") or (Path(src).stem if src else "sweep"))
    models_raw = raw.get("models") or {}
    if not isinstance(models_raw, Mapping) or not models_raw:
        raise SweepConfigError("models: name at least one model, e.g. models: {demo: {checkpoint: DIR}}")
    models = {str(k): _model_spec(str(k), v, spec_dir) for k, v in models_raw.items()}
    targets = {"board": DEFAULT_BOARD, "tier": DEFAULT_TIER, "packing": DEFAULT_PACKING}
    for t in TARGETS:
        if t in raw:
            targets[t] = _check_target(t, raw[t], t)
    base = _settings(raw.get("base"), "base")
    if set(base) & set(TARGETS):
        raise SweepConfigError(f"base: give {sorted(set(base) & set(TARGETS))} at the top level, not in base")

    grid = raw.get("grid") or {}
    if not isinstance(grid, Mapping):
        raise SweepConfigError("grid must map axes (engine knobs, model, board, tier, packing, or bundle names) "
                               "to lists of values")
    axes: list[Axis] = []
    for axis, values in grid.items():
        axis = str(axis)
        if not isinstance(values, list) or not values:
            raise SweepConfigError(f"grid.{axis} must be a non-empty list of values")
        if axis == "model":
            unknown = [v for v in values if v not in models]
            if unknown:
                raise SweepConfigError(f"grid.model: {unknown} not in models ({sorted(models)})")
            axes.append(Axis("model", "model", [str(v) for v in values]))
        elif axis in TARGETS:
            axes.append(Axis(axis, "target", [_check_target(axis, v, f"grid.{axis}") for v in values]))
        elif all(isinstance(v, Mapping) for v in values):
            if axis in KNOBS:
                raise SweepConfigError(f"grid.{axis}: a knob axis takes plain values, not mappings")
            axes.append(Axis(axis, "bundle", [_bundle(axis, v, i) for i, v in enumerate(values)]))
        elif any(isinstance(v, Mapping) for v in values):
            raise SweepConfigError(f"grid.{axis}: mixes bundles (mappings) and plain values")
        else:
            axes.append(Axis(axis, "knob", [_check_knob(axis, v, f"grid.{axis}") for v in values]))

    extra = []
    for i, p in enumerate(raw.get("points") or []):
        if not isinstance(p, Mapping) or set(p) - {"model", "label", "set"}:
            raise SweepConfigError(f"points[{i}] must be a mapping with model, label and set")
        model = p.get("model", next(iter(models)))
        if model not in models:
            raise SweepConfigError(f"points[{i}].model {model!r} not in models ({sorted(models)})")
        extra.append({"model": model, "label": str(p.get("label", f"point{i}")),
                      "set": _settings(p.get("set"), f"points[{i}].set")})
    if not axes and not extra:
        raise SweepConfigError("the sweep has no points: give a grid or a points list")

    rnd = raw.get("random")
    if rnd is not None and (not isinstance(rnd, Mapping) or not isinstance(rnd.get("k"), int) or rnd["k"] < 1):
        raise SweepConfigError("random must be {k: N (≥ 1), seed: S}")
    ev = dict(EVAL_DEFAULTS)
    ev_raw = raw.get("eval") or {}
    bad = sorted(set(ev_raw) - set(EVAL_DEFAULTS))
    if bad:
        raise SweepConfigError(f"eval: unknown key(s) {bad}; valid keys are {list(EVAL_DEFAULTS)}")
    ev.update(ev_raw)
    for k, v in ev.items():
        if not isinstance(v, int) or v < 0 or (k in ("tokens", "prompt_tokens") and v < 2):
            raise SweepConfigError(f"eval.{k} = {v!r}: use a non-negative integer (tokens, prompt_tokens ≥ 2)")
    if ev["greedy_tokens"] and ev["greedy_prompts"] < 1:
        raise SweepConfigError("eval.greedy_prompts must be ≥ 1 when eval.greedy_tokens > 0")
    timeout = raw.get("timeout_s", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise SweepConfigError("timeout_s must be a positive number of seconds")
    runner = str(raw.get("runner", DEFAULT_RUNNER))
    if ":" not in runner:
        raise SweepConfigError(f"runner {runner!r}: write module:Class")
    return SweepSpec(name=name, models=models, targets=targets, base=base, axes=axes, extra_points=extra,
                     random=rnd, eval=ev, timeout_s=float(timeout), runner=runner,
                     cache_dir=raw.get("cache_dir"), source=src, raw=raw)


# ===================================================================== points
def format_value(v: Any) -> str:
    """Short label of a knob value: 125.0 → 125."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


@dataclass
class Point:
    index: int
    label: str
    model: str
    board: str
    tier: str
    packing: str
    knobs: dict                # engine knobs after the sweep's overrides (the convert config of the point)
    choices: dict              # axis name → label of the chosen value
    preset: dict = field(default_factory=dict)    # the resolved preset (ports, R, lanes, ...) for the record
    point_hash: str = ""
    project_hash: str = ""
    accuracy_key: str = ""

    def to_dict(self) -> dict:
        return {"index": self.index, "label": self.label, "model": self.model, "board": self.board,
                "tier": self.tier, "packing": self.packing, "knobs": self.knobs, "choices": self.choices,
                "preset": self.preset, "point_hash": self.point_hash, "project_hash": self.project_hash,
                "accuracy_key": self.accuracy_key}


def _short(axis: str) -> str:
    return KNOBS.get(axis, axis)


def resolve_preset(board: str, tier: str, packing: str, overrides: Mapping):
    """(EnginePreset, knobs) of a point: the board's preset with the sweep's overrides.

    ``knobs`` holds every sweep knob's resolved value (what convert takes as its config). On the
    streamed tier the rows per tile are the weight ports' bytes (K x port_bits / 8), so
    ``rows_per_tile`` does not apply there: streamed points that differ only in it are one point.
    """
    from ..engine.presets import get_preset
    over = dict(overrides)
    if tier == "streamed":
        over.pop("rows_per_tile", None)
    preset = get_preset(board, tier, **over)
    knobs = {k: getattr(preset, k) for k in KNOBS if not (tier == "streamed" and k == "rows_per_tile")}
    return preset, knobs


def preset_record(preset, packing: str) -> dict:
    """What a point's hardware is, beyond its knobs: rows per tile, lanes, ports (for hashes and tables)."""
    return {"R": preset.R, "K": preset.K, "lanes": preset.lanes(packing), "ports": list(preset.ports),
            "port_bits": preset.port_bits if preset.K else None, "burst_beats": preset.burst_beats,
            "outstanding": preset.outstanding, "fifo_words": preset.fifo_words, "part": preset.board.part,
            # the board's budget and DDR: what fits and tokens/s are measured against
            "budget": dict(preset.board.resources), "ddr_usable_gbps": preset.board.usable_gbps}


def expand(spec: SweepSpec, random_k: Optional[int] = None, seed: Optional[int] = None,
           limit: Optional[int] = None) -> list[Point]:
    """Every point of the grid (then the extra points), or a seeded random subset, hashed."""
    from ..engine.presets import PresetError

    combos: list[tuple[str, dict, dict, list[str]]] = []     # model, settings, choices, label parts
    default_model = next(iter(spec.models))
    if spec.axes:
        for values in itertools.product(*[range(len(a.values)) for a in spec.axes]):
            model, sets, choices, parts = default_model, {**spec.targets, **spec.base}, {}, []
            for axis, i in zip(spec.axes, values):
                value = axis.values[i]
                choices[axis.name] = axis.labels()[i]
                if axis.kind == "model":
                    model = value
                elif axis.kind == "bundle":
                    sets.update(value["set"])
                else:
                    sets[axis.name] = value
                if len(axis.values) > 1:     # knobs are labelled by their resolved value (below)
                    parts.append(axis.name if axis.kind == "knob" else f"{_short(axis.name)}={axis.labels()[i]}")
            combos.append((model, sets, choices, parts))
    for p in spec.extra_points:
        combos.append((p["model"], {**spec.targets, **spec.base, **p["set"]}, {"point": p["label"]}, [p["label"]]))

    k = random_k if random_k is not None else (spec.random or {}).get("k")
    s = seed if seed is not None else (spec.random or {}).get("seed", 0)
    idx = list(range(len(combos)))
    if k is not None and k < len(combos):
        import numpy as np
        idx = sorted(int(i) for i in np.random.default_rng(s).choice(len(combos), size=k, replace=False))
    if limit is not None:
        idx = idx[:limit]

    identities = {name: m.identity() for name, m in spec.models.items()}
    points, seen = [], set()
    for i in idx:
        model, sets, choices, parts = combos[i]
        target = {t: sets.pop(t) for t in TARGETS}
        try:
            preset, knobs = resolve_preset(target["board"], target["tier"], target["packing"], sets)
        except PresetError as e:
            what = " ".join(f"{_short(a)}={v}" for a, v in choices.items()) or "base"
            raise SweepConfigError(f"point {i} ({what}): {e}") from None
        record = preset_record(preset, target["packing"])
        parts = [f"{_short(x)}={format_value(knobs.get(x, record['R']))}" if x in KNOBS else x for x in parts]
        pt = Point(index=i, label=" ".join(parts) or model, model=model, choices=choices, knobs=knobs,
                   preset=record, **target)
        project = {"model": identities[model], **target, "knobs": knobs, "preset": record}
        pt.project_hash = digest(project)
        engine = engine_digest()
        pt.point_hash = digest({**project, "eval": spec.eval, "runner": spec.runner, "measure": MEASURE_VERSION,
                                "engine": engine})
        pt.accuracy_key = digest({"model": identities[model], "numbers": numeric_knobs(knobs), "eval": spec.eval,
                                  "runner": spec.runner, "measure": MEASURE_VERSION, "engine": engine})
        if pt.point_hash in seen:          # two axes that end in the same design: evaluate it once
            continue
        seen.add(pt.point_hash)
        points.append(pt)
    return points


# ===================================================================== results
class ResultsStore:
    """``results.jsonl`` of an output directory: one JSON line per finished point, append-only.

    A line that is not a JSON object with a ``point_hash`` and a known ``status``
    (cut short by a killed writer, edited, not UTF-8) is skipped with a
    :class:`DamagedResultsWarning` naming the file and line; its point is then
    not "done" and runs again.
    """

    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir)
        self.path = self.dir / RESULTS_FILE
        self._lock = threading.Lock()
        self._warned: set[tuple[int, bytes]] = set()

    def _damaged(self, lineno: int, raw: bytes, why: str) -> None:
        if (lineno, raw) in self._warned:
            return
        self._warned.add((lineno, raw))
        warnings.warn(f"{self.path}:{lineno}: skipped a damaged line ({why}); its point runs again",
                      DamagedResultsWarning, stacklevel=3)

    def _parse(self) -> Iterator[tuple[int, bytes, Optional[dict], str]]:
        """(line number, raw line, row or None, why it is damaged) for every non-blank line."""
        with open(self.path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                    yield lineno, raw, None, "not a complete JSON line: a run was killed while writing it?"
                    continue
                if not isinstance(row, dict) or not isinstance(row.get("point_hash"), str):
                    yield lineno, raw, None, "not a result row with a point_hash"
                    continue
                if row.get("status") not in STATUSES:
                    yield lineno, raw, None, f"status {row.get('status')!r} is not one of {list(STATUSES)}"
                    continue
                wrong = [k for k in NUMERIC_METRICS if row.get(k) is not None
                         and (isinstance(row[k], bool) or not isinstance(row[k], (int, float)))]
                if wrong:
                    yield lineno, raw, None, f"{wrong[0]} = {row[wrong[0]]!r} is not a number"
                    continue
                yield lineno, raw, row, ""

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        rows = []
        for lineno, raw, row, why in self._parse():
            if row is None:
                self._damaged(lineno, raw, why)
            else:
                rows.append(row)
        return rows

    def set_aside_damaged(self) -> int:
        """Move damaged lines to ``results.damaged.jsonl`` (kept, not lost) and rewrite the
        results atomically without them; returns how many were moved. Call under the sweep lock."""
        from ..fsio import atomic_write, io_errors

        if not self.path.is_file():
            return 0
        good, bad = [], []
        for lineno, raw, row, why in self._parse():
            if row is None:
                self._damaged(lineno, raw, why)
                bad.append(raw if raw.endswith(b"\n") else raw + b"\n")
            else:
                good.append(raw if raw.endswith(b"\n") else raw + b"\n")
        if bad:
            with io_errors(self.path), open(self.path.with_name(DAMAGED_FILE), "ab") as f:
                f.write(b"".join(bad))
                f.flush()
                os.fsync(f.fileno())
            atomic_write(self.path, b"".join(good))
        return len(bad)

    def latest(self) -> dict[str, dict]:
        """The last row of every point hash (a retried point's newer row wins)."""
        return {r["point_hash"]: r for r in self.read()}

    def done(self, retry_failed: bool = False) -> set[str]:
        return {h for h, r in self.latest().items()
                if not (retry_failed and r.get("status") in RETRYABLE)}

    def append(self, rows: Iterable[dict]) -> None:
        from ..fsio import io_errors

        blob = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows).encode()
        with io_errors(self.path):
            self.dir.mkdir(parents=True, exist_ok=True)
            with self._lock, open(self.path, "ab+") as f:
                f.seek(0, os.SEEK_END)
                if f.tell():
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        blob = b"\n" + blob       # end a line cut short by a killed run first
                f.seek(0, os.SEEK_END)
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())


class SweepLock:
    """An exclusive lock on an output directory for the lifetime of one sweep.

    ``flock`` on ``OUT/.sweep.lock``: released by the kernel when the holder
    exits, however it exits, so a killed sweep never leaves a stale lock.
    """

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / LOCK_FILE
        self._fd: Optional[int] = None

    def __enter__(self) -> "SweepLock":
        import fcntl
        from ..fsio import io_errors

        with io_errors(self.path):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise SweepLockedError(f"another sweep (pid {holder}) is writing into {self.path.parent}; wait "
                                   "for it to finish, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)              # releases the lock
            self._fd = None


# ===================================================================== tasks
def make_tasks(spec: SweepSpec, points: list[Point], out_dir: Path, cache_dir: Path) -> list[dict]:
    """One task per accuracy key: its points share one compiled library and one evaluation.

    The first point of a task builds the library: the on-chip tier and 2-bit packing first (the
    plainest build; the streamed tier also writes the weights buffer), then in sweep order.
    """
    groups: dict[str, list[Point]] = {}
    for p in points:
        groups.setdefault(p.accuracy_key, []).append(p)
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    tasks = []
    for key, pts in groups.items():
        pts = sorted(pts, key=lambda p: (p.tier != "on-chip", p.packing != "2bit", p.index))
        tasks.append({
            "key": key, "sweep": spec.name, "runner": spec.runner, "eval": spec.eval,
            "timeout_s": spec.timeout_s, "model": spec.models[pts[0].model].to_dict(),
            "points": [p.to_dict() for p in pts], "cache_dir": str(cache_dir),
            "work_dir": str(out_dir / "work" / key), "log": str(out_dir / "logs" / f"{key}.log"),
            "python_path": paths,
        })
    return tasks


#: What a result row repeats of its point's definition.
POINT_FIELDS = ("board", "tier", "packing", "knobs", "preset")


def _failure(point: Mapping, status: str, kind: str, message: str, **extra) -> dict:
    row = {"point_hash": point["point_hash"], "status": status, "error_kind": kind, "error": message[-4000:]}
    row.update(extra)
    return row


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


#: Set when the driver is interrupted: every run_task kills its worker and returns.
_STOP = threading.Event()
_PR_SET_PDEATHSIG = 1


def _load_prctl():
    """libc's prctl, resolved in the parent (nothing may be imported between fork and exec)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def _worker_preexec(parent_pid: int) -> None:
    """In the worker, before exec: its own process group (so a timeout kills g++ too), and
    SIGKILL when the driver dies -- even by SIGKILL -- so no orphan keeps writing into OUT."""
    os.setsid()
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:      # the driver died before prctl took effect
            os._exit(1)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the worker and whatever it started (g++), by the process group we created for it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_task(task: Mapping, poll_s: float = 0.2) -> list[dict]:
    """Run one group in a fresh Python process with a per-point timeout; return its result rows.

    The worker writes ``<point>.started`` when it begins a point and ``<point>.json``
    when it is done. A point running longer than ``timeout_s`` has its process
    group killed and is recorded as a timeout; a process that dies mid-point
    records that point as crashed. Either way the remaining points go to a new
    worker process.
    """
    work = Path(task["work_dir"])
    work.mkdir(parents=True, exist_ok=True)
    Path(task["log"]).parent.mkdir(parents=True, exist_ok=True)
    for stale in itertools.chain(work.glob("*.json"), work.glob("*.started")):
        stale.unlink()
    results: dict[str, dict] = {}
    remaining = [p for p in task["points"]]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(task.get("python_path", []) + [env.get("PYTHONPATH", "")]).strip(os.pathsep)
    # One core per worker: the pool provides the parallelism.
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2")
    leader_metrics_file = work / "shared_metrics.json"
    while remaining:
        task_file = work / "task.json"
        task_file.write_text(json.dumps({**task, "points": remaining, "shared_metrics": str(leader_metrics_file)}))
        with open(task["log"], "a") as log:
            proc = subprocess.Popen([sys.executable, "-m", "mmfree_hls.design.sweep_eval", str(task_file)],
                                    stdout=log, stderr=subprocess.STDOUT, env=env,
                                    preexec_fn=functools.partial(_worker_preexec, os.getpid()))
            killed_for: Optional[dict] = None
            while True:
                rc = proc.poll()
                if _STOP.is_set():
                    _kill_group(proc)
                    raise KeyboardInterrupt("sweep interrupted: worker stopped")
                now = time.time()
                for p in remaining:
                    h = p["point_hash"]
                    started = work / f"{h}.started"
                    if h not in results and not (work / f"{h}.json").exists() and started.exists():
                        if now - started.stat().st_mtime > task["timeout_s"]:
                            _kill_group(proc)
                            killed_for = p
                            break
                if killed_for is not None or rc is not None:
                    break
                time.sleep(poll_s)
        for p in remaining:
            f = work / f"{p['point_hash']}.json"
            if f.exists():
                try:
                    results[p["point_hash"]] = json.loads(f.read_text())
                except json.JSONDecodeError:
                    pass
        if killed_for is not None:
            results[killed_for["point_hash"]] = _failure(
                killed_for, "timeout", "timeout",
                f"point did not finish within timeout_s = {task['timeout_s']:g} s (killed); "
                "raise timeout_s in the sweep file or evaluate fewer tokens")
        else:
            started = [p for p in remaining if p["point_hash"] not in results
                       and (work / f"{p['point_hash']}.started").exists()]
            if proc.returncode != 0 or started:
                victim = started[0] if started else None
                why = (f"worker process exited with {proc.returncode}"
                       + (f" (signal {-proc.returncode})" if proc.returncode and proc.returncode < 0 else ""))
                if victim is None:
                    # died before any point started (import error, bad task): every point fails with the log
                    for p in remaining:
                        if p["point_hash"] not in results:
                            results[p["point_hash"]] = _failure(p, "crashed", "worker", f"{why}: {_tail(Path(task['log']))}")
                else:
                    results[victim["point_hash"]] = _failure(victim, "crashed", "crash",
                                                             f"{why} while running this point: {_tail(Path(task['log']))}")
        remaining = [p for p in remaining if p["point_hash"] not in results]
        for f in itertools.chain(work.glob("*.started"),):
            f.unlink(missing_ok=True)
    rows = []
    for p in task["points"]:
        r = dict(results[p["point_hash"]])
        r.update({"point_hash": p["point_hash"], "project_hash": p["project_hash"],
                  "accuracy_key": p["accuracy_key"], "index": p["index"], "label": p["label"],
                  "model": p["model"], "choices": p["choices"], "sweep": task["sweep"],
                  **{k: p[k] for k in POINT_FIELDS}})
        rows.append(r)
    return rows


# ===================================================================== schedulers
def parse_scheduler(text: str) -> tuple[str, Optional[str]]:
    """'local' | 'dask' | 'dask:ADDRESS' → (kind, address)."""
    if text == "local":
        return "local", None
    if text == "dask":
        return "dask", None
    if text.startswith("dask:") and len(text) > 5:
        return "dask", text[5:]
    raise SweepConfigError(f"scheduler {text!r}: use local, dask (a local Dask cluster) or dask:ADDRESS "
                           "(e.g. dask:tcp://scheduler:8786)")


def _run_local(tasks: list[dict], workers: int, on_done: Callable[[dict, list[dict]], None]) -> None:
    from concurrent.futures import ThreadPoolExecutor, as_completed
    # Threads only drive the worker processes (run_task): the work happens in those.
    _STOP.clear()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(run_task, t): t for t in tasks}
        try:
            for fut in as_completed(futures):
                task = futures[fut]
                try:
                    rows = fut.result()
                except Exception as e:            # the driver itself failed: record, go on
                    rows = [_scheduler_failure(task, p, e) for p in task["points"]]
                on_done(task, rows)
        except BaseException:
            _STOP.set()                       # running tasks kill their workers and return
            for f in futures:
                f.cancel()
            raise


def _scheduler_failure(task: Mapping, point: Mapping, e: BaseException) -> dict:
    row = _failure(point, "crashed", "scheduler", f"{type(e).__name__}: {e}")
    row.update({k: point[k] for k in ("project_hash", "accuracy_key", "index", "label", "model", "choices",
                                      *POINT_FIELDS)})
    row.update(sweep=task["sweep"])
    return row


def _run_dask(tasks: list[dict], address: Optional[str], workers: int,
              on_done: Callable[[dict, list[dict]], None]) -> None:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise RuntimeError("the dask scheduler needs dask.distributed: pip install 'mmfree-hls[design]' "
                           "(or pip install 'dask[distributed]')") from None
    cluster = None
    if address is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    else:
        client = Client(address)
    try:
        futures = {}
        for t in tasks:
            fut = client.submit(run_task, t, key=f"mmfree-sweep-{t['key']}-{time.time_ns()}", pure=False)
            futures[fut] = t
        for fut in as_completed(list(futures)):
            task = futures[fut]
            try:
                rows = fut.result()
            except Exception as e:
                rows = [_scheduler_failure(task, p, e) for p in task["points"]]
            on_done(task, rows)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# ===================================================================== run
def refresh_reports(store: "ResultsStore", cache: Path) -> int:
    """Append a new row for every point whose project gained a synthesis report (see
    sweep_eval.refresh_reports); returns how many. Call under the sweep lock."""
    from .sweep_eval import refresh_reports as rows_with_reports
    new = rows_with_reports(list(store.latest().values()), cache)
    if new:
        store.append(new)
    return len(new)


def cache_dir_of(spec: "SweepSpec", out: Path) -> Path:
    return Path(spec.cache_dir) if spec.cache_dir else out / "projects"


@dataclass
class SweepRun:
    out_dir: Path
    points: list[Point]
    skipped: int
    ran: int
    wall_s: float
    statuses: dict


def default_out_dir(spec: SweepSpec) -> Path:
    return Path("runs") / f"sweep_{spec.name}"


def run_sweep(spec: SweepSpec, out_dir: str | Path | None = None, *, workers: int = 2, scheduler: str = "local",
              limit: Optional[int] = None, random_k: Optional[int] = None, seed: Optional[int] = None,
              retry_failed: bool = False, progress: bool = True) -> SweepRun:
    """Expand, skip finished points, run the rest in parallel, append their rows as they finish."""
    kind, address = parse_scheduler(scheduler)
    if workers < 1:
        raise SweepConfigError("workers must be ≥ 1")
    out = Path(out_dir) if out_dir else default_out_dir(spec)
    from ..fsio import SWEEP_KIND, make_output_dir
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory; choose another --out")
    if not out.exists() or not any(out.iterdir()):
        make_output_dir(out, SWEEP_KIND)
    with SweepLock(out):
        return _run_sweep_locked(spec, out, kind, address, workers, scheduler, limit, random_k, seed,
                                 retry_failed, progress)


def _run_sweep_locked(spec: SweepSpec, out: Path, kind: str, address: Optional[str], workers: int,
                      scheduler: str, limit: Optional[int], random_k: Optional[int], seed: Optional[int],
                      retry_failed: bool, progress: bool) -> SweepRun:
    from ..fsio import append_line, atomic_write
    cache = cache_dir_of(spec, out)
    points = expand(spec, random_k, seed, limit)
    store = ResultsStore(out)
    store.set_aside_damaged()              # warned once, kept in results.damaged.jsonl, re-run below
    done = store.done(retry_failed)
    todo = [p for p in points if p.point_hash not in done]
    atomic_write(out / "sweep_spec.json", json.dumps(spec.raw, indent=2, sort_keys=True, default=str) + "\n")
    tasks = make_tasks(spec, todo, out, cache)
    statuses: dict[str, int] = {}
    bar = None
    if progress and todo:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), desc=f"sweep {spec.name}", unit="pt", file=sys.stderr)

    def on_done(task: dict, rows: list[dict]) -> None:
        store.append(rows)
        for r in rows:
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1
        if bar is not None:
            bar.update(len(rows))
            bar.set_postfix(statuses)

    t0 = time.time()
    try:
        if tasks:
            if kind == "local":
                _run_local(tasks, workers, on_done)
            else:
                _run_dask(tasks, address, workers, on_done)
    finally:
        if bar is not None:
            bar.close()
    wall = time.time() - t0
    refresh_reports(store, cache)
    run = SweepRun(out, points, skipped=len(points) - len(todo), ran=len(todo), wall_s=wall, statuses=statuses)
    append_line(out / RUNS_FILE, json.dumps({"started": t0, "wall_s": wall, "scheduler": scheduler,
                                             "workers": workers, "points": len(points), "ran": len(todo),
                                             "skipped": run.skipped, "statuses": statuses, "groups": len(tasks),
                                             "spec_digest": spec.digest(),
                                             "point_hashes": [p.point_hash for p in points]}))
    return run

"""Precision configuration of the HLS design: fixed-point types, table sizes, reuse.

One YAML file (``design/configs/precision_default.yaml``) holds every default;
a user file is merged over it, so it only names what it changes. This module
loads, validates and resolves it into the knobs of one layer:

    cfg = load_precision("my.yaml")          # or None for the defaults, or a dict
    cfg.for_layer("bitlinear", "l0_i_proj")  # → {'result': 'ap_fixed<32,12>', ...}

Errors name the key and the fix (:class:`PrecisionError`, a ValueError).
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

#: The defaults, next to the other hand-written design sources.
DEFAULT_PRECISION_FILE = Path(__file__).resolve().parents[3] / "design" / "configs" / "precision_default.yaml"

#: Layer kinds and the knobs each accepts (besides reuse_factor and, for σ users, sigmoid).
KIND_KEYS = {
    "bitlinear": ("result", "norm", "sumsq", "mant_bits", "newton_iterations", "quant_bits", "act_bits",
                  "accum_bits"),
    "rmsnorm": ("result", "weight", "sumsq", "mant_bits", "newton_iterations"),
    "gated_rmsnorm": ("result", "weight", "normed", "act", "sumsq", "mant_bits", "newton_iterations"),
    "mlgru": ("gate", "act", "lower_bound"),
    "glu": ("result", "act"),
}
SIGMOID_USERS = ("gated_rmsnorm", "mlgru", "glu")
SIGMOID_KEYS = ("table_size", "range", "frac_bits", "interpolate", "table")
TENSOR_KEYS = ("residual", "state", "logits")
TOP_KEYS = ("reuse_factor", "tensors", "sigmoid", "layers") + tuple(KIND_KEYS)

TYPE_KEYS = {"result", "norm", "weight", "normed", "act", "gate", "lower_bound", "sumsq", "table"}
INT_RANGES = {"mant_bits": (8, 48), "newton_iterations": (0, 6), "quant_bits": (10, 40),
              "frac_bits": (1, 24), "reuse_factor": (1, 1 << 20), "act_bits": (2, 8), "accum_bits": (4, 40)}

_TYPE_RE = re.compile(r"^ap_(u?)fixed<\s*(\d+)\s*,\s*(-?\d+)\s*(?:,\s*(AP_[A-Z_]+)\s*)?(?:,\s*(AP_[A-Z_]+)\s*)?>$")
_QUANT_MODES = {"AP_TRN", "AP_TRN_ZERO", "AP_RND", "AP_RND_ZERO", "AP_RND_MIN_INF", "AP_RND_INF", "AP_RND_CONV"}
_OVERFLOW_MODES = {"AP_WRAP", "AP_SAT", "AP_SAT_ZERO", "AP_SAT_SYM"}


class PrecisionError(ValueError):
    """A precision configuration entry the design cannot use."""


@dataclass(frozen=True)
class FixedType:
    """A parsed ap_fixed / ap_ufixed type string."""

    width: int
    integer: int
    signed: bool
    rounding: str | None = None
    saturation: str | None = None

    @property
    def fractional(self) -> int:
        return self.width - self.integer

    def cpp(self) -> str:
        args = [str(self.width), str(self.integer)]
        if self.rounding or self.saturation:
            args.append(self.rounding or "AP_TRN")
        if self.saturation:
            args.append(self.saturation)
        return f"ap_{'' if self.signed else 'u'}fixed<{','.join(args)}>"


def parse_type(text: str, where: str = "type") -> FixedType:
    m = _TYPE_RE.match(str(text).strip())
    if not m:
        raise PrecisionError(f"{where}: {text!r} is not a fixed-point type; write e.g. "
                             "ap_fixed<32,12> or ap_ufixed<24,0,AP_RND,AP_SAT>")
    unsigned, w, i, q, o = m.groups()
    width, integer = int(w), int(i)
    if not 1 <= width <= 128:
        raise PrecisionError(f"{where}: width {width} of {text!r} must be between 1 and 128")
    if q is not None and q not in _QUANT_MODES | _OVERFLOW_MODES:
        raise PrecisionError(f"{where}: {q!r} in {text!r} is not an ap_fixed mode")
    if q in _OVERFLOW_MODES:          # ap_fixed<W,I,AP_SAT> is not valid: rounding comes first
        raise PrecisionError(f"{where}: in {text!r} the rounding mode comes before the overflow mode "
                             f"(e.g. ap_fixed<{width},{integer},AP_TRN,{q}>)")
    if o is not None and o not in _OVERFLOW_MODES:
        raise PrecisionError(f"{where}: {o!r} in {text!r} is not an overflow mode ({sorted(_OVERFLOW_MODES)})")
    return FixedType(width, integer, not unsigned, q, o)


def deep_merge(base: Mapping, over: Mapping) -> dict:
    """``over`` merged into a copy of ``base``, block by block; ``layers`` overrides are replaced whole."""
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict) and k != "layers":
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _read_yaml(path: Path) -> dict:
    import yaml
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"precision config {path} not found; pass an existing YAML file "
                                f"(the defaults are {DEFAULT_PRECISION_FILE})") from None
    except yaml.YAMLError as e:
        raise PrecisionError(f"{path}: not valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PrecisionError(f"{path}: the top level must be a mapping (keys {', '.join(TOP_KEYS)})")
    return data


def default_precision_dict() -> dict:
    if not DEFAULT_PRECISION_FILE.is_file():
        raise FileNotFoundError(f"default precision config {DEFAULT_PRECISION_FILE} is missing; "
                                "it ships with the repository (design/configs/)")
    return _read_yaml(DEFAULT_PRECISION_FILE)


@dataclass
class PrecisionConfig:
    """A validated precision configuration (defaults merged with the user's entries)."""

    data: dict
    source: str | None = None
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------ validation
    def validate(self) -> "PrecisionConfig":
        d = self.data
        unknown = sorted(set(d) - set(TOP_KEYS))
        if unknown:
            raise PrecisionError(f"unknown top-level key(s) {unknown}; valid keys are {list(TOP_KEYS)}")
        self._check_value("reuse_factor", d.get("reuse_factor", 1), "reuse_factor")
        tensors = d.get("tensors", {})
        for key in TENSOR_KEYS:
            if key not in tensors:
                raise PrecisionError(f"tensors.{key} is missing; give a type such as ap_fixed<32,12>")
            parse_type(tensors[key], f"tensors.{key}")
        bad = sorted(set(tensors) - set(TENSOR_KEYS))
        if bad:
            raise PrecisionError(f"unknown tensors key(s) {bad}; valid keys are {list(TENSOR_KEYS)}")
        self._check_sigmoid(d.get("sigmoid", {}), "sigmoid", complete=True)
        for kind in KIND_KEYS:
            self._check_block(kind, d.get(kind, {}), kind, complete=True)
        layers = d.get("layers") or {}
        if not isinstance(layers, Mapping):
            raise PrecisionError("layers must map layer names (or shell patterns) to overrides")
        for pattern, over in layers.items():
            if not isinstance(over, Mapping):
                raise PrecisionError(f"layers.{pattern} must be a mapping of overrides")
            allowed = set().union(*KIND_KEYS.values()) | {"reuse_factor", "sigmoid"}
            bad = sorted(set(over) - allowed)
            if bad:
                raise PrecisionError(f"layers.{pattern}: unknown key(s) {bad}")
            self._check_entries(over, f"layers.{pattern}")
        return self

    def _check_entries(self, block: Mapping, where: str) -> None:
        """Each knob of an override block: a sigmoid sub-block or a single value."""
        for k, v in block.items():
            if k == "sigmoid":
                self._check_sigmoid(v, f"{where}.sigmoid", complete=False)
            else:
                self._check_value(k, v, f"{where}.{k}")

    def _check_block(self, kind: str, block: Any, where: str, complete: bool) -> None:
        if not isinstance(block, Mapping):
            raise PrecisionError(f"{where} must be a mapping")
        allowed = set(KIND_KEYS[kind]) | {"reuse_factor"} | ({"sigmoid"} if kind in SIGMOID_USERS else set())
        bad = sorted(set(block) - allowed)
        if bad:
            raise PrecisionError(f"{where}: unknown key(s) {bad}; valid keys are {sorted(allowed)}")
        if complete:
            missing = [k for k in KIND_KEYS[kind] if k not in block]
            if missing:
                raise PrecisionError(f"{where}: missing {missing} (see {DEFAULT_PRECISION_FILE.name})")
        self._check_entries(block, where)

    def _check_sigmoid(self, block: Any, where: str, complete: bool) -> None:
        if not isinstance(block, Mapping):
            raise PrecisionError(f"{where} must be a mapping with keys {list(SIGMOID_KEYS)}")
        bad = sorted(set(block) - set(SIGMOID_KEYS))
        if bad:
            raise PrecisionError(f"{where}: unknown key(s) {bad}; valid keys are {list(SIGMOID_KEYS)}")
        if complete:
            missing = [k for k in SIGMOID_KEYS if k not in block]
            if missing:
                raise PrecisionError(f"{where}: missing {missing}")
        for k, v in block.items():
            if k == "table_size":
                if not (isinstance(v, int) and 16 <= v <= 65536 and v & (v - 1) == 0):
                    raise PrecisionError(f"{where}.table_size = {v!r}: use a power of two from 16 to 65536")
            elif k == "range":
                if not (isinstance(v, (int, float)) and v >= 1 and float(v).is_integer()
                        and int(v) & (int(v) - 1) == 0 and v <= 64):
                    raise PrecisionError(f"{where}.range = {v!r}: use a power of two from 1 to 64 "
                                         "(sigma is saturated beyond ±range)")
            elif k == "interpolate":
                if not isinstance(v, bool):
                    raise PrecisionError(f"{where}.interpolate = {v!r}: use true or false")
            else:
                self._check_value(k, v, f"{where}.{k}")

    @staticmethod
    def _check_value(key: str, value: Any, where: str) -> None:
        if key in TYPE_KEYS:
            if key == "sumsq" and value == "auto":
                return
            t = parse_type(value, where)
            if key in ("gate", "lower_bound", "table") and t.signed:
                raise PrecisionError(f"{where}: {value!r} holds values in [0, 1]; use an ap_ufixed type")
            return
        if key == "accum_bits" and value == "auto":
            return
        if key in INT_RANGES:
            lo, hi = INT_RANGES[key]
            if not (isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi):
                raise PrecisionError(f"{where} = {value!r}: use an integer from {lo} to {hi}")

    # ------------------------------------------------------------ resolution
    def tensor_type(self, key: str) -> str:
        return self.data["tensors"][key]

    def for_layer(self, kind: str, name: str) -> dict:
        """Every knob of layer ``name`` of ``kind``: kind defaults, then matching overrides."""
        if kind not in KIND_KEYS:
            raise PrecisionError(f"unknown layer kind {kind!r}; kinds are {list(KIND_KEYS)}")
        key = (kind, name)
        if key not in self._cache:
            block = copy.deepcopy(self.data[kind])
            knobs = {k: block[k] for k in KIND_KEYS[kind]}
            knobs["reuse_factor"] = block.get("reuse_factor", self.data.get("reuse_factor", 1))
            sigmoid = dict(self.data["sigmoid"])
            sigmoid.update(block.get("sigmoid", {}))
            for pattern, over in (self.data.get("layers") or {}).items():
                if fnmatch.fnmatchcase(name, pattern):
                    bad = sorted(set(over) - set(KIND_KEYS[kind]) - {"reuse_factor", "sigmoid"})
                    if bad:
                        raise PrecisionError(f"layers.{pattern}: {bad} do not apply to {name} "
                                             f"(a {kind} layer: keys {list(KIND_KEYS[kind])})")
                    for k, v in over.items():
                        if k == "sigmoid":
                            sigmoid.update(v)
                        else:
                            knobs[k] = v
            if kind in SIGMOID_USERS:
                knobs["sigmoid"] = sigmoid
            self._cache[key] = knobs
        return copy.deepcopy(self._cache[key])

    def to_dict(self) -> dict:
        return copy.deepcopy(self.data)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.data, sort_keys=True).encode()).hexdigest()


def load_precision(config: str | Path | Mapping | PrecisionConfig | None = None) -> PrecisionConfig:
    """Defaults merged with ``config`` (a YAML path, a dict, or None), validated."""
    if isinstance(config, PrecisionConfig):
        return config
    base = default_precision_dict()
    source = None
    if config is None:
        over: Mapping = {}
    elif isinstance(config, Mapping):
        over = config
    else:
        source = str(config)
        over = _read_yaml(Path(config))
    return PrecisionConfig(deep_merge(base, over), source).validate()


def sigmoid_table_error_bound(table_size: int, rng: float, table_frac_bits: int) -> float:
    """Worst-case |σ_table − σ| with linear interpolation (stated in the header and the tests).

    N + 1 points on [0, R], σ(−x) = 1 − σ(x): (R/N)² / 8 · max|σ''| (= 1/(6√3))
    + half an LSB of the table + the tail 1 − σ(R).
    """
    step = rng / table_size
    return step * step / 8.0 / (6.0 * math.sqrt(3.0)) + 2.0 ** -(table_frac_bits + 1) + 1.0 / (1.0 + math.exp(rng))

"""Model configuration: one dataclass drives the numpy reference, the QKeras
model and the HLS conversion.

Field names are those of the reference ``hgrn_bit`` ``config.json`` so a
published config maps one to one; fields we do not model (short convolution,
attention modes other than the element-wise recurrence) are validated away
with a message saying what is unsupported.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

#: The only reference model type this toolkit implements.
MODEL_TYPE = "hgrn_bit"

#: Quantisation constants of the reference BitLinear (docs/ARCHITECTURE.md, "Contracts").
#: They are part of the model definition, not knobs: checkpoints were trained
#: with exactly these values.
BITLINEAR_NORM_EPS = 1e-8
ACT_QMAX = 127          # activations: symmetric int8, s = 127 / absmax
ACT_QMIN = -128
ACT_ABSMAX_FLOOR = 1e-5
WEIGHT_ABSMEAN_FLOOR = 1e-5


class ConfigError(ValueError):
    """A configuration field has a value the toolkit cannot use."""


#: Fields that must be JSON booleans.
BOOL_FIELDS = ("use_lower_bound", "use_short_conv", "tie_word_embeddings")
#: Upper bound for any one dimension (guards against Infinity-like values; the largest
#: published models are far below it).
MAX_DIM = 2**31 - 1


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def round_up(n: int, multiple: int) -> int:
    return multiple * math.ceil(n / multiple)


@dataclass
class ModelConfig:
    """Architecture of a MatMul-free LM (reference names, reference defaults)."""

    vocab_size: int = 32000
    hidden_size: int = 2048
    num_hidden_layers: int = 24
    hidden_ratio: float = 4
    intermediate_size: Optional[int] = None
    num_heads: int = 1
    expand_ratio: int = 1
    rms_norm_eps: float = 1e-6
    use_lower_bound: bool = True
    use_short_conv: bool = False
    attn_mode: str = "fused_recurrent"
    hidden_act: str = "swish"
    tie_word_embeddings: bool = False
    bos_token_id: Optional[int] = 1
    eos_token_id: Optional[int] = 2
    pad_token_id: Optional[int] = None
    max_position_embeddings: int = 2048
    model_type: str = MODEL_TYPE
    #: Activation width of every BitLinear (a toolkit field, not in the reference config): the
    #: reference's int8 is 8; narrower widths are a co-design knob, the same in numpy, QKeras and HLS.
    act_bits: int = 8
    #: Reference-config keys we read but do not model (kept for round-trips).
    extra: dict = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ sizes
    @property
    def act_qmax(self) -> int:
        """Largest quantised activation: 127 for int8 (2^(act_bits-1) - 1)."""
        return (1 << (self.act_bits - 1)) - 1

    @property
    def d(self) -> int:
        return self.hidden_size

    @property
    def input_dim(self) -> int:
        """Width of the recurrence (i/f/g projections): hidden * expand_ratio."""
        return self.hidden_size * self.expand_ratio

    @property
    def ffn_dim(self) -> int:
        """Intermediate size of the GLU; the reference rounds up to 256."""
        if self.intermediate_size is not None:
            return int(self.intermediate_size)
        return round_up(int(self.hidden_size * self.hidden_ratio * 2 / 3), 256)

    @property
    def state_size(self) -> int:
        """Values of recurrent state per layer: constant per token, no KV cache."""
        return self.input_dim

    # ------------------------------------------------------------- validation
    def validate(self) -> "ModelConfig":
        """Check every field's JSON type and range; raise ConfigError naming the field.

        Strict on types: a boolean must be ``true``/``false`` (the string
        ``"false"`` is an error, not True), integers must be integers (not
        ``true``, not ``128.0``), numbers must be finite.
        """
        def bad(name: str, why: str) -> None:
            raise ConfigError(f"config field '{name}' = {getattr(self, name)!r}: {why}")

        if not isinstance(self.model_type, str) or self.model_type != MODEL_TYPE:
            bad("model_type", f"only '{MODEL_TYPE}' (MatMul-free LM) is supported")
        for name in BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool):
                bad(name, "must be true or false (a JSON boolean, not a string or number)")
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_heads", "expand_ratio",
                     "max_position_embeddings"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                bad(name, "must be a positive integer")
        if self.intermediate_size is not None and (
            not _is_int(self.intermediate_size) or self.intermediate_size < 1
        ):
            bad("intermediate_size", "must be a positive integer or null (derived from hidden_ratio)")
        if not (_is_number(self.hidden_ratio) and self.hidden_ratio > 0):
            bad("hidden_ratio", "must be a finite positive number")
        if self.intermediate_size is None and self.hidden_size * self.hidden_ratio > MAX_DIM:
            bad("hidden_ratio", f"gives an intermediate size above {MAX_DIM}; set intermediate_size instead")
        if not (_is_number(self.rms_norm_eps) and 0 < self.rms_norm_eps < 1):
            bad("rms_norm_eps", "must be a small positive number such as 1e-6")
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            v = getattr(self, name)
            if v is not None and (not _is_int(v) or not 0 <= v < self.vocab_size):
                bad(name, f"must be null or a token id in 0..{self.vocab_size - 1} (vocab_size)")
        for name in ("attn_mode", "hidden_act"):
            if not isinstance(getattr(self, name), str):
                bad(name, "must be a string")
        if self.use_short_conv:
            bad("use_short_conv", "short convolutions are not supported by this toolkit "
                                  "(the published hgrn_bit checkpoints use none); set it to false")
        if not _is_int(self.act_bits) or not 2 <= self.act_bits <= 8:
            bad("act_bits", "must be an integer from 2 to 8 (8: the reference's int8 activations)")
        if self.input_dim % self.num_heads:
            bad("num_heads", f"must divide hidden_size*expand_ratio = {self.input_dim}")
        if self.hidden_act not in ("swish", "silu"):
            bad("hidden_act", "only 'swish' (silu) is supported")
        if self.tie_word_embeddings:
            bad("tie_word_embeddings", "the head is a BitLinear with its own weights; "
                                       "tied embeddings are not supported")
        return self

    # -------------------------------------------------------------- JSON I/O
    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"a model config must be a JSON object of fields, got {type(data).__name__}")
        if not all(isinstance(k, str) for k in data):
            raise ConfigError("model config field names must be strings")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        cfg = cls(**kwargs)
        cfg.extra = extra
        return cfg.validate()

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            from .fsio import atomic_write
            atomic_write(path, text + "\n")
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> "ModelConfig":
        """A config from a ``.json`` file path, or from JSON text."""
        if isinstance(source, str) and source.lstrip().startswith("{"):
            text, where = source, "config JSON text"
        else:
            p, where = Path(source), str(source)
            try:
                text = p.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise ConfigError(f"{p}: not UTF-8 text ({e}); a config.json is UTF-8 JSON") from None
            except (OSError, ValueError) as e:
                if isinstance(e, FileNotFoundError):
                    raise FileNotFoundError(f"{p}: no such config file") from None
                raise ConfigError(f"{p}: cannot read it ({e})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{where}: not valid JSON ({e})") from None
        except RecursionError:
            raise ConfigError(f"{where}: JSON nested too deeply") from None
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None

    def parameter_count(self) -> int:
        d, e, m, V, L = self.d, self.input_dim, self.ffn_dim, self.vocab_size, self.num_hidden_layers
        per_layer = (
            d                          # attn_norm
            + 3 * (d * e + d)          # i, f, g projections with their norms
            + e                        # g_norm
            + (e * d + e)              # o projection
            + d                        # mlp_norm
            + (d * 2 * m + d)          # gate_proj (gate and up)
            + (m * d + m)              # down_proj
        )
        return V * d + L * per_layer + d + (d * V + d) + (L if self.use_lower_bound else 0) * e

    def ternary_weight_count(self) -> int:
        d, e, m, V, L = self.d, self.input_dim, self.ffn_dim, self.vocab_size, self.num_hidden_layers
        return L * (3 * d * e + e * d + d * 2 * m + m * d) + d * V

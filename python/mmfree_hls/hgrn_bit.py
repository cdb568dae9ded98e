"""The reference ``hgrn_bit`` checkpoint layout (the published MMfreeLM models).

A reference checkpoint is a directory holding

* ``config.json`` with ``model_type: "hgrn_bit"`` and the reference field
  names (hidden_size, num_hidden_layers, vocab_size, intermediate_size or
  hidden_ratio, rms_norm_eps, use_lower_bound, expand_ratio, num_heads,
  tie_word_embeddings, ...);
* the weights as ``model.safetensors`` or as shards listed by
  ``model.safetensors.index.json``, in F32, F16 or BF16, with the state-dict
  key names of docs/ARCHITECTURE.md ("Checkpoint keys").

This module maps that onto our :class:`~mmfree_hls.config.ModelConfig` and
says, for each key our model expects, which stored tensor supplies it. It
reads no tensor data: :mod:`mmfree_hls.checkpoint` loads tensor by tensor.

Mapping decisions (each checked against the reference modelling code):

* ``num_heads`` does not change the reference math: the recurrence is
  element-wise and the output gate's RMSNorm runs over the whole
  ``hidden_size*expand_ratio`` vector with a weight of that length, after
  the heads are flattened back. It is therefore mapped to 1 (the original
  value is kept under ``reference_num_heads``).
* ``tie_word_embeddings: true`` means the head's weight *is* the embedding
  table; the head is still a BitLinear with its own norm. It is mapped to an
  untied model whose ``lm_head.weight`` is read from the embedding table.
* ``hidden_ratio: null`` is 4 (the reference MLP's fallback).
* PyTorch pickles (``pytorch_model.bin``) are not read: unpickling runs
  code, and PyTorch is not a dependency. The error says how to convert.

Unsupported variants fail with a message naming the field: another
``model_type``, ``use_short_conv: true``, an ``attn_mode`` other than the
element-wise recurrence, ``expand_ratio != 1`` together with the lower bound
(the reference keeps one bound per *hidden* unit, so it cannot run that
combination either).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import BOOL_FIELDS, MODEL_TYPE, ConfigError, ModelConfig
from .safetensors_io import CheckpointError, TensorInfo, read_header, validate_with_library

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
TORCH_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
#: Files next to the weights that a checkpoint carries along (tokenizer, generation defaults).
AUX_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
             "tokenizer.model", "generation_config.json")

#: Fields a reference config.json always gives (a missing one would silently take a default).
REQUIRED_FIELDS = ("hidden_size", "num_hidden_layers", "vocab_size")
#: attn_mode values that compute the element-wise recurrence s_t = f_t*s_{t-1} + i_t.
RECURRENT_MODES = ("fused_recurrent", "chunk")
EMBEDDING_KEY = "model.embeddings.weight"
HEAD_KEY = "lm_head.weight"

TORCH_CONVERT_HINT = (
    "convert it once on a machine with PyTorch:\n"
    "    python -c \"import torch; from safetensors.torch import save_file; "
    "sd = torch.load('pytorch_model.bin', map_location='cpu', weights_only=True); "
    "save_file({k: v.contiguous() for k, v in sd.items()}, 'model.safetensors')\"\n"
    "(for sharded pytorch_model-*.bin files, merge the dicts of every shard first), "
    "then run this again"
)


# ------------------------------------------------------------------ config
def _unsupported(field_name: str, value: Any, why: str) -> ConfigError:
    return ConfigError(f"config field '{field_name}' = {value!r} is not supported: {why}")


def map_reference_config(raw: dict, where: str = CONFIG_FILE) -> tuple[ModelConfig, bool]:
    """Reference ``config.json`` dict -> (our ModelConfig, head tied to the embeddings?).

    Raises ConfigError naming the field for anything we cannot run exactly.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    data = dict(raw)
    model_type = data.get("model_type")
    if model_type is None:
        raise ConfigError(f"{where}: no 'model_type'; a MatMul-free LM checkpoint has "
                          f"\"model_type\": \"{MODEL_TYPE}\"")
    if model_type != MODEL_TYPE:
        raise _unsupported("model_type", model_type,
                           f"this toolkit reads MatMul-free LM checkpoints (model_type '{MODEL_TYPE}') only")
    for name in BOOL_FIELDS:
        if name in data and not isinstance(data[name], bool):
            raise ConfigError(f"{where}: config field '{name}' = {data[name]!r}: must be true or false "
                              "(a JSON boolean, not a string or number)")
    for name in REQUIRED_FIELDS:
        if name not in data:
            close = difflib.get_close_matches(name, [k for k in data if isinstance(k, str)], n=1)
            hint = f" (is {close[0]!r} a misspelling of it?)" if close else ""
            raise ConfigError(f"{where}: no '{name}' field{hint}; a hgrn_bit config.json gives "
                              f"{', '.join(REQUIRED_FIELDS)}")
    if data.get("use_short_conv"):
        raise _unsupported("use_short_conv", data["use_short_conv"],
                           "short convolutions before the projections are not implemented "
                           "(the published hgrn_bit checkpoints use none)")
    mode = data.get("attn_mode", RECURRENT_MODES[0])
    if not isinstance(mode, str) or mode not in RECURRENT_MODES:
        raise _unsupported("attn_mode", mode, f"only the element-wise recurrence "
                           f"({' / '.join(RECURRENT_MODES)}) is implemented")

    # Reference fallbacks for nulls.
    if data.get("hidden_ratio") is None:
        data["hidden_ratio"] = 4
    for name in ("num_heads", "expand_ratio"):
        if data.get(name) is None:
            data[name] = 1
    expand = data["expand_ratio"]
    if isinstance(expand, float) and expand.is_integer():
        data["expand_ratio"] = expand = int(expand)
    if not isinstance(expand, int) or isinstance(expand, bool) or expand < 1:
        raise _unsupported("expand_ratio", expand, "the recurrence width must be an integer "
                           "multiple of hidden_size")
    if expand != 1 and data.get("use_lower_bound", True):
        raise _unsupported("expand_ratio", expand,
                           "with use_lower_bound the reference keeps one bound per hidden unit "
                           "(lower_bounds has hidden_size columns), so only expand_ratio 1 exists; "
                           "set use_lower_bound to false or expand_ratio to 1")
    heads = data["num_heads"]
    hidden = data.get("hidden_size", ModelConfig.hidden_size)
    if not isinstance(heads, int) or isinstance(heads, bool) or heads < 1 or (
            isinstance(hidden, int) and hidden % heads):
        raise _unsupported("num_heads", heads, "must be a positive integer dividing hidden_size")
    if heads != 1:
        # Heads only reshape an element-wise recurrence; the gate norm spans all heads.
        data["reference_num_heads"] = heads
        data["num_heads"] = 1

    tied = data.get("tie_word_embeddings", False) is True
    if tied:
        data["tie_word_embeddings"] = False
        data["reference_tie_word_embeddings"] = True
    try:
        cfg = ModelConfig.from_dict(data)
    except TypeError as e:       # a field of the wrong JSON type deep inside the dataclass
        raise ConfigError(f"{where}: {e}") from None
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return cfg, tied


def read_config_json(root: Path) -> dict:
    path = root / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{root}: no {CONFIG_FILE}; a checkpoint is a directory with "
                                f"{CONFIG_FILE} and {WEIGHTS_FILE} (or its shards)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e}); config.json must be UTF-8 JSON") from None
    except RecursionError:
        raise ConfigError(f"{path}: JSON nested too deeply") from None


# ----------------------------------------------------------------- weights
def find_weight_tensors(root: Path) -> dict[str, TensorInfo]:
    """Every stored tensor of a checkpoint directory (single file or shards), by key."""
    single, index = root / WEIGHTS_FILE, root / INDEX_FILE
    if single.is_file():
        tensors = read_header(single)[0]
        validate_with_library(single)
        return tensors
    if index.is_file():
        return _read_shards(index)
    torch = [name for name in TORCH_FILES if (root / name).is_file()]
    if torch or list(root.glob("pytorch_model-*.bin")):
        raise CheckpointError(f"{root}: the weights are a PyTorch pickle ({(torch or ['pytorch_model-*.bin'])[0]}), "
                              f"which this toolkit does not read; {TORCH_CONVERT_HINT}")
    raise FileNotFoundError(f"{root}: no {WEIGHTS_FILE} or {INDEX_FILE} next to {CONFIG_FILE}")


def shard_path(root: Path, name: object, where: Path) -> Path:
    """A shard file named by an index: a plain file name inside ``root``, nothing else.

    Refuses absolute paths, ``..``, sub-directories and symbolic links that lead
    out of the checkpoint directory (a link inside it, as in a Hugging Face cache
    snapshot whose files link to its blob store, is followed only if it stays
    under the cache's root, i.e. the directory two levels up).
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise CheckpointError(f"{where}: shard file name {name!r} must be a non-empty string")
    if name != Path(name).name or name in (".", "..") or "\\" in name:
        raise CheckpointError(f"{where}: shard {name!r} is not a plain file name in the checkpoint "
                              "directory; an index may only name files next to it")
    path = root / name
    if path.is_symlink():
        real, base = path.resolve(), root.resolve()
        allowed = base.parent.parent if base.parent.name == "snapshots" else base
        if not (real == allowed or allowed in real.parents):
            raise CheckpointError(f"{path} is a symbolic link to {real}, outside the checkpoint directory; "
                                  "copy the shard into the directory")
    return path


def _read_shards(index: Path) -> dict[str, TensorInfo]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
        raise CheckpointError(f"{index}: not a shard index (expected {{\"weight_map\": {{key: file}}}})") from None
    for value in weight_map.values():
        shard_path(index.parent, value, index)
    shards = sorted(set(weight_map.values()))
    missing = [s for s in shards if not (index.parent / s).is_file()]
    if missing:
        raise FileNotFoundError(f"{index} lists shard files that are not there: {', '.join(missing)}; "
                                "download every shard into the checkpoint directory")
    tensors: dict[str, TensorInfo] = {}
    misplaced: list[str] = []
    for shard in shards:
        found = read_header(index.parent / shard)[0]
        validate_with_library(index.parent / shard)
        for key, info in found.items():
            if weight_map.get(key) != shard:
                misplaced.append(f"{key} (in {shard}, index says {weight_map.get(key)})")
            elif key in tensors:
                misplaced.append(f"{key} (stored twice)")
            tensors[key] = info
    absent = sorted(set(weight_map) - set(tensors))
    if misplaced or absent:
        lines = [f"{index} does not match its shard files:"]
        if absent:
            lines.append("  listed but not found in the named shard: " + ", ".join(absent))
        if misplaced:
            lines.append("  found outside the shard the index names: " + ", ".join(misplaced))
        lines.append("Fix: re-download the checkpoint (the index and the shards come from different saves).")
        raise CheckpointError("\n".join(lines))
    return tensors


@dataclass
class ReferenceCheckpoint:
    """A reference-layout checkpoint directory, indexed but not read."""

    root: Path
    config: ModelConfig
    tied: bool
    tensors: dict[str, TensorInfo]              # as stored
    sources: dict[str, TensorInfo] = field(init=False)   # our key -> stored tensor supplying it

    def __post_init__(self) -> None:
        self.sources = dict(self.tensors)
        if self.tied and EMBEDDING_KEY in self.tensors:
            # A tied head reads the embedding table (a stored copy, if any, is the same tensor).
            self.sources[HEAD_KEY] = self.tensors[EMBEDDING_KEY]

    @classmethod
    def open(cls, path: str | Path) -> "ReferenceCheckpoint":
        root = Path(path)
        if root.is_file():
            raise FileNotFoundError(f"{root} is a file; pass the checkpoint directory that holds it "
                                    f"({root.parent})")
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such checkpoint directory")
        cfg, tied = map_reference_config(read_config_json(root), where=str(root / CONFIG_FILE))
        return cls(root, cfg, tied, find_weight_tensors(root))

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: v.shape for k, v in self.sources.items()}

    def dtypes(self) -> set[str]:
        return {v.dtype for v in self.tensors.values()}

    def weight_files(self) -> list[Path]:
        return sorted({v.file for v in self.tensors.values()})

    def aux_files(self) -> list[Path]:
        return [self.root / n for n in AUX_FILES if (self.root / n).is_file()]

"""Checkpoint I/O: a directory with ``config.json`` + ``model.safetensors``
using the reference ``hgrn_bit`` key names (DESIGN.md section 3).

Strict: every expected key present with the expected shape, nothing left over.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from .config import ModelConfig
from .reference import MMFreeLM, expected_shapes


class CheckpointError(ValueError):
    """A checkpoint does not match the model it claims to be."""


def check_state_dict(cfg: ModelConfig, shapes: Mapping[str, tuple], where: str = "checkpoint") -> None:
    """Raise CheckpointError listing every missing, unexpected or mis-shaped key."""
    want = expected_shapes(cfg)
    missing = sorted(set(want) - set(shapes))
    unexpected = sorted(set(shapes) - set(want))
    wrong = sorted(k for k in set(want) & set(shapes) if tuple(shapes[k]) != tuple(want[k]))
    if not (missing or unexpected or wrong):
        return
    lines = [f"{where} does not match its config.json "
             f"(hidden_size={cfg.hidden_size}, num_hidden_layers={cfg.num_hidden_layers}, "
             f"vocab_size={cfg.vocab_size}):"]
    if missing:
        lines.append("  missing keys: " + ", ".join(missing))
    if unexpected:
        lines.append("  unexpected keys: " + ", ".join(unexpected))
    for k in wrong:
        lines.append(f"  wrong shape for {k}: {tuple(shapes[k])}, expected {tuple(want[k])}")
    lines.append("Fix: use the config.json that was saved with these weights.")
    raise CheckpointError("\n".join(lines))


def save_checkpoint(model_or_cfg, path: str | Path, state_dict: Mapping[str, np.ndarray] | None = None,
                    overwrite: bool = False) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (float32)."""
    from safetensors.numpy import save_file

    if isinstance(model_or_cfg, MMFreeLM):
        cfg, state_dict = model_or_cfg.config, model_or_cfg.params
    else:
        cfg = model_or_cfg
    out = Path(path)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} already exists and is not empty; pass overwrite=True "
                              "(or --force) to replace it")
    check_state_dict(cfg, {k: v.shape for k, v in state_dict.items()}, where="state dict")
    out.mkdir(parents=True, exist_ok=True)
    cfg.to_json(out / "config.json")
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state_dict.items()},
              str(out / "model.safetensors"))
    return out


def load_checkpoint(path: str | Path) -> MMFreeLM:
    """Load a checkpoint directory into the numpy reference model."""
    from safetensors import safe_open

    root = Path(path)
    if not (root / "config.json").is_file():
        raise FileNotFoundError(f"{root}: no config.json; a checkpoint is a directory with "
                                "config.json and model.safetensors")
    cfg = ModelConfig.from_json(root / "config.json")
    weights = root / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{root}: no model.safetensors next to config.json")
    with safe_open(str(weights), framework="numpy") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        check_state_dict(cfg, shapes, where=str(weights))
        sd = {k: f.get_tensor(k).astype(np.float32) for k in f.keys()}
    return MMFreeLM(cfg, sd)

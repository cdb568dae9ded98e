"""Decode-step model → engine project → C-simulation library.

    project = convert(model_or_checkpoint, "hls_project/demo", board="pynq-z2", tier="on-chip")
    lib = project.compile()                  # g++ → hls_project/demo/csim/libmmfree_csim.so
    logits, state = project.csim().step(x, state)

The model goes through hls4ml 1.3.0 as the front end: the QKeras decode-step
model and our extension layers are parsed by hls4ml and lowered by the
``MMFreeEngine`` backend (mmfree_hls.design.hls4ml_backend), whose writer
emits the engine project (mmfree_hls.engine.project):

    firmware/            the engine's C++ (design/hls + generated config, tables, top)
    weights.bin          streamed tier: the weights buffer (header + K port regions)
    csim/libmmfree_csim.so
    mmfree_project.json  model, board, tier, packing, knobs, ports, content hash
    model/               the model's checkpoint (when it was given as an object)

``config`` overrides the board preset's engine knobs (a mapping or a YAML
file: vector_lanes, rows_per_tile, clock_mhz, frac_bits, sigmoid_table_bits).
Conversion and compilation are cached by a content hash of the model, the
knobs and the generator's own sources: a second convert + compile of the same
inputs returns at once.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from ..engine import build as engine_build
from ..engine.presets import EnginePreset, get_preset
from ..engine.project import EngineProject, check_shape
from ..hls_project import PROJECT_FILE
from ..reference import MMFreeLM

DEFAULT_BOARD = "pynq-z2"
_ENGINE_DIR = Path(engine_build.__file__).resolve().parent
_DESIGN_DIR = Path(__file__).resolve().parent
#: Everything that turns a model into a project: the engine generator and the hls4ml front end.
_GENERATOR_SOURCES = sorted(_ENGINE_DIR.glob("*.py")) + [
    _DESIGN_DIR / n for n in ("convert.py", "hls4ml_backend.py", "hls_layers.py", "keras_model.py", "layers.py")]


class ProjectExistsError(FileExistsError):
    """The output directory holds something we will not overwrite without --force."""


class CompileError(RuntimeError):
    """g++ failed (or is missing); the message names the log."""


def _hash_array(h, a) -> None:
    a = np.ascontiguousarray(a)
    h.update(str(a.dtype).encode() + str(a.shape).encode())
    h.update(a.tobytes())


def content_hash(model: MMFreeLM, preset: EnginePreset, packing: str) -> str:
    """Digest of everything a project is made from: weights, knobs, packing, generator."""
    h = hashlib.sha256()
    h.update(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for k in sorted(model.params):
        if k.endswith(".weight") and k[:-len(".weight")] in model.ternary:
            continue
        _hash_array(h, model.params[k])
    for k in sorted(model.ternary):
        _hash_array(h, model.ternary[k].w_q)
        h.update(repr(model.ternary[k].gamma).encode())
    knobs = {k: v for k, v in preset.__dict__.items() if k != "board"}
    h.update(json.dumps({"board": preset.board.name, "knobs": knobs, "packing": packing},
                        sort_keys=True, default=str).encode())
    for f in _GENERATOR_SOURCES + [engine_build.hls_source_dir() / n for n in engine_build.ENGINE_HEADERS]:
        h.update(f.read_bytes())
    return h.hexdigest()


def load_knobs(config) -> dict:
    """Engine knob overrides from a mapping, a YAML file or None."""
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"engine config {path} does not exist")
    import yaml
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of engine knobs, got {type(data).__name__}")
    return data


def _resolve_model(model) -> tuple[MMFreeLM, str | None]:
    if isinstance(model, MMFreeLM):
        return model, None
    if isinstance(model, (str, Path)):
        from ..checkpoint import load_checkpoint
        path = Path(model)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a checkpoint directory (no config.json); give a "
                                    "checkpoint written by `mmfree train` / `mmfree import`")
        return load_checkpoint(path), str(path.resolve())
    raise TypeError(f"convert() takes an MMFreeLM or a checkpoint path, not {type(model).__name__}")


def _prepare_dir(root: Path, digest: str, overwrite: bool) -> bool:
    """True if ``root`` already holds this exact project (nothing to do).

    A new or empty ``root`` is marked as ours first (so a conversion interrupted
    half-way is still recognised); ``overwrite`` replaces only a directory that
    carries the marker (or ``mmfree_project.json``), never a directory of the
    user's, the working directory or one of its parents.
    """
    from ..fsio import PROJECT_KIND, NotOursError, check_not_protected, make_output_dir, marker_kind, remove_tree

    if root.is_symlink():
        raise ProjectExistsError(f"{root} is a symbolic link; pass the directory it points to "
                                 "(or a new directory) as --out")
    if root.exists() and not root.is_dir():
        raise ProjectExistsError(f"{root} exists and is not a directory")
    if not root.exists() or not any(root.iterdir()):
        make_output_dir(root, PROJECT_KIND)
        return False
    pfile = root / PROJECT_FILE
    if pfile.is_file():
        try:
            if json.loads(pfile.read_text()).get("content_hash") == digest:
                return True
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            pass
        what = "a different project (other model, precision or generator version)"
    elif marker_kind(root) == PROJECT_KIND:
        what = "an unfinished project (an earlier conversion was interrupted)"
    else:
        raise ProjectExistsError(f"{root} holds files that are not an mmfree HLS project; refusing to "
                                 "touch it (--force only replaces a project mmfree wrote): choose another --out")
    if not overwrite:
        raise ProjectExistsError(f"{root} already holds {what}; choose another --out or pass --force "
                                 "(overwrite=True) to replace it")
    try:
        check_not_protected(root)
        remove_tree(root, PROJECT_KIND, legacy_markers=(PROJECT_FILE,))
    except NotOursError as e:
        raise ProjectExistsError(str(e)) from None
    make_output_dir(root, PROJECT_KIND)
    return False


def convert(model, output_dir: str | Path, config=None, *, board: str = DEFAULT_BOARD,
            tier: str = "on-chip", packing: str = "2bit", overwrite: bool = False, compile: bool = True,
            verbose: bool = True) -> EngineProject:
    """Write the engine project of ``model`` (an MMFreeLM or a checkpoint path) under ``output_dir``."""
    mm, ckpt_path = _resolve_model(model)
    preset = get_preset(board, tier, **load_knobs(config))
    check_shape(mm.config, preset, packing)
    digest = content_hash(mm, preset, packing)
    root = Path(output_dir)
    if _prepare_dir(root, digest, overwrite):
        if verbose:
            print(f"mmfree: {root} is up to date (content hash {digest[:12]})", flush=True)
        project = EngineProject(root)
        if compile:
            project.compile(verbose=verbose)
        return project

    t0 = time.perf_counter()
    from .hls4ml_backend import convert_through_hls4ml
    extra = {"content_hash": digest, "checkpoint": ckpt_path}
    if ckpt_path is None:
        from ..checkpoint import save_checkpoint
        save_checkpoint(mm, root / "model")
        extra["checkpoint"] = str((root / "model").resolve())
    convert_through_hls4ml(mm, root, preset, packing, extra=extra, verbose=verbose)
    project = EngineProject(root)
    project.info["convert_seconds"] = round(time.perf_counter() - t0, 2)
    if verbose:
        print(f"mmfree: wrote {root} ({preset.board.name}, {tier}, {packing}) in "
              f"{project.info['convert_seconds']:.1f} s", flush=True)
    if compile:
        try:
            project.compile(verbose=verbose)
        except engine_build.BuildError as e:
            raise CompileError(str(e)) from None
    return project

"""Overlay packages: a directory a host opens with ``Accelerator.open`` (docs/ARCHITECTURE.md).

    build_overlay(out, project=EngineProject(...), model=..., board=...)
    package_project("hls_project/demo", "pynq-z2")       # what `mmfree package` runs

A package holds the C-simulation library (+ its sources), the embedding
table, the streamed tier's weights buffer, the bitstream and .hwh when Vivado
produced them, the tokenizer and ``manifest.json`` (SHA-256 of every file).
It is built in a temporary directory next to the target and renamed into
place, so a failure never leaves half a package behind; then it is re-opened
through the same validation the host runs.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from .hls_project import CSIM_LIBRARY, PROJECT_FILE, read_project

_TOOLCHAIN_JSON = Path(__file__).resolve().parent / "data" / "toolchain.json"
_SOURCE_SUFFIXES = (".cpp", ".cc", ".c", ".h", ".hpp", ".tcl", ".txt", ".mk", ".sh")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "tokenizer.model", "vocab.json", "merges.txt")


def toolchain() -> dict:
    return json.loads(_TOOLCHAIN_JSON.read_text())


def gxx_version() -> Optional[str]:
    gxx = shutil.which("g++")
    if not gxx:
        return None
    try:
        return subprocess.run([gxx, "-dumpfullversion"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _copy_sources(src_dirs: Sequence[Path], dest: Path) -> None:
    """The C++ the library was built from, so it can be rebuilt on another CPU."""
    for src in src_dirs:
        src = Path(src)
        if not src.exists():
            continue
        if src.is_file():
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / src.name)
            continue
        for path in sorted(src.rglob("*")):
            if path.is_file() and path.suffix in _SOURCE_SUFFIXES:
                target = dest / src.name / path.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)


def _prepare_out(out: Path, force: bool) -> None:
    """An overlay is replaced only with ``force``, only if it is an overlay (its manifest.json is
    the marker), and never when it is the working directory, a parent of it, home or a link."""
    from .fsio import check_not_protected

    if out.is_symlink():
        raise FileExistsError(f"{out} is a symbolic link; pass the directory it points to "
                              "(or a new directory) as --out")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory; choose another --out")
    if out.exists() and any(out.iterdir()):
        if not (out / "manifest.json").is_file():
            raise FileExistsError(f"{out} exists and is not an overlay package (no manifest.json); "
                                  "refusing to replace it: choose another --out")
        if not force:
            raise FileExistsError(f"{out} already exists; pass --force to replace it")
        check_not_protected(out)


def _check_library(lib: Path, cfg, preset) -> None:
    """Refuse a C-sim library built for another model now, rather than when a user opens it."""
    from .runtime.backend_csim import _HOST_MACHINES, CSimLibrary, library_machine
    from .runtime.errors import ManifestError

    if library_machine(lib) != _HOST_MACHINES.get(platform.machine().lower()):
        return                      # cross-built for a board: checked when opened there
    got = CSimLibrary(lib)
    want = (cfg.d, cfg.num_hidden_layers, cfg.input_dim, cfg.vocab_size, preset.token_lanes, preset.batch_slots,
            preset.topk)
    have = (got.d, got.L, got.e, got.V, got.lanes, got.slots, got.topk)
    if have != want:
        raise ManifestError(f"{lib} was compiled for (d, L, e, V, lanes, slots, topk) = {have}, not for this "
                            f"build {want}; re-run `mmfree convert`")


def _package_tokenizer(dest: Path, cfg, tokenizer_dir: Optional[str | Path]) -> Optional[str]:
    """Copy the checkpoint's tokenizer (tokenizer.json, or the byte tokenizer record in
    config.json) into the package; None when the model has no tokenizer."""
    from .tokenizer import CONFIG_FILE, CONFIG_KEY, TOKENIZER_FILE, load_tokenizer

    src = Path(tokenizer_dir) if tokenizer_dir is not None else None
    files = [src / f for f in _TOKENIZER_FILES if src is not None and (src / f).is_file()]
    has_json = any(f.name == TOKENIZER_FILE for f in files)
    if not has_json and CONFIG_KEY not in cfg.extra:
        return None
    dest.mkdir()
    for f in files:
        shutil.copy2(f, dest / f.name)
    # load_tokenizer reads bos/eos ids, vocab_size and the byte-tokenizer record from config.json.
    (dest / CONFIG_FILE).write_text(cfg.to_json() + "\n")
    load_tokenizer(dest)            # refuse a tokenizer that does not fit the model now, not on the board
    return dest.name


def build_overlay(out: str | Path, *, model, board: str, name: str, csim_library: str | Path,
                  engine: Mapping, weights: Optional[np.ndarray] = None,
                  csim_sources: Sequence[str | Path] = (), bitstream: Optional[str | Path] = None,
                  hwh: Optional[str | Path] = None, tokenizer_dir: Optional[str | Path] = None,
                  tools: Optional[Mapping] = None, source: Optional[Mapping] = None,
                  implementation: Optional[Mapping] = None, force: bool = False):
    """Write an overlay package for ``model`` (an ``MMFreeLM``) and return its validated Manifest.

    ``engine`` is the engine record of the build (mmfree_hls.engine.project.engine_record);
    ``weights`` the streamed tier's weights buffer.
    """
    from . import __version__
    from .engine.presets import get_board
    from .runtime.buffers import BufferLayout
    from .runtime.manifest import known_boards, load_manifest, vitis_register_map, write_manifest

    get_board(board)
    boards = known_boards()
    tier = engine["tier"]
    if engine.get("board") != board:
        raise ValueError(f"the engine was built for board {engine.get('board')!r}, not {board!r}: "
                         f"convert again with --board {board}")
    if bitstream is not None and hwh is None:
        raise FileNotFoundError(f"bitstream {bitstream} given without its .hwh: pynq needs both "
                                "(Vivado writes the .hwh under <project>.gen/sources_1/bd/*/hw_handoff)")
    if tier == "streamed" and weights is None:
        raise ValueError("the streamed tier needs its weights buffer (weights.bin of the project)")
    lib = Path(csim_library)
    if not lib.is_file():
        raise FileNotFoundError(f"C-simulation library {lib} not found; build it with `mmfree convert` "
                                "(it compiles the project with g++)")
    cfg = model.config
    from .engine.project import preset_of
    _check_library(lib, cfg, preset_of(engine))
    out = Path(out)
    _prepare_out(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)
        (tmp / "csim").mkdir()
        shutil.copy2(lib, tmp / CSIM_LIBRARY)
        _copy_sources([Path(s) for s in csim_sources], tmp / "csim" / "src")
        np.save(tmp / "embeddings.npy",
                np.ascontiguousarray(model.params["model.embeddings.weight"], dtype=np.float32))
        if weights is not None:
            np.asarray(weights, np.uint8).tofile(tmp / engine["weights_file"])
        bs = None
        if bitstream is not None:
            shutil.copy2(bitstream, tmp / f"{name}.bit")
            shutil.copy2(hwh, tmp / f"{name}.hwh")
            bs = {"bit": f"{name}.bit", "hwh": f"{name}.hwh"}
        tok_rel = _package_tokenizer(tmp / "tokenizer", cfg, tokenizer_dir)

        from .engine.codegen import SCALAR_ARGS
        from .engine.project import preset_of
        layout = BufferLayout.for_engine(cfg, preset_of(engine), len(weights) if weights is not None else 0)
        hls_ip = toolchain()["hls_ip"]
        # the top's arguments in order: the pass's scalars, then the buffers, then the weight ports
        args = [(a, "scalar") for a in SCALAR_ARGS] + ["x_in", "state", "logits", "top"] + \
            [f"w{k}" for k in range(int(engine.get("K", 0)))]
        ip = vitis_register_map(args, pointer_bits=hls_ip["pointer_bits"], return_bits=32)
        top = engine["top"]
        ip.update({"top": top, "instance": hls_ip["instance"],
                   "vlnv": f"{hls_ip['vendor']}:{hls_ip['library']}:{top}:{hls_ip['version']}"})
        if tier == "streamed":
            ip.update({"region_offset": engine["region_offset"], "region_bytes": engine["region_bytes"]})
        all_tools = {"mmfree_hls": __version__, "gxx": gxx_version(), "vitis_hls": None, "vivado": None}
        all_tools.update(tools or {})
        data = {
            "format": "mmfree-overlay", "format_version": 2,
            "name": name, "board": board, "board_info": boards[board], "tier": tier,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model": cfg.to_dict(),
            "engine": dict(engine),
            "buffers": layout.to_manifest(),
            "ip": ip,
            "csim": {"library": CSIM_LIBRARY, "built_on": platform.machine(), "abi": int(engine["abi"])},
            "embeddings": {"file": "embeddings.npy", "shape": [cfg.vocab_size, cfg.d], "dtype": "float32"},
            "bitstream": bs,
            "implementation": dict(implementation) if implementation else None,
            "tokenizer": tok_rel,
            "tools": all_tools,
            "source": dict(source or {}),
            "files": {},
        }
        write_manifest(tmp, data)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_manifest(out)


def _project_model(root: Path, info: Mapping, checkpoint: Optional[str]):
    """The model the project was converted from: --checkpoint, the project's copy, or its record."""
    from .checkpoint import load_checkpoint

    candidates = [checkpoint] if checkpoint else []
    candidates += [root / "model", info.get("checkpoint")]
    for c in candidates:
        if c and (Path(c) / "config.json").is_file():
            model = load_checkpoint(c)
            want = info.get("model") or info.get("config")
            if want and model.config.to_dict() != _as_config_dict(want):
                raise ValueError(f"checkpoint {c} does not match the model of {root} "
                                 f"({PROJECT_FILE}); pass the checkpoint the project was converted from")
            return model, Path(c)
    raise FileNotFoundError(f"cannot find the weights of {root}: pass --checkpoint CKPT (the checkpoint "
                            "given to `mmfree convert`)")


def _as_config_dict(d: Mapping) -> dict:
    from .config import ModelConfig
    return ModelConfig.from_dict(dict(d)).to_dict()


def package_project(project: str | Path, board: Optional[str] = None, out: Optional[str | Path] = None,
                    checkpoint: Optional[str] = None, force: bool = False):
    """Package ``hls_project/NAME`` (bitstream and implementation reports included when `make overlay`
    made them); ``board`` defaults to, and must equal, the board the project was converted for."""
    from .engine.project import EngineProject

    root = Path(project)
    proj = EngineProject(root)
    info = proj.info
    if "engine" not in info:
        raise ValueError(f"{root} was written by an older mmfree (no engine record); convert it again "
                         f"with `mmfree convert CKPT --out {root} --force`")
    board = board or info["board"]
    name = info.get("name") or root.name
    lib = proj.compile(verbose=False) if not proj.lib_path.is_file() else proj.lib_path
    model, ckpt = _project_model(root, info, checkpoint)
    synth_dir = root / "synth" / board
    bit, hwh = synth_dir / f"{name}.bit", synth_dir / f"{name}.hwh"
    tools_file = synth_dir / "tools.json"
    tools = {"hls4ml": info.get("hls4ml_version")}
    if tools_file.is_file():
        tools.update(json.loads(tools_file.read_text()))
    impl = None
    try:
        from .design.synth import impl_summary
        impl = impl_summary(root, board)
    except Exception:  # noqa: BLE001  (no reports, or the design extra is absent)
        impl = None
    out = Path(out) if out else Path("overlays") / board / name
    return build_overlay(
        out, model=model, board=board, name=name, csim_library=lib, engine=info["engine"],
        weights=proj.weights(), csim_sources=[root / "firmware"],
        bitstream=bit if bit.is_file() else None, hwh=hwh if bit.is_file() else None,
        tokenizer_dir=ckpt, tools=tools, implementation=impl,
        source={"hls_project": str(root), "checkpoint": str(ckpt), "content_hash": info.get("content_hash")},
        force=force)

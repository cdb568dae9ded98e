"""``mmfree package``: an overlay directory from an HLS project (contract 3).

    mmfree package hls_project/demo --board pynq-z2 [--out overlays/pynq-z2/demo] [--force]

Collects the C-simulation library (+ its sources), the embedding table, the
packed weight file, the bitstream and .hwh when Vivado produced them, and the
tokenizer; writes ``manifest.json`` with a SHA-256 of each, then re-opens the
package through the same validation the host runs. The package is built in a
temporary directory next to the target and renamed into place, so a failure
never leaves half a package behind.
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

from ..hls_project import CSIM_LIBRARY, PROJECT_FILE, read_project  # noqa: F401 (re-exported)

_TOOLCHAIN_JSON = Path(__file__).resolve().parent.parent / "data" / "toolchain.json"
_SOURCE_SUFFIXES = (".cpp", ".cc", ".c", ".h", ".hpp", ".tcl", ".txt", ".mk", ".sh")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "tokenizer.model", "vocab.json", "merges.txt")


#: The two synthesis tops, argument lists in C order (names are buffer names).
#: on-chip: design/convert.py's wrapper, void mmfree_step(x_in, state, logits).
#: streamed: design/hls/mmfree_streamed_top.cpp, int mmfree_streamed_top(weights, x_in,
#: logits, reset): the state stays on chip and a scalar register starts a new sequence;
#: its C-simulation entry mmfree_streamed_step moves the state through a buffer instead.
TOPS = {
    "on-chip": {"top": "mmfree_step", "args": ["x_in", "state", "logits"], "return_bits": 0,
                "csim_step": "mmfree_step"},
    "streamed": {"top": "mmfree_streamed_top", "args": ["weights", "x_in", "logits", ["reset", "scalar"]],
                 "return_bits": 32, "csim_step": "mmfree_streamed_step", "state_on_chip": True,
                 "reset_register": "reset"},
}


def toolchain() -> dict:
    return json.loads(_TOOLCHAIN_JSON.read_text())


def register(sub) -> None:
    p = sub.add_parser(
        "package", help="overlay directory (bitstream, C-sim, weights, manifest) from an HLS project",
        description="Package an HLS project as an overlay for a board: C-simulation library and "
                    "sources, embeddings, packed weights, bitstream + .hwh when Vivado ran, and a "
                    "manifest.json with SHA-256 of every file. Without a bitstream the package "
                    "runs on the C-sim backend only.")
    p.add_argument("project", metavar="HLS_PROJECT",
                   help="directory written by `mmfree convert` (with --tier streamed: a checkpoint)")
    p.add_argument("--board", required=True, help="target board (see data/boards.json)")
    p.add_argument("--out", default=None, help="output directory (default overlays/BOARD/NAME)")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint the project was converted from (default: the one the project records)")
    p.add_argument("--packing", default=None, choices=("2bit", "1.6bit"),
                   help="layout of the packed weight file (default: the project's, else 2bit)")
    p.add_argument("--tier", default="on-chip", choices=("on-chip", "streamed"),
                   help="on-chip (default): weights compiled into the HLS project; streamed: package a "
                        "CHECKPOINT for the streamed-weight top, which reads the packed weights from one "
                        "DDR buffer every token (370M-class models)")
    p.add_argument("--force", action="store_true", help="replace an existing overlay package")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.tier == "streamed":
        manifest = package_streamed(args.project, args.board, out=args.out, packing=args.packing or "2bit",
                                    force=args.force)
    else:
        manifest = package_project(args.project, args.board, out=args.out, checkpoint=args.checkpoint,
                                   packing=args.packing, force=args.force)
    files = manifest.data["files"]
    total = sum(f["bytes"] for f in files.values())
    has_bit = manifest.bitstream is not None
    print(f"overlay package {manifest.root} ({len(files)} files, {total / 1e6:.2f} MB)")
    print(f"  board {manifest.board}, tier {manifest.tier}, "
          + ("bitstream included" if has_bit else "no bitstream: C-sim backend only "
             "(run `make overlay` where Vivado is installed)"))
    print(f"  try: mmfree generate {manifest.root} --prompt \"...\" --backend csim")
    return 0


# --------------------------------------------------------------------------- tools
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
    from ..fsio import check_not_protected

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


# --------------------------------------------------------------------------- core
def _check_library_dimensions(lib: Path, cfg, tier: str) -> None:
    """Refuse a C-sim library built for another model now, rather than when a user opens it."""
    from ..runtime.backend_csim import _HOST_MACHINES, CSimBackend, library_machine
    from ..runtime.buffers import BufferLayout

    if library_machine(lib) != _HOST_MACHINES.get(platform.machine().lower()):
        return                      # cross-built for a board: checked when opened there
    # Only d, L, e, V are compared; the weight buffer's size does not matter here.
    layout = BufferLayout.for_config(cfg, weight_bytes=1 if tier == "streamed" else 0)
    backend = CSimBackend(lib, layout, step_symbol=TOPS[tier]["csim_step"], args=layout.ports)
    backend.close()


def _package_tokenizer(dest: Path, cfg, tokenizer_dir: Optional[str | Path]) -> Optional[str]:
    """Copy the checkpoint's tokenizer (tokenizer.json, or the byte tokenizer record in
    config.json) into the package; None when the model has no tokenizer."""
    from ..tokenizer import CONFIG_FILE, CONFIG_KEY, TOKENIZER_FILE, load_tokenizer

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
                  csim_sources: Sequence[str | Path] = (), precision: Optional[Mapping] = None,
                  top: Optional[str] = None, tier: str = "on-chip", packing: str = "2bit",
                  bitstream: Optional[str | Path] = None, hwh: Optional[str | Path] = None,
                  tokenizer_dir: Optional[str | Path] = None, tools: Optional[Mapping] = None,
                  source: Optional[Mapping] = None, csim_step_symbol: Optional[str] = None,
                  force: bool = False):
    """Write an overlay package for ``model`` (an ``MMFreeLM``) and return its validated Manifest."""
    from .. import __version__
    from ..runtime.buffers import BufferLayout
    from ..runtime.manifest import (TIERS, known_boards, load_manifest, packing_section,
                                    vitis_register_map, write_manifest)

    boards = known_boards()
    if board not in boards:
        raise ValueError(f"unknown board {board!r}; choose one of {', '.join(sorted(boards))} "
                         "(data/boards.json)")
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {TIERS}, got {tier!r}")
    if bitstream is not None and hwh is None:
        raise FileNotFoundError(f"bitstream {bitstream} given without its .hwh: pynq needs both "
                                "(Vivado writes the .hwh under <project>.gen/sources_1/bd/*/hw_handoff)")
    lib = Path(csim_library)
    if not lib.is_file():
        raise FileNotFoundError(f"C-simulation library {lib} not found; build it with `mmfree convert` "
                                "(it compiles the project with g++)")
    cfg = model.config
    _check_library_dimensions(lib, cfg, tier)
    out = Path(out)
    _prepare_out(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "csim").mkdir()
        shutil.copy2(lib, tmp / CSIM_LIBRARY)
        _copy_sources([Path(s) for s in csim_sources], tmp / "csim" / "src")
        np.save(tmp / "embeddings.npy",
                np.ascontiguousarray(model.params["model.embeddings.weight"], dtype=np.float32))
        pk, buf = packing_section(model, packing, "weights.bin")
        buf.tofile(tmp / "weights.bin")
        bs = None
        if bitstream is not None:
            shutil.copy2(bitstream, tmp / f"{name}.bit")
            shutil.copy2(hwh, tmp / f"{name}.hwh")
            bs = {"bit": f"{name}.bit", "hwh": f"{name}.hwh"}
        tok_rel = _package_tokenizer(tmp / "tokenizer", cfg, tokenizer_dir)

        layout = BufferLayout.for_config(cfg, pk["total_bytes"] if tier == "streamed" else 0)
        hls_ip, sig = toolchain()["hls_ip"], TOPS[tier]
        top = top or sig["top"]
        ip = vitis_register_map([a if isinstance(a, str) else tuple(a) for a in sig["args"]],
                                pointer_bits=hls_ip["pointer_bits"], return_bits=sig["return_bits"])
        ip.update({"top": top, "instance": hls_ip["instance"],
                   "vlnv": f"{hls_ip['vendor']}:{hls_ip['library']}:{top}:{hls_ip['version']}"})
        for key in ("state_on_chip", "reset_register"):
            if key in sig:
                ip[key] = sig[key]
        all_tools = {"mmfree_hls": __version__, "gxx": gxx_version(), "vitis_hls": None, "vivado": None}
        all_tools.update(tools or {})
        data = {
            "format": "mmfree-overlay", "format_version": 1,
            "name": name, "board": board, "board_info": boards[board], "tier": tier,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model": cfg.to_dict(),
            "precision": dict(precision or {}),
            "packing": pk,
            "buffers": layout.to_manifest(),
            "ip": ip,
            "csim": {"library": CSIM_LIBRARY, "step_symbol": csim_step_symbol or TOPS[tier]["csim_step"],
                     "args": layout.ports,
                     "built_on": platform.machine(),
                     "abi": "extern \"C\" int STEP(" + ", ".join(layout.ports) + ") over the buffers "
                            "above, 0 = success; int mmfree_info(int* d, int* L, int* e, int* V)"},
            "embeddings": {"file": "embeddings.npy", "shape": [cfg.vocab_size, cfg.d], "dtype": "float32"},
            "bitstream": bs,
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
    from ..checkpoint import load_checkpoint

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
    from ..config import ModelConfig
    return ModelConfig.from_dict(dict(d)).to_dict()


def package_project(project: str | Path, board: str, out: Optional[str | Path] = None,
                    checkpoint: Optional[str] = None, packing: Optional[str] = None, force: bool = False):
    """Package ``hls_project/NAME`` for ``board`` (bitstream included when `make overlay` made one)."""
    root = Path(project)
    info = read_project(root)
    name = info.get("name") or root.name
    lib = root / CSIM_LIBRARY
    if not lib.is_file():
        raise FileNotFoundError(f"{lib} is missing: compile the C-simulation first "
                                "(`mmfree convert` does, or project.compile())")
    model, ckpt = _project_model(root, info, checkpoint)
    synth_dir = root / "synth" / board
    bit, hwh = synth_dir / f"{name}.bit", synth_dir / f"{name}.hwh"
    tools_file = synth_dir / "tools.json"
    tools = {"hls4ml": info.get("hls4ml_version")}
    if tools_file.is_file():
        tools.update(json.loads(tools_file.read_text()))
    sources = [root / "firmware", root / "csim"]
    out = Path(out) if out else Path("overlays") / board / name
    return build_overlay(
        out, model=model, board=board, name=name, csim_library=lib,
        csim_sources=[s for s in sources if s.exists()],
        precision=info.get("precision") or {}, top=info.get("top", "mmfree_step"),
        tier=info.get("tier", "on-chip"), packing=packing or info.get("packing") or "2bit",
        bitstream=bit if bit.is_file() else None, hwh=hwh if bit.is_file() else None,
        tokenizer_dir=ckpt, tools=tools,
        source={"hls_project": str(root), "checkpoint": str(ckpt),
                "content_hash": info.get("content_hash") or info.get("hash")},
        force=force)


def package_streamed(checkpoint: str | Path, board: str, out: Optional[str | Path] = None,
                     packing: str = "2bit", force: bool = False):
    """Package a checkpoint for the streamed-weight tier: the streamed top's C-simulation (built
    with g++ under ``hls_project/<name>_streamed_<packing>``) and the packed weight buffer."""
    from .. import streamed_csim
    from ..checkpoint import load_checkpoint

    ckpt = Path(checkpoint)
    model = load_checkpoint(ckpt)
    name = f"{ckpt.resolve().name}_streamed"
    lib = streamed_csim.build(model.config, packing, Path("hls_project") / f"{name}_{packing}")
    return build_overlay(Path(out) if out else Path("overlays") / board / name, model=model, board=board,
                         name=name, csim_library=lib, tier="streamed", packing=packing, tokenizer_dir=ckpt,
                         force=force)

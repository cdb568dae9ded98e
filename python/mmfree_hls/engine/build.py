"""Write an engine build's C++ and compile its C-simulation library (the one g++ driver).

    sources = write_engine_sources(out_dir, model, preset, packing)
    lib = compile_csim(out_dir)                 # out_dir/csim/libmmfree_csim.so

The fixed engine headers are copied next to the generated ones, so a build
directory is self-contained: Vitis HLS and g++ read the same files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

from . import codegen
from .layout import build_image
from ..hls_project import CSIM_LIBRARY
from .presets import EnginePreset

#: The engine's fixed sources (design/hls), shipped with the package.
ENGINE_HEADERS = ("mmfree_engine.h", "mmfree_fixed.h", "mmfree_csim_fast.h")
#: -fvisibility=hidden / -fno-gnu-unique: several C-sim libraries in one process keep
#: their own statics (engine state, tables); only the C ABI is exported.
CXX_FLAGS = ("-std=c++14", "-fPIC", "-shared", "-Wall", "-Wextra", "-Wno-unknown-pragmas",
             "-Wno-unused-parameter", "-Wno-unused-function", "-Wno-unused-label",
             "-fvisibility=hidden", "-fvisibility-inlines-hidden", "-fno-gnu-unique")
DEFAULT_OPT = "-O3"


class BuildError(RuntimeError):
    """g++ is missing or failed; the message names the log."""


def hls_source_dir() -> Path:
    """design/hls: in a checkout, or the copy shipped inside the package."""
    here = Path(__file__).resolve()
    for cand in (here.parents[1] / "data" / "hls", here.parents[3] / "design" / "hls"):
        if (cand / "mmfree_engine.h").is_file():
            return cand
    raise BuildError("the engine's HLS sources (mmfree_engine.h) are missing from this installation")


def ap_types_dir() -> Path:
    """The arbitrary-precision headers hls4ml ships (Xilinx, Apache-2.0)."""
    try:
        import hls4ml  # noqa: F401  (design extra)
        root = Path(hls4ml.__file__).resolve().parent / "templates" / "vivado" / "ap_types"
    except ImportError:
        root = Path(os.environ.get("MMFREE_AP_TYPES", ""))
    if not (root / "ap_int.h").is_file():
        raise BuildError("ap_int.h not found: install the design extra (hls4ml) or set MMFREE_AP_TYPES "
                         "to a directory holding the Vitis HLS ap_types headers")
    return root


def write_engine_sources(out_dir: str | Path, model, preset: EnginePreset, packing: str) -> list[str]:
    """firmware/: the fixed engine headers plus this build's generated sources.

    ``model``: an MMFreeLM (on chip: its weights are compiled in), or for the
    streamed tier just a ModelConfig."""
    fw = Path(out_dir) / "firmware"
    fw.mkdir(parents=True, exist_ok=True)
    for h in ENGINE_HEADERS:
        shutil.copyfile(hls_source_dir() / h, fw / h)
    # the streamed tier needs only the model's config (its weights travel in the weights buffer)
    cfg = getattr(model, "config", model)
    image = build_image(model, packing, preset.R) if preset.K == 0 else None
    generated = codegen.write_sources(fw, cfg, preset, packing, image)
    return sorted(set(ENGINE_HEADERS) | set(generated))


def compile_command(opt: str = DEFAULT_OPT, fast: bool = True, out: str = CSIM_LIBRARY) -> list[str]:
    flags = [] if fast else ["-DMMFREE_NO_FAST_CSIM"]
    return ["g++", opt, *CXX_FLAGS, *flags, "-isystem", str(ap_types_dir()), "-Ifirmware",
            "firmware/mmfree_engine_top.cpp", "-o", out]


def _digest(root: Path, cmd: Sequence[str]) -> str:
    h = hashlib.sha256(json.dumps(list(cmd)).encode())
    for f in sorted((root / "firmware").iterdir()):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def is_built(root: str | Path, opt: str = DEFAULT_OPT, fast: bool = True, out: str = CSIM_LIBRARY) -> bool:
    """The library exists and was built from these sources with this command."""
    root = Path(root)
    lib = root / out
    stamp = lib.with_name(lib.name + ".built")
    return (lib.is_file() and stamp.is_file()
            and stamp.read_text().strip() == _digest(root, compile_command(opt, fast, out)))


def compile_csim(root: str | Path, opt: str = DEFAULT_OPT, fast: bool = True, force: bool = False,
                 out: str = CSIM_LIBRARY, verbose: bool = False) -> Path:
    """g++ the C-simulation library; cached by a digest of the sources and the command.

    The library is written to a temporary name and renamed, so an interrupted
    build never leaves a truncated library that looks up to date.
    """
    root = Path(root)
    lib = root / out
    stamp = lib.with_name(lib.name + ".built")
    cmd = compile_command(opt, fast, out)
    digest = _digest(root, cmd)
    if not force and lib.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        return lib
    stamp.unlink(missing_ok=True)           # an interrupted build is never "up to date"
    if shutil.which("g++") is None:
        raise BuildError("g++ is not on PATH; install a C++ compiler (e.g. apt-get install g++)")
    lib.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=lib.parent)
    os.close(fd)
    tmp_rel = os.path.relpath(tmp, root)
    t0 = time.perf_counter()
    if verbose:
        print(f"mmfree: compiling the C-simulation with g++ {opt} ...", flush=True)
    try:
        proc = subprocess.run(cmd[:-1] + [tmp_rel], cwd=root, capture_output=True, text=True)
        log = lib.with_name("compile.log")
        log.write_text(" ".join(cmd) + "\n" + proc.stderr)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-25:])
            raise BuildError(f"g++ failed on {root} (full log: {log}):\n{tail}")
        os.replace(tmp, lib)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    stamp.write_text(digest)
    if verbose:
        print(f"mmfree: built {lib} in {time.perf_counter() - t0:.1f} s", flush=True)
    return lib

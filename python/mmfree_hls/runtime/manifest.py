"""``manifest.json``: what an overlay package contains, and the check that it is intact.

An overlay package (docs/ARCHITECTURE.md, "Contracts") is a directory ``overlays/<board>/<name>/``:

    <name>.bit, <name>.hwh      bitstream + hardware handoff (when Vivado ran)
    csim/libmmfree_csim.so      the same design as a C-simulation library (+ sources)
    embeddings.npy              float32 (V, d): the host looks up x_t
    weights.bin                 streamed tier: the engine's weights buffer (header + K port regions)
    tokenizer/                  tokenizer files, when the checkpoint had them
    manifest.json               this file's subject

The manifest records the model config, the engine build (board, tier,
packing, knobs: mmfree_hls.engine.project.engine_record, recomputed here from
our own code and compared), the buffer table, the IP's register map, the
board, tool versions and the SHA-256 of every other file. :func:`load_manifest` refuses a package whose parts do
not agree, naming the file and the fix.

Register map assumption (documented here because it cannot be checked without
Vitis HLS): the synthesis top is ``int mmfree_engine(n, mode, slot, load_mask,
store_mask, x_in, state, logits, top[, w0..wK-1])`` (five 32-bit scalars, then pointers)
with ``#pragma HLS INTERFACE m_axi ... offset=slave`` on each pointer and
``s_axilite port=return`` in one bundle ``control``. Vitis HLS (2020.2 and
later, including 2023.2) then lays out the AXI-Lite slave as

    0x00 CTRL (ap_start bit 0, ap_done bit 1 clear-on-read, ap_idle bit 2, ap_ready bit 3)
    0x04 GIER   0x08 IP_IER   0x0c IP_ISR
    0x10 ap_return (only if the top returns a value: 32 bits + 1 reserved word)
    then each argument in order: a 64-bit pointer takes three words
    (low, high, reserved), a 32-bit scalar two (value, reserved).

so n = 0x18, mode = 0x20, slot = 0x28, load_mask = 0x30, store_mask = 0x38, x_in = 0x40,
state = 0x4c, logits = 0x58, top = 0x64, w0 = 0x70 ... for the engine's top. On a board the
backend cross-checks these offsets with the bitstream's .hwh.

What opening a package trusts: the C-simulation library is native code (like
a wheel), so opening a package with the C-sim backend runs code from it. The
SHA-256 table protects a package against damage (a truncated copy, a flipped
bit), not against someone who edits it on purpose: they can re-hash. What a
manifest can no longer do is steer the host: every path stays inside the
package (no ``..``, no absolute path, no symbolic link anywhere in the
package), the C-sim entry point and its argument order are fixed by the ABI in
code (``csim.step_symbol`` / ``csim.args``, if present, must name exactly
that), and every section has the JSON type it should have.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Optional

import numpy as np

from ..config import ConfigError, ModelConfig
from .buffers import BufferLayout, WEIGHTS_PORT
from .errors import ManifestError

MANIFEST_NAME = "manifest.json"
FORMAT = "mmfree-overlay"
FORMAT_VERSION = 2
TIERS = ("on-chip", "streamed")
REQUIRED = ("format", "format_version", "name", "board", "tier", "model", "engine",
            "buffers", "ip", "csim", "embeddings", "tools", "files")

_CTRL_WORDS = 4                     # CTRL, GIER, IP_IER, IP_ISR

REGISTER_MAP_ASSUMPTION = (
    "Vitis HLS s_axilite layout for a top with m_axi offset=slave pointers: 0x00 CTRL, "
    "0x04 GIER, 0x08 IP_IER, 0x0c IP_ISR, 0x10 ap_return (if any, 2 words), then per argument "
    "in order 3 words for a 64-bit pointer (low, high, reserved), 2 for a 32-bit scalar; "
    "checked against the .hwh on the board")


def known_boards() -> dict[str, dict]:
    """The board table in force (mmfree_hls.engine.presets: data/boards.json or $MMFREE_BOARDS)."""
    from ..engine.presets import board_table
    return board_table()


def vitis_register_map(args: list, pointer_bits: int = 64, return_bits: int = 0) -> dict:
    """Register map of a Vitis HLS top ``f(args...)`` with m_axi offset=slave pointers.

    ``args`` in declaration order: a name is a pointer, ``(name, "scalar")`` a
    32-bit scalar argument (e.g. the streamed top's ``reset``).
    """
    offset = 4 * _CTRL_WORDS
    ap_return = None
    if return_bits:
        ap_return = {"offset": offset, "bits": return_bits, "access": "r"}
        offset += 8
    regs: dict[str, dict] = {}
    for arg in args:
        name, kind = (arg, "pointer") if isinstance(arg, str) else arg
        bits = pointer_bits if kind == "pointer" else 32
        regs[name] = {"offset": offset, "bits": bits, "access": "w", "kind": kind}
        offset += 12 if bits > 32 else 8
    return {
        "protocol": "ap_ctrl_hs",
        "control": {"offset": 0, "ap_start": 0x1, "ap_done": 0x2, "ap_idle": 0x4, "ap_ready": 0x8},
        "registers": regs,
        "ap_return": ap_return,
        "address_range": offset,
        "assumption": REGISTER_MAP_ASSUMPTION,
    }


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def list_package_files(root: Path) -> list[str]:
    """Every file of a package except the manifest, as sorted POSIX relative paths.

    Symbolic links are listed as files (links to directories too), never followed:
    the verifier refuses them (see :func:`package_symlinks`).
    """
    out = []
    for dirpath, dirs, files in os.walk(root):
        links = [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]
        for f in files + links:
            rel = Path(dirpath, f).relative_to(root).as_posix()
            if rel != MANIFEST_NAME:
                out.append(rel)
    return sorted(out)


def package_symlinks(root: Path) -> list[str]:
    """Relative paths of every symbolic link inside a package (files and directories)."""
    found = []
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            if os.path.islink(os.path.join(dirpath, name)):
                found.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(found)


def write_manifest(root: str | Path, data: Mapping[str, Any]) -> Path:
    """Hash every file under ``root`` into ``data['files']`` and write manifest.json."""
    root = Path(root)
    manifest = dict(data)
    manifest["files"] = {rel: {"sha256": sha256_file(root / rel), "bytes": (root / rel).stat().st_size}
                         for rel in list_package_files(root)}
    path = root / MANIFEST_NAME
    from ..fsio import atomic_write
    atomic_write(path, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    # Validate what we wrote: a package that cannot be opened must not be produced.
    load_manifest(root)
    return path


# ---------------------------------------------------------------------------- loading
@dataclass
class Manifest:
    """A validated overlay package."""

    root: Path
    data: dict
    config: ModelConfig
    layout: BufferLayout

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def board(self) -> str:
        return self.data["board"]

    @property
    def tier(self) -> str:
        return self.data["tier"]

    def path(self, rel: Optional[str]) -> Optional[Path]:
        return None if rel is None else self.root / rel

    @property
    def bitstream(self) -> Optional[Path]:
        bs = self.data.get("bitstream") or {}
        return self.path(bs.get("bit"))

    @property
    def csim_library(self) -> Path:
        return self.root / self.data["csim"]["library"]

    @property
    def tokenizer_dir(self) -> Optional[Path]:
        return self.path(self.data.get("tokenizer"))

    def embeddings(self, mmap: bool = True) -> np.ndarray:
        return np.load(self.root / self.data["embeddings"]["file"], mmap_mode="r" if mmap else None)

    def packed_weights(self) -> Optional[np.ndarray]:
        """The streamed tier's weights buffer (None on chip), its header checked once per session."""
        f = self.data["engine"].get("weights_file")
        if f is None:
            return None
        buf = np.fromfile(self.root / f, dtype=np.uint8)
        from ..engine.layout import LayoutError, Shape, check_buffer
        eng = self.data["engine"]
        try:
            check_buffer(buf, Shape.of(self.config, eng["packing"], eng["R"]), eng["K"], eng["port_bytes"])
        except LayoutError as e:
            raise ManifestError(f"{self.root / f}: {e}") from None
        return buf


class _Checker:
    """Collects the context for error messages: which file, and what to do."""

    def __init__(self, root: Path):
        self.root = root
        self.mpath = root / MANIFEST_NAME

    def fail(self, what: str, fix: str = "re-create the package with `mmfree package`") -> None:
        raise ManifestError(f"{self.mpath}: {what}; fix: {fix}")

    def fail_file(self, rel: str, what: str,
                  fix: str = "the file was changed or damaged after packaging: re-run `mmfree package`") -> None:
        raise ManifestError(f"{self.root / rel}: {what}; fix: {fix}")


#: The C-sim entry points a package may name (fixed by the C-sim ABI in code, never free-form).
CSIM_STEP_SYMBOLS = ("mmfree_step",)


def _safe_rel(chk: _Checker, rel: Any, field: str) -> str:
    """A path from the manifest: relative, inside the package, through no symbolic link."""
    if not isinstance(rel, str) or not rel:
        chk.fail(f"'{field}' must be a relative file path, got {rel!r}")
    if "\x00" in rel or "\\" in rel:
        chk.fail(f"'{field}' = {rel!r} is not a plain relative path (NUL or backslash)")
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or rel.startswith("~"):
        chk.fail(f"'{field}' = {rel!r} points outside the package")
    here = chk.root
    for part in p.parts:
        here = here / part
        if here.is_symlink():
            chk.fail_file(here.relative_to(chk.root).as_posix(),
                          f"is a symbolic link (to {os.readlink(here)}); a package holds its files itself",
                          "replace the link by the file it points to, or re-run `mmfree package`")
    return rel


def _section(chk: _Checker, data: dict, key: str, kind: type = dict, optional: bool = False):
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        chk.fail(f"{key} must be {'an object' if kind is dict else 'a string'}, "
                 f"got {type(value).__name__} {str(value)[:40]!r}")
    return value


def _check_files(chk: _Checker, data: dict, verify_hashes: bool) -> None:
    files = data["files"]
    if not isinstance(files, dict):
        chk.fail("'files' must map relative paths to {sha256, bytes}")
    links = package_symlinks(chk.root)
    if links:
        chk.fail_file(links[0], f"is a symbolic link (to {os.readlink(chk.root / links[0])}); a package "
                                "holds its files itself, so its hashes cover what is shipped",
                      "replace the link by the file it points to, or re-run `mmfree package`")
    for rel, entry in files.items():
        _safe_rel(chk, rel, "files")
        f = chk.root / rel
        if f.is_dir():
            chk.fail_file(rel, "is a directory; 'files' lists files only")
        if not f.is_file():
            chk.fail_file(rel, "listed in the manifest but missing",
                          "copy the whole overlay directory, or re-run `mmfree package`")
        if not isinstance(entry, dict):
            chk.fail(f"files['{rel}'] needs 'sha256' and 'bytes'")
        want_bytes, want_hash = entry.get("bytes"), entry.get("sha256")
        if isinstance(want_bytes, bool) or not isinstance(want_bytes, int) or want_bytes < 0 \
                or not isinstance(want_hash, str) or len(want_hash) != 64:
            chk.fail(f"files['{rel}'] needs 'sha256' (64 hex digits) and 'bytes' (an integer)")
        if f.stat().st_size != want_bytes:
            chk.fail_file(rel, f"has {f.stat().st_size} bytes, the manifest recorded {want_bytes} "
                               "(truncated or replaced)")
        if verify_hashes and sha256_file(f) != want_hash:
            chk.fail_file(rel, "SHA-256 does not match the manifest")
    # Every file the runtime will open must be covered by a hash.
    refs = {"csim.library": data["csim"].get("library"), "embeddings.file": data["embeddings"].get("file"),
            "engine.weights_file": data["engine"].get("weights_file")}
    for key in ("bit", "hwh"):
        refs[f"bitstream.{key}"] = (data.get("bitstream") or {}).get(key)
    if refs["embeddings.file"] is None:
        chk.fail("embeddings.file is missing")
    for field, rel in refs.items():
        if rel is None:
            continue
        _safe_rel(chk, rel, field)
        if rel not in files:
            if not (chk.root / rel).exists():
                chk.fail_file(rel, f"named by '{field}' but missing",
                              "copy the whole overlay directory, or re-run `mmfree package`")
            chk.fail(f"'{field}' = {rel} has no SHA-256 entry in 'files'")
    tok = data.get("tokenizer")
    if tok is not None:
        _safe_rel(chk, tok, "tokenizer")
        if not any(r == tok or r.startswith(tok.rstrip("/") + "/") for r in files):
            chk.fail(f"'tokenizer' = {tok} has no files listed")
    extra = sorted(set(list_package_files(chk.root)) - set(files))
    if extra:
        chk.fail_file(extra[0], "is in the package but not in the manifest",
                      "remove it, or re-run `mmfree package` to include it")


def _check_csim_abi(chk: _Checker, csim: dict, layout: BufferLayout) -> None:
    """The C-sim entry point and argument order are the ABI's, not the manifest's to choose.

    Older packages record them; they are accepted only when they say exactly
    what the ABI says (a manifest naming another symbol -- e.g. libc's
    ``system`` -- or another argument order is refused, never called).
    """
    sym = csim.get("step_symbol")
    if sym is not None and sym not in CSIM_STEP_SYMBOLS:
        chk.fail(f"csim.step_symbol = {sym!r}: the C-simulation entry point is fixed by the ABI "
                 f"({' or '.join(CSIM_STEP_SYMBOLS)}); a package cannot choose another symbol")
    args = csim.get("args")
    if args is not None and args != layout.ports:
        chk.fail(f"csim.args = {args!r}: the argument order is fixed by the ABI "
                 f"({layout.ports}); a package cannot reorder or drop arguments")


def _check_engine(chk: _Checker, data: dict, cfg: ModelConfig):
    """The engine section must be what our own code computes for its board, tier, packing and
    knobs: a manifest cannot choose offsets, sizes, lanes or port counts of its own. Returns the
    build's preset (the buffer table is checked against it)."""
    from ..engine.presets import PACKINGS, PresetError
    from ..engine.project import EngineShapeError, engine_record, preset_of

    eng = data["engine"]
    for key, kind in (("tier", str), ("board", str), ("packing", str), ("knobs", dict), ("abi", int)):
        if not isinstance(eng.get(key), kind) or isinstance(eng.get(key), bool):
            chk.fail(f"engine.{key} is missing or not a {kind.__name__}")
    if eng["tier"] != data["tier"] or eng["board"] != data["board"]:
        chk.fail(f"engine section is for {eng['board']}/{eng['tier']}, the package for "
                 f"{data['board']}/{data['tier']}")
    if eng["packing"] not in PACKINGS:
        chk.fail(f"engine.packing {eng['packing']!r} is unknown (known: {sorted(PACKINGS)})")
    from .backend_csim import ABI_VERSION
    if eng["abi"] != ABI_VERSION or data["csim"].get("abi", ABI_VERSION) != ABI_VERSION:
        chk.fail(f"engine.abi {eng['abi']!r}: this host speaks C-sim ABI version {ABI_VERSION}",
                 "re-create the package with this version of mmfree-hls")
    try:
        preset = preset_of(eng)
        want = engine_record(cfg, preset, eng["packing"])
    except (PresetError, EngineShapeError, TypeError, ValueError, AttributeError, KeyError) as e:
        chk.fail(f"engine section does not describe a build this mmfree-hls can make: {e}")
    for key, value in want.items():
        if eng.get(key) != value:
            chk.fail(f"engine.{key} = {eng.get(key)!r}, but this build ({eng['board']}, {eng['tier']}, "
                     f"{eng['packing']}) has {value!r}")
    return preset


def _check_weight_buffer(chk: _Checker, data: dict, layout: BufferLayout) -> None:
    eng = data["engine"]
    if eng["tier"] == "streamed":
        want = eng
        need = want["region_offset"] + want["K"] * want["region_bytes"]
        if layout.weight_bytes != need:
            chk.fail(f"weight buffer holds {layout.weight_bytes} bytes, the engine needs {need} "
                     f"(header + {want['K']} port regions)")


def _check_ip(chk: _Checker, data: dict, layout: BufferLayout) -> None:
    ip = data["ip"]
    for key in ("top", "instance", "registers"):
        if key not in ip:
            chk.fail(f"ip.{key} is missing")
    regs = ip["registers"]
    if not isinstance(regs, dict) or not all(isinstance(r, dict) for r in regs.values()):
        chk.fail("ip.registers must map register names to {offset, bits}")
    host_only = set()
    if "w0" in regs:
        host_only.add(WEIGHTS_PORT)     # the weight ports w0..w{K-1} point into the one weight buffer
    missing = [p for p in layout.ports if p not in regs and p not in host_only]
    if missing:
        chk.fail(f"ip.registers has no pointer register for {missing}")
    from ..engine.codegen import SCALAR_ARGS
    no_scalar = [a for a in SCALAR_ARGS if regs.get(a, {}).get("kind") != "scalar"]
    if no_scalar:
        chk.fail(f"ip.registers has no scalar register for {no_scalar} (the pass's arguments)",
                 "re-run `mmfree package` with this version of mmfree-hls")
    spans = []
    ret = ip.get("ap_return")
    if ret is not None and not isinstance(ret, dict):
        chk.fail("ip.ap_return must be null or {offset, bits}")
    named = dict(regs, **({"ap_return": ret} if ret else {}))
    for name, r in named.items():
        try:
            off, bits = int(r["offset"]), int(r["bits"])
        except (KeyError, TypeError, ValueError, OverflowError):
            chk.fail(f"ip.registers.{name} needs integer 'offset' and 'bits'")
        if off % 4 or off < 4 * _CTRL_WORDS:
            chk.fail(f"ip.registers.{name} offset 0x{off:x} is not a word offset after the "
                     "control registers (≥ 0x10)")
        if bits not in (32, 64):
            chk.fail(f"ip.registers.{name} is {bits} bits; registers are 32 or 64 bits")
        spans.append((off, off + bits // 8, name))
    spans.sort()
    for (a0, a1, an), (b0, _b1, bn) in zip(spans, spans[1:]):
        if b0 < a1:
            chk.fail(f"ip.registers {an} and {bn} overlap (0x{a0:x} and 0x{b0:x})")


def _check_embeddings(chk: _Checker, data: dict, cfg: ModelConfig) -> None:
    emb = data["embeddings"]
    rel = emb.get("file")
    want = (cfg.vocab_size, cfg.d)
    shape = emb.get("shape")
    if not isinstance(shape, list) or tuple(shape) != want or emb.get("dtype") != "float32":
        chk.fail(f"embeddings are recorded as {emb.get('shape')} {emb.get('dtype')}, the model "
                 f"needs {list(want)} float32")
    try:
        arr = np.load(chk.root / rel, mmap_mode="r")
    except (ValueError, OSError, EOFError) as e:
        chk.fail_file(rel, f"is not a readable .npy file ({e})")
    if arr.shape != want or arr.dtype != np.float32:
        chk.fail_file(rel, f"holds {arr.shape} {arr.dtype}, the model needs {want} float32")
    rows = max(1, (1 << 22) // max(1, cfg.d))         # ~16 MB at a time, however large the table
    for start in range(0, arr.shape[0], rows):
        block = np.asarray(arr[start:start + rows])
        bad = ~np.isfinite(block)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            chk.fail_file(rel, f"row {start + r} (token id {start + r}) holds a non-finite value "
                               f"({block[r, c]}) at column {c}; the device would compute garbage from it")


def load_manifest(root: str | Path, verify_hashes: bool = True) -> Manifest:
    """Read and validate an overlay package; raise ManifestError naming file and fix.

    ``verify_hashes=False`` skips the SHA-256 pass (sizes are still checked) for
    quick re-opens of a large package that was verified once.
    """
    root = Path(root)
    chk = _Checker(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such overlay directory; build one with "
                                "`mmfree package HLS_PROJECT --board BOARD`")
    if not chk.mpath.is_file():
        raise FileNotFoundError(f"{chk.mpath} is missing: {root} is not an overlay package; "
                                "build one with `mmfree package HLS_PROJECT --board BOARD`")
    try:
        data = json.loads(chk.mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        chk.fail(f"not valid JSON ({e})")
    except RecursionError:
        chk.fail("not valid JSON (nested too deeply)")
    if not isinstance(data, dict):
        chk.fail("the top level must be a JSON object")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        chk.fail(f"required fields missing: {', '.join(missing)}")
    if data["format"] != FORMAT:
        chk.fail(f"format is {data['format']!r}, expected {FORMAT!r}")
    version = data["format_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version != FORMAT_VERSION:
        chk.fail(f"format_version {version!r} is not supported (this mmfree-hls reads the integer "
                 f"{FORMAT_VERSION})", "re-package with this version of mmfree-hls")
    for key in ("name", "board", "tier"):
        _section(chk, data, key, str)
    for key in ("model", "engine", "buffers", "ip", "csim", "embeddings", "files"):
        _section(chk, data, key)
    _section(chk, data, "bitstream", optional=True)
    boards = known_boards()
    if data["board"] not in boards:
        chk.fail(f"board {data['board']!r} is not in the board table ({', '.join(sorted(boards))})")
    if data["tier"] not in TIERS:
        chk.fail(f"tier {data['tier']!r} is not one of {TIERS}")
    info = data.get("board_info")
    if info is not None and (not isinstance(info, dict)
                             or info.get("part", boards[data["board"]].get("part")) != boards[data["board"]].get("part")):
        chk.fail(f"board {data['board']!r} does not match board_info (part "
                 f"{info.get('part') if isinstance(info, dict) else info!r}); the package was built for another "
                 "board", "re-package for this board with `mmfree package ... --board BOARD`")
    try:
        cfg = ModelConfig.from_dict(data["model"])
    except (ConfigError, TypeError) as e:
        chk.fail(f"model config is invalid: {e}")
    preset = _check_engine(chk, data, cfg)
    try:
        layout = BufferLayout.from_manifest(data["buffers"], cfg, preset)
    except ManifestError as e:
        chk.fail(str(e))
    except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as e:
        chk.fail(f"buffers: not a valid buffer table ({type(e).__name__}: {e})")
    if (data["tier"] == "streamed") != (WEIGHTS_PORT in layout.specs):
        chk.fail(f"tier '{data['tier']}' but the buffer table "
                 f"{'has' if WEIGHTS_PORT in layout.specs else 'has no'} weight buffer")
    if "library" not in data["csim"]:
        chk.fail("csim.library is missing")
    _check_csim_abi(chk, data["csim"], layout)
    _check_files(chk, data, verify_hashes)
    _check_weight_buffer(chk, data, layout)
    _check_ip(chk, data, layout)
    _check_embeddings(chk, data, cfg)
    return Manifest(root=root, data=data, config=cfg, layout=layout)

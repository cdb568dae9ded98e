"""Checkpoint I/O: reference ``hgrn_bit`` checkpoints in, our own checkpoints out.

Two directory layouts are read by :func:`load_checkpoint`:

**Reference** (the published MMfreeLM models, see :mod:`mmfree_hls.hgrn_bit`)::

    config.json                      reference field names, model_type "hgrn_bit"
    model.safetensors                F32 / F16 / BF16, keys: docs/ARCHITECTURE.md
      (or model.safetensors.index.json + shards)

**Ours** (written by ``mmfree import`` and :func:`save_checkpoint`) is the same
layout, so the reference tools still read it, plus the BitLinear weights
already quantised and packed, so the HLS flow and the board never redo the
quantisation::

    config.json                      ModelConfig.to_json(): reference names
    model.safetensors                float weights, one file, stored dtype kept
    packed.safetensors               for every BitLinear prefix P (bitlinear_names order):
        P.weight_packed_2bit    U8  (out, ceil(in/4))  packing layout "2bit"
        P.weight_packed_1p6bit  U8  (out, ceil(in/5))  packing layout "1.6bit"
        P.weight_gamma          F64 (1,)   γ = 1/max(mean|W|, 1e-5); W ≈ W_q/γ,
                                           so the accumulator's dequantisation scale is 1/γ
      __metadata__:
        format "mmfree-packed", version "1", layouts "2bit,1.6bit",
        float_dtype (of P.weight in model.safetensors),
        "sha256:P.weight" = sha256 of the stored bytes of P.weight in model.safetensors
        "sha256:<key>" for every tensor of this file (packed bytes and γ)
    tokenizer.json ...               carried over from the source when present

The packing layouts are those of :mod:`mmfree_hls.packing` (rows packed
separately, row-major). γ is stored in float64 so W_q and γ reproduce
:func:`mmfree_hls.quant.quantize_weights` bit for bit.

Loading checks the packed weights against the float ones: ``verify="hash"``
(default) re-hashes each stored float BitLinear tensor and every packed
tensor (both layouts and γ) and compares them with the hashes recorded at
packing time (a BitLinear whose hashes were not recorded, e.g. by an older
version, is re-quantised and compared instead); ``verify="full"`` re-quantises
and compares W_q and γ exactly; ``verify="none"`` trusts the hashes away.
In every mode γ must be finite and positive, and every float tensor the
model holds must be finite (NaN/Inf are refused naming the tensor). The
hashes protect against damage, not against a deliberate edit: anyone who can
change the file can recompute them.

Memory: tensors are read one at a time (a file is never mapped whole, see
:mod:`mmfree_hls.safetensors_io`). By default the model holds only what
inference needs -- ternary W_q (int8), norms, embeddings, lower bounds --
and reads a BitLinear's float weight from disk when asked for it; a 370M
fp16 checkpoint then loads in well under twice its size
(``bench/bench_load.py``). ``keep_float=True`` also holds every weight as
float32.

Strict: every expected key present with the expected shape and a float
dtype, nothing left over; errors list the offending keys.
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from .config import ModelConfig
from .fsio import CHECKPOINT_KIND, atomic_copy, ensure_replaceable, io_errors, make_output_dir
from .hgrn_bit import (AUX_FILES, CONFIG_FILE, INDEX_FILE, WEIGHTS_FILE,
                       ReferenceCheckpoint)
from .packing import LAYOUTS, pack_ternary, row_bytes, unpack_ternary
from .quant import TernaryWeight, quantize_weights
from .reference import MMFreeLM, bitlinear_names, expected_shapes
from .safetensors_io import (FLOAT_DTYPES, CheckpointError, SafetensorsWriter,
                             TensorInfo, TensorSpec, read_array,
                             read_float32, read_header, sha256_of,
                             validate_with_library)

__all__ = ["CheckpointError", "check_state_dict", "load_checkpoint", "save_checkpoint",
           "import_checkpoint", "read_packed", "summarize", "PACKED_FILE", "DEFAULT_LAYOUTS",
           "DEMO_CHECKPOINT", "packed_key", "gamma_key"]

#: The demo model shipped inside the package (trained by `make train`).
DEMO_CHECKPOINT = Path(__file__).resolve().parent / "data" / "demo_model"

PACKED_FILE = "packed.safetensors"
PACKED_FORMAT = "mmfree-packed"
PACKED_VERSION = "1"
DEFAULT_LAYOUTS = ("2bit", "1.6bit")
VERIFY_MODES = ("hash", "full", "none")
# Tensor-name tags: a '.' inside a key would read as a module separator.
_LAYOUT_TAG = {"2bit": "2bit", "1.6bit": "1p6bit"}
_HASH_PREFIX = "sha256:"
_LIST_LIMIT = 40           # keys listed per category in an error


def packed_key(prefix: str, layout: str) -> str:
    if layout not in _LAYOUT_TAG:
        raise ValueError(f"unknown packing layout {layout!r}; choose from {sorted(_LAYOUT_TAG)}")
    return f"{prefix}.weight_packed_{_LAYOUT_TAG[layout]}"


def gamma_key(prefix: str) -> str:
    return f"{prefix}.weight_gamma"


# -------------------------------------------------------------- validation
def _listing(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:_LIST_LIMIT])
    return shown + (f" ... and {len(keys) - _LIST_LIMIT} more" if len(keys) > _LIST_LIMIT else "")


def _hints(cfg: ModelConfig, missing: list[str], unexpected: list[str]) -> list[str]:
    """Likely causes of a key mismatch, phrased as the fix."""
    hints = []
    if any("conv1d" in k for k in unexpected):
        hints.append("the weights contain short-convolution kernels (conv1d): that model variant "
                     "(use_short_conv) is not supported")
    if "model.lower_bounds" in missing:
        hints.append("config.json says use_lower_bound: true but the weights have no "
                     "model.lower_bounds; set use_lower_bound to false if the model was trained without it")
    if "model.lower_bounds" in unexpected:
        hints.append("the weights have model.lower_bounds but config.json says use_lower_bound: false")
    if missing and all(k.startswith("lm_head") for k in missing):
        hints.append("the LM head is missing: this is a bare HGRNBitModel, not HGRNBitForCausalLM")
    layer_keys = [k for k in missing + unexpected if k.startswith("model.layers.")]
    if layer_keys and not any(k.startswith("model.layers.0.") for k in unexpected + missing):
        hints.append(f"the number of layers differs from num_hidden_layers={cfg.num_hidden_layers}")
    return hints


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
             f"vocab_size={cfg.vocab_size}, intermediate size={cfg.ffn_dim}, "
             f"use_lower_bound={cfg.use_lower_bound}):"]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): " + _listing(missing))
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): " + _listing(unexpected))
    for k in wrong[:_LIST_LIMIT]:
        lines.append(f"  wrong shape for {k}: {tuple(shapes[k])}, expected {tuple(want[k])}")
    if len(wrong) > _LIST_LIMIT:
        lines.append(f"  ... and {len(wrong) - _LIST_LIMIT} more wrong shapes")
    lines += ["  hint: " + h for h in _hints(cfg, missing, unexpected)]
    lines.append("Fix: use the config.json that was saved with these weights.")
    raise CheckpointError("\n".join(lines))


def _check_float_dtypes(sources: Mapping[str, TensorInfo], where: str) -> None:
    bad = sorted(f"{k} ({v.dtype})" for k, v in sources.items() if v.dtype not in FLOAT_DTYPES)
    if bad:
        raise CheckpointError(f"{where}: these tensors are not floating point ({'/'.join(FLOAT_DTYPES)}): "
                              + _listing(bad) + ". Fix: export the float weights, not a quantised copy.")


def check_finite(name: str, array: np.ndarray, where: str | Path) -> np.ndarray:
    """Raise CheckpointError naming the tensor if it holds NaN or ±Inf; return the array."""
    a = np.asarray(array)
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a)
        if bad.any():
            first = np.unravel_index(int(np.flatnonzero(bad)[0]), a.shape) if a.ndim else ()
            raise CheckpointError(
                f"{where}: tensor {name} holds {int(bad.sum())} non-finite value(s) "
                f"(first: {a[first]} at index {tuple(int(i) for i in first)}); the weights are damaged "
                "or training diverged. Fix: re-export the checkpoint from a good copy")
    return a


def _read_checked(info: TensorInfo) -> np.ndarray:
    return check_finite(info.name, read_float32(info), info.file)


def _open_reference(path: str | Path) -> ReferenceCheckpoint:
    ref = ReferenceCheckpoint.open(path)
    where = str(ref.weight_files()[0] if len(ref.weight_files()) == 1 else ref.root / INDEX_FILE)
    check_state_dict(ref.config, ref.shapes(), where=where)
    _check_float_dtypes(ref.sources, where)
    return ref


# ------------------------------------------------------------ packed file
@dataclass
class PackedWeights:
    """An opened ``packed.safetensors``: indexed and checked, read per BitLinear on demand."""

    path: Path
    layouts: tuple[str, ...]
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    shapes: dict[str, tuple[int, int]]          # BitLinear prefix -> (out, in)

    def packed(self, prefix: str, layout: str) -> np.ndarray:
        """The stored bytes of one BitLinear in one layout: uint8 (out, row_bytes)."""
        if layout not in self.layouts:
            raise CheckpointError(f"{self.path} holds layouts {', '.join(self.layouts)}, not {layout!r}; "
                                  f"re-import with --layouts {','.join(self.layouts + (layout,))}")
        return read_array(self.tensors[packed_key(prefix, layout)])

    def gamma(self, prefix: str) -> float:
        g = float(read_array(self.tensors[gamma_key(prefix)])[0])
        if not (np.isfinite(g) and g > 0):
            raise CheckpointError(f"{self.path}: {gamma_key(prefix)} = {g!r}; γ must be a finite positive "
                                  "number (1/mean|W|): the file is damaged. Fix: re-create it from the float "
                                  "weights with `mmfree import SRC DST --force`")
        return g

    def ternary(self, prefix: str, layout: str | None = None) -> TernaryWeight:
        """W_q and γ of one BitLinear, unpacked from ``layout`` (default: the simplest stored)."""
        layout = layout or ("2bit" if "2bit" in self.layouts else self.layouts[0])
        try:
            w_q = unpack_ternary(self.packed(prefix, layout), self.shapes[prefix][1], layout)
        except ValueError as e:
            raise CheckpointError(f"{self.path}: {packed_key(prefix, layout)}: {e}") from None
        return TernaryWeight(w_q=w_q, gamma=self.gamma(prefix))

    def recorded_sha256(self, prefix: str) -> str | None:
        return self.metadata.get(_HASH_PREFIX + prefix + ".weight")

    def packed_keys(self, prefix: str) -> list[str]:
        return [packed_key(prefix, lay) for lay in self.layouts] + [gamma_key(prefix)]


def read_packed(root: str | Path, cfg: ModelConfig) -> PackedWeights:
    """Open ``root/packed.safetensors`` and check it against ``cfg`` (format, keys, shapes)."""
    path = Path(root) / PACKED_FILE
    tensors, meta = read_header(path)
    validate_with_library(path)
    if meta.get("format") != PACKED_FORMAT:
        raise CheckpointError(f"{path}: not an mmfree packed-weights file (metadata format "
                              f"{meta.get('format')!r}, expected {PACKED_FORMAT!r})")
    if meta.get("version") != PACKED_VERSION:
        raise CheckpointError(f"{path}: packed format version {meta.get('version')!r} is not "
                              f"{PACKED_VERSION!r}; re-create it with `mmfree import SRC DST --force`")
    layouts = tuple(x for x in meta.get("layouts", "").split(",") if x)
    unknown = [x for x in layouts if x not in LAYOUTS]
    if not layouts or unknown:
        raise CheckpointError(f"{path}: metadata 'layouts' = {meta.get('layouts')!r} names no known "
                              f"packing layout ({', '.join(LAYOUTS)})")
    want_shapes = expected_shapes(cfg)
    shapes = {p: want_shapes[p + ".weight"] for p in bitlinear_names(cfg)}
    want: dict[str, tuple[str, tuple[int, ...]]] = {}
    for p, (n_out, n_in) in shapes.items():
        for layout in layouts:
            want[packed_key(p, layout)] = ("U8", (n_out, row_bytes(n_in, layout)))
        want[gamma_key(p)] = ("F64", (1,))
    have = {k: (v.dtype, v.shape) for k, v in tensors.items()}
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    wrong = sorted(f"{k}: {have[k][0]} {have[k][1]}, expected {want[k][0]} {want[k][1]}"
                   for k in set(want) & set(have) if have[k] != want[k])
    if missing or unexpected or wrong:
        lines = [f"{path} does not match config.json:"]
        if missing:
            lines.append("  missing keys: " + _listing(missing))
        if unexpected:
            lines.append("  unexpected keys: " + _listing(unexpected))
        lines += ["  wrong " + w for w in wrong[:_LIST_LIMIT]]
        lines.append("Fix: re-create it from the float weights with `mmfree import SRC DST --force`.")
        raise CheckpointError("\n".join(lines))
    return PackedWeights(path, layouts, tensors, meta, shapes)


def _verify_hashes(ref: ReferenceCheckpoint, packed: PackedWeights) -> list[str]:
    """Check the recorded hashes of the float and packed tensors.

    Returns the BitLinear prefixes that have no recorded hash (an older file):
    the caller verifies those by re-quantising.
    """
    stale, damaged, unrecorded = [], [], []
    for p in packed.shapes:
        recorded = packed.recorded_sha256(p)
        keys = packed.packed_keys(p)
        packed_hashes = [packed.metadata.get(_HASH_PREFIX + k) for k in keys]
        if recorded is None or None in packed_hashes:
            unrecorded.append(p)
            continue
        if recorded != sha256_of(ref.sources[p + ".weight"]):
            stale.append(p + ".weight")
        damaged += [k for k, h in zip(keys, packed_hashes) if h != sha256_of(packed.tensors[k])]
    if damaged:
        raise CheckpointError(f"{packed.path} is damaged: these packed tensors do not match the SHA-256 "
                              f"recorded when they were written: {_listing(damaged)}. Fix: re-create it "
                              "from the float weights with `mmfree import SRC DST --force` (or "
                              "save_checkpoint).")
    if stale:
        raise CheckpointError(f"{packed.path} is stale: these float weights in {WEIGHTS_FILE} changed "
                              f"since they were packed: {_listing(stale)}. Fix: re-pack with "
                              "`mmfree import DIR NEWDIR` (or save_checkpoint), or load with verify='none' "
                              "to use the packed weights as they are.")
    return unrecorded


def _verify_full(name: str, layout: str, packed: TernaryWeight, fresh: TernaryWeight, path: Path) -> None:
    if fresh.gamma != packed.gamma or not np.array_equal(fresh.w_q, packed.w_q):
        flips = int(np.count_nonzero(fresh.w_q != packed.w_q))
        raise CheckpointError(f"{path}: {name} ({layout}) does not match its float weight (γ {packed.gamma!r} vs "
                              f"{fresh.gamma!r}, {flips} ternary values differ). Fix: re-pack with "
                              "`mmfree import DIR NEWDIR`.")


# ----------------------------------------------------------------- loading
def _quantizable(info: TensorInfo) -> np.ndarray:
    """The float tensor exactly as MMFreeLM would hold it (float32 values), without widening fp16.

    fp16 → float64 inside quantize_weights equals fp16 → float32 → float64, so
    passing fp16 through saves a float32 copy of the largest tensors.
    """
    a = read_array(info)                      # BF16 arrives as float32 already
    a = a if a.dtype in (np.float16, np.float32) else a.astype(np.float32)
    return check_finite(info.name, a, info.file)


class CheckpointParams(MutableMapping):
    """``model.params`` of a lean model: a float32 state dict whose BitLinear weights stay on disk.

    Norms, embeddings and lower bounds are held in memory (inference reads
    them every token); a BitLinear's float weight is read from the checkpoint
    file each time it is asked for (``to_keras``, ``save_checkpoint``), which
    is rare. Assigning a key keeps the new value in memory. The files are
    fingerprinted (size, modification time) at load time: reading from a file
    that changed since raises CheckpointError instead of mixing two models.
    """

    def __init__(self, resident: dict[str, np.ndarray], on_disk: Mapping[str, TensorInfo]):
        self._resident = dict(resident)
        self._on_disk = dict(on_disk)
        self._stamps = {f: self._stamp(f) for f in {t.file for t in self._on_disk.values()}}

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int]:
        st = path.stat()
        return st.st_size, st.st_mtime_ns

    def in_memory(self) -> list[str]:
        """Keys whose values are held in memory (the rest are read from disk on access)."""
        return list(self._resident)

    def files(self) -> list[Path]:
        return sorted(self._stamps)

    def shape(self, key: str) -> tuple[int, ...]:
        """A value's shape without reading it from disk."""
        return self._on_disk[key].shape if key not in self._resident else self._resident[key].shape

    def __getitem__(self, key: str) -> np.ndarray:
        if key in self._resident:
            return self._resident[key]
        info = self._on_disk[key]
        if not info.file.is_file() or self._stamp(info.file) != self._stamps[info.file]:
            raise CheckpointError(f"{info.file} changed since this model was loaded, so {key} cannot be "
                                  "read from it; load the checkpoint again (or pass keep_float=True "
                                  "to hold every weight in memory)")
        return read_float32(info)

    def __setitem__(self, key: str, value) -> None:
        self._resident[key] = np.asarray(value, dtype=np.float32)
        self._on_disk.pop(key, None)

    def __delitem__(self, key: str) -> None:
        if key in self._resident:
            del self._resident[key]
        else:
            del self._on_disk[key]

    def __contains__(self, key) -> bool:             # without reading the tensor
        return key in self._resident or key in self._on_disk

    def __iter__(self) -> Iterator[str]:
        yield from self._resident
        yield from (k for k in self._on_disk if k not in self._resident)

    def __len__(self) -> int:
        return len(self._resident) + len(self._on_disk)

    def __repr__(self) -> str:
        return (f"CheckpointParams({len(self._resident)} tensors in memory, "
                f"{len(self._on_disk)} read from {', '.join(str(f) for f in self.files())} on access)")


def load_checkpoint(path: str | Path, *, keep_float: bool = False, verify: str = "hash") -> MMFreeLM:
    """Load a checkpoint directory (reference layout or ours) into the numpy model.

    ``keep_float=False`` (default): the model holds what inference needs --
    ternary W_q (int8) and γ, norms, embeddings, lower bounds -- and
    ``model.params`` (a :class:`CheckpointParams`) reads a BitLinear's float
    weight from the checkpoint when asked (``to_keras``, ``save_checkpoint``).
    ``keep_float=True``: every weight also held in memory as float32
    (a plain dict), for training or editing weights; about 3x more memory.
    ``verify``: how packed weights are checked against the float ones
    (``"hash"``, ``"full"`` or ``"none"``; see the module docstring).
    """
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify={verify!r}; choose one of {', '.join(VERIFY_MODES)}")
    ref = _open_reference(path)
    cfg = ref.config
    names = bitlinear_names(cfg)
    packed = read_packed(ref.root, cfg) if (ref.root / PACKED_FILE).is_file() else None
    requantize: set[str] = set()            # BitLinears checked by re-quantising
    if packed is not None and verify == "hash":
        requantize = set(_verify_hashes(ref, packed))
    elif packed is not None and verify == "full":
        requantize = set(names)

    if keep_float:
        model = MMFreeLM(cfg, {k: _read_checked(info) for k, info in ref.sources.items()})
        if packed is not None:
            for p in names:
                packed.gamma(p)                              # γ is range-checked in every mode
                if p in requantize:
                    for layout in packed.layouts:
                        _verify_full(p, layout, packed.ternary(p, layout), model.ternary[p], packed.path)
        return model

    weight_keys = {p + ".weight" for p in names}
    ternary: dict[str, TernaryWeight] = {}
    # Largest first: its quantisation temporaries peak while little else is held.
    for p in sorted(names, key=lambda p: -ref.sources[p + ".weight"].size):
        if packed is not None:
            ternary[p] = packed.ternary(p)
            if p in requantize:
                fresh = quantize_weights(_quantizable(ref.sources[p + ".weight"]))
                for layout in packed.layouts:
                    _verify_full(p, layout, packed.ternary(p, layout), fresh, packed.path)
        else:
            ternary[p] = quantize_weights(_quantizable(ref.sources[p + ".weight"]))
    resident = {k: _read_checked(info) for k, info in ref.sources.items() if k not in weight_keys}
    params = CheckpointParams(resident, {k: ref.sources[k] for k in sorted(weight_keys)})
    # No float copy of the BitLinear weights: the model reads them from disk on demand.
    return MMFreeLM.from_ternary(cfg, params, {p: ternary[p] for p in names})


# ----------------------------------------------------------------- writing
def _written_by_us(out: Path) -> bool:
    """A checkpoint written before directories carried a marker: its packed file says so."""
    try:
        return read_header(out / PACKED_FILE)[1].get("format") == PACKED_FORMAT
    except (OSError, CheckpointError):
        return False


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse to write into a non-empty directory unless told and it is a checkpoint we wrote;
    then remove only checkpoint files (anything else the user put there stays)."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        try:
            ensure_replaceable(out, CHECKPOINT_KIND, force=overwrite, option="output directory",
                               legacy_markers=(PACKED_FILE,) if _written_by_us(out) else (),
                               what="checkpoint")
        except FileExistsError as e:
            if not overwrite and "pass --force" in str(e):
                raise FileExistsError(f"{out} already exists and is not empty; pass overwrite=True "
                                      "(or --force) to replace the checkpoint in it") from None
            raise
        shards = []
        index = out / INDEX_FILE
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
            except (ValueError, AttributeError):
                shards = []
        for name in (CONFIG_FILE, WEIGHTS_FILE, INDEX_FILE, PACKED_FILE, *AUX_FILES, *shards):
            if not isinstance(name, str):
                continue
            f = out / name
            if f.is_file() and f.parent == out:        # never follow a '../' from a shard index
                with io_errors(f):
                    f.unlink()
    make_output_dir(out, CHECKPOINT_KIND)


def _write_packed(out: Path, cfg: ModelConfig, quantized: Iterable[tuple[str, TernaryWeight]],
                  hashes: Mapping[str, str], float_dtype: str, layouts: Sequence[str]) -> Path:
    """packed.safetensors from (prefix, TernaryWeight) pairs, consumed one at a time."""
    layouts = tuple(dict.fromkeys(layouts))
    for layout in layouts:
        packed_key("x", layout)                    # validates the name
    shapes = expected_shapes(cfg)
    names = bitlinear_names(cfg)
    specs = []
    for p in names:
        n_out, n_in = shapes[p + ".weight"]
        specs += [TensorSpec(packed_key(p, lay), "U8", (n_out, row_bytes(n_in, lay))) for lay in layouts]
        specs.append(TensorSpec(gamma_key(p), "F64", (1,)))
    meta = {"format": PACKED_FORMAT, "version": PACKED_VERSION, "layouts": ",".join(layouts),
            "float_dtype": float_dtype,
            "quantization": "per-tensor absmean ternary weights (gamma), per-token absmax int8 activations"}
    meta.update({_HASH_PREFIX + p + ".weight": hashes[p + ".weight"] for p in names})
    path = out / PACKED_FILE
    record = {_HASH_PREFIX + s.name: s.name for s in specs}
    with SafetensorsWriter(path, specs, meta, record_hashes=record) as w:
        for p, tw in quantized:
            for lay in layouts:
                w.write(packed_key(p, lay), pack_ternary(tw.w_q, lay))
            w.write(gamma_key(p), np.array([tw.gamma], dtype=np.float64))
    return path


def save_checkpoint(model_or_cfg, path: str | Path, state_dict: Mapping[str, np.ndarray] | None = None,
                    overwrite: bool = False, layouts: Sequence[str] = DEFAULT_LAYOUTS) -> Path:
    """Write our checkpoint: ``config.json`` + ``model.safetensors`` (float32) + ``packed.safetensors``.

    Takes an :class:`MMFreeLM` holding float weights, or a config and a state dict.
    The packed weights are quantised afresh from the float weights written,
    so the two files always agree.
    """
    if isinstance(model_or_cfg, MMFreeLM):
        cfg, state_dict = model_or_cfg.config, model_or_cfg.params
    else:
        cfg = model_or_cfg
        if state_dict is None:
            raise ValueError("save_checkpoint(config, path) needs the state_dict too")
    if isinstance(state_dict, CheckpointParams):
        shapes = {k: state_dict.shape(k) for k in state_dict}
    else:
        shapes = {k: np.shape(v) for k, v in state_dict.items()}
    check_state_dict(cfg, shapes, where="state dict")
    out = Path(path)
    if isinstance(state_dict, CheckpointParams) and out.exists() and any(
            f.parent.resolve() == out.resolve() for f in state_dict.files()):
        raise ValueError(f"{out} is the checkpoint this model reads its float weights from; "
                         "save to another directory")
    _prepare_out_dir(out, overwrite)

    keys = list(expected_shapes(cfg))
    with SafetensorsWriter(out / WEIGHTS_FILE,
                           [TensorSpec(k, "F32", tuple(np.shape(state_dict[k]))) for k in keys]) as w:
        hashes = {k: w.write(k, check_finite(k, np.asarray(state_dict[k], dtype=np.float32), "state dict"))
                  for k in keys}
    _write_packed(out, cfg,
                  ((p, quantize_weights(np.asarray(state_dict[p + ".weight"], dtype=np.float32)))
                   for p in bitlinear_names(cfg)),
                  hashes, "F32", layouts)
    cfg.to_json(out / CONFIG_FILE)
    return out


def import_checkpoint(src: str | Path, dst: str | Path, *, force: bool = False,
                      layouts: Sequence[str] = DEFAULT_LAYOUTS) -> Path:
    """Reference checkpoint ``src`` -> our checkpoint ``dst``, one tensor at a time.

    Float weights are copied byte for byte (dtype kept, shards merged into one
    file); every BitLinear is quantised once and stored packed; tokenizer
    files are carried over.
    """
    ref = _open_reference(src)
    out = Path(dst)
    if out.exists() and out.resolve() == ref.root.resolve():
        raise ValueError(f"import into the source directory {out} is not possible; choose another DST")
    cfg = ref.config
    for k, info in ref.sources.items():          # NaN/Inf anywhere: refuse before writing anything
        check_finite(k, read_array(info), info.file)
    _prepare_out_dir(out, force)
    shapes = expected_shapes(cfg)
    with SafetensorsWriter(out / WEIGHTS_FILE,
                           [TensorSpec(k, ref.sources[k].dtype, shapes[k]) for k in shapes],
                           {"format": "pt"}) as w:
        hashes = {k: w.copy(k, ref.sources[k]) for k in shapes}
    dtypes = sorted({ref.sources[p + ".weight"].dtype for p in bitlinear_names(cfg)})
    _write_packed(out, cfg,
                  ((p, quantize_weights(_quantizable(ref.sources[p + ".weight"])))
                   for p in bitlinear_names(cfg)),
                  hashes, ",".join(dtypes), layouts)
    for f in ref.aux_files():
        atomic_copy(f, out / f.name)
    cfg.to_json(out / CONFIG_FILE)
    return out


def summarize(path: str | Path) -> dict:
    """What a checkpoint (directory or config.json) holds and costs, from its config and
    headers alone: sizes, parameters, packed bytes, state, files, tokenizer (``mmfree info``)."""
    from .hgrn_bit import find_weight_tensors, map_reference_config, read_config_json
    from .packing import BITS_PER_WEIGHT, packed_size
    from .tokenizer import CONFIG_KEY, TOKENIZER_FILE

    p = Path(path)
    if p.is_file():
        if p.suffix != ".json":
            raise FileNotFoundError(f"{p} is a file; pass the checkpoint directory that holds it "
                                    f"({p.parent}) or its {CONFIG_FILE}")
        try:
            root, raw = p.parent, json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{p}: not UTF-8 JSON ({e})") from None
        where = str(p)
    else:
        root, raw = p, read_config_json(p)
        where = str(p / CONFIG_FILE)
    cfg, tied = map_reference_config(raw, where=where)
    shapes = expected_shapes(cfg)
    names = bitlinear_names(cfg)
    ternary = cfg.ternary_weight_count()
    params = cfg.parameter_count()
    out: dict = {
        "path": str(p),
        "model": {"model_type": cfg.model_type, "hidden_size": cfg.d, "num_hidden_layers": cfg.num_hidden_layers,
                  "recurrence_width": cfg.input_dim, "intermediate_size": cfg.ffn_dim,
                  "vocab_size": cfg.vocab_size, "use_lower_bound": cfg.use_lower_bound,
                  "rms_norm_eps": cfg.rms_norm_eps, "bitlinear_layers": len(names),
                  "tied_head_in_source": tied},
        "parameters": {"total": params, "ternary": ternary, "float": params - ternary},
        "packed_bytes": {lay: sum(packed_size(shapes[n + ".weight"], lay) for n in names) for lay in LAYOUTS},
        "packed_bytes_ideal": {lay: ternary * BITS_PER_WEIGHT[lay] / 8 for lay in LAYOUTS},
        "state": {"values_per_token": cfg.num_hidden_layers * cfg.state_size,
                  "bytes_fp32": 4 * cfg.num_hidden_layers * cfg.state_size},
        "fp16_bytes": 2 * params,
    }
    files = {}
    if root.is_dir():
        try:
            tensors = find_weight_tensors(root)
            out["stored_dtypes"] = sorted({t.dtype for t in tensors.values()})
            for f in sorted({t.file for t in tensors.values()}):
                files[f.name] = f.stat().st_size
        except (FileNotFoundError, ValueError) as e:
            out["weights_note"] = str(e).splitlines()[0]
        if (root / PACKED_FILE).is_file():
            files[PACKED_FILE] = (root / PACKED_FILE).stat().st_size
            out["packed_layouts"] = read_header(root / PACKED_FILE)[1].get("layouts", "").split(",")
        if (root / TOKENIZER_FILE).is_file():
            out["tokenizer"] = TOKENIZER_FILE
        elif CONFIG_KEY in raw:
            out["tokenizer"] = f"built-in {raw[CONFIG_KEY].get('type', '?')} ({CONFIG_KEY} in config.json)"
        else:
            out["tokenizer"] = None
    out["files"] = files
    return out

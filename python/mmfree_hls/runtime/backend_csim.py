"""C-simulation backend: the engine's own C++ compiled with g++ (the one binding).

ABI version 3, fixed here and nowhere else (a manifest never chooses a symbol,
an argument order or a buffer size):

    extern "C" int mmfree_abi(void);                                  // 3
    extern "C" int mmfree_info(int* d, int* L, int* e, int* V);       // 0 = ok
    extern "C" int mmfree_lanes(int* lanes, int* slots, int* topk);   // 0 = ok
    extern "C" int mmfree_step(int n, int mode, int slot, unsigned load_mask, unsigned store_mask,
                               const float* x_in, float* state, float* logits, int* top,
                               const unsigned char* weights);         // status; -2 = bad arguments
    extern "C" unsigned long long mmfree_cycles(void);                // of the last pass

One call is a pass: the weight stream read once for ``n`` token lanes
(mmfree_engine.h, compute_pass). ``mode`` bits: PREFILL (lanes are
consecutive tokens of the sequence in ``slot``), HEAD (compute logits),
FULL_LOGITS (write all of them, rows x lanes; else only the top-k).
``load_mask`` / ``store_mask``: slots whose state comes from / goes to the
``state`` buffer (slots x L x e); the others stay on chip between passes.
``top`` receives 2 x topk rows of lanes int32: the ids of entry k (-1 past the
entries), then their float32 bits (runtime/buffers.py).
``weights`` is NULL for the on-chip tier and the whole weights buffer
(header + K port regions, mmfree_hls.engine.layout) for the streamed tier.
The buffers are plain numpy arrays laid out exactly as on the board
(:mod:`.buffers`), so the host code above this module cannot tell the two
backends apart.
"""

from __future__ import annotations

import ctypes
import platform
import threading
from pathlib import Path
from typing import Optional

import numpy as np

from .buffers import (MODE_FULL_LOGITS, MODE_HEAD, MODE_PREFILL, STEP_PASS, WEIGHTS_PORT, BufferLayout,
                      DeviceBuffers, numpy_allocate)
from .errors import AcceleratorError, BackendUnavailableError, DeviceTimeoutError, ManifestError

ABI_VERSION = 3
ABI_SYMBOL = "mmfree_abi"
CYCLES_SYMBOL = "mmfree_cycles"
STEP_SYMBOL = "mmfree_step"
INFO_SYMBOL = "mmfree_info"
LANES_SYMBOL = "mmfree_lanes"


# ELF e_machine codes of the CPUs a user meets: a workstation and the boards' Arm cores.
_ELF_MACHINES = {0x3E: "x86_64", 0xB7: "aarch64", 0x28: "arm"}
_HOST_MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64",
                  "armv7l": "arm", "armv8l": "arm"}


def library_machine(path: Path) -> Optional[str]:
    """The CPU an ELF shared library was built for, or None if it is not ELF / unknown."""
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    order = "little" if head[5] == 1 else "big"
    return _ELF_MACHINES.get(int.from_bytes(head[18:20], order))


def library_dimensions(lib) -> tuple[tuple[int, int, int, int], int]:
    """((d, L, e, V), return code) that a loaded library reports through ``mmfree_info``."""
    info = getattr(lib, INFO_SYMBOL)
    info.restype = ctypes.c_int
    info.argtypes = [ctypes.POINTER(ctypes.c_int)] * 4
    vals = [ctypes.c_int(0) for _ in range(4)]
    rc = info(*[ctypes.byref(v) for v in vals])
    return tuple(v.value for v in vals), rc




def _f32(a: np.ndarray, n: int, what: str) -> np.ndarray:
    if a.dtype != np.float32 or a.ndim != 1 or a.size != n or not a.flags.c_contiguous:
        raise AcceleratorError(f"{what} must be a contiguous float32 vector of {n} values, "
                               f"got {a.dtype} {a.shape}")
    return a


class CSimLibrary:
    """ctypes binding of a compiled engine library (ABI version 3)."""

    def __init__(self, path: str | Path, weights: Optional[np.ndarray] = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise BackendUnavailableError(
                f"C-simulation library {self.path} does not exist; build it with `mmfree convert` "
                "(project.compile()) and re-run `mmfree package`")
        built_for = library_machine(self.path)
        here = _HOST_MACHINES.get(platform.machine().lower())
        if built_for is None:
            raise BackendUnavailableError(f"{self.path} is not a shared library (empty or damaged); "
                                          "rebuild it with `mmfree convert`")
        if here and built_for != here:
            raise BackendUnavailableError(
                f"{self.path} was built for {built_for} but this machine is {here}; rebuild the "
                "C-simulation from the sources in the overlay's csim/ directory on this machine, "
                "or use backend='pynq' with the bitstream")
        try:
            lib = ctypes.CDLL(str(self.path.resolve()))
        except OSError as e:
            raise BackendUnavailableError(f"cannot load {self.path}: {e}") from None
        missing = [s for s in (ABI_SYMBOL, INFO_SYMBOL, LANES_SYMBOL, STEP_SYMBOL, CYCLES_SYMBOL)
                   if not hasattr(lib, s)]
        if missing:
            raise BackendUnavailableError(
                f"{self.path} does not export {', '.join(missing)}: it is not an mmfree engine "
                f"C-simulation library of ABI version {ABI_VERSION}; rebuild it with `mmfree convert`")
        lib.mmfree_abi.restype = ctypes.c_int
        abi = lib.mmfree_abi()
        if abi != ABI_VERSION:
            raise BackendUnavailableError(f"{self.path} implements C-sim ABI version {abi}, this host "
                                          f"speaks version {ABI_VERSION}; rebuild it with `mmfree convert`")
        self._lib = lib
        self._step = lib.mmfree_step
        self._step.restype = ctypes.c_int
        # plain addresses: .ctypes.data is an int, data_as() builds a ctypes object per call
        self._step.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_uint, ctypes.c_uint] + \
            [ctypes.c_void_p] * 5
        lib.mmfree_cycles.restype = ctypes.c_ulonglong
        lib.mmfree_cycles.argtypes = []
        (self.d, self.L, self.e, self.V), rc = library_dimensions(lib)
        if rc != 0:
            raise BackendUnavailableError(f"{self.path}: mmfree_info returned {rc}")
        lanes = getattr(lib, LANES_SYMBOL)
        lanes.restype = ctypes.c_int
        lanes.argtypes = [ctypes.POINTER(ctypes.c_int)] * 3
        vals = [ctypes.c_int(0) for _ in range(3)]
        rc = lanes(*[ctypes.byref(v) for v in vals])
        self.lanes, self.slots, self.topk = (v.value for v in vals)
        if rc != 0 or not (1 <= self.slots <= 32 and 1 <= self.lanes <= 64 and 1 <= self.topk <= 64):
            raise BackendUnavailableError(f"{self.path}: mmfree_lanes returned {rc} "
                                          f"(lanes {self.lanes}, slots {self.slots}, topk {self.topk})")
        self.weights = None if weights is None else np.ascontiguousarray(weights, dtype=np.uint8)
        self._w_addr = None if self.weights is None else self.weights.ctypes.data

    @property
    def cycles(self) -> int:
        """Engine cycles the last pass counted (the schedule's trip counts x II)."""
        return int(self._lib.mmfree_cycles())

    def call(self, n: int, mode: int, slot: int, load_mask: int, store_mask: int, x_in: np.ndarray,
             state: np.ndarray, logits: np.ndarray, top: np.ndarray,
             weights: Optional[np.ndarray] = None) -> int:
        """One pass on caller-owned buffers (sizes checked); returns the pass's status."""
        _f32(x_in, self.lanes * self.d, "x_in")
        _f32(state, self.slots * self.L * self.e, "state")
        _f32(logits, self.V * self.lanes, "logits")
        if top.dtype != np.int32 or top.size != 2 * self.lanes * self.topk or not top.flags.c_contiguous:
            raise AcceleratorError(f"top must be a contiguous int32 array of {2 * self.lanes * self.topk} values")
        w = self.weights if weights is None else weights
        return self._step(int(n), int(mode), int(slot), int(load_mask), int(store_mask), x_in.ctypes.data,
                          state.ctypes.data, logits.ctypes.data, top.ctypes.data,
                          None if w is None else w.ctypes.data)

    def buffers(self) -> dict:
        """Fresh buffers of this build's sizes (what call() takes)."""
        return {"x_in": np.zeros(self.lanes * self.d, np.float32),
                "state": np.zeros(self.slots * self.L * self.e, np.float32),
                "logits": np.zeros(self.V * self.lanes, np.float32),
                "top": np.zeros(2 * self.lanes * self.topk, np.int32)}

    def _pass(self, xs, states, prefill: bool, slot: int, head: bool, full_logits: bool, store):
        """A pass on the binding's own buffers (allocated once; a pass reads only its n lanes and the
        loaded slots): (logits (n, V) or None, top or None, {slot: state}, status). A refused call
        (negative return) raises; a status is returned."""
        xs = np.atleast_2d(np.asarray(xs, np.float32))
        n = xs.shape[0]
        if not hasattr(self, "_bufs"):
            self._bufs = self.buffers()
        b = self._bufs
        b["x_in"][:n * self.d] = xs.reshape(-1)
        st = b["state"].reshape(self.slots, self.L * self.e)
        load_mask = 0
        for q, s in (states or {}).items():
            st[q] = np.asarray(s, np.float32).reshape(-1)
            load_mask |= 1 << q
        store_mask = sum(1 << q for q in (store or []))
        mode = (MODE_PREFILL if prefill else 0) | (MODE_HEAD if head else 0) | (MODE_FULL_LOGITS if full_logits else 0)
        rc = self.call(n, mode, slot, load_mask, store_mask, b["x_in"], b["state"], b["logits"], b["top"])
        if rc < 0:
            raise AcceleratorError(f"{STEP_SYMBOL} returned {rc}: " + describe_status(rc))
        logits = b["logits"].reshape(self.V, self.lanes).T[:n].copy() if (head and full_logits) else None
        rows = b["top"].reshape(2, self.topk, self.lanes)
        top = [(rows[0, :, t].copy(), rows[1, :, t].copy().view(np.float32)) for t in range(n)] if head else None
        return logits, top, {q: st[q].reshape(self.L, self.e).copy() for q in (store or [])}, rc

    def run_pass(self, xs, states=None, *, prefill: bool = False, slot: int = 0, head: bool = True,
                 full_logits: bool = True, load: Optional[list] = None, store: Optional[list] = None):
        """A pass: xs (n, d); states {slot: (L, e)} to load; returns (logits (n, V) or None, top
        [(ids, values)] per lane, {slot: state} of ``store``); a non-zero status raises."""
        logits, top, states_out, rc = self._pass(xs, states, prefill, slot, head, full_logits, store)
        if rc != 0:
            raise AcceleratorError(f"{STEP_SYMBOL} returned {rc}: " + describe_status(rc))
        return logits, top, states_out

    def step_status(self, x, state) -> tuple[np.ndarray, np.ndarray, int]:
        """One token of one sequence, its state through the host (slot 0): (x_t (d,), s_{t-1}
        (L, e)) -> (logits (V,), s_t (L, e), status), float32 new arrays; a status is not raised."""
        s = np.asarray(state, dtype=np.float32)
        if s.size != self.L * self.e:
            raise AcceleratorError(f"state must hold {self.L} x {self.e} values, got shape {np.shape(state)}")
        logits, _, out, rc = self._pass(np.ravel(x)[None], {0: s}, False, 0, True, True, [0])
        return logits[0], out[0], rc

    def step(self, x, state) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`step_status`, raising on a non-zero status."""
        logits, s, rc = self.step_status(x, state)
        if rc != 0:
            raise AcceleratorError(f"{STEP_SYMBOL} returned {rc}: " + describe_status(rc))
        return logits, s


def describe_status(rc: int) -> str:
    """The engine's status bits in words."""
    if rc == -2:
        return "the library refused the arguments (lanes, slot or masks outside what this build holds)"
    if rc < 0:
        return "the library refused the call (no weights buffer for the streamed tier)"
    parts = []
    if rc & 1:
        parts.append("x or the state held NaN/Inf")
    if rc & 2:
        parts.append("a value saturated the engine's 32-bit vectors (raise the range: a smaller frac_bits)")
    return "; ".join(parts) or f"unknown status {rc}"


class CSimBackend:
    """Runs one decode step by calling the C-simulation library on numpy buffers."""

    name = "csim"

    def __init__(self, library: str | Path, layout: BufferLayout, timeout_s: Optional[float] = None):
        if timeout_s is not None and not (isinstance(timeout_s, (int, float)) and 0 < timeout_s < float("inf")):
            raise AcceleratorError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        self.layout = layout
        self.lib = CSimLibrary(library)
        self.library = self.lib.path
        # None = call synchronously (no overhead); a number runs the call in a
        # worker thread so a hung simulation surfaces as DeviceTimeoutError.
        self.timeout_s = timeout_s
        self._pending: Optional[threading.Thread] = None
        self._rc: Optional[int] = None
        self._buffers: Optional[DeviceBuffers] = None
        self.check_dimensions()

    def check_dimensions(self) -> None:
        """Refuse a library compiled for another model (mmfree_info vs the manifest)."""
        got = (self.lib.d, self.lib.L, self.lib.e, self.lib.V, self.lib.lanes, self.lib.slots, self.lib.topk)
        lay = self.layout
        want = (lay.d, lay.L, lay.e, lay.V, lay.lanes, lay.slots, lay.topk)
        if got != want:
            names = ("d", "L", "e", "V", "lanes", "slots", "topk")
            fmt = lambda v: ", ".join(f"{k}={x}" for k, x in zip(names, v))
            raise ManifestError(
                f"{self.library} was compiled for {fmt(got)} but the manifest describes {fmt(want)}; "
                "re-run `mmfree package` from the HLS project that built this library")

    @property
    def cycles(self) -> int:
        return self.lib.cycles

    # --------------------------------------------------------------- buffers
    def allocate(self, layout: BufferLayout) -> DeviceBuffers:
        self._buffers = DeviceBuffers(layout, numpy_allocate)
        return self._buffers

    def sync_to_device(self, buffers: DeviceBuffers, names) -> None:
        """Host memory is device memory here: nothing to flush."""

    def sync_from_device(self, buffers: DeviceBuffers, names) -> None:
        """Nothing to invalidate either."""

    # ------------------------------------------------------------------- run
    def _call(self, args: dict) -> None:
        b = self._buffers
        w = b[WEIGHTS_PORT] if WEIGHTS_PORT in self.layout.specs else None
        self._rc = self.lib.call(args["n"], args["mode"], args["slot"], args["load_mask"], args["store_mask"],
                                 b["x_in"], b["state"], b["logits"], b["top"], w)

    def wait_idle(self, timeout_s: Optional[float]) -> None:
        """Wait for a step abandoned by a timeout to finish before starting another."""
        if self._pending is not None:
            self._pending.join(timeout_s)
            if self._pending.is_alive():
                raise DeviceTimeoutError(
                    f"the C-simulation is still running a step that timed out earlier "
                    f"(waited {timeout_s} s more); close the accelerator and open it again")
            self._pending = None

    def run(self, **args) -> None:
        """One pass on the bound buffers (``args``: n, mode, slot, load_mask, store_mask; default
        the single-sequence step); raises on a non-zero return or a timeout."""
        if self._buffers is None:
            raise AcceleratorError("C-sim backend: allocate() the buffers before run()")
        args = {**STEP_PASS, **args}
        if self.timeout_s is None:
            self._call(args)
        else:
            self.wait_idle(self.timeout_s)
            worker = threading.Thread(target=self._call, args=(args,), name="mmfree-csim-step", daemon=True)
            self._rc = None
            worker.start()
            worker.join(self.timeout_s)
            if worker.is_alive():
                self._pending = worker
                raise DeviceTimeoutError(
                    f"the C-simulation step did not finish within {self.timeout_s} s "
                    "(raise timeout_s for large models)")
        if self._rc != 0:
            raise AcceleratorError(f"{STEP_SYMBOL} returned {self._rc} (0 means success): "
                                   + describe_status(self._rc or 0))

    def close(self) -> None:
        self._buffers = None

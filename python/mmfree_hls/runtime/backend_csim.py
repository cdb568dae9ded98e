"""C-simulation backend: the engine's own C++ compiled with g++ (the one binding).

ABI version 2, fixed here and nowhere else (a manifest never chooses a symbol,
an argument order or a buffer size):

    extern "C" int mmfree_abi(void);                                  // 2
    extern "C" int mmfree_info(int* d, int* L, int* e, int* V);       // 0 = ok
    extern "C" int mmfree_step(const float* x_in, float* state, float* logits,
                               const unsigned char* weights);         // 0 = ok
    extern "C" unsigned long long mmfree_cycles(void);                // of the last step

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

from .buffers import WEIGHTS_PORT, BufferLayout, DeviceBuffers, numpy_allocate
from .errors import AcceleratorError, BackendUnavailableError, DeviceTimeoutError, ManifestError

ABI_VERSION = 2
ABI_SYMBOL = "mmfree_abi"
CYCLES_SYMBOL = "mmfree_cycles"
STEP_SYMBOL = "mmfree_step"
INFO_SYMBOL = "mmfree_info"

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
    """ctypes binding of a compiled engine library (ABI version 2)."""

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
        missing = [s for s in (ABI_SYMBOL, INFO_SYMBOL, STEP_SYMBOL, CYCLES_SYMBOL) if not hasattr(lib, s)]
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
        self._step.argtypes = [ctypes.c_void_p] * 4
        lib.mmfree_cycles.restype = ctypes.c_ulonglong
        lib.mmfree_cycles.argtypes = []
        (self.d, self.L, self.e, self.V), rc = library_dimensions(lib)
        if rc != 0:
            raise BackendUnavailableError(f"{self.path}: mmfree_info returned {rc}")
        self.weights = None if weights is None else np.ascontiguousarray(weights, dtype=np.uint8)
        self._x = np.zeros(self.d, np.float32)
        self._x_addr = self._x.ctypes.data
        self._w_addr = None if self.weights is None else self.weights.ctypes.data

    @property
    def cycles(self) -> int:
        """Engine cycles the last step counted (the schedule's trip counts x II)."""
        return int(self._lib.mmfree_cycles())

    def call(self, x_in: np.ndarray, state: np.ndarray, logits: np.ndarray,
             weights: Optional[np.ndarray] = None) -> int:
        """One step on caller-owned buffers (sizes checked); returns the step's status."""
        _f32(x_in, self.d, "x_in")
        _f32(state, self.L * self.e, "state")
        _f32(logits, self.V, "logits")
        w = self.weights if weights is None else weights
        return self._step(x_in.ctypes.data, state.ctypes.data, logits.ctypes.data,
                          None if w is None else w.ctypes.data)

    def step(self, x, state) -> tuple[np.ndarray, np.ndarray]:
        """(x_t (d,), s_{t-1} (L, e)) -> (logits (V,), s_t (L, e)), float32 (new arrays)."""
        self._x[:] = np.ravel(x)
        s = np.array(state, dtype=np.float32, order="C")
        if s.size != self.L * self.e:
            raise AcceleratorError(f"state must hold {self.L} x {self.e} values, got shape {np.shape(state)}")
        logits = np.empty(self.V, np.float32)
        rc = self._step(self._x_addr, s.ctypes.data, logits.ctypes.data, self._w_addr)
        if rc != 0:
            raise AcceleratorError(f"{STEP_SYMBOL} returned {rc}: " + describe_status(rc))
        return logits, s.reshape(self.L, self.e)


def describe_status(rc: int) -> str:
    """The engine's status bits in words."""
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
    #: The state buffer travels through every call, so the host can read and set it.
    state_readable = True

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
        got = (self.lib.d, self.lib.L, self.lib.e, self.lib.V)
        want = (self.layout.d, self.layout.L, self.layout.e, self.layout.V)
        if got != want:
            raise ManifestError(
                f"{self.library} was compiled for d={got[0]}, L={got[1]}, e={got[2]}, V={got[3]} "
                f"but the manifest describes d={want[0]}, L={want[1]}, e={want[2]}, V={want[3]}; "
                "re-run `mmfree package` from the HLS project that built this library")

    @property
    def cycles(self) -> int:
        return self.lib.cycles

    # --------------------------------------------------------------- buffers
    def allocate(self, layout: BufferLayout) -> DeviceBuffers:
        self._buffers = DeviceBuffers(layout, numpy_allocate)
        return self._buffers

    def reset_state(self) -> None:
        """The zeroed state buffer is the reset: nothing else to do."""

    def sync_to_device(self, buffers: DeviceBuffers, names) -> None:
        """Host memory is device memory here: nothing to flush."""

    def sync_from_device(self, buffers: DeviceBuffers, names) -> None:
        """Nothing to invalidate either."""

    # ------------------------------------------------------------------- run
    def _call(self) -> None:
        b = self._buffers
        w = b[WEIGHTS_PORT] if WEIGHTS_PORT in self.layout.specs else None
        self._rc = self.lib.call(b["x_in"], b["state"], b["logits"], w)

    def wait_idle(self, timeout_s: Optional[float]) -> None:
        """Wait for a step abandoned by a timeout to finish before starting another."""
        if self._pending is not None:
            self._pending.join(timeout_s)
            if self._pending.is_alive():
                raise DeviceTimeoutError(
                    f"the C-simulation is still running a step that timed out earlier "
                    f"(waited {timeout_s} s more); close the accelerator and open it again")
            self._pending = None

    def run(self) -> None:
        """One decode step on the bound buffers; raises on a non-zero return or a timeout."""
        if self._buffers is None:
            raise AcceleratorError("C-sim backend: allocate() the buffers before run()")
        if self.timeout_s is None:
            self._call()
        else:
            self.wait_idle(self.timeout_s)
            worker = threading.Thread(target=self._call, name="mmfree-csim-step", daemon=True)
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

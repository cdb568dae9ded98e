"""C-simulation backend: the synthesised design's own C++ compiled with g++.

Binding of contract 2 (numpy + ctypes only):

    extern "C" int mmfree_step(const float* x_in, float* state, float* logits);  // 0 = ok
    extern "C" int mmfree_info(int* d, int* L, int* e, int* V);

The buffers are plain numpy arrays laid out exactly as on the board
(:mod:`.buffers`), so the host code above this module cannot tell the two
backends apart. The step symbol and its argument order come from the
manifest, so a design with more buffers (the streamed-weight tier) binds the
same way.
"""

from __future__ import annotations

import ctypes
import platform
import threading
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .buffers import STEP_PORTS, BufferLayout, DeviceBuffers, numpy_allocate
from .errors import AcceleratorError, BackendUnavailableError, DeviceTimeoutError, ManifestError

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


def _ctype_for(dtype: np.dtype):
    return {np.dtype("float32"): ctypes.c_float, np.dtype("uint8"): ctypes.c_uint8,
            np.dtype("int8"): ctypes.c_int8, np.dtype("int32"): ctypes.c_int32}[np.dtype(dtype)]


class CSimBackend:
    """Runs one decode step by calling the C-simulation library on numpy buffers."""

    name = "csim"
    #: The state buffer travels through every call, so the host can read and set it.
    state_readable = True

    def __init__(self, library: str | Path, layout: BufferLayout,
                 step_symbol: str = STEP_SYMBOL, args: Sequence[str] = STEP_PORTS,
                 timeout_s: Optional[float] = None):
        self.library = Path(library)
        self.layout = layout
        self.args = list(args)
        # None = call synchronously (no overhead); a number runs the call in a
        # worker thread so a hung simulation surfaces as DeviceTimeoutError.
        self.timeout_s = timeout_s
        self._pending: Optional[threading.Thread] = None
        self._rc: Optional[int] = None
        self._ptrs: Optional[list] = None
        self._lib = self._load(step_symbol)
        self.check_dimensions()

    # ------------------------------------------------------------------ load
    def _load(self, step_symbol: str):
        if not self.library.is_file():
            raise BackendUnavailableError(
                f"C-simulation library {self.library} does not exist; build it with "
                "`mmfree convert` (project.compile()) and re-run `mmfree package`")
        built_for = library_machine(self.library)
        here = _HOST_MACHINES.get(platform.machine().lower())
        if built_for and here and built_for != here:
            raise BackendUnavailableError(
                f"{self.library} was built for {built_for} but this machine is {here}; rebuild the "
                "C-simulation from the sources in the overlay's csim/ directory on this machine, "
                "or use backend='pynq' with the bitstream")
        try:
            lib = ctypes.CDLL(str(self.library.resolve()))
        except OSError as e:
            raise BackendUnavailableError(f"cannot load {self.library}: {e}") from None
        for sym in (step_symbol, INFO_SYMBOL):
            if not hasattr(lib, sym):
                raise BackendUnavailableError(
                    f"{self.library} does not export '{sym}': it is not an mmfree C-simulation "
                    "library (expected extern \"C\" mmfree_step and mmfree_info)")
        missing = [a for a in self.args if a not in self.layout.specs]
        if missing:
            raise ManifestError(f"C-sim step arguments {missing} are not buffers of the design "
                                f"({self.layout.ports})")
        self._step = getattr(lib, step_symbol)
        self._step.restype = ctypes.c_int
        self._step.argtypes = [ctypes.POINTER(_ctype_for(self.layout.specs[a].dtype)) for a in self.args]
        return lib

    def check_dimensions(self) -> None:
        """Refuse a library compiled for another model (mmfree_info vs the manifest)."""
        got, rc = library_dimensions(self._lib)
        want = (self.layout.d, self.layout.L, self.layout.e, self.layout.V)
        if rc != 0 or got != want:
            raise ManifestError(
                f"{self.library} was compiled for d={got[0]}, L={got[1]}, e={got[2]}, V={got[3]} "
                f"but the manifest describes d={want[0]}, L={want[1]}, e={want[2]}, V={want[3]}; "
                "re-run `mmfree package` from the HLS project that built this library")

    # --------------------------------------------------------------- buffers
    def allocate(self, layout: BufferLayout) -> DeviceBuffers:
        buffers = DeviceBuffers(layout, numpy_allocate)
        self._ptrs = [buffers[a].ctypes.data_as(ptr_type)
                      for a, ptr_type in zip(self.args, self._step.argtypes)]
        self._buffers = buffers          # keep the memory the pointers refer to alive
        return buffers

    def reset_state(self) -> None:
        """The zeroed state buffer is the reset: nothing else to do."""

    def sync_to_device(self, buffers: DeviceBuffers, names) -> None:
        """Host memory is device memory here: nothing to flush."""

    def sync_from_device(self, buffers: DeviceBuffers, names) -> None:
        """Nothing to invalidate either."""

    # ------------------------------------------------------------------- run
    def _call(self) -> None:
        self._rc = self._step(*self._ptrs)

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
        if self._ptrs is None:
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
            raise AcceleratorError(f"{STEP_SYMBOL} returned {self._rc} (0 means success); "
                                   "the C-simulation rejected the step")

    def close(self) -> None:
        self._ptrs = None
        self._buffers = None

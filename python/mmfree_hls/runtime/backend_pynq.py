"""Board backend: the only module that touches ``pynq``.

What it does per session (once): load the bitstream (``pynq.Overlay``),
allocate the buffers (``pynq.allocate``: physically contiguous, cacheable),
write each buffer's physical address into the IP's pointer registers.
Per token: flush the input buffers, set ap_start, poll the control register
until ap_done/ap_idle (with a timeout), invalidate the output buffers.

The IP is the Vitis HLS top ``mmfree_step(x_in, state, logits)`` with
``m_axi offset=slave`` pointers and an ``s_axilite`` control bundle
(ap_ctrl_hs). Its register offsets come from the overlay manifest
(:mod:`.manifest` documents how they are derived) and are checked against the
bitstream's ``.hwh`` when pynq exposes it.

``pynq`` is imported lazily so this module imports on any machine; the tests
drive every code path here with numpy buffers and a fake MMIO object.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from .buffers import BufferLayout, DeviceBuffers
from .errors import AcceleratorError, BackendUnavailableError, DeviceTimeoutError, ManifestError

# ap_ctrl_hs bits of the control register (offset 0x00), as Vitis HLS defines them.
AP_START, AP_DONE, AP_IDLE, AP_READY = 0x1, 0x2, 0x4, 0x8

DEFAULT_TIMEOUT_S = 10.0


def _import_pynq():
    try:
        import pynq  # noqa: PLC0415  (only on a board)
    except Exception as e:  # ImportError, or pynq failing to find a device
        raise BackendUnavailableError(
            f"backend 'pynq' needs the pynq package on a PYNQ board ({type(e).__name__}: {e}); "
            "on this machine use backend='csim'") from None
    return pynq


def buffer_address(buf) -> int:
    """Physical address of a pynq buffer (``device_address``; ``physical_address`` on pynq < 2.7)."""
    for attr in ("device_address", "physical_address"):
        addr = getattr(buf, attr, None)
        if addr is not None:
            return int(addr)
    raise AcceleratorError("buffer has no physical address: allocate it with pynq.allocate")


class PynqBackend:
    """Runs one decode step on the FPGA through register writes and polling."""

    name = "pynq"

    def __init__(self, ip: Mapping[str, Any], layout: BufferLayout, *,
                 bitstream: Optional[str | Path] = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 overlay=None, mmio=None, allocate: Optional[Callable] = None,
                 clock: Callable[[], float] = time.perf_counter):
        """``ip`` is the manifest's ``ip`` section. ``overlay``/``mmio``/``allocate`` are
        injected by tests; on a board they come from pynq."""
        self.ip = ip
        self.layout = layout
        self.timeout_s = float(timeout_s)
        self._clock = clock
        self.registers = {name: dict(reg) for name, reg in ip["registers"].items()}
        self.ctrl_offset = int(ip.get("control", {}).get("offset", 0))
        # Streamed top: the state lives on chip, a scalar register starts a new sequence,
        # and ap_return reports a weight buffer that does not match the bitstream.
        self.state_readable = not ip.get("state_on_chip", False)
        self.reset_register = ip.get("reset_register")
        self.ap_return = ip.get("ap_return")
        self._reset_pending = True
        if mmio is None:
            pynq = None
            if overlay is None or allocate is None:
                pynq = _import_pynq()
            if overlay is None:
                if bitstream is None or not Path(bitstream).is_file():
                    raise BackendUnavailableError(
                        f"no bitstream at {bitstream}: this overlay was packaged without Vivado; "
                        "run `make overlay BOARD=...` on a machine with Vivado, or use backend='csim'")
                overlay = pynq.Overlay(str(bitstream))
            instance = ip["instance"]
            if instance not in getattr(overlay, "ip_dict", {instance: None}):
                raise ManifestError(f"the bitstream has no IP named '{instance}' "
                                    f"(it has {sorted(overlay.ip_dict)}); the manifest and the "
                                    "bitstream come from different builds: re-run `mmfree package`")
            self.check_register_map(overlay.ip_dict[instance].get("registers", {}))
            mmio = getattr(overlay, instance).mmio
            if allocate is None:
                allocate = pynq.allocate
        self.overlay = overlay
        self.mmio = mmio
        self._allocate = allocate
        self._buffers: Optional[DeviceBuffers] = None
        self._abandoned = False

    # -------------------------------------------------------------- checking
    def check_register_map(self, hwh_registers: Mapping[str, Mapping]) -> None:
        """Compare the manifest's pointer registers with the .hwh (pynq's ``ip_dict``).

        Vitis HLS names the two 32-bit halves of a 64-bit pointer ``<arg>_1`` and
        ``<arg>_2``; the lower half must sit at the manifest's offset.
        """
        if not hwh_registers:
            return
        for port, reg in self.registers.items():
            found = {name: int(r["address_offset"]) for name, r in hwh_registers.items()
                     if name in (port, f"{port}_1", f"{port}_DATA")}
            if found and min(found.values()) != int(reg["offset"]):
                raise ManifestError(
                    f"register of '{port}': manifest says 0x{int(reg['offset']):x}, the bitstream's "
                    f".hwh says 0x{min(found.values()):x}; the package mixes builds: re-run "
                    "`mmfree package` with the .hwh of this bitstream")

    # --------------------------------------------------------------- buffers
    def allocate(self, layout: BufferLayout) -> DeviceBuffers:
        """Allocate every buffer once and point the IP at them (addresses never change)."""
        buffers = DeviceBuffers(layout, lambda shape, dtype: self._allocate(shape=shape, dtype=dtype))
        for spec in layout:
            if spec.name not in self.registers:
                if spec.name == "state" and not self.state_readable:
                    continue                # host-side only: the device keeps its own state
                raise ManifestError(f"the register map has no pointer register for buffer "
                                    f"'{spec.name}' (it has {sorted(self.registers)})")
            self.write_pointer(spec.name, buffer_address(buffers[spec.name]))
        self._buffers = buffers
        return buffers

    def reset_state(self) -> None:
        """A new sequence: with on-chip state the next start carries reset = 1."""
        self._reset_pending = True

    def write_pointer(self, port: str, address: int) -> None:
        reg = self.registers[port]
        off, bits = int(reg["offset"]), int(reg.get("bits", 64))
        if address < 0 or address >= 1 << bits:
            raise AcceleratorError(f"buffer address 0x{address:x} does not fit the {bits}-bit "
                                   f"register of '{port}'")
        self.mmio.write(off, address & 0xFFFFFFFF)
        if bits > 32:
            self.mmio.write(off + 4, (address >> 32) & 0xFFFFFFFF)

    def sync_to_device(self, buffers: DeviceBuffers, names) -> None:
        for n in names:
            if n not in self.registers:
                continue                    # not a device buffer (on-chip state)
            flush = getattr(buffers[n], "flush", None)
            if flush is not None:
                flush()

    def sync_from_device(self, buffers: DeviceBuffers, names) -> None:
        for n in names:
            if n not in self.registers:
                continue
            inval = getattr(buffers[n], "invalidate", None)
            if inval is not None:
                inval()

    # ------------------------------------------------------------------- run
    def status(self) -> int:
        return int(self.mmio.read(self.ctrl_offset))

    def _poll(self, mask: int, deadline: float) -> bool:
        while True:
            if self.status() & mask:
                return True
            if self._clock() >= deadline:
                return False

    def wait_idle(self, timeout_s: Optional[float] = None) -> None:
        """Before a start: an abandoned (timed-out) step must have finished."""
        t = self.timeout_s if timeout_s is None else timeout_s
        if not self._poll(AP_IDLE, self._clock() + t):
            raise DeviceTimeoutError(
                f"the accelerator is still busy after {t} s (a previous step never finished); "
                "reload the overlay: close() and Accelerator.open(...) again")
        self._abandoned = False

    def run(self) -> None:
        if self._buffers is None:
            raise AcceleratorError("pynq backend: allocate() the buffers before run()")
        # This read also clears a stale ap_done (clear-on-read) left by an abandoned step,
        # so the ap_done seen below belongs to this start.
        if self._abandoned or not (self.status() & AP_IDLE):
            self.wait_idle()
        if self.reset_register is not None:
            self.mmio.write(int(self.registers[self.reset_register]["offset"]), int(self._reset_pending))
        self.mmio.write(self.ctrl_offset, AP_START)
        if not self._poll(AP_DONE, self._clock() + self.timeout_s):
            self._abandoned = True
            raise DeviceTimeoutError(
                f"the accelerator did not finish a step within {self.timeout_s} s "
                "(raise timeout_s, or check the clock and the bitstream)")
        if self.ap_return is not None:
            rc = int(self.mmio.read(int(self.ap_return["offset"])))
            if rc != 0:
                raise AcceleratorError(
                    f"the accelerator returned {rc}: the weight buffer does not match the model "
                    "compiled into the bitstream; re-package the overlay from the same build")
        self._reset_pending = False

    def close(self) -> None:
        if self._buffers is not None:
            self._buffers.free()
            self._buffers = None
        free = getattr(self.overlay, "free", None)
        if callable(free):
            free()

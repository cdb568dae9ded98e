"""Board backend: the only module that touches ``pynq``.

What it does per session (once): load the bitstream (``pynq.Overlay``), check
the IP's register map against the bitstream's ``.hwh``, allocate the buffers
(``pynq.allocate(..., cacheable=True)``: physically contiguous, cached by the
CPU), and write each buffer's physical address into the IP's pointer
registers. The streamed tier's K weight ports (``w0..w{K-1}``) all point into
one weight buffer, port k at ``base + region_offset + k * region_bytes`` (the
engine's buffer is a header, then one region per port).

Per pass: flush the input buffers, write the pass's scalars (lanes, mode,
slot, state masks), set ap_start, poll the control register
until ap_done (with a timeout), read ap_return, invalidate the output buffers.
The IP's m_axi masters sit on PS ports that are not cache-coherent (HP, or
HPC used without coherency), so this flush/invalidate pair is what keeps the
CPU and the IP in agreement; :class:`~.buffers.DeviceBuffers` also guarantees
that a buffer holding host writes is flushed before it is ever invalidated.

The IP is a Vitis HLS top with ``m_axi offset=slave`` pointers and an
``s_axilite`` control bundle (ap_ctrl_hs). Its register offsets come from the
overlay manifest (:mod:`.manifest` documents how they are derived) and are
checked register by register against the ``.hwh`` that pynq parsed.

``pynq`` is imported lazily so this module imports on any machine; the tests
drive it through the real pynq package with only XRT and ``/dev/mem`` faked.
"""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from .buffers import STEP_PASS, WEIGHTS_PORT, BufferLayout, DeviceBuffers
from .errors import AcceleratorError, BackendUnavailableError, DeviceTimeoutError, ManifestError

# ap_ctrl_hs bits of the control register (offset 0x00), as Vitis HLS defines them.
AP_START, AP_DONE, AP_IDLE, AP_READY = 0x1, 0x2, 0x4, 0x8
#: The control words every Vitis HLS s_axilite slave starts with (name → offset).
CONTROL_REGISTERS = {"CTRL": 0x00, "GIER": 0x04, "IP_IER": 0x08, "IP_ISR": 0x0C}

DEFAULT_TIMEOUT_S = 10.0
_WEIGHT_PORT = re.compile(r"w(\d+)$")

#: Buffers that an IP may still be writing when the session closed: kept referenced for the
#: life of the process, because freeing them would hand memory the IP writes to someone else.
_LEAKED: list = []


class BufferLeakWarning(RuntimeWarning):
    """close() kept the device buffers allocated because the IP never became idle."""


def _import_pynq():
    try:
        import pynq  # noqa: PLC0415  (only on a board)
    except Exception as e:  # ImportError, or pynq failing to find a device
        raise BackendUnavailableError(
            f"backend 'pynq' needs the pynq package on a PYNQ board ({type(e).__name__}: {e}); "
            "on this machine use backend='csim'") from None
    return pynq


def load_overlay(pynq, bitstream: str | Path):
    """``pynq.Overlay(bitstream)``, downloaded, with every enabled PL clock's rate known.

    pynq 4.0.0 (pynqmetadata 0.2.0) reads the PL clock rate from a ZynqMP .hwh only; for a
    Zynq-7000 PS it leaves it ``None`` and ``Overlay.download`` would then program FCLK0 with
    ``None`` (a TypeError). The rate Vivado achieved is in the PS's parameters, so it is
    filled in from there before the download.
    """
    overlay = pynq.Overlay(str(bitstream), download=False)
    params = {}
    for desc in overlay.ip_dict.values():
        if str(desc.get("type", "")).startswith("xilinx.com:ip:processing_system7:"):
            params = desc.get("parameters") or {}
    for idx, clk in (getattr(overlay, "clock_dict", None) or {}).items():
        if clk.get("enable") and clk.get("frequency") is None:
            mhz = params.get(f"PCW_ACT_FPGA{idx}_PERIPHERAL_FREQMHZ") or \
                params.get(f"PCW_FPGA{idx}_PERIPHERAL_FREQMHZ")
            if mhz is None:
                raise BackendUnavailableError(
                    f"the .hwh next to {bitstream} records no frequency for PL clock {idx}, so pynq "
                    "cannot program it; use the .hwh Vivado wrote for this bitstream")
            clk["frequency"] = float(mhz)
    overlay.download()
    return overlay


def master_windows(overlay, instance: str) -> dict[str, list[tuple[int, int]]]:
    """m_axi master → the DDR windows (base, size) it reaches, from the .hwh address map that
    pynq parsed (``overlay.systemgraph``); empty when pynq does not expose it."""
    graph = getattr(overlay, "systemgraph", None)
    blocks = getattr(graph, "blocks", None)
    core = blocks.get(instance) if isinstance(blocks, Mapping) else None
    out = {}
    for port in (getattr(core, "ports", None) or {}).values():
        amap = getattr(port, "addrmap", None) or {}
        wins = [(int(a["baseaddr"]), int(a["addr_range"])) for a in amap.values()
                if a.get("memtype") == "memory" and a.get("baseaddr") is not None and a.get("addr_range")]
        if wins:
            out[port.name] = wins
    return out


def _describe_status(rc: int) -> str:
    """The IP's ap_return in words: the engine's status bits (as its C-simulation reports them)."""
    try:
        from .backend_csim import describe_status
    except ImportError:         # a top without status bits: non-zero means a foreign weight buffer
        return ("the weight buffer does not match the model compiled into the bitstream; "
                "re-package the overlay from the same build")
    return describe_status(rc)


def buffer_address(buf) -> int:
    """Physical address of a pynq buffer (``device_address``; ``physical_address`` on pynq < 2.7)."""
    for attr in ("device_address", "physical_address"):
        addr = getattr(buf, attr, None)
        if addr is not None:
            return int(addr)
    raise AcceleratorError("buffer has no physical address: allocate it with pynq.allocate")


def expected_hwh_registers(ip: Mapping[str, Any]) -> dict[str, int]:
    """Every register the .hwh of this IP must list, by the name pynq reports, with its offset.

    Vitis HLS names the two 32-bit halves of a 64-bit pointer ``<arg>_1`` (low, at the
    argument's offset) and ``<arg>_2`` (high, 4 bytes on); a 32-bit scalar or pointer is
    ``<arg>``; the return value is ``ap_return``.
    """
    want = dict(CONTROL_REGISTERS)
    ctrl = int(ip.get("control", {}).get("offset", 0))
    if ctrl != CONTROL_REGISTERS["CTRL"]:
        raise ManifestError(f"ip.control.offset is 0x{ctrl:x}; a Vitis HLS s_axilite slave has "
                            "CTRL at 0x00: re-run `mmfree package`")
    if ip.get("ap_return"):
        want["ap_return"] = int(ip["ap_return"]["offset"])
    for name, reg in ip["registers"].items():
        off, bits = int(reg["offset"]), int(reg.get("bits", 64))
        if bits > 32:
            want[f"{name}_1"], want[f"{name}_2"] = off, off + 4
        else:
            want[name] = off
    return want


class PynqBackend:
    """Runs one decode step on the FPGA through register writes and polling."""

    name = "pynq"

    def __init__(self, ip: Mapping[str, Any], layout: BufferLayout, *,
                 bitstream: Optional[str | Path] = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 overlay=None, mmio=None, allocate: Optional[Callable] = None,
                 region_bytes: Optional[int] = None, region_offset: Optional[int] = None,
                 clock: Callable[[], float] = time.perf_counter):
        """``ip`` is the manifest's ``ip`` section. Streamed tier: weight port k points at
        ``region_offset + k * region_bytes`` into the weight buffer (defaults: ``ip['region_offset']``
        or 0, ``ip['region_bytes']``). ``overlay``/``mmio``/``allocate`` are injected by tests; on a
        board they come from pynq."""
        self.ip = ip
        self.layout = layout
        self.timeout_s = float(timeout_s)
        self._clock = clock
        self.registers = {name: dict(reg) for name, reg in ip["registers"].items()}
        self.ctrl_offset = int(ip.get("control", {}).get("offset", 0))
        # ap_return: the top's status (0 = ok).
        self.ap_return = ip.get("ap_return")
        self.weight_ports = self._weight_ports()
        #: m_axi master → DDR windows it reaches (from the .hwh; empty = not checked)
        self.windows: dict[str, list[tuple[int, int]]] = {}
        rb = region_bytes if region_bytes is not None else ip.get("region_bytes")
        self.region_bytes = None if rb is None else int(rb)
        ro = region_offset if region_offset is not None else ip.get("region_offset", 0)
        self.region_offset = int(ro)
        self._check_weight_regions()
        if mmio is None:
            pynq = None
            if overlay is None or allocate is None:
                pynq = _import_pynq()
            if overlay is None:
                if bitstream is None or not Path(bitstream).is_file():
                    raise BackendUnavailableError(
                        f"no bitstream at {bitstream}: this overlay was packaged without Vivado; "
                        "run `make overlay BOARD=...` on a machine with Vivado, or use backend='csim'")
                overlay = load_overlay(pynq, bitstream)
            instance = ip["instance"]
            if instance not in overlay.ip_dict:
                raise ManifestError(f"the bitstream has no IP named '{instance}' "
                                    f"(it has {sorted(overlay.ip_dict)}); the manifest and the "
                                    "bitstream come from different builds: re-run `mmfree package`")
            self.check_register_map(overlay.ip_dict[instance].get("registers") or {})
            self.windows = master_windows(overlay, instance)
            mmio = getattr(overlay, instance).mmio
            if allocate is None:
                allocate = pynq.allocate
        self.overlay = overlay
        self.mmio = mmio
        self._allocate = allocate
        self._buffers: Optional[DeviceBuffers] = None
        self._abandoned = False

    # -------------------------------------------------------------- checking
    def _weight_ports(self) -> list[str]:
        """The streamed tier's weight pointers w0..w{K-1}, in order (empty otherwise)."""
        found = {}
        for name, reg in self.registers.items():
            m = _WEIGHT_PORT.match(name)
            if m and reg.get("kind", "pointer") == "pointer":
                found[int(m.group(1))] = name
        if sorted(found) != list(range(len(found))):
            raise ManifestError(f"ip.registers has weight ports {sorted(found.values())}; they must "
                                "be w0..w{K-1} without gaps: re-run `mmfree package`")
        return [found[k] for k in range(len(found))]

    def _check_weight_regions(self) -> None:
        if not self.weight_ports:
            return
        if WEIGHTS_PORT not in self.layout.specs:
            raise ManifestError(f"ip.registers has weight ports {self.weight_ports} but the buffer "
                                "table has no weight buffer: re-run `mmfree package`")
        k, total, off = len(self.weight_ports), self.layout.weight_bytes, self.region_offset
        if self.region_bytes is None:
            if k > 1:
                raise ManifestError(f"{k} weight ports need the region size (bytes between their "
                                    "pointers): ip.region_bytes is missing; re-run `mmfree package`")
            self.region_bytes = total - off
        if self.region_bytes <= 0 or off < 0 or off + k * self.region_bytes > total:
            raise ManifestError(f"{k} weight regions of {self.region_bytes} bytes from offset {off} do "
                                f"not fit the {total}-byte weight buffer: re-run `mmfree package`")

    def check_register_map(self, hwh_registers: Mapping[str, Mapping]) -> None:
        """Compare the manifest's register map with the .hwh (pynq's ``ip_dict[..]['registers']``).

        Fails on every register that is missing, misplaced or unknown: the control words
        (CTRL at 0x00), ``ap_return``, both halves of every 64-bit pointer, every scalar.
        """
        instance = self.ip.get("instance", "the IP")
        if not hwh_registers:
            raise ManifestError(f"the bitstream's .hwh lists no registers for '{instance}', so its "
                                "register map cannot be checked; put the .hwh Vivado wrote for this "
                                "bitstream next to the .bit (same name)")
        want = expected_hwh_registers(self.ip)
        got = {name: int(r["address_offset"]) for name, r in hwh_registers.items()}
        problems = [f"{n} missing (expected at 0x{off:x})" for n, off in want.items() if n not in got]
        problems += [f"{n} at 0x{got[n]:x}, the manifest says 0x{off:x}"
                     for n, off in want.items() if n in got and got[n] != off]
        problems += [f"{n} at 0x{got[n]:x} is not in the manifest" for n in got if n not in want]
        if problems:
            raise ManifestError(
                f"register map of '{instance}' disagrees with the bitstream's .hwh: "
                + "; ".join(problems) + ". The package mixes builds: re-run `mmfree package` "
                "with the .hwh of this bitstream")

    # --------------------------------------------------------------- buffers
    def _device_names(self, names) -> list[str]:
        """The buffers of ``names`` that the IP reads or writes through a pointer register."""
        return [n for n in names if n in self.registers or (n == WEIGHTS_PORT and self.weight_ports)]

    def allocate(self, layout: BufferLayout) -> DeviceBuffers:
        """Allocate every buffer once (cacheable) and point the IP at them (addresses never change)."""
        buffers = DeviceBuffers(
            layout, lambda shape, dtype: self._allocate(shape=shape, dtype=dtype, cacheable=True))
        try:
            self._check_windows(buffers)
        except AcceleratorError:
            buffers.free()
            raise
        written = set()
        for spec in layout:
            if spec.name in self.registers:
                self.write_pointer(spec.name, buffer_address(buffers[spec.name]))
                written.add(spec.name)
            elif spec.name == WEIGHTS_PORT and self.weight_ports:
                base = buffer_address(buffers[spec.name])
                for k, port in enumerate(self.weight_ports):
                    self.write_pointer(port, base + self.region_offset + k * self.region_bytes)
                    written.add(port)
            else:
                buffers.free()
                raise ManifestError(f"the register map has no pointer register for buffer "
                                    f"'{spec.name}' (it has {sorted(self.registers)})")
        unset = [n for n, r in self.registers.items()
                 if r.get("kind", "pointer") == "pointer" and n not in written]
        if unset:
            buffers.free()
            raise ManifestError(f"pointer registers {unset} have no buffer in the layout "
                                f"({layout.ports}): the IP would read address 0; re-run `mmfree package`")
        self._buffers = buffers
        return buffers

    def _check_windows(self, buffers: DeviceBuffers) -> None:
        """Every buffer lies inside the DDR window of every m_axi master (else the IP's reads
        and writes there end in a decode error)."""
        for name, arr in buffers.arrays.items():
            lo = buffer_address(arr)
            hi = lo + int(arr.nbytes)
            for master, wins in self.windows.items():
                if not any(base <= lo and hi <= base + size for base, size in wins):
                    shown = ", ".join(f"0x{b:x}-0x{b + n - 1:x}" for b, n in wins)
                    raise AcceleratorError(
                        f"buffer '{name}' at 0x{lo:x}-0x{hi - 1:x} lies outside the DDR window "
                        f"{shown} that the IP's {master} reaches (the bitstream's address map); "
                        "move the contiguous-memory (CMA) pool below it, or map the high DDR "
                        "segment in the block design")

    def write_pointer(self, port: str, address: int) -> None:
        reg = self.registers[port]
        off, bits = int(reg["offset"]), int(reg.get("bits", 64))
        if address < 0 or address >= 1 << bits:
            raise AcceleratorError(f"buffer address 0x{address:x} does not fit the {bits}-bit "
                                   f"register of '{port}'")
        self.mmio.write(off, int(address & 0xFFFFFFFF))
        if bits > 32:
            self.mmio.write(off + 4, int((address >> 32) & 0xFFFFFFFF))

    def sync_to_device(self, buffers: DeviceBuffers, names) -> None:
        """Flush: the CPU's cached writes reach memory before the IP reads it."""
        buffers.flush(self._device_names(names))

    def sync_from_device(self, buffers: DeviceBuffers, names) -> None:
        """Invalidate: the CPU's next read of these buffers sees what the IP wrote.
        A buffer with unflushed host writes is flushed first (:meth:`DeviceBuffers.invalidate`)."""
        buffers.invalidate(self._device_names(names))

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

    def run(self, **args) -> None:
        """One pass (``args``: n, mode, slot, load_mask, store_mask; default the single-sequence
        step): the scalars into their registers, ap_start, poll ap_done, check ap_return."""
        buffers = self._buffers
        if buffers is None:
            raise AcceleratorError("pynq backend: allocate() the buffers before run()")
        # Every host write reaches memory before the IP reads it (the caller normally flushed).
        dirty = self._device_names(sorted(buffers.host_dirty))
        if dirty:
            buffers.flush(dirty)
        # This read also clears a stale ap_done (clear-on-read) left by an abandoned step,
        # so the ap_done seen below belongs to this start.
        if self._abandoned or not (self.status() & AP_IDLE):
            self.wait_idle()
        for name, value in {**STEP_PASS, **args}.items():
            self.mmio.write(int(self.registers[name]["offset"]), int(value))
        self.mmio.write(self.ctrl_offset, AP_START)
        if not self._poll(AP_DONE, self._clock() + self.timeout_s):
            self._abandoned = True
            raise DeviceTimeoutError(
                f"the accelerator did not finish a step within {self.timeout_s} s "
                "(raise timeout_s, or check the clock and the bitstream)")
        if self.ap_return is not None:
            rc = int(self.mmio.read(int(self.ap_return["offset"])))
            if rc != 0:
                raise AcceleratorError(f"the accelerator returned {rc}: {_describe_status(rc)}")

    def close(self, timeout_s: Optional[float] = None) -> None:
        """Free the buffers once the IP is idle. If it stays busy (a step that timed out and
        never finished), the buffers are kept allocated for the life of the process and a
        :class:`BufferLeakWarning` says so: freeing them would let the IP write into memory
        that the kernel hands to someone else. (``Overlay.free`` does not stop the IP.)"""
        buffers, self._buffers = self._buffers, None
        if buffers is not None:
            t = self.timeout_s if timeout_s is None else timeout_s
            try:
                if self._abandoned or not (self.status() & AP_IDLE):
                    self.wait_idle(t)
            except DeviceTimeoutError:
                _LEAKED.append(buffers)
                nbytes = sum(int(a.nbytes) for a in buffers.arrays.values())
                warnings.warn(
                    f"the accelerator is still running a step after {t} s: its "
                    f"{len(buffers.arrays)} buffers ({nbytes} bytes of contiguous memory) stay "
                    "allocated until this process exits, because the IP may still write them; "
                    "reload the bitstream (or reboot the board) to stop the IP",
                    BufferLeakWarning, stacklevel=2)
            else:
                buffers.free()
        free = getattr(self.overlay, "free", None)
        if callable(free):
            free()

"""Usable DDR bandwidth, measured on the board with the bandwidth probe overlay.

The performance model's bound is ``ddr_peak_gbps x ddr_usable_fraction`` (data/boards.json); the
fraction is an assumption until measured. :func:`run_probe` runs ``bw_probe`` (design/hls/bw_probe.cpp,
built by ``mmfree synth probe --board B``) for 1..K ports, checks every checksum against the buffer,
and turns the probe's cycle count into GB/s; :func:`usable_fraction` takes the rate of all K ports
(the engine's weight ports) over the datasheet peak; :func:`apply_measurement` writes it into a
*copy* of the board table, never over the shipped one.

Imports numpy only; pynq is imported inside :func:`run_probe` (on a board).
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np

SHIPPED_TABLE = Path(__file__).resolve().parent / "data" / "boards.json"
DEFAULT_USER_TABLE = Path.home() / ".config" / "mmfree-hls" / "boards.json"
PROBE_INFO = "probe.json"
_AP_START, _AP_DONE = 0x1, 0x2


class CalibrationError(RuntimeError):
    """The probe cannot run here, or what it measured cannot be trusted."""


def off_board_message(board: str, overlay: Optional[Path]) -> str:
    where = overlay or Path("overlays") / board / "bw_probe"
    return (f"`mmfree calibrate` measures on the board itself: it needs pynq (a PYNQ image on {board}) "
            f"and the probe overlay ({where}/bw_probe.bit, .hwh and probe.json). Build the overlay on a "
            f"machine with Vitis HLS and Vivado: `mmfree synth probe --board {board}`, copy {where} to "
            f"the board, then run `mmfree calibrate --board {board} --overlay {where}` there. It prints "
            "the measured usable fraction and writes it to a copy of the board table. A measurement "
            "saved on the board (--save) can be applied here with --results FILE.")


def load_probe_info(overlay: str | Path) -> dict:
    d = Path(overlay)
    f = d / PROBE_INFO
    if not f.is_file():
        raise FileNotFoundError(f"{f} is missing: {d} is not a probe overlay (build one with "
                                "`mmfree synth probe --board B`)")
    info = json.loads(f.read_text())
    for name in (f"{info.get('top', 'bw_probe')}.bit", f"{info.get('top', 'bw_probe')}.hwh"):
        if not (d / name).is_file():
            raise FileNotFoundError(f"{d / name} is missing: the probe overlay needs the .bit and its .hwh")
    return info


def register_offsets(registers: Mapping[str, Mapping], arg: str) -> list[int]:
    """Offsets of an argument's 32-bit registers, low word first, from pynq's ``ip_dict[...]["registers"]``.

    Vitis HLS names a 64-bit argument's halves ``<arg>_1`` / ``<arg>_2`` and a 32-bit one ``<arg>``.
    """
    if f"{arg}_1" in registers:
        names = [f"{arg}_1", f"{arg}_2"] if f"{arg}_2" in registers else [f"{arg}_1"]
    elif arg in registers:
        names = [arg]
    else:
        raise CalibrationError(f"the probe's register map (.hwh) has no register for {arg!r} "
                               f"(it has {sorted(registers)}); rebuild the overlay with `mmfree synth probe`")
    return [int(registers[n]["address_offset"]) for n in names]


def _fold(region: np.ndarray) -> int:
    """XOR of every 64-bit lane: the probe's checksum of one port's words."""
    return int(np.bitwise_xor.reduce(region.view(np.uint64))) if region.size else 0


def run_probe(overlay: str | Path, words: int = 1 << 20, repeats: int = 3, *, pynq_module=None,
              clock_mhz: Optional[float] = None, timeout_s: float = 10.0,
              progress: Callable[[str], None] = print) -> dict:
    """Run the probe on the board for 1..K ports; returns the measurement record.

    ``words`` is per port (port-width words); the fastest of ``repeats`` runs counts. The PL clock
    is pynq's ``Clocks.fclk0_mhz`` (what the board really runs) unless ``clock_mhz`` is given.
    """
    info = load_probe_info(overlay)
    if pynq_module is None:
        try:
            import pynq as pynq_module  # noqa: PLC0415  (only on a board)
        except ImportError:
            raise CalibrationError(off_board_message(info["board"], Path(overlay))) from None
    pynq = pynq_module
    k, bits = len(info["ports"]), int(info["port_bits"])
    bpw = bits // 8
    ol = pynq.Overlay(str(Path(overlay) / f"{info['top']}.bit"))
    inst = info["ip_instance"]
    if inst not in ol.ip_dict:
        raise CalibrationError(f"{inst} is not in the overlay (it has {sorted(ol.ip_dict)})")
    regs = ol.ip_dict[inst]["registers"]
    mmio = getattr(ol, inst).mmio
    offs = {a: register_offsets(regs, a) for a in [f"w{i}" for i in range(k)] + ["nports", "words", "cycles", "checksum"]}
    if clock_mhz is None:
        clock_mhz = float(pynq.Clocks.fclk0_mhz)
    buf = pynq.allocate(shape=(k, words * bpw), dtype=np.uint8)
    try:
        rng = np.random.default_rng(2024)
        buf[:] = rng.integers(0, 256, size=buf.shape, dtype=np.uint8)
        buf.flush()
        base, region = int(buf.physical_address), words * bpw
        folds = [_fold(np.asarray(buf[i])) for i in range(k)]
        for i in range(k):
            addr = base + i * region
            lo, *hi = offs[f"w{i}"]
            mmio.write(lo, addr & 0xFFFFFFFF)
            if hi:
                mmio.write(hi[0], addr >> 32)
        mmio.write(offs["words"][0], words)
        runs = []
        for n in range(1, k + 1):
            mmio.write(offs["nports"][0], n)
            best = None
            for _ in range(repeats):
                t0 = time.perf_counter()
                mmio.write(0x00, _AP_START)
                while not mmio.read(0x00) & _AP_DONE:
                    if time.perf_counter() - t0 > timeout_s:
                        raise CalibrationError(f"the probe did not finish within {timeout_s} s "
                                               f"({n} ports, {words} words each)")
                wall = time.perf_counter() - t0
                cyc = sum(mmio.read(o) << (32 * j) for j, o in enumerate(offs["cycles"]))
                chk = sum(mmio.read(o) << (32 * j) for j, o in enumerate(offs["checksum"]))
                want = 0
                for i in range(n):
                    want ^= folds[i]
                if chk != want:
                    raise CalibrationError(f"checksum mismatch with {n} ports: the probe read {chk:016x}, the "
                                           f"buffer holds {want:016x}: the data did not arrive intact")
                if best is None or cyc < best["cycles"]:
                    best = {"ports": n, "cycles": int(cyc), "wall_s": wall}
            best["bytes"] = n * region
            best["gbps"] = best["bytes"] / (best["cycles"] / (clock_mhz * 1e6)) / 1e9
            progress(f"  {n} port(s): {best['gbps']:.3f} GB/s ({best['cycles']} cycles)")
            runs.append(best)
    finally:
        buf.freebuffer()
    return {"board": info["board"], "ports": info["ports"], "port_bits": bits, "clock_mhz": clock_mhz,
            "words_per_port": words, "runs": runs,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def usable_fraction(measurement: Mapping[str, Any], facts: Mapping[str, Any]) -> dict:
    """The usable fraction the model should use: all K engine ports together over the DDR peak."""
    runs = sorted(measurement["runs"], key=lambda r: r["ports"])
    if not runs:
        raise CalibrationError("the measurement has no runs")
    k = len(measurement["ports"])
    full = [r for r in runs if r["ports"] == k]
    if not full:
        raise CalibrationError(f"the measurement has no run with all {k} ports")
    peak = float(facts["ddr_peak_gbps"])
    per_ports = {r["ports"]: round(r["gbps"] / peak, 4) for r in runs}
    port_cap = k * measurement["port_bits"] / 8 * measurement["clock_mhz"] * 1e6 / 1e9
    return {"fraction": round(full[0]["gbps"] / peak, 3), "gbps": round(full[0]["gbps"], 3),
            "peak_gbps": peak, "by_ports": per_ports, "port_capacity_gbps": round(port_cap, 3),
            "port_limited": full[0]["gbps"] > 0.9 * port_cap}


def apply_measurement(table: Mapping, board: str, measurement: Mapping, result: Mapping) -> tuple[dict, list[str]]:
    """A copy of the board table with ``board``'s fraction replaced by the measured one, and the changes."""
    if board not in table:
        raise KeyError(f"board {board!r} is not in the board table")
    new = copy.deepcopy(dict(table))
    entry = new[board]
    src = (f"measured by `mmfree calibrate` on {measurement.get('date', '?')}: bw_probe reading "
           f"{measurement['words_per_port']} words per port from {len(measurement['ports'])} ports "
           f"({', '.join(measurement['ports'])}, {measurement['port_bits']} bit, burst 16) at "
           f"{measurement['clock_mhz']} MHz: {result['gbps']} GB/s of {result['peak_gbps']} GB/s peak"
           + ("; limited by the PL ports, not the DDR" if result["port_limited"] else ""))
    changes = []
    for key, value in (("ddr_usable_fraction", result["fraction"]), ("ddr_usable_fraction_source", src)):
        if entry.get(key) != value:
            changes.append(f"{board}.{key}: {entry.get(key)!r} -> {value!r}")
            entry[key] = value
    return new, changes


def write_user_table(table: Mapping, path: str | Path) -> Path:
    """Write a board table copy; the shipped data/boards.json is never overwritten."""
    p = Path(path).expanduser()
    if p.resolve() == SHIPPED_TABLE.resolve():
        raise ValueError(f"{p} is the board table shipped with mmfree-hls; write the measurement to a copy "
                         f"(--out, default {DEFAULT_USER_TABLE})")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(table, indent=1) + "\n")
    return p

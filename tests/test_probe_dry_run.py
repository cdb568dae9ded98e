"""The DDR bandwidth probe: its project per board, a Tcl dry run of its Vitis HLS and Vivado flow
(tests/dry_run_stub.tcl), its C-simulation, and `mmfree calibrate` against an emulated board
(register map named as Vitis HLS names it in the .hwh, a DDR model that serves a known rate).
No Xilinx tool and no board here: on a board `mmfree calibrate` runs the real probe.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from mmfree_hls import calibrate as cal
from mmfree_hls import cli
from mmfree_hls.design import probe, synth
from mmfree_hls.runtime.manifest import known_boards
from test_synth_dry_run import TCLSH, Design, dry_run

pytestmark = pytest.mark.skipif(TCLSH is None, reason="the dry run needs tclsh")
_HLS4ML = importlib.util.find_spec("hls4ml")
# ap_int.h / hls_stream.h for g++: the copy hls4ml ships (the design extra); Vitis HLS brings its own.
AP_TYPES = Path(_HLS4ML.origin).parent / "templates" / "vivado" / "ap_types" if _HLS4ML else None


@pytest.mark.parametrize("board", ["pynq-z2", "zcu104", "kv260"])
def test_probe_dry_run(tmp_path, board):
    if AP_TYPES is None:
        pytest.skip("preprocessing bw_probe.cpp needs ap_int.h (hls4ml, the design extra)")
    facts = known_boards()[board]
    preset = synth.board_preset(board, "streamed")
    k = len(preset["ports"])
    root = probe.write_probe_project(board, tmp_path / "hls_project" / f"bw_probe_{board}")
    env = {"MMFREE_STUB_CXX_INCLUDE": str(AP_TYPES)} if AP_TYPES else {}
    if board == "kv260" and AP_TYPES:          # one real C-simulation (5 ports x 128 bit), ~5 s of g++
        env["MMFREE_STUB_RUN_CSIM"] = "1"
    rc, hls, out = dry_run(synth.write_hls_tcl(root, board), tmp_path / "hls.jsonl", vivado=False, **env)
    assert rc == 0, out
    seen = next(c for c in hls if c["cmd"] == "__interfaces__")
    assert seen["masters"] == sorted(f"m_axi_gmem_w{i}" for i in range(k)) and seen["control"] == "s_axi_control"
    iface = next(c for c in hls if c["cmd"] == "config_interface")["options"]
    assert iface["-m_axi_max_widen_bitwidth"] == str(preset["port_bits"])
    assert iface["-m_axi_num_read_outstanding"] == str(preset["outstanding"])
    flags = next(c for c in hls if c["cmd"] == "add_files")["args"]
    assert f"-DBW_PORTS={k} -DBW_BITS={preset['port_bits']}" in flags[-1]
    if "MMFREE_STUB_RUN_CSIM" in env:
        assert "bw_probe csim ok" in next(c for c in hls if c["cmd"] == "csim_result")["args"][0]

    rc, calls, out = dry_run(synth.write_bd_tcl(root, board), tmp_path / "bd.jsonl", vivado=True,
                             MMFREE_STUB_BOARD_PARTS=facts["board_part"])
    assert rc == 0, out
    d = Design(calls)
    assert d.cells["bw_probe_0"] == "xilinx.com:hls:bw_probe:1.0"
    fam = synth.ps_ports()[facts["ps"]]
    enabled = [p for p, s in fam["slaves"].items() if d.props["ps"].get(s["enable"]) == "1"]
    assert sorted(enabled) == sorted(preset["ports"]), "the probe uses exactly the engine's weight ports"
    for i, port in enumerate(preset["ports"]):
        assert d.reach(f"/bw_probe_0/m_axi_gmem_w{i}") == f"/ps/{port}"
        assert d.net(f"/ps/{fam['slaves'][port]['clock_pin']}") == d.net(f"/ps/{fam['pl_clock_pin']}")
        assert all("DDR" in s for s in d.addr[f"/bw_probe_0/Data_m_axi_gmem_w{i}"])
    assert (root / "synth" / board / "bw_probe.bit").is_file() and (root / "synth" / board / "bw_probe.hwh").is_file()


# ------------------------------------------------------------------ calibrate on an emulated board
class FakeBuffer(np.ndarray):
    physical_address = 0x3000_0000

    def flush(self):
        pass

    def freebuffer(self):
        pass


class FakeProbeMMIO:
    """bw_probe's register file: on ap_start it reads the buffer through the pointers it was given and
    takes as long as a DDR serving ``gbps`` (capped by the ports) would."""

    def __init__(self, regs, k, bpw, clock_mhz, gbps, memory, corrupt=False):
        self.regs, self.k, self.bpw, self.f, self.gbps, self.mem = regs, k, bpw, clock_mhz, gbps, memory  # {'mem': buffer}
        self.values = {}
        self.corrupt = corrupt

    def write(self, off, value):
        self.values[off] = value
        if off == 0 and value & 1:
            self._run()

    def _reg(self, name):
        return self.values.get(self.regs[name]["address_offset"], 0)

    def _run(self):
        n, words = self._reg("nports"), self._reg("words")
        chk = 0
        for i in range(n):
            addr = self._reg(f"w{i}_1") | (self._reg(f"w{i}_2") << 32)
            start = addr - FakeBuffer.physical_address
            mem = self.mem["mem"]
            chk ^= int(np.bitwise_xor.reduce(mem[start:start + words * self.bpw].view(np.uint64)))
        if self.corrupt:
            chk ^= 1
        rate = min(self.gbps, n * self.bpw * self.f * 1e6 / 1e9)          # bytes per ns
        cycles = int(n * words * self.bpw / rate * self.f / 1e3)
        for name, v in (("cycles", cycles), ("checksum", chk)):
            self.values[self.regs[f"{name}_1"]["address_offset"]] = v & 0xFFFFFFFF
            self.values[self.regs[f"{name}_2"]["address_offset"]] = v >> 32
        self.values[0] = 0x2 | 0x4

    def read(self, off):
        return self.values.get(off, 0)


def fake_pynq(info, gbps, corrupt=False):
    k, bpw = len(info["ports"]), info["port_bits"] // 8
    names = ["CTRL", "GIER", "IP_IER", "IP_ISR"] + [f"w{i}_{h}" for i in range(k) for h in (1, 2)] + \
        ["nports", "words", "cycles_1", "cycles_2", "cycles_ctrl", "checksum_1", "checksum_2", "checksum_ctrl"]
    regs = {n: {"address_offset": 4 * i, "size": 32} for i, n in enumerate(names)}
    state = {}

    class Overlay:
        def __init__(self, bit):
            assert bit.endswith("bw_probe.bit")
            self.ip_dict = {"bw_probe_0": {"registers": regs}}
            self.bw_probe_0 = type("IP", (), {"mmio": FakeProbeMMIO(regs, k, bpw, info["clock_mhz"], gbps,
                                                                       state, corrupt)})()

    def allocate(shape, dtype):
        mem = np.zeros(shape, dtype=dtype).view(FakeBuffer)
        state["mem"] = mem.reshape(-1)
        return mem

    return type("pynq", (), {"Overlay": Overlay, "allocate": staticmethod(allocate),
                             "Clocks": type("Clocks", (), {"fclk0_mhz": info["clock_mhz"]})})


def probe_overlay(tmp_path, board):
    d = tmp_path / "bw_probe"
    d.mkdir()
    for suffix in (".bit", ".hwh"):
        (d / f"bw_probe{suffix}").write_text("x")
    info = {"board": board, "top": "bw_probe", "ip_instance": "bw_probe_0", **probe.probe_record(board)["probe"]}
    (d / "probe.json").write_text(json.dumps(info))
    return d, info


def test_calibrate_measures_the_rate_the_board_serves(tmp_path):
    overlay, info = probe_overlay(tmp_path, "zcu104")
    facts = known_boards()["zcu104"]
    served = 0.74 * facts["ddr_peak_gbps"]                     # the emulated DDR: 74 % of peak
    m = cal.run_probe(overlay, words=4096, repeats=2, pynq_module=fake_pynq(info, served), progress=lambda s: None)
    assert [r["ports"] for r in m["runs"]] == [1, 2, 3, 4]
    one_port = 128 / 8 * info["clock_mhz"] * 1e6 / 1e9          # 4 GB/s: one port is the limit
    assert m["runs"][0]["gbps"] == pytest.approx(one_port, rel=1e-3)
    res = cal.usable_fraction(m, facts)
    assert res["fraction"] == pytest.approx(0.74, abs=2e-3) and res["port_limited"] is False
    new, changes = cal.apply_measurement(json.loads(cal.SHIPPED_TABLE.read_text()), "zcu104", m, res)
    assert new["zcu104"]["ddr_usable_fraction"] == res["fraction"]
    assert "measured by `mmfree calibrate`" in new["zcu104"]["ddr_usable_fraction_source"]
    assert any(c.startswith("zcu104.ddr_usable_fraction: 0.7 -> 0.74") for c in changes)
    assert new["kv260"] == json.loads(cal.SHIPPED_TABLE.read_text())["kv260"]

    with pytest.raises(cal.CalibrationError, match="checksum mismatch with 1 ports"):
        cal.run_probe(overlay, words=256, pynq_module=fake_pynq(info, served, corrupt=True), progress=lambda s: None)


def test_register_offsets_follow_vitis_naming():
    regs = {"w0_1": {"address_offset": 0x10}, "w0_2": {"address_offset": 0x14}, "nports": {"address_offset": 0x40}}
    assert cal.register_offsets(regs, "w0") == [0x10, 0x14]
    assert cal.register_offsets(regs, "nports") == [0x40]
    with pytest.raises(cal.CalibrationError, match="no register for 'words'"):
        cal.register_offsets(regs, "words")


def test_calibrate_cli_off_board_says_what_it_needs(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pynq", None)               # import pynq fails, as on a PC
    rc = cli.main(["calibrate", "--board", "kv260"])
    err = capsys.readouterr().err
    assert rc == 2 and "mmfree synth probe --board kv260" in err and "pynq" in err


def test_calibrate_cli_applies_a_saved_measurement_to_a_copy(tmp_path, capsys):
    overlay, info = probe_overlay(tmp_path, "pynq-z2")
    facts = known_boards()["pynq-z2"]
    m = cal.run_probe(overlay, words=2048, pynq_module=fake_pynq(info, 0.62 * facts["ddr_peak_gbps"]),
                      progress=lambda s: None)
    saved = tmp_path / "calibration.json"
    saved.write_text(json.dumps(m))
    shipped_before = cal.SHIPPED_TABLE.read_text()
    out = tmp_path / "boards.json"
    assert cli.main(["calibrate", "--board", "pynq-z2", "--results", str(saved), "--out", str(out), "--dry-run"]) == 0
    assert "pynq-z2.ddr_usable_fraction: 0.7 -> 0.62" in capsys.readouterr().out and not out.exists()
    assert cli.main(["calibrate", "--board", "pynq-z2", "--results", str(saved), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["pynq-z2"]["ddr_usable_fraction"] == 0.62
    assert cal.SHIPPED_TABLE.read_text() == shipped_before
    rc = cli.main(["calibrate", "--board", "pynq-z2", "--results", str(saved), "--out", str(cal.SHIPPED_TABLE)])
    assert rc == 2 and "shipped" in capsys.readouterr().err
    assert cal.SHIPPED_TABLE.read_text() == shipped_before
    rc = cli.main(["calibrate", "--board", "kv260", "--results", str(saved)])
    assert rc == 2 and "measured on 'pynq-z2'" in capsys.readouterr().err


def test_board_table_says_where_each_usable_fraction_comes_from():
    for board, facts in known_boards().items():
        src = facts.get("ddr_usable_fraction_source", "")
        assert src.startswith(("assumption", "measured")), board
        if facts.get("ps") in ("zynq7", "zynq_ultra"):
            assert f"mmfree calibrate --board {board}" in src, board


def test_synth_probe_builds_the_overlay_calibrate_reads(tmp_path, monkeypatch, capsys):
    """`mmfree synth probe` end to end with the dry-run stand-ins on PATH as vitis_hls and vivado."""
    if AP_TYPES is None:
        pytest.skip("preprocessing bw_probe.cpp needs ap_int.h (hls4ml, the design extra)")
    from test_synth_dry_run import STUB
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for exe in ("vitis_hls", "vivado"):
        (bindir / exe).write_text(f"#!/bin/sh\nexec {TCLSH} {STUB} \"$@\"\n")
        (bindir / exe).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("MMFREE_DRY_RUN_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("MMFREE_STUB_CXX_INCLUDE", str(AP_TYPES))
    monkeypatch.setenv("MMFREE_STUB_BOARD_PARTS", known_boards()["pynq-z2"]["board_part"])
    monkeypatch.chdir(tmp_path)
    assert cli.main(["synth", "probe", "--board", "pynq-z2"]) == 0, capsys.readouterr().err
    out = tmp_path / "overlays" / "pynq-z2" / "bw_probe"
    info = cal.load_probe_info(out)
    assert info["ports"] == ["S_AXI_HP0", "S_AXI_HP2"] and info["port_bits"] == 64 and info["clock_mhz"] == 125
    assert info["impl"]["source"] == "vivado_impl" and info["impl"]["timing_met"] is True
    assert "mmfree calibrate --board pynq-z2 --overlay" in capsys.readouterr().out

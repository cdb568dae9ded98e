"""Synthesis flow around the Tcl: board facts and presets reach the scripts, bad records stop with
a clear error, the report parsers read Vivado/Vitis text, a missing tool stops the flow with its
name and release after the Tcl is written, and the whole `mmfree synth` → `mmfree package` path
runs with the dry-run stand-ins on PATH (tests/dry_run_stub.tcl; the design itself is asserted in
test_synth_dry_run.py). No Xilinx tool runs here.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from host_helpers import build_abi_stub, tiny_model
from mmfree_hls import cli
from mmfree_hls.checkpoint import save_checkpoint
from mmfree_hls.design import synth
from mmfree_hls.runtime.manifest import known_boards, load_manifest
from test_synth_dry_run import STUB, TCLSH, engine_source, make_project

ZYNQ_BOARDS = [b for b, f in known_boards().items() if f.get("ps") in ("zynq7", "zynq_ultra")]


@pytest.fixture(scope="module")
def project_template(tmp_path_factory):
    """An on-chip project for pynq-z2: the record, the top, a C-sim library and the weights."""
    root = tmp_path_factory.mktemp("tpl") / "demo"
    (root / "src").mkdir(parents=True)
    (root / "src" / "engine.cpp").write_text(engine_source(0, 64))
    from mmfree_hls.engine.presets import get_preset
    from mmfree_hls.engine.project import engine_record
    model = tiny_model(seed=11, hidden_size=64, intermediate_size=128)
    c = model.config
    build_abi_stub(root / "csim", c.d, c.num_hidden_layers, c.state_size, c.vocab_size)
    save_checkpoint(model, root / "model")
    (root / "mmfree_project.json").write_text(json.dumps(
        {"name": "demo", "top": "mmfree_engine", "tier": "on-chip", "board": "pynq-z2", "model": c.to_dict(),
         "engine": engine_record(c, get_preset("pynq-z2", "on-chip"), "2bit"),
         "sources": ["src/engine.cpp"], "include_dirs": ["src"], "cflags": ""}))
    return root


@pytest.fixture
def project(project_template, tmp_path):
    root = tmp_path / "hls_project" / "demo"
    shutil.copytree(project_template, root)
    return root


@pytest.fixture
def fake_tools(tmp_path, monkeypatch):
    """vitis_hls and vivado on PATH: the dry-run stub, recording into calls.jsonl."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for exe in ("vitis_hls", "vivado"):
        p = bindir / exe
        p.write_text(f"#!/bin/sh\nexec {TCLSH} {STUB} \"$@\"\n")
        p.chmod(0o755)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("MMFREE_DRY_RUN_LOG", str(calls))
    monkeypatch.setenv("MMFREE_STUB_BOARD_PARTS", known_boards()["pynq-z2"]["board_part"])
    return calls


@pytest.fixture
def no_tools(monkeypatch, tmp_path):
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def complete(script: Path) -> bool:
    check = script.parent / "complete.tcl"
    check.write_text("set f [open [lindex $argv 0]]; set t [read $f]; close $f; puts [info complete $t]\n")
    return subprocess.run([TCLSH, str(check), str(script)], capture_output=True, text=True).stdout.strip() == "1"


pytestmark = pytest.mark.skipif(TCLSH is None, reason="tclsh is part of the test toolchain (apt install tcl)")


# ------------------------------------------------------------------ generators
@pytest.mark.parametrize("tier", ["on-chip", "streamed"])
@pytest.mark.parametrize("board", ZYNQ_BOARDS)
def test_scripts_are_complete_tcl_with_the_preset_values(tmp_path, board, tier):
    root = make_project(tmp_path / "p", board, tier)
    preset = synth.board_preset(board, tier)
    hls = synth.write_hls_tcl(root, board, tier=tier)
    bd = synth.write_bd_tcl(root, board, tier=tier)
    assert complete(hls) and complete(bd)
    text = hls.read_text()
    assert f"set clock_mhz    {preset['clock_mhz']}\n" in text
    assert f"set outstanding  {preset['outstanding']}\n" in text
    assert f"set port_bits    {preset['port_bits']}\n" in text
    bd_text = bd.read_text()
    for port in preset["ports"]:
        assert port in bd_text
    assert f"set part          {{{known_boards()[board]['part']}}}" in bd_text


def test_io_bundle_port_and_weight_ports():
    facts = known_boards()["pynq-z2"]
    streamed = synth.board_preset("pynq-z2", "streamed")
    masters = ["m_axi_gmem_io", "m_axi_gmem_out", "m_axi_gmem_w0", "m_axi_gmem_w1"]
    assert synth.port_plan(masters, streamed, facts) == {
        "m_axi_gmem_io": "S_AXI_HP1", "m_axi_gmem_out": "S_AXI_HP1",
        "m_axi_gmem_w0": "S_AXI_HP0", "m_axi_gmem_w1": "S_AXI_HP2"}
    on_chip = synth.port_plan(["m_axi_gmem_io"], synth.board_preset("pynq-z2", "on-chip"), facts)
    assert on_chip == {"m_axi_gmem_io": "S_AXI_HP1"}
    kv = synth.port_plan(["m_axi_gmem_io", "m_axi_gmem_w4"], synth.board_preset("kv260", "streamed"),
                         known_boards()["kv260"])
    assert kv == {"m_axi_gmem_io": "S_AXI_HPC1_FPD", "m_axi_gmem_w4": "S_AXI_HPC0_FPD"}
    with pytest.raises(ValueError, match="gmem_w2"):
        synth.port_plan(["m_axi_gmem_w2"], streamed, facts)


def test_project_record_must_match_the_requested_tier_and_board(tmp_path):
    root = make_project(tmp_path / "p", "zcu104", "on-chip")
    with pytest.raises(ValueError, match="on-chip tier, not streamed: build it as it is with TIER=on-chip.*--tier streamed"):
        synth.write_hls_tcl(root, "zcu104", tier="streamed")
    with pytest.raises(ValueError, match="generated for board 'zcu104', not 'kv260'"):
        synth.write_bd_tcl(root, "kv260")
    rec = json.loads((root / "mmfree_project.json").read_text())
    rec.pop("top")
    (root / "mmfree_project.json").write_text(json.dumps(rec))
    with pytest.raises(ValueError, match="no 'top'"):
        synth.write_hls_tcl(root, "zcu104")


def test_board_facts_come_from_the_board_table(project):
    with pytest.raises(ValueError, match="unknown board 'zedboard'"):
        synth.write_bd_tcl(project, "zedboard")
    pcie = [b for b, f in known_boards().items() if f.get("ps") not in ("zynq7", "zynq_ultra")]
    for board in pcie:
        with pytest.raises(ValueError, match="supports"):
            synth.board_facts(board)
    # No part number or PS property is spelled out in the templates: they only have placeholders.
    for tpl in synth.TEMPLATE_DIR.glob("*.tcl.in"):
        text = tpl.read_text()
        for facts in known_boards().values():
            assert facts["part"] not in text
        assert "PSU__" not in text and "PCW_" not in text


def test_tcl_quoting_refuses_unsafe_values():
    assert synth.tcl_word("a b $c [d]") == "{a b $c [d]}"
    assert synth.tcl_word(["x y", 3]) == "[list {x y} 3]"
    assert synth.tcl_word({"k": 1}) == "[dict create {k} 1]"
    with pytest.raises(ValueError, match="safely"):
        synth.tcl_word("evil}")


def test_comments_carry_plain_values(project):
    script = synth.write_hls_tcl(project, "pynq-z2")
    assert script.read_text().startswith("# Vitis HLS 2023.2: C simulation")
    assert "# Design demo, top mmfree_engine, tier on-chip, board pynq-z2." in script.read_text()


# ------------------------------------------------------------------ report parsers
UTIL_7SERIES = """\
1. Slice Logic
--------------

+----------------------------+-------+-------+-----------+-------+
|          Site Type         |  Used | Fixed | Available | Util% |
+----------------------------+-------+-------+-----------+-------+
| Slice LUTs                 | 25358 |     0 |     53200 | 47.67 |
|   LUT as Logic             | 24000 |     0 |     53200 | 45.11 |
| Slice Registers            | 30123 |     0 |    106400 | 28.31 |
+----------------------------+-------+-------+-----------+-------+

3. Memory
---------

+-------------------+------+-------+-----------+-------+
|     Site Type     | Used | Fixed | Available | Util% |
+-------------------+------+-------+-----------+-------+
| Block RAM Tile    | 124.5 |    0 |       140 | 88.93 |
|   RAMB36/FIFO*    |  120 |     0 |       140 | 85.71 |
|   RAMB18          |    9 |     0 |       280 |  3.21 |
+-------------------+------+-------+-----------+-------+

4. DSP
------

+----------------+------+-------+-----------+-------+
|    Site Type   | Used | Fixed | Available | Util% |
+----------------+------+-------+-----------+-------+
| DSPs           |   26 |     0 |       220 | 11.82 |
+----------------+------+-------+-----------+-------+
"""

TIMING = """\
| Design Timing Summary
| ---------------------
------------------------------------------------------------------------------------------------

    WNS(ns)      TNS(ns)  TNS Failing Endpoints  TNS Total Endpoints      WHS(ns)      THS(ns)  THS Failing Endpoints  THS Total Endpoints     WPWS(ns)     TPWS(ns)  TPWS Failing Endpoints  TPWS Total Endpoints
    -------      -------  ---------------------  -------------------      -------      -------  ---------------------  -------------------     --------     --------  ----------------------  --------------------
     -0.333      -13.146                     57                  973        0.082        0.000                      0                  973        2.225        0.000                       0                   570


Clock       Waveform(ns)         Period(ns)      Frequency(MHz)
-----       ------------         ----------      --------------
clk_fpga_0  {0.000 4.000}        8.000           125.000
"""


def test_report_parsers_read_vivado_text(tmp_path):
    util = synth.parse_utilization(UTIL_7SERIES)
    assert util["resources"] == {"LUT": 25358, "FF": 30123, "BRAM_18K": 249, "DSP": 26, "URAM": 0}
    assert util["available"]["BRAM_18K"] == 280 and util["available"]["LUT"] == 53200
    t = synth.parse_timing_summary(TIMING)
    assert (t["wns_ns"], t["tns_ns"], t["whs_ns"], t["ths_ns"]) == (-0.333, -13.146, 0.082, 0.0)
    assert t["clocks"] == {"clk_fpga_0": {"period_ns": 8.0, "frequency_mhz": 125.0}}
    assert t["timing_met"] is False
    (tmp_path / "utilization.rpt").write_text(UTIL_7SERIES)
    (tmp_path / "timing_summary.rpt").write_text(TIMING)
    impl = synth.parse_impl_reports(tmp_path)
    assert impl["source"] == "vivado_impl" and impl["clock_mhz"] == 125.0
    assert impl["fmax_mhz"] == pytest.approx(1000 / 8.333, abs=0.1)
    assert impl["timing_violation_allowed"] is False
    with pytest.raises(synth.SynthError, match="report_utilization"):
        synth.parse_utilization(TIMING)
    with pytest.raises(synth.SynthError, match="report_timing_summary"):
        synth.parse_timing_summary(UTIL_7SERIES)
    with pytest.raises(FileNotFoundError, match="make overlay"):
        synth.parse_impl_reports(tmp_path / "nothing")


# ------------------------------------------------------------------ missing tools
def test_synth_hls_without_vitis_names_tool_and_version_after_writing_tcl(project, no_tools, capsys):
    rc = cli.main(["synth", "hls", str(project), "--board", "pynq-z2"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "vitis_hls (Vitis HLS 2023.2): not found on PATH" in err
    assert "vitis_hls.tcl" in err
    assert (project / "synth" / "pynq-z2" / "vitis_hls.tcl").is_file()


def test_synth_overlay_without_tools_names_both(project, no_tools, capsys):
    rc = cli.main(["synth", "overlay", str(project), "--board", "pynq-z2", "--tier", "on-chip"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "vitis_hls (Vitis HLS 2023.2), vivado (Vivado 2023.2)" in err
    assert (project / "synth" / "pynq-z2" / "vivado_bd.tcl").is_file()


def test_synth_on_a_directory_that_is_not_a_project(tmp_path, no_tools, capsys):
    rc = cli.main(["synth", "hls", str(tmp_path), "--board", "pynq-z2"])
    assert rc == 2 and "mmfree convert" in capsys.readouterr().err


def test_make_hls_and_overlay_pass_tier_and_cosim():
    text = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    hls = next(line for line in text.splitlines() if "synth hls" in line)
    overlay = next(line for line in text.splitlines() if "synth overlay" in line)
    assert "--tier $(TIER)" in hls and "--cosim" in hls and "--tier $(TIER)" in overlay
    assert "--part-only" in overlay


# ------------------------------------------------------------------ whole flow with the stand-ins
def test_flow_runs_tools_then_packages_with_bitstream_and_impl_report(project, fake_tools, tmp_path, capsys):
    rc = cli.main(["synth", "hls", str(project), "--board", "pynq-z2"])
    out = capsys.readouterr().out
    assert rc == 0 and "latency 1000 cycles" in out and "LUT 5000" in out
    summary = json.loads((project / "synth" / "pynq-z2" / "reports" / "summary.json").read_text())
    assert summary["part"] == "xc7z020clg400-1" and summary["estimated_clock_ns"] == 3.9
    overlay = tmp_path / "overlays" / "demo"
    rc = cli.main(["synth", "overlay", str(project), "--board", "pynq-z2", "--out", str(overlay)])
    assert rc == 0, capsys.readouterr().err
    m = load_manifest(overlay)
    assert m.bitstream == overlay / "demo.bit" and (overlay / "demo.hwh").is_file()
    assert m.data["tools"]["vitis_hls"] == "2023.2" and m.data["tools"]["vivado"] == "2023.2"
    impl = synth.impl_summary(project, "pynq-z2")
    assert impl["source"] == "vivado_impl" and impl["resources"]["LUT"] == 9876 and impl["timing_met"]
    recorded = [json.loads(line)["cmd"] for line in fake_tools.read_text().splitlines()]
    assert "csynth_design" in recorded and "validate_bd_design" in recorded

"""Synthesis flow: generated Tcl parses and runs under tclsh with stand-ins for the vendor
commands; board facts reach the scripts from data/boards.json; a missing tool stops the
flow with its name and release, after the Tcl is written.

The stand-ins (``FAKE_TOOL``) record every vendor command and create the files Vitis HLS /
Vivado would write where they would write them, so the runner and the packaging step
after it are exercised end to end. What the real tools do with the commands is only
checked on a machine that has them.
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

TCLSH = shutil.which("tclsh")
ZYNQ_BOARDS = [b for b, f in known_boards().items() if f.get("ps") in ("zynq7", "zynq_ultra")]

FAKE_TOOL = r"""
# Stand-in for vitis_hls / vivado: sources the script with vendor commands recorded.
set ::calls {}
proc record {args} { lappend ::calls $args }
proc unknown {args} { record {*}$args; return "" }
rename exit __exit
proc exit {args} {
    set f [open $::env(MMFREE_TCL_CALLS) a]
    foreach c $::calls { puts $f $c }
    close $f
    __exit 0
}
proc touch {path {text ""}} {
    file mkdir [file dirname $path]
    set f [open $path w]; puts -nonewline $f $text; close $f
}
proc create_bd_cell {args} { record create_bd_cell {*}$args; return [lindex $args end] }
proc get_board_parts {args} { record get_board_parts {*}$args; return $::env(MMFREE_FAKE_BOARD_PARTS) }
proc get_bd_intf_pins {args} {
    record get_bd_intf_pins {*}$args
    if {[lsearch $args -of_objects] >= 0} {
        return [list /$::ip_instance/m_axi_gmem2 /$::ip_instance/m_axi_gmem0 /$::ip_instance/m_axi_gmem1]
    }
    return [lindex $args end]
}
proc get_property {args} { record get_property {*}$args; return "100%" }
proc csynth_design {args} {
    record csynth_design {*}$args
    set dir [file join $::out_dir vitis_hls_prj solution1 syn report]
    touch [file join $dir ${::top}_csynth.rpt] "report"
    touch [file join $dir ${::top}_csynth.xml] [string map [list TOP $::top PART $::part] {<profile>
  <UserAssignments><TopModelName>TOP</TopModelName><Part>PART</Part><TargetClockPeriod>10.00</TargetClockPeriod></UserAssignments>
  <PerformanceEstimates><SummaryOfTimingAnalysis><EstimatedClockPeriod>7.30</EstimatedClockPeriod></SummaryOfTimingAnalysis>
    <SummaryOfOverallLatency><Best-caseLatency>900</Best-caseLatency><Average-caseLatency>950</Average-caseLatency>
      <Worst-caseLatency>1000</Worst-caseLatency><Interval-min>901</Interval-min><Interval-max>1001</Interval-max></SummaryOfOverallLatency>
  </PerformanceEstimates>
  <AreaEstimates><Resources><BRAM_18K>10</BRAM_18K><DSP>2</DSP><FF>3000</FF><LUT>5000</LUT><URAM>0</URAM></Resources>
    <AvailableResources><BRAM_18K>280</BRAM_18K><DSP>220</DSP><FF>106400</FF><LUT>53200</LUT><URAM>0</URAM></AvailableResources></AreaEstimates>
</profile>}]
}
proc export_design {args} {
    record export_design {*}$args
    touch [file join $::out_dir vitis_hls_prj solution1 impl ip ip.zip] "zip"
}
proc launch_runs {args} {
    record launch_runs {*}$args
    touch [file join $::prj_dir $::design_name.runs impl_1 ${::design_name}_wrapper.bit] "BIT"
    touch [file join $::prj_dir $::design_name.gen sources_1 bd $::design_name hw_handoff $::design_name.hwh] "<HWH/>"
}
proc report_utilization {args} { record report_utilization {*}$args; touch [lindex $args end] "util" }
proc report_timing_summary {args} { record report_timing_summary {*}$args; touch [lindex $args end] "timing" }

if {[lsearch $argv -version] >= 0} {
    puts "$::env(MMFREE_FAKE_PRODUCT) v2023.2 (64-bit)"
    __exit 0
}
foreach flag {-f -source} {
    set i [lsearch $argv $flag]
    if {$i >= 0} { source [lindex $argv [expr {$i + 1}]] }
}
"""


@pytest.fixture(scope="module")
def project_template(tmp_path_factory):
    """A minimal HLS project: the record, one synthesis source, a C-sim library and the weights."""
    root = tmp_path_factory.mktemp("tpl") / "demo"
    (root / "firmware").mkdir(parents=True)
    (root / "firmware" / "mmfree_step.cpp").write_text("void mmfree_step() {}\n")
    model = tiny_model(seed=11)
    c = model.config
    build_abi_stub(root / "csim", c.d, c.num_hidden_layers, c.state_size, c.vocab_size)
    save_checkpoint(model, root / "model")
    (root / "mmfree_project.json").write_text(json.dumps(
        {"name": "demo", "top": "mmfree_step", "model": c.to_dict(), "precision": {"state": "ap_fixed<24,8>"},
         "hls_sources": ["firmware/mmfree_step.cpp"], "hls_include_dirs": ["firmware"]}))
    return root


@pytest.fixture
def project(project_template, tmp_path):
    root = tmp_path / "hls_project" / "demo"
    shutil.copytree(project_template, root)
    return root


@pytest.fixture
def fake_tools(tmp_path, monkeypatch):
    """vitis_hls and vivado on PATH as tclsh scripts running FAKE_TOOL."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "fake_tool.tcl").write_text(FAKE_TOOL)
    for exe, product in (("vitis_hls", "Vitis HLS - High-Level Synthesis"), ("vivado", "Vivado")):
        p = bindir / exe
        p.write_text(f"#!/bin/sh\nMMFREE_FAKE_PRODUCT='{product}' exec {TCLSH} {bindir / 'fake_tool.tcl'} \"$@\"\n")
        p.chmod(0o755)
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("MMFREE_TCL_CALLS", str(calls))
    monkeypatch.setenv("MMFREE_FAKE_BOARD_PARTS", "")
    return calls


@pytest.fixture
def no_tools(monkeypatch, tmp_path):
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def run_tcl(script: Path, calls: Path, board_parts: str = "") -> list[str]:
    """Source a generated script under FAKE_TOOL; return the recorded vendor calls."""
    harness = calls.parent / "fake_tool.tcl"
    harness.write_text(FAKE_TOOL)
    env = dict(os.environ, MMFREE_TCL_CALLS=str(calls), MMFREE_FAKE_BOARD_PARTS=board_parts,
               MMFREE_FAKE_PRODUCT="x")
    if calls.exists():
        calls.unlink()
    proc = subprocess.run([TCLSH, str(harness), "-f", str(script)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return calls.read_text().splitlines()


def complete(script: Path) -> bool:
    check = script.parent / "complete.tcl"
    check.write_text("set f [open [lindex $argv 0]]; set t [read $f]; close $f; puts [info complete $t]\n")
    return subprocess.run([TCLSH, str(check), str(script)], capture_output=True, text=True).stdout.strip() == "1"


pytestmark = pytest.mark.skipif(TCLSH is None, reason="tclsh is part of the test toolchain (apt install tcl)")


# ------------------------------------------------------------------ Vitis HLS
@pytest.mark.parametrize("board", ZYNQ_BOARDS)
def test_hls_tcl_for_each_board(project, board, tmp_path):
    facts = known_boards()[board]
    script = synth.write_hls_tcl(project, board)
    assert script == project.resolve() / "synth" / board / "vitis_hls.tcl"
    assert complete(script)
    calls = run_tcl(script, tmp_path / "calls.txt")
    assert f"set_part {facts['part']}" in calls
    assert f"create_clock -period {1000 / facts['clock_mhz']:.3f} -name default" in calls
    assert "set_top mmfree_step" in calls
    src = project.resolve() / "firmware" / "mmfree_step.cpp"
    assert any(c.startswith(f"add_files {src} -cflags") and f"-I{project.resolve() / 'firmware'}" in c
               for c in calls)
    assert "config_interface -m_axi_addr64=true" in calls
    assert any(c.startswith("config_export -format ip_catalog -vendor xilinx.com -library hls -version 1.0 "
                            "-ipname mmfree_step") for c in calls)
    assert calls.index("csynth_design") < calls.index("export_design -format ip_catalog")
    # The report was copied where `report_summary` (and the perf model) read it.
    assert (script.parent / "reports" / "mmfree_step_csynth.xml").is_file()


# ------------------------------------------------------------------ Vivado
@pytest.mark.parametrize("board", ZYNQ_BOARDS)
def test_block_design_tcl_for_each_board(project, board, tmp_path):
    facts = known_boards()[board]
    ps = synth.toolchain()["ps"][facts["ps"]]
    script = synth.write_bd_tcl(project, board, jobs=3)
    assert complete(script)
    calls = run_tcl(script, tmp_path / "calls.txt", board_parts=facts["board_part"])
    text = "\n".join(calls)
    assert f"create_project -force demo {script.parent / 'vivado_prj'} -part {facts['part']}" in calls
    assert f"set_property board_part {facts['board_part']} {{}}" in calls or \
        f"set_property board_part {facts['board_part']} " in text
    assert f"create_bd_cell -type ip -vlnv {ps['vlnv']} ps" in calls
    assert f"apply_bd_automation -rule {ps['preset_rule']}" in text
    # PL clock at the board's frequency; control master and every HP port enabled.
    dict_line = next(c for c in calls if c.startswith("set_property -dict"))
    assert f"{ps['pl_clock_property']} {facts['clock_mhz']}" in dict_line
    for port in [facts["control_port"], *facts["hp_ports"]]:
        assert f"{ps['port_enable'][port]} 1" in dict_line
    assert "create_bd_cell -type ip -vlnv xilinx.com:hls:mmfree_step:1.0 mmfree_0" in calls
    assert f"Master /ps/{facts['control_port']} Slave /mmfree_0/s_axi_control" in text
    # The three fake m_axi masters, sorted, each on its own HP port.
    for n, master in enumerate(["m_axi_gmem0", "m_axi_gmem1", "m_axi_gmem2"]):
        assert f"Master /mmfree_0/{master} Slave /ps/{facts['hp_ports'][n]} " in text
    assert "launch_runs impl_1 -to_step write_bitstream -jobs 3" in calls
    for later in ("assign_bd_address", "validate_bd_design"):
        assert calls.index(later) < calls.index("launch_runs impl_1 -to_step write_bitstream -jobs 3")
    assert (script.parent / "demo.bit").read_text() == "BIT"
    assert (script.parent / "demo.hwh").is_file()
    if facts.get("board_connections"):
        assert f"set_property board_connections {{{facts['board_connections']}}}" in text or \
            f"set_property board_connections {facts['board_connections']}" in text


def test_block_design_without_board_files_still_targets_the_part(project, tmp_path):
    script = synth.write_bd_tcl(project, "pynq-z2")
    calls = run_tcl(script, tmp_path / "calls.txt", board_parts="")
    assert not any(c.startswith("set_property board_part") for c in calls)
    assert any(c.startswith("create_project") and "xc7z020clg400-1" in c for c in calls)


def test_board_facts_come_from_the_board_table(project):
    with pytest.raises(ValueError, match="unknown board 'zedboard'"):
        synth.write_bd_tcl(project, "zedboard")
    pcie = [b for b, f in known_boards().items() if f.get("ps") not in ("zynq7", "zynq_ultra")]
    for board in pcie:
        with pytest.raises(ValueError, match="supports"):
            synth.write_bd_tcl(project, board)
    # No part number is spelled out in the templates: they only have placeholders.
    for tpl in synth.TEMPLATE_DIR.glob("*.tcl.in"):
        text = tpl.read_text()
        for facts in known_boards().values():
            assert facts["part"] not in text


def test_tcl_quoting_refuses_unsafe_values():
    assert synth.tcl_word("a b $c [d]") == "{a b $c [d]}"
    assert synth.tcl_word(["x y", 3]) == "[list {x y} 3]"
    with pytest.raises(ValueError, match="safely"):
        synth.tcl_word("evil}")


# ------------------------------------------------------------------ missing tools
def test_synth_hls_without_vitis_names_tool_and_version_after_writing_tcl(project, no_tools, capsys):
    rc = cli.main(["synth", "hls", str(project), "--board", "pynq-z2"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "vitis_hls (Vitis HLS 2023.2): not found on PATH" in err
    assert "vitis_hls.tcl" in err
    assert (project / "synth" / "pynq-z2" / "vitis_hls.tcl").is_file()


def test_synth_overlay_without_tools_names_both(project, no_tools, capsys):
    rc = cli.main(["synth", "overlay", str(project), "--board", "kv260"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "vitis_hls (Vitis HLS 2023.2), vivado (Vivado 2023.2)" in err
    assert (project / "synth" / "kv260" / "vivado_bd.tcl").is_file()


def test_synth_on_a_directory_that_is_not_a_project(tmp_path, no_tools, capsys):
    rc = cli.main(["synth", "hls", str(tmp_path), "--board", "pynq-z2"])
    assert rc == 2 and "mmfree convert" in capsys.readouterr().err


# ------------------------------------------------------------------ whole flow with stand-ins
def test_flow_runs_tools_then_packages_with_bitstream(project, fake_tools, tmp_path, capsys):
    rc = cli.main(["synth", "hls", str(project), "--board", "pynq-z2"])
    out = capsys.readouterr().out
    assert rc == 0 and "latency 1000 cycles" in out and "LUT 5000" in out
    summary = json.loads((project / "synth" / "pynq-z2" / "reports" / "summary.json").read_text())
    assert summary["part"] == "xc7z020clg400-1" and summary["estimated_clock_ns"] == 7.3
    overlay = tmp_path / "overlays" / "demo"
    rc = cli.main(["synth", "overlay", str(project), "--board", "pynq-z2", "--out", str(overlay)])
    assert rc == 0, capsys.readouterr().err
    m = load_manifest(overlay)
    assert m.bitstream == overlay / "demo.bit" and (overlay / "demo.hwh").is_file()
    assert m.data["tools"]["vitis_hls"] == "2023.2" and m.data["tools"]["vivado"] == "2023.2"
    assert m.data["precision"] == {"state": "ap_fixed<24,8>"}


def test_comments_carry_plain_values(project):
    script = synth.write_hls_tcl(project, "pynq-z2")
    assert script.read_text().startswith("# Vitis HLS 2023.2: C synthesis")

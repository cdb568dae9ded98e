"""Dry run of the generated Vitis HLS and Vivado Tcl, one test per (tier, board).

Each script runs under ``tclsh`` with ``dry_run_stub.tcl``: a stand-in for every vendor command
the flow calls that records the call (JSON lines) and refuses what the tool would refuse (commands
out of order, unknown options or PS parameters, IPs missing from the catalog, pins of PS ports that
are not enabled, unreachable address segments, clock pins left open at validate_bd_design). The
assertions below rebuild the block design from the recorded calls alone: nets, interface links,
PS properties and address assignments. No Xilinx tool runs here; what the real tools do with these
commands is only checked on a machine that has them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mmfree_hls.design import synth
from mmfree_hls.runtime.manifest import known_boards

TCLSH = shutil.which("tclsh")
STUB = Path(__file__).resolve().parent / "dry_run_stub.tcl"
BOARDS = ("pynq-z2", "zcu104", "kv260")
pytestmark = pytest.mark.skipif(TCLSH is None or shutil.which("g++") is None,
                                reason="the dry run needs tclsh and g++ (apt install tcl g++)")


def engine_source(n_weight_ports: int, port_bits: int) -> str:
    """A trivial top with the engine's interface: x_in/state on gmem_io, logits on gmem_out, one bundle per
    weight port (as mmfree_hls.engine.codegen writes it)."""
    weights = "".join(f", const unsigned long long* w{k}" for k in range(n_weight_ports))
    pragmas = "\n".join(
        [f"#pragma HLS INTERFACE mode=m_axi port={p} bundle={b} offset=slave depth=16"
         for p, b in (("x_in", "gmem_io"), ("state", "gmem_io"), ("logits", "gmem_out"))]
        + [f"#pragma HLS INTERFACE m_axi port=w{k} bundle=gmem_w{k} offset=slave depth=16 "
           f"max_read_burst_length=16" for k in range(n_weight_ports)]
        + ["#pragma HLS INTERFACE mode=s_axilite port=return bundle=control"])
    body = " ".join(f"logits[0] += (float)w{k}[0];" for k in range(n_weight_ports))
    return (f"// {port_bits}-bit weight words in the real engine\n"
            f"int mmfree_engine(const float* x_in, float* state, float* logits{weights}) {{\n{pragmas}\n"
            f"    state[0] = x_in[0]; {body}\n    return 0;\n}}\n")


def make_project(root: Path, board: str, tier: str, testbench: bool = True) -> Path:
    preset = synth.board_preset(board, tier)
    k = len(preset["ports"]) if tier == "streamed" else 0
    (root / "src").mkdir(parents=True)
    (root / "src" / "engine.cpp").write_text(engine_source(k, preset["port_bits"]))
    record = {"name": "demo", "top": "mmfree_engine", "tier": tier, "board": board,
              "sources": ["src/engine.cpp"], "include_dirs": ["src"], "cflags": "-DMMFREE_DRY_RUN=1"}
    if testbench:
        (root / "src" / "tb.cpp").write_text("int main() { return 0; }\n")
        record["testbench"] = ["src/tb.cpp"]
    (root / "mmfree_project.json").write_text(json.dumps(record))
    return root


def dry_run(script: Path, log: Path, vivado: bool, **env) -> tuple[int, list[dict], str]:
    if log.exists():
        log.unlink()
    args = ["-mode", "batch", "-source", str(script)] if vivado else ["-f", str(script)]
    proc = subprocess.run([TCLSH, str(STUB), *args], capture_output=True, text=True, cwd=script.parent,
                          env={**os.environ, "MMFREE_DRY_RUN_LOG": str(log), **env})
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc.returncode, calls, proc.stdout + proc.stderr


class Design:
    """The block design as the recorded Vivado calls built it."""

    def __init__(self, calls: list[dict]):
        self.calls = calls
        self.cells = {}
        self.props: dict[str, dict] = {}
        parent: dict[str, str] = {}

        def find(p):
            while parent.setdefault(p, p) != p:
                p = parent[p]
            return p

        self.links: dict[str, str] = {}
        self.addr: dict[str, list[str]] = {}
        for c in calls:
            a = c["args"]
            if c["cmd"] == "create_bd_cell":
                self.cells[a[-1]] = a[a.index("-vlnv") + 1]
            elif c["cmd"] == "set_property" and "props" in c:
                self.props.setdefault(c["object"], {}).update(c["props"])
            elif c["cmd"] == "connect_bd_net":
                for p in a[1:]:
                    parent[find(p)] = find(a[0])
            elif c["cmd"] == "connect_bd_intf_net":
                self.links[a[0]], self.links[a[1]] = a[1], a[0]
            elif c["cmd"] == "assign_bd_address" and "space" in c:
                self.addr.setdefault(c["space"], []).append(c["segment"])
        self.net = lambda p: find(p) if p in parent else None

    def cmd(self, name):
        return [c for c in self.calls if c["cmd"] == name]

    def reach(self, pin: str) -> str | None:
        """Follow an interface link through 1x1 SmartConnects."""
        for _ in range(4):
            peer = self.links.get(pin)
            if peer is None:
                return None
            cell = peer.strip("/").split("/")[0]
            if not self.cells.get(cell, "").startswith("xilinx.com:ip:smartconnect"):
                return peer
            pin = re.sub(r"/S\d\d_AXI$", "/M00_AXI", peer) if "/S" in peer else peer.replace("M00_AXI", "S00_AXI")
        return None


def build(tmp_path: Path, board: str, tier: str, **kw):
    project = make_project(tmp_path / "hls_project" / "demo", board, tier)
    hls_script = synth.write_hls_tcl(project, board, tier=tier, cosim=kw.pop("cosim", False))
    rc, hls_calls, out = dry_run(hls_script, tmp_path / "hls.jsonl", vivado=False)
    assert rc == 0, out
    bd_script = synth.write_bd_tcl(project, board, tier=tier, jobs=2, **kw)
    return project, hls_calls, bd_script


@pytest.mark.parametrize("tier", ["on-chip", "streamed"])
@pytest.mark.parametrize("board", BOARDS)
def test_dry_run_hls_and_block_design(tmp_path, board, tier):
    facts = known_boards()[board]
    preset = synth.board_preset(board, tier)
    fam = synth.ps_ports()[facts["ps"]]
    project, hls, bd_script = build(tmp_path, board, tier)

    # ---- Vitis HLS: part, clock, m_axi settings matching the PS ports, flow order, fixed VLNV.
    cmds = [c["cmd"] for c in hls]
    assert ["set_part", facts["part"]] == [hls[cmds.index("set_part")]["cmd"], hls[cmds.index("set_part")]["args"][0]]
    period = float(hls[cmds.index("create_clock")]["args"][1])
    assert period == pytest.approx(1000 / preset["clock_mhz"], abs=1e-3)
    iface = hls[cmds.index("config_interface")]["options"]
    assert iface["-m_axi_max_read_burst_length"] == "16" and iface["-m_axi_max_write_burst_length"] == "16"
    assert iface["-m_axi_num_read_outstanding"] == str(8 if facts["ps"] == "zynq7" else 16)
    assert iface["-m_axi_max_widen_bitwidth"] == str(preset["port_bits"]) == str(fam["family_port_bits"])
    assert iface["-m_axi_addr64"] == "true"
    assert cmds.index("csim_design") < cmds.index("csynth_design") < cmds.index("export_design")
    assert "cosim_design" not in cmds
    exported = next(c["vlnv"] for c in hls if c["cmd"] == "__exported__")
    assert exported == "xilinx.com:hls:mmfree_engine:1.0"
    k = len(preset["ports"]) if tier == "streamed" else 0
    seen = next(c for c in hls if c["cmd"] == "__interfaces__")
    assert seen["masters"] == sorted(["m_axi_gmem_io", "m_axi_gmem_out"] + [f"m_axi_gmem_w{i}" for i in range(k)])

    # ---- Vivado, on the IP the HLS run exported.
    rc, calls, out = dry_run(bd_script, tmp_path / "bd.jsonl", vivado=True,
                             MMFREE_STUB_BOARD_PARTS=facts["board_part"])
    assert rc == 0, out
    d = Design(calls)
    ip_cells = [n for n, v in d.cells.items() if v == exported]
    assert ip_cells == ["mmfree_0"], "the block design instantiates the exported VLNV, once"
    order = [c["cmd"] for c in calls]
    assert order.index("update_ip_catalog") < order.index("create_bd_cell")
    # The IP is created (and its masters counted) before any PS port is enabled.
    ip_created = next(i for i, c in enumerate(calls) if c["cmd"] == "create_bd_cell" and c["args"][-1] == "mmfree_0")
    first_ps_props = next(i for i, c in enumerate(calls) if c["cmd"] == "set_property" and c.get("object") == "ps")
    assert ip_created < first_ps_props
    masters = next(c["result"] for c in calls if c["cmd"] == "get_bd_intf_pins" and "-of_objects" in c["args"])
    assert sorted(m.split("/")[-1] for m in masters) == seen["masters"]

    ps = d.props["ps"]
    clk = f"/ps/{fam['pl_clock_pin']}"
    enabled = {p for p, s in fam["slaves"].items() if ps.get(s["enable"]) == "1"}
    names = [m.split("/")[-1] for m in masters]
    plan = synth.port_plan(names, preset, facts)
    assert enabled == set(plan.values()), "exactly the PS slave ports the IP's masters use are enabled"
    assert len(enabled) == k + 1, "one port per weight bundle, one for the I/O bundles"
    if tier == "streamed":
        assert [plan[f"m_axi_gmem_w{i}"] for i in range(k)] == preset["ports"]
    assert plan["m_axi_gmem_io"] == plan["m_axi_gmem_out"] == fam["io_port_preference"][
        0 if fam["io_port_preference"][0] not in preset["ports"] else 1]
    # Every master reaches its port; every enabled PS slave port has a master behind it, its clock pin
    # on the PL clock and the preset's width.
    for name in names:
        assert d.reach(f"/mmfree_0/{name}") == f"/ps/{plan[name]}", name
    for port in enabled:
        s = fam["slaves"][port]
        assert d.reach(f"/ps/{port}", ) is not None and any(p == port for p in plan.values()), port
        sc = d.links[f"/ps/{port}"].split("/")[1]
        assert int(d.props[sc]["CONFIG.NUM_SI"]) == sum(p == port for p in plan.values())
        assert d.net(f"/ps/{s['clock_pin']}") == d.net(clk) is not None, f"{port} clock"
        assert ps[s["width"]] == str(preset["port_bits"])
    # Every m_axi master is address-mapped onto DDR through the port it is wired to.
    for m in masters:
        port = d.reach(m).split("/")[-1]
        segs = d.addr.get(f"/mmfree_0/Data_{m.split('/')[-1]}", [])
        assert segs and all("DDR" in s for s in segs), m
        assert {s.removeprefix("/ps/") for s in segs} <= set(fam["slaves"][port]["ddr_segments"])
    # Control: the preset's master port on, its clock connected; every other PS master off.
    for name, m in fam["masters"].items():
        assert ps[m["enable"]] == ("1" if name == facts["control_port"] else "0"), name
    assert d.net(f"/ps/{fam['masters'][facts['control_port']]['clock_pin']}") == d.net(clk)
    assert d.reach(f"/ps/{facts['control_port']}") == "/mmfree_0/s_axi_control"
    if facts["ps"] == "zynq_ultra":
        assert ps["CONFIG.PSU__USE__M_AXI_GP1"] == "0" and ps["CONFIG.PSU__USE__M_AXI_GP2"] == "0"
    # One clock at the preset frequency, one reset.
    assert float(ps[synth.toolchain()["ps"][facts["ps"]]["pl_clock_property"]]) == preset["clock_mhz"]
    assert d.net("/mmfree_0/ap_clk") == d.net(clk)
    resets = [n for n, v in d.cells.items() if v.startswith("xilinx.com:ip:proc_sys_reset")]
    assert resets == ["rst_pl"]
    assert d.net("/mmfree_0/ap_rst_n") == d.net("/rst_pl/peripheral_aresetn")
    assert order.index("validate_bd_design") < order.index("launch_runs")
    explicit = [i for i, c in enumerate(calls) if c["cmd"] == "assign_bd_address" and "space" in c]
    bare = [i for i, c in enumerate(calls) if c["cmd"] == "assign_bd_address" and "space" not in c]
    assert len(explicit) >= len(masters) + 1 and bare and max(explicit) < bare[0] < order.index("validate_bd_design")

    # .bit/.hwh: the same basename side by side, as pynq's Overlay looks the .hwh up.
    out = bd_script.parent
    bits = sorted(p.name for p in out.glob("*.bit"))
    assert bits == ["demo.bit"] and (out / "demo.hwh").is_file()
    assert mmfree_0_in_hwh(out / "demo.hwh", exported)
    gate = json.loads((out / "reports" / "timing.json").read_text())
    assert gate["timing_met"] is True and gate["clock_mhz"] == preset["clock_mhz"]
    impl = synth.parse_impl_reports(out / "reports")
    assert impl["source"] == "vivado_impl" and impl["resources"]["LUT"] > 0 and impl["fmax_mhz"] > preset["clock_mhz"]


def mmfree_0_in_hwh(hwh: Path, vlnv: str) -> bool:
    return f'INSTANCE="mmfree_0" VLNV="{vlnv}"' in hwh.read_text()


# ------------------------------------------------------------------ the stub catches what Vivado would
def test_dry_run_stub_reproduces_the_floating_clock_error(tmp_path, monkeypatch):
    """The old flow's fault (an enabled PS port nothing clocks: BD 41-758) fails the dry run."""
    real = synth.ps_ports

    def leave_hpm1_on():
        d = real()
        del d["zynq_ultra"]["masters"]["M_AXI_HPM1_FPD"]      # the flow would no longer turn it off
        return d

    monkeypatch.setattr(synth, "ps_ports", leave_hpm1_on)
    _, _, bd_script = build(tmp_path, "zcu104", "streamed")
    rc, calls, out = dry_run(bd_script, tmp_path / "bd.jsonl", vivado=True,
                             MMFREE_STUB_BOARD_PARTS="xilinx.com:zcu104:part0:1.1")
    assert rc == 1 and "BD 41-758" in out and "maxihpm1_fpd_aclk" in out


def test_dry_run_timing_gate_fails_on_negative_slack_and_records_an_allowed_violation(tmp_path):
    facts = known_boards()["kv260"]
    _, _, bd_script = build(tmp_path, "kv260", "streamed")
    rc, calls, out = dry_run(bd_script, tmp_path / "bd.jsonl", vivado=True,
                             MMFREE_STUB_BOARD_PARTS=facts["board_part"], MMFREE_STUB_WNS="-0.337")
    assert rc == 1 and "timing not met" in out and "WNS -0.337" in out
    assert not (bd_script.parent / "demo.bit").exists(), "no bitstream is handed on with negative slack"
    assert (bd_script.parent / "reports" / "timing_summary.rpt").is_file()

    project = bd_script.parent.parent.parent
    allowed = synth.write_bd_tcl(project, "kv260", tier="streamed", allow_timing_violation=True)
    rc, calls, out = dry_run(allowed, tmp_path / "bd2.jsonl", vivado=True,
                             MMFREE_STUB_BOARD_PARTS=facts["board_part"], MMFREE_STUB_WNS="-0.337")
    assert rc == 0, out
    assert (allowed.parent / "demo.bit").is_file()
    impl = synth.parse_impl_reports(allowed.parent / "reports")
    assert impl["timing_met"] is False and impl["timing_violation_allowed"] is True
    assert impl["wns_ns"] == -0.337 and impl["fmax_mhz"] < 200


def test_dry_run_missing_board_files_is_an_explicit_choice(tmp_path):
    _, _, bd_script = build(tmp_path, "pynq-z2", "on-chip")
    rc, calls, out = dry_run(bd_script, tmp_path / "bd.jsonl", vivado=True, MMFREE_STUB_BOARD_PARTS="")
    assert rc == 1 and "--part-only" in out and "board files" in out
    project = bd_script.parent.parent.parent
    part_only = synth.write_bd_tcl(project, "pynq-z2", tier="on-chip", part_only=True)
    rc, calls, out = dry_run(part_only, tmp_path / "bd2.jsonl", vivado=True, MMFREE_STUB_BOARD_PARTS="")
    assert rc == 0, out
    auto = next(c for c in calls if c["cmd"] == "apply_bd_automation")
    assert auto["config"]["apply_board_preset"] == "0"
    assert not any(c["cmd"] == "set_property" and c["args"][0] == "board_part" for c in calls)


def test_dry_run_cosim_on_request(tmp_path):
    project = make_project(tmp_path / "p", "zcu104", "streamed")
    script = synth.write_hls_tcl(project, "zcu104", cosim=True)
    rc, calls, out = dry_run(script, tmp_path / "hls.jsonl", vivado=False)
    assert rc == 0, out
    cmds = [c["cmd"] for c in calls]
    assert cmds.index("csynth_design") < cmds.index("cosim_design") < cmds.index("export_design")
    bare = make_project(tmp_path / "q", "zcu104", "streamed", testbench=False)
    with pytest.raises(ValueError, match="testbench"):
        synth.write_hls_tcl(bare, "zcu104", cosim=True)
    calls = dry_run(synth.write_hls_tcl(bare, "zcu104"), tmp_path / "h2.jsonl", vivado=False)[1]
    assert "csim_design" not in [c["cmd"] for c in calls]


def test_dry_run_refuses_an_ip_built_for_other_weight_ports(tmp_path):
    """An IP synthesised for 2 weight ports cannot go into a block design for a 4-port preset."""
    project, _, bd_script = build(tmp_path, "zcu104", "streamed")
    (project / "src" / "engine.cpp").write_text(engine_source(2, 128))
    rc, _, out = dry_run(synth.write_hls_tcl(project, "zcu104"), tmp_path / "h2.jsonl", vivado=False)
    assert rc == 0, out
    rc, calls, out = dry_run(bd_script, tmp_path / "bd.jsonl", vivado=True,
                             MMFREE_STUB_BOARD_PARTS=known_boards()["zcu104"]["board_part"])
    assert rc == 1 and "2 weight bundles where the streamed preset" in out and "make hls" in out
    assert not any(c["cmd"] == "set_property" and c.get("object") == "ps" and "props" in c
                   and any(k.startswith("CONFIG.PSU__USE__S_AXI") for k in c["props"]) for c in calls)

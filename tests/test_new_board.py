"""Adding a board is a one-file edit: one entry in a board table, nothing else.

The test writes a copy of the shipped table with one more board ("k26-test", a
KV260 clone with its own clock, lanes, ports, resources and DDR figures) to a
temporary file, points ``$MMFREE_BOARDS`` at it, and runs everything a board is
used for: convert (on chip, the demo model, with the C-simulation and a
package the host opens), the cost model (``cost.estimate``, ``mmfree perf``,
``mmfree resources``) and the Vitis HLS / Vivado Tcl dry run of the converted
projects (both tiers). Every figure checked comes from the new entry, not from
the board it was cloned from. See docs/ARCHITECTURE.md ("Adding a board").
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from mmfree_hls import cli
from mmfree_hls.engine import cost
from mmfree_hls.engine.build import ap_types_dir
from mmfree_hls.engine.presets import BOARDS_ENV, BOARDS_FILE, PresetError, board_names, get_board, get_preset
from test_synth_dry_run import STUB, TCLSH, Design, dry_run

BOARD = "k26-test"
DEMO = Path(__file__).resolve().parents[1] / "python" / "mmfree_hls" / "data" / "demo_model"
CLOCK = 150.0
PORTS = ["S_AXI_HP1_FPD", "S_AXI_HP2_FPD"]          # two of kv260's five: R = 2 x 16 bytes

pytestmark = pytest.mark.slow


def new_entry(shipped: dict) -> dict:
    b = copy.deepcopy(shipped["kv260"])
    b.update({"LUT": 70560, "FF": 141120, "BRAM_18K": 432, "URAM": 0, "DSP": 360,
              "ddr_peak_gbps": 9.6, "ddr_usable_fraction": 0.5,
              "ddr_usable_fraction_source": "test board", "sources": ["tests/test_new_board.py"]})
    b["engine"] = {"on-chip": {"clock_mhz": CLOCK, "rows_per_tile": 32, "vector_lanes": 2},
                   "streamed": {"clock_mhz": CLOCK, "ports": PORTS, "port_bits": 128, "burst_beats": 16,
                                "outstanding": 16, "fifo_words": 1024, "vector_lanes": 2}}
    return b


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    shipped = json.loads(BOARDS_FILE.read_text())
    assert BOARD not in shipped
    path = tmp_path_factory.mktemp("boards") / "boards.json"
    path.write_text(json.dumps({**shipped, BOARD: new_entry(shipped)}, indent=1))
    mp = pytest.MonkeyPatch()
    mp.setenv(BOARDS_ENV, str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="module")
def projects(table, tmp_path_factory):
    from mmfree_hls.design.convert import convert
    root = tmp_path_factory.mktemp("hls_project")
    onchip = convert(DEMO, root / "demo", board=BOARD, tier="on-chip")
    streamed = convert(DEMO, root / "demo_streamed", board=BOARD, tier="streamed", compile=False)
    return onchip, streamed


def test_the_shipped_table_does_not_know_the_board(monkeypatch):
    monkeypatch.delenv(BOARDS_ENV, raising=False)
    assert BOARD not in board_names()
    with pytest.raises(PresetError, match=f"unknown board '{BOARD}'"):
        get_preset(BOARD, "on-chip")


def test_the_table_in_force_has_the_board_and_its_presets(table):
    assert BOARD in board_names() and "kv260" in board_names()
    b = get_board(BOARD)
    assert b.resources["LUT"] == 70560 and b.usable_gbps == pytest.approx(4.8)
    on, st = get_preset(BOARD, "on-chip"), get_preset(BOARD, "streamed")
    assert (on.clock_mhz, on.R, on.vector_lanes) == (CLOCK, 32, 2)
    assert (st.K, st.R, st.ports) == (2, 32, tuple(PORTS))


def test_convert_package_and_decode_on_the_new_board(projects, tmp_path):
    from mmfree_hls.checkpoint import load_checkpoint
    from mmfree_hls.overlay import package_project
    from mmfree_hls.runtime import Accelerator

    onchip, streamed = projects
    info = onchip.info
    assert (info["board"], info["tier"], info["clock_mhz"]) == (BOARD, "on-chip", CLOCK)
    assert info["part"] == get_board(BOARD).part
    assert info["engine"]["R"] == 32 and info["engine"]["knobs"]["vector_lanes"] == 2
    assert streamed.info["engine"]["K"] == 2 and [p.get("ps_port") for p in streamed.info["ports"]
                                                     if p["name"].startswith("w")] == PORTS

    manifest = package_project(onchip.root, BOARD, out=tmp_path / "overlay")
    assert manifest.board == BOARD
    model = load_checkpoint(DEMO)
    prompt = list(b"The ")
    with Accelerator.open(tmp_path / "overlay", backend="csim") as acc:
        assert list(acc.generate(prompt, 12)) == model.generate_greedy(prompt, 12)


def test_cost_perf_and_resources_read_the_new_entry(table, capsys):
    name, cfg = cost.resolve_model("demo")
    rec = cost.estimate(cfg, get_preset(BOARD, "streamed"), "2bit", name)
    ref = cost.estimate(cfg, get_preset("kv260", "streamed"), "2bit", name)
    assert rec["board"] == BOARD and rec["clock_mhz"] == CLOCK and (rec["K"], rec["R"]) == (2, 32)
    assert rec["util"]["LUT"] == pytest.approx(rec["LUT"] / 70560)
    # the DDR bound is the entry's usable bandwidth (9.6 GB/s x 0.5) over the packed bytes per token
    assert rec["bound_tokens_per_s"] == pytest.approx(4.8e9 / rec["throughput"]["weight_bytes_per_token"])
    assert ref["bound_tokens_per_s"] == pytest.approx(get_board("kv260").usable_gbps * 1e9
                                                      / ref["throughput"]["weight_bytes_per_token"])

    assert cli.main(["perf", "--board", BOARD, "--model", "demo", "--tier", "both", "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert {(r["board"], r["tier"], r["packing"]) for r in recs} == {
        (BOARD, t, p) for t in ("on-chip", "streamed") for p in ("2bit", "1.6bit")}
    assert all(r["clock_mhz"] == CLOCK for r in recs)
    assert next(r for r in recs if r["tier"] == "streamed" and r["packing"] == "2bit")["LUT"] == rec["LUT"]

    assert cli.main(["resources", "demo", "--board", BOARD, "--tier", "on-chip"]) == 0
    out = capsys.readouterr().out
    assert f"{BOARD} demo on-chip 2bit: K=0 R=32" in out and "150 MHz" in out


@pytest.mark.skipif(TCLSH is None, reason="the Tcl dry run needs tclsh (apt install tcl)")
@pytest.mark.parametrize("tier", ["on-chip", "streamed"])
def test_tcl_dry_run_on_the_new_board(projects, tier, tmp_path):
    from mmfree_hls.design import synth

    project = projects[0 if tier == "on-chip" else 1].root
    facts = get_board(BOARD)
    env = {"MMFREE_STUB_CXX_INCLUDE": str(ap_types_dir())}
    rc, hls, out = dry_run(synth.write_hls_tcl(project, BOARD, tier=tier), tmp_path / "hls.jsonl", False, **env)
    assert rc == 0, out
    cmds = [c["cmd"] for c in hls]
    assert hls[cmds.index("set_part")]["args"][0] == facts.part
    assert float(hls[cmds.index("create_clock")]["args"][1]) == pytest.approx(1000 / CLOCK, abs=1e-3)
    seen = next(c for c in hls if c["cmd"] == "__interfaces__")
    k = len(PORTS) if tier == "streamed" else 0
    assert seen["masters"] == sorted(["m_axi_gmem_io", "m_axi_gmem_out"] + [f"m_axi_gmem_w{i}" for i in range(k)])

    bd = synth.write_bd_tcl(project, BOARD, tier=tier, jobs=2)
    rc, calls, out = dry_run(bd, tmp_path / "bd.jsonl", True, MMFREE_STUB_BOARD_PARTS=facts.board_part, **env)
    assert rc == 0, out
    d = Design(calls)
    for i, port in enumerate(PORTS[:k]):
        assert d.reach(f"/mmfree_0/m_axi_gmem_w{i}") == f"/ps/{port}"

"""The engine's cost model (engine/cost.py): records, units, knobs, FIFO model, reports, commands, targets."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from mmfree_hls import cli
from mmfree_hls.engine import cost, reports
from mmfree_hls.engine.layout import Shape
from mmfree_hls.engine.presets import RESOURCES, board_names, get_preset
from mmfree_hls.engine.schedule import token_cycles

REPO = Path(__file__).resolve().parents[1]
ENGINE_H = REPO / "design" / "hls" / "mmfree_engine.h"
KEYS = {"board", "model", "tier", "packing", "LUT", "FF", "BRAM_18K", "URAM", "DSP", "util", "fits",
        "cycles_per_token", "tokens_per_s", "bound_tokens_per_s", "share_of_bound", "source"}
DEMO = cost.resolve_model("demo")
M370 = cost.resolve_model("370M")


def rec(model=DEMO, board="pynq-z2", tier="on-chip", packing="2bit", **knobs):
    name, cfg = model
    return cost.estimate(cfg, get_preset(board, tier, **knobs), packing, name)


# ================================================================== records
def test_record_has_the_issue_keys_and_consistent_figures():
    r = rec(M370, "kv260", "streamed")
    assert KEYS <= set(r)
    assert set(r["util"]) == set(RESOURCES)
    board = get_preset("kv260", "streamed").board
    for k in RESOURCES:
        assert isinstance(r[k], int) and r[k] >= 0
        assert r["util"][k] == pytest.approx(r[k] / board.resources[k])
        # the total is the sum of the itemised units
        assert r[k] == pytest.approx(sum(u[k] for u in r["units"].values()), abs=len(r["units"]))
    assert r["source"] == "analytic" and (r["board"], r["model"], r["tier"], r["packing"]) == \
        ("kv260", "370M", "streamed", "2bit")
    assert r["share_of_bound"] == pytest.approx(r["tokens_per_s"] / r["bound_tokens_per_s"])
    assert r["tokens_per_s"] == pytest.approx(r["clock_mhz"] * 1e6 / r["cycles_per_token"], rel=1e-5)
    assert r["bound_tokens_per_s"] == pytest.approx(board.usable_gbps * 1e9 / r["throughput"]["weight_bytes_per_token"])
    assert json.loads(json.dumps(r)) == r                       # plain JSON


def test_fits_is_over_every_resource_and_takes_a_budget():
    r = rec()
    for k in RESOURCES:
        probe = {**r, "util": {**{j: 0.1 for j in RESOURCES}, k: 0.65}}
        assert cost.fits(probe) and cost.fits(probe, 0.7) and not cost.fits(probe, 0.6), k
        assert cost.check_budget(probe, 0.6) == {j: j != k for j in RESOURCES}
        over = {**probe, "util": {**probe["util"], k: 1.01}}
        assert not cost.fits(over), k
    assert r["fits"] == all(r["util"][k] <= 1 for k in RESOURCES)


def test_model_only_boards_and_every_board_is_covered(capsys):
    assert cli.main(["perf", "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    boards = board_names()
    assert {(r["board"], r["model"], r["packing"]) for r in recs} == \
        {(b, m, p) for b in boards for m in cost.PUBLISHED for p in ("2bit", "1.6bit")}
    assert all(r["tier"] == "streamed" and KEYS <= set(r) for r in recs)
    assert {r["board"] for r in recs if r["flow"] == "model-only"} == {"alveo-u55c"}
    assert cli.main(["perf", "--model", "370M", "--board", "alveo-u55c", "--packing", "2bit"]) == 0
    assert "alveo-u55c (model only)" in capsys.readouterr().out


def test_resources_command(tmp_path, capsys):
    assert cli.main(["resources", str(cost.DEMO_MODEL), "--board", "pynq-z2", "--tier", "on-chip"]) == 0
    out = capsys.readouterr().out
    assert "mac.quantiser" in out and "vector lanes" in out and "weight image" in out
    js = tmp_path / "r.json"
    assert cli.main(["resources", "demo", "--board", "kv260", "--tier", "streamed", "--packing", "both",
                     "--json", str(js)]) == 0
    recs = json.loads(js.read_text())
    assert [r["packing"] for r in recs] == ["2bit", "1.6bit"] and all(KEYS <= set(r) for r in recs)
    capsys.readouterr()
    assert cli.main(["resources", "demo", "--board", "nexys", "--tier", "on-chip"]) == 2
    assert "unknown board 'nexys'" in capsys.readouterr().err
    assert cli.main(["resources", str(tmp_path / "nowhere"), "--board", "kv260", "--tier", "on-chip"]) == 2
    assert "neither a published size" in capsys.readouterr().err


# ================================================================== the structure the model charges
def test_bitlinear_instances_match_the_call_sites_of_the_engine():
    """One BitLinear unit: every call of compute_pass is the same (non-template-on-dims) function,
    with its dimensions and write-back kind as run-time arguments; the model charges one unit."""
    src = ENGINE_H.read_text()
    body = src[src.index("int compute_pass("):]
    kinds = dict(re.findall(r"make_sink\((\w+), (SINK_\w+)", body))
    calls = re.findall(r"bitlinear\(src, st, in, n, ([\w\s*]+?), ([\w\s*]+?), (\w+), logits, ctr\)", body)
    found = sorted((a, b.replace(" ", ""), kinds[s]) for a, b, s in calls)
    assert found == sorted((i, o, k) for _, i, o, k in cost.BITLINEAR_CALLS)
    assert "template <class Src, class LogitStream>\nvoid bitlinear(Src &src, engine_state &st, const bl_input &in" in src
    shape = Shape.of(M370[1], "2bit", 80)
    (unit,) = cost.bitlinear_instances(shape)
    assert (unit["n_in"], unit["n_out"]) == (2816, 32000) and len(unit["matrices"]) == 7


@pytest.mark.parametrize("model", [DEMO, M370])
@pytest.mark.parametrize("packing", ["2bit", "1.6bit"])
def test_segments_are_the_schedule(model, packing):
    shape = Shape.of(model[1], packing, 16)
    for V in (1, 4, 8):
        segs = cost.segments(shape, V)
        assert sum(s.cycles for s in segs) == token_cycles(shape, V).total
        assert sum(s.cycles for s in segs if s.kind == "read") == shape.words()
        for part, cycles in token_cycles(shape, V).to_dict().items():
            if part != "total":
                assert cycles == sum(s.cycles for s in segs if s.part == part), part


def test_memories_are_placed_by_the_rules():
    r = rec(M370, "kv260", "streamed", vector_lanes=8, batch_slots=1, prefill_chunk=1)     # N = 1
    mems = {m["name"]: m for m in r["memories"]}
    assert mems["s"]["banks"] == 8 and mems["attn.c0"]["banks"] == 8       # V = 8 > PARAM_LANES = 4
    assert mems["x"]["banks"] == 4 and mems["o"]["banks"] == 8              # PER = 4, max(V, PER)
    assert all(m["in"] != "uram" for m in r["memories"] if m["name"] in ("sigma table", "weight image"))
    assert r["sigma_table"]["copies"] == math.ceil(3 * 8 / 2) and r["units"]["sigma tables"]["URAM"] == 0
    assert r["sigma_table"]["bits"] == 40
    on_z7 = rec(M370, "pynq-z2", "streamed")
    assert on_z7["URAM"] == 0 and all(m["in"] != "uram" for m in on_z7["memories"])
    img = {m["name"]: m for m in rec()["memories"]}["weight image"]
    assert img["in"] == "bram" and img["BRAM_18K"] == cost.bram18(img["elements"], img["width"])
    assert cost.bram18(128, 256) == 8 and cost.bram18(4096, 64) == 16 and cost.bram18(2048, 9) == 1


def test_operator_costs():
    assert cost.mul_exact().DSP == 1 and cost.mul_wide().DSP == 1 and cost.mul_exact().LUT > 0
    assert cost.divider(256).DSP == 0 and cost.divider(704).DSP == 1
    assert cost.acc_bits(1024) == 18 and cost.acc_bits(2816) == 20      # 127 n_in < 2^17, 2^19
    lane = rec()["vector_lane"]
    assert lane["mlgru"]["DSP"] == 15 and lane["glu"]["DSP"] == 7 and lane["shared"]["DSP"] == 15


# ================================================================== knobs move the estimate the right way
def test_knobs_move_the_estimate():
    base = rec(M370, "zcu104", "streamed")
    more_v = rec(M370, "zcu104", "streamed", vector_lanes=16)
    mem = lambda r, unit: r["units"][unit]["BRAM_18K"] + 16 * r["units"][unit]["URAM"]   # itemised: placement rebalances
    assert more_v["LUT"] > base["LUT"] and more_v["DSP"] > base["DSP"]
    assert mem(more_v, "sigma tables") > mem(base, "sigma tables")
    assert more_v["throughput"]["cycles"]["vector"] < base["throughput"]["cycles"]["vector"]
    trit = rec(M370, "zcu104", "streamed", packing="1.6bit")
    assert trit["LUT"] > base["LUT"] and trit["tokens_per_s"] > base["tokens_per_s"]
    table = rec(M370, "zcu104", "streamed", sigmoid_table_bits=12)
    assert mem(table, "sigma tables") > mem(base, "sigma tables")
    rows = rec(DEMO, "zcu104", "on-chip", rows_per_tile=32)
    small = rec(DEMO, "zcu104", "on-chip")
    assert rows["LUT"] > small["LUT"] and rows["FF"] > small["FF"]
    assert rows["tokens_per_s"] > small["tokens_per_s"]              # fewer words per token
    fast = rec(DEMO, "zcu104", "on-chip", clock_mhz=300)
    assert fast["tokens_per_s"] == pytest.approx(small["tokens_per_s"] * 1.5)
    deep = rec(M370, "zcu104", "streamed", fifo_words=8192)
    assert mem(deep, "port FIFOs") > mem(base, "port FIFOs")
    assert rec(M370, "zcu104", "streamed", ports=("a",) * 2)["LUT"] < base["LUT"]


def test_a_shallow_fifo_or_a_slow_clock_costs_throughput():
    base = rec(M370, "kv260", "streamed")
    assert base["throughput"]["fifo"]["absorbs_stalls"] and base["throughput"]["limit"].startswith("DDR")
    shallow = rec(M370, "kv260", "streamed", fifo_words=32)
    assert not shallow["throughput"]["fifo"]["absorbs_stalls"]
    assert shallow["tokens_per_s"] < base["tokens_per_s"]
    slow = rec(M370, "kv260", "streamed", clock_mhz=100)              # ports below the DDR rate
    assert slow["throughput"]["limit"].split("+")[0] in ("ports", "compute") and slow["share_of_bound"] < 0.6


def test_fluid_fifo_model():
    segs = [("read", 100, "a"), ("stall", 50, "s"), ("read", 100, "b")]
    # supply faster than compute: compute time
    assert cost.stream_cycles(segs, 1.0, 16, first_word=0) == 250
    # half rate, deep FIFO: the stall's 25 words are banked, the DDR never idles -> 200 words / 0.5
    assert cost.stream_cycles(segs, 0.5, 1000, first_word=0) == pytest.approx(400)
    # no FIFO: the stall is lost entirely
    assert cost.stream_cycles(segs, 0.5, 0, first_word=0) == pytest.approx(450)
    # a FIFO of 10 words keeps 10 of the stall's 25
    assert cost.stream_cycles(segs, 0.5, 10, first_word=0) == pytest.approx(430)


# ================================================================== reports replace the estimate
CSYNTH = """<?xml version="1.0" encoding="UTF-8"?>
<profile>
  <UserAssignments><Part>xc7z020clg400-1</Part><TopModelName>mmfree_engine</TopModelName>
    <TargetClockPeriod>10.00</TargetClockPeriod></UserAssignments>
  <PerformanceEstimates>
    <SummaryOfTimingAnalysis><EstimatedClockPeriod>8.1</EstimatedClockPeriod></SummaryOfTimingAnalysis>
    <SummaryOfOverallLatency><Best-caseLatency>4000</Best-caseLatency><Worst-caseLatency>4321</Worst-caseLatency>
      <Interval-min>4001</Interval-min><Interval-max>4322</Interval-max></SummaryOfOverallLatency>
    <SummaryOfLoopLatency><LOAD><Name>LOAD</Name><TripCount>9312</TripCount><Latency>9315</Latency>
      <PipelineII>1</PipelineII><PipelineDepth>3</PipelineDepth></LOAD></SummaryOfLoopLatency>
  </PerformanceEstimates>
  <AreaEstimates>
    <Resources><BRAM_18K>40</BRAM_18K><DSP48E>99</DSP48E><FF>12345</FF><LUT>23456</LUT><URAM>0</URAM></Resources>
    <AvailableResources><BRAM_18K>280</BRAM_18K><DSP48E>220</DSP48E><FF>106400</FF><LUT>53200</LUT><URAM>0</URAM>
    </AvailableResources>
  </AreaEstimates>
</profile>
"""


def test_reports_replace_the_estimate(tmp_path):
    name, cfg = DEMO
    preset = get_preset("pynq-z2", "on-chip")
    assert cost.estimate(cfg, preset, "2bit", name, project_dir=tmp_path)["source"] == "analytic"
    rpt = tmp_path / "synth" / "pynq-z2" / "vitis_hls_prj" / "solution1" / "syn" / "report"
    rpt.mkdir(parents=True)
    (rpt / "mmfree_engine_csynth.xml").write_text(CSYNTH)
    (rpt / "bitlinear_csynth.xml").write_text(CSYNTH.replace("23456", "7"))
    r = cost.estimate(cfg, preset, "2bit", name, project_dir=tmp_path)
    assert r["source"] == "vitis_hls_report" and r["report"].endswith("mmfree_engine_csynth.xml")
    assert {k: r[k] for k in RESOURCES} == {"LUT": 23456, "FF": 12345, "BRAM_18K": 40, "URAM": 0, "DSP": 99}
    assert r["util"]["LUT"] == pytest.approx(23456 / 53200) and r["analytic"]["LUT"] != 23456
    # another board's report does not stand in for this board's build
    assert cost.estimate(cfg, get_preset("kv260", "on-chip"), "2bit", name, project_dir=tmp_path)["source"] \
        == "analytic"
    rep = reports.parse_csynth_report(rpt / "mmfree_engine_csynth.xml")
    assert rep.latency_worst == 4321 and rep.loops[0]["trip_count"] == 9312 and rep.resources["DSP"] == 99
    impl = tmp_path / "synth" / "pynq-z2" / "reports"
    impl.mkdir(parents=True)
    (impl / "impl.json").write_text(json.dumps({"source": "vivado_impl", "fmax_mhz": 112.0, "resources": {
        "LUT": 20000, "FF": 11000, "BRAM_18K": 38, "URAM": 0, "DSP": 97}}))
    r = cost.estimate(cfg, preset, "2bit", name, project_dir=tmp_path)
    assert r["source"] == "vivado_impl" and r["LUT"] == 20000 and r["report"].endswith("impl.json")
    with pytest.raises(FileNotFoundError):
        reports.parse_csynth_report(tmp_path / "missing.xml")
    bad = tmp_path / "bad.xml"
    bad.write_text("<profile><Other/></profile>")
    with pytest.raises(reports.ReportError, match="not a Vitis HLS csynth.xml"):
        reports.parse_csynth_report(bad)
    (impl / "impl.json").write_text("{}")
    with pytest.raises(reports.ReportError, match="not a Vivado implementation summary"):
        cost.estimate(cfg, preset, "2bit", name, project_dir=tmp_path)


# ================================================================== the issue's targets, by the model
@pytest.mark.parametrize("board", ["pynq-z2", "zcu104", "kv260"])
def test_target_demo_on_chip_at_most_60_percent(board):
    r = rec(DEMO, board, "on-chip")
    assert cost.fits(r, 0.6), {k: round(v, 3) for k, v in r["util"].items()}


@pytest.mark.parametrize("board,packing", [("zcu104", "2bit"), ("zcu104", "1.6bit"), ("kv260", "2bit"),
                                           ("kv260", "1.6bit")])
def test_target_370m_streamed_fits_70_percent(board, packing):
    r = rec(M370, board, "streamed", packing=packing)
    assert cost.fits(r, 0.7), {k: round(v, 3) for k, v in r["util"].items()}


@pytest.mark.parametrize("board", ["zcu104", "kv260"])
def test_target_370m_streamed_speed(board):
    r = rec(M370, board, "streamed")
    assert r["share_of_bound"] >= 0.8 and r["tokens_per_s"] >= 124
    assert r["throughput"]["fifo"]["absorbs_stalls"]
    assert rec(M370, board, "streamed", packing="1.6bit")["share_of_bound"] >= 0.8


def test_target_pynq_z2_370m_streamed_speed():
    r = rec(M370, "pynq-z2", "streamed")
    assert r["share_of_bound"] >= 0.8 and r["tokens_per_s"] >= 12


def test_target_pynq_z2_370m_streamed_fits():
    r = rec(M370, "pynq-z2", "streamed")
    assert r["fits"], {k: round(v, 3) for k, v in r["util"].items()}


"""Performance model: bytes per token, the bandwidth bound, the CLI, the csynth parser."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from mmfree_hls import ModelConfig, MMFreeLM, cli, perf, streamed
from mmfree_hls.packing import pack_ternary
from mmfree_hls.reference import bitlinear_names

PACKINGS = ("2bit", "1.6bit")


@pytest.fixture(scope="module")
def small_model():
    # Widths that are not multiples of 4 or 5, so row rounding shows up.
    cfg = ModelConfig(vocab_size=50, hidden_size=38, num_hidden_layers=2, intermediate_size=42)
    return MMFreeLM.random(cfg, seed=3)


@pytest.mark.parametrize("packing", PACKINGS)
def test_bytes_per_token_matches_packed_tensors(small_model, packing):
    m, cfg = small_model, small_model.config
    names = bitlinear_names(cfg)
    ternary = sum(pack_ternary(m.ternary[n].w_q, packing).nbytes for n in names)
    norms = sum(v.astype(np.float32).nbytes for k, v in m.params.items() if k.endswith("norm.weight"))
    scales = 4 * len(names)
    lower_bounds = 4 * cfg.num_hidden_layers * cfg.input_dim

    t = perf.bytes_per_token(cfg, packing)
    assert t.ternary_weights == ternary
    assert t.params == norms + scales + lower_bounds
    assert t.embedding_row == 4 * cfg.d and t.logits == 4 * cfg.vocab_size
    lay = streamed.layout(cfg, packing)
    # Padding is bounded by one alignment unit per segment.
    assert streamed.HEADER_BYTES <= t.header_and_padding < streamed.HEADER_BYTES + streamed.ALIGN * len(lay.segments)
    # The formula is the size of the buffer the writer actually produces.
    assert streamed.write_buffer(m, packing).size == t.weight_buffer == lay.total_bytes


def test_layout_offsets_are_aligned_and_disjoint(small_model):
    lay = streamed.layout(small_model.config, "1.6bit")
    ends = 0
    for seg in lay.segments:
        assert seg.offset % streamed.ALIGN == 0
        assert seg.offset >= ends
        ends = seg.offset + seg.nbytes
    assert ends <= lay.total_bytes


@pytest.mark.parametrize("name", ["370M", "1.3B", "2.7B"])
def test_sixteen_tenths_bit_moves_fewer_bytes(name):
    cfg = perf.model_preset(name)
    two, five = perf.bytes_per_token(cfg, "2bit"), perf.bytes_per_token(cfg, "1.6bit")
    assert five.total < two.total
    # Row rounding costs at most one byte per row over the storage optimum of each packing.
    for t, p in ((two, "2bit"), (five, "1.6bit")):
        ideal = perf.ideal_weight_bytes(cfg, p)
        assert ideal <= t.ternary_weights < ideal * 1.01


def test_presets_have_the_published_sizes():
    published = {"370M": 370e6, "1.3B": 1.3e9, "2.7B": 2.7e9}
    for name, n in published.items():
        assert abs(perf.model_preset(name).parameter_count() / n - 1) < 0.06, name
    assert perf.load_presets()["370M"]["sources"]


def test_board_table_extended_not_restructured():
    raw = json.loads(perf.BOARDS_FILE.read_text())
    for name in ("pynq-z2", "zcu104", "kv260"):
        for key in ("part", "ps", "board_part", "clock_mhz"):     # what the rest of the toolkit reads
            assert key in raw[name]
    boards = perf.load_boards()
    assert any(n.startswith("alveo") for n in boards)
    for b in boards.values():
        assert b.sources and b.LUT > 0 and b.BRAM_18K > 0 and b.ddr_peak_gbps > 0
        assert 0 < b.ddr_usable_fraction <= 1


def test_bound_is_monotonic_in_bandwidth():
    cfg = perf.model_preset("370M")
    base = perf.get_board("kv260")
    bounds, projected = [], []
    for gbps in (1, 2, 5, 10, 20, 50, 100):
        b = replace(base, ddr_peak_gbps=gbps)
        p = perf.project(cfg, b, "2bit", perf.DesignKnobs(ports=4))
        bounds.append(p.bound_tps)
        projected.append(p.projected_tps)
        assert p.projected_tps <= p.bound_tps * 1.000001
    assert all(a < b for a, b in zip(bounds, bounds[1:]))
    assert all(a <= b * 1.000001 for a, b in zip(projected, projected[1:]))


def test_compute_bound_when_lanes_are_few():
    cfg = perf.model_preset("370M")
    p = perf.project(cfg, perf.get_board("zcu104"), "2bit", perf.DesignKnobs(lanes=4))
    assert p.limit.startswith("compute")
    assert p.projected_tps < p.compute_tps
    assert p.compute_tps == pytest.approx(p.clock_mhz * 1e6 / perf.mac_cycles(cfg, 4))


def test_auto_lanes_keep_up_with_the_stream():
    cfg = perf.model_preset("1.3B")
    for board in perf.load_boards().values():
        p = perf.project(cfg, board, "1.6bit", perf.DesignKnobs(ports=board.mem_ports))
        stream_cycles = p.weight_bytes / (p.design_gbps * 1e9) * p.clock_mhz * 1e6
        assert perf.mac_cycles(cfg, p.lanes) <= stream_cycles
        assert perf.mac_cycles(cfg, max(1, p.lanes - 16)) > stream_cycles * 0.9


def test_mac_cycles_count_rows_and_columns():
    cfg = ModelConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, intermediate_size=8)
    shapes = [(8, 8)] * 3 + [(8, 8), (16, 8), (8, 8)] + [(10, 8)]
    assert perf.mac_cycles(cfg, 1) == sum(o * i for o, i in shapes)
    assert perf.mac_cycles(cfg, 4) == sum(o * 2 for o, _ in shapes)
    assert perf.mac_cycles(cfg, 16) == sum(-(-o // 2) for o, _ in shapes)   # two rows per cycle


def test_cli_prints_every_board(capsys):
    assert cli.main(["perf", "--models", "370M"]) == 0
    out = capsys.readouterr().out
    assert "not a measurement" in out
    for name in perf.load_boards():
        assert name in out
    assert "1.6bit" in out and "2bit" in out


def test_cli_writes_json_and_plot(tmp_path, capsys):
    js, png = tmp_path / "perf.json", tmp_path / "perf.png"
    assert cli.main(["perf", "--models", "370M,2.7B", "--ports", "4", "--json", str(js), "--plot", str(png)]) == 0
    data = json.loads(js.read_text())
    assert "not a measurement" in data["label"]
    assert data["knobs"]["ports"] == 4
    assert len(data["rows"]) == len(perf.load_boards()) * 2 * 2
    for row in data["rows"]:
        assert 0 < row["fraction_of_bound"] <= 1
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_cli_rejects_unknown_board(capsys):
    assert cli.main(["perf", "--boards", "nexys"]) == 2
    assert "unknown board" in capsys.readouterr().err


# A trimmed csynth.xml with the structure Vitis HLS writes (profile / UserAssignments /
# PerformanceEstimates / AreaEstimates; loops as elements named after the loop, nested).
CSYNTH_XML = """<?xml version="1.0" encoding="UTF-8"?>
<profile>
  <ReportVersion><Version>2023.2</Version></ReportVersion>
  <UserAssignments>
    <unit>ns</unit>
    <ProductFamily>zynquplus</ProductFamily>
    <Part>xck26-sfvc784-2LV-c</Part>
    <TopModelName>mmfree_streamed_top</TopModelName>
    <TargetClockPeriod>5.00</TargetClockPeriod>
    <ClockUncertainty>1.35</ClockUncertainty>
  </UserAssignments>
  <PerformanceEstimates>
    <PipelineType>no</PipelineType>
    <SummaryOfTimingAnalysis>
      <unit>ns</unit>
      <EstimatedClockPeriod>3.650</EstimatedClockPeriod>
    </SummaryOfTimingAnalysis>
    <SummaryOfOverallLatency>
      <unit>clock cycles</unit>
      <Best-caseLatency>6100000</Best-caseLatency>
      <Average-caseLatency>6150000</Average-caseLatency>
      <Worst-caseLatency>6200000</Worst-caseLatency>
      <Best-caseRealTimeLatency>30.500 ms</Best-caseRealTimeLatency>
      <Interval-min>6100001</Interval-min>
      <Interval-max>6200001</Interval-max>
    </SummaryOfOverallLatency>
    <SummaryOfLoopLatency>
      <LAYERS>
        <TripCount>24</TripCount>
        <Latency>5900000</Latency>
        <IterationLatency>245000</IterationLatency>
        <ROWS>
          <TripCount>undef</TripCount>
          <Latency>undef</Latency>
          <PipelineII>1</PipelineII>
          <PipelineDepth>9</PipelineDepth>
        </ROWS>
      </LAYERS>
    </SummaryOfLoopLatency>
  </PerformanceEstimates>
  <AreaEstimates>
    <Resources>
      <BRAM_18K>96</BRAM_18K>
      <DSP48E>24</DSP48E>
      <FF>21000</FF>
      <LUT>29000</LUT>
      <URAM>0</URAM>
    </Resources>
    <AvailableResources>
      <BRAM_18K>288</BRAM_18K>
      <DSP48E>1248</DSP48E>
      <FF>234240</FF>
      <LUT>117120</LUT>
      <URAM>64</URAM>
    </AvailableResources>
  </AreaEstimates>
</profile>
"""


def test_parse_csynth_report(tmp_path):
    path = tmp_path / "mmfree_streamed_top_csynth.xml"
    path.write_text(CSYNTH_XML)
    rep = perf.parse_csynth_report(path)
    assert rep.top == "mmfree_streamed_top" and rep.part == "xck26-sfvc784-2LV-c"
    assert rep.target_clock_ns == 5.0 and rep.estimated_clock_ns == pytest.approx(3.65)
    assert (rep.latency_best, rep.latency_worst, rep.interval_max) == (6100000, 6200000, 6200001)
    assert rep.resources == {"BRAM_18K": 96, "DSP": 24, "FF": 21000, "LUT": 29000, "URAM": 0}
    assert rep.utilisation()["LUT"] == pytest.approx(29000 / 117120)
    assert [lp["name"] for lp in rep.loops] == ["LAYERS", "LAYERS/ROWS"]
    assert rep.loops[0]["trip_count"] == 24 and rep.loops[1]["pipeline_ii"] == 1
    assert rep.loops[1]["trip_count"] is None        # 'undef' in the report

    proj = perf.project(perf.model_preset("370M"), perf.get_board("kv260"), "2bit")
    cmp = perf.compare_with_report(proj, rep)
    assert cmp["cycles_ratio"] == pytest.approx(6200000 / proj.cycles_per_token)
    assert cmp["clock_ok"] is True


def test_parse_csynth_report_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="make hls"):
        perf.parse_csynth_report(tmp_path / "missing.xml")
    bad = tmp_path / "other.xml"
    bad.write_text("<profile><Something/></profile>")
    with pytest.raises(perf.PerfModelError, match="not a Vitis HLS csynth.xml"):
        perf.parse_csynth_report(bad)


def test_cli_checks_model_against_csynth(tmp_path, capsys):
    path = tmp_path / "top_csynth.xml"
    path.write_text(CSYNTH_XML)
    assert cli.main(["perf", "--models", "370M", "--boards", "kv260", "--packing", "2bit",
                     "--csynth", str(path)]) == 0
    assert "csynth/model cycles" in capsys.readouterr().out


def test_lanes_as_built_follow_the_streamed_top():
    cfg = perf.model_preset("370M")
    for packing, per_byte in (("2bit", 4), ("1.6bit", 5)):
        p = perf.project(cfg, perf.get_board("kv260"), packing, perf.DesignKnobs(lanes="built"))
        assert p.lanes == streamed.ROW_CHUNK_BYTES * per_byte
    with pytest.raises(perf.PerfModelError):
        perf.DesignKnobs(lanes="many").validate()

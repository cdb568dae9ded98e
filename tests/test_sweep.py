"""Sweeps over the decode engine's knobs: expansion, hashing and resume, failure isolation, fits per
board, reports, the C-sim invariance the build sharing rests on, and the CI sweep on Dask."""

import json
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from mmfree_hls.cli import main
from mmfree_hls.design import sweep_report
from mmfree_hls.design.sweep import (NUMERIC_KNOBS, ResultsStore, SweepConfigError, expand, load_spec,
                                     parse_scheduler, run_sweep)
from mmfree_hls.engine.presets import get_board, get_preset

REPO = Path(__file__).resolve().parents[1]
TINY = {"vocab_size": 64, "hidden_size": 64, "num_hidden_layers": 1, "intermediate_size": 128}

# A runner that stands in for convert + g++ + C-sim, so the orchestration is tested in
# seconds. Its behaviour is chosen by sigmoid_table_bits: 10 (the preset) works, 6 fails to
# convert, 7 kills its process, 8 hangs. Accuracy follows frac_bits. Resources come from the
# real cost model (the worker's, on the stub's model config).
STUB = '''
import os, time
from pathlib import Path
from mmfree_hls.config import ModelConfig

class StubRunner:
    def __init__(self, model_spec, eval_settings, cache_dir):
        self.cfg = ModelConfig.from_dict(dict(model_spec["random"]))
        self.calls = Path(cache_dir) / "calls"
        self.calls.mkdir(parents=True, exist_ok=True)

    def model_config(self):
        return self.cfg

    def convert(self, point, project_dir):
        (self.calls / ("convert-" + point["point_hash"])).touch()
        if point["knobs"]["sigmoid_table_bits"] == 6:
            raise ValueError("stub cannot convert sigmoid_table_bits 6")
        return {"convert_s": 0.0}

    def measure(self, point, project_dir):
        (self.calls / ("measure-" + point["point_hash"])).touch()
        sb = point["knobs"]["sigmoid_table_bits"]
        if sb == 7:
            os._exit(3)
        if sb == 8:
            time.sleep(120)
        w = point["knobs"]["frac_bits"]
        return {"top1_agreement": min(1.0, w / 20), "greedy_agreement": min(1.0, w / 16),
                "greedy_identical": w >= 16, "greedy_identical_prompts": int(w >= 16), "greedy_prompts": 1,
                "perplexity": 3.0 + 20.0 / w, "max_logit_err": 1.0 / w, "saturated": {}}
'''


@pytest.fixture
def stub_runner(tmp_path, monkeypatch):
    mod = tmp_path / "stub_mod"
    mod.mkdir()
    (mod / "sweep_stub_runner.py").write_text(STUB)
    monkeypatch.syspath_prepend(str(mod))
    return "sweep_stub_runner:StubRunner"


def stub_spec(runner, grid, **extra):
    spec = {"name": "stub", "models": {"tiny": {"random": TINY, "seed": 0}}, "grid": grid, "runner": runner,
            "eval": {"tokens": 16, "prompt_tokens": 4, "greedy_tokens": 4}, "timeout_s": 60}
    spec.update(extra)
    return load_spec(spec)


def calls(out: Path, kind: str) -> int:
    return len(list((out / "projects" / "calls").glob(f"{kind}-*")))


# ======================================================================= expansion
def test_grid_expands_to_the_cartesian_product_of_targets_and_knobs():
    spec = load_spec({
        "models": {"a": {"random": TINY}, "b": {"random": {**TINY, "hidden_size": 128}, "seed": 2}},
        "board": "zcu104", "base": {"sigmoid_table_bits": 8},
        "grid": {"model": ["a", "b"], "frac_bits": [16, get_preset("pynq-z2", "on-chip").frac_bits],
                 "target": [{"label": "z2", "set": {"board": "pynq-z2", "vector_lanes": 2}},
                            {"label": "zcu", "set": {}}],
                 "vector_lanes": [4, 8]},
        "points": [{"label": "extra", "set": {"tier": "streamed", "packing": "1.6bit"}}]})
    pts = expand(spec)
    assert len(pts) == 2 * 2 * 2 * 2 + 1
    assert len({p.point_hash for p in pts}) == len({p.project_hash for p in pts}) == len(pts)
    first = pts[0]
    assert (first.model, first.board, first.tier, first.packing) == ("a", "pynq-z2", "on-chip", "2bit")
    # the board preset's knobs, then base, then the bundle, then the knob axis (the later axis wins)
    z2 = get_preset("pynq-z2", "on-chip")
    assert first.knobs == {"vector_lanes": 4, "rows_per_tile": z2.rows_per_tile, "clock_mhz": z2.clock_mhz,
                           "frac_bits": 16, "sigmoid_table_bits": 8, "batch_slots": z2.batch_slots,
                           "prefill_chunk": z2.prefill_chunk, "topk": z2.topk}
    assert first.label == "model=a frac=16 target=z2 V=4"
    assert pts[2].board == "zcu104" and pts[2].knobs["clock_mhz"] == get_preset("zcu104", "on-chip").clock_mhz
    extra = pts[-1]
    assert (extra.label, extra.board, extra.tier, extra.packing) == ("extra", "zcu104", "streamed", "1.6bit")
    zs = get_preset("zcu104", "streamed")
    assert "rows_per_tile" not in extra.knobs and extra.preset["R"] == zs.R and extra.preset["K"] == len(zs.ports)
    assert extra.preset["lanes"] == zs.R * 5
    # points share a C-simulation exactly when model and numeric knobs agree
    groups = {}
    for p in pts:
        groups.setdefault(p.accuracy_key, set()).add((p.model, *(p.knobs[k] for k in NUMERIC_KNOBS)))
    assert all(len(v) == 1 for v in groups.values())
    assert len(groups) == len({v for s in groups.values() for v in s}) == 2 * 2 + 1 - 1   # extra shares (a, preset frac_bits, 8)


def test_a_changed_engine_changes_every_hash(monkeypatch):
    from mmfree_hls.design import sweep
    spec = load_spec({"models": {"a": {"random": TINY}}, "grid": {"frac_bits": [14, 20]}})
    before = expand(spec)
    assert len(sweep.engine_digest()) == 16
    monkeypatch.setattr(sweep, "engine_digest", lambda: "another-engine")
    after = expand(spec)
    for a, b in zip(before, after):
        assert a.point_hash != b.point_hash and a.accuracy_key != b.accuracy_key
        assert a.project_hash == b.project_hash           # the project directory: convert's own hash decides


def test_random_subset_is_seeded_and_limit_cuts():
    spec = load_spec({"models": {"a": {"random": TINY}},
                      "grid": {"frac_bits": [14, 16, 20], "vector_lanes": [1, 2, 4], "board": ["pynq-z2", "kv260"]}})
    full = {p.point_hash for p in expand(spec)}
    a = [p.point_hash for p in expand(spec, random_k=5, seed=7)]
    b = [p.point_hash for p in expand(spec, random_k=5, seed=7)]
    c = [p.point_hash for p in expand(spec, random_k=5, seed=8)]
    assert a == b and len(a) == 5 and set(a) <= full and a != c
    assert len(expand(spec, limit=3)) == 3
    assert len(expand(spec, random_k=50)) == len(full) == 18


def test_identical_designs_are_evaluated_once():
    # rows_per_tile does not apply to the streamed tier (its R is the ports' bytes)
    spec = load_spec({"models": {"a": {"random": TINY}}, "tier": "streamed", "grid": {"rows_per_tile": [16, 32]}})
    pts = expand(spec)
    assert len(pts) == 1 and pts[0].preset["R"] == get_preset("pynq-z2", "streamed").R
    assert pts[0].label == f"R={pts[0].preset['R']}"
    preset_lanes = get_preset("pynq-z2", "on-chip").vector_lanes
    spec = load_spec({"models": {"a": {"random": TINY}}, "grid": {"vector_lanes": [preset_lanes, 1]},
                      "points": [{"label": "preset", "set": {}}]})
    assert len(expand(spec)) == 2                     # the extra point is the grid's first


@pytest.mark.parametrize("spec, match", [
    ({"models": {"a": {"random": TINY}}, "grid": {"frac_bits": [16]}, "colour": 1}, "unknown sweep key"),
    ({"models": {"a": {"random": TINY}}, "grid": {"tensors.state": ["ap_fixed<8,4>"]}}, "not an engine knob"),
    ({"models": {"a": {"random": TINY}}, "grid": {"frac_bits": [16.5]}}, "frac_bits = 16.5 must be an integer"),
    ({"models": {"a": {"random": TINY}}, "grid": {"frac_bits": [30]}}, r"point 0 \(frac=30\): frac_bits=30"),
    ({"models": {"a": {"random": TINY}}, "grid": {"vector_lanes": [0, 4]}}, r"point 0 \(V=0\): .*vector_lanes=0"),
    ({"models": {"a": {"random": TINY}}, "grid": {"board": ["nexys"]}}, "board 'nexys' unknown"),
    ({"models": {"a": {"random": TINY}}, "grid": {"frac_bits": [16]}, "tier": "offchip"}, "tier 'offchip'"),
    ({"models": {"a": {"random": TINY}}, "grid": {"packing": ["3bit"]}}, "packing '3bit'"),
    ({"models": {"a": {"random": TINY}}, "grid": {"frac_bits": [16]}, "base": {"board": "kv260"}}, "top level"),
    ({"models": {"a": {"random": TINY}}, "grid": {"t": [{"label": "x", "set": {"reuse_factor": 2}}]}},
     "'reuse_factor' is not an engine knob"),
    ({"models": {"a": {"random": TINY}}, "grid": {"model": ["b"]}}, "not in models"),
    ({"models": {"a": {"random": TINY}}, "grid": {"frac_bits": []}}, "non-empty list"),
    ({"models": {"a": {"random": TINY}}}, "no points"),
    ({"models": {"a": {"checkpoint": "/nonexistent/ckpt"}}, "grid": {"frac_bits": [16]}}, "not found"),
    ({"models": {"a": {"random": TINY}}, "grid": {"frac_bits": [16]}, "eval": {"tokens": 1}}, "eval.tokens"),
    ({"models": {"a": {"random": TINY}}, "grid": {"frac_bits": [16]}, "timeout_s": True}, "timeout_s"),
])
def test_bad_sweep_files_name_the_problem(spec, match):
    with pytest.raises((SweepConfigError, FileNotFoundError), match=match):
        expand(load_spec(spec))


def test_scheduler_strings():
    assert parse_scheduler("local") == ("local", None)
    assert parse_scheduler("dask") == ("dask", None)
    assert parse_scheduler("dask:tcp://10.0.0.1:8786") == ("dask", "tcp://10.0.0.1:8786")
    with pytest.raises(SweepConfigError, match="dask:ADDRESS"):
        parse_scheduler("ray")


# ======================================================================= running
def test_resume_skips_finished_points_and_shares_builds(tmp_path, stub_runner):
    out = tmp_path / "out"
    grid = {"frac_bits": [14, 20], "vector_lanes": [1, 4]}
    first = run_sweep(stub_spec(stub_runner, grid), out, workers=2, progress=False)
    assert first.ran == 4 and first.statuses == {"ok": 4}
    # every point writes its project, one evaluation per numeric configuration (lanes only change the cost)
    assert calls(out, "convert") == 4 and calls(out, "measure") == 2
    rows = ResultsStore(out).read()
    assert len(rows) == 4
    by_frac = {}
    for r in rows:
        by_frac.setdefault(r["knobs"]["frac_bits"], set()).add(r["accuracy_from"])
    assert all(len(v) == 1 for v in by_frac.values()) and len(by_frac) == 2

    again = run_sweep(stub_spec(stub_runner, grid), out, workers=2, progress=False)
    assert again.ran == 0 and again.skipped == 4
    assert len(ResultsStore(out).read()) == 4 and calls(out, "convert") == 4

    grid["frac_bits"].append(16)
    more = run_sweep(stub_spec(stub_runner, grid), out, workers=1, progress=False)
    assert more.ran == 2 and more.skipped == 4
    assert len(ResultsStore(out).read()) == 6


def test_failing_points_are_recorded_and_the_sweep_goes_on(tmp_path, stub_runner):
    out = tmp_path / "out"
    spec = stub_spec(stub_runner, {"frac_bits": [14, 20], "sigmoid_table_bits": [10, 6, 7, 8]}, timeout_s=3)
    run = run_sweep(spec, out, workers=2, progress=False)
    assert run.ran == 8
    rows = {(r["knobs"]["frac_bits"], r["knobs"]["sigmoid_table_bits"]): r for r in ResultsStore(out).read()}
    for fb in (14, 20):
        assert rows[fb, 10]["status"] == "ok"
        assert rows[fb, 6]["status"] == "failed" and rows[fb, 6]["error_kind"] == "convert"
        assert "cannot convert sigmoid_table_bits 6" in rows[fb, 6]["error"]
        assert rows[fb, 7]["status"] == "crashed" and "exited with 3" in rows[fb, 7]["error"]
        assert rows[fb, 8]["status"] == "timeout" and "timeout_s = 3" in rows[fb, 8]["error"]
    assert rows[20, 10]["top1_agreement"] == 1.0

    # failures count as done; --retry-failed runs them again
    assert run_sweep(spec, out, workers=2, progress=False).ran == 0
    retry = run_sweep(stub_spec(stub_runner, {"frac_bits": [14], "sigmoid_table_bits": [10, 6]}), out,
                      workers=1, progress=False, retry_failed=True)
    assert retry.ran == 1 and retry.statuses == {"failed": 1}


def test_a_design_the_engine_cannot_build_is_a_shape_failure(tmp_path):
    """The real runner checks the engine's constraints before converting: a 64-wide model has 16 weight
    words a row block on 2-bit packing, too few for the 64 rows of the ZCU104's streamed tile."""
    out = tmp_path / "out"
    spec = load_spec({"name": "shape", "models": {"tiny": {"random": TINY, "seed": 0}}, "board": "zcu104",
                      "tier": "streamed", "grid": {"frac_bits": [16]},
                      "eval": {"tokens": 8, "prompt_tokens": 4, "greedy_tokens": 2, "greedy_prompts": 1}})
    run = run_sweep(spec, out, workers=1, progress=False)
    row = ResultsStore(out).read()[0]
    assert run.statuses == {"failed": 1} and row["error_kind"] == "shape"
    assert "too narrow" in row["error"] and "LUT" not in row
    assert not (out / "projects" / row["project_hash"]).exists()      # nothing was converted


# ======================================================================= fits and resources
def test_every_point_reports_fits_per_resource_for_its_own_board(tmp_path, stub_runner):
    out = tmp_path / "out"
    spec = stub_spec(stub_runner, {"board": ["pynq-z2", "zcu104", "kv260"], "vector_lanes": [1, 16]},
                     base={"batch_slots": 1, "prefill_chunk": 1})          # the same design on every board
    run_sweep(spec, out, workers=2, progress=False)
    rows = ResultsStore(out).read()
    assert len(rows) == 6
    for r in rows:
        budget = get_board(r["board"]).resources
        for res in ("LUT", "FF", "BRAM_18K", "URAM", "DSP"):
            assert r[f"util_{res}"] == pytest.approx(r[res] / budget[res] if budget[res] else (0.0 if not r[res] else np.inf))
            assert r[f"fits_{res}"] == (r[f"util_{res}"] <= 1.0)
        assert r["fits"] == all(r[f"fits_{res}"] for res in ("LUT", "FF", "BRAM_18K", "URAM", "DSP"))
        assert r["over_budget"] == [k for k in ("LUT", "FF", "BRAM_18K", "URAM", "DSP") if not r[f"fits_{k}"]]
        assert r["resource_source"] == "analytic" and r["tokens_per_s"] > 0 and r["cycles_per_token"] > 0
    by = {(r["board"], r["knobs"]["vector_lanes"]): r for r in rows}
    # the same design takes a larger share of a smaller board; more lanes cost more and run faster
    assert by["pynq-z2", 1]["util_LUT"] > 2 * by["zcu104", 1]["util_LUT"]
    assert by["pynq-z2", 1]["util_DSP"] > 2 * by["kv260", 1]["util_DSP"]
    assert by["zcu104", 16]["LUT"] > by["zcu104", 1]["LUT"]
    assert by["zcu104", 16]["cycles_per_token"] < by["zcu104", 1]["cycles_per_token"]


CSYNTH = """<?xml version="1.0" encoding="UTF-8"?>
<profile>
  <UserAssignments><Part>xc7z020clg400-1</Part><TopModelName>mmfree_engine</TopModelName>
    <TargetClockPeriod>10.00</TargetClockPeriod></UserAssignments>
  <PerformanceEstimates>
    <SummaryOfOverallLatency><Worst-caseLatency>4321</Worst-caseLatency></SummaryOfOverallLatency>
  </PerformanceEstimates>
  <AreaEstimates>
    <Resources><BRAM_18K>40</BRAM_18K><DSP>99</DSP><FF>12345</FF><LUT>23456</LUT><URAM>0</URAM></Resources>
    <AvailableResources><BRAM_18K>280</BRAM_18K><DSP>220</DSP><FF>106400</FF><LUT>53200</LUT><URAM>0</URAM>
    </AvailableResources>
  </AreaEstimates>
</profile>
"""


def test_a_synthesis_report_of_the_points_project_wins_over_the_model(tmp_path):
    from mmfree_hls.config import ModelConfig
    from mmfree_hls.design.sweep_eval import cost_row
    spec = load_spec({"models": {"a": {"random": TINY}}, "grid": {"frac_bits": [16]}})
    point = expand(spec)[0].to_dict()
    cfg = ModelConfig.from_dict(TINY)
    project = tmp_path / point["project_hash"]
    assert cost_row(cfg, point, project)["resource_source"] == "analytic"     # no project directory yet
    rep = project / "synth" / "pynq-z2" / "reports"
    rep.mkdir(parents=True)
    (rep / "mmfree_engine_csynth.xml").write_text(CSYNTH)
    row = cost_row(cfg, point, project)
    assert row["resource_source"] == "vitis_hls_report" and row["resource_report"].endswith("csynth.xml")
    assert (row["LUT"], row["FF"], row["BRAM_18K"], row["DSP"]) == (23456, 12345, 40, 99)
    assert row["util_LUT"] == pytest.approx(23456 / 53200) and row["fits"] and row["over_budget"] == []


def test_a_report_that_appears_after_the_sweep_replaces_the_estimate(tmp_path, stub_runner, capsys):
    """`mmfree synth` on a point's project after the sweep: the next run (nothing to evaluate) or
    --report-only re-costs that point from the report; the others keep the model's estimate."""
    from mmfree_hls.config import ModelConfig
    out = tmp_path / "out"
    spec = stub_spec(stub_runner, {"frac_bits": [14, 20]})
    run_sweep(spec, out, workers=1, progress=False)
    before = {r["knobs"]["frac_bits"]: r for r in ResultsStore(out).read()}
    assert {r["resource_source"] for r in before.values()} == {"analytic"}
    project = out / "projects" / before[20]["project_hash"]          # what the real runner writes
    (project / "synth" / "pynq-z2" / "reports").mkdir(parents=True)
    (project / "mmfree_project.json").write_text(json.dumps({"model": ModelConfig.from_dict(TINY).to_dict()}))
    (project / "synth" / "pynq-z2" / "reports" / "mmfree_engine_csynth.xml").write_text(CSYNTH)
    again = run_sweep(spec, out, workers=1, progress=False)
    assert again.ran == 0
    after = {r["knobs"]["frac_bits"]: r for r in ResultsStore(out).latest().values()}
    assert after[20]["resource_source"] == "vitis_hls_report" and after[20]["LUT"] == 23456
    assert after[20]["top1_agreement"] == before[20]["top1_agreement"]               # accuracy kept
    assert after[14] == before[14]
    n = len(ResultsStore(out).read())
    run_sweep(spec, out, workers=1, progress=False)
    assert len(ResultsStore(out).read()) == n                     # the same report is not taken twice
    # --report-only takes a report too
    (project / "synth" / "pynq-z2" / "reports" / "mmfree_engine_csynth.xml").write_text(CSYNTH.replace("23456", "2345"))
    import os
    os.utime(project / "synth" / "pynq-z2" / "reports" / "mmfree_engine_csynth.xml", (1, 1))
    cfg = tmp_path / "s.yaml"
    import yaml
    cfg.write_text(yaml.safe_dump(spec.raw))
    assert main(["sweep", str(cfg), "--out", str(out), "--report-only"]) == 0
    assert ResultsStore(out).latest()[before[20]["point_hash"]]["LUT"] == 2345
    assert "csynth" in capsys.readouterr().out


# ======================================================================= reports
def test_report_tables_plots_and_metadata(tmp_path, stub_runner):
    out = tmp_path / "out"
    spec = stub_spec(stub_runner, {"frac_bits": [12, 16, 20], "sigmoid_table_bits": [10, 6],
                                   "board": ["pynq-z2", "zcu104"]})
    run = run_sweep(spec, out, workers=2, progress=False)
    rep = sweep_report.write_report(out, [p.point_hash for p in run.points])
    import pandas as pd
    csv = pd.read_csv(rep["paths"]["csv"])
    pq = pd.read_parquet(rep["paths"]["parquet"])
    assert len(csv) == len(pq) == 12
    assert {"axis:frac_bits", "axis:sigmoid_table_bits", "board", "tier", "packing", "knob:frac_bits",
            "knob:vector_lanes", "knob:clock_mhz", "LUT", "DSP", "BRAM_18K", "FF", "URAM", "fits", "fits_LUT",
            "fits_DSP", "util_max", "tokens_per_s", "cycles_per_token", "resource_source", "top1_agreement",
            "status", "error"} <= set(csv.columns)
    assert set(csv.loc[csv.status == "ok", "resource_source"]) == {"analytic"}
    assert (csv.status == "failed").sum() == 6
    meta = json.loads(rep["paths"]["metadata"].read_text())
    assert meta["versions"]["numpy"] == np.__version__ and meta["boards_digest"]
    assert {p["point_hash"] for p in meta["points"]} == set(csv["point_hash"])
    assert {p["board"] for p in meta["points"]} == {"pynq-z2", "zcu104"}
    assert meta["sweep"]["name"] == "stub" and meta["runs"][0]["wall_s"] > 0
    for p in rep["paths"]["plots"]:
        assert p.stat().st_size > 5000 and p.read_bytes()[:4] == b"\x89PNG"
    assert {p.name for p in rep["paths"]["plots"]} >= {"pareto.png", "pareto_util_max.png", "pareto_DSP.png",
                                                       "pareto_LUT.png"}
    df = rep["frame"]
    # the front among fitting points only holds fitting points, and no fitting ok point beats one of them
    fit_front = sweep_report.pareto_front(df, "util_max", "top1_agreement", fitting=True)
    fitting = df[(df.status == "ok") & df.fits.fillna(False).astype(bool)]
    assert set(fit_front["point_hash"]) <= set(fitting["point_hash"])
    if len(fitting):
        assert len(fit_front) >= 1
        best = fitting["top1_agreement"].max()
        assert fit_front["top1_agreement"].max() == best
    per_board = [l for l in rep["summary"].splitlines() if l.startswith("points that fit their board")]
    n_fit = {b: int(g.fits.fillna(False).astype(bool).sum()) for b, g in df[df.status == "ok"].groupby("board")}
    assert per_board == [f"points that fit their board: pynq-z2 {n_fit['pynq-z2']}/3, zcu104 {n_fit['zcu104']}/3 "
                         "(cost model estimates)"]
    best = sweep_report.cheapest_greedy_identical(df)
    ok = df[(df.status == "ok") & df.greedy_identical.fillna(False).astype(bool)]
    assert best["util_max"] == ok["util_max"].min() and best["knob:frac_bits"] >= 16
    assert "cheapest greedy-identical configuration" in rep["summary"]


def test_pareto_mask():
    cost = [1, 2, 3, 4, 2]
    acc = [0.5, 0.9, 0.8, 1.0, 0.7]
    assert sweep_report.pareto_mask(cost, acc) == [True, True, False, True, False]
    assert sweep_report.pareto_mask([1, 2], [5.0, 4.0], higher_is_better=False) == [True, True]
    assert sweep_report.pareto_mask([1, 1], [3.0, 3.0]) == [True, True]       # ties dominate nobody


def test_cli_dry_run_and_report_only(tmp_path, stub_runner, capsys):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        name: clitest
        models: {{tiny: {{random: {json.dumps(TINY)}}}}}
        grid: {{frac_bits: [12, 20], board: [pynq-z2, zcu104]}}
        runner: {stub_runner}
        eval: {{tokens: 16, prompt_tokens: 4, greedy_tokens: 4}}
        """))
    out = tmp_path / "o"
    assert main(["sweep", str(cfg), "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "4 points, 0 already" in text and "zcu104   on-chip  2bit" in text
    assert main(["sweep", str(cfg), "--out", str(out), "--workers", "2", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "4 run (ok 4)" in text and "cheapest greedy-identical configuration: frac=20" in text
    assert "points that fit their board: pynq-z2 " in text
    assert main(["sweep", str(cfg), "--out", str(out), "--report-only"]) == 0
    assert (out / "results.parquet").is_file() and (out / "pareto.png").is_file()
    assert main(["sweep", str(cfg), "--scheduler", "spark"]) == 2
    assert "dask:ADDRESS" in capsys.readouterr().err


# ======================================================================= metrics
def test_heldout_prompts_are_spread_over_the_held_out_text():
    from mmfree_hls.design.sweep_eval import heldout_ids, heldout_prompts
    p = heldout_prompts(256, 3, 16)
    assert p.shape == (3, 16) and (p[0] == heldout_ids(256, 16)).all()
    assert len({bytes(r.astype(np.uint8)) for r in p}) == 3
    assert heldout_prompts(64, 2, 8).max() < 64


def test_accuracy_metrics_count_exact_reference_ties_as_agreement():
    from mmfree_hls.design.sweep_eval import accuracy_metrics, perplexity
    ids = np.array([0, 1, 2, 1])
    ref_logits = np.array([[2.0, 2.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 0.5], [0.0, 0.0, 4.0]])
    sim_logits = ref_logits + np.array([[-0.1, 0.1, 0.0], [0, 0, 0], [0, 1.5, 0], [0, 0, 0]])
    ref = {"logits": ref_logits, "greedy": np.array([5, 7, 7]), "greedy_margin": np.array([1.0, 0.0, 2.0])}
    sim = {"logits": sim_logits, "greedy": np.array([5, 6, 6])}
    m = accuracy_metrics(ids, ref, sim)
    assert m["top1_agreement"] == 0.75             # row 0 is a tie (either index is right), row 2 is wrong
    assert m["greedy_prefix"] == 1 and not m["greedy_identical"] and m["greedy_diverged_at_tie"]
    assert m["greedy_agreement"] == pytest.approx(1 / 3)
    assert m["max_logit_err"] == pytest.approx(1.5)
    two = accuracy_metrics(ids, {**ref, "greedy": np.array([[5, 7, 7], [1, 2, 3]]),
                                 "greedy_margin": np.array([[1.0, 0.0, 2.0], [1.0, 1.0, 0.25]])},
                           {**sim, "greedy": np.array([[5, 7, 7], [1, 2, 4]])})
    assert two["greedy_prompts"] == 2 and two["greedy_identical_prompts"] == 1 and not two["greedy_identical"]
    assert two["greedy_prefix"] == 2 and two["greedy_divergence_margin"] == 0.25
    assert not two["greedy_diverged_at_tie"] and two["greedy_agreement"] == pytest.approx(5 / 6)
    uniform = np.zeros((4, 3))
    assert perplexity(uniform, ids) == pytest.approx(3.0)
    assert m["ref_perplexity"] == pytest.approx(perplexity(ref_logits, ids))


class _FakeLib:
    """A C-sim library that echoes x into the logits and reports saturation on chosen calls."""

    d, L, e, V = 4, 1, 2, 4

    def __init__(self, statuses):
        self.statuses = list(statuses)
        self.n = 0

    def step_status(self, x, state):
        rc = self.statuses[self.n % len(self.statuses)]
        self.n += 1
        return np.array(x, np.float32), np.asarray(state, np.float32) + 1, rc


def test_csim_outputs_count_saturated_steps_and_refuse_bad_status():
    from types import SimpleNamespace
    from mmfree_hls.design.sweep_eval import csim_outputs
    model = SimpleNamespace(embed=lambda t: np.eye(4, dtype=np.float32)[t % 4])
    ids, prompts = np.arange(6), np.array([[1, 2]])
    sim = csim_outputs(_FakeLib([0]), model, ids, prompts, 3)
    assert sim["saturated"] == {} and (sim["logits"].argmax(-1) == ids % 4).all()
    assert sim["greedy"].shape == (1, 3) and sim["greedy"][0].tolist() == [2, 2, 2]
    sat = csim_outputs(_FakeLib([0, 2, 0]), model, ids, prompts, 3)
    assert sat["saturated"] == {"vectors": 4}          # calls 1, 4, 7, 10 of 6 + 2 + 3
    with pytest.raises(RuntimeError, match="returned 1: x or the state held NaN"):
        csim_outputs(_FakeLib([1]), model, ids, prompts, 3)


# ======================================================================= the real thing
def _steps(project, model, n=24):
    lib = project.csim()
    state = np.zeros((lib.L, lib.e), np.float32)
    outs, states = [], []
    for t in range(n):
        lg, state = lib.step(model.embed((7 * t + 3) % model.config.vocab_size), state)
        outs.append(lg)
        states.append(state.copy())
    return np.array(outs), np.array(states)


def test_knobs_outside_numeric_knobs_do_not_change_a_single_csim_value(tmp_path):
    """What the build sharing rests on: board, tier, packing, clock, lanes and rows per tile change the
    engine's schedule and hardware, not one logit or state value; frac_bits does."""
    from mmfree_hls.config import ModelConfig
    from mmfree_hls.engine.project import EngineProject, write_project
    from mmfree_hls.reference import MMFreeLM
    model = MMFreeLM.random(ModelConfig.from_dict({**TINY, "hidden_size": 128, "intermediate_size": 256}), 3)

    def build(name, board, tier, packing, **knobs):
        root = tmp_path / name
        root.mkdir()
        write_project(model, root, get_preset(board, tier, **knobs), packing)
        return _steps(EngineProject(root), model)

    base = build("base", "pynq-z2", "on-chip", "2bit", rows_per_tile=32, vector_lanes=4, frac_bits=18)
    other = build("other", "pynq-z2", "streamed", "2bit", vector_lanes=1, clock_mhz=50.0, frac_bits=18)
    onchip = build("onchip", "zcu104", "on-chip", "1.6bit", rows_per_tile=16, vector_lanes=16, frac_bits=18)
    numeric = build("numeric", "pynq-z2", "on-chip", "2bit", rows_per_tile=32, vector_lanes=4, frac_bits=14)
    for got in (other, onchip):
        assert np.array_equal(got[0], base[0]) and np.array_equal(got[1], base[1])
    assert not np.array_equal(numeric[0], base[0])


def test_ci_sweep_through_a_dask_local_cluster_on_csim(tmp_path):
    """sweep_ci.yaml on 2 Dask workers: real convert + g++ + C-sim, cost model per point, in < 60 s."""
    spec = load_spec(REPO / "design" / "configs" / "sweep_ci.yaml")
    out = tmp_path / "ci"
    t0 = time.perf_counter()
    run = run_sweep(spec, out, workers=2, scheduler="dask", progress=False)
    wall = time.perf_counter() - t0
    rows = {r["label"]: r for r in ResultsStore(out).read()}
    assert run.ran == len(rows) == 6
    assert all(r["status"] == "ok" for r in rows.values()), {k: r["error"] for k, r in rows.items()}
    assert sum(bool(r["compiled"]) for r in rows.values()) == 2        # one g++ build per frac_bits
    assert len({r["accuracy_from"] for r in rows.values()}) == 2
    wide, narrow = rows["frac=20 V=1"], rows["frac=14 V=1"]
    # the preset's fraction: C-sim and numpy reference decode the same tokens, agree on (almost) every argmax
    assert wide["greedy_identical"] and wide["top1_agreement"] >= 0.95 and wide["rel_logit_err"] < 0.05
    assert narrow["max_logit_err"] > wide["max_logit_err"]
    assert rows["pynq-z2-streamed"]["accuracy_from"] == wide["accuracy_from"]
    assert rows["zcu104"]["accuracy_from"] == narrow["accuracy_from"]
    assert 1 < wide["ref_perplexity"] < np.inf and np.isfinite(narrow["perplexity"])
    assert {r["resource_source"] for r in rows.values()} == {"analytic"}
    assert rows["frac=20 V=4"]["LUT"] > wide["LUT"]                   # lanes cost; accuracy shared
    # the target: at least 2 points of the CI sweep fit the PYNQ-Z2, every resource within budget
    z2_fit = [k for k, r in rows.items() if r["board"] == "pynq-z2" and r["fits"]]
    assert len(z2_fit) >= 2, {k: (r["board"], r["over_budget"]) for k, r in rows.items()}
    assert rows["zcu104"]["fits"]
    rep = sweep_report.write_report(out)
    assert rep["paths"]["csv"].is_file() and (out / "pareto_util_max.png").is_file()
    assert wall < 60, f"the CI sweep took {wall:.0f} s"


def test_the_sweeps_projects_are_what_convert_writes(tmp_path):
    """The sweep writes a point's project with the engine's writer (no hls4ml front end, for speed):
    firmware and weights byte-identical to mmfree_hls.convert's, on both tiers."""
    from mmfree_hls.config import ModelConfig
    from mmfree_hls.design.convert import convert
    from mmfree_hls.design.sweep_eval import CSimRunner
    spec = load_spec({"models": {"tiny": {"random": TINY, "seed": 4}}, "grid": {"tier": ["on-chip", "streamed"]},
                      "base": {"frac_bits": 17, "vector_lanes": 2}})
    runner = CSimRunner(spec.models["tiny"].to_dict(), spec.eval, tmp_path / "cache")
    for point in expand(spec):
        p = point.to_dict()
        ours = tmp_path / f"sweep-{point.tier}"
        runner.convert(p, ours)
        theirs = convert(runner.model, tmp_path / f"convert-{point.tier}", config=p["knobs"], board=point.board,
                         tier=point.tier, packing=point.packing, compile=False, verbose=False).root
        names = sorted(f.name for f in (theirs / "firmware").iterdir())
        assert names == sorted(f.name for f in (ours / "firmware").iterdir())
        for n in names:
            assert (ours / "firmware" / n).read_bytes() == (theirs / "firmware" / n).read_bytes(), n
        assert (ours / "weights.bin").is_file() == (point.tier == "streamed")
        if point.tier == "streamed":
            assert (ours / "weights.bin").read_bytes() == (theirs / "weights.bin").read_bytes()
        a, b = (json.loads((d / "mmfree_project.json").read_text()) for d in (ours, theirs))
        assert a["content_hash"] == b["content_hash"] and a["engine"] == b["engine"] and a["ports"] == b["ports"]
        stamp = (ours / "mmfree_project.json").stat().st_mtime_ns
        runner.convert(p, ours)                   # up to date: nothing rewritten
        assert (ours / "mmfree_project.json").stat().st_mtime_ns == stamp
        assert ModelConfig.from_dict(a["model"]) == runner.model.config

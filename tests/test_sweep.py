"""Sweeps: grid expansion, hashing and resume, failure isolation, reports, resources, a Dask C-sim run."""

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mmfree_hls.cli import main
from mmfree_hls.config import ModelConfig
from mmfree_hls.design import sweep_report
from mmfree_hls.design.sweep import (ResultsStore, SweepConfigError, expand, load_spec, parse_scheduler,
                                     run_sweep, strip_reuse)

REPO = Path(__file__).resolve().parents[1]
TINY = {"vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 1, "intermediate_size": 64}
STATE16 = "ap_fixed<16,6,AP_RND,AP_SAT>"
STATE24 = "ap_fixed<24,8,AP_RND,AP_SAT>"

# A runner that stands in for convert + g++ + C-sim, so the orchestration is tested in
# seconds. Its behaviour is chosen by sigmoid.table_size: 64 (the stub sweeps' base) works,
# 32 fails to convert, 16384 kills its process, 32768 hangs. Accuracy follows the state width.
STUB = '''
import os, time
from pathlib import Path
from mmfree_hls.config import ModelConfig
from mmfree_hls.design.precision import parse_type

class StubRunner:
    def __init__(self, model_spec, eval_settings, cache_dir):
        self.cfg = ModelConfig.from_dict(dict(model_spec["random"]))
        self.calls = Path(cache_dir) / "calls"
        self.calls.mkdir(parents=True, exist_ok=True)

    def model_config(self):
        return self.cfg

    def convert(self, point, project_dir):
        (self.calls / ("convert-" + point["point_hash"])).touch()
        if point["precision"]["sigmoid"]["table_size"] == 32:
            raise ValueError("stub cannot convert table_size 32")
        return {"convert_s": 0.0}

    def measure(self, point, project_dir):
        (self.calls / ("measure-" + point["point_hash"])).touch()
        ts = point["precision"]["sigmoid"]["table_size"]
        if ts == 16384:
            os._exit(3)
        if ts == 32768:
            time.sleep(120)
        w = parse_type(point["precision"]["tensors"]["state"]).width
        return {"top1_agreement": min(1.0, w / 24), "greedy_agreement": min(1.0, w / 20),
                "greedy_identical": w >= 20, "perplexity": 3.0 + 24.0 / w, "max_logit_err": 1.0 / w,
                "saturated": {}}
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
            "eval": {"tokens": 16, "prompt_tokens": 4, "greedy_tokens": 4}, "timeout_s": 60,
            "base": {"sigmoid.table_size": 64}}
    spec.update(extra)
    return load_spec(spec)


def calls(out: Path, kind: str) -> int:
    return len(list((out / "projects" / "calls").glob(f"{kind}-*")))


# ======================================================================= expansion
def test_grid_expands_to_the_cartesian_product_with_merged_precision():
    spec = load_spec({
        "models": {"a": {"random": TINY}, "b": {"random": {**TINY, "hidden_size": 16}, "seed": 2}},
        "base": {"bitlinear.mant_bits": 20},
        "grid": {"model": ["a", "b"], "tensors.state": [STATE16, STATE24],
                 "widths": [{"label": "narrow", "set": {"glu": {"act": "ap_fixed<12,6>"}}},
                            {"label": "wide", "set": {}}],
                 "reuse_factor": [1, 2]},
        "points": [{"label": "extra", "set": {"sigmoid.table_size": 64}}]})
    pts = expand(spec)
    assert len(pts) == 2 * 2 * 2 * 2 + 1
    assert len({p.point_hash for p in pts}) == len(pts)
    first = pts[0]
    assert first.model == "a" and first.precision["tensors"]["state"] == STATE16
    assert first.precision["bitlinear"]["mant_bits"] == 20          # base applies to every point
    assert first.precision["glu"]["act"] == "ap_fixed<12,6>"        # the bundle's knob
    assert first.precision["rmsnorm"]["mant_bits"] == 28            # untouched default
    assert first.label == "model=a state=16.6 widths=narrow reuse_factor=1"
    assert pts[-1].label == "extra" and pts[-1].precision["sigmoid"]["table_size"] == 64
    # points that differ only in reuse factor share the C-simulation; the model and numbers separate them
    by_key = {}
    for p in pts[:-1]:
        by_key.setdefault(p.accuracy_key, set()).add(p.precision["reuse_factor"])
    assert len(by_key) == 8 and all(v == {1, 2} for v in by_key.values())
    assert len({p.project_hash for p in pts}) == len(pts)


def test_random_subset_is_seeded_and_limit_cuts():
    spec = load_spec({"models": {"a": {"random": TINY}},
                      "grid": {"tensors.state": [STATE16, STATE24], "sigmoid.table_size": [64, 256, 1024],
                               "reuse_factor": [1, 2]}})
    full = {p.point_hash for p in expand(spec)}
    a = [p.point_hash for p in expand(spec, random_k=5, seed=7)]
    b = [p.point_hash for p in expand(spec, random_k=5, seed=7)]
    c = [p.point_hash for p in expand(spec, random_k=5, seed=8)]
    assert a == b and len(a) == 5 and set(a) <= full and a != c
    assert len(expand(spec, limit=3)) == 3
    assert len(expand(spec, random_k=50)) == len(full)


def test_identical_points_are_evaluated_once():
    spec = load_spec({"models": {"a": {"random": TINY}},
                      "grid": {"tensors.state": [STATE16, "ap_fixed<32,10,AP_RND,AP_SAT>"]}})
    assert len(expand(spec)) == 1 + 1
    spec = load_spec({"models": {"a": {"random": TINY}}, "grid": {"tensors.state": [STATE16, STATE16]}})
    assert len(expand(spec)) == 1


def test_strip_reuse_removes_every_reuse_entry():
    p = {"reuse_factor": 4, "bitlinear": {"reuse_factor": 2, "mant_bits": 20},
         "layers": {"lm_head": {"reuse_factor": 8, "quant_bits": 12}}}
    assert strip_reuse(p) == {"bitlinear": {"mant_bits": 20}, "layers": {"lm_head": {"quant_bits": 12}}}


@pytest.mark.parametrize("spec, match", [
    ({"models": {"a": {"random": TINY}}, "grid": {"tensors.state": [STATE16]}, "colour": 1}, "unknown sweep key"),
    ({"models": {"a": {"random": TINY}}, "grid": {"tensors.sate": ["ap_fixed<8,4>"]}}, "point 0"),
    ({"models": {"a": {"random": TINY}}, "grid": {"model": ["b"]}}, "not in models"),
    ({"models": {"a": {"random": TINY}}, "grid": {"reuse_factor": []}}, "non-empty list"),
    ({"models": {"a": {"random": TINY}}}, "no points"),
    ({"models": {"a": {"checkpoint": "/nonexistent/ckpt"}}, "grid": {"reuse_factor": [1]}}, "not found"),
    ({"models": {"a": {"random": TINY}}, "grid": {"reuse_factor": [1]}, "eval": {"tokens": 1}}, "eval.tokens"),
    ({"models": {"a": {"random": TINY}}, "grid": {"reuse_factor": [1]}, "board": "nexys"}, "board"),
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
def test_resume_skips_finished_points_and_shares_compiles(tmp_path, stub_runner):
    out = tmp_path / "out"
    grid = {"tensors.state": [STATE16, STATE24], "reuse_factor": [1, 2]}
    first = run_sweep(stub_spec(stub_runner, grid), out, workers=2, progress=False)
    assert first.ran == 4 and first.statuses == {"ok": 4}
    assert calls(out, "convert") == 4 and calls(out, "measure") == 2      # reuse factors share one evaluation
    rows = ResultsStore(out).read()
    assert len(rows) == 4
    by_state = {}
    for r in rows:
        by_state.setdefault(r["precision"]["tensors"]["state"], set()).add(r["accuracy_from"])
    assert all(len(v) == 1 for v in by_state.values())                    # one evaluation per numeric config

    again = run_sweep(stub_spec(stub_runner, grid), out, workers=2, progress=False)
    assert again.ran == 0 and again.skipped == 4
    assert len(ResultsStore(out).read()) == 4 and calls(out, "convert") == 4

    grid["tensors.state"].append("ap_fixed<20,6,AP_RND,AP_SAT>")
    more = run_sweep(stub_spec(stub_runner, grid), out, workers=1, progress=False)
    assert more.ran == 2 and more.skipped == 4
    assert len(ResultsStore(out).read()) == 6


def test_failing_points_are_recorded_and_the_sweep_goes_on(tmp_path, stub_runner):
    out = tmp_path / "out"
    spec = stub_spec(stub_runner, {"tensors.state": [STATE16, STATE24], "sigmoid.table_size": [64, 32, 16384, 32768]},
                     timeout_s=3)
    run = run_sweep(spec, out, workers=2, progress=False)
    assert run.ran == 8
    rows = {(r["precision"]["tensors"]["state"], r["precision"]["sigmoid"]["table_size"]): r
            for r in ResultsStore(out).read()}
    for state in (STATE16, STATE24):
        assert rows[state, 64]["status"] == "ok"
        assert rows[state, 32]["status"] == "failed" and rows[state, 32]["error_kind"] == "convert"
        assert "cannot convert table_size 32" in rows[state, 32]["error"]
        assert rows[state, 16384]["status"] == "crashed" and "exited with 3" in rows[state, 16384]["error"]
        assert rows[state, 32768]["status"] == "timeout" and "timeout_s = 3" in rows[state, 32768]["error"]
    assert rows[STATE24, 64]["top1_agreement"] == 1.0

    # failures count as done; --retry-failed runs them again
    assert run_sweep(spec, out, workers=2, progress=False).ran == 0
    retry = run_sweep(stub_spec(stub_runner, {"tensors.state": [STATE16], "sigmoid.table_size": [64, 32]}), out,
                      workers=1, progress=False, retry_failed=True)
    assert retry.ran == 1 and retry.statuses == {"failed": 1}


def test_report_tables_plots_and_metadata(tmp_path, stub_runner):
    out = tmp_path / "out"
    spec = stub_spec(stub_runner, {"tensors.state": [STATE16, STATE24, "ap_fixed<20,6,AP_RND,AP_SAT>"],
                                   "sigmoid.table_size": [64, 32], "reuse_factor": [1, 2]})
    run = run_sweep(spec, out, workers=2, progress=False)
    rep = sweep_report.write_report(out, [p.point_hash for p in run.points])
    import pandas as pd
    csv = pd.read_csv(rep["paths"]["csv"])
    pq = pd.read_parquet(rep["paths"]["parquet"])
    assert len(csv) == len(pq) == 12
    assert {"axis:tensors.state", "axis:sigmoid.table_size", "LUT", "DSP", "BRAM_18K", "FF", "latency_cycles",
            "ii_cycles", "resource_source", "top1_agreement", "status", "error"} <= set(csv.columns)
    assert set(csv.loc[csv.status == "ok", "resource_source"]) == {"analytic"}
    assert (csv.status == "failed").sum() == 6
    layers = pd.read_csv(rep["paths"]["layers"])
    assert set(layers["name"]) >= {"l0_i_proj", "l0_mlgru", "lm_head"}
    meta = json.loads(rep["paths"]["metadata"].read_text())
    assert meta["versions"]["numpy"] == np.__version__
    assert {p["point_hash"] for p in meta["points"]} == set(csv["point_hash"])
    assert meta["sweep"]["name"] == "stub" and meta["runs"][0]["wall_s"] > 0
    for p in rep["paths"]["plots"]:
        assert p.stat().st_size > 5000 and p.read_bytes()[:4] == b"\x89PNG"
    assert {p.name for p in rep["paths"]["plots"]} >= {"pareto.png", "pareto_DSP.png", "pareto_LUT.png"}
    # the cheapest greedy-identical point: state width >= 20 (stub), reuse 2, smallest resources
    best = sweep_report.cheapest_greedy_identical(rep["frame"])
    ok = rep["frame"][(rep["frame"].status == "ok") & rep["frame"].greedy_identical.fillna(False).astype(bool)]
    assert best["util_max"] == ok["util_max"].min()
    assert "20,6" in best["precision_json"] and best["precision_json"].count('"reuse_factor": 2') == 1
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
        grid: {{tensors.state: ["{STATE16}", "{STATE24}"]}}
        runner: {stub_runner}
        eval: {{tokens: 16, prompt_tokens: 4, greedy_tokens: 4}}
        """))
    out = tmp_path / "o"
    assert main(["sweep", str(cfg), "--out", str(out), "--dry-run"]) == 0
    assert "2 points, 0 already" in capsys.readouterr().out
    assert main(["sweep", str(cfg), "--out", str(out), "--workers", "2", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "2 run (ok 2)" in text and "cheapest greedy-identical configuration: state=24.8" in text
    assert main(["sweep", str(cfg), "--out", str(out), "--report-only"]) == 0
    assert (out / "results.parquet").is_file() and (out / "pareto.png").is_file()
    assert main(["sweep", str(cfg), "--scheduler", "spark"]) == 2
    assert "dask:ADDRESS" in capsys.readouterr().err


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


# ======================================================================= the real thing
def test_ci_sweep_through_a_dask_local_cluster_on_csim(tmp_path):
    """sweep_ci.yaml (4 points) + one point whose reuse factor the converter refuses, on 2 Dask workers."""
    import yaml
    raw = yaml.safe_load((REPO / "design" / "configs" / "sweep_ci.yaml").read_text())
    raw["points"] = [{"label": "bad-reuse", "set": {"reuse_factor": 3}}]
    spec = load_spec(raw)
    out = tmp_path / "ci"
    run = run_sweep(spec, out, workers=2, scheduler="dask", progress=False)
    assert run.ran == 5
    rows = {r["label"]: r for r in ResultsStore(out).read()}
    bad = rows.pop("bad-reuse")
    assert bad["status"] == "failed" and bad["error_kind"] == "convert" and "reuse_factor 3" in bad["error"]
    assert all(r["status"] == "ok" for r in rows.values()), {k: r["error"] for k, r in rows.items()}
    assert sum(bool(r["compiled"]) for r in rows.values()) == 2       # one g++ build per numeric config
    wide = rows["widths=w32 reuse_factor=1"]
    narrow = rows["widths=w12 reuse_factor=1"]
    # generous types: C-sim and numpy reference decode the same tokens and agree on (almost) every argmax
    assert wide["greedy_identical"] and wide["top1_agreement"] >= 0.95 and wide["rel_logit_err"] < 0.05
    assert narrow["max_logit_err"] > wide["max_logit_err"]
    assert narrow["accuracy_from"] == rows["widths=w12 reuse_factor=2"]["accuracy_from"]
    assert 1 < wide["ref_perplexity"] < np.inf and np.isfinite(narrow["perplexity"])
    assert rows["widths=w32 reuse_factor=2"]["LUT"] < wide["LUT"]
    assert {r["resource_source"] for r in rows.values()} == {"analytic"}
    rep = sweep_report.write_report(out)
    assert rep["paths"]["csv"].is_file() and (out / "pareto_DSP.png").is_file()

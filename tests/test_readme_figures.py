"""README.md's measured figures: rendered from the committed bench JSON, and bounded by tests.

* README's marked tables equal what ``bench/render_readme.py`` renders from
  ``bench/results/*.json`` (a figure cannot drift from its source);
* the agreement rows' bounds hold on the model the README names (the shipped
  demo model), per step from the reference's state and along a carried-state
  decode, both in the committed JSON and measured live;
* the perplexity figure is the whole held-out split of the corpus it names;
* ``make train`` writes a new directory; ``make package`` composes after ``make demo``.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
README = ROOT / "README.md"
DEMO = ROOT / "python" / "mmfree_hls" / "data" / "demo_model"


def _bench_module(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))          # bench scripts import their sibling _common
    spec = importlib.util.spec_from_file_location(f"bench_{name}_under_test", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod                # dataclasses look their module up here
    spec.loader.exec_module(mod)
    return mod


render = _bench_module("render_readme")


# ----------------------------------------------------------------- README vs JSON
def test_readme_tables_are_what_the_committed_json_renders():
    text = README.read_text()
    new = render.render_readme(text, RESULTS)
    diff = "".join(difflib.unified_diff(text.splitlines(True), new.splitlines(True), "README.md", "rendered"))
    assert new == text, f"README.md's figures differ from bench/results; run `make readme-figures`:\n{diff}"


def test_every_region_is_in_the_readme_once():
    text = README.read_text()
    for name in render.REGIONS:
        assert text.count(f"<!-- figures:{name} -->") == 1, name
        assert text.count(f"<!-- /figures:{name} -->") == 1, name


def test_rendered_files_are_committed():
    """A result the README renders must be tracked, or a fresh clone renders something else."""
    present = [f for region in render.REGIONS.values() for f in region.files if (RESULTS / f).is_file()]
    assert "perplexity.json" in present and "agreement.json" in present
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", *[f"bench/results/{f}" for f in present]],
                             cwd=ROOT, capture_output=True, text=True)
    ignored = subprocess.run(["git", "check-ignore", *[f"bench/results/{f}" for f in present]],
                             cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.strip() == "", f"ignored by .gitignore: {ignored.stdout}"
    if (ROOT / ".git").exists():
        assert tracked.returncode == 0, f"not committed: {tracked.stderr}"


def test_a_changed_figure_changes_the_readme(tmp_path):
    shutil.copytree(RESULTS, tmp_path / "r", ignore=shutil.ignore_patterns("hls_project"))
    data = json.loads((tmp_path / "r" / "agreement.json").read_text())
    data["csim"]["carried"]["p90"] = 0.0321
    (tmp_path / "r" / "agreement.json").write_text(json.dumps(data))
    text = README.read_text()
    new = render.render_readme(text, tmp_path / "r")
    assert new != text and "p90 3.2e-2" in new


def test_missing_results_render_the_command_that_measures_them(tmp_path):
    text = render.render_readme(README.read_text(), tmp_path)
    for files in (r.files for r in render.REGIONS.values()):
        for f in files:
            assert f"`bench/results/{f}`" in text, f
    assert render.COMMANDS["agreement.json"] in text


def test_bad_region_and_missing_field_are_named(tmp_path):
    with pytest.raises(render.RenderError, match="figures:nosuch"):
        render.render_readme(README.read_text() + "<!-- figures:nosuch -->\nx\n<!-- /figures:nosuch -->\n")
    with pytest.raises(render.RenderError, match="lacks the region"):
        render.render_readme("# nothing marked\n")
    (tmp_path / "agreement.json").write_text(json.dumps({"model": "m", "bounds": {}}))
    with pytest.raises(render.RenderError, match=r"agreement\.json: no field 'csim'"):
        render.render_region("agreement", tmp_path)


def test_rows_carry_model_state_prompt_and_machine():
    out = render.render_region("agreement", RESULTS)
    data = json.loads((RESULTS / "agreement.json").read_text())
    rows = [l for l in out.splitlines() if l.startswith("| ") and not l.startswith("| paths")]
    assert len(rows) >= 3
    for row in rows:
        assert data["model"] in row and data["machine"]["kind"] in row
    c_sim = [r for r in rows if "C-sim" in r]
    assert any("teacher-forced" in r for r in c_sim) and any("carried" in r for r in c_sim)
    assert all(data["prompt"].strip() in r for r in c_sim)


def test_sweep_summary_reads_the_findings_from_the_results(tmp_path):
    sweep = _bench_module("bench_sweep")
    out = tmp_path / "sweep"
    out.mkdir()

    def row(label, board, frac, util, fits, top1, same, key, margin=None, point=False):
        return {"label": label, "status": "ok", "board": board, "tier": "on-chip", "packing": "2bit",
                "knobs": {"frac_bits": frac, "sigmoid_table_bits": 10}, "choices": {"point": label} if point else {},
                "top1_agreement": top1, "perplexity": 3 - top1, "ref_perplexity": 2.0, "greedy_prompts": 4,
                "greedy_identical_prompts": same, "greedy_divergence_margin": margin, "DSP": 100, "LUT": 1000,
                "BRAM_18K": 1, "FF": 1, "URAM": 0, "util_max": util, "fits": fits,
                "over_budget": [] if fits else ["LUT"], "tokens_per_s": 10.0, "cycles_per_token": 5,
                "resource_source": "analytic", "accuracy_key": key, "model": "demo"}
    rows = [row("a", "pynq-z2", 20, 1.5, False, 0.99, 3, "k1", 0.05), row("b", "zcu104", 20, 0.4, True, 0.99, 3, "k1"),
            row("c", "zcu104", 12, 0.3, True, 0.85, 1, "k2", 0.01), row("preset", "kv260", 16, 0.7, True, 0.995, 3,
                                                                        "k3", point=True)]
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "runs.jsonl").write_text(json.dumps({"wall_s": 12.0, "workers": 2, "skipped": 0}) + "\n")
    got = sweep.summarise(out, sweep.CONFIG)
    assert got["builds"] == 3 and got["points"] == 4
    assert got["by_numeric"]["frac_bits=20 sigmoid_table_bits=10"] == {
        "points": 2, "top1": [0.99, 0.99], "perplexity": [2.01, 2.01], "greedy_identical": [3, 3]}
    assert got["boards"]["pynq-z2"] == {"points": 1, "fit": 0, "over_budget": {"LUT": 1}}
    assert got["boards"]["zcu104"]["fit"] == 2 and got["cheapest_fitting"]["label"] == "c"
    assert got["greedy"]["most_identical"] == 3 and got["greedy"]["cheapest"]["label"] == "b"   # util 0.4 < 0.7
    assert got["greedy"]["smallest_divergence_margin"] == 0.05      # among the points reaching 3/4
    assert got["preset_point"]["label"] == "preset"


def test_repository_paths_named_in_the_readme_exist():
    """A newcomer follows README's paths: every `design/...`, `python/...`, `bench/...` one must be there."""
    import re

    text = README.read_text()
    named = set(re.findall(r"`((?:design|python|bench|tests|notebooks)/[\w./-]*)", text))
    pending = {f"bench/results/{f}" for r in render.REGIONS.values() for f in r.files}
    missing = sorted(p for p in named - pending if not (ROOT / p).exists())
    assert named and not missing, f"README names paths that do not exist: {missing}"


# ----------------------------------------------------------------- agreement bounds
agreement = _bench_module("bench_agreement")
BOUNDS = agreement.BOUNDS


def _within(stats: dict, bounds: dict) -> None:
    for k in ("median", "p90", "max"):
        assert stats[k] <= bounds[k], (k, stats[k], bounds[k])


def test_committed_agreement_figures_obey_the_test_bounds():
    data = json.loads((RESULTS / "agreement.json").read_text())
    assert data["bounds"] == BOUNDS, "README shows other bounds than the tests assert: re-run bench_agreement"
    assert data["model"] == DEMO.name
    cs = data["csim"]
    _within(cs["per_step"], BOUNDS["per_step"])
    _within(cs["carried"], BOUNDS["carried"])
    assert cs["greedy"]["identical"] >= BOUNDS["carried"]["greedy_min_fraction"] * cs["greedy"]["of"]
    k = data["keras"]
    for fx in ("float64", "float32"):
        assert k[f"keras_{fx}"]["max"] <= BOUNDS[f"keras_{fx}"]["max"]
        assert k[f"keras_{fx}"]["argmax_identical"] >= BOUNDS[f"keras_{fx}"]["argmax_min_fraction"] * k["positions"]


@pytest.fixture(scope="module")
def demo_overlay(tmp_path_factory):
    """The overlay `mmfree demo` builds for the shipped model (C-sim backend), in a scratch directory."""
    tmp = tmp_path_factory.mktemp("readme_demo")
    res = subprocess.run([sys.executable, "-m", "mmfree_hls", "demo", "--max-new-tokens", "1",
                          "--check-tokens", "0", "--project", str(tmp / "project"),
                          "--overlay", str(tmp / "overlay")],
                         cwd=tmp, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return tmp / "overlay"


def test_demo_model_per_step_and_carried_agreement_within_bounds(demo_overlay):
    """The bounds the README states, measured now on the shipped demo model through the host class."""
    from mmfree_hls.checkpoint import load_checkpoint
    from mmfree_hls.runtime import Accelerator
    from mmfree_hls.tokenizer import load_tokenizer

    model = load_checkpoint(DEMO)
    prompt = load_tokenizer(DEMO).encode(agreement.PROMPT)
    with Accelerator.open(demo_overlay, backend="csim") as acc:
        got = agreement.csim_agreement(acc, model, prompt, 64)
    assert got["per_step"] is not None, got.get("per_step_note")
    _within(got["per_step"], BOUNDS["per_step"])
    _within(got["carried"], BOUNDS["carried"])
    # the carried error is at least the per-step error's order: it includes it
    assert got["carried"]["max"] >= 0.5 * got["per_step"]["max"]
    assert got["greedy"]["identical"] >= BOUNDS["carried"]["greedy_min_fraction"] * 64


def test_demo_model_keras_agreement_within_bounds():
    pytest.importorskip("tensorflow")        # the design extra, always installed by `make setup`
    from mmfree_hls.checkpoint import load_checkpoint
    from mmfree_hls.corpus import corpus_bytes, split_holdout

    got = agreement.keras_agreement(load_checkpoint(DEMO), split_holdout(corpus_bytes())[1], windows=2)
    n = got["positions"]
    for fx in ("float64", "float32"):
        assert got[f"keras_{fx}"]["max"] <= BOUNDS[f"keras_{fx}"]["max"]
        assert got[f"keras_{fx}"]["argmax_identical"] >= BOUNDS[f"keras_{fx}"]["argmax_min_fraction"] * n
    assert got["keras_step_vs_sequence"]["max_abs"] <= BOUNDS["keras_step_vs_sequence"]["max_abs"]


# ----------------------------------------------------------------- perplexity and its corpus
def test_perplexity_figure_is_the_whole_split_of_the_named_corpus():
    import hashlib

    from mmfree_hls.checkpoint import load_checkpoint
    from mmfree_hls.corpus import corpus_text, split_holdout
    from mmfree_hls.design.train import perplexity

    data = json.loads((RESULTS / "perplexity.json").read_text())
    whole = data["rows"][0]
    assert whole["slice"] == "held-out split"
    held_bytes = data["corpus"]["held_out_bytes"]
    assert whole["scored_bytes"] == (held_bytes - 1) // 128 * 128 > 0.99 * held_bytes
    assert data["train_report"]["reproduced"] is True
    text = corpus_text().encode("utf-8")
    if hashlib.sha256(text).hexdigest() != data["corpus"]["sha256"]:
        # another corpus is only expected from another Python: README names the version
        assert platform.python_version() != data["corpus"]["python"]
        return
    held = split_holdout(np.frombuffer(text, np.uint8).astype(np.int32))[1]
    assert len(held) == held_bytes
    ppl = perplexity(load_checkpoint(DEMO).logits, held, max_tokens=len(held))
    assert ppl == pytest.approx(whole["perplexity"], rel=1e-9)


def test_train_report_records_the_corpus_python(tmp_path):
    pytest.importorskip("tensorflow")
    from mmfree_hls.config import ModelConfig
    from mmfree_hls.corpus import corpus_bytes
    from mmfree_hls.design.train import TrainConfig, train

    cfg = ModelConfig(vocab_size=256, hidden_size=32, num_hidden_layers=1, intermediate_size=64)
    report = train(cfg, tmp_path / "ckpt", TrainConfig(steps=2, batch_size=2, seq_len=16, checkpoint_every=2,
                                                         warmup=1), progress=False)
    assert report["corpus_python"] == platform.python_version()
    assert report["corpus_bytes"] == len(corpus_bytes())
    saved = json.loads((tmp_path / "ckpt" / "train_report.json").read_text())
    assert saved["corpus_python"] == platform.python_version()


# ----------------------------------------------------------------- make targets compose
def _make(cwd: Path, *args: str) -> str:
    res = subprocess.run(["make", "--no-print-directory", *args], cwd=cwd, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


@pytest.fixture
def make_tree(tmp_path):
    """The project's Makefile in a scratch tree whose .venv is up to date, mmfree replaced by echo."""
    if shutil.which("make") is None:
        pytest.fail("GNU make is needed: the README's commands are make targets")
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / ".venv").mkdir()
    os.utime(tmp_path / "pyproject.toml", (1e9, 1e9))
    (tmp_path / ".venv" / ".installed").write_text("")
    return tmp_path


def test_make_train_writes_a_new_directory(make_tree):
    out = _make(make_tree, "-n", "train", "MMFREE=mmfree")
    assert "mmfree train --out runs/train" in out and "demo_model" not in out and "--force" not in out
    out = _make(make_tree, "-n", "train", "MMFREE=mmfree", "CKPT=python/mmfree_hls/data/demo_model", "FORCE=1")
    assert "mmfree train --out python/mmfree_hls/data/demo_model --force" in out


def test_make_package_after_make_demo_is_up_to_date_or_rebuilds(make_tree):
    project, overlay = make_tree / "hls_project" / "demo", make_tree / "overlays" / "pynq-z2" / "demo"
    project.mkdir(parents=True)
    overlay.mkdir(parents=True)
    (project / "mmfree_project.json").write_text("{}")
    os.utime(project / "mmfree_project.json", (1e9, 1e9))
    (overlay / "manifest.json").write_text("{}")                    # what `make demo` leaves
    out = _make(make_tree, "package", "MMFREE=echo RUN mmfree")
    assert "up to date" in out and "RUN" not in out
    (project / "mmfree_project.json").write_text("{ }")              # the project changed since
    out = _make(make_tree, "package", "MMFREE=echo RUN mmfree")
    assert "RUN mmfree package hls_project/demo --board pynq-z2 --out overlays/pynq-z2/demo --force" in out
    os.utime(project / "mmfree_project.json", (1e9, 1e9))
    out = _make(make_tree, "package", "MMFREE=echo RUN mmfree", "FORCE=1")
    assert "RUN mmfree package" in out


def test_make_help_names_force_and_every_target(make_tree):
    out = _make(make_tree, "help")
    assert "FORCE=1" in out
    for target in ("train", "convert", "package", "readme-figures", "bench"):
        assert f"make {target} " in out
    readme = README.read_text()
    assert "readme-figures" in readme and "FORCE=1" in readme


def test_benches_run_with_tensorflow_quiet(make_tree):
    """`make bench` and every bench that imports bench/_common start TensorFlow without its CUDA chatter."""
    pytest.importorskip("tensorflow")
    assert "TF_CPP_MIN_LOG_LEVEL=3" in _make(make_tree, "-n", "bench")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    res = subprocess.run([sys.executable, "-c", "import _common, tensorflow"], cwd=BENCH, env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    for noise in ("cuda", "TensorRT", "cpu_feature_guard"):
        assert noise not in res.stderr, res.stderr

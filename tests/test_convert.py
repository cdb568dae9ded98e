"""convert(): the decode-step model through hls4ml (MMFreeEngine backend) to the engine project,
C-simulated, against the numpy reference.

The shipped demo model is converted once for the module (pynq-z2, on-chip tier).
Stated agreement of the engine's C-simulation with the reference:

* greedy decoding: the same 64 tokens as ``MMFreeLM`` from a held-out prompt;
* per step from the reference's state (teacher forcing over the held-out split
  of the corpus): the same argmax on >= 99 % of positions.

The project hls4ml writes is byte for byte the one the engine generator writes
for the original model (firmware/ and weights.bin), on chip and streamed.
"""

from __future__ import annotations

import filecmp
import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mmfree_hls.checkpoint import load_checkpoint, save_checkpoint
from mmfree_hls.cli import main as cli_main
from mmfree_hls.config import ModelConfig
from mmfree_hls.corpus import corpus_bytes, split_holdout
from mmfree_hls.design.convert import PROJECT_FILE, ProjectExistsError, convert
from mmfree_hls.engine.presets import PresetError, get_preset
from mmfree_hls.engine.project import EngineShapeError, write_project
from mmfree_hls.fsio import MARKER
from mmfree_hls.reference import MMFreeLM
from mmfree_hls.sampling import greedy_decode

DEMO = Path(__file__).resolve().parents[1] / "python/mmfree_hls/data/demo_model"
N_GREEDY = 64
ARGMAX_SAMPLES = 1500            # held-out positions stepped by the C-sim (spread over the whole split)
STREAMED_CFG = ModelConfig(vocab_size=128, hidden_size=128, num_hidden_layers=2, intermediate_size=256)


def session_dir(tmp_path_factory) -> Path:
    """A directory all pytest-xdist workers of this session share (each has its own basetemp)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="module")
def demo() -> MMFreeLM:
    return load_checkpoint(DEMO)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    # Converted and compiled once per session: a second xdist worker waits on the lock
    # and then finds the project up to date (content-hash cache).
    root = session_dir(tmp_path_factory) / "mmfree_test_convert" / "demo"
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return convert(DEMO, root, board="pynq-z2", tier="on-chip", verbose=False)


def _same_tree(a: Path, b: Path) -> None:
    names_a = sorted(p.name for p in a.iterdir())
    assert names_a == sorted(p.name for p in b.iterdir())
    _, mismatch, errors = filecmp.cmpfiles(a, b, names_a, shallow=False)
    assert not mismatch and not errors, f"differ: {mismatch + errors}"


# ----------------------------------------------------------------- through hls4ml
def test_project_written_through_hls4ml_is_the_engine_generators(project, demo, tmp_path):
    direct = tmp_path / "direct"
    write_project(demo, direct, get_preset("pynq-z2", "on-chip"), "2bit")
    _same_tree(project.root / "firmware", direct / "firmware")
    assert not (project.root / "weights.bin").exists()            # on chip: the image is in engine_image.h


def test_streamed_project_through_hls4ml_is_byte_identical(tmp_path):
    model = MMFreeLM.random(STREAMED_CFG, seed=11)
    p = convert(model, tmp_path / "hls", board="pynq-z2", tier="streamed", packing="1.6bit", compile=False,
                verbose=False)
    direct = tmp_path / "direct"
    write_project(model, direct, get_preset("pynq-z2", "streamed"), "1.6bit")
    _same_tree(p.root / "firmware", direct / "firmware")
    assert filecmp.cmp(p.root / "weights.bin", direct / "weights.bin", shallow=False)
    assert p.info["engine"]["K"] == 2 and p.weights().size > 0


def test_project_record(project, demo):
    info = json.loads((project.root / PROJECT_FILE).read_text())
    cfg = demo.config
    assert info["top"] == "mmfree_engine" and (info["board"], info["tier"], info["packing"]) == \
        ("pynq-z2", "on-chip", "2bit")
    assert info["dims"] == {"d": cfg.d, "L": cfg.num_hidden_layers, "e": cfg.input_dim, "V": cfg.vocab_size}
    assert [p["name"] for p in info["ports"]] == ["n", "mode", "slot", "load_mask", "store_mask",
                                                  "x_in", "state", "logits", "top"]
    assert info["checkpoint"] == str(DEMO.resolve()) and len(info["content_hash"]) == 64
    assert all((project.root / h).is_file() for h in info["headers"] + info["sources"])
    assert (project.root / MARKER).is_file()


# ----------------------------------------------------------------- agreement
def test_greedy_decoding_matches_reference(project, demo):
    held_out = split_holdout(corpus_bytes())[1]
    prompt = [int(t) for t in held_out[:24]]
    ref = demo.generate_greedy(prompt, N_GREEDY)
    lib = project.csim()
    state = np.zeros((lib.L, lib.e), np.float32)

    def step(tok: int) -> np.ndarray:
        nonlocal state
        logits, state = lib.step(demo.embed(tok), state)
        return logits
    sim = greedy_decode(step, prompt, N_GREEDY)
    assert len(set(ref)) >= 8                        # text, not a repeated byte
    assert sim == ref


def _reference_states(model: MMFreeLM, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Teacher-forced reference over ``ids``: logits (T, V) and the state *before* each step (T, L, e).

    The sequence form of the reference's own pieces (one scan per layer); its logits are
    checked against ``model.logits`` so the states are the reference's.
    """
    x = model.embed(ids[None])
    L = model.config.num_hidden_layers
    before = np.zeros((len(ids), L, model.config.input_dim))
    for l in range(L):
        h = model._rms(x, f"model.layers.{l}.attn_norm.weight")
        i, f = model._gates(l, h)
        s = np.zeros_like(i[:, 0])
        states = np.empty_like(i)
        for t in range(len(ids)):
            before[t, l] = s[0]
            s = f[:, t] * s + i[:, t]
            states[:, t] = s
        x = x + model._mix_out(l, h, states)
        x = x + model._channel_mix(l, x)
    return model.head(x)[0], before


def test_held_out_argmax_agreement(project, demo):
    held_out = split_holdout(corpus_bytes())[1]
    ref_logits, before = _reference_states(demo, held_out)
    np.testing.assert_allclose(ref_logits[:1000], demo.logits(held_out[None, :1000])[0], rtol=0, atol=1e-9)
    lib = project.csim()
    positions = np.linspace(0, len(held_out) - 1, ARGMAX_SAMPLES).astype(int)
    agree = 0
    for t in positions:
        logits, _ = lib.step(demo.embed(int(held_out[t])), before[t].astype(np.float32))
        agree += int(np.argmax(logits) == np.argmax(ref_logits[t]))
    rate = agree / len(positions)
    print(f"\nheld-out argmax agreement {rate:.4f} ({agree}/{len(positions)} positions of {len(held_out)})")
    assert rate >= 0.99


# ----------------------------------------------------------------- hls4ml's compile/predict bridge
def test_hls4ml_compile_and_predict_run_the_engine(project, demo, tmp_path):
    from mmfree_hls.design.hls4ml_backend import convert_through_hls4ml
    hm = convert_through_hls4ml(demo, tmp_path / "hm", get_preset("pynq-z2", "on-chip"), "2bit")
    hm.compile()
    assert (tmp_path / "hm" / "csim/libmmfree_csim.so").is_file()
    rng = np.random.default_rng(4)
    L, e = demo.config.num_hidden_layers, demo.config.input_dim
    x = demo.embed(ord("h")).astype(np.float32)
    state = (0.3 * rng.standard_normal((L, e))).astype(np.float32)
    out = hm.predict([x] + list(state))
    logits, new_state = project.csim().step(x, state)
    np.testing.assert_array_equal(out[0], logits)
    np.testing.assert_array_equal(np.stack(out[1:]), new_state)
    batch = hm.predict([np.stack([x, 0 * x])] + [np.stack([s, 0 * s]) for s in state])   # rows are independent steps
    np.testing.assert_array_equal(batch[0][0], logits)
    np.testing.assert_array_equal(batch[0][1], project.csim().step(0 * x, 0 * state)[0])


# ----------------------------------------------------------------- caching, --force, CLI
# (each on its own small project, converted twice back to back: the engine's sources are part
#  of the content hash, so a long-lived project would go stale the moment they change)
def test_second_convert_is_cached(tmp_path, monkeypatch):
    model = MMFreeLM.random(STREAMED_CFG, seed=1)
    first = convert(model, tmp_path / "p", verbose=False)
    stamp = (first.root / PROJECT_FILE).stat().st_mtime_ns
    lib_stamp = first.lib_path.stat().st_mtime_ns

    def no_keras(*args, **kwargs):
        raise AssertionError("a cached convert must not rebuild the Keras model")
    monkeypatch.setattr(MMFreeLM, "to_keras", no_keras)
    again = convert(model, first.root, verbose=False)
    assert (first.root / PROJECT_FILE).stat().st_mtime_ns == stamp
    assert again.lib_path.stat().st_mtime_ns == lib_stamp
    assert again.content_hash == first.content_hash


def test_other_knobs_need_force_and_force_replaces(tmp_path):
    model = MMFreeLM.random(STREAMED_CFG, seed=2)
    root = tmp_path / "p"
    first = convert(model, root, compile=False, verbose=False)
    (root / "stale.txt").write_text("from the first build")
    with pytest.raises(ProjectExistsError, match="different project.*--force"):
        convert(model, root, config={"vector_lanes": 8}, compile=False, verbose=False)
    assert json.loads((root / PROJECT_FILE).read_text())["content_hash"] == first.content_hash
    second = convert(model, root, config={"vector_lanes": 8}, compile=False, overwrite=True, verbose=False)
    assert second.content_hash != first.content_hash and second.info["engine"]["knobs"]["vector_lanes"] == 8
    assert not (root / "stale.txt").exists() and (root / MARKER).is_file()


def test_force_never_replaces_a_directory_of_the_users(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ProjectExistsError, match="not an mmfree HLS project"):
        convert(MMFreeLM.random(STREAMED_CFG), mine, compile=False, overwrite=True, verbose=False)
    assert (mine / "notes.txt").read_text() == "keep me"


def test_bad_input_is_named(tmp_path):
    model = MMFreeLM.random(STREAMED_CFG)
    with pytest.raises(PresetError, match="unknown board 'zedboard'; known boards: .*pynq-z2"):
        convert(model, tmp_path / "a", board="zedboard", compile=False, verbose=False)
    with pytest.raises(PresetError, match="unknown engine knob"):
        convert(model, tmp_path / "a", config={"lanes": 8}, compile=False, verbose=False)
    with pytest.raises(FileNotFoundError, match="engine config .*missing.yaml does not exist"):
        convert(model, tmp_path / "a", config=tmp_path / "missing.yaml", compile=False, verbose=False)
    with pytest.raises(FileNotFoundError, match="not a checkpoint directory"):
        convert(tmp_path, tmp_path / "a", compile=False, verbose=False)
    narrow = MMFreeLM.random(ModelConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, intermediate_size=32))
    with pytest.raises(EngineShapeError, match="too narrow for the pynq-z2 streamed engine"):
        convert(narrow, tmp_path / "b", tier="streamed", compile=False, verbose=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_convert(tmp_path, capsys):
    ckpt = save_checkpoint(MMFreeLM.random(STREAMED_CFG, seed=3), tmp_path / "ckpt")
    out = str(tmp_path / "p")
    assert cli_main(["convert", str(ckpt), "--out", out, "--tier", "streamed", "--no-compile"]) == 0
    assert "pynq-z2 streamed 2bit" in capsys.readouterr().out
    assert cli_main(["convert", str(ckpt), "--out", out, "--tier", "streamed", "--no-compile"]) == 0
    assert "up to date" in capsys.readouterr().out
    knobs = tmp_path / "knobs.yaml"
    knobs.write_text("vector_lanes: 8\n")
    assert cli_main(["convert", str(ckpt), "--out", out, "--tier", "streamed", "--config", str(knobs)]) == 2
    err = capsys.readouterr().err
    assert "different project" in err and "--force" in err and "Traceback" not in err


def test_no_compiler_warnings_from_our_sources(project):
    assert (project.root / "csim/compile.log").is_file()
    assert project.compile_warnings() == []


def test_library_exports_only_the_c_abi(project):
    """Statics (tables, engine state) stay private to each library: with g++'s unique symbols
    two projects loaded in one process would silently share the first one's."""
    nm = shutil.which("nm")
    assert nm, "binutils nm is part of the g++ toolchain this test suite needs"
    out = subprocess.run([nm, "-D", "--defined-only", str(project.lib_path)], capture_output=True,
                         text=True, check=True).stdout
    kinds = {line.split()[-2] for line in out.splitlines() if len(line.split()) >= 3}
    names = {line.split()[-1] for line in out.splitlines() if line.split()}
    assert "u" not in kinds
    assert {"mmfree_abi", "mmfree_info", "mmfree_step", "mmfree_cycles"} <= names
    assert not [n for n in names if "6mmfree" in n or "sigmoid" in n]     # nothing of the engine's namespace


def test_convert_from_a_saved_checkpoint_is_the_same_project(demo, tmp_path):
    """A model object and its checkpoint convert to the same engine (the content hash agrees)."""
    ckpt = save_checkpoint(demo, tmp_path / "ckpt")
    from_object = convert(demo, tmp_path / "a", compile=False, verbose=False)
    from_ckpt = convert(ckpt, tmp_path / "b", compile=False, verbose=False)
    assert from_ckpt.content_hash == from_object.content_hash
    _same_tree(from_ckpt.root / "firmware", from_object.root / "firmware")
    assert (from_object.root / "model" / "config.json").is_file()    # the model object's own checkpoint

"""Decode step through hls4ml + our extension layers, C-simulated, against the numpy reference.

One small LM is converted and compiled once for the module. Stated agreement
(default precision config):

* per step: logits relative error (max |Δ| / max |logits|) ≤ 5e-3, median
  ≤ 1e-5 (measured: max 5.6e-4, median 3.8e-7). Errors beyond ~1e-6 come
  from an int8 activation rounding that flips at a near-tie (|x̂ s − k − ½|
  below ~1e-5): one flip moves a logit by one quantum max|x̂|/(127 γ) of that
  BitLinear, ~2e-3 of the logit range at d = 48. State error (relative to
  max(1, max|s|)) ≤ 1e-3, median ≤ 1e-5 (measured: max 4e-5; the sigma
  table's 8.8e-7 and the fixed-point state);
* greedy decoding: the same 64 tokens as ``MMFreeLM.generate_greedy``.

The model is made "trained-like" — each token's embedding points the head at
one successor (a single cycle through the vocabulary), and the blocks add a
state-dependent perturbation of about a fifth of the residual — so greedy
decoding has clear margins, which the test checks before relying on them.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from mmfree_hls.cli import main as cli_main
from mmfree_hls.config import ModelConfig
from mmfree_hls.design.convert import (PROJECT_FILE, ProjectExistsError, check_reuse_factors, convert)
from mmfree_hls.design.hls_layers import ConversionError
from mmfree_hls.design.precision import load_precision
from mmfree_hls.packing import pack_ternary
from mmfree_hls.reference import MMFreeLM, init_random_state_dict

CFG = ModelConfig(vocab_size=128, hidden_size=48, num_hidden_layers=2, intermediate_size=96)
PROMPT = [3, 17, 42]
N_GREEDY = 64


def trained_like_model(cfg: ModelConfig, seed: int = 0, block_scale: float = 0.2) -> MMFreeLM:
    rng = np.random.default_rng(seed)
    sd = init_random_state_dict(cfg, seed)
    V, d = cfg.vocab_size, cfg.d
    emb = rng.standard_normal((V, d)).astype(np.float32)            # unit-variance residual stream
    order = rng.permutation(V)
    successor = np.empty(V, dtype=int)
    successor[order] = np.roll(order, -1)                             # one cycle through all tokens
    head = np.empty((V, d), np.float32)
    head[successor] = emb                                             # logit of succ(t) ∝ <x, emb[t]>
    sd["model.embeddings.weight"] = emb
    sd["lm_head.weight"] = head
    for l in range(cfg.num_hidden_layers):
        for key in (f"model.layers.{l}.attn.o_proj.weight", f"model.layers.{l}.mlp.down_proj.weight"):
            sd[key] = sd[key] * block_scale                           # BitLinear output ∝ weight scale
    return MMFreeLM(cfg, sd)


@pytest.fixture(scope="module")
def model():
    return trained_like_model(CFG)


def session_dir(tmp_path_factory) -> Path:
    """A directory all pytest-xdist workers of this session share (each has its own basetemp)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="module")
def project(model, tmp_path_factory):
    # Converted and compiled once per session: a second xdist worker waits on the lock
    # and then finds the project up to date (content-hash cache).
    root = session_dir(tmp_path_factory) / "mmfree_test_convert" / "tiny"
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        p = convert(model, root, verbose=False)
        p.compile(opt="-O1", verbose=False)
    return p


@pytest.fixture(scope="module")
def runs(model, project):
    """The same prompt + greedy continuation on both paths, step by step."""
    lib = project.csim()
    ref_tokens = model.generate_greedy(PROMPT, N_GREEDY)
    s_ref, s_sim = model.init_state(), np.zeros((CFG.num_hidden_layers, CFG.state_size), np.float32)
    records = []
    for tok in PROMPT + ref_tokens[:-1]:
        x = model.embed(tok)
        l_ref, s_ref = model.decode_step(x, s_ref)
        l_sim, s_sim = lib.step(x, s_sim)
        s_sim_ref_state = s_sim.copy()
        records.append((l_ref, l_sim, s_ref.copy(), s_sim_ref_state))
        s_sim = s_ref.astype(np.float32)           # teacher forcing: each step from the same state
    return ref_tokens, records


# ----------------------------------------------------------------- the project
def test_project_files(project, model):
    root = project.root
    info = json.loads((root / PROJECT_FILE).read_text())
    assert info["top"] == "mmfree_step" and info["dims"] == {"d": 48, "L": 2, "e": 48, "V": 128}
    assert [p["name"] for p in info["ports"]] == ["x_in", "state", "logits"]
    assert all((root / s).is_file() for s in info["hls_sources"])
    wrapper = (root / "firmware/mmfree_step.cpp").read_text()
    for port in ("x_in", "state", "logits"):
        assert re.search(rf"INTERFACE m_axi port={port} offset=slave", wrapper)
        assert f"INTERFACE s_axilite port={port} bundle=control" in wrapper
    tcl = (root / "mmfree_build.tcl").read_text()
    assert "set_top $top" in tcl and "set top mmfree_step" in tcl and "m_axi gmem_s inout 96" in tcl
    # every BitLinear's weights are a packed 2-bit ROM equal to the reference's ternary weights
    params = (root / "firmware/parameters.h").read_text()
    head_idx = re.search(r"nnet::bitlinear<[^>]*config(\d+)>\(\w+, \w+, \w+, tw\d+\); // lm_head",
                         (root / "firmware/mmfree_net.cpp").read_text()).group(1)
    rom = (root / f"firmware/weights/tw{head_idx}.h").read_text()
    assert f'#include "weights/tw{head_idx}.h"' in params
    body = rom[rom.index("{") + 1:rom.index("}")]
    stored = np.array([int(v) for v in body.replace("\n", "").split(",") if v.strip()], dtype=np.uint8)
    np.testing.assert_array_equal(stored, pack_ternary(model.ternary["lm_head"].w_q).ravel())


def test_vivado_backend_writes_the_same_layers(model, project, tmp_path):
    """The extension is registered for Vivado too: same layer configs, calls and ROMs as Vitis."""
    import contextlib
    import io

    import hls4ml
    from mmfree_hls.design import hls_layers
    from mmfree_hls.design.convert import hls_config
    hls_layers.register()
    with contextlib.redirect_stdout(io.StringIO()):
        hm = hls4ml.converters.convert_from_keras_model(
            model.to_keras("step"), output_dir=str(tmp_path / "vivado"), project_name="mmfree_net",
            backend="Vivado", io_type="io_parallel", hls_config=hls_config(CFG, load_precision()),
            write_weights_txt=False)
        hm.write()
    fw_vivado, fw_vitis = tmp_path / "vivado" / "firmware", project.root / "firmware"
    assert (fw_vivado / "parameters.h").read_text() == (fw_vitis / "parameters.h").read_text()
    for rom in fw_vitis.glob("weights/tw*.h"):
        assert (fw_vivado / "weights" / rom.name).read_text() == rom.read_text()
    calls = re.findall(r"nnet::(\w+)<", (fw_vivado / "mmfree_net.cpp").read_text())
    assert calls.count("bitlinear") == 13 and calls.count("mlgru_cell") == 2 and calls.count("glu") == 2


def test_no_compiler_warnings_from_our_sources(project):
    assert (project.root / "csim/compile.log").is_file()
    assert project.compile_warnings(ours_only=True) == []


def test_info_and_bad_input(project):
    lib = project.csim()
    assert (lib.d, lib.L, lib.e, lib.V) == (48, 2, 48, 128)
    x = np.zeros(48, np.float32)
    x[5] = np.nan
    with pytest.raises(RuntimeError, match="non-finite"):
        lib.step(x, np.zeros((2, 48)))


# ----------------------------------------------------------------- agreement
def test_model_has_clear_margins(runs):
    """Precondition of the greedy test: top-1 beats top-2 by ≥ 5 % of the logit range every step."""
    _, records = runs
    margins = []
    for l_ref, *_ in records:
        top = np.sort(l_ref)[::-1]
        margins.append((top[0] - top[1]) / np.max(np.abs(l_ref)))
    assert min(margins) > 0.05


def test_decode_step_logits_and_state_agree(runs):
    _, records = runs
    rel = [np.max(np.abs(l_sim - l_ref)) / np.max(np.abs(l_ref)) for l_ref, l_sim, _, _ in records]
    s_err = [np.max(np.abs(s_sim - s_ref)) / max(1.0, np.max(np.abs(s_ref))) for _, _, s_ref, s_sim in records]
    print(f"\nlogits relative error: median {np.median(rel):.2e}, max {max(rel):.2e}; "
          f"state error max {max(s_err):.2e} ({len(records)} steps)")
    assert max(rel) <= 5e-3
    assert np.median(rel) <= 1e-5
    assert max(s_err) <= 1e-3
    assert np.median(s_err) <= 1e-5


def test_greedy_decoding_matches_reference(model, project, runs):
    ref_tokens, _ = runs
    sim_tokens = project.csim().generate_greedy(model, PROMPT, N_GREEDY)
    assert len(set(ref_tokens)) > 32                 # a real walk through the vocabulary, not a fixed point
    assert sim_tokens == ref_tokens


# ----------------------------------------------------------------- caching, CLI
def test_second_convert_is_cached(model, project, monkeypatch):
    stamp = (project.root / PROJECT_FILE).stat().st_mtime_ns
    lib_stamp = project.lib_path.stat().st_mtime_ns

    def no_keras(*args, **kwargs):
        raise AssertionError("a cached convert must not rebuild the Keras model")
    monkeypatch.setattr(model, "to_keras", no_keras)
    again = convert(model, project.root, verbose=False)
    again.compile(opt="-O1", verbose=False)
    assert (project.root / PROJECT_FILE).stat().st_mtime_ns == stamp
    assert again.lib_path.stat().st_mtime_ns == lib_stamp
    assert again.content_hash == project.content_hash


def test_refuses_to_overwrite_a_different_project(model, project):
    with pytest.raises(ProjectExistsError, match="--force"):
        convert(model, project.root, config={"bitlinear": {"mant_bits": 20}}, verbose=False)
    assert project.is_compiled("-O1")                # untouched


def test_reuse_factor_must_divide_the_packed_row(model):
    with pytest.raises(ConversionError, match=r"l0_i_proj: reuse_factor 5 must divide the 12 packed bytes"):
        check_reuse_factors(CFG, load_precision({"layers": {"l0_i_proj": {"reuse_factor": 5}}}))
    check_reuse_factors(CFG, load_precision({"layers": {"l*_proj": {"reuse_factor": 4}}, "reuse_factor": 1}))


def test_weights_out_of_type_range_are_refused(model):
    from mmfree_hls.design.convert import check_weight_ranges
    check_weight_ranges(model, load_precision())
    with pytest.raises(ConversionError, match=r"l1_g_norm: its norm weights reach .* holds at most 0.5"):
        check_weight_ranges(model, load_precision({"layers": {"l1_g_norm": {"weight": "ap_fixed<16,0>"}}}))
    with pytest.raises(ConversionError, match=r"l0_i_proj: its norm weights reach .* holds at most 0.9995"):
        check_weight_ranges(model, load_precision({"bitlinear": {"norm": "ap_fixed<12,1>"}}))


def test_cli_convert(model, project, tmp_path, capsys):
    from mmfree_hls.checkpoint import save_checkpoint
    ckpt = save_checkpoint(model, tmp_path / "ckpt")
    assert cli_main(["convert", str(ckpt), "--out", str(project.root), "--no-compile"]) == 0
    assert "up to date" in capsys.readouterr().out
    cfg = tmp_path / "narrow.yaml"
    cfg.write_text("bitlinear:\n  quant_bits: 16\n")
    assert cli_main(["convert", str(ckpt), "--out", str(project.root), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "different project" in err and "--force" in err


def test_library_exports_only_the_c_abi(project):
    """Template statics (the σ table) must stay private to each library: with g++'s unique
    symbols two projects loaded in one process would silently share the first one's table."""
    import shutil
    import subprocess
    nm = shutil.which("nm")
    assert nm, "binutils nm is part of the g++ toolchain this test suite needs"
    out = subprocess.run([nm, "-D", "--defined-only", str(project.lib_path)], capture_output=True,
                         text=True, check=True).stdout
    kinds = {line.split()[-2] for line in out.splitlines() if len(line.split()) >= 3}
    names = {line.split()[-1] for line in out.splitlines() if line.split()}
    assert "u" not in kinds
    assert {"mmfree_step", "mmfree_info"} <= names
    assert not [n for n in names if "sigmoid" in n or n.startswith("_ZN4nnet")]

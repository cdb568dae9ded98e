"""The engine's C-simulation: the fast path is bit-identical to the synthesised
schedule, and the cycles it counts are the schedule model's.

Two libraries are built from the same sources: the default one (fast paths
under #ifndef __SYNTHESIS__: weights unpacked once to int8, native integers)
and one with -DMMFREE_NO_FAST_CSIM (the stream schedule of the synthesis top,
ap_int types). Every logit and every state value must agree exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from mmfree_hls import MMFreeLM, ModelConfig
from mmfree_hls.checkpoint import load_checkpoint
from mmfree_hls.engine.build import compile_csim, write_engine_sources
from mmfree_hls.engine.layout import Shape, build_image, synthetic_image, weights_buffer
from mmfree_hls.engine.presets import get_preset, model_preset
from mmfree_hls.engine.schedule import token_cycles
from mmfree_hls.runtime.backend_csim import CSimLibrary
from mmfree_hls.runtime.errors import AcceleratorError

DEMO = "python/mmfree_hls/data/demo_model"


def _libraries(root, model, preset, packing, weights=None):
    write_engine_sources(root, model, preset, packing)
    fast = CSimLibrary(compile_csim(root, fast=True, out="csim/fast.so"), weights=weights)
    exact = CSimLibrary(compile_csim(root, opt="-O2", fast=False, out="csim/exact.so"), weights=weights)
    return fast, exact


def _decode(lib: CSimLibrary, model, steps: int, first: int = 1):
    """Greedy self-feeding decode: every step's logits and state."""
    state = np.zeros((lib.L, lib.e), np.float32)
    tok, logits_all, states = first, [], []
    for _ in range(steps):
        logits, state = lib.step(model.embed(tok), state)
        logits_all.append(logits)
        states.append(state.copy())
        tok = int(np.argmax(logits))
    return np.array(logits_all), np.array(states)


@pytest.fixture(scope="module")
def demo_model():
    return load_checkpoint(DEMO)


def test_fast_csim_is_bit_identical_on_the_demo_model(tmp_path_factory, demo_model):
    preset = get_preset("pynq-z2", "on-chip")
    fast, exact = _libraries(tmp_path_factory.mktemp("demo"), demo_model, preset, "2bit")
    lf, sf = _decode(fast, demo_model, 64)
    le, se = _decode(exact, demo_model, 64)
    assert np.array_equal(lf, le), "logits differ between the fast and the synthesised schedule"
    assert np.array_equal(sf, se), "states differ between the fast and the synthesised schedule"
    want = token_cycles(Shape.of(demo_model.config, "2bit", preset.R), preset.vector_lanes).total
    assert fast.cycles == exact.cycles == want


@pytest.mark.parametrize("packing", ["2bit", "1.6bit"])
def test_fast_csim_is_bit_identical_on_a_streamed_shape(tmp_path_factory, packing):
    cfg = ModelConfig(vocab_size=256, hidden_size=256, num_hidden_layers=2, intermediate_size=512)
    model = MMFreeLM.random(cfg, seed=3)
    preset = get_preset("pynq-z2", "streamed")
    shape = Shape.of(cfg, packing, preset.R)
    weights = weights_buffer(build_image(model, packing, preset.R), shape, preset.K, preset.port_bytes)
    fast, exact = _libraries(tmp_path_factory.mktemp(f"streamed_{packing}"), cfg, preset, packing, weights)
    steps = 64 if packing == "2bit" else 16
    lf, sf = _decode(fast, model, steps)
    le, se = _decode(exact, model, steps)
    assert np.array_equal(lf, le) and np.array_equal(sf, se)
    assert fast.cycles == exact.cycles == token_cycles(shape, preset.vector_lanes).total
    # and the engine computes the model: the first step against the numpy reference
    ref, _ = model.decode_step(model.embed(1), model.init_state())
    cos = float(ref @ lf[0] / np.linalg.norm(ref) / np.linalg.norm(lf[0]))
    assert cos > 0.999 and int(np.argmax(ref)) == int(np.argmax(lf[0]))


def test_counted_cycles_equal_the_schedule_on_a_370m_streamed_run(tmp_path):
    """The 370M shape on kv260: one step over a synthetic 85 MB weights buffer."""
    cfg = model_preset("370M")
    preset = get_preset("kv260", "streamed")
    shape = Shape.of(cfg, "2bit", preset.R)
    weights = weights_buffer(synthetic_image(shape), shape, preset.K, preset.port_bytes)
    write_engine_sources(tmp_path, cfg, preset, "2bit")
    lib = CSimLibrary(compile_csim(tmp_path, fast=True), weights=weights)
    x = np.random.default_rng(0).standard_normal(cfg.d).astype(np.float32)
    logits, state = lib.step(x, np.zeros((cfg.num_hidden_layers, cfg.input_dim), np.float32))
    assert np.all(np.isfinite(logits)) and np.any(state != 0)
    assert lib.cycles == token_cycles(shape, preset.vector_lanes).total


def test_non_finite_input_is_a_status_not_garbage(tmp_path, demo_model):
    preset = get_preset("pynq-z2", "on-chip")
    write_engine_sources(tmp_path, demo_model, preset, "2bit")
    lib = CSimLibrary(compile_csim(tmp_path))
    x = demo_model.embed(3).astype(np.float32)
    x[5] = np.nan
    with pytest.raises(AcceleratorError, match="NaN/Inf"):
        lib.step(x, np.zeros((lib.L, lib.e), np.float32))

"""Changing the activation width is a one-field edit: ``act_bits`` in the model config.

An int6 model (Q = 31) goes end to end: the numpy reference, the QKeras model
and the engine's C-simulation (through hls4ml) all quantise to the same width
and agree, and the engine's config header carries the width from the config.
"""

from __future__ import annotations

import numpy as np
import pytest

from host_helpers import margin_model
from mmfree_hls import MMFreeLM, ModelConfig, convert
from mmfree_hls.config import ConfigError
from mmfree_hls.quant import quantize_activations

PROMPT = [1, 2, 3]


def int6(model: MMFreeLM) -> MMFreeLM:
    cfg = ModelConfig.from_dict({**model.config.to_dict(), "act_bits": 6})
    return MMFreeLM(cfg, model.params)


def test_the_width_reaches_the_reference_quantiser():
    x = np.linspace(-1, 1, 64)
    q8, _ = quantize_activations(x, 127)
    q6, _ = quantize_activations(x, ModelConfig(act_bits=6).act_qmax)
    assert q8.max() == 127 and q6.max() == 31 and q6.min() == -31
    with pytest.raises(ConfigError, match="act_bits"):
        ModelConfig(act_bits=9).validate()
    with pytest.raises(ConfigError, match="act_bits"):
        ModelConfig(act_bits="6").validate()


def test_int6_numpy_and_keras_agree():
    import tensorflow as tf
    model = int6(margin_model(d=64))
    ids = np.array([[1, 2, 3, 4, 5, 6, 7, 8], [9, 8, 7, 6, 5, 4, 3, 2]])
    ref = model.logits(ids)
    old = tf.keras.backend.floatx()
    tf.keras.backend.set_floatx("float64")          # then QKeras rounds exactly like numpy
    try:
        got = model.to_keras("sequence")(ids).numpy()
    finally:
        tf.keras.backend.set_floatx(old)
    assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-9
    assert (np.argmax(got, -1) == np.argmax(ref, -1)).all()
    # and the width matters: the same weights at int8 give other logits
    assert not np.allclose(MMFreeLM(margin_model(d=64).config, model.params).logits(ids), ref)


def test_int6_engine_csim_agrees_with_the_int6_reference(tmp_path):
    model = int6(margin_model(d=64))
    project = convert(model, tmp_path / "int6", verbose=False)
    assert "#define MMFREE_QMAX 31" in (tmp_path / "int6" / "firmware" / "engine_config.h").read_text()
    sim = project.csim()
    state = np.zeros((sim.L, sim.e), np.float32)
    rs = model.init_state()
    for tok in PROMPT + list(range(4, 20)):
        logits, state = sim.step(model.embed(tok), state)
        ref, rs = model.decode_step(model.embed(tok), rs)
        assert int(np.argmax(logits)) == int(np.argmax(ref))
        assert np.abs(logits - ref).max() / np.abs(ref).max() < 0.02
    # greedy tokens, the engine on its own state
    from mmfree_hls.sampling import greedy_decode
    carried = {"s": np.zeros((sim.L, sim.e), np.float32)}

    def step(tok):
        logits, carried["s"] = sim.step(model.embed(tok), carried["s"])
        return logits

    assert greedy_decode(step, PROMPT, 32) == model.generate_greedy(PROMPT, 32)

"""The numpy golden model: integer BitLinear, recurrence, decode step."""

import numpy as np
import pytest

from mmfree_hls import MMFreeLM, ModelConfig
from mmfree_hls.config import ACT_QMAX
from mmfree_hls.quant import (bitlinear, quantize_activations, quantize_weights,
                              rms_norm, ternary_accumulate)
from mmfree_hls.reference import expected_shapes, lower_bounds


def test_ternary_weights_are_ternary_and_scaled_by_absmean(rng):
    w = rng.standard_normal((40, 24)) * 0.3
    tw = quantize_weights(w)
    assert set(np.unique(tw.w_q)) <= {-1, 0, 1}
    assert tw.gamma == pytest.approx(1 / np.mean(np.abs(w)))
    # round(w·γ): entries above half the absmean become ±1
    assert np.array_equal(tw.w_q != 0, np.abs(w * tw.gamma) >= 0.5)


def test_activation_quantisation_is_int8_per_token(rng):
    x = rng.standard_normal((5, 33)) * np.arange(1, 6)[:, None]
    x_q, s = quantize_activations(x)
    assert x_q.dtype == np.int8
    assert np.array_equal(np.abs(x_q).max(-1), np.full(5, ACT_QMAX))  # absmax token hits ±127
    assert np.allclose(x_q / s, x, atol=0.5 / s.min())


def test_integer_path_equals_dequantised_float_path(rng):
    """(x_q · W_qᵀ)/(s·γ) in int32 equals (x_q/s)·(W_q/γ)ᵀ in float, to rounding."""
    x, w, n = rng.standard_normal((7, 64)), rng.standard_normal((16, 64)), 1 + 0.1 * rng.standard_normal(64)
    tw = quantize_weights(w)
    y_int = bitlinear(x, n, tw)
    x_q, s = quantize_activations(rms_norm(x, n, 1e-8))
    y_float = (x_q / s) @ (tw.w_q / tw.gamma).T
    np.testing.assert_allclose(y_int, y_float, rtol=1e-12, atol=1e-12)


def test_accumulator_extremes_fit_int32():
    n_in = 8192
    acc = ternary_accumulate(np.full((1, n_in), 127, np.int8), np.ones((2, n_in), np.int8))
    assert acc.dtype == np.int32 and acc[0, 0] == 127 * n_in
    acc = ternary_accumulate(np.full((1, n_in), -128, np.int8), np.ones((1, n_in), np.int8))
    assert acc[0, 0] == -128 * n_in


def test_lower_bounds_are_cumulative_softmax_from_zero(rng):
    lb = lower_bounds(rng.standard_normal((4, 8)))
    assert np.allclose(lb[0], 0)
    assert np.all(np.diff(lb, axis=0) > 0) and np.all(lb < 1)


def test_sequence_and_step_decoding_agree(tiny_model, rng):
    ids = rng.integers(0, tiny_model.config.vocab_size, (2, 9))
    full = tiny_model.logits(ids)
    state = tiny_model.init_state(2)
    for t in range(ids.shape[1]):
        logits, state = tiny_model.step(ids[:, t], state)
        np.testing.assert_allclose(logits, full[:, t], rtol=0, atol=1e-12)


def test_state_is_constant_size_per_layer(tiny_model):
    _, s1 = tiny_model.step(3)
    _, s2 = tiny_model.step(4, s1)
    assert s1.shape == s2.shape == (3, tiny_model.config.hidden_size)


def test_no_lower_bound_variant_runs(rng):
    cfg = ModelConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, intermediate_size=32,
                      use_lower_bound=False)
    m = MMFreeLM.random(cfg)
    assert "model.lower_bounds" not in expected_shapes(cfg)
    assert m.logits(rng.integers(0, 50, (1, 4))).shape == (1, 4, 50)


def test_bad_inputs_get_clear_errors(tiny_model):
    with pytest.raises(ValueError, match="out of range"):
        tiny_model.step(tiny_model.config.vocab_size)
    with pytest.raises(ValueError, match="out of range"):
        tiny_model.logits([[0, -1]])
    with pytest.raises(ValueError, match="shape"):
        tiny_model.decode_step(np.zeros(32), np.zeros((2, 32)))
    with pytest.raises(ValueError, match="prompt is empty"):
        tiny_model.generate_greedy([], 3)


def test_missing_key_is_named(tiny_config, tiny_model):
    sd = dict(tiny_model.params)
    del sd["model.layers.1.attn.f_proj.weight"]
    with pytest.raises(KeyError, match="model.layers.1.attn.f_proj.weight"):
        MMFreeLM(tiny_config, sd)

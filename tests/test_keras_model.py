"""QKeras model vs the numpy integer reference, both forms, and the STE."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")  # design extra; always installed by `make setup`

from mmfree_hls.design.keras_model import build_keras_model  # noqa: E402
from mmfree_hls.design.layers import CUSTOM_OBJECTS, BitLinear  # noqa: E402
from mmfree_hls.quant import quantize_weights  # noqa: E402


@pytest.fixture
def floatx64():
    """Keras in float64: the QKeras forward then rounds exactly like numpy."""
    old = tf.keras.backend.floatx()
    tf.keras.backend.set_floatx("float64")
    yield
    tf.keras.backend.set_floatx(old)


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def _argmax_agrees(got, ref):
    """Per position: got's argmax is a maximiser of ref. Head accumulators are
    integers shared by one rescale, so exact ties are real and either index is right."""
    pick = np.take_along_axis(ref, got.argmax(-1)[..., None], -1)[..., 0]
    return np.isclose(pick, ref.max(-1), rtol=1e-12, atol=0)


def test_quantized_forward_matches_integer_reference_float64(tiny_model, rng, floatx64):
    ids = rng.integers(0, tiny_model.config.vocab_size, (3, 16))
    ref = tiny_model.logits(ids)
    got = tiny_model.to_keras("sequence")(ids).numpy()
    assert _rel(got, ref) < 1e-9
    assert _argmax_agrees(got, ref).all()                       # every position


def test_quantized_forward_float32_is_bounded(tiny_model, rng):
    """In float32 a few int8 roundings flip; the error stays small and argmax mostly agrees."""
    ids = rng.integers(0, tiny_model.config.vocab_size, (4, 16))
    ref = tiny_model.logits(ids)
    got = tiny_model.to_keras("sequence")(ids).numpy()
    assert _rel(got, ref) < 0.05
    assert _argmax_agrees(got, ref).mean() >= 0.9


def test_step_form_matches_sequence_form(tiny_model, rng, floatx64):
    seq = tiny_model.to_keras("sequence")
    step = seq.step_model()
    cfg = tiny_model.config
    ids = rng.integers(0, cfg.vocab_size, (2, 10))
    full = seq(ids).numpy()
    states = [np.zeros((2, cfg.state_size)) for _ in range(cfg.num_hidden_layers)]
    for t in range(ids.shape[1]):
        out = step([tiny_model.params["model.embeddings.weight"][ids[:, t]].astype(np.float64)] + states)
        states = [s.numpy() for s in out[1:]]
        np.testing.assert_allclose(out[0].numpy(), full[:, t], atol=1e-9)
        # and the numpy decode step agrees on the new state too
    _, ref_state = tiny_model.step(ids[:, 0])
    first = step([tiny_model.params["model.embeddings.weight"][ids[:, 0]].astype(np.float64)]
                 + [np.zeros((2, cfg.state_size))] * cfg.num_hidden_layers)
    np.testing.assert_allclose(np.stack([s.numpy() for s in first[1:]]), ref_state, atol=1e-9)


def test_step_model_shares_variables_with_sequence_model(tiny_model):
    seq = tiny_model.to_keras("sequence")
    step = seq.step_model()
    assert step.get_layer("l1_i_proj") is seq.blocks[1].i_proj
    seq.blocks[1].i_proj.kernel.assign_add(tf.ones_like(seq.blocks[1].i_proj.kernel))
    assert np.array_equal(step.get_layer("l1_i_proj").kernel.numpy(), seq.blocks[1].i_proj.kernel.numpy())


def test_state_dict_round_trip(tiny_model):
    sd = tiny_model.to_keras("sequence").state_dict()
    assert sd.keys() == tiny_model.params.keys()
    assert all(np.array_equal(sd[k], tiny_model.params[k]) for k in sd)


def test_bitlinear_ternary_matches_numpy_quantisation(tiny_model):
    layer = tiny_model.to_keras("sequence").blocks[0].g_proj
    w_q, gamma = layer.ternary()
    ref = tiny_model.ternary["model.layers.0.attn.g_proj"]
    assert set(np.unique(w_q)) <= {-1, 0, 1}
    assert np.array_equal(w_q, ref.w_q) and gamma == pytest.approx(ref.gamma)


def test_straight_through_estimator_trains(rng):
    """Rounding has zero gradient; the STE must still let one step lower the loss."""
    layer = BitLinear(8)
    x = tf.constant(rng.standard_normal((64, 16)), tf.float32)
    target = tf.constant(rng.standard_normal((64, 8)), tf.float32)
    layer(x)
    opt = tf.keras.optimizers.SGD(0.05)
    losses = []
    for _ in range(2):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((layer(x) - target) ** 2)
        grads = tape.gradient(loss, layer.trainable_variables)
        assert all(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)
        opt.apply_gradients(zip(grads, layer.trainable_variables))
        losses.append(float(loss))
    with tf.GradientTape():
        final = float(tf.reduce_mean((layer(x) - target) ** 2))
    assert final < losses[0]


def test_layers_serialise(tiny_model):
    step = tiny_model.to_keras("step")
    clone = tf.keras.Model.from_config(step.get_config(), custom_objects=CUSTOM_OBJECTS)
    assert [l.name for l in clone.layers] == [l.name for l in step.layers]


def test_bad_form_is_rejected(tiny_model):
    with pytest.raises(ValueError, match="form"):
        tiny_model.to_keras("train")

"""Streamed-weight tier: buffer layout, the HLS top in C-simulation against the numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from mmfree_hls import ModelConfig, MMFreeLM, streamed, streamed_csim
from mmfree_hls.packing import pack_ternary, unpack_ternary

PACKINGS = ("2bit", "1.6bit")
TOKENS = (1, 17, 5, 40, 5)


def small_config(**kw) -> ModelConfig:
    # Widths that are multiples of neither 4 nor 5, so rows end mid-byte in both packings.
    base = dict(vocab_size=61, hidden_size=38, num_hidden_layers=2, intermediate_size=43)
    base.update(kw)
    return ModelConfig(**base).validate()


@pytest.fixture(scope="module")
def model():
    return MMFreeLM.random(small_config(), seed=11)


#: The 1.6-bit library is built with a smaller sigma table: both live in this process, and g++ would
#: otherwise let the second one read the first one's table (template statics are unified by name).
PRECISIONS = {"2bit": streamed.PRECISION, "1.6bit": dict(streamed.PRECISION, sigmoid_table_bits=12)}


@pytest.fixture(scope="module", params=PACKINGS)
def sim(request, model, tmp_path_factory):
    packing = request.param
    lib = streamed_csim.build(model.config, packing, tmp_path_factory.mktemp(f"streamed_{packing}"), opt="-O1",
                              precision=PRECISIONS[packing])
    return streamed_csim.StreamedCSim(lib, model.config, packing, streamed.write_buffer(model, packing))


# ------------------------------------------------------------------ layout
def test_buffer_holds_every_tensor_at_its_offset(model):
    for packing in PACKINGS:
        buf = streamed.write_buffer(model, packing)
        lay = streamed.layout(model.config, packing)
        for seg in lay.segments:
            raw = buf[seg.offset: seg.offset + seg.nbytes]
            if seg.kind == "ternary":
                w = unpack_ternary(raw.reshape(seg.shape[0], -1), seg.shape[1], packing)
                np.testing.assert_array_equal(w, model.ternary[seg.name[:-len(".weight")]].w_q)
            elif seg.kind == "scale":
                assert raw.view(np.float32)[0] == np.float32(model.ternary[seg.name[:-len(".scale")]].scale)
            elif seg.name.endswith("lower_bound"):
                l = int(seg.name.split(".")[2])
                np.testing.assert_array_equal(raw.view(np.float32), model.lb[l].astype(np.float32))
            elif seg.kind == "vector":
                np.testing.assert_array_equal(raw.view(np.float32), model.params[seg.name])
        head = streamed.read_header(buf)
        assert head["packing"] == packing and head["total_bytes"] == buf.size


def test_layer_records_share_one_stride():
    cfg = small_config(num_hidden_layers=3)
    base0, stride, rel = streamed.layer_offsets(streamed.layout(cfg, "1.6bit"))
    assert base0 == streamed.HEADER_BYTES and stride % streamed.ALIGN == 0
    assert rel["ATTN_NORM"] == 0 and len(rel) == 22
    header = streamed.config_header(cfg, "1.6bit")
    assert f"#define MMFREE_LAYER_STRIDE {stride}ULL" in header
    assert "#define MMFREE_PER_BYTE 5" in header


def test_buffer_of_another_model_is_refused(model):
    buf = streamed.write_buffer(model, "2bit")
    with pytest.raises(streamed.StreamedBufferError, match="packing"):
        streamed.check_buffer(buf, model.config, "1.6bit")
    with pytest.raises(streamed.StreamedBufferError, match="vocab_size"):
        streamed.check_buffer(buf, small_config(vocab_size=62), "2bit")
    with pytest.raises(streamed.StreamedBufferError, match="bad magic"):
        streamed.read_header(np.zeros(128, np.uint8))
    with pytest.raises(streamed.StreamedBufferError, match="truncated"):
        streamed.check_buffer(buf[:-64], model.config, "2bit")


# ------------------------------------------------------------------ unpackers of the HLS top
def test_hls_unpackers_agree_with_packing_on_every_byte(sim):
    per = 5 if sim.packing == "1.6bit" else 4
    valid = 243 if per == 5 else None
    for byte in range(256):
        got, ok = sim.unpack(byte, sim.packing)
        if per == 5:
            assert ok == (byte < valid)
            if byte < valid:
                want = unpack_ternary(np.array([[byte]], np.uint8), 5, "1.6bit")[0]
                assert got == want.tolist(), byte
        else:
            codes = [(byte >> (2 * k)) & 3 for k in range(4)]
            assert ok == (2 not in codes)
            if ok:
                want = unpack_ternary(np.array([[byte]], np.uint8), 4, "2bit")[0]
                assert got == want.tolist(), byte
    if per == 5:
        # and the other direction: every 5-trit group packs to the byte the top decodes back
        trits = np.array(np.meshgrid(*[[-1, 0, 1]] * 5, indexing="ij")).reshape(5, -1).T.astype(np.int8)
        for row, byte in zip(trits, pack_ternary(trits, "1.6bit")[:, 0]):
            assert sim.unpack(int(byte), "1.6bit")[0] == row.tolist()


# ------------------------------------------------------------------ decode steps
def test_csim_matches_reference_decode_steps(sim, model):
    """Fixed point against float64: most steps agree to ~1e-6; an int8 rounding that flips
    (x_hat·s within ~1e-6 of a .5) moves the logits by a few output quantisation steps, ~1 %."""
    state = model.init_state()
    rel = []
    for t, tok in enumerate(TOKENS):
        x = model.embed(tok)
        ref, state = model.decode_step(x, state)
        got = sim.step(x, reset=(t == 0))
        err = np.abs(got - ref).max()
        rel.append(err / np.abs(ref).max())
        top2 = np.sort(ref)[-2:]
        if top2[1] - top2[0] > 2 * err:
            assert np.argmax(got) == np.argmax(ref), t
        assert np.abs(sim.state - state).max() < 0.02 * max(1.0, np.abs(state).max()), t
    assert max(rel) < 0.05, rel
    assert np.median(rel) < 1e-4, rel


def test_csim_resumes_from_a_given_state(sim, model):
    rng = np.random.default_rng(0)
    state = rng.standard_normal(model.init_state().shape) * 0.5
    x = model.embed(7)
    ref, new_state = model.decode_step(x, state)
    sim.state = state
    got = sim.step(x)
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()
    np.testing.assert_allclose(sim.state, new_state, atol=0.02)
    # reset starts a new sequence whatever the held state
    sim.step(x, reset=True)
    ref0, _ = model.decode_step(x, model.init_state())
    again = sim.step(x, reset=True)
    assert np.abs(again - ref0).max() < 0.05 * np.abs(ref0).max()
    assert np.abs(sim.state).max() > 0


def test_wrong_weights_are_not_silently_decoded(sim, model):
    # The same top with another model's weights gives other logits: offsets and packing matter.
    other = streamed.write_buffer(MMFreeLM.random(model.config, seed=99), sim.packing)
    x = model.embed(3)
    mine = sim.step(x, reset=True)
    saved = sim.weights.copy()
    try:
        sim.weights[:] = other
        theirs = sim.step(x, reset=True)
        assert np.abs(theirs - mine).max() > 0.1 * np.abs(mine).max()
        sim.weights[0] ^= 0xFF              # header checked by the top itself on every call
        with pytest.raises(ValueError, match="header"):
            sim.step(x)
    finally:
        sim.weights[:] = saved


def test_library_for_another_shape_is_refused(sim, model):
    with pytest.raises(ValueError, match="compiled for"):
        streamed_csim.StreamedCSim(sim.library, small_config(vocab_size=64), sim.packing,
                                   streamed.write_buffer(MMFreeLM.random(small_config(vocab_size=64)), sim.packing))

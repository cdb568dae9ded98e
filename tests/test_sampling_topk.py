"""Sampling from the device's top-K (values descending, ids) equals sampling from all logits.

The engine returns per lane only its K largest logits unless FULL_LOGITS is set. For greedy
decoding and for top_k ≤ K that is all the sampler needs: ``choose_from_top`` must pick the
very token ``Sampler.__call__`` picks from the full vector, with the same random draw, so a
token stream does not depend on which form the device returned.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfree_hls.sampling import GREEDY_BELOW, Sampler, SamplingError, top_k_of

# Few distinct values, so ties (also at the top-k cut, and 0.0 against -0.0) are common.
TIE_VALUES = [-7.5, -1.0, -0.0, 0.0, 0.5, 0.5000001, 1.25, 3.0]
FAST = settings(max_examples=150, deadline=None)


@st.composite
def logit_rows(draw, min_rows=1, max_rows=4):
    """Some consecutive logits vectors of one vocabulary (the draws of a token stream)."""
    V = draw(st.integers(1, 40))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    value = st.one_of(st.sampled_from(TIE_VALUES),
                      st.floats(-30, 30, allow_nan=False, allow_infinity=False, width=32))
    scale = draw(st.sampled_from([1.0, 1.0, 100.0]))      # ×100: exp underflows to 0 at low T
    rows = draw(st.lists(st.lists(value, min_size=V, max_size=V), min_size=min_rows, max_size=max_rows))
    return [np.asarray(r, dtype=np.float64) * scale for r in rows], dtype


def _reference_top(z, k):
    order = sorted(range(z.size), key=lambda i: (-z[i], i))[:k]
    return z[order], np.asarray(order)


@FAST
@given(logit_rows(), st.integers(1, 50))
def test_top_k_of_is_the_device_order(rows_dtype, k):
    rows, dtype = rows_dtype
    for z in rows:
        z = z.astype(dtype)
        values, ids = top_k_of(z, k)
        ref_values, ref_ids = _reference_top(z, k)
        assert values.dtype == dtype and ids.dtype == np.int64
        assert np.array_equal(ids, ref_ids) and np.array_equal(values, ref_values)
        assert ids[0] == np.argmax(z)                       # ties to the lower id, like argmax


@FAST
@given(logit_rows(min_rows=1, max_rows=3), st.integers(1, 50))
def test_top_k_of_lanes_is_per_row(rows_dtype, k):
    rows, dtype = rows_dtype
    z = np.stack(rows).astype(dtype)
    values, ids = top_k_of(z, k)
    assert values.shape == ids.shape == (z.shape[0], min(k, z.shape[1]))
    for r in range(z.shape[0]):
        v, i = top_k_of(z[r], k)
        assert np.array_equal(values[r], v) and np.array_equal(ids[r], i)


temperatures = st.one_of(st.just(0.0), st.just(GREEDY_BELOW / 2), st.just(GREEDY_BELOW),
                         st.floats(1e-3, 10.0), st.sampled_from([0.01, 0.7, 1.0]))
top_ps = st.one_of(st.none(), st.just(1.0), st.floats(0.01, 1.0))


@FAST
@given(logit_rows(), st.data(), temperatures, top_ps, st.integers(0, 2**32))
def test_choose_from_top_equals_sampling_the_full_logits(rows_dtype, data, temperature, top_p, seed):
    rows, dtype = rows_dtype
    V = rows[0].size
    K = data.draw(st.integers(1, V), label="device K")
    top_k = data.draw(st.integers(1, K), label="top_k")
    full = Sampler(temperature, top_k=top_k, top_p=top_p, seed=seed)
    top = Sampler(temperature, top_k=top_k, top_p=top_p, seed=seed)
    assert not top.needs_full_logits(K)
    for z in rows:                                          # consecutive draws: the rngs stay in step
        z = z.astype(dtype)
        assert top.choose_from_top(*top_k_of(z, K)) == full(z)
        assert top.rng.bit_generator.state == full.rng.bit_generator.state


@FAST
@given(logit_rows(), st.data(), st.sampled_from([0.0, GREEDY_BELOW / 10]), st.integers(0, 2**32))
def test_greedy_from_top_is_the_argmax(rows_dtype, data, temperature, seed):
    rows, dtype = rows_dtype
    K = data.draw(st.integers(1, rows[0].size))
    top_k = data.draw(st.one_of(st.none(), st.integers(1, 100)))
    s = Sampler(temperature, top_k=top_k, top_p=data.draw(top_ps), seed=seed)
    assert not s.needs_full_logits(K)
    for z in rows:
        z = z.astype(dtype)
        assert s.choose_from_top(*top_k_of(z, K)) == int(np.argmax(z)) == s(z)


@given(temperatures, st.one_of(st.none(), st.integers(1, 64)), top_ps, st.integers(1, 64))
def test_needs_full_logits(temperature, top_k, top_p, K):
    s = Sampler(temperature, top_k=top_k, top_p=top_p)
    greedy = temperature < GREEDY_BELOW
    assert s.needs_full_logits(K) == (not greedy and (top_k is None or top_k > K))


def test_choose_from_top_refuses_what_it_cannot_reproduce():
    z = np.array([0.5, 2.0, -1.0, 2.0, 0.0], dtype=np.float32)
    values, ids = top_k_of(z, 3)
    assert values.tolist() == [2.0, 2.0, 0.5] and ids.tolist() == [1, 3, 0]
    for s in (Sampler(1.0, seed=0), Sampler(1.0, top_k=4, seed=0), Sampler(0.8, top_p=0.9, seed=0)):
        assert s.needs_full_logits(3)
        with pytest.raises(SamplingError, match="full logits"):
            s.choose_from_top(values, ids)
    s = Sampler(1.0, top_k=3, seed=0)
    with pytest.raises(SamplingError, match="descending"):
        s.choose_from_top(values[::-1], ids[::-1])
    with pytest.raises(SamplingError, match="distinct"):
        s.choose_from_top(values, np.array([1, 1, 0]))
    with pytest.raises(SamplingError, match="shape"):
        s.choose_from_top(values, ids[:2])
    with pytest.raises(SamplingError, match="non-finite"):
        s.choose_from_top(np.array([np.inf, 1.0, 0.0]), ids)
    with pytest.raises(SamplingError, match="k must be"):
        top_k_of(z, 0)


def test_choose_from_top_on_a_model_sized_vocabulary():
    """A 32000-entry float32 vector as the device writes it, with a heavy tie at the cut."""
    rng = np.random.default_rng(7)
    z = rng.standard_normal(32000).astype(np.float32)
    z[rng.choice(32000, 20, replace=False)] = np.float32(np.sort(z)[-5])
    full, top = Sampler(0.9, top_k=8, top_p=0.8, seed=3), Sampler(0.9, top_k=8, top_p=0.8, seed=3)
    for _ in range(50):
        assert top.choose_from_top(*top_k_of(z, 16)) == full(z)

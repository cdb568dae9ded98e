"""Decoding under hostile parameters: tiny temperatures (F3.1) and shared accelerator state (F3.2)."""

from __future__ import annotations

import numpy as np
import pytest

from mmfree_hls.runtime import Accelerator
from mmfree_hls.runtime.errors import AcceleratorError
from mmfree_hls.sampling import GREEDY_BELOW, Sampler, SamplingError, filtered_probs


# ------------------------------------------------------------------- F3.1
@pytest.mark.parametrize("temperature", [1e-38, 1e-45, 5e-324, 1e-300, GREEDY_BELOW / 2])
def test_tiny_temperatures_decode_greedily(temperature):
    rng = np.random.default_rng(0)
    for _ in range(20):
        logits = (rng.standard_normal(256) * 9).astype(np.float32)
        s = Sampler(temperature, seed=1)
        assert s.greedy
        assert s(logits) == int(np.argmax(logits))            # never the last id (the old NaN path)
        p = filtered_probs(logits, temperature)
        assert p[np.argmax(logits)] == 1.0 and p.sum() == 1.0


@pytest.mark.parametrize("temperature", [GREEDY_BELOW, 1e-5, 1e-3])
def test_small_temperatures_just_above_the_threshold_are_finite(temperature):
    logits = np.array([3e38, -3e38, 0.0, 1.0, 8.9], dtype=np.float32)     # extreme but finite
    for top_k, top_p in ((None, None), (3, None), (None, 0.5), (2, 0.9)):
        p = filtered_probs(logits, temperature, top_k, top_p)
        assert np.isfinite(p).all() and abs(p.sum() - 1) < 1e-12
        assert p[0] == 1.0
        assert Sampler(temperature, top_k, top_p, seed=3)(logits) == 0


def test_huge_temperature_is_uniform_not_nan():
    logits = np.linspace(-5, 5, 64).astype(np.float32)
    p = filtered_probs(logits, 1e300)
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p, 1 / 64)


def test_a_near_greedy_temperature_still_samples_among_near_ties():
    logits = np.array([1.0, 1.0 - 1e-9, -5.0], dtype=np.float64)
    draws = {Sampler(1e-6, seed=s)(logits) for s in range(40)}
    assert draws <= {0, 1} and len(draws) == 2                # a real distribution above the threshold


@pytest.mark.parametrize("kwargs,field", [({"temperature": "0.5"}, "temperature"),
                                          ({"temperature": True}, "temperature"),
                                          ({"temperature": None}, "temperature"),
                                          ({"temperature": [1.0]}, "temperature"),
                                          ({"top_p": "0.5"}, "top_p"), ({"top_k": 2.0}, "top_k"),
                                          ({"seed": "abc"}, "seed"), ({"seed": -1}, "seed"),
                                          ({"seed": 1.5}, "seed")])
def test_parameters_of_the_wrong_type_name_the_parameter(kwargs, field):
    with pytest.raises(SamplingError, match=field):
        Sampler(**kwargs)


# ------------------------------------------------------------------- F3.2
from test_hostile_manifest import make_overlay  # noqa: E402


@pytest.fixture(scope="module")
def overlay(tmp_path_factory):
    return make_overlay(tmp_path_factory.mktemp("dec"), seed=2)


def test_one_stream_owns_the_state(overlay):
    with Accelerator.open(overlay, backend="csim") as acc:
        alone = list(acc.generate([3, 1, 4], 8))
        g1 = acc.generate([3, 1, 4], 8)
        first = [next(g1) for _ in range(3)]
        g2 = acc.generate([9, 9, 9], 8)
        with pytest.raises(AcceleratorError, match="another generate\\(\\) stream is still running"):
            next(g2)
        with pytest.raises(AcceleratorError, match="step\\(\\) while a generate\\(\\) stream is running"):
            acc.step(5)
        with pytest.raises(AcceleratorError, match="reset\\(\\)"):
            acc.reset()
        assert first + list(g1) == alone                      # the refused calls changed nothing
        acc.step(5)                                           # the stream ended: free again
        g3 = acc.generate([3, 1, 4], 8)
        next(g3)
        g3.close()                                            # closing releases the state too
        assert list(acc.generate([3, 1, 4], 8)) == alone


def test_an_abandoned_stream_does_not_block(overlay):
    with Accelerator.open(overlay, backend="csim") as acc:
        g = acc.generate([3, 1, 4], 8)
        next(g)
        del g                                                 # garbage-collected: closed
        acc.step(1)


@pytest.mark.parametrize("stop", ["x", [1, "x"], 10**6, -1, 2.0])
def test_a_bad_stop_names_the_parameter(overlay, stop):
    with Accelerator.open(overlay, backend="csim") as acc:
        with pytest.raises(ValueError, match="stop must be a token id"):
            acc.generate([3, 1, 4], 4, stop=stop)

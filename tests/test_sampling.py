"""Next-token sampling: greedy, temperature, top-k, top-p, seeded reproducibility."""

import numpy as np
import pytest

from mmfree_hls.sampling import Sampler, SamplingError, filtered_probs, sample


def _logits(seed=0, n=50):
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32) * 3


def test_greedy_is_argmax_and_ignores_filters():
    z = _logits()
    assert Sampler()(z) == int(np.argmax(z))
    assert Sampler(temperature=0, top_k=3, top_p=0.1, seed=5)(z) == int(np.argmax(z))
    assert sample(z) == int(np.argmax(z))


def test_same_seed_same_stream_different_seed_different_stream():
    zs = [_logits(i) for i in range(200)]
    a = [Sampler(1.0, seed=7)(z) for z in zs]            # fresh sampler per token: first draw
    s1, s2, s3 = Sampler(1.0, top_k=20, top_p=0.95, seed=7), Sampler(1.0, top_k=20, top_p=0.95, seed=7), \
        Sampler(1.0, top_k=20, top_p=0.95, seed=8)
    t1, t2, t3 = [s1(z) for z in zs], [s2(z) for z in zs], [s3(z) for z in zs]
    assert t1 == t2
    assert t1 != t3
    assert len(set(a)) > 5          # really random across different logits


def test_top_k_only_draws_from_the_k_largest():
    z = _logits(1)
    top3 = set(np.argsort(-z)[:3].tolist())
    s = Sampler(temperature=5.0, top_k=3, seed=0)
    draws = {s(z) for _ in range(300)}
    assert draws <= top3 and len(draws) == 3


def test_top_p_keeps_the_smallest_nucleus():
    z = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    p = filtered_probs(z, 1.0, top_p=0.8)               # 0.5 + 0.3 reaches 0.8
    np.testing.assert_allclose(p, [0.5 / 0.8, 0.3 / 0.8, 0, 0], atol=1e-12)
    p = filtered_probs(z, 1.0, top_p=0.81)              # needs the third token
    assert (p > 0).sum() == 3
    p = filtered_probs(z, 1.0, top_p=0.01)              # the most probable token always survives
    np.testing.assert_allclose(p, [1, 0, 0, 0])


def test_top_k_then_top_p_and_temperature_shape_the_distribution():
    z = np.array([3.0, 2.0, 1.0, 0.0, -1.0])
    p = filtered_probs(z, 1.0, top_k=2)
    e = np.exp([3.0, 2.0])
    np.testing.assert_allclose(p, [e[0] / e.sum(), e[1] / e.sum(), 0, 0, 0])
    hot, cold = filtered_probs(z, 10.0), filtered_probs(z, 0.1)
    assert hot.max() < 0.3 and cold.max() > 0.99
    assert abs(filtered_probs(z, 0.7, top_k=4, top_p=0.9).sum() - 1) < 1e-12


def test_empirical_frequencies_follow_the_distribution():
    z = np.log(np.array([0.6, 0.3, 0.1]))
    s = Sampler(temperature=1.0, seed=123)
    counts = np.bincount([s(z) for _ in range(6000)], minlength=3) / 6000
    np.testing.assert_allclose(counts, [0.6, 0.3, 0.1], atol=0.03)


def test_ties_are_broken_by_lowest_id():
    z = np.zeros(10)
    assert Sampler()(z) == 0
    p = filtered_probs(z, 1.0, top_k=3)
    assert np.flatnonzero(p).tolist() == [0, 1, 2]


@pytest.mark.parametrize("kwargs, word", [
    ({"temperature": -1}, "temperature"), ({"temperature": float("nan")}, "temperature"),
    ({"temperature": 1, "top_k": 0}, "top_k"), ({"temperature": 1, "top_k": 2.5}, "top_k"),
    ({"temperature": 1, "top_p": 0.0}, "top_p"), ({"temperature": 1, "top_p": 1.5}, "top_p"),
])
def test_bad_parameters_are_rejected_with_the_valid_range(kwargs, word):
    with pytest.raises(SamplingError, match=word):
        Sampler(**kwargs)


def test_bad_logits_are_rejected():
    with pytest.raises(SamplingError, match="non-finite value at index 2"):
        Sampler(1.0, seed=0)(np.array([0.0, 1.0, np.nan]))
    with pytest.raises(SamplingError, match="1-D"):
        Sampler()(np.zeros((2, 3)))
    with pytest.raises(SamplingError, match="greedy"):
        filtered_probs(np.zeros(3), 0.0)


def _naive_filtered_probs(z, T, top_k=None, top_p=None):
    """The definition, with full stable sorts: what the O(V) implementation must equal."""
    z = np.asarray(z, dtype=np.float64) / T
    keep = np.ones(z.size, bool)
    if top_k is not None and top_k < z.size:
        keep[:] = False
        keep[np.argsort(-z, kind="stable")[:top_k]] = True
    p = np.where(keep, np.exp(z - z[keep].max()), 0.0)
    p /= p.sum()
    if top_p is not None and top_p < 1:
        order = np.argsort(-p, kind="stable")
        n = int(np.searchsorted(np.cumsum(p[order]), top_p, side="left")) + 1
        mask = np.zeros(z.size, bool)
        mask[order[:n]] = True
        p = np.where(mask, p, 0.0)
        p /= p.sum()
    return p


@pytest.mark.parametrize("V", [7, 300, 5000])
def test_fast_filters_equal_the_definition(V):
    rng = np.random.default_rng(V)
    for trial in range(30):
        z = (rng.standard_normal(V) * rng.uniform(0.5, 6)).astype(np.float32)
        if trial % 3 == 0:
            z = np.round(z)                               # many exact ties
        T = float(rng.uniform(0.3, 2.0))
        k = int(rng.integers(1, V + 3))
        p = float(rng.uniform(0.05, 1.0))
        for kw in ({"top_k": k}, {"top_p": p}, {"top_k": k, "top_p": p}):
            fast = filtered_probs(z, T, **kw)
            naive = _naive_filtered_probs(z, T, **kw)
            np.testing.assert_array_equal(fast > 0, naive > 0)
            np.testing.assert_allclose(fast, naive, rtol=1e-5, atol=1e-9)


def test_greedy_decode_is_the_argmax_chain_with_margins():
    from mmfree_hls.sampling import greedy_decode
    table = np.random.default_rng(7).normal(size=(9, 9))       # logits after token t: table[t]
    calls, margins = [], []

    def step(tok):
        calls.append(tok)
        return table[tok]
    out = greedy_decode(step, [3, 5], 6, margins=margins)
    want, tok = [], 5
    for _ in range(6):
        tok = int(np.argmax(table[tok]))
        want.append(tok)
    assert out == want
    assert calls == [3, 5] + out[:-1]                  # the last token's logits are never computed
    gaps = [np.sort(table[t])[-1] - np.sort(table[t])[-2] for t in [5] + out[:-1]]
    assert margins == pytest.approx(gaps) and min(margins) > 0
    assert greedy_decode(step, [4], 0) == []
    with pytest.raises(ValueError, match="prompt is empty"):
        greedy_decode(step, [], 3)

"""The golden model's batch and prefill forms are bit-identical to single decode steps.

The engine runs B sequences as B lanes of one pass (batch) and T consecutive prompt
tokens of one sequence as T lanes (prefill); the numpy reference must give exactly
(np.array_equal, float64) what T or B independent decode steps give.
"""

import numpy as np
import pytest

from mmfree_hls import MMFreeLM, ModelConfig


@pytest.fixture(scope="module", params=["tiny", "wide"])
def model(request, tiny_model) -> MMFreeLM:
    if request.param == "tiny":
        return tiny_model
    # d, e > 128 (numpy's pairwise-summation block), e = 2d, and no lower bounds.
    cfg = ModelConfig(vocab_size=61, hidden_size=160, num_hidden_layers=2, intermediate_size=200,
                      expand_ratio=2, use_lower_bound=False)
    return MMFreeLM.random(cfg, seed=11)


def _single_run(m: MMFreeLM, tokens, state=None):
    """Logits and states after each token, one decode_step at a time."""
    state = m.init_state() if state is None else state
    logits, states = [], []
    for tok in tokens:
        z, state = m.decode_step(m.embed(int(tok)), state)
        logits.append(z)
        states.append(state)
    return logits, states


def test_batched_decode_equals_independent_runs(model, rng):
    B, steps = 4, 6
    V = model.config.vocab_size
    ids = rng.integers(0, V, (steps, B))
    # Lanes start from different states (a warm-up prefix per sequence), as the engine's slots do.
    warm = [_single_run(model, rng.integers(0, V, 1 + b))[1][-1] for b in range(B)]
    singles = [_single_run(model, ids[:, b], warm[b]) for b in range(B)]
    state = np.stack(warm, axis=1)                          # (L, B, e)
    assert state.shape == (model.config.num_hidden_layers, B, model.config.state_size)
    for t in range(steps):
        logits, state = model.decode_step(model.embed(ids[t]), state)
        for b in range(B):
            assert np.array_equal(logits[b], singles[b][0][t])
            assert np.array_equal(state[:, b], singles[b][1][t])


def test_batch_of_one_equals_unbatched(model, rng):
    ids = rng.integers(0, model.config.vocab_size, 5)
    (z1, s1), (zb, sb) = model.step(ids[0]), model.step(ids[:1])
    assert np.array_equal(zb[0], z1) and np.array_equal(sb[:, 0], s1)


@pytest.mark.parametrize("T", [1, 2, 5, 8])
def test_prefill_equals_single_steps(model, rng, T):
    V = model.config.vocab_size
    start = _single_run(model, rng.integers(0, V, 3))[1][-1]    # a non-zero starting state
    ids = rng.integers(0, V, T)
    logits, states = _single_run(model, ids, start)
    z, s = model.prefill(model.embed(ids), start)
    assert z.shape == (V,) and s.shape == start.shape
    assert np.array_equal(z, logits[-1])
    assert np.array_equal(s, states[-1])
    z, s2 = model.prefill(model.embed(ids), start, head=False)  # a chunk that is not the last
    assert z is None and np.array_equal(s2, s)


def test_prefill_does_not_modify_its_inputs(model, rng):
    ids = rng.integers(0, model.config.vocab_size, 4)
    x, state = model.embed(ids), model.init_state() + 0.5
    x0, s0 = x.copy(), state.copy()
    model.prefill(x, state)
    assert np.array_equal(x, x0) and np.array_equal(state, s0)


@pytest.mark.parametrize("splits", [[11], [1] * 11, [4, 4, 3], [3, 8], [7, 1, 3], [2, 2, 2, 2, 2, 1]])
def test_chunk_splits_of_a_prompt_agree(model, rng, splits):
    ids = np.random.default_rng(99).integers(0, model.config.vocab_size, 11)
    reference = _single_run(model, ids)
    state, c = model.init_state(), 0
    for n in splits:
        z, state = model.prefill(model.embed(ids[c:c + n]), state, head=c + n == ids.size)
        c += n
    assert np.array_equal(z, reference[0][-1]) and np.array_equal(state, reference[1][-1])


def test_prefill_of_a_batch_equals_per_sequence_prefill(model, rng):
    T, B = 5, 3
    V = model.config.vocab_size
    ids = rng.integers(0, V, (T, B))
    z, s = model.prefill(model.embed(ids), model.init_state(B))
    for b in range(B):
        zb, sb = model.prefill(model.embed(ids[:, b]), model.init_state())
        assert np.array_equal(z[b], zb) and np.array_equal(s[:, b], sb)


def test_prefill_agrees_with_the_sequence_form(model, rng):
    ids = rng.integers(0, model.config.vocab_size, 9)
    z, _ = model.prefill(model.embed(ids), model.init_state())
    np.testing.assert_allclose(z, model.logits(ids)[0, -1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("chunk", [1, 3, 16])
def test_generate_greedy_batch_equals_single_generation(model, chunk):
    rng = np.random.default_rng(5)
    V = model.config.vocab_size
    prompts = [rng.integers(0, V, n).tolist() for n in (1, 4, 7)]
    out = model.generate_greedy_batch(prompts, 6, prefill_chunk=chunk)
    assert out == [model.generate_greedy(p, 6) for p in prompts]


def test_prefill_and_batch_inputs_are_checked(model):
    d = model.config.d
    with pytest.raises(ValueError, match="x_seq"):
        model.prefill(np.zeros((0, d)), model.init_state())
    with pytest.raises(ValueError, match="x_seq"):
        model.prefill(np.zeros(d), model.init_state())
    with pytest.raises(ValueError, match="state has shape"):
        model.prefill(np.zeros((3, d)), model.init_state(2))
    with pytest.raises(ValueError, match="prompts"):
        model.generate_greedy_batch([[1], []], 2)
    with pytest.raises(ValueError, match="prefill_chunk"):
        model.generate_greedy_batch([[1]], 2, prefill_chunk=0)

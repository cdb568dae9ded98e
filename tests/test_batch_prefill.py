"""Batched decoding and chunked prefill on the engine's C-simulation.

One pass reads the weights once for n token lanes: B sequences in their own
state slots (batch), or T consecutive prompt tokens of one sequence (prefill).
Both must be bit-identical -- logits and states -- to independent
single-sequence steps, on the fast C-simulation and on the synthesis-path
build (ap_int types, the stream schedule), and the cycles they count must be
the schedule's.
"""

from __future__ import annotations

import numpy as np
import pytest

from mmfree_hls.checkpoint import load_checkpoint
from mmfree_hls.engine.build import compile_csim, write_engine_sources
from mmfree_hls.engine.layout import Shape
from mmfree_hls.engine.presets import get_preset
from mmfree_hls.engine.schedule import token_cycles
from mmfree_hls.runtime.backend_csim import CSimLibrary
from mmfree_hls.sampling import top_k_of

DEMO = "python/mmfree_hls/data/demo_model"
KNOBS = {"batch_slots": 3, "prefill_chunk": 4, "topk": 8}     # N = 4 lanes, 3 slots


@pytest.fixture(scope="module")
def demo():
    return load_checkpoint(DEMO)


@pytest.fixture(scope="module")
def libs(tmp_path_factory, demo):
    root = tmp_path_factory.mktemp("batch")
    preset = get_preset("pynq-z2", "on-chip", **KNOBS)
    write_engine_sources(root, demo, preset, "2bit")
    fast = CSimLibrary(compile_csim(root, fast=True, out="csim/fast.so"))
    exact = CSimLibrary(compile_csim(root, opt="-O1", fast=False, out="csim/exact.so"))
    return {"fast": fast, "exact": exact, "preset": preset}


def _single(lib, demo, tokens, state=None):
    """Independent single-sequence steps: every step's logits and the final state."""
    s = np.zeros((lib.L, lib.e), np.float32) if state is None else state
    out = []
    for t in tokens:
        lg, s = lib.step(demo.embed(t), s)
        out.append(lg)
    return np.array(out), s


def _zero(lib):
    return np.zeros((lib.L, lib.e), np.float32)


@pytest.mark.parametrize("which", ["fast", "exact"])
def test_batch_of_sequences_equals_independent_runs(libs, demo, which):
    lib = libs[which]
    seqs = [[72, 101, 108, 108, 111, 33], [1, 2, 3, 4, 5, 6], [200, 17, 99, 99, 3, 250]]
    want = [_single(lib, demo, s) for s in seqs]
    got = [[] for _ in seqs]
    for i in range(len(seqs[0])):
        first, last = i == 0, i == len(seqs[0]) - 1
        lg, top, states = lib.run_pass([demo.embed(s[i]) for s in seqs],
                                       {q: _zero(lib) for q in range(len(seqs))} if first else None,
                                       store=list(range(len(seqs))) if last else None)
        for q in range(len(seqs)):
            got[q].append(lg[q])
            ids, vals = top[q]
            want_vals, want_ids = top_k_of(lg[q], lib.topk)
            assert np.array_equal(ids, want_ids) and np.array_equal(vals, want_vals), "device top-k"
    for q, (logits, state) in enumerate(want):
        assert np.array_equal(np.array(got[q]), logits), f"sequence {q}: logits differ from its own run"
        assert np.array_equal(states[q], state), f"sequence {q}: state differs from its own run"


@pytest.mark.parametrize("which", ["fast", "exact"])
@pytest.mark.parametrize("split", [(4, 4, 4), (1, 3, 4, 4), (3, 3, 3, 3), (4, 4, 2, 2)])
def test_chunked_prefill_equals_single_steps(libs, demo, which, split):
    lib = libs[which]
    prompt = [84, 104, 101, 32, 113, 117, 105, 99, 107, 32, 98, 114]
    assert sum(split) == len(prompt)
    start = np.random.default_rng(7).normal(0, 0.3, (lib.L, lib.e)).astype(np.float32)
    logits, state = _single(lib, demo, prompt, start.copy())
    pos, slot = 0, 2
    for c, n in enumerate(split):
        last = c == len(split) - 1
        lg, top, out = lib.run_pass([demo.embed(t) for t in prompt[pos:pos + n]],
                                    {slot: start} if c == 0 else None, prefill=True, slot=slot,
                                    head=last, store=[slot] if last else None)
        pos += n
        if not last:
            assert lg is None and top is None       # a chunk before the last computes no head
    assert np.array_equal(lg[-1], logits[-1]), "last logits differ from single steps"
    assert np.array_equal(out[slot], state), "state after prefill differs from single steps"


def test_slot_reuse_is_clean(libs, demo):
    """A slot that held one sequence, loaded with a fresh state, runs the next one exactly."""
    lib = libs["fast"]
    a, b = [10, 20, 30, 40], [50, 60, 70]
    for t in a:                                           # sequence a in slot 1, 0 beside it
        lib.run_pass([demo.embed(t), demo.embed(t)], {0: _zero(lib), 1: _zero(lib)} if t == a[0] else None)
    got = []
    for i, t in enumerate(b):                             # b takes slot 1 from a zero state
        lg, _, out = lib.run_pass([demo.embed(5), demo.embed(t)], {1: _zero(lib)} if i == 0 else None,
                                  store=[1] if i == len(b) - 1 else None)
        got.append(lg[1])
    want_logits, want_state = _single(lib, demo, b)
    assert np.array_equal(np.array(got), want_logits) and np.array_equal(out[1], want_state)


def test_pass_cycles_are_the_schedules(libs, demo):
    preset = libs["preset"]
    shape = Shape.of(demo.config, "2bit", preset.R)
    V = preset.vector_lanes
    for which in ("fast", "exact"):
        lib = libs[which]
        lib.run_pass([demo.embed(1)] * 3, {0: _zero(lib), 2: _zero(lib)}, store=[1])
        assert lib.cycles == token_cycles(shape, V, n=3, loads=2, stores=1).total
        lib.run_pass([demo.embed(1)] * 3, None, head=False, full_logits=False)
        assert lib.cycles == token_cycles(shape, V, n=3, head=False, loads=0, stores=0).total
        lib.run_pass([demo.embed(1)] * 4, {2: _zero(lib)}, prefill=True, slot=2, head=False)
        assert lib.cycles == token_cycles(shape, V, n=4, head=False, loads=1, stores=0).total
        lib.step(demo.embed(1), _zero(lib))
        assert lib.cycles == token_cycles(shape, V).total


def test_library_refuses_arguments_outside_the_build(libs, demo):
    lib = libs["fast"]
    b = lib.buffers()
    x, s, lg, top = b["x_in"], b["state"], b["logits"], b["top"]
    assert lib.call(0, 2, 0, 0, 0, x, s, lg, top) == -2            # no lane
    assert lib.call(lib.lanes + 1, 2, 0, 0, 0, x, s, lg, top) == -2
    assert lib.call(lib.slots + 1, 2, 0, 0, 0, x, s, lg, top) == -2     # batch: a lane per slot
    assert lib.call(1, 3, lib.slots, 0, 0, x, s, lg, top) == -2     # prefill slot out of range
    assert lib.call(1, 2, 0, 1 << lib.slots, 0, x, s, lg, top) == -2
    assert lib.call(1, 8, 0, 0, 0, x, s, lg, top) == -2             # unknown mode bit
    assert lib.call(lib.lanes, 3, 0, 1, 1, x, s, lg, top) == 0      # a full prefill pass is fine
    assert get_preset("pynq-z2", "on-chip", batch_slots=3, prefill_chunk=5).token_lanes == 8   # a power of two

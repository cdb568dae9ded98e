"""The host class on a batched C-simulation overlay: prefill, generate_batch, device top-k.

The overlay is the demo model converted with 3 state slots and 4-token prefill
chunks, packaged, and opened like any overlay. Every batched or chunked path
must give exactly the tokens of its single-sequence counterpart.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys

import numpy as np
import pytest

from mmfree_hls.checkpoint import load_checkpoint
from mmfree_hls.runtime import Accelerator
from mmfree_hls.runtime.errors import AcceleratorError

DEMO = "python/mmfree_hls/data/demo_model"
KNOBS = {"batch_slots": 3, "prefill_chunk": 4, "topk": 8}


@pytest.fixture(scope="module")
def overlay(request, tmp_path_factory):
    from mmfree_hls.design.convert import convert
    from mmfree_hls.overlay import package_project

    model = load_checkpoint(DEMO)
    cache = request.config.cache.mkdir("mmfree-engine-batch")
    with open(cache / "lock", "w") as lock:         # pytest-xdist workers share the cache
        fcntl.flock(lock, fcntl.LOCK_EX)
        convert(model, cache / "demo", config=KNOBS, overwrite=True, verbose=False)
    out = tmp_path_factory.mktemp("batch") / "overlay"
    package_project(cache / "demo", "pynq-z2", out=out, checkpoint=DEMO)
    return out, model


PROMPTS = [[72, 101, 108, 108, 111], [1, 2, 3], [84, 104, 101, 32, 113, 117, 105, 99, 107], [10], [66, 67]]


def test_prefill_equals_one_step_per_token(overlay):
    path, model = overlay
    prompt = PROMPTS[2]
    with Accelerator.open(path, backend="csim") as acc:
        assert (acc.slots, acc.prefill_chunk, acc.lanes) == (3, 4, 4)
        for t in prompt:
            want = acc.step(t)
        want_state = acc.state
        acc.reset()
        got = acc.prefill(prompt)
        assert np.array_equal(got, want) and np.array_equal(acc.state, want_state)
        assert acc.position == len(prompt)
        after = acc.step(5)                                  # decoding continues from the prefilled state
        acc.reset()
        for t in prompt + [5]:
            again = acc.step(t)
        assert np.array_equal(after, again)


def test_greedy_generate_matches_the_reference(overlay):
    path, model = overlay
    with Accelerator.open(path, backend="csim") as acc:
        got = list(acc.generate(PROMPTS[0], 32))
        assert acc.stats.summary()["steps"] == 2 + 31       # 5 prompt tokens in 2 passes, then 31 steps
    assert got == model.generate_greedy(PROMPTS[0], 32)


@pytest.mark.parametrize("sampling", [{}, {"temperature": 0.8, "top_k": 5, "seed": 11},
                                      {"temperature": 1.1, "top_p": 0.9, "seed": 3}])
def test_generate_batch_equals_independent_generations(overlay, sampling):
    """Five prompts on three slots: slots are reused as sequences end; every sequence's tokens
    are exactly those of its own generate() (seed + i)."""
    path, _ = overlay
    seed = sampling.get("seed")
    kw = {k: v for k, v in sampling.items() if k != "seed"}
    with Accelerator.open(path, backend="csim") as acc:
        got = [[] for _ in PROMPTS]
        for i, t in acc.generate_batch(PROMPTS, 24, seed=seed, **kw):
            got[i].append(t)
        want = [list(acc.generate(p, 24, seed=None if seed is None else seed + i, **kw))
                for i, p in enumerate(PROMPTS)]
    assert got == want and all(len(g) == 24 for g in got)


def test_stopped_sequences_free_their_slots(overlay):
    """A stop id ends a sequence early; the waiting prompts take the freed slot."""
    path, _ = overlay
    with Accelerator.open(path, backend="csim") as acc:
        free_runs = [list(acc.generate(p, 16)) for p in PROMPTS]
        stop = free_runs[1][3]                               # ends prompt 1 after 3 tokens
        want = [r[:r.index(stop)] if stop in r else r for r in free_runs]
        got = [[] for _ in PROMPTS]
        order = []
        for i, t in acc.generate_batch(PROMPTS, 16, stop=stop):
            got[i].append(t)
            order.append(i)
        assert got == want
        assert order.index(3) < len(order) - 1 and 3 not in order[:3]   # prompt 3 started after one ended
        # the session is usable afterwards, from a clean state
        assert list(acc.generate(PROMPTS[0], 4)) == free_runs[0][:4]


def test_device_topk_path_reads_no_logits(overlay):
    """Greedy and top_k within the device's top-k sample from the top-k buffer alone."""
    path, _ = overlay
    with Accelerator.open(path, backend="csim") as acc:
        acc._buffers["logits"][:] = np.nan                    # never read on this path
        got = list(acc.generate(PROMPTS[0], 8, temperature=0.7, top_k=acc.device_topk, seed=1))
        assert np.isnan(acc._buffers["logits"]).all()
        full = list(acc.generate(PROMPTS[0], 8, temperature=0.7, top_k=acc.device_topk + 1, seed=1))
        assert not np.isnan(acc._buffers["logits"]).all()
    assert len(got) == len(full) == 8


def test_generate_batch_checks_its_arguments(overlay):
    path, _ = overlay
    with Accelerator.open(path, backend="csim") as acc:
        with pytest.raises(ValueError, match="prompt 1 is empty"):
            acc.generate_batch([[1], []], 4)
        with pytest.raises(ValueError, match="out of range"):
            acc.generate_batch([[1], [10 ** 6]], 4)
        with pytest.raises(ValueError, match="max_new_tokens"):
            acc.generate_batch([[1]], -1)
        stream = acc.generate_batch([[1], [2]], 4)
        next(stream)
        with pytest.raises(AcceleratorError, match="stream"):
            acc.step(1)
        stream.close()
        acc.step(1)


def test_cli_generate_batch(overlay, tmp_path):
    path, _ = overlay
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello\n\nThe quick\nint main\n")
    r = subprocess.run([sys.executable, "-m", "mmfree_hls", "generate", str(path), "--batch", str(prompts),
                        "--max-new-tokens", "8", "--backend", "csim"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "3 prompts, 3 slots" in r.stderr
    with Accelerator.open(path, backend="csim") as acc:
        alone = ["".join(acc.generate_text(p, 8)) for p in ("Hello", "The quick", "int main")]
    assert r.stdout == "".join(f"[{i}] {p}{o}\n" for i, (p, o) in enumerate(zip(("Hello", "The quick", "int main"), alone)))


def test_batched_throughput_test(overlay):
    path, _ = overlay
    with Accelerator.open(path, backend="csim") as acc:
        acc.prefill([1, 2, 3])
        before = acc.state
        one = acc.throughput_test(n_steps=20)
        three = acc.throughput_test(n_steps=20, batch=3)
        assert three["batch"] == 3 and three["tokens_per_s"] == pytest.approx(3 * three["per_sequence_tokens_per_s"])
        assert three["host_io_bytes_per_token"] < one["host_io_bytes_per_token"]
        assert np.array_equal(acc.state, before) and acc.position == 3       # the session is kept
        with pytest.raises(ValueError, match="1..3"):
            acc.throughput_test(batch=4)

"""The host class on both backends.

* C-sim backend against an ABI stub library (binding, buffers, errors,
  timeouts) — plumbing, not accuracy.
* pynq backend on numpy buffers with a fake AXI-Lite register file whose
  "hardware" runs the numpy reference a pass at a time (scalar registers, lanes, state
  slots, load/store masks): the register/cache protocol, greedy decoding, chunked
  prefill and batched decoding through the board code path.
* C-sim backend on the real converted design (the engine's C-simulation), on
  chip and streamed in both packings: greedy tokens equal to the numpy
  reference for ≥ 64 tokens — the accuracy test.
"""

import time

import numpy as np
import pytest

from host_helpers import (MODE_FULL_LOGITS, MODE_HEAD, MODE_PREFILL, SCALARS, STUB_FAIL_MARK,
                          STUB_SLEEP_MARK, FakeAllocator, FakeMMIO, ReferenceDevice, StubEngine,
                          build_abi_stub, stub_overlay as make_stub_overlay, stub_step, stub_top,
                          tiny_model)
from mmfree_hls.overlay import build_overlay

#: The narrowest model the pynq-z2 engine takes (a row block must outlast its write-back).
NARROW = dict(hidden_size=64, intermediate_size=128)
from mmfree_hls.runtime import (Accelerator, AcceleratorClosedError, AcceleratorError,
                                BackendUnavailableError, DeviceTimeoutError, ManifestError,
                                load_manifest)
from mmfree_hls.runtime.backend_pynq import PynqBackend
from mmfree_hls.tokenizer import ByteTokenizer

SLEEP_TOKEN, FAIL_TOKEN = 3, 4


def _stub_package(tmp, marks: bool):
    model = tiny_model(seed=1, **NARROW)
    if marks:       # token 3's embedding makes the stub sleep 0.6 s, token 4's makes it fail
        emb = model.params["model.embeddings.weight"]
        emb[SLEEP_TOKEN, 0], emb[FAIL_TOKEN, 0] = STUB_SLEEP_MARK, STUB_FAIL_MARK
    make_stub_overlay(tmp / "overlay", model, board="pynq-z2", name="stub", sleep_us=600_000)
    return tmp / "overlay", model


@pytest.fixture(scope="module")
def stub_overlay(tmp_path_factory):
    """A package around the ABI stub library."""
    return _stub_package(tmp_path_factory.mktemp("stub"), marks=False)


@pytest.fixture(scope="module")
def faulty_overlay(tmp_path_factory):
    """The same, with two tokens that make the stub sleep or fail."""
    return _stub_package(tmp_path_factory.mktemp("faulty"), marks=True)


def _stub_run(model, tokens):
    c = model.config
    state = np.zeros((c.num_hidden_layers, c.state_size), np.float32)
    logits = None
    for t in tokens:
        logits, state = stub_step(model.params["model.embeddings.weight"][t], state, c.vocab_size)
    return logits, state


# ------------------------------------------------------------------ C-sim binding
def test_csim_binding_passes_buffers_in_contract_order(stub_overlay):
    path, model = stub_overlay
    with Accelerator.open(path, backend="csim") as acc:
        assert acc.backend_name == "csim"
        for n, tok in enumerate([5, 9, 0, 63, 7], 1):
            logits = acc.step(tok)
            want_logits, want_state = _stub_run(model, [5, 9, 0, 63, 7][:n])
            np.testing.assert_array_equal(logits, want_logits)
            np.testing.assert_array_equal(acc.state, want_state)
        assert acc.position == 5
        acc.reset()
        assert acc.position == 0 and not acc.state.any()
        np.testing.assert_array_equal(acc.step(9), _stub_run(model, [9])[0])


def test_auto_backend_is_csim_off_board_and_logits_are_copies(stub_overlay):
    path, _ = stub_overlay
    with Accelerator.open(path) as acc:
        assert acc.backend_name == "csim"
        a = acc.step(1)
        a_copy = a.copy()
        acc.step(2)
        np.testing.assert_array_equal(a, a_copy)      # the next step did not overwrite it


def test_execute_is_one_raw_step_and_keeps_the_session_state(stub_overlay):
    path, model = stub_overlay
    c = model.config
    rng = np.random.default_rng(0)
    x = rng.standard_normal(c.d)
    s0 = rng.standard_normal((c.num_hidden_layers, c.state_size)).astype(np.float32)
    with Accelerator.open(path, backend="csim") as acc:
        acc.step(11)
        before = acc.state
        logits, s1 = acc.execute(x, s0)
        want_logits, want_state = stub_step(x, s0, c.vocab_size)
        np.testing.assert_array_equal(logits, want_logits)
        np.testing.assert_array_equal(s1, want_state)
        np.testing.assert_array_equal(acc.state, before)
        np.testing.assert_array_equal(acc.step(12), _stub_run(model, [11, 12])[0])
        with pytest.raises(ValueError, match="embedding has shape"):
            acc.execute(np.zeros(c.d + 1))
        with pytest.raises(ValueError, match="state has shape"):
            acc.execute(x, np.zeros((1, 2)))


def test_throughput_test_reports_rates_and_keeps_state(stub_overlay):
    path, _ = stub_overlay
    with Accelerator.open(path, backend="csim") as acc:
        acc.step(7)
        before, steps_before = acc.state, acc.stats.steps
        r = acc.throughput_test(n_steps=50)
        assert r["steps"] == 50 and r["tokens_per_s"] > 0 and r["device_ms_per_token"] > 0
        c = acc.config
        # x in, every logit out, and the state in and out (the single-sequence step keeps it on the host)
        assert r["host_io_bytes_per_token"] == 4 * (c.d + c.vocab_size) + 8 * c.num_hidden_layers * c.state_size
        np.testing.assert_array_equal(acc.state, before)
        assert acc.position == 1 and acc.stats.steps == steps_before
        with pytest.raises(ValueError, match="n_steps"):
            acc.throughput_test(0)
        with pytest.raises(ValueError, match=r"batch must be an integer in 1..1"):
            acc.throughput_test(5, batch=2)


def test_batched_throughput_test_keeps_the_session(lanes_overlay):
    path, model = lanes_overlay
    with Accelerator.open(path, backend="csim") as acc:
        acc.step(7)
        before, steps_before = acc.state, acc.stats.steps
        r = acc.throughput_test(n_steps=20, batch=3)
        assert r["batch"] == 3 and r["steps"] == 20
        assert r["tokens_per_s"] == pytest.approx(3 * r["per_sequence_tokens_per_s"])
        # per token: its x in and its lane's top-k out; the states stay on the device
        assert r["host_io_bytes_per_token"] == 4 * acc.config.d + 8 * acc.device_topk
        np.testing.assert_array_equal(acc.state, before)
        assert acc.position == 1 and acc.stats.steps == steps_before
        np.testing.assert_array_equal(acc.step(8), _stub_run(model, [7, 8])[0])
        with pytest.raises(ValueError, match=r"batch must be an integer in 1..3"):
            acc.throughput_test(5, batch=4)


def test_stats_split_host_and_device_time(stub_overlay):
    path, _ = stub_overlay
    with Accelerator.open(path, backend="csim") as acc:
        out = list(acc.generate([1, 2, 3], max_new_tokens=8))
        s = acc.stats.summary()
        assert len(out) == 8
        assert s["prompt_tokens"] == 3 and s["new_tokens"] == 8
        assert s["steps"] == 3 + 7                      # the last token's logits are never computed
        assert s["device_ms_per_token"] > 0 and s["host_ms_per_token"] > 0
        assert 0 < s["host_fraction"] < 1
        assert "tokens/s" in str(acc.stats)


def test_bad_input_gets_clear_errors_and_touches_nothing(stub_overlay):
    path, _ = stub_overlay
    with Accelerator.open(path, backend="csim") as acc:
        acc.step(1)
        steps = acc.stats.steps
        with pytest.raises(ValueError, match=r"token id 64 is out of range for vocab_size=64 \(valid ids are 0..63\)"):
            acc.step(64)
        with pytest.raises(ValueError, match="token id -1 is out of range"):
            acc.step(-1)
        with pytest.raises(TypeError, match="token id must be an int"):
            acc.step(1.0)
        with pytest.raises(ValueError, match="prompt is empty"):
            acc.generate([], 5)
        with pytest.raises(ValueError, match="token id 99 is out of range"):
            acc.generate([1, 99], 5)                    # checked before anything runs
        with pytest.raises(ValueError, match="max_new_tokens"):
            acc.generate([1], -2)
        with pytest.raises(ValueError, match="top_p"):
            acc.generate([1], 5, temperature=1.0, top_p=2.0)
        assert acc.stats.steps == steps and acc.position == 1
    with pytest.raises(ValueError, match="backend must be one of"):
        Accelerator.open(path, backend="fpga")


def test_closed_accelerator_refuses_every_call(stub_overlay):
    path, _ = stub_overlay
    acc = Accelerator.open(path, backend="csim")
    with acc:
        acc.step(1)
    assert acc.closed
    acc.close()                                         # idempotent
    for call in (lambda: acc.step(1), acc.reset, lambda: acc.generate([1], 2),
                 lambda: acc.execute(np.zeros(acc.config.d)), lambda: acc.state):
        with pytest.raises(AcceleratorClosedError, match="open it again"):
            call()


def test_generate_stop_and_seeded_sampling(stub_overlay):
    path, _ = stub_overlay
    with Accelerator.open(path, backend="csim") as acc:
        greedy = list(acc.generate([5, 6], 12))
        assert greedy == list(acc.generate([5, 6], 12))
        cut = list(acc.generate([5, 6], 12, stop=greedy[3]))
        assert cut == greedy[:greedy.index(greedy[3])]
        a = list(acc.generate([5, 6], 30, temperature=50.0, top_k=40, seed=3))
        b = list(acc.generate([5, 6], 30, temperature=50.0, top_k=40, seed=3))
        c = list(acc.generate([5, 6], 30, temperature=50.0, top_k=40, seed=4))
        assert a == b and a != c


def test_device_error_leaves_the_session_usable(faulty_overlay):
    path, model = faulty_overlay
    with Accelerator.open(path, backend="csim") as acc:
        acc.step(5)
        acc.step(6)
        with pytest.raises(AcceleratorError, match="returned 7"):
            acc.step(FAIL_TOKEN)
        # The state is rebuilt from the two good tokens before the next one.
        np.testing.assert_array_equal(acc.step(7), _stub_run(model, [5, 6, 7])[0])
        assert acc.position == 3


def test_csim_timeout_then_recovery(faulty_overlay):
    path, model = faulty_overlay
    with Accelerator.open(path, backend="csim", timeout_s=0.1) as acc:
        acc.step(5)
        with pytest.raises(DeviceTimeoutError, match="still usable"):
            acc.step(SLEEP_TOKEN)                       # the stub sleeps 0.6 s
        with pytest.raises(DeviceTimeoutError, match="still running"):
            acc.step(6)                                 # the abandoned step has not finished yet
        time.sleep(0.7)
        np.testing.assert_array_equal(acc.step(6), _stub_run(model, [5, 6])[0])
        np.testing.assert_array_equal(acc.state, _stub_run(model, [5, 6])[1])
        # reset() after a timeout waits for the abandoned step, so it cannot scribble on the new state.
        with pytest.raises(DeviceTimeoutError):
            acc.step(SLEEP_TOKEN)
        with pytest.raises(DeviceTimeoutError, match="still running"):
            acc.reset()
        time.sleep(0.7)
        acc.reset()
        np.testing.assert_array_equal(acc.step(9), _stub_run(model, [9])[0])


def test_library_for_another_model_is_refused(tmp_path, stub_overlay):
    from mmfree_hls.engine.presets import get_preset
    from mmfree_hls.engine.project import engine_record
    model = tiny_model(seed=2, **NARROW)
    c = model.config
    wrong = build_abi_stub(tmp_path / "wrong", c.d, c.num_hidden_layers, c.state_size, c.vocab_size + 1)
    with pytest.raises(ManifestError, match=r"compiled for \(d, L, e, V, lanes, slots, topk\) = "
                                            r"\(64, 2, 64, 65, 1, 1, 8\), not for this build "
                                            r"\(64, 2, 64, 64, 1, 1, 8\)"):
        build_overlay(tmp_path / "ov", model=model, board="pynq-z2", name="x", csim_library=wrong,
                      engine=engine_record(c, get_preset("pynq-z2", "on-chip"), "2bit"))
    assert not (tmp_path / "ov").exists()               # nothing half-written


def test_pynq_backend_needs_a_bitstream(stub_overlay):
    path, _ = stub_overlay
    with pytest.raises(BackendUnavailableError, match="no bitstream.*backend='csim'"):
        Accelerator.open(path, backend="pynq")


def test_generate_text_streams_with_the_tokenizer(tmp_path):
    tok = ByteTokenizer(["<s>", "</s>"], bos_token="<s>", eos_token="</s>")
    model = tiny_model(seed=5, vocab_size=tok.vocab_size, **NARROW)
    model.config.extra["mmfree_tokenizer"] = tok.to_config()
    make_stub_overlay(tmp_path / "ov", model, board="kv260", name="t")
    with Accelerator.open(tmp_path / "ov", backend="csim") as acc:
        assert acc.tokenizer.vocab_size == 258
        pieces = list(acc.generate_text("héllo", max_new_tokens=20))
        ids = list(acc.generate(tok.encode("héllo", add_bos=True), 20, stop=tok.eos_token_id))
        assert "".join(pieces) == tok.decode(ids)
        assert acc.stats.prompt_tokens == len("héllo".encode()) + 1
        with pytest.raises(TypeError, match="prompt must be a str"):
            acc.generate_text([1, 2])


# ------------------------------------------------------ passes: prefill and batch on the stub
#: a pynq-z2 build with 3 state slots and 4-token prefill chunks (N = 4 lanes), top-5 per lane
KNOBS = {"batch_slots": 3, "prefill_chunk": 4, "topk": 5}


@pytest.fixture(scope="module")
def lanes_overlay(tmp_path_factory):
    """A stub package with several lanes and slots (the stub keeps its slots' states)."""
    tmp = tmp_path_factory.mktemp("lanes")
    model = tiny_model(seed=8, **NARROW)
    m = make_stub_overlay(tmp / "overlay", model, board="pynq-z2", name="lanes", knobs=KNOBS)
    assert (m.layout.lanes, m.layout.slots, m.layout.topk) == (4, 3, 5)
    return tmp / "overlay", model


def _twin(acc, model) -> StubEngine:
    c = model.config
    return StubEngine(c.d, c.num_hidden_layers, c.state_size, c.vocab_size, acc.lanes, acc.slots, acc.device_topk)


def test_stub_prefill_is_the_single_steps_in_chunks(lanes_overlay):
    path, model = lanes_overlay
    emb = model.params["model.embeddings.weight"]
    prompt = [5, 9, 0, 63, 7, 11, 2, 30, 1, 4]           # 10 tokens: chunks of 4, 4, 2
    with Accelerator.open(path, backend="csim") as acc:
        assert acc.prefill_chunk == 4
        logits = acc.prefill(prompt)
        assert acc.stats.steps == 3 and acc.stats.tokens == [4, 4, 2] and acc.position == len(prompt)
        want_logits, want_state = _stub_run(model, prompt)
        np.testing.assert_array_equal(logits, want_logits)
        np.testing.assert_array_equal(acc.state, want_state)
        # the sequence goes on from the stored state with single steps
        np.testing.assert_array_equal(acc.step(12), _stub_run(model, prompt + [12])[0])
        # the same chunks in the twin: lanes chained through slot 0's state, head on the last chunk
        twin = _twin(acc, model)
        s = np.zeros((model.config.num_hidden_layers, model.config.state_size), np.float32)
        for c in range(0, len(prompt), 4):
            z, _, st = twin.run(emb[prompt[c:c + 4]], prefill=True, slot=0, load={0: s} if c == 0 else None,
                                store=[0])
            s = st[0]
        np.testing.assert_array_equal(z[-1], want_logits)


def test_stub_generate_batch_is_each_prompt_alone(lanes_overlay):
    path, model = lanes_overlay
    prompts = [[5, 6], [9, 9, 9, 9, 9, 1], [3], [40, 41, 42, 43, 44], [7, 8, 9]]   # more prompts than slots
    with Accelerator.open(path, backend="csim") as acc:
        for kw in ({}, {"temperature": 2.0, "top_k": 5, "seed": 7},           # from the device's top-k
                   {"temperature": 2.0, "top_p": 0.9, "seed": 7}):             # needs every logit
            got = [[] for _ in prompts]
            for i, tok in acc.generate_batch(prompts, 12, **kw):
                got[i].append(tok)
            for i, p in enumerate(prompts):
                one = dict(kw, seed=kw["seed"] + i) if "seed" in kw else kw
                assert got[i] == list(acc.generate(p, 12, **one)), (kw, i)
        greedy = list(acc.generate(prompts[1], 12))
        stop = greedy[4]
        got = [[] for _ in prompts]
        for i, tok in acc.generate_batch(prompts, 12, stop=stop):
            got[i].append(tok)
        assert got[1] == greedy[:greedy.index(stop)]
        # the slots held other sequences' states: a single step still starts from the host's state
        acc.reset()
        np.testing.assert_array_equal(acc.step(5), _stub_run(model, [5])[0])


def test_stub_device_top_k_is_the_lanes_top_k(lanes_overlay):
    """The stub writes the engine's top-k (value descending, ties to the lower id): the twin's."""
    path, model = lanes_overlay
    with Accelerator.open(path, backend="csim") as acc:
        acc._buffers.write_embedding(model.params["model.embeddings.weight"][5], 0)
        acc._device_pass(["top", "logits", "state"], **{"n": 1, "mode": MODE_HEAD | MODE_FULL_LOGITS, "slot": 0,
                                                        "load_mask": 1, "store_mask": 1})
        vals, ids = acc._buffers.read_top(0)
        want = stub_top(_stub_run(model, [5])[0], acc.device_topk)
        np.testing.assert_array_equal(vals, want[0])
        np.testing.assert_array_equal(ids, want[1])
        np.testing.assert_array_equal(acc._buffers.read_logits(lane=0), _stub_run(model, [5])[0])


# ---------------------------------------------------------------- pynq backend (fake MMIO)
def _fake_board(path, model, timeout_s=1.0):
    manifest = load_manifest(path)
    log = []
    alloc = FakeAllocator(log)
    ip = manifest.data["ip"]
    mmio = FakeMMIO(log=log)
    mmio.device = ReferenceDevice(model, ip["registers"], alloc)
    backend = PynqBackend(ip, manifest.layout, mmio=mmio, allocate=alloc, timeout_s=timeout_s)
    return Accelerator(manifest, backend), mmio, alloc, log


@pytest.fixture(scope="module")
def ref_overlay(tmp_path_factory):
    """A package of a random model (the stub library only satisfies packaging; the fake board runs
    the numpy reference)."""
    tmp = tmp_path_factory.mktemp("ref")
    model = tiny_model(seed=7, **NARROW)
    make_stub_overlay(tmp / "overlay", model, board="zcu104", name="ref")
    return tmp / "overlay", model


def test_pynq_register_protocol(ref_overlay):
    path, model = ref_overlay
    acc, mmio, alloc, log = _fake_board(path, model)
    regs = acc.manifest.data["ip"]["registers"]
    pointers = {n: r for n, r in regs.items() if r["kind"] == "pointer"}
    assert sorted(pointers) == sorted(acc.layout.ports) and [n for n in regs if n not in pointers] == list(SCALARS)
    # Every pointer register holds its buffer's 64-bit physical address (high word non-zero).
    for name, r in pointers.items():
        addr = mmio.pointer(r["offset"])
        assert addr >= 1 << 32
        assert alloc.by_addr[addr] is acc._buffers[name]
    pointer_words = {o: mmio.regs[o] for r in pointers.values() for o in (r["offset"], r["offset"] + 4)}
    log.clear()
    mmio.writes.clear()
    acc.step(3)
    acc.step(4)
    # Per token: the five scalars of the single-sequence pass (one lane, slot 0 in and out, every
    # logit), then ap_start; no address is rewritten.
    step = [(regs["n"]["offset"], 1), (regs["mode"]["offset"], MODE_HEAD | MODE_FULL_LOGITS),
            (regs["slot"]["offset"], 0), (regs["load_mask"]["offset"], 1), (regs["store_mask"]["offset"], 1)]
    assert mmio.writes == step + step
    assert {o: mmio.regs[o] for o in pointer_words} == pointer_words
    names = {alloc.by_addr[mmio.pointer(r["offset"])].name: n for n, r in pointers.items()}
    events = [(e[0], names.get(e[1], e[1]) if len(e) > 1 else None) for e in log]
    one = [("flush", "x_in"), ("flush", "state"), ("start", None), ("invalidate", "state"),
           ("invalidate", "logits")]
    assert events == one + one
    acc.close()
    assert ("free", alloc.by_addr[mmio.pointer(regs["logits"]["offset"])].name) in log


def test_pynq_path_greedy_matches_reference_64_tokens(ref_overlay):
    path, model = ref_overlay
    acc, mmio, _, _ = _fake_board(path, model)
    prompt = [1, 17, 42]
    with acc:
        T = acc.prefill_chunk
        got = list(acc.generate(prompt, 64))
    assert got == model.generate_greedy(prompt, 64)
    # the prompt in chunks of T tokens a pass, then one pass a new token
    assert mmio.device.steps == -(-len(prompt) // T) + 63
    # greedy decoding needs only the device's top-k, never all V logits
    assert not any(p["mode"] & MODE_FULL_LOGITS for p in mmio.device.passes)


@pytest.fixture(scope="module")
def batch_overlay(tmp_path_factory):
    """zcu104 on chip with 4 slots and 2-token prefill chunks (N = 4 lanes) for the fake board."""
    tmp = tmp_path_factory.mktemp("batchref")
    model = tiny_model(seed=9, **NARROW)
    make_stub_overlay(tmp / "overlay", model, board="zcu104", name="ref",
                      knobs={"batch_slots": 4, "prefill_chunk": 2, "topk": 4})
    return tmp / "overlay", model


def test_pynq_path_prefill_and_batch_match_the_reference(batch_overlay):
    path, model = batch_overlay
    acc, mmio, alloc, _ = _fake_board(path, model)
    dev = mmio.device
    prompts = [[1, 17, 42], [5], [60, 2, 2, 9, 31], [8, 8]]
    with acc:
        assert (acc.lanes, acc.slots, acc.prefill_chunk, acc.device_topk) == (4, 4, 2, 4)
        # prefill: ceil(5 / 2) passes in slot 0, the state loaded by the first, stored by the last
        logits = acc.prefill(prompts[2])
        want, state = None, None
        for t in prompts[2]:
            want, state = model.step(t, state)
        np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(acc.state, state, rtol=1e-5, atol=1e-6)
        assert [(p["n"], p["mode"], p["slot"], p["load_mask"], p["store_mask"]) for p in dev.passes] == [
            (2, MODE_PREFILL, 0, 1, 0), (2, MODE_PREFILL, 0, 0, 0),
            (1, MODE_PREFILL | MODE_HEAD | MODE_FULL_LOGITS, 0, 0, 1)]
        # batch: every prompt's greedy tokens are those of the reference alone
        got = [[] for _ in prompts]
        for i, tok in acc.generate_batch(prompts, 16):
            got[i].append(tok)
        assert got == model.generate_greedy_batch(prompts, 16, prefill_chunk=2)
        assert got == [model.generate_greedy(p, 16) for p in prompts]
        batch = [p for p in dev.passes[3:] if not p["mode"] & MODE_PREFILL]
        assert batch and max(p["n"] for p in batch) == 4              # four sequences in one pass
        # the states stay on the device between batch passes: the state buffer is never read or written
        assert all(p["load_mask"] == 0 and p["store_mask"] == 0 for p in batch)
        assert not any(p["mode"] & MODE_FULL_LOGITS for p in dev.passes[3:])   # greedy: the top-k is enough


def test_pynq_timeout_then_recovery(ref_overlay):
    path, model = ref_overlay
    acc, mmio, _, _ = _fake_board(path, model, timeout_s=0.05)
    with acc:
        acc.step(5)
        acc.step(6)
        mmio.hang = 1
        with pytest.raises(DeviceTimeoutError, match="did not finish.*still usable.*replaying the 2 tokens"):
            acc.step(7)
        with pytest.raises(DeviceTimeoutError, match="still busy"):
            acc.step(7)                                 # the device never came back: clear error again
        mmio.finish_hung_step()                         # the slow step ends; its writes are discarded
        logits = acc.step(7)
        ref_logits, ref_state = None, None
        for t in (5, 6, 7):
            ref_logits, ref_state = model.step(t, ref_state)
        np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=1e-5)
        assert acc.position == 3


def test_hwh_register_offsets_are_cross_checked(ref_overlay):
    path, model = ref_overlay
    manifest = load_manifest(path)
    ip = manifest.data["ip"]
    # int mmfree_engine(int n, int mode, int slot, unsigned load_mask, unsigned store_mask,
    #                   float *x_in, float *state, logits, uint64 *top): 32-bit scalars take two words
    offsets = {"CTRL": 0, "GIER": 4, "IP_IER": 8, "IP_ISR": 0xc, "ap_return": 0x10, "n": 0x18, "mode": 0x20,
               "slot": 0x28, "load_mask": 0x30, "store_mask": 0x38, "x_in_1": 0x40, "x_in_2": 0x44,
               "state_1": 0x4c, "state_2": 0x50, "logits_1": 0x58, "logits_2": 0x5c, "top_1": 0x64, "top_2": 0x68}
    good = {n: {"address_offset": o} for n, o in offsets.items()}
    PynqBackend(ip, manifest.layout, mmio=FakeMMIO()).check_register_map(good)
    bad = dict(good, state_1={"address_offset": 0x20})
    with pytest.raises(ManifestError, match="state_1 at 0x20, the manifest says 0x4c"):
        PynqBackend(ip, manifest.layout, mmio=FakeMMIO()).check_register_map(bad)
    no_mode = {n: r for n, r in good.items() if n != "mode"}
    with pytest.raises(ManifestError, match=r"mode missing \(expected at 0x20\)"):
        PynqBackend(ip, manifest.layout, mmio=FakeMMIO()).check_register_map(no_mode)
    # a build with the old interface (no scalars; x_in at 0x18) is refused register by register
    old = {n: r for n, r in good.items() if n not in SCALARS}
    old.update(x_in_1={"address_offset": 0x18}, x_in_2={"address_offset": 0x1c})
    with pytest.raises(ManifestError, match=r"n missing.*x_in_1 at 0x18, the manifest says 0x40"):
        PynqBackend(ip, manifest.layout, mmio=FakeMMIO()).check_register_map(old)
    no_high = {n: r for n, r in good.items() if n != "logits_2"}
    with pytest.raises(ManifestError, match="logits_2 missing"):
        PynqBackend(ip, manifest.layout, mmio=FakeMMIO()).check_register_map(no_high)
    with pytest.raises(ManifestError, match="lists no registers"):
        PynqBackend(ip, manifest.layout, mmio=FakeMMIO()).check_register_map({})


class _FakeOverlay:
    """What pynq.Overlay offers the backend: ip_dict (from the .hwh) and the IP's mmio."""

    def __init__(self, instance, registers, mmio):
        self.ip_dict = {instance: {"registers": registers}}
        setattr(self, instance, type("IP", (), {"mmio": mmio})())
        self.freed = False

    def free(self):
        self.freed = True


def test_pynq_backend_with_an_overlay_object(ref_overlay):
    path, model = ref_overlay
    manifest = load_manifest(path)
    ip = manifest.data["ip"]
    log = []
    alloc = FakeAllocator(log)
    mmio = FakeMMIO(log=log)
    mmio.device = ReferenceDevice(model, ip["registers"], alloc)
    from mmfree_hls.runtime.backend_pynq import expected_hwh_registers
    hwh = {n: {"address_offset": o} for n, o in expected_hwh_registers(ip).items()}
    overlay = _FakeOverlay(ip["instance"], hwh, mmio)
    backend = PynqBackend(ip, manifest.layout, overlay=overlay, allocate=alloc)
    with Accelerator(manifest, backend) as acc:
        np.testing.assert_allclose(acc.step(9), model.step(9)[0], rtol=1e-5, atol=1e-5)
    assert overlay.freed
    wrong = _FakeOverlay("other_ip", hwh, mmio)
    with pytest.raises(ManifestError, match="no IP named 'mmfree_0'"):
        PynqBackend(ip, manifest.layout, overlay=wrong, allocate=alloc)


# ---------------------------------------------------------------- the real design in C-simulation
PROMPT = [1, 2, 3]
N_GREEDY = 64


@pytest.fixture(scope="module")
def csim_design(request, tmp_path_factory):
    """The engine project of ``margin_model`` converted and compiled with g++, then packaged.

    The project lives in pytest's cache directory: convert() and compile() are keyed by a
    content hash, so a re-run with unchanged generator sources costs nothing.
    """
    import fcntl

    from host_helpers import margin_model
    from mmfree_hls.design.convert import convert
    from mmfree_hls.overlay import package_project

    model = margin_model(d=64)
    cache = request.config.cache.mkdir("mmfree-engine-csim")
    with open(cache / "lock", "w") as lock:         # pytest-xdist workers share the cache
        fcntl.flock(lock, fcntl.LOCK_EX)
        convert(model, cache / "margin", overwrite=True, verbose=False)
    overlay = tmp_path_factory.mktemp("csim") / "overlay"
    package_project(cache / "margin", "pynq-z2", out=overlay)
    return overlay, model


@pytest.mark.slow
def test_csim_greedy_matches_reference_64_tokens(csim_design):
    from host_helpers import greedy_margins

    path, model = csim_design
    ref = model.generate_greedy(PROMPT, N_GREEDY)
    margins = greedy_margins(model, PROMPT, N_GREEDY)
    with Accelerator.open(path, backend="csim") as acc:
        got = list(acc.generate(PROMPT, N_GREEDY))
        # The premise of token-for-token agreement: the C-sim's logit error along the
        # reference path stays below half the smallest top-2 margin.
        acc.reset()
        state, err = None, 0.0
        for t in PROMPT + ref[:-1]:
            want, state = model.step(t, state)
            err = max(err, float(np.abs(acc.step(t) - want).max()))
    assert len(set(ref)) >= 32                       # a long walk, not a fixed point
    assert err < margins.min() / 2, (err, margins.min())
    assert got == ref


@pytest.mark.slow
def test_csim_seeded_sampling_is_reproducible(csim_design):
    path, _ = csim_design
    with Accelerator.open(path, backend="csim") as acc:
        a = list(acc.generate(PROMPT, 40, temperature=4.0, top_p=0.99, seed=11))
        b = list(acc.generate(PROMPT, 40, temperature=4.0, top_p=0.99, seed=11))
        c = list(acc.generate(PROMPT, 40, temperature=4.0, top_p=0.99, seed=12))
        assert acc.stats.device_s and min(acc.stats.device_s) > 0
    assert a == b and a != c


# ---------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def text_project(tmp_path_factory):
    """An engine project (pynq-z2, on chip, 1.6-bit) of a byte-tokenizer model (V = 258)."""
    from mmfree_hls.design.convert import convert

    tok = ByteTokenizer(["<s>", "</s>"], bos_token="<s>", eos_token="</s>")
    model = tiny_model(seed=6, vocab_size=tok.vocab_size, hidden_size=80, intermediate_size=160)
    model.config.extra["mmfree_tokenizer"] = tok.to_config()
    root = tmp_path_factory.mktemp("proj") / "hls_project" / "talk"
    convert(model, root, board="pynq-z2", packing="1.6bit", verbose=False)
    return root, model, tok


def test_cli_package_then_generate_streams_text(text_project, tmp_path, capsys):
    from mmfree_hls import cli

    root, _, tok = text_project
    out = tmp_path / "overlays" / "pynq-z2" / "talk"
    assert cli.main(["package", str(root), "--board", "pynq-z2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "no bitstream: C-sim backend only" in printed
    m = load_manifest(out)
    assert m.data["engine"]["packing"] == "1.6bit"             # the project's packing
    assert m.tokenizer_dir == out / "tokenizer"
    assert m.data["source"]["checkpoint"].endswith("model")
    # A second package into the same place needs --force.
    assert cli.main(["package", str(root), "--board", "pynq-z2", "--out", str(out)]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert cli.main(["package", str(root), "--board", "pynq-z2", "--out", str(out), "--force"]) == 0
    capsys.readouterr()

    stats = tmp_path / "stats.json"
    rc = cli.main(["generate", str(out), "--prompt", "Hi", "--backend", "csim", "--max-new-tokens", "12",
                   "--stats-json", str(stats)])
    captured = capsys.readouterr()
    assert rc == 0
    # Compare with the host's own id stream through the API.
    with Accelerator.open(out, backend="csim") as acc:
        want = list(acc.generate(tok.encode("Hi", add_bos=True), 12, stop=tok.eos_token_id))
    assert captured.out == "Hi" + tok.decode(want) + "\n"
    assert "[csim]" in captured.err and "tokens/s" in captured.err and "host" in captured.err
    import json
    s = json.loads(stats.read_text())
    assert s["backend"] == "csim" and s["new_tokens"] == len(want) and s["prompt_tokens"] == 3


def test_cli_errors_are_one_line(text_project, tmp_path, capsys):
    from mmfree_hls import cli

    root, _, _ = text_project
    assert cli.main(["package", str(root), "--board", "nexys", "--out", str(tmp_path / "o")]) == 2
    assert "unknown board 'nexys'" in capsys.readouterr().err
    assert cli.main(["generate", str(tmp_path / "missing"), "--prompt", "x"]) == 2
    assert "mmfree package" in capsys.readouterr().err
    out = tmp_path / "ov"
    assert cli.main(["package", str(root), "--board", "kv260", "--out", str(out)]) == 2
    assert "built for board 'pynq-z2', not 'kv260'" in capsys.readouterr().err
    assert cli.main(["package", str(root), "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["generate", str(out), "--prompt", "x", "--backend", "pynq"]) == 2
    assert "no bitstream" in capsys.readouterr().err
    assert cli.main(["generate", str(out), "--prompt", "x", "--top-p", "3"]) == 2
    assert "top_p must be in (0, 1]" in capsys.readouterr().err


# ---------------------------------------------------------------- streamed tier (weights from DDR)
@pytest.mark.slow
@pytest.mark.parametrize("packing", ["2bit", "1.6bit"])
def test_streamed_csim_greedy_matches_reference_64_tokens(request, tmp_path, packing):
    """The engine with its weights read from the packaged weights buffer every token (pynq-z2:
    two HP ports), converted, compiled, packaged and opened like any overlay."""
    import fcntl

    from host_helpers import margin_model
    from mmfree_hls.design.convert import convert
    from mmfree_hls.overlay import package_project

    model = margin_model(d=80)
    cache = request.config.cache.mkdir("mmfree-engine-streamed")
    with open(cache / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        convert(model, cache / packing, board="pynq-z2", tier="streamed", packing=packing,
                overwrite=True, verbose=False)
    m = package_project(cache / packing, out=tmp_path / "ov")
    assert m.tier == "streamed" and m.data["engine"]["packing"] == packing
    with Accelerator.open(tmp_path / "ov", backend="csim") as acc:
        assert acc.layout.weight_bytes == m.data["buffers"]["weights"]["nbytes"]
        got = list(acc.generate(PROMPT, N_GREEDY))
    assert got == model.generate_greedy(PROMPT, N_GREEDY)


def test_board_side_runs_with_numpy_alone(stub_overlay):
    """A PYNQ image has no TensorFlow, hls4ml, yaml or tokenizers: open + decode must not need them."""
    import subprocess
    import sys
    import textwrap

    import ast

    path, _ = stub_overlay
    code = textwrap.dedent(f"""
        import importlib.abc, sys
        BLOCKED = {{"tensorflow", "keras", "qkeras", "hls4ml", "yaml", "matplotlib", "pandas", "pynq",
                   "tokenizers"}}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(name + " is blocked")
        sys.meta_path.insert(0, Block())
        from mmfree_hls import Accelerator
        import mmfree_hls.runtime.backend_pynq, mmfree_hls.commands.generate
        with Accelerator.open({str(path)!r}) as acc:
            print(list(acc.generate([1, 2], 4, temperature=0.7, top_p=0.9, seed=1)))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(ast.literal_eval(r.stdout.strip())) == 4

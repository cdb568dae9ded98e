"""``Accelerator``: autoregressive decoding on the FPGA or its C-simulation.

One call of the device is a pass: the weights read once for up to N token
lanes (docs/ARCHITECTURE.md, "Batching and prefill"). A single-sequence step
is ``(x_t, s_{t-1}) → (logits_t, s_t)`` (``MMFreeLM.decode_step``) on lane 0,
its state through the host buffer. A prompt goes in chunks of up to
``prefill_chunk`` tokens a pass (:meth:`Accelerator.prefill`), and
:meth:`Accelerator.generate_batch` decodes up to ``slots`` sequences together,
their states kept on chip between passes. The next token is chosen on the
CPU (:mod:`mmfree_hls.sampling`) from the device's top-k when the sampling
allows it (greedy, or top_k within the device's), else from all logits.

    with Accelerator.open("overlays/pynq-z2/demo") as acc:     # board or C-sim
        for piece in acc.generate_text("The meaning of", max_new_tokens=40):
            print(piece, end="")
        print(acc.stats)

Buffers are allocated once in ``open``; nothing is allocated per token.
"""

from __future__ import annotations

import importlib.util
import platform
import time
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

import numpy as np

from ..sampling import Sampler
from .buffers import MODE_FULL_LOGITS, MODE_HEAD, MODE_PREFILL, STEP_PASS, WEIGHTS_PORT, DeviceBuffers
from .errors import (AcceleratorClosedError, AcceleratorError, BackendUnavailableError,
                     DeviceTimeoutError)
from .manifest import Manifest, load_manifest

BACKENDS = ("auto", "pynq", "csim")
_BOARD_CPUS = ("aarch64", "armv7l", "armv8l")

clock = time.perf_counter


class AcceleratorStats:
    """Per-pass timing, split into host time and device time, and the tokens each pass served.

    *device*: from start to done (the C call on the C-sim backend; ap_start
    to ap_done on the board). *host*: everything else the host spends on a
    pass — embedding lookup, buffer copies, cache flush/invalidate, sampling.
    Per-token figures divide by the tokens the passes served (a prefill or
    batch pass serves several).
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.host_s: list[float] = []
        self.device_s: list[float] = []
        self.tokens: list[int] = []
        self.prompt_tokens = 0
        self.new_tokens = 0

    def record(self, host_s: float, device_s: float, tokens: int = 1) -> None:
        self.host_s.append(host_s)
        self.device_s.append(device_s)
        self.tokens.append(tokens)

    def add_host_time(self, seconds: float) -> None:
        """Host work after a step (sampling) is charged to that step's token."""
        if self.host_s:
            self.host_s[-1] += seconds

    @property
    def steps(self) -> int:
        return len(self.device_s)

    @property
    def total_s(self) -> float:
        return float(sum(self.host_s) + sum(self.device_s))

    def summary(self) -> dict:
        n = self.steps
        host = np.asarray(self.host_s)
        dev = np.asarray(self.device_s)
        total = self.total_s
        toks = int(sum(self.tokens))
        return {
            "steps": n, "tokens": toks, "prompt_tokens": self.prompt_tokens, "new_tokens": self.new_tokens,
            "total_s": total,
            "tokens_per_s": toks / total if total > 0 else 0.0,
            "host_ms_per_token": 1e3 * float(host.sum()) / toks if toks else 0.0,
            "device_ms_per_token": 1e3 * float(dev.sum()) / toks if toks else 0.0,
            "host_fraction": float(host.sum() / total) if total > 0 else 0.0,
            "host_ms_p50": 1e3 * float(np.median(host)) if n else 0.0,
            "device_ms_p50": 1e3 * float(np.median(dev)) if n else 0.0,
            "device_ms_max": 1e3 * float(dev.max()) if n else 0.0,
        }

    def __str__(self) -> str:
        s = self.summary()
        if not s["steps"]:
            return "no tokens yet"
        return (f"{s['steps']} steps ({s['prompt_tokens']} prompt, {s['new_tokens']} generated): "
                f"{s['tokens_per_s']:.1f} tokens/s, {s['host_ms_per_token'] + s['device_ms_per_token']:.3f} "
                f"ms/token = host {s['host_ms_per_token']:.3f} + device {s['device_ms_per_token']:.3f} "
                f"({100 * s['host_fraction']:.1f}% host)")


def _on_board() -> bool:
    return platform.machine().lower() in _BOARD_CPUS and importlib.util.find_spec("pynq") is not None


class Accelerator:
    """A session with one accelerator: buffers, recurrent state, decoding."""

    def __init__(self, manifest: Manifest, backend, *, tokenizer=None):
        """Use :meth:`open`; this wires an already-constructed backend."""
        self.manifest = manifest
        self.config = manifest.config
        self.layout = manifest.layout
        self.backend = backend
        self.backend_name = backend.name
        self.stats = AcceleratorStats()
        self._tokenizer = tokenizer
        self._closed = False
        self._history: list[int] = []          # token ids fed since reset(): replayed after a fault
        self._needs_recovery = False
        self._stream: Optional[object] = None  # the live generate() stream, which owns the state
        # The embedding table stays on the host; float32 rows are copied straight into x_in.
        self._embeddings = np.ascontiguousarray(manifest.embeddings(mmap=False), dtype=np.float32)
        self._buffers: DeviceBuffers = backend.allocate(self.layout)
        if WEIGHTS_PORT in self.layout.specs:
            # Streamed tier: the packed weights go to the device once per session.
            self._buffers.write_weights(manifest.packed_weights())
            backend.sync_to_device(self._buffers, [WEIGHTS_PORT])
        self.reset()

    # ------------------------------------------------------------------ open
    @classmethod
    def open(cls, path: Union[str, Path], backend: str = "auto", *, timeout_s: Optional[float] = None,
             verify: bool = True, tokenizer=None, **backend_options) -> "Accelerator":
        """Open an overlay package (``overlays/<board>/<name>``).

        backend: ``"pynq"`` loads the bitstream on a PYNQ board; ``"csim"`` runs the
        C-simulation library of the same design; ``"auto"`` picks pynq on a board
        with a bitstream, else csim. ``timeout_s`` bounds one device step (board
        default 10 s; C-sim default: none). ``verify=False`` skips SHA-256 checks.
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        manifest = load_manifest(path, verify_hashes=verify)
        if backend == "auto":
            backend = "pynq" if (manifest.bitstream is not None and _on_board()) else "csim"
        if backend == "csim":
            from .backend_csim import CSimBackend
            impl = CSimBackend(manifest.csim_library, manifest.layout, timeout_s=timeout_s, **backend_options)
        else:
            from .backend_pynq import DEFAULT_TIMEOUT_S, PynqBackend
            if manifest.bitstream is None:
                raise BackendUnavailableError(
                    f"{manifest.root} has no bitstream (it was packaged without Vivado); run "
                    "`make overlay BOARD=...` where Vivado is installed, or use backend='csim'")
            impl = PynqBackend(manifest.data["ip"], manifest.layout, bitstream=manifest.bitstream,
                               timeout_s=DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s,
                               **backend_options)
        try:
            return cls(manifest, impl, tokenizer=tokenizer)
        except BaseException:
            impl.close()
            raise

    def __enter__(self) -> "Accelerator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the buffers (and the overlay). Idempotent."""
        if not self._closed:
            self._closed = True
            self.backend.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        c = self.config
        state = "closed" if self._closed else f"{len(self._history)} tokens in state"
        return (f"<Accelerator {self.manifest.name} on {self.backend_name} ({self.manifest.board}, "
                f"{self.manifest.tier}): d={c.d} L={c.num_hidden_layers} V={c.vocab_size}, {state}>")

    # ---------------------------------------------------------------- checks
    def _check_open(self) -> None:
        if self._closed:
            raise AcceleratorClosedError("the accelerator is closed; open it again with Accelerator.open(path)")

    def _check_token(self, token_id) -> int:
        if isinstance(token_id, (bool, np.bool_)) or not isinstance(token_id, (int, np.integer)):
            raise TypeError(f"token id must be an int, got {type(token_id).__name__} {token_id!r}")
        tok = int(token_id)
        V = self.config.vocab_size
        if not 0 <= tok < V:
            raise ValueError(f"token id {tok} is out of range for vocab_size={V} (valid ids are "
                             f"0..{V - 1}); check the tokenizer matches the model")
        return tok

    # ------------------------------------------------------------------ state
    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def position(self) -> int:
        """Tokens consumed since the last reset()."""
        return len(self._history)

    def _zero_state(self) -> None:
        self._buffers.clear_state()

    def _check_no_stream(self, what: str) -> None:
        if self._stream is not None:
            raise AcceleratorError(
                f"{what} while a generate() stream is running on this accelerator would change the "
                "recurrent state that stream continues from; finish the stream or close it first "
                "(stream.close()), or open a second Accelerator for a second sequence")

    def reset(self) -> None:
        """Zero the recurrent state: the next step starts a new sequence."""
        self._check_open()
        self._check_no_stream("reset()")
        self._reset()

    def _reset(self) -> None:
        self._check_open()
        if self._needs_recovery:
            # A step abandoned by a timeout may still write the state buffer: let it finish first.
            self.backend.wait_idle(getattr(self.backend, "timeout_s", None))
        self._zero_state()
        self._history.clear()
        self._needs_recovery = False

    @property
    def state(self) -> np.ndarray:
        """A copy of the recurrent state s_t, (L, e)."""
        self._check_open()
        self.backend.sync_from_device(self._buffers, ["state"])
        return self._buffers.read_state()

    def _restore_after_raw_steps(self, saved: Optional[np.ndarray], history: list[int]) -> None:
        """Put the session back after execute()/throughput_test() used the device."""
        if self._needs_recovery:
            return                          # a failed raw step: the next step replays the history
        self._history = history
        self._buffers.write_state(saved)

    # ------------------------------------------------------------------- step
    def _device_pass(self, outputs: list[str], host_s: float = 0.0, tokens: int = 1, **args) -> None:
        """Inputs flushed → one pass → ``outputs`` invalidated, with the timing split (``host_s``:
        host work already spent on this pass; ``tokens``: the tokens it serves)."""
        buffers, backend = self._buffers, self.backend
        t0 = clock()
        backend.sync_to_device(buffers, buffers.inputs)
        t1 = clock()
        backend.run(**args)
        t2 = clock()
        backend.sync_from_device(buffers, outputs)
        self.stats.record(host_s=host_s + (t1 - t0) + (clock() - t2), device_s=t2 - t1, tokens=tokens)

    def _write_lanes(self, tokens) -> None:
        """Lane t's embedding into x_in, for every token of ``tokens``."""
        for lane, tok in enumerate(tokens):
            self._buffers.write_embedding(self._embeddings[tok], lane)

    def _lane_out(self, lane: int, full: bool):
        """What a pass left for lane ``lane``: its logits (``full``) or its device top-k."""
        return self._buffers.read_logits(lane=lane) if full else self._buffers.read_top(lane)

    def _batch_pass(self, lane_tokens, served: int, full: bool, load_mask: int = 0) -> None:
        """A batch pass: lane t the next token of slot t's sequence, the states on chip (the slots of
        ``load_mask`` taken from the host buffer first); ``served``: the lanes whose tokens count."""
        t0 = clock()
        self._write_lanes(lane_tokens)
        self._device_pass(["logits" if full else "top"], host_s=clock() - t0, tokens=served, n=len(lane_tokens),
                          mode=MODE_HEAD | (MODE_FULL_LOGITS if full else 0), slot=0, load_mask=load_mask,
                          store_mask=0)

    def _device_step(self, tok: int, full: bool = True):
        """Embedding → device → logits (or the lane's top-k when ``full`` is False). No recovery here."""
        buffers = self._buffers
        t0 = clock()
        buffers.write_embedding(self._embeddings[tok])
        try:
            self._device_pass(["state", "logits" if full else "top"], host_s=clock() - t0,
                              **{**STEP_PASS, "mode": MODE_HEAD | (MODE_FULL_LOGITS if full else 0)})
        except AcceleratorError:
            # The state buffer may be half-written: rebuild it before the next step.
            self._needs_recovery = True
            raise
        self._history.append(tok)
        return self._lane_out(0, full)

    def _prefill_slot(self, ids: list[int], slot: int, *, load: bool, store: bool, full: bool):
        """``ids`` through the device in chunks of ``prefill_chunk`` tokens a pass, in state slot
        ``slot`` (loaded from the host buffer first when ``load``, written back after the last chunk
        when ``store``). Returns the last token's logits (``full``) or top-k."""
        T = self.prefill_chunk
        for c in range(0, len(ids), T):
            chunk = ids[c:c + T]
            last = c + T >= len(ids)
            t0 = clock()
            self._write_lanes(chunk)
            mode = MODE_PREFILL | ((MODE_HEAD | (MODE_FULL_LOGITS if full else 0)) if last else 0)
            outputs = (["logits" if full else "top"] + (["state"] if store else [])) if last else []
            self._device_pass(outputs, host_s=clock() - t0, tokens=len(chunk), n=len(chunk), mode=mode, slot=slot,
                              load_mask=(1 << slot) if (load and c == 0) else 0,
                              store_mask=(1 << slot) if (store and last) else 0)
        return self._lane_out((len(ids) - 1) % T, full)

    @property
    def lanes(self) -> int:
        """N: token lanes one pass serves (the larger of slots and prefill_chunk)."""
        return self.layout.lanes

    @property
    def slots(self) -> int:
        """B: sequences :meth:`generate_batch` decodes together (state slots on chip)."""
        return self.layout.slots

    @property
    def prefill_chunk(self) -> int:
        """T: prompt tokens one prefill pass takes."""
        return int(self.manifest.data["engine"]["knobs"]["prefill_chunk"])

    @property
    def device_topk(self) -> int:
        """Entries of the device-side top-k (per lane)."""
        return self.layout.topk

    def prefill(self, prompt_ids: Iterable[int]) -> np.ndarray:
        """Feed a prompt, ``prefill_chunk`` tokens a pass; return the last token's logits.

        The same state and logits as :meth:`step` once per token, bit for bit (the
        recurrence is scanned lane by lane inside the pass), for a fraction of the
        weight reads. Refused while a :meth:`generate` stream is running.
        """
        self._check_open()
        self._check_no_stream("prefill()")
        ids = [self._check_token(t) for t in prompt_ids]
        if not ids:
            raise ValueError("prompt is empty: give at least one token id")
        return self._prefill(ids, full=True)

    def _prefill(self, ids: list[int], full: bool):
        if self._needs_recovery:
            self._recover()
        try:
            out = self._prefill_slot(ids, 0, load=True, store=True, full=full)
        except AcceleratorError:
            self._needs_recovery = True     # the state buffer may be half-written
            raise
        self._history.extend(ids)
        return out

    def _recover(self) -> None:
        """After a failed step: wait for the device, then rebuild the state by replaying history."""
        replay = list(self._history)
        try:
            self.backend.wait_idle(getattr(self.backend, "timeout_s", None))
            self._zero_state()
            self._history.clear()
            for tok in replay:
                self._device_step(tok)
        except BaseException:
            self._history, self._needs_recovery = replay, True     # try again next time
            raise
        self._needs_recovery = False

    def step(self, token_id: int) -> np.ndarray:
        """Feed one token; return its logits (float32, (V,)). The state advances by one.

        Refused while a :meth:`generate` stream is running (it owns the state).
        """
        self._check_open()
        self._check_no_stream("step()")
        return self._step(token_id)

    def _step(self, token_id: int, full: bool = True):
        self._check_open()
        tok = self._check_token(token_id)
        if self._needs_recovery:
            self._recover()
        try:
            return self._device_step(tok, full)
        except DeviceTimeoutError as e:
            raise DeviceTimeoutError(
                f"{e}. The session is still usable: the next step waits for the device and "
                f"restores the state by replaying the {len(self._history)} tokens fed so far "
                "(or call reset() to start over)") from None

    def execute(self, x: np.ndarray, state: Optional[np.ndarray] = None) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """One raw step on the buffers: (x_t (d,), s_{t-1} (L, e)) → (logits, s_t).

        The same contract as ``MMFreeLM.decode_step``; ``state=None`` starts from
        zero. The session's own state is restored afterwards.
        """
        self._check_open()
        if self._needs_recovery:
            self._recover()
        buffers, backend = self._buffers, self.backend
        backend.sync_from_device(buffers, ["state"])
        saved = buffers.read_state()
        history = list(self._history)
        try:
            if state is None:
                self._zero_state()
            else:
                buffers.write_state(state)
            buffers.write_embedding(x)
            backend.sync_to_device(buffers, buffers.inputs)
            try:
                backend.run()
            except AcceleratorError:
                self._needs_recovery = True
                raise
            backend.sync_from_device(buffers, buffers.outputs)
            return buffers.read_logits(), buffers.read_state()
        finally:
            self._restore_after_raw_steps(saved, history)

    def throughput_test(self, n_steps: int = 100, token_id: int = 0, batch: int = 1) -> dict:
        """Back-to-back passes without sampling: the decode rate the hardware sustains.

        ``batch`` = 1: the host's single-sequence step (state through the host buffer,
        every logit read). ``batch`` = B ≤ :attr:`slots`: B sequences share each pass,
        their states on chip, only the device top-k read. Returns runtime, aggregate and
        per-sequence tokens/s, host and device ms per token, and the bytes a token moves
        across the host–device boundary. The session state is kept.
        """
        self._check_open()
        if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
            raise ValueError(f"n_steps must be an integer ≥ 1, got {n_steps!r}")
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or not 1 <= batch <= self.slots:
            raise ValueError(f"batch must be an integer in 1..{self.slots} (this design's state slots), "
                             f"got {batch!r}")
        tok = self._check_token(token_id)
        if self._needs_recovery:
            self._recover()
        history, saved_stats = list(self._history), self.stats
        self.backend.sync_from_device(self._buffers, ["state"])
        saved = self._buffers.read_state()
        self.stats = AcceleratorStats()
        buffers = self._buffers
        try:
            t0 = clock()
            if batch == 1:
                for _ in range(n_steps):
                    self._device_step(tok)
            else:
                buffers.clear_state()
                for i in range(n_steps):
                    self._batch_pass([tok] * batch, batch, full=False, load_mask=(1 << batch) - 1 if i == 0 else 0)
            runtime = clock() - t0
            s = self.stats.summary()
        finally:
            self.stats = saved_stats
            self._restore_after_raw_steps(saved, history)
        lay = self.layout
        io_bytes = 4 * lay.d + (4 * lay.V + 8 * lay.L * lay.e if batch == 1 else 8 * lay.topk)
        return {"backend": self.backend_name, "steps": n_steps, "batch": batch, "runtime_s": runtime,
                "tokens_per_s": n_steps * batch / runtime,
                "per_sequence_tokens_per_s": n_steps / runtime,
                "host_ms_per_token": s["host_ms_per_token"],
                "device_ms_per_token": s["device_ms_per_token"],
                "host_io_bytes_per_token": io_bytes,
                "weight_bytes": self.manifest.data["engine"]["weight_bytes_per_token"]}

    # --------------------------------------------------------------- decoding
    def generate(self, prompt_ids: Iterable[int], max_new_tokens: int, temperature: float = 0.0,
                 top_k: Optional[int] = None, top_p: Optional[float] = None,
                 seed: Optional[int] = None, stop: Union[None, int, Iterable[int]] = None) -> Iterator[int]:
        """Stream new token ids after a prompt (a fresh sequence: state and stats are reset).

        Greedy when temperature is 0. ``stop``: a token id or ids that end the
        stream (not yielded). Arguments are checked here, before anything runs.
        One stream at a time owns the accelerator's state: while it runs (from its
        first token until it ends or is closed), a second stream, ``step()`` and
        ``reset()`` raise AcceleratorError instead of silently sharing the state.
        """
        self._check_open()
        prompt = [self._check_token(t) for t in prompt_ids]
        if not prompt:
            raise ValueError("prompt is empty: give at least one token id (e.g. the BOS id "
                             f"{self.config.bos_token_id})")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) \
                or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an integer ≥ 0, got {max_new_tokens!r}")
        sampler = Sampler(temperature, top_k, top_p, seed)
        return self._generate(prompt, int(max_new_tokens), sampler, self._stop_ids(stop))

    def _stop_ids(self, stop) -> set:
        try:
            return set() if stop is None else ({self._check_token(stop)} if isinstance(stop, (int, np.integer))
                                               else {self._check_token(s) for s in stop})
        except (TypeError, ValueError) as e:
            raise ValueError(f"stop must be a token id or a list of token ids, got {stop!r} ({e})") from None

    def _claim_stream(self) -> object:
        """Make the stream that is starting the owner of the accelerator's state (one at a time)."""
        self._check_open()
        if self._stream is not None:
            raise AcceleratorError(
                "another generate() stream is still running on this accelerator and owns its recurrent "
                "state; finish it or close it first (stream.close()), or open a second Accelerator")
        self._stream = owner = object()
        return owner

    def _generate(self, prompt: list[int], max_new: int, sampler: Sampler, stops: set) -> Iterator[int]:
        owner = self._claim_stream()
        try:
            self._reset()
            self.stats.reset()          # stats describe this generation (step() alone accumulates)
            full = sampler.needs_full_logits(self.device_topk)
            out = self._prefill(prompt, full)
            self.stats.prompt_tokens += len(prompt)
            for i in range(max_new):
                t0 = clock()
                tok = sampler(out) if full else sampler.choose_from_top(*out)
                self.stats.add_host_time(clock() - t0)
                if tok in stops:
                    return
                self.stats.new_tokens += 1
                yield tok
                if i + 1 < max_new:            # the last token's logits are never needed
                    out = self._step(tok, full)
        finally:
            if self._stream is owner:
                self._stream = None

    def generate_batch(self, prompts: Iterable[Iterable[int]], max_new_tokens: int, temperature: float = 0.0,
                       top_k: Optional[int] = None, top_p: Optional[float] = None,
                       seed: Optional[int] = None,
                       stop: Union[None, int, Iterable[int]] = None) -> Iterator[tuple[int, int]]:
        """Decode many prompts together; yields ``(prompt index, token id)`` as tokens come.

        Up to :attr:`slots` sequences share every weight pass, each in its own state
        slot on chip. A waiting prompt takes a free slot (its prompt prefilled in
        chunks), and a sequence frees its slot when it stops (``stop`` ids, not
        yielded) or reaches ``max_new_tokens``. Sequence i samples with its own
        generator, seed ``seed + i``: its tokens are those of
        ``generate(prompts[i], seed=seed + i)`` (bit-identical logits on the device).
        The session's state is reset before and after; like :meth:`generate`, the
        stream owns the accelerator while it runs.
        """
        self._check_open()
        todo = [[self._check_token(t) for t in p] for p in prompts]
        for i, p in enumerate(todo):
            if not p:
                raise ValueError(f"prompt {i} is empty: give at least one token id")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) \
                or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an integer ≥ 0, got {max_new_tokens!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        samplers = [Sampler(temperature, top_k, top_p, None if seed is None else seed + i)
                    for i in range(len(todo))]
        stops = self._stop_ids(stop)
        return self._generate_batch(todo, int(max_new_tokens), samplers, stops)

    def _generate_batch(self, prompts: list[list[int]], max_new: int, samplers: list[Sampler],
                        stops: set) -> Iterator[tuple[int, int]]:
        owner = self._claim_stream()
        buffers = self._buffers
        full = any(s.needs_full_logits(self.device_topk) for s in samplers)
        waiting = list(range(len(prompts)))[::-1]          # a stack: prompt 0 first
        active: dict[int, list] = {}                       # slot -> [prompt index, next token, tokens so far]

        def choose(i: int, out) -> int:
            t0 = clock()
            tok = samplers[i](out) if full else samplers[i].choose_from_top(*out)
            self.stats.add_host_time(clock() - t0)
            return tok

        try:
            self._reset()
            self.stats.reset()
            while waiting or active:
                for slot in range(self.slots):            # a free slot takes the next prompt
                    if slot not in active and waiting:
                        i = waiting.pop()
                        buffers.clear_state(slot)
                        out = self._prefill_slot(prompts[i], slot, load=True, store=False, full=full)
                        self.stats.prompt_tokens += len(prompts[i])
                        active[slot] = [i, choose(i, out), 0]
                for slot in sorted(active):               # hand out the chosen tokens
                    i, tok, count = active[slot]
                    if max_new == 0 or tok in stops:
                        del active[slot]
                        continue
                    self.stats.new_tokens += 1
                    yield i, tok
                    active[slot][2] = count = count + 1
                    if count >= max_new:
                        del active[slot]
                if not active:
                    continue
                # lanes 0..max slot; a free slot's lane idles on token 0
                self._batch_pass([active[q][1] if q in active else 0 for q in range(max(active) + 1)],
                                 len(active), full)
                for slot, seq in active.items():
                    seq[1] = choose(seq[0], self._lane_out(slot, full))
        finally:
            if self._stream is owner:
                self._stream = None
                self._reset()                              # the slots held other sequences' states

    @property
    def tokenizer(self):
        """The overlay's tokenizer (``tokenizer/`` in the package), loaded on first use."""
        if self._tokenizer is None:
            tdir = self.manifest.tokenizer_dir
            if tdir is None:
                raise AcceleratorError(f"overlay {self.manifest.root} has no tokenizer; pass "
                                       "tokenizer=... to Accelerator.open, or use generate() with ids")
            from ..tokenizer import load_tokenizer
            self._tokenizer = load_tokenizer(tdir)
        return self._tokenizer

    def generate_text(self, prompt: str, max_new_tokens: int = 64, temperature: float = 0.0,
                      top_k: Optional[int] = None, top_p: Optional[float] = None,
                      seed: Optional[int] = None, stop: Union[None, int, Iterable[int], str] = "eos",
                      add_bos: Optional[bool] = None) -> Iterator[str]:
        """Stream text pieces after a text prompt.

        ``stop`` defaults to the tokenizer's (else the model's) EOS id. ``add_bos``
        defaults to True when the tokenizer defines a BOS token (models trained
        with one expect it first).
        """
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        tok = self.tokenizer
        bos = getattr(tok, "bos_token_id", None)
        if add_bos is None:
            add_bos = bos is not None
        ids = list(tok.encode(prompt, add_bos=add_bos))
        if not ids:
            raise ValueError("the prompt encodes to no tokens: give some text")
        if stop == "eos":
            eos = getattr(tok, "eos_token_id", None)
            stop = eos if eos is not None else self.config.eos_token_id
        stream = self.generate(ids, max_new_tokens, temperature, top_k, top_p, seed, stop)
        return _detokenize(tok, stream)

    def generate_text_batch(self, prompts: Iterable[str], max_new_tokens: int = 64, temperature: float = 0.0,
                            top_k: Optional[int] = None, top_p: Optional[float] = None,
                            seed: Optional[int] = None, stop: Union[None, int, Iterable[int], str] = "eos",
                            add_bos: Optional[bool] = None) -> list[str]:
        """Complete many text prompts together (:meth:`generate_batch`); returns the completions
        in prompt order. ``stop`` and ``add_bos`` as in :meth:`generate_text`; prompt i samples
        with seed ``seed + i``."""
        prompts = list(prompts)
        bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
        if bad:
            raise TypeError(f"prompt {bad[0]} is a {type(prompts[bad[0]]).__name__}, not a str")
        tok = self.tokenizer
        bos = getattr(tok, "bos_token_id", None)
        if add_bos is None:
            add_bos = bos is not None
        ids = [list(tok.encode(p, add_bos=add_bos)) for p in prompts]
        empty = [i for i, x in enumerate(ids) if not x]
        if empty:
            raise ValueError(f"prompt {empty[0]} encodes to no tokens: give some text")
        if stop == "eos":
            eos = getattr(tok, "eos_token_id", None)
            stop = eos if eos is not None else self.config.eos_token_id
        out: list[list[int]] = [[] for _ in prompts]
        for i, t in self.generate_batch(ids, max_new_tokens, temperature, top_k, top_p, seed, stop):
            out[i].append(t)
        return ["".join(_detokenize(tok, iter(o))) for o in out]


def _detokenize(tok, ids: Iterator[int]) -> Iterator[str]:
    """Text pieces as ids arrive, never half a UTF-8 character (the tokenizer's StreamDecoder)."""
    from ..tokenizer import StreamDecoder

    dec = StreamDecoder(tok)
    for t in ids:
        piece = dec.feed(t)
        if piece:
            yield piece
    tail = dec.flush()
    if tail:
        yield tail

"""Test doubles for the host runtime (used by test_manifest / test_accelerator).

* ``build_abi_stub``: a few dozen lines of C++ exporting the C-sim ABI (version 3:
  ``mmfree_abi``, ``mmfree_info``, ``mmfree_lanes``, ``mmfree_step``, ``mmfree_cycles``) with
  simple, exactly reproducible arithmetic and the pass semantics of the engine: n token lanes
  in batch or prefill mode, device-private state slots, load/store masks, optional head,
  full logits or only the top-k. It tests the ctypes binding and the package plumbing, not
  the model: accuracy is tested against the real C-simulation library. ``StubEngine`` is its
  numpy twin (``stub_step`` the single-sequence step).
* ``FakeMMIO`` + ``FakeAllocator`` + ``ReferenceDevice``: an AXI-Lite register
  file with Vitis HLS ap_ctrl_hs semantics (ap_done clear-on-read) whose
  "hardware" reads the pass's scalar registers and runs it with
  ``MMFreeLM.decode_step`` on the buffers the pointer registers point at, keeping its
  own state slots. Drives the pynq backend's register, address and cache logic on
  plain numpy arrays; the buffers are cacheable and not coherent (the device
  sees DRAM, the host its cache), and ``FakeMMIO.write`` takes what
  ``pynq.MMIO.write`` takes.
* ``FakeBoard`` and friends: what a PYNQ image provides under the real pynq
  package (XRT, FPGA manager, /dev/mem), for ``tests/test_*real_pynq*.py``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Optional

import numpy as np

from mmfree_hls.config import ModelConfig
from mmfree_hls.runtime.errors import AcceleratorError
from mmfree_hls.reference import MMFreeLM
from mmfree_hls.sampling import greedy_decode, top_k_of

AP_START, AP_DONE, AP_IDLE = 0x1, 0x2, 0x4
#: Mode bits of a pass (mmfree_engine.h, runtime/buffers.py).
MODE_PREFILL, MODE_HEAD, MODE_FULL_LOGITS = 1, 2, 4
#: The pass's scalar arguments, in the top's order.
SCALARS = ("n", "mode", "slot", "load_mask", "store_mask")
#: x_in[0] value that makes the stub sleep (to provoke a timeout) and one that makes it fail.
STUB_SLEEP_MARK = 1234.5
STUB_FAIL_MARK = -999.0
#: The stub's (and the engine's) status for arguments outside what the build holds.
STUB_BAD_ARGS = -2

#: The C-sim ABI (version 3). One call is a pass of n token lanes: batch (lane t is the next
#: token of the sequence in slot t) or prefill (lanes 0..n-1 are consecutive tokens of the
#: sequence in `slot`, its state chained lane to lane). Slots of load_mask take their state from
#: the state buffer first, slots of store_mask write theirs back at the end; the others keep
#: theirs in the library between calls (device-private, "on chip"). HEAD: logits of every
#: active lane (FULL_LOGITS: written rows x lanes) and always its top-k (id, float bits), value
#: descending, lower id first on ties, id -1 for unused entries. Arithmetic: simple and exactly
#: reproducible, plus the weights' first byte on logit 0; x_in[0] (lane 0) can ask for a sleep
#: or a failure (status 7, nothing touched).
STUB_SOURCE = r"""
#include <string.h>
#include <unistd.h>
static unsigned long long last_cycles = 0;
static float priv[SLOTS][L_ * E];          // the device-private state of every slot
extern "C" int mmfree_abi(void) { return 3; }
extern "C" int mmfree_info(int* d, int* L, int* e, int* V) {
    *d = D; *L = L_; *e = E; *V = V_; return 0;
}
extern "C" int mmfree_lanes(int* lanes, int* slots, int* topk) {
    *lanes = LANES; *slots = SLOTS; *topk = TOPK; return 0;
}
extern "C" int mmfree_step(int n, int mode, int slot, unsigned load_mask, unsigned store_mask,
                           const float* x, float* state, float* logits, int* top, const unsigned char* w) {
    const unsigned all = SLOTS >= 32 ? 0xFFFFFFFFu : ((1u << SLOTS) - 1u);
    const int prefill = mode & 1, head = mode & 2, full = mode & 4;
    if (n < 1 || n > LANES || (!prefill && n > SLOTS) || slot < 0 || slot >= SLOTS || (mode & ~7)
        || (load_mask & ~all) || (store_mask & ~all) || !x || !top
        || ((load_mask | store_mask) && !state) || (full && !logits))
        return -2;
    if (x[0] == 1234.5f) usleep(SLEEP_US);
    if (x[0] == -999.0f) return 7;
    for (int b = 0; b < SLOTS; ++b)
        if (load_mask >> b & 1u)
            memcpy(priv[b], state + b * L_ * E, sizeof(priv[b]));
    for (int t = 0; t < n; ++t) {
        float* s = priv[prefill ? slot : t];
        const float* xt = x + t * D;
        for (int l = 0; l < L_; ++l)
            for (int i = 0; i < E; ++i)
                s[l * E + i] = 0.5f * s[l * E + i] + xt[i % D] + (float)l;
        if (!head)
            continue;
        int ids[TOPK];
        float vals[TOPK];
        int count = 0;
        for (int v = 0; v < V_; ++v) {
            float z = s[v % (L_ * E)] * (float)(v % 7 + 1);
            if (v == 0 && w) z += (float)w[0];
            if (full) logits[v * LANES + t] = z;
            int pos = count;                    // behind every entry >= z: ties keep the lower id first
            while (pos > 0 && vals[pos - 1] < z) --pos;
            if (pos >= TOPK) continue;
            for (int k = count < TOPK ? count : TOPK - 1; k > pos; --k) {
                vals[k] = vals[k - 1]; ids[k] = ids[k - 1];
            }
            vals[pos] = z; ids[pos] = v;
            if (count < TOPK) ++count;
        }
        for (int k = 0; k < TOPK; ++k) {           // row k: ids, row TOPK + k: value bits; lane-minor
            const float val = k < count ? vals[k] : 0.0f;
            top[k * LANES + t] = k < count ? ids[k] : -1;
            memcpy(&top[(TOPK + k) * LANES + t], &val, 4);
        }
    }
    if (head)                                   // the idle lanes: zero logits, no top-k entries
        for (int t = n; t < LANES; ++t) {
            if (full)
                for (int v = 0; v < V_; ++v) logits[v * LANES + t] = 0.0f;
            for (int k = 0; k < TOPK; ++k) { top[k * LANES + t] = -1; top[(TOPK + k) * LANES + t] = 0; }
        }
    for (int b = 0; b < SLOTS; ++b)
        if (store_mask >> b & 1u)
            memcpy(state + b * L_ * E, priv[b], sizeof(priv[b]));
    last_cycles = 1000ull + V_ + 10ull * n;
    return 0;
}
extern "C" unsigned long long mmfree_cycles(void) { return last_cycles; }
"""


def tiny_config(**overrides) -> ModelConfig:
    kw = dict(vocab_size=64, hidden_size=16, num_hidden_layers=2, intermediate_size=32,
              rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2)
    kw.update(overrides)
    return ModelConfig(**kw).validate()


def tiny_model(seed: int = 0, **overrides) -> MMFreeLM:
    return MMFreeLM.random(tiny_config(**overrides), seed=seed)


def build_abi_stub(out_dir: Path, d: int, L: int, e: int, V: int, sleep_us: int = 3_000_000,
                   name: str = "libmmfree_csim.so", lanes: int = 1, slots: int = 1, topk: int = 8) -> Path:
    """A C-sim library of the engine's ABI (N = ``lanes`` token lanes, B = ``slots`` state slots,
    a top-``topk`` per lane) with simple, exactly reproducible arithmetic (``StubEngine``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    src = out_dir / "abi_stub.cpp"
    src.write_text(STUB_SOURCE)
    lib = out_dir / name
    subprocess.run(["g++", "-O1", "-shared", "-fPIC", f"-DD={d}", f"-DL_={L}", f"-DE={e}",
                    f"-DV_={V}", f"-DSLEEP_US={sleep_us}", f"-DLANES={lanes}", f"-DSLOTS={slots}",
                    f"-DTOPK={topk}", str(src), "-o", str(lib)], check=True)
    return lib


def _stub_lane(x: np.ndarray, s: np.ndarray, V: int, w0: Optional[int] = None) -> np.ndarray:
    """One lane of the stub on state ``s`` (L, e) float32, in place; returns its logits (V,)."""
    L, e = s.shape
    x = np.asarray(x, np.float32)
    idx = np.arange(e) % x.shape[0]
    for l in range(L):
        s[l] = np.float32(0.5) * s[l] + x[idx] + np.float32(l)
    flat = s.ravel()
    logits = flat[np.arange(V) % (L * e)] * (np.arange(V) % 7 + 1).astype(np.float32)
    if w0 is not None:
        logits[0] += np.float32(w0)
    return logits


def stub_step(x: np.ndarray, state: np.ndarray, V: int, w0: Optional[int] = None):
    """numpy twin of one single-sequence step of the stub (float32, same operation order):
    (x (d,), s (L, e)) -> (logits (V,), new s); ``w0``: the weights' first byte (streamed)."""
    s = np.array(state, np.float32)
    return _stub_lane(x, s, V, w0), s


def stub_top(logits: np.ndarray, topk: int) -> tuple[np.ndarray, np.ndarray]:
    """The stub's (and the engine's) top-k of one lane as the host reads it: (values, ids)."""
    return top_k_of(np.asarray(logits, np.float32), topk)


class StubEngine:
    """numpy twin of the stub library, private state slots included: ``run`` takes a pass's
    arguments and returns what the host reads after it."""

    def __init__(self, d: int, L: int, e: int, V: int, lanes: int = 1, slots: int = 1, topk: int = 8,
                 w0: Optional[int] = None):
        self.d, self.L, self.e, self.V = d, L, e, V
        self.lanes, self.slots, self.topk, self.w0 = lanes, slots, topk, w0
        self.private = np.zeros((slots, L, e), np.float32)

    @classmethod
    def of(cls, model: MMFreeLM, preset, w0: Optional[int] = None) -> "StubEngine":
        c = model.config
        return cls(c.d, c.num_hidden_layers, c.state_size, c.vocab_size, preset.token_lanes,
                   preset.batch_slots, preset.topk, w0)

    def run(self, xs, *, prefill: bool = False, slot: int = 0, head: bool = True,
            load: Optional[dict] = None, store=()):
        """A pass on lanes ``xs`` (n, d); ``load``: {slot: state} taken first; ``store``: the slots
        returned. Returns (logits (n, V) or None, [(values, ids)] per lane or None, {slot: state})."""
        xs = np.atleast_2d(np.asarray(xs, np.float32))
        n = xs.shape[0]
        assert 1 <= n <= self.lanes and (prefill or n <= self.slots)
        for b, s in (load or {}).items():
            self.private[b] = np.asarray(s, np.float32).reshape(self.L, self.e)
        logits = []
        for t in range(n):
            logits.append(_stub_lane(xs[t], self.private[slot if prefill else t], self.V, self.w0))
        out = np.array(logits) if head else None
        top = [stub_top(z, self.topk) for z in logits] if head else None
        return out, top, {b: self.private[b].copy() for b in store}

    def step(self, x, state):
        """The host's single-sequence step (slot 0 in and out, every logit)."""
        logits, _, st = self.run([x], load={0: state}, store=[0])
        return logits[0], st[0]


# ------------------------------------------------------------------ fake board
class FakeBuffer(np.ndarray):
    """A numpy array with the pieces of pynq.PynqBuffer the backend uses, cacheable and not
    coherent: the array is the CPU's cached view, ``dram`` what the device reads and writes.
    ``flush`` writes the host's changes back; ``invalidate`` re-reads DRAM and discards host
    changes that were never flushed (recorded in ``lost``, as a write-back cache loses them)."""

    def _dirty(self) -> np.ndarray:
        return np.asarray(self) != self.clean

    def flush(self):
        self.log.append(("flush", self.name))
        cpu = np.asarray(self)
        dirty = self._dirty()
        self.dram[dirty] = cpu[dirty]
        self.clean[...] = cpu

    def invalidate(self):
        self.log.append(("invalidate", self.name))
        if self._dirty().any():
            self.lost.append(self.name)
        np.asarray(self)[...] = self.dram
        self.clean[...] = self.dram

    def freebuffer(self):
        self.log.append(("free", self.name))


class FakeAllocator:
    """pynq.allocate stand-in: contiguous arrays at distinct physical addresses (above 4 GiB,
    so the high word of each pointer register matters). Same signature as
    ``pynq.allocate(shape, dtype="u4", target=None, **kwargs)``; records ``cacheable``."""

    def __init__(self, log: list, base: int = 0x8_0000_0000):
        self.log, self.next_addr, self.by_addr = log, base, {}
        self.cacheable: list = []
        self.lost: list = []            # buffers whose unflushed host writes an invalidate discarded

    def __call__(self, shape, dtype="u4", target=None, **kwargs):
        unknown = set(kwargs) - {"cacheable"}
        if unknown:     # pynq passes these on to XRT's allocate, which takes nothing else
            raise TypeError(f"allocate() got unexpected keyword arguments {sorted(unknown)}")
        self.cacheable.append(kwargs.get("cacheable", 0))
        arr = np.zeros(shape, dtype=dtype).view(FakeBuffer)
        arr.device_address = self.next_addr
        arr.log, arr.lost = self.log, self.lost
        arr.name = f"buf@{self.next_addr:x}"
        arr.dram = np.zeros(shape, dtype=dtype)       # what the device sees
        arr.clean = np.zeros(shape, dtype=dtype)      # the cached copy as of the last flush/invalidate
        self.by_addr[self.next_addr] = arr
        self.next_addr += 0x100_0000
        return arr


class FakeMMIO:
    """AXI-Lite register file with ap_ctrl_hs behaviour; ap_start runs ``device``, whose
    return value (if any) lands in ap_return (0x10, where Vitis HLS puts it)."""

    AP_RETURN = 0x10

    def __init__(self, device=None, log=None):
        self.regs: dict[int, int] = {0: AP_IDLE}
        self.device = device
        self.log = log if log is not None else []
        self.writes: list[tuple[int, int]] = []      # every register write but ap_start: (offset, value)
        self.hang = 0                # number of starts that never finish (simulated hang)
        self.pending_done = False    # a hung step completes when the test says so

    def write(self, offset: int, value: int) -> None:
        # As pynq.MMIO.write_mm: a Python int (numpy integers are refused) or bytes.
        if offset < 0:
            raise ValueError("Offset cannot be negative.")
        if offset % 4:
            raise MemoryError("Unaligned write: offset must be multiple of 4.")
        if type(value) is not int:
            raise ValueError("Data type must be int or bytes.")
        assert 0 <= value < 1 << 32, (offset, value)     # pynq would wrap it silently
        if offset == 0 and value & AP_START:
            self.log.append(("start",))
            self.regs[0] = 0                         # busy: not idle, not done
            if self.hang:
                self.hang -= 1
                self.pending_done = True
                return
            self._run()
            return
        self.writes.append((offset, value))
        self.regs[offset] = value

    def _run(self) -> None:
        rc = self.device(self)
        if rc is not None:
            self.regs[self.AP_RETURN] = int(rc) & 0xFFFFFFFF
        self.regs[0] = AP_DONE | AP_IDLE

    def read(self, offset: int = 0, length: int = 4) -> int:
        if length != 4 or offset < 0 or offset % 4:
            raise ValueError(f"the backend reads aligned 32-bit words, got offset {offset} length {length}")
        v = int(self.regs.get(offset, 0))
        if offset == 0:
            self.regs[0] = v & ~AP_DONE              # ap_done is clear-on-read
        return v

    def finish_hung_step(self) -> None:
        """The hung step finally completes (as a slow device would)."""
        assert self.pending_done
        self.pending_done = False
        self._run()

    def pointer(self, offset: int) -> int:
        return self.regs.get(offset, 0) | (self.regs.get(offset + 4, 0) << 32)


def _signed32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def pass_arguments(registers: dict, read) -> dict:
    """The pass's scalars from the register file: ``read(offset)`` → 32-bit word; n, mode and
    slot are C ints (signed), the masks unsigned."""
    args = {}
    for name in SCALARS:
        r = registers[name]
        assert r.get("kind") == "scalar", (name, r)
        v = int(read(int(r["offset"]))) & 0xFFFFFFFF
        args[name] = v if name.endswith("_mask") else _signed32(v)
    return args


def bad_pass(args: dict, lanes: int, slots: int) -> bool:
    """Arguments the engine refuses (status -2), as mmfree_step checks them."""
    n, mode, slot = args["n"], args["mode"], args["slot"]
    every = (1 << slots) - 1
    return (not 1 <= n <= lanes or (not mode & MODE_PREFILL and n > slots) or not 0 <= slot < slots
            or mode & ~7 or args["load_mask"] & ~every or args["store_mask"] & ~every)


class ReferenceDevice:
    """The 'hardware': a pass of the numpy reference on the addressed buffers.

    Reads the pass's scalar registers; its masters read x_in (n lanes) and the state slots of
    load_mask from DRAM, write the slots of store_mask back, the logits (HEAD and FULL_LOGITS,
    V rows x N lanes) and the top-k (HEAD). Lane t runs ``MMFreeLM.decode_step``: in batch mode
    on slot t's state, in prefill mode the lanes in order on ``slot``'s state. The slots' states
    are the device's own between passes (float32, as the buffer holds them)."""

    def __init__(self, model: MMFreeLM, registers: dict, allocator: FakeAllocator):
        self.model, self.registers, self.alloc = model, registers, allocator
        cfg = model.config
        self.L, self.e, self.d, self.V = cfg.num_hidden_layers, cfg.state_size, cfg.d, cfg.vocab_size
        self.private: Optional[np.ndarray] = None      # (slots, L, e), allocated on the first pass
        self.steps = 0
        self.passes: list[dict] = []

    def __call__(self, mmio: FakeMMIO) -> int:
        # The device's masters see DRAM, not the CPU's cache.
        buf = {name: self.alloc.by_addr[mmio.pointer(r["offset"])].dram for name, r in self.registers.items()
               if r.get("kind", "pointer") == "pointer" and name in ("x_in", "state", "logits", "top")}
        args = pass_arguments(self.registers, lambda off: mmio.regs.get(off, 0))
        lanes = buf["x_in"].size // self.d
        slots = buf["state"].size // (self.L * self.e)
        topk = buf["top"].size // (2 * lanes)
        if self.private is None:
            self.private = np.zeros((slots, self.L, self.e), np.float32)
        self.passes.append(args)
        if bad_pass(args, lanes, slots):
            return STUB_BAD_ARGS
        n, mode, slot = args["n"], args["mode"], args["slot"]
        states = buf["state"].reshape(slots, self.L, self.e)
        for b in range(slots):
            if args["load_mask"] >> b & 1:
                self.private[b] = states[b]
        x = buf["x_in"].reshape(lanes, self.d)
        logits = np.zeros((lanes, self.V), np.float32)
        for t in range(n):
            b = slot if mode & MODE_PREFILL else t
            z, new = self.model.decode_step(x[t].astype(np.float64), self.private[b].astype(np.float64))
            self.private[b] = new
            logits[t] = z
        if mode & MODE_HEAD:
            if mode & MODE_FULL_LOGITS:
                buf["logits"][:] = logits.T.reshape(-1)
            rows = np.zeros((2, topk, lanes), np.int32)      # ids, then value bits; lane-minor
            rows[0] = -1
            for t in range(n):
                vals, ids = top_k_of(logits[t], topk)
                rows[0, :len(ids), t] = ids
                rows[1, :len(ids), t] = vals.astype(np.float32).view(np.int32)
            buf["top"][:] = rows.reshape(-1)
        for b in range(slots):
            if args["store_mask"] >> b & 1:
                states[b] = self.private[b]
        self.steps += 1
        return 0


# ------------------------------------------------------------------ a model with clear margins
def margin_model(d: int = 32, L: int = 2, V: int = 64, embed_scale: float = 3.0, seed: int = 0) -> MMFreeLM:
    """A random model whose next token is decided by clear logit margins.

    Random weights give near-ties (top-2 logit gaps of 0.1 % of the logit range)
    that no fixed-point design reproduces token for token. Here the embeddings
    dominate the residual stream and the head maps each token's embedding to a
    successor (a random permutation), so greedy decoding walks a long cycle
    with margins of ~15 % of the logit range, while every layer still
    contributes (random block weights, the recurrence, the lower bounds).
    """
    from mmfree_hls.reference import init_random_state_dict

    cfg = tiny_config(hidden_size=d, num_hidden_layers=L, vocab_size=V, intermediate_size=2 * d)
    sd = init_random_state_dict(cfg, seed=seed)
    rng = np.random.default_rng(seed)
    emb = (rng.standard_normal((V, d)) * embed_scale).astype(np.float32)
    successor = rng.permutation(V)
    head = np.empty_like(emb)
    head[successor] = emb / np.sqrt(d)          # logit of successor[t] peaks when x ≈ emb[t]
    sd["model.embeddings.weight"] = emb
    sd["lm_head.weight"] = head
    return MMFreeLM(cfg, sd)


def greedy_margins(model: MMFreeLM, prompt, n: int) -> np.ndarray:
    """Top-1 minus top-2 logit along the reference's greedy path (n steps)."""
    state = model.init_state()

    def step(tok: int) -> np.ndarray:
        nonlocal state
        logits, state = model.step(tok, state)
        return logits
    margins: list = []
    greedy_decode(step, prompt, n, margins=margins)
    return np.asarray(margins)


# ------------------------------------------------------------------ the real pynq package, faked below it
# Used by tests/test_*real_pynq*.py in the board-side venv (.venv-board: numpy + pynq 4.0.0).
# pynq's own Overlay (metadata parser), MMIO, allocate and PynqBuffer run unchanged; what is
# replaced is what a PYNQ image provides underneath them: XRT (pyxrt buffer objects and the
# xclbinutil tool), the FPGA manager, /dev/mem and munmap. The DDR behind the buffers has a
# write-back CPU cache that is NOT coherent with the IP's masters: host writes stay in the cache
# until a flush (bo.sync to device), an invalidate (bo.sync from device) discards the cached
# lines — dirty ones included, as Arm's invalidate-by-range does — and the IP reads and writes
# DRAM only. The IP is a register file with ap_ctrl_hs semantics whose start runs the C-simulation
# step (through the project's CSimBackend) on the buffers its pointer registers address.

CACHE_LINE = {"zynq_ultra": 64, "zynq7": 32}   # bytes (Cortex-A53, Cortex-A9 + PL310)
_BO_CACHEABLE = 1 << 24         # pyxrt.bo.flags.cacheable (XRT's XCL_BO_FLAGS_CACHEABLE)


class PhysicalMemory:
    """DDR as the IP sees it: allocations from a CMA window, and every access checked."""

    def __init__(self, base: int = 0x6000_0000, page: int = 4096):
        self.next, self.page = base, page
        self.live: dict[int, np.ndarray] = {}         # phys address → bytes (uint8)
        self.freed: dict[int, int] = {}               # phys address → size
        self.violations: list[str] = []               # DMA outside live allocations

    def alloc(self, size: int) -> tuple[int, np.ndarray]:
        addr = self.next
        self.next += -(-size // self.page) * self.page
        self.live[addr] = np.zeros(size, np.uint8)
        return addr, self.live[addr]

    def free(self, addr: int) -> None:
        self.freed[addr] = self.live.pop(addr).size

    def _find(self, addr: int, nbytes: int, what: str) -> Optional[np.ndarray]:
        for base, mem in self.live.items():
            if base <= addr and addr + nbytes <= base + mem.size:
                return mem[addr - base: addr - base + nbytes]
        state = "freed" if any(b <= addr < b + n for b, n in self.freed.items()) else "unallocated"
        self.violations.append(f"{what} of {nbytes} bytes at 0x{addr:x}: {state} memory")
        return None

    def read(self, addr: int, nbytes: int) -> np.ndarray:
        mem = self._find(addr, nbytes, "IP read")
        return np.zeros(nbytes, np.uint8) if mem is None else mem.copy()

    def write(self, addr: int, data: np.ndarray) -> None:
        mem = self._find(addr, data.nbytes, "IP write")
        if mem is not None:
            mem[:] = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)


class CachedBo:
    """pyxrt.bo: one XRT buffer object; a cacheable one has a write-back cache in front."""

    def __init__(self, board: "FakeBoard", size: int, flags: int, memidx: int):
        self.board, self.flags, self.memidx = board, flags, memidx
        self.cacheable = bool(flags & _BO_CACHEABLE)
        self.paddr, self.dram = board.memory.alloc(size)
        # The CPU's view: a cached copy (cacheable), or DRAM itself (uncached mapping).
        self.cpu = self.dram.copy() if self.cacheable else self.dram
        self.clean = self.dram.copy()                 # what the cached lines held when last clean
        self.vaddr = self.cpu.__array_interface__["data"][0]     # where pynq maps it
        self.released = False
        board.bos.append(self)

    # pyxrt.bo methods pynq calls
    def map(self):
        return memoryview(self.cpu)

    def size(self) -> int:
        return int(self.dram.size)

    def address(self) -> int:
        return self.paddr

    def _dirty_lines(self) -> np.ndarray:
        line = self.board.cache_line
        n = -(-self.cpu.size // line) * line
        diff = np.zeros(n, bool)
        diff[:self.cpu.size] = self.cpu != self.clean
        return np.flatnonzero(diff.reshape(-1, line).any(axis=1))

    def sync(self, direction) -> None:
        self.board.log.append(("sync", direction, self.paddr))
        if not self.cacheable:
            return
        lines = self._dirty_lines()
        if direction == FakePyxrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE:      # clean
            line = self.board.cache_line
            for i in lines:
                s = slice(i * line, (i + 1) * line)
                self.dram[s] = self.cpu[s]
            self.clean[:] = self.cpu
        else:                                                                      # invalidate
            if len(lines):
                self.board.lost_writes.append((self.paddr, len(lines)))
            self.cpu[:] = self.dram
            self.clean[:] = self.dram

    def dirty(self) -> bool:
        return self.cacheable and len(self._dirty_lines()) > 0


class FakePyxrt:
    """The pyxrt module as pynq's XRT device uses it."""

    class xclBOSyncDirection:
        XCL_BO_SYNC_BO_TO_DEVICE = "to_device"
        XCL_BO_SYNC_BO_FROM_DEVICE = "from_device"

    class xrt_info_device:
        bdf = "bdf"; dynamic_regions = "dynamic_regions"; electrical = "electrical"; host = "host"
        m2m = "m2m"; max_clock_frequency_mhz = "max_clock_frequency_mhz"; mechanical = "mechanical"
        memory = "memory"; name = "name"; pcie_info = "pcie_info"; thermal = "thermal"; vmr = "vmr"

    def __init__(self, board: "FakeBoard"):
        self.board = board
        outer = self

        class bo(CachedBo):
            class flags:
                normal = 0
                cacheable = _BO_CACHEABLE

            def __init__(self, handle, size, flags, memidx):
                super().__init__(outer.board, size, flags, memidx)

        class device:
            def __init__(self, index):
                self.index = index

            def get_info(self, key):
                return {"name": "edge", "max_clock_frequency_mhz": [250, 0, 0, 0]}.get(key, 0)

            def load_xclbin(self, path):
                outer.board.log.append(("load_xclbin", path))

        self.bo, self.device = bo, device


class FakeLibc:
    """libc as pynq's buffer code uses it: munmap of a buffer's mapping (and the BO release).
    Installed once for the process: a PynqBuffer may be garbage-collected after its test."""

    boards: list = []

    def munmap(self, ptr, length) -> int:
        addr = ptr.value if hasattr(ptr, "value") else int(ptr)
        for board in self.boards:
            for bo in board.bos:
                if not bo.released and bo.vaddr == addr:
                    bo.released = True
                    board.memory.free(bo.paddr)
                    board.log.append(("munmap", bo.paddr))
                    return 0
        raise AssertionError(f"munmap of 0x{addr:x}: not a mapped buffer")


class EngineRegisters:
    """/dev/mem over the IP's AXI-Lite slave: Vitis HLS ap_ctrl_hs registers whose ap_start
    runs one step of the engine model. Indexed in 32-bit words, as pynq.MMIO indexes it."""

    def __init__(self, board: "FakeBoard"):
        self.board, self.regs = board, {0: AP_IDLE}
        self.hang = 0                # starts that stay busy until finish_hung_step()
        self.finish_after_reads = None   # a hung step ends after this many CTRL reads (slow device)
        self.busy = False

    def __len__(self):
        return 0x10000 // 4

    def __getitem__(self, idx: int) -> np.uint32:
        off = int(idx) * 4
        if off == 0 and self.busy and self.finish_after_reads is not None:
            self.finish_after_reads -= 1
            if self.finish_after_reads <= 0:
                self.finish_after_reads = None
                self.finish()
        v = self.regs.get(off, 0)
        self.board.log.append(("read", off))
        if off == 0:
            self.regs[0] = v & ~AP_DONE                     # ap_done is clear-on-read
        return np.uint32(v)

    def __setitem__(self, idx: int, value) -> None:
        off, value = int(idx) * 4, int(value)
        self.board.log.append(("write", off, value))
        if off == 0:
            if value & AP_START and not self.busy:
                self.regs[0] = 0                             # busy: not idle, not done
                self.busy = True
                if self.hang:
                    self.hang -= 1
                    return
                self.finish()
            return
        self.regs[off] = value & 0xFFFFFFFF

    def pointer(self, off: int) -> int:
        return self.regs.get(off, 0) | (self.regs.get(off + 4, 0) << 32)

    def finish(self) -> None:
        """The started step runs to its end: DMA in, C-simulation step, DMA out, ap_done."""
        rc = self.board.engine(self)
        ret = self.board.ip.get("ap_return")
        if ret:
            self.regs[int(ret["offset"])] = rc & 0xFFFFFFFF
        self.regs[0] = AP_DONE | AP_IDLE | 0x8              # done, idle, ready
        self.busy = False

    def finish_hung_step(self) -> None:
        assert self.busy
        self.finish()


class EngineModel:
    """The IP's datapath: it reads the pass's scalar registers; its masters read x_in (n lanes),
    the state slots of load_mask and the weights from DRAM at the addresses in its pointer
    registers; one C-simulation pass runs on them (the library keeps the slots' states between
    passes, as the chip does); the state slots of store_mask, the logits (HEAD and FULL_LOGITS)
    and the top-k (HEAD) go back to DRAM. Nothing else is touched."""

    def __init__(self, board: "FakeBoard", csim, layout, ip: dict):
        self.board, self.csim, self.layout, self.ip = board, csim, layout, ip
        self.buffers = csim.allocate(layout)
        self.region_bytes = ip.get("region_bytes")
        self.region_offset = int(ip.get("region_offset", 0))
        self.steps = 0
        self.passes: list[dict] = []
        self.weights_seen: Optional[np.ndarray] = None

    def _dma_in(self, regs, name: str, start: int, count: int) -> None:
        """``count`` elements of buffer ``name`` from element ``start``: DRAM → the IP."""
        arr = self.buffers[name]
        size = arr.dtype.itemsize
        addr = regs.pointer(int(self.ip["registers"][name]["offset"])) + start * size
        arr[start:start + count] = self.board.memory.read(addr, count * size).view(arr.dtype)

    def _dma_out(self, regs, name: str, start: int, count: int) -> None:
        arr = self.buffers[name]
        addr = regs.pointer(int(self.ip["registers"][name]["offset"])) + start * arr.dtype.itemsize
        self.board.memory.write(addr, arr[start:start + count])

    def __call__(self, regs: EngineRegisters) -> int:
        mem, R, lay = self.board.memory, self.ip["registers"], self.layout
        args = pass_arguments(R, lambda off: regs.regs.get(off, 0))
        self.passes.append(args)
        if bad_pass(args, lay.lanes, lay.slots):
            return STUB_BAD_ARGS & 0xFFFFFFFF
        n, mode, Le = args["n"], args["mode"], lay.L * lay.e
        self._dma_in(regs, "x_in", 0, n * lay.d)
        for b in range(lay.slots):
            if args["load_mask"] >> b & 1:
                self._dma_in(regs, "state", b * Le, Le)
        ports = sorted((p for p in R if p[:1] == "w" and p[1:].isdigit()), key=lambda p: int(p[1:]))
        if ports:
            # Each weight master streams its own region; the header (if any) sits before w0's.
            w0 = regs.pointer(int(R[ports[0]]["offset"]))
            parts = [mem.read(w0 - self.region_offset, self.region_offset)]
            parts += [mem.read(regs.pointer(int(R[p]["offset"])), self.region_bytes) for p in ports]
            image = np.zeros(lay.weight_bytes, np.uint8)
            seen = np.concatenate(parts)[:image.size]
            image[:seen.size] = seen
            self.weights_seen = image
            self.buffers["weights"][...] = image
        try:
            self.csim.run(**args)
            rc = 0
        except AcceleratorError:   # a non-zero return of the pass: ap_return carries it
            rc = int(getattr(self.csim, "_rc", None) or 1)
        # The writes do not depend on the status (the pass runs to its end either way).
        if mode & MODE_HEAD:
            if mode & MODE_FULL_LOGITS:
                self._dma_out(regs, "logits", 0, lay.V * lay.lanes)
            self._dma_out(regs, "top", 0, 2 * lay.lanes * lay.topk)
        for b in range(lay.slots):
            if args["store_mask"] >> b & 1:
                self._dma_out(regs, "state", b * Le, Le)
        self.steps += 1
        return rc


def bitstream_bytes(design: str, part: str, payload: bytes = b"\x00" * 64) -> bytes:
    """A .bit file: Xilinx's header (design, part, date, time) and a payload. The FPGA
    manager is faked, so the payload is never configured; pynq parses the header."""
    import struct

    def field(tag: bytes, text: str) -> bytes:
        b = text.encode() + b"\x00"
        return tag + struct.pack(">h", len(b)) + b
    head = struct.pack(">h", 9) + bytes.fromhex("0ff00ff00ff00ff000") + struct.pack(">h", 1)
    return (head + field(b"a", f"{design};UserID=0XFFFFFFFF;Version=2024.2") + field(b"b", part)
            + field(b"c", "2026/12/04") + field(b"d", "12:00:00") + b"e"
            + struct.pack(">i", len(payload)) + payload)


XCLBINUTIL = r'''#!{python}
"""xclbinutil stand-in: --add-section=KIND:FORMAT:FILE ... --output OUT (RAW metadata, JSON mem topology)."""
import ctypes, json, sys
from pynq._3rdparty import xclbin as X
args = sys.argv[1:]
sections, out = [], None
for i, a in enumerate(args):
    if a.startswith("--add-section="):
        kind, fmt, path = a.split("=", 1)[1].split(":")
        sections.append((kind, fmt, path))
    elif a == "--output":
        out = args[i + 1]
blobs = []
for kind, fmt, path in sections:
    if kind == "EMBEDDED_METADATA":
        blobs.append((X.AXLF_SECTION_KIND.EMBEDDED_METADATA, open(path, "rb").read()))
    elif kind == "MEM_TOPOLOGY":
        mems = json.load(open(path))["mem_topology"]["m_mem_data"]
        class Topo(ctypes.Structure):
            _fields_ = [("m_count", ctypes.c_int32), ("m_mem_data", X.mem_data * len(mems))]
        t = Topo(); t.m_count = len(mems)
        for m, d in zip(t.m_mem_data, mems):
            m.m_type, m.m_used = 1, int(d["m_used"])
            m.m_size, m.m_base_address = int(d["m_sizeKB"]), int(d["m_base_address"])
            m.m_tag = d["m_tag"].encode()
        blobs.append((X.AXLF_SECTION_KIND.MEM_TOPOLOGY, bytes(t)))
    else:
        sys.exit(f"unsupported section {{kind}}")
class Axlf(ctypes.Structure):
    _fields_ = [("m_magic", ctypes.c_char * 8), ("m_cipher", ctypes.c_ubyte * 32),
                ("m_keyBlock", ctypes.c_ubyte * 256), ("m_uniqueId", ctypes.c_uint64),
                ("m_header", X.axlf_header), ("m_sections", X.axlf_section_header * len(blobs))]
head = Axlf(); head.m_magic = b"xclbin2"; head.m_header.m_numSections = len(blobs)
offset, data = ctypes.sizeof(Axlf), b""
for s, (kind, blob) in zip(head.m_sections, blobs):
    s.m_sectionKind, s.m_sectionOffset, s.m_sectionSize = kind, offset + len(data), len(blob)
    data += blob
head.m_header.m_length = offset + len(data)
open(out, "wb").write(bytes(head) + data)
'''


class FakeBoard:
    """A Zynq board under the real pynq package (see the section comment above): ``ps`` is
    ``"zynq_ultra"`` (ZynqMP, Cortex-A53) or ``"zynq7"`` (Zynq-7000, Cortex-A9).

    ``install(monkeypatch)`` makes it pynq's active device; ``attach_engine`` wires the IP model
    once the overlay package (and so the C-simulation library) is known."""

    IP_BASES = {"zynq_ultra": 0xA000_0000, "zynq7": 0x4000_0000}     # the PS control master's window

    #: where the contiguous-memory pool starts (inside the DDR both PS types map to the PL)
    CMA_BASES = {"zynq_ultra": 0x6000_0000, "zynq7": 0x1600_0000}

    def __init__(self, tmp: Path, ps: str = "zynq_ultra", cma_base: Optional[int] = None):
        self.tmp = Path(tmp)
        self.ps = ps
        self.cache_line = CACHE_LINE[ps]
        self.IP_BASE = self.IP_BASES[ps]
        self.memory = PhysicalMemory(self.CMA_BASES[ps] if cma_base is None else cma_base)
        self.bos: list[CachedBo] = []
        self.log: list = []
        self.lost_writes: list = []          # (phys address, dirty lines an invalidate discarded)
        self.fpga_manager: list = []
        self.regs = EngineRegisters(self)
        self.ps_pages: dict[int, np.ndarray] = {}
        self.engine = None
        self.ip: dict = {}
        self.device = None

    def install(self, monkeypatch) -> "FakeBoard":
        import sys

        import pynq.buffer
        from pynq.pl_server import device as pdevice
        from pynq.pl_server import embedded_device, xrt_device

        import ctypes

        board = self
        pyxrt = FakePyxrt(self)
        monkeypatch.setattr(xrt_device, "pyxrt", pyxrt, raising=False)
        monkeypatch.setattr(embedded_device, "pyxrt", pyxrt, raising=False)
        FakeLibc.boards.append(self)
        for mod in (pynq.buffer, xrt_device):        # what pynq imports only on a board
            if not isinstance(getattr(mod, "libc", None), FakeLibc):
                mod.libc, mod.ctypes = FakeLibc(), ctypes
        tool = self.tmp / "bin" / "xclbinutil"
        tool.parent.mkdir(parents=True, exist_ok=True)
        tool.write_text(XCLBINUTIL.format(python=sys.executable))
        tool.chmod(0o755)
        monkeypatch.setenv("PATH", f"{tool.parent}:{__import__('os').environ['PATH']}")

        class BoardDevice(embedded_device.EmbeddedDevice):
            """pynq's EmbeddedDevice with the kernel interfaces it touches replaced."""

            def _find_sysfs(self):
                self.sysfs_path = None

            def mmap(self, base_addr, length):              # /dev/mem
                if base_addr == board.IP_BASE:
                    return board.regs
                page = base_addr & ~0xFFF
                if page not in board.ps_pages:
                    board.ps_pages[page] = np.zeros(0x1000 // 4, np.uint32)
                return board.ps_pages[page][(base_addr - page) // 4:][: length // 4]

            def write_fpga_manager(self, attribute, value):
                board.fpga_manager.append((attribute, value))

            def _xrt_download(self, data):
                board.log.append(("xclbin", len(data)))

            def download(self, bitstream, parser=None):
                # EmbeddedDevice.download without the firmware file and the metadata cache
                # (both written into system directories); the rest runs as on a board.
                bitstream.binfile_name = Path(bitstream.bitfile_name).stem + ".bin"
                board.fpga_manager.append(("bin", len(parser.bin_data)))
                self.write_fpga_manager(self.BS_FPGA_MAN_FLAGS, "0")
                self.write_fpga_manager(self.BS_FPGA_MAN, bitstream.binfile_name)
                self.set_axi_port_width(parser)
                self._xrt_download(parser.xclbin_data)
                pdevice.Device.post_download(self, bitstream, parser, self.name)

        dev = BoardDevice()
        dev.arch = {"zynq_ultra": "aarch64", "zynq7": "armv7l"}[self.ps]
        self._boot_clocks()
        monkeypatch.setattr(pdevice.Device, "_active_device", dev, raising=False)
        from pynq.ps import Clocks
        for attr in ("_real_instance", "device"):
            if attr in vars(Clocks):
                monkeypatch.delattr(Clocks, attr)
        self.device = dev
        return self

    def _boot_clocks(self) -> None:
        """The PLL settings the board boots with: ZynqMP IOPLL 1500 MHz from 33.3 MHz,
        Zynq-7000 IO PLL 1000 MHz from 50 MHz."""
        from pynq.ps import ZU_CRF_REGISTERS, ZU_CRL_REGISTERS, ZYNQ_SLCR_REGISTERS
        from pynq.registers import RegisterMap
        if self.ps == "zynq7":
            slcr = np.zeros(0x1000 // 4, np.uint32)
            self.ps_pages[0xF8000000] = slcr
            regs = RegisterMap.create_subclass("SL", ZYNQ_SLCR_REGISTERS)(slcr)
            regs.IO_PLL_CTRL.PLL_FDIV, regs.ARM_PLL_CTRL.PLL_FDIV, regs.DDR_PLL_CTRL.PLL_FDIV = 20, 26, 21
            return
        crl = np.zeros(0x1000 // 4, np.uint32)
        crf = np.zeros(0x1000 // 4, np.uint32)
        self.ps_pages[0xFF5E0000], self.ps_pages[0xFD1A0000] = crl, crf
        crl_map = RegisterMap.create_subclass("CRL", ZU_CRL_REGISTERS)(crl)
        crf_map = RegisterMap.create_subclass("CRF", ZU_CRF_REGISTERS)(crf)
        crl_map.IOPLL_CTRL.FBDIV, crl_map.IOPLL_CTRL.DIV2 = 90, 1
        crl_map.RPLL_CTRL.FBDIV, crl_map.RPLL_CTRL.DIV2 = 72, 1
        crf_map.DPLL_CTRL.FBDIV, crf_map.DPLL_CTRL.DIV2 = 64, 1

    def attach_engine(self, manifest, csim) -> EngineModel:
        self.ip = manifest.data["ip"]
        self.engine = EngineModel(self, csim, manifest.layout, self.ip)
        return self.engine

    def pl_clock_mhz(self, idx: int = 0) -> float:
        from pynq.ps import Clocks
        return Clocks._instance.get_pl_clk(idx)


def edit_manifest(root: Path, mutate) -> None:
    """Apply ``mutate`` to an overlay's manifest.json in place."""
    path = Path(root) / "manifest.json"
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))


def rehash_manifest(root: Path) -> None:
    """Make the file table consistent again, so a deeper check has to catch the problem."""
    from mmfree_hls.runtime.manifest import list_package_files, sha256_file

    def m(d):
        d["files"] = {rel: {"sha256": sha256_file(Path(root) / rel), "bytes": (Path(root) / rel).stat().st_size}
                      for rel in list_package_files(Path(root))}
    edit_manifest(root, m)


def stub_overlay(out: Path, model, board: str = "pynq-z2", tier: str = "on-chip", packing: str = "2bit",
                 name: str = "stub", sleep_us: int = 0, knobs: Optional[dict] = None, **kwargs):
    """An overlay of ``model`` around the ABI-3 stub library, with the engine record (and, for the
    streamed tier, the engine's own weights buffer) of (board, tier, packing) and the preset's
    knobs overridden by ``knobs`` (e.g. batch_slots, prefill_chunk, topk); the stub is built for
    the preset's lanes, slots and top-k."""
    from mmfree_hls.engine.layout import Shape, build_image, weights_buffer
    from mmfree_hls.engine.presets import get_preset
    from mmfree_hls.engine.project import engine_record
    from mmfree_hls.overlay import build_overlay

    c = model.config
    preset = get_preset(board, tier, **(knobs or {}))
    weights = None
    if preset.K:
        weights = weights_buffer(build_image(model, packing, preset.R), Shape.of(c, packing, preset.R),
                                 preset.K, preset.port_bytes)
    lib = build_abi_stub(Path(out).parent / f"{Path(out).name}_lib", c.d, c.num_hidden_layers, c.state_size,
                         c.vocab_size, sleep_us=sleep_us, lanes=preset.token_lanes, slots=preset.batch_slots,
                         topk=preset.topk)
    return build_overlay(out, model=model, board=board, name=name, csim_library=lib,
                         engine=engine_record(c, preset, packing), weights=weights, **kwargs)

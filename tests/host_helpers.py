"""Test doubles for the host runtime (used by test_manifest / test_accelerator).

* ``build_abi_stub``: a few lines of C++ exporting the contract-2 ABI
  (``mmfree_step``, ``mmfree_info``) with simple, exactly reproducible
  arithmetic. It tests the ctypes binding and the package plumbing, not the
  model: accuracy is tested against the real C-simulation library.
* ``FakeMMIO`` + ``FakeAllocator`` + ``ReferenceDevice``: an AXI-Lite register
  file with Vitis HLS ap_ctrl_hs semantics (ap_done clear-on-read) whose
  "hardware" runs ``MMFreeLM.decode_step`` on the buffers the pointer registers
  point at. Drives the pynq backend's register, address and cache logic on
  plain numpy arrays.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from mmfree_hls.config import ModelConfig
from mmfree_hls.reference import MMFreeLM

AP_START, AP_DONE, AP_IDLE = 0x1, 0x2, 0x4
#: x_in[0] value that makes the stub sleep (to provoke a timeout) and one that makes it fail.
STUB_SLEEP_MARK = 1234.5
STUB_FAIL_MARK = -999.0

STUB_SOURCE = r"""
#include <unistd.h>
extern "C" int mmfree_info(int* d, int* L, int* e, int* V) {
    *d = D; *L = L_; *e = E; *V = V_; return 0;
}
extern "C" int mmfree_step(const float* x, float* s, float* logits) {
    if (x[0] == 1234.5f) usleep(SLEEP_US);
    if (x[0] == -999.0f) return 7;
    for (int l = 0; l < L_; ++l)
        for (int i = 0; i < E; ++i)
            s[l * E + i] = 0.5f * s[l * E + i] + x[i % D] + (float)l;
    for (int v = 0; v < V_; ++v)
        logits[v] = s[v % (L_ * E)] * (float)(v % 7 + 1);
    return 0;
}
// The streamed tier's C-sim entry: the weight buffer in front; here its first byte is added
// to logits[0] so a test can see the buffer arrived.
extern "C" int mmfree_streamed_step(const unsigned char* w, const float* x, float* s, float* logits) {
    int rc = mmfree_step(x, s, logits);
    logits[0] += (float)w[0];
    return rc;
}
"""


def tiny_config(**overrides) -> ModelConfig:
    kw = dict(vocab_size=64, hidden_size=16, num_hidden_layers=2, intermediate_size=32,
              rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2)
    kw.update(overrides)
    return ModelConfig(**kw).validate()


def tiny_model(seed: int = 0, **overrides) -> MMFreeLM:
    return MMFreeLM.random(tiny_config(**overrides), seed=seed)


def build_abi_stub(out_dir: Path, d: int, L: int, e: int, V: int, sleep_us: int = 3_000_000,
                   name: str = "libmmfree_csim.so") -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    src = out_dir / "abi_stub.cpp"
    src.write_text(STUB_SOURCE)
    lib = out_dir / name
    subprocess.run(["g++", "-O1", "-shared", "-fPIC", f"-DD={d}", f"-DL_={L}", f"-DE={e}",
                    f"-DV_={V}", f"-DSLEEP_US={sleep_us}", str(src), "-o", str(lib)], check=True)
    return lib


def stub_step(x: np.ndarray, state: np.ndarray, V: int):
    """numpy twin of the stub's arithmetic (float32, same operation order)."""
    L, e = state.shape
    d = x.shape[0]
    s = state.astype(np.float32).copy()
    x = x.astype(np.float32)
    for l in range(L):
        s[l] = np.float32(0.5) * s[l] + x[np.arange(e) % d] + np.float32(l)
    flat = s.ravel()
    logits = flat[np.arange(V) % (L * e)] * (np.arange(V) % 7 + 1).astype(np.float32)
    return logits, s


# ------------------------------------------------------------------ fake board
class FakeBuffer(np.ndarray):
    """A numpy array with the pieces of pynq.PynqBuffer the backend uses."""

    def flush(self):
        self.log.append(("flush", self.name))

    def invalidate(self):
        self.log.append(("invalidate", self.name))

    def freebuffer(self):
        self.log.append(("free", self.name))


class FakeAllocator:
    """pynq.allocate stand-in: contiguous arrays at distinct physical addresses (above 4 GiB,
    so the high word of each pointer register matters). Same signature as
    ``pynq.allocate(shape, dtype="u4", target=None, **kwargs)``; records ``cacheable``."""

    def __init__(self, log: list, base: int = 0x8_0000_0000):
        self.log, self.next_addr, self.by_addr = log, base, {}
        self.cacheable: list = []

    def __call__(self, shape, dtype="u4", target=None, **kwargs):
        unknown = set(kwargs) - {"cacheable"}
        if unknown:     # pynq passes these on to XRT's allocate, which takes nothing else
            raise TypeError(f"allocate() got unexpected keyword arguments {sorted(unknown)}")
        self.cacheable.append(kwargs.get("cacheable", 0))
        arr = np.zeros(shape, dtype=dtype).view(FakeBuffer)
        arr.device_address = self.next_addr
        arr.log = self.log
        arr.name = f"buf@{self.next_addr:x}"
        self.by_addr[self.next_addr] = arr
        self.next_addr += 0x100_0000
        return arr


class FakeMMIO:
    """AXI-Lite register file with ap_ctrl_hs behaviour; ap_start runs ``device``."""

    def __init__(self, device=None, log=None):
        self.regs: dict[int, int] = {0: AP_IDLE}
        self.device = device
        self.log = log if log is not None else []
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
            self.device(self)
            self.regs[0] = AP_DONE | AP_IDLE
            return
        self.regs[offset] = value

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
        self.device(self)
        self.pending_done = False
        self.regs[0] = AP_DONE | AP_IDLE

    def pointer(self, offset: int) -> int:
        return self.regs.get(offset, 0) | (self.regs.get(offset + 4, 0) << 32)


class ReferenceDevice:
    """The 'hardware': decode_step of the numpy reference on the addressed buffers."""

    def __init__(self, model: MMFreeLM, registers: dict, allocator: FakeAllocator):
        self.model, self.registers, self.alloc = model, registers, allocator
        self.steps = 0

    def __call__(self, mmio: FakeMMIO) -> None:
        buf = {name: self.alloc.by_addr[mmio.pointer(r["offset"])] for name, r in self.registers.items()}
        cfg = self.model.config
        state = np.asarray(buf["state"]).reshape(cfg.num_hidden_layers, cfg.state_size)
        logits, new = self.model.decode_step(np.asarray(buf["x_in"], dtype=np.float64),
                                             state.astype(np.float64))
        state[:] = new
        buf["logits"][:] = logits
        self.steps += 1


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
    state, logits = None, None
    for t in prompt:
        logits, state = model.step(t, state)
    out = []
    for _ in range(n):
        top2 = np.sort(logits)[-2:]
        out.append(top2[1] - top2[0])
        logits, state = model.step(int(np.argmax(logits)), state)
    return np.asarray(out)


class StreamedReferenceDevice:
    """The streamed top as the board runs it: the state lives inside the device, a scalar
    register starts a new sequence, ap_return = 1 when the weight buffer's header is wrong."""

    def __init__(self, model: MMFreeLM, ip: dict, allocator: FakeAllocator):
        self.model, self.ip, self.alloc = model, ip, allocator
        self.state = model.init_state()
        self.resets: list[int] = []

    def __call__(self, mmio: FakeMMIO) -> None:
        regs = self.ip["registers"]
        buf = {n: self.alloc.by_addr[mmio.pointer(r["offset"])] for n, r in regs.items() if r["kind"] == "pointer"}
        reset = mmio.regs.get(regs[self.ip["reset_register"]]["offset"], 0)
        self.resets.append(reset)
        ret = self.ip["ap_return"]["offset"]
        if bytes(np.asarray(buf["weights"][:4])) != b"MMFS":
            mmio.regs[ret] = 1
            return
        if reset:
            self.state = self.model.init_state()
        logits, self.state = self.model.decode_step(np.asarray(buf["x_in"], dtype=np.float64), self.state)
        buf["logits"][:] = logits
        mmio.regs[ret] = 0

"""Test doubles for the host runtime (used by test_manifest / test_accelerator).

* ``build_abi_stub``: a few lines of C++ exporting the C-sim ABI (version 2:
  ``mmfree_abi``, ``mmfree_info``, ``mmfree_step``, ``mmfree_cycles``) with simple, exactly reproducible
  arithmetic. It tests the ctypes binding and the package plumbing, not the
  model: accuracy is tested against the real C-simulation library.
* ``FakeMMIO`` + ``FakeAllocator`` + ``ReferenceDevice``: an AXI-Lite register
  file with Vitis HLS ap_ctrl_hs semantics (ap_done clear-on-read) whose
  "hardware" runs ``MMFreeLM.decode_step`` on the buffers the pointer registers
  point at. Drives the pynq backend's register, address and cache logic on
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
from mmfree_hls.sampling import greedy_decode

AP_START, AP_DONE, AP_IDLE = 0x1, 0x2, 0x4
#: x_in[0] value that makes the stub sleep (to provoke a timeout) and one that makes it fail.
STUB_SLEEP_MARK = 1234.5
STUB_FAIL_MARK = -999.0

#: The C-sim ABI (version 2): one step symbol for both tiers, the weight image last (NULL
#: for the on-chip tier); simple arithmetic, plus the weights' first byte on logits[0].
STUB_SOURCE = r"""
#include <unistd.h>
static unsigned long long last_cycles = 0;
extern "C" int mmfree_abi(void) { return 2; }
extern "C" int mmfree_info(int* d, int* L, int* e, int* V) {
    *d = D; *L = L_; *e = E; *V = V_; return 0;
}
extern "C" int mmfree_step(const float* x, float* s, float* logits, const unsigned char* w) {
    if (x[0] == 1234.5f) usleep(SLEEP_US);
    if (x[0] == -999.0f) return 7;
    for (int l = 0; l < L_; ++l)
        for (int i = 0; i < E; ++i)
            s[l * E + i] = 0.5f * s[l * E + i] + x[i % D] + (float)l;
    for (int v = 0; v < V_; ++v)
        logits[v] = s[v % (L_ * E)] * (float)(v % 7 + 1);
    if (w) logits[0] += (float)w[0];
    last_cycles = 1000ull + V_;
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
                   name: str = "libmmfree_csim.so") -> Path:
    """A C-sim library of the engine's ABI with simple, exactly reproducible arithmetic
    (``stub_step``)."""
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
        # The device's masters see DRAM, not the CPU's cache.
        buf = {name: self.alloc.by_addr[mmio.pointer(r["offset"])].dram for name, r in self.registers.items()
               if r.get("kind", "pointer") == "pointer" and name in ("x_in", "state", "logits")}
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
    """The IP's datapath: its masters read x_in/state/weights from DRAM at the addresses in its
    pointer registers, one C-simulation step runs on them, state/logits go back to DRAM."""

    def __init__(self, board: "FakeBoard", csim, layout, ip: dict):
        self.board, self.csim, self.layout, self.ip = board, csim, layout, ip
        self.buffers = csim.allocate(layout)
        self.region_bytes = ip.get("region_bytes")
        self.region_offset = int(ip.get("region_offset", 0))
        self.steps = 0
        self.weights_seen: Optional[np.ndarray] = None

    def __call__(self, regs: EngineRegisters) -> int:
        mem, R = self.board.memory, self.ip["registers"]
        for spec in self.layout:
            if spec.name in R:
                raw = mem.read(regs.pointer(int(R[spec.name]["offset"])), spec.nbytes)
                if spec.direction != "out":
                    self.buffers[spec.name][...] = raw.view(spec.dtype).reshape(spec.shape)
        ports = sorted((n for n in R if n[:1] == "w" and n[1:].isdigit()), key=lambda n: int(n[1:]))
        if ports:
            # Each weight master streams its own region; the header (if any) sits before w0's.
            w0 = regs.pointer(int(R[ports[0]]["offset"]))
            parts = [mem.read(w0 - self.region_offset, self.region_offset)]
            parts += [mem.read(regs.pointer(int(R[p]["offset"])), self.region_bytes) for p in ports]
            image = np.zeros(self.layout.weight_bytes, np.uint8)
            seen = np.concatenate(parts)[:image.size]
            image[:seen.size] = seen
            self.weights_seen = image
            self.buffers["weights"][...] = image
        try:
            self.csim.run()
            rc = 0
        except AcceleratorError:   # a non-zero return of the step: ap_return carries it
            rc = int(getattr(self.csim, "_rc", None) or 1)
        for spec in self.layout:
            if spec.name in R and spec.direction in ("out", "inout"):
                mem.write(regs.pointer(int(R[spec.name]["offset"])), self.buffers[spec.name])
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
                 name: str = "stub", sleep_us: int = 0, **kwargs):
    """An overlay of ``model`` around the ABI-2 stub library, with the engine record (and, for the
    streamed tier, the engine's own weights buffer) of (board, tier, packing)."""
    from mmfree_hls.engine.layout import Shape, build_image, weights_buffer
    from mmfree_hls.engine.presets import get_preset
    from mmfree_hls.engine.project import engine_record
    from mmfree_hls.overlay import build_overlay

    c = model.config
    preset = get_preset(board, tier)
    weights = None
    if preset.K:
        weights = weights_buffer(build_image(model, packing, preset.R), Shape.of(c, packing, preset.R),
                                 preset.K, preset.port_bytes)
    lib = build_abi_stub(Path(out).parent / f"{Path(out).name}_lib", c.d, c.num_hidden_layers, c.state_size,
                         c.vocab_size, sleep_us=sleep_us)
    return build_overlay(out, model=model, board=board, name=name, csim_library=lib,
                         engine=engine_record(c, preset, packing), weights=weights, **kwargs)

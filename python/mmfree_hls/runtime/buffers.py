"""Device buffer layout and the one place numpy data crosses into it.

One call of the accelerator is a pass: the weights read once for N token
lanes (docs/ARCHITECTURE.md, "Contracts"; B state slots, device top-k of K):

    x_in    (N*d,)     float32  in      lane t's token embedding at [t*d, (t+1)*d)
    state   (B*L*e,)   float32  in/out  slot b's s at [b*L*e ...], layer-major: [b][l][i];
                                        read for the slots of load_mask, written for store_mask
    logits  (V*N,)     float32  out     row-major: logit v of lane t at [v*N + t]
    top     (2K*N,)    int32    out     the top-K of every lane, value descending: row k (k < K) the ids
                                        of entry k, lane-minor ([k*N + t]; -1 past the entries), row
                                        K + k their float32 bits
    weights (bytes,)   uint8    in      packed ternary weights (streamed tier only,
                                        written once per session)

Both backends allocate these once per session through an ``allocate(shape,
dtype)`` function — ``numpy.zeros`` for the C-simulation, ``pynq.allocate``
on a board — and then only copy into / out of them. Shapes, dtypes and the
float64→float32 conversion are checked here and nowhere else.

Cache discipline (board buffers are cacheable; the PS ports the IP uses are
not coherent). Every host write goes through a ``write_*``/``clear_*`` method
here, which marks the buffer *host-dirty*. :meth:`DeviceBuffers.flush` writes
dirty lines back before the device reads; :meth:`DeviceBuffers.invalidate`
discards the CPU's copy after the device wrote — and flushes a host-dirty
buffer first, because invalidating it would throw the host's writes away
(e.g. ``reset()`` followed by reading the state). Buffers without
``flush``/``invalidate`` (numpy, for the C-simulation) make both no-ops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional

import numpy as np

from .errors import AcceleratorError, ManifestError

WEIGHTS_PORT = "weights"

#: Mode bits of a pass (mmfree_engine.h MODE_*): prefill lanes, run the head, write every logit.
MODE_PREFILL, MODE_HEAD, MODE_FULL_LOGITS = 1, 2, 4
#: The host's single-sequence step: one lane, slot 0 in and out, every logit.
STEP_PASS = {"n": 1, "mode": MODE_HEAD | MODE_FULL_LOGITS, "slot": 0, "load_mask": 1, "store_mask": 1}
DIRECTIONS = ("in", "inout", "out")


@dataclass(frozen=True)
class BufferSpec:
    """One device buffer: the data a single pointer argument of the top refers to."""

    name: str
    shape: tuple
    dtype: str
    direction: str

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "dtype": self.dtype, "direction": self.direction,
                "nbytes": self.nbytes}

    @classmethod
    def from_dict(cls, name: str, d: Mapping) -> "BufferSpec":
        try:
            spec = cls(name, tuple(int(n) for n in d["shape"]), str(d["dtype"]), str(d["direction"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestError(f"buffer '{name}' needs shape, dtype and direction ({e})") from None
        if spec.direction not in DIRECTIONS:
            raise ManifestError(f"buffer '{name}': direction {spec.direction!r} is not one of {DIRECTIONS}")
        try:
            np.dtype(spec.dtype)
        except TypeError:
            raise ManifestError(f"buffer '{name}': unknown dtype {spec.dtype!r}") from None
        if "nbytes" in d and int(d["nbytes"]) != spec.nbytes:
            raise ManifestError(f"buffer '{name}': nbytes {d['nbytes']} disagrees with shape "
                                f"{list(spec.shape)} × {spec.dtype} = {spec.nbytes}")
        return spec


class BufferLayout:
    """The buffers of one design, in port order; built from a model config or a manifest."""

    def __init__(self, d: int, num_layers: int, state_width: int, vocab_size: int,
                 weight_bytes: int = 0, lanes: int = 1, slots: int = 1, topk: int = 8):
        self.d, self.L, self.e, self.V = int(d), int(num_layers), int(state_width), int(vocab_size)
        self.weight_bytes = int(weight_bytes)
        self.lanes, self.slots, self.topk = int(lanes), int(slots), int(topk)
        specs = [BufferSpec("x_in", (self.lanes * self.d,), "float32", "in"),
                 BufferSpec("state", (self.slots * self.L * self.e,), "float32", "inout"),
                 BufferSpec("logits", (self.V * self.lanes,), "float32", "out"),
                 BufferSpec("top", (self.lanes * self.topk * 2,), "int32", "out")]
        if self.weight_bytes:
            specs.insert(0, BufferSpec(WEIGHTS_PORT, (self.weight_bytes,), "uint8", "in"))
        self.specs = {s.name: s for s in specs}

    @classmethod
    def for_config(cls, cfg, weight_bytes: int = 0, lanes: int = 1, slots: int = 1,
                   topk: int = 8) -> "BufferLayout":
        return cls(cfg.d, cfg.num_hidden_layers, cfg.state_size, cfg.vocab_size, weight_bytes,
                   lanes, slots, topk)

    @classmethod
    def for_engine(cls, cfg, preset, weight_bytes: int = 0) -> "BufferLayout":
        """The buffers of an engine build (its preset's lanes, slots and top-k)."""
        return cls.for_config(cfg, weight_bytes, preset.token_lanes, preset.batch_slots, preset.topk)

    @classmethod
    def from_manifest(cls, buffers: Mapping, cfg, preset) -> "BufferLayout":
        """Check the manifest's buffer table against the model config and the engine build."""
        given = {name: BufferSpec.from_dict(name, b) for name, b in buffers.items()}
        wbytes = given[WEIGHTS_PORT].size if WEIGHTS_PORT in given else 0
        layout = cls.for_engine(cfg, preset, wbytes)
        missing = sorted(set(layout.specs) - set(given))
        extra = sorted(set(given) - set(layout.specs))
        if missing or extra:
            raise ManifestError(f"buffer table lists {sorted(given)}, the design needs "
                                f"{sorted(layout.specs)}")
        for name, spec in layout.specs.items():
            if given[name] != spec:
                raise ManifestError(
                    f"buffer '{name}' is {list(given[name].shape)} {given[name].dtype} "
                    f"({given[name].direction}) but the model config (d={cfg.d}, "
                    f"L={cfg.num_hidden_layers}, e={cfg.state_size}, V={cfg.vocab_size}) and the engine "
                    f"build (lanes={layout.lanes}, slots={layout.slots}, topk={layout.topk}) need "
                    f"{list(spec.shape)} {spec.dtype} ({spec.direction})")
        return layout

    def to_manifest(self) -> dict:
        return {name: s.to_dict() for name, s in self.specs.items()}

    @property
    def ports(self) -> list[str]:
        return list(self.specs)

    def __iter__(self):
        return iter(self.specs.values())

    def __repr__(self) -> str:
        return (f"BufferLayout(d={self.d}, L={self.L}, e={self.e}, V={self.V}, "
                f"weight_bytes={self.weight_bytes}, lanes={self.lanes}, slots={self.slots}, topk={self.topk})")


Allocator = Callable[[tuple, str], np.ndarray]


def numpy_allocate(shape: tuple, dtype: str) -> np.ndarray:
    return np.zeros(shape, dtype=dtype)


class DeviceBuffers:
    """The session's buffers, allocated once; the host only copies into and out of them."""

    def __init__(self, layout: BufferLayout, allocate: Allocator = numpy_allocate):
        self.layout = layout
        self.arrays: dict[str, np.ndarray] = {}
        for spec in layout:
            arr = allocate(spec.shape, spec.dtype)
            if (tuple(arr.shape) != spec.shape or arr.dtype != np.dtype(spec.dtype)
                    or not arr.flags.c_contiguous):
                raise AcceleratorError(f"allocator returned {arr.shape} {arr.dtype} for buffer "
                                       f"'{spec.name}', expected contiguous {spec.shape} {spec.dtype}")
            self.arrays[spec.name] = arr
        # (B, L, e) view of the flat state buffer: slot-major, then layer-major, as the C++ indexes it.
        self._states = self.arrays["state"].reshape(layout.slots, layout.L, layout.e)
        #: Buffers holding host writes that have not been flushed to memory yet.
        self.host_dirty: set[str] = set()

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    @property
    def inputs(self) -> list[str]:
        """Buffers the device reads each step (flushed before start)."""
        return [s.name for s in self.layout if s.direction in ("in", "inout") and s.name != WEIGHTS_PORT]

    @property
    def outputs(self) -> list[str]:
        """Buffers the device writes each step (invalidated after done)."""
        return [s.name for s in self.layout if s.direction in ("out", "inout")]

    # ------------------------------------------------------------- cache maintenance
    def flush(self, names: Iterable[str]) -> list[str]:
        """Write the CPU's cached copy of ``names`` back to memory (before the device reads).

        Returns the names of the buffers that have a ``flush`` (pynq buffers)."""
        done = []
        for name in names:
            fn = getattr(self.arrays[name], "flush", None)
            if fn is not None:
                fn()
                done.append(name)
            self.host_dirty.discard(name)
        return done

    def invalidate(self, names: Iterable[str]) -> list[str]:
        """Drop the CPU's cached copy of ``names`` (after the device wrote them).

        A buffer with unflushed host writes is flushed first: an invalidate
        would discard those writes on a write-back cache."""
        names = list(names)
        self.flush([n for n in names if n in self.host_dirty])
        done = []
        for name in names:
            fn = getattr(self.arrays[name], "invalidate", None)
            if fn is not None:
                fn()
                done.append(name)
        return done

    def _written(self, name: str) -> None:
        self.host_dirty.add(name)

    # ------------------------------------------------------------- host → device
    def write_embedding(self, x: np.ndarray, lane: int = 0) -> None:
        x = np.asarray(x)
        d = self.layout.d
        if x.shape != (d,):
            raise ValueError(f"embedding has shape {x.shape}, expected ({d},)")
        if not 0 <= lane < self.layout.lanes:
            raise ValueError(f"lane {lane} is outside this design's {self.layout.lanes} lanes")
        np.copyto(self.arrays["x_in"][lane * d:(lane + 1) * d], x, casting="same_kind")
        self._written("x_in")

    def _slot(self, slot: int) -> int:
        if not 0 <= slot < self.layout.slots:
            raise ValueError(f"slot {slot} is outside this design's {self.layout.slots} state slots")
        return slot

    def write_state(self, state: np.ndarray, slot: int = 0) -> None:
        s = np.asarray(state)
        want = (self.layout.L, self.layout.e)
        if s.shape != want and s.shape != (self.layout.L * self.layout.e,):
            raise ValueError(f"state has shape {s.shape}, expected {want} (layers, state width)")
        np.copyto(self._states[self._slot(slot)], s.reshape(want), casting="same_kind")
        self._written("state")

    def clear_state(self, slot: Optional[int] = None) -> None:
        if slot is None:
            self.arrays["state"][:] = 0
        else:
            self._states[self._slot(slot)] = 0
        self._written("state")

    def write_weights(self, packed: np.ndarray) -> None:
        if WEIGHTS_PORT not in self.arrays:
            raise AcceleratorError("this design keeps its weights on chip; there is no weight buffer")
        p = np.asarray(packed, dtype=np.uint8).ravel()
        if p.size != self.layout.weight_bytes:
            raise ValueError(f"packed weights have {p.size} bytes, the buffer holds "
                             f"{self.layout.weight_bytes}")
        np.copyto(self.arrays[WEIGHTS_PORT], p)
        self._written(WEIGHTS_PORT)

    # ------------------------------------------------------------- device → host
    def read_logits(self, out: Optional[np.ndarray] = None, lane: int = 0) -> np.ndarray:
        """A copy of lane ``lane``'s logits as a plain ndarray (the device buffer is overwritten
        by the next pass; ``.copy()`` of a pynq buffer would still claim a physical address)."""
        col = self.arrays["logits"][lane::self.layout.lanes]
        if out is None:
            return np.array(col, copy=True, subok=False)
        np.copyto(out, col)
        return out

    def read_top(self, lane: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Lane ``lane``'s device top-k: (values float32 descending, ids int64); ties: lower id first."""
        K, N = self.layout.topk, self.layout.lanes
        col = np.array(self.arrays["top"].reshape(2 * K, N)[:, lane], copy=True, subok=False)
        ids, bits = col[:K], col[K:]
        keep = ids >= 0
        return bits[keep].view(np.float32).copy(), ids[keep].astype(np.int64)

    def read_state(self, slot: int = 0) -> np.ndarray:
        """A copy of slot ``slot``'s state as (L, e), a plain ndarray."""
        return np.array(self._states[self._slot(slot)], copy=True, subok=False)

    def free(self, names: Iterable[str] | None = None) -> None:
        """Release device memory (pynq buffers); numpy arrays are just dropped."""
        for name in list(names or self.arrays):
            arr = self.arrays.pop(name, None)
            release = getattr(arr, "freebuffer", None) or getattr(arr, "close", None)
            if callable(release):
                release()

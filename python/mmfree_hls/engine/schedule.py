"""The engine's schedule: cycles of one pass from its loop trip counts and IIs.

Every loop of design/hls/mmfree_engine.h is pipelined at II=1; its cycles are
its trip count plus its pipeline depth. The C-simulation adds the same terms
as it runs (MMFREE_COUNT), and tests/test_engine_csim.py holds the two equal.
The depths and scalar-unit latencies are estimates of what Vitis HLS
schedules (one place: PIPELINE); a csynth report replaces them.

A pass reads the whole weight stream once and applies every word to ``n``
active token lanes (n = 1: one token; batch: n sequences; prefill: n prompt
tokens). :func:`segments` is the one enumeration of a pass, in the order
compute_pass runs it; :func:`token_cycles` sums it by kind of work and the cost
model's FIFO model (:func:`.cost.stream_cycles`) runs through it.

Per pass (n lanes, ``loads``/``stores`` state slots moved, p = PIPELINE):

* every BitLinear: header 1, quantiser n_cg + depth_mac (reads no word), MAC loop
  n_rb n_cg + R + depth_mac
  (independent of n: the lanes share each weight word); scalar unit
  n (scalar_recip + scalar_rsqrt) (one unit, the lanes one after another);
* parameter records: once per pass (independent of n);
* per layer the MLGRU and GLU passes: n (ceil(e/V) + depth_vec) + n (ceil(M/V) + depth_vec);
* I/O: n d + depth_io (x), loads (L e + depth_io), stores (L e + depth_io);
* the LM head only when ``head`` (a prefill chunk before the last skips it).

n = 1, loads = stores = 1, head: the single-token step (the schedule before batching, unchanged).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from .layout import Shape

#: Pipeline depths (cycles to fill) and scalar-unit latencies, as estimates.
PIPELINE = {
    "depth_mac": 8,        # MAC loop: word -> decode -> tree -> accumulate -> rescale -> write
    "depth_vec": 16,       # vector passes: sigma lookups, 5 chained products
    "depth_io": 4,         # plain loads/stores and parameter records
    "scalar_recip": 24,    # 1/x: seed + 3 Newton steps (2 products each)
    "scalar_rsqrt": 40,    # 1/sqrt(x): seed + 3 Newton steps (3 products each) + 5 products
}


#: Parameter values written per cycle (the banking of the parameter arrays).
PARAM_LANES = 4

#: The kinds of work a pass's cycles are counted under (the fields of :class:`Cycles`).
PARTS = ("matrix", "scalar", "vector", "params", "io")


def param_lanes(R: int) -> int:
    """Values read_vector writes a cycle: PARAM_LANES, or a whole word when it holds fewer."""
    fields = R // 4
    return fields if fields <= PARAM_LANES else PARAM_LANES


@dataclass(frozen=True)
class Cycles:
    """Compute cycles of one pass, by kind of work."""

    matrix: int            # MAC loops (words of weight tiles), incl. fill and drain
    scalar: int            # scalar-unit latencies between matrices
    vector: int            # MLGRU and GLU passes
    params: int            # parameter records (norm vectors, headers)
    io: int                # x_in, state load/store

    @property
    def total(self) -> int:
        return self.matrix + self.scalar + self.vector + self.params + self.io

    def to_dict(self) -> dict:
        return {"matrix": self.matrix, "scalar": self.scalar, "vector": self.vector,
                "params": self.params, "io": self.io, "total": self.total}


class Segment(NamedTuple):
    """A stretch of a pass: ``read`` cycles consume one stream word each, ``stall`` cycles read none."""

    kind: str              # read | stall
    cycles: int
    what: str              # the record or unit ("0.i", "0.i 1/x", "MLGRU 0", "load x", ...)
    part: str              # one of PARTS: the Cycles field it is counted under


def matrix_cycles(shape: Shape, n_in: int, n_out: int, n: int = 1) -> tuple[int, int]:
    """(MAC-loop cycles, scalar cycles) of one BitLinear over n lanes, header word included."""
    p = PIPELINE
    n_cg, n_rb = shape.n_cg(n_in), shape.n_rb(n_out)
    mac = 1 + n_cg + p["depth_mac"] + n_rb * n_cg + shape.R + p["depth_mac"]
    return mac, n * (p["scalar_recip"] + p["scalar_rsqrt"])


def _check(shape: Shape, n: int, loads: int, stores: int) -> None:
    if n < 1:
        raise ValueError(f"n={n}: a pass has at least one active lane")
    if loads < 0 or stores < 0:
        raise ValueError(f"loads={loads}, stores={stores}: counts of state slots, not negative")


def segments(shape: Shape, vector_lanes: int, n: int = 1, *, head: bool = True, loads: int = 1,
             stores: int = 1) -> list[Segment]:
    """One pass of compute_pass as :class:`Segment` s, in the order the engine runs them."""
    _check(shape, n, loads, stores)
    p = PIPELINE
    V = vector_lanes
    vw = shape.vec_words
    segs: list[Segment] = []
    steps = (shape.R // 4) // param_lanes(shape.R)      # cycles per parameter word (read_vector)

    def rec_vec(size: int, what: str) -> None:
        segs.extend([Segment("read", vw(size), what, "params"),
                     Segment("stall", vw(size) * (steps - 1) + p["depth_io"], what, "params")])

    def group(size: int, n_c: int, what: str) -> None:
        segs.append(Segment("read", 1, what, "params"))
        for _ in range(1 + n_c):
            rec_vec(size, what)

    def matrix(name: str, n_in: int, n_out: int) -> None:
        n_cg, n_rb = shape.n_cg(n_in), shape.n_rb(n_out)
        segs.extend([Segment("read", 1, name, "matrix"),
                     Segment("stall", n * p["scalar_recip"], f"{name} 1/x", "scalar"),
                     Segment("stall", n_cg + p["depth_mac"], f"{name} quantise", "matrix"),
                     Segment("stall", n * p["scalar_rsqrt"], f"{name} 1/sqrt", "scalar"),
                     Segment("read", n_rb * n_cg, name, "matrix"),
                     Segment("stall", shape.R + p["depth_mac"], f"{name} drain", "matrix")])

    d, e, M, L = shape.d, shape.e, shape.M, shape.L
    group(d, 3, "attn.0")
    segs.append(Segment("stall", n * d + p["depth_io"], "load x", "io"))
    for _ in range(loads):
        segs.append(Segment("stall", L * e + p["depth_io"], "load state", "io"))
    for l in range(L):
        for q in "ifg":
            matrix(f"{l}.{q}", d, e)
        segs.append(Segment("read", 1, f"mlgru.{l}", "params"))
        for _ in range(3 if (shape.use_lb and l > 0) else 2):
            rec_vec(e, f"mlgru.{l}")
        segs.append(Segment("stall", n * (math.ceil(e / V) + p["depth_vec"]), f"MLGRU {l}", "vector"))
        group(d, 1, f"mlp.{l}")
        matrix(f"{l}.o", e, d)
        matrix(f"{l}.gate", d, 2 * M)
        segs.append(Segment("read", 1, f"glu.{l}", "params"))
        rec_vec(M, f"glu.{l}")
        segs.append(Segment("stall", n * (math.ceil(M / V) + p["depth_vec"]), f"GLU {l}", "vector"))
        group(d, 3 if l + 1 < L else 1, "next group")
        matrix(f"{l}.down", M, d)
    if head:
        matrix("head", d, shape.V)
    for _ in range(stores):
        segs.append(Segment("stall", L * e + p["depth_io"], "store state", "io"))
    return segs


def token_cycles(shape: Shape, vector_lanes: int, n: int = 1, *, prefill: bool = False, head: bool = True,
                 loads: int = 1, stores: int = 1) -> Cycles:
    """Compute cycles of one pass: n active lanes, the head when ``head``, ``loads``/``stores`` state
    slots moved. ``prefill`` (lanes = consecutive tokens of one sequence rather than n sequences)
    changes the data flow of the MLGRU pass, not its cycles: it is accepted for clarity only."""
    del prefill
    return cycles_of(segments(shape, vector_lanes, n, head=head, loads=loads, stores=stores))


def cycles_of(segs: list[Segment]) -> Cycles:
    """A pass's segments summed by kind of work."""
    parts = dict.fromkeys(PARTS, 0)
    for s in segs:
        parts[s.part] += s.cycles
    return Cycles(**parts)


def pass_words(shape: Shape, head: bool = True) -> int:
    """Stream words one pass reads (the head's are skipped when ``head`` is off)."""
    return shape.words() - (0 if head else shape.head_words())

"""The engine's schedule: cycles per token from its loop trip counts and IIs.

Every loop of design/hls/mmfree_engine.h is pipelined at II=1; its cycles are
its trip count plus its pipeline depth. The C-simulation adds the same terms
as it runs (MMFREE_COUNT), and tests/test_engine_csim.py holds the two equal.
The depths and scalar-unit latencies are estimates of what Vitis HLS
schedules (one place: PIPELINE); a csynth report replaces them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def param_lanes(R: int) -> int:
    """Values read_vector writes a cycle: PARAM_LANES, or a whole word when it holds fewer."""
    fields = R // 4
    return fields if fields <= PARAM_LANES else PARAM_LANES


@dataclass(frozen=True)
class Cycles:
    """Compute cycles of one token, by kind of work."""

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


def matrix_cycles(shape: Shape, n_in: int, n_out: int) -> tuple[int, int]:
    """(MAC-loop cycles, scalar cycles) of one BitLinear, header word included."""
    p = PIPELINE
    n_cg, n_rb = shape.n_cg(n_in), shape.n_rb(n_out)
    mac = 1 + n_cg + p["depth_mac"] + (n_rb - 1) * n_cg + shape.R + p["depth_mac"]
    return mac, p["scalar_recip"] + p["scalar_rsqrt"]


def token_cycles(shape: Shape, vector_lanes: int) -> Cycles:
    p = PIPELINE
    vw = shape.vec_words
    steps = (shape.R // 4) // param_lanes(shape.R)        # cycles per parameter word
    rec = lambda words: words * steps + p["depth_io"]
    mac = scalar = 0
    for _, n_in, n_out in shape.matrices():
        m, s = matrix_cycles(shape, n_in, n_out)
        mac, scalar = mac + m, scalar + s
    d, e, M, L = shape.d, shape.e, shape.M, shape.L
    group = lambda n, n_c: 1 + (1 + n_c) * rec(vw(n))
    params = group(d, 3)
    vector = 0
    for l in range(L):
        has_lb = shape.use_lb and l > 0
        params += 1 + (3 if has_lb else 2) * rec(vw(e))          # mlgru record
        params += group(d, 1)                                     # mlp group
        params += 1 + rec(vw(M))                                  # glu record
        params += group(d, 3 if l + 1 < L else 1)                 # next group
        vector += math.ceil(e / vector_lanes) + p["depth_vec"]
        vector += math.ceil(M / vector_lanes) + p["depth_vec"]
    io = (d + p["depth_io"]) + 2 * (L * e + p["depth_io"])
    return Cycles(matrix=mac, scalar=scalar, vector=vector, params=params, io=io)

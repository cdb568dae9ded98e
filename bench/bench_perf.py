"""The engine cost model's figures for the README: one record per (board, model, tier, packing).

    python bench/bench_perf.py

The published sizes (370M, 1.3B, 2.7B) on every board, streamed, both
packings; the shipped demo model on chip on every board. A model, not a
measurement: resources and tokens/s from the engine's units and loop trip
counts (mmfree_hls.engine.cost), replaced by a synthesis report wherever
a project has one. Writes a table to stdout and bench/results/perf.json.
"""

from __future__ import annotations

import _common  # noqa: F401  (quiet TensorFlow, machine record)

from mmfree_hls.engine import cost

DEMO = _common.ROOT / "python" / "mmfree_hls" / "data" / "demo_model"


def main() -> int:
    published = [cost.resolve_model(m) for m in ("370M", "1.3B", "2.7B")]
    recs = cost.records(published, tiers=("streamed",))
    recs += cost.records([("demo", cost.resolve_model(str(DEMO))[1])], tiers=("on-chip",), packings=("2bit",))
    print(f"{'board':12} {'model':5} {'tier':9} {'packing':7} {'tok/s':>8} {'bound':>8} {'share':>6} fits")
    for r in recs:
        print(f"{r['board']:12} {r['model']:5} {r['tier']:9} {r['packing']:7} {r['tokens_per_s']:8.1f} "
              f"{r['bound_tokens_per_s']:8.1f} {r['share_of_bound']:6.1%} {r['fits']}")
    print(f"wrote {_common.write_result('perf', {'records': recs})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The engine cost model's batching and prefill figures: 370M, 2-bit, streamed, every board.

    python bench/bench_batch_model.py

Per board: aggregate and per-sequence tokens/s of B = 1, 2, 4, 8, 16 sequences
decoded together (one pass over the weights serves B sequences; the states
stay on chip, only the top-k leaves), with the B where compute takes over from
the weight stream; and the speedup of a 256-token prompt in chunks of
T = 1, 2, 4, 8, 16 tokens a pass (the head on the last chunk only) over 256
single steps. Each figure is for the board's preset with batch_slots /
prefill_chunk raised to B / T where it has fewer, and carries that build's
utilisation and whether it fits. A model, not a measurement
(mmfree_hls.engine.cost). Writes a table to stdout and
bench/results/batch_model.json.
"""

from __future__ import annotations

import _common  # noqa: F401  (quiet TensorFlow, machine record)

from mmfree_hls.engine import cost
from mmfree_hls.engine.presets import board_names, get_preset

BATCHES = (1, 2, 4, 8, 16)
CHUNKS = (1, 2, 4, 8, 16)
PROMPT = 256
MODEL, PACKING, TIER = "370M", "2bit", "streamed"


def _build(b: dict) -> dict:
    return {"token_lanes": b["token_lanes"], "vector_lanes": b["vector_lanes"], "util": b["util"],
            "util_max": b["util_max"], "scarcest": b["scarcest"], "fits": b["fits"], "fits_70": cost.fits(b, 0.70)}


def main() -> int:
    name, cfg = cost.resolve_model(MODEL)
    boards = []
    for board in board_names():
        preset = get_preset(board, TIER)
        batch = []
        for B in BATCHES:
            r = cost.batch_throughput(cfg, preset, PACKING, B)
            batch.append({"B": B, "aggregate_tokens_per_s": r["aggregate_tokens_per_s"],
                          "per_sequence_tokens_per_s": r["per_sequence_tokens_per_s"],
                          "speedup_vs_B1_same_build": r["speedup"], "limit": r["limit"],
                          "cycles": r["cycles"], "build": _build(r["build"])})
        prefill = []
        for T in CHUNKS:
            r = cost.prefill_speedup(cfg, preset, PACKING, PROMPT, T)
            prefill.append({"T": T, "passes": r["passes"], "speedup": r["speedup"],
                            "speedup_vs_headless_steps": r["speedup_vs_headless_steps"],
                            "prefill_s": r["prefill_s"], "single_steps_s": r["single_steps_s"],
                            "build": _build(r["build"])})
        shipped_b = cost.batch_throughput(cfg, preset, PACKING, preset.batch_slots)
        shipped_t = cost.prefill_speedup(cfg, preset, PACKING, PROMPT, preset.prefill_chunk)
        single = cost.estimate(cfg, preset, PACKING, name)
        boards.append({
            "board": board, "flow": preset.board.flow, "clock_mhz": preset.clock_mhz, "R": preset.R,
            "vector_lanes": preset.vector_lanes,
            "b1_record_tokens_per_s": single["tokens_per_s"],
            "compute_takes_over_at_B": cost.compute_takeover(cfg, preset, PACKING),
            "shipped": {"batch_slots": preset.batch_slots, "prefill_chunk": preset.prefill_chunk,
                        "topk": preset.topk, "util": single["util"], "fits": single["fits"],
                        "aggregate_tokens_per_s": shipped_b["aggregate_tokens_per_s"],
                        "batch_speedup": shipped_b["speedup"],
                        "batch_speedup_vs_b1_record": shipped_b["aggregate_tokens_per_s"] / single["tokens_per_s"],
                        "prefill_speedup": shipped_t["speedup"]},
            "batch": batch, "prefill": prefill})

    print(f"# {cost.MODEL_LABEL}")
    print(f"# {MODEL} {PACKING} {TIER}: aggregate tok/s (x B=1 on the same build; build util max, * = does not fit)")
    print(f"{'board':12} {'B1 rec':>7} " + " ".join(f"{'B=' + str(B):>22}" for B in BATCHES) + "  compute from B")
    for b in boards:
        cells = [f"{r['aggregate_tokens_per_s']:7.0f} x{r['speedup_vs_B1_same_build']:4.1f} "
                 f"{100 * r['build']['util_max']:4.0f}%{'' if r['build']['fits'] else '*'}".rjust(22) for r in b["batch"]]
        print(f"{b['board']:12} {b['b1_record_tokens_per_s']:7.1f} " + " ".join(cells)
              + f"  {b['compute_takes_over_at_B']}")
    print(f"# prefill of a {PROMPT}-token prompt: speedup over {PROMPT} single steps (build util max, * = does not fit)")
    print(f"{'board':12} " + " ".join(f"{'T=' + str(T):>14}" for T in CHUNKS) + "  shipped B/T")
    for b in boards:
        cells = [f"x{r['speedup']:5.2f} {100 * r['build']['util_max']:4.0f}%{'' if r['build']['fits'] else '*'}".rjust(14)
                 for r in b["prefill"]]
        s = b["shipped"]
        print(f"{b['board']:12} " + " ".join(cells) + f"  {s['batch_slots']}/{s['prefill_chunk']}")
    path = _common.write_result("batch_model", {
        "label": cost.MODEL_LABEL, "model": MODEL, "packing": PACKING, "tier": TIER, "prompt": PROMPT,
        "batches": list(BATCHES), "chunks": list(CHUNKS), "boards": boards})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

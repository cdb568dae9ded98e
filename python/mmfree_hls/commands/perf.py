"""``mmfree perf``: tokens/s and resources of the engine per board, against the DDR bandwidth bound;
with ``--batch`` / ``--prefill``: batched decoding and chunked prefill per board (engine/cost.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "engine cost model: tokens/s and resources per board vs the memory-bandwidth bound (a model)"
PACKING_CHOICES = ("2bit", "1.6bit", "both")
TIER_CHOICES = ("streamed", "on-chip", "both")
DESCRIPTION = HELP + """.

One record per (board, model, tier, packing) from the engine's units and knobs (board presets
in data/boards.json, model sizes in data/model_presets.json). The default covers the published
sizes on every board, streamed tier, both packings.

Batching and prefill (--batch B, --prefill T). The engine applies every weight word it streams
to N = max(B, T) token lanes (a power of two): one pass over the weights serves B sequences (a token each, their
states kept on chip) or T consecutive prompt tokens of one sequence. Per board and model:

  agg tok/s       B / pass time: what the board delivers over all B sequences
  per seq         1 / pass time: what each sequence sees
  x B=1           aggregate over B = 1 on the same build
  limit           what sets the pass time: DDR, ports or compute (+stalls: FIFO too shallow)
  compute from B  the B from which compute, not the weight stream, sets the pace: up to it a
                  sequence rides along almost free, past it every sequence adds time
  prefill x       P single steps (head each) over ceil(P/T) prefill passes (head on the last),
                  for a prompt of --prompt P tokens (default 256)
  build N, util   the build the figures are for: the board's preset, with batch_slots /
                  prefill_chunk raised to B / T where it has fewer; the lanes cost LUTs (row
                  trees, quantiser and write-back lanes x N), so check "fits"

--batch alone takes T from the preset, --prefill alone B. Packing defaults to 2bit here.

Examples:
  mmfree perf --batch 8 --prefill 16 --model 370M
  mmfree perf --batch 4 --board kv260 --json out.json      (- prints the JSON)
  mmfree perf --prefill 16 --prompt 512 --model 1.3B --board zcu104
"""


def register(sub) -> None:
    p = sub.add_parser("perf", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", default=None, metavar="M",
                   help="370M, 1.3B, 2.7B, demo, or a checkpoint directory / config.json; repeat or "
                        "comma-separate (default: 370M,1.3B,2.7B)")
    p.add_argument("--board", action="append", default=None, metavar="B",
                   help="board name; repeat or comma-separate (default: every board of the table)")
    p.add_argument("--tier", default="streamed", choices=TIER_CHOICES, help="weight source (default streamed)")
    p.add_argument("--packing", default=None, choices=PACKING_CHOICES,
                   help="ternary packing (default both; with --batch/--prefill 2bit)")
    p.add_argument("--batch", type=int, default=None, metavar="B",
                   help="batched decoding of B sequences a pass (states on chip, top-k logits only): "
                        "aggregate and per-sequence tokens/s, speedup over B = 1, where compute takes over")
    p.add_argument("--prefill", type=int, default=None, metavar="T",
                   help="chunked prefill of T prompt tokens a pass: speedup over single steps")
    p.add_argument("--prompt", type=int, default=256, metavar="P",
                   help="prompt length for the prefill figure (default 256)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="print the records as a JSON list (or write them to FILE)")
    p.set_defaults(func=run)


def _split(values, default: str) -> list[str]:
    out = [v.strip() for item in (values or [default]) for v in str(item).split(",") if v.strip()]
    if not out:
        raise ValueError(f"empty list; give for example {default}")
    return out


def expand(choice: str, both: tuple) -> list[str]:
    return list(both) if choice == "both" else [choice]


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _rate(x) -> str:
    return "-" if x is None else (f"{x:,.1f}" if x < 100 else f"{x:,.0f}")


def format_table(recs: list[dict]) -> str:
    head = ["board", "model", "tier", "packing", "LUT", "FF", "BRAM", "URAM", "DSP", "fits",
            "tok/s", "bound", "share", "limit", "source"]
    body = []
    for r in recs:
        flow = " (model only)" if r.get("flow") == "model-only" else ""
        body.append([r["board"] + flow, r["model"], r["tier"], r["packing"],
                     *(_pct(r["util"][k]) for k in ("LUT", "FF", "BRAM_18K", "URAM", "DSP")),
                     "yes" if r["fits"] else "NO", _rate(r["tokens_per_s"]), _rate(r["bound_tokens_per_s"]),
                     _pct(r["share_of_bound"]), r.get("throughput", {}).get("limit", "-"), r["source"]])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.rjust(w) if 4 <= i <= 12 else c.ljust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])


def format_batch_table(recs: list[dict]) -> str:
    head = ["board", "model", "packing", "B", "agg tok/s", "per seq", "x B=1", "limit", "compute from B",
            "T", "prompt", "prefill x", "build N", "util (scarcest)", "fits"]
    body = []
    for r in recs:
        flow = " (model only)" if r.get("flow") == "model-only" else ""
        b = r["build"]
        take = r["compute_takes_over_at_B"]
        body.append([r["board"] + flow, r["model"], r["packing"], str(r["B"]), _rate(r["aggregate_tokens_per_s"]),
                     _rate(r["per_sequence_tokens_per_s"]), f"{r['batch_speedup']:.2f}", r["batch_limit"],
                     "-" if take is None else str(take), str(r["T"]), str(r["prompt"]),
                     f"{r['prefill_speedup']:.2f}", str(b["token_lanes"]),
                     f"{_pct(b['util_max'])} {b['scarcest']}", "yes" if b["fits"] else "NO"])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    right = {3, 4, 5, 6, 8, 9, 10, 11, 12}
    line = lambda cells: "  ".join(c.rjust(w) if i in right else c.ljust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])


def emit(recs: list[dict], json_target, label: str, table=format_table) -> None:
    if json_target is None:
        print(f"# {label}")
        print(table(recs))
        return
    text = json.dumps(recs, indent=1, default=float) + "\n"
    if json_target == "-":
        print(text, end="")
        return
    out = Path(json_target)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"# {label}")
    print(table(recs))
    print(f"wrote {out}")


def run(args) -> int:
    from ..engine import cost

    models = [cost.resolve_model(m) for m in _split(args.model, ",".join(cost.PUBLISHED))]
    boards = _split(args.board, "all")
    boards = None if boards == ["all"] else boards
    if args.batch is not None or args.prefill is not None:
        packings = expand(args.packing or "2bit", ("2bit", "1.6bit"))
        recs = cost.batch_records(models, boards, expand(args.tier, ("streamed", "on-chip")), packings,
                                  batch=args.batch, prefill=args.prefill, prompt=args.prompt)
        emit(recs, args.json, cost.MODEL_LABEL, format_batch_table)
        return 0
    recs = cost.records(models, boards, expand(args.tier, ("streamed", "on-chip")),
                        expand(args.packing or "both", ("2bit", "1.6bit")))
    emit(recs, args.json, cost.MODEL_LABEL)
    return 0

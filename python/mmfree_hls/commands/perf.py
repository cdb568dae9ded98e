"""``mmfree perf``: tokens/s and resources of the engine per board, against the DDR bandwidth bound."""

from __future__ import annotations

import json
from pathlib import Path

HELP = "engine cost model: tokens/s and resources per board vs the memory-bandwidth bound (a model)"
PACKING_CHOICES = ("2bit", "1.6bit", "both")
TIER_CHOICES = ("streamed", "on-chip", "both")


def register(sub) -> None:
    p = sub.add_parser("perf", help=HELP, description=HELP + (
        ". One record per (board, model, tier, packing) from the engine's units and knobs "
        "(board presets in data/boards.json, model sizes in data/model_presets.json). The default covers "
        "the published sizes on every board, streamed tier."))
    p.add_argument("--model", action="append", default=None, metavar="M",
                   help="370M, 1.3B, 2.7B, demo, or a checkpoint directory / config.json; repeat or "
                        "comma-separate (default: 370M,1.3B,2.7B)")
    p.add_argument("--board", action="append", default=None, metavar="B",
                   help="board name; repeat or comma-separate (default: every board of the table)")
    p.add_argument("--tier", default="streamed", choices=TIER_CHOICES, help="weight source (default streamed)")
    p.add_argument("--packing", default="both", choices=PACKING_CHOICES, help="ternary packing (default both)")
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


def emit(recs: list[dict], json_target, label: str) -> None:
    if json_target is None:
        print(f"# {label}")
        print(format_table(recs))
        return
    text = json.dumps(recs, indent=1, default=float) + "\n"
    if json_target == "-":
        print(text, end="")
        return
    out = Path(json_target)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"# {label}")
    print(format_table(recs))
    print(f"wrote {out}")


def run(args) -> int:
    from ..engine import cost

    models = [cost.resolve_model(m) for m in _split(args.model, ",".join(cost.PUBLISHED))]
    boards = _split(args.board, "all")
    boards = None if boards == ["all"] else boards
    recs = cost.records(models, boards, expand(args.tier, ("streamed", "on-chip")),
                        expand(args.packing, ("2bit", "1.6bit")))
    emit(recs, args.json, cost.MODEL_LABEL)
    return 0

"""``mmfree resources``: the engine's resources and tokens/s for one model on one board and tier."""

from __future__ import annotations

HELP = "engine resources (LUT, FF, BRAM_18K, URAM, DSP) per unit for a model on a board and tier"


def register(sub) -> None:
    p = sub.add_parser("resources", help=HELP, description=HELP + (
        ". Analytic estimate from the engine's units and the board preset; a Vivado implementation "
        "report (synth/<board>/reports/impl.json) or a Vitis HLS csynth report of --project replaces the totals."))
    p.add_argument("checkpoint", help="checkpoint directory or config.json, or 370M / 1.3B / 2.7B / demo")
    p.add_argument("--board", required=True, help="board name (data/boards.json)")
    p.add_argument("--tier", required=True, choices=("on-chip", "streamed"), help="weight source")
    p.add_argument("--packing", default="2bit", choices=("2bit", "1.6bit", "both"), help="ternary packing")
    p.add_argument("--project", default=None, metavar="DIR",
                   help="an HLS project whose synthesis reports replace the estimate where they exist")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="print the records as a JSON list (or write them to FILE)")
    p.set_defaults(func=run)


def format_units(rec: dict) -> str:
    keys = ("LUT", "FF", "BRAM_18K", "URAM", "DSP")
    rows = [[name, *(str(v[k]) for k in keys)] for name, v in rec["units"].items()]
    rows.append(["total" + (" (analytic)" if rec["source"] != "analytic" else ""),
                 *(str(rec["analytic"][k]) for k in keys)])
    if rec["source"] != "analytic":
        rows.append([f"total ({rec['source']})", *(str(rec[k]) for k in keys)])
    rows.append(["board", *(f"{100 * rec['util'][k]:.0f}%" for k in keys)])
    head = ["unit", *keys]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    inst = ", ".join(f"{i['n_in']}x{i['n_out']} {i['sink']} ({'/'.join(i['matrices'])})"
                     for i in rec["bitlinear_instances"])
    return "\n".join([f"{rec['board']} {rec['model']} {rec['tier']} {rec['packing']}: K={rec['K']} R={rec['R']} "
                      f"lanes={rec['lanes']} V={rec['vector_lanes']} {rec['clock_mhz']:g} MHz; "
                      f"fits: {'yes' if rec['fits'] else 'NO'}; {rec['tokens_per_s']:.1f} tok/s",
                      f"bitlinear units as written: {len(rec['bitlinear_instances'])} ({inst})",
                      line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


def run(args) -> int:
    from ..engine import cost
    from .perf import emit, expand

    name, cfg = cost.resolve_model(args.checkpoint)
    recs = cost.records([(name, cfg)], [args.board], [args.tier], expand(args.packing, ("2bit", "1.6bit")),
                        project_dir=args.project)
    if args.json is not None:
        emit(recs, args.json, cost.MODEL_LABEL)
        return 0
    print(f"# {cost.MODEL_LABEL}")
    print("\n\n".join(format_units(r) for r in recs))
    return 0

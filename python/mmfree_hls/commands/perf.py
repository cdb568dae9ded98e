"""``mmfree perf``: projected decode tokens/s per board against the memory-bandwidth bound."""

from __future__ import annotations

import json
from pathlib import Path

from ..packing import LAYOUTS

HELP = "performance model: tokens/s per board vs the memory-bandwidth bound (a model, not a measurement)"


def register(sub) -> None:
    p = sub.add_parser("perf", help=HELP, description=HELP + (
        ". Bytes per token come from the streamed weight-buffer layout; cycles per token from the "
        "design knobs below; board figures from data/boards.json (datasheets, with sources)."))
    p.add_argument("--models", default="370M,1.3B,2.7B",
                   help="comma-separated presets (370M, 1.3B, 2.7B) or config.json / checkpoint paths")
    p.add_argument("--boards", default="all", help="comma-separated board names, or 'all'")
    p.add_argument("--packing", default="both", choices=sorted(LAYOUTS) + ["both"],
                   help="ternary packing: 2 bits per weight, 5 trits per byte, or both")
    p.add_argument("--lanes", default="auto",
                   help="ternary MACs per cycle: a number, 'auto' (just enough to keep up with the weight "
                        "stream, the default) or 'built' (the streamed top as configured in streamed.py)")
    p.add_argument("--ports", type=int, default=1,
                   help="m_axi weight-read ports (default 1, as the streamed top is written)")
    p.add_argument("--vector-lanes", type=int, default=None, help="element-wise values per cycle (default 8)")
    p.add_argument("--clock-mhz", type=float, default=None, help="design clock (default: the board's)")
    p.add_argument("--efficiency", type=float, default=None,
                   help="share of m_axi port peak a burst stream sustains (default 0.9)")
    p.add_argument("--csynth", metavar="XML", default=None,
                   help="a Vitis HLS <top>_csynth.xml to check the model against")
    p.add_argument("--plot", metavar="PNG", default=None, help="write a bar chart (needs matplotlib)")
    p.add_argument("--json", metavar="FILE", default=None, help="write every row and knob as JSON")
    p.set_defaults(func=run)


def _fmt_rate(x: float) -> str:
    return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"


def format_table(rows) -> str:
    head = ["board", "model", "packing", "MB/token", "bound tok/s", "design GB/s", "lanes",
            "projected tok/s", "% of bound", "limit", "LUT %", "fits"]
    body = [[r.board, r.model, r.packing, f"{r.bytes_per_token / 1e6:.1f}", _fmt_rate(r.bound_tps),
             f"{r.design_gbps:.2f}", str(r.lanes), _fmt_rate(r.projected_tps),
             f"{100 * r.fraction_of_bound:.0f}%", r.limit, f"{100 * r.lut_fraction:.0f}",
             "yes" if r.fits else "NO"] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.rjust(w) if i >= 3 and i != 9 else c.ljust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])


def write_plot(rows, path: Path) -> None:
    """Grouped bars per board: bandwidth bound (light) and projection (solid), one panel per packing."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    packings = list(dict.fromkeys(r.packing for r in rows))
    boards = list(dict.fromkeys(r.board for r in rows))
    models = list(dict.fromkeys(r.model for r in rows))
    fig, axes = plt.subplots(1, len(packings), figsize=(6 * len(packings), 4.5), squeeze=False, sharey=True)
    width = 0.8 / len(models)
    for ax, packing in zip(axes[0], packings):
        for j, model in enumerate(models):
            sel = {r.board: r for r in rows if r.packing == packing and r.model == model}
            xs = [i + (j - (len(models) - 1) / 2) * width for i in range(len(boards))]
            bound = [sel[b].bound_tps if b in sel else 0 for b in boards]
            proj = [sel[b].projected_tps if b in sel else 0 for b in boards]
            bars = ax.bar(xs, bound, width * 0.95, alpha=0.3, label=f"{model} bound")
            ax.bar(xs, proj, width * 0.6, color=bars.patches[0].get_facecolor()[:3], label=f"{model} projected")
        ax.set_xticks(range(len(boards)), boards)
        ax.set_yscale("log")
        ax.set_title(f"{packing} packing")
        ax.grid(axis="y", alpha=0.3, which="both")
    axes[0][0].set_ylabel("tokens / s")
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.suptitle("MatMul-free LM decode, streamed weights: performance MODEL (not measured)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args) -> int:
    from .. import perf

    boards = perf.load_boards()
    names = list(boards) if args.boards == "all" else [b.strip() for b in args.boards.split(",") if b.strip()]
    chosen = [perf.get_board(n) for n in names]
    models = [perf.resolve_model(m.strip()) for m in args.models.split(",") if m.strip()]
    if not models:
        raise ValueError("--models is empty; give presets such as 370M,1.3B,2.7B")
    packings = sorted(LAYOUTS, reverse=True) if args.packing == "both" else [args.packing]
    if args.lanes in ("auto", "built"):
        lanes = None if args.lanes == "auto" else "built"
    elif str(args.lanes).isdigit() and int(args.lanes) > 0:
        lanes = int(args.lanes)
    else:
        raise ValueError(f"--lanes {args.lanes!r}: give a positive number, 'auto' or 'built'")
    knobs = perf.with_knobs(perf.DesignKnobs(), lanes=lanes, ports=args.ports,
                            vector_lanes=args.vector_lanes, clock_mhz=args.clock_mhz,
                            efficiency=args.efficiency).validate()
    rows = perf.project_all(models, chosen, packings, knobs)

    print(f"# {perf.MODEL_LABEL}")
    print(f"# knobs: ports={knobs.ports} lanes={knobs.lanes or 'auto'} vector_lanes={knobs.vector_lanes} "
          f"efficiency={knobs.efficiency} stage_latency={knobs.stage_latency} cycles; "
          "bound = usable memory bandwidth / bytes per token")
    print(format_table(rows))

    comparisons = []
    if args.csynth:
        report = perf.parse_csynth_report(args.csynth)
        matching = [r for r in rows if boards[r.board].part == report.part] or rows[:1]
        print(f"\ncsynth {args.csynth}: top={report.top} part={report.part} latency={report.latency_worst} "
              f"cycles II={report.interval_max} clock {report.estimated_clock_ns}/{report.target_clock_ns} ns "
              f"resources={report.resources}")
        for r in matching:
            c = perf.compare_with_report(r, report)
            comparisons.append({"board": r.board, "model": r.model, "packing": r.packing, **c})
            ratio = "n/a" if c["cycles_ratio"] is None else f"{c['cycles_ratio']:.2f}"
            print(f"  {r.board} {r.model} {r.packing}: csynth/model cycles = {ratio}")

    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "label": perf.MODEL_LABEL, "knobs": perf.asdict(knobs),
            "boards": {b.name: {"part": b.part, "usable_gbps": b.usable_gbps, "sources": list(b.sources)}
                       for b in chosen},
            "rows": [r.to_dict() for r in rows], "csynth_comparison": comparisons}, indent=2) + "\n")
        print(f"wrote {out}")
    if args.plot:
        out = Path(args.plot)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_plot(rows, out)
        print(f"wrote {out}")
    return 0

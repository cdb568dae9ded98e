"""``mmfree sweep``: accuracy (C-simulation vs the numpy reference) against FPGA resources over a grid of knobs."""

from __future__ import annotations

import os
from pathlib import Path

HELP = "accuracy-vs-resource sweep over the decode engine's knobs, boards, tiers and models (resumable, parallel)"


def register(sub) -> None:
    p = sub.add_parser("sweep", help=HELP, description=HELP + (
        ". A point is (model, board, tier, packing, engine knobs: vector_lanes, rows_per_tile, clock_mhz, "
        "frac_bits, sigmoid_table_bits). Points whose C-simulation numbers cannot differ (same model, "
        "frac_bits and sigmoid_table_bits) share one converted project, one g++ build and one evaluation: "
        "perplexity, top-1 and greedy agreement and logit error on held-out text against the numpy "
        "reference. Every point gets resources, fits (per resource and overall, for its own board) and "
        "tokens/s from the engine's cost model (from a Vitis HLS / Vivado report when one exists). Finished "
        "points are skipped on a re-run; results go to OUT/results.{jsonl,csv,parquet}, OUT/metadata.json "
        "and OUT/pareto*.png (points that fit their board filled)."))
    p.add_argument("config", metavar="CONFIG.yaml", help="sweep file (see design/configs/sweep_demo.yaml)")
    p.add_argument("--out", default=None, help="output directory (default runs/sweep_NAME)")
    p.add_argument("--workers", type=int, default=None,
                   help="points evaluated at once (default: the number of CPU cores)")
    p.add_argument("--scheduler", default="local",
                   help="local (a pool of worker processes, default), dask (a local Dask cluster) or "
                        "dask:ADDRESS (an existing Dask scheduler, e.g. dask:tcp://host:8786)")
    p.add_argument("--limit", type=int, default=None, help="run only the first N points")
    p.add_argument("--random", type=int, default=None, metavar="K", help="a random subset of K grid points")
    p.add_argument("--seed", type=int, default=None, help="seed of --random (default: the file's, else 0)")
    p.add_argument("--retry-failed", action="store_true",
                   help="re-run points recorded as failed, timed out or crashed (default: keep them)")
    p.add_argument("--dry-run", action="store_true", help="list the points and exit")
    p.add_argument("--report-only", action="store_true", help="rebuild tables and plots from OUT (taking the synthesis report of any point's "
                        "project, OUT/projects/<project hash>, that has one) and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..cli import CLIError
    from ..design.sweep import (ResultsStore, SweepLock, cache_dir_of, default_out_dir, expand, load_spec,
                                refresh_reports, run_sweep)
    from ..design.sweep_report import write_report

    for name in ("workers", "limit", "random"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise CLIError(f"--{name} must be ≥ 1")
    spec = load_spec(args.config)
    out = args.out or str(default_out_dir(spec))

    if args.dry_run:
        points = expand(spec, args.random, args.seed, args.limit)
        done = ResultsStore(out).done()
        for p in points:
            mark = "done" if p.point_hash in done else "todo"
            print(f"{p.index:4d}  {p.point_hash}  {mark}  {p.model:<10} {p.board:<8} {p.tier:<8} {p.packing:<6} "
                  f"{p.label}")
        print(f"{len(points)} points, {sum(p.point_hash in done for p in points)} already in {out}")
        return 0

    points = None
    if not args.report_only:
        workers = args.workers or os.cpu_count() or 1
        result = run_sweep(spec, out, workers=workers, scheduler=args.scheduler, limit=args.limit,
                           random_k=args.random, seed=args.seed, retry_failed=args.retry_failed,
                           progress=not args.no_progress)
        points = [p.point_hash for p in result.points]
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(result.statuses.items())) or "nothing new"
        print(f"sweep {spec.name}: {len(result.points)} points, {result.skipped} already done, "
              f"{result.ran} run ({statuses}) in {result.wall_s:.1f} s with {workers} worker(s), "
              f"scheduler {args.scheduler}")
    if args.report_only and Path(out).is_dir():
        with SweepLock(Path(out)):          # a point's project may have gained a synthesis report
            refresh_reports(ResultsStore(out), cache_dir_of(spec, Path(out)))
    report = write_report(out, points)
    print(report["summary"])
    paths = report["paths"]
    print(f"wrote {paths['csv']}, {paths['parquet'].name}, {paths['metadata'].name}, {len(paths['plots'])} plots")
    return 0

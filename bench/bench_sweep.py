"""The demo sweep: how long it takes, and its findings as README.md states them.

Runs ``mmfree sweep CONFIG --out runs/sweep_NAME`` from a cold start (the
output directory, its compiled projects and its reference cache are removed
first, so every g++ build and evaluation is timed; ``--summarise-only`` just
reads a finished sweep) and writes two files:

* ``bench/results/sweep.json`` — the timing: wall time of the sweep (points
  run in parallel by ``--workers`` processes) and of the whole command (with
  the tables and plots), points, g++ builds, per-build convert / compile /
  evaluation seconds, against the precision-type sweep it replaced (278 s for
  the same 25 points on this 2-core machine);
* ``bench/results/sweep_NAME.json`` — the findings: per numeric configuration
  (frac_bits, sigmoid_table_bits: what the C-simulation's numbers depend on)
  the range of top-1 agreement and perplexity over the other knobs; per board
  how many points fit; the board preset's own point; greedy identity: the most
  prompts any point keeps identical, the cheapest point (smallest share of its
  board's scarcest resource) that reaches it, and the reference's smallest
  top-1 margin where a run diverged.

Accuracy is teacher-forced over the first ``eval.tokens`` bytes of the
held-out split (top-1, perplexity; one stream from a zero state), greedy
decoding carries the state after ``eval.greedy_prompts`` held-out prompts.
Resources and ``fits`` are the engine cost model's estimates unless a
synthesis report exists.

    python bench/bench_sweep.py [design/configs/sweep_demo.yaml] [--workers N] [--summarise-only]
"""

from __future__ import annotations

import _common

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CONFIG = _common.ROOT / "design" / "configs" / "sweep_demo.yaml"
#: The precision-type sweep this one replaced: 25 points, 2 cores (issue 13's baseline).
BASELINE_S = 278.0


def _rows(out: Path) -> list[dict]:
    path = out / "results.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path} not found: run the sweep first (without --summarise-only)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if k not in ("traceback",)} for r in rows]


def _numeric(r: dict) -> str:
    k = r.get("knobs") or {}
    return f"frac_bits={k.get('frac_bits')} sigmoid_table_bits={k.get('sigmoid_table_bits')}"


def summarise(out: Path, config: Path) -> dict:
    import yaml
    spec = yaml.safe_load(config.read_text())
    rows = _rows(out)
    ok = [r for r in rows if r.get("status") == "ok"]
    runs = [json.loads(l) for l in (out / "runs.jsonl").read_text().splitlines() if l.strip()]
    last = runs[-1] if runs else {}
    by_numeric: dict[str, dict] = {}
    for r in ok:
        g = by_numeric.setdefault(_numeric(r), {"points": 0, "top1": [], "perplexity": [], "greedy_identical": []})
        g["points"] += 1
        g["top1"].append(r["top1_agreement"])
        g["perplexity"].append(r["perplexity"])
        g["greedy_identical"].append(r.get("greedy_identical_prompts", 0))
    for g in by_numeric.values():
        for k in ("top1", "perplexity", "greedy_identical"):
            g[k] = [min(g[k]), max(g[k])]
    boards: dict[str, dict] = {}
    for r in ok:
        b = boards.setdefault(r["board"], {"points": 0, "fit": 0, "over_budget": {}})
        b["points"] += 1
        b["fit"] += bool(r.get("fits"))
        for res in r.get("over_budget") or []:
            b["over_budget"][res] = b["over_budget"].get(res, 0) + 1
    cost = lambda r: (r.get("util_max", float("inf")), r.get("cycles_per_token") or 0)
    best = max((r.get("greedy_identical_prompts", 0) for r in ok), default=0)
    reaching = sorted((r for r in ok if r.get("greedy_identical_prompts", 0) == best), key=cost)
    margins = [r["greedy_divergence_margin"] for r in reaching if r.get("greedy_divergence_margin") is not None]
    keep = ("label", "board", "tier", "packing", "knobs", "top1_agreement", "perplexity", "ref_perplexity",
            "greedy_identical_prompts", "greedy_prompts", "LUT", "FF", "BRAM_18K", "URAM", "DSP", "util_max",
            "fits", "over_budget", "tokens_per_s", "resource_source")
    fitting = sorted((r for r in ok if r.get("fits")), key=cost)
    preset = next((r for r in ok if (r.get("choices") or {}).get("point")), None)
    return {
        "model": ", ".join(Path(str(m.get("checkpoint") if isinstance(m, dict) else m)).name
                           for m in (spec.get("models") or {}).values()) or None,
        "config": str(config.relative_to(_common.ROOT) if config.resolve().is_relative_to(_common.ROOT) else config),
        "eval": spec.get("eval"), "points": len(rows), "ok": len(ok),
        "builds": len({r["accuracy_key"] for r in rows if r.get("accuracy_key")}),
        "last_run": {k: last.get(k) for k in ("wall_s", "workers", "scheduler", "ran", "skipped")},
        "resource_sources": sorted({str(r.get("resource_source")) for r in ok}),
        "fits_any": any(r.get("fits") for r in ok),
        "boards": boards,
        "by_numeric": by_numeric,
        "preset_point": {k: preset.get(k) for k in keep} if preset else None,
        "cheapest_fitting": {k: fitting[0].get(k) for k in keep} if fitting else None,
        "greedy": {"most_identical": best, "of": ok[0]["greedy_prompts"] if ok else None,
                   "cheapest": {k: reaching[0].get(k) for k in keep} if reaching else None,
                   "smallest_divergence_margin": min(margins) if margins else None},
        "output": str(out.relative_to(_common.ROOT) if out.resolve().is_relative_to(_common.ROOT) else out),
    }


def timing(out: Path, command_s: float, workers: int) -> dict:
    """The cold run's wall times and where a build's time goes."""
    rows = _rows(out)
    last = json.loads((out / "runs.jsonl").read_text().splitlines()[-1])
    leaders = [r for r in rows if r.get("compiled")]
    parts = {k: sorted(round(r[k], 2) for r in leaders if r.get(k) is not None)
             for k in ("convert_s", "compile_s", "eval_s", "wall_s")}
    sweep_s = last["wall_s"]
    return {
        "points": len(rows), "statuses": last.get("statuses"), "builds": last.get("groups"),
        "compiled": len(leaders), "workers": workers, "scheduler": last.get("scheduler"),
        "sweep_wall_s": round(sweep_s, 2), "command_wall_s": round(command_s, 2),
        "report_s": round(command_s - sweep_s, 2),
        "per_build_s": parts,
        "baseline_s": BASELINE_S,
        "speedup_sweep": round(BASELINE_S / sweep_s, 2),
        "speedup_command": round(BASELINE_S / command_s, 2),
        "target": "demo sweep (25 points) >= 3x faster than 278 s on 2 cores, i.e. <= 92.7 s",
        "meets_target": bool(command_s <= BASELINE_S / 3),
    }


def _fresh(out: Path) -> None:
    """Remove a previous run of this sweep (only a directory `mmfree sweep` made)."""
    if out.exists():
        sys.path.insert(0, str(_common.ROOT / "python"))
        from mmfree_hls.fsio import SWEEP_KIND, remove_tree
        remove_tree(out, SWEEP_KIND)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", nargs="?", default=str(CONFIG))
    ap.add_argument("--out", default=None, help="sweep directory (default runs/sweep_NAME)")
    ap.add_argument("--workers", type=int, default=None, help="worker processes (default: the CPU cores)")
    ap.add_argument("--summarise-only", action="store_true", help="read a finished sweep, run nothing")
    args = ap.parse_args(argv)
    config = Path(args.config).resolve()
    name = config.stem
    out = Path(args.out) if args.out else _common.ROOT / "runs" / name
    workers = args.workers or os.cpu_count() or 1
    if not args.summarise_only:
        _fresh(out)
        cmd = [sys.executable, "-m", "mmfree_hls", "sweep", str(config), "--out", str(out), "--no-progress",
               "--workers", str(workers)]
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=_common.ROOT, check=True)
        command_s = time.perf_counter() - t0
        t = timing(out, command_s, workers)
        tpath = _common.write_result("sweep", {"config": str(config.relative_to(_common.ROOT)
                                                           if config.is_relative_to(_common.ROOT) else config),
                                               **t})
        print(f"{t['points']} points, {t['builds']} builds, {workers} workers: sweep {t['sweep_wall_s']:.1f} s, "
              f"with report {t['command_wall_s']:.1f} s ({t['speedup_command']:.1f}x the {BASELINE_S:.0f} s "
              f"baseline); wrote {tpath}")
    result = summarise(out, config)
    # a summary of a finished sweep is regenerated by the run itself, not by --summarise-only
    command = _common.command_line().replace(" --summarise-only", "")
    path = _common.write_result(name, result, command=command)
    print(json.dumps({k: result[k] for k in ("points", "ok", "builds", "last_run", "boards", "greedy")}, indent=1))
    for key, g in sorted(result["by_numeric"].items()):
        print(f"{key}: top-1 {100 * g['top1'][0]:.1f}-{100 * g['top1'][1]:.1f} %, "
              f"perplexity {g['perplexity'][0]:.2f}-{g['perplexity'][1]:.2f} ({g['points']} points)")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

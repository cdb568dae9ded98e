"""The demo sweep's findings, as README.md states them: run `mmfree sweep`, summarise its results.

Runs ``mmfree sweep CONFIG --out runs/sweep_NAME`` (resumable: finished points
are kept, so a re-run only measures what is missing; ``--summarise-only`` just
reads a finished sweep) and writes ``bench/results/sweep_NAME.json`` with:

* the run: points, g++ builds (groups of points whose numbers cannot differ),
  wall time and workers of the last run, where resources come from;
* per activation width: the range of top-1 agreement and perplexity over the
  other knobs; the default precision's point;
* greedy identity: the most prompts any point keeps identical, the cheapest
  point (fewest DSP, then LUT) that reaches it, and the reference's smallest
  top-1 margin where a run diverged.

Accuracy is teacher-forced over the first ``eval.tokens`` bytes of the
held-out split (top-1, perplexity; one stream from a zero state), greedy
decoding carries the state after ``eval.greedy_prompts`` held-out prompts.

    python bench/bench_sweep.py [design/configs/sweep_demo.yaml] [--workers N] [--summarise-only]
"""

from __future__ import annotations

import _common

import argparse
import json
import subprocess
import sys
from pathlib import Path

CONFIG = _common.ROOT / "design" / "configs" / "sweep_demo.yaml"


def _rows(out: Path) -> list[dict]:
    path = out / "results.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path} not found: run the sweep first (without --summarise-only)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if k not in ("layers", "precision")} for r in rows]


def summarise(out: Path, config: Path) -> dict:
    import yaml
    spec = yaml.safe_load(config.read_text())
    rows = _rows(out)
    ok = [r for r in rows if r.get("status") == "ok"]
    runs = [json.loads(l) for l in (out / "runs.jsonl").read_text().splitlines() if l.strip()]
    last = runs[-1] if runs else {}
    by_act = {}
    for r in ok:
        act = (r.get("choices") or {}).get("bitlinear.act_bits")
        if act is None:
            continue
        g = by_act.setdefault(str(act), {"points": 0, "top1": [], "perplexity": []})
        g["points"] += 1
        g["top1"].append(r["top1_agreement"])
        g["perplexity"].append(r["perplexity"])
    for g in by_act.values():
        g["top1"] = [min(g["top1"]), max(g["top1"])]
        g["perplexity"] = [min(g["perplexity"]), max(g["perplexity"])]
    best = max((r["greedy_identical_prompts"] for r in ok), default=0)
    reaching = sorted((r for r in ok if r["greedy_identical_prompts"] == best), key=lambda r: (r["DSP"], r["LUT"]))
    # what keeps the best points from all prompts: the reference's margin where *they* diverge
    margins = [r["greedy_divergence_margin"] for r in reaching if r.get("greedy_divergence_margin") is not None]
    keep = ("label", "choices", "top1_agreement", "perplexity", "ref_perplexity", "greedy_identical_prompts",
            "greedy_prompts", "DSP", "LUT", "BRAM_18K", "FF", "latency_cycles", "resource_source", "fits")
    default = next((r for r in ok if r["label"] == "default"), None)
    return {
        "model": ", ".join(Path(str(m.get("checkpoint") if isinstance(m, dict) else m)).name
                           for m in (spec.get("models") or {}).values()) or None,
        "config": str(config.relative_to(_common.ROOT) if config.resolve().is_relative_to(_common.ROOT) else config),
        "eval": spec.get("eval"), "points": len(rows), "ok": len(ok),
        "builds": len({r["accuracy_key"] for r in rows if r.get("accuracy_key")}),
        "last_run": {k: last.get(k) for k in ("wall_s", "workers", "scheduler", "ran", "skipped")},
        "resource_sources": sorted({str(r.get("resource_source")) for r in ok}),
        "fits_any": any(r.get("fits") for r in ok),
        "by_act_bits": by_act,
        "default": {k: default[k] for k in keep} if default else None,
        "greedy": {"most_identical": best, "of": ok[0]["greedy_prompts"] if ok else None,
                   "cheapest": {k: reaching[0][k] for k in keep} if reaching else None,
                   "smallest_divergence_margin": min(margins) if margins else None},
        "output": str(out.relative_to(_common.ROOT) if out.resolve().is_relative_to(_common.ROOT) else out),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", nargs="?", default=str(CONFIG))
    ap.add_argument("--out", default=None, help="sweep directory (default runs/sweep_NAME)")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--summarise-only", action="store_true", help="read a finished sweep, run nothing")
    args = ap.parse_args(argv)
    config = Path(args.config).resolve()
    name = config.stem
    out = Path(args.out) if args.out else _common.ROOT / "runs" / name
    if not args.summarise_only:
        cmd = [sys.executable, "-m", "mmfree_hls", "sweep", str(config), "--out", str(out), "--no-progress"]
        if args.workers:
            cmd += ["--workers", str(args.workers)]
        subprocess.run(cmd, cwd=_common.ROOT, check=True)
    result = summarise(out, config)
    # a summary of a finished sweep is regenerated by the run itself, not by --summarise-only
    command = _common.command_line().replace(" --summarise-only", "")
    path = _common.write_result(name, result, command=command)
    print(json.dumps({k: result[k] for k in ("points", "ok", "builds", "last_run", "greedy")}, indent=1))
    for act, g in sorted(result["by_act_bits"].items(), key=lambda kv: -int(kv[0])):
        print(f"act_bits {act}: top-1 {100 * g['top1'][0]:.1f}-{100 * g['top1'][1]:.1f} %, "
              f"perplexity {g['perplexity'][0]:.2f}-{g['perplexity'][1]:.2f} ({g['points']} points)")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

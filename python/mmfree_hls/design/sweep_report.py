"""Tables, Pareto fronts and the terminal summary of a sweep's ``results.jsonl``.

Outputs (in the sweep's output directory):

* ``results.csv`` / ``results.parquet`` — one tidy row per point: identity
  (hashes, label, one column per grid axis, board, tier, packing, every
  engine knob as ``knob:<name>``), status and error, accuracy metrics,
  resources (+ ``resource_source``), utilisation of the point's board and
  ``fits`` per resource (``fits_LUT``, ...) and overall, tokens/s, timings;
* ``metadata.json`` — tool versions, the sweep file and its digest, the board
  table's digest, every point's hashes, the run log (wall times);
* ``pareto.png`` (every accuracy metric × every resource) and
  ``pareto_<resource>.png`` (the primary metric) — points that fit their
  board filled, points that do not hollow, and the front of configurations
  no other beats on both that resource and accuracy (among all points, and
  among the points that fit).

Cost of a configuration (for "cheapest"): the utilisation of its board's
scarcest resource (``util_max``: max of the LUT, FF, BRAM_18K, URAM, DSP
shares — what decides whether it fits), then the sum of the shares, then
cycles per token.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Iterable, Optional

from .sweep import KNOBS, RESULTS_FILE, RUNS_FILE, REPO_ROOT, ResultsStore, digest

UTIL_RESOURCES = ("LUT", "FF", "BRAM_18K", "URAM", "DSP")
#: Plotted against accuracy (lower is cheaper).
RESOURCES = ("util_max", "LUT", "FF", "BRAM_18K", "DSP", "cycles_per_token")
#: accuracy metric → True when higher is better
METRICS = {"top1_agreement": True, "greedy_agreement": True, "perplexity": False}
PRIMARY_METRIC = "top1_agreement"
COST_ORDER = ("util_max", "util_sum", "cycles_per_token")
PACKAGES = ("mmfree-hls", "numpy", "hls4ml", "tensorflow", "qkeras", "dask", "distributed", "pandas",
            "pyarrow", "matplotlib", "pyyaml")
FIRST_COLUMNS = ("sweep", "index", "label", "model", "board", "tier", "packing", *[f"knob:{k}" for k in KNOBS],
                 "status", "error_kind", "fits", *[f"fits_{k}" for k in UTIL_RESOURCES], "top1_agreement",
                 "greedy_agreement", "greedy_identical", "greedy_prefix", "perplexity", "ref_perplexity",
                 "max_logit_err", "mean_logit_err", "rel_logit_err", "LUT", "FF", "BRAM_18K", "URAM", "DSP",
                 "resource_source", *[f"util_{k}" for k in UTIL_RESOURCES], "util_max", "util_sum",
                 "cycles_per_token", "tokens_per_s", "bound_tokens_per_s", "share_of_bound", "R", "lanes",
                 "point_hash", "project_hash", "accuracy_key", "accuracy_from")


# ===================================================================== tables
def load_rows(out_dir: str | Path, point_hashes: Optional[Iterable[str]] = None) -> list[dict]:
    """The latest row of each point (optionally only the given points), in sweep order."""
    latest = ResultsStore(out_dir).latest()
    if point_hashes is not None:
        want = list(point_hashes)
        rows = [latest[h] for h in want if h in latest]
    else:
        rows = list(latest.values())
    return sorted(rows, key=lambda r: (r.get("index", 0), r.get("label", "")))


def tidy(rows: list[dict]):
    """A pandas DataFrame, one flat row per point (axes and knobs as columns, nested fields as JSON text)."""
    import pandas as pd
    flat = []
    axes: list[str] = []
    for r in rows:
        f = {k: v for k, v in r.items() if k not in ("choices", "knobs", "preset", "saturated", "traceback",
                                                    "over_budget")}
        for axis, label in (r.get("choices") or {}).items():
            if axis in ("model", "board", "tier", "packing"):
                continue
            col = f"axis:{axis}"
            f[col] = label
            if col not in axes:
                axes.append(col)
        for k, v in (r.get("knobs") or {}).items():
            f[f"knob:{k}"] = v
        f["saturated"] = json.dumps(r.get("saturated") or {}, sort_keys=True)
        f["over_budget"] = ",".join(r.get("over_budget") or [])
        f["preset_json"] = json.dumps(r.get("preset") or {}, sort_keys=True)
        utils = [r.get(f"util_{k}") for k in UTIL_RESOURCES]
        f["util_sum"] = sum(utils) if all(u is not None for u in utils) else None
        flat.append(f)
    df = pd.DataFrame(flat)
    first = [c for c in FIRST_COLUMNS if c in df.columns]
    if "label" in first:
        at = first.index("label") + 1
        first[at:at] = axes
    rest = sorted(c for c in df.columns if c not in first)
    df = df[first + rest] if len(df) else df
    for col in ("greedy_identical", "fits", "compiled", *[f"fits_{k}" for k in UTIL_RESOURCES]):
        if col in df.columns:
            df[col] = df[col].astype("boolean")
    return df


def _versions() -> dict:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    try:
        out["g++"] = subprocess.run(["g++", "--version"], capture_output=True, text=True,
                                    timeout=10).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        out["g++"] = None
    return out


def _git_commit() -> Optional[str]:
    try:
        p = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        return p.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _boards_digest() -> Optional[str]:
    from ..engine.presets import boards_file
    try:
        return digest(json.loads(Path(boards_file()).read_text()))
    except (OSError, json.JSONDecodeError):
        return None


def build_metadata(out_dir: Path, rows: list[dict]) -> dict:
    spec_file = out_dir / "sweep_spec.json"
    spec = json.loads(spec_file.read_text()) if spec_file.is_file() else None
    runs = []
    if (out_dir / RUNS_FILE).is_file():
        runs = [json.loads(l) for l in (out_dir / RUNS_FILE).read_text().splitlines() if l.strip()]
    return {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": _versions(), "git_commit": _git_commit(),
        "sweep": spec, "sweep_digest": digest(spec) if spec is not None else None,
        "boards_digest": _boards_digest(),
        "points": [{"index": r.get("index"), "label": r.get("label"), "status": r.get("status"),
                    "board": r.get("board"), "tier": r.get("tier"), "packing": r.get("packing"),
                    "knobs": r.get("knobs"), "fits": r.get("fits"),
                    "point_hash": r["point_hash"], "project_hash": r.get("project_hash"),
                    "accuracy_key": r.get("accuracy_key")} for r in rows],
        "runs": runs,
        "cost": "util_max (share of the point's board's scarcest resource), then util_sum, then cycles_per_token",
    }


# ===================================================================== Pareto
def pareto_mask(cost, acc, higher_is_better: bool = True) -> list[bool]:
    """True for points no other point beats on both cost (lower) and accuracy (and strictly on one)."""
    pts = list(zip(cost, acc))
    sign = 1 if higher_is_better else -1
    out = []
    for i, (c, a) in enumerate(pts):
        dominated = any((c2 <= c and sign * a2 >= sign * a) and (c2 < c or sign * a2 > sign * a)
                        for j, (c2, a2) in enumerate(pts) if j != i)
        out.append(not dominated)
    return out


def _valid(df, cols: Iterable[str]):
    import numpy as np
    ok = df[df["status"].isin(["ok"])] if "status" in df.columns else df
    for c in cols:
        if c not in ok.columns:
            return ok.iloc[0:0]
        ok = ok[ok[c].notna()]
        ok = ok[np.isfinite(ok[c].astype(float))]
    return ok


def pareto_front(df, resource: str = "util_max", metric: str = PRIMARY_METRIC, fitting: bool = False):
    """Rows of the front of ``metric`` vs ``resource`` (status ok only; ``fitting``: only points that
    fit their board), cheapest first."""
    ok = _valid(df, [resource, metric])
    if fitting:
        ok = ok[_fits(ok)]
    if not len(ok):
        return ok
    mask = pareto_mask(ok[resource].astype(float).tolist(), ok[metric].astype(float).tolist(), METRICS.get(metric, True))
    return ok[mask].sort_values([resource, metric])


def _fits(df):
    """Boolean mask: the point fits its board (unknown counts as not)."""
    import pandas as pd
    if "fits" not in df.columns:
        return pd.Series(False, index=df.index)
    return df["fits"].fillna(False).astype(bool)


def cheapest_greedy_identical(df, min_prompts: Optional[int] = None):
    """The cheapest ok point whose greedy decoding equals the numpy reference's (None if none).

    Strict by default (every prompt identical); ``min_prompts`` asks for at least that many
    identical prompts instead.
    """
    ok = _valid(df, ["util_max"])
    if "greedy_identical" not in ok.columns:
        return None
    if min_prompts is None:
        ok = ok[ok["greedy_identical"].fillna(False).astype(bool)]
    else:
        ok = ok[ok["greedy_identical_prompts"].fillna(0) >= min_prompts]
    if not len(ok):
        return None
    return ok.sort_values(list(COST_ORDER)).iloc[0]


def greedy_lines(df) -> list[str]:
    """The cheapest strictly greedy-identical configuration; failing that, the cheapest with as many
    identical prompts as the best point reached (near-ties of the reference can defeat every path)."""
    best = cheapest_greedy_identical(df)
    if best is not None:
        return [f"cheapest greedy-identical configuration: {best['label']} (util {_fmt(best['util_max'], 'pct')}, "
                f"top-1 {_fmt(best.get('top1_agreement'), 'pct')}, point {best['point_hash']})"]
    ok = _valid(df, ["util_max"])
    if "greedy_identical_prompts" not in ok.columns or not len(ok):
        return ["no configuration kept greedy decoding identical to the numpy reference"]
    k = int(ok["greedy_identical_prompts"].max())
    n = int(ok["greedy_prompts"].max())
    top = ok[ok["greedy_identical_prompts"] == k]
    lines = [f"no configuration kept greedy decoding identical on all {n} prompts; the most reached is {k}/{n} "
             f"({len(top)} points; smallest reference top-1 margin where they diverged: "
             f"{_fmt(top['greedy_divergence_margin'].min(), 'f')})"]
    if k:
        b = cheapest_greedy_identical(df, k)
        lines.append(f"cheapest configuration with {k}/{n} prompts identical: {b['label']} "
                     f"(util {_fmt(b['util_max'], 'pct')}, top-1 {_fmt(b.get('top1_agreement'), 'pct')}, "
                     f"point {b['point_hash']})")
    return lines


def plot_pareto(df, out_dir: Path, primary: str = PRIMARY_METRIC) -> list[Path]:
    """Accuracy vs resources: fitting points filled (one colour per board), the others hollow;
    the Pareto front of all ok points (dashed) and of the points that fit (solid)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    boards = sorted(df["board"].dropna().unique()) if "board" in df.columns else []
    colours = {b: f"C{i % 10}" for i, b in enumerate(boards)}

    def panel(ax, resource: str, metric: str) -> None:
        ok = _valid(df, [resource, metric])
        over = df[df["status"] == "overflow"] if "status" in df.columns else df.iloc[0:0]
        over = over[over[resource].notna() & over[metric].notna()] if len(over) and resource in over and metric in over else over.iloc[0:0]
        fit = _fits(ok)
        for b in boards or [None]:
            mine = ok if b is None else ok[ok["board"] == b]
            mf = _fits(mine)
            c = colours.get(b, "C0")
            if mf.any():
                ax.scatter(mine[mf][resource], mine[mf][metric], s=30, c=c, alpha=0.85,
                           label=f"{b or 'point'}: fits")
            if (~mf).any():
                ax.scatter(mine[~mf][resource], mine[~mf][metric], s=30, facecolors="none", edgecolors=c,
                           alpha=0.85, label=f"{b or 'point'}: over budget")
        if len(over):
            ax.scatter(over[resource], over[metric], s=22, marker="x", c="tab:red", alpha=0.7, label="overflow")
        front = pareto_front(df, resource, metric)
        if len(front):
            ax.step(front[resource], front[metric], where="post", c="grey", lw=1, ls="--", label="Pareto front (all)")
        front = pareto_front(df, resource, metric, fitting=True)
        if len(front):
            ax.step(front[resource], front[metric], where="post", c="tab:green", lw=1.8,
                    label="Pareto front (fits)")
            ax.scatter(front[resource], front[metric], s=70, facecolors="none", edgecolors="tab:green", lw=1.5)
        if resource == "util_max":
            ax.axvline(1.0, c="tab:red", lw=0.8, ls=":", label="board budget")
        one_model = "model" in df.columns and df["model"].nunique() == 1
        if metric == "perplexity" and one_model and "ref_perplexity" in df.columns and df["ref_perplexity"].notna().any():
            ax.axhline(float(df["ref_perplexity"].dropna().iloc[0]), ls="--", c="grey", lw=1,
                       label="numpy reference")
        src = _source(df)
        ax.set_xlabel(resource + (f" ({src})" if src and src != "analytic" else " (model estimate)" if src else ""))
        ax.set_ylabel(metric)
        if len(ok) and float(ok[resource].min()) > 0 and float(ok[resource].max()) / float(ok[resource].min()) > 20:
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.set_title(f"{int(fit.sum())}/{len(ok)} fit", fontsize=8, loc="right")

    paths = []
    metrics = [m for m in METRICS if m in df.columns]
    resources = [r for r in RESOURCES if r in df.columns]
    if not metrics or not resources:
        return paths
    fig, axes = plt.subplots(len(metrics), len(resources), figsize=(4 * len(resources), 3.2 * len(metrics)),
                             squeeze=False)
    for i, m in enumerate(metrics):
        for j, r in enumerate(resources):
            panel(axes[i][j], r, m)
    axes[0][0].legend(fontsize=6)
    name = str(df["sweep"].iloc[0]) if "sweep" in df.columns and len(df) else "sweep"
    fig.suptitle(f"{name}: accuracy vs resources ({len(df)} points; filled = fits its board)")
    fig.tight_layout()
    p = out_dir / "pareto.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    paths.append(p)
    if primary in df.columns:
        for r in resources:
            fig, ax = plt.subplots(figsize=(6, 4.2))
            panel(ax, r, primary)
            ax.legend(fontsize=7)
            ax.set_title(f"{name}: {primary} vs {r} (filled = fits its board)", fontsize=9)
            fig.tight_layout()
            p = out_dir / f"pareto_{r}.png"
            fig.savefig(p, dpi=90)
            plt.close(fig)
            paths.append(p)
    return paths


def _source(df) -> str:
    if "resource_source" not in df.columns:
        return ""
    s = set(df["resource_source"].dropna())
    return s.pop() if len(s) == 1 else "mixed"


# ===================================================================== terminal
def _fmt(v, kind: str = "") -> str:
    import math
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if kind == "pct":
        return f"{100 * float(v):.1f}%"
    if kind == "int":
        return f"{int(v):,}"
    if kind == "f":
        return f"{float(v):.3g}"
    return str(v)


def summary_table(df, max_rows: int = 40) -> str:
    """Points cheapest first: accuracy, resources, fits and source; '*' marks the util_max Pareto front
    of the points that fit their board.

    greedy = share of greedy tokens equal to the reference's; same = prompts decoded identically;
    fits = yes, or the resources over the board's budget.
    """
    if not len(df):
        return "(no results)"
    front = set(pareto_front(df, fitting=True)["point_hash"]) if "util_max" in df.columns else set()
    cols = [("", 1), ("label", 34), ("board", 7), ("status", 8), ("top1", 6), ("greedy", 6), ("same", 4),
            ("ppl", 6), ("LUT", 8), ("BRAM", 5), ("DSP", 5), ("util", 7), ("fits", 12), ("tok/s", 7),
            ("source", 8)]
    order = df.copy()
    order["_cost"] = order["util_max"] if "util_max" in order.columns else 0
    order = order.sort_values(["_cost"], na_position="last")
    lines = [" ".join(f"{h:<{w}}" for h, w in cols)]
    for _, r in order.head(max_rows).iterrows():
        g = r.get("greedy_agreement")
        same = (f"{_fmt(r.get('greedy_identical_prompts'), 'int')}/{_fmt(r.get('greedy_prompts'), 'int')}"
                if r.get("greedy_prompts") == r.get("greedy_prompts") and r.get("greedy_prompts") is not None else "-")
        fits = r.get("fits")
        fits = "-" if fits is None or fits != fits or r.get("util_max") != r.get("util_max") else (
            "yes" if bool(fits) else "no " + str(r.get("over_budget") or ""))
        vals = ["*" if r["point_hash"] in front else " ", str(r.get("label", ""))[:34], str(r.get("board", ""))[:7],
                r.get("status"), _fmt(r.get("top1_agreement"), "pct"), _fmt(g, "pct"), same,
                _fmt(r.get("perplexity"), "f"), _fmt(r.get("LUT"), "int"), _fmt(r.get("BRAM_18K"), "int"),
                _fmt(r.get("DSP"), "int"), _fmt(r.get("util_max"), "pct"), fits[:12],
                _fmt(r.get("tokens_per_s"), "int"),
                {"vitis_hls_report": "csynth", "vivado_impl": "vivado", "analytic": "model"}.get(
                    r.get("resource_source"), "-")]
        lines.append(" ".join(f"{str(v):<{w}}" for v, (_, w) in zip(vals, cols)))
    if len(order) > max_rows:
        lines.append(f"... {len(order) - max_rows} more rows in results.csv")
    failed = df[~df["status"].isin(["ok"])] if "status" in df.columns else df.iloc[0:0]
    for _, r in failed.iterrows():
        lines.append(f"  {r.get('status')}: {r.get('label')}: {str(r.get('error') or '')[:160]}")
    ok = _valid(df, [])
    if "board" in ok.columns and len(ok):
        per = ", ".join(f"{b} {int(_fits(g).sum())}/{len(g)}" for b, g in ok.groupby("board"))
        lines.append(f"points that fit their board: {per}"
                     + ("" if _source(df) not in ("analytic", "") else " (cost model estimates)"))
    lines += greedy_lines(df)
    return "\n".join(lines)


# ===================================================================== all of it
def write_report(out_dir: str | Path, point_hashes: Optional[Iterable[str]] = None,
                 primary: str = PRIMARY_METRIC) -> dict:
    """CSV, Parquet, metadata JSON and plots; returns their paths and the summary text."""
    out = Path(out_dir)
    if not (out / RESULTS_FILE).is_file():
        raise FileNotFoundError(f"{out / RESULTS_FILE} not found; run `mmfree sweep CONFIG.yaml --out {out}` first")
    rows = load_rows(out, point_hashes)
    df = tidy(rows)
    paths = {"csv": out / "results.csv", "parquet": out / "results.parquet", "metadata": out / "metadata.json"}
    df.to_csv(paths["csv"], index=False)
    df.to_parquet(paths["parquet"], index=False)
    paths["metadata"].write_text(json.dumps(build_metadata(out, rows), indent=2, default=str) + "\n")
    paths["plots"] = plot_pareto(df, out, primary)
    return {"paths": paths, "summary": summary_table(df), "frame": df}

"""One sweep group in its own process: convert, compile once, evaluate, cost every point.

Started by :func:`mmfree_hls.design.sweep.run_task` as
``python -m mmfree_hls.design.sweep_eval TASK.json``. For each point of the
group it writes ``<work>/<point>.started``, then ``<work>/<point>.json`` (the
result row). The first point whose engine build is possible converts its
project, compiles the C-simulation and evaluates it; the others differ only in
knobs that do not change the C-simulation's numbers (board, tier, packing,
clock, lanes, rows per tile), so they reuse its metrics (``accuracy_from``)
and only get their own cost record.

Accuracy of a point, from the engine's C-simulation on held-out text (the
last 5 % of the corpus, never trained on), against the numpy reference (the
golden model):

* teacher-forced over ``eval.tokens`` tokens: perplexity of the C-sim (and of
  the reference, for scale), top-1 agreement (the C-sim's argmax is a
  maximiser of the reference logits: the integer head has exact ties, where
  numpy takes the lower index), max / mean |Δlogit| and the max relative to
  max |reference logit|;
* greedy decoding of ``eval.greedy_tokens`` tokens after each of
  ``eval.greedy_prompts`` prompts of ``eval.prompt_tokens`` held-out tokens
  (evenly spaced over the held-out text): the share of positions with the
  same token, the shortest identical prefix, how many runs are identical and
  whether all are (strict), and the reference's own top-1 margin where a run
  diverged (a divergence at a near-tie is a coin toss any fixed-point path
  can lose; 0 = an exact tie);
* saturation: the engine reports in its status word when a value saturated
  its 32-bit vectors (too many fraction bits for the range); a point with any
  saturated step is recorded as ``overflow`` (metrics kept).

Resources, ``fits`` (per resource and overall, for the point's own board) and
tokens/s come from the engine's cost model (:func:`mmfree_hls.engine.cost.estimate`),
which reads a Vitis HLS / Vivado report of the point's project when one exists.

Evaluating the reference is cheap but not free; its outputs are cached under
``<cache>/reference/<key>.npz``.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np


# ===================================================================== model and text
def load_model(spec: Mapping):
    """The MMFreeLM of a sweep model entry (checkpoint directory or seeded random config)."""
    from ..config import ModelConfig
    from ..reference import MMFreeLM
    if spec.get("checkpoint"):
        from ..checkpoint import load_checkpoint
        return load_checkpoint(spec["checkpoint"])
    return MMFreeLM.random(ModelConfig.from_dict(dict(spec["random"])), int(spec.get("seed", 0)))


def _heldout() -> np.ndarray:
    from ..corpus import corpus_bytes, split_holdout
    return split_holdout(corpus_bytes())[1]


def _as_vocab(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    ids = ids.astype(np.int64)
    return ids if vocab_size >= 256 else ids % vocab_size


def heldout_ids(vocab_size: int, n: int, offset: int = 0) -> np.ndarray:
    """n token ids of held-out text: bytes (a byte-level vocabulary) or bytes mod V for smaller test models."""
    held = _heldout()
    if offset + n > len(held):
        raise ValueError(f"eval asks for {n} tokens from offset {offset}, the held-out text has {len(held)}; "
                         "lower eval.tokens or eval.offset")
    return _as_vocab(held[offset:offset + n], vocab_size)


def heldout_prompts(vocab_size: int, count: int, length: int, offset: int = 0) -> np.ndarray:
    """``count`` prompts of ``length`` ids, evenly spaced over the held-out text from ``offset`` (count, length)."""
    held = _heldout()
    span = len(held) - offset - length
    if span < 0:
        raise ValueError(f"eval.prompt_tokens {length} from offset {offset} exceed the held-out text "
                         f"({len(held)} bytes)")
    starts = [offset + (k * span) // max(count, 1) for k in range(count)]
    return np.stack([_as_vocab(held[s:s + length], vocab_size) for s in starts])


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def perplexity(logits: np.ndarray, ids: np.ndarray) -> float:
    """exp(mean NLL) of ids[t + 1] under logits[t]."""
    lp = _log_softmax(logits[:-1])
    nll = -lp[np.arange(len(ids) - 1), ids[1:]]
    return float(np.exp(nll.mean()))


def _greedy(step, embed, prompt: np.ndarray, n: int, state, on_step=None) -> tuple[list[int], list[float]]:
    """Greedy continuation of ``prompt`` by ``step(x, state)``; also the top-1 minus top-2 margins."""
    for tok in prompt:
        lg, state = step(embed(int(tok)), state)
        if on_step:
            on_step(lg, state)
    tokens, margins = [], []
    for _ in range(n):
        top2 = np.sort(lg)[-2:]
        margins.append(float(top2[1] - top2[0]))
        tokens.append(int(np.argmax(lg)))
        lg, state = step(embed(tokens[-1]), state)
        if on_step:
            on_step(lg, state)
    return tokens, margins


def reference_outputs(model, ids: np.ndarray, prompts: np.ndarray, greedy: int, cache: Optional[Path]) -> dict:
    """Teacher-forced logits of the numpy reference over ids and its greedy continuation of each prompt.

    ``greedy_margin[p, k]``: top-1 minus top-2 reference logit at greedy step k of prompt p (0 = an
    exact tie, where numpy's argmax takes the lower index and any other path may rightly take the other).
    """
    if cache is not None and cache.is_file():
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    state = model.init_state()
    logits = np.empty((len(ids), model.config.vocab_size))
    for t, tok in enumerate(ids):
        logits[t], state = model.step(int(tok), state)
    runs = [_greedy(model.decode_step, model.embed, p, greedy, model.init_state()) for p in prompts]
    out = {"logits": logits, "greedy": np.asarray([r[0] for r in runs], dtype=np.int64).reshape(len(prompts), greedy),
           "greedy_margin": np.asarray([r[1] for r in runs], dtype=np.float64).reshape(len(prompts), greedy)}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **out)
        os.replace(tmp, cache)
    return out


#: Status bits of the engine's step (runtime/backend_csim.describe_status).
STATUS_NONFINITE = 1
STATUS_SATURATED = 2


def csim_outputs(lib, model, ids: np.ndarray, prompts: np.ndarray, greedy: int) -> dict:
    """Teacher-forced logits of the C-simulation, its greedy continuations and its saturated steps.

    ``lib`` is a :class:`mmfree_hls.runtime.backend_csim.CSimLibrary`; its status word is read
    on every step (a saturated value is counted, not an error).
    """
    L, e, V = lib.L, lib.e, lib.V
    sat = {"steps": 0}

    def step(vec, state):
        out, s, rc = lib.step_status(vec, np.reshape(state, (L, e)))
        if rc & ~STATUS_SATURATED:
            from ..runtime.backend_csim import describe_status
            raise RuntimeError(f"the C-simulation's step returned {rc}: {describe_status(rc)}")
        sat["steps"] += bool(rc & STATUS_SATURATED)
        return out, s.reshape(L * e)

    state = np.zeros(L * e, np.float32)
    logits = np.empty((len(ids), V))
    for t, tok in enumerate(ids):
        logits[t], state = step(model.embed(int(tok)), state)
    tokens = [_greedy(step, model.embed, p, greedy, np.zeros(L * e, np.float32))[0] for p in prompts]
    return {"logits": logits, "greedy": np.asarray(tokens, dtype=np.int64).reshape(len(prompts), greedy),
            "saturated": {"vectors": sat["steps"]} if sat["steps"] else {}}


#: Version of the cached reference outputs (bump when reference_outputs stores something new).
REFERENCE_FORMAT = 3
#: Reference logits within this of the maximum count as maximisers (exact integer ties of the head).
TIE_TOLERANCE = 1e-9


def accuracy_metrics(ids: np.ndarray, ref: Mapping, sim: Mapping) -> dict:
    """Metrics of one point; greedy arrays are (prompts, tokens)."""
    rl, sl = ref["logits"], sim["logits"]
    err = np.abs(sl - rl)
    g_ref, g_sim = np.atleast_2d(ref["greedy"]), np.atleast_2d(sim["greedy"])
    same = g_ref == g_sim
    n = same.shape[1]
    prefixes = [int(n if row.all() else np.argmin(row)) for row in same]
    finite = bool(np.isfinite(sl).all())
    # top-1: the C-sim's argmax is a maximiser of the reference logits (an exact tie counts as agreement)
    picked = rl[np.arange(len(rl)), sl.argmax(-1)]
    top1 = picked >= rl.max(-1) - TIE_TOLERANCE
    margin = ref.get("greedy_margin")
    margins = [float(np.atleast_2d(margin)[p, k]) for p, k in enumerate(prefixes) if k < n] if margin is not None else []
    return {
        "tokens": int(len(ids)),
        "perplexity": perplexity(sl, ids) if finite else math.inf,
        "ref_perplexity": perplexity(rl, ids),
        "top1_agreement": float(np.mean(top1)),
        "max_logit_err": float(err.max()) if finite else math.inf,
        "mean_logit_err": float(err.mean()) if finite else math.inf,
        "rel_logit_err": float(err.max() / max(np.abs(rl).max(), 1e-12)) if finite else math.inf,
        "greedy_prompts": int(same.shape[0]),
        "greedy_tokens": int(n),
        "greedy_agreement": float(same.mean()) if same.size else 1.0,
        "greedy_prefix": min(prefixes) if prefixes else 0,
        "greedy_identical_prompts": int(sum(k == n for k in prefixes)),
        "greedy_identical": bool(same.all()),
        # where a run diverged: the reference's own top-1 minus top-2 margin there (0 = an exact tie)
        "greedy_divergence_margin": min(margins) if margins else None,
        "greedy_diverged_at_tie": bool(margins and min(margins) <= TIE_TOLERANCE),
    }


# ===================================================================== runners
class CSimRunner:
    """The sweep's default runner: engine project → g++ C-simulation → metrics vs the numpy reference.

    A runner has ``model_config()``, ``check(point)`` (refuses a build the engine cannot make,
    before anything is written), ``convert(point, project_dir)`` and ``measure(point, project_dir)``.
    """

    def __init__(self, model_spec: Mapping, eval_settings: Mapping, cache_dir: Path):
        self.spec = model_spec
        self.eval = dict(eval_settings)
        self.cache_dir = Path(cache_dir)
        self.model = load_model(model_spec)

    def check(self, point: Mapping) -> None:
        from ..engine.project import check_shape
        check_shape(self.model.config, point_preset(point), point["packing"])

    def convert(self, point: Mapping, project_dir: Path) -> dict:
        """The point's engine project, as ``convert()`` writes it, from the engine's own writer.

        ``convert()`` runs the model through hls4ml first (a TensorFlow import and a Keras graph:
        several seconds a process); its writer ends in the same ``engine.project.write_project``,
        so the firmware and weights are byte-identical (tests/test_sweep.py checks it) and the
        sweep skips the front end. Cached by the same content hash as ``convert()``.
        """
        from ..engine.project import write_project
        from .convert import _prepare_dir, content_hash
        t0 = time.perf_counter()
        preset = point_preset(point)
        digest = content_hash(self.model, preset, point["packing"])
        if not _prepare_dir(project_dir, digest, overwrite=True):
            write_project(self.model, project_dir, preset, point["packing"],
                          extra={"content_hash": digest, "checkpoint": self.spec.get("checkpoint"),
                                 "written_by": "mmfree sweep (engine writer)"})
        return {"convert_s": time.perf_counter() - t0}

    def measure(self, point: Mapping, project_dir: Path) -> dict:
        from ..engine.project import EngineProject
        project = EngineProject(project_dir)
        t0 = time.perf_counter()
        compiled_here = not project.is_compiled()
        project.compile(verbose=False)
        t1 = time.perf_counter()
        ev = self.eval
        V = self.model.config.vocab_size
        ids = heldout_ids(V, ev["tokens"], ev["offset"])
        prompts = heldout_prompts(V, ev["greedy_prompts"], ev["prompt_tokens"], ev["offset"])
        ref_key = _reference_key(self.spec, ev)
        ref = reference_outputs(self.model, ids, prompts, ev["greedy_tokens"],
                                self.cache_dir / "reference" / f"{ref_key}.npz")
        sim = csim_outputs(project.csim(), self.model, ids, prompts, ev["greedy_tokens"])
        metrics = accuracy_metrics(ids, ref, sim)
        metrics["saturated"] = sim["saturated"]
        metrics.update(compile_s=t1 - t0, compiled=compiled_here, eval_s=time.perf_counter() - t1)
        return metrics

    def model_config(self):
        return self.model.config


def point_preset(point: Mapping):
    """The EnginePreset of a point (its board and tier with its knobs)."""
    from ..engine.presets import get_preset
    return get_preset(point["board"], point["tier"], **point["knobs"])


def _reference_key(model_spec: Mapping, ev: Mapping) -> str:
    """Cache key of the reference outputs: the model's identity and the evaluation settings."""
    from .sweep import ModelSpec, digest
    ident = ModelSpec(model_spec["name"], model_spec.get("checkpoint"), model_spec.get("random"),
                      int(model_spec.get("seed") or 0)).identity()
    return digest({"model": ident, "eval": dict(ev), "format": REFERENCE_FORMAT})


def resolve_runner(text: str):
    mod, _, attr = text.partition(":")
    try:
        return getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"runner {text!r} cannot be imported ({e}); write module:Class on the Python path") from None


# ===================================================================== the group
def classify(stage: str, e: BaseException) -> str:
    """Error kind of a failure: the stage it happened in, refined by the exception type."""
    name = type(e).__name__
    if name in ("CompileError", "BuildError"):
        return "compile"
    if name in ("EngineShapeError", "PresetError", "LayoutError"):
        return "shape"
    if name in ("ConversionError", "ProjectExistsError"):
        return "convert"
    return stage


def _write_json(path: Path, row: Mapping) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(row, sort_keys=True, default=_json_default))
    os.replace(tmp, path)


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


#: Resources of a cost record; ``fits_<R>`` and ``util_<R>`` columns are written for each.
RESOURCES = ("LUT", "FF", "BRAM_18K", "URAM", "DSP")
#: Throughput keys of a cost record copied into the row.
THROUGHPUT = ("cycles_per_token", "tokens_per_s", "bound_tokens_per_s", "share_of_bound")


def cost_row(cfg, point: Mapping, project_dir: Optional[Path]) -> dict:
    """Resources, utilisation and ``fits`` per resource and overall for the point's own board, and
    tokens/s, from the engine's cost model (a synthesis report of ``project_dir`` when it has one)."""
    from ..engine import cost
    try:
        rec = cost.estimate(cfg, point_preset(point), point["packing"], model=point["model"],
                            project_dir=project_dir if project_dir is not None and project_dir.is_dir() else None)
    except Exception as e:              # the cost model refuses what the engine cannot build
        return {"resource_source": None, "resource_error": f"{type(e).__name__}: {e}"}
    row = {k: rec[k] for k in RESOURCES}
    util = {k: float(rec["util"][k]) for k in RESOURCES}
    row.update({f"util_{k}": v for k, v in util.items()})
    row.update({f"fits_{k}": bool(v <= 1.0) for k, v in util.items()})
    row["util_max"] = max(util.values())
    row["fits"] = bool(rec["fits"])
    row["over_budget"] = [k for k in RESOURCES if util[k] > 1.0]
    row.update({k: rec.get(k) for k in THROUGHPUT})
    row["resource_source"] = rec["source"]
    if rec.get("report"):
        row["resource_report"] = str(rec["report"])
    row["R"], row["lanes"] = rec.get("R"), rec.get("lanes")
    return row


def refresh_reports(rows: list[dict], cache_dir: Path) -> list[dict]:
    """Rows whose point's project gained (or changed) a synthesis report since the row was written,
    with their cost recomputed from it (the model config from the project's record).

    So ``mmfree synth <cache>/<project hash>`` after a sweep, then the sweep again (or
    ``--report-only``), puts the report's resources into the tables.
    """
    from ..config import ModelConfig
    from ..engine.reports import measured
    updated = []
    for r in rows:
        if r.get("status") not in ("ok", "overflow") or not r.get("board") or not r.get("project_hash"):
            continue
        project = Path(cache_dir) / r["project_hash"]
        if not project.is_dir():
            continue
        try:
            rep = measured(project, r["board"])
        except ValueError:                  # an unreadable report: the row keeps its estimate
            continue
        if rep is None:
            continue
        stamp = Path(rep["path"]).stat().st_mtime
        if r.get("resource_report") == rep["path"] and r.get("resource_report_mtime") == stamp:
            continue
        try:
            cfg = ModelConfig.from_dict(json.loads((project / "mmfree_project.json").read_text())["model"])
        except (OSError, ValueError, KeyError):
            continue
        new = {k: v for k, v in r.items() if k not in ("resource_error", "resource_report")}
        new.update(cost_row(cfg, r, project))
        new["resource_report_mtime"] = stamp
        updated.append(new)
    return updated


def run_group(task: Mapping) -> None:
    work = Path(task["work_dir"])
    cache = Path(task["cache_dir"])
    runner_cls = resolve_runner(task["runner"])
    runner = runner_cls(task["model"], task["eval"], cache)
    cfg = runner.model_config()
    shared_file = Path(task["shared_metrics"])
    shared = json.loads(shared_file.read_text()) if shared_file.is_file() else None
    for point in task["points"]:
        h = point["point_hash"]
        (work / f"{h}.started").write_text(str(time.time()))
        t0 = time.perf_counter()
        project_dir = cache / point["project_hash"]
        row: dict = {"status": "ok", "error_kind": None, "error": None}
        stage = "shape"
        try:
            if hasattr(runner, "check"):
                runner.check(point)
            if shared is None:
                stage = "convert"
                row.update(runner.convert(point, project_dir))
                stage = "measure"
                metrics = runner.measure(point, project_dir)
                metrics["accuracy_from"] = h
                shared = metrics
                _write_json(shared_file, shared)
            else:
                # its own project (no build): what `mmfree synth` takes to replace its cost estimate
                stage = "convert"
                row.update(runner.convert(point, project_dir))
                metrics = dict(shared)
                metrics.update(compile_s=0.0, eval_s=0.0, compiled=False)
            row.update(metrics)
            if metrics.get("saturated"):
                what = ", ".join(f"{k} ({v} steps)" for k, v in metrics["saturated"].items())
                row.update(status="overflow", error_kind="overflow",
                           error=f"values saturated the engine's 32-bit {what}; use fewer frac_bits")
            elif not math.isfinite(metrics.get("max_logit_err", 0.0)):
                row.update(status="overflow", error_kind="overflow", error="non-finite logits")
        except Exception as e:
            row.update(status="failed", error_kind=classify(stage, e),
                       error=f"{type(e).__name__}: {e}"[-4000:], traceback=traceback.format_exc()[-4000:])
        if row["error_kind"] != "shape":
            row.update(cost_row(cfg, point, project_dir))
        row["wall_s"] = time.perf_counter() - t0
        _write_json(work / f"{h}.json", row)


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m mmfree_hls.design.sweep_eval TASK.json", file=sys.stderr)
        return 2
    run_group(json.loads(Path(argv[0]).read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

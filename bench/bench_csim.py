"""C-simulation speed against the numpy reference, measured side by side in one run.

For each model: convert + compile the engine (cold, then cached), then time
decode steps of the engine's C-simulation (the fast path the suite proves
bit-identical to the synthesised schedule) and of ``MMFreeLM.decode_step`` on
the same tokens, interleaved in rounds so that machine noise hits both; the
ratio of their tokens/s is the figure.

    python bench/bench_csim.py [--tokens 64] [--with-370m]

Models:
  demo      the shipped demo model, pynq-z2 on-chip           csim_over_numpy_demo
  streamed  random d=512, 4 layers, pynq-z2 streamed          csim_over_numpy_streamed
  370m      random 370M shape, kv260 streamed (--with-370m;   csim_over_numpy_370m
            about 4 GB of memory and a few minutes), with the
            agreement of 3 greedy steps (argmax, cosine)

Writes a table to stdout and bench/results/csim.json.
"""

from __future__ import annotations

import _common  # noqa: F401  (quiet TensorFlow, machine record)

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from mmfree_hls import MMFreeLM, ModelConfig, convert
from mmfree_hls.checkpoint import load_checkpoint
from mmfree_hls.engine.presets import model_preset

DEMO = _common.ROOT / "python" / "mmfree_hls" / "data" / "demo_model"


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def measure(name: str, model: MMFreeLM, board: str, tier: str, tokens: int, rounds: int = 4,
            knobs: dict | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / name
        project, t_cold = timed(lambda: convert(model, root, knobs, board=board, tier=tier, verbose=False))
        _, t_cached = timed(lambda: convert(model, root, knobs, board=board, tier=tier, verbose=False))
        sim = project.csim()
        rng = np.random.default_rng(0)
        toks = rng.integers(0, model.config.vocab_size, tokens)
        xs = [model.embed(int(t)) for t in toks]
        sim.step(xs[0], np.zeros((sim.L, sim.e), np.float32))      # first call unpacks the weights
        t_sim = t_ref = 0.0
        per_round = max(1, tokens // rounds)
        for r in range(rounds):
            batch = xs[r * per_round:(r + 1) * per_round]
            state = np.zeros((sim.L, sim.e), np.float32)
            t = time.perf_counter()
            for x in batch:
                _, state = sim.step(x, state)
            t_sim += time.perf_counter() - t
            rs = model.init_state()
            t = time.perf_counter()
            for x in batch:
                _, rs = model.decode_step(x, rs)
            t_ref += time.perf_counter() - t
        n = per_round * rounds
        row = {"model": name, "board": board, "tier": tier, "knobs": dict(knobs or {}), "d": model.config.d,
               "layers": model.config.num_hidden_layers, "tokens": n,
               "convert_compile_s": round(t_cold, 2), "cached_convert_s": round(t_cached, 3),
               "csim_ms_per_token": round(1e3 * t_sim / n, 4), "numpy_ms_per_token": round(1e3 * t_ref / n, 4),
               "csim_over_numpy": round(t_ref / t_sim, 2), "cycles_per_token": sim.cycles}
        if name == "370m":
            row.update(agreement(model, sim))
        return row


def agreement(model: MMFreeLM, sim, steps: int = 3) -> dict:
    """Greedy steps from token 1 with the reference's state: argmax and cosine of each step, and
    the reference's own spread (its step on float32-rounded input and state: the noise floor a
    fixed-point engine cannot beat, since int8 rounding flips carry through the layers)."""
    state, rs, tok = np.zeros((sim.L, sim.e), np.float32), model.init_state(), 1
    same, cosines, floor = 0, [], []
    cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    for _ in range(steps):
        lg, state = sim.step(model.embed(tok), rs.astype(np.float32))
        x32 = model.embed(tok).astype(np.float32).astype(np.float64)
        ref32, _ = model.decode_step(x32 * (1 + 1e-7), rs.astype(np.float32).astype(np.float64))
        ref, rs = model.decode_step(model.embed(tok), rs)
        same += int(np.argmax(lg) == np.argmax(ref))
        cosines.append(cos(ref, lg))
        floor.append(cos(ref, ref32))
        tok = int(np.argmax(ref))
    return {"argmax_same": same, "argmax_steps": steps, "cosine_min": round(min(cosines), 5),
            "reference_float32_cosine_min": round(min(floor), 5)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=64, help="decode steps per model (default 64)")
    ap.add_argument("--with-370m", action="store_true", help="also the 370M shape (slow, ~4 GB)")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/csim.json)")
    args = ap.parse_args()

    rows = [measure("demo", load_checkpoint(DEMO), "pynq-z2", "on-chip", args.tokens)]
    cfg = ModelConfig(vocab_size=1024, hidden_size=512, num_hidden_layers=4, intermediate_size=1536)
    rows.append(measure("streamed", MMFreeLM.random(cfg, seed=0), "pynq-z2", "streamed", args.tokens))
    if args.with_370m:
        print("building a random 370M-shaped model (a few minutes) ...", flush=True)
        rows.append(measure("370m", MMFreeLM.random(model_preset("370M"), seed=0), "kv260", "streamed",
                            min(args.tokens, 8), rounds=2))
    else:
        old = _common.RESULTS / "csim.json"
        if old.is_file():       # keep the last 370M measurement (optional, separate run)
            prev = json.loads(old.read_text())
            rows += [r for r in prev.get("rows", []) if r.get("model") == "370m"]

    print(f"{'model':9} {'board/tier':18} {'convert+g++ s':>13} {'cached s':>9} {'C-sim ms/tok':>12} "
          f"{'numpy ms/tok':>12} {'ratio':>6}")
    for r in rows:
        print(f"{r['model']:9} {r['board'] + '/' + r['tier']:18} {r['convert_compile_s']:>13} "
              f"{r['cached_convert_s']:>9} {r['csim_ms_per_token']:>12} {r['numpy_ms_per_token']:>12} "
              f"{r['csim_over_numpy']:>6}")
    payload = {f"csim_over_numpy_{r['model']}": r["csim_over_numpy"] for r in rows}
    payload["rows"] = rows
    print(f"wrote {_common.write_result('csim', payload, out=args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

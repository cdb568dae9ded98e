"""Our CPU-side paths on the same model, one run: tokens/s as ratios to the numpy reference.

Paths (each decodes the same token sequence, teacher-forced from the
reference's greedy stream, from a zero state):

    reference        MMFreeLM.decode_step (numpy, float64, integer BitLinear)
    onchip-csim      the hls4ml project of the on-chip tier, g++ C-simulation (contract 2)
    streamed-csim    the streamed-weight HLS top, g++ C-simulation, 2-bit and 1.6-bit buffers

Per path: median seconds per decode step (the step call only; the embedding
lookup is the host's), tokens/s, the ratio to the reference from this run,
the largest logit error relative to the reference, and at how many steps the
greedy choice (argmax) is the reference's. Default model: the shipped demo checkpoint
(trained, d 128, 3 layers, V 256); ``--model`` takes a preset or checkpoint
(the on-chip tier is skipped for models too large for it).

    python bench/bench_paths.py [--model demo] [--tokens 64]

Writes a table to stdout and ``bench/results/paths.json``. These are
simulation speeds on this CPU, not FPGA speeds (``mmfree perf`` models those).
"""

from __future__ import annotations

import _common  # noqa: F401  (first: quiet TensorFlow)

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "paths.json"
DEMO = ROOT / "python" / "mmfree_hls" / "data" / "demo_model"
#: The on-chip tier holds every weight in the bitstream; beyond this it is not the tier to use.
ONCHIP_MAX_TERNARY = 4_000_000


def load_model(spec: str, seed: int):
    from mmfree_hls import MMFreeLM, load_checkpoint
    from mmfree_hls.engine import cost

    if spec == "demo":
        return "demo", load_checkpoint(DEMO)
    if spec in cost.published_models():
        return spec, MMFreeLM.random(cost.resolve_model(spec)[1], seed=seed)
    return Path(spec).name, load_checkpoint(spec)


def time_path(step, xs: np.ndarray) -> tuple[list[float], np.ndarray]:
    """Seconds per step call and the logits of every step."""
    times, logits = [], []
    for t, x in enumerate(xs):
        t0 = time.perf_counter()
        out = step(x, t)
        times.append(time.perf_counter() - t0)
        logits.append(np.asarray(out, dtype=np.float64))
    return times, np.stack(logits)


def summarise(name: str, times: list[float], got: np.ndarray, ref: np.ndarray, tokens: list[int]) -> dict:
    rel = np.abs(got - ref).max(axis=1) / np.abs(ref).max(axis=1)
    med = float(np.median(times))
    # where the greedy choice differs: the reference's own top-1 minus top-2 gap (near-ties flip first)
    top2 = np.sort(ref, axis=1)[:, -2:]
    differ = np.flatnonzero(np.argmax(got, axis=1) != np.argmax(ref, axis=1))
    margins = [{"step": int(t), "ref_gap": float(top2[t, 1] - top2[t, 0]),
                "max_abs_err": float(np.abs(got[t] - ref[t]).max())} for t in differ]
    return {"path": name, "median_s_per_token": med, "tokens_per_s": 1.0 / med, "total_s": float(sum(times)),
            "max_rel_err": float(rel.max()), "median_rel_err": float(np.median(rel)),
            "greedy_agree": int((np.argmax(got, axis=1) == np.argmax(ref, axis=1)).sum()),
            "greedy_steps": len(tokens), "greedy_differs_at": margins}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo", help="'demo', a preset (370M, ...) or a checkpoint directory")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-onchip", action="store_true", help="do not convert/compile the on-chip tier")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    from mmfree_hls import streamed, streamed_csim

    name, model = load_model(args.model, args.seed)
    cfg = model.config

    # The reference's greedy stream; every path is fed the same tokens.
    prompt = [int(t) for t in np.random.default_rng(args.seed).integers(0, cfg.vocab_size, size=4)]
    tokens = prompt + model.generate_greedy(prompt, args.tokens - len(prompt))
    xs = np.stack([model.embed(t) for t in tokens]).astype(np.float32)

    rows, notes = [], {}
    box = {"s": None}

    def reference_step(x, t):
        logits, box["s"] = model.decode_step(x.astype(np.float64), model.init_state() if t == 0 else box["s"])
        return logits

    ref_times, ref = time_path(reference_step, xs)
    rows.append(summarise("reference", ref_times, ref, ref, tokens))

    with tempfile.TemporaryDirectory(prefix="mmfree_paths_") as tmp:
        tmp = Path(tmp)
        if args.skip_onchip:
            notes["onchip-csim"] = "skipped (--skip-onchip)"
        elif cfg.ternary_weight_count() > ONCHIP_MAX_TERNARY:
            notes["onchip-csim"] = (f"skipped: {cfg.ternary_weight_count() / 1e6:.0f}M ternary weights; "
                                    "the on-chip tier is for models that fit in BRAM")
        else:
            try:
                from mmfree_hls.design.convert import convert
                t0 = time.perf_counter()
                project = convert(model, tmp / "onchip", verbose=False)
                sim = project.csim()
                notes["onchip-csim build_s"] = round(time.perf_counter() - t0, 1)
                def onchip_step(x, t):
                    logits, box["s"] = sim.step(x, np.zeros((cfg.num_hidden_layers, cfg.state_size)) if t == 0
                                                else box["s"])
                    return logits

                rows.append(summarise("onchip-csim", *time_path(onchip_step, xs), ref, tokens))
            except Exception as e:          # the design extra or hls4ml may be missing: say so, go on
                notes["onchip-csim"] = f"unavailable: {type(e).__name__}: {str(e).splitlines()[0][:200]}"

        for packing in ("2bit", "1.6bit"):
            t0 = time.perf_counter()
            lib = streamed_csim.build(cfg, packing, tmp / f"streamed_{packing}")
            notes[f"streamed-csim-{packing} build_s"] = round(time.perf_counter() - t0, 1)
            sim = streamed_csim.StreamedCSim(lib, cfg, packing, streamed.write_buffer(model, packing))
            times, got = time_path(lambda x, t: sim.step(x, reset=(t == 0)), xs)
            rows.append(summarise(f"streamed-csim-{packing}", times, got, ref, tokens))

    base = rows[0]["tokens_per_s"]
    for r in rows:
        r["ratio_to_reference"] = r["tokens_per_s"] / base
    result = {"what": "tokens/s of the CPU-side paths on one model, one run; ratios to the numpy reference",
              "model": name, "config": cfg.to_dict(), "tokens": len(tokens), "rows": rows, "notes": notes,
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "load_average_1min": os.getloadavg()[0], "python": platform.python_version()}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"model {name}: d={cfg.d} L={cfg.num_hidden_layers} m={cfg.ffn_dim} V={cfg.vocab_size}, "
          f"{len(tokens)} tokens, load average {result['machine']['load_average_1min']:.1f}")
    print(f"{'path':22} {'ms/token':>10} {'tokens/s':>10} {'x reference':>11} {'max rel err':>11} {'greedy':>8}")
    for r in rows:
        print(f"{r['path']:22} {1e3 * r['median_s_per_token']:10.2f} {r['tokens_per_s']:10.1f} "
              f"{r['ratio_to_reference']:11.2f} {r['max_rel_err']:11.1e} "
              f"{r['greedy_agree']:>3}/{r['greedy_steps']}")
    for r in rows:
        for m in r["greedy_differs_at"]:
            print(f"  {r['path']}: step {m['step']} picks another token; reference top-1/top-2 gap "
                  f"{m['ref_gap']:.2e}, logit error there {m['max_abs_err']:.2e}")
    for k, v in notes.items():
        print(f"  {k}: {v}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

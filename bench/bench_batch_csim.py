"""Batched decoding and chunked prefill, measured on the engine's C-simulation.

For each model, in one run and as ratios (this machine is noisy; every figure
is the median of ``--reps`` interleaved repetitions):

* **prefill**: a P-token prompt as P single steps (state through the host, the
  head every token) vs ceil(P/T) prefill passes (T lanes, the head on the last
  chunk only). Bit-identity of the final state and the last logits is checked.
* **batch**: B sequences of S tokens as B x S single steps vs S batch passes of
  B lanes (states on chip). Bit-identity of every logit is checked.
* **host path**: the host's share of a token when the next token comes from
  the device's top-k (greedy) vs from all V logits (top-p sampling over V
  floats), measured on this CPU for V = the model's and V = 32,000 (the
  published checkpoints); a board's Cortex-A53/A9 is slower by a factor the
  JSON states as an assumption.

Models: the shipped demo model (pynq-z2 on-chip) and, with ``--with-370m``,
the 370M shape on kv260 streamed from a synthetic ternary weights buffer
(random trits and norms: the arithmetic per token is the 370M model's).

    python bench/bench_batch_csim.py [--prompt 256] [--chunk 16] [--batch 8] [--with-370m]

Writes a table to stdout and ``bench/results/batch_csim.json``.
"""

from __future__ import annotations

import _common  # noqa: F401  (first: quiet TensorFlow)

import argparse
import json
import statistics
import tempfile
import time

import numpy as np

from mmfree_hls.checkpoint import load_checkpoint
from mmfree_hls.engine.build import compile_csim, write_engine_sources
from mmfree_hls.engine.layout import Shape, build_image, synthetic_image, weights_buffer
from mmfree_hls.engine.presets import get_preset, model_preset
from mmfree_hls.runtime.backend_csim import CSimLibrary
from mmfree_hls.sampling import Sampler, top_k_of

DEMO = _common.ROOT / "python" / "mmfree_hls" / "data" / "demo_model"
#: How much slower a board's CPU runs the host's numpy work than this machine (an assumption:
#: Cortex-A53 at 1.2-1.5 GHz vs a desktop/server x86 core, single thread).
BOARD_CPU_FACTOR = 10.0


def _library(root, model_or_cfg, preset, packing, weights=None) -> CSimLibrary:
    write_engine_sources(root, model_or_cfg, preset, packing)
    return CSimLibrary(compile_csim(root, fast=True), weights=weights)


def _single_steps(lib, xs):
    s = np.zeros((lib.L, lib.e), np.float32)
    out = []
    for x in xs:
        lg, s = lib.step(x, s)
        out.append(lg)
    return out, s


def _prefill(lib, xs, T):
    for c in range(0, len(xs), T):
        last = c + T >= len(xs)
        lg, _, st = lib.run_pass(xs[c:c + T], {0: np.zeros((lib.L, lib.e), np.float32)} if c == 0 else None,
                                 prefill=True, head=last, store=[0] if last else None)
    return lg[-1], st[0]


def _batch(lib, seqs):
    B = len(seqs)
    out = [[] for _ in range(B)]
    for i in range(len(seqs[0])):
        lg, _, _ = lib.run_pass([s[i] for s in seqs],
                                {q: np.zeros((lib.L, lib.e), np.float32) for q in range(B)} if i == 0 else None)
        for q in range(B):
            out[q].append(lg[q])
    return out


def _timed(fn, *a):
    t = time.perf_counter()
    r = fn(*a)
    return time.perf_counter() - t, r


def measure(name, lib, embed, V, P, T, B, S, reps) -> dict:
    rng = np.random.default_rng(0)
    xs = np.stack([embed(int(t)) for t in rng.integers(0, V, P)]).astype(np.float32)
    seqs = [np.stack([embed(int(t)) for t in rng.integers(0, V, S)]).astype(np.float32) for _ in range(B)]
    _single_steps(lib, xs[:2])                      # warm: the weights unpacked once
    t_single, t_pre, t_indep, t_bat = [], [], [], []
    for _ in range(reps):                            # interleaved: drift hits both sides alike
        dt, (logits, state) = _timed(_single_steps, lib, xs)
        t_single.append(dt)
        dt, (last, pstate) = _timed(_prefill, lib, xs, T)
        t_pre.append(dt)
        dt, indep = _timed(lambda: [_single_steps(lib, s)[0] for s in seqs])
        t_indep.append(dt)
        dt, bat = _timed(_batch, lib, seqs)
        t_bat.append(dt)
    med = statistics.median
    return {
        "model": name, "prompt_tokens": P, "prefill_chunk": T, "batch": B, "tokens_per_sequence": S,
        "reps": reps,
        "single_steps_s": round(med(t_single), 4), "prefill_s": round(med(t_pre), 4),
        "prefill_speedup": round(med(t_single) / med(t_pre), 2),
        "prefill_bit_identical": bool(np.array_equal(last, logits[-1]) and np.array_equal(pstate, state)),
        "independent_tokens_per_s": round(B * S / med(t_indep), 1),
        "batch_tokens_per_s": round(B * S / med(t_bat), 1),
        "batch_speedup": round(med(t_indep) / med(t_bat), 2),
        "batch_bit_identical": all(np.array_equal(np.array(a), np.array(b)) for a, b in zip(indep, bat)),
    }


def host_path(V: int, draws: int = 300) -> dict:
    """Host ms per token to choose the next token: from the device top-k vs from V logits."""
    rng = np.random.default_rng(1)
    z = (4 * rng.standard_normal((draws, V))).astype(np.float32)
    tops = [top_k_of(row, 8) for row in z]
    full = Sampler(temperature=0.8, top_p=0.9, seed=0)
    greedy = Sampler()
    copy = np.empty(V, np.float32)
    t = time.perf_counter()
    for row in z:
        np.copyto(copy, row)                         # reading V floats out of the device buffer
        full(copy)
    t_full = (time.perf_counter() - t) / draws
    t = time.perf_counter()
    for vals, ids in tops:
        greedy.choose_from_top(vals, ids)
    t_top = (time.perf_counter() - t) / draws
    return {"vocab": V, "full_logits_top_p_ms": round(1e3 * t_full, 4), "device_topk_ms": round(1e3 * t_top, 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompt", type=int, default=256, help="prompt tokens of the prefill (default 256)")
    ap.add_argument("--chunk", type=int, default=16, help="prefill chunk T (default 16)")
    ap.add_argument("--batch", type=int, default=8, help="sequences decoded together B (default 8)")
    ap.add_argument("--tokens", type=int, default=32, help="tokens per sequence of the batch (default 32)")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions, median kept (default 3)")
    ap.add_argument("--with-370m", action="store_true", help="also the 370M shape (minutes, ~2 GB)")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/batch_csim.json)")
    args = ap.parse_args()

    knobs = {"batch_slots": args.batch, "prefill_chunk": args.chunk}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        demo = load_checkpoint(DEMO)
        lib = _library(f"{tmp}/demo", demo, get_preset("pynq-z2", "on-chip", **knobs), "2bit")
        rows.append({"board": "pynq-z2", "tier": "on-chip",
                     **measure("demo", lib, demo.embed, demo.config.vocab_size, args.prompt, args.chunk,
                               args.batch, args.tokens, args.reps)})
        if args.with_370m:
            cfg = model_preset("370M")
            preset = get_preset("kv260", "streamed", **knobs)
            shape = Shape.of(cfg, "2bit", preset.R)
            print("building the 370M-shaped synthetic weights buffer ...", flush=True)
            w = weights_buffer(synthetic_image(shape), shape, preset.K, preset.port_bytes)
            lib = _library(f"{tmp}/370m", cfg, preset, "2bit", w)
            table = np.random.default_rng(2).normal(0, 1, (256, cfg.d)).astype(np.float32)
            rows.append({"board": "kv260", "tier": "streamed",
                         **measure("370m", lib, lambda t: table[t % 256], cfg.vocab_size, args.prompt, args.chunk,
                                   args.batch, 4, 1)})
        else:
            old = _common.RESULTS / "batch_csim.json"
            if old.is_file():        # keep the last 370M measurement (optional, separate run)
                rows += [r for r in json.loads(old.read_text()).get("rows", []) if r.get("model") == "370m"]
    hosts = [host_path(demo.config.vocab_size), host_path(32000)]

    print(f"{'model':6} {'prompt':>6} {'T':>3} {'single s':>9} {'prefill s':>9} {'x':>6} {'same':>5} | "
          f"{'B':>2} {'indep tok/s':>11} {'batch tok/s':>11} {'x':>6} {'same':>5}")
    for r in rows:
        print(f"{r['model']:6} {r['prompt_tokens']:>6} {r['prefill_chunk']:>3} {r['single_steps_s']:>9} "
              f"{r['prefill_s']:>9} {r['prefill_speedup']:>6} {str(r['prefill_bit_identical']):>5} | "
              f"{r['batch']:>2} {r['independent_tokens_per_s']:>11} {r['batch_tokens_per_s']:>11} "
              f"{r['batch_speedup']:>6} {str(r['batch_bit_identical']):>5}")
    for h in hosts:
        print(f"host, V={h['vocab']}: next token from V logits (top-p) {h['full_logits_top_p_ms']} ms, "
              f"from the device top-k {h['device_topk_ms']} ms (this CPU)")
    payload = {"rows": rows, "host_path": hosts,
               "host_path_board_model": {
                   "assumption": f"a board's CPU runs this numpy work about {BOARD_CPU_FACTOR:g}x slower "
                                 "than this machine (not measured on a board)",
                   "full_logits_top_p_ms": round(hosts[-1]["full_logits_top_p_ms"] * BOARD_CPU_FACTOR, 3),
                   "device_topk_ms": round(hosts[-1]["device_topk_ms"] * BOARD_CPU_FACTOR, 3),
                   "vocab": hosts[-1]["vocab"]}}
    for r in rows:
        payload[f"prefill_speedup_{r['model']}"] = r["prefill_speedup"]
        payload[f"batch_speedup_{r['model']}"] = r["batch_speedup"]
    print(f"wrote {_common.write_result('batch_csim', payload, out=args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Host overhead per token on the C-sim backend: Python host time vs device time.

Two measurements, one run:

1. **Host floor.** The host class around a null device (a C library with the
   engine's C-sim ABI, version 3, that does almost nothing), for several embedding widths d
   and vocabularies V, greedy and sampled. Device time ≈ 0 here, so what is
   left is what the host costs per token on any backend: embedding lookup,
   buffer copies, the ctypes call, reading V logits, choosing the next token.
2. **Real design.** The shipped demo model converted through hls4ml, in
   C-simulation (when the design extra is installed): the same split with a
   device that does the work, i.e. the share of a token spent in Python.

    python bench/bench_host.py [--tokens 200] [--quick]

Writes a table to stdout and ``bench/results/host.json``.
"""

from __future__ import annotations

import _common  # noqa: F401  (first: quiet TensorFlow)

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mmfree_hls.config import ModelConfig
from mmfree_hls.reference import MMFreeLM
from mmfree_hls.runtime import Accelerator

RESULTS = Path(__file__).resolve().parent / "results" / "host.json"

NULL_DEVICE = r"""
// A device that does no model work (C-sim ABI 3: one call is a pass of n lanes): every lane
// gets a peaked, LM-like spread of logits (normal-like, sigma 4, a fresh draw each pass) so
// sampling costs what it costs on a real distribution, and its top-k, as the engine's logits
// writer makes it. The slots' states are kept and moved as the masks say. Its own time is
// reported as device time.
#include <string.h>
static unsigned step_count = 0;
static float priv[SLOTS][L_ * E];
static inline float uniform(unsigned v) {
    v ^= v >> 16; v *= 0x7feb352dU; v ^= v >> 15; v *= 0x846ca68bU; v ^= v >> 16;
    return (float)(v & 0xFFFFFF) / 16777216.0f;
}
extern "C" int mmfree_abi(void) { return 3; }
extern "C" int mmfree_info(int* d, int* L, int* e, int* V) { *d = D; *L = L_; *e = E; *V = V_; return 0; }
extern "C" int mmfree_lanes(int* lanes, int* slots, int* topk) { *lanes = LANES; *slots = SLOTS; *topk = TOPK; return 0; }
extern "C" unsigned long long mmfree_cycles(void) { return 0; }
extern "C" int mmfree_step(int n, int mode, int slot, unsigned load_mask, unsigned store_mask,
                           const float* x, float* state, float* logits, int* top, const unsigned char* weights) {
    (void)weights;
    if (n < 1 || n > LANES || slot < 0 || slot >= SLOTS) return -2;
    for (int b = 0; b < SLOTS; ++b)
        if (load_mask >> b & 1u) memcpy(priv[b], state + b * L_ * E, sizeof(priv[b]));
    for (int t = 0; t < n; ++t) {
        priv[(mode & 1) ? slot : t][0] += x[t * D];
        if (!(mode & 2)) continue;
        unsigned base = 0x9e3779b9U * ++step_count;
        int ids[TOPK]; float vals[TOPK]; int count = 0;
        for (int v = 0; v < V_; ++v) {
            unsigned h = base + 12u * (unsigned)v;
            float z = -6.0f;                   // Irwin-Hall(12) - 6: mean 0, variance 1, normal-like tails
            for (unsigned k = 0; k < 12; ++k)
                z += uniform(h + k);
            z *= 4.0f;                         // sigma 4: a nucleus (p = 0.9, T = 0.8) of ~40 of 32000 ids
            if (mode & 4) logits[v * LANES + t] = z;
            int pos = count;
            while (pos > 0 && vals[pos - 1] < z) --pos;
            if (pos >= TOPK) continue;
            for (int k = count < TOPK ? count : TOPK - 1; k > pos; --k) { vals[k] = vals[k - 1]; ids[k] = ids[k - 1]; }
            vals[pos] = z; ids[pos] = v;
            if (count < TOPK) ++count;
        }
        for (int k = 0; k < TOPK; ++k) {
            const float val = k < count ? vals[k] : 0.0f;
            top[k * LANES + t] = k < count ? ids[k] : -1;         // row k: ids, row TOPK + k: values
            memcpy(&top[(TOPK + k) * LANES + t], &val, 4);
        }
    }
    for (int b = 0; b < SLOTS; ++b)
        if (store_mask >> b & 1u) memcpy(state + b * L_ * E, priv[b], sizeof(priv[b]));
    return 0;
}
"""


def null_library(out: Path, cfg: ModelConfig, preset) -> Path:
    """The null device for ``cfg``, with the lanes, slots and top-k of the engine build ``preset``."""
    src = out / "null_device.cpp"
    src.write_text(NULL_DEVICE)
    lib = out / "libnull.so"
    subprocess.run(["g++", "-O2", "-shared", "-fPIC", f"-DD={cfg.d}", f"-DL_={cfg.num_hidden_layers}",
                    f"-DE={cfg.state_size}", f"-DV_={cfg.vocab_size}", f"-DLANES={preset.token_lanes}",
                    f"-DSLOTS={preset.batch_slots}", f"-DTOPK={preset.topk}", str(src), "-o", str(lib)],
                   check=True)
    return lib


def small_config(d: int, V: int, L: int = 2) -> ModelConfig:
    return ModelConfig(vocab_size=V, hidden_size=d, num_hidden_layers=L, intermediate_size=2 * d).validate()


def measure(acc: Accelerator, tokens: int, **sampling) -> dict:
    prompt = [1, 2, 3, 4]
    t0 = time.perf_counter()
    n = sum(1 for _ in acc.generate(prompt, tokens, seed=0, **sampling))
    wall = time.perf_counter() - t0
    s = acc.stats.summary()
    # Medians as well as means: on a shared machine a preempted token inflates the mean.
    return {"tokens": n, "steps": s["steps"], "wall_s": wall,
            "host_us_per_token": 1e3 * s["host_ms_per_token"],
            "device_us_per_token": 1e3 * s["device_ms_per_token"],
            "host_us_p50": 1e3 * s["host_ms_p50"], "device_us_p50": 1e3 * s["device_ms_p50"],
            "host_fraction": s["host_fraction"], "tokens_per_s": s["tokens_per_s"]}


def host_floor(tokens: int, quick: bool) -> list[dict]:
    shapes = [(64, 256), (1024, 32000)] if quick else [(64, 256), (256, 4096), (1024, 32000), (2048, 32000)]
    modes = {"greedy": {}, "top-k 50": {"temperature": 0.8, "top_k": 50},
             "top-p 0.9": {"temperature": 0.8, "top_p": 0.9}}
    from mmfree_hls.engine.presets import get_preset
    from mmfree_hls.engine.project import engine_record
    from mmfree_hls.overlay import build_overlay

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for d, V in shapes:
            cfg = small_config(d, V)
            model = MMFreeLM.random(cfg, seed=0)
            work = Path(tmp) / f"d{d}_V{V}"
            work.mkdir()
            preset = get_preset("pynq-z2", "on-chip")
            lib = null_library(work, cfg, preset)
            build_overlay(work / "overlay", model=model, board="pynq-z2", name="null", csim_library=lib,
                          engine=engine_record(cfg, preset, "2bit"))
            with Accelerator.open(work / "overlay", backend="csim") as acc:
                measure(acc, 10)                                   # warm-up
                for mode, kw in modes.items():
                    r = measure(acc, tokens, **kw)
                    rows.append({"d": d, "V": V, "sampling": mode, **r})
    return rows


def real_design(tokens: int) -> dict:
    """The shipped demo model through hls4ml, in C-simulation: where a token's time goes."""
    try:
        from mmfree_hls.design.convert import convert
    except Exception as e:                                   # design extra absent
        return {"skipped": f"hls4ml conversion unavailable here ({type(e).__name__}: {e})"}
    from mmfree_hls.checkpoint import load_checkpoint
    from mmfree_hls.overlay import package_project
    from mmfree_hls.tokenizer import load_tokenizer

    ckpt = Path(__file__).resolve().parents[1] / "python" / "mmfree_hls" / "data" / "demo_model"
    model, tok = load_checkpoint(ckpt), load_tokenizer(ckpt)
    project_dir = RESULTS.parent / "hls_project" / "demo"     # cached by content hash across runs
    t0 = time.perf_counter()
    convert(str(ckpt), project_dir, overwrite=True, verbose=False)       # compiles the C-sim too
    build_s = time.perf_counter() - t0
    prompt = tok.encode("The for statement is used to ")
    out = {"model": "demo_model", "d": model.config.d, "V": model.config.vocab_size,
           "L": model.config.num_hidden_layers, "convert_compile_s": build_s}
    with tempfile.TemporaryDirectory() as tmp:
        package_project(project_dir, "pynq-z2", out=Path(tmp) / "overlay")
        with Accelerator.open(Path(tmp) / "overlay", backend="csim") as acc:
            got = list(acc.generate(prompt, 64))
            out["greedy_64_matches_reference"] = got == model.generate_greedy(prompt, 64)
            for mode, kw in {"greedy": {}, "top-p 0.9": {"temperature": 0.8, "top_p": 0.9}}.items():
                r = measure(acc, tokens, **kw)
                out[mode] = r
            try:
                out["throughput_test"] = acc.throughput_test(50)
            except Exception as e:          # not a README figure: report it, keep the split above
                out["throughput_test"] = {"error": f"{type(e).__name__}: {e}"}
                print(f"throughput_test failed: {type(e).__name__}: {e}", file=sys.stderr)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="fewer shapes (CI)")
    args = ap.parse_args(argv)

    floor = host_floor(args.tokens, args.quick)
    print(f"Host floor (null device, {args.tokens} tokens each; {platform.machine()}, "
          f"Python {platform.python_version()}):")
    print(f"{'d':>6} {'V':>7} {'sampling':>10} {'host us/tok':>12} {'(median)':>9} {'device us/tok':>14} "
          f"{'(median)':>9} {'tokens/s':>10}")
    for r in floor:
        print(f"{r['d']:>6} {r['V']:>7} {r['sampling']:>10} {r['host_us_per_token']:>12.1f} {r['host_us_p50']:>9.1f} "
              f"{r['device_us_per_token']:>14.1f} {r['device_us_p50']:>9.1f} {r['tokens_per_s']:>10.0f}")
    real = real_design(args.tokens)
    print()
    if "skipped" in real:
        print(f"Real design: skipped: {real['skipped']}")
    else:
        print(f"Real design: demo model (d={real['d']}, L={real['L']}, V={real['V']}) in C-simulation; "
              f"greedy 64 tokens match the numpy reference: {real['greedy_64_matches_reference']}")
        for mode in ("greedy", "top-p 0.9"):
            r = real[mode]
            print(f"  {mode:>10}: host {r['host_us_per_token']:.1f} us (median {r['host_us_p50']:.1f}) + device "
                  f"{r['device_us_per_token']:.1f} us (median {r['device_us_p50']:.1f}) per token "
                  f"({100 * r['host_fraction']:.2f}% host), {r['tokens_per_s']:.1f} tokens/s")
    path = _common.write_result("host", {"tokens": args.tokens, "host_floor": floor, "real_design": real})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

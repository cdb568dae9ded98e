"""Load a 370M-shaped hgrn_bit checkpoint: time and peak memory against its size on disk.

Generates, in a temporary directory, a reference-layout checkpoint shaped like
the published MMfreeLM-370M (hidden 1024, 24 layers, vocab 32000, GLU width
2816 = 1024*4*2/3 rounded up to 256) with random fp16 weights, written one
tensor at a time. Each measurement then runs in a fresh Python process, so its
peak resident set (``ru_maxrss``) is that of the load alone:

  reference, lean      load_checkpoint(ref, keep_float=False)   -- the bar: < 2x the fp16 size
  reference, float32   load_checkpoint(ref, keep_float=True)    -- every weight also as float32
  import               mmfree import ref ours (quantise + pack once)
  ours, lean           load_checkpoint(ours, keep_float=False)  -- pre-packed, hash-verified

Every load also runs one decode step; the logits of all loads must be
identical (the same model, whichever way it was loaded).

    .venv/bin/python bench/bench_load.py [--layers 24] [--keep]

Prints a table and writes bench/results/load.json.
"""

from __future__ import annotations

import _common  # noqa: F401  (first: quiet TensorFlow)

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mmfree_hls.config import ModelConfig
from mmfree_hls.reference import expected_shapes
from mmfree_hls.safetensors_io import SafetensorsWriter, TensorSpec


# MMfreeLM-370M as published (README model zoo: 24 layers, hidden 1024; Llama/Mistral vocabulary).
SHAPE_370M = {"model_type": "hgrn_bit", "architectures": ["HGRNBitForCausalLM"], "vocab_size": 32000,
              "hidden_size": 1024, "num_hidden_layers": 24, "hidden_ratio": 4, "intermediate_size": None,
              "num_heads": 1, "expand_ratio": 1, "use_lower_bound": True, "use_short_conv": False,
              "attn_mode": "fused_recurrent", "rms_norm_eps": 1e-6, "hidden_act": "swish",
              "tie_word_embeddings": False, "torch_dtype": "float16", "bos_token_id": 1, "eos_token_id": 2}

# Runs in the child process: load, report peak RSS, run one step, report again.
CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from mmfree_hls.checkpoint import load_checkpoint
mode, path, keep_float = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
if mode == "import":
    from mmfree_hls.checkpoint import import_checkpoint
    import_checkpoint(path, sys.argv[4])
    out = {"seconds": time.perf_counter() - t0,
           "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
else:
    m = load_checkpoint(path, keep_float=keep_float)
    out = {"seconds": time.perf_counter() - t0,
           "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    import numpy as np
    t1 = time.perf_counter()
    logits, _ = m.step(1)
    out["step_seconds"] = time.perf_counter() - t1
    out["peak_rss_after_step_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["argmax"] = int(np.argmax(logits))
    out["logits_sum"] = float(np.sum(logits))
print(json.dumps(out))
"""


def write_random_checkpoint(root: Path, raw_cfg: dict, seed: int = 0) -> int:
    """fp16 reference checkpoint, one tensor in memory at a time. Returns the weights' size in bytes."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(raw_cfg, indent=2))
    cfg = ModelConfig.from_dict(raw_cfg)
    shapes = expected_shapes(cfg)
    rng = np.random.default_rng(seed)
    with SafetensorsWriter(root / "model.safetensors", [TensorSpec(k, "F16", s) for k, s in shapes.items()],
                           {"format": "pt"}) as w:
        for key, shape in shapes.items():
            x = rng.standard_normal(shape, dtype=np.float32)
            if key.endswith("norm.weight"):
                x = 1.0 + 0.1 * x
            elif key != "model.lower_bounds":
                x *= shape[-1] ** -0.5
            w.write(key, x.astype(np.float16))
            del x
    return (root / "model.safetensors").stat().st_size


def run_child(*args: str) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"child {args} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=SHAPE_370M["num_hidden_layers"],
                    help="number of layers (default 24, the 370M shape); fewer for a quick run")
    ap.add_argument("--keep", metavar="DIR", default=None, help="generate into DIR and keep it")
    args = ap.parse_args(argv)
    raw = dict(SHAPE_370M, num_hidden_layers=args.layers)

    with tempfile.TemporaryDirectory(prefix="mmfree-bench-load-") as tmp:
        base = Path(args.keep or tmp)
        ref, ours = base / "reference", base / "imported"
        t0 = time.perf_counter()
        disk = write_random_checkpoint(ref, raw)
        gen_s = time.perf_counter() - t0
        print(f"generated {ref} ({disk / 1e6:,.1f} MB fp16) in {gen_s:.1f} s", flush=True)

        rows = {}
        rows["reference, lean"] = run_child("load", str(ref), "0")
        rows["reference, float32"] = run_child("load", str(ref), "1")
        rows["import"] = run_child("import", str(ref), "1", str(ours))
        rows["ours, lean"] = run_child("load", str(ours), "0")
        packed_bytes = (ours / "packed.safetensors").stat().st_size

    loads = [r for r in rows.values() if "argmax" in r]
    same = all(r["argmax"] == loads[0]["argmax"] and r["logits_sum"] == loads[0]["logits_sum"] for r in loads)
    print()
    print(f"{'what':<20} {'seconds':>8} {'peak RSS MB':>12} {'x fp16 size':>12} {'after 1 step':>13}")
    for name, r in rows.items():
        after = r.get("peak_rss_after_step_bytes")
        print(f"{name:<20} {r['seconds']:>8.1f} {r['peak_rss_bytes'] / 1e6:>12,.0f} "
              f"{r['peak_rss_bytes'] / disk:>12.2f} "
              f"{(f'{after / disk:.2f}x' if after else '-'):>13}")
    bar = rows["reference, lean"]["peak_rss_bytes"] / disk
    print(f"\nfp16 checkpoint on disk: {disk / 1e6:,.1f} MB; packed.safetensors: {packed_bytes / 1e6:,.1f} MB")
    print(f"bar: peak RSS of the lean load < 2x fp16 size: {bar:.2f}x -> "
          f"{'met' if bar < 2 else 'NOT met'}; identical logits across loads: {same}")

    path = _common.write_result("load", {
        "config": raw, "fp16_bytes_on_disk": disk, "packed_bytes_on_disk": packed_bytes,
        "generate_seconds": gen_s, "results": rows, "lean_load_rss_over_fp16": bar,
        "bar_met": bar < 2, "identical_logits": same,
        "numpy": np.__version__,
    })
    print(f"wrote {path}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

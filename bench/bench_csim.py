"""hls4ml conversion, g++ compile and C-simulation decode speed against the numpy reference.

One run, one model (the shipped demo model when present, else a random model
of the given size):

1. ``convert`` into a fresh directory (Keras step model → hls4ml → our layers),
2. ``compile`` the C-simulation library with g++,
3. the same two calls again (content-hash cache: should be ~instant),
4. decode ``--tokens`` greedy tokens with the C-simulation and with
   ``MMFreeLM.decode_step``; tokens/s of each and their ratio.

Wall times on a shared machine include waiting for the CPU, so CPU seconds
(this process + its compiler children) are reported next to them.

    python bench/bench_csim.py [--tokens 64] [--ckpt DIR | --d 128 --layers 2 --vocab 512] [--opt -O2]

Writes a table to stdout and ``bench/results/csim.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from mmfree_hls.config import ModelConfig
from mmfree_hls.reference import MMFreeLM

RESULTS = Path(__file__).resolve().parent / "results" / "csim.json"
DEMO_CKPT = Path(__file__).resolve().parents[1] / "python" / "mmfree_hls" / "data" / "demo_model"


class Clock:
    """Wall seconds and CPU seconds (self + waited-for children) of a block."""

    def __enter__(self):
        self.w0, self.c0 = time.perf_counter(), self._cpu()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w0, self._cpu() - self.c0

    @staticmethod
    def _cpu() -> float:
        s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def load_model(args) -> tuple[MMFreeLM, str]:
    if args.ckpt or DEMO_CKPT.is_dir():
        from mmfree_hls.checkpoint import load_checkpoint
        path = Path(args.ckpt) if args.ckpt else DEMO_CKPT
        return load_checkpoint(path), str(path)
    cfg = ModelConfig(vocab_size=args.vocab, hidden_size=args.d, num_hidden_layers=args.layers,
                      intermediate_size=args.ffn or None)
    return MMFreeLM.random(cfg, seed=0), f"random (seed 0)"


def decode(step, embed, prompt, n: int, state) -> tuple[list[int], float]:
    """Greedy decoding with ``step``; returns the tokens and the seconds spent in ``step``."""
    spent = 0.0
    logits = None
    for tok in prompt:
        t0 = time.perf_counter()
        logits, state = step(embed(tok), state)
        spent += time.perf_counter() - t0
    out = []
    for _ in range(n):
        tok = int(np.argmax(logits))
        out.append(tok)
        t0 = time.perf_counter()
        logits, state = step(embed(tok), state)
        spent += time.perf_counter() - t0
    return out, spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--ckpt", default=None, help="checkpoint (default: the shipped demo model if present)")
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--ffn", type=int, default=0, help="intermediate size (0: from hidden_ratio)")
    ap.add_argument("--opt", default="-O2", choices=("-O1", "-O2", "-O3"))
    args = ap.parse_args()

    from mmfree_hls.design.convert import convert
    model, source = load_model(args)
    cfg = model.config
    prompt = [1, 2, 3]

    with tempfile.TemporaryDirectory(prefix="bench_csim_") as tmp:
        out = Path(tmp) / "bench"
        with Clock() as t_convert:
            project = convert(model, out, verbose=False)
        with Clock() as t_compile:
            project.compile(opt=args.opt, verbose=False)
        with Clock() as t_cached:
            again = convert(model, out, verbose=False)
            again.compile(opt=args.opt, verbose=False)
        lib = project.csim()
        state0 = np.zeros((cfg.num_hidden_layers, cfg.state_size), np.float32)
        sim_tokens, sim_s = decode(lib.step, model.embed, prompt, args.tokens, state0)
        ref_tokens, ref_s = decode(model.decode_step, model.embed, prompt, args.tokens, model.init_state())

    steps = len(prompt) + args.tokens
    sim_tps, ref_tps = steps / sim_s, steps / ref_s
    same = sum(a == b for a, b in zip(sim_tokens, ref_tokens))
    first_diff = next((i for i, (a, b) in enumerate(zip(sim_tokens, ref_tokens)) if a != b), None)
    result = {
        "model": {"source": source, "d": cfg.d, "L": cfg.num_hidden_layers, "e": cfg.state_size,
                  "m": cfg.ffn_dim, "V": cfg.vocab_size, "ternary_weights": cfg.ternary_weight_count()},
        "convert_s": {"wall": round(t_convert.wall, 2), "cpu": round(t_convert.cpu, 2)},
        "compile_s": {"wall": round(t_compile.wall, 2), "cpu": round(t_compile.cpu, 2), "opt": args.opt},
        "cached_convert_compile_s": {"wall": round(t_cached.wall, 3), "cpu": round(t_cached.cpu, 3)},
        "decode_steps": steps,
        "csim_tokens_per_s": round(sim_tps, 2),
        "numpy_tokens_per_s": round(ref_tps, 2),
        "csim_over_numpy": round(sim_tps / ref_tps, 3),
        "greedy_tokens_equal": f"{same}/{args.tokens}",
        "first_divergence": first_diff,
        "machine": {"cpus": os.cpu_count(), "loadavg_1min": round(os.getloadavg()[0], 2),
                    "python": platform.python_version(), "platform": platform.platform()},
    }
    rows = [("convert (wall / cpu s)", f"{t_convert.wall:.1f} / {t_convert.cpu:.1f}"),
            (f"compile g++ {args.opt} (wall / cpu s)", f"{t_compile.wall:.1f} / {t_compile.cpu:.1f}"),
            ("cached convert+compile (wall s)", f"{t_cached.wall:.3f}"),
            ("C-sim decode (tokens/s)", f"{sim_tps:.1f}"),
            ("numpy reference decode (tokens/s)", f"{ref_tps:.1f}"),
            ("C-sim / numpy", f"{sim_tps / ref_tps:.3f}"),
            ("greedy tokens equal", result["greedy_tokens_equal"])]
    print(f"model: {source}, d={cfg.d} L={cfg.num_hidden_layers} m={cfg.ffn_dim} V={cfg.vocab_size}; "
          f"load average {result['machine']['loadavg_1min']} on {os.cpu_count()} CPUs")
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

"""Held-out perplexity of a checkpoint, on the split README.md names, with the corpus it came from.

The corpus is ``pydoc_data.topics`` of the *running* Python (it ships with
CPython), so its bytes, and every perplexity on it, belong to that Python
version: the result records the version, the corpus size and its SHA-256.
The held-out split is the corpus's last 5 % (``mmfree_hls.corpus.split_holdout``).

Rows (numpy integer reference, the path users run):

  held-out split       all of it, in non-overlapping windows of 128 bytes from a zero state
                       (``design.train.perplexity`` with no length cap)
  train report's slice the first 16,384 bytes, as ``train_report.json`` records it
  sweep's slice        the first ``eval.tokens`` bytes of the same split, one stream from a zero
                       state, as ``mmfree sweep`` scores its reference (``sweep_eval.perplexity``);
                       the sweep C-simulates token by token, so it scores a short slice
  fp twin              read from ``train_report_fp_twin.json`` (its weights are not shipped)

    python bench/bench_perplexity.py [--ckpt DIR] [--sweep design/configs/sweep_demo.yaml]

Prints a table and writes ``bench/results/perplexity.json``.
"""

from __future__ import annotations

import _common  # noqa: F401  (first: quiet TensorFlow)

import argparse
import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np

from mmfree_hls.checkpoint import load_checkpoint
from mmfree_hls.corpus import HOLDOUT_FRACTION, corpus_text, split_holdout
from mmfree_hls.design.sweep_eval import perplexity as stream_perplexity
from mmfree_hls.design.train import perplexity as window_perplexity

DEMO = _common.ROOT / "python" / "mmfree_hls" / "data" / "demo_model"
SWEEP = _common.ROOT / "design" / "configs" / "sweep_demo.yaml"
WINDOW = 128
TRAIN_REPORT_TOKENS = 16384


def sweep_slice(path: Path) -> tuple[int, int]:
    """(offset, tokens) of the sweep's teacher-forced evaluation text."""
    import yaml
    ev = (yaml.safe_load(path.read_text()) or {}).get("eval") or {}
    return int(ev.get("offset", 0)), int(ev.get("tokens", 160))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", default=str(DEMO), help="checkpoint directory (default: the shipped demo model)")
    ap.add_argument("--sweep", default=str(SWEEP), help="sweep config whose eval slice to score")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    ckpt = Path(args.ckpt)
    model = load_checkpoint(ckpt)
    text = corpus_text().encode("utf-8")
    data = np.frombuffer(text, dtype=np.uint8).astype(np.int32)
    _, held = split_holdout(data)
    windows = (len(held) - 1) // WINDOW
    rows = [{"slice": "held-out split", "scored_bytes": windows * WINDOW, "windows": windows,
             "state": f"zero state every {WINDOW} bytes",
             "perplexity": window_perplexity(model.logits, held, seq_len=WINDOW, max_tokens=len(held))},
            {"slice": "train report's slice", "scored_bytes": TRAIN_REPORT_TOKENS // WINDOW * WINDOW,
             "windows": TRAIN_REPORT_TOKENS // WINDOW, "state": f"zero state every {WINDOW} bytes",
             "perplexity": window_perplexity(model.logits, held, seq_len=WINDOW, max_tokens=TRAIN_REPORT_TOKENS)}]
    off, n = sweep_slice(Path(args.sweep))
    ids = held[off:off + n].astype(np.int64)
    rows.append({"slice": "sweep's slice", "offset": off, "scored_bytes": n - 1, "windows": 1,
                 "state": "carried from a zero state", "sweep_config": Path(args.sweep).name,
                 "perplexity": stream_perplexity(model.logits(ids[None])[0], ids)})

    report = {}
    if (ckpt / "train_report.json").is_file():
        report = json.loads((ckpt / "train_report.json").read_text())
    twin = None
    if (ckpt / "train_report_fp_twin.json").is_file():
        tw = json.loads((ckpt / "train_report_fp_twin.json").read_text())
        twin = {"perplexity": tw["held_out_perplexity"], "source": "train_report_fp_twin.json",
                "scored_bytes": TRAIN_REPORT_TOKENS // WINDOW * WINDOW,
                "steps": tw["train_config"]["steps"], "quantize": tw["train_config"]["quantize"]}
    recorded = report.get("held_out_perplexity")
    result = {
        "model": ckpt.name, "path": "numpy integer reference",
        "corpus": {"source": "pydoc_data.topics", "python": platform.python_version(),
                   "bytes": len(text), "sha256": hashlib.sha256(text).hexdigest(),
                   "held_out_fraction": HOLDOUT_FRACTION, "held_out_bytes": int(len(held))},
        "train_report": {"held_out_perplexity": recorded, "held_out_bytes": report.get("held_out_bytes"),
                         "corpus_python": report.get("corpus_python"),
                         "steps": report.get("train_config", {}).get("steps"),
                         "wall_time_s": report.get("wall_time_s"),
                         "reproduced": recorded is not None and abs(recorded - rows[1]["perplexity"]) < 1e-9},
        "rows": rows, "fp_twin": twin,
    }
    out = _common.write_result("perplexity", result, args.out)

    c = result["corpus"]
    print(f"model {ckpt}; corpus pydoc_data.topics of Python {c['python']}: {c['bytes']:,} bytes "
          f"(sha256 {c['sha256'][:12]}), held-out split {c['held_out_bytes']:,} bytes")
    print(f"{'slice':<22} {'scored bytes':>12} {'state':<28} {'perplexity':>10}")
    for r in rows:
        print(f"{r['slice']:<22} {r['scored_bytes']:>12,} {r['state']:<28} {r['perplexity']:>10.3f}")
    if twin:
        print(f"{'fp twin (report)':<22} {twin['scored_bytes']:>12,} {'zero state every 128 bytes':<28} "
              f"{twin['perplexity']:>10.3f}")
    if recorded is not None:
        print(f"train_report.json records {recorded:.4f}: "
              f"{'reproduced' if result['train_report']['reproduced'] else 'NOT reproduced (another corpus?)'}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

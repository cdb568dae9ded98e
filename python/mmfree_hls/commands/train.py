"""``mmfree train``: quantisation-aware training of the demo-sized model."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train a small MatMul-free LM on the offline corpus (seeded, resumable)",
        description="Quantisation-aware training on Python's own documentation topics "
                    "(pydoc_data, ships with Python: no download). Writes a checkpoint directory "
                    "(config.json + model.safetensors + train_report.json). Interrupt and rerun "
                    "with the same --out to resume from the last saved step.")
    p.add_argument("--out", required=True, help="checkpoint directory to write (resumes if it has train_state/)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: 2500)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (AdamW, cosine decay)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-quantize", action="store_true",
                   help="train the full-precision twin (same architecture, no ternary/int8 rounding)")
    p.add_argument("--config", help="model config.json to train (default: the demo model's)")
    p.add_argument("--force", action="store_true",
                   help="replace a checkpoint already in --out (only one written by mmfree); without it "
                        "a non-empty --out is refused unless it holds a resumable run of the same config")
    p.set_defaults(func=run)


def run(args) -> int:
    from dataclasses import replace

    from ..config import ModelConfig
    from ..design.train import DEMO_MODEL, TrainConfig, train

    cfg = ModelConfig.from_json(args.config) if args.config else DEMO_MODEL
    overrides = {k: v for k, v in {"steps": args.steps, "batch_size": args.batch_size, "seq_len": args.seq_len,
                                   "lr": args.lr, "seed": args.seed}.items() if v is not None}
    tc = replace(TrainConfig(), quantize=not args.no_quantize, **overrides)
    report = train(cfg, args.out, tc, force=args.force)
    print(json.dumps({k: report[k] for k in ("held_out_perplexity", "wall_time_s")}, indent=2))
    return 0

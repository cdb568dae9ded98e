"""``mmfree import SRC DST``: a reference hgrn_bit checkpoint -> our checkpoint (pre-packed weights)."""

from __future__ import annotations

DESCRIPTION = """\
Import a MatMul-free LM checkpoint in the reference layout (config.json with
model_type hgrn_bit; model.safetensors or sharded safetensors; fp32, fp16 or
bf16) into DST: the same layout in one file, plus packed.safetensors with every
BitLinear quantised once and packed (2-bit and 1.6-bit layouts) with its scale,
so the HLS flow and the board never quantise again. Tokenizer files are copied.
Reads one tensor at a time: memory stays far below the checkpoint's size.
"""


def register(sub) -> None:
    p = sub.add_parser("import", help="import a reference hgrn_bit checkpoint (packs the ternary weights)",
                       description=DESCRIPTION)
    p.add_argument("src", metavar="SRC", help="reference checkpoint directory (config.json + safetensors)")
    p.add_argument("dst", metavar="DST", help="output directory")
    p.add_argument("--force", action="store_true", help="replace the checkpoint files in a non-empty DST")
    p.add_argument("--layouts", default="2bit,1.6bit",
                   help="packing layouts to store, comma separated (default: 2bit,1.6bit)")
    p.set_defaults(func=run)


def run(args) -> int:
    import time

    from ..checkpoint import import_checkpoint
    from ..checkpoint import summarize
    from .info import print_summary

    layouts = [x.strip() for x in args.layouts.split(",") if x.strip()]
    t0 = time.perf_counter()
    out = import_checkpoint(args.src, args.dst, force=args.force, layouts=layouts)
    print(f"imported {args.src} -> {out} in {time.perf_counter() - t0:.1f} s")
    print_summary(summarize(out))
    return 0

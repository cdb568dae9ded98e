"""``mmfree generate``: stream text from an overlay package (board or C-simulation).

    mmfree generate overlays/pynq-z2/demo --prompt "Once upon" --max-new-tokens 64

Text goes to stdout as it is produced; one line of timing statistics (host
vs device time per token) goes to stderr at the end, so the text can be piped.
"""

from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "generate", help="stream generated text from an overlay (pynq board or C-sim)",
        description="Open an overlay package with the host class and stream generated text. "
                    "Greedy when --temperature is 0 (the default).")
    p.add_argument("overlay", metavar="OVERLAY", help="overlay directory (overlays/BOARD/NAME)")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--backend", default="auto", choices=("auto", "csim", "pynq"),
                   help="auto = pynq on a board with a bitstream, else the C-simulation")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate (default 64)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass in (0, 1]")
    p.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")
    p.add_argument("--timeout", type=float, default=None, help="seconds one device step may take")
    p.add_argument("--no-verify", action="store_true", help="skip the SHA-256 check of the package")
    p.add_argument("--stats-json", default=None, metavar="FILE", help="also write the timing stats as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..runtime import Accelerator

    with Accelerator.open(args.overlay, backend=args.backend, timeout_s=args.timeout,
                          verify=not args.no_verify) as acc:
        stream = acc.generate_text(args.prompt, max_new_tokens=args.max_new_tokens,
                                   temperature=args.temperature, top_k=args.top_k,
                                   top_p=args.top_p, seed=args.seed)
        sys.stdout.write(args.prompt)
        sys.stdout.flush()
        for piece in stream:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
        print(f"[{acc.backend_name}] {acc.stats}", file=sys.stderr)
        if args.stats_json:
            summary = dict(acc.stats.summary(), backend=acc.backend_name, overlay=str(acc.manifest.root))
            with open(args.stats_json, "w") as f:
                json.dump(summary, f, indent=2)
    return 0

"""``mmfree generate``: stream text from an overlay package (board or C-simulation).

    mmfree generate overlays/pynq-z2/demo --prompt "Once upon" --max-new-tokens 64
    mmfree generate overlays/pynq-z2/demo --batch prompts.txt      # one prompt a line, decoded together

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
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="text to continue")
    src.add_argument("--batch", metavar="FILE",
                     help="a file of prompts, one a line (blank lines skipped; '-' = stdin): up to the "
                          "design's slots are decoded together, one weight pass serving all of them; "
                          "prompt i samples with seed SEED+i")
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


def read_prompts(path: str) -> list[str]:
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read the prompts file {path}: {getattr(e, 'strerror', None) or e}; give a "
                         "UTF-8 text file with one prompt a line (or - for stdin)") from None
    prompts = [line for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"{path} holds no prompt (one prompt a line)")
    return prompts


def run(args) -> int:
    from ..runtime import Accelerator

    prompts = read_prompts(args.batch) if args.batch else None
    with Accelerator.open(args.overlay, backend=args.backend, timeout_s=args.timeout,
                          verify=not args.no_verify) as acc:
        if prompts is not None:
            outs = acc.generate_text_batch(prompts, max_new_tokens=args.max_new_tokens,
                                           temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                           seed=args.seed)
            for i, (p, o) in enumerate(zip(prompts, outs)):
                print(f"[{i}] {p}{o}")
            print(f"[{acc.backend_name}] {len(prompts)} prompt{'s' * (len(prompts) != 1)}, "
                  f"{acc.slots} slot{'s' * (acc.slots != 1)}: {acc.stats}", file=sys.stderr)
            _write_stats(args, acc)
            return 0
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
        _write_stats(args, acc)
    return 0


def _write_stats(args, acc) -> None:
    if args.stats_json:
        summary = dict(acc.stats.summary(), backend=acc.backend_name, overlay=str(acc.manifest.root))
        with open(args.stats_json, "w") as f:
            json.dump(summary, f, indent=2)

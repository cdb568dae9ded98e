"""``mmfree demo``: the first five minutes, end to end on the shipped model.

    checkpoint ──convert (hls4ml + our layers)──▶ hls_project/demo
               ──g++──▶ C-simulation library ──package──▶ overlays/<board>/demo
               ──Accelerator.open(backend="csim")──▶ streamed text

Every step is cached (convert by content hash, the package by its manifest),
so a second run goes straight to generation.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..checkpoint import DEMO_CHECKPOINT

DEFAULT_PROMPT = "The for statement is used to "


def register(sub) -> None:
    p = sub.add_parser(
        "demo", help="convert the shipped model, compile the C-sim, stream generated text",
        description="Run the whole flow on the shipped demo model: hls4ml conversion through the "
                    "MatMul-free extension layers, g++ C-simulation, overlay package, and "
                    "autoregressive decoding through the host class on the C-sim backend.")
    p.add_argument("--checkpoint", default=str(DEMO_CHECKPOINT), help="model to run (default: shipped demo)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"text prompt (default: {DEFAULT_PROMPT!r})")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature; 0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check-tokens", type=int, default=64,
                   help="greedy tokens compared between the C-sim and the numpy reference (0: skip)")
    p.add_argument("--board", default="pynq-z2", help="board the overlay package targets")
    p.add_argument("--project", default="hls_project/demo", help="where the hls4ml project goes")
    p.add_argument("--overlay", default=None, help="overlay directory (default overlays/BOARD/demo)")
    p.add_argument("--force", action="store_true",
                   help="replace an hls project at --project that holds another model or config")
    p.set_defaults(func=run)


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _own_project(args) -> bool:
    """An existing project built from this same checkpoint is a stale build of ours (older
    generator or precision defaults): regenerating it loses nothing. Anything else needs --force."""
    from ..hls_project import PROJECT_FILE, read_project

    if not (Path(args.project) / PROJECT_FILE).is_file():
        return False
    recorded = read_project(args.project).get("checkpoint")
    return recorded is not None and Path(recorded).resolve() == Path(args.checkpoint).resolve()


def run(args) -> int:
    from ..checkpoint import load_checkpoint
    from ..design.convert import convert
    from ..packing import BITS_PER_WEIGHT
    from ..runtime.accelerator import Accelerator
    from ..overlay import package_project

    t_start = time.perf_counter()
    model = load_checkpoint(args.checkpoint)
    cfg = model.config
    _say(f"model {args.checkpoint}: d={cfg.hidden_size}, layers={cfg.num_hidden_layers}, "
         f"vocab={cfg.vocab_size}, {cfg.parameter_count():,} parameters")

    t = time.perf_counter()
    project = convert(args.checkpoint, args.project, board=args.board,
                      overwrite=args.force or _own_project(args), verbose=True)
    eng = project.info["engine"]
    _say(f"engine project {args.project} ({args.board}, on-chip: {eng['lanes']} ternary lanes, "
         f"{eng['knobs']['vector_lanes']} vector lanes) converted and compiled in {time.perf_counter() - t:.1f} s")

    overlay = Path(args.overlay or f"overlays/{args.board}/demo")
    t = time.perf_counter()
    package_project(args.project, args.board, out=overlay, checkpoint=args.checkpoint, force=True)
    _say(f"overlay package {overlay} written in {time.perf_counter() - t:.1f} s")

    with Accelerator.open(overlay, backend="csim") as acc:
        _say(f"backend: {acc.backend_name} (C-simulation of the generated HLS C++)")
        print(f"\n{args.prompt}", end="", flush=True)
        for piece in acc.generate_text(args.prompt, args.max_new_tokens, temperature=args.temperature,
                                       top_k=args.top_k, top_p=args.top_p, seed=args.seed):
            print(piece, end="", flush=True)
        print("\n")
        stats = str(acc.stats)
        if args.check_tokens > 0:
            ids = acc.tokenizer.encode(args.prompt)
            hw = list(acc.generate(ids, args.check_tokens))
            ref = model.generate_greedy(ids, args.check_tokens)
            same = next((i for i, (a, b) in enumerate(zip(hw, ref)) if a != b), len(ref))
            verdict = "identical" if hw == ref else f"identical up to token {same} (a near-tie: see README)"
            _say(f"greedy check: {args.check_tokens} tokens from the C-sim vs the numpy integer reference: {verdict}")

    n_w = cfg.ternary_weight_count()
    sizes = ", ".join(f"{n_w * b / 8 / 1024:.0f} KiB at {name}" for name, b in BITS_PER_WEIGHT.items())
    _say(f"C-sim backend: {stats}")
    _say(f"ternary weights: {n_w:,} ({sizes}); state per token: {cfg.num_hidden_layers * cfg.state_size} values")
    _say(f"total {time.perf_counter() - t_start:.1f} s. On a PYNQ board: "
         f"Accelerator.open('{overlay}') picks the bitstream once `make overlay` has built it.")
    sys.stdout.flush()
    return 0

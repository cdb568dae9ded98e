"""``mmfree package``: an overlay directory from an HLS project (library: mmfree_hls.overlay).

    mmfree package hls_project/demo [--board pynq-z2] [--out overlays/pynq-z2/demo] [--force]
"""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "package", help="overlay directory (bitstream, C-sim, weights, manifest) from an HLS project",
        description="Package an HLS project written by `mmfree convert` as an overlay: the C-simulation "
                    "library and its sources, the embeddings, the streamed tier's weights buffer, the "
                    "bitstream + .hwh and implementation reports when `make overlay` ran, and a "
                    "manifest.json with the SHA-256 of every file. Without a bitstream the package runs "
                    "on the C-sim backend only.")
    p.add_argument("project", metavar="HLS_PROJECT", help="directory written by `mmfree convert`")
    p.add_argument("--board", default=None,
                   help="target board (default: the board the project was converted for; must match)")
    p.add_argument("--out", default=None, help="output directory (default overlays/BOARD/NAME)")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint the project was converted from (default: the one the project records)")
    p.add_argument("--force", action="store_true", help="replace an existing overlay package")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..overlay import package_project

    manifest = package_project(args.project, args.board, out=args.out, checkpoint=args.checkpoint,
                               force=args.force)
    files = manifest.data["files"]
    total = sum(f["bytes"] for f in files.values())
    print(f"overlay package {manifest.root} ({len(files)} files, {total / 1e6:.2f} MB)")
    print(f"  board {manifest.board}, tier {manifest.tier}, "
          + ("bitstream included" if manifest.bitstream is not None else "no bitstream: C-sim backend only "
             "(run `make overlay` where Vivado is installed)"))
    print(f"  try: mmfree generate {manifest.root} --prompt \"...\" --backend csim")
    return 0

"""``mmfree convert CKPT --out hls_project/NAME``: engine project and C-simulation library.

Sends the decode-step model through hls4ml (the MMFreeEngine backend), which
writes the engine's C++ for one board and tier: the time-multiplexed decode
engine sized by the board preset (data/boards.json), the weight stream (in
BRAM on chip, or a weights buffer streamed from DDR), the Vitis HLS top and
mmfree_project.json; then compiles csim/libmmfree_csim.so with g++.
Converting the same checkpoint with the same board, tier and knobs again is
instant (content hash). An existing project of another model or build is only
replaced with --force.

examples:
  mmfree convert python/mmfree_hls/data/demo_model --out hls_project/demo
  mmfree convert CKPT --out hls_project/m370 --board kv260 --tier streamed --packing 1.6bit
  mmfree convert CKPT --out hls_project/x --config knobs.yaml    (vector_lanes: 8, frac_bits: 18 ...)
"""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("convert", help="engine project + C-simulation library from a checkpoint",
                       description=__doc__.split("\n\n", 1)[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint directory (ours or the reference layout)")
    p.add_argument("--out", required=True, metavar="DIR", help="project directory, e.g. hls_project/demo")
    p.add_argument("--board", default="pynq-z2", help="target board (data/boards.json; default pynq-z2)")
    p.add_argument("--tier", default="on-chip", choices=("on-chip", "streamed"),
                   help="on-chip: weights in BRAM (small models); streamed: weights read from DDR through "
                        "the board's HP ports every token (370M-class models)")
    p.add_argument("--packing", default="2bit", choices=("2bit", "1.6bit"),
                   help="ternary weight packing: 4 weights a byte, or 5 (1.6 bits/weight)")
    p.add_argument("--config", default=None, metavar="YAML",
                   help="engine knob overrides (vector_lanes, rows_per_tile, clock_mhz, frac_bits, "
                        "sigmoid_table_bits)")
    p.add_argument("--force", action="store_true", help="replace an existing project of another model/build")
    p.add_argument("--no-compile", action="store_true", help="write the project without building the C-sim")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..cli import CLIError
    from ..design.convert import CompileError, ProjectExistsError, convert
    from ..design.hls_layers import ConversionError
    from ..engine.presets import PresetError
    from ..engine.project import EngineShapeError

    try:
        project = convert(args.checkpoint, args.out, config=args.config, board=args.board, tier=args.tier,
                          packing=args.packing, overwrite=args.force, compile=not args.no_compile)
    except (ProjectExistsError, CompileError, PresetError, EngineShapeError, ConversionError) as e:
        raise CLIError(str(e)) from None
    info, eng = project.info, project.info["engine"]
    dims = info["dims"]
    print(f"project {project.root}: {info['board']} {info['tier']} {info['packing']}, "
          f"d={dims['d']} L={dims['L']} e={dims['e']} V={dims['V']}")
    print(f"  engine: R={eng['R']} rows x {eng['per']} inputs = {eng['lanes']} ternary lanes, "
          f"{eng['knobs']['vector_lanes']} vector lanes, {eng['cycles_per_token']:,} cycles/token at "
          f"{info['clock_mhz']:g} MHz (schedule model)")
    if not args.no_compile:
        print(f"  C-simulation library {project.lib_path}")
    return 0

"""``mmfree convert CKPT --out hls_project/NAME``: hls4ml project and C-simulation library.

Builds the decode-step Keras model of the checkpoint, converts it with hls4ml
(Vitis backend, io_parallel) through the project's extension layers, writes
the wrapper top ``mmfree_step``, a Vitis HLS build Tcl and
``mmfree_project.json``, then compiles ``csim/libmmfree_csim.so`` with g++.
Converting the same checkpoint with the same precision config again is
instant (content hash). An existing project of another model or config is
only replaced with --force.
"""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("convert", help="hls4ml project + C-simulation library from a checkpoint",
                       description=__doc__.split("\n\n", 1)[1])
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint directory (ours or the reference layout)")
    p.add_argument("--out", required=True, metavar="DIR", help="project directory, e.g. hls_project/demo")
    p.add_argument("--config", default=None, metavar="YAML",
                   help="precision config merged over design/configs/precision_default.yaml")
    p.add_argument("--force", action="store_true", help="replace an existing project of another model/config")
    p.add_argument("--no-compile", action="store_true", help="write the project without building the C-sim")
    p.add_argument("--opt", default="-O2", choices=("-O1", "-O2", "-O3"), help="g++ optimisation (default -O2)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..cli import CLIError
    from ..design.convert import CompileError, ProjectExistsError, convert
    from ..design.hls_layers import ConversionError

    try:
        project = convert(args.checkpoint, args.out, config=args.config, overwrite=args.force)
        if not args.no_compile:
            project.compile(opt=args.opt)
    except (ProjectExistsError, ConversionError, CompileError) as e:
        raise CLIError(str(e)) from None
    dims = project.info["dims"]
    print(f"project {project.root}: top {project.info['top']}, d={dims['d']} L={dims['L']} e={dims['e']} "
          f"V={dims['V']}, content hash {project.content_hash[:12]}")
    if not args.no_compile:
        print(f"C-simulation library {project.lib_path}")
    return 0

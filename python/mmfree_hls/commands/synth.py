"""``mmfree synth``: Vitis HLS and Vivado, driven by generated Tcl.

    mmfree synth hls hls_project/demo --board pynq-z2        C synthesis + IP export + report
    mmfree synth overlay hls_project/demo --board pynq-z2    block design → .bit/.hwh → package

The Tcl is written first in every case (``hls_project/NAME/synth/BOARD/``);
without the vendor tool on PATH the command then stops, naming the tool and
the release the Tcl targets.
"""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "synth", help="Vitis HLS / Vivado flow (writes the Tcl; runs it where the tools exist)",
        description="Synthesis via generated Tcl. 'hls': Vitis HLS C synthesis, IP export and "
                    "report. 'overlay': Vivado block design (Zynq PS, the IP, m_axi on HP ports) "
                    "→ bitstream + .hwh, then `mmfree package`. Without the tool on PATH the "
                    "Tcl is still written and the command says what is missing.")
    p.add_argument("step", choices=("hls", "overlay"), help="which flow to run")
    p.add_argument("project", metavar="HLS_PROJECT", help="directory written by `mmfree convert`")
    p.add_argument("--board", required=True, help="target board (data/boards.json)")
    p.add_argument("--jobs", type=int, default=None, help="Vivado implementation jobs")
    p.add_argument("--out", default=None,
                   help="overlay package directory (overlay step; default overlays/BOARD/NAME, an existing "
                        "package there is replaced by the one with the new bitstream)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..cli import CLIError
    from ..design import synth

    try:
        if args.step == "hls":
            summary = synth.run_hls(args.project, args.board)
            res = ", ".join(f"{k} {v}" for k, v in summary["resources"].items())
            print(f"C synthesis of {summary['top']} for {summary['part']}: latency "
                  f"{summary['latency_cycles']} cycles, estimated clock {summary['estimated_clock_ns']} ns; {res}")
            print(f"IP and reports under {synth.synth_dir(args.project, args.board)}")
            return 0
        bit = synth.run_overlay(args.project, args.board, jobs=args.jobs)
    except synth.ToolMissingError as e:
        raise CLIError(str(e)) from None
    print(f"bitstream {bit}")
    from .package import package_project
    # A package of this project made before (e.g. C-sim only) is replaced: that is the point.
    manifest = package_project(args.project, args.board, out=args.out, force=True)
    print(f"overlay package {manifest.root}")
    return 0

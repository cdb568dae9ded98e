"""``mmfree synth``: Vitis HLS and Vivado, driven by generated Tcl.

    mmfree synth hls hls_project/demo --board pynq-z2 [--tier streamed] [--cosim]
    mmfree synth overlay hls_project/demo --board pynq-z2 [--part-only] [--allow-timing-violation]
    mmfree synth probe --board kv260            the DDR bandwidth probe overlay (for `mmfree calibrate`)

The Tcl is written first in every case (``hls_project/NAME/synth/BOARD/``);
without the vendor tool on PATH the command then stops, naming the tool and
the release the Tcl targets.
"""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "synth", help="Vitis HLS / Vivado flow (writes the Tcl; runs it where the tools exist)",
        description="Synthesis via generated Tcl. 'hls': Vitis HLS C simulation, C synthesis, optional "
                    "co-simulation and IP export. 'overlay': Vivado block design (Zynq PS, the IP, one PS "
                    "port per m_axi bundle) → bitstream + .hwh with a timing gate, then `mmfree package`. "
                    "'probe': the same flow for the DDR bandwidth probe (see `mmfree calibrate`). Without "
                    "the tool on PATH the Tcl is still written and the command says what is missing.")
    p.add_argument("step", choices=("hls", "overlay", "probe"), help="which flow to run")
    p.add_argument("project", metavar="HLS_PROJECT", nargs="?",
                   help="directory written by `mmfree convert` (not for 'probe')")
    p.add_argument("--board", required=True, help="target board (data/boards.json)")
    p.add_argument("--tier", choices=("on-chip", "streamed"), default=None,
                   help="tier the project must have been converted for (default: the project's own)")
    p.add_argument("--cosim", action="store_true", help="also run RTL co-simulation (needs a testbench)")
    p.add_argument("--part-only", action="store_true",
                   help="build for the bare part when the board files are not installed (the PS keeps "
                        "its default DDR/MIO settings)")
    p.add_argument("--allow-timing-violation", action="store_true",
                   help="package a bitstream with negative slack (recorded in reports/impl.json)")
    p.add_argument("--jobs", type=int, default=None, help="Vivado implementation jobs")
    p.add_argument("--out", default=None,
                   help="package directory (overlay: default overlays/BOARD/NAME, replaced if present; "
                        "probe: default overlays/BOARD/bw_probe)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..cli import CLIError
    from ..design import synth

    if args.step != "probe" and not args.project:
        raise CLIError(f"`mmfree synth {args.step}` needs HLS_PROJECT (a directory written by `mmfree convert`)")
    try:
        if args.step == "hls":
            summary = synth.run_hls(args.project, args.board, tier=args.tier, cosim=args.cosim)
            res = ", ".join(f"{k} {v}" for k, v in summary["resources"].items())
            print(f"C synthesis of {summary['top']} for {summary['part']}: latency "
                  f"{summary['latency_cycles']} cycles, estimated clock {summary['estimated_clock_ns']} ns; {res}")
            print(f"IP and reports under {synth.synth_dir(args.project, args.board)}")
            return 0
        if args.step == "probe":
            from ..design import probe
            out = probe.build_probe_overlay(args.board, out=args.out, jobs=args.jobs, part_only=args.part_only,
                                            allow_timing_violation=args.allow_timing_violation)
            print(f"bandwidth probe overlay {out}; on the board: mmfree calibrate --board {args.board} "
                  f"--overlay {out}")
            return 0
        bit = synth.run_overlay(args.project, args.board, tier=args.tier, jobs=args.jobs,
                                part_only=args.part_only, allow_timing_violation=args.allow_timing_violation)
    except synth.ToolMissingError as e:
        raise CLIError(str(e)) from None
    impl = synth.impl_summary(args.project, args.board) or {}
    print(f"bitstream {bit}: WNS {impl.get('wns_ns')} ns, WHS {impl.get('whs_ns')} ns, Fmax {impl.get('fmax_mhz')} MHz"
          + ("  (TIMING NOT MET, allowed)" if impl.get("timing_violation_allowed") else ""))
    from ..overlay import package_project
    # A package of this project made before (e.g. C-sim only) is replaced: that is the point.
    manifest = package_project(args.project, args.board, out=args.out, force=True)
    print(f"overlay package {manifest.root}")
    return 0

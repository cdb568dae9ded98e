"""``mmfree calibrate``: measure the usable DDR bandwidth on a board with the probe overlay.

    mmfree calibrate --board kv260 [--overlay overlays/kv260/bw_probe] [--out ~/.config/mmfree-hls/boards.json]
    mmfree calibrate --board kv260 --results calibration.json      apply a saved measurement (any machine)

The measured fraction goes into a copy of the board table (printed first, --dry-run prints only);
the shipped data/boards.json is never written.
"""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "calibrate", help="measure usable DDR bandwidth on a board (bandwidth probe overlay)",
        description="Runs the bandwidth probe (built by `mmfree synth probe --board B`) on the board for "
                    "1..K weight ports, checks its checksums, and writes the measured usable DDR "
                    "fraction into a copy of the board table. Off the board it says what it needs.")
    p.add_argument("--board", required=True, help="board the probe was built for (data/boards.json)")
    p.add_argument("--overlay", default=None, help="probe overlay directory (default overlays/BOARD/bw_probe)")
    p.add_argument("--words", type=int, default=1 << 20, help="words read per port (default 1M)")
    p.add_argument("--results", default=None, help="apply a measurement saved with --save instead of measuring")
    p.add_argument("--save", default=None, help="also save the raw measurement as JSON here")
    p.add_argument("--out", default=None, help="board table copy to write (default "
                   "~/.config/mmfree-hls/boards.json; starts from it if it exists, else from the shipped table)")
    p.add_argument("--dry-run", action="store_true", help="print what would change, write nothing")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    from pathlib import Path

    from .. import calibrate as cal
    from ..cli import CLIError
    from ..runtime.manifest import known_boards

    boards = known_boards()
    if args.board not in boards:
        raise CLIError(f"unknown board {args.board!r}; choose one of {', '.join(sorted(boards))}")
    overlay = Path(args.overlay) if args.overlay else Path("overlays") / args.board / "bw_probe"
    if args.results:
        measurement = json.loads(Path(args.results).read_text())
        if measurement.get("board") != args.board:
            raise CLIError(f"{args.results} was measured on {measurement.get('board')!r}, not {args.board!r}")
    else:
        try:
            import pynq  # noqa: F401, PLC0415
        except ImportError:
            raise CLIError(cal.off_board_message(args.board, overlay)) from None
        print(f"bandwidth probe on {args.board}: {args.words} words per port")
        measurement = cal.run_probe(overlay, words=args.words)
        if args.save:
            Path(args.save).write_text(json.dumps(measurement, indent=2) + "\n")
    result = cal.usable_fraction(measurement, boards[args.board])
    for n, frac in sorted(result["by_ports"].items()):
        print(f"  {n} port(s): {frac:.3f} of the {result['peak_gbps']} GB/s peak")
    print(f"usable fraction with all {len(measurement['ports'])} ports: {result['fraction']} "
          f"({result['gbps']} GB/s)" + ("  -- limited by the PL ports, not the DDR" if result["port_limited"] else ""))
    out = Path(args.out).expanduser() if args.out else cal.DEFAULT_USER_TABLE
    base_path = out if out.is_file() and out.resolve() != cal.SHIPPED_TABLE.resolve() else cal.SHIPPED_TABLE
    new, changes = cal.apply_measurement(json.loads(base_path.read_text()), args.board, measurement, result)
    for c in changes or ["(no change)"]:
        print(f"  {c}")
    if args.dry_run:
        print(f"--dry-run: {out} not written")
        return 0
    try:
        path = cal.write_user_table(new, out)
    except ValueError as e:
        raise CLIError(str(e)) from None
    print(f"wrote {path} (the shipped table is unchanged); use it with MMFREE_BOARDS={path}")
    return 0

"""``mmfree``: the command-line tool.

Each subcommand lives in its own module under :mod:`mmfree_hls.commands`
(one job each) and registers itself with ``register(subparsers)``; heavy
imports (TensorFlow, hls4ml) happen inside the command, never here, so
``mmfree --help`` is instant and works on a board without the design extra.
What each command drives: docs/ARCHITECTURE.md ("The data path").
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

# TensorFlow's start-up chatter (CUDA probes on CPU-only machines) buries the
# tool's own output; real TensorFlow failures still surface as exceptions.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from . import __version__, commands

EPILOG = """\
typical flow:
  mmfree info CKPT                         sizes, parameters, packed bytes
  mmfree convert CKPT --out hls_project/NAME   hls4ml project + C-simulation
  mmfree package hls_project/NAME --board pynq-z2   overlay directory
  mmfree generate OVERLAY --prompt "..."   stream text (board or C-sim)
  mmfree demo                              all of the above on the shipped model

Run 'mmfree COMMAND --help' for the options of one command.
"""


class CLIError(Exception):
    """An error the user can fix; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmfree",
        description="MatMul-free language model on FPGAs: QKeras model, hls4ml conversion, "
                    "PYNQ overlays and a host that decodes on the board or in C-simulation.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mmfree-hls {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{mod.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, FileNotFoundError, FileExistsError, KeyError, RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"mmfree {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except OSError as e:            # read-only directory, full disk, ...: name the path, no traceback
        from .fsio import describe_os_error
        print(f"mmfree {args.command}: error: {describe_os_error(e, e.filename or '')}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

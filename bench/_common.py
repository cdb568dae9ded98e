"""What every bench script shares: quiet TensorFlow, the machine it ran on, one JSON writer.

Import it first (``import _common`` — ``bench/`` is on ``sys.path`` when a script
runs as ``python bench/bench_x.py``): it sets ``TF_CPP_MIN_LOG_LEVEL=3`` before
anything imports TensorFlow, the way ``mmfree`` does, so a bench prints its
table and not a page of CUDA/cuDNN probes.

Every result file carries ``bench``, ``command`` (what regenerates it),
``measured`` (UTC date) and ``machine`` (``kind`` is what README rows show);
``bench/render_readme.py`` renders README.md's figures from these files.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def machine() -> dict:
    """The machine a measurement ran on; ``kind`` is the short label README rows carry."""
    cores = os.cpu_count() or 0
    return {"kind": f"{platform.machine()}, {cores} cores", "cores": cores,
            "cpu": platform.processor() or platform.machine(), "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}


def command_line() -> str:
    """How this run was started, relative to the repository (what regenerates its JSON)."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(ROOT)
    except ValueError:
        pass
    return " ".join([".venv/bin/python", str(script), *sys.argv[1:]])


def git_commit() -> str | None:
    """The commit measured (``+`` when the tree had local changes), or None outside a checkout."""
    import subprocess
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def write_result(name: str, payload: dict, out: str | Path | None = None, command: str | None = None) -> Path:
    """Write ``bench/results/<name>.json`` (or ``out``) with the common header; return its path.

    ``command``: what regenerates the file, when it is not this process's own command line."""
    path = Path(out) if out else RESULTS / f"{name}.json"
    data = {"bench": name, "command": command or command_line(),
            "measured": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"), "commit": git_commit(),
            "machine": machine(), **payload}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return path

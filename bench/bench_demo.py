"""`make demo`'s wall time, cold and cached, and its decoding speed on the C-sim backend.

Runs ``mmfree demo`` (what ``make demo`` runs once ``.venv`` exists) twice in a
fresh temporary directory: first with nothing built (convert, g++ compile,
package, 200 sampled tokens), then again with everything cached. The first
``make demo`` on a fresh clone also creates ``.venv`` and installs the design
extra; that part depends on the network and is not measured here.

    python bench/bench_demo.py

Prints a table and writes ``bench/results/demo.json``.
"""

from __future__ import annotations

import _common

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEED = re.compile(r"C-sim backend: .*?([\d.]+) tokens/s, ([\d.]+) ms/token.*?\(([\d.]+)% host\)")
TOKENS = 200


def run_demo(cwd: Path) -> tuple[float, str]:
    mmfree = Path(sys.executable).with_name("mmfree")
    cmd = [str(mmfree), "demo", "--max-new-tokens", str(TOKENS)] if mmfree.exists() else \
        [sys.executable, "-m", "mmfree_hls", "demo", "--max-new-tokens", str(TOKENS)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=dict(os.environ))
    wall = time.perf_counter() - t0
    if res.returncode:
        raise SystemExit(f"`{' '.join(cmd)}` failed ({res.returncode}):\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
    return wall, res.stdout


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="mmfree_bench_demo_") as tmp:
        cold, _ = run_demo(Path(tmp))
        warm, out = run_demo(Path(tmp))
    m = SPEED.search(out)
    if not m:
        raise SystemExit("mmfree demo printed no 'C-sim backend: ... tokens/s, ... ms/token ... (x% host)' line; "
                         "update bench/bench_demo.py's SPEED pattern to its output")
    tps, ms, host = float(m.group(1)), float(m.group(2)), float(m.group(3)) / 100
    result = {"model": "demo_model", "new_tokens": TOKENS, "sampling": "temperature 0.8, top-k 40 (demo default)",
              "cold_s": round(cold, 2), "warm_s": round(warm, 2),
              "tokens_per_s": tps, "ms_per_token": ms, "host_fraction": host}
    path = _common.write_result("demo", result)
    print(f"mmfree demo, nothing built:  {cold:6.1f} s wall")
    print(f"mmfree demo, cached:         {warm:6.1f} s wall")
    print(f"decoding (C-sim backend):    {tps:.0f} tokens/s, {ms:.2f} ms/token, {100 * host:.1f} % host")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

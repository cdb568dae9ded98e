"""What an HLS project directory (``hls_project/<name>/``) contains: the one
place that names its record file and its C-simulation library.

Numpy-free and TensorFlow-free: packaging and the board side read projects too.
"""

from __future__ import annotations

import json
from pathlib import Path

PROJECT_FILE = "mmfree_project.json"        # model, precision, top, ports, content hash
CSIM_LIBRARY = "csim/libmmfree_csim.so"     # g++ build of the same C++ (contract of the host)


def read_project(project: str | Path) -> dict:
    """``mmfree_project.json`` of an HLS project, with a clear error when absent or broken."""
    root = Path(project)
    pfile = root / PROJECT_FILE
    if not pfile.is_file():
        raise FileNotFoundError(f"{root} is not an HLS project (no {PROJECT_FILE}); create one with "
                                "`mmfree convert CKPT --out hls_project/NAME`")
    try:
        return json.loads(pfile.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{pfile}: not valid JSON ({e}); re-run `mmfree convert`") from None

"""hls4ml as the front end of the engine.

convert_through_hls4ml(model, root, preset, packing) writes the engine project
(mmfree_hls.engine.project) for ``model``.
"""

from __future__ import annotations

from pathlib import Path

from ..engine.project import write_project


def convert_through_hls4ml(model, root: Path, preset, packing: str, *, extra=None, verbose: bool = True) -> dict:
    return write_project(model, root, preset, packing, extra=extra)

"""Build hook: ship the engine's HLS sources and the default configs inside the package.

design/hls (C++ headers and the bandwidth probe) and design/configs (sweep files) stay the
source of truth in the repository; the build copies them into the wheel as
mmfree_hls/data/hls and mmfree_hls/data/configs, the way hls4ml ships its templates.
Everything else is declared in pyproject.toml. See docs/ARCHITECTURE.md.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
#: repository folder -> (folder inside the package, file patterns)
SHIPPED = {"design/hls": ("mmfree_hls/data/hls", ("*.h", "*.cpp")),
           "design/configs": ("mmfree_hls/data/configs", ("*.yaml",))}


class BuildPyWithDesign(build_py):
    """build_py, plus the copies of design/hls and design/configs in the build tree."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return          # an editable install reads design/ from the checkout
        for src, (dst, patterns) in SHIPPED.items():
            files = sorted(f for p in patterns for f in (ROOT / src).glob(p))
            if src == "design/hls" and not any(f.name == "mmfree_engine.h" for f in files):
                raise SystemExit(f"{ROOT / src}/mmfree_engine.h is missing: build from a full checkout")
            out = Path(self.build_lib) / dst
            shutil.rmtree(out, ignore_errors=True)      # no stale copy of a removed file
            self.mkpath(str(out))
            for f in files:
                self.copy_file(str(f), str(out / f.name))


setup(cmdclass={"build_py": BuildPyWithDesign})

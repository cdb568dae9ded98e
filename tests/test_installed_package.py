"""The package works when installed, not only from a checkout.

Builds the wheel from a copy of the repository's sources, installs it (not
editable) into a fresh venv, and from a directory outside the repository runs
``mmfree convert`` on the demo checkpoint shipped inside the installed package,
``mmfree package`` and ``mmfree generate --backend csim``. The venv sees the
already-installed dependencies (numpy, hls4ml, ...) through a path entry, but
not the checkout: ``mmfree_hls`` must be imported from the venv's site-packages,
and the engine's HLS headers must come from the wheel (mmfree_hls/data/hls).
See docs/ARCHITECTURE.md ("Packaging").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from mmfree_hls.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
#: what a wheel is built from (the rest of the checkout is not packaged)
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "python", "design")
PROMPT = "Once upon"
N_TOKENS = 24

pytestmark = pytest.mark.slow


def _run(cmd, cwd, env, timeout=300) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, venv bin dir, work dir outside the repository, clean environment)."""
    root = tmp_path_factory.mktemp("installed")
    assert REPO not in root.parents
    src = root / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in SOURCES:
        p = REPO / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=ignore)
        else:
            shutil.copy2(p, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    wheels = root / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, src], cwd=root, env=env)
    (wheel,) = wheels.glob("mmfree_hls-*.whl")

    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=root, env=env)
    py = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", wheel], cwd=root, env=env)
    # the dependencies already installed here, as a plain path entry: the .pth files in that
    # directory (the editable install of this checkout among them) are not processed
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], root, env).strip())
    deps = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "_mmfree_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    work = root / "work"
    work.mkdir()
    return py, venv / "bin", work, env, site


def test_wheel_ships_hls_sources_templates_and_data(installed):
    py, _, work, env, site = installed
    pkg = site / "mmfree_hls"
    for h in sorted((REPO / "design" / "hls").glob("*.[hc]*")):
        shipped = pkg / "data" / "hls" / h.name
        assert shipped.is_file(), f"{h.name} is not in the wheel"
        assert shipped.read_bytes() == h.read_bytes(), f"{h.name} in the wheel differs from design/hls"
    for t in ("vitis_hls.tcl.in", "vivado_bd.tcl.in", "ps_ports.json"):
        assert (pkg / "design" / "tcl" / t).is_file(), t
    for d in ("boards.json", "toolchain.json", "model_presets.json", "demo_model/config.json",
              "demo_model/model.safetensors", "configs/sweep_demo.yaml"):
        assert (pkg / "data" / d).is_file(), d
    out = _run([py, "-c", "import mmfree_hls; from mmfree_hls.engine.build import hls_source_dir; "
                          "print(mmfree_hls.__file__); print(hls_source_dir())"], work, env).split()
    assert Path(out[0]).resolve() == (pkg / "__init__.py").resolve()
    assert REPO not in Path(out[0]).resolve().parents
    assert Path(out[1]).resolve() == (pkg / "data" / "hls").resolve()


def test_convert_package_generate_from_outside_the_repository(installed):
    py, bin_dir, work, env, site = installed
    demo = site / "mmfree_hls" / "data" / "demo_model"
    mmfree = bin_dir / "mmfree"
    out = _run([mmfree, "convert", demo, "--out", "proj"], work, env)
    assert "C-simulation library" in out
    record = json.loads((work / "proj" / "mmfree_project.json").read_text())
    assert record["checkpoint"] == str(demo.resolve())
    for h in ("mmfree_engine.h", "mmfree_fixed.h"):
        assert (work / "proj" / "firmware" / h).read_bytes() == (REPO / "design" / "hls" / h).read_bytes()
    assert (work / "proj" / "csim" / "libmmfree_csim.so").is_file()

    _run([mmfree, "package", "proj", "--out", "ov"], work, env)
    text = _run([mmfree, "generate", "ov", "--backend", "csim", "--prompt", PROMPT,
                 "--max-new-tokens", N_TOKENS], work, env)
    assert text.startswith(PROMPT) and len(text.strip()) > len(PROMPT)

    # the installed package's C-sim decodes greedily exactly like this checkout's numpy reference
    script = ("import json, sys; from mmfree_hls.runtime import Accelerator\n"
              "with Accelerator.open('ov', backend='csim') as acc:\n"
              f"    ids = acc.tokenizer.encode({PROMPT!r})\n"
              f"    print(json.dumps([ids, list(acc.generate(ids, {N_TOKENS}))]))\n")
    ids, got = json.loads(_run([py, "-c", script], work, env))
    want = load_checkpoint(REPO / "python" / "mmfree_hls" / "data" / "demo_model").generate_greedy(ids, N_TOKENS)
    assert got == want

"""The runtime must import with numpy alone (PYNQ boards have no TensorFlow)."""

import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = {"tensorflow", "keras", "qkeras", "hls4ml", "yaml", "matplotlib", "pandas", "torch",
               "pynq", "tokenizers"}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked: the runtime must not need it")
    sys.meta_path.insert(0, Block())
""")

# Everything a PYNQ board image needs: numpy (+ safetensors) only; pynq and
# tokenizers are imported lazily where they are used.
RUNTIME_MODULES = ["mmfree_hls", "mmfree_hls.config", "mmfree_hls.quant", "mmfree_hls.reference",
                   "mmfree_hls.packing", "mmfree_hls.checkpoint", "mmfree_hls.hgrn_bit",
                   "mmfree_hls.safetensors_io", "mmfree_hls.tokenizer", "mmfree_hls.sampling",
                   "mmfree_hls.corpus", "mmfree_hls.hls_project", "mmfree_hls.engine.cost",
                   "mmfree_hls.engine.layout", "mmfree_hls.engine.presets", "mmfree_hls.engine.project",
                   "mmfree_hls.runtime.accelerator", "mmfree_hls.runtime.buffers",
                   "mmfree_hls.runtime.manifest", "mmfree_hls.runtime.backend_csim",
                   "mmfree_hls.runtime.backend_pynq", "mmfree_hls.commands.package",
                   "mmfree_hls.commands.generate", "mmfree_hls.cli"]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + code], capture_output=True, text=True, timeout=120)


def test_runtime_imports_without_design_dependencies():
    mods = RUNTIME_MODULES
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in mods) + \
        "import numpy as np\nfrom mmfree_hls import MMFreeLM, ModelConfig\n" \
        "m = MMFreeLM.random(ModelConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, intermediate_size=8))\n" \
        "print(m.generate_greedy([1, 2], 3))\n"
    r = _run(code)
    assert r.returncode == 0, r.stderr


def test_blocker_really_blocks():
    r = _run("import mmfree_hls.design.layers\n")
    assert r.returncode != 0 and "blocked" in r.stderr


def test_cli_help_without_design_dependencies():
    r = _run("import sys\nfrom mmfree_hls.cli import main\nsys.argv=['mmfree','--help']\nmain()\n")
    assert r.returncode == 0, r.stderr
    assert "mmfree" in r.stdout and "convert" in r.stdout


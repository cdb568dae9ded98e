"""mmfree-hls: the MatMul-free language model on FPGAs through hls4ml.

The runtime (this namespace) imports with numpy alone; the design side
(QKeras model, hls4ml conversion) lives in :mod:`mmfree_hls.design` and needs
the ``design`` extra. The map of the package: docs/ARCHITECTURE.md.
"""

from .config import ConfigError, ModelConfig
from .reference import MMFreeLM
from .checkpoint import CheckpointError, import_checkpoint, load_checkpoint, save_checkpoint
from .tokenizer import load_tokenizer

__version__ = "0.1.0"

__all__ = ["ModelConfig", "ConfigError", "MMFreeLM", "load_checkpoint", "save_checkpoint",
           "CheckpointError", "import_checkpoint", "load_tokenizer", "convert", "__version__"]


def convert(model, output_dir, config=None, **kwargs):
    """Convert a model through hls4ml into an HLS project (needs the design extra)."""
    from .design.convert import convert as _convert
    return _convert(model, output_dir, config=config, **kwargs)


def __getattr__(name):
    # The host class is loaded on first use so `import mmfree_hls` stays light.
    if name == "Accelerator":
        from .runtime.accelerator import Accelerator
        return Accelerator
    raise AttributeError(f"module 'mmfree_hls' has no attribute {name!r}")

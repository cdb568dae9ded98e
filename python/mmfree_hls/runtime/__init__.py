"""Host runtime: open an overlay package and decode on the board or in C-simulation.

Imports with numpy alone (``pynq`` is imported only by the board backend, on use).
"""

from .accelerator import Accelerator, AcceleratorStats
from .buffers import BufferLayout, BufferSpec, DeviceBuffers
from .errors import (AcceleratorClosedError, AcceleratorError, BackendUnavailableError,
                     DeviceTimeoutError, ManifestError)
from .manifest import Manifest, load_manifest, write_manifest

__all__ = ["Accelerator", "AcceleratorStats", "BufferLayout", "BufferSpec", "DeviceBuffers",
           "AcceleratorError", "AcceleratorClosedError", "BackendUnavailableError",
           "DeviceTimeoutError", "ManifestError", "Manifest", "load_manifest", "write_manifest"]

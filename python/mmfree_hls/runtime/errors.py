"""Errors of the host runtime: each one says what to do about it."""

from __future__ import annotations


class AcceleratorError(RuntimeError):
    """The accelerator (board or C-simulation) could not do what was asked."""


class AcceleratorClosedError(AcceleratorError):
    """A method was called after ``close()``."""


class DeviceTimeoutError(AcceleratorError, TimeoutError):
    """The device did not signal completion in time; the session stays usable."""


class BackendUnavailableError(AcceleratorError):
    """The requested backend cannot run here (no pynq, no bitstream, wrong CPU)."""


class ManifestError(ValueError):
    """An overlay package is corrupt, incomplete or does not match itself."""

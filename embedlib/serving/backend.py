"""The array backend: CuPy on a CUDA device when there is one, else NumPy, behind ``xp``.

Every array operation of the index goes through ``backend.xp``, so the GPU and the CPU run
the same code; only moving arrays to and from the device differs.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

from embedlib.errors import EmbedlibError
from embedlib.log import get_logger

log = get_logger(__name__)

BACKENDS = ("auto", "numpy", "cupy")


class BackendError(EmbedlibError):
    """The requested array backend cannot be used here (no CuPy, no CUDA device)."""


@dataclass(frozen=True)
class Backend:
    """An array module and the device it computes on.

    Attributes
    ----------
    xp : module
        ``numpy`` or ``cupy``.
    name : str
        "numpy" or "cupy".
    device : str
        "cpu" or the CUDA device, e.g. "cuda:0 NVIDIA H100 80GB HBM3".
    reason : str
        Why this backend, e.g. "as configured" or "auto: cupy is not installed (...)".
    """

    xp: ModuleType
    name: str
    device: str
    reason: str = ""

    def to_device(self, array, dtype=None):
        """``array`` (host or device) as an array of this backend, ``dtype`` if given."""
        return self.xp.asarray(array, dtype=dtype)

    def to_host(self, array) -> np.ndarray:
        """A NumPy copy (or view, on the CPU) of a backend array."""
        if self.name == "cupy":
            return self.xp.asnumpy(array)
        return np.asarray(array)


def cupy_status() -> tuple[ModuleType | None, str]:
    """``(cupy, "")`` when CuPy imports and sees a CUDA device, else ``(None, why not)``."""
    try:
        import cupy
    except ImportError as exc:
        return None, f"cupy is not installed ({exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver or runtime missing: CuPy raises its own types
        return None, f"cupy cannot reach a CUDA device ({type(exc).__name__}: {exc})"
    if count < 1:
        return None, "cupy sees no CUDA device"
    return cupy, ""


def select_backend(name: str = "auto") -> Backend:
    """The backend for ``name`` (auto | numpy | cupy); logs the choice and the device.

    Raises
    ------
    BackendError
        ``name`` is unknown, or "cupy" where CuPy or a CUDA device is missing.
    """
    if name not in BACKENDS:
        raise BackendError(f"backend must be one of {', '.join(BACKENDS)}; got {name!r}")
    if name == "numpy":
        return _announce(Backend(np, "numpy", "cpu", "as configured"))
    cupy, why_not = cupy_status()
    if cupy is None:
        if name == "cupy":
            raise BackendError(f"backend cupy was requested but {why_not}")
        return _announce(Backend(np, "numpy", "cpu", f"auto: {why_not}"))
    device_id = cupy.cuda.Device().id
    props = cupy.cuda.runtime.getDeviceProperties(device_id)
    gpu_name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return _announce(Backend(cupy, "cupy", f"cuda:{device_id} {gpu_name}", name))


def _announce(backend: Backend) -> Backend:
    log.info("array backend %s on %s (%s)", backend.name, backend.device, backend.reason)
    return backend

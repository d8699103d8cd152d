"""Builds and opens each framework's compiled library once per process.

`load(name, open_library)` builds the library of framework `name` if the cache
has none, hands its build report to `open_library` (the framework's own loading
and registrations, from `keras_carafe.backend.<name>`), and reads the library's
CUDA probe to decide whether its CUDA kernels can run on this machine. A
failure is remembered for the rest of the process, so each call site gets
the same answer quickly.
"""

import ctypes
import dataclasses
import threading

from keras_carafe.library import build, cuda_probe

_lock = threading.Lock()
_loaded = {}
_failures = {}


class OpUnavailableError(RuntimeError):
    """The compiled kernels cannot be used in this process; the message says why."""


@dataclasses.dataclass(frozen=True)
class LoadedLibrary:
    report: build.BuildReport
    # What `open_library` returned (TensorFlow: the op module).
    module: object
    # Whether the CUDA kernels can run on every visible GPU, and a message
    # saying so ("ok: ...") or naming what is missing.
    cuda_usable: bool
    cuda_status: str
    # What the library's CUDA probe reported; None when it could not be read.
    cuda: object = None

    @property
    def path(self):
        return self.report.library

    def require_cuda(self):
        """Raises OpUnavailableError with `cuda_status` unless the CUDA kernels can run."""
        if not self.cuda_usable:
            raise OpUnavailableError(f"the compiled CUDA kernels cannot run: {self.cuda_status}")


def _call_string_function(handle, name):
    function = getattr(handle, name)
    function.restype = ctypes.c_char_p
    function.argtypes = []
    return function().decode("utf-8", "replace")


def assess_cuda(path, report):
    """(usable, status message, CudaProbe or None) for the library at `path`."""
    try:
        handle = ctypes.CDLL(path)
        probe = cuda_probe.CudaProbe.from_json(
            _call_string_function(handle, "keras_carafe_cuda_probe"))
    except (OSError, AttributeError, ValueError) as err:
        return False, f"the library's CUDA probe could not be read: {err}", None
    reason = report.cuda_skipped.splitlines()[0].rstrip(":") if report.cuda_skipped else ""
    verdict = cuda_probe.assess(probe, not_built_reason=reason)
    return verdict.usable, verdict.message, probe


def load(name, open_library):
    """Returns the LoadedLibrary of framework `name`, building and opening it once.

    Raises OpUnavailableError with the reason when it cannot be built or
    opened; the failure is remembered for the rest of the process.
    """
    with _lock:
        if name in _loaded:
            return _loaded[name]
        if name in _failures:
            raise OpUnavailableError(_failures[name])
        try:
            report = build.ensure_built(name)
            module = open_library(report)
        except Exception as err:  # noqa: BLE001 - every failure means "unavailable"
            _failures[name] = f"{type(err).__name__}: {err}"
            raise OpUnavailableError(_failures[name]) from err
        usable, status, probe = assess_cuda(report.library, report)
        _loaded[name] = LoadedLibrary(report=report, module=module, cuda_usable=usable,
                                      cuda_status=status, cuda=probe)
        return _loaded[name]

"""Loads the compiled op library once per process and registers its gradients."""

import ctypes
import dataclasses
import threading

try:
    import tensorflow as tf
except ModuleNotFoundError as err:
    raise ModuleNotFoundError(
        "the compiled CARAFE op needs TensorFlow, which is not installed (pip install "
        "keras-carafe[cpu]); without it, use implementation='auto' or 'portable'",
        name=err.name) from err

from keras_carafe.library import build, cuda_probe, gradients

_lock = threading.Lock()
_loaded = None
_failure = None


class OpUnavailableError(RuntimeError):
    """The compiled op cannot be used in this process; the message says why."""


@dataclasses.dataclass(frozen=True)
class LoadedLibrary:
    module: object
    report: build.BuildReport
    # Whether the CUDA kernels can run on every visible GPU, and a message
    # saying so ("ok: ...") or naming what is missing.
    cuda_usable: bool
    cuda_status: str
    # What the library's CUDA probe reported; None when it could not be read.
    cuda: object = None

    def require_cuda(self):
        """Raises OpUnavailableError with `cuda_status` unless the CUDA kernels can run."""
        if not self.cuda_usable:
            raise OpUnavailableError(f"the op's CUDA kernels cannot run: {self.cuda_status}")


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


def load():
    """Returns the LoadedLibrary, building it first if needed.

    Raises OpUnavailableError with the reason when it cannot be built or
    loaded; the failure is remembered for the rest of the process.
    """
    global _loaded, _failure
    with _lock:
        if _loaded is not None:
            return _loaded
        if _failure is not None:
            raise OpUnavailableError(_failure)
        try:
            report = build.ensure_built()
            module = tf.load_op_library(report.library)
        except (build.BuildError, OSError, tf.errors.OpError, ValueError) as err:
            _failure = f"{type(err).__name__}: {err}"
            raise OpUnavailableError(_failure) from err
        usable, status, probe = assess_cuda(report.library, report)
        gradients.register(module)
        _loaded = LoadedLibrary(module=module, report=report, cuda_usable=usable,
                                cuda_status=status, cuda=probe)
        return _loaded

"""Loads the compiled reassembly op once per process and registers its gradient."""

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

from keras_carafe.library import build

_lock = threading.Lock()
_loaded = None
_failure = None


class OpUnavailableError(RuntimeError):
    """The compiled op cannot be used in this process; the message says why."""


@dataclasses.dataclass(frozen=True)
class LoadedLibrary:
    module: object
    report: build.BuildReport
    cuda_status: str

    @property
    def cuda_usable(self):
        return self.cuda_status.startswith("ok")


def _register_gradient(module):
    def reassemble_grad(op, grad):
        return module.keras_carafe_reassemble_grad(
            grad,
            op.inputs[0],
            op.inputs[1],
            scale_factor=op.get_attr("scale_factor"),
            kernel_size=op.get_attr("kernel_size"),
            group_size=op.get_attr("group_size"),
        )

    try:
        tf.RegisterGradient("KerasCarafeReassemble")(reassemble_grad)
    except KeyError:
        pass  # A reloaded package module; the first registration stands.


def _cuda_status(path):
    handle = ctypes.CDLL(path)
    handle.keras_carafe_cuda_status.restype = ctypes.c_char_p
    return handle.keras_carafe_cuda_status().decode()


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
            cuda_status = _cuda_status(report.library)
        except (build.BuildError, OSError, tf.errors.OpError, ValueError) as err:
            _failure = f"{type(err).__name__}: {err}"
            raise OpUnavailableError(_failure) from err
        _register_gradient(module)
        _loaded = LoadedLibrary(module=module, report=report, cuda_status=cuda_status)
        return _loaded

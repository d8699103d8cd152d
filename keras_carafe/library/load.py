"""Loads the compiled reassembly op once per process and registers its gradient."""

import ctypes
import dataclasses
import json
import threading

import tensorflow as tf

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


def _register_gradients(module):
    def gradient(grad_op, factor):
        def reassemble_grad(op, grad):
            return grad_op(
                grad,
                op.inputs[0],
                op.inputs[1],
                kernel_size=op.get_attr("kernel_size"),
                group_size=op.get_attr("group_size"),
                **{factor: op.get_attr(factor)},
            )
        return reassemble_grad

    for op_type, grad_op, factor in (
        ("KerasCarafeReassemble", module.keras_carafe_reassemble_grad, "scale_factor"),
        ("KerasCarafeDownsample", module.keras_carafe_downsample_grad, "stride"),
    ):
        try:
            tf.RegisterGradient(op_type)(gradient(grad_op, factor))
        except KeyError:
            pass  # A reloaded package module; the first registration stands.


def _cuda_status(path):
    """"ok: ..." when the CUDA kernels can run on every visible GPU, else why not."""
    handle = ctypes.CDLL(path)
    handle.keras_carafe_cuda_probe.restype = ctypes.c_char_p
    probe = json.loads(handle.keras_carafe_cuda_probe().decode())
    if not probe["built"]:
        return "CUDA kernels not built"
    if probe["driver_error"] or probe["device_error"]:
        return probe["driver_error"] or probe["device_error"]
    unusable = [d for d in probe["devices"] if not d["kernel_image"]]
    if unusable:
        return "; ".join(f"GPU {d['index']} ({d['name']}): {d['error']}" for d in unusable)
    return f"ok: {probe['device_count']} device(s)"


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
        _register_gradients(module)
        _loaded = LoadedLibrary(module=module, report=report, cuda_status=cuda_status)
        return _loaded

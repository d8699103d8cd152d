"""How "auto" and the other implementation names resolve on the TensorFlow backend."""

import sys
import warnings

import tensorflow as tf
from tensorflow.python.framework import ops as tf_ops
from tensorflow.python.ops import control_flow_util
from tensorflow.python.saved_model import save_context

from keras_carafe.library import load
from keras_carafe.ops import implementation as names

_warned_fallback = False


def in_xla_context():
    if tf.executing_eagerly():
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf_ops.get_default_graph())


def _keras_export_modules():
    """The `keras.src.export` modules on the stack, innermost first."""
    modules = []
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name.startswith("keras.src.export"):
            modules.append(name)
        frame = frame.f_back
    return modules


# Keras modules whose export functions name a format (others are shared helpers).
_FORMAT_MODULES = {"keras.src.export.litert": "litert", "keras.src.export.onnx": "onnx",
                   "keras.src.export.openvino": "openvino"}


def export_format():
    """The `model.export` format being traced ("litert", "onnx", "openvino" or
    "tf_saved_model"), or None."""
    if tf.executing_eagerly():
        return None
    modules = _keras_export_modules()
    for module in reversed(modules):
        if module in _FORMAT_MODULES:
            return _FORMAT_MODULES[module]
    return "tf_saved_model" if modules else None


def tracing_for_export():
    """True while a graph meant for other runtimes is being traced.

    Serving binaries cannot load custom op libraries and converters (ONNX,
    LiteRT, OpenVINO) know standard operations only. `force_portable()` is
    the public switch; `tf.saved_model.save` marks its own tracing with a save
    context, and Keras's `model.export` traces its endpoints before saving,
    so its frames on the stack mark the rest.
    """
    if names.portable_forced():
        return True
    if tf.executing_eagerly():
        return False
    return save_context.in_save_context() or bool(_keras_export_modules())


def _warn_once(reason):
    global _warned_fallback
    if not _warned_fallback:
        _warned_fallback = True
        warnings.warn(
            f"keras_carafe: using the pure-TensorFlow CARAFE fallback because {reason}. "
            f"It is exact but slower and uses more memory; run `python -m keras_carafe build` "
            f"to see the build log, or set {names.FORCE_FALLBACK_ENV}=1 to silence this.",
            RuntimeWarning,
            stacklevel=6,
        )


def resolve(implementation):
    """Returns "op", "fallback" or "portable"; raises for an unusable "op"."""
    if tracing_for_export() or implementation == "portable":
        return "portable"
    if implementation == "fallback" or names.fallback_forced():
        return "fallback"
    if implementation == "op":
        if in_xla_context():
            raise ValueError(
                "implementation='op' cannot run inside an XLA-compiled function "
                "(jit_compile=True); use implementation='auto', 'portable' or 'fallback' there"
            )
        library = load.load()  # raises with the reason
        if tf.config.list_logical_devices("GPU"):
            library.require_cuda()
        return "op"
    if in_xla_context():
        # Under XLA the portable path fuses into a few loops and beats the
        # fallback's patch tensor (README, performance).
        return "portable"
    try:
        library = load.load()
    except load.OpUnavailableError as err:
        _warn_once(f"the compiled op is unavailable ({err})")
        return "fallback"
    if tf.config.list_logical_devices("GPU") and not library.cuda_usable:
        _warn_once(f"a GPU is present but the op's CUDA kernels cannot run: "
                   f"{library.cuda_status}")
        return "fallback"
    return "op"

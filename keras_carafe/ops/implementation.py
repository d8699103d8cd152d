"""Chooses between the compiled op and the pure-TensorFlow fallback."""

import os
import sys
import warnings

import tensorflow as tf
from tensorflow.python.framework import ops as tf_ops
from tensorflow.python.ops import control_flow_util
from tensorflow.python.saved_model import save_context

from keras_carafe.library import load

IMPLEMENTATIONS = ("auto", "op", "fallback")
FORCE_FALLBACK_ENV = "KERAS_CARAFE_FORCE_FALLBACK"

_warned_fallback = False


def check_implementation(implementation):
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"`implementation` must be one of {', '.join(repr(i) for i in IMPLEMENTATIONS)}, "
            f"got {implementation!r}"
        )


def fallback_forced():
    return os.environ.get(FORCE_FALLBACK_ENV, "").strip().lower() not in ("", "0", "false", "no")


def in_xla_context():
    if tf.executing_eagerly():
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf_ops.get_default_graph())


def tracing_for_export():
    """True while a SavedModel for serving is being traced.

    Serving binaries cannot load custom op libraries, so exported graphs must
    use standard ops only. `tf.saved_model.save` marks its tracing with a save
    context; Keras's `model.export` traces its endpoints before saving, so its
    frames on the stack mark the rest.
    """
    if tf.executing_eagerly():
        return False
    if save_context.in_save_context():
        return True
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith("keras.src.export"):
            return True
        frame = frame.f_back
    return False


def _warn_once(reason):
    global _warned_fallback
    if not _warned_fallback:
        _warned_fallback = True
        warnings.warn(
            f"keras_carafe: using the pure-TensorFlow CARAFE fallback because {reason}. "
            f"It is exact but slower and uses more memory; run `python -m keras_carafe build` "
            f"to see the build log, or set {FORCE_FALLBACK_ENV}=1 to silence this.",
            RuntimeWarning,
            stacklevel=4,
        )


def resolve(implementation):
    """Returns "op" or "fallback" for this call site; raises for an unusable "op"."""
    check_implementation(implementation)
    if implementation == "fallback" or fallback_forced():
        return "fallback"
    if implementation == "op":
        if in_xla_context():
            raise ValueError(
                "implementation='op' cannot run inside an XLA-compiled function "
                "(jit_compile=True); use implementation='auto' or 'fallback' there"
            )
        load.load()  # Raises OpUnavailableError with the reason.
        return "op"
    if in_xla_context() or tracing_for_export():
        return "fallback"
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

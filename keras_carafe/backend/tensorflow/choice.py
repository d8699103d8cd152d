"""How "auto" and the other implementation names resolve on the TensorFlow backend."""

import tensorflow as tf
from tensorflow.python.framework import ops as tf_ops
from tensorflow.python.ops import control_flow_util
from tensorflow.python.saved_model import save_context

from keras_carafe.backend.tensorflow import library
from keras_carafe.ops import implementation as names


def in_xla_context():
    if tf.executing_eagerly():
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf_ops.get_default_graph())


def export_format():
    """The `model.export` format being traced, or None (never while running eagerly)."""
    return None if tf.executing_eagerly() else names.export_format()


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
    return save_context.in_save_context() or names.exporting()


def _device_problem(loaded):
    """Why the op cannot run on this machine's GPUs, or None."""
    if tf.config.list_logical_devices("GPU") and not loaded.cuda_usable:
        return f"a GPU is present but the op's CUDA kernels cannot run: {loaded.cuda_status}"
    return None


# Not converted by AutoGraph when the first call comes inside a tf.function: it reads
# files and may start a build, which AutoGraph cannot convert (and warns about).
@tf.autograph.experimental.do_not_convert
def choose(implementation):
    """Returns "op", "fallback" or "portable"; raises for an unusable "op"."""
    if tracing_for_export() or implementation == "portable":
        return "portable"
    if implementation == "fallback" or names.fallback_forced():
        return "fallback"
    if in_xla_context():
        if implementation == "op":
            raise ValueError(
                "implementation='op' cannot run inside an XLA-compiled function "
                "(jit_compile=True); use implementation='auto', 'portable' or 'fallback' there"
            )
        # Under XLA the portable path fuses into a few loops and beats the
        # fallback's patch tensor (README, performance).
        return "portable"
    return names.compiled_or(implementation, library.load, _device_problem, "fallback",
                             "the pure-TensorFlow fallback")

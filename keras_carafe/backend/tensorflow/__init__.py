"""The TensorFlow backend: the compiled op, the pure-TensorFlow fallback and the portable
path (see `keras_carafe.backend` for the contract)."""

import functools

import tensorflow as tf

from keras_carafe.backend.tensorflow import checks, compiled, fallback
from keras_carafe.backend.tensorflow.choice import choose, export_format, in_xla_context
from keras_carafe.ops import portable

NAME = "tensorflow"
IMPLEMENTATIONS = ("op", "fallback", "portable")

__all__ = ["IMPLEMENTATIONS", "NAME", "choose", "export_format", "reassemble", "supports_jit"]


@tf.autograph.experimental.do_not_convert
def reassemble(chosen, geometry, features, kernels, shapes_known):
    if chosen == "op":
        # The op's kernels check every shape at run time.
        return compiled.reassemble(geometry, features, kernels)
    if chosen == "fallback":
        run = fallback.reassemble
    else:
        # XLA fuses the portable path's tap sum; graphs run op by op prefer patches.
        run = functools.partial(portable.reassemble, fused=in_xla_context())

    if shapes_known:
        return run(geometry, features, kernels)
    features, kernels, asserts = checks.with_runtime_checks(geometry, features, kernels)
    with tf.control_dependencies(asserts):
        return run(geometry, features, kernels)


def supports_jit(implementation):
    # The compiled op cannot be XLA-compiled: with "auto" or "op", Keras's own
    # jit_compile="auto" then stays off so that the op runs.
    return implementation in ("fallback", "portable")

"""The TensorFlow implementations of the reassembly: the compiled op and the fallback.

Only imported on the TensorFlow backend.
"""

import functools

import tensorflow as tf

from keras_carafe.ops import portable
from keras_carafe.ops.tensorflow import checks, choice, compiled, fallback


@tf.autograph.experimental.do_not_convert
def reassemble(implementation, geometry, features, kernels, shapes_known):
    """Runs `implementation` ("op", "fallback" or "portable") on validated inputs."""
    if implementation == "op":
        # The op's kernels check every shape at run time.
        return compiled.reassemble(geometry, features, kernels)
    if implementation == "fallback":
        run = fallback.reassemble
    else:
        # XLA fuses the portable path's tap sum; graphs run op by op prefer patches.
        run = functools.partial(portable.reassemble, fused=choice.in_xla_context())

    if shapes_known:
        return run(geometry, features, kernels)
    features, kernels, asserts = checks.with_runtime_checks(geometry, features, kernels)
    with tf.control_dependencies(asserts):
        return run(geometry, features, kernels)

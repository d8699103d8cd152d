"""The TensorFlow backend: the compiled op, the pure-TensorFlow fallback and the portable
path (see `keras_carafe.backend` for the contract)."""

import functools

import tensorflow as tf

from keras_carafe.backend.tensorflow import checks, compiled, fallback
from keras_carafe.backend.tensorflow.choice import choose, export_format, in_xla_context
from keras_carafe.ops import export_formulation, portable, portable_similarity

NAME = "tensorflow"
IMPLEMENTATIONS = ("op", "fallback", "portable")

__all__ = ["IMPLEMENTATIONS", "NAME", "choose", "export_format", "exported_formulation",
           "local_similarity", "reassemble", "supports_jit"]


def exported_formulation():
    """The `export_formulation` formulation while a graph is exported or traced inside
    `force_portable()`, else ""."""
    return export_formulation.formulation_while(export_format())


@tf.autograph.experimental.do_not_convert
def reassemble(chosen, geometry, features, kernels, shapes_known):
    if chosen == "op":
        # The op's kernels check every shape at run time.
        return compiled.reassemble(geometry, features, kernels)
    if chosen == "fallback":
        run = fallback.reassemble
    elif exported_formulation():
        run = functools.partial(export_formulation.reassemble,
                                formulation=exported_formulation())
    else:
        # XLA fuses the portable path's tap sum; graphs run op by op prefer patches.
        run = functools.partial(portable.reassemble, fused=in_xla_context())

    if shapes_known:
        return run(geometry, features, kernels)
    features, kernels, asserts = checks.with_runtime_checks(geometry, features, kernels)
    with tf.control_dependencies(asserts):
        return run(geometry, features, kernels)


@tf.autograph.experimental.do_not_convert
def local_similarity(chosen, geometry, queries, keys, shapes_known):
    if chosen == "op":
        # The op's kernels check every shape at run time.
        return compiled.local_similarity(geometry, queries, keys)
    if chosen == "fallback":
        run = fallback.local_similarity
    elif exported_formulation():
        run = export_formulation.local_similarity
    else:
        run = functools.partial(portable_similarity.local_similarity, fused=in_xla_context())

    if shapes_known:
        return run(geometry, queries, keys)
    queries, keys, asserts = checks.with_similarity_checks(geometry, queries, keys)
    with tf.control_dependencies(asserts):
        return run(geometry, queries, keys)


def supports_jit(implementation):
    # The compiled op cannot be XLA-compiled: with "auto" or "op", Keras's own
    # jit_compile="auto" then stays off so that the op runs.
    return implementation in ("fallback", "portable")

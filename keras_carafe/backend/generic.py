"""Keras backends without a module of their own (such as numpy and openvino): the portable
path only."""

import keras

from keras_carafe.ops import export_formulation, portable, portable_similarity
from keras_carafe.ops.implementation import export_format

NAME = keras.backend.backend()
IMPLEMENTATIONS = ("portable",)


def choose(implementation):
    return "portable"


def exported_formulation():
    """The `export_formulation` formulation while a graph is exported or traced inside
    `force_portable()`, else ""."""
    return export_formulation.formulation_while(export_format())


def reassemble(chosen, geometry, features, kernels, shapes_known):
    formulation = exported_formulation()
    if formulation:
        return export_formulation.reassemble(geometry, features, kernels, formulation)
    return portable.reassemble(geometry, features, kernels)


def local_similarity(chosen, geometry, queries, keys, shapes_known):
    if exported_formulation():
        return export_formulation.local_similarity(geometry, queries, keys)
    return portable_similarity.local_similarity(geometry, queries, keys)


def supports_jit(implementation):
    return True

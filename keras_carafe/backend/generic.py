"""Keras backends without a module of their own (such as numpy and openvino): the portable
path only."""

import keras

from keras_carafe.ops import export_formulation, portable, portable_similarity
from keras_carafe.ops.implementation import export_format, exporting

NAME = keras.backend.backend()
IMPLEMENTATIONS = ("portable",)


def choose(implementation):
    return "portable"


def reassemble(chosen, geometry, features, kernels, shapes_known):
    if exporting():
        return export_formulation.reassemble(
            geometry, features, kernels, export_formulation.formulation_for(export_format()))
    return portable.reassemble(geometry, features, kernels)


def local_similarity(chosen, geometry, queries, keys, shapes_known):
    return portable_similarity.local_similarity(geometry, queries, keys)


def supports_jit(implementation):
    return True

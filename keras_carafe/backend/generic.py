"""Keras backends without a module of their own (such as numpy and openvino): the portable
path only."""

import keras

from keras_carafe.ops import portable
from keras_carafe.ops.implementation import export_format  # noqa: F401

NAME = keras.backend.backend()
IMPLEMENTATIONS = ("portable",)


def choose(implementation):
    return "portable"


def reassemble(chosen, geometry, features, kernels, shapes_known):
    return portable.reassemble(geometry, features, kernels)


def supports_jit(implementation):
    return True

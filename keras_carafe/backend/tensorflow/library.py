"""The compiled TensorFlow ops: built by `keras_carafe.library`, opened with
`tf.load_op_library`, their gradients registered to any order."""

import tensorflow as tf

from keras_carafe.backend.tensorflow import gradients
from keras_carafe.library import load as loader

OpUnavailableError = loader.OpUnavailableError


def _open(report):
    module = tf.load_op_library(report.library)
    gradients.register(module)
    return module


def load():
    """The LoadedLibrary of the TensorFlow ops; raises OpUnavailableError with the reason."""
    return loader.load("tensorflow", _open)

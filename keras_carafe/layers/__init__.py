"""Keras layers."""

from keras_carafe.layers.carafe import CARAFE
from keras_carafe.layers.carafe_downsample import CARAFEDownsample

__all__ = ["CARAFE", "CARAFEDownsample"]

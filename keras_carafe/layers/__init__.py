"""Keras layers."""

from keras_carafe.layers.carafe import CARAFE

__all__ = ["CARAFE"]

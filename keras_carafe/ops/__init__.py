"""Functional CARAFE ops."""

from keras_carafe.ops.carafe import carafe

__all__ = ["carafe"]

"""Functional CARAFE ops."""

from keras_carafe.ops.reassembly import carafe

__all__ = ["carafe"]

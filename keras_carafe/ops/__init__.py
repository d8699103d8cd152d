"""Functional CARAFE ops: upsampling and downsampling reassembly, and the portable switch."""

from keras_carafe.ops.implementation import IMPLEMENTATIONS, force_portable
from keras_carafe.ops.reassembly import carafe, carafe_downsample

__all__ = ["IMPLEMENTATIONS", "carafe", "carafe_downsample", "force_portable"]

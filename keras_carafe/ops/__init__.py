"""Functional CARAFE ops: upsampling and downsampling reassembly, the local similarity,
and the portable switch."""

from keras_carafe.ops.implementation import IMPLEMENTATIONS, force_portable
from keras_carafe.ops.reassembly import carafe, carafe_downsample
from keras_carafe.ops.similarity import local_similarity

__all__ = ["IMPLEMENTATIONS", "carafe", "carafe_downsample", "force_portable", "local_similarity"]

"""Keras layers."""

from keras_carafe.layers.carafe import CARAFE
from keras_carafe.layers.carafe_downsample import CARAFEDownsample
from keras_carafe.layers.dysample import DySample
from keras_carafe.layers.fade import FADE
from keras_carafe.layers.sapa import SAPA

__all__ = ["CARAFE", "CARAFEDownsample", "DySample", "FADE", "SAPA"]

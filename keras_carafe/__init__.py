"""CARAFE (Content-Aware ReAssembly of FEatures) upsampling for Keras 3 on TensorFlow."""

__version__ = "0.1.0"

from keras_carafe import ops  # noqa: E402
from keras_carafe.layers import CARAFE  # noqa: E402
from keras_carafe.mmcv_checkpoints import load_mmcv_weights, mmcv_weights  # noqa: E402
from keras_carafe.ops import carafe  # noqa: E402

__all__ = ["CARAFE", "carafe", "load_mmcv_weights", "mmcv_weights", "ops", "__version__"]

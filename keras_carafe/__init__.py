"""CARAFE (Content-Aware ReAssembly of FEatures) for Keras 3, on every Keras backend."""

__version__ = "0.1.0"

from keras_carafe import backend, ops  # noqa: E402
from keras_carafe.layers import CARAFE, CARAFEDownsample  # noqa: E402
from keras_carafe.mmcv_checkpoints import load_mmcv_weights, mmcv_weights  # noqa: E402
from keras_carafe.ops import carafe, carafe_downsample  # noqa: E402

# The active Keras backend's module, imported now rather than on the first call, which
# may come while torch.compile traces (and cannot follow an import).
backend.current()

__all__ = ["CARAFE", "CARAFEDownsample", "carafe", "carafe_downsample", "load_mmcv_weights",
           "mmcv_weights", "ops", "__version__"]

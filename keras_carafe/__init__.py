"""CARAFE (Content-Aware ReAssembly of FEatures) for Keras 3, on every Keras backend."""

from keras_carafe._version import __version__
from keras_carafe import backend, ops  # noqa: E402
from keras_carafe.layers import CARAFE, CARAFEDownsample, DySample, FADE, SAPA  # noqa: E402
from keras_carafe.mmcv_checkpoints import load_mmcv_weights, mmcv_weights  # noqa: E402
from keras_carafe.official_checkpoints import load_official_weights, official_weights  # noqa: E402
from keras_carafe.ops import carafe, carafe_downsample, local_similarity  # noqa: E402

# The active Keras backend's module, imported now rather than on the first call, which
# may come while torch.compile traces (and cannot follow an import).
backend.current()

__all__ = ["CARAFE", "CARAFEDownsample", "DySample", "FADE", "SAPA", "carafe",
           "carafe_downsample", "load_mmcv_weights", "load_official_weights", "local_similarity",
           "mmcv_weights", "official_weights", "ops", "__version__"]

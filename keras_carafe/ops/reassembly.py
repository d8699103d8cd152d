"""The public CARAFE reassembly function."""

import tensorflow as tf

from keras_carafe.library import load
from keras_carafe.ops import fallback, implementation as impl, validation


@tf.autograph.experimental.do_not_convert
def carafe(features, kernels, scale_factor=2, kernel_size=5, group_size=1,
           implementation="auto"):
    """Reassembles `features` with per-pixel kernels (the CARAFE upsampling step).

    Each output pixel `(oh, ow)` is the weighted sum of the
    `kernel_size x kernel_size` neighbourhood of its source pixel
    `(oh // scale_factor, ow // scale_factor)`, with its own weights; all
    channels of a group share one kernel; features outside the image count
    as zero. Kernels are used as given (the `CARAFE` layer normalizes them).

    Args:
        features: tensor of shape `(N, H, W, C)`, float16, bfloat16, float32
            or float64.
        kernels: tensor of shape `(N, H*s, W*s, G*k*k)` and the dtype of
            `features`, channel `g*k*k + ky*k + kx` holding the weight of
            tap `(ky, kx)` for group `g` (the order of mmcv's CARAFE).
        scale_factor: int `s >= 1`.
        kernel_size: odd int `k >= 1`.
        group_size: int `G >= 1` dividing `C`.
        implementation: `"op"` (compiled op; raises if it cannot be built or
            loaded), `"fallback"` (pure TensorFlow, also under XLA) or
            `"auto"` (the op where usable, else the fallback with one warning
            per process). The environment variable
            `KERAS_CARAFE_FORCE_FALLBACK=1` forces the fallback everywhere.

    Returns:
        Tensor of shape `(N, H*s, W*s, C)` in the dtype of `features`.
        16-bit inputs are accumulated in float32.
    """
    scale_factor, kernel_size, group_size = validation.check_hyperparameters(
        scale_factor, kernel_size, group_size)
    features = tf.convert_to_tensor(features)
    kernels = tf.convert_to_tensor(kernels)
    shapes_known = validation.check_static(features, kernels, scale_factor, kernel_size,
                                           group_size)
    if impl.resolve(implementation) == "op":
        # The op's kernels check every shape at run time.
        return load.load().module.keras_carafe_reassemble(
            features, kernels, scale_factor=scale_factor, kernel_size=kernel_size,
            group_size=group_size)
    checks = []
    if not shapes_known:
        features, kernels, checks = validation.with_runtime_checks(
            features, kernels, scale_factor, kernel_size, group_size)
    with tf.control_dependencies(checks):
        return fallback.reassemble(features, kernels, scale_factor, kernel_size, group_size)

"""Calls into the compiled TensorFlow ops (built and loaded by keras_carafe.library)."""

from keras_carafe.library import load


def reassemble(geometry, features, kernels):
    module = load.load().module
    if geometry.upsampling:
        return module.keras_carafe_reassemble(
            features, kernels, scale_factor=geometry.factor,
            kernel_size=geometry.kernel_size, group_size=geometry.group_size)
    return module.keras_carafe_downsample(
        features, kernels, stride=geometry.factor, kernel_size=geometry.kernel_size,
        group_size=geometry.group_size)

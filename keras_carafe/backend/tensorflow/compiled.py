"""Calls into the compiled TensorFlow ops."""

from keras_carafe.backend.tensorflow import library


def reassemble(geometry, features, kernels):
    module = library.load().module
    if geometry.upsampling:
        return module.keras_carafe_reassemble(
            features, kernels, scale_factor=geometry.factor,
            kernel_size=geometry.kernel_size, group_size=geometry.group_size)
    return module.keras_carafe_downsample(
        features, kernels, stride=geometry.factor, kernel_size=geometry.kernel_size,
        group_size=geometry.group_size)

"""Sub-pixel convolution upsampling (Shi et al., CVPR 2016)."""

import keras

from keras_carafe.ops.pixel_shuffle import depth_to_space


@keras.saving.register_keras_serializable(package="keras_carafe_demo")
class PixelShuffle(keras.layers.Layer):
    """Upsamples by a convolution to `s*s*filters` channels and `depth_to_space`.

    Each output pixel takes one of the `s*s` channel groups that the
    convolution computes at its source pixel, so the layer learns a separate
    (content-independent) filter per sub-pixel phase.

    Args:
        scale_factor: int >= 2, the upsampling factor `s`.
        filters: output channels.
        kernel_size: the convolution's kernel size.
        kernel_initializer: initializer of the convolution's kernel.
        **kwargs: base `Layer` arguments.

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        `(batch, height * s, width * s, filters)`.
    """

    def __init__(self, scale_factor, filters, kernel_size=3,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.scale_factor = scale_factor
        self.filters = filters
        self.kernel_size = kernel_size
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.conv = keras.layers.Conv2D(
            scale_factor * scale_factor * filters, kernel_size, padding="same",
            kernel_initializer=self.kernel_initializer, name="conv")

    def build(self, input_shape):
        self.conv.build(input_shape)

    def call(self, inputs):
        # keras.ops only (TensorFlow's channel order), so the layer runs on every backend.
        return depth_to_space(self.conv(inputs), self.scale_factor)

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        s = self.scale_factor
        return (n, None if h is None else h * s, None if w is None else w * s, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            scale_factor=self.scale_factor,
            filters=self.filters,
            kernel_size=self.kernel_size,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config

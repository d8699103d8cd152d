"""The CARAFE upsampling layer."""

import keras

from keras_carafe.cost import carafe_cost
from keras_carafe.layers.reassembly_layer import ReassemblyLayer
from keras_carafe.ops import validation
from keras_carafe.ops.pixel_shuffle import depth_to_space
from keras_carafe.ops.reassembly import carafe


@keras.saving.register_keras_serializable(package="keras_carafe")
class CARAFE(ReassemblyLayer):
    """Content-Aware ReAssembly of FEatures (Wang et al., ICCV 2019).

    Learned upsampling: for every output pixel the layer predicts a
    `kernel_size x kernel_size` reassembly kernel from the input (1x1 channel
    compressor, then a `encoder_kernel_size` content encoder, pixel shuffle
    and a softmax), and returns the kernel-weighted sum of the input
    neighbourhood around the output pixel's source pixel. All channels of a
    group share one kernel. The defaults are the paper's.

    Args:
        scale_factor: int >= 1, the upsampling factor `s`.
        kernel_size: odd int, the reassembly kernel size `k_up`.
        encoder_kernel_size: odd int, the content encoder's kernel size `k_enc`.
        compressed_channels: int, channels `C_m` after the 1x1 compressor.
        group_size: int dividing the input channels; channels of one group
            share a kernel.
        encoder_dilation: int, dilation rate of the content encoder.
        data_format: `"channels_last"`, `"channels_first"` or `None` (the
            Keras `image_data_format()`).
        implementation: `"auto"`, `"op"`, `"fallback"` or `"portable"`, as
            in `keras_carafe.ops.carafe` (`"fallback"` needs the TensorFlow
            backend; `"auto"` runs the compiled kernels wherever they build,
            on every backend). On TensorFlow, `"fallback"` and `"portable"` let Keras
            compile the layer with XLA (`jit_compile=True`); `"auto"` and
            `"op"` run the compiled op and let Keras leave XLA off (an
            explicit `tf.function(jit_compile=True)` still works: `"auto"`
            then uses the portable path).
        **kwargs: `compressor_kernel_initializer`, `compressor_bias_initializer`,
            `compressor_kernel_regularizer`, `compressor_bias_regularizer`,
            `compressor_kernel_constraint` and `compressor_bias_constraint`
            for the 1x1 compressor convolution; the same six `encoder_*`
            arguments for the content encoder, whose kernel starts at a small
            normal (stddev 0.001) so that the initial kernels average the
            neighbourhood, as in the reference implementation; and the base
            `Layer` arguments (`name`, `dtype`, `trainable`, ...).

    Input shape:
        4D tensor `(batch, height, width, channels)` for `channels_last` or
        `(batch, channels, height, width)` for `channels_first`; height and
        width may be unknown, channels must be known.

    Output shape:
        `(batch, height * s, width * s, channels)` (or the `channels_first`
        equivalent).

    Example:

    >>> import numpy as np
    >>> from keras_carafe import CARAFE
    >>> x = np.random.rand(2, 16, 16, 32).astype("float32")
    >>> y = CARAFE(scale_factor=2, compressed_channels=16)(x)
    >>> tuple(y.shape)
    (2, 32, 32, 32)
    """

    def __init__(
        self,
        scale_factor=2,
        kernel_size=5,
        encoder_kernel_size=3,
        compressed_channels=64,
        group_size=1,
        encoder_dilation=1,
        data_format=None,
        implementation="auto",
        **kwargs,
    ):
        super().__init__(kernel_size, encoder_kernel_size, compressed_channels, group_size,
                         data_format, implementation, **kwargs)
        self.scale_factor = validation.check_int_argument("scale_factor", scale_factor, 1)
        self.encoder_dilation = validation.check_int_argument(
            "encoder_dilation", encoder_dilation, 1)
        s, k = self.scale_factor, self.kernel_size
        self.encoder = keras.layers.Conv2D(
            s * s * self.group_size * k * k, self.encoder_kernel_size, padding="same",
            dilation_rate=self.encoder_dilation, **self._encoder_settings())

    def _geometry(self):
        return validation.upsampling(self.scale_factor, self.kernel_size, self.group_size)

    def _cell_logits(self, x):
        # The encoder predicts the s*s sub-pixel kernels of each input pixel.
        return self.encoder(self.compressor(x))

    def _kernel_logits(self, x):
        # The pixel shuffle puts the sub-pixel kernels at their output pixels.
        return depth_to_space(self._cell_logits(x), self.scale_factor)

    def _reassemble(self, x, kernels):
        return carafe(x, kernels, scale_factor=self.scale_factor, kernel_size=self.kernel_size,
                      group_size=self.group_size, implementation=self.implementation)

    def _output_size(self, size):
        return size * self.scale_factor

    def compute_kernels(self, inputs):
        """The normalized reassembly kernels as (N, H*s, W*s, G, k, k), for inspection.

        Index `[n, oh, ow, g, ky, kx]` is the weight that output pixel
        `(oh, ow)` gives to input pixel
        `(oh // s + ky - (k - 1) // 2, ow // s + kx - (k - 1) // 2)`; the
        spatial axes come first for either data format.
        """
        return super().compute_kernels(inputs)

    def cost(self, height, width, channels):
        """Parameters and FLOPs of this layer on a (height, width, channels) input."""
        return carafe_cost(
            height, width, channels, scale_factor=self.scale_factor,
            kernel_size=self.kernel_size, encoder_kernel_size=self.encoder_kernel_size,
            compressed_channels=self.compressed_channels, group_size=self.group_size)

    def get_config(self):
        config = super().get_config()
        config.update(scale_factor=self.scale_factor, encoder_dilation=self.encoder_dilation)
        return config

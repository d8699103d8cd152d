"""The CARAFE++ content-aware downsampling layer."""

import keras
from keras import ops

from keras_carafe.cost import carafe_downsample_cost
from keras_carafe.layers.reassembly_layer import ReassemblyLayer
from keras_carafe.ops import validation
from keras_carafe.ops.reassembly import carafe_downsample


@keras.saving.register_keras_serializable(package="keras_carafe")
class CARAFEDownsample(ReassemblyLayer):
    """Content-aware downsampling of CARAFE++ (Wang et al., TPAMI 2021).

    For every output pixel the layer predicts a `kernel_size x kernel_size`
    kernel from the input (1x1 channel compressor at the input resolution,
    then an `encoder_kernel_size` content encoder applied with the stride,
    then a softmax over each group's weights), and returns the
    kernel-weighted sum of the input neighbourhood centred on input pixel
    `(oh * stride, ow * stride)`. All channels of a group share one kernel.
    It replaces a strided convolution or a pooling layer.

    The encoder's window and the reassembly's window are centred on the
    same input pixel for every input size: the compressed features are
    zero-padded by `(encoder_kernel_size - 1) // 2` on every side and the
    encoder then runs without padding. (Keras's `padding="same"` with a
    stride pads unevenly, which for stride 2 and an even size centres the
    window one pixel off, on `2 * oh + 1`.) The output has
    `ceil(H / stride) x ceil(W / stride)` pixels for any H and W.

    Defaults: stride 2, `kernel_size` 5, `encoder_kernel_size` 3 and one
    group as CARAFE's upsampling defaults; `compressed_channels` 16 as in
    public CARAFE++ implementations (the smaller compressor is what keeps the
    module cheap at the input resolution).

    Args:
        stride: int >= 1, the downsampling factor.
        kernel_size: odd int, the reassembly kernel size `k_down`.
        encoder_kernel_size: odd int, the content encoder's kernel size.
        compressed_channels: int, channels after the 1x1 compressor.
        group_size: int dividing the input channels; channels of one group
            share a kernel.
        data_format: `"channels_last"`, `"channels_first"` or `None` (the
            Keras `image_data_format()`).
        implementation: `"auto"`, `"op"`, `"fallback"` or `"portable"`, as
            in `keras_carafe.ops.carafe_downsample`, with the same XLA
            behaviour as `CARAFE`.
        **kwargs: `compressor_kernel_initializer`, `compressor_bias_initializer`,
            `compressor_kernel_regularizer`, `compressor_bias_regularizer`,
            `compressor_kernel_constraint` and `compressor_bias_constraint`
            for the 1x1 compressor convolution; the same six `encoder_*`
            arguments for the content encoder, whose kernel starts at a small
            normal (stddev 0.001) so that the initial kernels average the
            neighbourhood; and the base `Layer` arguments (`name`, `dtype`,
            `trainable`, ...).

    Input shape:
        4D tensor `(batch, height, width, channels)` for `channels_last` or
        `(batch, channels, height, width)` for `channels_first`; height and
        width may be unknown, channels must be known.

    Output shape:
        `(batch, ceil(height / stride), ceil(width / stride), channels)` (or
        the `channels_first` equivalent).

    Example:

    >>> import numpy as np
    >>> from keras_carafe import CARAFEDownsample
    >>> x = np.random.rand(2, 15, 16, 32).astype("float32")
    >>> y = CARAFEDownsample(stride=2)(x)
    >>> tuple(y.shape)
    (2, 8, 8, 32)
    """

    def __init__(
        self,
        stride=2,
        kernel_size=5,
        encoder_kernel_size=3,
        compressed_channels=16,
        group_size=1,
        data_format=None,
        implementation="auto",
        **kwargs,
    ):
        super().__init__(kernel_size, encoder_kernel_size, compressed_channels, group_size,
                         data_format, implementation, **kwargs)
        self.stride = validation.check_int_argument("stride", stride, 1)
        k = self.kernel_size
        self.encoder = keras.layers.Conv2D(
            self.group_size * k * k, self.encoder_kernel_size, strides=self.stride,
            padding="valid", **self._encoder_settings())

    def _geometry(self):
        return validation.downsampling(self.stride, self.kernel_size, self.group_size)

    def _cell_logits(self, x):
        # One output pixel per cell: the kernels are at cell resolution already.
        return self._kernel_logits(x)

    def _kernel_logits(self, x):
        pad = (self.encoder_kernel_size - 1) // 2
        compressed = self.compressor(x)
        if pad:
            compressed = ops.pad(compressed, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        return self.encoder(compressed)

    def _reassemble(self, x, kernels):
        return carafe_downsample(x, kernels, stride=self.stride, kernel_size=self.kernel_size,
                                 group_size=self.group_size, implementation=self.implementation)

    def _output_size(self, size):
        return -(-size // self.stride)

    def compute_kernels(self, inputs):
        """The normalized kernels as (N, ceil(H/stride), ceil(W/stride), G, k, k).

        Index `[n, oh, ow, g, ky, kx]` is the weight that output pixel
        `(oh, ow)` gives to input pixel
        `(oh * stride + ky - (k - 1) // 2, ow * stride + kx - (k - 1) // 2)`;
        the spatial axes come first for either data format.
        """
        return super().compute_kernels(inputs)

    def cost(self, height, width, channels):
        """Parameters and FLOPs of this layer on a (height, width, channels) input."""
        return carafe_downsample_cost(
            height, width, channels, stride=self.stride, kernel_size=self.kernel_size,
            encoder_kernel_size=self.encoder_kernel_size,
            compressed_channels=self.compressed_channels, group_size=self.group_size)

    def get_config(self):
        config = super().get_config()
        config.update(stride=self.stride)
        return config

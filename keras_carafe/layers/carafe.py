"""The CARAFE upsampling layer."""

import keras
import tensorflow as tf

from keras_carafe.ops.reassembly import carafe
from keras_carafe.cost import carafe_cost
from keras_carafe.ops import implementation as impl
from keras_carafe.ops import validation

_SERIALIZERS = {"initializer": keras.initializers, "regularizer": keras.regularizers,
                "constraint": keras.constraints}


def _conv_settings(kernel_initializer, bias_initializer, kernel_regularizer,
                   bias_regularizer, kernel_constraint, bias_constraint):
    """Conv2D keyword arguments, each resolved the Keras way (names, dicts, objects)."""
    return dict(
        kernel_initializer=keras.initializers.get(kernel_initializer),
        bias_initializer=keras.initializers.get(bias_initializer),
        kernel_regularizer=keras.regularizers.get(kernel_regularizer),
        bias_regularizer=keras.regularizers.get(bias_regularizer),
        kernel_constraint=keras.constraints.get(kernel_constraint),
        bias_constraint=keras.constraints.get(bias_constraint),
    )


def _standardize_data_format(data_format):
    if data_format is None:
        return keras.config.image_data_format()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            "`data_format` must be 'channels_last', 'channels_first' or None, "
            f"got {data_format!r}"
        )
    return data_format


@keras.saving.register_keras_serializable(package="keras_carafe")
class CARAFE(keras.layers.Layer):
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
        implementation: `"auto"`, `"op"` or `"fallback"`, as in
            `keras_carafe.ops.carafe`. With `"fallback"` the layer supports XLA
            (`jit_compile=True`); the other choices run the compiled op and
            let Keras leave XLA off (an explicit `tf.function(jit_compile=True)`
            still works: `"auto"` then uses the fallback).
        compressor_kernel_initializer, compressor_bias_initializer,
        compressor_kernel_regularizer, compressor_bias_regularizer,
        compressor_kernel_constraint, compressor_bias_constraint: for the 1x1
            compressor convolution.
        encoder_kernel_initializer, ... encoder_bias_constraint: the same for
            the content encoder. Its kernel starts at a small normal
            (stddev 0.001), so that the initial kernels average the
            neighbourhood, as in the reference implementation.
        **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`, ...).

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
        compressor_kernel_initializer="glorot_uniform",
        compressor_bias_initializer="zeros",
        compressor_kernel_regularizer=None,
        compressor_bias_regularizer=None,
        compressor_kernel_constraint=None,
        compressor_bias_constraint=None,
        encoder_kernel_initializer=None,
        encoder_bias_initializer="zeros",
        encoder_kernel_regularizer=None,
        encoder_bias_regularizer=None,
        encoder_kernel_constraint=None,
        encoder_bias_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if keras.backend.backend() != "tensorflow":
            raise RuntimeError(
                "keras_carafe.CARAFE needs the TensorFlow backend; "
                f"KERAS_BACKEND is {keras.backend.backend()!r}"
            )
        scale_factor, kernel_size, group_size = validation.check_hyperparameters(
            scale_factor, kernel_size, group_size)
        encoder_kernel_size = validation.check_int_argument(
            "encoder_kernel_size", encoder_kernel_size, 1, odd=True)
        compressed_channels = validation.check_int_argument(
            "compressed_channels", compressed_channels, 1)
        encoder_dilation = validation.check_int_argument("encoder_dilation", encoder_dilation, 1)
        impl.check_implementation(implementation)
        self.scale_factor = scale_factor
        self.kernel_size = kernel_size
        self.encoder_kernel_size = encoder_kernel_size
        self.compressed_channels = compressed_channels
        self.group_size = group_size
        self.encoder_dilation = encoder_dilation
        self.data_format = _standardize_data_format(data_format)
        self.implementation = implementation
        # The compiled op cannot be XLA-compiled; with "auto", Keras's own
        # jit_compile="auto" then stays off so that the op runs.
        self.supports_jit = implementation == "fallback"
        self.input_spec = keras.layers.InputSpec(ndim=4)

        if encoder_kernel_initializer is None:
            encoder_kernel_initializer = keras.initializers.RandomNormal(stddev=0.001)
        self._conv_settings = {
            "compressor": _conv_settings(
                compressor_kernel_initializer, compressor_bias_initializer,
                compressor_kernel_regularizer, compressor_bias_regularizer,
                compressor_kernel_constraint, compressor_bias_constraint),
            "encoder": _conv_settings(
                encoder_kernel_initializer, encoder_bias_initializer,
                encoder_kernel_regularizer, encoder_bias_regularizer,
                encoder_kernel_constraint, encoder_bias_constraint),
        }
        self.compressor = keras.layers.Conv2D(
            compressed_channels, 1, data_format="channels_last", name="compressor",
            dtype=self.dtype_policy, **self._conv_settings["compressor"])
        self.encoder = keras.layers.Conv2D(
            scale_factor * scale_factor * group_size * kernel_size * kernel_size,
            encoder_kernel_size, padding="same", dilation_rate=encoder_dilation,
            data_format="channels_last", name="encoder", dtype=self.dtype_policy,
            **self._conv_settings["encoder"])

    @property
    def _channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"CARAFE expects 4D input (batch, height, width, channels) for "
                f"{self.data_format}, got shape {input_shape}"
            )
        channels = input_shape[self._channel_axis]
        if channels is None:
            raise ValueError(
                f"CARAFE needs a known channel dimension (axis {self._channel_axis} for "
                f"{self.data_format}), got input shape {input_shape}"
            )
        if channels % self.group_size:
            raise ValueError(
                f"input channels ({channels}) must be divisible by `group_size` "
                f"({self.group_size})"
            )
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={self._channel_axis: channels})
        self.compressor.build((None, None, None, channels))
        self.encoder.build((None, None, None, self.compressed_channels))

    def _to_channels_last(self, x):
        return x if self.data_format == "channels_last" else tf.transpose(x, [0, 2, 3, 1])

    def _normalized_kernels(self, x):
        """Kernels (N, H*s, W*s, G*k*k) in x's dtype, each group's k*k weights summing to 1."""
        logits = self.encoder(self.compressor(x))
        if self.scale_factor > 1:
            logits = tf.nn.depth_to_space(logits, self.scale_factor)
        shape = tf.shape(logits)
        taps = self.kernel_size * self.kernel_size
        grouped = tf.reshape(logits, [shape[0], shape[1], shape[2], self.group_size, taps])
        # At least float32: 16-bit exponentials of the logits lose the small weights.
        softmax_dtype = tf.float64 if x.dtype == tf.float64 else tf.float32
        weights = tf.nn.softmax(tf.cast(grouped, softmax_dtype), axis=-1)
        return tf.cast(tf.reshape(weights, shape), x.dtype)

    def call(self, inputs):
        x = self._to_channels_last(inputs)
        y = carafe(
            x, self._normalized_kernels(x), scale_factor=self.scale_factor,
            kernel_size=self.kernel_size, group_size=self.group_size,
            implementation=self.implementation)
        return y if self.data_format == "channels_last" else tf.transpose(y, [0, 3, 1, 2])

    def compute_kernels(self, inputs):
        """The normalized reassembly kernels as (N, H*s, W*s, G, k, k), for inspection.

        Index `[n, oh, ow, g, ky, kx]` is the weight that output pixel
        `(oh, ow)` gives to input pixel
        `(oh // s + ky - (k - 1) // 2, ow // s + kx - (k - 1) // 2)`; the
        spatial axes come first for either data format.
        """
        x = tf.cast(self._to_channels_last(tf.convert_to_tensor(inputs)), self.compute_dtype)
        if not self.built:
            self.build(tuple(inputs.shape))
        kernels = self._normalized_kernels(x)
        shape = tf.shape(kernels)
        k = self.kernel_size
        return tf.reshape(kernels, [shape[0], shape[1], shape[2], self.group_size, k, k])

    def cost(self, height, width, channels):
        """Parameters and FLOPs of this layer on a (height, width, channels) input."""
        return carafe_cost(
            height, width, channels, scale_factor=self.scale_factor,
            kernel_size=self.kernel_size, encoder_kernel_size=self.encoder_kernel_size,
            compressed_channels=self.compressed_channels, group_size=self.group_size)

    def compute_output_shape(self, input_shape):
        s = self.scale_factor

        def scaled(dim):
            return None if dim is None else dim * s

        if self.data_format == "channels_last":
            n, h, w, c = input_shape
            return (n, scaled(h), scaled(w), c)
        n, c, h, w = input_shape
        return (n, c, scaled(h), scaled(w))

    def get_config(self):
        config = super().get_config()
        config.update(
            scale_factor=self.scale_factor,
            kernel_size=self.kernel_size,
            encoder_kernel_size=self.encoder_kernel_size,
            compressed_channels=self.compressed_channels,
            group_size=self.group_size,
            encoder_dilation=self.encoder_dilation,
            data_format=self.data_format,
            implementation=self.implementation,
        )
        for prefix, settings in self._conv_settings.items():
            for arg, value in settings.items():
                kind = arg.rsplit("_", 1)[1]
                config[f"{prefix}_{arg}"] = _SERIALIZERS[kind].serialize(value)
        return config

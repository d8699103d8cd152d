"""The DySample point-sampling upsampling layer."""

import keras
import numpy as np
from keras import ops

from keras_carafe.family_cost import dysample_cost
from keras_carafe.layers import upsampler_support as support
from keras_carafe.ops import validation
from keras_carafe.ops.export_formulation import depth_to_space
from keras_carafe.ops.point_sampling import bilinear_sample

STYLES = ("lp", "pl")


def _channel_major_depth_to_space(x, block_size):
    """PyTorch's `pixel_shuffle` on channels-last tensors: input channel `c*s*s + i*s + j`
    goes to channel `c` of sub-pixel `(i, j)` (`depth_to_space` reads `(i*s + j)*C' + c`).

    Strided channel slices put the channels in `depth_to_space`'s order: no tensor
    above rank 4, for the runtimes and delegates that take no more.
    """
    s = block_size
    if s == 1:
        return x
    x = ops.concatenate([x[..., p::s * s] for p in range(s * s)], axis=-1)
    return depth_to_space(x, s)


def _centres(offset, axis, scale_factor):
    """Where bilinear upsampling (align_corners=False) reads along `axis` of the output,
    `(i + 0.5) / s - 0.5`, as an int32 anchor (its floor) and a float fraction in [0, 1)
    (constants where the size is known)."""
    size = offset.shape[axis]
    if isinstance(size, int):
        centres = (np.arange(size) + 0.5) / scale_factor - 0.5
        anchors = np.floor(centres)
        return (ops.convert_to_tensor(anchors.astype("int32")),
                ops.cast(centres - anchors, offset.dtype))
    centres = (ops.cast(ops.arange(ops.shape(offset)[axis]), offset.dtype) + 0.5) / scale_factor
    anchors = ops.floor(centres - 0.5)
    return ops.cast(anchors, "int32"), centres - 0.5 - anchors


@keras.saving.register_keras_serializable(package="keras_carafe")
class DySample(keras.layers.Layer):
    """Dynamic point-sampling upsampler (Liu et al., "Learning to Upsample by Learning to
    Sample", ICCV 2023).

    Every output pixel reads each group of input channels at one point,
    by bilinear interpolation: a 1x1 convolution predicts the point's
    offset from the pixel's nearest position, `((ow + 0.5) / s - 0.5,
    (oh + 0.5) / s - 0.5)` in input pixels (where bilinear upsampling
    reads). The offsets are scaled by a static scope of 0.25, or with
    `dynamic_scope` by `0.5 * sigmoid` of a second 1x1 convolution (the
    paper's DySample+ variant). Points outside the image read the nearest
    border pixel (PyTorch's `grid_sample` with `padding_mode="border"` and
    `align_corners=False`, as the official code). No kernels, no guidance.

    Style "lp" (linear then pixel shuffle) predicts all `s * s` offsets of
    an input pixel from its channels; "pl" first pixel-shuffles the input
    (PyTorch channel order) to `channels / s**2` channels at the output size
    and predicts one offset per output pixel.

    Defaults are the paper's and the official `DySample` (`tiny-smart/
    dysample`, `dysample.py`): `scale_factor` 2, 4 groups, style "lp",
    static scope 0.25; offset convolution kernel normal with standard
    deviation 0.001, zero bias; the scope convolution starts at zero
    (`0.5 * sigmoid(0) = 0.25`) and has no bias. With 256 channels that is
    8,224 parameters (16,416 with `dynamic_scope`).

    Sampling uses `keras_carafe.ops.point_sampling.bilinear_sample`
    (gathers from `keras.ops`), on every backend, under XLA and in every
    export format.

    Args:
        scale_factor: int >= 1, the upsampling factor `s`.
        group_size: int >= 1, the number of channel groups (the official
            `groups`), each with its own sampling points; divides the
            channels.
        style: `"lp"` or `"pl"`.
        dynamic_scope: bool, a learned scope instead of the static 0.25.
        data_format: `"channels_last"`, `"channels_first"` or `None` (the
            Keras `image_data_format()`).
        kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer, kernel_constraint, bias_constraint: for the offset
            convolution (`None` kernel initializer: the official normal);
            the regularizer and constraint of the kernel also apply to the
            scope convolution, which always starts at zero.
        **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`, ...).

    Input shape:
        `(batch, height, width, channels)` for `channels_last` or
        `(batch, channels, height, width)`; height and width may be unknown,
        channels must be known.

    Output shape:
        `(batch, height * s, width * s, channels)` (or the `channels_first`
        equivalent).

    Example:

    >>> import numpy as np
    >>> from keras_carafe import DySample
    >>> x = np.random.rand(2, 16, 16, 32).astype("float32")
    >>> tuple(DySample()(x).shape)
    (2, 32, 32, 32)
    """

    def __init__(
        self,
        scale_factor=2,
        group_size=4,
        style="lp",
        dynamic_scope=False,
        data_format=None,
        kernel_initializer=None,
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.scale_factor = validation.check_int_argument("scale_factor", scale_factor, 1)
        self.group_size = validation.check_int_argument("group_size", group_size, 1)
        if style not in STYLES:
            raise ValueError(f"`style` must be 'lp' or 'pl', got {style!r}")
        self.style = style
        if not isinstance(dynamic_scope, bool):
            raise TypeError(f"`dynamic_scope` must be a bool, got {dynamic_scope!r}")
        self.dynamic_scope = dynamic_scope
        self.data_format = support.standardize_data_format(data_format)
        if kernel_initializer is None:
            kernel_initializer = keras.initializers.RandomNormal(stddev=0.001)
        self._settings = support.conv_settings(kernel_initializer, bias_initializer,
                                               kernel_regularizer, bias_regularizer,
                                               kernel_constraint, bias_constraint)
        s, g = self.scale_factor, self.group_size
        # Channel (xy*G + g)*s*s + i*s + j ("lp") or xy*G + g ("pl"): x then y offsets, as
        # the official convolution orders them.
        offsets = 2 * g * s * s if style == "lp" else 2 * g
        self.offset = keras.layers.Conv2D(offsets, 1, data_format="channels_last", name="offset",
                                          dtype=self.dtype_policy, **self._settings)
        self.scope = None
        if dynamic_scope:
            self.scope = keras.layers.Conv2D(
                offsets, 1, use_bias=False, kernel_initializer="zeros",
                kernel_regularizer=self._settings["kernel_regularizer"],
                kernel_constraint=self._settings["kernel_constraint"],
                data_format="channels_last", name="scope", dtype=self.dtype_policy)

    def build(self, input_shape):
        shape = support.check_rank_and_channels(self, "inputs", input_shape)
        channels, s, g = shape[3], self.scale_factor, self.group_size
        if channels % g:
            raise ValueError(f"input channels ({channels}) must be divisible by `group_size` "
                             f"({g}): each group of channels has its own sampling points")
        offset_inputs = channels
        if self.style == "pl":
            if channels % (s * s):
                raise ValueError(
                    f"style='pl' pixel-shuffles the input to channels / scale_factor**2, so "
                    f"the input channels ({channels}) must be divisible by {s * s}")
            offset_inputs = channels // (s * s)
        self.offset.build((None, None, None, offset_inputs))
        if self.scope is not None:
            self.scope.build((None, None, None, offset_inputs))

    def _offsets(self, x):
        """(N, H*s, W*s, 2*G) offsets in input pixels: x offsets, then y offsets."""
        s = self.scale_factor
        source = x if self.style == "lp" else _channel_major_depth_to_space(x, s)
        offset = self.offset(source)
        if self.scope is None:
            offset = offset * 0.25
        else:
            offset = offset * ops.sigmoid(self.scope(source)) * 0.5
        # "lp" predicts each input pixel's s*s offsets in PyTorch's pixel-shuffle order.
        return _channel_major_depth_to_space(offset, s) if self.style == "lp" else offset

    def sampling_points(self, inputs):
        """The points each output pixel reads, as (N, H*s, W*s, G, 2): `(x, y)` in input
        pixels (pixel `(y, x)` at `(y, x)`), before clamping to the image; the spatial axes
        come first for either data format."""
        x = ops.cast(support.to_channels_last(ops.convert_to_tensor(inputs), self.data_format),
                     self.compute_dtype)
        if not self.built:
            self.build(tuple(ops.convert_to_tensor(inputs).shape))
        (x_anchors, y_anchors), (points_x, points_y) = self._points(x)
        dtype = validation.dtype_name(points_x)
        return ops.stack([points_x + ops.cast(x_anchors, dtype),
                          points_y + ops.cast(y_anchors, dtype)], axis=-1)

    def _points(self, x):
        """The points as integer anchors (the bilinear upsampling's source pixels) and the
        offsets from them, `(x_anchors, y_anchors), (x, y)`: offsets stay small, which
        quantized graphs need to keep sub-pixel precision."""
        s, g = self.scale_factor, self.group_size
        dtype = validation.dtype_name(x)
        position_dtype = "float64" if dtype == "float64" else "float32"
        offset = ops.cast(self._offsets(x), position_dtype)
        # Where bilinear upsampling (align_corners=False) reads: the official
        # `init_pos` plus each input pixel's centre.
        (col_anchors, col_fractions), (row_anchors, row_fractions) = (
            _centres(offset, axis, s) for axis in (2, 1))
        anchors = (ops.reshape(col_anchors, (1, 1, -1, 1)),
                   ops.reshape(row_anchors, (1, -1, 1, 1)))
        points_x = offset[..., :g] + ops.reshape(col_fractions, (1, 1, -1, 1))
        points_y = offset[..., g:] + ops.reshape(row_fractions, (1, -1, 1, 1))
        return anchors, (points_x, points_y)

    def call(self, inputs):
        support.check_export_format(self)
        x = support.to_channels_last(inputs, self.data_format)
        anchors, (points_x, points_y) = self._points(x)
        out = bilinear_sample(x, points_x, points_y, self.group_size, anchors)
        return support.from_channels_last(out, self.data_format)

    def compute_output_shape(self, input_shape):
        n, h, w, c = support.channels_last_shape(input_shape, self.data_format)
        s = self.scale_factor
        return support.in_data_format(
            (n, None if h is None else h * s, None if w is None else w * s, c), self.data_format)

    def cost(self, height, width, channels):
        """Parameters and FLOPs of this layer on a (height, width, channels) input."""
        return dysample_cost(height, width, channels, scale_factor=self.scale_factor,
                             group_size=self.group_size, style=self.style,
                             dynamic_scope=self.dynamic_scope)

    def get_config(self):
        config = super().get_config()
        config.update(scale_factor=self.scale_factor, group_size=self.group_size,
                      style=self.style, dynamic_scope=self.dynamic_scope,
                      data_format=self.data_format)
        for arg, value in self._settings.items():
            config[arg] = support.SERIALIZERS[arg.rsplit("_", 1)[1]].serialize(value)
        return config

"""What the FADE, SAPA and DySample layers share: data formats, the checks of the
(encoder feature, decoder feature) pair, softmaxes of 16-bit logits and the export checks.

A guided upsampler takes a high-resolution `encoder_feature` (N, H*s, W*s, C_e)
and a low-resolution `decoder_feature` (N, H, W, C_d). Their sizes are
checked when the layer is built (known sizes), when it is called (sizes known
then, as on JAX and PyTorch) and, in TensorFlow graphs traced with unknown
sizes, when the graph runs.
"""

import keras
from keras import ops

from keras_carafe import backend
from keras_carafe.layers import reassembly_layer
from keras_carafe.ops import export_formulation, validation


# `data_format` argument -> "channels_last" / "channels_first", as in the CARAFE layers.
standardize_data_format = reassembly_layer._standardize_data_format
# Conv2D keyword arguments from initializer, regularizer and constraint arguments.
conv_settings = reassembly_layer._conv_settings
SERIALIZERS = reassembly_layer._SERIALIZERS


def to_channels_last(x, data_format):
    return x if data_format == "channels_last" else ops.transpose(x, (0, 2, 3, 1))


def from_channels_last(y, data_format):
    return y if data_format == "channels_last" else ops.transpose(y, (0, 3, 1, 2))


def channels_last_shape(shape, data_format):
    """(N, H, W, C) of a 4-D shape in `data_format` (None sizes stay None)."""
    shape = tuple(shape)
    if data_format == "channels_last":
        return shape
    n, c, h, w = shape
    return (n, h, w, c)


def in_data_format(shape, data_format):
    """A channels-last (N, H, W, C) shape in `data_format`."""
    n, h, w, c = shape
    return (n, h, w, c) if data_format == "channels_last" else (n, c, h, w)


def check_rank_and_channels(layer, name, shape):
    """Returns the channels-last shape of input `name`, or raises naming the layer."""
    kind = type(layer).__name__
    if shape is None or len(shape) != 4:
        raise ValueError(f"{kind} expects `{name}` of rank 4 (batch, height, width, channels) "
                         f"for {layer.data_format}, got shape {shape}")
    shape = channels_last_shape(shape, layer.data_format)
    if shape[3] is None:
        axis = -1 if layer.data_format == "channels_last" else 1
        raise ValueError(f"{kind} needs a known channel dimension of `{name}` (axis {axis} for "
                         f"{layer.data_format}), got shape {shape}")
    return shape


def check_pair_shapes(layer, encoder_shape, decoder_shape, scale_factor):
    """Raises where the known sizes of the (channels-last) pair do not fit the scale."""
    kind = type(layer).__name__
    for axis, index in (("height", 1), ("width", 2)):
        small, large = decoder_shape[index], encoder_shape[index]
        if small is not None and large is not None and large != small * scale_factor:
            raise ValueError(
                f"{kind}: `encoder_feature` {axis} ({large}) must be scale_factor * "
                f"`decoder_feature` {axis} = {scale_factor} * {small} = {small * scale_factor}")
    small, large = decoder_shape[0], encoder_shape[0]
    if small is not None and large is not None and small != large:
        raise ValueError(f"{kind}: `encoder_feature` batch ({large}) must equal "
                         f"`decoder_feature` batch ({small})")


def checked_pair(layer, encoder, decoder, scale_factor):
    """The channels-last pair, checked against the scale now, or (TensorFlow graphs with
    sizes unknown while tracing) when the graph runs."""
    encoder_shape = validation.static_shape(encoder)
    decoder_shape = validation.static_shape(decoder)
    check_pair_shapes(layer, encoder_shape, decoder_shape, scale_factor)
    if None not in encoder_shape + decoder_shape or keras.backend.backend() != "tensorflow":
        return encoder, decoder
    import tensorflow as tf

    e, d = tf.shape(encoder), tf.shape(decoder)
    message = (f"{type(layer).__name__}: `encoder_feature` spatial size must be "
               f"scale_factor={scale_factor} times the `decoder_feature` spatial size, with "
               f"the same batch")
    check = tf.debugging.assert_equal(tf.concat([e[:3], d[:1]], 0),
                                      tf.concat([d[:1], d[1:3] * scale_factor, e[:1]], 0),
                                      message=message)
    with tf.control_dependencies([check]):
        return tf.identity(encoder), tf.identity(decoder)


def softmax_logits(logits, groups, taps, dtype):
    """Softmax over each group's `taps` weights of (N, H, W, groups * taps) logits, in `dtype`.

    16-bit logits are normalized in float32: float16 exponentials lose the
    small weights (as in `CARAFE`).
    """
    n, h, w, _ = ops.shape(logits)
    softmax_dtype = dtype if dtype in ("float32", "float64") else "float32"
    grouped = ops.cast(ops.reshape(logits, (n, h, w, groups, taps)), softmax_dtype)
    weights = ops.softmax(grouped, axis=-1) if taps > 1 else ops.ones_like(grouped)
    return ops.cast(ops.reshape(weights, (n, h, w, groups * taps)), dtype)


def per_sub_pixel(x, scale_factor):
    """(N, H, W, C) -> (N, H, W, s*s*C), one copy per sub-pixel: a nearest upsampling's
    cells. A concatenation, not a Tile: OpenVINO 2026.4 gives that Tile a wrong shape where
    the spatial sizes are unknown ((1, 12, 5, 1) for (1, 3, 5, 4))."""
    return export_formulation.concatenate([x] * (scale_factor * scale_factor), axis=-1)


def nearest_upsample(x, scale_factor):
    """(N, H, W, C) -> (N, H*s, W*s, C), each pixel repeated s x s times, in rank 4 (for the
    runtimes and delegates that take no more)."""
    if scale_factor == 1:
        return x
    return export_formulation.depth_to_space(per_sub_pixel(x, scale_factor), scale_factor)


def check_export_format(layer):
    """Raises, naming `layer`, where the format being exported cannot express it."""
    target, dtype = backend.current().export_format(), layer.compute_dtype
    reason = None
    if target == "litert" and dtype != "float32":
        reason = ("LiteRT's builtin operators run its convolutions and the reassembly in "
                  "float32 only (anything else needs the Flex delegate); export a float32 "
                  "copy of the model and quantize that instead "
                  "(keras_carafe.quantization.export_int8)")
    elif target == "onnx" and dtype == "bfloat16":
        reason = "ONNX convolutions take float16, float32 or float64, not bfloat16"
    if reason:
        raise ValueError(f"{type(layer).__name__} layer {layer.name!r} cannot be exported to "
                         f"{target}: it computes in {dtype} and {reason}.")

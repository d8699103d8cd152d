"""The 1x1 convolution that the export tests put after a layer, in either data format."""

import keras


def pointwise_head(data_format, channels=3):
    """A 1x1 convolution to `channels` channels of `data_format` inputs.

    TensorFlow's CPU kernels run a channels_first convolution only with oneDNN,
    which TensorFlow turns on by default on some CPUs only (not on AVX2-only
    ones), so the channels_first head permutes to channels_last and back around
    a channels_last convolution (the exported graphs hold layout changes at the
    layer's output either way).
    """
    conv = keras.layers.Conv2D(channels, 1)
    if data_format == "channels_last":
        return conv
    return lambda x: keras.layers.Permute((3, 1, 2))(conv(keras.layers.Permute((2, 3, 1))(x)))

"""FLOPs of the upsamplers under comparison.

As in `keras_carafe.cost`, a multiply-add counts as 2 FLOPs and biases are
left out.
"""

import keras

from keras_carafe.demo.subpixel_upsampler import PixelShuffle
from keras_carafe.layers import CARAFE

# Bilinear interpolation reads 2 x 2 input values per output value.
_BILINEAR_TAPS = 4


def upsampler_flops(layer, height, width, channels):
    """FLOPs with which `layer` upsamples one `(height, width, channels)` feature map.

    Args:
        layer: an upsampler from `make_upsampler` (`UpSampling2D`,
            `Conv2DTranspose`, `PixelShuffle` or `CARAFE`).
        height, width, channels: the input's size.

    Returns:
        int. Nearest-neighbour upsampling only copies (0); bilinear counts
        one multiply-add per tap of each output value; the convolutions
        count one multiply-add per weight use; CARAFE counts its compressor,
        encoder, softmax and reassembly (`CARAFE.cost`).
    """
    if isinstance(layer, CARAFE):
        return layer.cost(height, width, channels).flops
    if isinstance(layer, keras.layers.UpSampling2D):
        if layer.interpolation == "nearest":
            return 0
        sy, sx = layer.size
        return 2 * _BILINEAR_TAPS * height * sy * width * sx * channels
    if isinstance(layer, keras.layers.Conv2DTranspose):
        ky, kx = layer.kernel_size
        # Every input value is multiplied into a ky x kx x filters block of the output.
        return 2 * height * width * channels * ky * kx * layer.filters
    if isinstance(layer, PixelShuffle):
        k = layer.kernel_size
        out_channels = layer.scale_factor ** 2 * layer.filters
        return 2 * height * width * k * k * channels * out_channels
    raise TypeError(f"no FLOP count for {type(layer).__name__}")

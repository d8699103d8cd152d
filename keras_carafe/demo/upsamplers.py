"""The upsampling layers under comparison, built interchangeably."""

import keras

from keras_carafe.demo.config import UPSAMPLERS
from keras_carafe.demo.subpixel_upsampler import PixelShuffle
from keras_carafe.layers import CARAFE, SAPA, DySample, FADE

# The successors of CARAFE, for comparisons that can feed them (the super-resolution demo
# keeps `UPSAMPLERS`). The guided ones are called as `layer(guide, x)`, `guide` being the
# high-resolution feature of the same stage (an FPN lateral, an encoder skip) of shape
# (N, H*s, W*s, channels).
FAMILY_UPSAMPLERS = ("fade", "sapa", "dysample")
GUIDED_UPSAMPLERS = ("fade", "sapa")


def make_upsampler(name, scale, channels, seed=0, implementation="auto", name_prefix=""):
    """One upsampling layer mapping `(N, H, W, channels)` to `(N, H*s, W*s, channels)`.

    Args:
        name: one of `UPSAMPLERS` or `FAMILY_UPSAMPLERS`:
            "nearest" / "bilinear": fixed interpolation, no parameters;
            "transposed_conv": a `2s x 2s` transposed convolution with stride
                `s` (each output pixel sees two input pixels per axis);
            "pixel_shuffle": a 3x3 convolution to `s*s*channels` channels and
                `depth_to_space`;
            "carafe": `CARAFE` with the paper's `k_up = 5`, `k_enc = 3` and a
                compressor to `channels // 2` channels (at least 8);
            "fade", "sapa": `FADE` and `SAPA` with their official defaults but an
                embedding of `channels // 2` (at least 8), guided (see
                `GUIDED_UPSAMPLERS`);
            "dysample": `DySample` with its official defaults (4 groups where
                `channels` allows, else 1).
        scale: int, the upsampling factor `s`.
        channels: the feature channels in and out.
        seed: seeds the layer's initial weights.
        implementation: CARAFE's (FADE's, SAPA's) `implementation`.
        name_prefix: prefixed to the layer's name ("upsampler").

    Returns:
        A Keras layer named `name_prefix + "upsampler"`.
    """
    layer_name = name_prefix + "upsampler"
    init = keras.initializers.GlorotUniform(seed=seed)
    if name in ("nearest", "bilinear"):
        return keras.layers.UpSampling2D(scale, interpolation=name, name=layer_name)
    if name == "transposed_conv":
        return keras.layers.Conv2DTranspose(
            channels, 2 * scale, strides=scale, padding="same", kernel_initializer=init,
            name=layer_name)
    if name == "pixel_shuffle":
        return PixelShuffle(scale, channels, kernel_size=3, kernel_initializer=init,
                            name=layer_name)
    if name == "carafe":
        return CARAFE(
            scale_factor=scale, kernel_size=5, encoder_kernel_size=3,
            compressed_channels=max(channels // 2, 8), implementation=implementation,
            compressor_kernel_initializer=init,
            encoder_kernel_initializer=keras.initializers.RandomNormal(stddev=0.001, seed=seed),
            name=layer_name)
    if name in ("fade", "sapa"):
        # Seeded versions of each layer's own initializer (SAPA's is a normal of 0.02).
        layer, kernel_init = ((FADE, init) if name == "fade" else
                              (SAPA, keras.initializers.RandomNormal(stddev=0.02, seed=seed)))
        return layer(scale_factor=scale, embedding_channels=max(channels // 2, 8),
                     implementation=implementation, kernel_initializer=kernel_init,
                     name=layer_name)
    if name == "dysample":
        return DySample(scale_factor=scale, group_size=4 if channels % 4 == 0 else 1,
                        kernel_initializer=keras.initializers.RandomNormal(stddev=0.001,
                                                                           seed=seed),
                        name=layer_name)
    raise ValueError(f"unknown upsampler {name!r}; choose from {UPSAMPLERS + FAMILY_UPSAMPLERS}")

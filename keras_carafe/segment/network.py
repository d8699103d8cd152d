"""The FPN-style segmentation network shared by every variant.

Encoder: a stem at full resolution, then `LEVELS` stages that each halve
the resolution (strides 2, 4, 8, 16) and apply a 3x3 convolution; every
3x3 convolution is followed by batch normalization and a ReLU.
Top-down pathway: a 1x1 lateral convolution brings every stage to
`channels`; from the coarsest level down, each level is upsampled by the
variant's upsampler and added to the next finer lateral, as in FPN. Nothing
but the additions sits between consecutive upsamplers, so the coarsest level
reaches the finest through the composed reassembly kernels alone
(`keras_carafe.visualize.spread_kernels`). Head: a 3x3 and a 1x1
convolution at stride 2, then fixed bilinear upsampling of the class logits
to the input resolution.

Every layer outside the variant's resampling layers gets its initial
weights from its own seed, so the variants start from the same weights.
"""

import keras

from keras_carafe.demo.upsamplers import make_upsampler
from keras_carafe.layers import CARAFEDownsample
from keras_carafe.segment.config import DOWNSAMPLER_OF, LEVELS, UPSAMPLER_OF, VARIANTS

STEM_CHANNELS = 16


def encoder_widths(channels):
    """Channels of the encoder stages, finest first: 3/4, 1, 3/2 and 2 times `channels`."""
    return tuple(max(channels * f // 4, 4) for f in (3, 4, 6, 8))[:LEVELS]


def upsampler_names():
    """Names of the top-down upsamplers, coarsest first ("up3_upsampler", ..., "up1_...")."""
    return tuple(f"up{i}_upsampler" for i in reversed(range(1, LEVELS)))


def _conv_block(x, filters, seed, name, strides=1):
    """A 3x3 convolution (weights from `seed` only), batch normalization and ReLU."""
    x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                            kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
                            name=name)(x)
    # Keras's default momentum (0.99) leaves the moving variance near its
    # initial 1 after a few hundred steps, far above these features' variance.
    x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_norm")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _pointwise(filters, seed, name):
    """A linear 1x1 convolution whose initial weights depend on `seed` only."""
    return keras.layers.Conv2D(filters, 1, name=name,
                               kernel_initializer=keras.initializers.GlorotUniform(seed=seed))


def build_segmenter(variant, classes, channels=32, seed=0, implementation="auto"):
    """The segmentation network of one variant, for grey-scale images of any size.

    Height and width must be multiples of `2 ** LEVELS`.

    Args:
        variant: a name from `keras_carafe.segment.config.VARIANTS`.
        classes: number of classes (background included).
        channels: channels of the top-down pathway and of every upsampler.
        seed: seeds every initial weight.
        implementation: CARAFE's and CARAFEDownsample's `implementation`.

    Returns:
        An uncompiled functional `keras.Model` named "segmenter_" + variant
            (with "p" for "+"),
        mapping `(N, H, W, 1)` to class logits `(N, H, W, classes)`. Its
        upsamplers are named by `upsampler_names()`; a CARAFE++ variant's
        downsamplers are "down1_resample" ... "down4_resample".
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    image = keras.Input((None, None, 1), name="image")
    x = _conv_block(image, STEM_CHANNELS, seed, "stem")
    stages = []
    for level, width in enumerate(encoder_widths(channels), start=1):
        if DOWNSAMPLER_OF[variant] == "carafe_downsample":
            # Content-aware downsampling, then the same 3x3 convolution (same
            # seed, same weights) that the other variants apply with a stride.
            x = CARAFEDownsample(
                stride=2, kernel_size=5, encoder_kernel_size=3,
                compressed_channels=max(x.shape[-1] // 2, 8), implementation=implementation,
                compressor_kernel_initializer=keras.initializers.GlorotUniform(
                    seed=seed + 100 + level),
                encoder_kernel_initializer=keras.initializers.RandomNormal(
                    stddev=0.001, seed=seed + 100 + level),
                name=f"down{level}_resample")(x)
            x = _conv_block(x, width, seed + 10 + level, f"down{level}")
        else:
            x = _conv_block(x, width, seed + 10 + level, f"down{level}", strides=2)
        x = _conv_block(x, width, seed + 20 + level, f"block{level}")
        stages.append(x)
    laterals = [_pointwise(channels, seed + 30 + level, f"lateral{level}")(stage)
                for level, stage in enumerate(stages, start=1)]
    x = laterals[-1]
    for level in reversed(range(1, LEVELS)):
        up = make_upsampler(UPSAMPLER_OF[variant], 2, channels, seed=seed + 40 + level,
                            implementation=implementation, name_prefix=f"up{level}_")(x)
        x = keras.layers.Add(name=f"merge{level}")([laterals[level - 1], up])
    x = _conv_block(x, channels, seed + 50, "head")
    logits = _pointwise(classes, seed + 51, "logits")(x)
    logits = keras.layers.UpSampling2D(2, interpolation="bilinear",
                                       name="output_upsampling")(logits)
    # TensorFlow scope names cannot hold "+".
    return keras.Model(image, logits, name="segmenter_" + variant.replace("+", "p"))


def input_stride(name):
    """The stride (relative to the image) of what a resampling layer named `name` reads.

    `up<l>_upsampler` upsamples level `l + 1` (stride `2 ** (l + 1)`);
    `down<l>_resample` downsamples level `l - 1` (stride `2 ** (l - 1)`).
    """
    prefix, rest = name[:name.index("_")], name[name.index("_"):]
    if prefix.startswith("up") and rest == "_upsampler":
        return 2 ** (int(prefix[2:]) + 1)
    if prefix.startswith("down") and rest == "_resample":
        return 2 ** (int(prefix[4:]) - 1)
    raise ValueError(f"{name!r} is not the name of a segmenter's resampling layer")


def resampling_layers(model):
    """The variant's own layers: its upsamplers, then any content-aware downsamplers."""
    names = list(upsampler_names())
    names += [layer.name for layer in model.layers if layer.name.endswith("_resample")]
    return [model.get_layer(name) for name in names]

"""The super-resolution network shared by every upsampler."""

import keras

from keras_carafe.demo.upsamplers import make_upsampler


def seeded_conv(filters, seed, name, strides=1, activation="relu"):
    """A 3x3 "same" convolution whose initial weights depend on `seed` only."""
    # An explicit seed per layer gives every variant the same initial
    # backbone and head, whatever the upsampler draws in between.
    return keras.layers.Conv2D(
        filters, 3, strides=strides, padding="same", activation=activation, name=name,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed))


def build_sr_model(upsampler, scale, channels=32, depth=4, seed=0, implementation="auto"):
    """A small super-resolution network with an interchangeable feature upsampler.

    `depth` 3x3 convolutions extract `channels` features at low resolution,
    the upsampler (the only part that differs between variants) brings them
    to high resolution, and two 3x3 convolutions predict the detail that is
    added to a bilinear enlargement of the input image. Grey-scale images in,
    grey-scale images out; any size.

    Args:
        upsampler: a name from `keras_carafe.demo.config.UPSAMPLERS`.
        scale: int, the upsampling factor.
        channels: feature channels.
        depth: convolutions before the upsampler.
        seed: seeds all initial weights.
        implementation: CARAFE's `implementation`.

    Returns:
        An uncompiled `keras.Model` named `"sr_" + upsampler` whose
        upsampling layer is named "upsampler" and whose last low-resolution
        feature layer is named "features".
    """
    layers = [make_upsampler(upsampler, scale, channels, seed=seed + depth,
                             implementation=implementation)]
    return _sr_network(layers, scale, channels, depth, seed, name=f"sr_{upsampler}")


def build_stacked_carafe_model(stages=2, channels=32, depth=4, seed=0, implementation="auto"):
    """The network of `build_sr_model` with `stages` chained x2 CARAFE layers as upsampler.

    Nothing sits between the CARAFE layers, so one output pixel of the last
    is a fixed-weight sum of the first one's input pixels: its composed
    kernel (`keras_carafe.visualize.compose_kernels`).

    Args:
        stages: int >= 1, the number of CARAFE layers; the model enlarges
            by `2 ** stages`.
        channels, depth, seed, implementation: as in `build_sr_model`.

    Returns:
        An uncompiled `keras.Model` named "sr_carafe_x{2**stages}" whose
        CARAFE layers are named "stage1_upsampler", "stage2_upsampler", ...
    """
    if not isinstance(stages, int) or stages < 1:
        raise ValueError(f"`stages` must be an integer >= 1, got {stages!r}")
    layers = [make_upsampler("carafe", 2, channels, seed=seed + depth + 3 + i,
                             implementation=implementation, name_prefix=f"stage{i + 1}_")
              for i in range(stages)]
    return _sr_network(layers, 2 ** stages, channels, depth, seed,
                       name=f"sr_carafe_x{2 ** stages}")


def _sr_network(upsampling_layers, scale, channels, depth, seed, name):
    image = keras.Input((None, None, 1), name="low_resolution")
    x = image
    for i in range(depth):
        x = seeded_conv(channels, seed + i, "features" if i == depth - 1 else f"conv{i + 1}")(x)
    for layer in upsampling_layers:
        x = layer(x)
    x = seeded_conv(channels, seed + depth + 1, "head1")(x)
    detail = seeded_conv(1, seed + depth + 2, "head2", activation=None)(x)
    enlarged = keras.layers.UpSampling2D(scale, interpolation="bilinear",
                                         name="image_upsampling")(image)
    output = keras.layers.Add(name="high_resolution")([enlarged, detail])
    return keras.Model(image, output, name=name)

"""The DySample layer on the active Keras backend: the official forward pass (NumPy, float64)
on loaded official parameters, the border behaviour, formats, sizes, precision, gradients,
training, saving, costs and bad input.

This module runs unchanged with KERAS_BACKEND=tensorflow, jax and torch.
"""

import keras
import numpy as np
import pytest

from autodiff import BACKEND, float64_enabled, to_float64
from keras_carafe import DySample, load_official_weights
from official_reference import dysample_forward, random_dysample_parameters

pytestmark = pytest.mark.all_backends

# (channels, scale_factor, group_size, style, dynamic_scope, height, width)
CONFIGS = [
    (8, 2, 4, "lp", False, 5, 4),    # the official defaults, odd height
    (8, 2, 4, "lp", True, 3, 5),     # DySample+: the dynamic scope
    (16, 2, 4, "pl", False, 4, 3),
    (16, 2, 2, "pl", True, 3, 3),
    (6, 3, 2, "lp", False, 3, 2),    # scale 3
    (18, 3, 1, "pl", True, 2, 3),
    (4, 4, 1, "lp", True, 2, 2),     # scale 4, one group
    (4, 1, 2, "lp", False, 4, 5),    # scale 1: a learned resampling
]
CONFIG_IDS = ["c{}-s{}-g{}-{}-dyscope{}-{}x{}".format(*c) for c in CONFIGS]


def _nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


def _nchw(x):
    return np.transpose(x, (0, 3, 1, 2))


def _built(channels, data_format="channels_last", **kwargs):
    layer = DySample(data_format=data_format, **kwargs)
    layer.build((None, None, None, channels) if data_format == "channels_last"
                else (None, channels, None, None))
    return layer


@pytest.mark.parametrize("offset_std", [0.3, 3.0], ids=["small-offsets", "past-the-border"])
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_computes_the_official_forward_pass_on_official_parameters(rng, config, offset_std):
    c, s, g, style, dyscope, h, w = config
    with float64_enabled():
        params = random_dysample_parameters(rng, c, s, g, style, dyscope, offset_std)
        layer = _built(c, scale_factor=s, group_size=g, style=style, dynamic_scope=dyscope,
                       dtype="float64")
        load_official_weights(layer, params)
        x = rng.standard_normal((2, c, h, w))
        y = to_float64(layer(_nhwc(x)))
    np.testing.assert_allclose(_nchw(y), dysample_forward(x, params, s, g, style, dyscope),
                               rtol=1e-11, atol=1e-12)


def test_channels_first_layer_takes_and_returns_the_official_layout(rng):
    with float64_enabled():
        params = random_dysample_parameters(rng, 8, 2, 4, "lp", True)
        layer = _built(8, dynamic_scope=True, data_format="channels_first", dtype="float64")
        load_official_weights(layer, params)
        x = rng.standard_normal((1, 8, 3, 4))
        y = to_float64(layer(x))
    np.testing.assert_allclose(y, dysample_forward(x, params, 2, 4, "lp", True), rtol=1e-11,
                               atol=1e-12)


def test_zero_offsets_are_bilinear_upsampling_with_clamped_borders(rng):
    # With the offset convolution at zero every point is where align_corners=False
    # bilinear upsampling reads, and the border pixels repeat past the image.
    x = rng.standard_normal((1, 3, 4, 4)).astype("float32")
    layer = DySample(kernel_initializer="zeros", group_size=2)
    y = to_float64(layer(x))
    expected = np.zeros((1, 6, 8, 4))
    for oh in range(6):
        for ow in range(8):
            sy = min(max((oh + 0.5) / 2 - 0.5, 0), 2)
            sx = min(max((ow + 0.5) / 2 - 0.5, 0), 3)
            y0, x0 = int(np.floor(sy)), int(np.floor(sx))
            y1, x1 = min(y0 + 1, 2), min(x0 + 1, 3)
            fy, fx = sy - y0, sx - x0
            expected[0, oh, ow] = ((1 - fy) * (1 - fx) * x[0, y0, x0] + (1 - fy) * fx * x[0, y0, x1]
                                   + fy * (1 - fx) * x[0, y1, x0] + fy * fx * x[0, y1, x1])
    np.testing.assert_allclose(y, expected, atol=1e-6)


@pytest.mark.parametrize("bias, expected_pixel", [(-100.0, (0, 0)), (100.0, (2, 3))],
                         ids=["before-the-image", "after-the-image"])
def test_points_outside_the_image_read_the_nearest_border_pixel(rng, bias, expected_pixel):
    x = rng.standard_normal((1, 3, 4, 2)).astype("float32")
    layer = DySample(group_size=1, kernel_initializer="zeros",
                     bias_initializer=keras.initializers.Constant(bias))
    y = to_float64(layer(x))
    points = to_float64(layer.sampling_points(x))
    assert np.all(np.abs(points) > 20)  # far outside the 3 x 4 image
    np.testing.assert_allclose(y, np.broadcast_to(x[0, expected_pixel[0], expected_pixel[1]],
                                                  y.shape), atol=1e-6)


def test_gradients_reach_the_offsets_and_vanish_where_points_are_clamped(rng):
    x = rng.standard_normal((1, 3, 4, 2)).astype("float32")
    inside = DySample(group_size=1)
    outside = DySample(group_size=1, bias_initializer=keras.initializers.Constant(100.0))
    for layer, expect_gradient in ((inside, True), (outside, False)):
        inputs = keras.Input((3, 4, 2))
        model = keras.Model(inputs, layer(inputs))
        grad = _offset_bias_gradient(model, x, layer)
        assert bool(np.any(grad != 0)) is expect_gradient, grad


def _offset_bias_gradient(model, x, layer):
    """d sum(model(x)**2) / d offset bias, on the active backend."""
    bias = layer.offset.bias
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x) ** 2)
        return to_float64(tape.gradient(loss, bias.value))
    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in model.trainable_variables]
        index = [v.path for v in model.trainable_variables].index(bias.path)

        def loss(values):
            out, _ = model.stateless_call(values, [], x)
            return jnp.sum(out ** 2)

        return to_float64(jax.grad(loss)(trainable)[index])
    out = model(x)
    (out ** 2).sum().backward()
    return to_float64(bias.value.grad)


def test_sampling_points_start_where_bilinear_upsampling_reads(rng):
    x = rng.standard_normal((2, 3, 5, 8)).astype("float32")
    points = to_float64(DySample(kernel_initializer="zeros").sampling_points(x))
    assert points.shape == (2, 6, 10, 4, 2)
    np.testing.assert_allclose(points[0, 0, :, 0, 0], (np.arange(10) + 0.5) / 2 - 0.5)
    np.testing.assert_allclose(points[1, :, 3, 2, 1], (np.arange(6) + 0.5) / 2 - 0.5)


def test_unknown_spatial_size_in_a_functional_model(rng):
    inputs = keras.Input((None, None, 8))
    outputs = DySample()(inputs)
    assert tuple(outputs.shape) == (None, None, None, 8)
    model = keras.Model(inputs, outputs)
    for height, width in ((3, 5), (4, 2)):
        y = model.predict(rng.standard_normal((1, height, width, 8)), verbose=0)
        assert y.shape == (1, 2 * height, 2 * width, 8)


@pytest.mark.parametrize("style", ["lp", "pl"])
def test_mixed_float16_computes_in_float16_close_to_float32(rng, style):
    x = rng.standard_normal((2, 6, 5, 16)).astype("float32")
    full = DySample(style=style, dynamic_scope=True, kernel_initializer="glorot_uniform")
    expected = to_float64(full(x))
    mixed = DySample(style=style, dynamic_scope=True, dtype="mixed_float16")
    mixed.build(x.shape)
    mixed.set_weights(full.get_weights())
    y = mixed(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    assert {v.dtype for v in mixed.weights} == {"float32"}
    np.testing.assert_allclose(to_float64(y), expected, atol=2e-2 * np.abs(expected).max())


# Keras's jit_compile on PyTorch is torch.compile, which these tests do not cover.
JIT_COMPILE = [False] if BACKEND == "torch" else [False, True]


@pytest.mark.parametrize("jit_compile", JIT_COMPILE)
def test_fit_reduces_the_loss(rng, jit_compile):
    keras.utils.set_random_seed(5)
    x = rng.standard_normal((16, 6, 6, 4)).astype("float32")
    # Target: nearest-neighbour enlargement, which bilinear sampling reaches by moving
    # each point onto its source pixel's centre.
    target = x.repeat(2, axis=1).repeat(2, axis=2)
    inputs = keras.Input((6, 6, 4))
    model = keras.Model(inputs, DySample(group_size=2, dynamic_scope=True)(inputs))
    model.compile(optimizer=keras.optimizers.Adam(3e-2), loss="mse", jit_compile=jit_compile)
    before = model.evaluate(x, target, verbose=0)
    model.fit(x, target, batch_size=8, epochs=20, verbose=0)
    after = model.evaluate(x, target, verbose=0)
    assert np.isfinite(after) and after < 0.7 * before, (before, after)


def test_keras_file_round_trip_gives_identical_outputs(tmp_path, rng):
    inputs = keras.Input((None, None, 18))
    model = keras.Model(inputs, DySample(3, 2, "pl", True, name="dysample",
                                         kernel_initializer="glorot_uniform")(inputs))
    x = rng.standard_normal((2, 3, 4, 18)).astype("float32")
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(restored.predict(x, verbose=0), expected)
    assert restored.get_layer("dysample").get_config() == model.get_layer("dysample").get_config()


def test_config_round_trip_keeps_every_argument():
    layer = DySample(scale_factor=3, group_size=2, style="pl", dynamic_scope=True,
                     data_format="channels_first", kernel_regularizer="l2", name="dysample")
    clone = DySample.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert (clone.scale_factor, clone.group_size, clone.style, clone.dynamic_scope) == (
        3, 2, "pl", True)


def test_defaults_are_the_official_ones():
    layer = _built(256)
    assert (layer.scale_factor, layer.group_size, layer.style, layer.dynamic_scope) == (
        2, 4, "lp", False)
    kernel = to_float64(layer.offset.kernel)
    assert abs(kernel.std() - 0.001) < 1e-4
    assert layer.count_params() == 8224


def test_dynamic_scope_starts_at_the_static_scope(rng):
    x = rng.standard_normal((1, 4, 3, 8)).astype("float32")
    static = DySample(kernel_initializer="glorot_uniform")
    dynamic = DySample(dynamic_scope=True)
    dynamic.build(x.shape)
    static.build(x.shape)
    dynamic.offset.set_weights(static.offset.get_weights())
    np.testing.assert_allclose(to_float64(dynamic(x)), to_float64(static(x)), atol=1e-6)


@pytest.mark.parametrize("style, dynamic_scope", [("lp", False), ("lp", True), ("pl", False),
                                                  ("pl", True)])
def test_cost_counts_the_layers_parameters(style, dynamic_scope):
    layer = _built(64, style=style, dynamic_scope=dynamic_scope)
    assert layer.cost(20, 10, 64).params == layer.count_params()


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(scale_factor=0), ValueError, "`scale_factor` must be an integer >= 1, got 0"),
    (dict(group_size=0), ValueError, "`group_size` must be an integer >= 1, got 0"),
    (dict(style="ll"), ValueError, "`style` must be 'lp' or 'pl', got 'll'"),
    (dict(dynamic_scope=None), TypeError, "`dynamic_scope` must be a bool, got None"),
    (dict(data_format="NHWC"), ValueError, "`data_format` must be 'channels_last'"),
])
def test_bad_arguments_are_rejected_with_the_argument_named(kwargs, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        DySample(**kwargs)


@pytest.mark.parametrize("shape, kwargs, message", [
    ((None, 4, 4, 6), dict(group_size=4),
     r"input channels \(6\) must be divisible by `group_size` \(4\)"),
    ((None, 4, 4, 6), dict(style="pl", group_size=2),
     r"style='pl' pixel-shuffles the input to channels / scale_factor\*\*2, so the input "
     r"channels \(6\) must be divisible by 4"),
    ((None, 4, 4, None), {}, r"needs a known channel dimension of `inputs`"),
    ((None, 4, 4), {}, r"expects `inputs` of rank 4"),
])
def test_inputs_the_layer_cannot_take_are_rejected_when_building(shape, kwargs, message):
    with pytest.raises(ValueError, match=message):
        DySample(**kwargs).build(shape)

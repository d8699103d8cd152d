"""The CARAFE layer's construction, shapes, kernels and configuration."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from carafe_reference import carafe_reference
from keras_carafe import CARAFE


def _input(rng, shape):
    return rng.standard_normal(shape).astype("float32")


@pytest.mark.parametrize("scale_factor,kernel_size,group_size,height,width", [
    (2, 5, 1, 6, 7),
    (3, 3, 2, 1, 4),
    (4, 1, 4, 3, 3),
    (1, 7, 1, 5, 2),
])
def test_output_is_the_reassembly_of_the_input_with_the_predicted_kernels(
        rng, scale_factor, kernel_size, group_size, height, width):
    x = _input(rng, (2, height, width, 8))
    layer = CARAFE(scale_factor, kernel_size, compressed_channels=4, group_size=group_size,
                   encoder_kernel_initializer="glorot_uniform")
    y = layer(x).numpy()
    kernels = layer.compute_kernels(x).numpy()
    flat = kernels.reshape(kernels.shape[:3] + (-1,))
    np.testing.assert_allclose(
        y, carafe_reference(x, flat, scale_factor, kernel_size, group_size), atol=1e-5)


def test_kernels_are_normalized_per_group(rng):
    layer = CARAFE(2, 3, compressed_channels=4, group_size=2,
                   encoder_kernel_initializer="glorot_uniform")
    kernels = layer.compute_kernels(_input(rng, (1, 4, 5, 6))).numpy()
    assert kernels.shape == (1, 8, 10, 2, 3, 3)
    assert (kernels > 0).all()
    np.testing.assert_allclose(kernels.sum(axis=(-2, -1)), 1.0, atol=1e-6)


def test_default_encoder_initializer_starts_near_an_average(rng):
    kernels = CARAFE().compute_kernels(_input(rng, (1, 4, 4, 8))).numpy()
    # Logits of order 1e-2 keep every weight within 10% of the uniform 1/25.
    np.testing.assert_allclose(kernels, 1 / 25, atol=4e-3)


def test_unknown_spatial_size_is_supported(rng):
    inputs = keras.Input((None, None, 6))
    outputs = CARAFE(2, 3, compressed_channels=4, group_size=3)(inputs)
    assert tuple(outputs.shape) == (None, None, None, 6)
    model = keras.Model(inputs, outputs)
    for h, w in ((1, 1), (5, 3), (8, 9)):
        assert model(_input(rng, (2, h, w, 6))).shape == (2, 2 * h, 2 * w, 6)


@pytest.mark.parametrize("data_format,shape,expected", [
    ("channels_last", (None, 5, None, 8), (None, 15, None, 8)),
    ("channels_first", (4, 8, 5, 6), (4, 8, 15, 18)),
])
def test_compute_output_shape(data_format, shape, expected):
    layer = CARAFE(3, data_format=data_format)
    assert layer.compute_output_shape(shape) == expected


def test_channels_first_matches_channels_last(rng):
    x = _input(rng, (2, 5, 4, 6))
    last = CARAFE(2, 3, compressed_channels=4, group_size=2,
                  encoder_kernel_initializer="glorot_uniform")
    first = CARAFE(2, 3, compressed_channels=4, group_size=2, data_format="channels_first")
    expected = last(x).numpy()
    first.build((None, 6, None, None))
    first.set_weights(last.get_weights())
    y = first(np.transpose(x, (0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(np.transpose(y, (0, 2, 3, 1)), expected, atol=1e-6)
    np.testing.assert_allclose(first.compute_kernels(np.transpose(x, (0, 3, 1, 2))),
                               last.compute_kernels(x), atol=1e-6)


def test_config_round_trip_rebuilds_an_equal_layer(rng):
    layer = CARAFE(
        scale_factor=3, kernel_size=3, encoder_kernel_size=5, compressed_channels=7,
        group_size=2, encoder_dilation=2, data_format="channels_last",
        implementation="fallback", compressor_kernel_regularizer=keras.regularizers.L2(0.1),
        encoder_bias_initializer=keras.initializers.Constant(0.5),
        compressor_kernel_constraint=keras.constraints.NonNeg(), name="up")
    config = layer.get_config()
    clone = CARAFE.from_config(config)
    assert clone.get_config() == config
    x = _input(rng, (1, 4, 4, 6))
    layer(x)
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x), layer(x), atol=1e-6)


def test_regularizers_add_losses(rng):
    layer = CARAFE(2, 3, compressed_channels=4, compressor_kernel_regularizer="l2",
                   encoder_bias_regularizer=keras.regularizers.L1(1.0),
                   encoder_bias_initializer=keras.initializers.Constant(1.0))
    layer(_input(rng, (1, 3, 3, 4)))
    assert len(layer.losses) == 2
    assert float(layer.losses[1]) == pytest.approx(4 * 9 * 1.0)


def test_initializers_are_applied():
    layer = CARAFE(2, 3, compressed_channels=4,
                   compressor_kernel_initializer=keras.initializers.Constant(0.25),
                   encoder_bias_initializer="ones")
    layer.build((None, None, None, 6))
    np.testing.assert_array_equal(layer.compressor.kernel.numpy(), 0.25)
    np.testing.assert_array_equal(layer.encoder.bias.numpy(), 1.0)
    assert layer.encoder.kernel.shape == (3, 3, 4, 2 * 2 * 9)


def test_constraints_are_applied_after_an_update(rng):
    inputs = keras.Input((4, 4, 4))
    model = keras.Model(inputs, CARAFE(2, 3, compressed_channels=4,
                                       compressor_kernel_constraint="non_neg")(inputs))
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    model.fit(_input(rng, (2, 4, 4, 4)), _input(rng, (2, 8, 8, 4)), epochs=1, verbose=0)
    assert (model.layers[1].compressor.kernel.numpy() >= 0).all()


def test_parameter_count_matches_the_cost_function():
    inputs = keras.Input((16, 16, 256))
    layer = CARAFE()
    model = keras.Model(inputs, layer(inputs))
    assert model.count_params() == layer.cost(16, 16, 256).params


def test_cost_at_the_paper_defaults():
    cost = CARAFE().cost(64, 64, 256)
    # compressor 256*64+64, encoder 3*3*64*100+100 (100 = 2*2*5*5 kernel logits)
    assert cost.params == 16448 + 57700
    pixels = 64 * 64
    assert cost.flops_by_stage["compressor"] == 2 * pixels * 256 * 64
    assert cost.flops_by_stage["encoder"] == 2 * pixels * 9 * 64 * 100
    assert cost.flops_by_stage["reassembly"] == 2 * 4 * pixels * 256 * 25
    assert cost.flops == sum(cost.flops_by_stage.values())


@pytest.mark.parametrize("kwargs,message", [
    ({"kernel_size": 4}, "`kernel_size` must be an odd integer >= 1, got 4"),
    ({"kernel_size": 0}, "`kernel_size` must be an odd integer >= 1, got 0"),
    ({"scale_factor": 0}, "`scale_factor` must be an integer >= 1, got 0"),
    ({"encoder_kernel_size": 2}, "`encoder_kernel_size` must be an odd integer >= 1, got 2"),
    ({"compressed_channels": 0}, "`compressed_channels` must be an integer >= 1, got 0"),
    ({"group_size": 0}, "`group_size` must be an integer >= 1, got 0"),
    ({"data_format": "NHWC"}, "`data_format` must be 'channels_last', 'channels_first' or "
                              "None, got 'NHWC'"),
    ({"implementation": "cuda"}, "`implementation` must be one of 'auto', 'op', "
                                 "'fallback', 'portable', got 'cuda'"),
])
def test_bad_constructor_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        CARAFE(**kwargs)


def test_non_integer_scale_factor_is_rejected():
    with pytest.raises(TypeError, match="`scale_factor` must be an int, got 2.0"):
        CARAFE(scale_factor=2.0)


@pytest.mark.parametrize("shape,message", [
    ((None, 8, 8), "CARAFE expects 4D input"),
    ((None, 4, 8, 8, 3), "CARAFE expects 4D input"),
    ((None, 8, 8, None), "CARAFE needs a known channel dimension"),
    ((None, 8, 8, 6), r"input channels \(6\) must be divisible by `group_size` \(4\)"),
])
def test_bad_input_shapes_are_rejected_at_build_time(shape, message):
    with pytest.raises(ValueError, match=message):
        CARAFE(group_size=4).build(shape)


def test_bad_input_rank_is_rejected_when_called(rng):
    with pytest.raises(ValueError, match="expected ndim=4"):
        CARAFE()(_input(rng, (2, 8, 8)))


def test_channels_first_checks_the_channel_axis():
    with pytest.raises(ValueError, match=r"input channels \(6\) must be divisible"):
        CARAFE(group_size=4, data_format="channels_first").build((None, 6, 8, 8))


def test_compute_kernels_accepts_an_unbuilt_layer(rng):
    kernels = CARAFE(2, 3).compute_kernels(tf.constant(_input(rng, (1, 2, 3, 4))))
    assert kernels.shape == (1, 4, 6, 1, 3, 3)

"""CARAFE under Keras mixed-precision policies."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_carafe import CARAFE

POLICIES = {"mixed_float16": tf.float16, "mixed_bfloat16": tf.bfloat16}


@pytest.fixture(params=sorted(POLICIES))
def policy(request):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(request.param)
    yield request.param
    keras.config.set_dtype_policy(previous)


def test_computes_in_the_policy_dtype_with_float32_variables(rng, policy):
    layer = CARAFE(2, 3, compressed_channels=4)
    y = layer(rng.standard_normal((1, 4, 5, 8)).astype("float32"))
    assert y.dtype == POLICIES[policy]
    assert {v.dtype for v in layer.weights} == {"float32"}
    assert layer.compute_kernels(np.ones((1, 2, 2, 8), "float32")).dtype == POLICIES[policy]


def test_softmax_runs_in_float32(policy):
    layer = CARAFE(2, 3, compressed_channels=4)
    fn = tf.function(layer).get_concrete_function(tf.TensorSpec((1, 4, 4, 8), tf.float32))
    softmaxes = [op for op in fn.graph.get_operations() if op.type == "Softmax"]
    assert len(softmaxes) == 1
    assert softmaxes[0].get_attr("T") == tf.float32


def test_float64_layer_keeps_float64_kernels(rng):
    layer = CARAFE(2, 3, compressed_channels=4, dtype="float64",
                   encoder_kernel_initializer="glorot_uniform")
    x = rng.standard_normal((1, 4, 4, 8))
    fn = tf.function(layer).get_concrete_function(tf.TensorSpec(x.shape, tf.float64))
    softmaxes = [op for op in fn.graph.get_operations() if op.type == "Softmax"]
    assert [op.get_attr("T") for op in softmaxes] == [tf.float64]
    kernels = layer.compute_kernels(x).numpy()
    assert kernels.dtype == np.float64
    np.testing.assert_allclose(kernels.sum(axis=(-2, -1)), 1.0, rtol=0, atol=1e-12)


def test_output_agrees_with_float32(rng, policy):
    x = rng.standard_normal((2, 6, 5, 8)).astype("float32")
    low = CARAFE(2, 5, compressed_channels=8, encoder_kernel_initializer="glorot_uniform")
    y_low = low(x)
    full = CARAFE(2, 5, compressed_channels=8, dtype="float32")
    full.build(x.shape)
    full.set_weights(low.get_weights())
    y_full = full(x).numpy()
    # bfloat16 keeps 8 mantissa bits: inputs, weights and outputs round at ~2**-8.
    tolerance = 2e-2 if policy == "mixed_float16" else 6e-2
    np.testing.assert_allclose(tf.cast(y_low, tf.float32), y_full,
                               atol=tolerance * np.abs(y_full).max())


def test_training_reduces_the_loss(rng, policy):
    keras.utils.set_random_seed(3)
    x = rng.standard_normal((16, 6, 6, 4)).astype("float32")
    y = tf.image.resize(x, (12, 12)).numpy()
    inputs = keras.Input((6, 6, 4))
    up = CARAFE(2, 3, compressed_channels=8)(keras.layers.Conv2D(8, 3, padding="same")(inputs))
    outputs = keras.layers.Conv2D(4, 1, dtype="float32")(up)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=8, epochs=15, verbose=0)
    after = model.evaluate(x, y, verbose=0)
    assert np.isfinite(after) and after < 0.6 * before, (before, after)


def test_float64_layer_keeps_its_softmax_in_float64():
    layer = CARAFE(2, 3, compressed_channels=4, dtype="float64")
    fn = tf.function(layer).get_concrete_function(tf.TensorSpec((1, 4, 4, 8), tf.float64))
    softmaxes = [op for op in fn.graph.get_operations() if op.type == "Softmax"]
    assert [op.get_attr("T") for op in softmaxes] == [tf.float64]

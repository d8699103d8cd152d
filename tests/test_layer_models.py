"""CARAFE inside Keras models: the three model styles, training, gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_carafe import CARAFE


def _upsampling_task(rng, n=16, size=6, channels=4):
    """Targets are a fixed smooth upsampling of the inputs: learnable by CARAFE."""
    x = rng.standard_normal((n, size, size, channels)).astype("float32")
    y = tf.image.resize(x, (2 * size, 2 * size), method="bilinear").numpy()
    return x, y


def _functional(channels=4, **layer_kwargs):
    inputs = keras.Input((None, None, channels))
    features = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    up = CARAFE(2, 3, compressed_channels=8, **layer_kwargs)(features)
    return keras.Model(inputs, keras.layers.Conv2D(channels, 1)(up))


class Decoder(keras.Model):
    def __init__(self, channels):
        super().__init__()
        self.stem = keras.layers.Conv2D(8, 3, padding="same")
        self.up = CARAFE(2, 3, compressed_channels=8)
        self.head = keras.layers.Conv2D(channels, 1)

    def call(self, x):
        return self.head(self.up(self.stem(x)))


def _sequential(channels=4):
    return keras.Sequential([
        keras.Input((None, None, channels)),
        keras.layers.Conv2D(8, 3, padding="same"),
        CARAFE(2, 3, compressed_channels=8),
        keras.layers.Conv2D(channels, 1),
    ])


@pytest.mark.parametrize("build_model", [_functional, _sequential, Decoder],
                         ids=["functional", "sequential", "subclassed"])
def test_fit_reduces_the_loss(rng, build_model):
    keras.utils.set_random_seed(1)
    x, y = _upsampling_task(rng)
    model = build_model(4)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    before = model.evaluate(x, y, verbose=0)
    history = model.fit(x, y, batch_size=8, epochs=15, verbose=0)
    after = model.evaluate(x, y, verbose=0)
    assert after < 0.5 * before, (before, history.history["loss"][-3:], after)
    assert model.predict(x, verbose=0).shape == y.shape


def test_gradients_reach_the_encoder_weights_and_the_input(rng):
    layer = CARAFE(2, 3, compressed_channels=4, encoder_kernel_initializer="glorot_uniform")
    x = tf.constant(rng.standard_normal((2, 5, 5, 4)).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x) ** 2)
    grads = tape.gradient(loss, [x] + layer.trainable_weights)
    assert len(layer.trainable_weights) == 4
    for g in grads:
        assert g is not None
        assert float(tf.reduce_max(tf.abs(g))) > 0


def _layer_output_and_gradients(x, upstream, implementation, weights=None):
    layer = CARAFE(2, 5, compressed_channels=6, group_size=2, implementation=implementation,
                   encoder_kernel_initializer="glorot_uniform")
    layer.build(x.shape)
    if weights is not None:
        layer.set_weights(weights)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * upstream)
    grads = tape.gradient(loss, [x] + layer.trainable_weights)
    return layer.get_weights(), y.numpy(), [g.numpy() for g in grads]


def test_op_and_fallback_give_the_same_outputs_and_weight_gradients(rng):
    x = tf.constant(rng.standard_normal((2, 7, 6, 8)).astype("float32"))
    upstream = tf.constant(rng.standard_normal((2, 14, 12, 8)).astype("float32"))
    weights, y_op, g_op = _layer_output_and_gradients(x, upstream, "op")
    _, y_fb, g_fb = _layer_output_and_gradients(x, upstream, "fallback", weights)
    np.testing.assert_allclose(y_op, y_fb, atol=1e-5)
    for a, b in zip(g_op, g_fb):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())

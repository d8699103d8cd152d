"""CARAFE and XLA: which path runs where, and that each works."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.trainers.trainer import model_supports_jit

from keras_carafe import CARAFE


def _model(implementation):
    inputs = keras.Input((6, 6, 4))
    up = CARAFE(2, 3, compressed_channels=4, implementation=implementation,
                encoder_kernel_initializer="glorot_uniform")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(4, 1)(up))


def _data(rng):
    x = rng.standard_normal((8, 6, 6, 4)).astype("float32")
    return x, tf.image.resize(x, (12, 12)).numpy()


def test_keras_auto_jit_leaves_xla_off_for_the_compiled_op():
    # With a GPU present, Keras's jit_compile="auto" asks exactly this.
    assert not model_supports_jit(_model("auto"))
    assert not model_supports_jit(_model("op"))


@pytest.mark.parametrize("implementation", ["fallback", "portable"])
def test_fallback_and_portable_layers_let_keras_compile_with_xla(implementation):
    assert model_supports_jit(_model(implementation))


@pytest.mark.parametrize("implementation", ["fallback", "portable"])
def test_fit_with_xla(rng, implementation):
    x, y = _data(rng)
    model = _model(implementation)
    model.compile(optimizer="adam", loss="mse", jit_compile=True)
    assert model.jit_compile is True
    expected = model(x).numpy()
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-5)
    history = model.fit(x, y, epochs=3, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_jit_compile_true_with_auto_falls_back_to_no_xla_and_trains(rng):
    x, y = _data(rng)
    model = _model("auto")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.compile(optimizer="adam", loss="mse", jit_compile=True)
    assert model.jit_compile is False
    assert any("jit_compile" in str(w.message) for w in caught)
    history = model.fit(x, y, epochs=3, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_explicit_xla_function_runs_the_portable_path_with_auto(rng):
    x, _ = _data(rng)
    model = _model("auto")
    expected = model(x).numpy()
    jitted = tf.function(model, jit_compile=True)
    np.testing.assert_allclose(jitted(x).numpy(), expected, atol=1e-5)
    graph = jitted.get_concrete_function(tf.TensorSpec(x.shape)).graph
    op_types = {op.type for op in graph.get_operations()}
    assert "KerasCarafeReassemble" not in op_types
    assert "ExtractImagePatches" not in op_types


def test_explicit_xla_function_rejects_the_op(rng):
    x, _ = _data(rng)
    model = _model("op")
    with pytest.raises(ValueError, match="implementation='op' cannot run inside an "
                                         "XLA-compiled function"):
        tf.function(model, jit_compile=True)(x)

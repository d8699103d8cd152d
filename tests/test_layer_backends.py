"""The CARAFE layer on the active Keras backend: values, gradients, training, XLA,
float64, channels_first, `.keras` files (also across backends) and the kernel helpers.

This module runs unchanged with KERAS_BACKEND=tensorflow, jax and torch.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from autodiff import BACKEND, float64_enabled, to_float64
from carafe_reference import carafe_reference
from keras_carafe import CARAFE
from keras_carafe.ops.implementation import resolve
from keras_carafe.visualize import layer_kernels

REPO = Path(__file__).resolve().parent.parent
BACKENDS = ("tensorflow", "jax", "torch")


def _layer(**kwargs):
    settings = dict(compressed_channels=4, encoder_kernel_initializer="glorot_uniform")
    settings.update(kwargs)
    return CARAFE(**settings)


def _model(input_shape=(None, None, 6), **kwargs):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(6, 3, padding="same")(inputs)
    x = _layer(**kwargs)(x)
    return keras.Model(inputs, keras.layers.Conv2D(3, 1)(x))


def _flat(kernels):
    return kernels.reshape(kernels.shape[:3] + (-1,))


@pytest.mark.parametrize("scale_factor, kernel_size, group_size, height, width", [
    (2, 5, 1, 6, 7),
    (3, 3, 2, 5, 4),
    (2, 3, 4, 3, 3),
    (1, 5, 2, 5, 2),
])
def test_output_is_the_reassembly_of_the_input_with_the_predicted_kernels(
        rng, scale_factor, kernel_size, group_size, height, width):
    x = rng.standard_normal((2, height, width, 8)).astype("float32")
    layer = _layer(scale_factor=scale_factor, kernel_size=kernel_size, group_size=group_size)
    y = to_float64(layer(x))
    kernels = to_float64(layer.compute_kernels(x))
    assert kernels.shape == (2, height * scale_factor, width * scale_factor, group_size,
                             kernel_size, kernel_size)
    np.testing.assert_allclose(kernels.sum(axis=(-2, -1)), 1.0, atol=1e-6)
    np.testing.assert_allclose(
        y, carafe_reference(x, _flat(kernels), scale_factor, kernel_size, group_size),
        atol=1e-5)


def test_channels_first_equals_channels_last_transposed(rng):
    x = rng.standard_normal((2, 5, 4, 6)).astype("float32")
    last = _layer(scale_factor=3, kernel_size=3, group_size=2, data_format="channels_last")
    first = _layer(scale_factor=3, kernel_size=3, group_size=2, data_format="channels_first")
    last.build(x.shape)
    first.build((2, 6, 5, 4))
    first.set_weights(last.get_weights())
    y_first = to_float64(first(np.transpose(x, (0, 3, 1, 2))))
    np.testing.assert_allclose(np.transpose(y_first, (0, 2, 3, 1)), to_float64(last(x)),
                               atol=1e-6)


def test_float64_layer_computes_kernels_and_output_in_float64(rng):
    with float64_enabled():
        x = rng.standard_normal((2, 4, 5, 6))
        layer = _layer(scale_factor=2, kernel_size=5, group_size=2, dtype="float64")
        y = layer(x)
        kernels = layer.compute_kernels(x)
        assert keras.backend.standardize_dtype(y.dtype) == "float64"
        assert keras.backend.standardize_dtype(kernels.dtype) == "float64"
        logits = to_float64(layer.encoder(layer.compressor(keras.ops.convert_to_tensor(x))))
        # The softmax of the pixel-shuffled logits, in float64 NumPy.
        logits = logits.reshape(2, 4, 5, 2, 2, 2, 25).transpose(0, 1, 3, 2, 4, 5, 6)
        logits = logits.reshape(2, 8, 10, 2, 25)
        expected = np.exp(logits - logits.max(axis=-1, keepdims=True))
        expected /= expected.sum(axis=-1, keepdims=True)
        # A float32 softmax would be off by ~1e-9 here.
        np.testing.assert_allclose(to_float64(kernels).reshape(expected.shape), expected,
                                   rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(
            to_float64(y), carafe_reference(x, expected.reshape(2, 8, 10, 50), 2, 5, 2),
            rtol=1e-12, atol=1e-12)


def _training_data(rng):
    x = rng.standard_normal((16, 6, 6, 6)).astype("float32")
    # Target: nearest-neighbour enlargement of the first three channels.
    y = x[..., :3].repeat(2, axis=1).repeat(2, axis=2)
    return x, y


# Keras's jit_compile on PyTorch is torch.compile with its code generator: about two
# minutes for this model on two cores, most of it the convolutions'.
JIT_COMPILE = [False, pytest.param(True, marks=pytest.mark.slow) if BACKEND == "torch" else True]


@pytest.mark.parametrize("jit_compile", JIT_COMPILE)
def test_fit_reduces_the_loss(rng, jit_compile):
    keras.utils.set_random_seed(1)
    x, y = _training_data(rng)
    # The compiled kernels on JAX and PyTorch, also when Keras compiles the step;
    # TensorFlow's op cannot run under XLA.
    implementation = "portable" if BACKEND == "tensorflow" else "auto"
    if BACKEND != "tensorflow":
        assert resolve("auto") == "op"
    model = _model((6, 6, 6), scale_factor=2, kernel_size=3, implementation=implementation)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", jit_compile=jit_compile)
    assert model.jit_compile is jit_compile
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=8, epochs=10, verbose=0)
    after = model.evaluate(x, y, verbose=0)
    assert np.isfinite(after) and after < 0.7 * before, (before, after)


def test_layer_supports_jit_off_tensorflow():
    layer = _layer()
    assert layer.supports_jit is (BACKEND != "tensorflow")


def test_keras_file_round_trip_gives_identical_outputs(tmp_path, rng):
    model = _model(scale_factor=3, kernel_size=5, group_size=2)
    x = rng.standard_normal((2, 5, 7, 6)).astype("float32")
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(restored.predict(x, verbose=0), expected)


def test_layer_kernels_helper_returns_each_layers_kernels(rng):
    model = _model(scale_factor=2, kernel_size=3, group_size=2)
    x = rng.standard_normal((1, 4, 5, 6)).astype("float32")
    kernels = layer_kernels(model, x)
    [(name, value)] = kernels.items()
    assert value.shape == (1, 8, 10, 2, 3, 3)
    np.testing.assert_allclose(value.sum(axis=(-2, -1)), 1.0, atol=1e-6)


_LOAD_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, keras
    import keras_carafe  # registers the layer class
    model = keras.models.load_model(sys.argv[1])
    y = model.predict(np.load(sys.argv[2]), verbose=0)
    print(json.dumps({"backend": keras.backend.backend(),
                      "err": float(np.abs(y - np.load(sys.argv[3])).max())}))
""")


@pytest.mark.parametrize("target", BACKENDS)
def test_keras_file_saved_here_loads_on_another_backend_with_the_same_outputs(tmp_path, rng,
                                                                              target):
    if target == BACKEND:
        pytest.skip("the same backend is covered by the round-trip test")
    if importlib.util.find_spec(target) is None:
        pytest.skip(f"{target} is not installed in this environment")
    model = _model(scale_factor=2, kernel_size=5, group_size=2)
    x = rng.standard_normal((2, 5, 6, 6)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", model.predict(x, verbose=0))
    model.save(tmp_path / "model.keras")
    env = {**os.environ, "KERAS_BACKEND": target, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get(
               "PYTHONPATH")])])}
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_SCRIPT, str(tmp_path / "model.keras"),
         str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["backend"] == target
    assert report["err"] <= 1e-5

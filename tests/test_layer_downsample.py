"""The CARAFE++ downsampling layer on the active Keras backend: the kernels it
predicts (against a NumPy kernel prediction), the reassembly, output sizes,
formats, precision, training, saving and bad arguments.

This module runs unchanged with KERAS_BACKEND=tensorflow, jax and torch.
"""

import keras
import numpy as np
import pytest

from autodiff import BACKEND, float64_enabled, to_float64
from carafe_reference import carafe_downsample_reference
from keras_carafe import CARAFEDownsample

pytestmark = pytest.mark.all_backends


def _layer(**kwargs):
    settings = dict(compressed_channels=4, encoder_kernel_initializer="glorot_uniform")
    settings.update(kwargs)
    return CARAFEDownsample(**settings)


def _flat(kernels):
    return kernels.reshape(kernels.shape[:3] + (-1,))


def _numpy_kernels(layer, x):
    """The layer's kernel prediction in float64 NumPy, written from its definition:
    1x1 compressor, zero padding of (k_enc - 1) / 2 on every side, a k_enc x k_enc
    cross-correlation with the stride, softmax over each group's k*k logits."""
    compressor_w, compressor_b, encoder_w, encoder_b = (
        np.asarray(w, np.float64) for w in layer.get_weights())
    s, k_enc, k, g = layer.stride, layer.encoder_kernel_size, layer.kernel_size, layer.group_size
    compressed = np.einsum("nhwc,cm->nhwm", x, compressor_w[0, 0]) + compressor_b
    pad = (k_enc - 1) // 2
    padded = np.pad(compressed, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    n, h, w, _ = x.shape
    out_h, out_w = -(-h // s), -(-w // s)
    logits = np.zeros((n, out_h, out_w, encoder_w.shape[-1]))
    for oh in range(out_h):
        for ow in range(out_w):
            # Padded row oh*s + i is input row oh*s + i - pad: the window is
            # centred on input pixel (oh*s, ow*s).
            window = padded[:, oh * s:oh * s + k_enc, ow * s:ow * s + k_enc]
            logits[:, oh, ow] = np.einsum("nijc,ijco->no", window, encoder_w) + encoder_b
    grouped = logits.reshape(n, out_h, out_w, g, k * k)
    weights = np.exp(grouped - grouped.max(axis=-1, keepdims=True))
    return (weights / weights.sum(axis=-1, keepdims=True)).reshape(n, out_h, out_w, g * k * k)


@pytest.mark.parametrize("stride, kernel_size, encoder_kernel_size, group_size, height, width", [
    (2, 5, 3, 1, 8, 8),     # even sizes: where "same" padding would be off centre
    (2, 5, 3, 2, 7, 9),     # odd sizes
    (2, 3, 5, 4, 6, 5),
    (3, 5, 3, 1, 8, 7),     # stride 3, sizes neither multiples of 3 nor 1 more
    (3, 3, 1, 2, 9, 4),
    (4, 7, 3, 1, 9, 10),
    (1, 3, 3, 1, 4, 5),     # stride 1: a content-aware filter of the same size
])
def test_kernels_are_predicted_by_an_encoder_centred_on_the_source_pixel(
        rng, stride, kernel_size, encoder_kernel_size, group_size, height, width):
    with float64_enabled():
        x = rng.standard_normal((2, height, width, 8))
        layer = _layer(stride=stride, kernel_size=kernel_size,
                       encoder_kernel_size=encoder_kernel_size, group_size=group_size,
                       dtype="float64")
        kernels = to_float64(layer.compute_kernels(x))
        expected = _numpy_kernels(layer, x)
        np.testing.assert_allclose(_flat(kernels), expected, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(
            to_float64(layer(x)),
            carafe_downsample_reference(x, expected, stride, kernel_size, group_size),
            rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("stride, height, width", [(2, 8, 8), (2, 7, 9), (3, 10, 5), (4, 1, 3)])
def test_output_has_ceil_of_size_over_stride_pixels(rng, stride, height, width):
    x = rng.standard_normal((2, height, width, 6)).astype("float32")
    layer = _layer(stride=stride)
    expected = (2, -(-height // stride), -(-width // stride), 6)
    assert tuple(layer(x).shape) == expected
    assert layer.compute_output_shape(x.shape) == expected
    assert layer.compute_output_shape((None, None, width, 6)) == (
        None, None, -(-width // stride), 6)
    assert layer.compute_kernels(x).shape == expected[:3] + (1, 5, 5)


def test_channels_first_equals_channels_last_transposed(rng):
    x = rng.standard_normal((2, 7, 6, 6)).astype("float32")
    last = _layer(stride=2, kernel_size=3, group_size=2, data_format="channels_last")
    first = _layer(stride=2, kernel_size=3, group_size=2, data_format="channels_first")
    last.build(x.shape)
    first.build((2, 6, 7, 6))
    first.set_weights(last.get_weights())
    y_first = to_float64(first(np.transpose(x, (0, 3, 1, 2))))
    np.testing.assert_allclose(np.transpose(y_first, (0, 2, 3, 1)), to_float64(last(x)),
                               atol=1e-6)


def test_unknown_spatial_size_in_a_functional_model(rng):
    inputs = keras.Input((None, None, 6))
    outputs = _layer(stride=2)(inputs)
    assert tuple(outputs.shape) == (None, None, None, 6)
    model = keras.Model(inputs, outputs)
    for height, width in ((5, 8), (6, 3)):
        y = model.predict(rng.standard_normal((1, height, width, 6)).astype("float32"),
                          verbose=0)
        assert y.shape == (1, -(-height // 2), -(-width // 2), 6)


def test_mixed_float16_computes_in_float16_close_to_float32(rng):
    x = rng.standard_normal((2, 8, 7, 8)).astype("float32")
    reference = _layer(stride=2)
    expected = to_float64(reference(x))
    mixed = _layer(stride=2, dtype="mixed_float16")
    mixed.build(x.shape)
    mixed.set_weights(reference.get_weights())
    y = mixed(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    assert mixed.compressor.kernel.dtype == "float32"
    np.testing.assert_allclose(to_float64(y), expected, atol=2e-2)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_reduces_the_loss(rng, jit_compile):
    if jit_compile and BACKEND == "torch":
        pytest.skip("Keras's jit_compile on PyTorch is torch.compile, which this test does "
                    "not cover")
    keras.utils.set_random_seed(3)
    x = rng.standard_normal((16, 8, 8, 6)).astype("float32")
    # Target: the maximum over each 2 x 2 block of the first three channels,
    # which a content-aware kernel can pick and a fixed average cannot.
    y = x[..., :3].reshape(16, 4, 2, 4, 2, 3).max(axis=(2, 4))
    implementation = "portable" if BACKEND == "tensorflow" else "auto"
    inputs = keras.Input((8, 8, 6))
    h = _layer(stride=2, kernel_size=3, implementation=implementation)(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(h))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", jit_compile=jit_compile)
    assert model.jit_compile is jit_compile
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=8, epochs=15, verbose=0)
    after = model.evaluate(x, y, verbose=0)
    assert np.isfinite(after) and after < 0.7 * before, (before, after)


def test_keras_file_round_trip_gives_identical_outputs(tmp_path, rng):
    inputs = keras.Input((None, None, 6))
    model = keras.Model(inputs, _layer(stride=3, kernel_size=5, group_size=2)(inputs))
    x = rng.standard_normal((2, 7, 8, 6)).astype("float32")
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(restored.predict(x, verbose=0), expected)
    assert restored.layers[1].get_config() == model.layers[1].get_config()


def test_config_round_trip_keeps_every_argument():
    layer = CARAFEDownsample(stride=3, kernel_size=7, encoder_kernel_size=5,
                             compressed_channels=8, group_size=2, data_format="channels_first",
                             encoder_bias_initializer="ones", compressor_kernel_regularizer="l2",
                             name="down")
    clone = CARAFEDownsample.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert (clone.stride, clone.kernel_size, clone.encoder_kernel_size) == (3, 7, 5)


def test_cost_counts_the_layers_parameters():
    layer = _layer(stride=2, kernel_size=5, group_size=2, compressed_channels=16)
    layer.build((None, None, None, 32))
    assert layer.cost(40, 30, 32).params == layer.count_params()


def test_defaults_are_stride_2_k5_encoder_3_and_16_compressed_channels():
    layer = CARAFEDownsample()
    assert (layer.stride, layer.kernel_size, layer.encoder_kernel_size,
            layer.compressed_channels, layer.group_size) == (2, 5, 3, 16, 1)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(stride=0), ValueError, "`stride` must be an integer >= 1, got 0"),
    (dict(stride=2.0), TypeError, "`stride` must be an int"),
    (dict(kernel_size=4), ValueError, "`kernel_size` must be an odd integer >= 1, got 4"),
    (dict(encoder_kernel_size=2), ValueError,
     "`encoder_kernel_size` must be an odd integer >= 1, got 2"),
    (dict(compressed_channels=0), ValueError, "`compressed_channels` must be an integer >= 1"),
    (dict(group_size=0), ValueError, "`group_size` must be an integer >= 1, got 0"),
    (dict(data_format="NHWC"), ValueError, "`data_format` must be 'channels_last'"),
    (dict(implementation="cuda"), ValueError, "`implementation` must be one of"),
])
def test_bad_arguments_are_rejected_with_the_argument_named(kwargs, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        CARAFEDownsample(**kwargs)


def test_channels_not_divisible_by_group_size_are_rejected_at_build():
    with pytest.raises(ValueError, match=r"input channels \(6\) must be divisible by "
                                         r"`group_size` \(4\)"):
        CARAFEDownsample(group_size=4).build((None, 8, 8, 6))


def test_unknown_channels_are_rejected_at_build():
    with pytest.raises(ValueError, match="CARAFEDownsample needs a known channel dimension"):
        CARAFEDownsample().build((None, 8, 8, None))

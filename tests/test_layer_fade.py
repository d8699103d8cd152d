"""The FADE layer on the active Keras backend: the official forward pass (NumPy, float64) on
loaded official parameters, formats, sizes, precision, training, saving, costs and bad input.

This module runs unchanged with KERAS_BACKEND=tensorflow, jax and torch.
"""

import keras
import numpy as np
import pytest

from autodiff import BACKEND, float64_enabled, to_float64
from carafe_reference import carafe_reference
from keras_carafe import FADE, backend, load_official_weights
from official_reference import fade_forward, random_fade_parameters

pytestmark = pytest.mark.all_backends

IMPLEMENTATIONS = backend.current().IMPLEMENTATIONS

# (channels, scale_factor, kernel_size, embedding_channels, encoder_kernel_size, gated,
#  decoder height, decoder width)
CONFIGS = [
    (6, 2, 5, 8, 3, True, 5, 4),     # the official defaults but the embedding, odd height
    (4, 2, 3, 4, 3, True, 3, 5),
    (5, 3, 5, 6, 5, True, 3, 2),     # scale 3, 5x5 semi-shift encoder
    (6, 2, 5, 8, 3, False, 4, 3),    # SemiShiftUp: no gate
    (3, 1, 3, 4, 1, True, 4, 4),     # scale 1
]
CONFIG_IDS = ["c{}-s{}-k{}-e{}-enc{}-gated{}-{}x{}".format(*c) for c in CONFIGS]


def _nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


def _nchw(x):
    return np.transpose(x, (0, 3, 1, 2))


def _built(channels, scale_factor=2, kernel_size=5, embedding_channels=8, encoder_kernel_size=3,
           gated=True, data_format="channels_last", **kwargs):
    layer = FADE(scale_factor, kernel_size, embedding_channels, encoder_kernel_size, gated,
                 data_format=data_format, **kwargs)
    shape = (None, None, None, channels) if data_format == "channels_last" else (
        None, channels, None, None)
    layer.build(shape, shape)
    return layer


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_computes_the_official_forward_pass_on_official_parameters(rng, config, implementation):
    c, s, k, e, k_enc, gated, h, w = config
    with float64_enabled():
        params = random_fade_parameters(rng, c, e, k, k_enc, gated)
        layer = _built(c, s, k, e, k_enc, gated, dtype="float64", implementation=implementation)
        load_official_weights(layer, params)
        encoder = rng.standard_normal((2, c, h * s, w * s))
        decoder = rng.standard_normal((2, c, h, w))
        y = to_float64(layer(_nhwc(encoder), _nhwc(decoder)))
    np.testing.assert_allclose(_nchw(y), fade_forward(encoder, decoder, params, s, k, gated),
                               rtol=1e-11, atol=1e-12)


def test_channels_first_layer_takes_and_returns_the_official_layout(rng):
    with float64_enabled():
        params = random_fade_parameters(rng, 6, 8)
        layer = _built(6, data_format="channels_first", dtype="float64")
        load_official_weights(layer, params)
        encoder, decoder = rng.standard_normal((1, 6, 6, 8)), rng.standard_normal((1, 6, 3, 4))
        y = to_float64(layer(encoder, decoder))
    np.testing.assert_allclose(y, fade_forward(encoder, decoder, params), rtol=1e-11, atol=1e-12)


def test_output_is_the_gated_blend_of_the_encoder_feature_and_the_reassembly(rng):
    encoder = rng.standard_normal((2, 8, 6, 4)).astype("float32")
    decoder = rng.standard_normal((2, 4, 3, 4)).astype("float32")
    layer = FADE(embedding_channels=4)
    y = to_float64(layer(encoder, decoder))
    kernels = to_float64(layer.compute_kernels(encoder, decoder))
    assert kernels.shape == (2, 8, 6, 1, 5, 5)
    np.testing.assert_allclose(kernels.sum(axis=(-2, -1)), 1.0, atol=1e-6)
    upsampled = carafe_reference(decoder, kernels.reshape(2, 8, 6, 25), 2, 5, 1)
    gate_logits = to_float64(layer.gate(decoder)).repeat(2, axis=1).repeat(2, axis=2)
    gate = 1 / (1 + np.exp(-gate_logits))
    np.testing.assert_allclose(y, gate * encoder + (1 - gate) * upsampled, atol=1e-5)


def test_unknown_spatial_size_in_a_functional_model(rng):
    encoder, decoder = keras.Input((None, None, 6)), keras.Input((None, None, 6))
    outputs = FADE(embedding_channels=4)(encoder, decoder)
    assert tuple(outputs.shape) == (None, None, None, 6)
    model = keras.Model([encoder, decoder], outputs)
    for height, width in ((3, 5), (4, 2)):
        y = model.predict([rng.standard_normal((1, 2 * height, 2 * width, 6)),
                           rng.standard_normal((1, height, width, 6))], verbose=0)
        assert y.shape == (1, 2 * height, 2 * width, 6)


def test_mixed_float16_computes_in_float16_close_to_float32(rng):
    encoder = rng.standard_normal((2, 8, 6, 8)).astype("float32")
    decoder = rng.standard_normal((2, 4, 3, 8)).astype("float32")
    full = FADE(embedding_channels=8)
    expected = to_float64(full(encoder, decoder))
    mixed = FADE(embedding_channels=8, dtype="mixed_float16")
    mixed.build(encoder.shape, decoder.shape)
    mixed.set_weights(full.get_weights())
    y = mixed(encoder, decoder)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    assert {v.dtype for v in mixed.weights} == {"float32"}
    np.testing.assert_allclose(to_float64(y), expected, atol=2e-2 * np.abs(expected).max())


# Keras's jit_compile on PyTorch is torch.compile, which these tests do not cover.
JIT_COMPILE = [False] if BACKEND == "torch" else [False, True]


@pytest.mark.parametrize("jit_compile", JIT_COMPILE)
def test_fit_reduces_the_loss(rng, jit_compile):
    keras.utils.set_random_seed(2)
    decoder = rng.standard_normal((16, 6, 6, 4)).astype("float32")
    encoder = rng.standard_normal((16, 12, 12, 4)).astype("float32")
    # Target: the decoder feature's nearest-neighbour enlargement.
    target = decoder.repeat(2, axis=1).repeat(2, axis=2)
    implementation = "portable" if BACKEND == "tensorflow" else "auto"
    inputs = [keras.Input((12, 12, 4)), keras.Input((6, 6, 4))]
    model = keras.Model(inputs, FADE(embedding_channels=8, implementation=implementation)(*inputs))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", jit_compile=jit_compile)
    before = model.evaluate([encoder, decoder], target, verbose=0)
    model.fit([encoder, decoder], target, batch_size=8, epochs=15, verbose=0)
    after = model.evaluate([encoder, decoder], target, verbose=0)
    assert np.isfinite(after) and after < 0.7 * before, (before, after)


def test_keras_file_round_trip_gives_identical_outputs(tmp_path, rng):
    inputs = [keras.Input((None, None, 6)), keras.Input((None, None, 6))]
    model = keras.Model(inputs, FADE(scale_factor=3, kernel_size=3, embedding_channels=4,
                                     name="fade")(*inputs))
    data = [rng.standard_normal((2, 9, 6, 6)).astype("float32"),
            rng.standard_normal((2, 3, 2, 6)).astype("float32")]
    expected = model.predict(data, verbose=0)
    model.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(restored.predict(data, verbose=0), expected)
    assert restored.get_layer("fade").get_config() == model.get_layer("fade").get_config()


def test_config_round_trip_keeps_every_argument():
    layer = FADE(scale_factor=3, kernel_size=3, embedding_channels=16, encoder_kernel_size=5,
                 gated=False, data_format="channels_first", implementation="portable",
                 kernel_initializer="he_normal", bias_regularizer="l2", name="fade")
    clone = FADE.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert (clone.scale_factor, clone.kernel_size, clone.embedding_channels,
            clone.encoder_kernel_size, clone.gated) == (3, 3, 16, 5, False)


def test_defaults_are_the_official_ones():
    layer = FADE()
    assert (layer.scale_factor, layer.kernel_size, layer.embedding_channels,
            layer.encoder_kernel_size, layer.gated) == (2, 5, 64, 3, True)


@pytest.mark.parametrize("gated", [True, False])
def test_cost_counts_the_layers_parameters(gated):
    layer = _built(32, embedding_channels=16, gated=gated)
    assert layer.cost(20, 10, 32).params == layer.count_params()


def test_cost_grows_with_the_output_pixels():
    layer = FADE()
    small, large = layer.cost(16, 16, 64), layer.cost(32, 32, 64)
    assert large.params == small.params
    assert large.flops == 4 * small.flops


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(scale_factor=0), ValueError, "`scale_factor` must be an integer >= 1, got 0"),
    (dict(kernel_size=4), ValueError, "`kernel_size` must be an odd integer >= 1, got 4"),
    (dict(embedding_channels=0), ValueError, "`embedding_channels` must be an integer >= 1"),
    (dict(encoder_kernel_size=2), ValueError, "`encoder_kernel_size` must be an odd integer"),
    (dict(gated="yes"), TypeError, "`gated` must be a bool, got 'yes'"),
    (dict(data_format="NHWC"), ValueError, "`data_format` must be 'channels_last'"),
    (dict(implementation="cuda"), ValueError, "`implementation` must be one of"),
])
def test_bad_arguments_are_rejected_with_the_argument_named(kwargs, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        FADE(**kwargs)


@pytest.mark.parametrize("encoder, decoder, message", [
    ((None, 8, 8, 6), (None, 4, 4, 4), r"their channels must be equal; got 6 and 4"),
    ((None, 9, 8, 6), (None, 4, 4, 6), r"`encoder_feature` height \(9\) must be scale_factor \* "
                                       r"`decoder_feature` height = 2 \* 4 = 8"),
    ((None, 8, 6, 6), (None, 4, 4, 6), r"`encoder_feature` width \(6\) must be scale_factor"),
    ((2, 8, 8, 6), (3, 4, 4, 6), r"`encoder_feature` batch \(2\) must equal `decoder_feature`"),
    ((None, 8, 8, None), (None, 4, 4, 6), r"needs a known channel dimension of "
                                          r"`encoder_feature`"),
    ((None, 8, 6), (None, 4, 4, 6), r"expects `encoder_feature` of rank 4"),
])
def test_mismatched_inputs_are_rejected_when_building(encoder, decoder, message):
    with pytest.raises(ValueError, match=message):
        FADE().build(encoder, decoder)


def test_mismatched_sizes_are_rejected_when_called(rng):
    layer = FADE(embedding_channels=4)
    with pytest.raises(ValueError, match=r"`encoder_feature` height \(7\) must be scale_factor"):
        layer(rng.standard_normal((1, 7, 8, 4)).astype("float32"),
              rng.standard_normal((1, 4, 4, 4)).astype("float32"))

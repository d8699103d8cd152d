"""The SAPA layer on the active Keras backend: the official forward pass (NumPy, float64) on
loaded official parameters, formats, sizes, precision, training, saving, costs and bad input.

This module runs unchanged with KERAS_BACKEND=tensorflow, jax and torch.
"""

import keras
import numpy as np
import pytest

from autodiff import BACKEND, float64_enabled, to_float64
from carafe_reference import carafe_reference
from keras_carafe import SAPA, backend, load_official_weights
from official_reference import random_sapa_parameters, sapa_forward
from similarity_reference import local_similarity_reference

pytestmark = pytest.mark.all_backends

IMPLEMENTATIONS = backend.current().IMPLEMENTATIONS

# (decoder channels, encoder channels, scale_factor, kernel_size, embedding_channels,
#  group_size, use_bias, decoder height, decoder width)
CONFIGS = [
    (6, 6, 2, 5, 8, 1, True, 5, 4),     # the official module but the embedding, odd height
    (4, 7, 2, 3, 6, 1, True, 3, 5),     # encoder and decoder channels differ
    (6, 3, 3, 5, 8, 2, True, 3, 2),     # scale 3, two groups
    (8, 5, 2, 3, 4, 4, False, 4, 3),    # four groups, no projection biases
    (3, 3, 1, 3, 4, 1, True, 4, 4),     # scale 1
]
CONFIG_IDS = ["cd{}-ce{}-s{}-k{}-e{}-g{}-bias{}-{}x{}".format(*c) for c in CONFIGS]


def _nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


def _nchw(x):
    return np.transpose(x, (0, 3, 1, 2))


def _built(decoder_channels, encoder_channels=None, data_format="channels_last", **kwargs):
    encoder_channels = encoder_channels or decoder_channels
    layer = SAPA(data_format=data_format, **kwargs)

    def shape(c):
        return (None, None, None, c) if data_format == "channels_last" else (None, c, None, None)

    layer.build(shape(encoder_channels), shape(decoder_channels))
    return layer


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_computes_the_official_forward_pass_on_official_parameters(rng, config, implementation):
    c_d, c_e, s, k, e, g, bias, h, w = config
    with float64_enabled():
        params = random_sapa_parameters(rng, c_d, c_e, e, bias)
        layer = _built(c_d, c_e, scale_factor=s, kernel_size=k, embedding_channels=e,
                       group_size=g, use_bias=bias, dtype="float64",
                       implementation=implementation)
        load_official_weights(layer, params)
        encoder = rng.standard_normal((2, c_e, h * s, w * s))
        decoder = rng.standard_normal((2, c_d, h, w))
        y = to_float64(layer(_nhwc(encoder), _nhwc(decoder)))
    np.testing.assert_allclose(_nchw(y), sapa_forward(encoder, decoder, params, s, k, g),
                               rtol=1e-11, atol=1e-12)


def test_channels_first_layer_takes_and_returns_the_official_layout(rng):
    with float64_enabled():
        params = random_sapa_parameters(rng, 6, 4, 8)
        layer = _built(6, 4, embedding_channels=8, data_format="channels_first", dtype="float64")
        load_official_weights(layer, params)
        encoder, decoder = rng.standard_normal((1, 4, 6, 8)), rng.standard_normal((1, 6, 3, 4))
        y = to_float64(layer(encoder, decoder))
    np.testing.assert_allclose(y, sapa_forward(encoder, decoder, params), rtol=1e-11,
                               atol=1e-12)


def test_kernels_are_the_softmax_of_the_query_key_similarity(rng):
    encoder = rng.standard_normal((2, 8, 6, 5)).astype("float32")
    decoder = rng.standard_normal((2, 4, 3, 4)).astype("float32")
    layer = SAPA(embedding_channels=6, group_size=2)
    y = to_float64(layer(encoder, decoder))
    kernels = to_float64(layer.compute_kernels(encoder, decoder))
    assert kernels.shape == (2, 8, 6, 2, 5, 5)
    def projected(x, gamma, beta, kernel, bias):
        x = x - x.mean(axis=-1, keepdims=True)
        x = x / np.sqrt((x ** 2).mean(axis=-1, keepdims=True) + 1e-5)
        return (x * gamma + beta) @ kernel + bias

    queries = projected(encoder, *map(to_float64, (layer.encoder_gamma, layer.encoder_beta,
                                                   layer.query_kernel, layer.query_bias)))
    keys = projected(decoder, *map(to_float64, (layer.decoder_gamma, layer.decoder_beta,
                                                layer.key_kernel, layer.key_bias)))
    logits = local_similarity_reference(queries, keys, 2, 5, 2).reshape(2, 8, 6, 2, 25)
    expected = np.exp(logits - logits.max(axis=-1, keepdims=True))
    expected /= expected.sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(kernels.reshape(expected.shape), expected, atol=1e-6)
    np.testing.assert_allclose(y, carafe_reference(decoder, expected.reshape(2, 8, 6, 50), 2, 5, 2),
                               atol=1e-5)


def test_output_has_the_decoder_channels_at_the_encoder_size(rng):
    layer = SAPA(embedding_channels=4)
    y = layer(rng.standard_normal((1, 6, 4, 3)).astype("float32"),
              rng.standard_normal((1, 3, 2, 5)).astype("float32"))
    assert tuple(y.shape) == (1, 6, 4, 5)
    assert layer.compute_output_shape((None, None, None, 3), (None, None, None, 5)) == (
        None, None, None, 5)
    first = SAPA(embedding_channels=4, data_format="channels_first")
    assert first.compute_output_shape((1, 3, 6, 4), (1, 5, 3, 2)) == (1, 5, 6, 4)


def test_unknown_spatial_size_in_a_functional_model(rng):
    encoder, decoder = keras.Input((None, None, 3)), keras.Input((None, None, 6))
    outputs = SAPA(embedding_channels=4)(encoder, decoder)
    assert tuple(outputs.shape) == (None, None, None, 6)
    model = keras.Model([encoder, decoder], outputs)
    for height, width in ((3, 5), (4, 2)):
        y = model.predict([rng.standard_normal((1, 2 * height, 2 * width, 3)),
                           rng.standard_normal((1, height, width, 6))], verbose=0)
        assert y.shape == (1, 2 * height, 2 * width, 6)


def test_mixed_float16_computes_in_float16_close_to_float32(rng):
    encoder = rng.standard_normal((2, 8, 6, 8)).astype("float32")
    decoder = rng.standard_normal((2, 4, 3, 8)).astype("float32")
    full = SAPA(embedding_channels=8, kernel_initializer="glorot_uniform")
    expected = to_float64(full(encoder, decoder))
    mixed = SAPA(embedding_channels=8, dtype="mixed_float16")
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
    keras.utils.set_random_seed(4)
    decoder = rng.standard_normal((16, 6, 6, 4)).astype("float32")
    # Target: the decoder feature's nearest-neighbour enlargement. The encoder feature is
    # that enlargement with noise, so that queries can learn to match their own source
    # pixel's key rather than average the neighbourhood.
    target = decoder.repeat(2, axis=1).repeat(2, axis=2)
    encoder = target + 0.1 * rng.standard_normal(target.shape).astype("float32")
    implementation = "portable" if BACKEND == "tensorflow" else "auto"
    inputs = [keras.Input((12, 12, 4)), keras.Input((6, 6, 4))]
    model = keras.Model(inputs, SAPA(embedding_channels=8, kernel_size=3,
                                     implementation=implementation)(*inputs))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", jit_compile=jit_compile)
    before = model.evaluate([encoder, decoder], target, verbose=0)
    model.fit([encoder, decoder], target, batch_size=8, epochs=15, verbose=0)
    after = model.evaluate([encoder, decoder], target, verbose=0)
    assert np.isfinite(after) and after < 0.7 * before, (before, after)


def test_keras_file_round_trip_gives_identical_outputs(tmp_path, rng):
    inputs = [keras.Input((None, None, 3)), keras.Input((None, None, 6))]
    model = keras.Model(inputs, SAPA(scale_factor=3, kernel_size=3, embedding_channels=4,
                                     group_size=2, name="sapa")(*inputs))
    data = [rng.standard_normal((2, 9, 6, 3)).astype("float32"),
            rng.standard_normal((2, 3, 2, 6)).astype("float32")]
    expected = model.predict(data, verbose=0)
    model.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(restored.predict(data, verbose=0), expected)
    assert restored.get_layer("sapa").get_config() == model.get_layer("sapa").get_config()


def test_config_round_trip_keeps_every_argument():
    layer = SAPA(scale_factor=3, kernel_size=3, embedding_channels=16, group_size=4,
                 use_bias=False, epsilon=1e-3, data_format="channels_first",
                 implementation="portable", kernel_regularizer="l2", name="sapa")
    clone = SAPA.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert (clone.group_size, clone.use_bias, clone.epsilon) == (4, False, 1e-3)


def test_defaults_are_the_official_ones():
    layer = SAPA()
    assert (layer.scale_factor, layer.kernel_size, layer.embedding_channels, layer.group_size,
            layer.use_bias, layer.epsilon) == (2, 5, 64, 1, True, 1e-5)


def test_default_projection_kernels_are_normal_with_deviation_0_02():
    layer = _built(256, 256)
    kernel = to_float64(layer.query_kernel)
    assert abs(kernel.std() - 0.02) < 0.001 and abs(kernel.mean()) < 0.001
    assert np.all(to_float64(layer.query_bias) == 0)
    np.testing.assert_array_equal(to_float64(layer.encoder_gamma), 1.0)
    np.testing.assert_array_equal(to_float64(layer.decoder_beta), 0.0)


@pytest.mark.parametrize("use_bias", [True, False])
def test_cost_counts_the_layers_parameters(use_bias):
    layer = _built(32, 16, embedding_channels=8, group_size=2, use_bias=use_bias)
    assert layer.cost(20, 10, 32, encoder_channels=16).params == layer.count_params()


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(scale_factor=0), ValueError, "`scale_factor` must be an integer >= 1, got 0"),
    (dict(kernel_size=2), ValueError, "`kernel_size` must be an odd integer >= 1, got 2"),
    (dict(embedding_channels=0), ValueError, "`embedding_channels` must be an integer >= 1"),
    (dict(embedding_channels=64, group_size=3), ValueError,
     "`embedding_channels` (64) must be divisible by `group_size` (3)"),
    (dict(group_size=0), ValueError, "`group_size` must be an integer >= 1, got 0"),
    (dict(use_bias=1), TypeError, "`use_bias` must be a bool, got 1"),
    (dict(epsilon=0), ValueError, "`epsilon` must be a number > 0, got 0"),
    (dict(data_format="NCHW"), ValueError, "`data_format` must be 'channels_last'"),
    (dict(implementation="xla"), ValueError, "`implementation` must be one of"),
])
def test_bad_arguments_are_rejected_with_the_argument_named(kwargs, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        SAPA(**kwargs)


@pytest.mark.parametrize("encoder, decoder, kwargs, message", [
    ((None, 8, 8, 6), (None, 4, 4, 6), dict(group_size=4),
     r"`decoder_feature` channels \(6\) must be divisible by `group_size` \(4\)"),
    ((None, 8, 7, 6), (None, 4, 4, 6), {}, r"`encoder_feature` width \(7\) must be "
                                           r"scale_factor \* `decoder_feature` width"),
    ((None, 12, 12, 6), (None, 4, 4, 6), {}, r"height \(12\) must be scale_factor"),
    ((None, 8, 8, 6), (None, 4, 4, None), {}, r"needs a known channel dimension of "
                                              r"`decoder_feature`"),
])
def test_mismatched_inputs_are_rejected_when_building(encoder, decoder, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SAPA(**kwargs).build(encoder, decoder)

"""Parameters of the official FADE, SAPA and DySample PyTorch modules in and out of the
layers: the exported state dicts make the official forward pass compute the layer, loading
round-trips, prefixes, FADE's two layouts, and bad state dicts.

This module runs unchanged with KERAS_BACKEND=tensorflow, jax and torch.
"""

import keras
import numpy as np
import pytest

from autodiff import float64_enabled, to_float64
from keras_carafe import DySample, FADE, SAPA, load_official_weights, official_weights
from keras_carafe.official_checkpoints import dysample_initial_positions
from official_reference import (dysample_forward, fade_forward, fade_h2l_forward, init_pos,
                                random_dysample_parameters, random_fade_parameters,
                                random_sapa_parameters, sapa_forward)

pytestmark = pytest.mark.all_backends


def _nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


def _nchw(x):
    return np.transpose(x, (0, 3, 1, 2))


def _fade(channels=6, dtype="float64", **kwargs):
    layer = FADE(embedding_channels=8, dtype=dtype, **kwargs)
    layer.build((None, None, None, channels), (None, None, None, channels))
    return layer


def _sapa(decoder=6, encoder=4, dtype="float64", **kwargs):
    layer = SAPA(embedding_channels=8, dtype=dtype, **kwargs)
    layer.build((None, None, None, encoder), (None, None, None, decoder))
    return layer


def _dysample(channels=8, dtype="float64", **kwargs):
    layer = DySample(dtype=dtype, **kwargs)
    layer.build((None, None, None, channels))
    return layer


def _randomize(layer, rng):
    """Weights of order 1, away from the initial ones, so that every entry matters."""
    for variable in layer.weights:
        variable.assign(rng.uniform(0.5, 1.5, variable.shape)
                        * rng.choice([-1.0, 1.0], variable.shape) / np.sqrt(variable.shape[0]))


# Layer factories and the official forward pass of each on (encoder, decoder) or input.
CASES = {
    "fade": (lambda: _fade(), lambda p, x: fade_forward(*x, p), [(2, 6, 8, 6), (2, 6, 4, 3)]),
    "fade-ungated": (lambda: _fade(gated=False), lambda p, x: fade_forward(*x, p, gated=False),
                     [(1, 6, 6, 8), (1, 6, 3, 4)]),
    "sapa": (lambda: _sapa(), lambda p, x: sapa_forward(*x, p), [(2, 4, 8, 6), (2, 6, 4, 3)]),
    "sapa-groups-no-bias": (lambda: _sapa(group_size=2, use_bias=False),
                            lambda p, x: sapa_forward(*x, p, groups=2),
                            [(1, 4, 6, 6), (1, 6, 3, 3)]),
    "dysample": (lambda: _dysample(), lambda p, x: dysample_forward(x[0], p), [(2, 8, 3, 5)]),
    "dysample-pl-dyscope": (lambda: _dysample(16, style="pl", dynamic_scope=True),
                            lambda p, x: dysample_forward(x[0], p, style="pl", dyscope=True),
                            [(1, 16, 4, 3)]),
}


@pytest.mark.parametrize("case", CASES)
def test_exported_parameters_make_the_official_forward_pass_compute_the_layer(rng, case):
    make, forward, shapes = CASES[case]
    with float64_enabled():
        layer = make()
        _randomize(layer, rng)
        inputs = [rng.standard_normal(shape) for shape in shapes]
        y = _nchw(to_float64(layer(*[_nhwc(x) for x in inputs])))
        expected = forward(official_weights(layer), inputs)
    np.testing.assert_allclose(y, expected, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_export_returns_what_was_loaded(rng, case):
    make, _, _ = CASES[case]
    with float64_enabled():
        source = make()
        _randomize(source, rng)
        params = official_weights(source)
        layer = make()
        load_official_weights(layer, params)
        exported = official_weights(layer)
    assert sorted(exported) == sorted(params)
    for name, value in params.items():
        assert exported[name].dtype == np.float64 and exported[name].flags.c_contiguous
        np.testing.assert_array_equal(exported[name], value, err_msg=name)


def test_exported_names_and_shapes_are_the_official_ones():
    fade = {name: v.shape for name, v in official_weights(_fade(6, "float32")).items()}
    assert fade == {
        "gate_generator.conv.weight": (1, 6, 1, 1), "gate_generator.conv.bias": (1,),
        "ker_generator.compressor_en.weight": (8, 6, 1, 1),
        "ker_generator.compressor_en.bias": (8,),
        "ker_generator.compressor_de.weight": (8, 6, 1, 1),
        "ker_generator.content_encoder.weight": (25, 8, 3, 3),
        "ker_generator.content_encoder.bias": (25,),
    }
    sapa = {name: v.shape for name, v in official_weights(_sapa(6, 4, "float32")).items()}
    assert sapa == {"norm_y.weight": (4,), "norm_y.bias": (4,), "norm_x.weight": (6,),
                    "norm_x.bias": (6,), "q.weight": (8, 4), "q.bias": (8,),
                    "k.weight": (8, 6), "k.bias": (8,)}
    dysample = official_weights(_dysample(8, "float32", dynamic_scope=True))
    assert {name: v.shape for name, v in dysample.items()} == {
        "offset.weight": (32, 8, 1, 1), "offset.bias": (32,), "scope.weight": (32, 8, 1, 1),
        "init_pos": (1, 32, 1, 1)}
    assert {v.dtype for v in dysample.values()} == {np.dtype("float32")}


@pytest.mark.parametrize("scale, groups", [(2, 4), (3, 2), (4, 1), (1, 3)])
def test_dysample_initial_positions_are_the_official_buffer(scale, groups):
    np.testing.assert_allclose(dysample_initial_positions(scale, groups), init_pos(scale, groups),
                               rtol=0, atol=1e-15)


def test_fade_loads_the_h2l_layout_of_the_same_parameters(rng):
    l2h = random_fade_parameters(rng, 6, 8)
    names = {"ker_generator.compressor_en.weight": "kernel_generator.conv1_en.weight",
             "ker_generator.compressor_en.bias": "kernel_generator.conv1_en.bias",
             "ker_generator.compressor_de.weight": "kernel_generator.conv1_de.weight",
             "ker_generator.content_encoder.weight": "kernel_generator.conv2_kernels",
             "ker_generator.content_encoder.bias": "kernel_generator.conv2_bias"}
    h2l = {names.get(name, name): value for name, value in l2h.items()}
    encoder, decoder = rng.standard_normal((2, 6, 8, 8)), rng.standard_normal((2, 6, 4, 4))
    with float64_enabled():
        layer = _fade()
        load_official_weights(layer, h2l)
        y = _nchw(to_float64(layer(_nhwc(encoder), _nhwc(decoder))))
        exported = official_weights(layer)
    # FADE_H2L computes the semi-shift at the low resolution; the result is the same.
    np.testing.assert_allclose(y, fade_h2l_forward(encoder, decoder, h2l), rtol=1e-11,
                               atol=1e-12)
    np.testing.assert_allclose(y, fade_forward(encoder, decoder, l2h), rtol=1e-11, atol=1e-12)
    assert sorted(exported) == sorted(l2h)


def test_prefix_selects_one_module_of_a_larger_state_dict(rng):
    params = random_sapa_parameters(rng, 6, 4, 8)
    prefix = "decode_head.upsamplers.1."
    state_dict = {prefix + name: value for name, value in params.items()}
    state_dict["decode_head.upsamplers.0.q.weight"] = np.zeros((8, 4))
    state_dict["backbone.conv1.weight"] = np.zeros((3, 3, 1, 1))
    with float64_enabled():
        layer = _sapa()
        load_official_weights(layer, state_dict, prefix=prefix)
        exported = official_weights(layer, prefix=prefix)
    assert sorted(exported) == sorted(prefix + name for name in params)
    np.testing.assert_array_equal(exported[prefix + "k.weight"], params["k.weight"])


def test_mixed_precision_layer_loads_into_float32_variables(rng):
    params = random_dysample_parameters(rng, 8)
    layer = _dysample(dtype="mixed_float16")
    load_official_weights(layer, params)
    exported = official_weights(layer)
    assert {v.dtype for v in exported.values()} == {np.dtype("float32")}
    np.testing.assert_allclose(exported["offset.weight"], params["offset.weight"], rtol=1e-6)


def test_anything_numpy_reads_is_accepted(rng):
    params = random_fade_parameters(rng, 6, 8)
    with float64_enabled():
        layer = _fade()
        load_official_weights(layer, {name: value.tolist() for name, value in params.items()})
        np.testing.assert_array_equal(official_weights(layer)["gate_generator.conv.bias"],
                                      params["gate_generator.conv.bias"])


# --- bad state dicts ------------------------------------------------------------------------


def _without(params, name):
    return {key: value for key, value in params.items() if key != name}


BAD = {
    "missing": (lambda r: _fade(), lambda r: _without(random_fade_parameters(r, 6, 8),
                                                      "gate_generator.conv.bias"),
                ValueError, r"`state_dict` lacks 'gate_generator.conv.bias' \(the parameters of "
                            r"the official FADE"),
    "gate-of-an-ungated-layer": (
        lambda r: _fade(gated=False), lambda r: random_fade_parameters(r, 6, 8), ValueError,
        r"unexpected keys 'gate_generator.conv.weight', 'gate_generator.conv.bias'.*pass its "
        r"key prefix as `prefix`"),
    "embedding-shape": (
        lambda r: _fade(), lambda r: random_fade_parameters(r, 6, 16), ValueError,
        r"`state_dict\['ker_generator.compressor_en.weight'\]` has shape \(16, 6, 1, 1\), "
        r"expected \(8, 6, 1, 1\) = \(embedding_channels, channels, 1, 1\) for this layer "
        r"\(scale_factor=2, kernel_size=5, embedding_channels=8, encoder_kernel_size=3, "
        r"gated=True, channels=6\)"),
    "sapa-channels": (
        lambda r: _sapa(6, 4), lambda r: random_sapa_parameters(r, 6, 5, 8), ValueError,
        r"`state_dict\['norm_y.weight'\]` has shape \(5,\), expected \(4,\) = "
        r"\(encoder channels,\)"),
    "sapa-bias-of-a-biasless-layer": (
        lambda r: _sapa(use_bias=False), lambda r: random_sapa_parameters(r, 6, 4, 8),
        ValueError, r"unexpected keys 'q.bias', 'k.bias'"),
    "dysample-groups": (
        lambda r: _dysample(group_size=2), lambda r: random_dysample_parameters(r, 8, groups=4),
        ValueError, r"`state_dict\['offset.weight'\]` has shape \(32, 8, 1, 1\), expected "
                    r"\(16, 8, 1, 1\) = \(2 \* group_size \* scale_factor\*\*2, channels, 1, 1\)"),
    "dysample-init-pos": (
        lambda r: _dysample(), lambda r: {**random_dysample_parameters(r, 8),
                                          "init_pos": np.zeros((1, 32, 1, 1))},
        ValueError, r"`state_dict\['init_pos'\]` is not the official initial positions of "
                    r"scale_factor=2, group_size=4"),
    "integers": (
        lambda r: _dysample(), lambda r: {**random_dysample_parameters(r, 8),
                                          "offset.bias": np.arange(32)},
        TypeError, r"`state_dict\['offset.bias'\]` must hold floating-point values, got dtype "
                   r"int64"),
    "not-a-mapping": (lambda r: _dysample(), lambda r: [np.zeros(3)], TypeError,
                      r"`state_dict` must be a mapping .* got list"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_state_dict_is_rejected_and_nothing_is_assigned(rng, case):
    make, params, error, message = BAD[case]
    with float64_enabled():
        layer = make(rng)
        before = [to_float64(w) for w in layer.weights]
        with pytest.raises(error, match=message):
            load_official_weights(layer, params(rng))
        for old, new in zip(before, layer.weights):
            np.testing.assert_array_equal(old, to_float64(new))


@pytest.mark.parametrize("function", [load_official_weights, official_weights])
def test_unbuilt_layer_is_rejected(function):
    args = ({},) if function is load_official_weights else ()
    with pytest.raises(ValueError, match=r"`layer` must be built .* call it on its inputs"):
        function(SAPA(), *args)


@pytest.mark.parametrize("function", [load_official_weights, official_weights])
def test_other_layers_are_rejected(function):
    args = ({},) if function is load_official_weights else ()
    with pytest.raises(TypeError, match="`layer` must be a keras_carafe FADE, SAPA or DySample "
                                        "layer, got Conv2D"):
        function(keras.layers.Conv2D(4, 3), *args)

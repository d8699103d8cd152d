"""mmcv CARAFEPack parameters in and out of the CARAFE layer."""

import numpy as np
import pytest

from keras_carafe import CARAFE, load_mmcv_weights, mmcv_weights
from mmcv_reference import carafe_pack_forward, random_carafe_pack_parameters

# (channels, scale_factor, up_kernel, up_group, encoder_kernel, encoder_dilation,
#  compressed_channels, height, width)
PACKS = [
    (8, 2, 5, 1, 3, 1, 4, 5, 4),
    (8, 3, 3, 2, 3, 2, 6, 4, 5),
    (12, 2, 3, 4, 5, 1, 5, 3, 6),
    (6, 4, 1, 3, 3, 3, 4, 3, 3),
    (4, 1, 3, 1, 1, 1, 3, 6, 5),
]
PACK_IDS = ["c{}-s{}-k{}-g{}-enc{}-d{}-cm{}-{}x{}".format(*p) for p in PACKS]


def _layer(channels, scale_factor, up_kernel, up_group, encoder_kernel, encoder_dilation,
           compressed_channels, data_format="channels_last", implementation="fallback",
           dtype="float64"):
    layer = CARAFE(scale_factor, up_kernel, encoder_kernel_size=encoder_kernel,
                   compressed_channels=compressed_channels, group_size=up_group,
                   encoder_dilation=encoder_dilation, data_format=data_format,
                   implementation=implementation, dtype=dtype)
    layer.build((None, None, None, channels) if data_format == "channels_last"
                else (None, channels, None, None))
    return layer


def _default_pack(rng, channels=8):
    layer = _layer(channels, 2, 3, 2, 3, 1, 4)
    return layer, random_carafe_pack_parameters(rng, channels, 2, 3, 2, 3, 4)


@pytest.mark.parametrize("implementation", ["fallback", "op"])
@pytest.mark.parametrize("pack", PACKS, ids=PACK_IDS)
def test_loaded_layer_computes_carafe_pack_forward(rng, pack, implementation):
    channels, s, k, g, k_enc, d, c_m, h, w = pack
    params = random_carafe_pack_parameters(rng, channels, s, k, g, k_enc, c_m)
    layer = _layer(channels, s, k, g, k_enc, d, c_m, implementation=implementation)
    load_mmcv_weights(layer, params)
    x = rng.standard_normal((2, channels, h, w))
    expected = carafe_pack_forward(x, params, s, k, g, k_enc, d)
    y = layer(np.transpose(x, (0, 2, 3, 1))).numpy()
    np.testing.assert_allclose(np.transpose(y, (0, 3, 1, 2)), expected, rtol=0, atol=1e-9)


def test_channels_first_layer_loads_the_same_parameters(rng):
    params = random_carafe_pack_parameters(rng, 8, 3, 3, 2, 3, 6)
    layer = _layer(8, 3, 3, 2, 3, 2, 6, data_format="channels_first")
    load_mmcv_weights(layer, params)
    x = rng.standard_normal((1, 8, 4, 3))
    np.testing.assert_allclose(layer(x).numpy(), carafe_pack_forward(x, params, 3, 3, 2, 3, 2),
                               rtol=0, atol=1e-9)


@pytest.mark.parametrize("pack", PACKS, ids=PACK_IDS)
def test_exported_parameters_make_carafe_pack_compute_the_layer(rng, pack):
    channels, s, k, g, k_enc, d, c_m, h, w = pack
    layer = _layer(channels, s, k, g, k_enc, d, c_m)
    # Away from the near-uniform default start, so that the channel order matters.
    layer.encoder.kernel.assign(rng.standard_normal(layer.encoder.kernel.shape))
    layer.encoder.bias.assign(rng.standard_normal(layer.encoder.bias.shape))
    x = rng.standard_normal((1, channels, h, w))
    expected = layer(np.transpose(x, (0, 2, 3, 1))).numpy()
    y = carafe_pack_forward(x, mmcv_weights(layer), s, k, g, k_enc, d)
    np.testing.assert_allclose(np.transpose(y, (0, 2, 3, 1)), expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("pack", PACKS, ids=PACK_IDS)
def test_export_returns_what_was_loaded(rng, pack):
    channels, s, k, g, k_enc, d, c_m, _, _ = pack
    params = random_carafe_pack_parameters(rng, channels, s, k, g, k_enc, c_m)
    layer = _layer(channels, s, k, g, k_enc, d, c_m)
    load_mmcv_weights(layer, params)
    exported = mmcv_weights(layer)
    assert sorted(exported) == sorted(params)
    for name, value in params.items():
        assert exported[name].dtype == np.float64
        np.testing.assert_array_equal(exported[name], value, err_msg=name)


def test_export_is_in_the_variable_dtype_and_pytorch_layout():
    layer = _layer(6, 2, 5, 1, 3, 1, 4, dtype="float32")
    exported = mmcv_weights(layer)
    assert {name: value.shape for name, value in exported.items()} == {
        "channel_compressor.weight": (4, 6, 1, 1),
        "channel_compressor.bias": (4,),
        "content_encoder.weight": (100, 4, 3, 3),
        "content_encoder.bias": (100,),
    }
    assert {value.dtype for value in exported.values()} == {np.dtype("float32")}
    assert all(value.flags.c_contiguous for value in exported.values())


def test_prefix_selects_one_pack_of_a_larger_state_dict(rng):
    layer, params = _default_pack(rng)
    prefix = "neck.upsample_modules.1."
    state_dict = {prefix + name: value for name, value in params.items()}
    state_dict["neck.upsample_modules.0.channel_compressor.weight"] = np.zeros((4, 8, 1, 1))
    state_dict["backbone.conv1.weight"] = np.zeros((3, 3, 1, 1))
    load_mmcv_weights(layer, state_dict, prefix=prefix)
    exported = mmcv_weights(layer, prefix=prefix)
    assert sorted(exported) == sorted(prefix + name for name in params)
    np.testing.assert_array_equal(exported[prefix + "content_encoder.weight"],
                                  params["content_encoder.weight"])


def test_anything_numpy_reads_is_accepted(rng):
    layer, params = _default_pack(rng)
    load_mmcv_weights(layer, {name: value.tolist() for name, value in params.items()})
    np.testing.assert_array_equal(mmcv_weights(layer)["content_encoder.bias"],
                                  params["content_encoder.bias"])


def test_matching_mmcv_config_is_accepted(rng):
    layer, params = _default_pack(rng)
    upsample_cfg = dict(type="carafe", channels=8, scale_factor=2, up_kernel=3, up_group=2,
                        encoder_kernel=3, encoder_dilation=1, compressed_channels=4)
    load_mmcv_weights(layer, params, mmcv_config=upsample_cfg)
    np.testing.assert_array_equal(mmcv_weights(layer)["channel_compressor.bias"],
                                  params["channel_compressor.bias"])


def test_mixed_precision_layer_loads_into_float32_variables(rng):
    layer = _layer(8, 2, 3, 2, 3, 1, 4, dtype="mixed_float16")
    params = random_carafe_pack_parameters(rng, 8, 2, 3, 2, 3, 4)
    load_mmcv_weights(layer, params)
    exported = mmcv_weights(layer)
    assert exported["content_encoder.weight"].dtype == np.float32
    np.testing.assert_allclose(exported["content_encoder.weight"],
                               params["content_encoder.weight"], rtol=1e-6)


def _without(params, name):
    return {key: value for key, value in params.items() if key != name}


def _replaced(params, name, value):
    return {**params, name: value}


@pytest.mark.parametrize("edit,message", [
    (lambda p: _without(p, "content_encoder.bias"),
     r"`state_dict` lacks 'content_encoder.bias'"),
    (lambda p: {**p, "content_encoder.weight_orig": p["content_encoder.weight"]},
     r"unexpected keys 'content_encoder.weight_orig'.*pass its key prefix as `prefix`"),
    (lambda p: _replaced(p, "channel_compressor.weight", np.zeros((4, 6, 1, 1))),
     r"`state_dict\['channel_compressor.weight'\]` has shape \(4, 6, 1, 1\), expected "
     r"\(4, 8, 1, 1\) = \(compressed_channels, input channels, 1, 1\)"),
    (lambda p: _replaced(p, "content_encoder.weight", np.zeros((100, 4, 3, 3))),
     r"`state_dict\['content_encoder.weight'\]` has shape \(100, 4, 3, 3\), expected "
     r"\(72, 4, 3, 3\) = \(scale_factor\*\*2 \* group_size \* kernel_size\*\*2, "
     r"compressed_channels, encoder_kernel_size, encoder_kernel_size\) for this layer "
     r"\(scale_factor=2, kernel_size=3, group_size=2, encoder_kernel_size=3, "
     r"compressed_channels=4, input channels=8\)"),
    (lambda p: _replaced(p, "content_encoder.weight", np.zeros((72, 4, 5, 5))),
     r"expected \(72, 4, 3, 3\)"),
    (lambda p: _replaced(p, "content_encoder.bias", np.zeros((72, 1))),
     r"`state_dict\['content_encoder.bias'\]` has shape \(72, 1\), expected \(72,\)"),
])
def test_bad_state_dict_is_rejected(rng, edit, message):
    layer, params = _default_pack(rng)
    with pytest.raises(ValueError, match=message):
        load_mmcv_weights(layer, edit(params))


def test_integer_values_are_rejected(rng):
    layer, params = _default_pack(rng)
    params["channel_compressor.bias"] = np.arange(4)
    with pytest.raises(TypeError, match=r"`state_dict\['channel_compressor.bias'\]` must hold "
                                        r"floating-point values, got dtype int64"):
        load_mmcv_weights(layer, params)


def test_non_mapping_state_dict_is_rejected(rng):
    layer, params = _default_pack(rng)
    with pytest.raises(TypeError, match="`state_dict` must be a mapping .* got list"):
        load_mmcv_weights(layer, list(params.values()))


@pytest.mark.parametrize("key,value,message", [
    ("encoder_dilation", 2, r"`mmcv_config\['encoder_dilation'\]` is 2 but the layer's "
                            r"`encoder_dilation` is 1: the layer needs encoder_dilation=2"),
    ("up_kernel", 5, r"`mmcv_config\['up_kernel'\]` is 5 but the layer's `kernel_size` is 3"),
    ("up_group", 1, r"`mmcv_config\['up_group'\]` is 1 but the layer's `group_size` is 2"),
    ("scale_factor", 4, r"`mmcv_config\['scale_factor'\]` is 4 but the layer's "
                        r"`scale_factor` is 2"),
    ("channels", 16, r"`mmcv_config\['channels'\]` is 16 but the layer was built for 8 "
                     r"input channels"),
    ("type", "pixel_shuffle", r"`mmcv_config\['type'\]` must be 'carafe'"),
    ("upsample_kernel", 3, r"`mmcv_config` has unknown key 'upsample_kernel'"),
])
def test_mismatched_mmcv_config_is_rejected(rng, key, value, message):
    layer, params = _default_pack(rng)
    with pytest.raises(ValueError, match=message):
        load_mmcv_weights(layer, params, mmcv_config={key: value})


def test_rejected_load_leaves_the_weights_unchanged(rng):
    layer, params = _default_pack(rng)
    before = [w.copy() for w in layer.get_weights()]
    params["content_encoder.bias"] = np.zeros(71)
    with pytest.raises(ValueError, match="content_encoder.bias"):
        load_mmcv_weights(layer, params)
    for old, new in zip(before, layer.get_weights()):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("function", [load_mmcv_weights, mmcv_weights])
def test_unbuilt_layer_is_rejected(rng, function):
    args = (random_carafe_pack_parameters(rng, 8, 2, 5, 1, 3, 64),)
    args = args if function is load_mmcv_weights else ()
    with pytest.raises(ValueError, match=r"`layer` must be built .* call it on an input or "
                                         r"call `layer.build\(input_shape\)` first"):
        function(CARAFE(), *args)


@pytest.mark.parametrize("function", [load_mmcv_weights, mmcv_weights])
def test_other_layers_are_rejected(function):
    import keras

    args = ({},) if function is load_mmcv_weights else ()
    with pytest.raises(TypeError, match="`layer` must be a keras_carafe.CARAFE layer, got Conv2D"):
        function(keras.layers.Conv2D(4, 3), *args)


@pytest.mark.parametrize("key", ["channel_compressor.weight", "content_encoder.bias"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_values_are_rejected_naming_the_key_and_loading_nothing(rng, key, value):
    layer, params = _default_pack(rng)
    before = [w.copy() for w in layer.get_weights()]
    params[key] = params[key].copy()
    params[key].flat[3] = value
    with pytest.raises(ValueError, match=rf"`state_dict\['{key}'\]` holds 1 non-finite "
                                         rf"value\(s\).*nothing was loaded"):
        load_mmcv_weights(layer, params)
    for old, new in zip(before, layer.get_weights()):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("dtype, value, limit", [("float16", 70000.0, "65504"),
                                                 ("float16", -65520.0, "65504")])
def test_values_the_layers_dtype_cannot_hold_are_rejected(rng, dtype, value, limit):
    layer = _layer(8, 2, 5, 1, 3, 1, 64, dtype=dtype)
    params = random_carafe_pack_parameters(rng, 8, 2, 5, 1, 3, 64)
    before = [w.copy() for w in layer.get_weights()]
    params["content_encoder.weight"].flat[0] = value
    with pytest.raises(ValueError, match=rf"`state_dict\['content_encoder.weight'\]` holds 1 "
                                         rf"value\(s\) beyond what the layer's {dtype} "
                                         rf"variables can hold .* the limit is {limit}"):
        load_mmcv_weights(layer, params)
    for old, new in zip(before, layer.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_the_largest_value_a_float16_layer_holds_is_accepted(rng):
    layer = _layer(8, 2, 5, 1, 3, 1, 64, dtype="float16")
    params = random_carafe_pack_parameters(rng, 8, 2, 5, 1, 3, 64)
    params["content_encoder.weight"].flat[0] = 65504.0
    load_mmcv_weights(layer, params)
    assert float(np.max(layer.encoder.kernel.numpy())) == 65504.0

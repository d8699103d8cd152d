"""Parameters of mmcv's `CARAFEPack` in and out of the `CARAFE` layer.

`CARAFEPack` (mmcv.ops.carafe) holds a 1x1 `channel_compressor` and a
`content_encoder` convolution, in PyTorch's (out, in, kh, kw) layout. Its
encoder output is pixel-shuffled the PyTorch way, channel
`j*s*s + sy*s + sx` going to sub-pixel (sy, sx) of kernel channel `j`,
whereas the layer's `depth_to_space` reads channel `(sy*s + sx)*J + j`
(`J = group_size * kernel_size**2`): the encoder's output channels are
permuted on the way in and back on the way out. Everything after the
pixel shuffle (softmax over each group's k*k taps in `g*k*k + ky*k + kx`
order, contiguous channel groups, source pixel `oh // s`) is the same in
both.
"""

import collections.abc

import keras
import ml_dtypes
import numpy as np

from keras_carafe.layers.carafe import CARAFE

_COMPRESSOR_WEIGHT = "channel_compressor.weight"
_COMPRESSOR_BIAS = "channel_compressor.bias"
_ENCODER_WEIGHT = "content_encoder.weight"
_ENCODER_BIAS = "content_encoder.bias"
_PARAMETERS = (_COMPRESSOR_WEIGHT, _COMPRESSOR_BIAS, _ENCODER_WEIGHT, _ENCODER_BIAS)

# CARAFEPack's constructor arguments and the CARAFE attributes they set.
_HYPERPARAMETERS = {
    "scale_factor": "scale_factor",
    "up_kernel": "kernel_size",
    "up_group": "group_size",
    "encoder_kernel": "encoder_kernel_size",
    "encoder_dilation": "encoder_dilation",
    "compressed_channels": "compressed_channels",
}


def _check_layer(layer, action):
    if not isinstance(layer, CARAFE):
        raise TypeError(
            f"`layer` must be a keras_carafe.CARAFE layer, got {type(layer).__name__}")
    if not layer.built:
        raise ValueError(
            f"`layer` must be built to {action} its weights: call it on an input or call "
            "`layer.build(input_shape)` first")


def _encoder_permutation(layer):
    """Index array `p` with keras_channel[q] = pytorch_channel[p[q]] for the encoder output."""
    taps = layer.group_size * layer.kernel_size ** 2
    subpixels = layer.scale_factor ** 2
    # PyTorch channel j*S + t and Keras channel t*J + j hold the same logit
    # (t = sy*s + sx the sub-pixel, j the kernel channel).
    return np.arange(taps * subpixels).reshape(taps, subpixels).T.reshape(-1)


def _expected_shapes(layer):
    channels = layer.compressor.kernel.shape[2]
    logits = layer.scale_factor ** 2 * layer.group_size * layer.kernel_size ** 2
    k_enc = layer.encoder_kernel_size
    return {
        _COMPRESSOR_WEIGHT: ((layer.compressed_channels, channels, 1, 1),
                             "(compressed_channels, input channels, 1, 1)"),
        _COMPRESSOR_BIAS: ((layer.compressed_channels,), "(compressed_channels,)"),
        _ENCODER_WEIGHT: ((logits, layer.compressed_channels, k_enc, k_enc),
                          "(scale_factor**2 * group_size * kernel_size**2, "
                          "compressed_channels, encoder_kernel_size, encoder_kernel_size)"),
        _ENCODER_BIAS: ((logits,), "(scale_factor**2 * group_size * kernel_size**2,)"),
    }


def _layer_summary(layer):
    names = ("scale_factor", "kernel_size", "group_size", "encoder_kernel_size",
             "compressed_channels")
    settings = ", ".join(f"{name}={getattr(layer, name)}" for name in names)
    return f"{settings}, input channels={layer.compressor.kernel.shape[2]}"


def _check_mmcv_config(layer, mmcv_config):
    if not isinstance(mmcv_config, collections.abc.Mapping):
        raise TypeError(
            f"`mmcv_config` must be a dict of CARAFEPack arguments, got "
            f"{type(mmcv_config).__name__}")
    expected = {mmcv: getattr(layer, attribute) for mmcv, attribute in _HYPERPARAMETERS.items()}
    expected["channels"] = layer.compressor.kernel.shape[2]
    for key, value in mmcv_config.items():
        if key == "type":
            # mmdet's `upsample_cfg` names the module it builds.
            if value != "carafe":
                raise ValueError(
                    f"`mmcv_config['type']` must be 'carafe' (CARAFEPack), got {value!r}")
            continue
        if key not in expected:
            raise ValueError(
                f"`mmcv_config` has unknown key {key!r}; CARAFEPack's arguments are "
                f"{', '.join(sorted(expected))}")
        if value != expected[key]:
            if key == "channels":
                raise ValueError(
                    f"`mmcv_config['channels']` is {value!r} but the layer was built for "
                    f"{expected[key]} input channels")
            attribute = _HYPERPARAMETERS[key]
            raise ValueError(
                f"`mmcv_config['{key}']` is {value!r} but the layer's `{attribute}` is "
                f"{expected[key]}: the layer needs {attribute}={value!r}")


def _read_parameters(layer, state_dict, prefix):
    if not isinstance(state_dict, collections.abc.Mapping):
        raise TypeError(
            f"`state_dict` must be a mapping from parameter names to arrays, got "
            f"{type(state_dict).__name__}")
    names = {prefix + name: name for name in _PARAMETERS}
    missing = [key for key in names if key not in state_dict]
    if missing:
        raise ValueError(
            f"`state_dict` lacks {', '.join(map(repr, missing))} (the CARAFEPack parameters "
            f"{', '.join(map(repr, names))})")
    unexpected = [key for key in state_dict if key not in names and str(key).startswith(prefix)]
    if unexpected:
        hint = ("" if prefix else "; to load one CARAFEPack out of a larger model, pass its "
                "key prefix as `prefix`")
        raise ValueError(
            f"`state_dict` has unexpected keys {', '.join(map(repr, unexpected))} besides the "
            f"CARAFEPack parameters {', '.join(map(repr, names))}{hint}")
    shapes = _expected_shapes(layer)
    arrays = {}
    for key, name in names.items():
        try:
            array = np.asarray(state_dict[key])
        except Exception as error:  # torch GPU tensors and the like
            raise TypeError(
                f"`state_dict[{key!r}]` cannot be read as a NumPy array ({error}); move it to "
                "the CPU or convert it with .numpy() first") from error
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(
                f"`state_dict[{key!r}]` must hold floating-point values, got dtype {array.dtype}")
        shape, layout = shapes[name]
        if array.shape != shape:
            raise ValueError(
                f"`state_dict[{key!r}]` has shape {array.shape}, expected {shape} = {layout} "
                f"for this layer ({_layer_summary(layer)})")
        _check_values(key, array, _variable_dtype(layer))
        arrays[name] = array
    return arrays


def _variable_dtype(layer):
    return keras.backend.standardize_dtype(layer.compressor.kernel.dtype)


def _check_values(key, array, dtype):
    """Raises unless every value of `array` is finite and stays finite in `dtype`."""
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(
            f"`state_dict[{key!r}]` holds {int(bad.sum())} non-finite value(s) (NaN or "
            f"infinity), for example at index {tuple(int(i) for i in np.argwhere(bad)[0])}; "
            f"nothing was loaded")
    target = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    with np.errstate(over="ignore"):
        overflow = ~np.isfinite(array.astype(target))
    if overflow.any():
        limit = float(ml_dtypes.finfo(target).max)
        worst = float(np.max(np.abs(array)))
        raise ValueError(
            f"`state_dict[{key!r}]` holds {int(overflow.sum())} value(s) beyond what the "
            f"layer's {dtype} variables can hold (largest magnitude {worst:.6g}, the limit "
            f"is {limit:.6g}); nothing was loaded")


def load_mmcv_weights(layer, state_dict, prefix="", mmcv_config=None):
    """Loads the parameters of an mmcv `CARAFEPack` into a built `CARAFE` layer.

    Args:
        layer: a built `keras_carafe.CARAFE` with the pack's hyperparameters
            (`scale_factor`, `kernel_size` = `up_kernel`, `group_size` =
            `up_group`, `encoder_kernel_size` = `encoder_kernel`,
            `encoder_dilation`, `compressed_channels`) and its input channels.
            Its `data_format` may be either.
        state_dict: mapping with `channel_compressor.weight` and `.bias`,
            `content_encoder.weight` and `.bias` in PyTorch layouts
            (weights `(out, in, kh, kw)`), as NumPy arrays or anything
            `np.asarray` accepts (CPU torch tensors included).
        prefix: key prefix of the pack inside a larger state dict, e.g.
            `"neck.upsample_modules.0."`; keys outside it are ignored, keys
            inside it other than the four parameters are an error.
        mmcv_config: optional dict of the pack's constructor arguments (e.g.
            mmdet's `upsample_cfg`); each one is checked against the layer.
            The weights alone cannot reveal `encoder_dilation`, nor tell
            apart hyperparameters with the same `scale_factor**2 *
            group_size * kernel_size**2`.

    Raises:
        TypeError: `layer` is not a `CARAFE`, or an entry is not a float array.
        ValueError: the layer is not built, a key is missing or unexpected, a
            shape or an `mmcv_config` entry does not match the layer. Nothing
            is assigned unless every check passes.
    """
    _check_layer(layer, "load")
    if mmcv_config is not None:
        _check_mmcv_config(layer, mmcv_config)
    arrays = _read_parameters(layer, state_dict, prefix)
    permutation = _encoder_permutation(layer)
    values = (
        (layer.compressor.kernel, arrays[_COMPRESSOR_WEIGHT].transpose(2, 3, 1, 0)),
        (layer.compressor.bias, arrays[_COMPRESSOR_BIAS]),
        (layer.encoder.kernel, arrays[_ENCODER_WEIGHT].transpose(2, 3, 1, 0)[..., permutation]),
        (layer.encoder.bias, arrays[_ENCODER_BIAS][permutation]),
    )
    for variable, value in values:
        variable.assign(value.astype(variable.dtype))


def mmcv_weights(layer, prefix=""):
    """The parameters of a built `CARAFE` layer as an mmcv `CARAFEPack` state dict.

    Returns a dict from `prefix + name` (`channel_compressor.weight`,
    `channel_compressor.bias`, `content_encoder.weight`,
    `content_encoder.bias`) to NumPy arrays in PyTorch layouts, for a
    `CARAFEPack` with the layer's hyperparameters (`torch.from_numpy` each
    and `load_state_dict`). The inverse of `load_mmcv_weights`.
    """
    _check_layer(layer, "export")
    inverse = np.argsort(_encoder_permutation(layer))

    def numpy(variable):
        return np.asarray(variable.numpy())

    parameters = {
        _COMPRESSOR_WEIGHT: numpy(layer.compressor.kernel).transpose(3, 2, 0, 1),
        _COMPRESSOR_BIAS: numpy(layer.compressor.bias),
        _ENCODER_WEIGHT: numpy(layer.encoder.kernel)[..., inverse].transpose(3, 2, 0, 1),
        _ENCODER_BIAS: numpy(layer.encoder.bias)[inverse],
    }
    return {prefix + name: np.ascontiguousarray(value) for name, value in parameters.items()}

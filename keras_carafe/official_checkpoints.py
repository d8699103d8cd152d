"""Parameters of the official PyTorch FADE, SAPA and DySample modules in and out of the
`FADE`, `SAPA` and `DySample` layers.

The layers keep the official channel orders, so every parameter maps to one
variable by a transpose of PyTorch's layout (convolution weights
`(out, in, kh, kw)` to Keras's `(kh, kw, in, out)`, linear weights
`(out, in)` to `(in, out)`):

- FADE, `poppinace/fade` `FADE_L2H.FADE` (the module of its experiments):
  `gate_generator.conv.{weight,bias}` -> `gate`,
  `ker_generator.compressor_en.{weight,bias}` -> `encoder_compressor`,
  `ker_generator.compressor_de.weight` -> `decoder_compressor`,
  `ker_generator.content_encoder.{weight,bias}` -> `content_encoder`
  (`SemiShiftUp` has no `gate_generator`: a layer with `gated=False`).
  `FADE_H2L.FADE` names the same parameters `kernel_generator.conv1_en`,
  `kernel_generator.conv1_de`, `kernel_generator.conv2_kernels` and
  `kernel_generator.conv2_bias`; loading accepts either layout.
- SAPA, `poppinace/sapa` `SAPA.SAPA`: `norm_y.{weight,bias}` ->
  `encoder_gamma`, `encoder_beta`, `norm_x.*` -> `decoder_gamma`,
  `decoder_beta`, `q.{weight,bias}` -> `query_kernel`, `query_bias`, `k.*` ->
  `key_kernel`, `key_bias`.
- DySample, `tiny-smart/dysample` `dysample.DySample`: `offset` ->
  `offset`, `scope.weight` -> `scope` (with `dyscope=True`), and the
  `init_pos` buffer, which is fixed by the scale and the groups: it is
  checked on the way in and written on the way out, so that PyTorch's
  strict `load_state_dict` accepts the result.
"""

import collections.abc
import dataclasses

import numpy as np

from keras_carafe.layers.dysample import DySample
from keras_carafe.layers.fade import FADE
from keras_carafe.layers.sapa import SAPA

_LAYERS = (FADE, SAPA, DySample)


@dataclasses.dataclass(frozen=True)
class _Entry:
    """One state-dict entry: the variable it fills (None for a fixed buffer), its PyTorch
    shape and a description of it for messages, and the maps between the layouts."""

    variable: object
    shape: tuple
    layout: str
    to_keras: object
    to_torch: object


def _conv(variable, layout):
    shape = tuple(variable.shape)
    return _Entry(variable, (shape[3], shape[2], shape[0], shape[1]), layout,
                  lambda a: a.transpose(2, 3, 1, 0), lambda a: a.transpose(3, 2, 0, 1))


def _linear(variable, layout):
    shape = tuple(variable.shape)
    return _Entry(variable, (shape[1], shape[0]), layout, lambda a: a.T, lambda a: a.T)


def _vector(variable, layout):
    return _Entry(variable, tuple(variable.shape), layout, lambda a: a, lambda a: a)


def _fade_entries(layer, h2l):
    k_enc = layer.encoder_kernel_size
    content = f"(kernel_size**2, embedding_channels, {k_enc}, {k_enc})"
    if h2l:
        generator, names = "kernel_generator.", ("conv1_en", "conv1_de", "conv2_kernels",
                                                 "conv2_bias")
        keys = (f"{names[0]}.weight", f"{names[0]}.bias", f"{names[1]}.weight", names[2],
                names[3])
    else:
        generator = "ker_generator."
        keys = ("compressor_en.weight", "compressor_en.bias", "compressor_de.weight",
                "content_encoder.weight", "content_encoder.bias")
    entries = {
        generator + keys[0]: _conv(layer.encoder_compressor.kernel,
                                   "(embedding_channels, channels, 1, 1)"),
        generator + keys[1]: _vector(layer.encoder_compressor.bias, "(embedding_channels,)"),
        generator + keys[2]: _conv(layer.decoder_compressor.kernel,
                                   "(embedding_channels, channels, 1, 1)"),
        generator + keys[3]: _conv(layer.content_encoder.kernel, content),
        generator + keys[4]: _vector(layer.content_encoder.bias, "(kernel_size**2,)"),
    }
    if layer.gate is not None:
        entries["gate_generator.conv.weight"] = _conv(layer.gate.kernel, "(1, channels, 1, 1)")
        entries["gate_generator.conv.bias"] = _vector(layer.gate.bias, "(1,)")
    return entries


def _sapa_entries(layer):
    entries = {
        "norm_y.weight": _vector(layer.encoder_gamma, "(encoder channels,)"),
        "norm_y.bias": _vector(layer.encoder_beta, "(encoder channels,)"),
        "norm_x.weight": _vector(layer.decoder_gamma, "(decoder channels,)"),
        "norm_x.bias": _vector(layer.decoder_beta, "(decoder channels,)"),
        "q.weight": _linear(layer.query_kernel, "(embedding_channels, encoder channels)"),
        "k.weight": _linear(layer.key_kernel, "(embedding_channels, decoder channels)"),
    }
    if layer.use_bias:
        entries["q.bias"] = _vector(layer.query_bias, "(embedding_channels,)")
        entries["k.bias"] = _vector(layer.key_bias, "(embedding_channels,)")
    return entries


def dysample_initial_positions(scale_factor, group_size):
    """The official `init_pos` buffer, (1, 2*G*s*s, 1, 1): channel `(xy*G + g)*s*s + i*s + j`
    holds sub-pixel `(i, j)`'s offset from its input pixel, `(j - (s-1)/2) / s` for x and
    `(i - (s-1)/2) / s` for y."""
    s, g = scale_factor, group_size
    steps = (np.arange(s) - (s - 1) / 2) / s
    x = np.broadcast_to(steps[None, None, :], (g, s, s))
    y = np.broadcast_to(steps[None, :, None], (g, s, s))
    return np.concatenate([x.reshape(-1), y.reshape(-1)]).reshape(1, -1, 1, 1)


def _dysample_entries(layer):
    inputs = "channels" if layer.style == "lp" else "channels / scale_factor**2"
    offsets = "2 * group_size * scale_factor**2" if layer.style == "lp" else "2 * group_size"
    entries = {
        "offset.weight": _conv(layer.offset.kernel, f"({offsets}, {inputs}, 1, 1)"),
        "offset.bias": _vector(layer.offset.bias, f"({offsets},)"),
        "init_pos": _Entry(None, (1, 2 * layer.group_size * layer.scale_factor ** 2, 1, 1),
                           "(1, 2 * group_size * scale_factor**2, 1, 1)", None, None),
    }
    if layer.scope is not None:
        entries["scope.weight"] = _conv(layer.scope.kernel, f"({offsets}, {inputs}, 1, 1)")
    return entries


def _check_layer(layer, action):
    if not isinstance(layer, _LAYERS):
        raise TypeError(f"`layer` must be a keras_carafe FADE, SAPA or DySample layer, got "
                        f"{type(layer).__name__}")
    if not layer.built:
        raise ValueError(
            f"`layer` must be built to {action} its weights: call it on its inputs or call "
            "`layer.build(...)` with their shapes first")


def _entries(layer, state_dict=None, prefix=""):
    if isinstance(layer, FADE):
        h2l = state_dict is not None and any(
            str(key).startswith(prefix + "kernel_generator.") for key in state_dict)
        return _fade_entries(layer, h2l)
    if isinstance(layer, SAPA):
        return _sapa_entries(layer)
    return _dysample_entries(layer)


_MODULES = {FADE: "FADE (FADE_L2H.FADE or FADE_H2L.FADE)", SAPA: "SAPA (SAPA.SAPA)",
            DySample: "DySample (dysample.DySample)"}


def _read(layer, state_dict, prefix):
    if not isinstance(state_dict, collections.abc.Mapping):
        raise TypeError(f"`state_dict` must be a mapping from parameter names to arrays, got "
                        f"{type(state_dict).__name__}")
    entries = _entries(layer, state_dict, prefix)
    module = _MODULES[type(layer)]
    names = {prefix + name: name for name in entries}
    missing = [key for key in names if key not in state_dict]
    if missing:
        raise ValueError(f"`state_dict` lacks {', '.join(map(repr, missing))} (the parameters "
                         f"of the official {module} that this layer holds: "
                         f"{', '.join(map(repr, names))})")
    unexpected = [key for key in state_dict if key not in names and str(key).startswith(prefix)]
    if unexpected:
        hint = ("" if prefix else "; to load one module out of a larger model, pass its key "
                "prefix as `prefix`")
        raise ValueError(f"`state_dict` has unexpected keys {', '.join(map(repr, unexpected))} "
                         f"besides the parameters {', '.join(map(repr, names))} of the "
                         f"official {module} that this layer holds{hint}")
    arrays = {}
    for key, name in names.items():
        try:
            array = np.asarray(state_dict[key])
        except Exception as error:  # torch GPU tensors and the like
            raise TypeError(f"`state_dict[{key!r}]` cannot be read as a NumPy array ({error}); "
                            "move it to the CPU or convert it with .numpy() first") from error
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(f"`state_dict[{key!r}]` must hold floating-point values, got dtype "
                            f"{array.dtype}")
        entry = entries[name]
        if array.shape != entry.shape:
            raise ValueError(f"`state_dict[{key!r}]` has shape {array.shape}, expected "
                             f"{entry.shape} = {entry.layout} for this layer "
                             f"({_summary(layer)})")
        if entry.variable is None:
            expected = dysample_initial_positions(layer.scale_factor, layer.group_size)
            if not np.allclose(array, expected, rtol=0, atol=1e-6):
                raise ValueError(
                    f"`state_dict[{key!r}]` is not the official initial positions of "
                    f"scale_factor={layer.scale_factor}, group_size={layer.group_size}; the "
                    f"layer computes them and cannot hold others")
            continue
        arrays[name] = array
    return entries, arrays


def _summary(layer):
    if isinstance(layer, FADE):
        names = ("scale_factor", "kernel_size", "embedding_channels", "encoder_kernel_size",
                 "gated")
        channels = f"channels={layer.encoder_compressor.kernel.shape[2]}"
    elif isinstance(layer, SAPA):
        names = ("scale_factor", "kernel_size", "embedding_channels", "group_size", "use_bias")
        channels = (f"encoder channels={layer.query_kernel.shape[0]}, decoder channels="
                    f"{layer.key_kernel.shape[0]}")
    else:
        names = ("scale_factor", "group_size", "style", "dynamic_scope")
        channels = f"offset convolution inputs={layer.offset.kernel.shape[2]}"
    return ", ".join([f"{name}={getattr(layer, name)!r}" for name in names] + [channels])


def load_official_weights(layer, state_dict, prefix=""):
    """Loads the parameters of an official FADE, SAPA or DySample PyTorch module into a
    built `FADE`, `SAPA` or `DySample` layer with its hyperparameters.

    Args:
        layer: a built `keras_carafe.FADE`, `SAPA` or `DySample` with the
            module's hyperparameters and input channels (FADE: `up_kernel_size`
            = `kernel_size`, `gated=False` for `SemiShiftUp`; SAPA:
            `up_kernel_size`, `embedding_dim` = `embedding_channels`,
            `qkv_bias` = `use_bias`; DySample: `scale`, `groups` =
            `group_size`, `style`, `dyscope` = `dynamic_scope`). Its
            `data_format` may be either.
        state_dict: the module's `state_dict()` (see the module docstring for
            the names), as NumPy arrays or anything `np.asarray` accepts (CPU
            torch tensors included).
        prefix: key prefix of the module inside a larger state dict, e.g.
            `"decode_head.upsamplers.0."`; keys outside it are ignored, keys
            inside it other than the module's are an error.

    Raises:
        TypeError: `layer` is not one of the three layers, or an entry is not a
            float array.
        ValueError: the layer is not built, a key is missing or unexpected, a
            shape does not match the layer, or DySample's `init_pos` is not the
            official one. Nothing is assigned unless every check passes.
    """
    _check_layer(layer, "load")
    entries, arrays = _read(layer, state_dict, prefix)
    for name, array in arrays.items():
        variable = entries[name].variable
        variable.assign(entries[name].to_keras(array).astype(variable.dtype))


def official_weights(layer, prefix=""):
    """The parameters of a built `FADE`, `SAPA` or `DySample` layer as the official module's
    state dict (FADE in `FADE_L2H.FADE`'s names), NumPy arrays in PyTorch layouts (use
    `torch.from_numpy` on each and `load_state_dict`). The inverse of
    `load_official_weights`."""
    _check_layer(layer, "export")
    out = {}
    for name, entry in _entries(layer).items():
        if entry.variable is None:
            value = dysample_initial_positions(layer.scale_factor, layer.group_size).astype(
                np.dtype(layer.variable_dtype))
        else:
            value = entry.to_torch(np.asarray(entry.variable.numpy()))
        out[prefix + name] = np.ascontiguousarray(value)
    return out

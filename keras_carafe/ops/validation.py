"""Argument checks shared by every implementation and backend.

Only static information is checked here (Python arguments, dtypes and the
shapes known when the call is made or traced); the TensorFlow backend adds
run-time checks for sizes unknown while a graph is traced.
"""

import numbers

import keras
import numpy as np

from keras_carafe.ops.geometry import DOWNSAMPLE, UPSAMPLE, Geometry

SUPPORTED_DTYPES = ("float16", "bfloat16", "float32", "float64")


def check_int_argument(name, value, minimum, odd=False):
    """Returns `value` as a Python int (NumPy integers included), or raises."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an int, got {value!r} of type {type(value).__name__}")
    value = int(value)
    if value < minimum or (odd and value % 2 == 0):
        expected = f"an odd integer >= {minimum}" if odd else f"an integer >= {minimum}"
        raise ValueError(f"`{name}` must be {expected}, got {value}")
    return value


def check_hyperparameters(scale_factor, kernel_size, group_size):
    """Returns (scale_factor, kernel_size, group_size) as Python ints, or raises."""
    return (check_int_argument("scale_factor", scale_factor, 1),
            check_int_argument("kernel_size", kernel_size, 1, odd=True),
            check_int_argument("group_size", group_size, 1))


def upsampling(scale_factor, kernel_size, group_size):
    """The Geometry of `carafe`, or raises for bad hyperparameters."""
    return Geometry(UPSAMPLE, *check_hyperparameters(scale_factor, kernel_size, group_size))


def downsampling(stride, kernel_size, group_size):
    """The Geometry of `carafe_downsample`, or raises for bad hyperparameters."""
    return Geometry(DOWNSAMPLE,
                    check_int_argument("stride", stride, 1),
                    check_int_argument("kernel_size", kernel_size, 1, odd=True),
                    check_int_argument("group_size", group_size, 1))


def dtype_name(tensor):
    return keras.backend.standardize_dtype(tensor.dtype)


def _size(dim):
    """A dimension as an int, or None where it is unknown or symbolic."""
    if dim is None or isinstance(dim, (int, np.integer)):
        return None if dim is None else int(dim)
    try:
        return int(dim)
    except Exception:  # noqa: BLE001 - symbolic sizes (jax.export's) refuse in their own ways
        return None


def axis_size(x, axis):
    """`x.shape[axis]` as an int where it is static, else a scalar tensor (for reshapes
    that name static sizes as numbers, so that exported graphs read no shape)."""
    size = x.shape[axis]
    return size if isinstance(size, int) else keras.ops.shape(x)[axis]


def static_shape(tensor):
    """The shape as a tuple with None for unknown sizes, or None for an unknown rank."""
    try:
        dims = tuple(tensor.shape)
    except (TypeError, ValueError):  # a TensorFlow shape of unknown rank cannot be iterated
        return None
    return tuple(_size(d) for d in dims)


def check_static(geometry, features, kernels):
    """Raises ValueError/TypeError for every mismatch visible in dtypes and static shapes.

    Returns True when the static shapes prove the inputs valid, False when
    some size is unknown (only inside TensorFlow graphs) and must be checked
    when the graph runs.
    """
    features_dtype, kernels_dtype = dtype_name(features), dtype_name(kernels)
    if features_dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"`features` must be float16, bfloat16, float32 or float64, got {features_dtype}")
    if kernels_dtype != features_dtype:
        raise TypeError(
            f"`kernels` must have the dtype of `features` ({features_dtype}), "
            f"got {kernels_dtype}")
    shapes = {"features": static_shape(features), "kernels": static_shape(kernels)}
    for name, layout in (("features", "(N, H, W, C)"), ("kernels", geometry.kernels_layout())):
        shape = shapes[name]
        if shape is not None and len(shape) != 4:
            raise ValueError(f"`{name}` must have rank 4 {layout}, got shape {shape}")
    if shapes["features"] is None or shapes["kernels"] is None:
        return False
    n, h, w, c = shapes["features"]
    kn, kh, kw, kc = shapes["kernels"]
    g, taps = geometry.group_size, geometry.kernel_channels
    if c is not None and c % g:
        raise ValueError(f"`features` channels ({c}) must be divisible by `group_size` ({g})")
    if kc is not None and kc != taps:
        raise ValueError(
            f"`kernels` must have group_size * kernel_size**2 = {taps} channels, got {kc} "
            f"(shape {shapes['kernels']})")
    for axis, size, ksize in (("height", h, kh), ("width", w, kw)):
        expected = geometry.output_size(size)
        if expected is not None and ksize is not None and ksize != expected:
            raise ValueError(
                f"`kernels` {axis} must be {geometry.output_size_formula(axis)} = {expected}, "
                f"got {ksize} (features {shapes['features']}, kernels {shapes['kernels']})")
    if n is not None and kn is not None and n != kn:
        raise ValueError(f"`kernels` batch ({kn}) must equal `features` batch ({n})")
    return None not in shapes["features"] + shapes["kernels"]

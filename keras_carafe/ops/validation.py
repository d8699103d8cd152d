"""Argument checks shared by both implementations of the reassembly."""

import numbers

import numpy as np
import tensorflow as tf

SUPPORTED_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)


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


def _known(dim):
    return dim is not None


def check_static(features, kernels, scale_factor, kernel_size, group_size):
    """Raises ValueError/TypeError for every mismatch visible in the static shapes.

    Returns True when the static shapes prove the inputs valid, False when
    some dimension is unknown and must be checked at run time.
    """
    if features.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"`features` must be float16, bfloat16, float32 or float64, got {features.dtype.name}"
        )
    if kernels.dtype != features.dtype:
        raise TypeError(
            f"`kernels` must have the dtype of `features` ({features.dtype.name}), "
            f"got {kernels.dtype.name}"
        )
    for name, tensor, layout in (
        ("features", features, "(N, H, W, C)"),
        ("kernels", kernels, "(N, H*scale_factor, W*scale_factor, group_size*kernel_size**2)"),
    ):
        rank = tensor.shape.rank
        if rank is not None and rank != 4:
            raise ValueError(f"`{name}` must have rank 4 {layout}, got shape {tensor.shape}")
    if features.shape.rank is None or kernels.shape.rank is None:
        return False
    n, h, w, c = features.shape
    kn, kh, kw, kc = kernels.shape
    taps = group_size * kernel_size * kernel_size
    if _known(c) and c % group_size:
        raise ValueError(
            f"`features` channels ({c}) must be divisible by `group_size` ({group_size})"
        )
    if _known(kc) and kc != taps:
        raise ValueError(
            f"`kernels` must have group_size * kernel_size**2 = {taps} channels, got {kc} "
            f"(shape {kernels.shape})"
        )
    for axis, size, ksize in (("height", h, kh), ("width", w, kw)):
        if _known(size) and _known(ksize) and ksize != size * scale_factor:
            raise ValueError(
                f"`kernels` {axis} must be scale_factor * features {axis} = "
                f"{size * scale_factor}, got {ksize} (features {features.shape}, "
                f"kernels {kernels.shape})"
            )
    if _known(n) and _known(kn) and n != kn:
        raise ValueError(f"`kernels` batch ({kn}) must equal `features` batch ({n})")
    return all(_known(d) for d in (n, h, w, c, kn, kh, kw, kc))


def with_runtime_checks(features, kernels, scale_factor, kernel_size, group_size):
    """Returns (features, kernels, asserts) checking what was unknown at trace time.

    The rank is enforced with EnsureShape on the data path: Grappler infers
    rank 4 from the ops downstream and would fold a plain rank assertion away.
    """
    features = tf.ensure_shape(features, [None] * 4, name="features_must_have_rank_4")
    kernels = tf.ensure_shape(kernels, [None] * 4, name="kernels_must_have_rank_4")
    fs, ks = tf.shape(features), tf.shape(kernels)
    taps = group_size * kernel_size * kernel_size
    return features, kernels, [
        tf.debugging.assert_equal(
            fs[3] % group_size, 0,
            message=f"`features` channels must be divisible by group_size={group_size}"),
        tf.debugging.assert_equal(
            ks[3], taps,
            message=f"`kernels` channels must be group_size * kernel_size**2 = {taps}"),
        tf.debugging.assert_equal(
            ks[1:3], fs[1:3] * scale_factor,
            message=f"`kernels` spatial size must be scale_factor={scale_factor} times "
                    f"the features spatial size"),
        tf.debugging.assert_equal(
            ks[0], fs[0], message="`kernels` batch must equal `features` batch"),
    ]

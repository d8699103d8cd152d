"""The problems of the tests of derivatives beyond the first (tests/test_derivatives.py on
every backend, tests/test_ops_higher_order.py in TensorFlow graphs)."""

import numpy as np

from carafe_reference import (carafe_downsample_reference, carafe_downsample_reference_grads,
                              carafe_reference, carafe_reference_grads)
from keras_carafe.ops import carafe, carafe_downsample

# (direction, batch, height, width, channels, scale factor or stride, kernel_size, group_size)
CASES = [
    ("up", 1, 3, 4, 4, 2, 3, 2),
    ("up", 2, 2, 3, 3, 1, 5, 1),
    ("up", 1, 2, 2, 6, 3, 1, 3),
    ("up", 1, 1, 3, 2, 2, 5, 1),
    ("down", 1, 5, 3, 4, 2, 5, 2),   # sizes not divisible by the stride
    ("down", 1, 7, 5, 2, 3, 5, 1),
    ("down", 1, 2, 3, 2, 4, 1, 2),   # stride larger than the image
]


def case_id(case):
    direction, n, h, w, c, f, k, g = case
    return f"{direction}-n{n}-{h}x{w}x{c}-f{f}-k{k}-g{g}"


def output_size(case):
    direction, _, h, w, _, f, _, _ = case
    return (h * f, w * f) if direction == "up" else (-(-h // f), -(-w // f))


def reassemble(case, features, kernels, implementation):
    direction, _, _, _, _, f, k, g = case
    function = carafe if direction == "up" else carafe_downsample
    return function(features, kernels, f, k, g, implementation=implementation)


def reference(case, features, kernels):
    direction, _, _, _, _, f, k, g = case
    function = carafe_reference if direction == "up" else carafe_downsample_reference
    return function(features, kernels, f, k, g)


def reference_grads(case, grad_output, features, kernels):
    direction, _, _, _, _, f, k, g = case
    function = carafe_reference_grads if direction == "up" else carafe_downsample_reference_grads
    return function(grad_output, features, kernels, f, k, g)


def problem(rng, case):
    """(features, kernels, upstream gradient) in float64."""
    _, n, h, w, c, _, k, g = case
    oh, ow = output_size(case)
    features = rng.uniform(-1, 1, (n, h, w, c))
    kernels = rng.uniform(-1, 1, (n, oh, ow, g * k * k))
    upstream = rng.uniform(-1, 1, (n, oh, ow, c))
    return features, kernels, upstream


def assert_close_to_roundoff(actual, expected, name):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, name
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=1e-11, atol=1e-12 * scale, err_msg=name)

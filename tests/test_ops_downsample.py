"""`carafe_downsample` on TensorFlow: the compiled op and the fallback against the NumPy
reference, in graphs with unknown sizes, under XLA, and how "auto" resolves.

The compiled-op cases need the library's KerasCarafeDownsample op; where the
library lacks it they fail with the reason (nothing here is skipped).
"""

import numpy as np
import pytest
import tensorflow as tf

from autodiff import value_and_grads
from carafe_reference import (carafe_downsample_reference, carafe_downsample_reference_grads,
                              downsample_error_scales, random_downsample_inputs)
from keras_carafe.ops import carafe_downsample
from shape_grids import DOWNSAMPLE_CASES, DOWNSAMPLE_GRADIENT_CASES, case_id

IMPLEMENTATIONS = ("op", "fallback")
OP_TYPE = "KerasCarafeDownsample"
STRIDE, K, G, C = 2, 3, 2, 6


def spec(shape, dtype=tf.float32):
    return tf.TensorSpec(shape, dtype)


def op_types(function, *signature):
    return {op.type for op in function.get_concrete_function(*signature).graph.get_operations()}


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", DOWNSAMPLE_CASES, ids=case_id)
def test_values_match_reference(rng, implementation, dtype, case):
    n, h, w, c, stride, k, g = case
    features, kernels = random_downsample_inputs(rng, n, h, w, c, stride, k, g, dtype)
    out = carafe_downsample(features, kernels, stride, k, g, implementation=implementation)
    assert out.dtype == tf.as_dtype(dtype)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out.numpy(),
                               carafe_downsample_reference(features, kernels, stride, k, g),
                               rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", DOWNSAMPLE_GRADIENT_CASES, ids=case_id)
def test_gradients_match_reference_gradients(rng, implementation, dtype, case):
    n, h, w, c, stride, k, g = case
    features, kernels = random_downsample_inputs(rng, n, h, w, c, stride, k, g, dtype)
    upstream = rng.uniform(-1, 1, (n, -(-h // stride), -(-w // stride), c)).astype(dtype)

    def run(f, kk):
        return carafe_downsample(f, kk, stride, k, g, implementation=implementation)

    _, *grads = value_and_grads(run, features, kernels, upstream)
    expected = carafe_downsample_reference_grads(upstream, features, kernels, stride, k, g)
    tolerance = 2e-5 if dtype == np.float32 else 1e-12
    for name, actual, wanted in zip(("features", "kernels"), grads, expected):
        np.testing.assert_allclose(actual, wanted, rtol=tolerance, atol=tolerance,
                                   err_msg=name)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype, tolerance", [("float16", 4 * 2.0 ** -11),
                                              ("bfloat16", 4 * 2.0 ** -8)])
def test_16bit_output_and_gradients_agree_with_float32(rng, implementation, dtype, tolerance):
    n, h, w, c, stride, k, g = 2, 9, 8, 16, 2, 5, 2
    features, kernels = random_downsample_inputs(rng, n, h, w, c, stride, k, g)
    upstream = rng.uniform(-1, 1, (n, 5, 4, c)).astype(np.float32)

    def run(f, kk):
        return carafe_downsample(f, kk, stride, k, g, implementation=implementation)

    full = value_and_grads(run, features, kernels, upstream)
    half = value_and_grads(run, features, kernels, upstream, dtype)
    scales = downsample_error_scales(features, kernels, upstream, stride, k, g)
    for name, a, b, scale in zip(("output", "d/dfeatures", "d/dkernels"), full, half, scales):
        assert np.all(np.abs(a - b) <= tolerance * scale), name


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS + ("portable",))
def test_one_trace_with_unknown_sizes_serves_every_size(rng, implementation):
    @tf.function(input_signature=[spec([None, None, None, C]), spec([None, None, None, G * 9])])
    def downsample(f, k):
        return carafe_downsample(f, k, STRIDE, K, G, implementation=implementation)

    for n, h, w in [(1, 2, 3), (3, 5, 4), (2, 1, 1), (1, 7, 8)]:
        features, kernels = random_downsample_inputs(rng, n, h, w, C, STRIDE, K, G)
        np.testing.assert_allclose(downsample(features, kernels).numpy(),
                                   carafe_downsample_reference(features, kernels, STRIDE, K, G),
                                   rtol=1e-5, atol=1e-5)
    assert downsample.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS + ("portable",))
def test_known_input_size_gives_the_static_output_size(implementation):
    @tf.function
    def downsample(f, k):
        return carafe_downsample(f, k, STRIDE, K, G, implementation=implementation)

    out = downsample.get_concrete_function(spec([3, 5, 7, C]), spec([None, None, None, None]))
    assert out.structured_outputs.shape.as_list() == [3, 3, 4, C]


RUNTIME_CASES = {
    "kernels-channels": ((2, 5, 4, 6), (2, 3, 2, 9),
                         r"kernels` channels must be group_size \* kernel_size\*\*2 = 18"),
    "channels-not-divisible": ((2, 5, 4, 5), (2, 3, 2, 18),
                               r"features` channels must be divisible by group_size=2"),
    "kernels-height": ((2, 5, 4, 6), (2, 2, 2, 18),
                       r"kernels` spatial size must be ceil\(features spatial size / stride=2\)"),
    "batch": ((2, 5, 4, 6), (1, 3, 2, 18), r"kernels` batch must equal `features` batch"),
}


@pytest.mark.parametrize("implementation", ["fallback", "portable"])
@pytest.mark.parametrize("case", RUNTIME_CASES)
def test_bad_shapes_unknown_when_tracing_raise_invalid_argument_at_run_time(implementation,
                                                                            case):
    features, kernels, message = RUNTIME_CASES[case]

    @tf.function(input_signature=[spec([None] * 4)] * 2)
    def downsample(f, k):
        return carafe_downsample(f, k, STRIDE, K, G, implementation=implementation)

    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        downsample(tf.zeros(features), tf.zeros(kernels))


@pytest.mark.parametrize("case", RUNTIME_CASES)
def test_op_rejects_bad_shapes_unknown_when_tracing(case):
    features, kernels, _ = RUNTIME_CASES[case]

    @tf.function(input_signature=[spec([None] * 4)] * 2)
    def downsample(f, k):
        return carafe_downsample(f, k, STRIDE, K, G, implementation="op")

    with pytest.raises(tf.errors.InvalidArgumentError):
        downsample(tf.zeros(features), tf.zeros(kernels))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_empty_batch_gives_empty_output_and_gradients(implementation):
    features, kernels = np.zeros((0, 5, 4, 6), np.float32), np.zeros((0, 3, 2, 18), np.float32)

    def run(f, kk):
        return carafe_downsample(f, kk, STRIDE, K, G, implementation=implementation)

    out, grad_features, grad_kernels = value_and_grads(run, features, kernels,
                                                       np.zeros((0, 3, 2, 6), np.float32))
    assert out.shape == (0, 3, 2, 6)
    assert grad_features.shape == features.shape and grad_kernels.shape == kernels.shape


def test_auto_uses_the_compiled_op():
    @tf.function
    def downsample(f, k):
        return carafe_downsample(f, k, STRIDE, K, G, implementation="auto")

    assert OP_TYPE in op_types(downsample, spec([None, None, None, C]),
                               spec([None, None, None, G * 9]))


def test_auto_under_jit_compile_uses_the_portable_path(rng):
    @tf.function(jit_compile=True)
    def downsample(f, k):
        return carafe_downsample(f, k, STRIDE, K, G, implementation="auto")

    features, kernels = random_downsample_inputs(rng, 2, 5, 7, C, STRIDE, K, G)
    assert OP_TYPE not in op_types(downsample, spec(features.shape), spec(kernels.shape))
    assert "ExtractImagePatches" not in op_types(downsample, spec(features.shape),
                                                 spec(kernels.shape))
    np.testing.assert_allclose(downsample(features, kernels).numpy(),
                               carafe_downsample_reference(features, kernels, STRIDE, K, G),
                               rtol=1e-5, atol=1e-5)

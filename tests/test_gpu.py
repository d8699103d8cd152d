"""The compiled op's CUDA kernels, run on the GPU, against the NumPy reference."""

import numpy as np
import pytest
import tensorflow as tf

from carafe_reference import (carafe_downsample_reference, carafe_downsample_reference_grads,
                              carafe_reference, carafe_reference_grads, error_scales,
                              random_downsample_inputs, random_inputs, ulp)
from keras_carafe.ops import carafe, carafe_downsample

pytestmark = pytest.mark.skipif(
    not tf.config.list_physical_devices("GPU"),
    reason="no GPU visible to TensorFlow; the CUDA kernels are compiled but not run")

GPU = "/GPU:0"

# (batch, height, width, channels, scale_factor, kernel_size, group_size)
CASES = [
    (1, 1, 1, 1, 1, 1, 1),
    (2, 3, 4, 4, 2, 3, 2),
    (1, 5, 1, 2, 3, 3, 2),
    (1, 1, 6, 2, 2, 5, 1),
    (2, 3, 3, 6, 1, 7, 2),
    (1, 2, 3, 8, 4, 3, 4),
    (2, 4, 3, 256, 2, 5, 4),   # group of 64 channels: several warp strides
    (1, 6, 7, 100, 2, 7, 1),   # channels not a multiple of the warp size
]


def case_id(case):
    n, h, w, c, s, k, g = case
    return f"n{n}-{h}x{w}x{c}-s{s}-k{k}-g{g}"


def on_gpu(features, kernels, upstream, scale_factor, kernel_size, group_size, dtype):
    """Output and both gradients of the op computed on the GPU, as float64 NumPy arrays."""
    with tf.device(GPU):
        features, kernels, upstream = (tf.cast(x, dtype) for x in (features, kernels, upstream))
        with tf.GradientTape() as tape:
            tape.watch([features, kernels])
            out = carafe(features, kernels, scale_factor, kernel_size, group_size,
                         implementation="op")
        grads = tape.gradient(out, [features, kernels], output_gradients=upstream)
    for tensor in (out, *grads):
        assert "GPU" in tensor.device, f"ran on {tensor.device}, not on the GPU"
    return tuple(tf.cast(x, tf.float64).numpy() for x in (out, *grads))


def problem(rng, case, dtype=np.float32):
    n, h, w, c, s, k, g = case
    features, kernels = random_inputs(rng, n, h, w, c, s, k, g, dtype)
    upstream = rng.uniform(-1, 1, (n, h * s, w * s, c)).astype(dtype)
    return features, kernels, upstream


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_float32_output_and_gradients_on_gpu_match_reference(rng, case):
    _, _, _, _, s, k, g = case
    features, kernels, upstream = problem(rng, case)
    actual = on_gpu(features, kernels, upstream, s, k, g, tf.float32)
    expected = (carafe_reference(features, kernels, s, k, g),
                *carafe_reference_grads(upstream, features, kernels, s, k, g))
    for name, a, e in zip(("output", "d/dfeatures", "d/dkernels"), actual, expected):
        np.testing.assert_allclose(a, e, rtol=2e-5, atol=2e-5, err_msg=name)


@pytest.mark.parametrize("case", CASES[:4], ids=case_id)
def test_float64_output_and_gradients_on_gpu_match_reference_to_1e_12(rng, case):
    _, _, _, _, s, k, g = case
    features, kernels, upstream = problem(rng, case, np.float64)
    actual = on_gpu(features, kernels, upstream, s, k, g, tf.float64)
    expected = (carafe_reference(features, kernels, s, k, g),
                *carafe_reference_grads(upstream, features, kernels, s, k, g))
    for name, a, e in zip(("output", "d/dfeatures", "d/dkernels"), actual, expected):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("dtype, precision_bits, min_exponent",
                         [(tf.float16, 11, -14), (tf.bfloat16, 8, -126)],
                         ids=["float16", "bfloat16"])
@pytest.mark.parametrize("case", [CASES[1], CASES[6], CASES[7]], ids=case_id)
def test_16bit_on_gpu_is_the_float32_sum_rounded_once(rng, dtype, precision_bits,
                                                      min_exponent, case):
    # Same allowance as test_ops_values: one unit in the last place of the
    # 16-bit result plus 2^-16 of the error scale for float32 accumulation.
    _, _, _, _, s, k, g = case
    f, kk, d = (tf.cast(tf.cast(x, dtype), tf.float64).numpy() for x in problem(rng, case))
    actual = on_gpu(f, kk, d, s, k, g, dtype)
    exact = (carafe_reference(f, kk, s, k, g), *carafe_reference_grads(d, f, kk, s, k, g))
    scales = error_scales(f, kk, d, s, k, g)
    for name, a, e, scale in zip(("output", "d/dfeatures", "d/dkernels"), actual, exact,
                                 scales):
        allowed = ulp(e, precision_bits, min_exponent) + 2.0 ** -16 * scale
        assert np.all(np.abs(a - e) <= allowed), (
            f"{name}: worst error {np.max(np.abs(a - e) / allowed):.2f} times the allowance")


@pytest.mark.parametrize("dtype", [tf.float32, tf.float16], ids=["float32", "float16"])
def test_gpu_forward_and_backward_are_bitwise_reproducible(rng, dtype):
    case = (4, 32, 32, 64, 2, 5, 2)  # thousands of blocks
    _, _, _, _, s, k, g = case
    features, kernels, upstream = problem(rng, case)
    first = on_gpu(features, kernels, upstream, s, k, g, dtype)
    for _ in range(3):
        again = on_gpu(features, kernels, upstream, s, k, g, dtype)
        for name, a, b in zip(("output", "d/dfeatures", "d/dkernels"), first, again):
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_empty_batch_on_gpu_gives_empty_output_and_gradients():
    features = np.zeros((0, 3, 4, 6), np.float32)
    kernels = np.zeros((0, 6, 8, 18), np.float32)
    upstream = np.zeros((0, 6, 8, 6), np.float32)
    out, grad_features, grad_kernels = on_gpu(features, kernels, upstream, 2, 3, 2, tf.float32)
    assert out.shape == (0, 6, 8, 6)
    assert grad_features.shape == features.shape
    assert grad_kernels.shape == kernels.shape


# (batch, height, width, channels, stride, kernel_size, group_size)
DOWNSAMPLE_CASES = [
    (1, 1, 1, 1, 2, 1, 1),
    (2, 5, 6, 4, 2, 3, 2),
    (1, 7, 1, 2, 3, 3, 2),
    (2, 9, 8, 64, 2, 5, 1),    # 16-byte vectors, specialised 5 x 5 taps
    (1, 10, 9, 100, 3, 7, 1),  # channels not a multiple of the vector width
    (1, 12, 12, 48, 4, 5, 4),
]


@pytest.mark.parametrize("case", DOWNSAMPLE_CASES, ids=case_id)
def test_downsampling_output_and_gradients_on_gpu_match_reference(rng, case):
    n, h, w, c, st, k, g = case
    features, kernels = random_downsample_inputs(rng, n, h, w, c, st, k, g)
    upstream = rng.uniform(-1, 1, kernels.shape[:3] + (c,)).astype(np.float32)
    with tf.device(GPU):
        f, kk, d = (tf.constant(x) for x in (features, kernels, upstream))
        with tf.GradientTape() as tape:
            tape.watch([f, kk])
            out = carafe_downsample(f, kk, st, k, g, implementation="op")
        grads = tape.gradient(out, [f, kk], output_gradients=d)
    for tensor in (out, *grads):
        assert "GPU" in tensor.device, f"ran on {tensor.device}, not on the GPU"
    expected = (carafe_downsample_reference(features, kernels, st, k, g),
                *carafe_downsample_reference_grads(upstream, features, kernels, st, k, g))
    for name, a, e in zip(("output", "d/dfeatures", "d/dkernels"), (out, *grads), expected):
        np.testing.assert_allclose(a.numpy(), e, rtol=2e-5, atol=2e-5, err_msg=name)

"""Values of `keras_carafe.ops.carafe`: both implementations against the NumPy reference."""

import numpy as np
import pytest
import tensorflow as tf

from carafe_reference import (carafe_loops, carafe_reference, carafe_reference_grads,
                              error_scales, random_inputs, ulp)
from keras_carafe.ops import carafe
from shape_grids import CASES, case_id

IMPLEMENTATIONS = ("op", "fallback")




# Unit roundoff u of the 16-bit formats (half the spacing of numbers in [1, 2)).
FP16_UNIT_ROUNDOFF = 2.0 ** -11   # 4.9e-4
BF16_UNIT_ROUNDOFF = 2.0 ** -8    # 3.9e-3

# Distance of a 16-bit result (16-bit inputs, 16-bit output) from the float32
# result on the original float32 inputs, per element, as a fraction of the
# element's natural error scale sum_taps |weight| * |value| (the result of the
# same reassembly on absolute values). Rounding both factors of every product
# costs at most 2u of that scale and rounding the output at most u more, so
# the error is bounded by 3u; we allow 4u.
# Measured (CPU, both implementations, output and both gradients, the shapes
# below over 8 seeds): float16 at most 7.4e-4 (1.5u), bfloat16 at most 5.7e-3
# (1.5u); over a wider set of shapes, up to 8.1e-4 (1.7u) and 7.5e-3 (1.9u).
# As a fraction of max |float32 result| instead: 5.7e-4 and 4.4e-3.
FP16_TOLERANCE = 4 * FP16_UNIT_ROUNDOFF   # 2.0e-3
BF16_TOLERANCE = 4 * BF16_UNIT_ROUNDOFF   # 1.6e-2

# Float32 accumulation of up to a few hundred products costs at most about
# 2^-16 of the error scale; accumulating in a 16-bit type would cost 2^-11
# (float16) or 2^-8 (bfloat16) per addition, which this tolerance rejects
# (a simulated float16 accumulation exceeds the allowance below 16-24 fold in a
# quarter of the elements). Measured: at most 0.50 of the allowance.
FLOAT32_ACCUMULATION_SLACK = 2.0 ** -16

SIXTEEN_BIT = {
    "float16": (tf.float16, FP16_TOLERANCE, 11, -14),
    "bfloat16": (tf.bfloat16, BF16_TOLERANCE, 8, -126),
}

SIXTEEN_BIT_CASES = [
    (2, 5, 6, 8, 2, 5, 1),
    (1, 4, 4, 256, 2, 7, 4),
    (1, 3, 3, 256, 3, 5, 1),
]


def round_to(dtype, *arrays):
    return [tf.cast(tf.cast(a, dtype), tf.float64).numpy() for a in arrays]


# --- the reference itself --------------------------------------------------------


@pytest.mark.parametrize("case", [(2, 3, 4, 4, 2, 3, 2), (1, 1, 3, 2, 3, 5, 1),
                                  (1, 2, 2, 4, 1, 7, 4)], ids=case_id)
def test_reference_equals_the_formula_evaluated_element_by_element(rng, case):
    n, h, w, c, s, k, g = case
    features, kernels = random_inputs(rng, n, h, w, c, s, k, g, np.float64)
    np.testing.assert_allclose(carafe_reference(features, kernels, s, k, g),
                               carafe_loops(features, kernels, s, k, g), rtol=0, atol=1e-13)


# --- hand-computed behaviour -------------------------------------------------------


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("scale_factor", [1, 2, 3])
def test_unit_1x1_kernels_give_nearest_neighbour_upsampling(rng, implementation,
                                                            scale_factor):
    features = rng.uniform(-1, 1, (2, 3, 4, 5)).astype(np.float32)
    kernels = np.ones((2, 3 * scale_factor, 4 * scale_factor, 1), np.float32)
    expected = features.repeat(scale_factor, axis=1).repeat(scale_factor, axis=2)
    out = carafe(features, kernels, scale_factor, 1, 1, implementation=implementation)
    np.testing.assert_array_equal(out.numpy(), expected)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("tap", [(0, 0), (0, 2), (2, 1), (1, 1)])
def test_one_hot_kernel_tap_ky_kx_reads_pixel_offset_by_ky_minus_r_kx_minus_r(
        rng, implementation, tap):
    ky, kx = tap
    features = rng.uniform(-1, 1, (1, 4, 5, 3)).astype(np.float32)
    kernels = np.zeros((1, 8, 10, 9), np.float32)
    kernels[..., ky * 3 + kx] = 1.0  # channel order ky * k + kx
    padded = np.pad(features, ((0, 0), (1, 1), (1, 1), (0, 0)))  # zeros outside
    shifted = padded[:, ky:ky + 4, kx:kx + 5]  # features[y + ky - 1, x + kx - 1]
    expected = shifted.repeat(2, axis=1).repeat(2, axis=2)
    out = carafe(features, kernels, 2, 3, 1, implementation=implementation)
    np.testing.assert_array_equal(out.numpy(), expected)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_groups_are_contiguous_channel_blocks(rng, implementation):
    # 6 channels in 3 groups: channels 0-1 use group 0's kernel, 2-3 group 1's, 4-5 group 2's.
    features = rng.uniform(-1, 1, (1, 3, 3, 6)).astype(np.float32)
    kernels = np.zeros((1, 3, 3, 3 * 9), np.float32)
    kernels[..., 1 * 9 + 4] = 2.0  # group 1: twice the centre tap
    out = carafe(features, kernels, 1, 3, 3, implementation=implementation).numpy()
    np.testing.assert_array_equal(out[..., 0:2], 0.0)
    np.testing.assert_array_equal(out[..., 2:4], 2.0 * features[..., 2:4])
    np.testing.assert_array_equal(out[..., 4:6], 0.0)


# --- against the reference -----------------------------------------------------------


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_float32_matches_reference(rng, implementation, case):
    n, h, w, c, s, k, g = case
    features, kernels = random_inputs(rng, n, h, w, c, s, k, g, np.float32)
    out = carafe(features, kernels, s, k, g, implementation=implementation)
    assert out.dtype == tf.float32
    assert out.shape == (n, h * s, w * s, c)
    np.testing.assert_allclose(out.numpy(), carafe_reference(features, kernels, s, k, g),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_float64_matches_reference_to_1e_12(rng, implementation, case):
    n, h, w, c, s, k, g = case
    features, kernels = random_inputs(rng, n, h, w, c, s, k, g, np.float64)
    out = carafe(features, kernels, s, k, g, implementation=implementation)
    assert out.dtype == tf.float64
    np.testing.assert_allclose(out.numpy(), carafe_reference(features, kernels, s, k, g),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_op_equals_fallback(rng, dtype, case):
    n, h, w, c, s, k, g = case
    features, kernels = random_inputs(rng, n, h, w, c, s, k, g, dtype)
    op = carafe(features, kernels, s, k, g, implementation="op").numpy()
    fallback = carafe(features, kernels, s, k, g, implementation="fallback").numpy()
    tolerance = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(op, fallback, rtol=tolerance, atol=tolerance)


# --- 16-bit types ----------------------------------------------------------------


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype_name", SIXTEEN_BIT)
@pytest.mark.parametrize("case", SIXTEEN_BIT_CASES, ids=case_id)
def test_16bit_output_and_gradients_agree_with_float32(rng, forward_and_grads, implementation,
                                                       dtype_name, case):
    dtype, tolerance, _, _ = SIXTEEN_BIT[dtype_name]
    n, h, w, c, s, k, g = case
    features, kernels = random_inputs(rng, n, h, w, c, s, k, g, np.float32)
    upstream = rng.uniform(-1, 1, (n, h * s, w * s, c)).astype(np.float32)
    full = forward_and_grads(features, kernels, upstream, s, k, g, implementation)
    half = forward_and_grads(features, kernels, upstream, s, k, g, implementation, dtype)
    scales = error_scales(features, kernels, upstream, s, k, g)
    for name, a, b, scale in zip(("output", "d/dfeatures", "d/dkernels"), full, half, scales):
        excess = np.abs(a - b) - tolerance * scale
        assert excess.max() <= 0, (
            f"{name}: worst error {np.max(np.abs(a - b) / np.maximum(scale, 1e-30)):.2e} "
            f"of the error scale, tolerance {tolerance:.2e}")


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype_name", SIXTEEN_BIT)
@pytest.mark.parametrize("case", SIXTEEN_BIT_CASES, ids=case_id)
def test_16bit_results_are_float32_sums_rounded_once(rng, forward_and_grads, implementation,
                                                     dtype_name, case):
    dtype, _, precision_bits, min_exponent = SIXTEEN_BIT[dtype_name]
    n, h, w, c, s, k, g = case
    features, kernels = random_inputs(rng, n, h, w, c, s, k, g, np.float32)
    upstream = rng.uniform(-1, 1, (n, h * s, w * s, c)).astype(np.float32)
    f, kk, d = round_to(dtype, features, kernels, upstream)  # exact 16-bit inputs
    exact = (carafe_reference(f, kk, s, k, g), *carafe_reference_grads(d, f, kk, s, k, g))
    half = forward_and_grads(f, kk, d, s, k, g, implementation, dtype)
    scales = error_scales(f, kk, d, s, k, g)
    for name, e, b, scale in zip(("output", "d/dfeatures", "d/dkernels"), exact, half, scales):
        allowed = ulp(e, precision_bits, min_exponent) + FLOAT32_ACCUMULATION_SLACK * scale
        assert np.all(np.abs(e - b) <= allowed), (
            f"{name}: worst error {np.max(np.abs(e - b) / allowed):.2f} times the allowance")


# --- determinism and empty batches -----------------------------------------------


def test_op_forward_is_bitwise_reproducible(rng):
    features, kernels = random_inputs(rng, 2, 12, 12, 64, 2, 5, 2, np.float32)
    first = carafe(features, kernels, 2, 5, 2, implementation="op").numpy()
    for _ in range(3):
        again = carafe(features, kernels, 2, 5, 2, implementation="op").numpy()
        np.testing.assert_array_equal(again, first)


def test_op_backward_is_bitwise_reproducible(rng, forward_and_grads):
    features, kernels = random_inputs(rng, 2, 12, 12, 64, 2, 5, 2, np.float32)
    upstream = rng.uniform(-1, 1, (2, 24, 24, 64)).astype(np.float32)
    _, *first = forward_and_grads(features, kernels, upstream, 2, 5, 2, "op")
    for _ in range(3):
        _, *again = forward_and_grads(features, kernels, upstream, 2, 5, 2, "op")
        np.testing.assert_array_equal(again[0], first[0])
        np.testing.assert_array_equal(again[1], first[1])


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_empty_batch_gives_empty_output(implementation):
    features = np.zeros((0, 3, 4, 6), np.float32)
    kernels = np.zeros((0, 6, 8, 18), np.float32)
    out = carafe(features, kernels, 2, 3, 2, implementation=implementation)
    assert out.shape == (0, 6, 8, 6)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_empty_batch_gives_empty_gradients(forward_and_grads, implementation):
    features = np.zeros((0, 3, 4, 6), np.float32)
    kernels = np.zeros((0, 6, 8, 18), np.float32)
    upstream = np.zeros((0, 6, 8, 6), np.float32)
    _, grad_features, grad_kernels = forward_and_grads(features, kernels, upstream, 2, 3, 2,
                                                       implementation)
    assert grad_features.shape == features.shape
    assert grad_kernels.shape == kernels.shape

"""Every implementation on the active Keras backend (the compiled kernels, the portable
path in each of its formulations, and TensorFlow's fallback): values and both gradients
against the NumPy reference, upsampling and downsampling, in all four dtypes.

This module runs unchanged with KERAS_BACKEND=tensorflow, jax and torch.
"""

import keras
import numpy as np
import pytest

from autodiff import BACKEND, float64_enabled, tensor, to_float64, value_and_grads
from carafe_reference import (carafe_downsample_reference, carafe_downsample_reference_grads,
                              carafe_reference, carafe_reference_grads,
                              downsample_error_scales, error_scales, random_downsample_inputs,
                              random_inputs)
from keras_carafe import backend
from keras_carafe.ops import carafe, carafe_downsample, portable, validation
from shape_grids import (CASES, DOWNSAMPLE_CASES, DOWNSAMPLE_GRADIENT_CASES, GRADIENT_CASES,
                         case_id)

DIRECTIONS = {
    "upsample": (carafe, carafe_reference, carafe_reference_grads, random_inputs,
                 error_scales),
    "downsample": (carafe_downsample, carafe_downsample_reference,
                   carafe_downsample_reference_grads, random_downsample_inputs,
                   downsample_error_scales),
}
VALUE_CASES = [("upsample", c) for c in CASES] + [("downsample", c) for c in DOWNSAMPLE_CASES]
GRAD_CASES = ([("upsample", c) for c in GRADIENT_CASES]
              + [("downsample", c) for c in DOWNSAMPLE_GRADIENT_CASES])


def direction_case_id(value):
    return value if isinstance(value, str) else case_id(value)


# The backend's implementations through the public functions (for "portable" the
# backend picks the formulation), and each formulation of the portable path called
# directly.
FORMULATIONS = (*backend.current().IMPLEMENTATIONS, "tap_sum", "patch_matmul")
PUBLIC = backend.current().IMPLEMENTATIONS


def _formulation(direction, factor, k, g, formulation):
    geometry = (validation.upsampling if direction == "upsample" else validation.downsampling)(
        factor, k, g)

    def run(f, kk):
        return portable.reassemble(geometry, f, kk, fused=formulation == "tap_sum")

    if BACKEND == "jax":
        import jax

        return jax.jit(run)  # eager JAX would compile each operation on its own
    return run


def problem(rng, direction, case, dtype, formulation="portable"):
    fn, reference, reference_grads, make_inputs, scales = DIRECTIONS[direction]
    n, h, w, c, factor, k, g = case
    features, kernels = make_inputs(rng, n, h, w, c, factor, k, g, dtype)
    expected = reference(features, kernels, factor, k, g)
    upstream = rng.uniform(-1, 1, expected.shape).astype(dtype)

    if formulation in PUBLIC:
        def run(f, kk):
            return fn(f, kk, factor, k, g, implementation=formulation)
    else:
        run = _formulation(direction, factor, k, g, formulation)

    return run, features, kernels, upstream, expected, reference_grads(
        upstream, features, kernels, factor, k, g), scales(features, kernels, upstream,
                                                           factor, k, g)


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("direction, case", VALUE_CASES, ids=direction_case_id)
def test_float32_matches_reference(rng, direction, case, formulation):
    run, features, kernels, _, expected, _, _ = problem(rng, direction, case, np.float32,
                                                        formulation)
    out = run(tensor(features), tensor(kernels))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert tuple(out.shape) == expected.shape
    np.testing.assert_allclose(to_float64(out), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("implementation", PUBLIC)
@pytest.mark.parametrize("direction, case", VALUE_CASES, ids=direction_case_id)
def test_float64_matches_reference_to_1e_12(rng, direction, case, implementation):
    with float64_enabled():
        run, features, kernels, _, expected, _, _ = problem(rng, direction, case, np.float64,
                                                            implementation)
        out = run(tensor(features), tensor(kernels))
        assert keras.backend.standardize_dtype(out.dtype) == "float64"
        np.testing.assert_allclose(to_float64(out), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype, formulation", [("float32", f) for f in FORMULATIONS]
                         + [("float64", i) for i in PUBLIC])
@pytest.mark.parametrize("direction, case", GRAD_CASES, ids=direction_case_id)
def test_gradients_match_reference_gradients(rng, direction, case, dtype, formulation):
    with float64_enabled():
        run, features, kernels, upstream, _, expected, _ = problem(rng, direction, case,
                                                                   np.dtype(dtype), formulation)
        _, *grads = value_and_grads(run, features, kernels, upstream)
    tolerance = 2e-5 if dtype == "float32" else 1e-12
    for name, actual, wanted in zip(("features", "kernels"), grads, expected):
        assert actual.shape == wanted.shape, name
        np.testing.assert_allclose(actual, wanted, rtol=tolerance, atol=tolerance,
                                   err_msg=name)


# Distance of 16-bit results from float32 as a fraction of each element's error
# scale (see test_ops_values.py): at most 3 units of roundoff, 4 allowed; plus half the
# spacing of the type's subnormal numbers, where rounding a tiny result is absolute.
SIXTEEN_BIT_TOLERANCE = {"float16": 4 * 2.0 ** -11, "bfloat16": 4 * 2.0 ** -8}
SUBNORMAL_HALF_SPACING = {"float16": 2.0 ** -25, "bfloat16": 2.0 ** -134}


# The compiled kernels on the whole grid; the other implementations, whose 16-bit
# arithmetic is their framework's, on a few cases of every kind.
SIXTEEN_BIT_CASES = (
    [("op", direction, case) for direction, case in VALUE_CASES]
    + [(implementation, direction, case) for implementation in PUBLIC if implementation != "op"
       for direction, case in [("upsample", (2, 5, 6, 8, 2, 5, 1)),
                               ("upsample", (1, 3, 3, 256, 3, 5, 1)),
                               ("downsample", (2, 9, 8, 8, 2, 5, 1)),
                               ("downsample", (1, 6, 6, 256, 3, 5, 4))]])


@pytest.mark.parametrize("dtype", sorted(SIXTEEN_BIT_TOLERANCE))
@pytest.mark.parametrize("implementation, direction, case", SIXTEEN_BIT_CASES,
                         ids=lambda v: v if isinstance(v, str) else case_id(v))
def test_16bit_output_and_gradients_agree_with_float32(rng, direction, case, dtype,
                                                       implementation):
    run, features, kernels, upstream, _, _, scales = problem(rng, direction, case, np.float32,
                                                             implementation)
    full = value_and_grads(run, features, kernels, upstream)
    half = value_and_grads(run, features, kernels, upstream, dtype)
    for name, a, b, scale in zip(("output", "d/dfeatures", "d/dkernels"), full, half, scales):
        worst = np.max(np.abs(a - b) / np.maximum(scale, 1e-30))
        allowed = SIXTEEN_BIT_TOLERANCE[dtype] * scale + SUBNORMAL_HALF_SPACING[dtype]
        assert np.all(np.abs(a - b) <= allowed), (
            f"{name}: worst error {worst:.2e} of the error scale")


@pytest.mark.parametrize("implementation", PUBLIC)
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_downsampling_with_1x1_unit_kernels_subsamples(rng, stride, implementation):
    features = rng.uniform(-1, 1, (2, 7, 8, 3)).astype(np.float32)
    oh, ow = -(-7 // stride), -(-8 // stride)
    out = carafe_downsample(features, np.ones((2, oh, ow, 1), np.float32), stride, 1, 1,
                            implementation=implementation)
    np.testing.assert_array_equal(to_float64(out), features[:, ::stride, ::stride])


@pytest.mark.parametrize("implementation", PUBLIC)
@pytest.mark.parametrize("tap", [(0, 0), (0, 2), (2, 1), (1, 1)])
def test_downsampling_tap_ky_kx_reads_pixel_offset_by_ky_minus_r_kx_minus_r(rng, tap,
                                                                            implementation):
    ky, kx = tap
    features = rng.uniform(-1, 1, (1, 5, 6, 3)).astype(np.float32)
    kernels = np.zeros((1, 3, 3, 9), np.float32)
    kernels[..., ky * 3 + kx] = 1.0
    padded = np.pad(features, ((0, 0), (1, 2), (1, 2), (0, 0)))  # zeros outside
    expected = padded[:, ky:ky + 5:2, kx:kx + 6:2]  # features[2*oh + ky - 1, 2*ow + kx - 1]
    out = carafe_downsample(features, kernels, 2, 3, 1, implementation=implementation)
    np.testing.assert_array_equal(to_float64(out), expected)


@pytest.mark.parametrize("implementation", PUBLIC)
@pytest.mark.parametrize("direction", sorted(DIRECTIONS))
def test_empty_batch_gives_empty_output_and_gradients(direction, implementation):
    run, features, kernels, upstream, expected, _, _ = problem(
        np.random.default_rng(0), direction, (0, 4, 5, 6, 2, 3, 2), np.float32, implementation)
    out, grad_features, grad_kernels = value_and_grads(run, features, kernels, upstream)
    assert out.shape == expected.shape
    assert grad_features.shape == features.shape
    assert grad_kernels.shape == kernels.shape


@pytest.mark.parametrize("implementation", ["auto", *PUBLIC])
@pytest.mark.parametrize("direction", sorted(DIRECTIONS))
def test_compiled_function_matches_reference(rng, direction, implementation):
    """`jax.jit`; `tf.function`, with XLA where the implementation allows; `torch.compile`
    of the compiled kernels (the portable path's compile takes minutes on PyTorch)."""
    fn, reference, _, make_inputs, _ = DIRECTIONS[direction]
    features, kernels = make_inputs(rng, 2, 5, 7, 8, 2, 5, 2, np.float32)

    def run(f, k):
        return fn(f, k, 2, 5, 2, implementation=implementation)

    if BACKEND == "jax":
        import jax

        run = jax.jit(run)
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        run = tf.function(run, jit_compile=implementation in ("auto", "portable"))
    elif BACKEND == "torch" and implementation != "portable":
        import torch

        run = torch.compile(run, fullgraph=True)
    np.testing.assert_allclose(to_float64(run(tensor(features), tensor(kernels))),
                               reference(features, kernels, 2, 5, 2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("implementation", PUBLIC)
@pytest.mark.parametrize("direction, case", [("upsample", (1, 3, 4, 4, 2, 5, 2)),
                                             ("downsample", (2, 5, 4, 3, 2, 5, 1))],
                         ids=direction_case_id)
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan], ids=["inf", "-inf", "nan"])
def test_taps_outside_the_image_contribute_nothing_whatever_their_weight(
        rng, direction, case, implementation, value):
    # The documented semantics, the same for every implementation: a weight on a tap
    # whose source pixel lies outside the image is ignored, even when it is not finite.
    run, features, kernels, upstream, _, _, _ = problem(rng, direction, case, np.float32,
                                                        implementation)
    fn, reference, reference_grads, _, _ = DIRECTIONS[direction]
    n, h, w, c, factor, k, g = case
    outside = ~np.broadcast_to(inside_taps(direction, h, w, factor, k, g), kernels.shape)
    poisoned = kernels.copy()
    poisoned[outside] = value
    finite = kernels.copy()
    finite[outside] = 0.0
    out, d_features, d_kernels = value_and_grads(run, features, poisoned, upstream)
    np.testing.assert_allclose(out, reference(features, finite, factor, k, g),
                               rtol=1e-5, atol=1e-5)
    expected_features, expected_kernels = reference_grads(upstream, features, finite,
                                                          factor, k, g)
    np.testing.assert_allclose(d_features, expected_features, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d_kernels, expected_kernels, rtol=1e-5, atol=1e-5)


def inside_taps(direction, h, w, factor, k, g):
    """(1, OH, OW, G*k*k) booleans over the kernels: True where the tap's source pixel lies
    inside the image, from the definition (independent of the package)."""
    r = (k - 1) // 2
    if direction == "upsample":
        sources_h, sources_w = np.arange(h * factor) // factor, np.arange(w * factor) // factor
    else:
        sources_h, sources_w = np.arange(0, h, factor), np.arange(0, w, factor)
    rows = sources_h[:, None] + np.arange(k) - r  # (OH, k)
    cols = sources_w[:, None] + np.arange(k) - r
    inside = (((rows >= 0) & (rows < h))[:, None, :, None]
              & ((cols >= 0) & (cols < w))[None, :, None, :])  # (OH, OW, k, k)
    inside = inside.reshape(len(sources_h), len(sources_w), k * k)
    return np.tile(inside, (1, 1, g))[None]

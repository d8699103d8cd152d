"""Gradients of `keras_carafe.ops.carafe` with respect to features and kernels."""

import numpy as np
import pytest
import tensorflow as tf

from carafe_reference import carafe_reference, carafe_reference_grads, random_inputs
from keras_carafe.ops import carafe
from shape_grids import GRADIENT_CASES as CASES, case_id

IMPLEMENTATIONS = ("op", "fallback")

# Small problems for numerical Jacobians, whose cost grows with
# (input size) x (output size): (batch, height, width, channels, s, k, G).
JACOBIAN_CASES = [
    (1, 2, 3, 2, 2, 3, 1),      # odd width, upsampling
    (1, 3, 2, 4, 1, 3, 2),      # no upsampling, 2 groups
    (2, 2, 2, 2, 3, 1, 2),      # batch 2, 1 x 1 kernel, scale 3
    (1, 2, 2, 1, 2, 5, 1),      # kernel larger than the image
]




def test_reference_gradients_are_adjoint_to_the_reference(rng):
    # The reassembly is linear in each input, so its gradients are the adjoint
    # maps: <d, out(v, kernels)> = <d/dfeatures, v> and
    # <d, out(features, v)> = <d/dkernels, v> for every v, with no step size involved.
    n, h, w, c, s, k, g = 2, 3, 4, 4, 2, 3, 2
    features, kernels = random_inputs(rng, n, h, w, c, s, k, g, np.float64)
    upstream = rng.standard_normal((n, h * s, w * s, c))
    grad_features, grad_kernels = carafe_reference_grads(upstream, features, kernels, s, k, g)
    for _ in range(3):
        v_features, v_kernels = random_inputs(rng, n, h, w, c, s, k, g, np.float64)
        np.testing.assert_allclose(
            np.sum(upstream * carafe_reference(v_features, kernels, s, k, g)),
            np.sum(grad_features * v_features), rtol=1e-12)
        np.testing.assert_allclose(
            np.sum(upstream * carafe_reference(features, v_kernels, s, k, g)),
            np.sum(grad_kernels * v_kernels), rtol=1e-12)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("case", JACOBIAN_CASES, ids=case_id)
def test_float64_gradients_match_numerical_jacobian(rng, implementation, case):
    n, h, w, c, s, k, g = case
    features, kernels = random_inputs(rng, n, h, w, c, s, k, g, np.float64)

    def reassemble(f, kk):
        return carafe(f, kk, s, k, g, implementation=implementation)

    theoretical, numerical = tf.test.compute_gradient(
        reassemble, [tf.constant(features), tf.constant(kernels)])
    for name, analytic, numeric in zip(("features", "kernels"), theoretical, numerical):
        assert analytic.shape == numeric.shape, name
        np.testing.assert_allclose(analytic, numeric, rtol=0, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_op_gradients_equal_fallback_gradients(rng, forward_and_grads, dtype, case):
    n, h, w, c, s, k, g = case
    features, kernels = random_inputs(rng, n, h, w, c, s, k, g, dtype)
    upstream = rng.uniform(-1, 1, (n, h * s, w * s, c)).astype(dtype)
    _, *op = forward_and_grads(features, kernels, upstream, s, k, g, "op")
    _, *fallback = forward_and_grads(features, kernels, upstream, s, k, g, "fallback")
    tolerance = 2e-6 if dtype == np.float32 else 1e-13
    for name, a, b in zip(("features", "kernels"), op, fallback):
        np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance, err_msg=name)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_gradients_match_reference_gradients(rng, forward_and_grads, implementation, dtype,
                                             case):
    n, h, w, c, s, k, g = case
    features, kernels = random_inputs(rng, n, h, w, c, s, k, g, dtype)
    upstream = rng.uniform(-1, 1, (n, h * s, w * s, c)).astype(dtype)
    _, *grads = forward_and_grads(features, kernels, upstream, s, k, g, implementation)
    expected = carafe_reference_grads(upstream, features, kernels, s, k, g)
    tolerance = 2e-5 if dtype == np.float32 else 1e-12
    for name, actual, wanted in zip(("features", "kernels"), grads, expected):
        assert actual.shape == wanted.shape, name
        np.testing.assert_allclose(actual, wanted, rtol=tolerance, atol=tolerance,
                                   err_msg=name)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_kernel_taps_outside_the_image_get_zero_gradient(rng, forward_and_grads,
                                                         implementation):
    # On a 1 x 1 image only the centre tap of a 3 x 3 kernel reads a pixel.
    features, kernels = random_inputs(rng, 1, 1, 1, 4, 2, 3, 1, np.float32)
    upstream = rng.uniform(-1, 1, (1, 2, 2, 4)).astype(np.float32)
    _, _, grad_kernels = forward_and_grads(features, kernels, upstream, 2, 3, 1,
                                           implementation)
    outside = np.ones(9, bool)
    outside[4] = False
    np.testing.assert_array_equal(grad_kernels[..., outside], 0.0)
    assert np.all(grad_kernels[..., 4] != 0.0)

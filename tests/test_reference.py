"""The NumPy reference of the downsampling reassembly checked against itself (NumPy only)."""

import numpy as np
import pytest

from carafe_reference import (carafe_downsample_loops, carafe_downsample_reference,
                              carafe_downsample_reference_grads, carafe_reference,
                              random_downsample_inputs, random_inputs)
from shape_grids import case_id

pytestmark = pytest.mark.all_backends


@pytest.mark.parametrize("case", [(2, 5, 6, 4, 2, 3, 2), (1, 1, 3, 2, 3, 5, 1),
                                  (1, 4, 4, 4, 1, 7, 4), (1, 7, 5, 2, 4, 3, 1)], ids=case_id)
def test_downsample_reference_equals_the_formula_evaluated_element_by_element(rng, case):
    n, h, w, c, stride, k, g = case
    features, kernels = random_downsample_inputs(rng, n, h, w, c, stride, k, g, np.float64)
    np.testing.assert_allclose(carafe_downsample_reference(features, kernels, stride, k, g),
                               carafe_downsample_loops(features, kernels, stride, k, g),
                               rtol=0, atol=1e-13)


@pytest.mark.parametrize("case", [(2, 5, 6, 4, 2, 3, 2), (1, 6, 7, 3, 3, 5, 1)], ids=case_id)
def test_downsample_reference_gradients_are_adjoint_to_the_reference(rng, case):
    # Linear in each input: <d, out(v, kernels)> = <d/dfeatures, v> and
    # <d, out(features, v)> = <d/dkernels, v> for every v.
    n, h, w, c, stride, k, g = case
    features, kernels = random_downsample_inputs(rng, n, h, w, c, stride, k, g, np.float64)
    upstream = rng.standard_normal(carafe_downsample_reference(features, kernels, stride, k,
                                                               g).shape)
    grad_features, grad_kernels = carafe_downsample_reference_grads(upstream, features,
                                                                    kernels, stride, k, g)
    for _ in range(3):
        v_features, v_kernels = random_downsample_inputs(rng, n, h, w, c, stride, k, g,
                                                         np.float64)
        np.testing.assert_allclose(
            np.sum(upstream * carafe_downsample_reference(v_features, kernels, stride, k, g)),
            np.sum(grad_features * v_features), rtol=1e-12)
        np.testing.assert_allclose(
            np.sum(upstream * carafe_downsample_reference(features, v_kernels, stride, k, g)),
            np.sum(grad_kernels * v_kernels), rtol=1e-12)


def test_downsampling_with_stride_1_is_upsampling_with_scale_1(rng):
    features, kernels = random_inputs(rng, 2, 4, 5, 6, 1, 3, 2, np.float64)
    np.testing.assert_array_equal(carafe_downsample_reference(features, kernels, 1, 3, 2),
                                  carafe_reference(features, kernels, 1, 3, 2))

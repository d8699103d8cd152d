"""Derivatives beyond the first through the compiled kernels on the active Keras backend:
gradient penalties, Hessian-vector products, forward mode and third derivatives, in
float64, against the portable path (each backend's own autodiff of standard operations)
and, where it has a closed form, the NumPy reference.

This module runs unchanged with KERAS_BACKEND=tensorflow, jax and torch; the cases are
those of tests/test_ops_higher_order.py, which also covers TensorFlow graphs.
"""

import keras
import pytest

from autodiff import float64_enabled, gradient, jvp, leaf, to_float64
from derivative_cases import (CASES, assert_close_to_roundoff, case_id, problem, reassemble,
                              reference)

pytestmark = pytest.mark.all_backends

ops = keras.ops


def compare(make, *arrays):
    """Runs `make(implementation)` on `arrays` with the compiled kernels and with the
    portable path; every result agrees to roundoff."""
    with float64_enabled():
        op = make("op")(*(leaf(a, "float64") for a in arrays))
        portable = make("portable")(*(leaf(a, "float64") for a in arrays))
        assert len(op) == len(portable)
        for index, (a, b) in enumerate(zip(op, portable)):
            assert_close_to_roundoff(to_float64(a), to_float64(b), f"result {index}")


@pytest.mark.parametrize("terms", [("features",), ("kernels",), ("features", "kernels")],
                         ids="+".join)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_gradient_penalty_matches_the_portable_path(rng, case, terms):
    features, kernels, upstream = problem(rng, case)

    def make(implementation):
        def loss(f, k, u):
            return ops.sum(reassemble(case, f, k, implementation) * u)

        def penalty(f, k, u):
            grad_features, grad_kernels = gradient(loss)(f, k, u)[:2]
            total = ops.sum(u * 0.0)
            if "features" in terms:
                total = total + (ops.sqrt(ops.sum(grad_features ** 2)) - 1.0) ** 2
            if "kernels" in terms:
                total = total + 0.5 * ops.sum(ops.sin(grad_kernels) * grad_kernels)
            return total

        return gradient(penalty)

    compare(make, features, kernels, upstream)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_hessian_vector_product_matches_the_portable_path(rng, case):
    features, kernels, _ = problem(rng, case)
    v_features, v_kernels = (rng.uniform(-1, 1, x.shape) for x in (features, kernels))

    def make(implementation):
        def loss(f, k):
            return ops.sum(ops.tanh(reassemble(case, f, k, implementation)))

        def directional(f, k, vf, vk):
            grad_features, grad_kernels = gradient(loss)(f, k)
            return ops.sum(grad_features * vf) + ops.sum(grad_kernels * vk)

        return lambda f, k, vf, vk: gradient(directional)(f, k, vf, vk)[:2]

    compare(make, features, kernels, v_features, v_kernels)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_mode_is_the_sum_of_the_two_linear_parts(rng, case):
    # The reassembly is bilinear: J (t_f, t_k) = out(t_f, kernels) + out(features, t_k).
    features, kernels, _ = problem(rng, case)
    t_features, t_kernels = (rng.uniform(-1, 1, x.shape) for x in (features, kernels))
    with float64_enabled():
        primals = [leaf(a, "float64") for a in (features, kernels)]
        tangents = [leaf(a, "float64") for a in (t_features, t_kernels)]
        out = jvp(lambda f, k: reassemble(case, f, k, "op"), primals, tangents)
    expected = reference(case, t_features, kernels) + reference(case, features, t_kernels)
    assert_close_to_roundoff(to_float64(out), expected, "jvp")


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_over_reverse_matches_the_portable_path(rng, case):
    features, kernels, _ = problem(rng, case)
    t_features, t_kernels = (rng.uniform(-1, 1, x.shape) for x in (features, kernels))

    def make(implementation):
        def loss(f, k):
            return ops.sum(ops.sin(reassemble(case, f, k, implementation)))

        def forward_over_reverse(f, k, tf_, tk):
            return jvp(lambda a, b: gradient(loss)(a, b), [f, k], [tf_, tk])

        return forward_over_reverse

    compare(make, features, kernels, t_features, t_kernels)


def test_third_derivative_matches_the_portable_path(rng):
    # Each map's derivatives are the other maps, so differentiating once more works too.
    case = ("up", 1, 2, 3, 2, 2, 3, 1)
    features, kernels, _ = problem(rng, case)

    def make(implementation):
        def first(f, k):
            loss = lambda a, b: ops.sum(reassemble(case, a, b, implementation) ** 3)
            return ops.sum(gradient(loss)(f, k)[0] ** 2)

        def second(f, k):
            return ops.sum(gradient(first)(f, k)[0])

        return lambda f, k: [gradient(second)(f, k)[1]]

    compare(make, features, kernels)

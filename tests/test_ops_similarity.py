"""`keras_carafe.ops.local_similarity` on the active Keras backend, in every implementation
the backend has: values and both gradients against the NumPy reference on the op's shape
grid, float64 and 16-bit inputs, derivatives of the second order and forward mode, compiled
functions, and bad inputs.

This module runs unchanged with KERAS_BACKEND=tensorflow, jax and torch.
"""

import re

import keras
import numpy as np
import pytest

from autodiff import BACKEND, float64_enabled, tensor, to_float64, value_and_grads
from carafe_reference import carafe_reference, carafe_reference_grads
from keras_carafe import backend
from keras_carafe.ops import local_similarity
from shape_grids import CASES, GRADIENT_CASES, case_id
from similarity_reference import (local_similarity_reference, local_similarity_reference_grads,
                                  random_similarity_inputs, similarity_error_scales,
                                  similarity_loops)

pytestmark = pytest.mark.all_backends

IMPLEMENTATIONS = backend.current().IMPLEMENTATIONS


def _run(implementation, s, k, g):
    def run(q, keys):
        return local_similarity(q, keys, s, k, g, implementation=implementation)

    return run


def _problem(rng, case, dtype=np.float32):
    n, h, w, c, s, k, g = case
    queries, keys = random_similarity_inputs(rng, n, h, w, c, s, dtype)
    upstream = rng.uniform(-1, 1, (n, h * s, w * s, g * k * k)).astype(dtype)
    return queries, keys, upstream


# --- the NumPy reference itself ----------------------------------------------------------


@pytest.mark.parametrize("case", [(2, 3, 4, 4, 2, 3, 2), (1, 2, 3, 3, 3, 5, 1),
                                  (1, 1, 1, 4, 4, 5, 4)], ids=case_id)
def test_reference_equals_the_formula_evaluated_element_by_element(rng, case):
    n, h, w, c, s, k, g = case
    queries, keys, _ = _problem(rng, case, np.float64)
    np.testing.assert_allclose(local_similarity_reference(queries, keys, s, k, g),
                               similarity_loops(queries, keys, s, k, g), rtol=0, atol=1e-13)


@pytest.mark.parametrize("case", [(2, 3, 4, 4, 2, 3, 2), (1, 4, 3, 6, 3, 5, 3)], ids=case_id)
def test_reference_gradients_are_adjoint_to_the_reference(rng, case):
    n, h, w, c, s, k, g = case
    queries, keys, upstream = _problem(rng, case, np.float64)
    grad_queries, grad_keys = local_similarity_reference_grads(upstream, queries, keys, s, k, g)
    for _ in range(3):
        v_queries, v_keys, _ = _problem(rng, case, np.float64)
        np.testing.assert_allclose(
            np.sum(upstream * local_similarity_reference(v_queries, keys, s, k, g)),
            np.sum(grad_queries * v_queries), rtol=1e-12)
        np.testing.assert_allclose(
            np.sum(upstream * local_similarity_reference(queries, v_keys, s, k, g)),
            np.sum(grad_keys * v_keys), rtol=1e-12)


def test_reference_is_the_kernels_gradient_of_the_reassembly(rng):
    # sim(q, keys) = d <q, carafe(keys, kernels)> / d kernels, whatever the kernels.
    queries, keys, upstream = _problem(rng, (2, 3, 4, 6, 2, 3, 3), np.float64)
    _, grad_kernels = carafe_reference_grads(queries, keys, upstream, 2, 3, 3)
    np.testing.assert_allclose(local_similarity_reference(queries, keys, 2, 3, 3), grad_kernels,
                               rtol=0, atol=1e-13)


# --- values and gradients ---------------------------------------------------------------


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_float32_matches_reference(rng, case, implementation):
    n, h, w, c, s, k, g = case
    queries, keys, _ = _problem(rng, case)
    out = local_similarity(tensor(queries), tensor(keys), s, k, g, implementation=implementation)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert tuple(out.shape) == (n, h * s, w * s, g * k * k)
    np.testing.assert_allclose(to_float64(out), local_similarity_reference(queries, keys, s, k, g),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_float64_matches_reference_to_1e_12(rng, case, implementation):
    n, h, w, c, s, k, g = case
    with float64_enabled():
        queries, keys, _ = _problem(rng, case, np.float64)
        out = local_similarity(tensor(queries), tensor(keys), s, k, g,
                               implementation=implementation)
        assert keras.backend.standardize_dtype(out.dtype) == "float64"
        np.testing.assert_allclose(to_float64(out),
                                   local_similarity_reference(queries, keys, s, k, g),
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("case", GRADIENT_CASES, ids=case_id)
def test_gradients_match_reference_gradients(rng, case, implementation, dtype):
    n, h, w, c, s, k, g = case
    with float64_enabled():
        queries, keys, upstream = _problem(rng, case, np.dtype(dtype))
        _, *grads = value_and_grads(_run(implementation, s, k, g), queries, keys, upstream)
    expected = local_similarity_reference_grads(upstream, queries, keys, s, k, g)
    tolerance = 2e-5 if dtype == "float32" else 1e-12
    for name, actual, wanted in zip(("queries", "keys"), grads, expected):
        assert actual.shape == wanted.shape, name
        np.testing.assert_allclose(actual, wanted, rtol=tolerance, atol=tolerance, err_msg=name)


# 16-bit results against float32, as a fraction of each element's error scale
# (the sum of |products| that forms it): a few units of roundoff.
SIXTEEN_BIT_TOLERANCE = {"float16": 4 * 2.0 ** -11, "bfloat16": 4 * 2.0 ** -8}


@pytest.mark.parametrize("dtype", sorted(SIXTEEN_BIT_TOLERANCE))
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("case", [(2, 5, 6, 8, 2, 5, 1), (1, 3, 3, 64, 3, 5, 4)], ids=case_id)
def test_16bit_output_and_gradients_agree_with_float32(rng, case, implementation, dtype):
    n, h, w, c, s, k, g = case
    queries, keys, upstream = _problem(rng, case)
    run = _run(implementation, s, k, g)
    full = value_and_grads(run, queries, keys, upstream)
    half = value_and_grads(run, queries, keys, upstream, dtype)
    scales = similarity_error_scales(queries, keys, upstream, s, k, g)
    for name, a, b, scale in zip(("similarity", "d/dqueries", "d/dkeys"), full, half, scales):
        worst = np.max(np.abs(a - b) / np.maximum(scale, 1e-30))
        assert np.all(np.abs(a - b) <= SIXTEEN_BIT_TOLERANCE[dtype] * scale), (
            f"{name}: worst error {worst:.2e} of the error scale")


@pytest.mark.parametrize("value", [0.5, np.inf, np.nan], ids=["finite", "inf", "nan"])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_taps_outside_the_image_have_zero_similarity_whatever_the_query(rng, implementation,
                                                                       value):
    queries, keys, _ = _problem(rng, (1, 3, 3, 4, 2, 5, 1))
    queries[0, 0, 0, 0] = value  # a corner query: most of its taps lie outside
    out = to_float64(local_similarity(queries, keys, 2, 5, 1, implementation=implementation))
    taps = out.reshape(1, 6, 6, 5, 5)
    # Output row 0 reads around key row 0: its taps ky = 0, 1 fall above the image.
    np.testing.assert_array_equal(taps[:, 0:2, :, 0:2, :], 0.0)
    np.testing.assert_array_equal(taps[:, :, 4:6, :, 3:5], 0.0)
    # Away from the poisoned query every tap inside the image has a similarity.
    assert np.all(taps[:, 1:, 1:, 2, 2] != 0.0)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_empty_batch_gives_empty_output_and_gradients(implementation):
    queries, keys, upstream = _problem(np.random.default_rng(0), (0, 4, 5, 6, 2, 3, 2))
    out, grad_queries, grad_keys = value_and_grads(_run(implementation, 2, 3, 2), queries, keys,
                                                   upstream)
    assert out.shape == (0, 8, 10, 18)
    assert grad_queries.shape == queries.shape and grad_keys.shape == keys.shape


# --- derivatives beyond the first --------------------------------------------------------


def _second_order(fn, queries, keys, upstream, weights_q, weights_k):
    """Returns (g_q, d<weights_q, g_q>/dkeys, g_k, d<weights_k, g_k>/dqueries) where
    g_q, g_k are the gradients of <upstream, fn(queries, keys)>, as float64 NumPy."""
    q, k, u, wq, wk = (tensor(x) for x in (queries, keys, upstream, weights_q, weights_k))
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape(persistent=True) as outer:
            outer.watch([q, k])
            with tf.GradientTape() as inner:
                inner.watch([q, k])
                loss = tf.reduce_sum(u * fn(q, k))
            g_q, g_k = inner.gradient(loss, [q, k])
            penalty_q, penalty_k = tf.reduce_sum(wq * g_q), tf.reduce_sum(wk * g_k)
        results = (g_q, outer.gradient(penalty_q, k), g_k, outer.gradient(penalty_k, q))
    elif BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        def grads(q, k):
            return jax.grad(lambda q, k: jnp.sum(u * fn(q, k)), argnums=(0, 1))(q, k)

        g_q, g_k = grads(q, k)
        results = (g_q, jax.grad(lambda k: jnp.sum(wq * grads(q, k)[0]))(k),
                   g_k, jax.grad(lambda q: jnp.sum(wk * grads(q, k)[1]))(q))
    else:
        import torch

        q, k = q.detach().requires_grad_(True), k.detach().requires_grad_(True)
        g_q, g_k = torch.autograd.grad((u * fn(q, k)).sum(), [q, k], create_graph=True)
        (d_keys,) = torch.autograd.grad((wq * g_q).sum(), [k], retain_graph=True)
        (d_queries,) = torch.autograd.grad((wk * g_k).sum(), [q])
        results = (g_q.detach(), d_keys, g_k.detach(), d_queries)
    return tuple(to_float64(x) for x in results)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("case", [(1, 3, 4, 4, 2, 3, 2), (2, 2, 3, 3, 1, 5, 1),
                                  (1, 2, 2, 6, 3, 1, 3)], ids=case_id)
def test_second_derivatives_are_the_reassembly_and_its_adjoint(rng, case, implementation):
    # d<u, sim>/dq = carafe(keys, u), and d<u, sim>/dkeys is the reassembly's features
    # gradient with q as the output gradient: their derivatives follow from the reference.
    n, h, w, c, s, k, g = case
    with float64_enabled():
        queries, keys, upstream = _problem(rng, case, np.float64)
        weights_q = rng.uniform(-1, 1, queries.shape)
        weights_k = rng.uniform(-1, 1, keys.shape)
        g_q, d_keys, g_k, d_queries = _second_order(_run(implementation, s, k, g), queries,
                                                    keys, upstream, weights_q, weights_k)
    expected = {
        "d/dqueries": carafe_reference(keys, upstream, s, k, g),
        "d/dkeys": carafe_reference_grads(queries, keys, upstream, s, k, g)[0],
        "d/dkeys <w, d/dqueries>": carafe_reference_grads(weights_q, keys, upstream, s, k, g)[0],
        "d/dqueries <w, d/dkeys>": carafe_reference(weights_k, upstream, s, k, g),
    }
    for (name, wanted), actual in zip(expected.items(), (g_q, g_k, d_keys, d_queries)):
        np.testing.assert_allclose(actual, wanted, rtol=1e-11, atol=1e-11, err_msg=name)


def _jvp(fn, primals, tangents):
    if BACKEND == "tensorflow":
        import tensorflow as tf

        primals = [tensor(p) for p in primals]
        with tf.autodiff.ForwardAccumulator(primals, [tensor(t) for t in tangents]) as acc:
            out = fn(*primals)
        return to_float64(acc.jvp(out))
    if BACKEND == "jax":
        import jax

        return to_float64(jax.jvp(fn, tuple(tensor(p) for p in primals),
                                  tuple(tensor(t) for t in tangents))[1])
    import torch.func

    return to_float64(torch.func.jvp(fn, tuple(tensor(p) for p in primals),
                                     tuple(tensor(t) for t in tangents))[1])


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_forward_mode_derivative_is_the_sum_of_two_similarities(rng, implementation):
    with float64_enabled():
        queries, keys, _ = _problem(rng, (2, 3, 4, 4, 2, 3, 2), np.float64)
        d_queries, d_keys, _ = _problem(rng, (2, 3, 4, 4, 2, 3, 2), np.float64)
        actual = _jvp(_run(implementation, 2, 3, 2), (queries, keys), (d_queries, d_keys))
    expected = (local_similarity_reference(d_queries, keys, 2, 3, 2)
                + local_similarity_reference(queries, d_keys, 2, 3, 2))
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("implementation", ["auto", "portable"])
def test_compiled_function_matches_reference(rng, implementation):
    """`jax.jit` or `tf.function(jit_compile=True)`; eager calls on PyTorch."""
    queries, keys, _ = _problem(rng, (2, 5, 7, 8, 2, 5, 2))
    run = _run(implementation, 2, 5, 2)
    if BACKEND == "jax":
        import jax

        run = jax.jit(run)
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        run = tf.function(run, jit_compile=True)
    np.testing.assert_allclose(to_float64(run(tensor(queries), tensor(keys))),
                               local_similarity_reference(queries, keys, 2, 5, 2),
                               rtol=1e-5, atol=1e-5)


# --- bad input: the argument named, on every implementation ---------------------------------

# A valid problem: 2 images, keys 3 x 4 x 6, scale 2, 3 x 3 taps, 2 groups.
QUERIES, KEYS = (2, 6, 8, 6), (2, 3, 4, 6)


def _call(implementation, queries=QUERIES, keys=KEYS, dtype="float32", keys_dtype=None,
          **hyperparameters):
    arguments = dict(scale_factor=2, kernel_size=3, group_size=2)
    arguments.update(hyperparameters)
    return local_similarity(keras.ops.zeros(queries, dtype), keras.ops.zeros(keys, keys_dtype or dtype),
                            implementation=implementation, **arguments)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_valid_problem_raises_nothing(implementation):
    assert tuple(_call(implementation).shape) == (2, 6, 8, 18)


BAD_INPUTS = {
    "queries-rank-3": (dict(queries=(6, 8, 6)), ValueError,
                       "`queries` must have rank 4 (N, H*scale_factor, W*scale_factor, C), "
                       "got shape (6, 8, 6)"),
    "keys-rank-5": (dict(keys=(2, 1, 3, 4, 6)), ValueError,
                    "`keys` must have rank 4 (N, H, W, C), got shape (2, 1, 3, 4, 6)"),
    "channels-differ": (dict(queries=(2, 6, 8, 4)), ValueError,
                        "`queries` channels (4) must equal `keys` channels (6)"),
    "groups-do-not-divide": (dict(queries=(2, 6, 8, 5), keys=(2, 3, 4, 5)), ValueError,
                             "`keys` channels (5) must be divisible by `group_size` (2)"),
    "height-not-scaled": (dict(queries=(2, 7, 8, 6)), ValueError,
                          "`queries` height must be scale_factor * keys height = 6, got 7"),
    "width-not-scaled": (dict(queries=(2, 6, 4, 6)), ValueError,
                         "`queries` width must be scale_factor * keys width = 8, got 4"),
    "batch-differs": (dict(queries=(3, 6, 8, 6)), ValueError,
                      "`queries` batch (3) must equal `keys` batch (2)"),
    "keys-dtype": (dict(keys_dtype="float16"), TypeError,
                   "`keys` must have the dtype of `queries` (float32), got float16"),
    "integer-queries": (dict(dtype="int32"), TypeError,
                        "`queries` must be float16, bfloat16, float32 or float64, got int32"),
    "even-kernel": (dict(kernel_size=4), ValueError,
                    "`kernel_size` must be an odd integer >= 1, got 4"),
    "scale-0": (dict(scale_factor=0), ValueError, "`scale_factor` must be an integer >= 1, got 0"),
    "group-float": (dict(group_size=2.0), TypeError,
                    "`group_size` must be an int, got 2.0 of type float"),
}


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("bad", BAD_INPUTS)
def test_bad_input_is_rejected_with_the_argument_named(implementation, bad):
    arguments, error, message = BAD_INPUTS[bad]
    with pytest.raises(error, match=re.escape(message)):
        _call(implementation, **arguments)


def test_unknown_implementation_is_rejected():
    with pytest.raises(ValueError, match="`implementation` must be one of 'auto', 'op', "
                                         "'fallback', 'portable', got 'cuda'"):
        _call("cuda")


def test_fallback_runs_on_tensorflow_only():
    if BACKEND == "tensorflow":
        assert tuple(_call("fallback").shape) == (2, 6, 8, 18)
        return
    with pytest.raises(ValueError, match=r"implementation='fallback' \(the pure-TensorFlow "
                                         r"fallback\) needs the TensorFlow backend"):
        _call("fallback")

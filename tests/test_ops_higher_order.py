"""Derivatives of `keras_carafe.ops.carafe` and `carafe_downsample` beyond the first:
gradients of gradients (gradient penalties), Hessian-vector products and forward mode,
through the compiled ops, against the pure-TensorFlow fallback and the NumPy reference, in
float64."""

import numpy as np
import pytest
import tensorflow as tf

from derivative_cases import (CASES, assert_close_to_roundoff, case_id, problem, reassemble,
                              reference, reference_grads)
from keras_carafe.backend.tensorflow import gradients, library

MODES = ["eager", "tf.function"]


def backward_op(case):
    """The compiled backward op of `case`, with its attributes bound."""
    direction, _, _, _, _, f, k, g = case
    module = library.load().module
    if direction == "up":
        return lambda *args: module.keras_carafe_reassemble_grad(
            *args, scale_factor=f, kernel_size=k, group_size=g)
    return lambda *args: module.keras_carafe_downsample_grad(
        *args, stride=f, kernel_size=k, group_size=g)


def run(mode, function, *args):
    """Calls `function` eagerly or traced by tf.function; returns NumPy arrays."""
    if mode == "tf.function":
        function = tf.function(function)
    return [t.numpy() for t in function(*(tf.constant(a) for a in args))]


def compare_implementations(mode, make_function, *args):
    """Runs `make_function(implementation)` with the op and with the fallback."""
    op = run(mode, make_function("op"), *args)
    fallback = run(mode, make_function("fallback"), *args)
    assert len(op) == len(fallback)
    for index, (a, b) in enumerate(zip(op, fallback)):
        assert_close_to_roundoff(a, b, f"result {index}")


def gradient_penalty(implementation, case, terms):
    """The gradient of a penalty on the input gradients (as in WGAN-GP)."""

    def penalty_gradients(features, kernels, upstream):
        with tf.GradientTape() as outer:
            outer.watch([features, kernels, upstream])
            with tf.GradientTape() as inner:
                inner.watch([features, kernels])
                out = reassemble(case, features, kernels, implementation)
                loss = tf.reduce_sum(out * upstream)
            grad_features, grad_kernels = inner.gradient(loss, [features, kernels])
            penalty = tf.constant(0.0, tf.float64)
            if "features" in terms:
                penalty += (tf.norm(grad_features) - 1.0) ** 2
            if "kernels" in terms:
                penalty += 0.5 * tf.reduce_sum(tf.sin(grad_kernels) * grad_kernels)
        # A penalty on one gradient alone does not depend on every input.
        return outer.gradient(penalty, [features, kernels, upstream],
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)

    return penalty_gradients


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("terms", [("features",), ("kernels",), ("features", "kernels")],
                         ids="+".join)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_gradient_penalty_through_the_op_matches_the_fallback(rng, mode, terms, case):
    compare_implementations(mode, lambda impl: gradient_penalty(impl, case, terms),
                            *problem(rng, case))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_hessian_vector_product_through_the_op_matches_the_fallback(rng, mode, case):
    features, kernels, _ = problem(rng, case)
    v_features, v_kernels = (rng.uniform(-1, 1, x.shape) for x in (features, kernels))

    def make(implementation):
        def hessian_vector_product(features, kernels, v_features, v_kernels):
            with tf.GradientTape() as outer:
                outer.watch([features, kernels])
                with tf.GradientTape() as inner:
                    inner.watch([features, kernels])
                    out = reassemble(case, features, kernels, implementation)
                    loss = tf.reduce_sum(tf.tanh(out))
                grads = inner.gradient(loss, [features, kernels])
                directional = (tf.reduce_sum(grads[0] * v_features)
                               + tf.reduce_sum(grads[1] * v_kernels))
            return outer.gradient(directional, [features, kernels])

        return hessian_vector_product

    compare_implementations(mode, make, features, kernels, v_features, v_kernels)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_mode_jvp_through_the_op_matches_the_fallback(rng, mode, case):
    features, kernels, _ = problem(rng, case)
    t_features, t_kernels = (rng.uniform(-1, 1, x.shape) for x in (features, kernels))

    def make(implementation):
        def jvp(features, kernels, t_features, t_kernels):
            with tf.autodiff.ForwardAccumulator([features, kernels],
                                                [t_features, t_kernels]) as accumulator:
                out = reassemble(case, features, kernels, implementation)
            return [accumulator.jvp(out)]

        return jvp

    compare_implementations(mode, make, features, kernels, t_features, t_kernels)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_mode_jvp_is_the_sum_of_the_two_linear_parts(rng, case):
    # The reassembly is bilinear: J (t_f, t_k) = out(t_f, kernels) + out(features, t_k).
    features, kernels, _ = problem(rng, case)
    t_features, t_kernels = (rng.uniform(-1, 1, x.shape) for x in (features, kernels))
    f, kk = tf.constant(features), tf.constant(kernels)
    with tf.autodiff.ForwardAccumulator([f, kk], [tf.constant(t_features),
                                                  tf.constant(t_kernels)]) as accumulator:
        out = reassemble(case, f, kk, "op")
    expected = reference(case, t_features, kernels) + reference(case, features, t_kernels)
    assert_close_to_roundoff(accumulator.jvp(out).numpy(), expected, "jvp")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_over_reverse_hessian_vector_product_matches_the_fallback(rng, mode, case):
    features, kernels, _ = problem(rng, case)
    t_features, t_kernels = (rng.uniform(-1, 1, x.shape) for x in (features, kernels))

    def make(implementation):
        def forward_over_reverse(features, kernels, t_features, t_kernels):
            with tf.autodiff.ForwardAccumulator([features, kernels],
                                                [t_features, t_kernels]) as accumulator:
                with tf.GradientTape() as tape:
                    tape.watch([features, kernels])
                    out = reassemble(case, features, kernels, implementation)
                    loss = tf.reduce_sum(tf.sin(out))
                grads = tape.gradient(loss, [features, kernels])
            return [accumulator.jvp(x) for x in grads]

        return forward_over_reverse

    compare_implementations(mode, make, features, kernels, t_features, t_kernels)


# --- the backward op's own gradient, against the NumPy reference ---------------------


@pytest.mark.parametrize("connected", ["both", "features", "kernels"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_backward_op_gradient_is_forward_and_backward_reassembly(rng, case, connected):
    # For upstream gradients (u, v) of the backward op's outputs (d/dfeatures,
    # d/dkernels): d/dgrad_output = out(u, kernels) + out(features, v),
    # d/dfeatures = the features gradient with kernels v, d/dkernels = the
    # kernels gradient with features u. A disconnected output contributes nothing.
    features, kernels, grad_output = problem(rng, case)
    u = rng.uniform(-1, 1, features.shape) if connected != "kernels" else None
    v = rng.uniform(-1, 1, kernels.shape) if connected != "features" else None
    inputs = [tf.constant(x) for x in (grad_output, features, kernels)]
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        grad_features, grad_kernels = backward_op(case)(*inputs)
        total = tf.constant(0.0, tf.float64)
        if u is not None:
            total += tf.reduce_sum(grad_features * u)
        if v is not None:
            total += tf.reduce_sum(grad_kernels * v)
    d_grad_output, d_features, d_kernels = (
        x.numpy() if x is not None else np.zeros(y.shape)
        for x, y in zip(tape.gradient(total, inputs), (grad_output, features, kernels)))

    zeros_u = np.zeros(features.shape) if u is None else u
    zeros_v = np.zeros(kernels.shape) if v is None else v
    assert_close_to_roundoff(d_grad_output,
                             reference(case, zeros_u, kernels) + reference(case, features, zeros_v),
                             "grad_output")
    assert_close_to_roundoff(d_features, reference_grads(case, grad_output, features, zeros_v)[0],
                             "features")
    assert_close_to_roundoff(d_kernels, reference_grads(case, grad_output, zeros_u, kernels)[1],
                             "kernels")


def test_third_derivative_through_the_op_matches_the_fallback(rng):
    # The gradients of the backward op are again forward and backward ops, so
    # differentiating once more works too.
    case = ("up", 1, 2, 3, 2, 2, 3, 1)
    features, kernels, _ = problem(rng, case)

    def make(implementation):
        def third(features, kernels):
            with tf.GradientTape() as t3:
                t3.watch(kernels)
                with tf.GradientTape() as t2:
                    t2.watch(features)
                    with tf.GradientTape() as t1:
                        t1.watch(features)
                        loss = tf.reduce_sum(
                            reassemble(case, features, kernels, implementation) ** 3)
                    first = tf.reduce_sum(t1.gradient(loss, features) ** 2)
                second = tf.reduce_sum(t2.gradient(first, features))
            return [t3.gradient(second, kernels)]

        return third

    compare_implementations("eager", make, features, kernels)


@pytest.mark.parametrize("missing", ["features", "kernels", "both"])
def test_backward_op_gradient_takes_a_missing_upstream_as_zero(rng, missing):
    # TensorFlow may pass None for an output that nothing depends on.
    case = ("up", 1, 3, 4, 4, 2, 3, 2)
    features, kernels, grad_output = problem(rng, case)
    u = None if missing in ("features", "both") else rng.uniform(-1, 1, features.shape)
    v = None if missing in ("kernels", "both") else rng.uniform(-1, 1, kernels.shape)
    spec = next(spec for spec in gradients.bilinear_ops(library.load().module)
                if spec.backward_type == "KerasCarafeReassembleGrad")
    gradient_function = gradients.backward_gradient(spec)

    @tf.function
    def grad_of_grad(grad_output, features, kernels):
        grad_features, _ = backward_op(case)(grad_output, features, kernels)
        return gradient_function(grad_features.op,
                                 None if u is None else tf.constant(u),
                                 None if v is None else tf.constant(v))

    results = grad_of_grad(*map(tf.constant, (grad_output, features, kernels)))
    if missing == "both":
        assert results == (None, None, None)
        return
    d_grad_output, d_features, d_kernels = results
    if u is None:
        assert d_kernels is None
        assert_close_to_roundoff(d_grad_output, reference(case, features, v), "grad_output")
        assert_close_to_roundoff(
            d_features, reference_grads(case, grad_output, features, v)[0], "features")
    else:
        assert d_features is None
        assert_close_to_roundoff(d_grad_output, reference(case, u, kernels), "grad_output")
        assert_close_to_roundoff(
            d_kernels, reference_grads(case, grad_output, u, kernels)[1], "kernels")

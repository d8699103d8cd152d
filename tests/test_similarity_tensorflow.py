"""The local similarity on TensorFlow: the compiled op and its gradient op in graphs, shapes
unknown while tracing (checked when the graph runs), the raw ops called with bad shapes and
attributes, XLA and export tracing, and gradients of gradients through the gradient op."""

import numpy as np
import pytest
import tensorflow as tf

from carafe_reference import carafe_reference
from keras_carafe.backend.tensorflow import library
from keras_carafe.ops import force_portable, local_similarity
from similarity_reference import local_similarity_reference, random_similarity_inputs

IMPLEMENTATIONS = ("op", "fallback", "portable")
S, K, G = 2, 3, 2
QUERIES, KEYS = (2, 6, 8, 6), (2, 3, 4, 6)


def zeros(shape, dtype=tf.float32):
    return tf.zeros(shape, dtype)


def op_types(function, *specs, jit_compile=None):
    graph = tf.function(function, jit_compile=jit_compile).get_concrete_function(*specs).graph
    return {op.type for op in graph.get_operations() if op.type.startswith("KerasCarafe")}


SPECS = (tf.TensorSpec(QUERIES, tf.float32), tf.TensorSpec(KEYS, tf.float32))


def test_op_is_one_node_and_its_gradient_one_gradient_op():
    def loss_gradients(q, k):
        with tf.GradientTape() as tape:
            tape.watch([q, k])
            loss = tf.reduce_sum(local_similarity(q, k, S, K, G, implementation="op"))
        return tape.gradient(loss, [q, k])

    assert op_types(lambda q, k: local_similarity(q, k, S, K, G, implementation="op"),
                    *SPECS) == {"KerasCarafeLocalSimilarity"}
    # Not the reassembly's gradient op, which would also compute the similarity again.
    assert op_types(loss_gradients, *SPECS) == {"KerasCarafeLocalSimilarity",
                                                "KerasCarafeLocalSimilarityGrad"}


def test_static_shape_of_the_op_follows_from_either_input():
    def similarity(q, k):
        return local_similarity(q, k, S, K, G, implementation="op")

    concrete = tf.function(similarity).get_concrete_function(
        tf.TensorSpec([None, 6, None, 6]), tf.TensorSpec([2, None, 4, None]))
    assert concrete.output_shapes.as_list() == [2, 6, 8, 18]


@pytest.mark.parametrize("implementation", ["auto", "portable"])
def test_xla_compiled_function_uses_standard_operations(rng, implementation):
    queries, keys = random_similarity_inputs(rng, 2, 3, 4, 6, S)

    def similarity(q, k):
        return local_similarity(q, k, S, K, G, implementation=implementation)

    assert not op_types(similarity, *SPECS, jit_compile=True)
    np.testing.assert_allclose(tf.function(similarity, jit_compile=True)(queries, keys).numpy(),
                               local_similarity_reference(queries, keys, S, K, G), atol=1e-5)


def test_op_under_xla_is_rejected():
    @tf.function(jit_compile=True)
    def similarity(q, k):
        return local_similarity(q, k, S, K, G, implementation="op")

    with pytest.raises(ValueError, match="implementation='op' cannot run inside an "
                                         "XLA-compiled function"):
        similarity(zeros(QUERIES), zeros(KEYS))


def test_functions_traced_inside_force_portable_have_no_custom_op():
    with force_portable():
        assert not op_types(lambda q, k: local_similarity(q, k, S, K, G, implementation="op"),
                            *SPECS)


# --- shapes unknown while tracing ----------------------------------------------------------

UNKNOWN = [tf.TensorSpec([None] * 4, tf.float32)] * 2

# Patterns that the op's and the asserts' messages both match.
RUNTIME_CASES = {
    "channels-differ": ((2, 6, 8, 4), KEYS, r"queries`? channels.*must equal `?keys`? channels"),
    "channels-not-divisible": ((2, 6, 8, 5), (2, 3, 4, 5),
                               r"keys`? channels.*must be divisible by group_size\W+2"),
    "height": ((2, 7, 8, 6), KEYS, r"queries`? spatial size must be scale_factor"),
    "width": ((2, 6, 9, 6), KEYS, r"queries`? spatial size must be scale_factor"),
    "batch": ((1, 6, 8, 6), KEYS, r"queries`? batch.*must equal `?keys`? batch"),
}


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("case", RUNTIME_CASES)
def test_bad_shapes_unknown_when_tracing_raise_invalid_argument_at_run_time(implementation,
                                                                            case):
    queries, keys, message = RUNTIME_CASES[case]

    @tf.function(input_signature=UNKNOWN)
    def similarity(q, k):
        return local_similarity(q, k, S, K, G, implementation=implementation)

    similarity.get_concrete_function()  # tracing succeeds: nothing is known yet
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        similarity(zeros(queries), zeros(keys))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("argument, queries, keys", [
    pytest.param("queries", (6, 8, 6), KEYS, id="queries-rank3"),
    pytest.param("keys", QUERIES, (3, 4, 6), id="keys-rank3"),
])
def test_wrong_rank_unknown_when_tracing_raises_invalid_argument_naming_the_input(
        implementation, argument, queries, keys):
    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32)] * 2)
    def similarity(q, k):
        return local_similarity(q, k, S, K, G, implementation=implementation)

    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"{argument}`?[ _]must[ _]have[ _]rank[ _]4"):
        similarity(zeros(queries), zeros(keys))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_valid_shapes_unknown_when_tracing_compute_the_similarity(rng, implementation):
    queries, keys = random_similarity_inputs(rng, 2, 3, 4, 6, S)

    @tf.function(input_signature=UNKNOWN)
    def similarity(q, k):
        return local_similarity(q, k, S, K, G, implementation=implementation)

    np.testing.assert_allclose(similarity(queries, keys).numpy(),
                               local_similarity_reference(queries, keys, S, K, G), atol=1e-5)


# --- the raw ops -----------------------------------------------------------------------------

RAW_SHAPE_CASES = {
    "queries-rank3": ((6, 8, 6), KEYS, r"queries must have rank 4"),
    "keys-rank5": (QUERIES, (1, 2, 3, 4, 6), r"keys must have rank 4"),
    "channels-differ": ((2, 6, 8, 4), KEYS,
                        r"queries channels \(4\) must equal keys channels \(6\)"),
    "channels-not-divisible": ((2, 6, 8, 5), (2, 3, 4, 5),
                               r"keys channels \(5\) must be divisible by group_size \(2\)"),
    "height": ((2, 5, 8, 6), KEYS, r"queries spatial size must be scale_factor \* keys spatial "
                                   r"size = \(6, 8\), got \(5, 8\)"),
    "batch": ((1, 6, 8, 6), KEYS, r"queries batch \(1\) must equal keys batch \(2\)"),
    "empty-queries-for-nonempty-keys": ((2, 0, 0, 6), KEYS,
                                        r"queries spatial size must be scale_factor"),
}

RAW_ATTR_CASES = {
    "scale_factor-0": ({"scale_factor": 0}, r"scale_factor must be >= 1, got 0"),
    "kernel_size-4": ({"kernel_size": 4}, r"kernel_size must be odd and >= 1, got 4"),
    "group_size-0": ({"group_size": 0}, r"group_size must be >= 1, got 0"),
}


@pytest.fixture(scope="module")
def raw_ops():
    return library.load().module


def attrs(**overrides):
    return {"scale_factor": S, "kernel_size": K, "group_size": G, **overrides}


@pytest.mark.parametrize("case", RAW_SHAPE_CASES)
def test_raw_op_rejects_inconsistent_shapes(raw_ops, case):
    queries, keys, message = RAW_SHAPE_CASES[case]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        raw_ops.keras_carafe_local_similarity(zeros(queries), zeros(keys), **attrs())


@pytest.mark.parametrize("case", RAW_SHAPE_CASES)
def test_raw_grad_op_rejects_inconsistent_shapes(raw_ops, case):
    queries, keys, message = RAW_SHAPE_CASES[case]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        raw_ops.keras_carafe_local_similarity_grad(zeros((2, 6, 8, 18)), zeros(queries),
                                                   zeros(keys), **attrs())


@pytest.mark.parametrize("case", RAW_ATTR_CASES)
def test_raw_ops_reject_invalid_attributes(raw_ops, case):
    overrides, message = RAW_ATTR_CASES[case]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        raw_ops.keras_carafe_local_similarity(zeros(QUERIES), zeros(KEYS), **attrs(**overrides))
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        raw_ops.keras_carafe_local_similarity_grad(zeros((2, 6, 8, 18)), zeros(QUERIES),
                                                   zeros(KEYS), **attrs(**overrides))


@pytest.mark.parametrize("grad_similarity", [(2, 6, 8, 9), (2, 6, 7, 18), (1, 6, 8, 18),
                                             (6, 8, 18)], ids=str)
def test_raw_grad_op_rejects_upstream_of_wrong_shape(raw_ops, grad_similarity):
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"grad_similarity must have the similarity shape \[2,6,8,18\]"):
        raw_ops.keras_carafe_local_similarity_grad(zeros(grad_similarity), zeros(QUERIES),
                                                   zeros(KEYS), **attrs())


def test_raw_op_rejects_scale_factor_whose_query_size_overflows(raw_ops):
    # 4 * 2**62 wraps to 0 in int64: queries of size 0 must not pass for it.
    with pytest.raises(tf.errors.InvalidArgumentError, match="overflows int64"):
        raw_ops.keras_carafe_local_similarity(zeros((1, 0, 0, 6)), zeros((1, 4, 4, 6)),
                                              **attrs(scale_factor=2 ** 62))


# --- second order through the gradient op ------------------------------------------------------


@pytest.mark.parametrize("mode", ["eager", "tf.function"])
def test_gradient_penalty_through_the_gradient_op_matches_the_reference(rng, mode):
    queries, keys = random_similarity_inputs(rng, 1, 3, 4, 4, S, np.float64)
    upstream = rng.uniform(-1, 1, (1, 6, 8, G * K * K))
    weights = rng.uniform(-1, 1, keys.shape)

    def penalty_gradient(q, k):
        with tf.GradientTape() as outer:
            outer.watch(q)
            with tf.GradientTape() as inner:
                inner.watch(k)
                loss = tf.reduce_sum(upstream * local_similarity(q, k, S, K, G,
                                                                 implementation="op"))
            penalty = tf.reduce_sum(weights * inner.gradient(loss, k))
        return outer.gradient(penalty, q)

    if mode == "tf.function":
        penalty_gradient = tf.function(penalty_gradient)
    # <w, d<u, sim>/dkeys> = <w, Bf(q, u)> = <carafe(w, u), q>: its gradient in q is the
    # reassembly of w with u as kernels.
    np.testing.assert_allclose(penalty_gradient(tf.constant(queries), tf.constant(keys)).numpy(),
                               carafe_reference(weights, upstream, S, K, G),
                               rtol=1e-11, atol=1e-12)

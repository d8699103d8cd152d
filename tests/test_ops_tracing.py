"""`carafe` eagerly, in tf.function graphs, under GradientTape and XLA, and how the
implementation is chosen."""

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import tensorflow as tf

from carafe_reference import carafe_reference, carafe_reference_grads, random_inputs
from keras_carafe.backend.tensorflow import library
from keras_carafe.ops import carafe
from keras_carafe.ops import implementation

IMPLEMENTATIONS = ("op", "fallback", "portable")
OP_TYPE = "KerasCarafeReassemble"
S, K, G, C = 2, 3, 2, 6


def spec(shape, dtype=tf.float32):
    return tf.TensorSpec(shape, dtype)


def op_types(function, *signature):
    graph = function.get_concrete_function(*signature).graph
    return {op.type for op in graph.get_operations()}


def inputs(rng, n=2, h=3, w=5, dtype=np.float32):
    return random_inputs(rng, n, h, w, C, S, K, G, dtype)


# --- eager, graph, gradient tape ------------------------------------------------------


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS + ("auto",))
def test_eager_call_matches_reference(rng, implementation):
    features, kernels = inputs(rng)
    out = carafe(features, kernels, S, K, G, implementation=implementation)
    np.testing.assert_allclose(out.numpy(), carafe_reference(features, kernels, S, K, G),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_one_trace_with_unknown_batch_and_spatial_sizes_serves_every_size(rng,
                                                                          implementation):
    @tf.function(input_signature=[spec([None, None, None, C]), spec([None, None, None, G * 9])])
    def reassemble(f, k):
        return carafe(f, k, S, K, G, implementation=implementation)

    for n, h, w in [(1, 2, 3), (3, 5, 4), (2, 1, 1)]:
        features, kernels = inputs(rng, n, h, w)
        np.testing.assert_allclose(reassemble(features, kernels).numpy(),
                                   carafe_reference(features, kernels, S, K, G),
                                   rtol=1e-5, atol=1e-5)
    assert reassemble.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_known_channels_are_the_static_output_channels(implementation):
    @tf.function
    def reassemble(f, k):
        return carafe(f, k, S, K, G, implementation=implementation)

    out = reassemble.get_concrete_function(spec([None, None, None, C]),
                                           spec([None, None, None, G * 9])).structured_outputs
    assert out.shape.as_list() == [None, None, None, C]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_known_input_height_times_scale_is_the_static_output_height(implementation):
    @tf.function
    def reassemble(f, k):
        return carafe(f, k, S, K, G, implementation=implementation)

    out = reassemble.get_concrete_function(spec([None, 5, None, C]),
                                           spec([None, None, None, G * 9])).structured_outputs
    assert out.shape.as_list() == [None, 5 * S, None, C]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_fully_known_shapes_give_fully_static_output_shape(implementation):
    @tf.function
    def reassemble(f, k):
        return carafe(f, k, S, K, G, implementation=implementation)

    out = reassemble.get_concrete_function(spec([3, 5, 7, C]),
                                           spec([None, None, None, None])).structured_outputs
    assert out.shape.as_list() == [3, 5 * S, 7 * S, C]


def test_op_shape_function_takes_output_size_from_kernels_when_features_are_unknown():
    @tf.function
    def reassemble(f, k):
        return carafe(f, k, S, K, G, implementation="op")

    out = reassemble.get_concrete_function(spec([None, None, None, None]),
                                           spec([4, 10, 14, G * 9])).structured_outputs
    assert out.shape.as_list() == [4, 10, 14, None]


@pytest.mark.parametrize("features, kernels, message", [
    pytest.param([2, 3, 4, 6], [2, 6, 8, 9], r"Dimension must be 18 but is 9",
                 id="kernels-channels"),
    pytest.param([2, 3, 4, 5], [2, 6, 8, 18], r"evenly divisible by 2 but is 5",
                 id="channels-not-divisible"),
    pytest.param([2, 3, 4, 6], [2, 6, 9, 18], r"Dimensions must be equal, but are 8 and 9",
                 id="kernels-width"),
    pytest.param([2, 3, 4, 6], [1, 6, 8, 18], r"Dimensions must be equal, but are 2 and 1",
                 id="batch"),
    pytest.param([2, 3, 4], [2, 6, 8, 18], r"Shape must be rank 4 but is rank 3",
                 id="features-rank3"),
])
def test_raw_op_in_a_graph_rejects_inconsistent_static_shapes_when_tracing(features, kernels,
                                                                           message):
    raw = library.load().module.keras_carafe_reassemble

    @tf.function
    def reassemble(f, k):
        return raw(f, k, scale_factor=S, kernel_size=K, group_size=G)

    with pytest.raises(ValueError, match=message):
        reassemble.get_concrete_function(spec(features), spec(kernels))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_gradients_in_a_function_with_unknown_sizes_match_reference(rng, implementation):
    @tf.function(input_signature=[spec([None, None, None, C])] * 2
                 + [spec([None, None, None, G * 9])])
    def grads(upstream, f, k):
        with tf.GradientTape() as tape:
            tape.watch([f, k])
            out = carafe(f, k, S, K, G, implementation=implementation)
        return tape.gradient(out, [f, k], output_gradients=upstream)

    features, kernels = inputs(rng)
    upstream = rng.uniform(-1, 1, (2, 3 * S, 5 * S, C)).astype(np.float32)
    actual = grads(upstream, features, kernels)
    expected = carafe_reference_grads(upstream, features, kernels, S, K, G)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a.numpy(), e, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_gradient_tape_gives_gradients_for_both_inputs_eagerly(rng, implementation):
    features, kernels = (tf.Variable(x) for x in inputs(rng))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(carafe(features, kernels, S, K, G, implementation=implementation))
    grad_features, grad_kernels = tape.gradient(loss, [features, kernels])
    expected = carafe_reference_grads(np.ones((2, 3 * S, 5 * S, C)), features.numpy(),
                                      kernels.numpy(), S, K, G)
    np.testing.assert_allclose(grad_features.numpy(), expected[0], rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(grad_kernels.numpy(), expected[1], rtol=2e-5, atol=2e-5)


# --- XLA -------------------------------------------------------------------------------


@pytest.mark.parametrize("implementation", ["auto", "fallback", "portable"])
def test_jit_compiled_function_matches_reference(rng, implementation):
    @tf.function(jit_compile=True)
    def reassemble(f, k):
        return carafe(f, k, S, K, G, implementation=implementation)

    features, kernels = inputs(rng)
    np.testing.assert_allclose(reassemble(features, kernels).numpy(),
                               carafe_reference(features, kernels, S, K, G),
                               rtol=1e-5, atol=1e-5)


def test_auto_under_jit_compile_uses_no_custom_op():
    @tf.function(jit_compile=True)
    def reassemble(f, k):
        return carafe(f, k, S, K, G, implementation="auto")

    assert OP_TYPE not in op_types(reassemble, spec([2, 3, 5, C]), spec([2, 6, 10, G * 9]))


def test_op_under_jit_compile_raises_value_error(rng):
    @tf.function(jit_compile=True)
    def reassemble(f, k):
        return carafe(f, k, S, K, G, implementation="op")

    features, kernels = inputs(rng)
    with pytest.raises(ValueError, match=r"implementation='op' cannot run inside an "
                                         r"XLA-compiled function"):
        reassemble(features, kernels)


# --- choosing the implementation ----------------------------------------------------


def carafe_function(implementation):
    @tf.function
    def reassemble(f, k):
        return carafe(f, k, S, K, G, implementation=implementation)

    return reassemble


SIGNATURE = (spec([None, None, None, C]), spec([None, None, None, G * 9]))


def test_op_graph_contains_the_custom_op():
    assert OP_TYPE in op_types(carafe_function("op"), *SIGNATURE)


def test_fallback_graph_contains_no_custom_op():
    assert OP_TYPE not in op_types(carafe_function("fallback"), *SIGNATURE)


def test_auto_uses_the_custom_op_when_it_loads():
    loaded = library.load()
    if tf.config.list_logical_devices("GPU") and not loaded.cuda_usable:
        pytest.skip(f"a GPU is visible but the op's CUDA kernels cannot run "
                    f"({loaded.cuda_status}), so 'auto' rightly picks the fallback")
    assert OP_TYPE in op_types(carafe_function("auto"), *SIGNATURE)


@pytest.mark.parametrize("value", ["1", "true", "YES"])
@pytest.mark.parametrize("implementation", ["op", "auto"])
def test_force_fallback_env_var_makes_every_implementation_use_the_fallback(
        monkeypatch, rng, value, implementation):
    monkeypatch.setenv("KERAS_CARAFE_FORCE_FALLBACK", value)
    reassemble = carafe_function(implementation)
    assert OP_TYPE not in op_types(reassemble, *SIGNATURE)
    features, kernels = inputs(rng)
    np.testing.assert_allclose(reassemble(features, kernels).numpy(),
                               carafe_reference(features, kernels, S, K, G),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("value", ["", "0", "false", "no"])
def test_force_fallback_env_var_set_to_a_false_value_keeps_the_op(monkeypatch, value):
    monkeypatch.setenv("KERAS_CARAFE_FORCE_FALLBACK", value)
    assert OP_TYPE in op_types(carafe_function("op"), *SIGNATURE)


@pytest.fixture
def op_unavailable(monkeypatch):
    """Makes the compiled op unloadable in this process, with a fresh warning state."""

    def fail():
        raise library.OpUnavailableError("BuildError: simulated for the test")

    monkeypatch.setattr(library, "load", fail)
    monkeypatch.setattr(implementation, "_warned", set())


def test_auto_without_the_op_falls_back_with_one_runtime_warning_per_process(rng,
                                                                            op_unavailable):
    features, kernels = inputs(rng)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outputs = [carafe(features, kernels, S, K, G, implementation="auto") for _ in range(3)]
    runtime_warnings = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(runtime_warnings) == 1
    assert "simulated for the test" in str(runtime_warnings[0].message)
    for out in outputs:
        np.testing.assert_allclose(out.numpy(), carafe_reference(features, kernels, S, K, G),
                                   rtol=1e-5, atol=1e-5)


def test_op_without_the_op_raises_the_reason(rng, op_unavailable):
    features, kernels = inputs(rng)
    with pytest.raises(library.OpUnavailableError, match="simulated for the test"):
        carafe(features, kernels, S, K, G, implementation="op")


_FIRST_USE_IN_A_FUNCTION = textwrap.dedent("""
    import numpy as np, tensorflow as tf
    from keras_carafe import carafe

    @tf.function
    def reassemble(features, kernels):
        return carafe(features, kernels, 2, 3, 1)

    out = reassemble(tf.ones((1, 2, 2, 4)), tf.ones((1, 4, 4, 9)))
    print(float(out[0, 2, 2, 0]))
""")


def test_a_first_use_inside_a_tf_function_builds_without_autograph_warnings(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "KERAS_CARAFE_CACHE_DIR": str(tmp_path / "cache"),
           "KERAS_CARAFE_NO_CUDA": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([repo, *filter(None, [os.environ.get("PYTHONPATH")])])}
    result = subprocess.run([sys.executable, "-c", _FIRST_USE_IN_A_FUNCTION],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "4.0"
    # The build said what it does, and AutoGraph said nothing.
    assert "keras_carafe: building the compiled kernels for TensorFlow" in result.stderr
    assert "keras_carafe: built the CPU kernels for TensorFlow" in result.stderr
    assert "AutoGraph" not in result.stderr

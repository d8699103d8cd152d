"""Bad inputs to `keras_carafe.ops.carafe` and to the raw ops: clear errors, never a crash."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tensorflow as tf

from keras_carafe.backend.tensorflow import library
from keras_carafe.ops import carafe

IMPLEMENTATIONS = ("op", "fallback", "portable")

# A valid problem: 2 images of 3 x 4 x 6, scale 2, 3 x 3 kernels, 2 groups
# (6 channels divisible by 2; kernels have 2 * 3 * 3 = 18 channels).
S, K, G = 2, 3, 2
FEATURES = (2, 3, 4, 6)
KERNELS = (2, 6, 8, 18)


def zeros(shape, dtype=tf.float32):
    return tf.zeros(shape, dtype)


def call(implementation, features=FEATURES, kernels=KERNELS, dtype=tf.float32,
         kernels_dtype=None, **hyperparameters):
    arguments = dict(scale_factor=S, kernel_size=K, group_size=G)
    arguments.update(hyperparameters)
    return carafe(zeros(features, dtype), zeros(kernels, kernels_dtype or dtype),
                  implementation=implementation, **arguments)


# --- static problems: ValueError / TypeError naming the argument -------------------


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_valid_problem_raises_nothing(implementation):
    assert call(implementation).shape == (2, 6, 8, 6)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("shape", [(3, 4, 6), (1, 2, 3, 4, 6), ()], ids=["rank3", "rank5",
                                                                        "rank0"])
def test_features_of_rank_other_than_4_are_rejected(implementation, shape):
    with pytest.raises(ValueError, match=r"`features` must have rank 4 \(N, H, W, C\)"):
        call(implementation, features=shape)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("shape", [(6, 8, 18), (1, 2, 6, 8, 18)], ids=["rank3", "rank5"])
def test_kernels_of_rank_other_than_4_are_rejected(implementation, shape):
    with pytest.raises(ValueError, match=r"`kernels` must have rank 4"):
        call(implementation, kernels=shape)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("kernel_size", [2, 4])
def test_even_kernel_size_is_rejected(implementation, kernel_size):
    kernels = (2, 6, 8, G * kernel_size ** 2)
    with pytest.raises(ValueError, match=rf"`kernel_size` must be an odd integer >= 1, "
                                         rf"got {kernel_size}$"):
        call(implementation, kernels=kernels, kernel_size=kernel_size)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("kernel_size", [0, -1, -3])
def test_kernel_size_below_1_is_rejected(implementation, kernel_size):
    with pytest.raises(ValueError, match=rf"`kernel_size` must be an odd integer >= 1, "
                                         rf"got {kernel_size}$"):
        call(implementation, kernel_size=kernel_size)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("scale_factor", [0, -2])
def test_scale_factor_below_1_is_rejected(implementation, scale_factor):
    with pytest.raises(ValueError, match=rf"`scale_factor` must be an integer >= 1, "
                                         rf"got {scale_factor}$"):
        call(implementation, scale_factor=scale_factor)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("group_size", [0, -2])
def test_group_size_below_1_is_rejected(implementation, group_size):
    with pytest.raises(ValueError, match=rf"`group_size` must be an integer >= 1, "
                                         rf"got {group_size}$"):
        call(implementation, group_size=group_size)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("name", ["scale_factor", "kernel_size", "group_size"])
@pytest.mark.parametrize("value", [2.0, "2", None, True, False],
                         ids=["float", "str", "None", "True", "False"])
def test_hyperparameters_that_are_not_ints_are_rejected(implementation, name, value):
    with pytest.raises(TypeError,
                       match=rf"`{name}` must be an int, got {re.escape(repr(value))} of type "
                             rf"{type(value).__name__}"):
        call(implementation, **{name: value})


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_channels_not_divisible_by_group_size_are_rejected(implementation):
    with pytest.raises(ValueError, match=r"`features` channels \(5\) must be divisible by "
                                         r"`group_size` \(2\)"):
        call(implementation, features=(2, 3, 4, 5))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("channels", [9, 17, 36])
def test_kernels_channels_other_than_group_size_times_k_squared_are_rejected(implementation,
                                                                              channels):
    with pytest.raises(ValueError, match=rf"`kernels` must have group_size \* kernel_size\*\*2 "
                                         rf"= 18 channels, got {channels}"):
        call(implementation, kernels=(2, 6, 8, channels))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("axis, kernels, expected, got", [
    ("height", (2, 5, 8, 18), 6, 5),
    ("height", (2, 3, 8, 18), 6, 3),
    ("width", (2, 6, 9, 18), 8, 9),
])
def test_kernels_spatial_size_other_than_scale_times_features_is_rejected(
        implementation, axis, kernels, expected, got):
    with pytest.raises(ValueError, match=rf"`kernels` {axis} must be scale_factor \* features "
                                         rf"{axis} = {expected}, got {got}"):
        call(implementation, kernels=kernels)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_batch_mismatch_is_rejected(implementation):
    with pytest.raises(ValueError, match=r"`kernels` batch \(1\) must equal `features` "
                                         r"batch \(2\)"):
        call(implementation, kernels=(1, 6, 8, 18))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("features_dtype, kernels_dtype", [
    (tf.float32, tf.float64), (tf.float16, tf.float32), (tf.bfloat16, tf.float16),
    (tf.float32, tf.int32)])
def test_dtype_mismatch_is_rejected(implementation, features_dtype, kernels_dtype):
    with pytest.raises(TypeError, match=rf"`kernels` must have the dtype of `features` "
                                        rf"\({features_dtype.name}\), got {kernels_dtype.name}"):
        call(implementation, dtype=features_dtype, kernels_dtype=kernels_dtype)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", [tf.int32, tf.int64, tf.uint8, tf.complex64, tf.bool])
def test_unsupported_dtype_is_rejected(implementation, dtype):
    with pytest.raises(TypeError, match=rf"`features` must be float16, bfloat16, float32 or "
                                        rf"float64, got {dtype.name}"):
        call(implementation, dtype=dtype)


@pytest.mark.parametrize("implementation", ["cuda", "OP", "", None, "xla"])
def test_unknown_implementation_is_rejected(implementation):
    with pytest.raises(ValueError, match=r"`implementation` must be one of 'auto', 'op', "
                                         rf"'fallback', 'portable', got {re.escape(repr(implementation))}"):
        call(implementation)


# --- run-time problems: InvalidArgumentError from the op kernel or the asserts ------

UNKNOWN_SHAPES = [tf.TensorSpec([None, None, None, None], tf.float32)] * 2

# Patterns that the op's and the fallback's messages both match.
RUNTIME_CASES = {
    "kernels-channels": ((2, 3, 4, 6), (2, 6, 8, 9),
                         r"kernels`? channels must be group_size \* kernel_size(\^|\*\*)2 = 18"),
    "channels-not-divisible": ((2, 3, 4, 5), (2, 6, 8, 18),
                               r"features`? channels.* must be divisible by group_size\W+2"),
    "kernels-height": ((2, 3, 4, 6), (2, 5, 8, 18), r"kernels`? spatial size must be"),
    "kernels-width": ((2, 3, 4, 6), (2, 6, 9, 18), r"kernels`? spatial size must be"),
    "batch": ((2, 3, 4, 6), (1, 6, 8, 18), r"kernels`? batch.* must equal `?features`? batch"),
}


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("case", RUNTIME_CASES)
def test_bad_shapes_unknown_when_tracing_raise_invalid_argument_at_run_time(implementation,
                                                                            case):
    features, kernels, message = RUNTIME_CASES[case]

    @tf.function(input_signature=UNKNOWN_SHAPES)
    def reassemble(f, k):
        return carafe(f, k, S, K, G, implementation=implementation)

    reassemble.get_concrete_function()  # tracing succeeds: nothing is known yet
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        reassemble(zeros(features), zeros(kernels))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("argument, features, kernels", [
    pytest.param("features", (3, 4, 6), KERNELS, id="features-rank3"),
    pytest.param("kernels", FEATURES, (6, 8, 18), id="kernels-rank3"),
])
def test_wrong_rank_unknown_when_tracing_raises_invalid_argument_naming_the_input(
        implementation, argument, features, kernels):
    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32)] * 2)
    def reassemble(f, k):
        return carafe(f, k, S, K, G, implementation=implementation)

    # The op's kernel says "<argument> must have rank 4"; the fallback's check is
    # an EnsureShape node named "<argument>_must_have_rank_4".
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"{argument}`?[ _]must[ _]have[ _]rank[ _]4"):
        reassemble(zeros(features), zeros(kernels))


# --- the raw ops, called eagerly (no Python validation in front of them) -----------

RAW_SHAPE_CASES = {
    "features-rank3": ((3, 4, 6), KERNELS, r"features must have rank 4"),
    "features-rank5": ((1, 2, 3, 4, 6), KERNELS, r"features must have rank 4"),
    "kernels-rank3": (FEATURES, (6, 8, 18), r"kernels must have rank 4"),
    "channels-not-divisible": ((2, 3, 4, 5), KERNELS,
                               r"features channels \(5\) must be divisible by group_size \(2\)"),
    "kernels-channels": (FEATURES, (2, 6, 8, 9),
                         r"kernels channels must be group_size \* kernel_size\^2 = 18, got 9"),
    "kernels-height": (FEATURES, (2, 5, 8, 18), r"kernels spatial size must be \(6, 8\)"),
    "kernels-width": (FEATURES, (2, 6, 16, 18), r"kernels spatial size must be \(6, 8\)"),
    "batch": (FEATURES, (1, 6, 8, 18), r"kernels batch \(1\) must equal features batch \(2\)"),
    "empty-kernels-for-nonempty-features": (FEATURES, (2, 0, 0, 18),
                                            r"kernels spatial size must be \(6, 8\)"),
}

RAW_ATTR_CASES = {
    "scale_factor-0": ({"scale_factor": 0}, r"scale_factor must be >= 1, got 0"),
    "kernel_size-4": ({"kernel_size": 4}, r"kernel_size must be odd and >= 1, got 4"),
    "kernel_size-0": ({"kernel_size": 0}, r"kernel_size must be odd and >= 1, got 0"),
    "kernel_size--1": ({"kernel_size": -1}, r"kernel_size must be odd and >= 1, got -1"),
    "group_size-0": ({"group_size": 0}, r"group_size must be >= 1, got 0"),
    "group_size--2": ({"group_size": -2}, r"group_size must be >= 1, got -2"),
}


@pytest.fixture(scope="module")
def raw_ops():
    return library.load().module


def attrs(**overrides):
    return {"scale_factor": S, "kernel_size": K, "group_size": G, **overrides}


@pytest.mark.parametrize("case", RAW_SHAPE_CASES)
def test_raw_forward_op_rejects_inconsistent_shapes(raw_ops, case):
    features, kernels, message = RAW_SHAPE_CASES[case]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        raw_ops.keras_carafe_reassemble(zeros(features), zeros(kernels), **attrs())


@pytest.mark.parametrize("case", RAW_SHAPE_CASES)
def test_raw_grad_op_rejects_inconsistent_shapes(raw_ops, case):
    features, kernels, message = RAW_SHAPE_CASES[case]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        raw_ops.keras_carafe_reassemble_grad(zeros((2, 6, 8, 6)), zeros(features),
                                             zeros(kernels), **attrs())


@pytest.mark.parametrize("case", RAW_ATTR_CASES)
def test_raw_forward_op_rejects_invalid_attributes(raw_ops, case):
    overrides, message = RAW_ATTR_CASES[case]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        raw_ops.keras_carafe_reassemble(zeros(FEATURES), zeros(KERNELS), **attrs(**overrides))


@pytest.mark.parametrize("case", RAW_ATTR_CASES)
def test_raw_grad_op_rejects_invalid_attributes(raw_ops, case):
    overrides, message = RAW_ATTR_CASES[case]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        raw_ops.keras_carafe_reassemble_grad(zeros((2, 6, 8, 6)), zeros(FEATURES),
                                             zeros(KERNELS), **attrs(**overrides))


@pytest.mark.parametrize("grad_output", [(2, 6, 8, 5), (2, 6, 7, 6), (2, 5, 8, 6),
                                         (1, 6, 8, 6), (6, 8, 6), (2, 6, 8, 6, 1), (0, 6, 8, 6)],
                         ids=str)
def test_raw_grad_op_rejects_grad_output_of_wrong_shape(raw_ops, grad_output):
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"grad_output must have the output shape \[2,6,8,6\]"):
        raw_ops.keras_carafe_reassemble_grad(zeros(grad_output), zeros(FEATURES),
                                             zeros(KERNELS), **attrs())


# A scale factor of 2**62 makes H * s = 4 * 2**62 = 2**64 overflow int64 to 0, so
# kernels of spatial size 0 x 0 pass a check done in int64 arithmetic.
OVERFLOWING_SCALE = 2 ** 62


def test_raw_forward_op_rejects_scale_factor_whose_output_size_overflows(raw_ops):
    with pytest.raises(tf.errors.InvalidArgumentError):
        raw_ops.keras_carafe_reassemble(zeros((1, 4, 4, 6)), zeros((1, 0, 0, 18)),
                                        **attrs(scale_factor=OVERFLOWING_SCALE))


def test_raw_grad_op_rejects_scale_factor_whose_output_size_overflows():
    # In a subprocess: the failure this guards against is a segmentation fault.
    script = textwrap.dedent(f"""
        import tensorflow as tf
        from keras_carafe.backend.tensorflow import library
        ops = library.load().module
        try:
            ops.keras_carafe_reassemble_grad(
                tf.zeros((1, 0, 0, 6)), tf.zeros((1, 4, 4, 6)), tf.zeros((1, 0, 0, 18)),
                scale_factor={OVERFLOWING_SCALE}, kernel_size=3, group_size=2)
        except tf.errors.InvalidArgumentError:
            print("InvalidArgumentError")
        else:
            print("no error")
    """)
    repo = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(repo), *filter(None, [os.environ.get("PYTHONPATH")])]))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, (
        f"the grad op crashed (exit status {result.returncode}):\n{result.stderr[-2000:]}")
    assert result.stdout.strip() == "InvalidArgumentError"

"""Bad arguments to `carafe` and `carafe_downsample` on the active Keras backend: the same
errors, naming the argument, from every implementation.

This module runs unchanged with KERAS_BACKEND=tensorflow, jax and torch.
"""

import re

import keras
import pytest

from autodiff import BACKEND
from keras_carafe import backend
from keras_carafe.ops import carafe, carafe_downsample

IMPLEMENTATIONS = ("auto", *backend.current().IMPLEMENTATIONS)

# Valid problems: 2 images of 5 x 4 x 6, 3 x 3 kernels, 2 groups (18 kernel channels).
# Upsampling by 2 takes kernels of 10 x 8; downsampling with stride 2 of 3 x 2.
FEATURES = (2, 5, 4, 6)
FUNCTIONS = {
    "carafe": (carafe, "scale_factor", (2, 10, 8, 18)),
    "carafe_downsample": (carafe_downsample, "stride", (2, 3, 2, 18)),
}


def call(function, implementation, features=FEATURES, kernels=None, dtype="float32",
         kernels_dtype=None, **hyperparameters):
    fn, factor_name, valid_kernels = FUNCTIONS[function]
    arguments = {factor_name: 2, "kernel_size": 3, "group_size": 2}
    arguments.update(hyperparameters)
    return fn(keras.ops.zeros(features, dtype),
              keras.ops.zeros(kernels or valid_kernels, kernels_dtype or dtype),
              implementation=implementation, **arguments)


def expect(error, message):
    return pytest.raises(error, match=message)


@pytest.fixture(params=sorted(FUNCTIONS))
def function(request):
    return request.param


@pytest.fixture(params=IMPLEMENTATIONS)
def implementation(request):
    return request.param


def test_valid_problem_gives_the_documented_output_shape(function):
    expected = (2, 10, 8, 6) if function == "carafe" else (2, 3, 2, 6)
    assert tuple(call(function, "portable").shape) == expected


@pytest.mark.parametrize("shape", [(4, 6), (1, 2, 5, 4, 6), ()], ids=["rank2", "rank5", "rank0"])
def test_features_of_rank_other_than_4_are_rejected(function, implementation, shape):
    with expect(ValueError, r"`features` must have rank 4 \(N, H, W, C\), got shape"):
        call(function, implementation, features=shape)


def test_kernels_of_rank_other_than_4_are_rejected(function, implementation):
    with expect(ValueError, r"`kernels` must have rank 4 \(N, "):
        call(function, implementation, kernels=(3, 2, 18))


@pytest.mark.parametrize("kernel_size", [2, 0, -1])
def test_kernel_size_that_is_not_odd_and_positive_is_rejected(function, implementation,
                                                              kernel_size):
    with expect(ValueError, rf"`kernel_size` must be an odd integer >= 1, got {kernel_size}$"):
        call(function, implementation, kernel_size=kernel_size)


@pytest.mark.parametrize("value", [0, -2])
def test_factor_below_1_is_rejected(function, implementation, value):
    name = FUNCTIONS[function][1]
    with expect(ValueError, rf"`{name}` must be an integer >= 1, got {value}$"):
        call(function, implementation, **{name: value})


@pytest.mark.parametrize("value", [0, -2])
def test_group_size_below_1_is_rejected(function, implementation, value):
    with expect(ValueError, rf"`group_size` must be an integer >= 1, got {value}$"):
        call(function, implementation, group_size=value)


@pytest.mark.parametrize("argument", ["factor", "kernel_size", "group_size"])
@pytest.mark.parametrize("value", [2.0, "2", None, True], ids=["float", "str", "None", "True"])
def test_hyperparameters_that_are_not_ints_are_rejected(function, implementation, argument,
                                                        value):
    name = FUNCTIONS[function][1] if argument == "factor" else argument
    with expect(TypeError, rf"`{name}` must be an int, got {re.escape(repr(value))} of type "
                           rf"{type(value).__name__}"):
        call(function, implementation, **{name: value})


def test_channels_not_divisible_by_group_size_are_rejected(function, implementation):
    with expect(ValueError, r"`features` channels \(5\) must be divisible by `group_size` \(2\)"):
        call(function, implementation, features=(2, 5, 4, 5))


def test_kernels_channels_other_than_group_size_times_k_squared_are_rejected(function,
                                                                              implementation):
    kernels = FUNCTIONS[function][2][:3] + (9,)
    with expect(ValueError, r"`kernels` must have group_size \* kernel_size\*\*2 = 18 channels, "
                            r"got 9"):
        call(function, implementation, kernels=kernels)


@pytest.mark.parametrize("function, axis, kernels, message", [
    ("carafe", "height", (2, 9, 8, 18), r"scale_factor \* features height = 10, got 9"),
    ("carafe", "width", (2, 10, 4, 18), r"scale_factor \* features width = 8, got 4"),
    ("carafe_downsample", "height", (2, 2, 2, 18), r"ceil\(features height / stride\) = 3, got 2"),
    ("carafe_downsample", "width", (2, 3, 4, 18), r"ceil\(features width / stride\) = 2, got 4"),
])
def test_kernels_spatial_size_other_than_the_output_size_is_rejected(implementation, function,
                                                                    axis, kernels, message):
    with expect(ValueError, rf"`kernels` {axis} must be {message}"):
        call(function, implementation, kernels=kernels)


def test_batch_mismatch_is_rejected(function, implementation):
    kernels = (1,) + FUNCTIONS[function][2][1:]
    with expect(ValueError, r"`kernels` batch \(1\) must equal `features` batch \(2\)"):
        call(function, implementation, kernels=kernels)


@pytest.mark.parametrize("features_dtype, kernels_dtype", [
    ("float32", "float16"), ("float16", "float32"), ("bfloat16", "float16"),
    ("float32", "int32")])
def test_dtype_mismatch_is_rejected(function, implementation, features_dtype, kernels_dtype):
    with expect(TypeError, rf"`kernels` must have the dtype of `features` \({features_dtype}\), "
                           rf"got {kernels_dtype}"):
        call(function, implementation, dtype=features_dtype, kernels_dtype=kernels_dtype)


@pytest.mark.parametrize("dtype", ["int32", "int16", "uint8", "bool"])
def test_unsupported_dtype_is_rejected(function, implementation, dtype):
    with expect(TypeError, rf"`features` must be float16, bfloat16, float32 or float64, "
                           rf"got {dtype}"):
        call(function, implementation, dtype=dtype)


@pytest.mark.parametrize("value", ["cuda", "OP", "", None, "xla"])
def test_unknown_implementation_is_rejected(function, value):
    with expect(ValueError, r"`implementation` must be one of 'auto', 'op', 'fallback', "
                            rf"'portable', got {re.escape(repr(value))}"):
        call(function, value)


def test_every_implementation_but_the_fallback_runs_on_this_backend():
    expected = ("op", "fallback", "portable") if BACKEND == "tensorflow" else ("op", "portable")
    assert backend.current().IMPLEMENTATIONS == expected


@pytest.mark.skipif(BACKEND == "tensorflow", reason="TensorFlow runs the fallback")
def test_the_tensorflow_fallback_is_rejected_on_other_backends(function):
    with expect(ValueError, rf"implementation='fallback' \(the pure-TensorFlow fallback\) "
                            rf"needs the TensorFlow backend, but the Keras backend is "
                            rf"'{BACKEND}'; use implementation='auto' or 'portable'"):
        call(function, "fallback")

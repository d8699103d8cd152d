"""Forward pass and both gradients of a reassembly on the active Keras backend.

Each backend's own autodiff: `tf.GradientTape`, `jax.vjp`, `torch.autograd`.
"""

import contextlib

import keras
import numpy as np

BACKEND = keras.backend.backend()


@contextlib.contextmanager
def float64_enabled():
    """Lets float64 tensors exist (JAX truncates them to float32 unless x64 is on)."""
    if BACKEND == "jax":
        import jax

        with jax.enable_x64(True):
            yield
    else:
        yield


def to_float64(x):
    x = keras.ops.convert_to_numpy(keras.ops.cast(x, "float32")) if keras.backend.standardize_dtype(
        x.dtype) == "bfloat16" else keras.ops.convert_to_numpy(x)
    return np.asarray(x, np.float64)


def tensor(array, dtype=None):
    return keras.ops.convert_to_tensor(array, dtype=dtype)


def value_and_grads(fn, features, kernels, upstream, dtype=None):
    """Returns (fn(features, kernels), d/dfeatures, d/dkernels) for upstream gradient
    `upstream`, as float64 NumPy arrays; inputs are cast to `dtype` when given."""
    f, k, d = (tensor(x, dtype) for x in (features, kernels, upstream))
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch([f, k])
            out = fn(f, k)
        grads = tape.gradient(out, [f, k], output_gradients=d)
    elif BACKEND == "jax":
        import jax

        out, pullback = jax.vjp(fn, f, k)
        grads = pullback(d)
    elif BACKEND == "torch":
        import torch

        f, k = f.detach().requires_grad_(True), k.detach().requires_grad_(True)
        out = fn(f, k)
        grads = torch.autograd.grad(out, [f, k], grad_outputs=d)
        out = out.detach()
    else:
        raise NotImplementedError(f"no autodiff helper for the {BACKEND!r} backend")
    return tuple(to_float64(x) for x in (out, *grads))


def leaf(array, dtype=None):
    """A tensor for `gradient` and `jvp` to differentiate with respect to."""
    return tensor(array, dtype)


def gradient(fn):
    """The gradient of the scalar function `fn` with respect to all its arguments, as a
    function of the same arguments that can itself be differentiated again."""
    if BACKEND == "jax":
        import jax

        return lambda *args: jax.grad(fn, argnums=tuple(range(len(args))))(*args)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        def grad(*args):
            with tf.GradientTape() as tape:
                tape.watch(args)
                value = fn(*args)
            return tape.gradient(value, args,
                                 unconnected_gradients=tf.UnconnectedGradients.ZERO)

        return grad
    if BACKEND == "torch":
        import torch

        # torch.func's transforms nest with each other (and with torch.func.jvp).
        return lambda *args: torch.func.grad(fn, argnums=tuple(range(len(args))))(*args)
    raise NotImplementedError(f"no autodiff helper for the {BACKEND!r} backend")


def jvp(fn, primals, tangents):
    """The forward-mode derivative of `fn` at `primals` along `tangents`."""
    if BACKEND == "jax":
        import jax

        return jax.jvp(fn, tuple(primals), tuple(tangents))[1]
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.autodiff.ForwardAccumulator(list(primals), list(tangents)) as accumulator:
            out = fn(*primals)
        return accumulator.jvp(out)
    if BACKEND == "torch":
        import torch

        return torch.func.jvp(fn, tuple(primals), tuple(tangents))[1]
    raise NotImplementedError(f"no autodiff helper for the {BACKEND!r} backend")

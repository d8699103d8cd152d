"""Candidate `keras.ops` formulations of the upsampling reassembly, timed on one backend.

The library's portable path (`keras_carafe/ops/portable.py`) is the tap sum;
this script keeps the alternatives that were measured against it, so that the
choice can be re-checked on other machines and Keras versions:

- tap_sum: the library's `fused=True` formulation (k*k strided slices, each
  multiplied by its tap's weights and summed, at input resolution, one sum
  per group), used under XLA;
- tap_sum_no_remat: the tap sum without `jax.checkpoint` (JAX only);
- tap_sum_group_axis: the same sum with a group axis, on (N*H, W, P, G, C/G);
- patches_matmul: the library's `fused=False` formulation (the k*k slices
  stacked into a patch tensor, then one batched matmul of rank 4 per
  pixel), used where operations run one at a time;
- rows_then_cols: k row-shifted copies stacked, then per column offset one
  batched matmul over the k row taps;
- depthwise_matmul: the patches gathered by a one-hot depthwise convolution,
  then a batched matmul.

Usage (forward and forward+backward, median of 5 runs after a warm-up):

    KERAS_BACKEND=jax python benchmarks/portable_formulations.py
    KERAS_BACKEND=tensorflow python benchmarks/portable_formulations.py   # graph and XLA
    KERAS_BACKEND=torch python benchmarks/portable_formulations.py        # eager

Options: `--shape N,H,W,C,S,K,G` (default 2,64,64,128,2,5,1), `--only NAME,...`.
"""

import argparse
import sys
from pathlib import Path

import keras
import numpy as np
from keras import ops

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from keras_carafe.benchmark import arrays, median_ms  # noqa: E402
from keras_carafe.ops import portable, validation  # noqa: E402
from keras_carafe.ops.pixel_shuffle import depth_to_space, space_to_depth  # noqa: E402


def tap_sum(f, kern, s, k, g):
    return portable.reassemble(validation.upsampling(s, k, g), f, kern, fused=True)


def patches_matmul(f, kern, s, k, g):
    return portable.reassemble(validation.upsampling(s, k, g), f, kern, fused=False)


def tap_sum_no_remat(f, kern, s, k, g):
    return tap_sum(f, kern, s, k, g)


def tap_sum_group_axis(f, kern, s, k, g):
    n, h, w, c = ops.shape(f)
    r, t, p = (k - 1) // 2, k * k, s * s
    weights = ops.reshape(space_to_depth(kern, s), (n * h, w, p, g, t))
    padded = ops.pad(f, ((0, 0), (r, r), (r, r), (0, 0)))
    total = None
    for ky in range(k):
        for kx in range(k):
            window = ops.reshape(padded[:, ky:ky + h, kx:kx + w], (n * h, w, 1, g, c // g))
            term = weights[..., ky * k + kx:ky * k + kx + 1] * window
            total = term if total is None else total + term
    return depth_to_space(ops.reshape(total, (n, h, w, p * c)), s)


def _common(f, kern, s, k):
    n, h, w, c = ops.shape(f)
    r = (k - 1) // 2
    return n, h, w, c, space_to_depth(kern, s), ops.pad(f, ((0, 0), (r, r), (r, r), (0, 0)))


def rows_then_cols(f, kern, s, k, g):
    if g != 1:
        raise ValueError("rows_then_cols is written for group_size 1")
    n, h, w, c, cells, padded = _common(f, kern, s, k)
    p = s * s
    weights = ops.reshape(cells, (n, h, w, p, k, k))
    rows = ops.stack([padded[:, ky:ky + h] for ky in range(k)], axis=3)  # (N, H, W+2r, k, C)
    out = None
    for kx in range(k):
        window = ops.reshape(rows[:, :, kx:kx + w], (n * h * w, k, c))
        term = ops.matmul(ops.reshape(weights[..., kx], (n * h * w, p, k)), window)
        out = term if out is None else out + term
    return depth_to_space(ops.reshape(out, (n, h, w, p * c)), s)


def depthwise_matmul(f, kern, s, k, g):
    n, h, w, c, cells, _ = _common(f, kern, s, k)
    t, p = k * k, s * s
    one_hot = np.tile(np.eye(t, dtype="float32").reshape(k, k, 1, t), (1, 1, c, 1))
    patches = ops.depthwise_conv(f, ops.convert_to_tensor(one_hot), strides=1, padding="same")
    patches = ops.reshape(patches, (n * h * w, g, c // g, t))  # channel c*T + t
    weights = ops.transpose(ops.reshape(cells, (n * h * w, p, g, t)), (0, 2, 3, 1))
    out = ops.transpose(ops.matmul(patches, weights), (0, 3, 1, 2))  # (M, P, G, C/G)
    return depth_to_space(ops.reshape(out, (n, h, w, p * c)), s)


CANDIDATES = {fn.__name__: fn for fn in (tap_sum, tap_sum_no_remat, tap_sum_group_axis,
                                         patches_matmul,
                                         rows_then_cols, depthwise_matmul)}


def _steps(fn, args, remat=True):
    """{runtime: (forward, forward+backward)} zero-argument callables on this backend."""
    features, kernels, upstream = args
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        if remat:
            fn = jax.checkpoint(fn)  # as the library does on JAX (keras_carafe/ops/jax)
        forward = jax.jit(fn)
        # The loss's value too: with gradients alone XLA drops the forward pass.
        both = jax.jit(jax.value_and_grad(lambda a, b, u: jnp.sum(fn(a, b) * u),
                                          argnums=(0, 1)))
        return {"JAX jit": (lambda: jax.block_until_ready(forward(features, kernels)),
                            lambda: jax.block_until_ready(both(*args)))}
    if backend == "tensorflow":
        import tensorflow as tf

        steps = {}
        for runtime, jit in (("TF graph", False), ("TF XLA", True)):
            forward = tf.function(lambda a, b: tf.reduce_sum(fn(a, b)), jit_compile=jit)

            def both_fn(a, b, u):
                with tf.GradientTape() as tape:
                    tape.watch([a, b])
                    loss = tf.reduce_sum(fn(a, b) * u)
                da, db = tape.gradient(loss, [a, b])
                return loss + tf.reduce_sum(da[..., :1]) + tf.reduce_sum(db[..., :1])

            both = tf.function(both_fn, jit_compile=jit)
            steps[runtime] = (lambda f=forward: f(features, kernels).numpy(),
                              lambda b=both: b(*args).numpy())
        return steps
    if backend == "torch":
        import torch

        def forward():
            with torch.no_grad():
                fn(features, kernels).sum().item()

        def both():
            a = features.detach().requires_grad_(True)
            b = kernels.detach().requires_grad_(True)
            grads = torch.autograd.grad((fn(a, b) * upstream).sum(), [a, b])
            grads[0].sum().item()

        return {"PyTorch eager": (forward, both)}
    raise SystemExit(f"no timing code for the {backend!r} backend")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="2,64,64,128,2,5,1")
    parser.add_argument("--only", default=",".join(CANDIDATES))
    args = parser.parse_args()
    n, h, w, c, s, k, g = (int(x) for x in args.shape.split(","))
    tensors = [ops.convert_to_tensor(a) for a in arrays("upsample", (n, h, w, c, s, k, g))]
    print(f"Keras {keras.__version__}, backend {keras.backend.backend()}, shape {args.shape}")
    print(f"{'formulation':<18} {'runtime':<14} {'fwd ms':>9} {'fwd+bwd ms':>11}")
    for name in args.only.split(","):
        fn = CANDIDATES[name]
        for runtime, (forward, both) in _steps(
                lambda a, b: fn(a, b, s, k, g), tensors,
                remat=not name.endswith("_no_remat")).items():
            forward(), both()  # warm-up: compiles where the runtime compiles
            print(f"{name:<18} {runtime:<14} {median_ms(forward, 5):>9.1f} "
                  f"{median_ms(both, 5):>11.1f}", flush=True)


if __name__ == "__main__":
    main()

"""The two `keras.ops` formulations of the local similarity, timed on one backend.

`keras_carafe/ops/portable_similarity.py` has the tap sum (`fused=True`) and patches with a
batched matmul (`fused=False`); this script times both, forward and forward+backward (the
loss and the gradients in both inputs), so that the choice of each backend can be checked:

    KERAS_BACKEND=jax python benchmarks/similarity_formulations.py          # under jax.jit
    KERAS_BACKEND=tensorflow python benchmarks/similarity_formulations.py   # graph and XLA
    KERAS_BACKEND=torch python benchmarks/similarity_formulations.py        # eager

Options: `--shape N,H,W,C,S,K,G` (keys N x H x W x C, default SAPA's 2,32,32,64,2,5,1),
`--repeats R` (rounds; each formulation is timed once per round, medians kept).
"""

import argparse
import sys
from pathlib import Path

import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from keras_carafe.benchmark import median_ms  # noqa: E402
from keras_carafe.ops import portable_similarity, validation  # noqa: E402


def _steps(fused, shape, xla):
    n, h, w, c, s, k, g = shape
    geometry = validation.upsampling(s, k, g)
    rng = np.random.default_rng(0)
    q = rng.standard_normal((n, h * s, w * s, c), dtype=np.float32)
    keys = rng.standard_normal((n, h, w, c), dtype=np.float32)
    u = rng.standard_normal((n, h * s, w * s, g * k * k), dtype=np.float32)

    def similarity(q, keys):
        return portable_similarity.local_similarity(geometry, q, keys, fused=fused)

    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        def loss(q, keys):
            return jnp.sum(similarity(q, keys) * u)

        forward = jax.jit(similarity)
        gradients = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        return (lambda: jax.block_until_ready(forward(q, keys)),
                lambda: jax.block_until_ready(gradients(q, keys)))
    if backend == "tensorflow":
        import tensorflow as tf

        q, keys, u = tf.constant(q), tf.constant(keys), tf.constant(u)

        @tf.function(jit_compile=xla)
        def forward():
            return tf.reduce_sum(similarity(q, keys) * u)

        @tf.function(jit_compile=xla)
        def gradients():
            with tf.GradientTape() as tape:
                tape.watch([q, keys])
                loss = tf.reduce_sum(similarity(q, keys) * u)
            d_q, d_keys = tape.gradient(loss, [q, keys])
            return loss + tf.reduce_sum(d_q[..., :1]) + tf.reduce_sum(d_keys[..., :1])

        return lambda: forward().numpy(), lambda: gradients().numpy()
    import torch

    q, keys = (torch.from_numpy(a).requires_grad_(True) for a in (q, keys))
    u = torch.from_numpy(u)

    def eager_forward():
        with torch.no_grad():
            return similarity(q, keys)

    def eager_gradients():
        q.grad = keys.grad = None
        (similarity(q, keys) * u).sum().backward()

    return eager_forward, eager_gradients


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="2,32,32,64,2,5,1")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    shape = tuple(int(p) for p in args.shape.split(","))
    runtimes = {"tensorflow": ["TF graph", "TF XLA"], "jax": ["JAX jit"],
                "torch": ["PyTorch eager"]}[keras.backend.backend()]
    cases = [(runtime, name, _steps(fused, shape, runtime == "TF XLA"))
             for runtime in runtimes for name, fused in (("tap sum", True), ("patches", False))]
    for _, _, steps in cases:
        for step in steps:
            step()
    times = [([], []) for _ in cases]
    for _ in range(args.repeats):
        for (_, _, steps), samples in zip(cases, times):
            for step, sample in zip(steps, samples):
                sample.append(median_ms(step, 1))
    print(f"keys {shape[:4]}, scale {shape[4]}, k {shape[5]}, groups {shape[6]}; "
          f"median of {args.repeats} rounds")
    for (runtime, name, _), (forward, backward) in zip(cases, times):
        print(f"{runtime:<14} {name:<8} forward {np.median(forward):8.2f} ms   "
              f"forward+backward {np.median(backward):8.2f} ms")


if __name__ == "__main__":
    main()

"""Times the compiled op against the pure-TensorFlow fallback.

Run as `python -m keras_carafe bench`. Memory figures are TensorFlow
allocator peaks above the inputs (on the CPU this needs the BFC allocator,
which the command switches on for its own process).
"""

import dataclasses
import json
import statistics
import time

import numpy as np
import tensorflow as tf

from keras_carafe.ops import carafe

CPU_ALLOCATOR_ENV = {"TF_CPU_ALLOCATOR_USE_BFC": "true"}

# (N, H, W, C, scale, kernel_size, groups)
DEFAULT_SHAPES = (
    (2, 64, 64, 128, 2, 5, 1),
    (2, 100, 100, 256, 2, 5, 1),
)


@dataclasses.dataclass
class Result:
    device: str
    shape: tuple
    dtype: str
    implementation: str
    forward_ms: float
    forward_backward_ms: float
    forward_peak_mib: float
    forward_backward_peak_mib: float


def _inputs(shape, dtype, seed=0):
    n, h, w, c, s, k, g = shape
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n, h, w, c), dtype=np.float32)
    kernels = rng.random((n, h * s, w * s, g * k * k), dtype=np.float32)
    upstream = rng.standard_normal((n, h * s, w * s, c), dtype=np.float32)
    return [tf.cast(tf.constant(a), dtype) for a in (features, kernels, upstream)]


def _step_functions(shape, implementation):
    _, _, _, _, s, k, g = shape

    @tf.function
    def forward(features, kernels, upstream):
        out = carafe(features, kernels, s, k, g, implementation=implementation)
        return tf.reduce_sum(tf.cast(out[..., :1], tf.float32))

    @tf.function
    def forward_backward(features, kernels, upstream):
        with tf.GradientTape() as tape:
            tape.watch([features, kernels])
            out = carafe(features, kernels, s, k, g, implementation=implementation)
            loss = tf.reduce_sum(out * upstream)
        d_features, d_kernels = tape.gradient(loss, [features, kernels])
        # The loss is part of the result so that graph pruning keeps the forward op.
        return (tf.cast(loss, tf.float32)
                + tf.reduce_sum(tf.cast(d_features[..., :1], tf.float32))
                + tf.reduce_sum(tf.cast(d_kernels[..., :1], tf.float32)))

    return forward, forward_backward


def _memory_device(device):
    return "GPU:0" if device.startswith("GPU") else "CPU:0"


def _measure(fn, args, device, repeats):
    fn(*args).numpy()  # trace and warm up
    memory_device = _memory_device(device)
    tf.config.experimental.reset_memory_stats(memory_device)
    before = tf.config.experimental.get_memory_info(memory_device)["current"]
    fn(*args).numpy()
    peak = tf.config.experimental.get_memory_info(memory_device)["peak"] - before
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args).numpy()  # the scalar's transfer waits for the device
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, peak / 2**20


def run(shapes=DEFAULT_SHAPES, dtype="float32", devices=None, repeats=5,
        implementations=("op", "fallback")):
    if devices is None:
        devices = ["CPU:0"] + [f"GPU:{i}" for i, _ in
                               enumerate(tf.config.list_logical_devices("GPU"))][:1]
    results = []
    for device in devices:
        for shape in shapes:
            with tf.device(device):
                args = _inputs(shape, tf.as_dtype(dtype))
                for implementation in implementations:
                    forward, forward_backward = _step_functions(shape, implementation)
                    fwd_ms, fwd_mib = _measure(forward, args, device, repeats)
                    both_ms, both_mib = _measure(forward_backward, args, device, repeats)
                    results.append(Result(device, tuple(shape), dtype, implementation,
                                          fwd_ms, both_ms, fwd_mib, both_mib))
    return results


def format_table(results):
    header = (f"{'device':<7} {'N,H,W,C,s,k,G':<22} {'dtype':<8} {'impl':<9} "
              f"{'fwd ms':>9} {'fwd+bwd ms':>11} {'fwd MiB':>9} {'fwd+bwd MiB':>12}")
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r.device:<7} {','.join(map(str, r.shape)):<22} {r.dtype:<8} "
            f"{r.implementation:<9} {r.forward_ms:>9.2f} {r.forward_backward_ms:>11.2f} "
            f"{r.forward_peak_mib:>9.1f} {r.forward_backward_peak_mib:>12.1f}")
    by_key = {}
    for r in results:
        by_key.setdefault((r.device, r.shape, r.dtype), {})[r.implementation] = r
    for (device, shape, dtype), impls in by_key.items():
        if "op" in impls and "fallback" in impls:
            op, fb = impls["op"], impls["fallback"]
            lines.append(
                f"{device} {','.join(map(str, shape))} {dtype}: op vs fallback "
                f"forward {fb.forward_ms / op.forward_ms:.1f}x faster, forward+backward "
                f"{fb.forward_backward_ms / op.forward_backward_ms:.1f}x faster with "
                f"{op.forward_backward_peak_mib / max(fb.forward_backward_peak_mib, 1e-9):.2f}x "
                f"the peak memory")
    return "\n".join(lines)


def to_json(results):
    return json.dumps([dataclasses.asdict(r) for r in results], indent=2)

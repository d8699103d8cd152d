"""Times every implementation of the reassembly side by side.

Run as `python -m keras_carafe bench`. Each row is one implementation on one
runtime: on TensorFlow the compiled op, the fallback and the portable path in
graphs, and the portable path under XLA (`jit_compile=True`); on JAX the
compiled kernels (XLA FFI) and the portable path under `jax.jit`; on PyTorch
the compiled kernels (`torch.library` operators) and the portable path,
eagerly. A row that cannot run here (a framework that is not installed,
kernels that do not build) says why instead of a time.

Memory: for TensorFlow rows, the allocator's peak above the inputs (on the
CPU this needs the BFC allocator, which the command switches on for its own
process); for JAX rows, XLA's buffer assignment of the compiled function
(temporaries plus outputs), the same quantity computed ahead of time; for
PyTorch rows, the peak of the allocator's live bytes above the inputs, from
the profiler's memory events (op by op, so buffers an operator frees before
it returns are not seen).
"""

import dataclasses
import importlib.util
import json
import statistics
import time

import numpy as np

CPU_ALLOCATOR_ENV = {"TF_CPU_ALLOCATOR_USE_BFC": "true"}

# (N, H, W, C, factor, kernel_size, groups); factor is the scale factor of
# upsampling and the stride of downsampling.
DEFAULT_SHAPES = (
    (2, 64, 64, 128, 2, 5, 1),
    (2, 100, 100, 256, 2, 5, 1),
)
# Downsampling from 128 x 128 to the 64 x 64 of the first upsampling shape.
DEFAULT_DOWNSAMPLE_SHAPES = ((2, 128, 128, 128, 2, 5, 1),)

# (implementation, runtime, backend that runs it)
ROWS = (
    ("op", "TF", "tensorflow"),
    ("fallback", "TF", "tensorflow"),
    ("portable", "TF", "tensorflow"),
    ("portable", "TF XLA", "tensorflow"),
    ("op", "JAX jit", "jax"),
    ("portable", "JAX jit", "jax"),
    ("op", "PyTorch", "torch"),
    ("portable", "PyTorch", "torch"),
)
BACKENDS = ("tensorflow", "jax", "torch")


@dataclasses.dataclass
class Result:
    device: str
    direction: str
    shape: tuple
    dtype: str
    implementation: str
    runtime: str
    forward_ms: float = float("nan")
    forward_backward_ms: float = float("nan")
    forward_peak_mib: float = float("nan")
    forward_backward_peak_mib: float = float("nan")
    unavailable: str = ""


def arrays(direction, shape, seed=0):
    """NumPy (features, kernels, upstream gradient) of one benchmark problem."""
    n, h, w, c, f, k, g = shape
    oh, ow = (h * f, w * f) if direction == "upsample" else (-(-h // f), -(-w // f))
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, h, w, c), dtype=np.float32),
            rng.random((n, oh, ow, g * k * k), dtype=np.float32),
            rng.standard_normal((n, oh, ow, c), dtype=np.float32))


def _reassembly(direction):
    from keras_carafe.ops import carafe, carafe_downsample

    return carafe if direction == "upsample" else carafe_downsample


def _measured_rows(cases, dtype, backend, measure, device="CPU:0"):
    """One Result per case and row of `backend`, filled by `measure(result, direction,
    shape)`, or saying why the row cannot run here."""
    results = []
    for direction, shape in cases:
        for implementation, runtime, row_backend in ROWS:
            if row_backend != backend:
                continue
            result = Result(device, direction, tuple(shape), dtype, implementation, runtime)
            try:
                if implementation == "op":
                    _check_op()
                measure(result, direction, shape)
            except Exception as err:  # noqa: BLE001 - every failure becomes a row
                result.unavailable = _reason(err)
            results.append(result)
    return results


def median_ms(call, repeats):
    """Median wall time of `repeats` calls of `call`, in milliseconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


# --- TensorFlow ---------------------------------------------------------------------------


def _tf_steps(direction, shape, implementation, jit_compile):
    import tensorflow as tf

    _, _, _, _, f, k, g = shape
    reassemble = _reassembly(direction)

    @tf.function(jit_compile=jit_compile)
    def forward(features, kernels, upstream):
        # The whole output is consumed: XLA would skip channels nobody reads.
        out = reassemble(features, kernels, f, k, g, implementation=implementation)
        return tf.reduce_sum(tf.cast(out, tf.float32))

    @tf.function(jit_compile=jit_compile)
    def forward_backward(features, kernels, upstream):
        with tf.GradientTape() as tape:
            tape.watch([features, kernels])
            out = reassemble(features, kernels, f, k, g, implementation=implementation)
            loss = tf.reduce_sum(out * upstream)
        d_features, d_kernels = tape.gradient(loss, [features, kernels])
        # The loss is part of the result so that graph pruning keeps the forward pass.
        return (tf.cast(loss, tf.float32)
                + tf.reduce_sum(tf.cast(d_features[..., :1], tf.float32))
                + tf.reduce_sum(tf.cast(d_kernels[..., :1], tf.float32)))

    return forward, forward_backward


def _check_op():
    """Raises, with the reason, where the compiled op cannot run."""
    from keras_carafe.ops import implementation

    implementation.resolve("op")


def _tf_measure(fn, args, device, repeats):
    import tensorflow as tf

    fn(*args).numpy()  # trace and warm up
    memory_device = "GPU:0" if device.startswith("GPU") else "CPU:0"
    tf.config.experimental.reset_memory_stats(memory_device)
    before = tf.config.experimental.get_memory_info(memory_device)["current"]
    fn(*args).numpy()
    peak = tf.config.experimental.get_memory_info(memory_device)["peak"] - before
    # The scalar's transfer waits for the device.
    return median_ms(lambda: fn(*args).numpy(), repeats), peak / 2**20


def tensorflow_devices(cpu_only=False):
    import tensorflow as tf

    gpus = [] if cpu_only else [f"GPU:{i}" for i, _ in
                                enumerate(tf.config.list_logical_devices("GPU"))][:1]
    return ["CPU:0"] + gpus


def _run_tensorflow(cases, dtype, devices, repeats):
    import tensorflow as tf

    def measure(device):
        def run(result, direction, shape):
            with tf.device(device):
                args = [tf.cast(tf.constant(a), dtype) for a in arrays(direction, shape)]
                steps = _tf_steps(direction, shape, result.implementation,
                                  jit_compile=result.runtime == "TF XLA")
                result.forward_ms, result.forward_peak_mib = _tf_measure(
                    steps[0], args, device, repeats)
                result.forward_backward_ms, result.forward_backward_peak_mib = _tf_measure(
                    steps[1], args, device, repeats)
        return run

    return [row for device in devices
            for row in _measured_rows(cases, dtype, "tensorflow", measure(device), device)]


# --- JAX ----------------------------------------------------------------------------------


def _xla_mib(compiled):
    analysis = compiled.memory_analysis()
    return (analysis.temp_size_in_bytes + analysis.output_size_in_bytes) / 2**20


def _run_jax(cases, dtype, repeats):
    import jax
    import jax.numpy as jnp

    def measure(result, direction, shape):
        _, _, _, _, f, k, g = shape
        reassemble, implementation = _reassembly(direction), result.implementation
        args = [jnp.asarray(a, dtype) for a in arrays(direction, shape)]

        def forward(features, kernels, upstream):
            # The output itself: a sum here would fuse into the reassembly and time the
            # fused reduction instead.
            return reassemble(features, kernels, f, k, g, implementation=implementation)

        def loss(features, kernels, upstream):
            out = reassemble(features, kernels, f, k, g, implementation=implementation)
            return jnp.sum(out * upstream)

        def forward_backward(features, kernels, upstream):
            value, (d_features, d_kernels) = jax.value_and_grad(loss, argnums=(0, 1))(
                features, kernels, upstream)
            return value, d_features, d_kernels

        for name, fn in (("forward", forward), ("forward_backward", forward_backward)):
            compiled = jax.jit(fn).lower(*args).compile()
            jax.block_until_ready(compiled(*args))
            setattr(result, f"{name}_ms",
                    median_ms(lambda: jax.block_until_ready(compiled(*args)), repeats))
            setattr(result, f"{name}_peak_mib", _xla_mib(compiled))

    return _measured_rows(cases, dtype, "jax", measure)


# --- PyTorch ------------------------------------------------------------------------------


def _torch_peak_mib(step):
    """Peak of the PyTorch allocator's live bytes during `step()`, above what was live
    before, from the profiler's memory events in time order."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak / 2**20


def _run_torch(cases, dtype, repeats):
    import torch

    def measure(result, direction, shape):
        _, _, _, _, f, k, g = shape
        reassemble, implementation = _reassembly(direction), result.implementation
        features, kernels, upstream = (torch.tensor(a).to(getattr(torch, dtype))
                                       for a in arrays(direction, shape))
        features.requires_grad_(True)
        kernels.requires_grad_(True)

        def forward():
            with torch.no_grad():
                return reassemble(features, kernels, f, k, g, implementation=implementation)

        def forward_backward():
            out = reassemble(features, kernels, f, k, g, implementation=implementation)
            loss = torch.sum(out * upstream)
            return loss, torch.autograd.grad(loss, [features, kernels])

        for name, fn in (("forward", forward), ("forward_backward", forward_backward)):
            fn()  # warm-up
            setattr(result, f"{name}_peak_mib", _torch_peak_mib(fn))
            setattr(result, f"{name}_ms", median_ms(fn, repeats))

    return _measured_rows(cases, dtype, "torch", measure)


def _reason(err):
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


# --- both ---------------------------------------------------------------------------------


def unavailable_rows(cases, dtype, backend, reason):
    return [Result("CPU:0", direction, tuple(shape), dtype, implementation, runtime,
                   unavailable=reason)
            for direction, shape in cases
            for implementation, runtime, row_backend in ROWS if row_backend == backend]


def run(cases, dtype="float32", backend="tensorflow", cpu_only=False, repeats=5):
    """Measures the rows of `backend` ("tensorflow", "jax" or "torch"), which must be the
    active Keras backend, for `cases`: a list of (direction, shape)."""
    if importlib.util.find_spec(backend) is None:
        return unavailable_rows(cases, dtype, backend, f"{backend} is not installed")
    if backend == "jax":
        return _run_jax(cases, dtype, repeats)
    if backend == "torch":
        return _run_torch(cases, dtype, repeats)
    return _run_tensorflow(cases, dtype, tensorflow_devices(cpu_only), repeats)


def format_table(results):
    header = (f"{'device':<7} {'direction':<10} {'N,H,W,C,f,k,G':<20} {'dtype':<8} "
              f"{'impl':<9} {'runtime':<8} {'fwd ms':>9} {'fwd+bwd ms':>11} {'fwd MiB':>9} "
              f"{'fwd+bwd MiB':>12}")
    lines = [header, "-" * len(header)]
    for r in results:
        head = (f"{r.device:<7} {r.direction:<10} {','.join(map(str, r.shape)):<20} "
                f"{r.dtype:<8} {r.implementation:<9} {r.runtime:<8}")
        if r.unavailable:
            lines.append(f"{head} unavailable: {r.unavailable}")
        else:
            lines.append(f"{head} {r.forward_ms:>9.2f} {r.forward_backward_ms:>11.2f} "
                         f"{r.forward_peak_mib:>9.1f} {r.forward_backward_peak_mib:>12.1f}")
    by_key = {}
    for r in results:
        if not r.unavailable:
            by_key.setdefault((r.device, r.direction, r.shape, r.dtype), {})[
                (r.implementation, r.runtime)] = r
    for (device, direction, shape, dtype), rows in by_key.items():
        fallback = rows.get(("fallback", "TF"))
        if fallback is None:
            continue
        for key in (("op", "TF"), ("portable", "TF XLA"), ("portable", "JAX jit")):
            if key in rows:
                r = rows[key]
                lines.append(
                    f"{device} {direction} {','.join(map(str, shape))} {dtype}: {key[0]} "
                    f"({key[1]}) vs fallback: forward {fallback.forward_ms / r.forward_ms:.1f}x"
                    f" faster, forward+backward "
                    f"{fallback.forward_backward_ms / r.forward_backward_ms:.1f}x faster")
    for (device, direction, shape, dtype), rows in by_key.items():
        reference = rows.get(("op", "TF"))
        if reference is None:
            continue
        for key in (("op", "JAX jit"), ("op", "PyTorch")):
            if key in rows:
                r = rows[key]
                lines.append(
                    f"{device} {direction} {','.join(map(str, shape))} {dtype}: op ({key[1]}) "
                    f"vs op (TF): forward+backward "
                    f"{r.forward_backward_ms / reference.forward_backward_ms:.2f}x the time, "
                    f"{r.forward_backward_peak_mib / reference.forward_backward_peak_mib:.2f}x "
                    f"the peak memory")
    return "\n".join(lines)


def to_json(results):
    return json.dumps([dataclasses.asdict(r) for r in results], indent=2)


def from_json(text):
    return [Result(**{**row, "shape": tuple(row["shape"])}) for row in json.loads(text)]

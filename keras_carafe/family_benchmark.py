"""Times the content-aware upsampler family side by side on one backend.

Run as `python -m keras_carafe bench-family` (each Keras backend in a child
process) or with `--backend NAME` (this process). Rows, on one shape
(`--shape N,H,W,C`: the decoder feature; outputs are 2H x 2W):

- each layer's forward pass and forward+backward pass (gradients of a
  random projection of the output in the inputs and every weight) with
  `implementation="auto"`: bilinear upsampling (`UpSampling2D`), CARAFE,
  FADE, SAPA, DySample and DySample+ (its dynamic scope), with their
  parameters and FLOPs (`cost()`; bilinear: 4 multiply-adds per output);
- `local_similarity` at SAPA's default sizes (64 embedding channels,
  k = 5) in each implementation the backend has;
- on PyTorch, DySample's bilinear sampling alone: the portable gathers
  against PyTorch's native `grid_sample` kernel, the measurement behind
  the choice of the portable sampling (a compiled kernel can at best match
  a framework's own).

Each backend runs as its users run it: TensorFlow in `tf.function` graphs,
JAX under `jax.jit` (layers through `stateless_call`), PyTorch eagerly.
After one warm-up call of each, every row is timed once per round for
`--repeats` rounds, and the table holds the medians, in milliseconds: a
load that comes and goes slows every row of a round alike. Compare rows of
one run only.
"""

import argparse
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from keras_carafe.benchmark import median_ms

BACKENDS = ("tensorflow", "jax", "torch")
# The decoder feature of one FPN step: P5 of a 1024 x 1024 image to P4, at 256 channels.
DEFAULT_SHAPE = (2, 32, 32, 256)
SIMILARITY_EMBEDDING, SIMILARITY_KERNEL = 64, 5
LAYERS = ("bilinear", "CARAFE", "FADE", "SAPA", "DySample", "DySample+")


@dataclasses.dataclass
class Row:
    backend: str
    what: str
    implementation: str
    shape: tuple
    params: int = -1
    gflops: float = float("nan")
    forward_ms: float = float("nan")
    forward_backward_ms: float = float("nan")
    unavailable: str = ""


def make_layer(name):
    """The layer `name` of `LAYERS` with its defaults (the papers')."""
    import keras

    from keras_carafe import CARAFE, SAPA, DySample, FADE

    return {"bilinear": lambda: keras.layers.UpSampling2D(2, interpolation="bilinear"),
            "CARAFE": CARAFE, "FADE": FADE, "SAPA": SAPA, "DySample": DySample,
            "DySample+": lambda: DySample(dynamic_scope=True)}[name]()


def layer_inputs(name, shape, seed=0):
    """NumPy inputs of layer `name`: (encoder, decoder) for the guided ones, else (decoder,)."""
    n, h, w, c = shape
    rng = np.random.default_rng(seed)
    decoder = rng.standard_normal((n, h, w, c), dtype=np.float32)
    if name in ("FADE", "SAPA"):
        return [rng.standard_normal((n, 2 * h, 2 * w, c), dtype=np.float32), decoder]
    return [decoder]


def layer_cost(name, layer, shape):
    """(parameters, GFLOPs) of one image."""
    _, h, w, c = shape
    if name == "bilinear":
        return 0, 2 * 4 * 4 * h * w * c / 1e9
    cost = layer.cost(h, w, c)
    return cost.params, cost.flops / 1e9


# --- one timed pair per backend -----------------------------------------------------------


def _tensorflow_steps(call, variables, inputs, upstream):
    import tensorflow as tf

    inputs = [tf.constant(x) for x in inputs]
    upstream = tf.constant(upstream)

    @tf.function
    def forward():
        return tf.reduce_sum(call(*inputs) * upstream)

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_sum(call(*inputs) * upstream)
        grads = tape.gradient(loss, [*inputs, *variables])
        return loss + tf.add_n([tf.reduce_sum(g) for g in grads if g is not None])

    return lambda: forward().numpy(), lambda: forward_backward().numpy()


def _jax_steps(call, variables, inputs, upstream, stateless=None):
    import jax
    import jax.numpy as jnp

    inputs = [jnp.asarray(x) for x in inputs]
    upstream = jnp.asarray(upstream)
    values = [v.value for v in variables]

    def loss(values, *inputs):
        out = stateless(values, *inputs) if stateless else call(*inputs)
        return jnp.sum(out * upstream)

    forward = jax.jit(loss)
    gradients = jax.jit(jax.grad(loss, argnums=tuple(range(len(inputs) + 1))))
    return (lambda: jax.block_until_ready(forward(values, *inputs)),
            lambda: jax.block_until_ready(gradients(values, *inputs)))


def _torch_steps(call, variables, inputs, upstream):
    import torch

    inputs = [torch.from_numpy(x).requires_grad_(True) for x in inputs]
    upstream = torch.from_numpy(upstream)

    def forward():
        with torch.no_grad():
            return float((call(*inputs) * upstream).sum())

    def forward_backward():
        for tensor in [*inputs, *(v.value for v in variables)]:
            tensor.grad = None
        (call(*inputs) * upstream).sum().backward()
        return inputs[0].grad

    return forward, forward_backward


def _steps(backend, call, variables, inputs, upstream, stateless=None):
    if backend == "tensorflow":
        return _tensorflow_steps(call, variables, inputs, upstream)
    if backend == "jax":
        return _jax_steps(call, variables, inputs, upstream, stateless)
    return _torch_steps(call, variables, inputs, upstream)


def _warmed(row, steps):
    """(row, steps) after one call of each step (tracing, compiling, first allocations)."""
    for step in steps:
        step()
    return row, steps


def _time_in_rounds(prepared, repeats):
    """Times every row's steps once per round, `repeats` rounds, and keeps the medians:
    a load that comes and goes (other processes on the machine) then slows every row of a
    round alike instead of a few rows of the table."""
    times = [([], []) for _ in prepared]
    for _ in range(repeats):
        for (row, steps), samples in zip(prepared, times):
            for step, sample in zip(steps, samples):
                sample.append(median_ms(step, 1))
    for (row, _), (forward, forward_backward) in zip(prepared, times):
        row.forward_ms = float(np.median(forward))
        row.forward_backward_ms = float(np.median(forward_backward))


def _reason(err):
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:200]


# --- the rows -----------------------------------------------------------------------------


def _layer_row(backend, name, shape):
    """(row, steps), or (row with the reason, None)."""
    # Only the layers on the reassembly's kernels have an `implementation`.
    row = Row(backend, name, "auto" if name in ("CARAFE", "FADE", "SAPA") else "-", tuple(shape))
    try:
        layer = make_layer(name)
        inputs = layer_inputs(name, shape)
        out = layer(*inputs)
        row.params, row.gflops = layer_cost(name, layer, shape)
        upstream = np.random.default_rng(1).standard_normal(tuple(out.shape), dtype=np.float32)
        variables = layer.trainable_variables

        def stateless(values, *x):
            return layer.stateless_call(values, [v.value for v in layer.non_trainable_variables],
                                        *x)[0]

        return _warmed(row, _steps(backend, layer, variables, inputs, upstream, stateless))
    except Exception as err:  # noqa: BLE001 - every failure becomes a row
        row.unavailable = _reason(err)
    return row, None


def _similarity_rows(backend, shape):
    from keras_carafe import backend as backends
    from keras_carafe.ops import local_similarity

    n, h, w, _ = shape
    e, k = SIMILARITY_EMBEDDING, SIMILARITY_KERNEL
    rng = np.random.default_rng(2)
    inputs = [rng.standard_normal((n, 2 * h, 2 * w, e), dtype=np.float32),
              rng.standard_normal((n, h, w, e), dtype=np.float32)]
    upstream = rng.standard_normal((n, 2 * h, 2 * w, k * k), dtype=np.float32)
    rows = []
    for implementation in backends.current().IMPLEMENTATIONS:
        row = Row(backend, "local_similarity", implementation, (n, h, w, e),
                  params=0, gflops=2 * 4 * h * w * e * k * k / 1e9)

        def call(q, keys, implementation=implementation):
            return local_similarity(q, keys, 2, k, 1, implementation=implementation)

        try:
            rows.append(_warmed(row, _steps(backend, call, [], inputs, upstream,
                                            lambda values, *x: call(*x))))
        except Exception as err:  # noqa: BLE001 - every failure becomes a row
            row.unavailable = _reason(err)
            rows.append((row, None))
    return rows


def _sampling_rows(shape):
    """DySample's sampling alone on PyTorch: the portable gathers and `grid_sample`."""
    import torch

    from keras_carafe.ops.point_sampling import bilinear_sample

    n, h, w, c = shape
    g = 4
    rng = np.random.default_rng(3)
    features = rng.standard_normal((n, h, w, c), dtype=np.float32)
    x = ((np.arange(2 * w) + 0.5) / 2 - 0.5)[None, None, :, None] + rng.uniform(
        -0.5, 0.5, (n, 2 * h, 2 * w, g))
    y = ((np.arange(2 * h) + 0.5) / 2 - 0.5)[None, :, None, None] + rng.uniform(
        -0.5, 0.5, (n, 2 * h, 2 * w, g))
    x, y = x.astype(np.float32), y.astype(np.float32)
    upstream = rng.standard_normal((n, 2 * h, 2 * w, c), dtype=np.float32)

    def portable(f, px, py):
        return bilinear_sample(f, px, py, g)

    def native(f, px, py):
        # The same points as grid_sample's normalized (x, y), groups folded into the batch.
        grid = torch.stack([(2 * px + 1) / w - 1, (2 * py + 1) / h - 1], dim=-1)
        grid = grid.permute(0, 3, 1, 2, 4).reshape(n * g, 2 * h, 2 * w, 2)
        planes = f.permute(0, 3, 1, 2).reshape(n * g, c // g, h, w)
        out = torch.nn.functional.grid_sample(planes, grid, mode="bilinear",
                                              padding_mode="border", align_corners=False)
        return out.reshape(n, c, 2 * h, 2 * w).permute(0, 2, 3, 1)

    rows = []
    for name, call in (("portable gathers", portable), ("torch grid_sample", native)):
        row = Row("torch", "DySample sampling", name, tuple(shape), params=0,
                  gflops=(8 * g + 8 * c) * 4 * h * w / 1e9)
        rows.append(_warmed(row, _torch_steps(call, [], [features, x, y], upstream)))
    return rows


def run(backend, shape=DEFAULT_SHAPE, repeats=5):
    """Every row of `backend`, which must be the active Keras backend."""
    import keras

    if keras.backend.backend() != backend:
        raise ValueError(f"the active Keras backend is {keras.backend.backend()!r}, "
                         f"not {backend!r}")
    prepared = [_layer_row(backend, name, shape) for name in LAYERS]
    prepared += _similarity_rows(backend, shape)
    if backend == "torch":
        prepared += _sampling_rows(shape)
    _time_in_rounds([(row, steps) for row, steps in prepared if steps is not None], repeats)
    return [row for row, _ in prepared]


def format_table(rows):
    header = (f"{'backend':<10} {'what':<18} {'impl':<18} {'N,H,W,C':<14} {'params':>8} "
              f"{'GFLOPs':>7} {'fwd ms':>8} {'fwd+bwd ms':>11}")
    lines = [header, "-" * len(header)]
    for r in rows:
        head = (f"{r.backend:<10} {r.what:<18} {r.implementation:<18} "
                f"{','.join(map(str, r.shape)):<14}")
        if r.unavailable:
            lines.append(f"{head} unavailable: {r.unavailable}")
        else:
            lines.append(f"{head} {r.params:>8,} {r.gflops:>7.3f} {r.forward_ms:>8.2f} "
                         f"{r.forward_backward_ms:>11.2f}")
    return "\n".join(lines)


def _in_child(backend, args):
    if importlib.util.find_spec(backend) is None:
        return [Row(backend, "-", "-", tuple(args.shape), unavailable=f"{backend} is not "
                                                                       "installed")]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "rows.json")
        command = [sys.executable, "-m", "keras_carafe", "bench-family", "--backend", backend,
                   "--shape", ",".join(map(str, args.shape)), "--repeats", str(args.repeats),
                   "--json", path]
        result = subprocess.run(command, capture_output=True, text=True,
                                env={**os.environ, "KERAS_BACKEND": backend})
        if result.returncode == 0 and os.path.isfile(path):
            with open(path) as f:
                return [Row(**{**row, "shape": tuple(row["shape"])}) for row in json.load(f)]
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return [Row(backend, "-", "-", tuple(args.shape), unavailable=f"the run failed: {tail}")]


def _shape(text):
    try:
        parts = tuple(int(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 4 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"a shape is N,H,W,C (4 integers >= 1), got {text!r}")
    return parts


def add_arguments(parser):
    parser.add_argument("--shape", type=_shape, default=DEFAULT_SHAPE, metavar="N,H,W,C",
                        help="the decoder feature (default 2,32,32,256); outputs are 2H x 2W")
    parser.add_argument("--backend", choices=BACKENDS,
                        help="measure only this backend, in this process (default: each in a "
                             "child process)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")


def main(args):
    """The `bench-family` command."""
    if args.backend:
        import keras

        # Keras picks its backend when it is first imported: restart with the right one.
        if keras.backend.backend() != args.backend:
            os.execve(sys.executable, [sys.executable, "-m", "keras_carafe", *sys.argv[1:]],
                      {**os.environ, "KERAS_BACKEND": args.backend})
        rows = run(args.backend, args.shape, args.repeats)
    else:
        rows = [row for backend in BACKENDS for row in _in_child(backend, args)]
    print(f"median of {args.repeats} runs after one warm-up, float32, CPU; GFLOPs per image; "
          f"forward+backward = gradients in the inputs and every weight", flush=True)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dataclasses.asdict(r) for r in rows], f, indent=2)
        print(f"wrote {args.json}")
    return 0

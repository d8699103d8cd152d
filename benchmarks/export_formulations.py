"""The exported reassembly's formulations, timed in the runtimes that load `model.export`'s files.

One functional model (TensorFlow backend), `Input(128, 128, 3) -> Conv s2 -> Conv s2 -> CARAFE
-> Conv -> CARAFE -> Conv` (64 channels, CARAFE's defaults: scale 2, k_up 5, 64 compressed
channels), is exported with each way of writing its CARAFE layers:

- rank5: the portable path as exports held it before `export_formulation` (rank-5
  pixel shuffles and patches, shape arithmetic from the open batch);
- tap_sum, tap_outer, patches_matmul, one_hot_conv, band_matmul: the formulations of
  `keras_carafe.ops.export_formulation`;
- band_matmul/N (`--band-cells N`): band_matmul with blocks of N cells instead of
  `BAND_CELLS`;
- twin: the "predictor twin", the same compressor, encoder and softmax, whose output is each
  source pixel times one weight of each of its kernels: what the model costs without the
  reassembly (the kernels must be used, or the exporters drop their prediction).

Each file runs in onnxruntime, LiteRT with XNNPACK (its default) and without (the builtin
kernels), and OpenVINO (f32 precision hint), with `--threads` threads (default 2). Each of
`--rounds` rounds times every file in turn (the median of `--runs` calls after a warm-up);
the table gives the median of the rounds' times, the median of the rounds' ratios to the
twin in the same runtime with their range, the largest tensor rank and the number of Shape
operations in the exported graph, and how many parts of the LiteRT file XNNPACK runs (1: all
of it; each operator it cannot take splits the graph):

    python benchmarks/export_formulations.py [--runs 100] [--rounds 5] [--threads 2] [--size 128]
        [--only VARIANTS] [--band-cells 4,16]
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from keras_carafe import CARAFE, runtimes  # noqa: E402
from keras_carafe.ops import export_formulation, portable  # noqa: E402

VARIANTS = ("rank5", *export_formulation.FORMULATIONS, "twin")


class Rank5CARAFE(CARAFE):
    """CARAFE whose exported graph is the portable path's (the earlier export)."""

    def call(self, inputs):
        return portable.reassemble(self._geometry(), inputs, self._normalized_kernels(inputs))


class PredictorTwin(CARAFE):
    """The kernel prediction of CARAFE without its reassembly."""

    def call(self, inputs):
        geometry = self._geometry()
        weights = export_formulation.normalize(self._cell_logits(inputs), geometry)
        taps = geometry.kernel_channels
        cells = [inputs * weights[..., p * taps:p * taps + 1] for p in range(geometry.phases)]
        return export_formulation.depth_to_space(ops.concatenate(cells, axis=-1),
                                                 self.scale_factor)


def build_model(variant, size, channels=64, seed=0):
    keras.utils.set_random_seed(seed)
    layer = {"rank5": Rank5CARAFE, "twin": PredictorTwin}.get(variant, CARAFE)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(channels, 3, strides=2, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(channels, 3, strides=2, padding="same", activation="relu")(x)
    x = layer(encoder_kernel_initializer="glorot_uniform")(x)
    x = keras.layers.Conv2D(channels, 3, padding="same", activation="relu")(x)
    x = layer(encoder_kernel_initializer="glorot_uniform")(x)
    outputs = keras.layers.Conv2D(3, 3, padding="same")(x)
    model = keras.Model(inputs, outputs)
    model(np.zeros((1, size, size, 3), "float32"))
    return model


def export(model, variant, directory):
    """The model's onnx, litert and openvino files, traced with `variant`'s formulation."""
    stem = variant.replace("/", "-")
    paths = {"onnx": directory / f"{stem}.onnx", "litert": directory / f"{stem}.tflite",
             "openvino": directory / f"{stem}.xml"}
    formulation, _, cells = variant.partition("/")
    if formulation not in export_formulation.FORMULATIONS:
        formulation = "tap_sum"
    default_cells = export_formulation.BAND_CELLS
    export_formulation.BAND_CELLS = int(cells) if cells else default_cells
    try:
        with export_formulation.using(formulation):
            for fmt, path in paths.items():
                model.export(str(path), format=fmt, verbose=False)
    finally:
        export_formulation.BAND_CELLS = default_cells
    return paths


def graph_facts(paths):
    """(largest tensor rank, Shape operations) of the LiteRT graph, the ONNX Shape count, and
    the parts of the LiteRT file that XNNPACK runs."""
    import onnx
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(paths["litert"]))
    rank = max(len(t["shape_signature"]) for t in interpreter.get_tensor_details())
    litert_shapes = sum(op["op_name"] == "SHAPE" for op in interpreter._get_ops_details())
    onnx_shapes = sum(n.op_type == "Shape" for n in onnx.load(str(paths["onnx"])).graph.node)
    return rank, litert_shapes, onnx_shapes, runtimes.xnnpack_partitions(paths["litert"])


def runners(paths, threads):
    """name -> callable(x) for each runtime."""
    return {
        "onnxruntime": runtimes.load(paths["onnx"], threads),
        "litert xnnpack": runtimes.load(paths["litert"], threads),
        "litert builtin": runtimes.load(paths["litert"], threads, xnnpack=False),
        "openvino": runtimes.load(paths["openvino"], threads),
    }


def _summary(values):
    import statistics
    return statistics.median(values), min(values), max(values)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds; each times every variant in turn in every runtime")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--only", default=",".join(VARIANTS),
                        help=f"comma-separated variants among {', '.join(VARIANTS)}")
    parser.add_argument("--band-cells", default="",
                        help="comma-separated block widths: each adds a variant "
                             "band_matmul/N, band_matmul with blocks of N cells (default "
                             f"{export_formulation.BAND_CELLS})")
    args = parser.parse_args(argv)
    try:
        args.band_cells = [int(n) for n in args.band_cells.split(",") if n.strip()]
    except ValueError:
        parser.error(f"--band-cells must be comma-separated integers, got {args.band_cells!r}")
    if any(n < 1 for n in args.band_cells):
        parser.error(f"--band-cells must be positive integers, got {args.band_cells}")
    variants = [v.strip() for v in args.only.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"--only: unknown variants {unknown}; choose among {', '.join(VARIANTS)}")
    for name in ("runs", "rounds", "threads", "size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    for cells in args.band_cells:
        variants.append(f"band_matmul/{cells}")
    if "twin" not in variants:
        variants.append("twin")

    x = np.random.default_rng(0).standard_normal((1, args.size, args.size, 3)).astype("float32")
    calls, facts, errors = {}, {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants:
            model = build_model(variant, args.size)
            paths = export(model, variant, Path(tmp))
            facts[variant] = graph_facts(paths)
            expected = model.predict(x, verbose=0)
            for runtime, run in runners(paths, args.threads).items():
                if variant != "twin":
                    errors.append(float(np.abs(run(x) - expected).max()))
                calls[variant, runtime] = run
        # Rounds interleave the variants, so that a slower spell of the machine falls on
        # all of them; each ratio compares a variant with the twin of the same round.
        times = {key: [] for key in calls}
        for _ in range(args.rounds):
            for key, run in calls.items():
                times[key].append(runtimes.timed(run, x, args.runs)[0])

    columns = list(dict.fromkeys(runtime for _, runtime in calls))
    print(f"model: {args.size}x{args.size}x3 -> 2 CARAFE layers (s2, k5, 64 channels); "
          f"{args.threads} threads; ms: median of {args.rounds} rounds' medians of "
          f"{args.runs} runs; ratio to the twin: median of the rounds' ratios [their range]")
    print(f"{'variant':15s}" + "".join(f"{r:>31s}" for r in columns)
          + "  max rank  Shape ops (litert/onnx)  XNNPACK parts")
    for variant in variants:
        cells = []
        for runtime in columns:
            median = _summary(times[variant, runtime])[0]
            ratio, low, high = _summary([a / b for a, b in zip(times[variant, runtime],
                                                                 times["twin", runtime])])
            cells.append(f"{median:.2f} {ratio:.2f}x [{low:.2f}, {high:.2f}]")
        rank, litert_shapes, onnx_shapes, parts = facts[variant]
        print(f"{variant:15s}" + "".join(f"{c:>31s}" for c in cells)
              + f"  {rank:8d}  {f'{litert_shapes}/{onnx_shapes}':>23s}  {parts:13d}")
    if errors:
        print(f"largest difference from Keras's output (every variant but the twin, every "
              f"runtime): {max(errors):.1e}")


if __name__ == "__main__":
    main()

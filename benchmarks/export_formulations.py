"""The exported reassembly's formulations, timed in the runtimes that load `model.export`'s files.

One functional model (TensorFlow backend), `Input(128, 128, 3) -> Conv s2 -> Conv s2 -> CARAFE
-> Conv -> CARAFE -> Conv` (64 channels, CARAFE's defaults: scale 2, k_up 5, 64 compressed
channels), is exported with each way of writing its CARAFE layers:

- rank5: the portable path as exports held it before `export_formulation` (rank-5
  pixel shuffles and patches, shape arithmetic from the open batch);
- tap_sum, patches_matmul, one_hot_conv: the formulations of
  `keras_carafe.ops.export_formulation`;
- twin: the "predictor twin", the same compressor, encoder and softmax, whose output is each
  source pixel times one weight of each of its kernels: what the model costs without the
  reassembly (the kernels must be used, or the exporters drop their prediction).

Each file runs in onnxruntime, LiteRT with XNNPACK (its default) and without (the builtin
kernels), and OpenVINO (f32 precision hint), with `--threads` threads (default 2); the table
gives the median time of `--runs` calls after a warm-up, the interquartile range, the ratio
to the twin in the same runtime, the largest tensor rank and the number of Shape operations
in the exported graph:

    python benchmarks/export_formulations.py [--runs 200] [--threads 2] [--size 128]
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
    paths = {"onnx": directory / f"{variant}.onnx", "litert": directory / f"{variant}.tflite",
             "openvino": directory / f"{variant}.xml"}
    formulation = variant if variant in export_formulation.FORMULATIONS else "tap_sum"
    with export_formulation.using(formulation):
        for fmt, path in paths.items():
            model.export(str(path), format=fmt, verbose=False)
    return paths


def graph_facts(paths):
    """(largest tensor rank, Shape operations) of the LiteRT graph, and the ONNX Shape count."""
    import onnx
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(paths["litert"]))
    rank = max(len(t["shape_signature"]) for t in interpreter.get_tensor_details())
    litert_shapes = sum(op["op_name"] == "SHAPE" for op in interpreter._get_ops_details())
    onnx_shapes = sum(n.op_type == "Shape" for n in onnx.load(str(paths["onnx"])).graph.node)
    return rank, litert_shapes, onnx_shapes


def runners(paths, threads):
    """name -> callable(x) for each runtime."""
    return {
        "onnxruntime": runtimes.load(paths["onnx"], threads),
        "litert xnnpack": runtimes.load(paths["litert"], threads),
        "litert builtin": runtimes.load(paths["litert"], threads, xnnpack=False),
        "openvino": runtimes.load(paths["openvino"], threads),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--only", default=",".join(VARIANTS),
                        help=f"comma-separated variants among {', '.join(VARIANTS)}")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.only.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"--only: unknown variants {unknown}; choose among {', '.join(VARIANTS)}")
    if "twin" not in variants:
        variants.append("twin")

    x = np.random.default_rng(0).standard_normal((1, args.size, args.size, 3)).astype("float32")
    results, facts = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants:
            model = build_model(variant, args.size)
            paths = export(model, variant, Path(tmp))
            facts[variant] = graph_facts(paths)
            expected = model.predict(x, verbose=0)
            for runtime, run in runners(paths, args.threads).items():
                error = float(np.abs(run(x) - expected).max())
                results[variant, runtime] = (*runtimes.timed(run, x, args.runs), error)

    columns = list(dict.fromkeys(runtime for _, runtime in results))
    print(f"model: {args.size}x{args.size}x3 -> 2 CARAFE layers (s2, k5, 64 channels); "
          f"{args.threads} threads, median of {args.runs} runs [interquartile range], ms")
    print(f"{'variant':15s}" + "".join(f"{r:>31s}" for r in columns)
          + "  max rank  Shape ops (litert/onnx)")
    for variant in variants:
        cells = []
        for runtime in columns:
            median, q1, q3, error = results[variant, runtime]
            ratio = median / results["twin", runtime][0]
            cells.append(f"{median:.2f} [{q1:.2f}, {q3:.2f}] {ratio:.2f}x")
        rank, litert_shapes, onnx_shapes = facts[variant]
        print(f"{variant:15s}" + "".join(f"{c:>31s}" for c in cells)
              + f"  {rank:8d}  {litert_shapes}/{onnx_shapes}")
    errors = [results[key][3] for key in results if key[0] != "twin"]
    if errors:
        print(f"largest difference from Keras's output (every variant but the twin, every "
              f"runtime): {max(errors):.1e}")


if __name__ == "__main__":
    main()

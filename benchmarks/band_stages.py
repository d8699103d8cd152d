"""Where the time of an exported band_matmul reassembly goes, stage by stage, in LiteRT.

The second CARAFE layer of `benchmarks/export_formulations.py`'s model (features
`(1, S/2, S/2, 64)`, scale 2, k_up 5: cell weights with 100 channels) is cut into the stages
of `keras_carafe.ops.export_formulation`'s band_matmul, and each stage is exported alone, its
inputs as the model's inputs:

- softmax: the kernel normalization (`normalize`), which the predictor twin holds too;
- column blocks: the `k` padded rows x `span` columns that each block of cells reads;
- band: the blocks' weights as banded matrices (the skewed reshape);
- matmul: the batched matmul of the two, zeros of the band included;
- patches' matmul: the batched matmul of `patches_matmul` instead, `(phases, k*k) x
  (k*k, C)` per cell (random inputs of its shapes);
- pixel shuffle: `depth_to_space` of the cell outputs, which the twin holds too;
- reassembly: column blocks, band, matmul and pixel shuffle in one graph;
- twin's stand-in: what the twin computes instead (each source pixel times one weight
  per phase, pixel-shuffled);
- model, band_matmul and model, twin: the whole model of `export_formulations.py` as
  exported (two CARAFE layers) and its predictor twin, for the 1.3x budget.

Each file runs in LiteRT with XNNPACK on `--threads` threads; a stage's time is that of
the interpreter's `invoke` (its inputs set once: the Python interpreter copies inputs and
outputs, a cost that the stage would not have inside a graph). Rounds interleave the files; the table gives the
median of the rounds' medians of `--runs` calls [their range], the stage's output size and,
for the matmul, its arithmetic against the reassembly's own (2 * k * k flops per output
element):

    python benchmarks/band_stages.py [--runs 100] [--rounds 5] [--threads 2] [--size 128]
"""

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from export_formulations import build_model  # noqa: E402
from keras_carafe import runtimes  # noqa: E402
from keras_carafe.ops import export_formulation as formulation  # noqa: E402
from keras_carafe.ops.geometry import UPSAMPLE, Geometry  # noqa: E402

GEOMETRY = Geometry(UPSAMPLE, factor=2, kernel_size=5, group_size=1)
CHANNELS = 64


def stages(size):
    """name -> (function of the stage's inputs, NumPy inputs), for features of `size`."""
    g = GEOMETRY
    rng = np.random.default_rng(0)
    features = rng.standard_normal((1, size, size, CHANNELS)).astype("float32")
    logits = rng.standard_normal((1, size, size, g.phases * g.kernel_channels)).astype("float32")
    cells, blocks, span = formulation._band_layout(g, size)
    weights = np.asarray(formulation.normalize(ops.convert_to_tensor(logits), g))
    stacked = np.asarray(formulation._column_blocks(ops.convert_to_tensor(features), g, cells,
                                                    blocks, span))
    bands = np.asarray(formulation._bands(ops.convert_to_tensor(weights), g, cells, blocks,
                                          span))
    cell_outputs = np.asarray(formulation._band_matmul(ops.convert_to_tensor(features),
                                                       ops.convert_to_tensor(weights), g))
    taps = g.kernel_channels

    def twin(f, w):
        parts = [f * w[..., p * taps:p * taps + 1] for p in range(g.phases)]
        return formulation.depth_to_space(formulation.concatenate(parts, axis=-1), g.factor)

    return {
        "softmax": (lambda x: formulation.normalize(x, g), [logits]),
        "column blocks": (lambda f: formulation._column_blocks(f, g, cells, blocks, span),
                          [features]),
        "band": (lambda w: formulation._bands(w, g, cells, blocks, span), [weights]),
        "matmul": (ops.matmul, [bands, stacked]),
        # patches_matmul's, of every cell's (phases, k*k) weights by its (k*k, C) patch: no
        # zeros, and matrices too small for a fast kernel.
        "patches' matmul": (ops.matmul, [
            rng.random((1, size * size, g.phases, g.taps), "float32"),
            rng.random((1, size * size, g.taps, CHANNELS), "float32")]),
        "pixel shuffle": (lambda y: formulation.depth_to_space(y, g.factor), [cell_outputs]),
        "reassembly": (lambda f, w: formulation.reassemble_cells(g, f, w, "band_matmul",
                                                                 mask=False),
                       [features, weights]),
        "twin's stand-in": (twin, [features, weights]),
    }


class _Stage(keras.layers.Layer):
    def __init__(self, function, **kwargs):
        super().__init__(**kwargs)
        self.function = function

    def call(self, *inputs):
        return self.function(*inputs)


def export(function, arrays, path):
    """A LiteRT file of `function` with one input per array (batch 1)."""
    inputs = [keras.Input(a.shape[1:], batch_size=1) for a in arrays]
    model = keras.Model(inputs, _Stage(function)(*inputs))
    model.export(str(path), format="litert", verbose=False)
    return path


def runner(path, arrays, threads):
    """A call running the file at `path` on `arrays` (set once), and its output's size in
    MB."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    # The exporter may order the inputs by name: match them by shape (distinct here).
    for source in interpreter.get_input_details():
        [array] = [a for a in arrays if a.shape == tuple(source["shape"])]
        interpreter.set_tensor(source["index"], array)
    [sink] = interpreter.get_output_details()
    return interpreter.invoke, np.prod(sink["shape"]) * 4 / 2**20


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=128,
                        help="the model's input size; the layer's features are half of it")
    args = parser.parse_args(argv)
    for name in ("runs", "rounds", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if args.size < 4 or args.size % 4:
        parser.error(f"--size must be a multiple of 4, at least 4, got {args.size}")
    size = args.size // 2
    calls, sizes = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, (function, arrays)) in enumerate(stages(size).items()):
            path = export(function, arrays, Path(tmp) / f"stage{i}.tflite")
            calls[name], sizes[name] = runner(path, arrays, args.threads)
        # The whole model around it, with the export's formulation and as the twin.
        image = np.random.default_rng(0).standard_normal((1, args.size, args.size, 3))
        for variant in ("band_matmul", "twin"):
            path = Path(tmp) / f"{variant}.tflite"
            build_model(variant, args.size).export(str(path), format="litert", verbose=False)
            name = f"model, {variant}"
            calls[name], sizes[name] = runner(path, [image.astype("float32")], args.threads)
        times = {name: [] for name in calls}
        for _ in range(args.rounds):
            for name, run in calls.items():
                times[name].append(runtimes.timed(lambda _: run(), None, args.runs)[0])

    g = GEOMETRY
    cells, blocks, span = formulation._band_layout(g, size)
    outputs = size * size * g.phases * CHANNELS
    band_flops = 2 * outputs * g.kernel_size * span
    print(f"CARAFE layer on {size}x{size}x{CHANNELS} features (s2, k5), band_matmul blocks of "
          f"{cells} cells ({span} padded columns); LiteRT with XNNPACK, {args.threads} "
          f"threads; ms: median of {args.rounds} rounds' medians of {args.runs} runs [range]")
    print(f"{'stage':20s}{'ms':>24s}{'output MB':>11s}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:20s}{f'{median:.2f} [{min(values):.2f}, {max(values):.2f}]':>24s}"
              f"{sizes[name]:11.2f}")
    model, twin = (statistics.median(times[f"model, {v}"]) for v in ("band_matmul", "twin"))
    print(f"model {model / twin:.2f}x its twin; 1.3x would leave {0.3 * twin:.2f} ms for its "
          f"two layers' reassembly (this one and one on a quarter of the cells)")
    print(f"matmul arithmetic: {band_flops / 1e6:.0f} Mflop, "
          f"{band_flops / (2 * outputs * g.taps):.1f}x the reassembly's "
          f"{2 * outputs * g.taps / 1e6:.0f} (2 * k * k per output element)")


if __name__ == "__main__":
    main()

"""Post-training quantization of exported models holding CARAFE: error and latency per recipe.

Each model is exported in float32 by `model.export` (TensorFlow backend) and quantized with
a representative dataset; its outputs are compared with the float model's on held-out
inputs. The error is the root-mean-square difference from the float output as a percentage
of the float output's range (max - min over the evaluation inputs); the same recipe on the
"bilinear twin" (CARAFE replaced by `UpSampling2D(interpolation="bilinear")`, or
`AveragePooling2D` for `CARAFEDownsample`) shows what quantization costs any upsampler.

Models: "layer", a CARAFE layer alone (32x32x64 -> 64x64x64); "down", a CARAFEDownsample
layer alone (64x64x64 -> 32x32x64); "network", `Input(128, 128, 3) -> Conv s2 -> Conv s2 ->
CARAFE -> Conv -> CARAFE -> Conv` (64 channels); "fade" and "sapa", the guided layer on an
input of 64x64x64 (its encoder feature) and that input's 2x2 average (its decoder feature),
whose twin upsamples the average bilinearly; "dysample", DySample alone (32x32x64 ->
64x64x64). Inputs: smooth random images (a seeded sum
of Gaussian-blurred noise; 64 for calibration, 16 for evaluation, different seeds).

Recipes, each timed in its runtime (LiteRT with XNNPACK, onnxruntime's CPU provider):
- litert float32, onnx float32: `model.export` as it is;
- litert int8, onnx int8: `keras_carafe.quantization.export_int8` (full-integer LiteRT;
  onnxruntime's static QDQ quantization);
- litert int8 float-re, onnx int8 float-re: the same with `float_reassembly=True` (the
  layers' operators but their convolutions left in float; the twins, which have none, are
  quantized whole, as by the int8 recipe).

    python benchmarks/export_quantization.py [--models layer,down,network,fade,sapa,dysample]
        [--runs 100]
        [--rounds 3] [--threads 2] [--formulation band_matmul]
"""

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from keras_carafe import (CARAFE, FADE, SAPA, CARAFEDownsample, DySample,  # noqa: E402
                          runtimes)
from keras_carafe.ops import export_formulation  # noqa: E402
from keras_carafe.quantization import export_int8  # noqa: E402

MODELS = ("layer", "down", "network", "fade", "sapa", "dysample")


def build(name, twin, seed=0):
    keras.utils.set_random_seed(seed)
    if name == "layer":
        inputs = keras.Input((32, 32, 64))
        layer = (keras.layers.UpSampling2D(interpolation="bilinear") if twin
                 else CARAFE(encoder_kernel_initializer="glorot_uniform"))
        return keras.Model(inputs, layer(inputs))
    if name in ("fade", "sapa"):
        inputs = keras.Input((64, 64, 64))
        decoder = keras.layers.AveragePooling2D(2)(inputs)
        if twin:
            return keras.Model(inputs, keras.layers.UpSampling2D(interpolation="bilinear")(
                decoder))
        layer = FADE() if name == "fade" else SAPA()
        return keras.Model(inputs, layer(inputs, decoder))
    if name == "dysample":
        inputs = keras.Input((32, 32, 64))
        layer = (keras.layers.UpSampling2D(interpolation="bilinear") if twin
                 else DySample(kernel_initializer="glorot_uniform"))
        return keras.Model(inputs, layer(inputs))
    if name == "down":
        inputs = keras.Input((64, 64, 64))
        layer = (keras.layers.AveragePooling2D(2, padding="same") if twin
                 else CARAFEDownsample(encoder_kernel_initializer="glorot_uniform"))
        return keras.Model(inputs, layer(inputs))

    def up():
        return (keras.layers.UpSampling2D(interpolation="bilinear") if twin
                else CARAFE(encoder_kernel_initializer="glorot_uniform"))

    inputs = keras.Input((128, 128, 3))
    x = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(up()(x))
    return keras.Model(inputs, keras.layers.Conv2D(3, 3, padding="same")(up()(x)))


def smooth_images(shape, count, seed):
    """Seeded images with structure at several scales, standardized per channel."""
    import scipy.ndimage

    rng = np.random.default_rng(seed)
    images = np.zeros((count, *shape), "float32")
    for sigma in (1.0, 3.0, 8.0):
        noise = rng.standard_normal((count, *shape)).astype("float32")
        images += scipy.ndimage.gaussian_filter(noise, (0, sigma, sigma, 0)) * sigma
    return (images - images.mean((0, 1, 2))) / images.std((0, 1, 2))


def error_percent(got, expected):
    spread = float(expected.max() - expected.min())
    return 100 * float(np.sqrt(np.mean((got - expected) ** 2))) / spread


RECIPES = ("litert float32", "litert int8", "litert int8 float-re", "onnx float32", "onnx int8",
           "onnx int8 float-re")


def evaluate(name, twin, directory, runs, threads, rounds):
    model = build(name, twin)
    shape = model.input_shape[1:]
    calibration = smooth_images(shape, 64, seed=1)
    evaluation = smooth_images(shape, 16, seed=2)
    expected = model.predict(evaluation, verbose=0)
    rows, runners = {}, {}
    for recipe in RECIPES:
        fmt, precision, *float_re = recipe.split()
        path = directory / (f"{name}-{'twin' if twin else 'carafe'}-{precision}"
                            f"{'-float-re' if float_re else ''}"
                            + (".onnx" if fmt == "onnx" else ".tflite"))
        if precision == "int8":
            export_int8(model, path, calibration, format=fmt, float_reassembly=bool(float_re))
        else:
            model.export(str(path), format=fmt, verbose=False)
        run = runners[recipe] = runtimes.load(path, threads)
        got = np.concatenate([run(x[None]) for x in evaluation])
        rows[recipe] = [error_percent(got, expected)]
    # Rounds over all recipes in turn, so that a slow spell of a shared machine falls on
    # every recipe rather than on one.
    medians = {recipe: [] for recipe in RECIPES}
    for _ in range(rounds):
        for recipe in RECIPES:
            medians[recipe].append(runtimes.timed(runners[recipe], evaluation[:1], runs)[0])
    for recipe in RECIPES:
        rows[recipe].append(medians[recipe])
    return rows


def _ms(medians):
    """The median of the rounds' medians, with their range when there are several."""
    middle = float(np.median(medians))
    if len(medians) == 1:
        return f"{middle:.2f}"
    return f"{middle:.2f} [{min(medians):.2f}, {max(medians):.2f}]"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--formulation", choices=export_formulation.FORMULATIONS,
                        help="the exported reassembly's formulation for every file (default: "
                             "each format's, export_formulation.FORMULATION)")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"--models: unknown {unknown}; choose among {', '.join(MODELS)}")

    print("error: RMS difference from the float model, % of its output range (16 inputs); "
          f"latency: median of {args.rounds} rounds of {args.runs} runs each [the rounds' "
          f"range], batch 1, {args.threads} threads")
    print(f"{'model':8s} {'recipe':20s} {'CARAFE error':>12s} {'twin error':>10s} "
          f"{'ratio':>6s} {'CARAFE ms':>22s} {'twin ms':>20s}")
    chosen = (export_formulation.using(args.formulation) if args.formulation
              else contextlib.nullcontext())
    with tempfile.TemporaryDirectory() as tmp, chosen:
        for name in models:
            carafe = evaluate(name, False, Path(tmp), args.runs, args.threads, args.rounds)
            twin = evaluate(name, True, Path(tmp), args.runs, args.threads, args.rounds)
            for recipe in RECIPES:
                (error, ms), (twin_error, twin_ms) = carafe[recipe], twin[recipe]
                # A twin that its runtime leaves unquantized has no error to compare with.
                ratio = f"{error / twin_error:6.2f}" if twin_error > 1e-4 else f"{'-':>6s}"
                print(f"{name:8s} {recipe:20s} {error:12.3f} {twin_error:10.3f} {ratio} "
                      f"{_ms(ms):>22s} {_ms(twin_ms):>20s}")


if __name__ == "__main__":
    main()

"""The whole comparison: data, one training run per upsampler, metrics, table, figures."""

import dataclasses
import os
import platform
import time

import keras
import numpy as np
import tensorflow as tf

from keras_carafe import visualize
from keras_carafe.demo import costs, data, evaluation, figures, models, report, training
from keras_carafe.demo.report import BASELINE

# FLOPs are quoted for upsampling the features of one image of this output size.
FLOPS_OUTPUT_SIZE = (512, 512)
FIGURE_DPI = 100


def _prepare_test_images(images, config):
    """Crops each held-out image to a multiple of the scale; returns (low, high) pairs."""
    pairs = {}
    for name, image in images.items():
        if config.eval_size:
            image = data.center_crop(image, config.eval_size)
        high = data.crop_to_multiple(image, config.scale)
        pairs[name] = (data.downscale(high, config.scale), high)
    return pairs


def prepare_data(config):
    """The training patches and held-out pairs of `config`.

    Returns:
        `(low, high, tests)`: training patches `(n, p/s, p/s, 1)` and
        `(n, p, p, 1)`, and a dict from held-out image name to its
        `(low, high)` pair of `(h, w)` arrays.
    """
    train_images, test_images = data.split_images(config.train_images, config.test_images)
    rng = np.random.default_rng(config.seed)
    low, high, _ = data.sample_patches(train_images, config.patches, config.patch_size,
                                       config.scale, rng)
    return low, high, _prepare_test_images(test_images, config)


def train_upsampler(config, upsampler, low, high):
    """Builds and trains the SR model of one upsampler under `config`'s budget.

    Returns:
        `(model, losses, seconds)` as `training.train` reports them.
    """
    keras.utils.set_random_seed(config.seed)
    model = models.build_sr_model(upsampler, config.scale, channels=config.channels,
                                  depth=config.depth, seed=config.seed,
                                  implementation=config.implementation)
    losses, seconds = training.train(
        model, low, high, config.epochs, config.batch_size, config.learning_rate,
        config.seed, verbose=config.verbose)
    return model, losses, seconds


def carafe_kernels(model, low):
    """The reassembly kernels of an SR model's CARAFE upsampler on one `(h, w)` image.

    Returns:
        Array `(h*s, w*s, k, k)` (the first group's kernels).
    """
    return visualize.layer_kernels(model, low[None, :, :, None])["upsampler"][0, :, :, 0]


def _carafe_backend(config, log):
    """Which reassembly CARAFE will run ("op", "fallback" or "portable"), building the
    compiled kernels first if needed.

    Building (or loading) here keeps the one-off compile out of CARAFE's
    training time.
    """
    from keras_carafe import library
    from keras_carafe.ops import implementation

    if config.implementation not in ("fallback", "portable"):
        try:
            loaded = library.load_compiled()
            log(f"compiled CARAFE kernels: {loaded.report.library}")
        except library.OpUnavailableError as err:
            if config.implementation == "op":
                raise
            log(f"compiled CARAFE kernels unavailable, CARAFE runs without them: {err}")
    return implementation.resolve(config.implementation)


def _save_figure(fig, path, written):
    fig.savefig(path, dpi=FIGURE_DPI)
    written.append(path)


def run_experiment(config, log=print):
    """Trains and evaluates every upsampler in `config`; writes the table and figures.

    Args:
        config: a `DemoConfig`.
        log: function called with each progress line.

    Returns:
        dict with "rows" (one per method, the no-learning baseline first),
        "summary" (text), "table" (Markdown) and "files" (paths written).
    """
    started = time.perf_counter()
    os.makedirs(config.output, exist_ok=True)
    low, high, tests = prepare_data(config)
    log(f"training images: {', '.join(config.train_images)}")
    log(f"held-out images: {', '.join(config.test_images)}")
    log(f"{len(low)} training patches {config.patch_size}x{config.patch_size} "
        f"-> x{config.scale}; held-out sizes: "
        + ", ".join(f"{n} {h.shape[0]}x{h.shape[1]}" for n, (_, h) in tests.items()))
    carafe_backend = (_carafe_backend(config, log) if "carafe" in config.upsamplers else None)

    flops_low = (FLOPS_OUTPUT_SIZE[0] // config.scale, FLOPS_OUTPUT_SIZE[1] // config.scale)
    predictions = {name: {} for name in tests}
    per_image = {}
    for name, (lr, hr) in tests.items():
        predictions[name][BASELINE] = evaluation.bicubic(lr, config.scale)
        per_image[name] = evaluation.image_metrics(hr, predictions[name][BASELINE],
                                                   config.scale)
    rows = [{"upsampler": BASELINE, "upsampler_params": 0, "model_params": 0,
             "upsampler_mflops": None, "train_seconds": None,
             **evaluation.mean_metrics(per_image), "per_image": per_image}]

    histories, kernels = {}, {}
    for upsampler in config.upsamplers:
        log(f"\n[{upsampler}] training {config.epochs} epoch(s) of {len(low)} patches")
        model, losses, seconds = train_upsampler(config, upsampler, low, high)
        histories[upsampler] = losses
        layer = model.get_layer("upsampler")
        per_image = {}
        for name, (lr, hr) in tests.items():
            predictions[name][upsampler] = evaluation.super_resolve(model, lr)
            per_image[name] = evaluation.image_metrics(hr, predictions[name][upsampler],
                                                       config.scale)
        row = {"upsampler": upsampler, "upsampler_params": layer.count_params(),
               "model_params": model.count_params(),
               "upsampler_mflops": costs.upsampler_flops(layer, *flops_low,
                                                         config.channels) / 1e6,
               "train_seconds": seconds, **evaluation.mean_metrics(per_image),
               "per_image": per_image, "losses": losses}
        rows.append(row)
        log(f"[{upsampler}] {seconds:.1f} s; held-out PSNR {row['psnr']:.2f} dB, "
            f"SSIM {row['ssim']:.4f}, edge PSNR {row['edge_psnr']:.2f} dB")
        if upsampler == "carafe":
            kernels = {name: carafe_kernels(model, lr) for name, (lr, _) in tests.items()}
        if config.save_models:
            os.makedirs(os.path.join(config.output, "models"), exist_ok=True)
            model.save(os.path.join(config.output, "models", f"{upsampler}.keras"))

    written = []
    table = report.markdown_table(rows, FLOPS_OUTPUT_SIZE)
    text = report.summary(rows)
    environment = {
        "tensorflow": tf.__version__, "keras": keras.__version__,
        "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "carafe_reassembly": carafe_backend,
        "total_seconds": None,
    }
    _save_figure(figures.comparison_figure({n: hr for n, (_, hr) in tests.items()},
                                           predictions),
                 os.path.join(config.output, "comparison.png"), written)
    _save_figure(visualize.plot_loss_curves(histories),
                 os.path.join(config.output, "training_loss.png"), written)
    for name, image_kernels in kernels.items():
        lr, hr = tests[name]
        _save_figure(figures.kernel_figure(lr, hr, image_kernels, config.scale, name),
                     os.path.join(config.output, f"carafe_kernels_{name}.png"), written)
        _save_figure(figures.entropy_figure(hr, image_kernels, name),
                     os.path.join(config.output, f"carafe_entropy_{name}.png"), written)

    environment["total_seconds"] = time.perf_counter() - started
    heading = (
        f"# CARAFE demo: x{config.scale} super-resolution on scikit-image data\n\n"
        f"Trained on {', '.join(config.train_images)}; evaluated on held-out "
        f"{', '.join(config.test_images)} (grey levels; {config.scale}-pixel border "
        f"ignored; edge PSNR = PSNR within 1 pixel of Canny edges).\n"
        f"Every upsampler: same backbone ({config.depth} convs, {config.channels} channels), "
        f"same initial weights outside the upsampler, {config.epochs} epochs x "
        f"{config.patches} patches of {config.patch_size}x{config.patch_size}, "
        f"batch {config.batch_size}, seed {config.seed}. "
        f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU core(s), "
        f"{environment['gpus']} GPU(s); CARAFE reassembly: {carafe_backend or 'not run'}.\n")
    paths = {kind: os.path.join(config.output, f"results.{kind}") for kind in ("md", "csv",
                                                                                 "json")}
    with open(paths["md"], "w") as f:
        f.write(heading + "\n" + table + "\n\n" + text + "\n")
    report.write_csv(rows, paths["csv"])
    report.write_json(rows, config, environment, paths["json"])
    written += list(paths.values())
    return {"rows": rows, "summary": text, "table": table, "files": written,
            "seconds": environment["total_seconds"]}


def config_summary(config):
    """The settings of `config` in one line, for the log (image lists left out)."""
    fields = dataclasses.fields(config)
    return ", ".join(f"{f.name}={getattr(config, f.name)!r}" for f in fields
                     if f.name not in ("train_images", "test_images"))

"""The whole benchmark: data, one training run per variant and seed, scores, tables, figures."""

import dataclasses
import os
import platform
import time

import keras

from keras_carafe import CARAFEDownsample, visualize
from keras_carafe.demo.upsampler_flops import upsampler_flops
from keras_carafe.segment import datasets, figures, metrics, network, report, sampling, training
from keras_carafe.segment.config import UPSAMPLER_OF

FIGURE_DPI = 90
# Held-out images drawn under the predictions and watched by the kernel-map callback.
SHOWN_IMAGES = 4


class InputError(Exception):
    """Bad data or settings, found before any training starts."""


def resampling_costs(model, height, width, channels):
    """Parameters and FLOPs of a segmenter's own resampling layers for one image.

    Args:
        model: from `network.build_segmenter`.
        height, width: the input image's size.
        channels: the top-down pathway's channels.

    Returns:
        dict with "params", "flops" (the variant's upsamplers, plus its
        content-aware downsamplers) and "model_params".
    """
    params = flops = 0
    for layer in network.resampling_layers(model):
        params += layer.count_params()
        stride = network.input_stride(layer.name)
        size = (height // stride, width // stride)
        if isinstance(layer, CARAFEDownsample):
            flops += layer.cost(*size, layer.input.shape[-1]).flops
        else:
            flops += upsampler_flops(layer, *size, channels)
    return {"params": params, "flops": flops, "model_params": model.count_params()}


def _reassembly(config, log):
    """Which reassembly CARAFE runs here ("op", "fallback" or "portable"), building the
    compiled kernels first where they are wanted, so that the one-off compile stays out of
    the training times."""
    from keras_carafe import library
    from keras_carafe.ops import implementation

    if config.implementation in ("auto", "op"):
        try:
            log(f"compiled CARAFE kernels: {library.load_compiled().report.library}")
        except library.OpUnavailableError as err:
            if config.implementation == "op":
                raise RuntimeError(f"--implementation op: {err}") from err
            log(f"compiled CARAFE kernels unavailable, CARAFE runs without them: {err}")
    return implementation.resolve(config.implementation)


def check_backend(config):
    """Raises, naming --implementation, where this Keras backend cannot run it."""
    if config.implementation == "fallback" and keras.backend.backend() != "tensorflow":
        raise ValueError("--implementation fallback needs the TensorFlow backend, but "
                         f"KERAS_BACKEND is {keras.backend.backend()!r}; use auto, op or "
                         "portable")


def _shown(data, count):
    """The first held-out images with an object under a coarse point, and one such point each.

    Returns:
        `(indices, points)`: indices into the held-out images, and
        `(position in indices, row, col)` of a coarsest-level point on an
        object of each, for the training callback.
    """
    indices, points = [], []
    for index in range(len(data.test_images)):
        candidates = sampling.foreground_points(data.test_labels[index], 2 ** network.LEVELS,
                                                data.test_valid[index])
        if candidates:
            points.append((len(indices), *candidates[len(candidates) // 2]))
            indices.append(index)
        if len(indices) == count:
            break
    return indices, points


def train_and_score(config, data, variant, seed, images, labels, log, callbacks=()):
    """Trains one variant on one seed's images and scores it on the held-out images.

    Returns:
        `(model, record)`: the trained model and a dict with the scores
        (`metrics.score`), "losses", "train_seconds" and, for variants whose
        upsamplers are CARAFE, the mean sampling-region shares.
    """
    keras.utils.set_random_seed(seed)
    model = network.build_segmenter(variant, len(data.class_names), channels=config.channels,
                                    seed=seed, implementation=config.implementation)
    content_aware = UPSAMPLER_OF[variant] == "carafe"
    if content_aware:
        # The untrained kernels are near-uniform 5x5 averages: the share they
        # give shows what the kernels' reach alone does, before any learning.
        initial = sampling.object_shares(model, data.test_images, data.test_labels,
                                         data.test_valid)
    prefix = f"[{variant}, seed {seed}]"
    epoch_log = ([training.EpochLog(log, prefix, config.epochs)] if config.verbose else [])
    losses, seconds = training.train(model, images, labels, config.epochs, config.batch_size,
                                     config.learning_rate, seed,
                                     callbacks=[*epoch_log, *callbacks])
    predicted = training.predict_classes(model, data.test_images)
    record = metrics.score(data.test_labels, predicted, len(data.class_names),
                           config.boundary_width, data.test_valid)
    record.update(losses=losses, train_seconds=seconds)
    if content_aware:
        shares = sampling.object_shares(model, data.test_images, data.test_labels,
                                        data.test_valid)
        record.update(share_learned=float(shares["learned"].mean()),
                      share_initial=float(initial["learned"].mean()),
                      share_bilinear=float(shares["bilinear"].mean()),
                      share_points=len(shares["points"]),
                      kept_learned=shares["kept_learned"])
        record["_shares"] = shares
    log(f"{prefix} {seconds:.1f} s; held-out mIoU {record['miou']:.2%}, boundary IoU "
        f"{record['boundary_iou']:.2%}"
        + (f"; {record['share_learned']:.1%} of coarse points' weight on their object "
           f"(bilinear {record['share_bilinear']:.1%})" if "share_learned" in record else ""))
    return model, record, predicted


def environment():
    """Where the run ran: backend, versions, cores."""
    info = {"keras": keras.__version__, "backend": keras.backend.backend(),
            "machine": platform.machine(), "processor": platform.processor(),
            "cpu_count": os.cpu_count(), "python": platform.python_version()}
    try:
        backend_module = __import__({"tensorflow": "tensorflow", "jax": "jax",
                                     "torch": "torch"}[keras.backend.backend()])
        info["backend_version"] = backend_module.__version__
    except (ImportError, KeyError):
        pass
    return info


def run_experiment(config, log=print):
    """Trains and scores every variant for every seed; writes tables and figures.

    Args:
        config: a `SegmentConfig`.
        log: function called with each progress line.

    Returns:
        dict with "stats" (`report.summarize`), "runs", "table", "summary",
        "files" (paths written) and "seconds".
    """
    started = time.perf_counter()
    try:
        check_backend(config)
        data = datasets.load(config)
        reassembly = (_reassembly(config, log)
                      if any(UPSAMPLER_OF[v] == "carafe" for v in config.variants) else None)
    except (FileNotFoundError, ImportError, ValueError, RuntimeError) as err:
        raise InputError(str(err)) from err
    classes = len(data.class_names)
    log(data.description)
    log(f"{classes} classes: {', '.join(data.class_names)}; held-out images "
        f"{data.test_images.shape[1]}x{data.test_images.shape[2]}: {len(data.test_images)}")
    os.makedirs(config.output, exist_ok=True)
    height, width = data.test_images.shape[1:3]
    shown, shown_points = _shown(data, SHOWN_IMAGES)

    runs, costs, first_predictions, carafe_models = {}, {}, {}, {}
    files = []
    for seed in config.seeds:
        images, labels = data.draw_training(seed)
        log(f"\nseed {seed}: {len(images)} training images "
            f"{images.shape[1]}x{images.shape[2]}")
        for variant in config.variants:
            callbacks = []
            if config.kernel_maps and variant == "carafe" and seed == config.seeds[0]:
                watch = data.test_images[shown]
                callbacks.append(visualize.KernelMapsCallback(
                    watch, os.path.join(config.output, "kernel_maps"),
                    points=shown_points, display=watch[..., 0]))
            model, record, predicted = train_and_score(config, data, variant, seed, images,
                                                       labels, log, callbacks)
            for callback in callbacks:
                files += callback.written
            runs[variant, seed] = record
            if variant not in costs:
                costs[variant] = resampling_costs(model, height, width, config.channels)
            if seed == config.seeds[0]:
                first_predictions[variant] = predicted[shown]
                if UPSAMPLER_OF[variant] == "carafe":
                    carafe_models[variant] = (model, record["_shares"])
            if config.save_models:
                os.makedirs(os.path.join(config.output, "models"), exist_ok=True)
                model.save(os.path.join(config.output, "models", f"{variant}_seed{seed}.keras"))
        log(f"seed {seed} done ({time.perf_counter() - started:.0f} s so far)")

    stats = report.summarize(runs, config.variants, config.seeds)
    image_shape = (height, width)
    table = report.main_table(stats, costs, image_shape)
    text = report.summary(stats, config.seeds)

    def save(fig, name):
        path = os.path.join(config.output, name)
        fig.savefig(path, dpi=FIGURE_DPI)
        files.append(path)

    save(figures.prediction_figure(data.test_images[shown, :, :, 0], data.test_labels[shown],
                                   first_predictions, classes, data.test_valid[shown]),
         "predictions.png")
    save(visualize.plot_loss_curves(
        {v: runs[v, config.seeds[0]]["losses"] for v in config.variants},
        ylabel="training loss (cross-entropy)",
        title=f"training loss, seed {config.seeds[0]}"), "training_loss.png")
    if carafe_models:
        variant = "carafe" if "carafe" in carafe_models else next(iter(carafe_models))
        model, shares = carafe_models[variant]
        points = figures.pick_figure_points(shares)
        inputs = sampling.figure_inputs(model, data.test_images, data.test_labels, points)
        save(visualize.plot_spread(
            inputs["images"], inputs["points"], inputs["maps"], inputs["point_stride"],
            inputs["map_stride"], masks=inputs["masks"], captions=inputs["captions"],
            title=f"{variant}, seed {config.seeds[0]}: where coarsest-level points land "
                  f"after {network.LEVELS - 1} upsamplings (outline: their object)"),
             "sampling_regions.png")

    total = time.perf_counter() - started
    env = {**environment(), "carafe_reassembly": reassembly, "total_seconds": total}
    heading = (
        f"# CARAFE segmentation benchmark: {data.name}\n\n{data.description}\n\n"
        f"FPN-style network: encoder to stride {2 ** network.LEVELS}, top-down pathway "
        f"with {config.channels} channels merging every level through the upsampler under "
        f"test, head at stride 2, fixed bilinear x2 of the logits. Every variant: same "
        f"initial weights outside its resampling layers, same training images and batch "
        f"order per seed, {config.epochs} epochs x {len(images)} images, batch "
        f"{config.batch_size}, Adam {config.learning_rate} with cosine decay. Seeds: "
        f"{', '.join(map(str, config.seeds))}. Boundary IoU band: {config.boundary_width} "
        f"px. Keras {keras.__version__} on {env['backend']} "
        f"{env.get('backend_version', '')}, {os.cpu_count()} CPU core(s); CARAFE "
        f"reassembly: {reassembly or 'not run'}; {total:.0f} s in all.\n")
    sections = [heading, table, "Per-class IoU (%, mean over seeds):",
                report.class_table(stats, data.class_names),
                "Every run (mIoU / boundary IoU, %):",
                report.seed_table(runs, config.variants, config.seeds)]
    shares_text = report.share_table(stats)
    if shares_text:
        sections += ["Share of a coarsest-level point's composed weight that lands on its "
                     "own object (points whose cell centre lies on an object; all held-out "
                     "images):", shares_text]
    sections.append(text)
    paths = {kind: os.path.join(config.output, f"results.{kind}")
             for kind in ("md", "csv", "json")}
    with open(paths["md"], "w") as f:
        f.write("\n\n".join(sections) + "\n")
    report.write_csv(runs, config.variants, config.seeds, data.class_names, paths["csv"])
    report.write_json({
        "config": dataclasses.asdict(config), "environment": env,
        "dataset": {"name": data.name, "description": data.description,
                    "class_names": data.class_names,
                    "test_images": int(len(data.test_images))},
        "costs": costs, "stats": stats,
        "runs": [{"variant": v, "seed": s, **{k: x for k, x in r.items()
                                              if not k.startswith("_")}}
                 for (v, s), r in runs.items()],
        "summary": text}, paths["json"])
    files += list(paths.values())
    return {"stats": stats, "runs": runs, "table": table, "summary": text, "files": files,
            "seconds": total, "data": data}


def config_summary(config):
    """The settings of `config` in one line, for the log."""
    return ", ".join(f"{f.name}={getattr(config, f.name)!r}"
                     for f in dataclasses.fields(config))

"""`python -m keras_carafe segment`: upsamplers compared where CARAFE is meant to work.

An FPN-style segmentation network is trained once per variant and seed:
its top-down pathway upsamples with nearest, bilinear, transposed
convolution, pixel shuffle or CARAFE, and a CARAFE++ variant also
downsamples its encoder with `CARAFEDownsample`. Everything else (initial
weights, training images, batch order, schedule) is the same within a seed.
Held-out mIoU, per-class IoU and boundary IoU are reported with 95%
intervals over seeds and paired differences from bilinear, with each
variant's parameters, FLOPs and training time, and the composed reassembly
weights of coarse points (where their content lands) for CARAFE against
bilinear. Data: Fashion-MNIST scenes, slices of a brain MRI with its atlas,
or any NIfTI image and label volume pair. Needs the `segment` extra:
`pip install keras-carafe[segment]`.

This module holds only the options; `run` imports the training code.
"""

import argparse
import dataclasses
import os
import sys
import time

from keras_carafe.segment.config import (DEFAULT, QUICK, REGION_SETS, IMPLEMENTATIONS,
                                         VARIANTS, SegmentConfig)

__all__ = ["DEFAULT", "QUICK", "VARIANTS", "SegmentConfig", "add_arguments",
           "config_from_args", "run"]


def _variant_list(text):
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in VARIANTS]
    if unknown or not names:
        # ArgumentTypeError, unlike ValueError, keeps this message in argparse's error.
        raise argparse.ArgumentTypeError(
            f"unknown upsampler(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"choose from {','.join(VARIANTS)}")
    return names


def _seed_list(text):
    try:
        seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        seeds = ()
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(
            f"expected distinct integers >= 0 separated by commas (e.g. 0,1,2), got {text!r}")
    return seeds


def _pair(kind):
    def parse(text):
        try:
            low, high = (kind(part) for part in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected two numbers LOW,HIGH, got {text!r}") from None
        return low, high
    return parse


def add_arguments(parser):
    """Adds the benchmark's options to an `argparse` parser."""
    d, q = DEFAULT, QUICK

    def both(field):
        default, quick = (getattr(preset, field) for preset in (d, q))
        shown = (lambda v: ",".join(map(str, v)) if isinstance(v, tuple) else v)
        return (f"default {shown(default)}"
                + ("" if quick == default else f"; --quick: {shown(quick)}"))

    parser.description = (
        "Train an FPN-style segmentation network once per upsampler and seed (same initial "
        "weights outside the upsampler, same images, batch order and schedule), score each "
        "on held-out images (mIoU, per-class IoU, boundary IoU; 95%% intervals over seeds, "
        "differences paired by seed against bilinear), measure where CARAFE's composed "
        "kernels send the content of coarse points, and write tables (results.md/.csv/"
        ".json), figures and models to the output folder.")
    parser.add_argument(
        "--quick", action="store_true",
        help="one seed and a smaller budget: checks the pipeline end to end in under two "
             "minutes on two CPU cores (no intervals, so no claims)")
    parser.add_argument(
        "--dataset", metavar="NAME",
        help="fashion (Fashion-MNIST garments pasted on scikit-image textures), brain "
             "(slices of the Colin27 MRI with the AAL atlas, Debian package mricron-data), "
             "or nifti:IMAGE,LABELS (your own image and integer label volume on one grid) "
             f"({both('dataset')})")
    parser.add_argument("--upsamplers", dest="variants", type=_variant_list, metavar="NAMES",
                        help="comma-separated variants, from " + ",".join(VARIANTS)
                             + " (carafe++: CARAFE upsampling and CARAFEDownsample in the "
                               "encoder) (default: all)")
    parser.add_argument("--seeds", type=_seed_list, metavar="S,S,...",
                        help=f"seeds; each fixes training images, initial weights and batch "
                             f"order ({both('seeds')})")
    parser.add_argument("--epochs", type=int, metavar="N", help=f"epochs ({both('epochs')})")
    parser.add_argument("--train-images", type=int, metavar="N",
                        help=f"training images per seed ({both('train_images')})")
    parser.add_argument("--test-images", type=int, metavar="N",
                        help=f"held-out scenes, fashion only; volumes are scored on every "
                             f"held-out slice ({both('test_images')})")
    parser.add_argument("--image-size", type=int, metavar="PX",
                        help=f"side of the scenes and of the training crops of slices, a "
                             f"multiple of 16 ({both('image_size')})")
    parser.add_argument("--garments", type=_pair(int), metavar="LOW,HIGH",
                        help=f"garments per scene ({both('garments')})")
    parser.add_argument("--garment-scale", type=_pair(float), metavar="LOW,HIGH",
                        help=f"scale factors of the 28-pixel garments ({both('garment_scale')})")
    parser.add_argument("--batch-size", type=int, metavar="N",
                        help=f"images per step ({both('batch_size')})")
    parser.add_argument("--channels", type=int, metavar="N",
                        help=f"channels of the top-down pathway ({both('channels')})")
    parser.add_argument("--learning-rate", type=float, metavar="LR",
                        help=f"initial Adam learning rate, cosine-decayed "
                             f"({both('learning_rate')})")
    parser.add_argument("--boundary-width", type=int, metavar="PX",
                        help=f"band width of the boundary IoU ({both('boundary_width')})")
    parser.add_argument("--regions", choices=REGION_SETS,
                        help=f"brain: AAL regions merged into lobes, or all 116 "
                             f"({both('regions')})")
    parser.add_argument("--slice-axis", type=int, choices=(0, 1, 2),
                        help=f"volumes: slice axis in RAS orientation, 0 sagittal, 1 coronal, "
                             f"2 axial ({both('slice_axis')})")
    parser.add_argument("--test-slabs", type=int, metavar="N",
                        help=f"volumes: held-out slabs ({both('test_slabs')})")
    parser.add_argument("--slab-thickness", type=int, metavar="N",
                        help=f"volumes: slices per held-out slab ({both('slab_thickness')})")
    parser.add_argument("--guard", type=int, metavar="N",
                        help=f"volumes: slices left out on each side of a held-out slab "
                             f"({both('guard')})")
    parser.add_argument("--implementation", choices=IMPLEMENTATIONS,
                        help=f"CARAFE's reassembly; fallback needs TensorFlow "
                             f"({both('implementation')})")
    parser.add_argument("--output", metavar="DIR",
                        help=f"folder for tables, figures and models ({both('output')})")
    parser.add_argument("--no-save-models", dest="save_models", action="store_false",
                        default=None, help="do not write the trained models (.keras)")
    parser.add_argument("--no-kernel-maps", dest="kernel_maps", action="store_false",
                        default=None,
                        help="do not write per-epoch kernel maps of the first CARAFE run "
                             "(PNG, and TensorBoard where TensorFlow is installed)")
    parser.add_argument("--verbose", type=int, choices=(0, 1),
                        help=f"0: one line per run, 1: one line per epoch ({both('verbose')})")
    return parser


def config_from_args(args):
    """The `SegmentConfig` for parsed arguments: the preset, overridden by given options."""
    preset = QUICK if args.quick else DEFAULT
    overrides = {field.name: getattr(args, field.name) for field in dataclasses.fields(preset)
                 if getattr(args, field.name, None) is not None}
    return dataclasses.replace(preset, **overrides)


def _as_option(message):
    """A `SegmentConfig` message that starts with a field name, with the option's name instead."""
    field = message.split(" ", 1)[0]
    if field in {f.name for f in dataclasses.fields(SegmentConfig)}:
        option = "--upsamplers" if field == "variants" else "--" + field.replace("_", "-")
        return option + message[len(field):]
    return message


def run(args):
    """Runs the benchmark for parsed arguments; returns the exit code.

    Settings and data are checked before any training: a bad option, missing
    data or an unusable volume pair ends the command with exit code 2 and a
    message naming the option.
    """
    started = time.perf_counter()
    try:
        config = config_from_args(args)
    except ValueError as err:
        print(f"segment: {_as_option(str(err))}", file=sys.stderr)
        return 2
    # TensorFlow reads this on import: keep its C++ start-up messages out of the log.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from keras_carafe.segment import experiment

    print(f"settings: {experiment.config_summary(config)}", flush=True)
    try:
        results = experiment.run_experiment(config, log=lambda line: print(line, flush=True))
    except experiment.InputError as err:
        print(f"segment: {err}", file=sys.stderr)
        return 2
    print("\n" + results["table"] + "\n\n" + results["summary"])
    print("\nwrote:\n  " + "\n  ".join(results["files"]))
    print(f"total time {time.perf_counter() - started:.0f} s")
    return 0

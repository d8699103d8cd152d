"""`python -m keras_carafe demo`: the upsamplers compared on real super-resolution.

One small network is trained once per upsampler (nearest, bilinear,
transposed convolution, pixel shuffle, CARAFE) to enlarge grey-scale
photographs shipped with scikit-image, under the same budget and seed, and
is scored on images it never saw. The table and figures go to an output
folder. Needs the `demo` extra: `pip install keras-carafe[demo]`.

This module holds only the options and their presets; `run` imports the
training code. The pieces are reusable on their own (the notebooks use
them): `experiment.prepare_data`, `experiment.train_upsampler`,
`experiment.carafe_kernels`, `models`, `result_figures.pick_pixels`.
"""

import argparse
import dataclasses
import os
import sys
import time

from keras_carafe.demo.config import DEFAULT, IMPLEMENTATIONS, QUICK, UPSAMPLERS, DemoConfig

__all__ = ["DEFAULT", "QUICK", "UPSAMPLERS", "DemoConfig", "add_arguments", "config_from_args",
           "run"]


def _upsampler_list(text):
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in UPSAMPLERS]
    if unknown or not names:
        # ArgumentTypeError, unlike ValueError, keeps this message in argparse's error.
        raise argparse.ArgumentTypeError(
            f"unknown upsampler(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {','.join(UPSAMPLERS)}")
    return names


def add_arguments(parser):
    """Adds the demo's options to an `argparse` parser."""
    d, q = DEFAULT, QUICK

    def both(field):
        default, quick = (getattr(preset, field) for preset in (d, q))
        shown = {None: "whole"}
        return (f"default {shown.get(default, default)}"
                + ("" if quick == default else f"; --quick: {shown.get(quick, quick)}"))

    parser.description = (
        "Train one small super-resolution network per upsampler on scikit-image "
        "photographs (same backbone, budget and seed), score each on held-out images "
        "(PSNR, SSIM, PSNR near edges) against bicubic interpolation, and write a table "
        "(results.md/.csv/.json), figures and the trained models to the output folder.")
    parser.add_argument(
        "--quick", action="store_true",
        help="a smaller run (fewer patches and epochs, held-out images cropped to "
             f"{q.eval_size}px) that finishes in under two minutes on two CPU cores")
    parser.add_argument("--upsamplers", type=_upsampler_list, metavar="NAMES",
                        help="comma-separated upsamplers to compare, from "
                             f"{','.join(UPSAMPLERS)} (default: all)")
    parser.add_argument("--scale", type=int, choices=(2, 4),
                        help=f"upsampling factor ({both('scale')})")
    parser.add_argument("--epochs", type=int, metavar="N",
                        help=f"training epochs per upsampler ({both('epochs')})")
    parser.add_argument("--patches", type=int, metavar="N",
                        help=f"training patches drawn from the training images "
                             f"({both('patches')})")
    parser.add_argument("--patch-size", type=int, metavar="PX",
                        help=f"side of a high-resolution training patch, a multiple of "
                             f"--scale ({both('patch_size')})")
    parser.add_argument("--batch-size", type=int, metavar="N",
                        help=f"patches per training step ({both('batch_size')})")
    parser.add_argument("--channels", type=int, metavar="N",
                        help=f"feature channels of the network ({both('channels')})")
    parser.add_argument("--depth", type=int, metavar="N",
                        help=f"convolutions before the upsampler ({both('depth')})")
    parser.add_argument("--learning-rate", type=float, metavar="LR",
                        help=f"initial Adam learning rate, cosine-decayed "
                             f"({both('learning_rate')})")
    parser.add_argument("--seed", type=int,
                        help=f"seed of patches, initial weights and batch order "
                             f"({both('seed')})")
    parser.add_argument("--implementation", choices=IMPLEMENTATIONS,
                        help="CARAFE's reassembly: the compiled op, the pure-TF fallback, "
                             f"or auto (the op where it works) ({both('implementation')})")
    parser.add_argument("--eval-size", type=int, metavar="PX",
                        help="center-crop held-out images to at most PX pixels per side "
                             f"(at least 32), 0 for whole images ({both('eval_size')})")
    parser.add_argument("--output", metavar="DIR",
                        help=f"folder for the table, figures and models ({both('output')})")
    parser.add_argument("--no-save-models", dest="save_models", action="store_false",
                        default=None, help="do not write the trained models (.keras)")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2),
                        help="Keras training output: 0 silent, 1 progress bars, 2 one line "
                             f"per epoch ({both('verbose')})")
    return parser


def config_from_args(args):
    """The `DemoConfig` for parsed arguments: the preset, overridden by given options."""
    preset = QUICK if args.quick else DEFAULT
    overrides = {field.name: getattr(args, field.name) for field in dataclasses.fields(preset)
                 if getattr(args, field.name, None) is not None}
    if overrides.get("eval_size") == 0:
        overrides["eval_size"] = None
    return dataclasses.replace(preset, **overrides)


def run(args):
    """Runs the comparison for parsed arguments; returns the exit code."""
    started = time.perf_counter()
    try:
        config = config_from_args(args)
    except ValueError as err:
        print(f"demo: {err}", file=sys.stderr)
        return 2
    # TensorFlow reads this on import: keep its C++ start-up messages out of the log.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from keras_carafe.demo import experiment

    print(f"settings: {experiment.config_summary(config)}", flush=True)
    results = experiment.run_experiment(config, log=lambda line: print(line, flush=True))
    print("\n" + results["table"] + "\n\n" + results["summary"])
    print("\nwrote:\n  " + "\n  ".join(results["files"]))
    print(f"total time {time.perf_counter() - started:.0f} s")
    return 0

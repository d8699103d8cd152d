"""The benchmark's tables (Markdown, CSV, JSON) and the summary that reads them.

Scores are per seed; everything quoted is a mean over seeds with a 95%
Student t interval, and each variant's paired difference from the
baseline (bilinear) seed by seed (`statistics`). The summary calls a
difference a win or a loss only where its paired interval excludes zero.
"""

import csv
import dataclasses
import json
import math

import numpy as np

from keras_carafe.segment.config import BASELINE
from keras_carafe.segment.statistics import paired_difference, t_interval

METRICS = (("miou", "mIoU"), ("boundary_iou", "boundary IoU"))


def summarize(runs, variants, seeds):
    """Intervals of every variant, and paired differences from the baseline.

    Args:
        runs: dict from `(variant, seed)` to a run's record (with "miou",
            "boundary_iou", "class_iou", "train_seconds" and, for CARAFE
            variants, "share_learned" / "share_bilinear").
        variants, seeds: the run's variants and seeds, in order.

    Returns:
        dict from variant to a dict of `Interval`s: "miou", "boundary_iou",
        "train_seconds", "class_iou" (a list), "share_learned",
        "share_bilinear", "share_gain" (where measured), and "miou_vs_baseline",
        "boundary_iou_vs_baseline" (where the baseline ran).
    """
    stats = {}
    for variant in variants:
        records = [runs[variant, seed] for seed in seeds]
        entry = {key: t_interval([r[key] for r in records])
                 for key in ("miou", "boundary_iou", "train_seconds")}
        classes = np.array([r["class_iou"] for r in records], np.float64)
        entry["class_iou"] = [t_interval(column) if np.all(np.isfinite(column)) else None
                              for column in classes.T]
        if "share_learned" in records[0]:
            learned = [r["share_learned"] for r in records]
            fixed = [r["share_bilinear"] for r in records]
            entry["share_learned"] = t_interval(learned)
            entry["share_bilinear"] = t_interval(fixed)
            entry["share_gain"] = paired_difference(learned, fixed)
            entry["kept_learned"] = t_interval([r["kept_learned"] for r in records])
            entry["share_initial"] = t_interval([r["share_initial"] for r in records])
        if BASELINE in variants:
            for key, _ in METRICS:
                entry[f"{key}_vs_baseline"] = paired_difference(
                    [r[key] for r in records], [runs[BASELINE, seed][key] for seed in seeds])
        stats[variant] = entry
    return stats


def _with_range(difference, scale, digits):
    """"+mean [low, high]", or "+mean" alone where there is no interval."""
    text = difference.format(scale, digits, signed=True).split(" ±")[0]
    if difference.half_width is None:
        return text
    return f"{text} {difference.format_range(scale, digits)}"


def main_table(stats, costs, image_shape):
    """One line per variant: costs, time, scores and paired differences (in IoU points)."""
    header = ["variant", "resampling params", "model params",
              f"resampling MFLOPs ({image_shape[0]}x{image_shape[1]} image)",
              "train time (s)", "mIoU (%)", "boundary IoU (%)", "Δ mIoU vs bilinear",
              "Δ boundary IoU vs bilinear"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant, entry in stats.items():
        cost = costs[variant]
        differences = []
        for key, _ in METRICS:
            diff = entry.get(f"{key}_vs_baseline")
            if diff is None or variant == BASELINE:
                differences.append("-")
            else:
                differences.append(_with_range(diff, 100, 2))
        lines.append("| " + " | ".join([
            variant, f"{cost['params']:,}", f"{cost['model_params']:,}",
            f"{cost['flops'] / 1e6:,.2f}", entry["train_seconds"].format(1, 1),
            entry["miou"].format(100, 2), entry["boundary_iou"].format(100, 2),
            *differences]) + " |")
    return "\n".join(lines)


def class_table(stats, class_names):
    """Per-class IoU (%, mean over seeds) of every variant."""
    lines = ["| variant | " + " | ".join(class_names) + " |",
             "|" + "---|" * (len(class_names) + 1)]
    for variant, entry in stats.items():
        cells = ["-" if v is None else f"{v.mean * 100:.1f}" for v in entry["class_iou"]]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_table(runs, variants, seeds):
    """The raw scores: mIoU and boundary IoU (%) of every run."""
    lines = ["| variant | " + " | ".join(f"seed {s} mIoU / bIoU" for s in seeds) + " |",
             "|" + "---|" * (len(seeds) + 1)]
    for variant in variants:
        cells = [f"{runs[variant, s]['miou'] * 100:.2f} / "
                 f"{runs[variant, s]['boundary_iou'] * 100:.2f}" for s in seeds]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def share_table(stats):
    """The share of composed weight on the point's own object, CARAFE against bilinear."""
    rows = [(v, e) for v, e in stats.items() if "share_learned" in e]
    if not rows:
        return ""
    lines = ["| variant | on own object, learned kernels (%) | same kernels before training "
             "(%) | bilinear (%) | learned minus bilinear (points) | finest level's weight on "
             "image pixels, learned kernels (%) |", "|---|---|---|---|---|---|"]
    for variant, entry in rows:
        gain = entry["share_gain"]
        lines.append(f"| {variant} | {entry['share_learned'].format(100, 1)} | "
                     f"{entry['share_initial'].format(100, 1)} | "
                     f"{entry['share_bilinear'].format(100, 1)} | "
                     f"{_with_range(gain, 100, 1)} | {entry['kept_learned'].format(100, 1)} |")
    return "\n".join(lines)


def _verdicts(stats, key, label):
    with_interval = {v: e[f"{key}_vs_baseline"] for v, e in stats.items()
                     if v != BASELINE and f"{key}_vs_baseline" in e}
    if not with_interval:
        return f"{label}: no baseline run, so no paired comparison."
    if all(d.half_width is None for d in with_interval.values()):
        return (f"{label}: one seed only, so no interval and no claim "
                f"(differences from bilinear: " + ", ".join(
                    f"{v} {d.mean * 100:+.2f}" for v, d in with_interval.items()) + ").")
    wins = [v for v, d in with_interval.items() if d.excludes_zero() and d.mean > 0]
    losses = [v for v, d in with_interval.items() if d.excludes_zero() and d.mean < 0]
    def listed(names):
        return ", ".join(f"{v} ({with_interval[v].format(100, 2, signed=True)}, 95% "
                         f"interval {with_interval[v].format_range(100, 2)})" for v in names)
    parts = []
    if wins:
        parts.append(f"better than bilinear: {listed(wins)}")
    if losses:
        parts.append(f"worse than bilinear: {listed(losses)}")
    rest = [v for v in with_interval if v not in wins + losses]
    if rest:
        parts.append("no measurable difference from bilinear (paired interval contains "
                     "zero): " + ", ".join(rest))
    return f"{label}: " + "; ".join(parts) + "."


def summary(stats, seeds):
    """The findings in words: wins and losses only where the paired interval excludes 0."""
    lines = [f"{len(seeds)} seed(s); means with 95% t intervals over seeds, differences "
             "paired by seed, in IoU points."]
    for key, label in METRICS:
        lines.append(_verdicts(stats, key, label))
    for variant, entry in stats.items():
        if "share_learned" not in entry:
            continue
        gain = entry["share_gain"]
        verdict = ("too few seeds for an interval" if gain.half_width is None else
                   "content-awareness shows: more of it lands on the object"
                   if gain.excludes_zero() and gain.mean > 0 else
                   "less of it lands on the object than with bilinear"
                   if gain.excludes_zero() else "no measurable difference from bilinear")
        lines.append(
            f"Sampling regions ({variant}): of a coarsest-level point's composed weight, "
            f"{entry['share_learned'].mean:.1%} lands on its own object with the learned "
            f"kernels ({entry['share_initial'].mean:.1%} with the same kernels before "
            f"training) against {entry['share_bilinear'].mean:.1%} with bilinear upsampling "
            f"({_with_range(gain, 100, 1)} points): {verdict}. The learned kernels keep "
            f"{entry['kept_learned'].mean:.1%} of the finest level's composed weight on image "
            f"pixels (bilinear: all of it); the rest reads the reassembly's zero padding.")
    return "\n".join(lines)


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "half_width"):
        return {"mean": value.mean, "half_width": value.half_width, "n": value.n,
                "low": value.low, "high": value.high}
    return value


def write_csv(runs, variants, seeds, class_names, path):
    """One line per run: the variant, seed, scores, time and per-class IoUs."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["variant", "seed", "miou", "boundary_iou", "pixel_accuracy",
                         "train_seconds", "share_learned", "share_initial", "share_bilinear",
                         "kept_learned"]
                        + [f"iou_{name}" for name in class_names])
        for variant in variants:
            for seed in seeds:
                run = runs[variant, seed]
                writer.writerow([variant, seed, run["miou"], run["boundary_iou"],
                                 run["pixel_accuracy"], run["train_seconds"],
                                 run.get("share_learned", ""), run.get("share_initial", ""),
                                 run.get("share_bilinear", ""), run.get("kept_learned", "")]
                                + run["class_iou"])


def write_json(payload, path):
    """Everything, with intervals as {mean, half_width, n, low, high} and NaN as null."""
    with open(path, "w") as f:
        json.dump(_plain(payload), f, indent=2)


def config_dict(config):
    return dataclasses.asdict(config)

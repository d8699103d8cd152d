"""The comparison table (Markdown, CSV, JSON) and its one-paragraph summary."""

import csv
import dataclasses
import json
import math

BASELINE = "bicubic (no learning)"

# (key, Markdown header, format) of the table's columns.
_COLUMNS = (
    ("upsampler", "upsampler", "{}"),
    ("upsampler_params", "upsampler params", "{:,}"),
    ("model_params", "model params", "{:,}"),
    ("upsampler_mflops", "upsampler MFLOPs", "{:,.1f}"),
    ("train_seconds", "train time (s)", "{:.1f}"),
    ("psnr", "PSNR (dB)", "{:.2f}"),
    ("ssim", "SSIM", "{:.4f}"),
    ("edge_psnr", "edge PSNR (dB)", "{:.2f}"),
)


def _cell(value, fmt):
    if value is None:
        return "-"
    return fmt.format(value)


def best_row(rows, metric="psnr"):
    """The row with the highest `metric` among the learned upsamplers."""
    learned = [row for row in rows if row["upsampler"] != BASELINE]
    return max(learned, key=lambda row: row[metric])


def markdown_table(rows, flops_size):
    """The main table, plus one with PSNR per held-out image.

    Args:
        rows: dicts with the keys of the columns and "per_image" (a dict
            from image name to its metrics).
        flops_size: `(height, width)` of the output the FLOPs refer to.
    """
    header = [title for _, title, _ in _COLUMNS]
    header[3] = f"upsampler MFLOPs ({flops_size[0]}x{flops_size[1]} output)"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key), fmt) for key, _, fmt in _COLUMNS)
                     + " |")
    images = list(rows[0]["per_image"])
    lines += ["", "PSNR (dB) per held-out image:", "",
              "| upsampler | " + " | ".join(images) + " |",
              "|" + "---|" * (len(images) + 1)]
    for row in rows:
        lines.append(f"| {row['upsampler']} | " + " | ".join(
            f"{row['per_image'][image]['psnr']:.2f}" for image in images) + " |")
    return "\n".join(lines)


def summary(rows):
    """Which learned upsampler did best on the held-out images, in words."""
    best = best_row(rows)
    learned = sorted((row for row in rows if row["upsampler"] != BASELINE),
                     key=lambda row: -row["psnr"])
    text = (f"Best held-out PSNR among the learned upsamplers: {best['upsampler']} "
            f"({best['psnr']:.2f} dB, SSIM {best['ssim']:.4f}). Ranking: "
            + ", ".join(f"{row['upsampler']} {row['psnr']:.2f}" for row in learned) + " dB.")
    baseline = [row for row in rows if row["upsampler"] == BASELINE]
    if baseline:
        gain = best["psnr"] - baseline[0]["psnr"]
        text += (f" Bicubic interpolation (no learning) scores {baseline[0]['psnr']:.2f} dB "
                 f"({'+' if gain >= 0 else ''}{gain:.2f} dB for the best).")
    best_ssim = best_row(rows, "ssim")
    if best_ssim is not best:
        text += f" Best SSIM: {best_ssim['upsampler']} ({best_ssim['ssim']:.4f})."
    best_edges = best_row(rows, "edge_psnr")
    text += (f" Best PSNR near edges: {best_edges['upsampler']} "
             f"({best_edges['edge_psnr']:.2f} dB).")
    return text


def write_csv(rows, path):
    """One line per row; per-image PSNRs as extra columns `psnr_<image>`."""
    images = list(rows[0]["per_image"])
    keys = [key for key, _, _ in _COLUMNS]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(keys + [f"psnr_{image}" for image in images])
        for row in rows:
            writer.writerow([row.get(key, "") if row.get(key) is not None else ""
                             for key in keys]
                            + [row["per_image"][image]["psnr"] for image in images])


def write_json(rows, config, environment, path):
    """Everything: the configuration, where it ran, and every row with its losses."""
    def finite(value):
        # JSON has no infinity; a perfect reconstruction would give one.
        return None if isinstance(value, float) and not math.isfinite(value) else value

    payload = {
        "config": dataclasses.asdict(config),
        "environment": environment,
        "best_psnr": best_row(rows)["upsampler"],
        "rows": [{k: finite(v) for k, v in row.items()} for row in rows],
    }
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)

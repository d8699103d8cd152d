"""The benchmark's figures: predictions of every variant, and the sampling regions."""

import numpy as np
from matplotlib import colormaps

from keras_carafe import visualize


def label_colours(classes):
    """RGB colours in [0, 1], `(classes, 3)`: black background, distinct hues after it."""
    count = classes - 1
    if count <= 20:
        # A listed colour map called with integers returns its colours in order.
        hues = colormaps["tab20"](np.arange(count))[:, :3]
    else:
        hues = colormaps["gist_ncar"](np.linspace(0.05, 0.95, count))[:, :3]
    return np.vstack([np.zeros((1, 3)), hues])


def coloured(labels, classes):
    """A label map as an RGB image."""
    return label_colours(classes)[np.asarray(labels, np.int64)]


def prediction_figure(images, labels, predictions, classes, valid=None):
    """Held-out images, their labels and every variant's prediction (first seed).

    Args:
        images: `(n, H, W)` grey-scale images.
        labels: `(n, H, W)` class indices.
        predictions: dict from variant to `(n, H, W)` predicted classes.
        classes: number of classes.
        valid: optional `(n, H, W)` boolean; unscored pixels are drawn grey.

    Returns:
        Figure with one row per image.
    """
    rows, captions = [], []
    for i in range(len(images)):
        def shown(label_map):
            rgb = coloured(label_map, classes)
            if valid is not None:
                rgb[~valid[i]] = 0.5
            return rgb

        rows.append({"image": images[i], "labels": shown(labels[i]),
                     **{variant: shown(p[i]) for variant, p in predictions.items()}})
        captions.append({variant: f"{np.mean(p[i] == labels[i]):.0%} pixels"
                         for variant, p in predictions.items()})
    return visualize.plot_image_grid(rows, captions, title="held-out images: labels and "
                                     "predictions (first seed)", panel_size=1.6)


def pick_figure_points(shares, count=4, seed=0):
    """Points for the sampling-region figure: one random foreground point per image.

    The points are drawn at random (from `seed`) among the counted points of
    the first `count` images that have any, so the figure shows typical
    points, not the best ones.
    """
    rng = np.random.default_rng(seed)
    by_image = {}
    for point in shares["points"]:
        by_image.setdefault(point[0], []).append(point)
    chosen = []
    for index in sorted(by_image)[:count]:
        options = by_image[index]
        chosen.append(tuple(options[rng.integers(len(options))]))
    return chosen

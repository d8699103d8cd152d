"""Summaries of attribution maps (saliency, class activation maps)."""

import numpy as np


def share_inside(attribution, mask):
    """The fraction of an attribution map's total magnitude that falls inside `mask`.

    Magnitudes are used because gradient-based maps have both signs; a map
    that is zero everywhere has no share anywhere (0).

    Args:
        attribution: array `(H, W)`.
        mask: boolean array `(H, W)`: the region that holds the evidence.

    Returns:
        float in [0, 1]. A map spread evenly over the image scores the
        mask's area fraction.
    """
    attribution = np.abs(np.asarray(attribution, np.float64))
    mask = np.asarray(mask)
    if attribution.shape != mask.shape:
        raise ValueError(f"`attribution` {attribution.shape} and `mask` {mask.shape} "
                         "must have the same shape")
    if mask.dtype != bool:
        raise ValueError(f"`mask` must be a boolean array, got dtype {mask.dtype}")
    total = attribution.sum()
    return float(attribution[mask].sum() / total) if total > 0 else 0.0

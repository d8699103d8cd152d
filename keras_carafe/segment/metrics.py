"""Segmentation scores over a whole held-out set: per-class IoU and boundary IoU.

Both are accumulated over all images before dividing (intersection and
union summed per class), as is usual for semantic segmentation, so that
small objects weigh by their pixels and not by their image. A class with
an empty union (in neither the labels nor the predictions) has no score and
is left out of the mean.

Boundary IoU (Cheng et al., CVPR 2021) compares only the inner bands of the
masks: the pixels of a class's mask within `width` pixels (Euclidean,
centre to centre) of a pixel outside it. The image edge is not a boundary:
a mask that reaches it has no band there.
"""

import numpy as np
import scipy.ndimage


def confusion(labels, predictions, classes, valid=None):
    """The `(classes, classes)` confusion counts: `[true class, predicted class]`."""
    labels, predictions = np.asarray(labels, np.int64), np.asarray(predictions, np.int64)
    if labels.shape != predictions.shape:
        raise ValueError(f"`labels` {labels.shape} and `predictions` {predictions.shape} "
                         "must have the same shape")
    if valid is not None:
        labels, predictions = labels[valid], predictions[valid]
    return np.bincount((labels * classes + predictions).ravel(),
                       minlength=classes * classes).reshape(classes, classes)


def iou_from_confusion(counts):
    """Per-class IoU `TP / (TP + FP + FN)`; NaN where the class has an empty union."""
    counts = np.asarray(counts, np.float64)
    true_positive = np.diag(counts)
    union = counts.sum(axis=0) + counts.sum(axis=1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, true_positive / union, np.nan)


def inner_band(mask, width):
    """The pixels of `mask` within `width` pixels of a pixel outside it.

    Args:
        mask: boolean `(H, W)` array.
        width: the band width `d` in pixels (>= 1).

    Returns:
        Boolean `(H, W)` array, a subset of `mask`.
    """
    mask = np.asarray(mask, bool)
    # Edge padding continues the mask past the image edge, which therefore
    # never counts as a boundary.
    padded = np.pad(mask, 1, mode="edge")
    distance = scipy.ndimage.distance_transform_edt(padded)[1:-1, 1:-1]
    return mask & (distance <= width)


def boundary_counts(labels, predictions, classes, width, valid=None):
    """Per-class intersections and unions of the boundary bands of one image.

    Args:
        labels, predictions: integer `(H, W)` arrays.
        classes: number of classes.
        width: band width in pixels.
        valid: optional boolean `(H, W)`: only these pixels are counted.

    Returns:
        `(intersection, union)`: two int arrays `(classes,)`.
    """
    intersection = np.zeros(classes, np.int64)
    union = np.zeros(classes, np.int64)
    for c in np.union1d(np.unique(labels), np.unique(predictions)):
        true_band = inner_band(labels == c, width)
        predicted_band = inner_band(predictions == c, width)
        if valid is not None:
            true_band, predicted_band = true_band & valid, predicted_band & valid
        intersection[c] = np.count_nonzero(true_band & predicted_band)
        union[c] = np.count_nonzero(true_band | predicted_band)
    return intersection, union


def score(labels, predictions, classes, boundary_width, valid=None):
    """mIoU, per-class IoU and boundary IoU over a set of images.

    Args:
        labels, predictions: integer arrays `(n, H, W)`.
        classes: number of classes (background included).
        boundary_width: the boundary IoU's band width in pixels.
        valid: optional boolean `(n, H, W)`: the pixels that count.

    Returns:
        dict with "miou" and "boundary_iou" (means over the classes that
        have a score), "class_iou" and "class_boundary_iou" (lists of
        `classes` floats, NaN where a class has no score) and "pixel_accuracy".
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    counts = confusion(labels, predictions, classes, valid)
    class_iou = iou_from_confusion(counts)
    intersection = np.zeros(classes, np.int64)
    union = np.zeros(classes, np.int64)
    for i in range(len(labels)):
        inter, uni = boundary_counts(labels[i], predictions[i], classes, boundary_width,
                                     None if valid is None else valid[i])
        intersection += inter
        union += uni
    with np.errstate(invalid="ignore", divide="ignore"):
        class_boundary = np.where(union > 0, intersection / np.maximum(union, 1), np.nan)
    return {
        "miou": float(np.nanmean(class_iou)),
        "boundary_iou": float(np.nanmean(class_boundary)),
        "class_iou": [float(v) for v in class_iou],
        "class_boundary_iou": [float(v) for v in class_boundary],
        "pixel_accuracy": float(np.trace(counts) / max(counts.sum(), 1)),
    }

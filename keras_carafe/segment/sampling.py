"""Where the content of coarse points lands: the paper's sampling-region analysis.

For a point on the coarsest level of the top-down pathway, the composed
reassembly weights of all upsampling stages say how much of its value every
pixel of the finest level receives (`keras_carafe.visualize.spread_kernels`).
Content-aware upsampling should send it onto the point's own object; a
fixed upsampler spreads it the same way everywhere. The share of that weight
which lands on the point's own object measures which.

A point's object is the connected region of its class (in the labels, at
input resolution) that holds the centre pixel of the point's cell; only
points whose centre pixel lies on a non-background class are counted. A
finest-level pixel covers `map_stride x map_stride` input pixels and counts
for the fraction of them that lie on the object.
"""

import numpy as np
import scipy.ndimage

from keras_carafe.visualize import (bilinear_kernel_map, layer_kernels, spread_kernels,
                                    spread_weight_on)
from keras_carafe.visualize.callback import upsampling_chain


def centre_pixel(point, stride):
    """The input pixel at the centre of coarse point `point`'s `stride x stride` cell."""
    return tuple(int(p) * stride + stride // 2 for p in point)


def object_mask(labels, pixel):
    """The connected region (4-neighbourhood) of `labels[pixel]`'s class that holds `pixel`."""
    regions, _ = scipy.ndimage.label(labels == labels[pixel])
    return regions == regions[pixel]


def share_on_mask(spread, mask, map_stride):
    """The fraction of a spread map's weight that lands on `mask`.

    Args:
        spread: `(h, w)` non-negative weights on a grid of stride `map_stride`.
        mask: boolean `(h * map_stride, w * map_stride)` at input resolution.
        map_stride: int.

    Returns:
        float in [0, 1]; 0 for a map without weight.
    """
    h, w = spread.shape
    s = map_stride
    if mask.shape != (h * s, w * s):
        raise ValueError(f"`mask` {mask.shape} must be `spread` {spread.shape} times "
                         f"{map_stride}")
    covered = mask.reshape(h, s, w, s).mean(axis=(1, 3))
    total = float(spread.sum())
    return float((spread * covered).sum() / total) if total > 0 else 0.0


def foreground_points(labels, stride, valid=None):
    """Coarse points whose cell centre lies on a non-background (non-zero) class."""
    rows, cols = labels.shape[0] // stride, labels.shape[1] // stride
    points = []
    for r in range(rows):
        for c in range(cols):
            pixel = centre_pixel((r, c), stride)
            if labels[pixel] != 0 and (valid is None or valid[pixel]):
                points.append((r, c))
    return points


def _chain_kernels(model, images, batch_size):
    """Kernels of the model's CARAFE chain, coarsest first, per image (group 0)."""
    chain, per_image = None, []
    for start in range(0, len(images), batch_size):
        kernels = layer_kernels(model, images[start:start + batch_size])
        if chain is None:
            chain = upsampling_chain(model, kernels)
            if not chain:
                raise ValueError(f"model {model.name!r} has no chain of CARAFE upsamplers")
        for i in range(len(kernels[chain[0].name])):
            per_image.append([kernels[layer.name][i, :, :, 0] for layer in chain])
    return [layer.scale_factor for layer in chain], per_image


def bilinear_chain(kernels):
    """Keras's bilinear x2 upsampling through the same stages as a chain of learned kernels."""
    return [bilinear_kernel_map(k.shape[0] // 2, k.shape[1] // 2, 2, 3, clamp_border=True)
            for k in kernels]


def object_shares(model, images, labels, valid=None, batch_size=16):
    """The share of each foreground point's composed weight that lands on its own object.

    Args:
        model: a segmentation model whose top-down upsamplers are CARAFE
            layers (the "carafe" and "carafe++" variants).
        images: `(n, H, W, 1)` test images.
        labels: `(n, H, W)` their labels.
        valid: optional boolean `(n, H, W)`: points centred on invalid
            pixels are skipped.
        batch_size: images per kernel computation.

    Returns:
        dict with "learned" and "bilinear" (float arrays, one share per
        point), "points" (list of `(image index, row, col)`), "point_stride"
        and "map_stride" (ints), and "kept_learned" / "kept_bilinear": the
        mean over the finest level's pixels of how much of their composed
        weight falls on image pixels (the rest reads the zero padding of the
        reassembly, which the kernels can use to damp the coarse levels).
    """
    factors, per_image = _chain_kernels(model, images, batch_size)
    height = images.shape[1]
    coarse = (per_image[0][0].shape[0] // factors[0], per_image[0][0].shape[1] // factors[0])
    point_stride = height // coarse[0]
    map_stride = height // per_image[0][-1].shape[0]
    fine = per_image[0][-1].shape[:2]
    learned, fixed, points, kept_learned, kept_fixed = [], [], [], [], []
    for index, kernels in enumerate(per_image):
        image_points = foreground_points(labels[index], point_stride,
                                         None if valid is None else valid[index])
        # One map per object under a counted point, after an all-ones map: pulled back
        # through the chain, they give every coarse point's weight on its object and
        # its total weight at once.
        masks, object_of = [], []
        for point in image_points:
            for i, known in enumerate(masks):
                # Connected regions either coincide or do not meet.
                if known[centre_pixel(point, point_stride)]:
                    object_of.append(i)
                    break
            else:
                object_of.append(len(masks))
                masks.append(object_mask(labels[index], centre_pixel(point, point_stride)))
        covered = [mask.reshape(fine[0], map_stride, fine[1], map_stride).mean(axis=(1, 3))
                   for mask in masks]
        maps = np.stack([np.ones(fine)] + covered)
        for chain, shares, kept in ((kernels, learned, kept_learned),
                                    (bilinear_chain(kernels), fixed, kept_fixed)):
            weights = spread_weight_on(chain, factors, maps)
            # All weight that reaches the finest level, per finest-level pixel.
            kept.append(weights[0].sum() / (fine[0] * fine[1]))
            for point, obj in zip(image_points, object_of):
                total = weights[0][point]
                shares.append(float(weights[1 + obj][point] / total) if total > 0 else 0.0)
        points += [(index, *point) for point in image_points]
    return {"learned": np.array(learned), "bilinear": np.array(fixed), "points": points,
            "point_stride": point_stride, "map_stride": map_stride,
            "kept_learned": float(np.mean(kept_learned)),
            "kept_bilinear": float(np.mean(kept_fixed))}


def figure_inputs(model, images, labels, points):
    """What `visualize.plot_spread` needs to draw chosen points of one model.

    Args:
        model, images, labels: as in `object_shares`.
        points: list of `(image index, row, col)`.

    Returns:
        dict of `plot_spread` arguments ("images", "points", "maps",
        "masks", "point_stride", "map_stride", "captions").
    """
    indices = sorted({i for i, _, _ in points})
    factors, per_image = _chain_kernels(model, images[indices], len(indices))
    by_index = dict(zip(indices, per_image))
    height = images.shape[1]
    point_stride = height // (per_image[0][0].shape[0] // factors[0])
    map_stride = height // per_image[0][-1].shape[0]
    learned, fixed, masks, captions = [], [], [], {"CARAFE": [], "bilinear": []}
    for index, row, col in points:
        kernels = by_index[index]
        learned.append(spread_kernels(kernels, factors, [(row, col)])[0])
        fixed.append(spread_kernels(bilinear_chain(kernels), factors, [(row, col)])[0])
        mask = object_mask(labels[index], centre_pixel((row, col), point_stride))
        masks.append(mask)
        for name, spread in (("CARAFE", learned[-1]), ("bilinear", fixed[-1])):
            captions[name].append(f"{share_on_mask(spread, mask, map_stride):.0%} on object")
    return {"images": [images[i, :, :, 0] for i, _, _ in points],
            "points": [(r, c) for _, r, c in points], "maps": {"CARAFE": learned,
                                                               "bilinear": fixed},
            "masks": masks, "point_stride": point_stride, "map_stride": map_stride,
            "captions": captions}

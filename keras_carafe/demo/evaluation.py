"""Held-out metrics of super-resolved images: PSNR, SSIM and PSNR near edges."""

import numpy as np
import scipy.ndimage
import skimage.feature
import skimage.metrics
import tensorflow as tf


def super_resolve(model, low):
    """Runs an SR model on one `(h, w)` image and clips the result to [0, 1]."""
    prediction = model(tf.constant(low[None, :, :, None]), training=False)
    return np.clip(np.asarray(prediction)[0, :, :, 0], 0.0, 1.0)


def bicubic(low, scale):
    """Bicubic enlargement (Keys kernel, half-pixel centers), clipped to [0, 1]."""
    h, w = low.shape
    enlarged = tf.image.resize(low[None, :, :, None], (h * scale, w * scale), method="bicubic")
    return np.clip(enlarged.numpy()[0, :, :, 0], 0.0, 1.0)


def edge_mask(image, sigma=2.0, width=1):
    """Pixels within `width` of a Canny edge of `image`: where upsampling is hard."""
    edges = skimage.feature.canny(image, sigma=sigma)
    return scipy.ndimage.binary_dilation(edges, iterations=width)


def psnr(reference, estimate, mask=None):
    """Peak signal-to-noise ratio in dB for images in [0, 1], over `mask` if given."""
    error = (np.asarray(reference, np.float64) - estimate) ** 2
    mse = error[mask].mean() if mask is not None else error.mean()
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))


def image_metrics(reference, estimate, border):
    """PSNR, SSIM and edge PSNR of one image, ignoring `border` pixels on every side.

    The border is left out, as usual in super-resolution, because there the
    network sees zero padding instead of the image's surroundings.

    Returns:
        dict with "psnr", "ssim" (both dB / unitless as floats) and
        "edge_psnr" (PSNR over `edge_mask(reference)`).
    """
    inner = (slice(border, -border or None),) * 2
    reference, estimate = reference[inner], estimate[inner]
    return {
        "psnr": psnr(reference, estimate),
        "ssim": float(skimage.metrics.structural_similarity(reference, estimate,
                                                            data_range=1.0)),
        "edge_psnr": psnr(reference, estimate, edge_mask(reference)),
    }


def mean_metrics(per_image):
    """Averages a dict `{image: {metric: value}}` over its images."""
    names = next(iter(per_image.values())).keys()
    return {m: float(np.mean([values[m] for values in per_image.values()])) for m in names}

"""The demo's figures: held-out crops per upsampler and CARAFE's learned kernels."""

import numpy as np
import scipy.ndimage

from keras_carafe import visualize
from keras_carafe.demo.evaluation import psnr


def hardest_window(reference, baseline, size):
    """The `size x size` window `(top, left, size, size)` where `baseline` errs most.

    Choosing crops by the no-learning baseline's error shows detail that
    must be reconstructed, without favouring any learned upsampler.
    """
    error = (np.asarray(reference, np.float64) - baseline) ** 2
    h, w = error.shape
    size = min(size, h, w)
    summed = scipy.ndimage.uniform_filter(error, size, mode="constant")
    half = size // 2
    # Only windows that lie fully inside the image.
    valid = summed[half:h - size + half + 1, half:w - size + half + 1]
    top, left = np.unravel_index(np.argmax(valid), valid.shape)
    return int(top), int(left), size, size


def comparison_figure(references, predictions, size=64):
    """Crops of each held-out image: the original, then every method's reconstruction.

    Args:
        references: dict from image name to the original `(H, W)` image.
        predictions: dict from image name to a dict from method name to the
            reconstruction; the first method picks the crop (see
            `hardest_window`).
        size: side of the crops.

    Returns:
        Figure with one row per image; each panel's caption is the crop's PSNR.
    """
    rows, captions = [], []
    for name, reference in references.items():
        methods = predictions[name]
        top, left, h, w = hardest_window(reference, next(iter(methods.values())), size)
        window = (slice(top, top + h), slice(left, left + w))
        rows.append({"original": reference[window],
                     **{method: image[window] for method, image in methods.items()}})
        captions.append({"original": f"{name} [{top}:{top + h}, {left}:{left + w}]",
                         **{method: f"{psnr(reference[window], image[window]):.2f} dB"
                            for method, image in methods.items()}})
    return visualize.plot_image_grid(
        rows, captions, title="held-out crops where bicubic errs most (PSNR of the crop)")


def pick_pixels(reference, kernels, count=4):
    """Output pixels worth inspecting: strongest edges, most decisive kernel, flattest area.

    Args:
        reference: the high-resolution `(H, W)` image the kernels produce.
        kernels: `(H, W, k, k)` reassembly kernels.
        count: pixels to return (at least 3).

    Returns:
        List of distinct `(row, col)`, away from the border.
    """
    h, w = reference.shape
    margin = 8
    gradient = scipy.ndimage.gaussian_gradient_magnitude(
        np.asarray(reference, np.float64), sigma=1.0)
    entropy = visualize.kernel_entropy(kernels)
    inner = np.zeros((h, w), bool)
    inner[margin:h - margin, margin:w - margin] = True
    picks = []

    def take(score):
        # Keep picks apart so that their panels show different places.
        allowed = inner.copy()
        for y, x in picks:
            allowed[max(y - margin, 0):y + margin, max(x - margin, 0):x + margin] = False
        masked = np.where(allowed, score, -np.inf)
        picks.append(tuple(int(i) for i in np.unravel_index(np.argmax(masked), masked.shape)))

    take(gradient)
    take(-entropy)
    for _ in range(count - 3):
        take(gradient)
    take(-scipy.ndimage.uniform_filter(gradient, 9))
    return picks


def kernel_figure(low, reference, kernels, scale, image_name):
    """CARAFE's kernels at picked output pixels, against bilinear's fixed kernels."""
    pixels = pick_pixels(reference, kernels)
    k = kernels.shape[-1]
    bilinear = visualize.bilinear_kernel_map(low.shape[0], low.shape[1], scale, k)
    return visualize.plot_kernels(
        low, kernels, pixels, scale, reference_kernels=bilinear,
        title=f"learned CARAFE kernels on held-out '{image_name}' "
              f"(discs: weights; circles: bilinear)")


def entropy_figure(reference, kernels, image_name):
    """The entropy of CARAFE's kernel at every output pixel of a held-out image."""
    return visualize.plot_kernel_entropy(
        reference, visualize.kernel_entropy(kernels), kernels.shape[-1],
        title=f"CARAFE kernel entropy on held-out '{image_name}' (low = decisive kernel)")

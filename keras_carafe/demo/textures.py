"""Texture photographs shipped with scikit-image, split so that no source pixel is shared.

The segmentation benchmark's scenes and notebook 03's inset task both crop them:
training images from the left half of every photograph, held-out images from the right.
"""

import numpy as np

TEXTURES = ("brick", "grass", "gravel")
BACKGROUND = "moon"
SPLITS = ("train", "held_out")


def source_region(image, split):
    """The half of `image` that `split` ("train": left, "held_out": right) may use."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    half = image.shape[1] // 2
    return image[:, :half] if split == "train" else image[:, half:]


def random_crop(image, size, rng):
    """A `size x size` crop of `image` at a random place, rotated by a random multiple of 90°."""
    top = rng.integers(0, image.shape[0] - size + 1)
    left = rng.integers(0, image.shape[1] - size + 1)
    return np.rot90(image[top:top + size, left:left + size], k=rng.integers(4))

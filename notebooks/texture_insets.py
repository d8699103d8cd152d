"""A localization-friendly classification task: which texture is pasted into the picture?

Each image is a crop of a background photograph with a square of one of a
few textures pasted at a random place; the label is the texture. The class
evidence therefore lies only inside the square, which makes attribution maps
checkable: a faithful map puts its mass there. Training and held-out images
come from disjoint halves of every source photograph.
"""

import numpy as np

from keras_carafe.demo.data import load_image
from keras_carafe.demo.textures import BACKGROUND, SPLITS, TEXTURES, random_crop, source_region


def inset_images(count, rng, split="train", size=64, inset=24, textures=TEXTURES,
                 background=BACKGROUND):
    """Draws labelled images of a background with one texture square pasted in.

    Args:
        count: number of images.
        rng: `numpy.random.Generator`.
        split: "train" or "held_out": which halves of the source photographs
            the pixels come from.
        size: side of the square images.
        inset: side of the pasted texture square (smaller than `size`).
        textures: scikit-image data names, one class each (label = index).
        background: scikit-image data name of the background photograph.

    Returns:
        `(images, labels, masks)`: float32 `(count, size, size, 1)` in [0, 1],
        int32 `(count,)`, and boolean `(count, size, size)`, True inside the
        pasted square.
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}, got {split!r}")
    if not 0 < inset < size:
        raise ValueError(f"`inset` must be between 1 and size - 1 ({size - 1}), got {inset}")
    sources = [source_region(load_image(name), split) for name in textures]
    ground = source_region(load_image(background), split)
    images = np.empty((count, size, size), np.float32)
    masks = np.zeros((count, size, size), bool)
    labels = rng.integers(0, len(textures), size=count).astype(np.int32)
    for i, label in enumerate(labels):
        images[i] = random_crop(ground, size, rng)
        top, left = rng.integers(0, size - inset + 1, size=2)
        images[i, top:top + inset, left:left + inset] = random_crop(sources[label], inset, rng)
        masks[i, top:top + inset, left:left + inset] = True
    return images[..., None], labels, masks

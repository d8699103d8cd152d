"""Fashion-MNIST scenes: several garments pasted on real textures, labelled per pixel.

The garments come from the Fashion-MNIST idx files, which are read where
Keras caches them (`keras.datasets.fashion_mnist.load_data()` puts them in
`$KERAS_HOME/datasets/fashion-mnist`, `~/.keras` by default) or where the
Debian package `dataset-fashion-mnist` installs them. Nothing is downloaded.
The backgrounds are crops of scikit-image's texture photographs; training
scenes use the left halves of those photographs and the training garments,
held-out scenes the right halves and the test garments.
"""

import gzip
import os

import numpy as np
import scipy.ndimage

from keras_carafe.demo.textures import BACKGROUND, TEXTURES, random_crop, source_region
from keras_carafe.demo.data import load_image

GARMENTS = ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
            "sneaker", "bag", "ankle boot")
CLASS_NAMES = ("background",) + GARMENTS
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
# Scene backgrounds: every texture photograph the texture-inset task uses.
BACKGROUNDS = TEXTURES + (BACKGROUND,)
# A garment pixel belongs to the garment when it is brighter than this (of
# 1.0); holes enclosed by such pixels are filled, so the silhouette is the
# garment's outline, dark prints included.
SILHOUETTE_THRESHOLD = 0.05


def keras_cache_dir():
    """Where `keras.datasets.fashion_mnist.load_data()` keeps the idx files."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "datasets", "fashion-mnist")


def find_fashion_mnist():
    """The first folder holding all four idx files: Keras's cache, then the Debian path.

    Raises:
        FileNotFoundError: neither holds them; the message says how to get them.
    """
    needed = [name for pair in _FILES.values() for name in pair]
    searched = [keras_cache_dir(), DEBIAN_DIR]
    for folder in searched:
        if all(os.path.isfile(os.path.join(folder, name)) for name in needed):
            return folder
    raise FileNotFoundError(
        "--dataset fashion: the Fashion-MNIST files (" + ", ".join(needed) + ") are in "
        f"neither {searched[0]} nor {searched[1]}. Get them either way: "
        "`sudo apt-get install dataset-fashion-mnist` (Debian, Ubuntu), or run "
        "`python -c \"import keras; keras.datasets.fashion_mnist.load_data()\"` once on a "
        "machine with internet access (it downloads them into Keras's cache).")


def _read_idx(path, offset):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def load_garments(split, folder=None):
    """One split of Fashion-MNIST.

    Args:
        split: "train" (60,000 images) or "test" (10,000).
        folder: where the idx files are; default `find_fashion_mnist()`.

    Returns:
        `(images, labels)`: float32 `(n, 28, 28)` in [0, 1] and uint8 `(n,)`
        class indices into `GARMENTS`.
    """
    if split not in _FILES:
        raise ValueError(f"`split` must be 'train' or 'test', got {split!r}")
    folder = folder or find_fashion_mnist()
    image_file, label_file = (os.path.join(folder, name) for name in _FILES[split])
    labels = _read_idx(label_file, 8)
    images = _read_idx(image_file, 16).reshape(len(labels), 28, 28)
    return images.astype(np.float32) / 255.0, labels


def silhouette(garment):
    """The garment's outline as a boolean mask: bright pixels, enclosed holes filled."""
    return scipy.ndimage.binary_fill_holes(garment > SILHOUETTE_THRESHOLD)


def _resized(garment, size):
    # Linear interpolation keeps grey levels in range; the mask is taken after
    # resizing so that it follows the pasted pixels exactly.
    zoom = size / garment.shape[0]
    return np.clip(scipy.ndimage.zoom(garment, zoom, order=1, grid_mode=True,
                                      mode="grid-constant"), 0.0, 1.0)


def compose_scenes(garments, garment_labels, count, rng, split="train", size=64,
                   per_scene=(2, 4), scale=(0.9, 1.6)):
    """Pastes random garments, scaled and overlapping, on random texture crops.

    Each scene is a `size x size` crop of one of `BACKGROUNDS` (the side of
    the photographs that `split` names); garments are pasted one after the
    other at random places inside the scene, each over the ones before, so
    that later garments occlude earlier ones.

    Args:
        garments, garment_labels: a split from `load_garments`.
        count: number of scenes.
        rng: `numpy.random.Generator`.
        split: "train" or "held_out": which halves of the texture
            photographs the backgrounds come from.
        size: side of the scenes.
        per_scene: `(fewest, most)` garments per scene.
        scale: `(smallest, largest)` factor applied to the 28-pixel garments.

    Returns:
        `(images, labels)`: float32 `(count, size, size, 1)` in [0, 1] and
        uint8 `(count, size, size)` with 0 for background and `1 + c` for
        garment class `c` (`CLASS_NAMES` names them).
    """
    sources = [source_region(load_image(name), split) for name in BACKGROUNDS]
    images = np.empty((count, size, size), np.float32)
    labels = np.zeros((count, size, size), np.uint8)
    for i in range(count):
        images[i] = random_crop(sources[rng.integers(len(sources))], size, rng)
        for _ in range(rng.integers(per_scene[0], per_scene[1] + 1)):
            pick = rng.integers(len(garments))
            side = int(round(28 * rng.uniform(*scale)))
            garment = _resized(garments[pick], side)
            if rng.integers(2):
                garment = garment[:, ::-1]
            mask = silhouette(garment)
            top, left = rng.integers(0, size - side + 1, size=2)
            window = (i, slice(top, top + side), slice(left, left + side))
            images[window] = np.where(mask, garment, images[window])
            labels[window] = np.where(mask, garment_labels[pick] + 1, labels[window])
    return images[..., None], labels

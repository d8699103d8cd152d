"""The benchmark's data sets: held-out images fixed once, training images drawn per seed."""

import dataclasses

import numpy as np

from keras_carafe.segment import fashion, volumes
from keras_carafe.segment.config import TOTAL_STRIDE

# Held-out scenes are the same for every seed and every run.
TEST_SEED = 20191027


@dataclasses.dataclass
class SegmentationData:
    """A data set ready for the benchmark.

    Args:
        name: short name for tables ("fashion", "brain", "nifti").
        description: one paragraph on where the images come from and how
            they were split.
        class_names: class 0 is the background.
        test_images: float32 `(n, H, W, 1)` in [0, 1].
        test_labels: uint `(n, H, W)` class indices.
        test_valid: boolean `(n, H, W)`: the pixels that are scored (False
            on padding added to reach a multiple of the network's stride).
        draw_training: function `seed -> (images, labels)` giving the
            training images of one seed, shaped like the test arrays (of side
            `image_size`).
    """

    name: str
    description: str
    class_names: tuple
    test_images: np.ndarray
    test_labels: np.ndarray
    test_valid: np.ndarray
    draw_training: callable


def load(config):
    """The `SegmentationData` of `config.dataset`; raises before any training on bad input."""
    if config.dataset == "fashion":
        return _fashion(config)
    if config.dataset == "brain":
        return _volume(config, volumes.BRAIN_IMAGE, volumes.BRAIN_LABELS, "--dataset brain",
                       brain=True)
    image_path, label_path = config.nifti_paths
    return _volume(config, image_path, label_path, f"--dataset {config.dataset}")


def _fashion(config):
    folder = fashion.find_fashion_mnist()
    train_garments = fashion.load_garments("train", folder)
    test_garments = fashion.load_garments("test", folder)
    options = dict(size=config.image_size, per_scene=config.garments,
                   scale=config.garment_scale)
    images, labels = fashion.compose_scenes(*test_garments, config.test_images,
                                            np.random.default_rng(TEST_SEED),
                                            split="held_out", **options)

    def draw_training(seed):
        return fashion.compose_scenes(*train_garments, config.train_images,
                                      np.random.default_rng(seed), split="train", **options)

    description = (
        f"Fashion-MNIST scenes ({folder}): {config.image_size}x{config.image_size} crops of "
        f"scikit-image textures ({', '.join(fashion.BACKGROUNDS)}) with "
        f"{config.garments[0]} to {config.garments[1]} garments each, scaled by "
        f"{config.garment_scale[0]} to {config.garment_scale[1]}, flipped at random and "
        f"pasted over each other; labels from each garment's silhouette (grey level above "
        f"{fashion.SILHOUETTE_THRESHOLD}, holes filled), later garments occluding earlier "
        f"ones. {config.train_images} training scenes per seed from the 60,000 training "
        f"garments and the left halves of the textures; {config.test_images} held-out "
        f"scenes (the same for every seed) from the 10,000 test garments and the right "
        f"halves.")
    return SegmentationData("fashion", description, fashion.CLASS_NAMES, images, labels,
                            np.ones(labels.shape, bool), draw_training)


def _padded(stack, height, width, value=0):
    n, h, w = stack.shape[:3]
    pad = [(0, 0), (0, height - h), (0, width - w)] + [(0, 0)] * (stack.ndim - 3)
    return np.pad(stack, pad, constant_values=value)


def _round_up(size, multiple):
    return -(-size // multiple) * multiple


def _volume(config, image_path, label_path, argument, brain=False):
    image, values = volumes.load_pair(image_path, label_path, argument)
    if brain and config.regions == "lobes":
        groups = {v: lobe for v, (_, lobe) in volumes.aal_region_lobes().items()}
    elif brain:
        groups = {v: name for v, (name, _) in volumes.aal_region_lobes().items()}
    else:
        groups = volumes.distinct_values(values)
    classes, names = volumes.merge_regions(values, groups)
    if len(names) < 2:
        raise ValueError(f"{argument}: LABELS has no class besides the background (0)")
    in_plane = [s for a, s in enumerate(image.shape) if a != config.slice_axis]
    if min(in_plane) < TOTAL_STRIDE:
        raise ValueError(
            f"{argument}: slices along axis {config.slice_axis} are "
            f"{in_plane[0]}x{in_plane[1]} voxels, smaller than the network's total stride "
            f"{TOTAL_STRIDE} (its coarsest level would have no pixel); choose another "
            f"--slice-axis or a larger volume")
    train_idx, test_idx = volumes.held_out_slabs(classes, config.slice_axis,
                                                 config.test_slabs, config.slab_thickness,
                                                 config.guard, argument)
    image = volumes.normalize_intensity(image)

    def cut(volume, indices):
        # A quarter turn shows axial and coronal slices the usual way up.
        return np.rot90(volumes.slices(volume, config.slice_axis, indices), axes=(1, 2))

    test_images, test_labels = cut(image, test_idx), cut(classes, test_idx)
    h, w = test_images.shape[1:]
    height, width = _round_up(h, TOTAL_STRIDE), _round_up(w, TOTAL_STRIDE)
    valid = _padded(np.ones(test_labels.shape, bool), height, width, value=False)
    test_images, test_labels = _padded(test_images, height, width), _padded(test_labels,
                                                                             height, width)
    train_images, train_labels = cut(image, train_idx), cut(classes, train_idx)
    crop = config.image_size
    # Slices narrower than a crop are padded (with background) to fit one.
    train_images = _padded(train_images, max(h, crop), max(w, crop))
    train_labels = _padded(train_labels, max(h, crop), max(w, crop))

    def draw_training(seed):
        rng = np.random.default_rng(seed)
        n, full_h, full_w = train_images.shape
        picks = rng.integers(n, size=config.train_images)
        tops = rng.integers(0, full_h - crop + 1, size=config.train_images)
        lefts = rng.integers(0, full_w - crop + 1, size=config.train_images)
        images = np.stack([train_images[p, t:t + crop, l:l + crop]
                           for p, t, l in zip(picks, tops, lefts)])
        labels = np.stack([train_labels[p, t:t + crop, l:l + crop]
                           for p, t, l in zip(picks, tops, lefts)])
        return images[..., None].astype(np.float32), labels

    plane = {0: "sagittal", 1: "coronal", 2: "axial"}[config.slice_axis]
    if brain:
        regions = "its 116 regions" if config.regions == "all" else (
            f"its 116 regions merged into {len(names) - 1} lobes by the first digit of each "
            f"region code: {_region_coverage(values, classes, test_idx, config.slice_axis)}")
        source = ("the Colin27 T1 MRI (one subject, 1 mm voxels) with the AAL atlas "
                  f"({regions})")
    else:
        source = f"{image_path} with the labels of {label_path} ({len(names) - 1} classes)"
    description = (
        f"{plane.capitalize()} slices of {source}: {len(test_idx)} held-out slices in "
        f"{config.test_slabs} slabs of {config.slab_thickness}, with {config.guard} slices "
        f"left out on each side of every slab; {len(train_idx)} training slices, from "
        f"which {config.train_images} random {crop}x{crop} crops are drawn per seed. "
        f"Held-out slices are scored whole ({h}x{w}, padded to {height}x{width}; the "
        f"padding is not scored)."
        + (" All slices come from one subject: this measures generalization to other "
           "slices of the same brain, not to other brains." if brain else ""))
    return SegmentationData("brain" if brain else "nifti", description, names,
                            test_images[..., None].astype(np.float32), test_labels, valid,
                            draw_training)


def _region_coverage(values, classes, test_indices, axis):
    """Why the AAL regions are merged: how thinly the held-out slices cover them."""
    regions = np.bincount(volumes.slices(values, axis, test_indices).ravel(),
                          minlength=117)[1:117]
    lobes = np.bincount(volumes.slices(classes, axis, test_indices).ravel())[1:]
    return (f"kept apart, {int((regions == 0).sum())} of the 116 would be absent from the "
            f"held-out slices and {int(((regions > 0) & (regions < 200)).sum())} more would "
            f"have fewer than 200 held-out pixels; merged, the smallest lobe has "
            f"{int(lobes.min()):,}")

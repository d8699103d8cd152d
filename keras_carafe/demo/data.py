"""Grey-scale images from scikit-image, their held-out split and training patches."""

import hashlib

import numpy as np
import skimage.color
import skimage.data


def load_image(name):
    """A scikit-image data image as float32 grey levels in [0, 1], shape `(H, W)`.

    Args:
        name: a function name in `skimage.data` whose image ships with
            scikit-image (e.g. "camera", "astronaut").
    """
    image = getattr(skimage.data, name)()
    if image.dtype == bool:
        image = image.astype(np.float32)
    image = np.asarray(image)
    if image.ndim == 3:
        if image.shape[-1] == 4:
            image = skimage.color.rgba2rgb(image)
        image = skimage.color.rgb2gray(image)
    elif np.issubdtype(image.dtype, np.integer):
        image = image / np.iinfo(image.dtype).max
    return np.asarray(image, np.float32)


def _fingerprint(image):
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def split_images(train_names, test_names):
    """Loads the training and held-out images, refusing any overlap between them.

    Overlap is checked by name and by content, so one picture published
    under two names cannot end up on both sides.

    Args:
        train_names, test_names: scikit-image data names.

    Returns:
        `(train, test)`: two dicts from name to image.

    Raises:
        ValueError: a held-out image is also a training image.
    """
    shared = set(train_names) & set(test_names)
    if shared:
        raise ValueError(f"images both in training and held out: {sorted(shared)}")
    train = {name: load_image(name) for name in train_names}
    test = {name: load_image(name) for name in test_names}
    seen = {_fingerprint(image): name for name, image in train.items()}
    for name, image in test.items():
        if _fingerprint(image) in seen:
            raise ValueError(f"held-out image {name!r} is the training image "
                             f"{seen[_fingerprint(image)]!r} under another name")
    return train, test


def crop_to_multiple(image, scale):
    """Trims the bottom and right edges so that both sides divide by `scale`."""
    h, w = image.shape[:2]
    return image[:h - h % scale, :w - w % scale]


def center_crop(image, size):
    """The central `size x size` region (or less along a shorter side)."""
    h, w = image.shape[:2]
    top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return image[top:top + size, left:left + size]


def downscale(image, scale):
    """Averages `scale x scale` blocks: the low-resolution observation of `image`.

    Block averaging puts each low-resolution pixel exactly over the
    `scale x scale` high-resolution pixels it summarizes, the geometry that
    every upsampler in the comparison assumes.
    """
    image = crop_to_multiple(image, scale)
    h, w = image.shape[:2]
    blocks = image.reshape(h // scale, scale, w // scale, scale, *image.shape[2:])
    return blocks.mean(axis=(1, 3), dtype=np.float64).astype(np.float32)


def sample_patches(images, count, patch_size, scale, rng):
    """Random training pairs: high-resolution patches and their block averages.

    Patches are drawn from the images in proportion to their area, with a
    random flip and quarter turn each.

    Args:
        images: dict from name to `(H, W)` image.
        count: number of patches.
        patch_size: side of the high-resolution patches, a multiple of
            `scale`.
        scale: the downscaling factor.
        rng: `numpy.random.Generator`.

    Returns:
        `(low, high, sources)`: float32 arrays `(count, p/scale, p/scale, 1)`
        and `(count, p, p, 1)`, and the name of each patch's image.
    """
    names = [n for n, im in images.items() if min(im.shape[:2]) >= patch_size]
    if not names:
        raise ValueError(f"no image is at least {patch_size} pixels on each side")
    areas = np.array([images[n].shape[0] * images[n].shape[1] for n in names], np.float64)
    picks = rng.choice(len(names), size=count, p=areas / areas.sum())
    high = np.empty((count, patch_size, patch_size), np.float32)
    for i, pick in enumerate(picks):
        image = images[names[pick]]
        top = rng.integers(0, image.shape[0] - patch_size + 1)
        left = rng.integers(0, image.shape[1] - patch_size + 1)
        patch = image[top:top + patch_size, left:left + patch_size]
        if rng.integers(2):
            patch = patch[:, ::-1]
        high[i] = np.rot90(patch, k=rng.integers(4))
    low = downscale(high.transpose(1, 2, 0), scale).transpose(2, 0, 1)
    return low[..., None], high[..., None], [names[p] for p in picks]

"""2-D slices of an image volume and its label volume, split into held-out slabs.

The brain dataset is the Colin27 T1 MRI (one subject, 1 mm) with the AAL
atlas drawn on the same grid, both shipped by the Debian package
`mricron-data`; `nifti:IMAGE,LABELS` takes any pair of the user's own. Both
volumes are read with nibabel and turned to the closest RAS orientation, so
that `slice_axis` 0, 1 and 2 cut sagittal, coronal and axial slices.

Held-out slices come in slabs of consecutive slices; `guard` slices on each
side of a slab are used neither for training nor for scoring, because
neighbouring 1 mm slices are near copies of each other.
"""

import os

import numpy as np

MRICRON_DIR = "/usr/share/mricron/templates"
BRAIN_IMAGE = os.path.join(MRICRON_DIR, "ch2.nii.gz")
BRAIN_LABELS = os.path.join(MRICRON_DIR, "aal.nii.gz")
BRAIN_NAMES = os.path.join(MRICRON_DIR, "aal.nii.txt")
# AAL codes each region with four digits whose first names its lobe (the
# third column of aal.nii.txt, e.g. 2001 Precentral_L, 9170 Vermis_10).
AAL_LOBES = {2: "frontal", 3: "insula", 4: "limbic", 5: "occipital", 6: "parietal",
             7: "central nuclei", 8: "temporal", 9: "cerebellum"}


def _nibabel(argument):
    try:
        import nibabel
    except ImportError:
        raise ImportError(f"{argument} reads NIfTI volumes with nibabel, which is not "
                          "installed: `pip install keras-carafe[segment]` (or `pip install "
                          "nibabel`)") from None
    return nibabel


def load_pair(image_path, label_path, argument="--dataset"):
    """Reads an image and a label volume and checks that they belong together.

    Args:
        image_path, label_path: NIfTI files (.nii or .nii.gz).
        argument: how error messages name the option that gave the paths.

    Returns:
        `(image, labels)`: float32 and int64 arrays of one shape, in RAS
        orientation.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: the volumes are not 3-D, lie on different voxel grids, or
            the labels are not non-negative integers.
    """
    nibabel = _nibabel(argument)
    volumes = {}
    for role, path in (("IMAGE", image_path), ("LABELS", label_path)):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{argument}: {role} file {path} does not exist")
        volume = nibabel.load(path)
        if len(volume.shape) != 3:
            raise ValueError(f"{argument}: {role} {path} must be a 3-D volume, got shape "
                             f"{volume.shape}")
        volumes[role] = volume
    image, labels = volumes["IMAGE"], volumes["LABELS"]
    if image.shape != labels.shape or not np.allclose(image.affine, labels.affine,
                                                      atol=1e-3):
        raise ValueError(
            f"{argument}: IMAGE and LABELS must lie on the same voxel grid, but IMAGE "
            f"{image_path} is {_grid(image)} and LABELS {label_path} is {_grid(labels)}")
    image, labels = (nibabel.as_closest_canonical(v) for v in (image, labels))
    values = np.asarray(labels.dataobj)
    check_labels(values, f"{argument}: LABELS {label_path}")
    return np.asarray(image.dataobj, np.float32), values.astype(np.int64)


def _grid(volume):
    affine = np.array2string(np.asarray(volume.affine)[:3], precision=3, separator=",",
                             suppress_small=True).replace("\n", "")
    return f"{'x'.join(map(str, volume.shape))} voxels with affine {affine}"


def check_labels(values, what):
    """Raises unless every value of `values` is a finite non-negative integer."""
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.integer):
        bad = values < 0
    else:
        finite = np.isfinite(values)
        bad = ~finite | (np.where(finite, values, 0) != np.round(np.where(finite, values, 0)))
        bad |= np.where(finite, values, 0) < 0
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{what} must hold one non-negative integer class per voxel, but "
                         f"voxel {where} holds {values[where].item()!r}")


def aal_region_lobes(names_path=BRAIN_NAMES):
    """Each AAL region's lobe, read from the atlas's own table.

    Returns:
        dict from region value (1..116) to `(region name, lobe name)`.
    """
    regions = {}
    with open(names_path) as f:
        for line in f:
            fields = line.split()
            if len(fields) == 3:
                value, name, code = int(fields[0]), fields[1], fields[2]
                regions[value] = (name, AAL_LOBES[int(code[0])])
    return regions


def merge_regions(labels, groups):
    """Maps label values to classes: 0 stays background, each group becomes one class.

    Args:
        labels: integer array.
        groups: dict from label value to a class name; values that share a
            name merge into one class. Values not in `groups` must be 0.

    Returns:
        `(classes, names)`: uint8 (or uint16 past 255 classes) array shaped
        like `labels`, and the class names, "background" first, the others
        in the order they first appear in `groups`.
    """
    names = ["background"]
    for name in groups.values():
        if name not in names:
            names.append(name)
    present = np.unique(labels)
    unknown = [int(v) for v in present if v != 0 and v not in groups]
    if unknown:
        raise ValueError(f"label values {unknown[:10]} have no class")
    lookup = np.zeros(int(present.max()) + 1, np.int64)
    for value, name in groups.items():
        if value <= present.max():
            lookup[value] = names.index(name)
    dtype = np.uint8 if len(names) <= 256 else np.uint16
    return lookup[labels].astype(dtype), tuple(names)


def distinct_values(labels):
    """Every non-zero label value as its own class: `{value: "label <value>"}`."""
    return {int(v): f"label {int(v)}" for v in np.unique(labels) if v != 0}


def normalize_intensity(image, percentile=99.5):
    """Scales an image volume to [0, 1]: 0 at its minimum, 1 at `percentile` (clipped)."""
    low = float(image.min())
    high = float(np.percentile(image, percentile))
    if high <= low:
        high = float(image.max())
    scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def held_out_slabs(labels, axis, slabs, thickness, guard, argument="--dataset"):
    """Splits the labelled slices along `axis` into training and held-out slices.

    The slices between the first and the last one with a labelled voxel are
    cut into `slabs` equal segments; the central `thickness` slices of each
    segment are held out, and `guard` slices on either side of each held-out
    slab are dropped.

    Returns:
        `(train, test)`: sorted int arrays of slice indices.

    Raises:
        ValueError: too few labelled slices for the slabs and their guards.
    """
    other = tuple(a for a in range(labels.ndim) if a != axis)
    labelled = np.flatnonzero((labels != 0).any(axis=other))
    if labelled.size == 0:
        raise ValueError(f"{argument}: LABELS has no labelled voxel (every value is 0)")
    first, last = int(labelled[0]), int(labelled[-1])
    span = last - first + 1
    needed = slabs * (thickness + 2 * guard) + 1
    if span < needed:
        raise ValueError(
            f"{argument}: LABELS has labelled slices {first}..{last} along axis {axis} "
            f"({span} slices); {slabs} held-out slabs of {thickness} slices with "
            f"{guard}-slice guards need at least {needed} (reduce --test-slabs, "
            f"--slab-thickness or --guard)")
    test, dropped = [], []
    for s in range(slabs):
        centre = first + int(round((s + 0.5) * span / slabs))
        start = centre - thickness // 2
        test.extend(range(start, start + thickness))
        dropped.extend(range(start - guard, start))
        dropped.extend(range(start + thickness, start + thickness + guard))
    excluded = set(test) | set(dropped)
    train = [i for i in range(first, last + 1) if i not in excluded]
    return np.array(train, np.int64), np.array(sorted(test), np.int64)


def slices(volume, axis, indices):
    """The 2-D slices `indices` of `volume` along `axis`, stacked first."""
    return np.stack([np.take(volume, int(i), axis=axis) for i in indices])

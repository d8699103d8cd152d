"""Settings of the segmentation benchmark (nothing here imports a Keras backend)."""

import dataclasses

# Each variant names the upsampler of the FPN's top-down pathway and the
# downsampler of its encoder. Only CARAFE++ ("carafe++") changes the encoder:
# every other variant downsamples with strided convolutions.
VARIANTS = ("nearest", "bilinear", "transposed_conv", "pixel_shuffle", "carafe", "carafe++")
UPSAMPLER_OF = {"nearest": "nearest", "bilinear": "bilinear",
                "transposed_conv": "transposed_conv", "pixel_shuffle": "pixel_shuffle",
                "carafe": "carafe", "carafe++": "carafe"}
DOWNSAMPLER_OF = {variant: "strided_conv" for variant in VARIANTS}
DOWNSAMPLER_OF["carafe++"] = "carafe_downsample"
BASELINE = "bilinear"

# The encoder halves the resolution this many times: the coarsest level has
# stride 2 ** LEVELS, and the head works at stride 2.
LEVELS = 4
TOTAL_STRIDE = 2 ** LEVELS

DATASETS = ("fashion", "brain")
NIFTI_PREFIX = "nifti:"
REGION_SETS = ("lobes", "all")
IMPLEMENTATIONS = ("auto", "op", "fallback", "portable")


@dataclasses.dataclass(frozen=True)
class SegmentConfig:
    """One run of the benchmark: every variant trains once per seed under these settings.

    Args:
        dataset: "fashion" (Fashion-MNIST garments pasted on textures),
            "brain" (slices of the Colin27 MRI with the AAL atlas) or
            "nifti:IMAGE,LABELS" (any image and label volume pair).
        variants: names from `VARIANTS`, trained in this order.
        seeds: one training run of every variant per seed; a seed fixes the
            training images, the initial weights and the batch order.
        epochs: passes over the training images.
        train_images: training images (scenes, or crops of training slices).
        test_images: held-out scenes (Fashion-MNIST only; the volumes are
            scored on every held-out slice).
        image_size: side of the scenes, and of the training crops of volume
            slices; a multiple of `TOTAL_STRIDE`.
        garments: `(fewest, most)` garments per scene.
        garment_scale: `(smallest, largest)` factor applied to the 28-pixel
            garments.
        batch_size: images per training step.
        channels: feature channels of the top-down pathway (and of every
            upsampler).
        learning_rate: Adam's initial rate, cosine-decayed to 5% by the end.
        boundary_width: the band width `d` of the boundary IoU, in pixels.
        regions: "lobes" (the AAL regions merged into lobes) or "all" (its
            116 regions); brain only.
        slice_axis: the volume axis along which slices are cut, after
            reorientation to RAS (0 sagittal, 1 coronal, 2 axial).
        test_slabs: held-out slabs of consecutive slices.
        slab_thickness: slices per held-out slab.
        guard: slices left out on each side of a held-out slab, so that no
            training slice is a near copy of a held-out one.
        implementation: CARAFE's `implementation`.
        output: folder for the tables, figures and models.
        save_models: whether to write every trained model as a .keras file.
        kernel_maps: whether the CARAFE run of the first seed writes kernel
            maps and composed weights of a fixed batch every epoch.
        verbose: 0 prints one line per run, 1 one line per epoch.
    """

    dataset: str = "fashion"
    variants: tuple = VARIANTS
    seeds: tuple = (0, 1, 2)
    epochs: int = 5
    train_images: int = 576
    test_images: int = 200
    image_size: int = 96
    garments: tuple = (4, 7)
    garment_scale: tuple = (0.8, 1.5)
    batch_size: int = 8
    channels: int = 32
    learning_rate: float = 3e-3
    boundary_width: int = 2
    regions: str = "lobes"
    slice_axis: int = 2
    test_slabs: int = 3
    slab_thickness: int = 10
    guard: int = 5
    implementation: str = "auto"
    output: str = "carafe_segment_output"
    save_models: bool = True
    kernel_maps: bool = True
    verbose: int = 1

    def __post_init__(self):
        if not (self.dataset in DATASETS or self.dataset.startswith(NIFTI_PREFIX)):
            raise ValueError(f"--dataset must be one of {', '.join(DATASETS)} or "
                             f"nifti:IMAGE,LABELS, got {self.dataset!r}")
        self.nifti_paths  # noqa: B018 (raises on a malformed "nifti:" value)
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or not self.variants:
            raise ValueError(f"variants must be a non-empty selection of {', '.join(VARIANTS)}; "
                             f"unknown: {', '.join(map(repr, unknown)) or '(none given)'}")
        if len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants must not repeat, got {self.variants}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or not all(
                _is_int(s) and s >= 0 for s in self.seeds):
            raise ValueError(f"seeds must be distinct integers >= 0, got {self.seeds}")
        for name in ("epochs", "train_images", "test_images", "batch_size", "channels",
                     "boundary_width", "test_slabs", "slab_thickness"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not _is_int(self.guard) or self.guard < 0:
            raise ValueError(f"guard must be an integer >= 0, got {self.guard!r}")
        if (not _is_int(self.image_size) or self.image_size < TOTAL_STRIDE
                or self.image_size % TOTAL_STRIDE):
            raise ValueError(f"image_size must be a multiple of the network's total stride "
                             f"{TOTAL_STRIDE} (at least {TOTAL_STRIDE}), got "
                             f"{self.image_size!r}")
        low, high = self.garments
        if not (_is_int(low) and _is_int(high) and 1 <= low <= high):
            raise ValueError(f"garments must be (fewest, most) with 1 <= fewest <= most, "
                             f"got {self.garments}")
        small, large = self.garment_scale
        if not 0 < small <= large or (self.dataset == "fashion"
                                      and 28 * large > self.image_size):
            raise ValueError(
                f"garment_scale must be (smallest, largest) with 0 < smallest <= largest "
                f"and 28 * largest <= image_size ({self.image_size}), got "
                f"{self.garment_scale}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate!r}")
        if self.regions not in REGION_SETS:
            raise ValueError(f"regions must be one of {', '.join(REGION_SETS)}, "
                             f"got {self.regions!r}")
        if self.slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {self.slice_axis!r}")
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {', '.join(IMPLEMENTATIONS)}, "
                             f"got {self.implementation!r}")
        if self.verbose not in (0, 1):
            raise ValueError(f"verbose must be 0 or 1, got {self.verbose!r}")

    @property
    def nifti_paths(self):
        """`(image, labels)` paths of a "nifti:IMAGE,LABELS" dataset, else None."""
        if not self.dataset.startswith(NIFTI_PREFIX):
            return None
        paths = self.dataset[len(NIFTI_PREFIX):].split(",")
        if len(paths) != 2 or not all(p.strip() for p in paths):
            raise ValueError(f"--dataset nifti: expects two paths, 'nifti:IMAGE,LABELS', "
                             f"got {self.dataset!r}")
        return tuple(p.strip() for p in paths)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


DEFAULT = SegmentConfig()

# Under two minutes on two CPU cores, Keras start-up included: the central
# pair (bilinear against CARAFE) on one seed, so the table has no intervals;
# it shows the task and checks the pipeline end to end.
QUICK = dataclasses.replace(DEFAULT, variants=(BASELINE, "carafe"), seeds=(0,), epochs=3,
                            train_images=512, test_images=100)

"""Settings of the super-resolution comparison (no TensorFlow needed to read them)."""

import dataclasses

UPSAMPLERS = ("nearest", "bilinear", "transposed_conv", "pixel_shuffle", "carafe")

# Images shipped inside scikit-image (no download). Held-out images are never
# trained on; `data.split_images` also rejects the same picture under two
# names (skimage's `cat` is `chelsea`).
TRAIN_IMAGES = ("astronaut", "brick", "cell", "chelsea", "clock", "coffee", "coins",
                "grass", "hubble_deep_field", "immunohistochemistry", "moon", "page",
                "rocket")
TEST_IMAGES = ("camera", "text", "gravel")

IMPLEMENTATIONS = ("auto", "op", "fallback")
MIN_EVAL_SIZE = 32


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """One run of the comparison: every upsampler trains under these settings.

    Args:
        upsamplers: names from `UPSAMPLERS`, trained in this order.
        scale: upsampling factor (2 or 4).
        patch_size: side of the high-resolution training patches (a multiple
            of `scale`).
        patches: training patches drawn from the training images.
        epochs: passes over the patches.
        batch_size: patches per step.
        channels: feature channels of the network (also the upsampler's).
        depth: convolutions at low resolution before the upsampler.
        learning_rate: Adam's initial rate (cosine-decayed to 5% by the end).
        seed: seeds the patches, the initial weights and the batch order.
        implementation: CARAFE's `implementation` ("auto", "op", "fallback").
        output: folder for the table, figures and models.
        verbose: Keras `fit` verbosity (0 silent, 1 progress bar, 2 one line
            per epoch).
        train_images, test_images: scikit-image data names.
        eval_size: held-out images are center-cropped to at most this side
            (keeps evaluation quick); None evaluates them whole.
        save_models: whether to write each trained model as a .keras file.
    """

    upsamplers: tuple = UPSAMPLERS
    scale: int = 2
    patch_size: int = 48
    patches: int = 4096
    epochs: int = 6
    batch_size: int = 16
    channels: int = 32
    depth: int = 4
    learning_rate: float = 1e-3
    seed: int = 0
    implementation: str = "auto"
    output: str = "carafe_demo_output"
    verbose: int = 1
    train_images: tuple = TRAIN_IMAGES
    test_images: tuple = TEST_IMAGES
    eval_size: int = None
    save_models: bool = True

    def __post_init__(self):
        unknown = [u for u in self.upsamplers if u not in UPSAMPLERS]
        if unknown or not self.upsamplers:
            raise ValueError(f"upsamplers must be a non-empty selection of {UPSAMPLERS}, "
                             f"got {self.upsamplers}")
        for name in ("patch_size", "patches", "epochs", "batch_size", "channels", "depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.scale < 2:
            raise ValueError(f"scale must be at least 2, got {self.scale}")
        if self.patch_size % self.scale:
            raise ValueError(
                f"patch_size ({self.patch_size}) must be a multiple of scale ({self.scale})")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate!r}")
        # The kernel figures pick pixels at least 8 pixels inside the held-out images.
        if self.eval_size is not None and self.eval_size < MIN_EVAL_SIZE:
            raise ValueError(f"eval_size must be None (whole images) or at least "
                             f"{MIN_EVAL_SIZE}, got {self.eval_size!r}")
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, "
                             f"got {self.implementation!r}")
        if self.verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {self.verbose!r}")


DEFAULT = DemoConfig()

# Under two minutes on two CPU cores, TensorFlow start-up included. CARAFE's
# kernels start uniform (the encoder's weights are tiny) and need about 300
# steps before they depend on content: fewer steps would show no learned kernels.
QUICK = dataclasses.replace(DEFAULT, patches=2048, epochs=3, eval_size=256)

"""Where each output pixel of a reassembly reads its input neighbourhood.

Both reassemblies weight a `k x k` neighbourhood of the features with a
per-pixel kernel; they differ in which pixel the neighbourhood is centred on:

- upsampling by `s`: output pixel `(oh, ow)` reads around `(oh // s, ow // s)`,
  so the output is `s` times larger;
- downsampling with stride `s`: output pixel `(oh, ow)` reads around
  `(oh * s, ow * s)`, so the output is `ceil(H / s) x ceil(W / s)`.

Every implementation works on *cells*: an input pixel with its `s * s`
sub-pixel outputs (upsampling), or one output pixel (downsampling). A cell's
neighbourhood starts at padded row `cell * cell_stride` (the features padded
with `r = (k - 1) // 2` zeros on every side), and each of its `phases` outputs
has its own kernel.
"""

import dataclasses

UPSAMPLE = "upsample"
DOWNSAMPLE = "downsample"


@dataclasses.dataclass(frozen=True)
class Geometry:
    """One reassembly problem's hyperparameters (validated Python ints)."""

    direction: str
    factor: int
    kernel_size: int
    group_size: int

    @property
    def upsampling(self):
        return self.direction == UPSAMPLE

    @property
    def radius(self):
        return (self.kernel_size - 1) // 2

    @property
    def taps(self):
        """Kernel weights per group: k * k."""
        return self.kernel_size * self.kernel_size

    @property
    def kernel_channels(self):
        return self.group_size * self.taps

    @property
    def phases(self):
        """Outputs per cell (each with its own kernel)."""
        return self.factor * self.factor if self.upsampling else 1

    @property
    def cell_stride(self):
        """Distance between the neighbourhoods of adjacent cells, in input pixels."""
        return 1 if self.upsampling else self.factor

    def output_size(self, size):
        """Output height (or width) for an input height (or width); None stays None."""
        if size is None:
            return None
        if self.upsampling:
            return size * self.factor
        return -(-size // self.factor)

    def output_size_formula(self, axis):
        """How the output `axis` ("height", "width") follows from the features, for messages."""
        if self.upsampling:
            return f"scale_factor * features {axis}"
        return f"ceil(features {axis} / stride)"

    def kernels_layout(self):
        if self.upsampling:
            return "(N, H*scale_factor, W*scale_factor, group_size*kernel_size**2)"
        return "(N, ceil(H/stride), ceil(W/stride), group_size*kernel_size**2)"

"""Parameter and FLOP counts of one CARAFE or CARAFE++ downsampling layer."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class CarafeCost:
    """Cost of one CARAFE layer on one image.

    FLOPs count a multiply-add as 2 and the softmax as 3 per weight (exp,
    sum, divide); `flops_by_stage` splits them over the stages.
    """

    params: int
    flops: int
    flops_by_stage: dict

    def __str__(self):
        stages = ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in self.flops_by_stage.items())
        return f"{self.params:,} parameters, {self.flops / 1e9:.3f} GFLOPs ({stages})"


def _cost(channels, in_pixels, encoder_pixels, out_pixels, encoder_out, kernel_size,
          encoder_kernel_size, compressed_channels, group_size):
    """The four stages: 1x1 compressor on the input, k_enc encoder producing
    `encoder_out` channels on `encoder_pixels`, softmax and reassembly on the output."""
    k, k_enc, c_m, g = kernel_size, encoder_kernel_size, compressed_channels, group_size
    params = (channels * c_m + c_m) + (k_enc * k_enc * c_m * encoder_out + encoder_out)
    stages = {
        "compressor": 2 * in_pixels * channels * c_m,
        "encoder": 2 * encoder_pixels * k_enc * k_enc * c_m * encoder_out,
        "softmax": 3 * out_pixels * g * k * k,
        "reassembly": 2 * out_pixels * channels * k * k,
    }
    return CarafeCost(params=params, flops=sum(stages.values()), flops_by_stage=stages)


def carafe_cost(height, width, channels, scale_factor=2, kernel_size=5, encoder_kernel_size=3,
                compressed_channels=64, group_size=1):
    """Counts parameters and FLOPs of CARAFE on a `(height, width, channels)` input.

    The defaults are the paper's (and the `CARAFE` layer's). The encoder runs
    at the input resolution and predicts the s*s sub-pixel kernels there.
    """
    s = scale_factor
    in_pixels = height * width
    return _cost(channels, in_pixels, in_pixels, in_pixels * s * s,
                 s * s * group_size * kernel_size * kernel_size, kernel_size,
                 encoder_kernel_size, compressed_channels, group_size)


def carafe_downsample_cost(height, width, channels, stride=2, kernel_size=5,
                           encoder_kernel_size=3, compressed_channels=16, group_size=1):
    """Counts parameters and FLOPs of CARAFE++ downsampling on a `(height, width, channels)`
    input (the `CARAFEDownsample` layer's defaults). The encoder runs with the stride, at
    the output resolution `ceil(H/stride) x ceil(W/stride)`."""
    out_pixels = -(-height // stride) * -(-width // stride)
    return _cost(channels, height * width, out_pixels, out_pixels,
                 group_size * kernel_size * kernel_size, kernel_size, encoder_kernel_size,
                 compressed_channels, group_size)

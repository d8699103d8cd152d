"""Parameter and FLOP counts of one CARAFE layer."""

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


def carafe_cost(height, width, channels, scale_factor=2, kernel_size=5, encoder_kernel_size=3,
                compressed_channels=64, group_size=1):
    """Counts parameters and FLOPs of CARAFE on a `(height, width, channels)` input.

    The defaults are the paper's (and the `CARAFE` layer's).
    """
    s, k, k_enc, c_m, g = scale_factor, kernel_size, encoder_kernel_size, compressed_channels, \
        group_size
    in_pixels = height * width
    out_pixels = in_pixels * s * s
    encoder_out = s * s * g * k * k
    params = (channels * c_m + c_m) + (k_enc * k_enc * c_m * encoder_out + encoder_out)
    stages = {
        "compressor": 2 * in_pixels * channels * c_m,
        "encoder": 2 * in_pixels * k_enc * k_enc * c_m * encoder_out,
        "softmax": 3 * out_pixels * g * k * k,
        "reassembly": 2 * out_pixels * channels * k * k,
    }
    return CarafeCost(params=params, flops=sum(stages.values()), flops_by_stage=stages)

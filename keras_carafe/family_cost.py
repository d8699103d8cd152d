"""Parameter and FLOP counts of one FADE, SAPA or DySample layer on one image.

Counted as in `keras_carafe.cost`: a multiply-add is 2 FLOPs and a softmax 3
per weight (exp, sum, divide); every other elementwise operation counts 1
(a sigmoid, an addition of two logits, a scaling), a layer normalization 7
per element (mean, centring, square, variance, scaling by the inverse
deviation, gain, bias), and a bilinear sample 8 per point (clamping,
flooring, fractions, the four corner weights) plus a multiply-add per
corner and channel. Biases are parameters, not FLOPs. Sizes are those of
the decoder (low-resolution) feature, `height x width`; outputs have
`height * s x width * s` pixels.
"""

from keras_carafe.cost import CarafeCost


def _cost(params, stages):
    return CarafeCost(params=params, flops=sum(stages.values()), flops_by_stage=stages)


def fade_cost(height, width, channels, scale_factor=2, kernel_size=5, embedding_channels=64,
              encoder_kernel_size=3, gated=True):
    """FADE (the `FADE` layer's defaults) on a decoder feature of `(height, width, channels)`
    and an encoder feature of `(height * s, width * s, channels)`."""
    low = height * width
    high = low * scale_factor ** 2
    c, e, taps, k_enc = channels, embedding_channels, kernel_size ** 2, encoder_kernel_size
    params = (c * e + e) + c * e + (k_enc * k_enc * e * taps + taps)
    stages = {
        "compressors": 2 * high * c * e + 2 * low * c * e,
        # The shared semi-shift convolution on both compressed features, and the
        # sum of the encoder logits with the repeated decoder logits.
        "semi_shift": 2 * (high + low) * k_enc * k_enc * e * taps + high * taps,
        "softmax": 3 * high * taps,
        "reassembly": 2 * high * c * taps,
    }
    if gated:
        params += c + 1
        # 1x1 convolution at low resolution, a sigmoid per output pixel, and
        # gate * encoder + (1 - gate) * upsampled (four operations per element).
        stages["gate"] = 2 * low * c + high + 4 * high * c
    return _cost(params, stages)


def sapa_cost(height, width, channels, encoder_channels=None, scale_factor=2, kernel_size=5,
              embedding_channels=64, group_size=1, use_bias=True):
    """SAPA (the `SAPA` layer's defaults) on a decoder feature of `(height, width, channels)`
    and an encoder feature of `(height * s, width * s, encoder_channels)` (default: the
    decoder's channels)."""
    encoder_channels = channels if encoder_channels is None else encoder_channels
    low = height * width
    high = low * scale_factor ** 2
    c, c_e, e, taps = channels, encoder_channels, embedding_channels, kernel_size ** 2
    bias = e if use_bias else 0
    params = 2 * c_e + 2 * c + (c_e * e + bias) + (c * e + bias)
    stages = {
        "norms": 7 * high * c_e + 7 * low * c,
        "projections": 2 * high * c_e * e + 2 * low * c * e,
        "similarity": 2 * high * e * taps,
        "softmax": 3 * high * group_size * taps,
        "reassembly": 2 * high * c * taps,
    }
    return _cost(params, stages)


def dysample_cost(height, width, channels, scale_factor=2, group_size=4, style="lp",
                  dynamic_scope=False):
    """DySample (the `DySample` layer's defaults) on a `(height, width, channels)` input."""
    low = height * width
    high = low * scale_factor ** 2
    s2, g = scale_factor ** 2, group_size
    # "lp" predicts 2*G*s*s offsets per input pixel from its channels; "pl" predicts
    # 2*G per output pixel from channels / s**2 of the pixel-shuffled input: the
    # same multiply-adds, fewer parameters.
    if style == "lp":
        inputs, outputs, pixels = channels, 2 * g * s2, low
    else:
        inputs, outputs, pixels = channels // s2, 2 * g, high
    conv_params = inputs * outputs
    params = conv_params + outputs
    stages = {"offsets": 2 * pixels * inputs * outputs}
    if dynamic_scope:
        params += conv_params
        # The scope convolution, its sigmoid and the product with the offsets.
        stages["scope"] = 2 * pixels * inputs * outputs + 2 * pixels * outputs
    points = high * g
    stages.update({
        # Scaling of the offsets and the addition of each point's base position.
        "positions": 2 * 2 * points,
        "sampling": 8 * points + 2 * 4 * high * channels,
    })
    return _cost(params, stages)

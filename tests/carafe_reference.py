"""Independent NumPy reference of the CARAFE reassembly and its gradients.

Written from the contract alone, in float64:

    out[n, oh, ow, c] = sum_{ky, kx in [0, k)} kernels[n, oh, ow, g*k*k + ky*k + kx]
                        * features[n, oh // s + ky - r, ow // s + kx - r, c]

with g = c // (C / G), r = (k - 1) // 2 and features outside the image equal to
zero. The reassembly is linear in each input, so with an upstream gradient
`d` = d loss / d out:

    d loss / d kernels[n, oh, ow, g*k*k + ky*k + kx]
        = sum_{c in group g} d[n, oh, ow, c] * features[n, oh//s + ky - r, ow//s + kx - r, c]
    d loss / d features[n, y, x, c]
        = sum over (oh, ow, ky, kx) with oh//s + ky - r = y and ow//s + kx - r = x
          of kernels[n, oh, ow, g*k*k + ky*k + kx] * d[n, oh, ow, c]

The downsampling reassembly of CARAFE++ is the same sum with source pixel
(oh * stride, ow * stride) and ceil(H / stride) x ceil(W / stride) outputs.

`carafe_loops` and `carafe_downsample_loops` are the formulas spelled out
element by element, for checking the vectorized versions on tiny inputs.
"""

import numpy as np


def _geometry(features, kernels, scale_factor, kernel_size, group_size):
    n, h, w, c = features.shape
    s, k, g = scale_factor, kernel_size, group_size
    assert c % g == 0, (c, g)
    assert kernels.shape == (n, h * s, w * s, g * k * k), (kernels.shape, features.shape)
    return n, h, w, c, s, k, g, (k - 1) // 2


def _upsampling_sources(height, width, scale_factor):
    """Source pixel row / column of every output row / column: oh // s."""
    return np.arange(height * scale_factor) // scale_factor, np.arange(width * scale_factor) // scale_factor


def _downsampling_sources(height, width, stride):
    """Source pixel row / column of every output row / column: oh * stride,
    for ceil(H / stride) output rows."""
    return np.arange(-(-height // stride)) * stride, np.arange(-(-width // stride)) * stride


def _shifted(features, src_h, src_w, kernel_size):
    """Yields (ky, kx, F) with F[n, oh, ow, c] = features[n, src_h[oh] + ky - r, src_w[ow] + kx - r, c]
    (zero outside the image), one array at output resolution per tap."""
    n, h, w, c = features.shape
    k = kernel_size
    r = (k - 1) // 2
    padded = np.zeros((n, h + 2 * r, w + 2 * r, c), np.float64)
    padded[:, r:r + h, r:r + w] = features
    # The pad shifts every index by r, so tap ky reads padded row src + ky.
    for ky in range(k):
        rows = padded[:, src_h + ky]
        for kx in range(k):
            yield ky, kx, rows[:, :, src_w + kx]


def _reassemble(features, kernels, src_h, src_w, kernel_size, group_size):
    features = np.asarray(features, np.float64)
    kernels = np.asarray(kernels, np.float64)
    n, _, _, c = features.shape
    k, g = kernel_size, group_size
    oh, ow = len(src_h), len(src_w)
    assert c % g == 0, (c, g)
    assert kernels.shape == (n, oh, ow, g * k * k), (kernels.shape, features.shape)
    weights = kernels.reshape(n, oh, ow, g, k, k)
    out = np.zeros((n, oh, ow, g, c // g), np.float64)
    for ky, kx, shifted in _shifted(features, src_h, src_w, k):
        out += weights[..., ky, kx, None] * shifted.reshape(n, oh, ow, g, c // g)
    return out.reshape(n, oh, ow, c)


def _reassemble_grads(grad_output, features, kernels, src_h, src_w, kernel_size, group_size):
    grad_output = np.asarray(grad_output, np.float64)
    features = np.asarray(features, np.float64)
    kernels = np.asarray(kernels, np.float64)
    n, h, w, c = features.shape
    k, g = kernel_size, group_size
    r = (k - 1) // 2
    oh, ow = len(src_h), len(src_w)
    assert kernels.shape == (n, oh, ow, g * k * k), (kernels.shape, features.shape)
    assert grad_output.shape == (n, oh, ow, c), grad_output.shape
    d = grad_output.reshape(n, oh, ow, g, c // g)
    weights = kernels.reshape(n, oh, ow, g, k, k)

    grad_kernels = np.zeros((n, oh, ow, g, k, k), np.float64)
    for ky, kx, shifted in _shifted(features, src_h, src_w, k):
        grad_kernels[..., ky, kx] = np.sum(d * shifted.reshape(n, oh, ow, g, c // g), axis=-1)

    # Scatter every output pixel's contribution onto the (padded) feature
    # pixel it read; contributions landing in the padding read zeros in the
    # forward pass and are dropped with it.
    grad_padded = np.zeros((n, h + 2 * r, w + 2 * r, g, c // g), np.float64)
    for ky in range(k):
        for kx in range(k):
            contribution = weights[..., ky, kx, None] * d
            np.add.at(grad_padded,
                      (slice(None), (src_h + ky)[:, None], (src_w + kx)[None, :]),
                      contribution)
    grad_features = grad_padded[:, r:r + h, r:r + w].reshape(n, h, w, c)
    return grad_features, grad_kernels.reshape(kernels.shape)


def carafe_reference(features, kernels, scale_factor, kernel_size, group_size):
    """Float64 reassembly of `features` (N, H, W, C) with `kernels` (N, H*s, W*s, G*k*k)."""
    _, h, w, _ = np.shape(features)
    return _reassemble(features, kernels, *_upsampling_sources(h, w, scale_factor),
                       kernel_size, group_size)


def carafe_reference_grads(grad_output, features, kernels, scale_factor, kernel_size,
                           group_size):
    """Returns (d loss / d features, d loss / d kernels) for upstream gradient `grad_output`."""
    _, h, w, _ = np.shape(features)
    return _reassemble_grads(grad_output, features, kernels,
                             *_upsampling_sources(h, w, scale_factor), kernel_size, group_size)


def carafe_downsample_reference(features, kernels, stride, kernel_size, group_size):
    """Float64 downsampling reassembly (CARAFE++) of `features` (N, H, W, C) with
    `kernels` (N, ceil(H/stride), ceil(W/stride), G*k*k):

        out[n, oh, ow, c] = sum_{ky, kx} kernels[n, oh, ow, g*k*k + ky*k + kx]
                            * features[n, oh*stride + ky - r, ow*stride + kx - r, c]
    """
    _, h, w, _ = np.shape(features)
    return _reassemble(features, kernels, *_downsampling_sources(h, w, stride),
                       kernel_size, group_size)


def carafe_downsample_reference_grads(grad_output, features, kernels, stride, kernel_size,
                                      group_size):
    """(d loss / d features, d loss / d kernels) of the downsampling reassembly."""
    _, h, w, _ = np.shape(features)
    return _reassemble_grads(grad_output, features, kernels,
                             *_downsampling_sources(h, w, stride), kernel_size, group_size)


def carafe_loops(features, kernels, scale_factor, kernel_size, group_size):
    """The formula, one output element at a time (slow; tiny inputs only)."""
    features = np.asarray(features, np.float64)
    kernels = np.asarray(kernels, np.float64)
    n, h, w, c, s, k, g, r = _geometry(features, kernels, scale_factor, kernel_size, group_size)
    out = np.zeros((n, h * s, w * s, c), np.float64)
    for b in range(n):
        for oh in range(h * s):
            for ow in range(w * s):
                for ch in range(c):
                    grp = ch // (c // g)
                    total = 0.0
                    for ky in range(k):
                        for kx in range(k):
                            y, x = oh // s + ky - r, ow // s + kx - r
                            if 0 <= y < h and 0 <= x < w:
                                total += (kernels[b, oh, ow, grp * k * k + ky * k + kx]
                                          * features[b, y, x, ch])
                    out[b, oh, ow, ch] = total
    return out


def carafe_downsample_loops(features, kernels, stride, kernel_size, group_size):
    """The downsampling formula, one output element at a time (tiny inputs only)."""
    features = np.asarray(features, np.float64)
    kernels = np.asarray(kernels, np.float64)
    n, h, w, c = features.shape
    k, g, r = kernel_size, group_size, (kernel_size - 1) // 2
    oh_count, ow_count = -(-h // stride), -(-w // stride)
    out = np.zeros((n, oh_count, ow_count, c), np.float64)
    for b in range(n):
        for oh in range(oh_count):
            for ow in range(ow_count):
                for ch in range(c):
                    grp = ch // (c // g)
                    total = 0.0
                    for ky in range(k):
                        for kx in range(k):
                            y, x = oh * stride + ky - r, ow * stride + kx - r
                            if 0 <= y < h and 0 <= x < w:
                                total += (kernels[b, oh, ow, grp * k * k + ky * k + kx]
                                          * features[b, y, x, ch])
                    out[b, oh, ow, ch] = total
    return out


def random_inputs(rng, batch, height, width, channels, scale_factor, kernel_size, group_size,
                  dtype=np.float32):
    """Features and kernels uniform in [-1, 1) for the given problem, in `dtype`."""
    s, k = scale_factor, kernel_size
    features = rng.uniform(-1.0, 1.0, (batch, height, width, channels))
    kernels = rng.uniform(-1.0, 1.0, (batch, height * s, width * s, group_size * k * k))
    return features.astype(dtype), kernels.astype(dtype)


def random_downsample_inputs(rng, batch, height, width, channels, stride, kernel_size,
                             group_size, dtype=np.float32):
    """Features and kernels uniform in [-1, 1) for a downsampling problem, in `dtype`."""
    k = kernel_size
    features = rng.uniform(-1.0, 1.0, (batch, height, width, channels))
    kernels = rng.uniform(-1.0, 1.0, (batch, -(-height // stride), -(-width // stride),
                                      group_size * k * k))
    return features.astype(dtype), kernels.astype(dtype)


def ulp(values, precision_bits, min_exponent):
    """Spacing of a binary floating-point format with `precision_bits` bits of
    significand (11 for float16, 8 for bfloat16) and smallest normal exponent
    `min_exponent` (-14, -126) at `values`."""
    exponent = np.floor(np.log2(np.maximum(np.abs(values), 2.0 ** min_exponent)))
    return 2.0 ** (exponent - (precision_bits - 1))


def error_scales(features, kernels, upstream, scale_factor, kernel_size, group_size):
    """The natural scale of rounding errors of the output and of both gradients:
    per element, the sum of |products| that forms it (the same computation on
    absolute values)."""
    f, k, d = np.abs(features), np.abs(kernels), np.abs(upstream)
    return (carafe_reference(f, k, scale_factor, kernel_size, group_size),
            *carafe_reference_grads(d, f, k, scale_factor, kernel_size, group_size))


def downsample_error_scales(features, kernels, upstream, stride, kernel_size, group_size):
    """`error_scales` of the downsampling reassembly."""
    f, k, d = np.abs(features), np.abs(kernels), np.abs(upstream)
    return (carafe_downsample_reference(f, k, stride, kernel_size, group_size),
            *carafe_downsample_reference_grads(d, f, k, stride, kernel_size, group_size))

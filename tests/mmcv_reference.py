"""Independent NumPy version of mmcv's `CARAFEPack.forward`, channels-first, float64.

Written from PyTorch's documentation of `Conv2d` and `pixel_shuffle` and from
what mmcv's CARAFEPack does with them:

    compressed = conv2d(x, channel_compressor)                         1x1, no padding
    logits     = conv2d(compressed, content_encoder,
                        padding=(k_enc - 1) * d // 2, dilation=d)
    mask       = pixel_shuffle(logits, s)                              (N, G*k*k, H*s, W*s)
    mask       = softmax over each group's k*k channels g*k*k .. g*k*k + k*k - 1
    out[n, c, oh, ow] = sum over ky, kx of mask[n, g*k*k + ky*k + kx, oh, ow]
                        * x[n, c, oh//s + ky - r, ow//s + kx - r],  g = c // (C/G)

It shares no code with keras_carafe (nor with tests/carafe_reference.py).
"""

import numpy as np


def conv2d_nchw(x, weight, bias, padding, dilation):
    """PyTorch `Conv2d` with stride 1: out[n, o, y, x] = bias[o] + sum over i, ky, kx of
    weight[o, i, ky, kx] * x_padded[n, i, y + ky*dilation, x + kx*dilation]."""
    n, c_in, h, w = x.shape
    c_out, c_in_w, kh, kw = weight.shape
    assert c_in == c_in_w, (x.shape, weight.shape)
    padded = np.zeros((n, c_in, h + 2 * padding, w + 2 * padding))
    padded[:, :, padding:padding + h, padding:padding + w] = x
    out_h = h + 2 * padding - dilation * (kh - 1)
    out_w = w + 2 * padding - dilation * (kw - 1)
    out = np.broadcast_to(bias[None, :, None, None], (n, c_out, out_h, out_w)).copy()
    for ky in range(kh):
        for kx in range(kw):
            window = padded[:, :, ky * dilation:ky * dilation + out_h,
                            kx * dilation:kx * dilation + out_w]
            out += np.einsum("oi,nihw->nohw", weight[:, :, ky, kx], window)
    return out


def pixel_shuffle(x, factor):
    """PyTorch `pixel_shuffle`: (N, C*r*r, H, W) -> (N, C, H*r, W*r) with
    out[n, c, h*r + i, w*r + j] = x[n, c*r*r + i*r + j, h, w]."""
    n, channels, h, w = x.shape
    r = factor
    assert channels % (r * r) == 0
    out = np.zeros((n, channels // (r * r), h * r, w * r))
    for c in range(channels // (r * r)):
        for i in range(r):
            for j in range(r):
                out[:, c, i::r, j::r] = x[:, c * r * r + i * r + j]
    return out


def normalize_kernels(mask, kernel_size):
    """Softmax over each group's kernel_size**2 consecutive channels."""
    n, channels, h, w = mask.shape
    taps = kernel_size * kernel_size
    grouped = mask.reshape(n, channels // taps, taps, h, w)
    exp = np.exp(grouped - grouped.max(axis=2, keepdims=True))
    return (exp / exp.sum(axis=2, keepdims=True)).reshape(mask.shape)


def reassemble(x, mask, kernel_size, group_size, scale_factor):
    """mmcv's CARAFE reassembly of x (N, C, H, W) with mask (N, G*k*k, H*s, W*s)."""
    n, channels, h, w = x.shape
    k, s = kernel_size, scale_factor
    r = (k - 1) // 2
    per_group = channels // group_size
    out = np.zeros((n, channels, h * s, w * s))
    for oh in range(h * s):
        for ow in range(w * s):
            for ky in range(k):
                for kx in range(k):
                    y, x_ = oh // s + ky - r, ow // s + kx - r
                    if not (0 <= y < h and 0 <= x_ < w):
                        continue
                    for c in range(channels):
                        tap = (c // per_group) * k * k + ky * k + kx
                        out[:, c, oh, ow] += mask[:, tap, oh, ow] * x[:, c, y, x_]
    return out


def carafe_pack_forward(x, params, scale_factor, up_kernel, up_group, encoder_kernel,
                        encoder_dilation):
    """`CARAFEPack.forward` on x (N, C, H, W) with the state dict `params`."""
    x = np.asarray(x, np.float64)
    params = {name: np.asarray(value, np.float64) for name, value in params.items()}
    compressed = conv2d_nchw(x, params["channel_compressor.weight"],
                             params["channel_compressor.bias"], padding=0, dilation=1)
    logits = conv2d_nchw(compressed, params["content_encoder.weight"],
                         params["content_encoder.bias"],
                         padding=(encoder_kernel - 1) * encoder_dilation // 2,
                         dilation=encoder_dilation)
    mask = normalize_kernels(pixel_shuffle(logits, scale_factor), up_kernel)
    return reassemble(x, mask, up_kernel, up_group, scale_factor)


def random_carafe_pack_parameters(rng, channels, scale_factor, up_kernel, up_group,
                                  encoder_kernel, compressed_channels):
    """A CARAFEPack state dict with entries of order 1, so that the kernels are far
    from uniform and a misplaced encoder channel changes the output."""
    logits = scale_factor ** 2 * up_group * up_kernel ** 2
    return {
        "channel_compressor.weight": rng.standard_normal((compressed_channels, channels, 1, 1)),
        "channel_compressor.bias": rng.standard_normal(compressed_channels),
        "content_encoder.weight": rng.standard_normal(
            (logits, compressed_channels, encoder_kernel, encoder_kernel)) / encoder_kernel,
        "content_encoder.bias": rng.standard_normal(logits),
    }

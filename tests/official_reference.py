"""Independent NumPy versions of the official FADE, SAPA and DySample forward passes,
channels-first, float64, on their PyTorch `state_dict`s.

Written from the official modules' code paths and PyTorch's documentation of
the functions they call; nothing here comes from keras_carafe:

- FADE (`poppinace/fade`, `FADE_L2H.FADE`): gate = sigmoid(nearest x s of a 1x1
  convolution of the decoder feature); kernels = softmax over channels of
  `content_encoder(compressor_en(en)) + nearest(content_encoder(compressor_de(de)))`
  (the decoder compressor without bias, one content encoder for both);
  out = gate * en + (1 - gate) * carafe(de, kernels). `FADE_H2L.FADE` computes
  the same kernels at the low resolution from four padded shifts of the
  compressed encoder feature and a stride-2 convolution (`fade_h2l_kernels`).
- SAPA (`poppinace/sapa`, `SAPA.SAPA`): LayerNorm of both inputs over channels,
  linear query/key projections, `sim` (dot products with the k x k keys around
  each query's source pixel, zero outside the image), softmax, and the
  reassembly `atn` of the raw decoder feature.
- DySample (`tiny-smart/dysample`, `dysample.DySample`): offsets from a 1x1
  convolution (of the input, or of its pixel shuffle for style "pl"), scaled
  by 0.25 or 0.5 * sigmoid(scope), plus `init_pos`, added to the pixel
  centres, normalized to [-1, 1], pixel-shuffled, and `grid_sample`d
  bilinearly with border padding and align_corners=False.

The reassembly and the convolutions are those of `mmcv_reference`, itself
independent of keras_carafe.
"""

import numpy as np

from mmcv_reference import conv2d_nchw, pixel_shuffle, reassemble


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def softmax_channels(x, groups=1):
    """Softmax over each group's consecutive channels of (N, G*T, H, W)."""
    n, channels, h, w = x.shape
    grouped = x.reshape(n, groups, channels // groups, h, w)
    e = np.exp(grouped - grouped.max(axis=2, keepdims=True))
    return (e / e.sum(axis=2, keepdims=True)).reshape(x.shape)


def nearest(x, scale):
    """`F.interpolate(x, scale_factor=scale)` (mode "nearest") for an integer scale."""
    return x.repeat(scale, axis=2).repeat(scale, axis=3)


def conv(x, weight, bias=None, padding=0, stride=1):
    """PyTorch Conv2d; `bias=None` for a convolution without bias."""
    bias = np.zeros(weight.shape[0]) if bias is None else bias
    out = conv2d_nchw(x, weight, bias, padding=padding, dilation=1)
    return out[:, :, ::stride, ::stride]


# --- FADE -------------------------------------------------------------------------------


def fade_forward(en, de, params, scale_factor=2, up_kernel=5, gated=True, prefix=""):
    """`FADE_L2H.FADE` (or `SemiShiftUp` with `gated=False`) on (N, C, sH, sW), (N, C, H, W)."""
    en, de = np.asarray(en, np.float64), np.asarray(de, np.float64)
    p = {name[len(prefix):]: np.asarray(v, np.float64) for name, v in params.items()
         if name.startswith(prefix)}
    g = "ker_generator."
    content_w, content_b = p[g + "content_encoder.weight"], p[g + "content_encoder.bias"]
    pad = content_w.shape[-1] // 2
    enc = conv(en, p[g + "compressor_en.weight"], p[g + "compressor_en.bias"])
    dec = conv(de, p[g + "compressor_de.weight"])
    logits = (conv(enc, content_w, content_b, padding=pad)
              + nearest(conv(dec, content_w, content_b, padding=pad), scale_factor))
    kernels = softmax_channels(logits)
    up = reassemble(de, kernels, up_kernel, 1, scale_factor)
    if not gated:
        return up
    gate = sigmoid(nearest(conv(de, p["gate_generator.conv.weight"],
                                p["gate_generator.conv.bias"]), scale_factor))
    return gate * en + (1 - gate) * up


def fade_h2l_kernels(en, de, params):
    """The kernel logits of `FADE_H2L.SemiShift` (scale 2, square images), (N, k*k, 2H, 2W)."""
    p = {name: np.asarray(v, np.float64) for name, v in params.items()}
    g = "kernel_generator."
    n, _, h, w = de.shape
    weight, bias = p[g + "conv2_kernels"], p[g + "conv2_bias"]
    compressed_en = conv(en, p[g + "conv1_en.weight"], p[g + "conv1_en.bias"])
    compressed_de = conv(de, p[g + "conv1_de.weight"])
    # F.pad's (left, right, top, bottom): each pad moves the stride-2 grid onto one of
    # the four sub-pixels of every low-resolution pixel.
    phases = []
    for left, right, top, bottom in ((1, 0, 1, 0), (0, 1, 1, 0), (1, 0, 0, 1), (0, 1, 0, 1)):
        padded = np.pad(compressed_en, ((0, 0), (0, 0), (top, bottom), (left, right)))
        phases.append(conv(padded, weight, bias, stride=2))
    low = conv(compressed_de, weight, bias, padding=1)
    taps = weight.shape[0]
    kernels = np.stack(phases, axis=1) + low[:, None]  # (N, 4, k*k, H, W), phase i*2 + j
    # space_reassemble: channel (i*2 + j)*k*k + t of pixel (h, w) -> channel t of (2h+i, 2w+j).
    out = np.zeros((n, taps, 2 * h, 2 * w))
    for i in range(2):
        for j in range(2):
            out[:, :, i::2, j::2] = kernels[:, i * 2 + j]
    return out


def fade_h2l_forward(en, de, params, up_kernel=5):
    """`FADE_H2L.FADE` (scale 2)."""
    en, de = np.asarray(en, np.float64), np.asarray(de, np.float64)
    kernels = softmax_channels(fade_h2l_kernels(en, de, params))
    up = reassemble(de, kernels, up_kernel, 1, 2)
    gate = sigmoid(nearest(conv(de, np.asarray(params["gate_generator.conv.weight"]),
                                np.asarray(params["gate_generator.conv.bias"])), 2))
    return gate * en + (1 - gate) * up


def random_fade_parameters(rng, channels, embedding=8, up_kernel=5, encoder_kernel=3,
                           gated=True):
    """A `FADE_L2H.FADE` state dict with entries of order 1 (kernels far from uniform)."""
    taps = up_kernel ** 2
    params = {
        "ker_generator.compressor_en.weight": rng.standard_normal((embedding, channels, 1, 1)),
        "ker_generator.compressor_en.bias": rng.standard_normal(embedding),
        "ker_generator.compressor_de.weight": rng.standard_normal((embedding, channels, 1, 1)),
        "ker_generator.content_encoder.weight": rng.standard_normal(
            (taps, embedding, encoder_kernel, encoder_kernel)) / encoder_kernel,
        "ker_generator.content_encoder.bias": rng.standard_normal(taps),
    }
    if gated:
        params["gate_generator.conv.weight"] = rng.standard_normal((1, channels, 1, 1))
        params["gate_generator.conv.bias"] = rng.standard_normal(1)
    return params


# --- SAPA -------------------------------------------------------------------------------


def layer_norm_channels(x, weight, bias, eps):
    """`nn.LayerNorm(C)` applied to every pixel of (N, C, H, W) (biased variance)."""
    mean = x.mean(axis=1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight[None, :, None, None] + bias[None, :, None, None]


def linear_channels(x, weight, bias):
    """`nn.Linear` over the channels of (N, C, H, W)."""
    out = np.einsum("nchw,ec->nehw", x, weight)
    return out if bias is None else out + bias[None, :, None, None]


def query_key_similarity(q, k, kernel_size, scale_factor, groups=1):
    """SAPA's `sim` (groups of consecutive channels, one in the official code):
    out[n, g*k*k + ky*k + kx, oh, ow] = sum over c in g of q[n, c, oh, ow] *
    k[n, c, oh//s + ky - r, ow//s + kx - r], zero outside the image."""
    n, e, oh, ow = q.shape
    _, _, h, w = k.shape
    r, per = (kernel_size - 1) // 2, e // groups
    out = np.zeros((n, groups * kernel_size ** 2, oh, ow))
    for y_out in range(oh):
        for x_out in range(ow):
            for ky in range(kernel_size):
                for kx in range(kernel_size):
                    y, x = y_out // scale_factor + ky - r, x_out // scale_factor + kx - r
                    if not (0 <= y < h and 0 <= x < w):
                        continue
                    for g in range(groups):
                        c = slice(g * per, (g + 1) * per)
                        out[:, g * kernel_size ** 2 + ky * kernel_size + kx, y_out, x_out] = (
                            q[:, c, y_out, x_out] * k[:, c, y, x]).sum(axis=1)
    return out


def sapa_forward(y, x, params, scale_factor=2, up_kernel=5, groups=1, eps=1e-5):
    """`SAPA.SAPA.forward(y, x)`: y the encoder feature (N, C_y, sH, sW), x the decoder
    feature (N, C_x, H, W)."""
    y, x = np.asarray(y, np.float64), np.asarray(x, np.float64)
    p = {name: np.asarray(v, np.float64) for name, v in params.items()}
    y_normed = layer_norm_channels(y, p["norm_y.weight"], p["norm_y.bias"], eps)
    x_normed = layer_norm_channels(x, p["norm_x.weight"], p["norm_x.bias"], eps)
    q = linear_channels(y_normed, p["q.weight"], p.get("q.bias"))
    k = linear_channels(x_normed, p["k.weight"], p.get("k.bias"))
    attention = softmax_channels(query_key_similarity(q, k, up_kernel, scale_factor, groups),
                                 groups)
    return reassemble(x, attention, up_kernel, groups, scale_factor)


def random_sapa_parameters(rng, decoder_channels, encoder_channels, embedding=8, use_bias=True):
    params = {
        "norm_y.weight": 1 + 0.3 * rng.standard_normal(encoder_channels),
        "norm_y.bias": 0.3 * rng.standard_normal(encoder_channels),
        "norm_x.weight": 1 + 0.3 * rng.standard_normal(decoder_channels),
        "norm_x.bias": 0.3 * rng.standard_normal(decoder_channels),
        "q.weight": rng.standard_normal((embedding, encoder_channels)) / np.sqrt(encoder_channels),
        "k.weight": rng.standard_normal((embedding, decoder_channels)) / np.sqrt(decoder_channels),
    }
    if use_bias:
        params["q.bias"] = 0.3 * rng.standard_normal(embedding)
        params["k.bias"] = 0.3 * rng.standard_normal(embedding)
    return params


# --- DySample ---------------------------------------------------------------------------


def pixel_unshuffle(x, factor):
    """PyTorch `pixel_unshuffle`: out[n, c*r*r + i*r + j, h, w] = x[n, c, h*r + i, w*r + j]."""
    n, c, hr, wr = x.shape
    r = factor
    out = np.zeros((n, c * r * r, hr // r, wr // r))
    for ch in range(c):
        for i in range(r):
            for j in range(r):
                out[:, ch * r * r + i * r + j] = x[:, ch, i::r, j::r]
    return out


def init_pos(scale, groups):
    """The official `_init_pos` buffer, (1, 2*G*s*s, 1, 1)."""
    h = np.arange((-scale + 1) / 2, (scale - 1) / 2 + 1) / scale
    grid = np.stack(np.meshgrid(h, h, indexing="ij")).transpose(0, 2, 1)
    return np.tile(grid, (1, groups, 1)).reshape(1, -1, 1, 1)


def grid_sample_border(x, grid):
    """`F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)`:
    x (B, C, H, W), grid (B, OH, OW, 2) holding (x, y) in [-1, 1]."""
    b, c, h, w = x.shape
    ix = np.clip(((grid[..., 0] + 1) * w - 1) / 2, 0, w - 1)
    iy = np.clip(((grid[..., 1] + 1) * h - 1) / 2, 0, h - 1)
    x0, y0 = np.floor(ix).astype(int), np.floor(iy).astype(int)
    out = np.zeros((b, c) + grid.shape[1:3])
    for dy in (0, 1):
        for dx in (0, 1):
            xs, ys = x0 + dx, y0 + dy
            weight = (1 - np.abs(ix - xs)) * (1 - np.abs(iy - ys))
            inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
            weight = np.where(inside, weight, 0.0)
            xs, ys = np.clip(xs, 0, w - 1), np.clip(ys, 0, h - 1)
            for n in range(b):
                out[n] += x[n][:, ys[n], xs[n]] * weight[n][None]
    return out


def dysample_forward(x, params, scale=2, groups=4, style="lp", dyscope=False):
    """`dysample.DySample.forward` on x (B, C, H, W)."""
    x = np.asarray(x, np.float64)
    p = {name: np.asarray(v, np.float64) for name, v in params.items()}
    b, c, h, w = x.shape
    source = x if style == "lp" else pixel_shuffle(x, scale)
    offset = conv(source, p["offset.weight"], p["offset.bias"])
    if dyscope:
        offset = offset * sigmoid(conv(source, p["scope.weight"])) * 0.5
    else:
        offset = offset * 0.25
    if style == "pl":
        offset = pixel_unshuffle(offset, scale)
    offset = offset + init_pos(scale, groups)
    # sample(): pixel centres plus offsets, normalized by (W, H), pixel-shuffled.
    offset = offset.reshape(b, 2, -1, h, w)
    centres = np.stack(np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5, indexing="xy"))
    coords = centres[None, :, None] + offset
    coords = 2 * coords / np.array([w, h], np.float64).reshape(1, 2, 1, 1, 1) - 1
    coords = pixel_shuffle(coords.reshape(b, -1, h, w), scale).reshape(
        b, 2, -1, scale * h, scale * w).transpose(0, 2, 3, 4, 1).reshape(
        b * groups, scale * h, scale * w, 2)
    sampled = grid_sample_border(x.reshape(b * groups, -1, h, w), coords)
    return sampled.reshape(b, c, scale * h, scale * w)


def random_dysample_parameters(rng, channels, scale=2, groups=4, style="lp", dyscope=False,
                               offset_std=1.0):
    """A `DySample` state dict; offsets of order `offset_std` input pixels reach across
    pixels and past the border."""
    inputs = channels if style == "lp" else channels // scale ** 2
    outputs = 2 * groups * scale ** 2 if style == "lp" else 2 * groups
    params = {
        "offset.weight": rng.standard_normal((outputs, inputs, 1, 1)) * offset_std
        / np.sqrt(inputs),
        "offset.bias": rng.standard_normal(outputs) * offset_std,
        "init_pos": init_pos(scale, groups),
    }
    if dyscope:
        params["scope.weight"] = rng.standard_normal((outputs, inputs, 1, 1)) / np.sqrt(inputs)
    return params

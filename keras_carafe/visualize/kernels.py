"""NumPy analysis of reassembly kernels: entropy, fixed equivalents, composition.

All functions take kernels in the layout of `compute_kernels` for one image
and one channel group: an array `(OH, OW, k, k)` whose entry `[oh, ow, ky, kx]`
is the weight that output pixel `(oh, ow)` gives to input pixel
`(sy + ky - r, sx + kx - r)`, with `r = (k - 1) // 2` and `(sy, sx)` the
output pixel's source pixel:

- `CARAFE` (upsampling by `scale_factor = s`): `(oh // s, ow // s)`, and
  `(OH, OW) = (H*s, W*s)`;
- `CARAFEDownsample` (`stride = s`): `(oh * s, ow * s)`, and
  `(OH, OW) = (ceil(H/s), ceil(W/s))`.

Functions that need the source pixel take `scale_factor` and `stride`; a
reassembly has at most one of them above 1.
"""

import numpy as np


def kernel_entropy(kernels):
    """Shannon entropy (natural log) of each k x k kernel.

    A kernel that spreads its mass uniformly over the k*k taps has entropy
    `log(k * k)`; one that puts all of it on a single tap has entropy 0.

    Args:
        kernels: array `(..., k, k)` of non-negative weights summing to 1
            over the last two axes.

    Returns:
        Array of the leading shape `(...)`.
    """
    p = np.asarray(kernels, np.float64)
    # 0 * log 0 is 0; `where` keeps log away from exact zeros.
    logs = np.log(p, out=np.zeros_like(p), where=p > 0)
    return -(p * logs).sum(axis=(-2, -1))


def bilinear_kernels(scale_factor, kernel_size=3):
    """The fixed kernels with which bilinear upsampling reassembles its input.

    Bilinear upsampling with half-pixel centers (Keras `UpSampling2D`,
    `tf.image.resize`) is a reassembly whose kernel depends only on the
    output pixel's phase `(oh % s, ow % s)`; these are those kernels in the
    CARAFE layout, so they can be drawn next to learned ones or fed to
    `keras_carafe.ops.carafe`. Away from the image border both give the
    same result.

    Args:
        scale_factor: int `s >= 1`.
        kernel_size: odd int `k >= 3` (bilinear reads at most one pixel on
            each side of the source pixel).

    Returns:
        Array `(s, s, k, k)`: entry `[py, px]` is the kernel of output pixels
        with `oh % s == py` and `ow % s == px`.
    """
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"`kernel_size` must be an odd integer >= 3, got {kernel_size}")
    s, k = scale_factor, kernel_size
    r = (k - 1) // 2
    weights_1d = np.zeros((s, k))
    for phase in range(s):
        # Offset of the sampled position from the source pixel's center, in input pixels.
        offset = (phase + 0.5) / s - 0.5
        low = int(np.floor(offset))
        frac = offset - low
        weights_1d[phase, r + low] += 1.0 - frac
        weights_1d[phase, r + low + 1] += frac
    return np.einsum("ay,bx->abyx", weights_1d, weights_1d)


def bilinear_kernel_map(height, width, scale_factor, kernel_size=3, clamp_border=False):
    """Bilinear upsampling's kernels for every output pixel of a `(height, width)` input.

    Args:
        height: the input's height.
        width: the input's width.
        scale_factor: int `s >= 1`.
        kernel_size: odd int `k >= 3`.
        clamp_border: False gives the interior kernels everywhere, so that
            at the border some weight falls outside the input (on the zero
            padding of a CARAFE reassembly); True moves that weight onto the
            edge pixel, as bilinear resizing (Keras `UpSampling2D`,
            `tf.image.resize`) does, so that reassembling with these kernels
            is exactly that upsampling.

    Returns:
        Array `(height*s, width*s, k, k)` in the CARAFE layout.
    """
    s = scale_factor
    phases = bilinear_kernels(s, kernel_size)
    rows = np.arange(height * s) % s
    cols = np.arange(width * s) % s
    kernels = phases[rows[:, None], cols[None, :]]
    if clamp_border:
        r = (kernel_size - 1) // 2
        kernels = kernels.copy()
        # Bilinear reads at most one pixel on either side of the source pixel.
        for axis, size in ((-2, height), (-1, width)):
            first = np.arange(size * s) // s == 0
            last = np.arange(size * s) // s == size - 1
            view = np.moveaxis(kernels, (axis - 2, axis), (0, 1))
            view[first, r] += view[first, r - 1]
            view[first, r - 1] = 0.0
            view[last, r] += view[last, r + 1]
            view[last, r + 1] = 0.0
    return kernels


def average_pooling_kernel(stride, kernel_size):
    """Average pooling by `stride`, written as a downsampling reassembly kernel.

    `AveragePooling2D(stride)` gives output pixel `(oh, ow)` the mean of the
    `stride x stride` block that starts at input pixel
    `(oh * stride, ow * stride)`: in the `CARAFEDownsample` layout, whose
    window is centred on that pixel, the block's taps are at offsets
    `0 .. stride - 1` right of and below the center. Drawn next to learned
    kernels (broadcast to their shape), it is the fixed baseline.

    Args:
        stride: int >= 1.
        kernel_size: odd int `k >= 2 * stride - 1`, so that the block fits.

    Returns:
        Array `(k, k)` summing to 1.
    """
    _, stride = _check_geometry(1, stride)
    if (not isinstance(kernel_size, (int, np.integer)) or kernel_size % 2 == 0
            or kernel_size < 2 * stride - 1):
        raise ValueError(f"`kernel_size` must be an odd integer >= 2 * stride - 1 = "
                         f"{2 * stride - 1} to hold a {stride}x{stride} block, "
                         f"got {kernel_size}")
    r = (kernel_size - 1) // 2
    kernel = np.zeros((kernel_size, kernel_size))
    kernel[r:r + stride, r:r + stride] = 1.0 / (stride * stride)
    return kernel


def _pull_back(weights, kernels, scale_factor):
    """Distributes weights on a layer's output over its input through its kernels."""
    s = scale_factor
    k = kernels.shape[-1]
    r = (k - 1) // 2
    out_h, out_w = weights.shape
    in_h, in_w = out_h // s, out_w // s
    # Taps that fall outside the input read CARAFE's zero padding: their
    # weight leaves the image, exactly as it does in the layer.
    padded = np.zeros((in_h + 2 * r, in_w + 2 * r))
    ys, xs = np.nonzero(weights)
    w = weights[ys, xs]
    for ky in range(k):
        for kx in range(k):
            np.add.at(padded, (ys // s + ky, xs // s + kx), w * kernels[ys, xs, ky, kx])
    return padded[r:r + in_h, r:r + in_w]


def compose_kernels(kernels, scale_factors, pixel):
    """The weights with which one output pixel of stacked CARAFE layers reads the first input.

    Stacked reassemblies are linear in the features once their kernels are
    fixed, so one output pixel of the last layer is a weighted sum of the
    first layer's input pixels; this returns those weights (the composed
    kernel). Away from the border they sum to 1 because every kernel does.

    Args:
        kernels: list of arrays, the first layer's first; layer `l`'s array is
            `(H_l * s_l, W_l * s_l, k_l, k_l)` for one image and one group,
            and its output size must equal the next layer's input size.
        scale_factors: list of ints, the layers' scale factors.
        pixel: `(row, col)` of the output pixel of the last layer.

    Returns:
        Array `(H_0, W_0)` over the first layer's input.
    """
    _check_chain(kernels, scale_factors)
    weights = np.zeros(kernels[-1].shape[:2])
    weights[pixel] = 1.0
    for layer_kernels, s in zip(reversed(kernels), reversed(scale_factors)):
        weights = _pull_back(weights, np.asarray(layer_kernels, np.float64), s)
    return weights


def _check_chain(kernels, scale_factors):
    if len(kernels) != len(scale_factors):
        raise ValueError(
            f"got {len(kernels)} kernel arrays but {len(scale_factors)} scale factors")
    for lower, upper, s in zip(kernels[:-1], kernels[1:], scale_factors[1:]):
        if (lower.shape[0], lower.shape[1]) != (upper.shape[0] // s, upper.shape[1] // s):
            raise ValueError(
                f"a layer's output {lower.shape[:2]} does not feed the next layer's "
                f"kernels {upper.shape[:2]} at scale {s}")


def _push_forward(values, kernels, scale_factor):
    """Reassembles `(H, W, P)` values with a layer's kernels: the layer's own forward pass."""
    s = scale_factor
    k = kernels.shape[-1]
    r = (k - 1) // 2
    # Zero padding, as in the layer: weight on taps outside the input is lost.
    padded = np.pad(values, ((r, r), (r, r), (0, 0)))
    rows = (np.arange(kernels.shape[0]) // s)[:, None]
    cols = (np.arange(kernels.shape[1]) // s)[None, :]
    out = np.zeros(kernels.shape[:2] + values.shape[2:])
    for ky in range(k):
        for kx in range(k):
            out += kernels[:, :, ky, kx, None] * padded[rows + ky, cols + kx]
    return out


def spread_kernels(kernels, scale_factors, pixels):
    """Where single input pixels of stacked CARAFE layers end up in the last layer's output.

    The transpose of `compose_kernels`: for a pixel `p` of the first layer's
    input, the weight with which every output pixel of the last layer reads
    `p` through all the layers' kernels (their composed reassembly weights,
    seen from the input side). This is where the content of a point on a
    coarse feature level lands after several upsamplings; `spread[q]` equals
    `compose_kernels(kernels, scale_factors, q)[p]` for every output pixel `q`.

    Args:
        kernels: list of arrays as in `compose_kernels`, the first layer's
            first.
        scale_factors: list of ints, the layers' scale factors.
        pixels: list of `(row, col)` pixels of the first layer's input.

    Returns:
        Array `(len(pixels), H_L, W_L)` over the last layer's output.
    """
    kernels = [np.asarray(k, np.float64) for k in kernels]
    _check_chain(kernels, scale_factors)
    in_h, in_w = kernels[0].shape[0] // scale_factors[0], kernels[0].shape[1] // scale_factors[0]
    values = np.zeros((in_h, in_w, len(pixels)))
    for i, (row, col) in enumerate(pixels):
        if not (0 <= row < in_h and 0 <= col < in_w):
            raise ValueError(f"pixel {(row, col)} lies outside the first layer's "
                             f"{in_h}x{in_w} input")
        values[row, col, i] = 1.0
    for layer_kernels, s in zip(kernels, scale_factors):
        values = _push_forward(values, layer_kernels, s)
    return np.moveaxis(values, -1, 0)


def _pull_back_maps(values, kernels, scale_factor):
    """The transpose of `_push_forward`: `(OH, OW, P)` values on a layer's output to its input."""
    s = scale_factor
    k = kernels.shape[-1]
    r = (k - 1) // 2
    out_h, out_w = kernels.shape[:2]
    in_h, in_w = out_h // s, out_w // s
    padded = np.zeros((in_h + 2 * r, in_w + 2 * r) + values.shape[2:])
    for ky in range(k):
        for kx in range(k):
            # The s x s output pixels of one source pixel read the same window.
            read = (kernels[:, :, ky, kx, None] * values).reshape(in_h, s, in_w, s, -1)
            padded[ky:ky + in_h, kx:kx + in_w] += read.sum(axis=(1, 3))
    return padded[r:r + in_h, r:r + in_w]


def spread_weight_on(kernels, scale_factors, maps):
    """For every input pixel of stacked CARAFE layers, its spread weighted by each map.

    `spread_weight_on(kernels, factors, maps)[i][p]` equals
    `(spread_kernels(kernels, factors, [p])[0] * maps[i]).sum()`: how much of
    pixel `p`'s content reaches the last layer's output where `maps[i]`
    says (a mask of an object, or all ones for the total). One pass through
    the layers serves every input pixel at once.

    Args:
        kernels: list of arrays as in `compose_kernels`, the first layer's
            first.
        scale_factors: list of ints, the layers' scale factors.
        maps: array `(P, H_L, W_L)` over the last layer's output.

    Returns:
        Array `(P, H_0, W_0)` over the first layer's input.
    """
    kernels = [np.asarray(k, np.float64) for k in kernels]
    _check_chain(kernels, scale_factors)
    maps = np.asarray(maps, np.float64)
    if maps.ndim != 3 or maps.shape[1:] != kernels[-1].shape[:2]:
        raise ValueError(f"`maps` must be (P, {kernels[-1].shape[0]}, "
                         f"{kernels[-1].shape[1]}) over the last layer's output, got "
                         f"{maps.shape}")
    values = np.moveaxis(maps, 0, -1)
    for layer_kernels, s in zip(reversed(kernels), reversed(scale_factors)):
        values = _pull_back_maps(values, layer_kernels, s)
    return np.moveaxis(values, -1, 0)


def _check_geometry(scale_factor=1, stride=1):
    """Checks a reassembly's geometry: up by `scale_factor` or down by `stride`.

    Returns:
        `(scale_factor, stride)` as ints.

    Raises:
        ValueError: either is not an integer >= 1, or both exceed 1.
    """
    for name, value in (("scale_factor", scale_factor), ("stride", stride)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}")
    if scale_factor > 1 and stride > 1:
        raise ValueError(
            "a reassembly either upsamples (`scale_factor` > 1, CARAFE) or downsamples "
            f"(`stride` > 1, CARAFEDownsample): got scale_factor={scale_factor} and "
            f"stride={stride}")
    return int(scale_factor), int(stride)


def source_pixel(pixel, scale_factor=1, stride=1):
    """The input pixel on which an output pixel's k x k window is centred.

    Args:
        pixel: `(row, col)` of the output pixel.
        scale_factor: int, the upsampling factor of a `CARAFE` layer (1 for
            downsampling).
        stride: int, the stride of a `CARAFEDownsample` layer (1 for
            upsampling).

    Returns:
        `(row, col)` at input resolution: `pixel // scale_factor` when
        upsampling, `pixel * stride` when downsampling.
    """
    scale_factor, stride = _check_geometry(scale_factor, stride)
    return tuple(int(p) // scale_factor * stride for p in pixel)


def neighbourhood(image, pixel, scale_factor, kernel_size, stride=1):
    """The k x k input window that one output pixel's kernel weights.

    Args:
        image: array `(H, W)` or `(H, W, C)` at input resolution.
        pixel: `(row, col)` of the output pixel.
        scale_factor: int `s` of an upsampling layer; 1 with `stride`.
        kernel_size: odd int `k`.
        stride: int, the stride of a downsampling layer (`CARAFEDownsample`);
            1 (the default) for upsampling.

    Returns:
        Array `(k, k)` or `(k, k, C)`, centred on `source_pixel(pixel,
        scale_factor, stride)`, zero where the window leaves the image (as
        the reassembly pads).
    """
    image = np.asarray(image)
    r = (kernel_size - 1) // 2
    cy, cx = source_pixel(pixel, scale_factor, stride)
    pad = [(r, r), (r, r)] + [(0, 0)] * (image.ndim - 2)
    padded = np.pad(image, pad)
    return padded[cy:cy + kernel_size, cx:cx + kernel_size]


def strongest_tap(kernels):
    """Where each kernel puts its largest weight, as an offset from the source pixel.

    Args:
        kernels: array `(..., k, k)` in the CARAFE layout (tap `(r, r)`, with
            `r = (k - 1) // 2`, reads the output pixel's source pixel).

    Returns:
        `(dy, dx)`: int arrays of the leading shape `(...)`, each in
        `[-r, r]`; ties go to the first tap in row-major order.
    """
    kernels = np.asarray(kernels)
    k = kernels.shape[-1]
    r = (k - 1) // 2
    flat = kernels.reshape(*kernels.shape[:-2], k * k).argmax(axis=-1)
    return flat // k - r, flat % k - r


def kernel_centroid(kernels):
    """The center of mass of every kernel, as an offset from the source pixel.

    Where `strongest_tap` gives the single heaviest tap, this weighs all of
    them: a kernel that leans towards one side of its window has its
    centroid there, a symmetric one at `(0, 0)`.

    Args:
        kernels: array `(..., k, k)` of non-negative weights, each kernel
            with a positive sum.

    Returns:
        `(dy, dx)`: float64 arrays of the leading shape `(...)`, in input
        pixels, each in `[-r, r]`.
    """
    kernels = np.asarray(kernels, np.float64)
    k = kernels.shape[-1]
    offsets = np.arange(k) - (k - 1) // 2
    total = kernels.sum(axis=(-2, -1))
    dy = (kernels.sum(axis=-1) * offsets).sum(axis=-1) / total
    dx = (kernels.sum(axis=-2) * offsets).sum(axis=-1) / total
    return dy, dx


def shift_kernels(kernels, offset):
    """Moves the weights of every kernel by `offset = (dy, dx)` taps, without wrapping.

    Weights pushed past the kernel's edge are dropped, vacated taps become
    0. Typical use: a fixed kernel (e.g. bilinear's) moved to where learned
    kernels put their mass (`strongest_tap`), to compare shapes rather than
    positions.

    Args:
        kernels: array `(..., k, k)`.
        offset: `(dy, dx)` ints; positive moves weights down / right.

    Returns:
        Array shaped like `kernels`.
    """
    kernels = np.asarray(kernels)
    k = kernels.shape[-1]
    dy, dx = (int(v) for v in offset)
    shifted = np.zeros_like(kernels)
    if abs(dy) < k and abs(dx) < k:
        shifted[..., max(dy, 0):k + min(dy, 0), max(dx, 0):k + min(dx, 0)] = \
            kernels[..., max(-dy, 0):k + min(-dy, 0), max(-dx, 0):k + min(-dx, 0)]
    return shifted


def kernel_distance(kernels, reference):
    """Total variation distance between two kernels at every output pixel.

    Half the summed absolute difference of the weights: 0 for identical
    kernels, 1 for kernels without a common tap. Against
    `bilinear_kernel_map` it measures how far learned kernels depart from
    fixed interpolation.

    Args:
        kernels: array `(..., k, k)`.
        reference: array of the same shape as `kernels`.

    Returns:
        Array of the leading shape `(...)`.
    """
    kernels, reference = np.asarray(kernels, np.float64), np.asarray(reference, np.float64)
    if kernels.shape != reference.shape:
        raise ValueError(f"`kernels` {kernels.shape} and `reference` {reference.shape} "
                         "must have the same shape")
    return 0.5 * np.abs(kernels - reference).sum(axis=(-2, -1))


def edge_strength(image):
    """Gradient magnitude of a grey-scale image.

    Central differences inside the image, one-sided ones at its border.

    Args:
        image: array `(H, W)`.

    Returns:
        Float64 array `(H, W)`.
    """
    image = np.asarray(image, np.float64)
    if image.ndim != 2:
        raise ValueError(f"`image` must be a grey-scale (H, W) array, got shape {image.shape}")
    dy, dx = np.gradient(image)
    return np.hypot(dy, dx)


def mean_by_quantile(values, strength, bins=8):
    """Averages `values` within equally populated bins of `strength`.

    Typical use: kernel entropy at every output pixel, binned by the edge
    strength there, to see whether kernels sharpen on edges.

    Args:
        values: array.
        strength: array of the same shape as `values`.
        bins: number of bins; each holds (about) the same number of pixels,
            sorted by `strength`.

    Returns:
        `(centers, means)`: two arrays `(bins,)`, the mean `strength` and the
        mean `values` of each bin, weakest bin first.
    """
    values, strength = np.asarray(values, np.float64), np.asarray(strength, np.float64)
    if values.shape != strength.shape:
        raise ValueError(f"`values` {values.shape} and `strength` {strength.shape} "
                         "must have the same shape")
    if not 1 <= bins <= values.size:
        raise ValueError(f"`bins` must be between 1 and the number of values ({values.size}), "
                         f"got {bins}")
    order = np.argsort(strength, axis=None, kind="stable")
    groups = np.array_split(order, bins)
    flat_values, flat_strength = values.ravel(), strength.ravel()
    centers = np.array([flat_strength[g].mean() for g in groups])
    means = np.array([flat_values[g].mean() for g in groups])
    return centers, means

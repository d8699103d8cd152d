"""The reassembly written with `keras.ops` only: every backend, every exporter.

Two formulations, chosen by measurement (README, "Choosing the portable
formulation"), both at *cell* resolution (see `geometry`): for upsampling
every input pixel is combined once with the `s * s` kernels of the output
pixels that read it, so nothing at output resolution is built before the
final pixel shuffle.

- The tap sum (`fused=True`): a sum over the `k * k` taps of the zero-padded
  features, each tap a strided slice multiplied by its weights. XLA (JAX,
  TensorFlow with `jit_compile=True`) fuses it into a few loops over the
  output; run one operation at a time it makes `k * k` full-size passes.
- Patches and a matmul (`fused=False`): the `k * k` slices stacked into one
  patch tensor, then one batched matmul of rank 4 per cell. Faster where
  operations run one at a time (PyTorch eager, TensorFlow graphs, exported
  models), at the cost of a patch tensor `k * k` times the features.

Only pad, strided slice, stack, concatenate, reshape, transpose (rank 5 at
most), multiply, add, matmul, select (`where`, masking the weights of taps
outside the image) and cast are used: no data-dependent control flow, no
gather, no custom op, no tensor of rank above 5. Gradients come from each
backend's autodiff.
"""

import numpy as np
from keras import ops

from keras_carafe.ops.pixel_shuffle import depth_to_space, space_to_depth
from keras_carafe.ops.validation import dtype_name


def _windows(padded, geometry):
    """Yields (tap, window): the features each cell reads at tap `ky * k + kx`, (N, Hc, Wc, C)."""
    k, stride = geometry.kernel_size, geometry.cell_stride
    for ky in range(k):
        # Rows ky, ky + stride, ... of the padded image: `ceil(H / stride)` of
        # them before the last k - 1 - ky rows, whatever H is.
        row_end = ky - (k - 1) or None
        for kx in range(k):
            col_end = kx - (k - 1) or None
            yield ky * k + kx, padded[:, ky:row_end:stride, kx:col_end:stride, :]


def _tap_sum(padded, weights, geometry, cg):
    """(N, Hc, Wc, phases, C) from weights (N, Hc, Wc, phases, G*k*k)."""
    g, taps = geometry.group_size, geometry.taps
    groups = []
    # One sum per group on (N, Hc, Wc, phases, C/G): measured faster under XLA
    # than one sum with a group axis (or a size-1 one).
    for group in range(g):
        total = None
        for tap, window in _windows(padded, geometry):
            if g > 1:
                window = window[..., group * cg:(group + 1) * cg]
            index = group * taps + tap
            term = weights[..., index:index + 1] * window[:, :, :, None, :]
            total = term if total is None else total + term
        groups.append(total)
    return groups[0] if g == 1 else ops.concatenate(groups, axis=-1)


def _patch_matmul(padded, weights, geometry, n, hc, wc, c, cg):
    """(N*Hc*Wc, phases, C) from weights (N, Hc, Wc, phases, G*k*k)."""
    g, taps, phases = geometry.group_size, geometry.taps, geometry.phases
    cells = n * hc * wc
    patches = ops.stack([window for _, window in _windows(padded, geometry)], axis=3)
    if g == 1:
        patches = ops.reshape(patches, (cells, taps, c))
        return ops.matmul(ops.reshape(weights, (cells, phases, taps)), patches)
    patches = ops.transpose(ops.reshape(patches, (cells, taps, g, cg)), (0, 2, 1, 3))
    weights = ops.transpose(ops.reshape(weights, (cells, phases, g, taps)), (0, 2, 1, 3))
    out = ops.matmul(weights, patches)  # (cells, G, phases, C/G)
    return ops.transpose(out, (0, 2, 1, 3))


def inside_taps(geometry, h, w):
    """(Hc, Wc, G*k*k) booleans: whether cell (i, j)'s tap reads a pixel inside the image.

    A constant where the sizes are known, else built from the symbolic sizes.
    """
    k, r, stride = geometry.kernel_size, geometry.radius, geometry.cell_stride
    if isinstance(h, int) and isinstance(w, int):
        rows = np.arange(-(-h // stride))[:, None] * stride + np.arange(k) - r
        cols = np.arange(-(-w // stride))[:, None] * stride + np.arange(k) - r
        inside = (((rows >= 0) & (rows < h))[:, None, :, None]
                  & ((cols >= 0) & (cols < w))[None, :, None, :])
        inside = inside.reshape(inside.shape[0], inside.shape[1], k * k)
        return ops.convert_to_tensor(np.tile(inside, (1, 1, geometry.group_size)))

    # Reshapes rather than new axes by indexing: LiteRT's builtin strided slice has none.
    def inside_1d(size):
        cells = ops.arange(0, size, stride)
        sources = ops.reshape(cells, (-1, 1)) + ops.reshape(ops.arange(-r, k - r), (1, k))
        return ops.logical_and(ops.greater_equal(sources, 0), ops.less(sources, size))

    rows, cols = inside_1d(h), inside_1d(w)
    hc, wc = ops.shape(rows)[0], ops.shape(cols)[0]
    inside = ops.logical_and(ops.reshape(rows, (hc, 1, k, 1)), ops.reshape(cols, (1, wc, 1, k)))
    return ops.tile(ops.reshape(inside, (hc, wc, k * k)), (1, 1, geometry.group_size))


def reassemble(geometry, features, kernels, fused=False):
    """The reassembly of `geometry` (already validated) with `keras.ops`.

    `fused=True` picks the tap sum, for code that XLA compiles; the default,
    patches and a matmul, suits runtimes that run one operation at a time.
    """
    dtype = dtype_name(features)
    # 16-bit inputs accumulate in float32, as the compiled op does.
    compute_dtype = "float64" if dtype == "float64" else "float32"
    features = ops.cast(features, compute_dtype)
    kernels = ops.cast(kernels, compute_dtype)
    n, h, w, c = ops.shape(features)
    r, g, stride = geometry.radius, geometry.group_size, geometry.cell_stride
    # Cells per row and column: ceil(H / stride) (sizes may be symbolic).
    hc, wc = (h + stride - 1) // stride, (w + stride - 1) // stride
    cg = c // g

    if geometry.upsampling:
        # Output pixel (h*s + i, w*s + j) is phase i*s + j of cell (h, w).
        kernels = space_to_depth(kernels, geometry.factor)
    weights = ops.reshape(kernels, (n, hc, wc, geometry.phases, geometry.kernel_channels))
    # A tap outside the image contributes nothing whatever its weight, as in the compiled
    # kernels, which skip it: an inf or NaN weight there must not turn 0 into NaN.
    inside = ops.reshape(inside_taps(geometry, h, w), (1, hc, wc, 1, geometry.kernel_channels))
    weights = ops.where(inside, weights, ops.zeros((), compute_dtype))
    padded = ops.pad(features, ((0, 0), (r, r), (r, r), (0, 0)))
    # Keras 3.15's matmul computes float64 in float32 on JAX and PyTorch
    # (its type promotion), so float64 takes the tap sum.
    if fused or compute_dtype == "float64":
        out = _tap_sum(padded, weights, geometry, cg)
    else:
        out = _patch_matmul(padded, weights, geometry, n, hc, wc, c, cg)
    out = ops.reshape(out, (n, hc, wc, geometry.phases * c))
    if geometry.upsampling:
        out = depth_to_space(out, geometry.factor)
    return ops.cast(out, dtype)

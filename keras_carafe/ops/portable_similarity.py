"""The local similarity written with `keras.ops` only: every backend, every exporter.

Like the portable reassembly (`keras_carafe.ops.portable`) it works on cells:
the `s * s` queries of the output pixels that share a source pixel are
gathered onto that pixel (`space_to_depth`), each compared once with the
`k * k` keys around it, and the similarities put back at their output
pixels (`depth_to_space`). Two formulations:

- the tap sum (`fused=True`): per group and tap, a product of the queries
  with one strided slice of the zero-padded keys, summed over the channels.
  XLA fuses it into a few loops over the output;
- patches and a matmul (`fused=False`): the `k * k` slices of the keys
  stacked into one patch tensor (`k * k` times the keys, which are at the
  low resolution), then one batched matmul per cell. Faster where
  operations run one at a time.

The same operations as the portable reassembly (pad, slice, stack,
reshape, transpose of rank 5 at most, multiply, sum, matmul, select, cast);
taps outside the image are 0 whatever the queries, as in the compiled
kernels. Gradients come from each backend's autodiff.
"""

from keras import ops

from keras_carafe.ops.pixel_shuffle import depth_to_space, space_to_depth
from keras_carafe.ops.portable import _windows, inside_taps
from keras_carafe.ops.validation import dtype_name


def _tap_sum(queries, padded, geometry, cg):
    """(N, H, W, phases, G*k*k) from queries (N, H, W, phases, C)."""
    g = geometry.group_size
    groups = []
    for group in range(g):
        q = queries[..., group * cg:(group + 1) * cg] if g > 1 else queries
        taps = []
        for _, window in _windows(padded, geometry):
            if g > 1:
                window = window[..., group * cg:(group + 1) * cg]
            taps.append(ops.sum(q * window[:, :, :, None, :], axis=-1))
        groups.append(ops.stack(taps, axis=-1))
    return groups[0] if g == 1 else ops.concatenate(groups, axis=-1)


def _patch_matmul(queries, padded, geometry, cells, c, cg):
    """(cells, phases, G*k*k) from queries (N, H, W, phases, C)."""
    g, taps, phases = geometry.group_size, geometry.taps, geometry.phases
    patches = ops.stack([window for _, window in _windows(padded, geometry)], axis=3)
    if g == 1:
        patches = ops.reshape(patches, (cells, taps, c))
        return ops.matmul(ops.reshape(queries, (cells, phases, c)),
                          ops.transpose(patches, (0, 2, 1)))
    patches = ops.transpose(ops.reshape(patches, (cells, taps, g, cg)), (0, 2, 3, 1))
    queries = ops.transpose(ops.reshape(queries, (cells, phases, g, cg)), (0, 2, 1, 3))
    out = ops.matmul(queries, patches)  # (cells, G, phases, k*k)
    return ops.transpose(out, (0, 2, 1, 3))


def local_similarity(geometry, queries, keys, fused=False):
    """The local similarity of `geometry` (upsampling, already validated) with `keras.ops`.

    `fused=True` picks the tap sum, for code that XLA compiles; the default,
    patches and a matmul, suits runtimes that run one operation at a time.
    """
    dtype = dtype_name(queries)
    # 16-bit inputs accumulate in float32, as the compiled kernels do.
    compute_dtype = "float64" if dtype == "float64" else "float32"
    queries = ops.cast(queries, compute_dtype)
    keys = ops.cast(keys, compute_dtype)
    n, h, w, c = ops.shape(keys)
    r, g, s = geometry.radius, geometry.group_size, geometry.factor
    cg = c // g

    # Query of output pixel (h*s + i, w*s + j) is phase i*s + j of cell (h, w).
    cells = ops.reshape(space_to_depth(queries, s), (n, h, w, geometry.phases, c))
    padded = ops.pad(keys, ((0, 0), (r, r), (r, r), (0, 0)))
    # Keras's matmul computes float64 in float32 on JAX and PyTorch (see
    # `portable.reassemble`), so float64 takes the tap sum.
    if fused or compute_dtype == "float64":
        out = _tap_sum(cells, padded, geometry, cg)
    else:
        out = _patch_matmul(cells, padded, geometry, n * h * w, c, cg)
    out = ops.reshape(out, (n, h, w, geometry.phases, geometry.kernel_channels))
    # A tap outside the image is 0 whatever the query, as in the compiled kernels, which
    # skip it (an inf or NaN query times the padding's 0 would be NaN).
    inside = ops.reshape(inside_taps(geometry, h, w), (1, h, w, 1, geometry.kernel_channels))
    out = ops.where(inside, out, ops.zeros((), compute_dtype))
    out = ops.reshape(out, (n, h, w, geometry.phases * geometry.kernel_channels))
    return ops.cast(depth_to_space(out, s), dtype)

"""The reassembly written with `keras.ops` only: every backend, every exporter.

Formulation (chosen by measurement, see the README's performance section):
a sum over the `k * k` taps of the zero-padded features, each tap a strided
slice multiplied by that tap's weights, computed at *cell* resolution (see
`geometry`): for upsampling every input pixel is combined once with the
`s * s` kernels of the output pixels that read it, so no tensor at output
resolution is built until the final pixel shuffle.

Only pad, strided slice, reshape, rank-5 transpose, multiply, add,
concatenate and cast are used: no data-dependent control flow, no gather,
no custom op, no tensor of rank above 5. Under XLA (JAX, or TensorFlow with
`jit_compile=True`) the tap loop fuses into a few loops over the output;
gradients come from each backend's autodiff.
"""

from keras import ops

from keras_carafe.ops.pixel_shuffle import depth_to_space, space_to_depth
from keras_carafe.ops.validation import dtype_name


def reassemble(geometry, features, kernels):
    """The reassembly of `geometry` (already validated) with `keras.ops`."""
    dtype = dtype_name(features)
    # 16-bit inputs accumulate in float32, as the compiled op does.
    compute_dtype = "float64" if dtype == "float64" else "float32"
    features = ops.cast(features, compute_dtype)
    kernels = ops.cast(kernels, compute_dtype)
    n, h, w, c = ops.shape(features)
    k, r, g, taps = geometry.kernel_size, geometry.radius, geometry.group_size, geometry.taps
    phases, stride = geometry.phases, geometry.cell_stride
    # Cells per row and column: ceil(H / stride) (sizes may be symbolic).
    hc, wc = (h + stride - 1) // stride, (w + stride - 1) // stride
    cg = c // g

    if geometry.upsampling:
        # Output pixel (h*s + i, w*s + j) is phase i*s + j of cell (h, w).
        kernels = space_to_depth(kernels, geometry.factor)
    weights = ops.reshape(kernels, (n, hc, wc, phases, g * taps))
    padded = ops.pad(features, ((0, 0), (r, r), (r, r), (0, 0)))
    groups = []
    # One tap sum per group, each on (N, Hc, Wc, phases, C/G): measured faster
    # under XLA than one sum with a group axis (or a size-1 one).
    for group in range(g):
        channels = slice(group * cg, (group + 1) * cg) if g > 1 else slice(None)
        total = None
        for ky in range(k):
            # Rows ky, ky + stride, ... of the padded image: `ceil(H / stride)`
            # of them before the last k - 1 - ky rows, whatever H is.
            row_end = ky - (k - 1) or None
            for kx in range(k):
                col_end = kx - (k - 1) or None
                window = padded[:, ky:row_end:stride, kx:col_end:stride, channels]
                tap = group * taps + ky * k + kx
                term = weights[..., tap:tap + 1] * window[:, :, :, None, :]
                total = term if total is None else total + term
        groups.append(total)
    total = groups[0] if g == 1 else ops.concatenate(groups, axis=-1)
    out = ops.reshape(total, (n, hc, wc, phases * c))
    if geometry.upsampling:
        out = depth_to_space(out, geometry.factor)
    return ops.cast(out, dtype)

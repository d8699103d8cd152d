"""The reassembly as exported graphs hold it: rank 4 at most, no shape arithmetic.

While a model is exported (`model.export`, `force_portable()`, `torch.onnx`)
the layers and ops build the reassembly from the functions here instead of
the portable path's, because edge runtimes and their delegates handle rank-4
tensors best (many NPU and GPU delegates nothing else), and split a graph
into partitions at every operation they cannot take:

- every tensor has rank 4 or less, the pixel shuffles included (slices,
  reshapes and concatenations, no transpose);
- reshapes name the batch as -1 and every other size as a number when the
  traced shapes are static (exports always leave the batch open), so a
  static-shape export holds no Shape operation; symbolic sizes keep dynamic
  shapes working;
- nothing of the size of the `k * k` patches is transposed.

Everything runs at *cell* resolution (`geometry`): the kernels stay in the
channel order in which the CARAFE encoder predicts them, `(phase, group,
tap)`, and only the result is pixel-shuffled. Five formulations of the sum
over taps, compared in each runtime by `benchmarks/export_formulations.py`:

- "tap_sum": per phase, group and tap, a window of the padded features times
  its weight, summed: `k * k` multiply-adds per output element and nothing
  more, in many small operations;
- "tap_outer": per group and tap, the window times the tap's weights of all
  phases at once, `(N, cells, 1, C/G) * (N, cells, phases, 1)`, summed: the
  same arithmetic in `phases` times fewer, larger operations;
- "patches_matmul": the windows concatenated along channels, then one
  batched matmul per group, `(cells, phases, k*k) x (cells, k*k, C/G)`;
- "one_hot_conv": the windows gathered by a depthwise convolution with
  one-hot filters, then a matmul per group (its output, phases last, is
  transposed back for upsampling);
- "band_matmul": each row of cells cut into blocks of `BAND_CELLS` cells; a
  block reads `k` rows of `(BAND_CELLS - 1) * stride + k` padded columns
  (for k = 5 and upsampling, 7.5 times the features' size, not 25), and its
  kernels, placed as a banded matrix by a skewed reshape (row: cell and
  phase; column: tap row and column, zeros off the band), multiply them in one batched matmul:
  `(blocks, cells*phases, k*span) x (blocks, k*span, C/G)`. The zeros cost
  `span / k` times the arithmetic (2.4x for k = 5), far less than writing
  the patches. Needs a static width (else it is "patches_matmul"). An inf or
  NaN feature reaches every cell of the blocks that read its column (zero
  times it is NaN), not only the cells whose taps read it.

`FORMULATION` maps each format to the one measured fastest there (for LiteRT,
with XNNPACK, the interpreter's default).

SAPA's local similarity has one exported form, `similarity_cells`: the
windows of the keys concatenated, times the transposed queries of each cell,
so that the transposes are of the queries and of the `phases * k * k`
similarities, never of the patches.
"""

import contextlib
import contextvars

import numpy as np
from keras import ops

from keras_carafe.ops import implementation, portable
from keras_carafe.ops.validation import axis_size as _size
from keras_carafe.ops.validation import dtype_name

FORMULATIONS = ("tap_sum", "tap_outer", "patches_matmul", "one_hot_conv", "band_matmul")

# Measured with benchmarks/export_formulations.py (docs/deployment.md; in OpenVINO the
# band and the patches tie, and the band is kept for one edge formulation); the TensorFlow
# runtime of tf_saved_model, and the exports that are not Keras's own (None:
# `force_portable`, torch.onnx, jax2tf), are not measured there and keep the patches.
FORMULATION = {"onnx": "band_matmul", "litert": "band_matmul", "openvino": "band_matmul",
               "tf_saved_model": "patches_matmul", None: "patches_matmul"}

_override = contextvars.ContextVar("keras_carafe_export_formulation", default=None)


@contextlib.contextmanager
def using(formulation):
    """Makes the export path use `formulation` inside the block (for measurements)."""
    if formulation not in FORMULATIONS:
        raise ValueError(f"`formulation` must be one of {FORMULATIONS}, got {formulation!r}")
    token = _override.set(formulation)
    try:
        yield
    finally:
        _override.reset(token)


def formulation_for(target):
    """The formulation used for the export format `target` (or None: not a Keras format)."""
    return _override.get() or FORMULATION.get(target, FORMULATION[None])


def formulation_while(target):
    """The formulation while a graph is exported to `target` (a format, or None for an
    export that is not Keras's own) or traced inside `force_portable()`; "" otherwise,
    where `target` is None."""
    if target is None and not implementation.portable_forced():
        return ""
    return formulation_for(target)


# XNNPACK (LiteRT's CPU delegate) takes concatenations of at most five inputs: a longer one
# runs outside it, splitting the graph in two. The exported graphs concatenate through
# `concatenate` (groups, phases, rows, windows; FADE's sub-pixel copies too), but for
# patches_matmul's windows, whose single concatenation is the one that
# benchmarks/export_formulations.py measured.
_CONCAT_FAN_IN = 5


def concatenate(parts, axis):
    """`ops.concatenate(parts, axis)` as a tree of concatenations of at most five inputs."""
    while len(parts) > _CONCAT_FAN_IN:
        groups = [parts[i:i + _CONCAT_FAN_IN] for i in range(0, len(parts), _CONCAT_FAN_IN)]
        parts = [group[0] if len(group) == 1 else ops.concatenate(group, axis=axis)
                 for group in groups]
    return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=axis)


def depth_to_space(x, block_size):
    """(N, H, W, s*s*C') -> (N, H*s, W*s, C') in TensorFlow's channel order, in rank 4.

    Output row `h*s + i` holds channels `[i*s*C', (i+1)*s*C')` of input row
    `h`, which in memory are its `W*s` pixels already; the `s` rows are then
    put side by side along the width, which in memory is the output.
    """
    s = block_size
    if s == 1:
        return x
    h, w, c = _size(x, 1), _size(x, 2), x.shape[3] // (s * s)
    rows = [ops.reshape(x[..., i * s * c:(i + 1) * s * c], (-1, h, w * s, c)) for i in range(s)]
    return ops.reshape(concatenate(rows, axis=2), (-1, h * s, w * s, c))


def space_to_depth(x, block_size):
    """(N, H*s, W*s, C') -> (N, H, W, s*s*C'), the inverse of `depth_to_space`, in rank 4."""
    s = block_size
    if s == 1:
        return x
    h, w, c = _size(x, 1) // s, _size(x, 2) // s, x.shape[3]
    rows = ops.reshape(x, (-1, h, s * w * s, c))
    phases = [ops.reshape(rows[:, :, i * w * s:(i + 1) * w * s, :], (-1, h, w, s * c))
              for i in range(s)]
    return concatenate(phases, axis=-1)


def normalize(logits, geometry):
    """Softmax over the taps of cell logits (N, Hc, Wc, phases*G*k*k), in rank 4."""
    taps = geometry.taps
    if taps == 1:
        return ops.ones_like(logits)
    h, w, channels = _size(logits, 1), _size(logits, 2), logits.shape[3]
    groups = ops.reshape(logits, (-1, h, w * (channels // taps), taps))
    return ops.reshape(ops.softmax(groups, axis=-1), (-1, h, w, channels))


def _padded(features, geometry, right=None, bottom=0):
    """The features with `r` zeros on every side (`right` columns on the right instead,
    where given; `bottom` more rows at the bottom), padded as (N, H, W*C).

    tf2onnx writes a channels-last convolution as a Transpose around a
    channels-first Conv, and its optimizer pushes that Transpose through every
    layout-neutral operation that follows: through a rank-4 pad and the window
    slices it lands on the patches, `k * k` times the size of the features.
    It does not cross a reshape.
    """
    r = geometry.radius
    right = r if right is None else right
    if r == 0 and right == 0 and bottom == 0:
        return features
    h, w, c = _size(features, 1), _size(features, 2), features.shape[3]
    rows = ops.pad(ops.reshape(features, (-1, h, w * c)),
                   ((0, 0), (r, r + bottom), (r * c, right * c)))
    return ops.reshape(rows, (-1, h + 2 * r + bottom, w + r + right, c))


def _windows(features, geometry):
    """The zero-padded features' windows, one per tap, each (N, Hc, Wc, C)."""
    return [window for _, window in portable._windows(_padded(features, geometry), geometry)]


def _tap_sum(features, weights, geometry):
    g, taps = geometry.group_size, geometry.taps
    c = features.shape[3]
    cg = c // g
    windows = _windows(features, geometry)
    outputs = []
    for phase in range(geometry.phases):
        for group in range(g):
            total = None
            for tap, window in enumerate(windows):
                index = (phase * g + group) * taps + tap
                if g > 1:
                    window = window[..., group * cg:(group + 1) * cg]
                term = weights[..., index:index + 1] * window
                total = term if total is None else total + term
            outputs.append(total)
    return concatenate(outputs, axis=-1)


def _cell_matrices(weights, geometry, hc, wc):
    """Per group, the weights as (N, Hc*Wc, phases, k*k)."""
    g, taps = geometry.group_size, geometry.taps
    rows = ops.reshape(weights, (-1, hc * wc, geometry.phases, g * taps))
    return [rows[..., group * taps:(group + 1) * taps] if g > 1 else rows for group in range(g)]


def _per_group(features, weights, geometry, combine):
    """(N, Hc, Wc, phases*C) from `combine(matrix, windows, hc, wc)` of each group: its
    weights (N, Hc*Wc, phases, k*k) and its channels of every window, to
    (N, Hc*Wc, phases, C/G)."""
    g, c = geometry.group_size, features.shape[3]
    cg = c // g
    hc, wc = _size(weights, 1), _size(weights, 2)
    windows = _windows(features, geometry)
    outputs = []
    for group, matrix in enumerate(_cell_matrices(weights, geometry, hc, wc)):
        parts = windows if g == 1 else [w[..., group * cg:(group + 1) * cg] for w in windows]
        outputs.append(combine(matrix, parts, hc, wc))
    out = concatenate(outputs, axis=-1)
    return ops.reshape(out, (-1, hc, wc, geometry.phases * c))


def _tap_outer(features, weights, geometry):
    def combine(matrix, windows, hc, wc):
        total = None
        for tap, window in enumerate(windows):
            term = matrix[..., tap:tap + 1] * ops.reshape(window, (-1, hc * wc, 1,
                                                                   window.shape[3]))
            total = term if total is None else total + term
        return total

    return _per_group(features, weights, geometry, combine)


def _patches_matmul(features, weights, geometry):
    def combine(matrix, windows, hc, wc):
        patches = ops.concatenate(windows, axis=-1)
        return ops.matmul(matrix, ops.reshape(patches, (-1, hc * wc, geometry.taps,
                                                        windows[0].shape[3])))

    return _per_group(features, weights, geometry, combine)


def _one_hot_filters(geometry, channels, dtype):
    """Depthwise filters (k, k, C, k*k): output channel `c*k*k + tap` copies tap `tap` of c."""
    k = geometry.kernel_size
    filters = np.zeros((k, k, channels, k * k), dtype)
    for tap in range(k * k):
        filters[tap // k, tap % k, :, tap] = 1
    return filters


def _one_hot_conv(features, weights, geometry):
    g, taps, phases = geometry.group_size, geometry.taps, geometry.phases
    c = features.shape[3]
    cg = c // g
    hc, wc = _size(weights, 1), _size(weights, 2)
    padded = _padded(features, geometry)
    filters = ops.convert_to_tensor(_one_hot_filters(geometry, c, dtype_name(features)))
    patches = ops.depthwise_conv(padded, filters, strides=geometry.cell_stride, padding="valid")
    patches = ops.reshape(patches, (-1, hc * wc, c, taps))  # channel-major, taps last
    outputs = []
    for group, matrix in enumerate(_cell_matrices(weights, geometry, hc, wc)):
        part = patches if g == 1 else patches[:, :, group * cg:(group + 1) * cg, :]
        # (N, cells, C/G, taps) x (N, cells, taps, phases): the transposes are of the weights.
        outputs.append(ops.matmul(part, ops.transpose(matrix, (0, 1, 3, 2))))
    out = concatenate(outputs, axis=2)  # (N, cells, C, phases)
    if phases > 1:
        out = ops.transpose(out, (0, 1, 3, 2))
    return ops.reshape(out, (-1, hc, wc, phases * c))


# Cells per block of "band_matmul": measured with benchmarks/export_formulations.py
# (docs/deployment.md); wider blocks multiply more zeros, narrower ones copy more columns.
BAND_CELLS = 8


def _band_layout(geometry, wc):
    """(cells per block, blocks per row, padded columns one block reads)."""
    cells = min(BAND_CELLS, wc)
    return cells, -(-wc // cells), (cells - 1) * geometry.cell_stride + geometry.kernel_size


def _column_blocks(features, geometry, cells, blocks, span):
    """(N, Hc*blocks, k*span, C): for each block of `cells` cells of a row, the `k` padded
    rows times `span` padded columns that its cells read, rows outer.

    For k = 5 and blocks of 8 the result holds 7.5 times the features when
    upsampling (3 times when downsampling by 2), where the patches hold 25
    (6.25) times them. The zero padding is one Pad (`_padded`), with the columns
    past the last block; the columns come as slabs of whole blocks' width.
    """
    k, stride, r = geometry.kernel_size, geometry.cell_stride, geometry.radius
    h, w, c = _size(features, 1), _size(features, 2), features.shape[3]
    step = cells * stride
    slabs = -(-span // step)
    # XNNPACK (LiteRT) runs unit-stride slices only: a strided slice of rows would run
    # outside it, splitting the graph. With a static height the rows are padded to a
    # multiple of the stride instead and read as (rows / stride, stride) with unit steps.
    by_phase = stride > 1 and isinstance(h, int)
    rows = h + 2 * r + ((-(h + 2 * r)) % stride if by_phase else 0)
    padded = _padded(features, geometry, right=max((blocks + slabs - 1) * step - w - r, 0),
                     bottom=rows - h - 2 * r)
    parts = []
    for m in range(slabs):
        slab = ops.reshape(padded[:, :, m * step:(m + blocks) * step, :], (-1, blocks, step, c))
        width = min(step, span - m * step)
        parts.append(slab if width == step else slab[:, :, :width, :])
    columns = concatenate(parts, axis=2)
    if by_phase:
        # Row ky + stride * i is row i + ky // stride of phase ky % stride; Hc = ceil(H / s).
        hc = -(-h // stride)
        columns = ops.reshape(columns, (-1, rows // stride, stride, blocks * span * c))
        taps_rows = [ops.reshape(columns[:, ky // stride:ky // stride + hc,
                                         ky % stride:ky % stride + 1], (-1, hc, blocks, span * c))
                     for ky in range(k)]
    else:
        columns = ops.reshape(columns, (-1, rows, blocks, span * c))
        # Rows ky, ky + stride, ... as in `portable._windows`: Hc of them, whatever H is.
        taps_rows = [columns[:, ky:(ky - (k - 1)) or None:stride] for ky in range(k)]
    stacked = concatenate(taps_rows, axis=-1)
    return ops.reshape(stacked, (-1, _size(stacked, 1) * blocks, k * span, c))


def _bands(weights, geometry, cells, blocks, span):
    """(N, Hc*blocks, cells*phases, G*k*span): each block's weights as the matrix whose row
    (cell j, phase) holds tap (ky, kx) of every group in column (group, ky, kx + j*stride),
    zeros elsewhere, so that it multiplies `_column_blocks`."""
    k, stride = geometry.kernel_size, geometry.cell_stride
    g, phases = geometry.group_size, geometry.phases
    hc, wc = _size(weights, 1), weights.shape[2]
    if cells * blocks > wc:  # cells past the last column weigh nothing
        weights = ops.pad(weights, ((0, 0), (0, 0), (0, cells * blocks - wc), (0, 0)))
    if cells == 1:  # span == k: the band is the weights
        return ops.reshape(weights, (-1, hc * blocks, phases, g * k * span))
    # A skewed reshape: each tap row padded from k to span columns gives every cell its
    # `length` values of the band unshifted; padded by `stride` more and read back
    # `length` at a time, cell j's values start j * stride later. (A constant one-hot
    # matmul could place them too, but int8 graphs would then hold a second matmul.)
    length = phases * g * k * span
    rows = ops.reshape(weights, (-1, hc * blocks * cells * phases * g * k, k))
    rows = ops.pad(rows, ((0, 0), (0, 0), (0, span - k)))
    rows = ops.pad(ops.reshape(rows, (-1, cells, length)), ((0, 0), (0, 0), (0, stride)))
    skewed = ops.reshape(rows, (-1, hc * blocks, cells * (length + stride)))
    return ops.reshape(skewed[:, :, :cells * length], (-1, hc * blocks, cells * phases,
                                                        g * k * span))


def _band_matmul(features, weights, geometry):
    wc = weights.shape[2]
    if not isinstance(wc, int):  # a dynamic width: the blocks need its value
        return _patches_matmul(features, weights, geometry)
    g, k, c = geometry.group_size, geometry.kernel_size, features.shape[3]
    cg = c // g
    hc = _size(weights, 1)
    cells, blocks, span = _band_layout(geometry, wc)
    stacked = _column_blocks(features, geometry, cells, blocks, span)
    bands = _bands(weights, geometry, cells, blocks, span)
    outputs = []
    for group in range(g):
        band = bands if g == 1 else bands[..., group * k * span:(group + 1) * k * span]
        part = stacked if g == 1 else stacked[..., group * cg:(group + 1) * cg]
        outputs.append(ops.matmul(band, part))  # (N, Hc*blocks, cells*phases, C/G)
    out = concatenate(outputs, axis=-1)
    out = ops.reshape(out, (-1, hc, blocks * cells, geometry.phases * c))
    return out if blocks * cells == wc else out[:, :, :wc, :]


_SUMS = {"tap_sum": _tap_sum, "tap_outer": _tap_outer, "patches_matmul": _patches_matmul,
         "one_hot_conv": _one_hot_conv, "band_matmul": _band_matmul}


def reassemble_cells(geometry, features, weights, formulation, mask=True):
    """The reassembly of features (N, H, W, C) with cell weights (N, Hc, Wc, phases*G*k*k).

    Returns (N, OH, OW, C). `mask=False` skips the masking of taps outside the
    image (their features are zero padding, so only an inf or NaN weight
    there would show: never a softmax's).
    """
    dtype = dtype_name(features)
    compute_dtype = "float64" if dtype == "float64" else "float32"
    features = ops.cast(features, compute_dtype)
    weights = ops.cast(weights, compute_dtype)
    if mask:
        inside = _inside(geometry, _size(features, 1), _size(features, 2))
        weights = ops.where(inside, weights, ops.zeros((), compute_dtype))
    out = _SUMS[formulation](features, weights, geometry)
    if geometry.upsampling:
        out = depth_to_space(out, geometry.factor)
    return ops.cast(out, dtype)


def reassemble_logits(geometry, features, logits, formulation):
    """A layer's exported output: the reassembly of `features` with the softmax of its cell
    logits (N, Hc, Wc, phases*G*k*k). 16-bit logits are normalized in float32; softmax
    weights are finite, so the taps outside the image multiply zero padding, unmasked."""
    if dtype_name(logits) not in ("float32", "float64"):
        logits = ops.cast(logits, "float32")
    return reassemble_cells(geometry, features, normalize(logits, geometry), formulation,
                            mask=False)


def reassemble(geometry, features, kernels, formulation):
    """The reassembly with kernels at output resolution, as `keras_carafe.ops` takes them."""
    if geometry.upsampling:
        kernels = space_to_depth(kernels, geometry.factor)
    return reassemble_cells(geometry, features, kernels, formulation)


def _inside(geometry, h, w):
    """(1, Hc, Wc, phases*G*k*k): whether each cell weight's tap lies inside the image."""
    inside = portable.inside_taps(geometry, h, w)  # (Hc, Wc, G*k*k)
    if geometry.phases > 1:
        inside = ops.tile(inside, (1, 1, geometry.phases))
    return ops.expand_dims(inside, 0)


def similarity_cells(geometry, queries, keys, mask=True):
    """SAPA's local similarity (upsampling geometry) at cell resolution.

    Queries (N, H*s, W*s, C) and keys (N, H, W, C) give (N, H, W,
    phases*G*k*k) in the order of the cell weights that `reassemble_cells`
    takes, `(phase, group, tap)`. `mask=False` skips the zeroing of taps
    outside the image: their keys are zero padding, so only an inf or NaN
    query would show.
    """
    dtype = dtype_name(queries)
    compute_dtype = "float64" if dtype == "float64" else "float32"
    queries = ops.cast(queries, compute_dtype)
    keys = ops.cast(keys, compute_dtype)
    g, taps, phases = geometry.group_size, geometry.taps, geometry.phases
    h, w, c = _size(keys, 1), _size(keys, 2), keys.shape[3]
    cg = c // g
    cells = ops.reshape(space_to_depth(queries, geometry.factor), (-1, h * w, phases, c))
    windows = _windows(keys, geometry)
    outputs = []
    for group in range(g):
        parts = windows if g == 1 else [win[..., group * cg:(group + 1) * cg] for win in windows]
        patches = ops.reshape(concatenate(parts, axis=-1), (-1, h * w, taps, cg))
        group_queries = cells if g == 1 else cells[..., group * cg:(group + 1) * cg]
        # (cells, k*k, C/G) x (cells, C/G, phases), then taps last.
        products = ops.matmul(patches, ops.transpose(group_queries, (0, 1, 3, 2)))
        outputs.append(ops.transpose(products, (0, 1, 3, 2)))
    out = concatenate(outputs, axis=-1)
    out = ops.reshape(out, (-1, h, w, phases * g * taps))
    if mask:
        out = ops.where(_inside(geometry, h, w), out, ops.zeros((), compute_dtype))
    return ops.cast(out, dtype)


def local_similarity(geometry, queries, keys):
    """The local similarity at output resolution, as `keras_carafe.ops` returns it."""
    return depth_to_space(similarity_cells(geometry, queries, keys), geometry.factor)

"""Bilinear point sampling with `keras.ops`, for DySample: every backend, every exporter.

`bilinear_sample` reads the features at fractional pixel positions, one
position per output pixel and channel group. Positions are in the
features' pixel units, pixel `(y, x)` centred at `(y, x)`; a position
outside the image is clamped to its border first, so it reads the nearest
edge pixel: PyTorch's `grid_sample(..., mode="bilinear",
padding_mode="border", align_corners=False)` after unnormalizing its grid.

It is written as four row gathers from the features flattened to
`(N*H*W*G, C/G)`, one per corner, weighted and summed: Gather is a builtin
of every exporter (ONNX, LiteRT, OpenVINO) and every autodiff, whose
gradient in the features is a scatter-add; the gradient in the positions
comes from the corner weights (zero where a position is beyond the border). Nothing
is above rank 4, and where the sizes are known no operation reads a shape
(the exported graphs of runtimes and delegates that take rank 4 at most).
"""

import keras
import numpy as np
from keras import ops

from keras_carafe.ops.validation import axis_size as _size
from keras_carafe.ops.validation import dtype_name


def bilinear_sample(features, x, y, group_size, anchors=(0, 0)):
    """Samples `features` (N, H, W, C) at positions `(x, y)`, each (N, OH, OW, G).

    Group `g` (channels `g*C/G ... (g+1)*C/G - 1`) of output pixel
    `(oh, ow)` is the bilinear interpolation of that group's channels at
    column `x_anchor + x[n, oh, ow, g]` and row `y_anchor + y[n, oh, ow, g]`,
    clamped to `[0, W - 1] x [0, H - 1]`. `anchors = (x_anchor, y_anchor)`
    are integers or int32 tensors that broadcast against `x` and `y`, with
    values in `[-1, W - 1]` and `[-1, H - 1]` (default 0: `x` and `y` are
    the positions): positions given as integer anchors plus small offsets
    keep their precision where a graph is quantized (an int8 position
    spanning a 32-pixel image moves in steps of an eighth of a pixel).
    Returns (N, OH, OW, C) in the features' dtype; 16-bit features are
    interpolated in float32, and positions are always float32 or float64
    (a float16 position is off by up to 0.25 pixels beyond 512).
    """
    dtype = dtype_name(features)
    compute_dtype = "float64" if dtype == "float64" else "float32"
    features = ops.cast(features, compute_dtype)
    x, y = ops.cast(x, compute_dtype), ops.cast(y, compute_dtype)
    h, w, c = _size(features, 1), _size(features, 2), features.shape[3]
    oh, ow = _size(x, 1), _size(x, 2)
    g = group_size

    def corners(position, anchor, size):
        """The two integer neighbours, each clamped to the image, and the far one's
        weight. A position beyond the border has both neighbours on it (weight 1 for
        the border pixel, gradient 0), as if it were clamped first."""
        # Offsets beyond the image by more than its size read the border all the same;
        # bounding them keeps the integer conversion in range.
        bound = ops.cast(size + 1, compute_dtype)
        position = ops.clip(position, -bound, bound)
        floor = ops.floor(position)
        near = ops.cast(floor, "int32") + anchor
        last = size - 1
        return (ops.minimum(ops.maximum(near, 0), last),
                ops.minimum(ops.maximum(near + 1, 0), last), position - floor)

    x0, x1, fx = corners(x, anchors[0], w)
    y0, y1, fy = corners(y, anchors[1], h)

    # Each image's index 0, 1, ... counted along the batch, (N, 1, 1, 1): an integer
    # times 0 is 0 whatever the position, and no Shape operation reads the batch size.
    batch = ops.cumsum(x0[:, :1, :1, :1] * 0 + 1, axis=0) - 1
    group = ops.convert_to_tensor(np.arange(g, dtype="int32").reshape(1, 1, 1, g))
    table = ops.reshape(features, (-1, c // g))  # row ((n*H + y)*W + x)*G + g

    def corner(rows, cols, weight):
        index = ops.reshape(((batch * h + rows) * w + cols) * g + group, (-1, oh * ow, g))
        weight = ops.reshape(weight, (-1, oh * ow, g, 1))
        return _take_rows(table, index) * weight  # (N, OH*OW, G, C/G)

    out = (corner(y0, x0, (1 - fx) * (1 - fy)) + corner(y0, x1, fx * (1 - fy))
           + corner(y1, x0, (1 - fx) * fy) + corner(y1, x1, fx * fy))
    return ops.cast(ops.reshape(out, (-1, oh, ow, c)), dtype)


def _take_rows(table, index):
    """`table[index]` along axis 0 for indices known to be in range."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        # Keras's `take` wraps negative indices around, which reads the table's
        # size: with the batch open, a Shape operation in every exported graph.
        return tf.gather(table, index)
    return ops.take(table, index, axis=0)

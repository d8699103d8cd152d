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
comes from the corner weights (zero where a position was clamped). Nothing
is above rank 5.
"""

from keras import ops

from keras_carafe.ops.validation import dtype_name


def bilinear_sample(features, x, y, group_size):
    """Samples `features` (N, H, W, C) at positions `(x, y)`, each (N, OH, OW, G).

    Group `g` (channels `g*C/G ... (g+1)*C/G - 1`) of output pixel
    `(oh, ow)` is the bilinear interpolation of that group's channels at
    column `x[n, oh, ow, g]` and row `y[n, oh, ow, g]`, clamped to
    `[0, W - 1] x [0, H - 1]`. Returns (N, OH, OW, C) in the features'
    dtype; 16-bit features are interpolated in float32, and positions are
    always float32 or float64 (a float16 position is off by up to 0.25
    pixels beyond 512).
    """
    dtype = dtype_name(features)
    compute_dtype = "float64" if dtype == "float64" else "float32"
    features = ops.cast(features, compute_dtype)
    x, y = ops.cast(x, compute_dtype), ops.cast(y, compute_dtype)
    n, h, w, c = ops.shape(features)
    g = group_size
    _, oh, ow, _ = ops.shape(x)

    x = ops.clip(x, 0, ops.cast(w - 1, compute_dtype))
    y = ops.clip(y, 0, ops.cast(h - 1, compute_dtype))
    x0, y0 = ops.floor(x), ops.floor(y)
    fx, fy = x - x0, y - y0
    x0, y0 = ops.cast(x0, "int32"), ops.cast(y0, "int32")
    # The far corner of a position on the last row or column has weight 0; it
    # reads that row or column again rather than past the image.
    x1, y1 = ops.minimum(x0 + 1, w - 1), ops.minimum(y0 + 1, h - 1)

    table = ops.reshape(features, (n * h * w * g, c // g))
    batch = ops.reshape(ops.arange(n, dtype="int32") * h, (-1, 1, 1, 1))
    group = ops.reshape(ops.arange(g, dtype="int32"), (1, 1, 1, -1))

    def corner(rows, cols, weight):
        index = ((batch + rows) * w + cols) * g + group  # (N, OH, OW, G)
        # expand_dims, not `[..., None]`: LiteRT's builtin slice has no new axes.
        return ops.take(table, index, axis=0) * ops.expand_dims(weight, -1)  # (N, OH, OW, G, C/G)

    out = (corner(y0, x0, (1 - fx) * (1 - fy)) + corner(y0, x1, fx * (1 - fy))
           + corner(y1, x0, (1 - fx) * fy) + corner(y1, x1, fx * fy))
    return ops.cast(ops.reshape(out, (n, oh, ow, c)), dtype)

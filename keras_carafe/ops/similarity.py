"""The public local similarity (SAPA's query-key similarity): validate once, then hand
over to the backend.

The similarity of a query pixel with the `k x k` keys around its source
pixel is the kernels gradient of the upsampling reassembly, with the queries
in the place of the output gradient and the keys in the place of the
features. Its derivatives are the reassembly itself (in the queries) and the
reassembly's features gradient (in the keys), so every backend computes it,
and its gradients of any order, with the reassembly's kernels.
"""

from keras import ops

from keras_carafe import backend
from keras_carafe.ops import implementation as impl
from keras_carafe.ops import validation


def check_static(geometry, queries, keys):
    """Raises ValueError/TypeError for every mismatch visible in dtypes and static shapes.

    Returns True when the static shapes prove the inputs valid, False when
    some size is unknown (only inside TensorFlow graphs) and must be checked
    when the graph runs.
    """
    queries_dtype, keys_dtype = validation.dtype_name(queries), validation.dtype_name(keys)
    if queries_dtype not in validation.SUPPORTED_DTYPES:
        raise TypeError(
            f"`queries` must be float16, bfloat16, float32 or float64, got {queries_dtype}")
    if keys_dtype != queries_dtype:
        raise TypeError(
            f"`keys` must have the dtype of `queries` ({queries_dtype}), got {keys_dtype}")
    shapes = {"queries": validation.static_shape(queries), "keys": validation.static_shape(keys)}
    layouts = {"queries": "(N, H*scale_factor, W*scale_factor, C)", "keys": "(N, H, W, C)"}
    for name, shape in shapes.items():
        if shape is not None and len(shape) != 4:
            raise ValueError(f"`{name}` must have rank 4 {layouts[name]}, got shape {shape}")
    if shapes["queries"] is None or shapes["keys"] is None:
        return False
    qn, qh, qw, qc = shapes["queries"]
    n, h, w, c = shapes["keys"]
    g = geometry.group_size
    if qc is not None and c is not None and qc != c:
        raise ValueError(f"`queries` channels ({qc}) must equal `keys` channels ({c}) "
                         f"(queries {shapes['queries']}, keys {shapes['keys']})")
    channels = c if c is not None else qc
    if channels is not None and channels % g:
        raise ValueError(f"`keys` channels ({channels}) must be divisible by `group_size` ({g})")
    for axis, size, query_size in (("height", h, qh), ("width", w, qw)):
        expected = geometry.output_size(size)
        if expected is not None and query_size is not None and query_size != expected:
            raise ValueError(
                f"`queries` {axis} must be scale_factor * keys {axis} = {expected}, got "
                f"{query_size} (queries {shapes['queries']}, keys {shapes['keys']})")
    if n is not None and qn is not None and n != qn:
        raise ValueError(f"`queries` batch ({qn}) must equal `keys` batch ({n})")
    return None not in shapes["queries"] + shapes["keys"]


def local_similarity(queries, keys, scale_factor=2, kernel_size=5, group_size=1,
                     implementation="auto"):
    """Dot products of every query with the `k x k` keys around its source pixel.

    For query pixel `(oh, ow)` and group `g` (channels `g*C/G ...
    (g+1)*C/G - 1`), with `r = (k - 1) / 2`:

        out[n, oh, ow, g*k*k + ky*k + kx] = sum over c in group g of
            queries[n, oh, ow, c]
            * keys[n, oh // s + ky - r, ow // s + kx - r, c]

    with keys outside the image counting as zero (so are their
    similarities). This is the similarity of SAPA (Lu et al., NeurIPS
    2022) between high-resolution queries and low-resolution keys; a
    softmax over each group's `k*k` taps turns it into kernels for
    `keras_carafe.ops.carafe`, in the same channel order.

    Args:
        queries: tensor of shape `(N, H*s, W*s, C)`, float16, bfloat16,
            float32 or float64.
        keys: tensor of shape `(N, H, W, C)` and the dtype of `queries`.
        scale_factor: int `s >= 1`.
        kernel_size: odd int `k >= 1`.
        group_size: int `G >= 1` dividing `C`.
        implementation: `"auto"`, `"op"`, `"fallback"` or `"portable"`, as
            in `keras_carafe.ops.carafe` (the same compiled kernels: a
            TensorFlow op of its own, the reassembly's kernels-gradient
            handlers on JAX and PyTorch).

    Returns:
        Tensor of shape `(N, H*s, W*s, G*k*k)` in the dtype of `queries`;
        16-bit inputs are accumulated in float32. Differentiable to any
        order in both inputs.
    """
    geometry = validation.upsampling(scale_factor, kernel_size, group_size)
    impl.check_implementation(implementation)
    module = backend.current()
    impl.check_backend(implementation, module)
    queries = ops.convert_to_tensor(queries)
    keys = ops.convert_to_tensor(keys)
    shapes_known = check_static(geometry, queries, keys)
    return module.local_similarity(module.choose(implementation), geometry, queries, keys,
                                   shapes_known)

"""Depth-to-space and space-to-depth with `keras.ops` (channels-last, rank 5 at most).

The channel order is TensorFlow's (`tf.nn.depth_to_space`): output pixel
`(h*s + i, w*s + j)` holds channels `(i*s + j)*C' ... (i*s + j + 1)*C' - 1` of
input pixel `(h, w)`. Tensors never exceed rank 5, which every exporter and
LiteRT's builtin transpose accept.
"""

from keras import ops


def depth_to_space(x, block_size):
    """(N, H, W, s*s*C') -> (N, H*s, W*s, C')."""
    s = block_size
    if s == 1:
        return x
    n, h, w, channels = ops.shape(x)
    c = channels // (s * s)
    x = ops.reshape(x, (n, h, w, s, s * c))
    x = ops.transpose(x, (0, 1, 3, 2, 4))
    # (N, H, s, W, s*C') is (N, H*s, W*s, C') in memory.
    return ops.reshape(x, (n, h * s, w * s, c))


def space_to_depth(x, block_size):
    """(N, H*s, W*s, C') -> (N, H, W, s*s*C'), the inverse of `depth_to_space`."""
    s = block_size
    if s == 1:
        return x
    n, hs, ws, c = ops.shape(x)
    h, w = hs // s, ws // s
    x = ops.reshape(x, (n, h, s, w, s * c))
    x = ops.transpose(x, (0, 1, 3, 2, 4))
    return ops.reshape(x, (n, h, w, s * s * c))

"""Pure-TensorFlow reassembly: runs on every device and under XLA."""

import tensorflow as tf


def reassemble(features, kernels, scale_factor, kernel_size, group_size):
    """CARAFE reassembly with standard TF ops (same contract as the compiled op)."""
    args = (features, kernels, scale_factor, kernel_size, group_size)
    size = features.shape.num_elements()
    if size is not None:
        return _reassemble(*args) if size else _empty(*args)
    # The gradient of ExtractImagePatches fails on empty inputs: those take a
    # branch without it.
    return tf.cond(tf.size(features) > 0, lambda: _reassemble(*args), lambda: _empty(*args))


def _empty(features, kernels, scale_factor, kernel_size, group_size):
    shape = tf.shape(features)
    out_shape = [shape[0], shape[1] * scale_factor, shape[2] * scale_factor, shape[3]]
    # Multiplying by the (empty) inputs keeps both gradients defined (zeros).
    zero = tf.reduce_sum(features) * 0 + tf.reduce_sum(kernels) * 0
    return tf.zeros(out_shape, features.dtype) + zero


def _reassemble(features, kernels, scale_factor, kernel_size, group_size):
    """Works at input resolution: each input pixel's k x k neighbourhood is
    gathered once and combined with the s*s sub-pixel kernels that read it, so
    no patch tensor at output resolution is ever built."""
    s, k, g = scale_factor, kernel_size, group_size
    compute_dtype = tf.float64 if features.dtype == tf.float64 else tf.float32
    f = tf.cast(features, compute_dtype)
    w = tf.cast(kernels, compute_dtype)
    shape = tf.shape(f)
    n, h, wd, c = shape[0], shape[1], shape[2], shape[3]
    # (N, H, W, k*k*C) in (ky, kx, c) order; "SAME" pads (k - 1) / 2 zeros per side.
    patches = tf.image.extract_patches(
        f, sizes=[1, k, k, 1], strides=[1, 1, 1, 1], rates=[1, 1, 1, 1], padding="SAME"
    )
    patches = tf.reshape(patches, [n, h, wd, k * k, g, c // g])
    if s > 1:
        # (N, H, W, s*s*G*k*k): the kernels of the s*s outputs of each input pixel.
        w = tf.nn.space_to_depth(w, s)
    w = tf.reshape(w, [n, h, wd, s * s, g, k * k])
    out = tf.einsum("nhwpgq,nhwqgc->nhwpgc", w, patches)
    out = tf.reshape(out, [n, h, wd, s * s * c])
    if s > 1:
        out = tf.nn.depth_to_space(out, s)
    return tf.cast(out, features.dtype)

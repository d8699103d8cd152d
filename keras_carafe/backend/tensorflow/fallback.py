"""Pure-TensorFlow reassembly (`tf.image.extract_patches`): the fastest path without the
compiled op in TensorFlow graphs that XLA does not compile."""

import tensorflow as tf

from keras_carafe.ops import portable


def reassemble(geometry, features, kernels):
    """CARAFE reassembly with standard TF ops (same contract as the compiled ops)."""
    size = features.shape.num_elements()
    if size is not None:
        out = _reassemble(geometry, features, kernels) if size else _empty(
            geometry, features, kernels)
    else:
        # The gradient of ExtractImagePatches fails on empty inputs: those take
        # a branch without it.
        out = tf.cond(tf.size(features) > 0, lambda: _reassemble(geometry, features, kernels),
                      lambda: _empty(geometry, features, kernels))
    # The sizes inside come from tf.shape: restore what is known statically.
    n, h, w, c = features.shape
    out.set_shape([n, geometry.output_size(h), geometry.output_size(w), c])
    return out


def _empty(geometry, features, kernels):
    fs, ks = tf.shape(features), tf.shape(kernels)
    out_shape = [fs[0], ks[1], ks[2], fs[3]]
    # Multiplying by the (empty) inputs keeps both gradients defined (zeros).
    zero = tf.reduce_sum(features) * 0 + tf.reduce_sum(kernels) * 0
    return tf.zeros(out_shape, features.dtype) + zero


def _reassemble(geometry, features, kernels):
    """Works on cells (see `geometry`): each cell's k x k neighbourhood is gathered
    once and combined with the kernels of every output that reads it, so no
    patch tensor at output resolution is ever built."""
    k, g, r = geometry.kernel_size, geometry.group_size, geometry.radius
    stride, phases = geometry.cell_stride, geometry.phases
    compute_dtype = tf.float64 if features.dtype == tf.float64 else tf.float32
    f = tf.cast(features, compute_dtype)
    w = tf.cast(kernels, compute_dtype)
    # With r zeros on every side, VALID windows at stride `stride` start at
    # every cell's neighbourhood: ceil(H / stride) of them.
    f = tf.pad(f, [[0, 0], [r, r], [r, r], [0, 0]])
    # (N, Hc, Wc, k*k*C) in (ky, kx, c) order.
    patches = tf.image.extract_patches(
        f, sizes=[1, k, k, 1], strides=[1, stride, stride, 1], rates=[1, 1, 1, 1],
        padding="VALID")
    shape = tf.shape(patches)
    n, hc, wc = shape[0], shape[1], shape[2]
    c = tf.shape(features)[3]
    patches = tf.reshape(patches, [n, hc, wc, k * k, g, c // g])
    if geometry.upsampling and geometry.factor > 1:
        # (N, H, W, s*s*G*k*k): the kernels of the s*s outputs of each input pixel.
        w = tf.nn.space_to_depth(w, geometry.factor)
    w = tf.reshape(w, [n, hc, wc, phases, g, k * k])
    # Taps outside the image contribute nothing whatever their weight (see
    # portable.inside_taps): an inf or NaN weight there would turn the padding's 0 into NaN.
    height, width = (features.shape[axis] if features.shape[axis] is not None
                     else tf.shape(features)[axis] for axis in (1, 2))
    inside = tf.reshape(portable.inside_taps(geometry, height, width), [1, hc, wc, 1, g, k * k])
    w = tf.where(inside, w, tf.zeros((), compute_dtype))
    out = tf.einsum("nhwpgq,nhwqgc->nhwpgc", w, patches)
    out = tf.reshape(out, [n, hc, wc, phases * c])
    if geometry.upsampling and geometry.factor > 1:
        out = tf.nn.depth_to_space(out, geometry.factor)
    return tf.cast(out, features.dtype)

"""Run-time shape checks for TensorFlow graphs traced with unknown sizes.

The compiled op's kernels check shapes themselves; the fallback and the
portable path get these assertions in front of them.
"""

import tensorflow as tf


def with_runtime_checks(geometry, features, kernels):
    """Returns (features, kernels, asserts) checking what was unknown at trace time.

    The rank is enforced with EnsureShape on the data path: Grappler infers
    rank 4 from the ops downstream and would fold a plain rank assertion away.
    """
    features = tf.ensure_shape(features, [None] * 4, name="features_must_have_rank_4")
    kernels = tf.ensure_shape(kernels, [None] * 4, name="kernels_must_have_rank_4")
    fs, ks = tf.shape(features), tf.shape(kernels)
    g, taps, factor = geometry.group_size, geometry.kernel_channels, geometry.factor
    if geometry.upsampling:
        expected = fs[1:3] * factor
        spatial = (f"`kernels` spatial size must be scale_factor={factor} times the features "
                   f"spatial size")
    else:
        expected = (fs[1:3] + factor - 1) // factor
        spatial = (f"`kernels` spatial size must be ceil(features spatial size / "
                   f"stride={factor})")
    return features, kernels, [
        tf.debugging.assert_equal(
            fs[3] % g, 0, message=f"`features` channels must be divisible by group_size={g}"),
        tf.debugging.assert_equal(
            ks[3], taps,
            message=f"`kernels` channels must be group_size * kernel_size**2 = {taps}"),
        tf.debugging.assert_equal(ks[1:3], expected, message=spatial),
        tf.debugging.assert_equal(
            ks[0], fs[0], message="`kernels` batch must equal `features` batch"),
    ]

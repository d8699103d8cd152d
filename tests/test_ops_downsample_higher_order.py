"""Derivatives of the compiled downsampling ops (KerasCarafeDownsample and
KerasCarafeDownsampleGrad) to first and higher order: gradients, gradient
penalties, Hessian-vector products and forward mode, in float64, against a
pure-TensorFlow transcription of the downsampling contract

    out[n, oh, ow, c] = sum_{ky, kx in [0, k)} kernels[n, oh, ow, g*k*k + ky*k + kx]
                        * features[n, oh*stride + ky - r, ow*stride + kx - r, c]

(g = c // (C/G), r = (k-1)/2, zeros outside the image), whose own derivatives
come from TensorFlow's autodiff. The transcription is checked against the
formula element by element first.

Every test that needs the ops fails, saying so, when the compiled library does
not have them.
"""

import numpy as np
import pytest
import tensorflow as tf

from keras_carafe.library import load

OP_NAMES = ("keras_carafe_downsample", "keras_carafe_downsample_grad")

# (batch, height, width, channels, stride, kernel_size, group_size)
CASES = [
    (1, 4, 4, 2, 2, 3, 1),
    (1, 5, 3, 4, 2, 5, 2),   # sizes not divisible by the stride
    (2, 3, 4, 3, 1, 3, 3),
    (1, 7, 5, 2, 3, 5, 1),
    (1, 2, 3, 2, 4, 1, 2),   # stride larger than the image
]

MODES = ["eager", "tf.function"]


def case_id(case):
    n, h, w, c, s, k, g = case
    return f"n{n}-{h}x{w}x{c}-stride{s}-k{k}-g{g}"


def downsample_ops():
    """The loaded op library; fails the calling test when it lacks the downsampling ops."""
    library = load.load()
    missing = [name for name in OP_NAMES if not hasattr(library.module, name)]
    if missing:
        pytest.fail(
            f"the compiled op library {library.report.library} has no "
            f"{' and no '.join(missing)}: the downsampling kernels (TF ops "
            f"KerasCarafeDownsample, KerasCarafeDownsampleGrad) are not built into it",
            pytrace=False)
    return library.module


def output_size(size, stride):
    return -(-size // stride)


def downsample_loops(features, kernels, stride, kernel_size, group_size):
    """The contract, one output element at a time (tiny inputs only)."""
    n, h, w, c = features.shape
    s, k, g = stride, kernel_size, group_size
    r = (k - 1) // 2
    out = np.zeros((n, output_size(h, s), output_size(w, s), c))
    for b, oh, ow, ch in np.ndindex(*out.shape):
        group = ch // (c // g)
        for ky in range(k):
            for kx in range(k):
                y, x = oh * s + ky - r, ow * s + kx - r
                if 0 <= y < h and 0 <= x < w:
                    out[b, oh, ow, ch] += (kernels[b, oh, ow, group * k * k + ky * k + kx]
                                           * features[b, y, x, ch])
    return out


def downsample_tf(features, kernels, stride, kernel_size, group_size):
    """The contract as a sum of strided slices of the zero-padded features."""
    n, h, w, c = features.shape
    s, k, g = stride, kernel_size, group_size
    r = (k - 1) // 2
    out_h, out_w = output_size(h, s), output_size(w, s)
    padded = tf.pad(features, [[0, 0], [r, r], [r, r], [0, 0]])
    out = tf.zeros((n, out_h, out_w, c), features.dtype)
    for ky in range(k):
        for kx in range(k):
            taps = padded[:, ky:ky + s * (out_h - 1) + 1:s, kx:kx + s * (out_w - 1) + 1:s]
            weights = tf.gather(kernels, [group * k * k + ky * k + kx for group in range(g)],
                                axis=-1)
            out += taps * tf.repeat(weights, c // g, axis=-1)
    return out


def downsample(implementation, case):
    """`features, kernels -> out` with the compiled op or the transcription."""
    _, _, _, _, s, k, g = case
    if implementation == "transcription":
        return lambda f, kk: downsample_tf(f, kk, s, k, g)
    ops = downsample_ops()
    return lambda f, kk: ops.keras_carafe_downsample(f, kk, stride=s, kernel_size=k,
                                                     group_size=g)


def problem(rng, case):
    n, h, w, c, s, k, g = case
    out_h, out_w = output_size(h, s), output_size(w, s)
    features = rng.uniform(-1, 1, (n, h, w, c))
    kernels = rng.uniform(-1, 1, (n, out_h, out_w, g * k * k))
    upstream = rng.uniform(-1, 1, (n, out_h, out_w, c))
    return features, kernels, upstream


def assert_close_to_roundoff(actual, expected, name):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, name
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=1e-11, atol=1e-12 * scale, err_msg=name)


def compare_with_transcription(mode, case, make_function, *args):
    """Runs `make_function(reassemble)` with the op and with the transcription."""
    results = {}
    for implementation in ("op", "transcription"):
        function = make_function(downsample(implementation, case))
        if mode == "tf.function":
            function = tf.function(function)
        results[implementation] = [t.numpy() for t in function(*map(tf.constant, args))]
    assert len(results["op"]) == len(results["transcription"])
    for index, (a, b) in enumerate(zip(results["op"], results["transcription"])):
        assert_close_to_roundoff(a, b, f"result {index}")


# --- the transcription --------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_transcription_matches_the_formula_element_by_element(rng, case):
    _, _, _, _, s, k, g = case
    features, kernels, _ = problem(rng, case)
    np.testing.assert_allclose(
        downsample_tf(tf.constant(features), tf.constant(kernels), s, k, g).numpy(),
        downsample_loops(features, kernels, s, k, g), rtol=1e-13, atol=1e-13)


# --- the ops --------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_op_forward_matches_the_transcription(rng, case):
    features, kernels, _ = problem(rng, case)
    compare_with_transcription("eager", case, lambda down: lambda f, kk: [down(f, kk)],
                               features, kernels)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_op_gradients_match_the_transcription(rng, mode, case):
    def make(down):
        def gradients(features, kernels, upstream):
            with tf.GradientTape() as tape:
                tape.watch([features, kernels])
                loss = tf.reduce_sum(down(features, kernels) * upstream)
            return tape.gradient(loss, [features, kernels])

        return gradients

    compare_with_transcription(mode, case, make, *problem(rng, case))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("terms", [("features",), ("kernels",), ("features", "kernels")],
                         ids="+".join)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_gradient_penalty_through_the_op_matches_the_transcription(rng, mode, terms, case):
    def make(down):
        def penalty_gradients(features, kernels, upstream):
            with tf.GradientTape() as outer:
                outer.watch([features, kernels, upstream])
                with tf.GradientTape() as inner:
                    inner.watch([features, kernels])
                    loss = tf.reduce_sum(down(features, kernels) * upstream)
                grad_features, grad_kernels = inner.gradient(loss, [features, kernels])
                penalty = tf.constant(0.0, tf.float64)
                if "features" in terms:
                    penalty += (tf.norm(grad_features) - 1.0) ** 2
                if "kernels" in terms:
                    penalty += 0.5 * tf.reduce_sum(tf.sin(grad_kernels) * grad_kernels)
            return outer.gradient(penalty, [features, kernels, upstream],
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)

        return penalty_gradients

    compare_with_transcription(mode, case, make, *problem(rng, case))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_hessian_vector_product_through_the_op_matches_the_transcription(rng, mode, case):
    features, kernels, _ = problem(rng, case)
    v_features, v_kernels = (rng.uniform(-1, 1, x.shape) for x in (features, kernels))

    def make(down):
        def hessian_vector_product(features, kernels, v_features, v_kernels):
            with tf.GradientTape() as outer:
                outer.watch([features, kernels])
                with tf.GradientTape() as inner:
                    inner.watch([features, kernels])
                    loss = tf.reduce_sum(tf.tanh(down(features, kernels)))
                grads = inner.gradient(loss, [features, kernels])
                directional = (tf.reduce_sum(grads[0] * v_features)
                               + tf.reduce_sum(grads[1] * v_kernels))
            return outer.gradient(directional, [features, kernels])

        return hessian_vector_product

    compare_with_transcription(mode, case, make, features, kernels, v_features, v_kernels)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_mode_jvp_through_the_op_matches_the_transcription(rng, mode, case):
    features, kernels, _ = problem(rng, case)
    t_features, t_kernels = (rng.uniform(-1, 1, x.shape) for x in (features, kernels))

    def make(down):
        def jvp(features, kernels, t_features, t_kernels):
            with tf.autodiff.ForwardAccumulator([features, kernels],
                                                [t_features, t_kernels]) as accumulator:
                out = down(features, kernels)
            return [accumulator.jvp(out)]

        return jvp

    compare_with_transcription(mode, case, make, features, kernels, t_features, t_kernels)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_over_reverse_through_the_op_matches_the_transcription(rng, mode, case):
    features, kernels, _ = problem(rng, case)
    t_features, t_kernels = (rng.uniform(-1, 1, x.shape) for x in (features, kernels))

    def make(down):
        def forward_over_reverse(features, kernels, t_features, t_kernels):
            with tf.autodiff.ForwardAccumulator([features, kernels],
                                                [t_features, t_kernels]) as accumulator:
                with tf.GradientTape() as tape:
                    tape.watch([features, kernels])
                    loss = tf.reduce_sum(tf.sin(down(features, kernels)))
                grads = tape.gradient(loss, [features, kernels])
            return [accumulator.jvp(x) for x in grads]

        return forward_over_reverse

    compare_with_transcription(mode, case, make, features, kernels, t_features, t_kernels)


@pytest.mark.parametrize("connected", ["both", "features", "kernels"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_backward_op_gradient_matches_the_transcription(rng, case, connected):
    # The backward op's outputs are the two input gradients of the forward
    # map; differentiating them must give what autodiff of the transcription
    # gives for the same two gradients.
    _, _, _, _, s, k, g = case
    features, kernels, grad_output = problem(rng, case)
    u = rng.uniform(-1, 1, features.shape) if connected != "kernels" else None
    v = rng.uniform(-1, 1, kernels.shape) if connected != "features" else None
    ops = downsample_ops()

    def op_gradients(grad_output, features, kernels):
        return ops.keras_carafe_downsample_grad(grad_output, features, kernels, stride=s,
                                                kernel_size=k, group_size=g)

    def transcription_gradients(grad_output, features, kernels):
        with tf.GradientTape() as tape:
            tape.watch([features, kernels])
            loss = tf.reduce_sum(downsample_tf(features, kernels, s, k, g) * grad_output)
        return tape.gradient(loss, [features, kernels])

    results = []
    for gradients in (op_gradients, transcription_gradients):
        inputs = [tf.constant(x) for x in (grad_output, features, kernels)]
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            grad_features, grad_kernels = gradients(*inputs)
            total = tf.constant(0.0, tf.float64)
            if u is not None:
                total += tf.reduce_sum(grad_features * u)
            if v is not None:
                total += tf.reduce_sum(grad_kernels * v)
        results.append([t.numpy() for t in tape.gradient(
            total, inputs, unconnected_gradients=tf.UnconnectedGradients.ZERO)])
    for name, a, b in zip(("grad_output", "features", "kernels"), *results):
        assert_close_to_roundoff(a, b, name)

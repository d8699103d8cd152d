"""Specification of keras_carafe.visualize: kernel analysis and figures."""

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_carafe import visualize  # noqa: E402


def _random_kernels(rng, height, width, k):
    """Softmax-normalized kernels (height, width, k, k), as CARAFE produces."""
    logits = rng.normal(size=(height, width, k * k))
    weights = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    return weights.reshape(height, width, k, k)


def _uniform_kernels(height, width, k):
    return np.full((height, width, k, k), 1.0 / (k * k))


# --- kernel entropy ---------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 3, 5])
def test_entropy_of_uniform_kernel_is_log_of_tap_count(k):
    entropy = visualize.kernel_entropy(_uniform_kernels(2, 3, k))
    np.testing.assert_allclose(entropy, np.full((2, 3), np.log(k * k)), atol=1e-12)


def test_entropy_of_one_hot_kernel_is_zero():
    kernel = np.zeros((5, 5))
    kernel[1, 3] = 1.0
    assert visualize.kernel_entropy(kernel) == 0.0


def test_entropy_of_two_equal_taps_is_log_two():
    kernel = np.zeros((3, 3))
    kernel[0, 0] = kernel[2, 2] = 0.5
    assert visualize.kernel_entropy(kernel) == pytest.approx(np.log(2))


# --- bilinear kernels ---------------------------------------------------------------

@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bilinear_kernels_of_every_phase_sum_to_one(scale):
    kernels = visualize.bilinear_kernels(scale, 3)
    assert kernels.shape == (scale, scale, 3, 3)
    np.testing.assert_allclose(kernels.sum(axis=(-2, -1)), 1.0)


def test_bilinear_kernel_of_first_phase_at_scale_two_is_known():
    # Output pixel 0 lies a quarter input pixel before its source pixel's center.
    expected_1d = np.array([0.25, 0.75, 0.0])
    np.testing.assert_allclose(visualize.bilinear_kernels(2, 3)[0, 0],
                               np.outer(expected_1d, expected_1d))


def test_bilinear_kernels_reject_sizes_below_three():
    with pytest.raises(ValueError, match="kernel_size"):
        visualize.bilinear_kernels(2, 1)


@pytest.mark.parametrize("scale", [2, 4])
def test_bilinear_kernels_reproduce_bilinear_upsampling_away_from_border(scale, rng):
    import keras

    from keras_carafe.ops import carafe

    h, w, k = 6, 7, 3
    image = rng.random((1, h, w, 2)).astype("float32")
    kernels = visualize.bilinear_kernel_map(h, w, scale, k).reshape(h * scale, w * scale, k * k)
    reassembled = carafe(image, kernels[None].astype("float32"), scale_factor=scale,
                         kernel_size=k, implementation="fallback").numpy()
    expected = np.asarray(keras.layers.UpSampling2D(scale, interpolation="bilinear")(image))
    inner = (0, slice(scale, -scale), slice(scale, -scale))
    np.testing.assert_allclose(reassembled[inner], expected[inner], atol=1e-5)


# --- average pooling kernel ----------------------------------------------------------

@pytest.mark.parametrize("stride, k", [(2, 3), (2, 5), (3, 5)])
def test_average_pooling_kernel_reproduces_average_pooling_through_carafe_downsample(
        stride, k, rng):
    import keras

    from keras_carafe.ops import carafe_downsample

    h, w = 4 * stride, 3 * stride
    image = rng.random((1, h, w, 2)).astype("float32")
    kernel = visualize.average_pooling_kernel(stride, k).reshape(k * k)
    kernels = np.broadcast_to(kernel, (1, h // stride, w // stride, k * k)).astype("float32")
    reassembled = carafe_downsample(image, kernels, stride=stride, kernel_size=k,
                                    implementation="fallback").numpy()
    expected = np.asarray(keras.layers.AveragePooling2D(stride)(image))
    np.testing.assert_allclose(reassembled, expected, atol=1e-6)


def test_average_pooling_kernel_rejects_a_window_too_small_for_the_block():
    with pytest.raises(ValueError, match="`kernel_size` must be an odd integer >= 2 \\* "
                                         "stride - 1 = 5"):
        visualize.average_pooling_kernel(3, 3)


def test_average_pooling_kernel_rejects_a_stride_below_one():
    with pytest.raises(ValueError, match="`stride` must be an integer >= 1, got 0"):
        visualize.average_pooling_kernel(0, 3)


# --- composed kernels ---------------------------------------------------------------

def test_composed_kernel_of_two_layers_sums_to_one_inside_the_image(rng):
    first = _random_kernels(rng, 16, 16, 5)     # 8x8 -> 16x16
    second = _random_kernels(rng, 32, 32, 5)    # 16x16 -> 32x32
    composed = visualize.compose_kernels([first, second], [2, 2], (15, 17))
    assert composed.shape == (8, 8)
    assert composed.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("k, expected_side", [(3, 4), (5, 7)])
def test_composed_kernel_of_two_layers_has_expected_support(k, expected_side):
    # k consecutive pixels of layer 2's input come from (k + 1) // 2 source
    # pixels of layer 1, each spreading k - 1 further: (k + 1) // 2 + k - 1.
    first = _uniform_kernels(16, 16, k)
    second = _uniform_kernels(32, 32, k)
    composed = visualize.compose_kernels([first, second], [2, 2], (16, 16))
    rows, cols = np.nonzero(composed)
    assert rows.max() - rows.min() + 1 == expected_side
    assert cols.max() - cols.min() + 1 == expected_side
    assert np.count_nonzero(composed) == expected_side ** 2


def test_composed_kernel_loses_the_mass_that_reads_zero_padding():
    first = _uniform_kernels(8, 8, 3)
    second = _uniform_kernels(16, 16, 3)
    composed = visualize.compose_kernels([first, second], [2, 2], (0, 0))
    assert 0.0 < composed.sum() < 1.0


def test_composed_kernel_gives_the_output_of_chained_reassembly(rng):
    from keras_carafe.ops import carafe

    k, s = 3, 2
    first = _random_kernels(rng, 8, 10, k)     # 4x5 -> 8x10
    second = _random_kernels(rng, 16, 20, k)   # 8x10 -> 16x20
    image = rng.random((4, 5))

    def reassemble(x, kernels):
        h, w = kernels.shape[:2]
        return carafe(x, kernels.reshape(1, h, w, k * k), scale_factor=s, kernel_size=k,
                      implementation="fallback")

    output = reassemble(reassemble(image[None, :, :, None], first), second).numpy()[0, :, :, 0]
    for pixel in [(0, 0), (7, 9), (15, 19), (10, 3)]:
        composed = visualize.compose_kernels([first, second], [s, s], pixel)
        assert (composed * image).sum() == pytest.approx(output[pixel])


def test_compose_kernels_rejects_layers_whose_sizes_do_not_chain():
    with pytest.raises(ValueError, match="does not feed"):
        visualize.compose_kernels([_uniform_kernels(8, 8, 3), _uniform_kernels(8, 8, 3)],
                                  [2, 2], (0, 0))


def test_compose_kernels_rejects_a_scale_factor_count_mismatch():
    with pytest.raises(ValueError, match="scale factors"):
        visualize.compose_kernels([_uniform_kernels(8, 8, 3)], [2, 2], (0, 0))


# --- kernel distance, edge strength, binning --------------------------------------------

def test_strongest_tap_is_the_offset_of_the_largest_weight_from_the_source_pixel():
    kernels = np.full((2, 5, 5), 0.01)
    kernels[0, 3, 1] = 0.9    # one row below, one column left of the center tap
    kernels[1, 2, 2] = 0.9    # the center tap: the source pixel itself
    dy, dx = visualize.strongest_tap(kernels)
    assert list(dy) == [1, 0] and list(dx) == [-1, 0]


def test_strongest_tap_of_a_uniform_kernel_is_its_first_tap():
    dy, dx = visualize.strongest_tap(_uniform_kernels(1, 1, 3))
    assert (dy[0, 0], dx[0, 0]) == (-1, -1)


def test_kernel_centroid_of_a_one_hot_kernel_is_its_tap_offset():
    kernel = np.zeros((5, 5))
    kernel[0, 3] = 1.0
    dy, dx = visualize.kernel_centroid(kernel)
    assert (dy, dx) == (-2.0, 1.0)


def test_kernel_centroid_of_a_symmetric_kernel_is_the_source_pixel(rng):
    half = rng.random((5, 5))
    symmetric = half + half[::-1, ::-1]
    dy, dx = visualize.kernel_centroid(symmetric / symmetric.sum())
    assert dy == pytest.approx(0.0, abs=1e-12) and dx == pytest.approx(0.0, abs=1e-12)


def test_kernel_centroid_weighs_every_tap():
    kernel = np.zeros((3, 3))
    kernel[1, 2], kernel[2, 0] = 0.75, 0.25
    dy, dx = visualize.kernel_centroid(kernel)
    assert dy == pytest.approx(0.25) and dx == pytest.approx(0.5)


def test_kernel_centroid_keeps_the_leading_shape(rng):
    dy, dx = visualize.kernel_centroid(_random_kernels(rng, 4, 6, 3))
    assert dy.shape == dx.shape == (4, 6)


def test_shifted_kernel_moves_each_weight_by_the_offset():
    kernel = np.zeros((5, 5))
    kernel[1, 2], kernel[2, 2] = 0.25, 0.75
    expected = np.zeros((5, 5))
    expected[2, 1], expected[3, 1] = 0.25, 0.75
    np.testing.assert_array_equal(visualize.shift_kernels(kernel, (1, -1)), expected)


def test_shifted_kernel_drops_the_weights_pushed_past_its_edge():
    shifted = visualize.shift_kernels(_uniform_kernels(2, 2, 3), (0, 2))
    np.testing.assert_allclose(shifted.sum(axis=(-2, -1)), np.full((2, 2), 3 / 9))
    assert shifted[0, 0, :, :2].sum() == 0.0


def test_a_shift_by_the_whole_kernel_leaves_nothing():
    assert visualize.shift_kernels(_uniform_kernels(1, 1, 3), (-3, 0)).sum() == 0.0


def test_kernel_distance_of_identical_kernels_is_zero(rng):
    kernels = _random_kernels(rng, 4, 5, 3)
    np.testing.assert_allclose(visualize.kernel_distance(kernels, kernels), np.zeros((4, 5)))


def test_kernel_distance_of_kernels_without_a_common_tap_is_one():
    a, b = np.zeros((3, 3)), np.zeros((3, 3))
    a[0, 0], b[2, 2] = 1.0, 1.0
    assert visualize.kernel_distance(a, b) == pytest.approx(1.0)


def test_kernel_distance_between_uniform_and_one_hot_kernel():
    one_hot = np.zeros((3, 3))
    one_hot[1, 1] = 1.0
    # Half of |1 - 1/9| + 8 * 1/9.
    assert visualize.kernel_distance(_uniform_kernels(1, 1, 3)[0, 0], one_hot) == \
        pytest.approx(8 / 9)


def test_kernel_distance_rejects_different_shapes():
    with pytest.raises(ValueError, match="reference"):
        visualize.kernel_distance(_uniform_kernels(2, 2, 3), _uniform_kernels(2, 2, 5))


def test_edge_strength_of_a_ramp_is_its_slope_everywhere():
    rows, cols = np.mgrid[0:6, 0:7]
    ramp = 0.3 * rows + 0.4 * cols
    np.testing.assert_allclose(visualize.edge_strength(ramp), np.full((6, 7), 0.5))


def test_edge_strength_of_a_flat_image_is_zero():
    assert visualize.edge_strength(np.full((4, 4), 0.7)).max() == 0.0


def test_edge_strength_rejects_colour_images():
    with pytest.raises(ValueError, match="image"):
        visualize.edge_strength(np.zeros((4, 4, 3)))


def test_mean_by_quantile_averages_equally_populated_bins():
    strength = np.array([[7.0, 1.0], [3.0, 5.0], [0.0, 6.0], [2.0, 4.0]])
    centers, means = visualize.mean_by_quantile(10 * strength, strength, bins=4)
    np.testing.assert_allclose(centers, [0.5, 2.5, 4.5, 6.5])
    np.testing.assert_allclose(means, [5.0, 25.0, 45.0, 65.0])


def test_mean_by_quantile_orders_bins_from_weakest_to_strongest(rng):
    strength = rng.random((20, 30))
    centers, _ = visualize.mean_by_quantile(rng.random((20, 30)), strength, bins=7)
    assert np.all(np.diff(centers) > 0)


def test_mean_by_quantile_rejects_more_bins_than_values():
    with pytest.raises(ValueError, match="bins"):
        visualize.mean_by_quantile(np.zeros(3), np.zeros(3), bins=4)


def test_mean_by_quantile_rejects_different_shapes():
    with pytest.raises(ValueError, match="strength"):
        visualize.mean_by_quantile(np.zeros((2, 3)), np.zeros((3, 2)))


# --- kernels of a model's CARAFE layers ------------------------------------------------

def _stacked_carafe_model(channels=4):
    import keras

    from keras_carafe import CARAFE

    image = keras.Input((None, None, 2))
    x = keras.layers.Conv2D(channels, 3, padding="same", name="conv")(image)
    x = CARAFE(scale_factor=2, kernel_size=3, compressed_channels=4, name="first",
               encoder_kernel_initializer="glorot_uniform", implementation="fallback")(x)
    x = CARAFE(scale_factor=2, kernel_size=5, compressed_channels=4, name="second",
               encoder_kernel_initializer="glorot_uniform", implementation="fallback")(x)
    return keras.Model(image, keras.layers.Conv2D(1, 1, name="head")(x))


def test_layer_kernels_come_in_layer_order_with_each_layers_shape(rng):
    kernels = visualize.layer_kernels(_stacked_carafe_model(), rng.random((2, 5, 6, 2)))
    assert list(kernels) == ["first", "second"]
    assert kernels["first"].shape == (2, 10, 12, 1, 3, 3)
    assert kernels["second"].shape == (2, 20, 24, 1, 5, 5)


def test_layer_kernels_reassemble_each_layers_input_into_its_output(rng):
    import keras

    from keras_carafe.ops import carafe

    model = _stacked_carafe_model()
    x = rng.random((1, 5, 6, 2)).astype("float32")
    kernels = visualize.layer_kernels(model, x)
    layer = model.get_layer("second")
    layer_input, layer_output = keras.Model(model.input, [layer.input, layer.output])(x)
    k = kernels["second"]
    reassembled = carafe(layer_input, k.reshape(*k.shape[:3], -1), scale_factor=2,
                         kernel_size=5, implementation="fallback")
    np.testing.assert_allclose(reassembled, layer_output, rtol=1e-5, atol=1e-6)


def _down_up_model(channels=4):
    import keras

    from keras_carafe import CARAFE, CARAFEDownsample

    image = keras.Input((None, None, 2))
    x = keras.layers.Conv2D(channels, 3, padding="same", name="conv")(image)
    x = CARAFEDownsample(stride=2, kernel_size=3, compressed_channels=4, name="down",
                         encoder_kernel_initializer="glorot_uniform",
                         implementation="fallback")(x)
    x = CARAFE(scale_factor=2, kernel_size=5, compressed_channels=4, name="up",
               encoder_kernel_initializer="glorot_uniform", implementation="fallback")(x)
    return keras.Model(image, keras.layers.Conv2D(1, 1, name="head")(x))


@pytest.mark.parametrize("height, width", [(6, 8), (7, 5)])
def test_layer_kernels_include_downsampling_layers_with_their_output_size(height, width, rng):
    kernels = visualize.layer_kernels(_down_up_model(), rng.random((2, height, width, 2)))
    down_h, down_w = -(-height // 2), -(-width // 2)
    assert list(kernels) == ["down", "up"]
    assert kernels["down"].shape == (2, down_h, down_w, 1, 3, 3)
    assert kernels["up"].shape == (2, 2 * down_h, 2 * down_w, 1, 5, 5)


def test_layer_kernels_of_a_downsampling_layer_reassemble_its_input_into_its_output(rng):
    import keras

    from keras_carafe.ops import carafe_downsample

    model = _down_up_model()
    x = rng.random((1, 7, 6, 2)).astype("float32")
    k = visualize.layer_kernels(model, x)["down"]
    layer = model.get_layer("down")
    layer_input, layer_output = keras.Model(model.input, [layer.input, layer.output])(x)
    reassembled = carafe_downsample(layer_input, k.reshape(*k.shape[:3], -1), stride=2,
                                    kernel_size=3, implementation="fallback")
    np.testing.assert_allclose(reassembled, layer_output, rtol=1e-5, atol=1e-6)


def test_layer_kernels_reject_a_model_without_carafe(rng):
    import keras

    image = keras.Input((4, 4, 1))
    model = keras.Model(image, keras.layers.UpSampling2D(2)(image), name="plain")
    with pytest.raises(ValueError, match="'plain' has no CARAFE layer"):
        visualize.layer_kernels(model, rng.random((1, 4, 4, 1)))


# --- attribution summaries -------------------------------------------------------------

def test_share_inside_of_an_even_map_is_the_masks_area_fraction():
    mask = np.zeros((10, 10), bool)
    mask[2:6, 3:8] = True
    assert visualize.share_inside(np.full((10, 10), 0.3), mask) == pytest.approx(0.2)


def test_share_inside_counts_magnitudes_of_either_sign():
    mask = np.array([[True, False]])
    assert visualize.share_inside(np.array([[-3.0, 1.0]]), mask) == pytest.approx(0.75)


def test_share_inside_of_a_zero_map_is_zero():
    assert visualize.share_inside(np.zeros((3, 3)), np.ones((3, 3), bool)) == 0.0


def test_share_inside_rejects_a_mask_of_another_shape():
    with pytest.raises(ValueError, match="mask"):
        visualize.share_inside(np.zeros((3, 3)), np.ones((3, 4), bool))


def test_share_inside_rejects_a_non_boolean_mask():
    with pytest.raises(ValueError, match="boolean"):
        visualize.share_inside(np.zeros((3, 3)), np.ones((3, 3)))


# --- neighbourhood ------------------------------------------------------------------

def test_neighbourhood_is_the_window_around_the_source_pixel():
    image = np.arange(36.0).reshape(6, 6)
    # Output pixel (5, 7) at scale 2 reads source pixel (2, 3).
    np.testing.assert_array_equal(visualize.neighbourhood(image, (5, 7), 2, 3),
                                  image[1:4, 2:5])


@pytest.mark.parametrize("stride, pixel, rows, cols", [
    (2, (1, 2), slice(1, 4), slice(3, 6)),
    (3, (1, 1), slice(2, 5), slice(2, 5)),
    (1, (4, 0), slice(3, 6), slice(0, 2)),
])
def test_neighbourhood_of_a_downsampling_kernel_is_centred_on_pixel_times_stride(
        stride, pixel, rows, cols):
    image = np.arange(1.0, 65.0).reshape(8, 8)
    window = visualize.neighbourhood(image, pixel, 1, 3, stride=stride)
    cy, cx = pixel[0] * stride, pixel[1] * stride
    assert window[1, 1] == image[cy, cx]
    inside = window[window != 0]
    np.testing.assert_array_equal(inside, image[rows, cols].ravel())


def test_neighbourhood_rejects_upsampling_and_downsampling_at_once():
    with pytest.raises(ValueError, match="scale_factor=2 and stride=2"):
        visualize.neighbourhood(np.ones((4, 4)), (1, 1), 2, 3, stride=2)


def test_source_pixel_of_an_upsampling_kernel_is_the_pixel_divided_by_the_scale():
    assert visualize.source_pixel((5, 7), scale_factor=2) == (2, 3)


def test_source_pixel_of_a_downsampling_kernel_is_the_pixel_times_the_stride():
    assert visualize.source_pixel((5, 7), stride=3) == (15, 21)


@pytest.mark.parametrize("argument, value", [("scale_factor", 0), ("stride", 1.5),
                                             ("stride", True)])
def test_source_pixel_rejects_a_factor_that_is_not_a_positive_integer(argument, value):
    with pytest.raises(ValueError, match=f"`{argument}` must be an integer >= 1"):
        visualize.source_pixel((1, 1), **{argument: value})


def test_neighbourhood_is_zero_outside_the_image():
    window = visualize.neighbourhood(np.ones((4, 4)), (0, 0), 2, 5)
    assert window.shape == (5, 5)
    assert window[:2].sum() == 0 and window[:, :2].sum() == 0
    assert window[2:, 2:].sum() == 9


# --- figures --------------------------------------------------------------------------

def _image(rng, h=8, w=8):
    return rng.random((h, w))


def test_kernel_figure_has_an_overview_and_one_axis_per_pixel(rng):
    kernels = _random_kernels(rng, 16, 16, 5)
    fig = visualize.plot_kernels(_image(rng), kernels, [(3, 4), (10, 12), (8, 8)], 2)
    assert len(fig.axes) == 4


def test_kernel_figure_titles_show_each_kernels_entropy(rng):
    kernels = _uniform_kernels(16, 16, 5)
    fig = visualize.plot_kernels(_image(rng), kernels, [(3, 4)], 2)
    assert f"H={np.log(25):.2f}" in fig.axes[1].get_title()


def test_kernel_figure_draws_reference_kernels_with_a_legend(rng):
    kernels = _random_kernels(rng, 16, 16, 3)
    reference = visualize.bilinear_kernel_map(8, 8, 2, 3)
    fig = visualize.plot_kernels(_image(rng), kernels, [(3, 4), (5, 6)], 2,
                                 reference_kernels=reference)
    assert fig.axes[1].get_legend() is not None


def _marker_positions(fig):
    """(x, y) of the overview's pixel markers and of each panel's cross."""
    overview = [tuple(np.ravel(line.get_data())) for line in fig.axes[0].get_lines()]
    crosses = [tuple(np.ravel(ax.get_lines()[0].get_data())) for ax in fig.axes[1:]]
    return overview, crosses


def test_upsampling_kernel_figure_marks_output_pixels_at_their_half_pixel_centres(rng):
    fig = visualize.plot_kernels(_image(rng), _uniform_kernels(16, 16, 3), [(5, 7)], 2)
    overview, crosses = _marker_positions(fig)
    # Output pixel (5, 7) at scale 2 lies at input (2.25, 3.25): a quarter pixel
    # below and right of its source pixel (2, 3), the window's center tap (1, 1).
    assert overview == [(3.25, 2.25)]
    assert crosses == [(1.25, 1.25)]


def test_downsampling_kernel_figure_marks_output_pixels_on_pixel_times_stride(rng):
    fig = visualize.plot_kernels(_image(rng, 9, 9), _uniform_kernels(5, 5, 3), [(1, 3)],
                                 stride=2)
    overview, crosses = _marker_positions(fig)
    assert overview == [(6.0, 2.0)]
    assert crosses == [(1.0, 1.0)]


def test_downsampling_kernel_figure_shows_the_window_centred_on_pixel_times_stride(rng):
    image = _image(rng, 9, 9)
    fig = visualize.plot_kernels(image, _uniform_kernels(5, 5, 5), [(2, 1)], stride=2)
    np.testing.assert_array_equal(fig.axes[1].get_images()[0].get_array(),
                                  image[2:7, 0:5])


def test_downsampling_kernel_figure_draws_average_pooling_as_reference(rng):
    kernels = _random_kernels(rng, 4, 4, 3)
    reference = np.broadcast_to(visualize.average_pooling_kernel(2, 3), kernels.shape)
    fig = visualize.plot_kernels(_image(rng), kernels, [(1, 2)], stride=2,
                                 reference_kernels=reference, reference_label="average pooling")
    legend = fig.axes[1].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["average pooling"]


def test_kernel_figure_rejects_scale_factor_and_stride_together(rng):
    with pytest.raises(ValueError, match="either upsamples .* or downsamples"):
        visualize.plot_kernels(_image(rng), _uniform_kernels(4, 4, 3), [(1, 1)], 2, stride=2)


def test_entropy_figure_has_image_entropy_map_and_colour_bar(rng):
    kernels = _random_kernels(rng, 16, 16, 5)
    fig = visualize.plot_kernel_entropy(_image(rng, 16, 16),
                                        visualize.kernel_entropy(kernels), 5)
    assert len(fig.axes) == 3


def test_composed_kernel_figure_has_one_axis_per_map(rng):
    maps = [visualize.compose_kernels([_random_kernels(rng, 16, 16, 3),
                                       _random_kernels(rng, 32, 32, 3)], [2, 2], p)
            for p in [(10, 10), (20, 5)]]
    fig = visualize.plot_composed_kernels(_image(rng), maps, [(10, 10), (20, 5)], 4)
    assert len(fig.axes) == 2


def test_image_grid_has_one_axis_per_image(rng):
    rows = [{"a": _image(rng), "b": _image(rng), "c": _image(rng)} for _ in range(2)]
    fig = visualize.plot_image_grid(rows, captions=[{"a": "x"}, {"b": "y"}])
    assert len(fig.axes) == 6
    assert fig.axes[0].get_xlabel() == "x" and fig.axes[4].get_xlabel() == "y"


def test_overlay_figure_has_one_axis_per_map_in_rows_of_ncols(rng):
    maps = {"image": None, "saliency": _image(rng), "cam": _image(rng), "other": _image(rng)}
    fig = visualize.plot_overlays(_image(rng), maps, ncols=2)
    assert len(fig.axes) == 4
    assert [ax.get_title() for ax in fig.axes] == list(maps)
    assert fig.axes[2].get_subplotspec().rowspan.start == 1


def test_curve_figure_draws_a_line_per_curve_and_per_level():
    fig = visualize.plot_curves({"a": ([1, 2, 3], [3, 2, 1]), "b": ([1, 2], [1, 1])},
                                "x", "y", levels={"fixed": 2.5})
    assert len(fig.axes[0].get_lines()) == 3
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["a", "b", "fixed"]


def test_loss_figure_has_one_line_per_run():
    fig = visualize.plot_loss_curves({"a": [1.0, 0.5], "b": [0.9, 0.4, 0.2]})
    assert len(fig.axes[0].get_lines()) == 2


def test_figures_leave_pyplot_alone_and_save_as_png(rng):
    before = plt.get_fignums()
    fig = visualize.plot_kernels(_image(rng), _random_kernels(rng, 16, 16, 3), [(4, 4)], 2)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=50)
    assert plt.get_fignums() == before
    assert buffer.getvalue().startswith(b"\x89PNG")

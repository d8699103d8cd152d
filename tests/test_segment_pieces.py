"""Specification of the segmentation benchmark's network, training, scores and sampling regions.

Nothing here needs TensorFlow: CI runs this module on TensorFlow, JAX and
PyTorch. Reference values come from NumPy computations written out here.
"""

import inspect
import math

import keras
import numpy as np
import pytest

import keras_carafe.layers
from keras_carafe import CARAFE, CARAFEDownsample, visualize
from keras_carafe.layers.reassembly_layer import ReassemblyLayer
from keras_carafe.segment import config, metrics, network, report, sampling, statistics, training
from keras_carafe.segment.config import BASELINE, VARIANTS, SegmentConfig

pytestmark = pytest.mark.all_backends

# --- the network --------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_maps_images_to_class_logits_of_the_same_size(variant, rng):
    model = network.build_segmenter(variant, 5, channels=8)
    logits = keras.ops.convert_to_numpy(model(rng.random((2, 32, 48, 1)).astype("float32")))
    assert logits.shape == (2, 32, 48, 5)
    assert np.all(np.isfinite(logits))


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != BASELINE])
def test_variants_start_from_the_baselines_weights_outside_their_resampling_layers(variant):
    def shared(model):
        own = {layer.name for layer in network.resampling_layers(model)}
        return {layer.name: layer.get_weights() for layer in model.layers
                if layer.weights and layer.name not in own}

    baseline = shared(network.build_segmenter(BASELINE, 4, channels=8, seed=7))
    other = shared(network.build_segmenter(variant, 4, channels=8, seed=7))
    assert sorted(other) == sorted(baseline)
    for name, weights in baseline.items():
        for a, b in zip(weights, other[name]):
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_the_top_down_upsamplers_are_the_variants_layer():
    model = network.build_segmenter("carafe", 4, channels=8)
    assert [type(layer) for layer in network.resampling_layers(model)] == [CARAFE] * 3
    assert [layer.name for layer in network.resampling_layers(model)] == list(
        network.upsampler_names())


def test_carafe_plus_plus_downsamples_every_encoder_stage_with_content_aware_kernels():
    model = network.build_segmenter("carafe++", 4, channels=8)
    layers = [layer for layer in network.resampling_layers(model)
              if isinstance(layer, CARAFEDownsample)]
    assert [layer.name for layer in layers] == [f"down{i}_resample" for i in range(1, 5)]
    assert all(layer.stride == 2 for layer in layers)
    assert not any(isinstance(layer, CARAFEDownsample)
                   for layer in network.build_segmenter("carafe", 4, channels=8).layers)


def test_every_content_aware_layer_of_the_package_is_benchmarked():
    exported = {cls for _, cls in inspect.getmembers(keras_carafe.layers, inspect.isclass)
                if issubclass(cls, ReassemblyLayer) and cls is not ReassemblyLayer}
    used = {type(layer) for variant in VARIANTS
            for layer in network.build_segmenter(variant, 3, channels=8).layers
            if isinstance(layer, ReassemblyLayer)}
    assert used == exported


def test_the_coarsest_level_reaches_the_finest_through_the_upsamplers_alone():
    # Only additions sit between consecutive upsamplers, so their kernels compose.
    model = network.build_segmenter("carafe", 4, channels=8)
    for lower, upper in zip(network.upsampler_names()[:-1], network.upsampler_names()[1:]):
        merge = model.get_layer(f"merge{lower[2]}")
        assert any(t is model.get_layer(lower).output for t in merge.input)
        assert model.get_layer(upper).input is merge.output


def test_resampling_costs_count_each_layer_at_the_resolution_it_reads():
    from keras_carafe.segment.experiment import resampling_costs

    bilinear = network.build_segmenter("bilinear", 4, channels=8)
    # Three x2 bilinear upsamplers with 8 channels into 12x16, 24x32 and 48x64 outputs of a
    # 96x128 image: 4 taps, one multiply-add (2 FLOPs) each per output value.
    expected = sum(2 * 4 * (96 // s) * (128 // s) * 8 for s in (8, 4, 2))
    assert resampling_costs(bilinear, 96, 128, 8) == {
        "params": 0, "flops": expected, "model_params": bilinear.count_params()}
    plus = network.build_segmenter("carafe++", 4, channels=8)
    up = sum(plus.get_layer(f"up{l}_upsampler").cost(96 // 2 ** (l + 1), 128 // 2 ** (l + 1),
                                                       8).flops for l in (1, 2, 3))
    widths = (network.STEM_CHANNELS,) + network.encoder_widths(8)
    down = sum(plus.get_layer(f"down{l}_resample").cost(96 // 2 ** (l - 1),
                                                         128 // 2 ** (l - 1),
                                                         widths[l - 1]).flops
               for l in (1, 2, 3, 4))
    costs = resampling_costs(plus, 96, 128, 8)
    assert costs["flops"] == up + down
    assert costs["params"] == sum(layer.count_params()
                                  for layer in network.resampling_layers(plus))


def test_unknown_variant_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown variant 'lanczos'; choose from nearest"):
        network.build_segmenter("lanczos", 3)


# --- settings -------------------------------------------------------------------------


@pytest.mark.parametrize("field, value, message", [
    ("image_size", 40, "image_size must be a multiple of the network's total stride 16"),
    ("image_size", 8, "image_size must be a multiple"),
    ("epochs", 0, "epochs must be an integer >= 1"),
    ("seeds", (), "seeds must be distinct integers"),
    ("seeds", (1, 1), "seeds must be distinct integers"),
    ("variants", ("bilinear", "lanczos"), "unknown: 'lanczos'"),
    ("dataset", "cityscapes", "--dataset must be one of fashion, brain or nifti:IMAGE,LABELS"),
    ("dataset", "nifti:only_one.nii", "expects two paths"),
    ("garment_scale", (1.0, 4.0), "28 \\* largest <= image_size"),
    ("implementation", "cuda", "implementation must be one of"),
])
def test_settings_are_checked_with_a_message_naming_them(field, value, message):
    with pytest.raises(ValueError, match=message):
        SegmentConfig(**{field: value})


def test_quick_preset_is_one_seed_and_a_smaller_budget():
    assert len(config.QUICK.seeds) == 1 and len(config.DEFAULT.seeds) >= 3
    assert (config.QUICK.epochs * config.QUICK.train_images
            < config.DEFAULT.epochs * config.DEFAULT.train_images)


# --- training -------------------------------------------------------------------------


def test_batch_order_depends_on_the_seed_only_and_visits_every_image_each_epoch():
    orders = training.batch_orders(50, 3, seed=4)
    again = training.batch_orders(50, 3, seed=4)
    for order, repeat in zip(orders, again):
        np.testing.assert_array_equal(order, repeat)
        assert sorted(order) == list(range(50))
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[0], training.batch_orders(50, 3, seed=5)[0])


def test_training_reports_a_loss_per_epoch_and_predictions_are_classes(rng):
    model = network.build_segmenter("carafe", 3, channels=8)
    images = rng.random((8, 32, 32, 1)).astype("float32")
    labels = rng.integers(0, 3, (8, 32, 32))
    losses, seconds = training.train(model, images, labels, epochs=2, batch_size=4,
                                     learning_rate=1e-3, seed=0)
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses) and seconds > 0
    predicted = training.predict_classes(model, images[:3])
    assert predicted.shape == (3, 32, 32) and predicted.max() < 3


# --- metrics: references computed pixel by pixel ---------------------------------------


def _reference_iou(labels, predictions, c):
    true = [tuple(p) for p in np.argwhere(labels == c)]
    predicted = [tuple(p) for p in np.argwhere(predictions == c)]
    union = set(true) | set(predicted)
    return len(set(true) & set(predicted)) / len(union) if union else math.nan


def test_class_iou_matches_a_set_computation(rng):
    labels = rng.integers(0, 4, (3, 9, 11))
    predictions = np.where(rng.random(labels.shape) < 0.7, labels,
                           rng.integers(0, 4, labels.shape))
    iou = metrics.iou_from_confusion(metrics.confusion(labels, predictions, 5))
    for c in range(4):
        assert iou[c] == pytest.approx(_reference_iou(labels, predictions, c))
    assert math.isnan(iou[4])  # in neither labels nor predictions


def _reference_band(mask, width):
    outside = np.argwhere(~mask)
    band = np.zeros_like(mask)
    for y, x in np.argwhere(mask):
        if len(outside) and np.min(np.hypot(*(outside - (y, x)).T)) <= width:
            band[y, x] = True
    return band


@pytest.mark.parametrize("width", [1, 2, 3])
def test_inner_band_is_the_mask_within_the_width_of_a_pixel_outside_it(width, rng):
    mask = np.zeros((14, 17), bool)
    mask[2:12, 3:15] = rng.random((10, 12)) < 0.9
    mask[0:5, 0:4] = True  # reaches the image edge, which is no boundary
    np.testing.assert_array_equal(metrics.inner_band(mask, width),
                                  _reference_band(mask, width))


def test_a_mask_covering_the_whole_image_has_no_boundary():
    assert not metrics.inner_band(np.ones((5, 6), bool), 2).any()


def test_boundary_iou_compares_only_the_bands(rng):
    labels = np.zeros((1, 20, 20), np.int64)
    labels[0, 4:16, 4:16] = 1
    predictions = np.zeros_like(labels)
    predictions[0, 5:16, 4:16] = 1  # one row short at the top
    scores = metrics.score(labels, predictions, 2, boundary_width=1)
    for c in (0, 1):
        true = _reference_band(labels[0] == c, 1)
        predicted = _reference_band(predictions[0] == c, 1)
        expected = (true & predicted).sum() / (true | predicted).sum()
        assert scores["class_boundary_iou"][c] == pytest.approx(expected)
    assert scores["boundary_iou"] == pytest.approx(np.mean(scores["class_boundary_iou"]))
    assert scores["miou"] < 1 and scores["boundary_iou"] < scores["miou"]


def test_unscored_pixels_count_for_nothing():
    labels = np.zeros((1, 4, 4), np.int64)
    predictions = np.ones_like(labels)
    valid = np.zeros((1, 4, 4), bool)
    labels[0, 0, 0] = predictions[0, 0, 0] = 1
    valid[0, 0, 0] = True
    scores = metrics.score(labels, predictions, 2, 1, valid)
    assert scores["class_iou"][1] == 1.0 and scores["pixel_accuracy"] == 1.0


# --- statistics -----------------------------------------------------------------------

# Student t quantile t(0.975, 2) (three seeds), from statistical tables.
T_975_2 = 4.302652729911275


def test_t_interval_of_three_values():
    interval = statistics.t_interval([1.0, 2.0, 3.0])
    assert interval.mean == 2.0
    assert interval.half_width == pytest.approx(T_975_2 * 1.0 / math.sqrt(3), rel=1e-9)


def test_paired_difference_removes_what_the_seeds_share():
    baseline = [0.50, 0.60, 0.70]
    better = [0.52, 0.62, 0.72]
    assert statistics.t_interval(better).excludes_zero()  # trivially: means are far from 0
    difference = statistics.paired_difference(better, baseline)
    assert difference.mean == pytest.approx(0.02)
    assert difference.half_width == pytest.approx(0.0, abs=1e-12)
    noisy = statistics.paired_difference([0.53, 0.59, 0.72], baseline)
    assert not noisy.excludes_zero()


def test_one_seed_gives_no_interval():
    interval = statistics.t_interval([0.4])
    assert interval.half_width is None and not interval.excludes_zero()
    assert interval.format(100, 1) == "40.0"


def _runs(values):
    return {(variant, seed): {"miou": v, "boundary_iou": v / 2, "class_iou": [v, v],
                              "train_seconds": 1.0}
            for variant, per_seed in values.items() for seed, v in enumerate(per_seed)}


def test_summary_claims_a_win_only_where_the_paired_interval_excludes_zero():
    values = {"bilinear": [0.50, 0.60, 0.70], "carafe": [0.52, 0.625, 0.715],
              "nearest": [0.53, 0.57, 0.71]}
    stats = report.summarize(_runs(values), list(values), [0, 1, 2])
    text = report.summary(stats, [0, 1, 2])
    assert "mIoU: better than bilinear: carafe" in text
    assert "no measurable difference from bilinear (paired interval contains zero): nearest" in text
    assert "worse" not in text.split("\n")[1]


def test_summary_makes_no_claim_from_one_seed():
    values = {"bilinear": [0.5], "carafe": [0.6]}
    text = report.summary(report.summarize(_runs(values), list(values), [0]), [0])
    assert "one seed only, so no interval and no claim" in text
    assert "better" not in text


# --- where coarse points land ----------------------------------------------------------


def test_spread_is_the_transpose_of_the_composed_kernels(rng):
    kernels = [rng.dirichlet(np.ones(25), size=(6, 8)).reshape(6, 8, 5, 5),
               rng.dirichlet(np.ones(9), size=(12, 16)).reshape(12, 16, 3, 3)]
    points = [(1, 2), (0, 3), (2, 1)]
    spreads = visualize.spread_kernels(kernels, [2, 2], points)
    assert spreads.shape == (3, 12, 16)
    for q in [(0, 0), (5, 7), (11, 15), (3, 4)]:
        composed = visualize.compose_kernels(kernels, [2, 2], q)
        for spread, point in zip(spreads, points):
            assert spread[q] == pytest.approx(composed[point])


def test_spread_weight_on_maps_sums_every_points_spread_over_each_map(rng):
    kernels = [rng.dirichlet(np.ones(25), size=(6, 8)).reshape(6, 8, 5, 5),
               rng.dirichlet(np.ones(9), size=(12, 16)).reshape(12, 16, 3, 3)]
    maps = rng.random((2, 12, 16))
    weights = visualize.spread_weight_on(kernels, [2, 2], maps)
    assert weights.shape == (2, 3, 4)
    for p in np.ndindex(3, 4):
        spread = visualize.spread_kernels(kernels, [2, 2], [p])[0]
        for i in range(2):
            assert weights[i][p] == pytest.approx((spread * maps[i]).sum())


def test_spread_weight_on_wants_maps_over_the_last_output(rng):
    kernels = [rng.dirichlet(np.ones(9), size=(4, 4)).reshape(4, 4, 3, 3)]
    with pytest.raises(ValueError, match="must be \\(P, 4, 4\\)"):
        visualize.spread_weight_on(kernels, [2], np.ones((1, 2, 2)))


def test_spread_rejects_a_point_outside_the_first_input(rng):
    kernels = [rng.dirichlet(np.ones(9), size=(4, 4)).reshape(4, 4, 3, 3)]
    with pytest.raises(ValueError, match="outside the first layer's 2x2 input"):
        visualize.spread_kernels(kernels, [2], [(2, 0)])


@pytest.mark.parametrize("scale, kernel_size", [(2, 3), (3, 5), (4, 3)])
def test_bilinear_kernels_with_clamped_borders_are_kerass_bilinear_upsampling(
        scale, kernel_size, rng):
    features = rng.random((1, 3, 5, 2)).astype("float32")
    expected = keras.ops.convert_to_numpy(
        keras.layers.UpSampling2D(scale, interpolation="bilinear")(features))[0]
    kernels = visualize.bilinear_kernel_map(3, 5, scale, kernel_size, clamp_border=True)
    composed = np.stack([visualize.compose_kernels([kernels], [scale], (y, x))
                         for y in range(3 * scale) for x in range(5 * scale)])
    got = np.einsum("qhw,hwc->qc", composed, features[0]).reshape(3 * scale, 5 * scale, 2)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_a_chain_of_bilinear_kernels_keeps_all_weight_on_the_image():
    kernels = sampling.bilinear_chain([np.zeros((12, 8, 5, 5)), np.zeros((24, 16, 5, 5))])
    spread = visualize.spread_kernels(kernels, [2, 2], [(r, c) for r in range(6)
                                                        for c in range(4)])
    assert spread.sum() == pytest.approx(24 * 16)


def test_share_on_mask_counts_each_coarse_pixel_by_the_part_of_it_on_the_mask():
    spread = np.array([[1.0, 3.0]])
    mask = np.zeros((2, 4), bool)
    mask[:, 2:] = True
    mask[0, 0] = True  # a quarter of the first pixel
    assert sampling.share_on_mask(spread, mask, 2) == pytest.approx((0.25 + 3.0) / 4.0)


def test_a_points_object_is_the_connected_region_of_its_class():
    labels = np.zeros((6, 6), np.int64)
    labels[0:2, 0:2] = 3
    labels[4:6, 4:6] = 3  # same class, another garment
    mask = sampling.object_mask(labels, (1, 1))
    assert mask.sum() == 4 and mask[0, 0] and not mask[5, 5]


def test_object_shares_match_the_composed_kernels_of_every_finest_pixel(rng):
    # Independent route: compose_kernels gathers, for each finest-level
    # pixel, its weights on the coarsest level; a point's share is then the
    # weight read from it by pixels on its object, over all weight read from it.
    model = network.build_segmenter("carafe", 3, channels=8, seed=3)
    images = rng.random((2, 32, 32, 1)).astype("float32")
    labels = np.zeros((2, 32, 32), np.int64)
    labels[:, 4:20, 6:26] = 1
    labels[1, 20:30, 2:12] = 2
    shares = sampling.object_shares(model, images, labels)
    kernels = visualize.layer_kernels(model, images)
    chain = [kernels[name] for name in network.upsampler_names()]
    assert shares["points"] and len(shares["points"]) == len(shares["learned"])
    for (index, row, col), share in list(zip(shares["points"], shares["learned"]))[:3]:
        per_layer = [k[index, :, :, 0] for k in chain]
        mask = sampling.object_mask(labels[index], sampling.centre_pixel((row, col), 16))
        on = total = 0.0
        for q in np.ndindex(16, 16):
            weight = visualize.compose_kernels(per_layer, [2, 2, 2], q)[row, col]
            total += weight
            on += weight * mask[2 * q[0]:2 * q[0] + 2, 2 * q[1]:2 * q[1] + 2].mean()
        assert share == pytest.approx(on / total)
    assert 0 < shares["kept_learned"] <= 1 + 1e-9
    assert shares["kept_bilinear"] == pytest.approx(1.0)


def test_foreground_points_are_those_centred_on_an_object():
    labels = np.zeros((32, 48), np.int64)
    labels[8, 24] = 5  # centre pixel of coarse point (0, 1)
    labels[0, 0] = 2  # not a centre
    assert sampling.foreground_points(labels, 16) == [(0, 1)]

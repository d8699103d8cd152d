"""Specification of `python -m keras_carafe demo` and its pieces."""

import argparse
import json
import math
import os

import keras
import numpy as np
import pytest

from keras_carafe import CARAFE
from keras_carafe.__main__ import main
from keras_carafe.demo import (DEFAULT, QUICK, UPSAMPLERS, DemoConfig, add_arguments,
                               config_from_args, data, evaluation, experiment, models, report,
                               result_figures, upsampler_flops, upsamplers)


def _parse(argv):
    return add_arguments(argparse.ArgumentParser()).parse_args(argv)


# --- end to end ---------------------------------------------------------------------

def test_tiny_demo_writes_table_and_figures_with_finite_metrics(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["demo", "--upsamplers", "bilinear,carafe", "--patches", "32",
                 "--patch-size", "16", "--epochs", "1", "--eval-size", "48",
                 "--verbose", "0", "--output", str(out)])
    assert code == 0
    for name in ["results.md", "results.csv", "results.json", "comparison.png",
                 "training_loss.png", "carafe_kernels_camera.png", "carafe_entropy_text.png",
                 "models/carafe.keras"]:
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert [row["upsampler"] for row in results["rows"]] == [
        report.BASELINE, "bilinear", "carafe"]
    for row in results["rows"]:
        for metric in ("psnr", "ssim", "edge_psnr"):
            assert math.isfinite(row[metric]), (row["upsampler"], metric)
    assert results["best_psnr"] in ("bilinear", "carafe")
    assert f"Best held-out PSNR among the learned upsamplers: {results['best_psnr']}" in \
        capsys.readouterr().out


# --- command line ---------------------------------------------------------------------

def test_every_option_is_documented():
    parser = add_arguments(argparse.ArgumentParser())
    undocumented = [a.option_strings for a in parser._actions if not a.help]
    assert undocumented == []


def test_quick_preset_is_smaller_than_default():
    assert QUICK.patches * QUICK.epochs < DEFAULT.patches * DEFAULT.epochs


def test_options_override_the_chosen_preset():
    config = config_from_args(_parse(["--quick", "--epochs", "5", "--scale", "4",
                                      "--upsamplers", "carafe,nearest"]))
    assert (config.epochs, config.scale, config.upsamplers) == (5, 4, ("carafe", "nearest"))
    assert config.patches == QUICK.patches


def test_eval_size_zero_means_whole_images():
    assert config_from_args(_parse(["--quick", "--eval-size", "0"])).eval_size is None


def test_unknown_upsampler_is_a_usage_error_that_names_it(capsys):
    with pytest.raises(SystemExit):
        _parse(["--upsamplers", "nearest,lanczos"])
    assert "unknown upsampler(s) lanczos" in capsys.readouterr().err


def test_bad_settings_end_the_demo_with_exit_code_two_and_the_reason(capsys):
    assert main(["demo", "--quick", "--patches", "0"]) == 2
    assert "patches must be an integer >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("field", ["patches", "epochs", "batch_size", "channels", "depth"])
def test_config_rejects_a_budget_below_one(field):
    with pytest.raises(ValueError, match=f"{field} must be an integer >= 1"):
        DemoConfig(**{field: 0})


def test_config_rejects_a_non_positive_learning_rate():
    with pytest.raises(ValueError, match="learning_rate"):
        DemoConfig(learning_rate=0.0)


def test_config_rejects_held_out_crops_too_small_for_the_kernel_figures():
    with pytest.raises(ValueError, match="eval_size"):
        DemoConfig(eval_size=16)


def test_config_rejects_an_unknown_implementation():
    with pytest.raises(ValueError, match="implementation"):
        DemoConfig(implementation="cuda")


def test_config_rejects_a_patch_size_that_the_scale_does_not_divide():
    with pytest.raises(ValueError, match="multiple of scale"):
        DemoConfig(scale=4, patch_size=50)


# --- data ---------------------------------------------------------------------------

def test_split_rejects_an_image_named_on_both_sides():
    with pytest.raises(ValueError, match="both"):
        data.split_images(["camera", "coins"], ["coins"])


def test_split_rejects_the_same_picture_under_another_name():
    # scikit-image ships the chelsea photograph as `cat` too.
    with pytest.raises(ValueError, match="under another name"):
        data.split_images(["chelsea"], ["cat"])


def test_training_patches_come_only_from_training_images(rng):
    train, test = data.split_images(["coins", "page"], ["camera"])
    _, _, sources = data.sample_patches(train, 50, 32, 2, rng)
    assert set(sources) <= {"coins", "page"}
    assert not set(sources) & set(test)


def test_load_image_gives_grey_levels_in_unit_range():
    image = data.load_image("astronaut")
    assert image.shape == (512, 512) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0


def test_downscale_averages_blocks_and_drops_the_remainder():
    image = np.arange(20, dtype=np.float32).reshape(4, 5)
    np.testing.assert_allclose(data.downscale(image, 2), [[3.0, 5.0], [13.0, 15.0]])


def test_patches_pair_each_high_resolution_patch_with_its_block_average(rng):
    low, high, _ = data.sample_patches({"coins": data.load_image("coins")}, 8, 24, 4, rng)
    assert low.shape == (8, 6, 6, 1) and high.shape == (8, 24, 24, 1)
    np.testing.assert_allclose(low[3, :, :, 0], data.downscale(high[3, :, :, 0], 4),
                               rtol=1e-6)


# --- upsamplers, models and their costs ------------------------------------------------

@pytest.mark.parametrize("name", UPSAMPLERS)
@pytest.mark.parametrize("scale", [2, 4])
def test_every_upsampler_scales_features_by_the_factor(name, scale, rng):
    layer = upsamplers.make_upsampler(name, scale, 8)
    features = rng.random((2, 5, 7, 8)).astype("float32")
    assert tuple(layer(features).shape) == (2, 5 * scale, 7 * scale, 8)


@pytest.mark.parametrize("name", UPSAMPLERS)
def test_sr_model_enlarges_grey_images(name, rng):
    model = models.build_sr_model(name, 2, channels=8, depth=2)
    assert tuple(model(rng.random((1, 6, 9, 1)).astype("float32")).shape) == (1, 12, 18, 1)


def test_models_differ_only_in_the_upsampler_at_initialization():
    plain = models.build_sr_model("nearest", 2, channels=8, depth=2, seed=3)
    carafe = models.build_sr_model("carafe", 2, channels=8, depth=2, seed=3)
    for name in ["conv1", "features", "head1", "head2"]:
        for a, b in zip(plain.get_layer(name).get_weights(), carafe.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_stacked_carafe_model_enlarges_by_two_per_stage(rng):
    model = models.build_stacked_carafe_model(2, channels=8, depth=1)
    assert tuple(model(rng.random((1, 3, 5, 1)).astype("float32")).shape) == (1, 12, 20, 1)
    assert [layer.name for layer in model.layers if isinstance(layer, CARAFE)] == [
        "stage1_upsampler", "stage2_upsampler"]


def test_stacked_carafe_layers_follow_each_other_directly():
    model = models.build_stacked_carafe_model(3, channels=8, depth=1)
    for lower, upper in [("stage1_upsampler", "stage2_upsampler"),
                         ("stage2_upsampler", "stage3_upsampler")]:
        assert model.get_layer(upper).input is model.get_layer(lower).output


def test_stacked_carafe_model_rejects_zero_stages():
    with pytest.raises(ValueError, match="stages"):
        models.build_stacked_carafe_model(0)


def test_nearest_upsampling_costs_no_flops():
    assert upsampler_flops.upsampler_flops(upsamplers.make_upsampler("nearest", 2, 4), 3, 5, 4) == 0


def test_bilinear_flops_are_four_multiply_adds_per_output_value():
    layer = upsamplers.make_upsampler("bilinear", 2, 4)
    # 6x10 outputs x 4 channels x 4 taps x 2 FLOPs.
    assert upsampler_flops.upsampler_flops(layer, 3, 5, 4) == 1920


def test_transposed_convolution_flops_for_a_known_case():
    layer = upsamplers.make_upsampler("transposed_conv", 2, 4)
    # 3*5 pixels x 4 input channels, each multiplied into a 4x4 x 4-channel
    # output block: 60 x 64 = 3840 multiply-adds.
    assert upsampler_flops.upsampler_flops(layer, 3, 5, 4) == 2 * 3840


def test_pixel_shuffle_flops_for_a_known_case():
    layer = upsamplers.make_upsampler("pixel_shuffle", 2, 4)
    # 15 pixels x 3x3 x 4 in x 16 out channels = 8640 MACs.
    assert upsampler_flops.upsampler_flops(layer, 3, 5, 4) == 2 * 8640


def test_carafe_flops_are_the_layers_own_count():
    layer = upsamplers.make_upsampler("carafe", 2, 16)
    assert isinstance(layer, CARAFE)
    assert upsampler_flops.upsampler_flops(layer, 3, 5, 16) == layer.cost(3, 5, 16).flops


def test_pixel_shuffle_survives_saving(tmp_path, rng):
    model = models.build_sr_model("pixel_shuffle", 2, channels=8, depth=1)
    x = rng.random((1, 4, 4, 1)).astype("float32")
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    np.testing.assert_allclose(keras.models.load_model(path)(x), model(x), rtol=1e-6)


# --- experiment pieces -----------------------------------------------------------------

_TINY = DemoConfig(upsamplers=("carafe",), patches=16, patch_size=16, epochs=1, channels=8,
                   depth=1, verbose=0, eval_size=32, train_images=("coins",),
                   test_images=("camera",), save_models=False)


def test_prepared_data_pairs_patches_and_held_out_images_at_the_scale():
    low, high, tests = experiment.prepare_data(_TINY)
    assert low.shape == (16, 8, 8, 1) and high.shape == (16, 16, 16, 1)
    lr, hr = tests["camera"]
    assert hr.shape == (32, 32) and lr.shape == (16, 16)


def test_trained_carafe_model_gives_normalized_kernels_per_output_pixel():
    low, high, tests = experiment.prepare_data(_TINY)
    model, losses, seconds = experiment.train_upsampler(_TINY, "carafe", low, high)
    assert len(losses) == 1 and seconds > 0
    kernels = experiment.carafe_kernels(model, tests["camera"][0])
    assert kernels.shape == (32, 32, 5, 5)
    np.testing.assert_allclose(kernels.sum(axis=(-2, -1)), 1.0, rtol=1e-5)


# --- metrics, report and figures --------------------------------------------------------

def test_psnr_of_a_uniform_error_of_a_tenth_is_twenty_db():
    assert evaluation.psnr(np.zeros((4, 4)), np.full((4, 4), 0.1)) == pytest.approx(20.0)


def test_metrics_ignore_the_border():
    reference = np.random.default_rng(0).random((20, 20))
    estimate = reference.copy()
    estimate[:2] = 0.0
    assert evaluation.image_metrics(reference, estimate, border=2)["psnr"] == math.inf


def _row(name, psnr, ssim=0.9, edge=20.0):
    return {"upsampler": name, "psnr": psnr, "ssim": ssim, "edge_psnr": edge,
            "per_image": {"camera": {"psnr": psnr}}}


def test_summary_names_the_best_learned_upsampler_even_below_the_baseline():
    rows = [_row(report.BASELINE, 30.0), _row("bilinear", 28.0), _row("carafe", 29.0)]
    text = report.summary(rows)
    assert text.startswith("Best held-out PSNR among the learned upsamplers: carafe")
    assert "-1.00 dB for the best" in text


def test_markdown_table_has_a_line_per_row_in_both_tables():
    rows = [_row("bilinear", 28.0), _row("carafe", 29.0)]
    table = report.markdown_table(rows, (512, 512))
    assert sum(line.startswith("| carafe |") for line in table.splitlines()) == 2


def test_hardest_window_covers_the_baselines_largest_error():
    reference = np.zeros((40, 50))
    baseline = reference.copy()
    baseline[30:34, 41:45] = 1.0
    top, left, h, w = result_figures.hardest_window(reference, baseline, 8)
    assert top <= 30 and top + h >= 34 and left <= 41 and left + w >= 45
    assert top + h <= 40 and left + w <= 50


def test_picked_pixels_are_distinct_and_away_from_the_border(rng):
    reference = rng.random((40, 40))
    kernels = rng.dirichlet(np.ones(9), size=(40, 40)).reshape(40, 40, 3, 3)
    pixels = result_figures.pick_pixels(reference, kernels, count=4)
    assert len(set(pixels)) == 4
    assert all(8 <= y < 32 and 8 <= x < 32 for y, x in pixels)

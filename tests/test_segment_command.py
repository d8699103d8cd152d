"""Specification of `python -m keras_carafe segment`: options, bad input, a tiny run end to end.

Runs on every Keras backend (CI runs it on TensorFlow, JAX and PyTorch).
Every bad input ends the command with exit code 2 and a message that names
the option, before anything is trained or written.
"""

import argparse
import json
import math

import numpy as np
import pytest

from keras_carafe.__main__ import main
from keras_carafe.segment import QUICK, add_arguments, config_from_args, fashion

pytestmark = pytest.mark.all_backends

# A run of seconds: two variants, two seeds, tiny images and budget.
_TINY = ["--upsamplers", "bilinear,carafe", "--seeds", "0,1", "--epochs", "1",
         "--train-images", "16", "--test-images", "6", "--image-size", "48",
         "--garments", "1,2", "--garment-scale", "0.8,1.2", "--channels", "8", "--verbose", "0"]


def _parse(argv):
    return add_arguments(argparse.ArgumentParser()).parse_args(argv)


def _nifti(path, data, affine=None):
    import nibabel

    nibabel.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine).to_filename(
        str(path))
    return str(path)


def test_tiny_run_writes_tables_figures_models_and_kernel_maps(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["segment", *_TINY, "--output", str(out)]) == 0
    for name in ["results.md", "results.csv", "results.json", "predictions.png",
                 "training_loss.png", "sampling_regions.png", "models/carafe_seed1.keras",
                 "kernel_maps/epoch_001/kernel_maps.png",
                 "kernel_maps/epoch_001/composed_weights.png"]:
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert [(run["variant"], run["seed"]) for run in results["runs"]] == [
        ("bilinear", 0), ("carafe", 0), ("bilinear", 1), ("carafe", 1)]
    for run in results["runs"]:
        assert 0 <= run["miou"] <= 1 and 0 <= run["boundary_iou"] <= 1
        assert len(run["class_iou"]) == len(fashion.CLASS_NAMES)
    carafe = results["stats"]["carafe"]
    assert carafe["miou"]["n"] == 2 and math.isfinite(carafe["miou"]["half_width"])
    assert carafe["miou_vs_baseline"]["n"] == 2
    assert 0 <= carafe["share_learned"]["mean"] <= 1
    assert results["costs"]["bilinear"]["params"] == 0 < results["costs"]["carafe"]["params"]
    printed = capsys.readouterr().out
    assert "| carafe | 45,084 |" not in printed  # channels=8: not the default's costs
    assert "mIoU: " in printed and "boundary IoU: " in printed and "total time" in printed
    md = (out / "results.md").read_text()
    assert "| variant | resampling params |" in md and "Sampling regions (carafe)" in md


def test_every_option_is_documented():
    parser = add_arguments(argparse.ArgumentParser())
    assert [a.option_strings for a in parser._actions if not a.help] == []


def test_options_override_the_chosen_preset():
    config = config_from_args(_parse(["--quick", "--epochs", "5", "--seeds", "3,4",
                                      "--upsamplers", "carafe++,nearest"]))
    assert (config.epochs, config.seeds, config.variants) == (5, (3, 4),
                                                              ("carafe++", "nearest"))
    assert config.train_images == QUICK.train_images


@pytest.mark.parametrize("argv, message", [
    (["--upsamplers", "bilinear,lanczos"], "--upsamplers: unknown upsampler(s) 'lanczos'; "
                                           "choose from nearest,bilinear"),
    (["--seeds", "0,0"], "--seeds: expected distinct integers >= 0"),
    (["--garments", "3"], "--garments: expected two numbers LOW,HIGH"),
])
def test_malformed_options_are_usage_errors_that_name_them(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def _refused(argv, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["segment", *_TINY, "--output", str(out), *argv])
    captured = capsys.readouterr()
    assert code == 2
    assert not out.exists()  # nothing was trained or written
    assert "training images" not in captured.out and "[bilinear" not in captured.out
    return captured.err


def test_an_image_size_below_the_total_stride_is_refused_naming_it(tmp_path, capsys):
    err = _refused(["--image-size", "8"], tmp_path, capsys)
    assert "segment: --image-size must be a multiple of the network's total stride 16" in err


def test_missing_fashion_mnist_is_refused_naming_both_ways_to_get_it(tmp_path, capsys,
                                                                     monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(fashion, "DEBIAN_DIR", str(tmp_path / "nowhere"))
    err = _refused([], tmp_path, capsys)
    assert "segment: --dataset fashion: the Fashion-MNIST files" in err
    assert "apt-get install dataset-fashion-mnist" in err


def test_a_nifti_pair_on_different_grids_is_refused(tmp_path, capsys):
    image = _nifti(tmp_path / "image.nii.gz", np.zeros((32, 32, 40), np.float32))
    labels = _nifti(tmp_path / "labels.nii.gz", np.zeros((32, 32, 41), np.int16))
    err = _refused(["--dataset", f"nifti:{image},{labels}"], tmp_path, capsys)
    assert f"segment: --dataset nifti:{image},{labels}: IMAGE and LABELS must lie on the " \
           "same voxel grid" in err


def test_a_label_volume_with_fractions_is_refused(tmp_path, capsys):
    image = _nifti(tmp_path / "image.nii.gz", np.zeros((32, 32, 40), np.float32))
    values = np.zeros((32, 32, 40), np.float32)
    values[1, 2, 3] = 0.5
    labels = _nifti(tmp_path / "labels.nii.gz", values)
    err = _refused(["--dataset", f"nifti:{image},{labels}"], tmp_path, capsys)
    assert "must hold one non-negative integer class per voxel, but voxel (1, 2, 3) holds " \
           "0.5" in err


def test_volume_slices_smaller_than_the_total_stride_are_refused(tmp_path, capsys):
    image = _nifti(tmp_path / "image.nii.gz", np.zeros((10, 12, 80), np.float32))
    values = np.zeros((10, 12, 80), np.int16)
    values[2:8, 2:10, 5:75] = 1
    labels = _nifti(tmp_path / "labels.nii.gz", values)
    err = _refused(["--dataset", f"nifti:{image},{labels}"], tmp_path, capsys)
    assert "slices along axis 2 are 10x12 voxels, smaller than the network's total stride 16" \
        in err


def test_the_tensorflow_fallback_on_another_backend_is_refused(tmp_path, capsys, monkeypatch):
    from keras_carafe.segment import experiment

    monkeypatch.setattr(experiment.keras.backend, "backend", lambda: "jax")
    err = _refused(["--implementation", "fallback"], tmp_path, capsys)
    assert "--implementation fallback needs the TensorFlow backend, but KERAS_BACKEND is " \
           "'jax'" in err

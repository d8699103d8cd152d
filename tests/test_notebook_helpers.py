"""Specification of the helpers that notebooks/03_attribution_tf_keras_vis.ipynb imports
from its own folder: the texture-inset task and the classifier trained on it."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "notebooks"))

import inset_classifier  # noqa: E402
import texture_insets  # noqa: E402


def test_inset_images_have_one_labelled_square_each(rng):
    images, labels, masks = texture_insets.inset_images(6, rng, size=32, inset=10)
    assert images.shape == (6, 32, 32, 1) and images.dtype == np.float32
    assert labels.shape == (6,) and set(labels) <= {0, 1, 2}
    assert masks.shape == (6, 32, 32) and list(masks.sum(axis=(1, 2))) == [100] * 6


def test_inset_splits_take_pixels_from_opposite_halves(monkeypatch, rng):
    # A source whose left half is 0 and right half is 1 shows which half was read.
    halves = np.zeros((64, 64), np.float32)
    halves[:, 32:] = 1.0
    monkeypatch.setattr(texture_insets, "load_image", lambda name: halves)
    train, _, _ = texture_insets.inset_images(4, rng, "train", size=16, inset=6)
    held_out, _, _ = texture_insets.inset_images(4, rng, "held_out", size=16, inset=6)
    assert train.max() == 0.0 and held_out.min() == 1.0


def test_inset_images_reject_an_unknown_split(rng):
    with pytest.raises(ValueError, match="split"):
        texture_insets.inset_images(1, rng, "test")


def test_inset_images_reject_an_inset_as_large_as_the_image(rng):
    with pytest.raises(ValueError, match="inset"):
        texture_insets.inset_images(1, rng, size=16, inset=16)


@pytest.mark.parametrize("name", ["bilinear", "carafe"])
def test_classifier_gives_class_probabilities(name, rng):
    model = inset_classifier.build_classifier(name, 3, size=16, channels=8)
    probabilities = np.asarray(model(rng.random((2, 16, 16, 1)).astype("float32")))
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_classifier_decoder_works_at_half_the_input_resolution():
    model = inset_classifier.build_classifier("carafe", 3, size=16, channels=8)
    assert tuple(model.get_layer("decoder").output.shape) == (None, 8, 8, 8)


def test_classifiers_differ_only_in_the_upsampler_at_initialization():
    a = inset_classifier.build_classifier("bilinear", 3, size=16, channels=8, seed=2)
    b = inset_classifier.build_classifier("carafe", 3, size=16, channels=8, seed=2)
    for name in ["stem", "down1", "down2", "decoder", "class"]:
        for x, y in zip(a.get_layer(name).get_weights(), b.get_layer(name).get_weights()):
            np.testing.assert_array_equal(x, y)


def test_classifier_training_reports_loss_and_accuracy_per_epoch(rng):
    images, labels, _ = texture_insets.inset_images(16, rng, size=16, inset=6)
    model = inset_classifier.build_classifier("bilinear", 3, size=16, channels=8)
    history, seconds = inset_classifier.train_classifier(model, images, labels, epochs=2,
                                                   batch_size=8, verbose=0)
    assert len(history["loss"]) == 2 and len(history["accuracy"]) == 2 and seconds > 0

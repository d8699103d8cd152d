"""Specification of the segmentation benchmark's data: Fashion-MNIST scenes and volume slices.

Nothing here needs TensorFlow (CI runs it on every backend). The real data
come from the Debian packages dataset-fashion-mnist and mricron-data; the
NIfTI files of the bad-input cases are written here with nibabel.
"""

import numpy as np
import pytest

from keras_carafe.segment import datasets, fashion, volumes
from keras_carafe.segment.config import SegmentConfig

pytestmark = pytest.mark.all_backends


# --- Fashion-MNIST scenes --------------------------------------------------------------


def test_fashion_mnist_is_found_in_kerass_cache_before_the_debian_path(tmp_path, monkeypatch):
    cache = tmp_path / "keras" / "datasets" / "fashion-mnist"
    cache.mkdir(parents=True)
    for pair in fashion._FILES.values():
        for name in pair:
            (cache / name).write_bytes(b"")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    assert fashion.find_fashion_mnist() == str(cache)


def test_missing_fashion_mnist_names_both_places_and_both_ways_to_get_it(tmp_path,
                                                                         monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(fashion, "DEBIAN_DIR", str(tmp_path / "debian"))
    with pytest.raises(FileNotFoundError) as error:
        fashion.find_fashion_mnist()
    message = str(error.value)
    assert message.startswith("--dataset fashion:")
    assert str(tmp_path / "keras" / "datasets" / "fashion-mnist") in message
    assert str(tmp_path / "debian") in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "keras.datasets.fashion_mnist.load_data()" in message


def _square_garments(count):
    garments = np.zeros((count, 28, 28), np.float32)
    garments[:, 6:22, 6:22] = 0.8
    garments[:, 10:14, 10:14] = 0.0  # a dark print inside: part of the silhouette
    return garments, np.arange(count, dtype=np.uint8) % 10


def test_scene_labels_follow_each_garments_silhouette(monkeypatch, rng):
    monkeypatch.setattr(fashion, "load_image", lambda name: np.full((128, 128), 0.3, np.float32))
    images, labels = fashion.compose_scenes(*_square_garments(5), 6, rng, size=48,
                                            per_scene=(1, 1), scale=(1.0, 1.0))
    assert images.shape == (6, 48, 48, 1) and labels.shape == (6, 48, 48)
    # One unscaled garment per scene: its filled 16x16 outline, dark print included.
    assert list((labels > 0).sum(axis=(1, 2))) == [256] * 6
    np.testing.assert_array_equal(images[..., 0][labels == 0], np.float32(0.3))


def test_training_and_held_out_scenes_use_opposite_halves_of_the_textures(monkeypatch, rng):
    halves = np.zeros((64, 64), np.float32)
    halves[:, 32:] = 1.0
    monkeypatch.setattr(fashion, "load_image", lambda name: halves)
    garments = _square_garments(3)
    options = dict(size=32, per_scene=(1, 2), scale=(1.0, 1.0))
    train, train_labels = fashion.compose_scenes(*garments, 4, rng, "train", **options)
    held_out, held_labels = fashion.compose_scenes(*garments, 4, rng, "held_out", **options)
    assert train[..., 0][train_labels == 0].max() == 0.0
    assert held_out[..., 0][held_labels == 0].min() == 1.0


def test_real_fashion_scenes_have_every_class_and_fixed_held_out_images():
    cfg = SegmentConfig(train_images=48, test_images=24, image_size=64)
    data = datasets.load(cfg)
    assert data.class_names == fashion.CLASS_NAMES and len(data.class_names) == 11
    again = datasets.load(cfg)
    np.testing.assert_array_equal(data.test_images, again.test_images)
    images, labels = data.draw_training(3)
    assert images.shape == (48, 64, 64, 1) and labels.max() <= 10
    assert set(np.unique(data.test_labels)) | set(np.unique(labels)) == set(range(11))
    other, _ = data.draw_training(4)
    assert not np.array_equal(images, other)


# --- volumes -------------------------------------------------------------------------------


def _save(path, data, affine=None):
    import nibabel

    nibabel.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine).to_filename(
        str(path))
    return str(path)


def _pair(tmp_path, shape=(20, 24, 60), labels=None, label_affine=None):
    rng = np.random.default_rng(0)
    image = rng.random(shape).astype(np.float32) * 100
    if labels is None:
        labels = np.zeros(shape, np.int16)
        labels[4:16, 5:20, 5:55] = 3
        labels[8:12, 8:16, 5:55] = 7
    return (_save(tmp_path / "image.nii.gz", image),
            _save(tmp_path / "labels.nii.gz", labels, label_affine))


def test_a_nifti_pair_becomes_padded_held_out_slices_and_training_crops(tmp_path):
    image, labels = _pair(tmp_path)
    cfg = SegmentConfig(dataset=f"nifti:{image},{labels}", train_images=5, image_size=16,
                        test_slabs=2, slab_thickness=4, guard=2)
    data = datasets.load(cfg)
    assert data.class_names == ("background", "label 3", "label 7")
    # 20x24 slices, turned a quarter (24x20), padded to multiples of 16.
    assert data.test_images.shape == (8, 32, 32, 1) and data.test_valid.shape == (8, 32, 32)
    assert data.test_valid[:, :24, :20].all() and not data.test_valid[:, 24:].any()
    assert data.test_valid[:, :, 20:].sum() == 0
    assert set(np.unique(data.test_labels)) == {0, 1, 2}
    crops, crop_labels = data.draw_training(0)
    assert crops.shape == (5, 16, 16, 1) and crop_labels.shape == (5, 16, 16)
    assert 0.0 <= crops.min() and crops.max() <= 1.0


def test_held_out_slabs_keep_a_guard_from_every_training_slice():
    labels = np.zeros((4, 4, 120), np.int64)
    labels[:, :, 10:110] = 1
    train, test = volumes.held_out_slabs(labels, 2, slabs=3, thickness=8, guard=5)
    assert len(test) == 24 and not set(train) & set(test)
    assert np.min(np.abs(train[:, None] - test[None, :])) == 6
    assert train.min() >= 10 and train.max() <= 109


def test_too_few_labelled_slices_for_the_slabs_is_an_error_naming_the_options():
    labels = np.zeros((4, 4, 30), np.int64)
    labels[:, :, 5:15] = 1
    with pytest.raises(ValueError, match="10 slices.*--test-slabs, --slab-thickness or "
                                         "--guard"):
        volumes.held_out_slabs(labels, 2, slabs=3, thickness=4, guard=2)


def test_volumes_on_different_grids_are_refused_naming_the_argument(tmp_path):
    shifted = np.eye(4)
    shifted[0, 3] = 2.0
    image, labels = _pair(tmp_path, label_affine=shifted)
    with pytest.raises(ValueError, match="--dataset: IMAGE and LABELS must lie on the same "
                                         "voxel grid"):
        volumes.load_pair(image, labels)
    other = _save(tmp_path / "small.nii.gz", np.zeros((10, 24, 60), np.int16))
    with pytest.raises(ValueError, match="20x24x60 voxels.*10x24x60 voxels"):
        volumes.load_pair(image, other)


@pytest.mark.parametrize("value", [2.5, -1.0, np.nan])
def test_a_label_volume_with_a_non_integer_or_negative_value_is_refused(tmp_path, value):
    labels = np.zeros((20, 24, 60), np.float32)
    labels[3, 4, 5] = value
    image, label_path = _pair(tmp_path, labels=labels)
    with pytest.raises(ValueError, match=r"LABELS .* must hold one non-negative integer class "
                                         r"per voxel, but voxel \(3, 4, 5\) holds"):
        volumes.load_pair(image, label_path)


def test_a_missing_volume_file_is_named(tmp_path):
    image, _ = _pair(tmp_path)
    with pytest.raises(FileNotFoundError, match="LABELS file .*nothing.nii does not exist"):
        volumes.load_pair(image, str(tmp_path / "nothing.nii"))


def test_slices_smaller_than_the_networks_total_stride_are_refused(tmp_path):
    image, labels = _pair(tmp_path, shape=(12, 24, 60))
    cfg = SegmentConfig(dataset=f"nifti:{image},{labels}", test_slabs=1, slab_thickness=4,
                        guard=2)
    with pytest.raises(ValueError, match="slices along axis 2 are 12x24 voxels, smaller than "
                                         "the network's total stride 16"):
        datasets.load(cfg)


def test_aal_regions_merge_into_the_lobes_their_codes_name():
    regions = volumes.aal_region_lobes()
    assert len(regions) == 116
    assert regions[1] == ("Precentral_L", "frontal")
    assert regions[30] == ("Insula_R", "insula")
    assert regions[37] == ("Hippocampus_L", "limbic")
    assert regions[116] == ("Vermis_10", "cerebellum")
    assert len({lobe for _, lobe in regions.values()}) == 8


def test_merging_maps_values_to_named_classes_with_background_first():
    labels = np.array([[0, 5, 9], [2, 5, 0]])
    classes, names = volumes.merge_regions(labels, {2: "a", 5: "b", 9: "a"})
    assert names == ("background", "a", "b")
    np.testing.assert_array_equal(classes, [[0, 2, 1], [1, 2, 0]])


def test_the_brain_data_set_says_it_is_one_subject_and_why_regions_are_merged():
    data = datasets.load(SegmentConfig(dataset="brain", train_images=4))
    assert data.class_names[0] == "background" and len(data.class_names) == 9
    assert "one subject" in data.description
    assert "of the 116 would be absent from the held-out slices" in data.description
    assert data.test_images.shape[1] % 16 == 0 and data.test_images.shape[2] % 16 == 0

"""Specification of `keras_carafe.visualize.KernelMapsCallback` and the figures it draws.

Runs on every Keras backend; the TensorBoard records are written wherever
TensorFlow is installed, whichever backend trains.
"""

import glob
import importlib.util
import os

import keras
import numpy as np
import pytest
from matplotlib.figure import Figure

from keras_carafe import CARAFE, CARAFEDownsample, visualize
from keras_carafe.visualize import callback as callback_module

pytestmark = pytest.mark.all_backends

HAS_TENSORFLOW = importlib.util.find_spec("tensorflow") is not None


def _stacked_model(downsample=False):
    """Two chained x2 CARAFE layers (with an addition between, as in an FPN)."""
    image = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", name="features")(image)
    if downsample:
        x = CARAFEDownsample(stride=2, compressed_channels=4, name="down")(x)
    up1 = CARAFE(compressed_channels=4, name="up_a")(x)
    merged = keras.layers.Add()([up1, keras.layers.Conv2D(8, 1, name="lateral")(up1)])
    up2 = CARAFE(compressed_channels=4, name="up_b")(merged)
    return keras.Model(image, keras.layers.Conv2D(1, 1)(up2))


def _fit(model, callback, epochs=2, size=8):
    rng = np.random.default_rng(0)
    x = rng.random((4, size, size, 1)).astype("float32")
    out = model(x).shape[1]
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, rng.random((4, out, out, 1)).astype("float32"), epochs=epochs, verbose=0,
              callbacks=[callback])


def test_callback_writes_kernel_maps_and_composed_weights_every_epoch(tmp_path):
    images = np.random.default_rng(1).random((3, 8, 8, 1)).astype("float32")
    callback = visualize.KernelMapsCallback(images, str(tmp_path / "maps"),
                                            tensorboard=False)
    _fit(_stacked_model(), callback)
    expected = [str(tmp_path / "maps" / f"epoch_{e:03d}" / f"{name}.png")
                for e in (1, 2) for name in ("kernel_maps", "composed_weights")]
    assert callback.written == expected
    assert all(os.path.getsize(path) > 1000 for path in expected)


def test_callback_draws_downsampling_layers_but_composes_upsamplers_only(tmp_path):
    images = np.random.default_rng(1).random((2, 8, 8, 1)).astype("float32")
    model = _stacked_model(downsample=True)
    kernels = visualize.layer_kernels(model, images)
    assert [layer.name for layer in visualize.upsampling_chain(model, kernels)] == [
        "up_a", "up_b"]
    callback = visualize.KernelMapsCallback(images, str(tmp_path), tensorboard=False)
    _fit(model, callback, epochs=1)
    assert len(callback.written) == 2


def test_callback_refuses_a_model_without_reassembly_layers(tmp_path):
    image = keras.Input((8, 8, 1))
    model = keras.Model(image, keras.layers.Conv2D(1, 1)(image))
    with pytest.raises(ValueError, match="has no CARAFE or CARAFEDownsample layer"):
        _fit(model, visualize.KernelMapsCallback(np.zeros((1, 8, 8, 1)), str(tmp_path),
                                                 tensorboard=False), epochs=1)


def test_tensorboard_records_go_where_tensorflow_is_installed(tmp_path):
    images = np.random.default_rng(1).random((2, 8, 8, 1)).astype("float32")
    _fit(_stacked_model(), visualize.KernelMapsCallback(images, str(tmp_path)), epochs=2)
    events = glob.glob(str(tmp_path / "events.out.tfevents.*"))
    if not HAS_TENSORFLOW:
        assert events == []
        return
    import tensorflow as tf

    records = {}
    for path in events:
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                records.setdefault(value.tag, []).append(
                    (event.step, value.metadata.plugin_data.plugin_name,
                     tf.make_ndarray(value.tensor)))
    assert sorted(records) == ["composed_weights", "kernel_maps",
                               "mean_kernel_entropy/up_a", "mean_kernel_entropy/up_b"]
    steps, plugins, tensors = zip(*records["kernel_maps"])
    assert steps == (1, 2) and set(plugins) == {"images"}
    width, height, png = tensors[0]
    picture = tf.io.decode_png(png).numpy()
    assert picture.shape == (int(height), int(width), 3)
    entropy = [v for _, plugin, v in records["mean_kernel_entropy/up_a"] if plugin == "scalars"]
    assert len(entropy) == 2 and all(0 <= float(v) <= np.log(25) for v in entropy)


def test_tensorboard_true_without_tensorflow_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setattr(callback_module, "_tensorflow_or_none", lambda: None)
    with pytest.raises(ImportError, match="tensorboard=True needs TensorFlow"):
        visualize.KernelMapsCallback(np.zeros((1, 8, 8, 1)), str(tmp_path), tensorboard=True)


@pytest.mark.parametrize("argument, value", [("every", 0), ("tensorboard", "yes")])
def test_callback_arguments_are_checked(argument, value, tmp_path):
    with pytest.raises(ValueError, match=f"`{argument}` must be"):
        visualize.KernelMapsCallback(np.zeros((1, 8, 8, 1)), str(tmp_path), **{argument: value})


def test_spread_figure_has_a_row_per_point_and_a_column_per_map(rng):
    images = [rng.random((32, 32)) for _ in range(2)]
    maps = {"CARAFE": [rng.random((16, 16)) for _ in range(2)],
            "bilinear": [rng.random((16, 16)) for _ in range(2)]}
    masks = [np.pad(np.ones((10, 10), bool), 11)] * 2
    fig = visualize.plot_spread(images, [(0, 1), (1, 1)], maps, point_stride=16,
                                map_stride=2, masks=masks,
                                captions={"CARAFE": ["a", "b"], "bilinear": ["c", "d"]})
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    assert fig.axes[4].get_xlabel() == "b"


def test_kernel_map_figure_has_a_row_per_image_and_a_column_per_layer(rng):
    entropies = {"up_a": [rng.random((8, 8))] * 3, "up_b": [rng.random((16, 16))] * 3}
    fig = visualize.plot_kernel_maps([rng.random((16, 16))] * 3, entropies,
                                     {"up_a": 5, "up_b": 5})
    assert len(fig.axes) == 9

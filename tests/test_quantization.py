"""`keras_carafe.quantization.export_int8`: full-integer LiteRT and ONNX files of models holding
CARAFE (and LiteRT files of FADE, SAPA and DySample), their error against the float model
next to a bilinear twin's, and bad arguments."""

import importlib.util
import os
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest

from keras_carafe import CARAFE, FADE, SAPA, CARAFEDownsample, DySample, runtimes
from keras_carafe.quantization import export_int8, float_operators

SHAPE = (16, 16, 8)


def _smooth_images(count, seed):
    """Seeded images with structure at a few scales (blurred noise), standardized."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, *SHAPE), "float32")
    for block in (1, 2, 4):
        noise = rng.standard_normal((count, SHAPE[0] // block, SHAPE[1] // block, SHAPE[2]))
        images += np.repeat(np.repeat(noise, block, axis=1), block, axis=2) * block
    return ((images - images.mean()) / images.std()).astype("float32")


# Guided upsamplers take the convolution's output and its 2x2 average; their twin upsamples
# the average bilinearly.
GUIDED = {
    "fade": lambda: FADE(embedding_channels=8),
    "sapa": lambda: SAPA(embedding_channels=8),
    "average_bilinear": lambda: lambda encoder, decoder: keras.layers.UpSampling2D(
        interpolation="bilinear")(decoder),
}


def _network(upsampler, decoder="average"):
    """Conv -> upsampler -> Conv, so that the runtimes quantize the twin's resize too; a
    guided upsampler's decoder features come from the 2x2 average pool or (`"strided"`) a
    strided convolution."""
    keras.utils.set_random_seed(0)
    if upsampler in GUIDED:
        inputs = keras.Input(SHAPE)
        x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
        coarse = (keras.layers.AveragePooling2D(2)(x) if decoder == "average" else
                  keras.layers.Conv2D(16, 3, strides=2, padding="same")(x))
        y = GUIDED[upsampler]()(x, coarse)
        return keras.Model(inputs, keras.layers.Conv2D(8, 3, padding="same")(y))
    layer = {
        "carafe": lambda: CARAFE(compressed_channels=16,
                                 encoder_kernel_initializer="glorot_uniform"),
        "bilinear": lambda: keras.layers.UpSampling2D(interpolation="bilinear"),
        "carafe_downsample": lambda: CARAFEDownsample(
            compressed_channels=16, encoder_kernel_initializer="glorot_uniform"),
        "average_pool": lambda: keras.layers.AveragePooling2D(2, padding="same"),
        "dysample": lambda: DySample(kernel_initializer="glorot_uniform"),
    }[upsampler]()
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(8, 3, padding="same")(layer(x)))


def _int8_error(tmp_path, upsampler, fmt, float_ops=()):
    """RMS difference between the int8 file and the float model, % of the output range;
    `float_ops`: the operator types that the file keeps in float (none by default)."""
    model = _network(upsampler)
    path = tmp_path / f"{upsampler}.{'onnx' if fmt == 'onnx' else 'tflite'}"
    with warnings.catch_warnings():
        # Every operator is quantized, or the warning names those that are not.
        warnings.simplefilter("ignore" if float_ops else "error", RuntimeWarning)
        export_int8(model, path, _smooth_images(32, seed=1), format=fmt)
    assert {op for _, op in float_operators(path)} == set(float_ops)
    evaluation = _smooth_images(8, seed=2)
    expected = model.predict(evaluation, verbose=0)
    run = runtimes.load(path)
    got = np.concatenate([run(x[None]) for x in evaluation])
    return 100 * np.sqrt(np.mean((got - expected) ** 2)) / (expected.max() - expected.min())


@pytest.mark.parametrize("fmt", ["litert", "onnx"])
@pytest.mark.parametrize("layer, twin", [("carafe", "bilinear"),
                                         ("carafe_downsample", "average_pool")])
def test_an_int8_export_is_integer_only_and_within_twice_the_twins_error(tmp_path, fmt, layer,
                                                                          twin):
    error, twin_error = _int8_error(tmp_path, layer, fmt), _int8_error(tmp_path, twin, fmt)
    print(f"\n{fmt} int8 {layer}: {error:.3f}% of the output range, {twin}: {twin_error:.3f}%")
    assert 0 < error <= 2 * twin_error


@pytest.mark.parametrize("layer, twin, float_ops, ratio", [
    ("fade", "average_bilinear", (), 2),
    # SAPA: 1.6 to 2.1 times the twin's error on this small model over seeds 0-2 (1.07 on
    # the 64-channel layer of benchmarks/export_quantization.py).
    ("sapa", "average_bilinear", (), 2.5),
    # The integer kernels have no floor: DySample's two stay float32.
    ("dysample", "bilinear", ("FLOOR",), 2),
])
def test_the_other_layers_int8_litert_exports_stay_near_the_twins_error(
        tmp_path, layer, twin, float_ops, ratio):
    error = _int8_error(tmp_path, layer, "litert", float_ops)
    twin_error = _int8_error(tmp_path, twin, "litert")
    print(f"\nlitert int8 {layer}: {error:.3f}% of the output range, {twin}: {twin_error:.3f}%")
    assert 0 < error <= ratio * twin_error


# The layer's float operators in each format, and what stays float outside it: layout changes
# at its float output (ONNX), nothing (LiteRT: its QUANTIZE/DEQUANTIZE are not float ops).
FLOAT_REASSEMBLY = {"onnx": ({"MatMul", "Softmax"}, {"Transpose"}),
                    "litert": ({"BATCH_MATMUL", "SOFTMAX"}, set())}


@pytest.mark.parametrize("fmt", ["litert", "onnx"])
def test_float_reassembly_keeps_only_the_layers_operators_but_convolutions_in_float(tmp_path,
                                                                                    fmt):
    inside, outside = FLOAT_REASSEMBLY[fmt]
    model = _network("carafe")
    path = tmp_path / f"model.{'onnx' if fmt == 'onnx' else 'tflite'}"
    with pytest.warns(RuntimeWarning, match=r"carafe(_\d+)?: .*(MatMul|MATMUL).*(Softmax|SOFTMAX)"):
        export_int8(model, path, _smooth_images(32, seed=1), format=fmt,
                    float_reassembly=True)
    found = float_operators(path)
    in_layer = {op for scope, op in found if (scope or "").startswith("carafe")}
    assert in_layer >= inside and not in_layer & {"Conv", "CONV_2D"}, found
    assert {op for scope, op in found if not (scope or "").startswith("carafe")} <= outside, found
    evaluation = _smooth_images(8, seed=2)
    expected = model.predict(evaluation, verbose=0)
    run = runtimes.load(path)
    got = np.concatenate([run(x[None]) for x in evaluation])
    error = 100 * np.sqrt(np.mean((got - expected) ** 2)) / (expected.max() - expected.min())
    assert 0 < error <= 2 * _int8_error(tmp_path, "bilinear", fmt)


def _nested_network():
    """Conv -> a nested model `decoder` (Conv -> CARAFE) -> CARAFE -> Conv."""
    keras.utils.set_random_seed(0)
    inner_inputs = keras.Input((*SHAPE[:2], 16))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inner_inputs)
    decoder = keras.Model(inner_inputs, CARAFE(compressed_channels=16)(x), name="decoder")
    inputs = keras.Input(SHAPE)
    x = decoder(keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs))
    x = CARAFE(compressed_channels=16, name="outer_carafe")(x)
    return keras.Model(inputs, keras.layers.Conv2D(8, 3, padding="same")(x))


@pytest.mark.parametrize("fmt", ["litert", "onnx"])
def test_float_reassembly_reaches_the_layers_of_nested_models(tmp_path, fmt):
    inside, outside = FLOAT_REASSEMBLY[fmt]
    path = tmp_path / f"model.{'onnx' if fmt == 'onnx' else 'tflite'}"
    with pytest.warns(RuntimeWarning, match=r"decoder(_\d+)?: .*(MatMul|MATMUL)"):
        export_int8(_nested_network(), path, _smooth_images(16, seed=1), format=fmt,
                    float_reassembly=True)
    by_scope = {}
    for scope, op in float_operators(path):
        by_scope.setdefault((scope or "").rstrip("_0123456789"), set()).add(op)
    assert by_scope.pop("decoder") >= inside and by_scope.pop("outer_carafe") >= inside
    rest = set().union(*by_scope.values())
    assert not {"Conv", "CONV_2D"} & rest
    # The nested model's own convolution (outside its CARAFE) is quantized: nothing else of
    # the model stays float but the layout changes at the float output.
    assert rest <= outside, by_scope


@pytest.mark.parametrize("upsampler", ["carafe", "carafe_downsample", "fade", "sapa"])
def test_a_float_reassembly_litert_file_runs_whole_in_xnnpack(tmp_path, upsampler):
    # Its speed on a CPU: the full-integer file's softmax and matmul of two activations run
    # outside XNNPACK, splitting it into parts. (So does an int8 average pool: the guided
    # upsamplers take a strided convolution's output here.)
    path = tmp_path / "model.tflite"
    with pytest.warns(RuntimeWarning, match="keeps .* in float"):
        export_int8(_network(upsampler, decoder="strided"), path, _smooth_images(8, seed=1),
                    float_reassembly=True)
    assert runtimes.xnnpack_partitions(path) == 1


def test_an_int8_average_pool_runs_outside_xnnpack(tmp_path):
    # docs/deployment.md says so: the 2x2 average of the guided layers' int8 rows, which the
    # test above avoids.
    path = tmp_path / "pool.tflite"
    export_int8(_network("average_pool"), path, _smooth_images(8, seed=1))
    assert runtimes.xnnpack_partitions(path) == 2


@pytest.mark.parametrize("upsampler", ["carafe_downsample", "fade", "sapa", "dysample"])
def test_float_reassembly_in_litert_keeps_every_layers_convolutions_integer(tmp_path,
                                                                           upsampler):
    model = _network(upsampler)
    path = tmp_path / "model.tflite"
    with pytest.warns(RuntimeWarning, match="keeps .* in float"):
        export_int8(model, path, _smooth_images(32, seed=1), float_reassembly=True)
    name = next(layer.name for layer in model.layers
                if type(layer).__module__.startswith("keras_carafe."))
    found = float_operators(path)
    assert found and all(scope and scope.startswith(name) for scope, _ in found), found
    assert not {op for _, op in found} & {"CONV_2D", "DEPTHWISE_CONV_2D"}, found


def test_float_operators_lists_every_operator_of_a_float_file_by_layer(tmp_path):
    model = _network("carafe")
    model.export(str(tmp_path / "float.tflite"), format="litert", verbose=False)
    found = float_operators(tmp_path / "float.tflite")
    assert {op for _, op in found} >= {"CONV_2D", "SOFTMAX", "BATCH_MATMUL"}
    assert any(scope and scope.startswith("carafe") for scope, _ in found), found


def test_an_operator_left_in_float_is_named_in_a_warning(tmp_path):
    # A resize alone: onnxruntime's quantizer quantizes it only next to quantized operators.
    inputs = keras.Input(SHAPE)
    model = keras.Model(inputs, keras.layers.UpSampling2D(interpolation="bilinear")(inputs))
    with pytest.warns(RuntimeWarning, match=r"keeps 1 operator in float.*Resize"):
        export_int8(model, tmp_path / "resize.onnx", _smooth_images(4, seed=1), format="onnx")


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(format="tflite"), ValueError, r"`format` must be one of 'litert', 'onnx', got 'tflite'"),
    (dict(filepath="model.onnx"), ValueError, r"`filepath` must end with '.tflite'"),
    (dict(representative_data=np.zeros((0, *SHAPE), "float32")), ValueError,
     r"`representative_data` must hold at least one input"),
    (dict(representative_data=np.zeros((4, 8, 8, 8), "float32")), ValueError,
     r"`representative_data` item 0 must have the model's input shape \(16, 16, 8\)"),
    (dict(representative_data=[np.zeros((2, *SHAPE), "float32")]), ValueError,
     r"`representative_data` item 0 must be one input"),
    (dict(representative_data=3), TypeError, r"`representative_data` must be an array"),
    (dict(float_reassembly="yes"), TypeError, r"`float_reassembly` must be a bool, got 'yes'"),
])
def test_bad_arguments_are_refused_by_name(tmp_path, kwargs, error, message):
    arguments = dict(model=_network("carafe"), filepath=str(tmp_path / "model.tflite"),
                     representative_data=_smooth_images(2, seed=0))
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        export_int8(**arguments)


def test_float_reassembly_in_litert_without_tensorflows_quantizer_says_what_to_use(
        tmp_path, monkeypatch):
    from tensorflow.lite.python import convert

    monkeypatch.delattr(convert, "mlir_quantize")
    with pytest.raises(RuntimeError, match=r"`float_reassembly=True` with format='litert' "
                                           r".*use format='onnx' or float_reassembly=False"):
        export_int8(_network("carafe"), tmp_path / "model.tflite", _smooth_images(2, seed=0),
                    float_reassembly=True)


def test_a_model_that_does_not_compute_in_float32_is_refused(tmp_path):
    inputs = keras.Input(SHAPE)
    model = keras.Model(inputs, CARAFE(compressed_channels=4, dtype="float16")(inputs),
                        dtype="float16")
    with pytest.raises(ValueError, match="export_int8 quantizes float32 models"):
        export_int8(model, tmp_path / "model.tflite", _smooth_images(2, seed=0))


def test_a_nested_layer_that_does_not_compute_in_float32_is_refused(tmp_path):
    inner_inputs = keras.Input(SHAPE)
    half = CARAFE(compressed_channels=4, dtype="mixed_float16")
    decoder = keras.Model(inner_inputs, half(inner_inputs), name="decoder")
    inputs = keras.Input(SHAPE)
    model = keras.Model(inputs, decoder(inputs))
    with pytest.raises(ValueError, match=r"export_int8 quantizes float32 models; .* compute "
                                         r"in float16"):
        export_int8(model, tmp_path / "model.tflite", _smooth_images(2, seed=0))


def test_runtimes_load_refuses_a_file_of_no_known_format():
    with pytest.raises(ValueError, match=r"`path` must name a .onnx, .tflite or OpenVINO .xml "
                                         r"file, got 'model.pb'"):
        runtimes.load("model.pb")


def test_another_backend_is_refused_by_name():
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed in this environment")
    script = textwrap.dedent("""
        import keras, numpy as np
        from keras_carafe.quantization import export_int8
        inputs = keras.Input((4, 4, 2))
        model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs))
        try:
            export_int8(model, "model.tflite", np.zeros((1, 4, 4, 2), "float32"))
        except ValueError as err:
            print(err)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "KERAS_BACKEND": "jax"}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "export_int8 needs the TensorFlow backend (KERAS_BACKEND=tensorflow)" in result.stdout
    assert "the backend is 'jax'" in result.stdout

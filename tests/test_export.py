"""`model.export` of models holding CARAFE, each format loaded and run in its own runtime,
and `force_portable` around users' own export code (TensorFlow backend).

Each test prints the largest difference from Keras's own output; run
`python -m pytest tests/test_export.py -s -q | grep "max error"` to see them.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from carafe_reference import carafe_downsample_reference, random_downsample_inputs
from heads import pointwise_head
from keras_carafe import CARAFE, CARAFEDownsample, runtimes
from keras_carafe.ops import carafe_downsample, force_portable

CONFIGS = {
    "s2-k5-g1": dict(scale_factor=2, kernel_size=5, group_size=1),
    "s3-k3-g4": dict(scale_factor=3, kernel_size=3, group_size=4),
    "s2-k5-g2-channels_first": dict(scale_factor=2, kernel_size=5, group_size=2,
                                    data_format="channels_first"),
    # CARAFE++ downsampling (odd input sizes give ceil(H / stride) outputs).
    "down-s2-k5-g2": dict(stride=2, kernel_size=5, group_size=2),
}
# Odd spatial sizes and two batch sizes through one exported signature.
INPUTS = [(1, 7, 9), (3, 5, 6)]
CHANNELS = 8
TOLERANCE = 1e-5


def _model(data_format="channels_last", implementation="auto", **config):
    shape = (None, None, CHANNELS) if data_format == "channels_last" else (CHANNELS, None, None)
    inputs = keras.Input(shape)
    layer = CARAFEDownsample if "stride" in config else CARAFE
    x = layer(compressed_channels=4, data_format=data_format, implementation=implementation,
              encoder_kernel_initializer="glorot_uniform", name="carafe", **config)(inputs)
    outputs = pointwise_head(data_format)(x)
    return keras.Model(inputs, outputs)


def _batches(rng, config):
    channels_first = config.get("data_format") == "channels_first"
    shapes = [(n, CHANNELS, h, w) if channels_first else (n, h, w, CHANNELS)
              for n, h, w in INPUTS]
    return [rng.standard_normal(shape).astype("float32") for shape in shapes]


def _check(name, model, inputs, run):
    worst = 0.0
    for x in inputs:
        y = run(x)
        expected = model.predict(x, verbose=0)
        assert y.shape == expected.shape
        worst = max(worst, float(np.abs(y - expected).max()))
    print(f"\n{name}: max error vs Keras {worst:.2e}")
    assert worst <= TOLERANCE


@pytest.mark.parametrize("config", CONFIGS)
def test_onnx_export_runs_in_onnxruntime(tmp_path, rng, config):
    import onnx
    import onnxruntime

    model = _model(**CONFIGS[config])
    inputs = _batches(rng, CONFIGS[config])
    model(inputs[0])  # ONNX export needs a model that has been called
    model.export(tmp_path / "model.onnx", format="onnx", verbose=False)
    op_types = {node.op_type for node in onnx.load(tmp_path / "model.onnx").graph.node}
    assert not op_types & {"If", "Loop"}, op_types
    session = onnxruntime.InferenceSession(tmp_path / "model.onnx",
                                           providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    _check(f"onnx {config}", model, inputs, lambda x: session.run(None, {name: x})[0])


def _litert_runner(path):
    from ai_edge_litert.interpreter import Interpreter

    # The plain interpreter: builtin operators only, no Flex delegate.
    interpreter = Interpreter(model_path=str(path))
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert not any(op.startswith("Flex") or op in ("CUSTOM", "DELEGATE") for op in ops), ops
    [source] = interpreter.get_input_details()
    [sink] = interpreter.get_output_details()

    def run(x):
        interpreter.resize_tensor_input(source["index"], x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(sink["index"])

    return run


@pytest.mark.parametrize("config", CONFIGS)
def test_litert_export_runs_in_the_interpreter_with_builtin_operators_only(tmp_path, rng,
                                                                            config):
    model = _model(**CONFIGS[config])
    path = tmp_path / "model.tflite"
    # Builtins only: conversion fails rather than fall back to TensorFlow ops.
    model.export(path, format="litert", verbose=False,
                 target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]})
    _check(f"litert {config}", model, _batches(rng, CONFIGS[config]), _litert_runner(path))


@pytest.mark.parametrize("config", CONFIGS)
def test_openvino_export_runs_in_openvino(tmp_path, rng, config):
    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is not installed (pip install keras-carafe[export])")
    import openvino

    model = _model(**CONFIGS[config])
    model.export(str(tmp_path / "model.xml"), format="openvino", verbose=False)
    # Without the hint, CPUs with bfloat16 units compute in bfloat16.
    compiled = openvino.Core().compile_model(tmp_path / "model.xml", "CPU",
                                             {"INFERENCE_PRECISION_HINT": "f32"})
    _check(f"openvino {config}", model, _batches(rng, CONFIGS[config]),
           lambda x: compiled(x)[0])


def _static_model(config, size=(12, 10)):
    """The model of `config` for inputs of one fixed size (the export leaves the batch open)."""
    data_format = config.get("data_format", "channels_last")
    shape = (CHANNELS, *size) if data_format == "channels_first" else (*size, CHANNELS)
    inputs = keras.Input(shape)
    layer = CARAFEDownsample if "stride" in config else CARAFE
    x = layer(compressed_channels=4, encoder_kernel_initializer="glorot_uniform", **config)(
        inputs)
    return keras.Model(inputs, pointwise_head(data_format)(x))


@pytest.mark.parametrize("config", CONFIGS)
def test_a_static_shape_litert_export_holds_rank_4_tensors_and_no_shape_arithmetic(
        tmp_path, config):
    from ai_edge_litert.interpreter import Interpreter

    _static_model(CONFIGS[config]).export(tmp_path / "model.tflite", format="litert",
                                          verbose=False)
    interpreter = Interpreter(model_path=str(tmp_path / "model.tflite"))
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert not ops & {"SHAPE", "PACK", "GATHER", "TRANSPOSE"} - (
        {"TRANSPOSE"} if "channels_first" in config else set()), ops
    ranks = {len(t["shape_signature"]) for t in interpreter.get_tensor_details()}
    assert max(ranks) <= 4, ranks


# 7x7 kernels and 8 groups too: their 7 rows and 8 group outputs are concatenated as trees
# of at most five inputs.
XNNPACK_CONFIGS = {**CONFIGS, "s2-k7-g1": dict(scale_factor=2, kernel_size=7, group_size=1),
                   "down-s2-k7-g1": dict(stride=2, kernel_size=7, group_size=1),
                   "s2-k5-g8": dict(scale_factor=2, kernel_size=5, group_size=8)}


@pytest.mark.parametrize("size", [(12, 10), (11, 9)])
@pytest.mark.parametrize("config", XNNPACK_CONFIGS)
def test_a_static_shape_litert_export_runs_whole_in_xnnpack(tmp_path, config, size):
    # XNNPACK takes no STRIDED_SLICE with a step other than 1 and no concatenation of more
    # than five inputs: such an operator would run outside it, between two parts.
    _static_model(XNNPACK_CONFIGS[config], size).export(tmp_path / "model.tflite",
                                                        format="litert", verbose=False)
    assert runtimes.xnnpack_partitions(tmp_path / "model.tflite") == 1


@pytest.mark.parametrize("config", CONFIGS)
def test_a_static_shape_onnx_export_holds_rank_4_tensors_and_no_shape_arithmetic(
        tmp_path, config):
    import onnx

    model = _static_model(CONFIGS[config])
    model(np.zeros((1, *model.input_shape[1:]), "float32"))  # ONNX export needs a call
    model.export(tmp_path / "model.onnx", format="onnx", verbose=False)
    graph = onnx.shape_inference.infer_shapes(onnx.load(tmp_path / "model.onnx")).graph
    op_types = {node.op_type for node in graph.node}
    assert not op_types & {"Shape", "Gather", "Range"}, op_types
    if "channels_first" not in config:
        # The only transposes are the layout changes that tf2onnx puts around the
        # channels-last convolutions (ONNX's are channels-first).
        produced_by = {out: node.op_type for node in graph.node for out in node.output}
        consumed_by = {}
        for node in graph.node:
            for name in node.input:
                consumed_by.setdefault(name, set()).add(node.op_type)
        for node in graph.node:
            if node.op_type == "Transpose":
                assert (produced_by.get(node.input[0]) == "Conv"
                        or consumed_by.get(node.output[0]) == {"Conv"}), node.name
    ranks = {len(v.type.tensor_type.shape.dim)
             for v in [*graph.value_info, *graph.input, *graph.output]}
    assert max(ranks) <= 4, ranks


_SERVE_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf
    served = tf.saved_model.load(sys.argv[1])
    endpoint = getattr(served, sys.argv[2])
    outputs = [endpoint(tf.constant(np.load(path))).numpy() for path in sys.argv[3:]]
    np.savez(sys.argv[1] + ".outputs.npz", *outputs)
    print(json.dumps({"imported": "keras_carafe" in sys.modules}))
""")


def _serve_in_a_fresh_process(saved_dir, endpoint, inputs, tmp_path):
    """Runs `endpoint` of the SavedModel in a process that never imports keras_carafe."""
    paths = []
    for i, x in enumerate(inputs):
        paths.append(str(tmp_path / f"x{i}.npy"))
        np.save(paths[-1], x)
    result = subprocess.run(
        [sys.executable, "-c", _SERVE_SCRIPT, str(saved_dir), endpoint, *paths],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"imported": False}
    outputs = np.load(str(saved_dir) + ".outputs.npz")
    return [outputs[f"arr_{i}"] for i in range(len(inputs))]


@pytest.mark.parametrize("config", CONFIGS)
def test_saved_model_export_serves_without_keras_carafe(tmp_path, rng, config):
    model = _model(implementation="op", **CONFIGS[config])
    model.export(tmp_path / "saved", format="tf_saved_model", verbose=False)
    inputs = _batches(rng, CONFIGS[config])
    served = iter(_serve_in_a_fresh_process(tmp_path / "saved", "serve", inputs, tmp_path))
    _check(f"tf_saved_model {config}", model, inputs, lambda x: next(served))


@pytest.mark.parametrize("layer, dtype, target, why", [
    (CARAFE, "mixed_float16", "litert", "LiteRT's builtin operators run its convolutions"),
    (CARAFE, "float64", "litert", "LiteRT's builtin operators run its convolutions"),
    (CARAFE, "mixed_bfloat16", "onnx", "ONNX convolutions take float16, float32 or float64"),
    (CARAFEDownsample, "mixed_float16", "litert",
     "LiteRT's builtin operators run its convolutions"),
])
def test_export_that_cannot_express_the_layer_names_it_and_says_why(tmp_path, layer, dtype,
                                                                    target, why):
    inputs = keras.Input((None, None, CHANNELS))
    model = keras.Model(inputs, layer(compressed_channels=4, dtype=dtype, name="carafe")(inputs))
    model(np.zeros((1, 3, 3, CHANNELS), "float32"))
    suffix = {"litert": "tflite", "onnx": "onnx"}[target]
    with pytest.raises(ValueError, match=rf"{layer.__name__} layer 'carafe' cannot be exported "
                                         rf"to {target}: it computes in "
                                         rf"{dtype.replace('mixed_', '')} and {why}"):
        model.export(tmp_path / f"model.{suffix}", format=target, verbose=False)


# --- force_portable around users' own export code ------------------------------------------


def _custom_op_types(concrete):
    return {op.type for op in concrete.graph.get_operations() if op.type.startswith("KerasCarafe")}


def _serving_function(model):
    def serve(x):
        return model(x)

    return tf.function(serve, input_signature=[
        tf.TensorSpec((None, None, None, CHANNELS), tf.float32)])


def test_functions_traced_outside_the_switch_use_the_compiled_op():
    serve = _serving_function(_model(implementation="op"))
    assert _custom_op_types(serve.get_concrete_function()) == {"KerasCarafeReassemble"}


def test_tf2onnx_conversion_of_a_function_inside_the_switch_runs_in_onnxruntime(rng):
    import onnxruntime
    import tf2onnx

    model = _model(implementation="op")
    serve = _serving_function(model)
    with force_portable():
        assert not _custom_op_types(serve.get_concrete_function())
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature)
    session = onnxruntime.InferenceSession(proto.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    _check("force_portable + tf2onnx", model, _batches(rng, {}),
           lambda x: session.run(None, {name: x})[0])


def test_saved_model_of_a_custom_module_saved_inside_the_switch_serves_without_keras_carafe(
        tmp_path, rng):
    model = _model(implementation="op", scale_factor=3, kernel_size=3, group_size=2)
    module = tf.Module()
    module.model = model
    module.upsample = _serving_function(model)
    features, kernels = random_downsample_inputs(rng, 2, 7, 9, CHANNELS, 2, 5, 2)
    def downsample(f, k):
        return carafe_downsample(f, k, 2, 5, 2, implementation="op")

    module.downsample = tf.function(
        downsample, input_signature=[tf.TensorSpec((None, None, None, CHANNELS)),
                         tf.TensorSpec((None, None, None, 50))])
    with force_portable():
        tf.saved_model.save(module, str(tmp_path / "saved"))
    inputs = _batches(rng, {})
    served = iter(_serve_in_a_fresh_process(tmp_path / "saved", "upsample", inputs, tmp_path))
    _check("force_portable + tf.saved_model.save", model, inputs, lambda x: next(served))

    np.savez(tmp_path / "fk.npz", features, kernels)
    script = textwrap.dedent("""
        import sys
        import numpy as np, tensorflow as tf
        served = tf.saved_model.load(sys.argv[1])
        data = np.load(sys.argv[2])
        out = served.downsample(tf.constant(data["arr_0"]), tf.constant(data["arr_1"])).numpy()
        np.save(sys.argv[3], out)
        print("keras_carafe" in sys.modules)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "saved"), str(tmp_path / "fk.npz"),
         str(tmp_path / "down.npy")], capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "False"
    np.testing.assert_allclose(np.load(tmp_path / "down.npy"),
                               carafe_downsample_reference(features, kernels, 2, 5, 2),
                               rtol=1e-5, atol=1e-5)


def test_the_switch_is_undone_when_the_block_ends():
    serve = _serving_function(_model(implementation="op"))
    with force_portable():
        pass
    assert _custom_op_types(serve.get_concrete_function()) == {"KerasCarafeReassemble"}


# `model.export` on the JAX and PyTorch backends, where "auto" runs the compiled
# kernels: while exporting, the layers trace the portable path instead.
_EXPORT_ON_BACKEND = textwrap.dedent("""
    import json, os, sys, tempfile
    import numpy as np, keras
    from keras_carafe import CARAFE, CARAFEDownsample
    from keras_carafe.ops.implementation import resolve
    fmt = sys.argv[1]
    assert resolve("auto") == "op"
    # Fixed spatial sizes: jax2tf cannot trace the gradient of a strided convolution
    # (CARAFEDownsample's encoder) over symbolic ones; the batch stays symbolic.
    inputs = keras.Input((7, 9, 8))
    x = CARAFEDownsample(compressed_channels=4, encoder_kernel_initializer="glorot_uniform")(
        inputs)
    x = CARAFE(compressed_channels=4, encoder_kernel_initializer="glorot_uniform")(x)
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(x))
    x = np.random.default_rng(0).standard_normal((2, 7, 9, 8)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x))
    path = os.path.join(tempfile.mkdtemp(), "model.onnx" if fmt == "onnx" else "model")
    model.export(path, format=fmt)
    if fmt == "onnx":
        import onnxruntime
        session = onnxruntime.InferenceSession(path)
        out = session.run(None, {session.get_inputs()[0].name: x})[0]
    else:
        import tensorflow as tf
        served = tf.saved_model.load(path)
        out = served.serve(x).numpy()
    print(json.dumps({"max_error": float(np.abs(out - expected).max())}))
""")


@pytest.mark.parametrize("backend, format", [("jax", "tf_saved_model"), ("torch", "onnx")])
def test_an_export_on_another_backend_runs_in_its_runtime(backend, format):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed in this environment")
    if format == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime is not installed (the export extra)")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([repo, *filter(None, [os.environ.get("PYTHONPATH")])])}
    result = subprocess.run([sys.executable, "-c", _EXPORT_ON_BACKEND, format],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"{backend} {format} max error {report['max_error']:.2e}")
    assert report["max_error"] <= TOLERANCE

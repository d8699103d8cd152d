"""`model.export` of models holding FADE, SAPA and DySample, each format loaded and run in
its own runtime (TensorFlow backend), and the formats that cannot express a layer.

Each test prints the largest difference from Keras's own output; run
`python -m pytest tests/test_family_export.py -s -q | grep "max error"` to see them.
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

from heads import pointwise_head
from keras_carafe import SAPA, DySample, FADE, runtimes

CHANNELS = 8
TOLERANCE = 1e-5

# name: (layer factory, guided, data_format)
MODELS = {
    "fade": (lambda fmt: FADE(embedding_channels=4, data_format=fmt), True, "channels_last"),
    "fade-channels_first": (lambda fmt: FADE(embedding_channels=4, data_format=fmt), True,
                            "channels_first"),
    "sapa-g2": (lambda fmt: SAPA(embedding_channels=4, group_size=2, data_format=fmt), True,
                "channels_last"),
    "dysample-lp": (lambda fmt: DySample(group_size=2, kernel_initializer="glorot_uniform",
                                         data_format=fmt), False, "channels_last"),
    "dysample-pl-dyscope": (lambda fmt: DySample(style="pl", group_size=2, dynamic_scope=True,
                                                 kernel_initializer="glorot_uniform",
                                                 data_format=fmt), False, "channels_last"),
}
# Decoder sizes (odd ones too) and two batch sizes through one exported signature.
SIZES = [(1, 3, 5), (2, 4, 3)]


def _shape(fmt, n, h, w):
    return (n, h, w, CHANNELS) if fmt == "channels_last" else (n, CHANNELS, h, w)


def _model(name, implementation="auto"):
    make, guided, fmt = MODELS[name]
    layer = make(fmt)
    if hasattr(layer, "implementation"):
        layer.implementation = implementation
    decoder = keras.Input(_shape(fmt, None, None, None)[1:], name="decoder")
    if guided:
        encoder = keras.Input(_shape(fmt, None, None, None)[1:], name="encoder")
        inputs, x = [encoder, decoder], layer(encoder, decoder)
    else:
        inputs, x = [decoder], layer(decoder)
    outputs = pointwise_head(fmt)(x)
    return keras.Model(inputs, outputs)


def _batches(rng, name):
    _, guided, fmt = MODELS[name]
    batches = []
    for n, h, w in SIZES:
        decoder = rng.standard_normal(_shape(fmt, n, h, w)).astype("float32")
        encoder = rng.standard_normal(_shape(fmt, n, 2 * h, 2 * w)).astype("float32")
        batches.append([encoder, decoder] if guided else [decoder])
    return batches


def _check(label, model, batches, run):
    worst = 0.0
    for inputs in batches:
        y = run(inputs)
        expected = model.predict(inputs, verbose=0)
        assert y.shape == expected.shape
        worst = max(worst, float(np.abs(y - expected).max()))
    print(f"\n{label}: max error vs Keras {worst:.2e}")
    assert worst <= TOLERANCE


def _feed(names, inputs):
    """Maps runtime input names to arrays by the Keras input names they contain."""
    keyed = dict(zip(("encoder", "decoder") if len(inputs) == 2 else ("decoder",), inputs))
    return {name: next(v for k, v in keyed.items() if k in name) for name in names}


@pytest.mark.parametrize("name", MODELS)
def test_onnx_export_runs_in_onnxruntime(tmp_path, rng, name):
    import onnx
    import onnxruntime

    model = _model(name)
    batches = _batches(rng, name)
    model(batches[0])
    model.export(tmp_path / "model.onnx", format="onnx", verbose=False)
    op_types = {node.op_type for node in onnx.load(tmp_path / "model.onnx").graph.node}
    assert not op_types & {"If", "Loop"}, op_types
    session = onnxruntime.InferenceSession(tmp_path / "model.onnx",
                                           providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    _check(f"onnx {name}", model, batches,
           lambda inputs: session.run(None, _feed(names, inputs))[0])


@pytest.mark.parametrize("name", MODELS)
def test_litert_export_runs_in_the_interpreter_with_builtin_operators_only(tmp_path, rng, name):
    from ai_edge_litert.interpreter import Interpreter

    model = _model(name)
    path = tmp_path / "model.tflite"
    model.export(path, format="litert", verbose=False,
                 target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]})
    interpreter = Interpreter(model_path=str(path))
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert not any(op.startswith("Flex") or op in ("CUSTOM", "DELEGATE") for op in ops), ops
    sources = interpreter.get_input_details()
    [sink] = interpreter.get_output_details()

    def run(inputs):
        feed = _feed([s["name"] for s in sources], inputs)
        for source in sources:
            interpreter.resize_tensor_input(source["index"], feed[source["name"]].shape)
        interpreter.allocate_tensors()
        for source in sources:
            interpreter.set_tensor(source["index"], feed[source["name"]])
        interpreter.invoke()
        return interpreter.get_tensor(sink["index"])

    _check(f"litert {name}", model, _batches(rng, name), run)


def _static_model(name):
    """The model of `name` for inputs of one fixed size (the export leaves the batch open)."""
    make, guided, fmt = MODELS[name]
    decoder = keras.Input(_shape(fmt, None, 5, 6)[1:], name="decoder")
    layer = make(fmt)
    if guided:
        encoder = keras.Input(_shape(fmt, None, 10, 12)[1:], name="encoder")
        inputs, x = [encoder, decoder], layer(encoder, decoder)
    else:
        inputs, x = [decoder], layer(decoder)
    return keras.Model(inputs, pointwise_head(fmt)(x))


def _static_batch(rng, model):
    return [rng.standard_normal((1, *i.shape[1:])).astype("float32") for i in model.inputs]


@pytest.mark.parametrize("name", MODELS)
def test_a_static_shape_litert_export_holds_rank_4_tensors_and_no_shape_arithmetic(
        tmp_path, rng, name):
    from ai_edge_litert.interpreter import Interpreter

    model = _static_model(name)
    model.export(tmp_path / "model.tflite", format="litert", verbose=False)
    interpreter = Interpreter(model_path=str(tmp_path / "model.tflite"))
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    allowed = {"GATHER"} if name.startswith("dysample") else set()  # its bilinear reads
    if MODELS[name][2] == "channels_first":
        allowed.add("TRANSPOSE")  # the layout changes at the layer's inputs and output
    assert not ops & {"SHAPE", "PACK", "GATHER", "GATHER_ND", "TRANSPOSE"} - allowed, ops
    ranks = {len(t["shape_signature"]) for t in interpreter.get_tensor_details()}
    assert max(ranks) <= 4, ranks
    runner = interpreter.get_signature_runner()
    batch = _static_batch(rng, model)
    outputs = runner(**_feed(list(runner.get_input_details()), batch))
    [y] = outputs.values()
    np.testing.assert_allclose(y, model.predict(batch, verbose=0), atol=TOLERANCE)


@pytest.mark.parametrize("name", [name for name in MODELS if not name.startswith("dysample")])
def test_a_static_shape_litert_export_runs_whole_in_xnnpack(tmp_path, name):
    # XNNPACK concatenates at most five inputs: SAPA's 25 key windows come as a tree. (It has
    # no GATHER, which DySample's bilinear reads need.)
    _static_model(name).export(tmp_path / "model.tflite", format="litert", verbose=False)
    assert runtimes.xnnpack_partitions(tmp_path / "model.tflite") == 1


@pytest.mark.parametrize("name", MODELS)
def test_a_static_shape_onnx_export_holds_rank_4_tensors_and_no_shape_arithmetic(
        tmp_path, rng, name):
    import onnx

    model = _static_model(name)
    model(_static_batch(rng, model))  # ONNX export needs a call
    model.export(tmp_path / "model.onnx", format="onnx", verbose=False)
    graph = onnx.shape_inference.infer_shapes(onnx.load(tmp_path / "model.onnx")).graph
    op_types = {node.op_type for node in graph.node}
    allowed = {"Gather"} if name.startswith("dysample") else set()
    assert not op_types & {"Shape", "Gather", "GatherND", "Range"} - allowed, op_types
    ranks = {len(v.type.tensor_type.shape.dim)
             for v in [*graph.value_info, *graph.input, *graph.output]}
    assert max(ranks) <= 4, ranks


@pytest.mark.parametrize("name", MODELS)
def test_openvino_export_runs_in_openvino(tmp_path, rng, name):
    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is not installed (pip install keras-carafe[export])")
    import openvino

    model = _model(name)
    model.export(str(tmp_path / "model.xml"), format="openvino", verbose=False)
    compiled = openvino.Core().compile_model(tmp_path / "model.xml", "CPU",
                                             {"INFERENCE_PRECISION_HINT": "f32"})
    names = [port.get_any_name() for port in compiled.inputs]
    _check(f"openvino {name}", model, _batches(rng, name),
           lambda inputs: compiled(_feed(names, inputs))[0])


_SERVE_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf
    served = tf.saved_model.load(sys.argv[1])
    data = np.load(sys.argv[2])
    outputs = []
    for i in range(int(sys.argv[3])):
        arrays = [tf.constant(data[f"b{i}_{j}"]) for j in range(int(sys.argv[4]))]
        outputs.append(served.serve(arrays).numpy())
    np.savez(sys.argv[2] + ".out.npz", *outputs)
    print(json.dumps({"imported": "keras_carafe" in sys.modules}))
""")


@pytest.mark.parametrize("name", MODELS)
def test_saved_model_export_serves_without_keras_carafe(tmp_path, rng, name):
    model = _model(name, implementation="op")
    model.export(tmp_path / "saved", format="tf_saved_model", verbose=False)
    batches = _batches(rng, name)
    np.savez(tmp_path / "data.npz", **{f"b{i}_{j}": x for i, inputs in enumerate(batches)
                                       for j, x in enumerate(inputs)})
    result = subprocess.run(
        [sys.executable, "-c", _SERVE_SCRIPT, str(tmp_path / "saved"), str(tmp_path / "data.npz"),
         str(len(batches)), str(len(batches[0]))], capture_output=True, text=True,
        cwd=tmp_path, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"imported": False}
    served = np.load(str(tmp_path / "data.npz") + ".out.npz")
    outputs = iter(served[f"arr_{i}"] for i in range(len(batches)))
    _check(f"tf_saved_model {name}", model, batches, lambda inputs: next(outputs))


@pytest.mark.parametrize("layer, dtype, target, why", [
    (lambda: FADE(embedding_channels=4, dtype="mixed_float16"), "float16", "litert",
     "LiteRT's builtin operators run its convolutions"),
    (lambda: SAPA(embedding_channels=4, dtype="mixed_bfloat16"), "bfloat16", "onnx",
     "ONNX convolutions take float16, float32 or float64"),
    (lambda: DySample(group_size=2, dtype="float64"), "float64", "litert",
     "LiteRT's builtin operators run its convolutions"),
])
def test_export_that_cannot_express_the_layer_names_it_and_says_why(tmp_path, layer, dtype,
                                                                    target, why):
    instance = layer()
    kind = type(instance).__name__
    decoder = keras.Input((None, None, CHANNELS))
    if kind == "DySample":
        inputs, outputs = [decoder], instance(decoder)
    else:
        encoder = keras.Input((None, None, CHANNELS))
        inputs, outputs = [encoder, decoder], instance(encoder, decoder)
    model = keras.Model(inputs, outputs)
    model([np.zeros((1, 6, 6, CHANNELS), "float32"), np.zeros((1, 3, 3, CHANNELS), "float32")]
          [-len(inputs):])  # ONNX export needs a model that has been called
    suffix = {"litert": "tflite", "onnx": "onnx"}[target]
    with pytest.raises(ValueError, match=rf"{kind} layer '{instance.name}' cannot be exported to "
                                         rf"{target}: it computes in {dtype} and {why}"):
        model.export(tmp_path / f"model.{suffix}", format=target, verbose=False)


# `model.export` on the JAX and PyTorch backends, where "auto" runs the compiled kernels:
# while exporting, the layers trace the portable path instead.
_EXPORT_ON_BACKEND = textwrap.dedent("""
    import json, os, sys, tempfile
    import numpy as np, keras
    from keras_carafe import SAPA, DySample, FADE
    from keras_carafe.ops.implementation import resolve
    fmt = sys.argv[1]
    assert resolve("auto") == "op"
    # Fixed spatial sizes (as the CARAFE export test: jax2tf traces them most reliably);
    # the batch stays symbolic.
    encoder, decoder = keras.Input((10, 6, 8)), keras.Input((5, 3, 8))
    x = FADE(embedding_channels=4)(encoder, decoder)
    y = SAPA(embedding_channels=4, group_size=2)(encoder, decoder)
    z = DySample(group_size=2, dynamic_scope=True, kernel_initializer="glorot_uniform")(decoder)
    out = keras.layers.Conv2D(3, 1)(keras.layers.Concatenate()([x, y, z]))
    model = keras.Model([encoder, decoder], out)
    rng = np.random.default_rng(0)
    data = [rng.standard_normal((2, 10, 6, 8)).astype("float32"),
            rng.standard_normal((2, 5, 3, 8)).astype("float32")]
    expected = keras.ops.convert_to_numpy(model(data))
    path = os.path.join(tempfile.mkdtemp(), "model.onnx" if fmt == "onnx" else "model")
    model.export(path, format=fmt)
    if fmt == "onnx":
        import onnxruntime
        session = onnxruntime.InferenceSession(path)
        names = [i.name for i in session.get_inputs()]
        out = session.run(None, dict(zip(names, data)))[0]
    else:
        import tensorflow as tf
        served = tf.saved_model.load(path)
        out = served.serve(data).numpy()
    print(json.dumps({"max_error": float(np.abs(out - expected).max())}))
""")


@pytest.mark.parametrize("backend, format", [("jax", "tf_saved_model"), ("torch", "onnx")])
def test_an_export_on_another_backend_runs_in_its_runtime(backend, format):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed in this environment")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([repo, *filter(None, [os.environ.get("PYTHONPATH")])])}
    result = subprocess.run([sys.executable, "-c", _EXPORT_ON_BACKEND, format],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"\n{backend} {format}: max error vs Keras {report['max_error']:.2e}")
    assert report["max_error"] <= TOLERANCE

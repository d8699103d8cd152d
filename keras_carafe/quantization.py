"""Full-integer (int8) exports of models that hold the package's layers (TensorFlow backend).

`export_int8` writes a post-training-quantized LiteRT or ONNX file from a float32 model and
a representative dataset, then checks what it wrote: every operator of the model computes in
int8, or a warning names the layers that kept float operators and which ones.

- LiteRT: `model.export(format="litert")` with the converter's full-integer settings
  (`Optimize.DEFAULT`, the representative dataset, `TFLITE_BUILTINS_INT8`), float32 input
  and output (one QUANTIZE after the input, one DEQUANTIZE before the output).
- ONNX: `model.export(format="onnx")`, onnxruntime's pre-processing, then its static QDQ
  quantization with int8 activations and per-channel int8 weights.

With `float_reassembly=True` the package's layers keep everything but their convolutions in
float (their kernel normalization and reassembly), in both formats: the rest of the model
is quantized as before, with a QUANTIZE/DEQUANTIZE pair (LiteRT) or QDQ nodes (ONNX) where
the float part begins and ends.

CARAFE's kernel softmax and reassembly quantize as well as bilinear upsampling does with
these recipes (`docs/deployment.md`, `benchmarks/export_quantization.py`).
"""

import os
import re
import tempfile
import warnings

import numpy as np

FORMATS = ("litert", "onnx")

# ONNX operators that only move or reshape values: they take a float graph input or feed
# a float graph output without computing anything in float.
_ONNX_DATA_MOVEMENT = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten"}


def _samples(representative_data, input_shape):
    """The representative inputs as a list of float32 arrays of shape (1, *input_shape)."""
    try:
        samples = [np.asarray(x, dtype="float32") for x in representative_data]
    except TypeError as err:
        raise TypeError("`representative_data` must be an array of inputs (first axis: "
                        "samples) or an iterable of single inputs") from err
    if not samples:
        raise ValueError("`representative_data` must hold at least one input, got none")
    expected = tuple(input_shape)
    for i, x in enumerate(samples):
        shape = x.shape[1:] if x.ndim == len(expected) + 1 else x.shape
        if x.ndim == len(expected) + 1 and x.shape[0] != 1:
            raise ValueError(f"`representative_data` item {i} must be one input of shape "
                             f"{expected} (or {(1, *expected)}), got shape {x.shape}")
        if len(shape) != len(expected) or any(e is not None and e != s
                                               for e, s in zip(expected, shape)):
            raise ValueError(f"`representative_data` item {i} must have the model's input "
                             f"shape {expected}, got {x.shape}")
        samples[i] = x.reshape((1, *shape))
    return samples


def _scope_of(name):
    """The layer's name scope in a tensor or node name written by the exporters, or None.

    TensorFlow makes scopes unique, so a layer named `carafe` may appear as `carafe_1`.
    """
    parts = [p for p in name.replace(";", "/").split("/") if p]
    return parts[1] if len(parts) > 2 else None


def _scope_path(name):
    """The name scopes below the model's own in a tensor or node name, joined by "/": the
    path of layer names down to the operator's (nested models' included), or ""."""
    # A fused LiteRT tensor is named after each operator fused into it, joined by ";".
    parts = [p for p in name.split(";")[0].split("/") if p]
    return "/".join(parts[1:-1])


def float_operators(filepath):
    """[(name scope, operator)] of a quantized LiteRT or ONNX file that compute in float.

    LiteRT: every operator with a float output, but the QUANTIZE and DEQUANTIZE at a
    float input and output. ONNX (QDQ): every operator whose inputs do not all come from
    DequantizeLinear or whose output does not go to QuantizeLinear, but layout changes of
    the graph's float input and output; onnxruntime then runs it in float. (Whether a
    DequantizeLinear-operator-QuantizeLinear group runs as an integer kernel is decided by
    onnxruntime when it loads the file.)
    """
    filepath = os.fspath(filepath)
    if filepath.endswith(".onnx"):
        import onnx

        graph = onnx.load(filepath).graph
        produced_by = {out: node.op_type for node in graph.node for out in node.output}
        consumed_by = {}
        for node in graph.node:
            for name in node.input:
                consumed_by.setdefault(name, set()).add(node.op_type)
        constants = {init.name for init in graph.initializer}
        inputs, outputs = {i.name for i in graph.input}, {o.name for o in graph.output}
        found = []
        for node in graph.node:
            if node.op_type in ("QuantizeLinear", "DequantizeLinear", "Constant"):
                continue
            sources = {produced_by.get(name, "input" if name in inputs else None)
                       for name in node.input if name and name not in constants} - {None}
            sinks = set().union(*(consumed_by.get(name, set()) for name in node.output))
            if set(node.output) & outputs:
                sinks.add("output")
            if sources <= {"DequantizeLinear", "Constant"} and sinks <= {"QuantizeLinear"}:
                continue
            if node.op_type in _ONNX_DATA_MOVEMENT and (
                    "input" in sources or "output" in sinks):
                continue
            found.append((_scope_of(node.name), node.op_type))
        return found

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=filepath)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    found = []
    for op in interpreter._get_ops_details():
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        outputs = [tensors[i] for i in op["outputs"] if i in tensors]
        if any(t["dtype"] in (np.float32, np.float16) for t in outputs):
            found.append((_scope_of(outputs[0]["name"]) if outputs else None, op["op_name"]))
    return found


def _warn_about_float(filepath, model):
    found = float_operators(filepath)
    if not found:
        return
    by_layer = {}
    for layer, op in found:
        by_layer.setdefault(layer, []).append(op)
    described = "; ".join(
        f"{scope or 'outside any layer'}: {', '.join(sorted(set(ops)))}"
        for scope, ops in by_layer.items())
    count = f"{len(found)} operator{'s' if len(found) > 1 else ''}"
    warnings.warn(f"keras_carafe: the int8 export of {model.name!r} to {filepath} keeps "
                  f"{count} in float, by layer (name scopes of the exported "
                  f"graph): {described}. They run unquantized: slower, and unavailable on "
                  f"integer-only accelerators", RuntimeWarning, stacklevel=3)


# Operators of the package's layers that stay integer with `float_reassembly=True`: their
# convolutions, which hold the layers' parameters and most of their arithmetic.
_CONVOLUTIONS = {"Conv", "CONV_2D", "DEPTHWISE_CONV_2D"}


def _layer_paths(model, prefix=()):
    """(path of layer names from `model` down, layer) of every layer, nested models' too."""
    import keras

    for layer in model.layers:
        path = (*prefix, layer.name)
        yield path, layer
        if isinstance(layer, keras.Model):
            yield from _layer_paths(layer, path)


def _package_scopes(model):
    """A pattern that matches the name scope paths (`_scope_path`) of the model's keras_carafe
    layers and of everything inside them, nested models' layers included."""
    # TensorFlow makes scopes unique: a layer named `carafe` may be scope `carafe_1`.
    paths = ["/".join(re.escape(name) + r"(_\d+)?" for name in path)
             for path, layer in _layer_paths(model)
             if type(layer).__module__.startswith("keras_carafe.")]
    return re.compile("(" + "|".join(paths) + ")(/.*)?" if paths else "(?!)")


def _export_litert(model, filepath, samples, float_reassembly):
    import tensorflow as tf

    def dataset():
        for x in samples:
            yield [x]

    settings = dict(optimizations=[tf.lite.Optimize.DEFAULT], representative_dataset=dataset,
                    target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]})
    if not float_reassembly:
        model.export(filepath, format="litert", verbose=False, **settings)
        return
    # The converter's settings quantize every operator they can. Its quantization debugger
    # keeps chosen ones in float by calibrating only, then quantizing the calibrated model
    # with those nodes left out; it needs the converter, which `model.export` makes and
    # keeps, so the same two steps are taken here: the converter's calibration-only switch
    # passed through `model.export`, then the quantizer that the debugger calls.
    from ai_edge_litert.interpreter import Interpreter

    missing = ("`float_reassembly=True` with format='litert' needs TensorFlow's calibration-"
               "only conversion and its quantizer's deny list, which this TensorFlow "
               f"{tf.__version__} does not offer: use format='onnx' or float_reassembly=False")
    try:
        from tensorflow.lite.python.convert import mlir_quantize
    except ImportError as err:
        raise RuntimeError(missing) from err
    with tempfile.TemporaryDirectory() as tmp:
        calibrated_path = os.path.join(tmp, "calibrated.tflite")
        try:
            model.export(calibrated_path, format="litert", verbose=False,
                         _experimental_calibrate_only=True, **settings)
        except ValueError as err:
            if "_experimental_calibrate_only" not in str(err):
                raise
            raise RuntimeError(missing) from err
        with open(calibrated_path, "rb") as f:
            calibrated = f.read()
    interpreter = Interpreter(model_content=calibrated)
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    scopes = _package_scopes(model)
    kept = [names[i] for op in interpreter._get_ops_details()
            if op["op_name"] not in _CONVOLUTIONS for i in op["outputs"]
            if i in names and scopes.fullmatch(_scope_path(names[i]))]
    with open(filepath, "wb") as f:
        f.write(mlir_quantize(calibrated, denylisted_nodes=kept))


def _package_layer_nodes(graph, model):
    """Names of the ONNX nodes of the model's keras_carafe layers, but their convolutions."""
    scopes = _package_scopes(model)
    return [node.name for node in graph.node if node.op_type not in _CONVOLUTIONS
            and scopes.fullmatch(_scope_path(node.name))]


def _export_onnx(model, filepath, samples, float_reassembly):
    try:
        import onnxruntime
        from onnxruntime import quantization
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as err:
        raise ImportError("export_int8(format='onnx') needs onnxruntime "
                          "(pip install keras-carafe[export])") from err

    class Reader(quantization.CalibrationDataReader):
        def __init__(self, name):
            self._feeds = iter([{name: x} for x in samples])

        def get_next(self):
            return next(self._feeds, None)

    model(samples[0])  # the ONNX exporter needs a model that has been called
    with tempfile.TemporaryDirectory() as tmp:
        float_path, prepared = os.path.join(tmp, "float.onnx"), os.path.join(tmp, "pre.onnx")
        model.export(float_path, format="onnx", verbose=False)
        # ONNX's own shape inference: onnxruntime's symbolic one gives up on the strided
        # slices of CARAFEDownsample (and needs no symbols: the sizes are static).
        quant_pre_process(float_path, prepared, skip_symbolic_shape=True)
        name = onnxruntime.InferenceSession(
            float_path, providers=["CPUExecutionProvider"]).get_inputs()[0].name
        excluded = []
        if float_reassembly:
            import onnx

            excluded = _package_layer_nodes(onnx.load(prepared).graph, model)
        quantization.quantize_static(
            prepared, filepath, Reader(name), quant_format=quantization.QuantFormat.QDQ,
            activation_type=quantization.QuantType.QInt8,
            weight_type=quantization.QuantType.QInt8, per_channel=True,
            nodes_to_exclude=excluded)


def export_int8(model, filepath, representative_data, format="litert", float_reassembly=False):
    """Writes a full-integer (int8) LiteRT or ONNX file of a float32 Keras model.

    Args:
        model: a float32 Keras model with one input (TensorFlow backend), holding CARAFE,
            CARAFEDownsample or any layers the format can express.
        filepath: where to write: a `.tflite` file for LiteRT, `.onnx` for ONNX.
        representative_data: inputs that cover the model's range of values (a few dozen
            to a few hundred typical inputs): an array whose first axis holds them, or an
            iterable of single inputs, each of the model's input shape.
        format: `"litert"` (full-integer LiteRT, float32 input and output) or `"onnx"`
            (onnxruntime's static QDQ quantization, int8 activations and per-channel
            weights).
        float_reassembly: keep each keras_carafe layer's operators other than its
            convolutions (the kernel normalization and the reassembly) in float, nested
            models' layers included: a smaller error, and in LiteRT with XNNPACK a faster
            file than full-integer (`docs/deployment.md`); not for integer-only
            accelerators. The warning then names those operators.

    Returns:
        `filepath`. Warns (RuntimeWarning) naming each layer that kept float operators
        (`float_operators`).

    Example:

        export_int8(model, "model_int8.tflite", calibration_images)
        export_int8(model, "model_int8.onnx", calibration_images, format="onnx")
    """
    if format not in FORMATS:
        raise ValueError(f"`format` must be one of {', '.join(map(repr, FORMATS))}, "
                         f"got {format!r}")
    if not isinstance(float_reassembly, bool):
        raise TypeError(f"`float_reassembly` must be a bool, got {float_reassembly!r}")
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"export_int8 needs the TensorFlow backend (KERAS_BACKEND=tensorflow), "
                         f"whose exporters it configures; the backend is "
                         f"{keras.backend.backend()!r}")
    suffix = {"litert": ".tflite", "onnx": ".onnx"}[format]
    filepath = os.fspath(filepath)
    if not filepath.endswith(suffix):
        raise ValueError(f"`filepath` must end with {suffix!r} for format={format!r}, "
                         f"got {filepath!r}")
    if len(model.inputs) != 1:
        raise ValueError(f"export_int8 takes models with one input; {model.name!r} has "
                         f"{len(model.inputs)}")
    dtypes = {layer.compute_dtype for _, layer in _layer_paths(model)} - {"float32"}
    if dtypes:
        raise ValueError(f"export_int8 quantizes float32 models; layers of {model.name!r} "
                         f"compute in {', '.join(sorted(dtypes))}: build a float32 copy of the "
                         f"model and load its weights")
    samples = _samples(representative_data, model.inputs[0].shape[1:])
    if format == "litert":
        _export_litert(model, filepath, samples, float_reassembly)
    else:
        _export_onnx(model, filepath, samples, float_reassembly)
    _warn_about_float(filepath, model)
    return filepath

"""Exported files run in their runtimes: the settings of `docs/deployment.md`, for checks and
benchmarks.

`load(path)` returns a function from one NumPy batch to the first output, for a `.onnx`
file (onnxruntime's CPU provider), a `.tflite` file (the LiteRT interpreter, with or
without XNNPACK) or an OpenVINO `.xml` file (CPU, float32 precision hint);
`xnnpack_partitions(path)` says how many parts of a LiteRT file XNNPACK runs. Each runtime
is imported only when a file of its format is loaded.
"""

import os


def load(path, threads=None, xnnpack=True):
    """A function `x -> output` running the exported file at `path` on `threads` threads
    (None: the runtime's default). `xnnpack=False` runs LiteRT's builtin kernels only."""
    path = os.fspath(path)
    if path.endswith(".onnx"):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    if path.endswith(".tflite"):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = (OpResolverType.AUTO if xnnpack
                    else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interpreter = Interpreter(model_path=path, num_threads=threads,
                                  experimental_op_resolver_type=resolver)
        [source], [sink] = interpreter.get_input_details(), interpreter.get_output_details()
        shape = {}

        def run(x):
            if shape.get("x") != x.shape:
                interpreter.resize_tensor_input(source["index"], x.shape)
                interpreter.allocate_tensors()
                shape["x"] = x.shape
            interpreter.set_tensor(source["index"], x)
            interpreter.invoke()
            return interpreter.get_tensor(sink["index"])

        return run
    if path.endswith(".xml"):
        import openvino

        config = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        request = openvino.Core().compile_model(path, "CPU", config).create_infer_request()
        return lambda x: request.infer([x])[0]
    raise ValueError(f"`path` must name a .onnx, .tflite or OpenVINO .xml file, got {path!r}")


def xnnpack_partitions(path):
    """How many parts of the `.tflite` file at `path` LiteRT gives XNNPACK (its default
    delegate): 1 when XNNPACK runs the whole graph; an operator it cannot take runs in
    LiteRT's own kernels, between two parts (or beside none, 0, when it takes nothing)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=os.fspath(path))
    interpreter.allocate_tensors()  # where the default delegate takes its parts
    # The Python interpreter has no execution plan to show; each part the delegate took is
    # a node named DELEGATE beside the ones it replaced.
    nodes = interpreter._interpreter
    return sum(nodes.NodeName(i) == "DELEGATE" for i in range(nodes.NumNodes()))


def timed(run, x, runs):
    """(median, first quartile, third quartile) of `runs` calls `run(x)` in milliseconds,
    after a warm-up of a tenth as many (at least 5)."""
    import statistics
    import time

    for _ in range(max(5, runs // 10)):
        run(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - start) * 1e3)
    q1, median, q3 = statistics.quantiles(times, n=4)
    return median, q1, q3

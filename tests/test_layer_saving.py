"""Saving CARAFE models: the .keras format and SavedModel export for serving."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_carafe import CARAFE


def _model(implementation="auto"):
    inputs = keras.Input((None, None, 6))
    x = keras.layers.Conv2D(6, 3, padding="same")(inputs)
    x = CARAFE(2, 3, compressed_channels=4, group_size=2, implementation=implementation,
               encoder_kernel_initializer="glorot_uniform")(x)
    return keras.Model(inputs, keras.layers.Conv2D(3, 1)(x))


def test_keras_file_round_trip_gives_identical_outputs(tmp_path, rng):
    model = _model()
    x = rng.standard_normal((2, 5, 7, 6)).astype("float32")
    expected = model.predict(x, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_array_equal(restored.predict(x, verbose=0), expected)
    assert isinstance(restored.layers[2], CARAFE)
    assert restored.layers[2].get_config() == model.layers[2].get_config()


def test_keras_file_loads_in_a_new_process_without_custom_objects(tmp_path, rng):
    model = _model()
    x = rng.standard_normal((1, 4, 4, 6)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", model.predict(x, verbose=0))
    model.save(tmp_path / "model.keras")
    script = textwrap.dedent(f"""
        import numpy as np, keras
        import keras_carafe
        model = keras.models.load_model({str(tmp_path / "model.keras")!r})
        y = model.predict(np.load({str(tmp_path / "x.npy")!r}), verbose=0)
        print(float(np.abs(y - np.load({str(tmp_path / "y.npy")!r})).max()))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(result.stdout.strip().splitlines()[-1]) == 0.0


def _graph_op_types(saved_model_dir):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((saved_model_dir / "saved_model.pb").read_bytes())
    graph = proto.meta_graphs[0].graph_def
    types = {node.op for node in graph.node}
    for function in graph.library.function:
        types |= {node.op for node in function.node_def}
    return types


@pytest.mark.parametrize("implementation", ["auto", "fallback"])
def test_export_is_servable_without_keras_carafe(tmp_path, rng, implementation):
    model = _model(implementation)
    x = rng.standard_normal((2, 5, 3, 6)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", model.predict(x, verbose=0))
    export_dir = tmp_path / "exported"
    model.export(export_dir, verbose=False)
    op_types = _graph_op_types(export_dir)
    assert "Conv2D" in op_types
    assert not any(t.startswith("KerasCarafe") for t in op_types)
    # A serving process: TensorFlow only, keras_carafe never imported.
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np, tensorflow as tf
        served = tf.saved_model.load({str(export_dir)!r})
        y = served.serve(np.load({str(tmp_path / "x.npy")!r})).numpy()
        err = float(np.abs(y - np.load({str(tmp_path / "y.npy")!r})).max())
        print(json.dumps({{"err": err, "imported": "keras_carafe" in sys.modules}}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=tmp_path, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["imported"] is False
    assert report["err"] < 1e-5


def test_op_graph_outside_export_uses_the_compiled_op(rng):
    import tensorflow as tf

    model = _model("auto")
    fn = tf.function(model).get_concrete_function(tf.TensorSpec((None, None, None, 6)))
    assert "KerasCarafeReassemble" in {op.type for op in fn.graph.get_operations()}

"""FADE, SAPA and DySample on TensorFlow: the compiled ops in their graphs, XLA, softmaxes
under mixed precision, and input pairs whose sizes are only known when the graph runs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_carafe import SAPA, DySample, FADE

ENCODER, DECODER = (2, 8, 6, 4), (2, 4, 3, 4)


def _graph(function, *specs, jit_compile=None):
    return tf.function(function, jit_compile=jit_compile).get_concrete_function(*specs).graph


def _op_types(graph):
    return {op.type for op in graph.get_operations() if op.type.startswith("KerasCarafe")}


SPECS = (tf.TensorSpec(ENCODER), tf.TensorSpec(DECODER))
GUIDED = {"FADE": lambda **kw: FADE(embedding_channels=4, **kw),
          "SAPA": lambda **kw: SAPA(embedding_channels=4, **kw)}


@pytest.mark.parametrize("name, forward, backward", [
    ("FADE", {"KerasCarafeReassemble"}, {"KerasCarafeReassembleGrad"}),
    ("SAPA", {"KerasCarafeReassemble", "KerasCarafeLocalSimilarity"},
     {"KerasCarafeReassembleGrad", "KerasCarafeLocalSimilarityGrad"}),
])
def test_compiled_ops_run_the_forward_and_backward_passes(name, forward, backward):
    layer = GUIDED[name](implementation="op")

    def loss_gradients(encoder, decoder):
        with tf.GradientTape() as tape:
            tape.watch([encoder, decoder])
            loss = tf.reduce_sum(layer(encoder, decoder))
        return tape.gradient(loss, [encoder, decoder, *layer.trainable_variables])

    assert _op_types(_graph(layer, *SPECS)) == forward
    assert _op_types(_graph(loss_gradients, *SPECS)) == forward | backward


@pytest.mark.parametrize("name", GUIDED)
@pytest.mark.parametrize("implementation, jit", [("auto", False), ("op", False),
                                                 ("portable", True), ("fallback", True)])
def test_keras_may_compile_the_layer_unless_it_runs_the_compiled_op(name, implementation, jit):
    assert GUIDED[name](implementation=implementation).supports_jit is jit


@pytest.mark.parametrize("name", GUIDED)
def test_xla_compiled_call_uses_standard_operations_and_matches_the_op(rng, name):
    encoder = rng.standard_normal(ENCODER).astype("float32")
    decoder = rng.standard_normal(DECODER).astype("float32")
    layer = GUIDED[name]()
    expected = layer(encoder, decoder).numpy()
    assert not _op_types(_graph(layer, *SPECS, jit_compile=True))
    np.testing.assert_allclose(tf.function(layer, jit_compile=True)(encoder, decoder).numpy(),
                               expected, atol=1e-5)


@pytest.mark.parametrize("name, softmaxes", [("FADE", 1), ("SAPA", 1)])
def test_softmax_runs_in_float32_under_mixed_float16(name, softmaxes):
    layer = GUIDED[name](dtype="mixed_float16")
    graph = _graph(layer, *SPECS)
    found = [op for op in graph.get_operations() if op.type == "Softmax"]
    assert len(found) == softmaxes
    assert all(op.get_attr("T") == tf.float32 for op in found)


def test_dysample_positions_are_float32_under_mixed_float16():
    layer = DySample(group_size=2, dtype="mixed_float16")
    graph = _graph(layer, tf.TensorSpec(DECODER))
    floors = [op for op in graph.get_operations() if op.type == "Floor"]
    assert floors and all(op.get_attr("T") == tf.float32 for op in floors)


UNKNOWN = (tf.TensorSpec((None, None, None, 4)), tf.TensorSpec((None, None, None, 4)))


@pytest.mark.parametrize("implementation", ["op", "fallback", "portable"])
@pytest.mark.parametrize("name", GUIDED)
@pytest.mark.parametrize("encoder", [(2, 9, 6, 4), (2, 8, 7, 4), (1, 8, 6, 4)],
                         ids=["height", "width", "batch"])
def test_pairs_mismatched_at_run_time_raise_invalid_argument_naming_the_layer(
        name, implementation, encoder):
    layer = GUIDED[name](implementation=implementation)
    call = tf.function(layer, input_signature=UNKNOWN)
    call.get_concrete_function()
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"{name}: `encoder_feature` spatial size must be scale_factor=2 "
                             rf"times the `decoder_feature` spatial size, with the same batch"):
        call(tf.zeros(encoder), tf.zeros(DECODER))


@pytest.mark.parametrize("name", GUIDED)
def test_pairs_of_sizes_unknown_when_tracing_compute_the_same_output(rng, name):
    encoder = rng.standard_normal(ENCODER).astype("float32")
    decoder = rng.standard_normal(DECODER).astype("float32")
    layer = GUIDED[name]()
    expected = layer(encoder, decoder).numpy()
    call = tf.function(layer, input_signature=UNKNOWN)
    np.testing.assert_allclose(call(encoder, decoder).numpy(), expected, atol=1e-6)


def test_layers_in_a_model_trained_with_jit_compile_auto_leave_xla_off_for_the_op(rng):
    inputs = [keras.Input((8, 6, 4)), keras.Input((4, 3, 4))]
    model = keras.Model(inputs, FADE(embedding_channels=4)(*inputs))
    model.compile(optimizer="adam", loss="mse")  # jit_compile="auto"
    model.fit([rng.standard_normal((4, *ENCODER[1:])), rng.standard_normal((4, *DECODER[1:]))],
              rng.standard_normal((4, *ENCODER[1:])), verbose=0)
    assert model.jit_compile is False

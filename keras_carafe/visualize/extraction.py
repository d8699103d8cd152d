"""The reassembly kernels that a Keras model's CARAFE layers compute for given inputs."""

import keras

from keras_carafe.layers import CARAFE


def carafe_layers(model):
    """The CARAFE layers of a functional model, in the model's layer order."""
    return [layer for layer in model.layers if isinstance(layer, CARAFE)]


def layer_kernels(model, inputs):
    """Runs `model` on `inputs` and returns the kernels of each of its CARAFE layers.

    Each layer's kernels are computed from the tensor the layer receives in
    the model, so they are exactly the kernels with which the layer
    reassembles that input.

    Args:
        model: a functional `keras.Model` whose CARAFE layers are its own
            (not inside a nested model) and are each called once.
        inputs: what `model` takes, e.g. an array `(N, H, W, C)`.

    Returns:
        dict from layer name to an array `(N, H_l*s_l, W_l*s_l, G, k, k)`, in
        the model's layer order (see `CARAFE.compute_kernels`).

    Raises:
        ValueError: the model has no CARAFE layer of its own.
    """
    layers = carafe_layers(model)
    if not layers:
        raise ValueError(f"`model` {model.name!r} has no CARAFE layer of its own "
                         "(layers inside nested models are not searched)")
    # A sub-model with the same inputs reaches every layer's input in one pass.
    probe = keras.Model(model.input, [layer.input for layer in layers])
    received = probe(inputs)
    if not isinstance(received, (list, tuple)):
        received = [received]
    return {layer.name: keras.ops.convert_to_numpy(layer.compute_kernels(x))
            for layer, x in zip(layers, received)}

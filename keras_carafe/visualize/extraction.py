"""The reassembly kernels that a Keras model's CARAFE layers compute for given inputs."""

import keras

from keras_carafe.layers import CARAFE, CARAFEDownsample


def carafe_layers(model):
    """The CARAFE and CARAFEDownsample layers of a functional model, in layer order."""
    return [layer for layer in model.layers if isinstance(layer, (CARAFE, CARAFEDownsample))]


def layer_kernels(model, inputs):
    """Runs `model` on `inputs` and returns the kernels of each of its CARAFE layers.

    Upsampling (`CARAFE`) and downsampling (`CARAFEDownsample`) layers alike.

    Each layer's kernels are computed from the tensor the layer receives in
    the model, so they are exactly the kernels with which the layer
    reassembles that input.

    Args:
        model: a functional `keras.Model` whose CARAFE layers are its own
            (not inside a nested model) and are each called once.
        inputs: what `model` takes, e.g. an array `(N, H, W, C)`.

    Returns:
        dict from layer name to an array `(N, OH_l, OW_l, G, k, k)`, in the
        model's layer order: `(H_l*s_l, W_l*s_l)` output pixels for an
        upsampling layer, `(ceil(H_l/stride_l), ceil(W_l/stride_l))` for a
        downsampling one (see `compute_kernels` of each layer).

    Raises:
        ValueError: the model has neither a CARAFE nor a CARAFEDownsample
            layer of its own.
    """
    layers = carafe_layers(model)
    if not layers:
        raise ValueError(f"`model` {model.name!r} has no CARAFE layer (CARAFE or "
                         "CARAFEDownsample) of its own (layers inside nested models are "
                         "not searched)")
    # A sub-model with the same inputs reaches every layer's input in one pass.
    probe = keras.Model(model.input, [layer.input for layer in layers])
    received = probe(inputs)
    if not isinstance(received, (list, tuple)):
        received = [received]
    return {layer.name: keras.ops.convert_to_numpy(layer.compute_kernels(x))
            for layer, x in zip(layers, received)}

"""A small classifier whose features pass through an interchangeable upsampler."""

import time

import keras

from keras_carafe.demo.models import seeded_conv
from keras_carafe.demo.upsamplers import make_upsampler


def build_classifier(upsampler, classes, size=64, channels=32, seed=0, implementation="auto"):
    """An encoder-decoder classifier: down to 1/4 resolution, up by 2, pooled, softmax.

    The decoder's last convolution ("decoder") works at half the input
    resolution on the upsampler's output, so class activation maps taken
    there show how the upsampler placed the evidence. Every variant starts
    from the same weights outside the upsampler.

    Args:
        upsampler: a name from `keras_carafe.demo.config.UPSAMPLERS`.
        classes: number of classes.
        size: side of the square grey-scale input images.
        channels: feature channels.
        seed: seeds all initial weights.
        implementation: CARAFE's `implementation`.

    Returns:
        An uncompiled functional `keras.Model` named "classifier_" + upsampler
        with a softmax output layer named "class".
    """
    image = keras.Input((size, size, 1), name="image")
    x = seeded_conv(channels // 2, seed, "stem")(image)
    x = seeded_conv(channels, seed + 1, "down1", strides=2)(x)
    x = seeded_conv(channels, seed + 2, "down2", strides=2)(x)
    x = make_upsampler(upsampler, 2, channels, seed=seed + 3,
                       implementation=implementation)(x)
    x = seeded_conv(channels, seed + 4, "decoder")(x)
    x = keras.layers.GlobalMaxPooling2D(name="pool")(x)
    output = keras.layers.Dense(
        classes, activation="softmax", name="class",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 5))(x)
    return keras.Model(image, output, name=f"classifier_{upsampler}")


def train_classifier(model, images, labels, epochs, batch_size=32, learning_rate=2e-3,
                     seed=0, verbose=2):
    """Fits a classifier with Adam and sparse cross-entropy, from a reset global seed.

    Returns:
        `(history, seconds)`: the Keras `History.history` dict (loss and
        accuracy per epoch) and the wall-clock time of `fit`.
    """
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  jit_compile=False)
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    history = model.fit(images, labels, batch_size=batch_size, epochs=epochs, shuffle=True,
                        verbose=verbose)
    return history.history, time.perf_counter() - start

"""Training under one schedule and one batch order for every variant of a seed."""

import math
import time

import keras
import numpy as np


def batch_orders(count, epochs, seed):
    """The order in which each epoch visits the training images: one permutation per epoch.

    Drawn with NumPy from `seed` alone, so every variant of a seed sees the
    same batches in the same order on every Keras backend.
    """
    rng = np.random.default_rng([seed, count])
    return [rng.permutation(count) for _ in range(epochs)]


def jit_setting():
    """XLA for JAX (where every layer compiles); off on TensorFlow and PyTorch.

    On TensorFlow the compiled CARAFE op cannot run under XLA, so every
    variant trains without it there and their times stay comparable.
    """
    return keras.backend.backend() == "jax"


class EpochLog(keras.callbacks.Callback):
    """Calls `log` with one line per epoch: loss, and seconds since training began."""

    def __init__(self, log, prefix, epochs):
        super().__init__()
        self.log, self.prefix, self.epochs = log, prefix, epochs
        self.started = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.started is None:
            self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.log(f"{self.prefix} epoch {epoch + 1}/{self.epochs}: loss "
                 f"{logs['loss']:.4f} ({time.perf_counter() - self.started:.1f} s)")


def train(model, images, labels, epochs, batch_size, learning_rate, seed, callbacks=()):
    """Fits a segmentation model with Adam, a cosine schedule and per-pixel cross-entropy.

    The learning rate decays from `learning_rate` to 5% of it over the whole
    run; each epoch feeds the images in the order `batch_orders` gives.

    Args:
        model: an uncompiled model from `network.build_segmenter`.
        images: float32 `(n, H, W, 1)`.
        labels: integer `(n, H, W)`.
        epochs, batch_size, learning_rate, seed: the schedule and its seed.
        callbacks: Keras callbacks; they see epochs numbered as in one `fit`.

    Returns:
        `(losses, seconds)`: the training loss of each epoch and the
        wall-clock time spent in `fit` (graph tracing included).
    """
    steps = epochs * math.ceil(len(images) / batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.05)
    # Logits and from_logits: the numerically safe form, and the one whose
    # gradient PyTorch computes for 4-D outputs.
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit_setting())
    labels = np.asarray(labels, np.int32)
    losses, seconds = [], 0.0
    for epoch, order in enumerate(batch_orders(len(images), epochs, seed)):
        start = time.perf_counter()
        history = model.fit(images[order], labels[order], batch_size=batch_size,
                            initial_epoch=epoch, epochs=epoch + 1, shuffle=False, verbose=0,
                            callbacks=list(callbacks))
        seconds += time.perf_counter() - start
        losses.append(float(history.history["loss"][-1]))
    return losses, seconds


def predict_classes(model, images, batch_size=16):
    """The most likely class of every pixel: uint8 (or wider) `(n, H, W)`."""
    logits = model.predict(images, batch_size=batch_size, verbose=0)
    classes = np.argmax(np.asarray(logits), axis=-1)
    return classes.astype(np.uint8 if logits.shape[-1] <= 256 else np.int32)

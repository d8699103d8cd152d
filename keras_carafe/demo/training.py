"""Training under one fixed budget for every upsampler."""

import math
import time

import keras


def train(model, low, high, epochs, batch_size, learning_rate, seed, verbose=2):
    """Fits an SR model to `(low, high)` patch pairs with Adam and an L1 loss.

    The learning rate follows a cosine decay to 5% of `learning_rate` over
    the whole run, and the global seed is reset first, so every variant
    sees the same batches in the same order.

    Args:
        model: an uncompiled model from `build_sr_model`.
        low, high: arrays `(n, h, w, 1)` and `(n, h*s, w*s, 1)`.
        epochs, batch_size, learning_rate, seed: the budget and its seed.
        verbose: Keras `fit` verbosity.

    Returns:
        `(losses, seconds)`: the training loss after each epoch and the
        wall-clock time of `fit` (graph tracing included).
    """
    steps = epochs * math.ceil(len(low) / batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.05)
    # XLA stays off for every variant: the compiled CARAFE op cannot be
    # XLA-compiled, and timing all models the same way keeps them comparable.
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="mean_absolute_error",
                  jit_compile=False)
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    history = model.fit(low, high, batch_size=batch_size, epochs=epochs, shuffle=True,
                        verbose=verbose)
    return list(history.history["loss"]), time.perf_counter() - start

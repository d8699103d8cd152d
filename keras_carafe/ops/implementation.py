"""Which implementation of the reassembly runs, and the switch that forces the portable one.

- "op": the compiled TensorFlow op (fastest; TensorFlow backend, outside XLA).
- "fallback": pure TensorFlow (`tf.image.extract_patches`); TensorFlow backend.
- "portable": `keras.ops` only; every backend, XLA, and every export format.
- "auto": on TensorFlow the op where usable, the portable path under XLA and
  while exporting, else the fallback; on JAX and PyTorch the portable path.
"""

import contextlib
import contextvars
import os

import keras

IMPLEMENTATIONS = ("auto", "op", "fallback", "portable")
TENSORFLOW_ONLY = ("op", "fallback")
FORCE_FALLBACK_ENV = "KERAS_CARAFE_FORCE_FALLBACK"

_portable_forced = contextvars.ContextVar("keras_carafe_portable_forced", default=False)


def check_implementation(implementation):
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"`implementation` must be one of {', '.join(repr(i) for i in IMPLEMENTATIONS)}, "
            f"got {implementation!r}"
        )


def check_backend(implementation):
    """Raises for an implementation that the active Keras backend cannot run."""
    backend = keras.backend.backend()
    if implementation in TENSORFLOW_ONLY and backend != "tensorflow":
        what = "the compiled op" if implementation == "op" else "the pure-TensorFlow fallback"
        raise ValueError(
            f"implementation={implementation!r} ({what}) needs the TensorFlow backend, but "
            f"the Keras backend is {backend!r}; use implementation='auto' or 'portable'"
        )


def fallback_forced():
    return os.environ.get(FORCE_FALLBACK_ENV, "").strip().lower() not in ("", "0", "false", "no")


@contextlib.contextmanager
def force_portable():
    """Makes every CARAFE reassembly traced or run inside the block use the portable path.

    Whatever `implementation` says, the reassembly is then built from
    standard operations only, so a graph traced inside the block can be
    saved and served without keras_carafe, converted to ONNX or LiteRT with
    builtin operators, or compiled with XLA. `model.export` already does this
    on its own; use the block around your own export code, for example:

        with keras_carafe.ops.force_portable():
            tf.saved_model.save(module, path)

    Functions traced before the block keep what they traced. The switch is
    per thread (and per asyncio task).
    """
    token = _portable_forced.set(True)
    try:
        yield
    finally:
        _portable_forced.reset(token)


def portable_forced():
    """True inside `force_portable()`."""
    return _portable_forced.get()


def resolve(implementation):
    """Returns "op", "fallback" or "portable" for this call site, or raises."""
    check_implementation(implementation)
    check_backend(implementation)
    if keras.backend.backend() != "tensorflow":
        return "portable"
    from keras_carafe.ops.tensorflow import choice

    return choice.resolve(implementation)

"""Implementation names, the switch that forces the portable one, and export detection.

- "op": the compiled kernels (CPU and CUDA) through the framework's own
  custom-op mechanism: a TensorFlow op, XLA FFI handlers on JAX, a
  `torch.library` op on PyTorch. Fastest and leanest.
- "fallback": pure TensorFlow (`tf.image.extract_patches`); TensorFlow only.
- "portable": `keras.ops` only; every backend, XLA, and every export format.
- "auto": the compiled kernels where they build and can run, else (and while
  exporting, and under TensorFlow's XLA) the best of the others for the
  runtime; each backend module says how (`keras_carafe.backend`).

Nothing here imports a framework.
"""

import contextlib
import contextvars
import os
import sys
import threading
import warnings

IMPLEMENTATIONS = ("auto", "op", "fallback", "portable")
FORCE_FALLBACK_ENV = "KERAS_CARAFE_FORCE_FALLBACK"

_portable_forced = contextvars.ContextVar("keras_carafe_portable_forced", default=False)

_WHAT = {"op": "the compiled kernels", "fallback": "the pure-TensorFlow fallback",
         "portable": "the portable path"}


def check_implementation(implementation):
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"`implementation` must be one of {', '.join(repr(i) for i in IMPLEMENTATIONS)}, "
            f"got {implementation!r}"
        )


def check_backend(implementation, backend):
    """Raises for an implementation that the backend module `backend` cannot run."""
    if implementation == "auto" or implementation in backend.IMPLEMENTATIONS:
        return
    needs = ("the TensorFlow backend" if implementation == "fallback"
             else "the TensorFlow, JAX or PyTorch backend")
    raise ValueError(
        f"implementation={implementation!r} ({_WHAT[implementation]}) needs {needs}, but "
        f"the Keras backend is {backend.NAME!r}; use implementation='auto' or 'portable'")


def fallback_forced():
    return os.environ.get(FORCE_FALLBACK_ENV, "").strip().lower() not in ("", "0", "false", "no")


@contextlib.contextmanager
def force_portable():
    """Makes every CARAFE reassembly traced or run inside the block use the portable path.

    Whatever `implementation` says, the reassembly is then built from
    standard operations only, so a graph traced inside the block can be
    saved and served without keras_carafe, converted to ONNX or LiteRT with
    builtin operators, or compiled by any XLA. `model.export` already does
    this on its own; use the block around your own export code, for example:

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


# Modules whose functions on the call stack mean that a model is being turned
# into a file other runtimes load: Keras's `model.export`, jax2tf and
# `jax.export` (which admit no custom calls without compatibility guarantees),
# and PyTorch's ONNX exporter.
_EXPORT_MODULES = ("keras.src.export", "jax._src.export", "jax.experimental.jax2tf",
                   "torch.onnx")

# Keras modules whose export functions name a format (others are shared helpers).
_FORMAT_MODULES = {"keras.src.export.litert": "litert", "keras.src.export.onnx": "onnx",
                   "keras.src.export.openvino": "openvino"}


def _export_frames():
    """The exporting modules on the call stack, innermost first."""
    modules = []
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name.startswith(_EXPORT_MODULES):
            modules.append(name)
        frame = frame.f_back
    return modules


def exporting():
    """True inside `force_portable()` or while a model is being exported (see above)."""
    return portable_forced() or bool(_export_frames())


def export_format():
    """The `model.export` format being traced ("litert", "onnx", "openvino" or
    "tf_saved_model"), or None."""
    modules = [m for m in _export_frames() if m.startswith("keras.src.export")]
    for module in reversed(modules):
        if module in _FORMAT_MODULES:
            return _FORMAT_MODULES[module]
    return "tf_saved_model" if modules else None


_warned = set()
_warned_lock = threading.Lock()


# Frames a warning does not point at: the package's own, and the wrapper that
# `tf.autograph.experimental.do_not_convert` puts around the TensorFlow backend's `choose`.
_INTERNAL = ("keras_carafe", "tensorflow.python.autograph")


def warn_once(key, message):
    """Warns with `message` (a RuntimeWarning pointing at the first caller outside
    keras_carafe) the first time this process sees `key`."""
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, RuntimeWarning, stacklevel=level)


def compiled_or(implementation, load, device_problem, otherwise, name):
    """Resolves `implementation` ("auto" or "op") where the compiled kernels may run.

    Returns "op" where `load()` opens the compiled library and `device_problem(loaded)`
    finds nothing in the way (None). Otherwise "op" raises `OpUnavailableError` with
    the reason, and "auto" warns once per process (naming the reason) and returns
    `otherwise`, the best implementation without the kernels, called `name` in the
    warning.
    """
    from keras_carafe.library import OpUnavailableError

    try:
        loaded = load()
    except OpUnavailableError as err:
        if implementation == "op":
            raise
        reason = f"the compiled kernels are unavailable ({err})"
    else:
        reason = device_problem(loaded)
        if reason is None:
            return "op"
        if implementation == "op":
            raise OpUnavailableError(reason)
    silence = (f", or set {FORCE_FALLBACK_ENV}=1 to silence this" if otherwise == "fallback"
               else "")
    warn_once(f"compiled-kernels-{otherwise}",
              f"keras_carafe: CARAFE runs on {name} because {reason}. It is exact but slower "
              f"and uses more memory; run `python -m keras_carafe build` to see the build "
              f"log{silence}.")
    return otherwise


def resolve(implementation):
    """Returns "op", "fallback" or "portable" for this call site on the active backend, or
    raises (for an unknown name, one the backend cannot run, or an unusable "op")."""
    from keras_carafe import backend

    check_implementation(implementation)
    module = backend.current()
    check_backend(implementation, module)
    return module.choose(implementation)

"""One module per Keras backend, behind one contract, chosen in one place.

`keras_carafe.backend.tensorflow`, `.jax` and `.torch` (and `.generic` for the
Keras backends without a module of their own) each provide:

- `NAME`: the Keras backend's name.
- `IMPLEMENTATIONS`: the implementation names it can run besides "auto".
- `choose(implementation)`: turns the caller's `implementation` ("auto" or
  one of `IMPLEMENTATIONS`) into the one that runs at this call site, "op",
  "fallback" or "portable"; warns once per process where "auto" cannot have
  the compiled kernels, and raises `OpUnavailableError` where "op" cannot run.
- `reassemble(chosen, geometry, features, kernels, shapes_known)`: runs the
  chosen implementation on inputs that `keras_carafe.ops.validation` checked
  (`shapes_known` is False where some size is only known at run time).
- `local_similarity(chosen, geometry, queries, keys, shapes_known)`: the same
  for `keras_carafe.ops.local_similarity` (checked by
  `keras_carafe.ops.similarity`), with the reassembly's kernels.
- `supports_jit(implementation)`: whether Keras may compile a layer using
  this implementation (`jit_compile`).
- `export_format()`: the `model.export` format being traced, or None (see
  `keras_carafe.ops.implementation.export_format`).
- `exported_formulation()`: the formulation of `keras_carafe.ops.export_formulation`
  that the layers and ops write while a graph is exported or traced inside
  `force_portable()`, else "".

Only `current()` picks the module, from `keras.backend.backend()`; each
module imports its framework, so no other framework is ever imported.
"""

import importlib

import keras

_OWN_MODULES = ("tensorflow", "jax", "torch")
# Imported modules by Keras backend name: after the first call, a plain lookup
# that compilers tracing Python (torch.compile) follow without a graph break.
_modules = {}


def current():
    """The backend module of the active Keras backend."""
    name = keras.backend.backend()
    module = _modules.get(name)
    if module is None:
        module = importlib.import_module(
            f"keras_carafe.backend.{name if name in _OWN_MODULES else 'generic'}")
        _modules[name] = module
    return module

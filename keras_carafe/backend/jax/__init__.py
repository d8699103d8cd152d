"""The JAX backend: the compiled kernels as XLA FFI handlers, and the portable path (see
`keras_carafe.backend` for the contract)."""

import jax

from keras_carafe.backend.jax import compiled, library, portable
from keras_carafe.ops import export_formulation
from keras_carafe.ops import implementation as names
from keras_carafe.ops.implementation import export_format

NAME = "jax"
IMPLEMENTATIONS = ("op", "portable")


def _platform_problem(loaded):
    """Why the compiled kernels cannot run on JAX's default device, or None."""
    platform = jax.default_backend()
    if platform == "cpu":
        return None
    if platform == "gpu" and "cuda" in loaded.module.platforms:
        if loaded.cuda_usable:
            return None
        return f"JAX runs on a GPU but the compiled CUDA kernels cannot run: {loaded.cuda_status}"
    if platform == "gpu":
        return (f"JAX runs on a GPU but the library has no CUDA kernels "
                f"({loaded.report.cuda_skipped or 'built without CUDA'})")
    return f"the compiled kernels run on CPUs and CUDA GPUs, not on JAX's {platform!r} backend"


def choose(implementation):
    if implementation == "portable" or names.exporting():
        return "portable"
    return names.compiled_or(implementation, library.load, _platform_problem, "portable",
                             "the portable path")


def exported_formulation():
    """The `export_formulation` formulation while a graph is exported or traced inside
    `force_portable()`, else ""."""
    return export_formulation.formulation_while(export_format())


def reassemble(chosen, geometry, features, kernels, shapes_known):
    if chosen == "op":
        return compiled.reassemble(geometry, features, kernels)
    return portable.reassemble(geometry, features, kernels)


def local_similarity(chosen, geometry, queries, keys, shapes_known):
    if chosen == "op":
        return compiled.local_similarity(geometry, queries, keys)
    return portable.local_similarity(geometry, queries, keys)


def supports_jit(implementation):
    return True

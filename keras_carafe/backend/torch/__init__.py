"""The PyTorch backend: the compiled kernels as `torch.library` operators, and the portable
path (see `keras_carafe.backend` for the contract)."""

import torch

from keras_carafe.backend.torch import compiled, library
from keras_carafe.ops import implementation as names
from keras_carafe.ops import export_formulation, portable, portable_similarity

NAME = "torch"
IMPLEMENTATIONS = ("op", "portable")


def _device_problem(loaded):
    """Why the compiled kernels cannot run where Keras puts tensors, or None."""
    if not torch.cuda.is_available():
        return None
    if "cuda" not in loaded.module.platforms:
        return (f"Keras runs PyTorch on a GPU but the library has no CUDA kernels "
                f"({loaded.report.cuda_skipped or 'built without CUDA'})")
    if not loaded.cuda_usable:
        return f"Keras runs PyTorch on a GPU but the CUDA kernels cannot run: {loaded.cuda_status}"
    return None


def _exporting():
    return names.exporting() or torch.compiler.is_exporting() or torch.jit.is_tracing()


# torch.compile runs these once while it traces, and keeps their results:
# they read the call stack, a context variable and the file system, which it
# would otherwise have to trace through.
@torch.compiler.assume_constant_result
def choose(implementation):
    if implementation == "portable" or _exporting():
        return "portable"
    return names.compiled_or(implementation, library.load, _device_problem, "portable",
                             "the portable path")


@torch.compiler.assume_constant_result
def export_format():
    return names.export_format()


@torch.compiler.assume_constant_result
def exported_formulation():
    """The `export_formulation` formulation while a graph is exported (`model.export`,
    `torch.export`, `torch.onnx`) or traced inside `force_portable()`, else "" (a constant
    for torch.compile, as `choose`)."""
    return export_formulation.formulation_for(names.export_format()) if _exporting() else ""


def reassemble(chosen, geometry, features, kernels, shapes_known):
    if chosen == "op":
        return compiled.reassemble(geometry, features, kernels)
    formulation = exported_formulation()
    if formulation:
        return export_formulation.reassemble(geometry, features, kernels, formulation)
    return portable.reassemble(geometry, features, kernels)


def local_similarity(chosen, geometry, queries, keys, shapes_known):
    if chosen == "op":
        return compiled.local_similarity(geometry, queries, keys)
    if exported_formulation():
        return export_formulation.local_similarity(geometry, queries, keys)
    return portable_similarity.local_similarity(geometry, queries, keys)


def supports_jit(implementation):
    return True

"""The compiled XLA FFI handlers: built by `keras_carafe.library`, opened with ctypes, and
registered with `jax.ffi` for the CPU and, where the library has them, CUDA."""

import ctypes

import jax

from keras_carafe.library import load as loader

OpUnavailableError = loader.OpUnavailableError

# The three maps of carafe_ops.cc, each with one handler per platform.
MAPS = ("forward", "features_grad", "kernels_grad")


def target_name(kind, platform):
    """The FFI target (and handler symbol) of map `kind` on `platform` ("cpu", "cuda")."""
    return f"keras_carafe_{kind}_{platform}"


class Handlers:
    """The opened library and the platforms whose handlers it registered."""

    def __init__(self, report):
        if not hasattr(jax, "ffi") or not hasattr(jax.ffi, "register_ffi_target"):
            raise OpUnavailableError(
                f"this JAX ({jax.__version__}) has no jax.ffi; the compiled kernels need "
                f"JAX 0.4.31 or newer")
        # Kept open for the life of the process: XLA calls into it.
        self.handle = ctypes.CDLL(report.library)
        self.platforms = ("cpu",) + (("cuda",) if report.cuda_architectures else ())
        for platform in self.platforms:
            for kind in MAPS:
                name = target_name(kind, platform)
                jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(self.handle, name)),
                                            platform="cpu" if platform == "cpu" else "CUDA")


def load():
    """The LoadedLibrary of the FFI handlers (its `module` a `Handlers`); raises
    OpUnavailableError with the reason."""
    return loader.load("jax", Handlers)

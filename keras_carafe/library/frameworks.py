"""What each framework's glue is compiled and linked with.

A `Framework` names the glue folder (`csrc/<name>/`), the installed version
(part of every cache key: none of the three promises a stable C++ or FFI
ABI across releases), its compiler and linker flags and the CUDA version it
was built with (for choosing the toolkit). Each function imports its
framework only when called.
"""

import dataclasses
import importlib.metadata
from pathlib import Path

# The C++ dialect of every glue and of the framework-free kernels.
CXX_STANDARD = "-std=c++17"

# Defines of the TensorFlow glue when it registers the CUDA kernels: TensorFlow's
# GPU code paths, and Eigen's GpuDevice, which hands out the op's CUDA stream.
TENSORFLOW_CUDA_DEFINES = ("-DKERAS_CARAFE_WITH_CUDA", "-DGOOGLE_CUDA=1", "-DEIGEN_USE_GPU")
# The JAX and PyTorch glues receive the stream as an opaque pointer (XLA FFI's
# PlatformStream<void*>, c10::Stream::native_handle) and need no CUDA header.
CUDA_DEFINES = ("-DKERAS_CARAFE_WITH_CUDA",)

NAMES = ("tensorflow", "jax", "torch")
DISPLAY_NAMES = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}


@dataclasses.dataclass(frozen=True)
class Framework:
    name: str  # "tensorflow", "jax" or "torch": the glue folder and the library's name
    display_name: str  # for messages: "TensorFlow", "JAX", "PyTorch"
    version: str
    compile_flags: tuple
    link_flags: tuple
    # The CUDA version the framework was built with ("12.5.1"), or None where it
    # does not say (CPU builds).
    cuda_version: object = None
    # Whether this build of the framework can run CUDA kernels at all: without it the
    # CUDA glue is not built unless asked for (KERAS_CARAFE_CUDA=1).
    has_cuda: bool = False

    @property
    def library_name(self):
        return f"libkeras_carafe_{self.name}.so"


def tensorflow():
    import tensorflow as tf

    try:
        info = tf.sysconfig.get_build_info()
    except (AttributeError, RuntimeError):
        info = {}
    cuda = info.get("cuda_version")
    # tf.sysconfig's flags already hold -std=c++17 and the C++ ABI setting.
    return Framework("tensorflow", DISPLAY_NAMES["tensorflow"], tf.__version__,
                     tuple(tf.sysconfig.get_compile_flags()),
                     tuple(tf.sysconfig.get_link_flags()), str(cuda) if cuda else None,
                     bool(info.get("is_cuda_build")))


def _jax_cuda_version():
    """The CUDA major version of an installed JAX CUDA plugin ("13"), or None."""
    for major in ("13", "12"):
        try:
            importlib.metadata.version(f"jax-cuda{major}-plugin")
        except importlib.metadata.PackageNotFoundError:
            continue
        return major
    return None


def jax():
    import jax
    import jaxlib

    # The FFI handlers are compiled against jaxlib's copy of the XLA FFI headers
    # (its version keys the build); the C API only exchanges plain structs, so
    # no C++ ABI flag applies.
    cuda = _jax_cuda_version()
    return Framework("jax", DISPLAY_NAMES["jax"], jaxlib.__version__,
                     (CXX_STANDARD, f"-I{jax.ffi.include_dir()}"), (), cuda, cuda is not None)


def torch():
    import torch

    root = Path(torch.__file__).resolve().parent
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    # at::parallel_for is inline code over OpenMP in OpenMP builds of PyTorch: without
    # -fopenmp it runs on one thread.
    openmp = ("-fopenmp",) if torch.backends.openmp.is_available() else ()
    return Framework(
        "torch", DISPLAY_NAMES["torch"], torch.__version__,
        (CXX_STANDARD, f"-D_GLIBCXX_USE_CXX11_ABI={abi}", *openmp, f"-I{root / 'include'}"),
        (*openmp, f"-L{root / 'lib'}", "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{root / 'lib'}"),
        torch.version.cuda, torch.version.cuda is not None)


def current(name):
    """The `Framework` of `name`, from what is installed; raises ImportError without it."""
    if name not in NAMES:
        raise ValueError(f"unknown framework {name!r}; expected one of {', '.join(NAMES)}")
    return {"tensorflow": tensorflow, "jax": jax, "torch": torch}[name]()


def cuda_glue_flags(framework, toolkit):
    """Host-compiler flags of `framework`'s glue when it registers the CUDA kernels."""
    if framework.name != "tensorflow":
        return CUDA_DEFINES
    # TensorFlow's glue needs `cuda_runtime.h` (through Eigen's GpuDevice). Where the
    # wheel ships CUDA headers (include/third_party/gpus/cuda/include) they come
    # first, as those of TensorFlow's own build; the toolkit's serve CPU wheels.
    tf_include = next((f[2:] for f in framework.compile_flags if f.startswith("-I")), None)
    includes = []
    if tf_include:
        shipped = Path(tf_include) / "third_party" / "gpus" / "cuda" / "include"
        if (shipped / "cuda_runtime.h").is_file():
            includes.append(str(shipped))
    includes += [d for d in toolkit.include_dirs if d not in includes]
    return TENSORFLOW_CUDA_DEFINES + tuple(f"-I{d}" for d in includes)

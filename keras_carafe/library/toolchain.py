"""Compilers and flags for building the reassembly op against the installed TensorFlow."""

import dataclasses
import functools
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

# Real code for each architecture that CUDA 12 and 13 both still support, plus
# PTX of the newest one so that future GPUs can JIT-compile it.
DEFAULT_CUDA_ARCHS = ("75", "80", "86", "89", "90", "100", "120")

CUDA_ARCHS_ENV = "KERAS_CARAFE_CUDA_ARCHS"
NO_CUDA_ENV = "KERAS_CARAFE_NO_CUDA"


@dataclasses.dataclass(frozen=True)
class CudaToolkit:
    nvcc: Path
    version: str
    include_dirs: tuple
    # Arguments that put the CUDA runtime into the shared library.
    runtime_link_args: tuple
    architectures: tuple

    def gencode_args(self):
        args = []
        for arch in self.architectures:
            args += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
        newest = self.architectures[-1]
        args += ["-gencode", f"arch=compute_{newest},code=compute_{newest}"]
        return args

    def architecture_names(self):
        names = [f"sm_{a}" for a in self.architectures]
        return names + [f"compute_{self.architectures[-1]}"]


def source_dir():
    """Folder holding the C++/CUDA sources (inside the wheel, or the repo's tf_ops/)."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "tf_ops", package.parent / "tf_ops"):
        if (candidate / "carafe_kernels.cc").is_file():
            return candidate
    raise FileNotFoundError(
        f"the CARAFE op sources were not found in {package / 'tf_ops'} "
        f"or {package.parent / 'tf_ops'}; reinstall keras-carafe"
    )


def source_files():
    folder = source_dir()
    return sorted(
        p for p in folder.iterdir() if p.suffix in (".h", ".cc", ".cu") and p.is_file()
    )


def host_compiler():
    """Path of the C++ compiler, or None."""
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return Path(shutil.which(name))
    return None


@functools.lru_cache(maxsize=None)
def compiler_version(path):
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    # nvcc prints a banner first; its "release" line names the version.
    for line in lines:
        if "release" in line:
            return line
    return lines[0] if lines else "unknown"


def tensorflow_flags():
    import tensorflow as tf

    return (
        tf.__version__,
        tuple(tf.sysconfig.get_compile_flags()),
        tuple(tf.sysconfig.get_link_flags()),
    )


def cpu_vector_flags():
    """AVX2/FMA/F16C flags when this CPU has them.

    They are part of the cache key, so a cache folder shared with an older
    CPU gets its own build instead of an illegal instruction.
    """
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        return ()
    if {"avx2", "fma", "f16c"} <= flags:
        return ("-mavx2", "-mfma", "-mf16c")
    return ()


def _nvcc_candidates():
    # A pip-installed nvcc (nvidia-cuda-nvcc-cu12, where the wheel carries the
    # compiler and not only ptxas) matches the CUDA runtime that
    # `tensorflow[and-cuda]` loads, so it comes first.
    spec = importlib.util.find_spec("nvidia")
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            yield Path(root) / "cuda_nvcc" / "bin" / "nvcc"
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            yield Path(os.environ[var]) / "bin" / "nvcc"
    found = shutil.which("nvcc")
    if found:
        yield Path(found)
    yield Path("/usr/local/cuda/bin/nvcc")


def _runtime_layout(nvcc):
    """Include folders and link arguments for the CUDA runtime next to `nvcc`."""
    root = nvcc.resolve().parent.parent
    if root.name == "cuda_nvcc" and root.parent.name == "nvidia":
        # pip's layout: the runtime is the sibling package nvidia/cuda_runtime.
        runtime = root.parent / "cuda_runtime"
        include_dirs = (str(root / "include"), str(runtime / "include"))
        lib_dirs = (runtime / "lib",)
    else:
        include_dirs = (str(root / "include"),)
        lib_dirs = (root / "lib64", root / "lib", root / "targets" / "x86_64-linux" / "lib")
    if not (Path(include_dirs[-1]) / "cuda_runtime.h").is_file():
        return None
    for lib_dir in lib_dirs:
        static = lib_dir / "libcudart_static.a"
        if static.is_file():
            # Static cudart: the library loads on machines without a CUDA runtime.
            return include_dirs, (str(static), "-ldl", "-lrt", "-lpthread")
    for lib_dir in lib_dirs:
        shared = sorted(lib_dir.glob("libcudart.so*"))
        if shared:
            return include_dirs, (str(shared[0]), f"-Wl,-rpath,{lib_dir}")
    return None


def _supported_archs(nvcc):
    try:
        out = subprocess.run(
            [str(nvcc), "--list-gpu-arch"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return set()
    return set(re.findall(r"compute_(\d+)", out))


def _requested_archs():
    value = os.environ.get(CUDA_ARCHS_ENV, "").strip()
    if not value:
        return DEFAULT_CUDA_ARCHS, False
    archs = tuple(a.strip().replace("sm_", "").replace(".", "") for a in re.split("[,; ]+", value))
    if not all(a.isdigit() for a in archs if a):
        raise ValueError(
            f"{CUDA_ARCHS_ENV} must list compute capabilities such as '80,90', got {value!r}"
        )
    return tuple(a for a in archs if a), True


def find_cuda_toolkit():
    """The CUDA toolkit to build with, or (None, reason) when there is none."""
    if os.environ.get(NO_CUDA_ENV, "").strip() not in ("", "0"):
        return None, f"{NO_CUDA_ENV} is set"
    tried = []
    for nvcc in _nvcc_candidates():
        if not nvcc.is_file() or str(nvcc) in tried:
            continue
        tried.append(str(nvcc))
        layout = _runtime_layout(nvcc)
        if layout is None:
            continue
        requested, explicit = _requested_archs()
        supported = _supported_archs(nvcc)
        archs = tuple(sorted(
            (a for a in requested if not supported or a in supported), key=int
        ))
        if not archs:
            if explicit:
                raise ValueError(
                    f"{CUDA_ARCHS_ENV}={os.environ[CUDA_ARCHS_ENV]!r}: none of these "
                    f"architectures is supported by {nvcc} (it supports "
                    f"{', '.join(sorted(supported, key=int))})"
                )
            continue
        return (
            CudaToolkit(
                nvcc=nvcc,
                version=compiler_version(nvcc),
                include_dirs=layout[0],
                runtime_link_args=layout[1],
                architectures=archs,
            ),
            None,
        )
    if tried:
        return None, f"no usable CUDA runtime next to {', '.join(tried)}"
    return None, "no CUDA compiler (nvcc) found"

"""Compilers, CUDA toolkits and the sources of the compiled kernels."""

import dataclasses
import functools
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

# Real code (SASS) is built for one architecture per GPU generation from
# compute capability 6.0 up (where the chosen nvcc can target it), plus PTX of
# the lowest built one. A GPU without its own SASS runs that of the closest
# lower architecture of its major version (CUDA's binary compatibility: sm_80
# code runs on 8.7 and 8.9, sm_100 on 10.3, sm_120 on 12.1), or else the
# driver JIT-compiles the PTX (e.g. 11.0). 6.0 is the oldest architecture in
# TensorFlow's own GPU builds; CUDA 13 compilers start at 7.5. Each
# architecture adds about 8 s to a 2-core build.
LOWEST_ARCH = 60
DEFAULT_ARCHS = (60, 70, 75, 80, 86, 90, 100, 120)

CUDA_ARCHS_ENV = "KERAS_CARAFE_CUDA_ARCHS"
NO_CUDA_ENV = "KERAS_CARAFE_NO_CUDA"
# Builds the CUDA kernels even for a framework that cannot run them (a CPU-only
# TensorFlow, JAX without a CUDA plugin, a CPU build of PyTorch).
CUDA_ENV = "KERAS_CARAFE_CUDA"


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def cuda_wanted(framework_has_cuda):
    """Whether to build CUDA kernels: where the framework can run them or
    KERAS_CARAFE_CUDA=1 asks for them, never with KERAS_CARAFE_NO_CUDA=1."""
    if _env_flag(NO_CUDA_ENV):
        return False
    return framework_has_cuda or _env_flag(CUDA_ENV)

# nvcc compiles the architectures of one file in parallel from this release on.
_NVCC_THREADS_SINCE = (11, 2)


@dataclasses.dataclass(frozen=True)
class CudaToolkit:
    nvcc: Path
    version: str  # nvcc's release line, e.g. "Cuda compilation tools, release 12.4, V12.4.131"
    release: tuple  # (major, minor)
    include_dirs: tuple
    # Arguments that put the CUDA runtime into the shared library.
    runtime_link_args: tuple
    architectures: tuple  # ascending ints, e.g. (75, 80, 86)

    def gencode_args(self):
        args = []
        for arch in self.architectures:
            args += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
        lowest = self.architectures[0]
        args += ["-gencode", f"arch=compute_{lowest},code=compute_{lowest}"]
        return args

    def architecture_names(self):
        return [f"sm_{a}" for a in self.architectures] + [f"compute_{self.architectures[0]}"]

    def thread_args(self, cpus=None):
        """nvcc arguments that compile the architectures in parallel on spare cores.

        Two cores stay free for the host compiles that run beside nvcc.
        """
        if cpus is None:
            cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
                else os.cpu_count()
        threads = min(len(self.architectures) + 1, max(1, (cpus or 1) - 2))
        if threads < 2 or self.release < _NVCC_THREADS_SINCE:
            return []
        return ["--threads", str(threads)]


def csrc_dir():
    """Folder of the C++/CUDA sources: `kernels/` (framework-free) and one glue folder per
    framework (`tensorflow/`, `jax/`, `torch/`)."""
    folder = Path(__file__).resolve().parent.parent / "csrc"
    if not (folder / "kernels" / "carafe_geometry.h").is_file():
        raise FileNotFoundError(
            f"the CARAFE kernel sources were not found in {folder}; reinstall keras-carafe")
    return folder


def source_files(folder):
    """The C++/CUDA sources and headers of `folder`, sorted by name."""
    return tuple(sorted(p for p in Path(folder).iterdir()
                        if p.suffix in (".h", ".cc", ".cu") and p.is_file()))


def identity(path):
    """(resolved path, size, modification time) of a compiler: it changes when the
    compiler is replaced, and costs no subprocess."""
    if path is None:
        return None
    try:
        resolved = Path(path).resolve()
        stat = resolved.stat()
    except OSError:
        return None
    return (str(resolved), stat.st_size, int(stat.st_mtime))


def toolchain_identity():
    """The identities of the C++ compiler and of every nvcc that the build would consider."""
    return (identity(host_compiler()),
            tuple(identity(n) for n in _nvcc_candidates() if n.is_file()))


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
    # compiler and not only ptxas) matches the CUDA runtime that a framework's
    # CUDA wheels load, so it comes first.
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
    # Side-by-side installs (/usr/local/cuda-12.4, ...), newest first.
    versioned = []
    for folder in Path("/usr/local").glob("cuda-*"):
        numbers = re.fullmatch(r"cuda-(\d+)\.(\d+)", folder.name)
        if numbers:
            versioned.append(((int(numbers[1]), int(numbers[2])), folder / "bin" / "nvcc"))
    for _, nvcc in sorted(versioned, reverse=True):
        yield nvcc


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


def parse_release(version_text):
    """(major, minor) from nvcc's "release 12.4" line, or None."""
    match = re.search(r"release (\d+)\.(\d+)", version_text)
    return (int(match[1]), int(match[2])) if match else None


def parse_gpu_archs(listing):
    """Architectures in `nvcc --list-gpu-arch` output, as ascending ints.

    Architecture-specific variants (compute_90a, compute_100f) run only on one
    GPU or family and are left out.
    """
    return tuple(sorted({int(n) for n in re.findall(r"^\s*compute_(\d+)\s*$", listing, re.M)}))


def select_architectures(supported, requested=None):
    """The SASS architectures to build: `requested` (explicit) or DEFAULT_ARCHS, in
    both cases only those that nvcc supports."""
    return tuple(a for a in sorted(set(requested or DEFAULT_ARCHS)) if a in supported)


def requested_architectures():
    """The architectures named by KERAS_CARAFE_CUDA_ARCHS, or None when unset."""
    value = os.environ.get(CUDA_ARCHS_ENV, "").strip()
    if not value:
        return None
    names = [a.strip().lower() for a in re.split("[,; ]+", value) if a.strip()]
    archs = tuple(n.replace("sm_", "").replace("compute_", "").replace(".", "") for n in names)
    if not archs or not all(a.isdigit() for a in archs):
        raise ValueError(
            f"{CUDA_ARCHS_ENV} must list compute capabilities such as '80,90', got {value!r}"
        )
    return tuple(int(a) for a in archs)


@dataclasses.dataclass(frozen=True)
class NvccCandidate:
    """What one nvcc on this machine offers."""

    nvcc: Path
    version: str  # nvcc's release line, "" when it does not run
    release: object  # (major, minor) or None
    layout: object  # (include dirs, runtime link arguments) or None
    supported: tuple  # architectures from --list-gpu-arch


@functools.lru_cache(maxsize=None)
def inspect_nvcc(nvcc):
    version = compiler_version(nvcc)
    try:
        listing = subprocess.run(
            [str(nvcc), "--list-gpu-arch"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        listing = ""
    return NvccCandidate(nvcc=nvcc, version=version if parse_release(version) else "",
                         release=parse_release(version), layout=_runtime_layout(nvcc),
                         supported=parse_gpu_archs(listing))


@dataclasses.dataclass(frozen=True)
class ToolkitChoice:
    toolkit: object  # CudaToolkit or None
    skipped: str  # why there is no toolkit; "" when there is one
    explanation: tuple  # lines: the choice, the reason, every candidate considered


def _release_text(release):
    return f"CUDA {release[0]}.{release[1]}"


def choose_toolkit(candidates, framework_cuda, framework, requested=None):
    """Picks the toolkit to build with from inspected `candidates` (in search order).

    The first usable one whose CUDA major version matches the one the
    `framework` (its display name, e.g. "TensorFlow") was built with,
    `framework_cuda`, wins: the kernels then need no newer driver than the
    framework itself. Without a match, or when the framework does not say (CPU
    builds), the first usable one.
    """
    usable, lines = [], []
    for candidate in candidates:
        archs = select_architectures(candidate.supported, requested)
        if candidate.release is None:
            problem = "does not run or prints no release"
        elif candidate.layout is None:
            problem = "no CUDA runtime (cuda_runtime.h, libcudart) next to it"
        elif not archs:
            wanted = (", ".join(map(str, requested)) if requested
                      else f"{LOWEST_ARCH} or higher")
            problem = f"supports none of the architectures {wanted}"
        else:
            problem = None
            usable.append((candidate, archs))
        status = problem or "SASS for " + ", ".join(f"sm_{a}" for a in archs)
        release = _release_text(candidate.release) if candidate.release else "unknown version"
        lines.append(f"    {candidate.nvcc}: {release}, {status}")
    if not usable:
        if requested and any(c.release and c.layout for c in candidates):
            raise ValueError(
                f"{CUDA_ARCHS_ENV}={os.environ.get(CUDA_ARCHS_ENV, requested)!r}: no CUDA "
                f"toolkit here supports these architectures:\n" + "\n".join(lines))
        skipped = ("no CUDA compiler (nvcc) found" if not candidates
                   else "no usable CUDA toolkit:\n" + "\n".join(lines))
        return ToolkitChoice(None, skipped, ("CUDA toolkit: none; " + skipped,))

    major = None
    if framework_cuda:
        match = re.match(r"\d+", framework_cuda)
        major = int(match[0]) if match else None
    same_major = [(c, a) for c, a in usable if major is not None and c.release[0] == major]
    if major is None:
        (chosen, archs), reason = usable[0], (
            f"{framework} does not say which CUDA it was built with (a CPU-only build), "
            f"so the first usable toolkit is taken")
    elif same_major:
        (chosen, archs), reason = same_major[0], (
            f"{framework} was built with CUDA {framework_cuda}; this is the first toolkit "
            f"of the same major version")
    else:
        (chosen, archs), reason = usable[0], (
            f"{framework} was built with CUDA {framework_cuda} but no CUDA {major} toolkit "
            f"was found; the first usable toolkit is taken, and its kernels need a driver "
            f"for {_release_text(usable[0][0].release)}")
    toolkit = CudaToolkit(nvcc=chosen.nvcc, version=chosen.version, release=chosen.release,
                          include_dirs=chosen.layout[0], runtime_link_args=chosen.layout[1],
                          architectures=archs)
    explanation = [f"CUDA toolkit: {chosen.nvcc} ({_release_text(chosen.release)})",
                   f"  why: {reason}"]
    if not requested and archs[0] > LOWEST_ARCH:
        explanation.append(
            f"  note: {_release_text(chosen.release)} cannot build for GPUs below sm_{archs[0]} "
            f"(P100 is sm_60, V100 sm_70); they use the portable path (or TensorFlow's "
            f"fallback) unless a CUDA 12 toolkit builds the kernels")
    explanation += ["  candidates:", *lines]
    return ToolkitChoice(toolkit, "", tuple(explanation))


def find_cuda_toolkit(framework_cuda=None, framework="the framework", wanted=True):
    """The CUDA toolkit to build with, as a ToolkitChoice (its toolkit None when there is
    none or CUDA is not `wanted`), preferring the CUDA major version `framework_cuda`
    (see `choose_toolkit`)."""
    if _env_flag(NO_CUDA_ENV):
        reason = f"{NO_CUDA_ENV} is set"
        return ToolkitChoice(None, reason, (f"CUDA toolkit: none; {reason}",))
    if not wanted:
        reason = (f"this {framework} cannot run CUDA kernels (set {CUDA_ENV}=1 to build "
                  f"them anyway)")
        return ToolkitChoice(None, reason, (f"CUDA toolkit: none; {reason}",))
    seen, candidates = set(), []
    for nvcc in _nvcc_candidates():
        if not nvcc.is_file() or nvcc.resolve() in seen:
            continue
        seen.add(nvcc.resolve())
        candidates.append(inspect_nvcc(nvcc))
    return choose_toolkit(candidates, framework_cuda, framework, requested_architectures())

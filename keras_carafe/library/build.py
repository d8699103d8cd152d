"""Compiles the kernels and each framework's glue into a per-user cache.

The cache holds two kinds of folders, each named by a hash of everything its
contents depend on:

- kernel objects, free of any framework: `kernels-cpu-<hash>/` (the CPU
  kernels, for one host compiler and its flags) and `kernels-cuda-<hash>/`
  (the CUDA kernels, for one nvcc and its GPU architectures). Every
  framework's library links the same objects, so a machine compiles the CUDA
  kernels once whatever frameworks it has, and upgrading a framework does not
  recompile them.
- one library per framework: `<name>-<version>-<hash>/libkeras_carafe_<name>.so`
  (the glue of `csrc/<name>/` linked with the kernel objects), keyed by the
  framework's version and flags, the compiler, the glue sources and the kernel
  objects' keys, so an upgraded framework gets a fresh build instead of an ABI
  mismatch.

Every folder is built under an exclusive file lock and published with atomic
renames, so concurrent first uses in several processes never see a partial
file. A failed build is remembered in its folder so that later processes do
not retry a slow failing compile.
"""

import dataclasses
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from keras_carafe.library import frameworks, toolchain

REPORT_NAME = "build.json"
FAILURE_NAME = "build-failed.log"
CACHE_ENV = "KERAS_CARAFE_CACHE_DIR"
# A remembered failure stops retries for this long; the cache folders are
# keyed like the builds, so new frameworks, compilers or sources retry at once.
FAILURE_RETRY_SECONDS = 3600

HOST_FLAGS = ("-O3", "-fPIC", "-DNDEBUG", "-Wno-deprecated-declarations")
# The kernel objects export nothing but the CUDA probe (which says so itself):
# two libraries of the package in one process never bind each other's kernels.
KERNEL_FLAGS = (frameworks.CXX_STANDARD, "-fvisibility=hidden")
NVCC_FLAGS = ("-O3", "-Xcompiler", "-fPIC", "-Xcompiler", "-fvisibility=hidden", "-DNDEBUG")

CPU_OBJECTS = ("carafe_cpu.o", "carafe_no_cuda.o")
CUDA_OBJECT = "carafe_cuda.o"


class BuildError(RuntimeError):
    """A library could not be compiled; the message holds the compiler output."""


@dataclasses.dataclass
class BuildReport:
    library: str
    framework: str  # "tensorflow", "jax" or "torch"
    framework_version: str
    compiler: str
    nvcc: str
    cuda_architectures: list
    cuda_skipped: str
    seconds: float
    # How the CUDA toolkit was chosen: the choice, why, and every candidate.
    cuda_choice: list = dataclasses.field(default_factory=list)
    # The kernel objects linked in.
    kernel_objects: list = dataclasses.field(default_factory=list)

    def describe(self):
        name = frameworks.DISPLAY_NAMES.get(self.framework, self.framework)
        if self.cuda_architectures:
            kinds = f"CPU + CUDA kernels for {', '.join(self.cuda_architectures)} ({self.nvcc})"
        else:
            kinds = f"CPU kernels only (CUDA skipped: {self.cuda_skipped})"
        lines = [
            f"built {kinds} for {name} {self.framework_version}",
            f"  library:    {self.library}",
            f"  C++ compiler: {self.compiler}",
            f"  kernel objects: {', '.join(self.kernel_objects)}",
            f"  build time: {self.seconds:.1f} s",
        ]
        return "\n".join(lines + ["  " + line for line in self.cuda_choice])


def cache_root():
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "keras_carafe"


def _digest(parts, sources):
    digest = hashlib.sha256()
    for part in parts:
        digest.update(repr(part).encode())
    for source in sources:
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class BuildPlan:
    framework: frameworks.Framework
    cxx: Path
    vector_flags: tuple
    cuda: object  # toolchain.CudaToolkit or None
    cuda_skipped: str
    kernel_sources: tuple
    glue_sources: tuple
    cuda_choice: tuple = dataclasses.field(default=(), compare=False)

    @property
    def cuda_glue_flags(self):
        """Extra host-compiler flags of the glue when it registers the CUDA kernels."""
        return frameworks.cuda_glue_flags(self.framework, self.cuda) if self.cuda else ()

    def cpu_key(self):
        return _digest((toolchain.compiler_version(self.cxx), HOST_FLAGS, KERNEL_FLAGS,
                        self.vector_flags), self.kernel_sources)

    def cuda_key(self):
        if self.cuda is None:
            return None
        cuda = self.cuda
        return _digest((cuda.version, cuda.architectures, cuda.include_dirs, NVCC_FLAGS,
                        toolchain.compiler_version(self.cxx)), self.kernel_sources)

    def cpu_folder(self):
        return cache_root() / f"kernels-cpu-{self.cpu_key()}"

    def cuda_folder(self):
        return cache_root() / f"kernels-cuda-{self.cuda_key()}"

    def folder(self):
        fw = self.framework
        key = _digest((fw.name, fw.version, fw.compile_flags, fw.link_flags,
                       toolchain.compiler_version(self.cxx), HOST_FLAGS, self.cpu_key(),
                       self.cuda_key(), self.cuda and self.cuda.runtime_link_args,
                       self.cuda_glue_flags), self.glue_sources)
        return cache_root() / f"{fw.name}-{fw.version}-{key}"


def make_plan(name):
    """The BuildPlan of framework `name` ("tensorflow", "jax", "torch") on this machine."""
    framework = frameworks.current(name)
    cxx = toolchain.host_compiler()
    if cxx is None:
        raise BuildError(
            "no C++ compiler found (set CXX or install g++); the compiled kernels cannot be "
            "built")
    choice = toolchain.find_cuda_toolkit(framework.cuda_version, framework.display_name)
    csrc = toolchain.csrc_dir()
    return BuildPlan(
        framework=framework,
        cxx=cxx,
        vector_flags=toolchain.cpu_vector_flags(),
        cuda=choice.toolkit,
        cuda_skipped=choice.skipped,
        kernel_sources=toolchain.source_files(csrc / "kernels"),
        glue_sources=toolchain.source_files(csrc / framework.name),
        cuda_choice=choice.explanation,
    )


def _run(command, log):
    log.append("$ " + shlex.join(command))
    result = subprocess.run(command, capture_output=True, text=True)
    output = (result.stdout + result.stderr).strip()
    if output:
        log.append(output)
    return result.returncode == 0


class _FolderLock:
    """An exclusive lock on `folder` (a file beside it), held across processes."""

    def __init__(self, folder):
        folder.parent.mkdir(parents=True, exist_ok=True)
        self._path = folder.with_name(folder.name + ".lock")

    def __enter__(self):
        self._file = open(self._path, "w")
        fcntl.flock(self._file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()


def _age_seconds(path):
    try:
        return max(0.0, time.time() - path.stat().st_mtime)
    except OSError:
        return None


def _remembered_failure(folder):
    """The log of a failure in `folder` younger than the retry period, or None."""
    failure = folder / FAILURE_NAME
    age = _age_seconds(failure)
    if age is None or age >= FAILURE_RETRY_SECONDS:
        return None
    try:
        log = failure.read_text()
    except OSError:
        return None
    return (f"an earlier build failed {age / 60:.0f} min ago (log: {failure}); it is retried "
            f"{FAILURE_RETRY_SECONDS // 60} min after the failure, or now with "
            f"`python -m keras_carafe build`.\n{log[-4000:]}")


def _publish(source, destination):
    """Copies `source` to `destination` through a fresh inode and an atomic rename:
    processes that mapped the old file keep it."""
    staged = destination.with_name(f".{destination.name}.{os.getpid()}.{threading.get_ident()}")
    shutil.copyfile(source, staged)
    os.replace(staged, destination)


def _write_json(path, data):
    staged = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    staged.write_text(json.dumps(data, indent=2))
    os.replace(staged, path)


# Kernel-object folders built by this process: a forced build rebuilds each once,
# not once per framework.
_built_here = set()
_built_here_lock = threading.Lock()


def _objects_ready(folder, names, force):
    if force:
        with _built_here_lock:
            if folder not in _built_here:
                return False
    return all((folder / name).is_file() for name in names) and (folder / REPORT_NAME).is_file()


def _mark_built(folder):
    with _built_here_lock:
        _built_here.add(folder)


def _ensure_cpu_objects(plan, force):
    """Paths of the CPU kernel objects, compiling them if needed; raises BuildError."""
    folder = plan.cpu_folder()
    with _FolderLock(folder):
        if _objects_ready(folder, CPU_OBJECTS, force):
            return tuple(folder / name for name in CPU_OBJECTS)
        folder.mkdir(parents=True, exist_ok=True)
        kernels = toolchain.csrc_dir() / "kernels"
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".build-") as tmp:
            logs = []
            for source, obj in (("carafe_cpu.cc", CPU_OBJECTS[0]),
                                ("carafe_no_cuda.cc", CPU_OBJECTS[1])):
                command = [str(plan.cxx), *HOST_FLAGS, *KERNEL_FLAGS, *plan.vector_flags,
                           "-c", str(kernels / source), "-o", str(Path(tmp) / obj)]
                if not _run(command, logs):
                    raise BuildError("\n".join(logs))
            for name in CPU_OBJECTS:
                _publish(Path(tmp) / name, folder / name)
        _write_json(folder / REPORT_NAME, {"compiler": toolchain.compiler_version(plan.cxx),
                                           "objects": list(CPU_OBJECTS)})
        _mark_built(folder)
        return tuple(folder / name for name in CPU_OBJECTS)


def _ensure_cuda_object(plan, force):
    """(path of the CUDA kernel object or None, why there is none)."""
    folder = plan.cuda_folder()
    with _FolderLock(folder):
        if _objects_ready(folder, (CUDA_OBJECT,), force):
            return folder / CUDA_OBJECT, ""
        if not force:
            remembered = _remembered_failure(folder)
            if remembered:
                return None, "nvcc failed: " + remembered
        folder.mkdir(parents=True, exist_ok=True)
        cuda = plan.cuda
        archs = ",".join(cuda.architecture_names())
        log = []
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".build-") as tmp:
            obj = Path(tmp) / CUDA_OBJECT
            # No framework flags: the kernels are framework-free, and nvcc
            # rejects a second -std.
            command = [str(cuda.nvcc), *NVCC_FLAGS, *cuda.thread_args(), "-ccbin",
                       str(plan.cxx), f'-DKERAS_CARAFE_CUDA_ARCHS="{archs}"',
                       *(f"-I{d}" for d in cuda.include_dirs), *cuda.gencode_args(),
                       "-c", str(toolchain.csrc_dir() / "kernels" / "carafe_cuda.cu"),
                       "-o", str(obj)]
            if not _run(command, log):
                (folder / FAILURE_NAME).write_text("\n".join(log))
                return None, "nvcc failed:\n" + "\n".join(log)
            _publish(obj, folder / CUDA_OBJECT)
        _write_json(folder / REPORT_NAME, {"nvcc": cuda.version,
                                           "architectures": cuda.architecture_names()})
        (folder / FAILURE_NAME).unlink(missing_ok=True)
        _mark_built(folder)
        return folder / CUDA_OBJECT, ""


def _compile_glue(plan, workdir, with_cuda, log):
    """Compiles every glue source; returns the objects, or None if one failed."""
    flags = plan.cuda_glue_flags if with_cuda else ()
    kernels = toolchain.csrc_dir() / "kernels"
    objects, ok = [], True
    for source in plan.glue_sources:
        if source.suffix != ".cc":
            continue
        obj = workdir / f"{source.stem}{'-cuda' if with_cuda else ''}.o"
        command = [str(plan.cxx), *plan.framework.compile_flags, *HOST_FLAGS, f"-I{kernels}",
                   *flags, "-c", str(source), "-o", str(obj)]
        ok = _run(command, log) and ok
        objects.append(obj)
    return objects if ok else None


def _build_into(plan, workdir, force):
    """Compiles and links into `workdir`; returns (library, report fields)."""
    glue_log = []
    with ThreadPoolExecutor(max_workers=3) as pool:
        cpu_job = pool.submit(_ensure_cpu_objects, plan, force)
        cuda_job = pool.submit(_ensure_cuda_object, plan, force) if plan.cuda else None
        glue_job = pool.submit(_compile_glue, plan, workdir, plan.cuda is not None, glue_log)
        cpu_objects = cpu_job.result()
        cuda_object, cuda_skipped = cuda_job.result() if cuda_job else (None, plan.cuda_skipped)
        glue = glue_job.result()

    with_cuda = cuda_object is not None and glue is not None
    if plan.cuda is not None and not with_cuda:
        # A broken CUDA toolchain, or framework headers that the CUDA-enabled
        # glue does not compile against, should not cost users the CPU kernels.
        if cuda_object is not None:
            cuda_skipped = (f"the {plan.framework.display_name} glue with CUDA enabled failed "
                            f"to compile:\n" + "\n".join(glue_log))
        glue_log = []
        glue = _compile_glue(plan, workdir, False, glue_log)
    if glue is None:
        raise BuildError("\n".join(glue_log))

    library = workdir / plan.framework.library_name
    kernel_objects = [cpu_objects[0], cuda_object if with_cuda else cpu_objects[1]]
    link_args = list(plan.cuda.runtime_link_args) if with_cuda else []
    link_log = []
    command = [str(plan.cxx), "-shared", *map(str, glue), *map(str, kernel_objects), "-o",
               str(library), *link_args, *plan.framework.link_flags]
    if not _run(command, link_log):
        raise BuildError("\n".join(link_log))
    return library, with_cuda, cuda_skipped, [str(o) for o in kernel_objects]


def read_report(folder):
    try:
        fields = json.loads((folder / REPORT_NAME).read_text())
        report = BuildReport(**fields)
    except (OSError, ValueError, TypeError):
        return None
    return report if Path(report.library).is_file() else None


def ensure_built(name, force=False):
    """Returns the BuildReport of framework `name`'s library, building it first if needed.

    Raises BuildError when it cannot be built. A failure is remembered in the
    build's cache folder so that later processes do not retry a slow failing
    compile; it is retried once FAILURE_RETRY_SECONDS have passed, at once when
    the framework, the compilers or the sources change (a new folder), or with
    `force=True` (as `python -m keras_carafe build` does), which also rebuilds
    the kernel objects, once per process.
    """
    plan = make_plan(name)
    folder = plan.folder()
    with _FolderLock(folder):
        if not force:
            report = read_report(folder)
            if report is not None:
                return report
            remembered = _remembered_failure(folder)
            if remembered:
                raise BuildError(remembered)
        folder.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".build-") as tmp:
            try:
                built, with_cuda, cuda_skipped, kernel_objects = _build_into(
                    plan, Path(tmp), force)
            except BuildError as err:
                (folder / FAILURE_NAME).write_text(str(err))
                raise
            final = folder / plan.framework.library_name
            _publish(built, final)
        report = BuildReport(
            library=str(final),
            framework=plan.framework.name,
            framework_version=plan.framework.version,
            compiler=toolchain.compiler_version(plan.cxx),
            nvcc=plan.cuda.version if with_cuda else "",
            cuda_architectures=plan.cuda.architecture_names() if with_cuda else [],
            cuda_skipped="" if with_cuda else cuda_skipped,
            seconds=round(time.monotonic() - start, 1),
            cuda_choice=list(plan.cuda_choice),
            kernel_objects=kernel_objects,
        )
        _write_json(folder / REPORT_NAME, dataclasses.asdict(report))
        (folder / FAILURE_NAME).unlink(missing_ok=True)
        return report

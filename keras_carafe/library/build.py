"""Compiles the reassembly op into a per-user cache.

Each build lives in a folder named by a hash of everything the binary depends
on (TensorFlow version and flags, compilers, CUDA architectures, sources), so
an upgraded TensorFlow gets a fresh build instead of an ABI mismatch. Builds
take an exclusive file lock and publish the library with an atomic rename, so
concurrent first uses in several processes never see a partial file.
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
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from keras_carafe.library import toolchain

LIBRARY_NAME = "libkeras_carafe_ops.so"
REPORT_NAME = "build.json"
FAILURE_NAME = "build-failed.log"
CACHE_ENV = "KERAS_CARAFE_CACHE_DIR"

HOST_FLAGS = ("-O3", "-fPIC", "-DNDEBUG", "-Wno-deprecated-declarations")
NVCC_FLAGS = ("-O3", "-Xcompiler", "-fPIC", "-DNDEBUG")


class BuildError(RuntimeError):
    """The op library could not be compiled; the message holds the compiler output."""


@dataclasses.dataclass
class BuildReport:
    library: str
    tensorflow: str
    compiler: str
    nvcc: str
    cuda_architectures: list
    cuda_skipped: str
    seconds: float

    def describe(self):
        if self.cuda_architectures:
            kinds = f"CPU + CUDA kernels for {', '.join(self.cuda_architectures)} ({self.nvcc})"
        else:
            kinds = f"CPU kernels only (CUDA skipped: {self.cuda_skipped})"
        return (
            f"built {kinds}\n"
            f"  library:    {self.library}\n"
            f"  TensorFlow: {self.tensorflow}; C++ compiler: {self.compiler}\n"
            f"  build time: {self.seconds:.1f} s"
        )


def cache_root():
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "keras_carafe"


@dataclasses.dataclass(frozen=True)
class BuildPlan:
    cxx: Path
    vector_flags: tuple
    cuda: object  # toolchain.CudaToolkit or None
    cuda_skipped: str
    tf_version: str
    tf_compile_flags: tuple
    tf_link_flags: tuple
    sources: tuple

    def folder(self):
        digest = hashlib.sha256()
        for part in (
            self.tf_version,
            self.tf_compile_flags,
            self.tf_link_flags,
            toolchain.compiler_version(self.cxx),
            HOST_FLAGS,
            self.vector_flags,
            NVCC_FLAGS,
            self.cuda and (self.cuda.version, self.cuda.architectures, self.cuda.include_dirs),
        ):
            digest.update(repr(part).encode())
        for source in self.sources:
            digest.update(source.name.encode())
            digest.update(source.read_bytes())
        return cache_root() / f"tf{self.tf_version}-{digest.hexdigest()[:16]}"


def make_plan():
    cxx = toolchain.host_compiler()
    if cxx is None:
        raise BuildError(
            "no C++ compiler found (set CXX or install g++); the compiled op cannot be built"
        )
    cuda, cuda_skipped = toolchain.find_cuda_toolkit()
    tf_version, compile_flags, link_flags = toolchain.tensorflow_flags()
    return BuildPlan(
        cxx=cxx,
        vector_flags=toolchain.cpu_vector_flags(),
        cuda=cuda,
        cuda_skipped=cuda_skipped or "",
        tf_version=tf_version,
        tf_compile_flags=compile_flags,
        tf_link_flags=link_flags,
        sources=tuple(toolchain.source_files()),
    )


def _run(command, log):
    log.append("$ " + shlex.join(command))
    result = subprocess.run(command, capture_output=True, text=True)
    output = (result.stdout + result.stderr).strip()
    if output:
        log.append(output)
    return result.returncode == 0


def _compile_host(plan, source, obj, with_cuda, log):
    defines = ["-DKERAS_CARAFE_WITH_CUDA"] if with_cuda else []
    command = [str(plan.cxx), *plan.tf_compile_flags, *HOST_FLAGS, *plan.vector_flags, *defines, "-c", str(source),
               "-o", str(obj)]
    return _run(command, log)


def _compile_cuda(plan, source, obj, log):
    cuda = plan.cuda
    archs = ",".join(cuda.architecture_names())
    command = [str(cuda.nvcc), *NVCC_FLAGS, "-ccbin", str(plan.cxx),
               f'-DKERAS_CARAFE_CUDA_ARCHS="{archs}"',
               *(f"-I{d}" for d in cuda.include_dirs), *cuda.gencode_args(),
               "-c", str(source), "-o", str(obj)]
    return _run(command, log)


def _build_into(plan, workdir):
    """Compiles and links into `workdir`; returns (library path, report fields)."""
    src = toolchain.source_dir()
    objects = {name: workdir / f"{name}.o" for name in ("ops", "kernels", "cuda")}
    logs = {name: [] for name in objects}
    with ThreadPoolExecutor(max_workers=3) as pool:
        jobs = {
            "ops": pool.submit(_compile_host, plan, src / "carafe_ops.cc", objects["ops"],
                               False, logs["ops"]),
            "kernels": pool.submit(_compile_host, plan, src / "carafe_kernels.cc",
                                   objects["kernels"], plan.cuda is not None, logs["kernels"]),
        }
        if plan.cuda is not None:
            jobs["cuda"] = pool.submit(_compile_cuda, plan, src / "carafe_cuda.cu",
                                       objects["cuda"], logs["cuda"])
        ok = {name: job.result() for name, job in jobs.items()}
    for name in ("ops", "kernels"):
        if not ok[name]:
            raise BuildError("\n".join(logs[name]))

    cuda_skipped = plan.cuda_skipped
    with_cuda = plan.cuda is not None and ok["cuda"]
    if plan.cuda is not None and not ok["cuda"]:
        # A broken CUDA toolchain should not cost users the CPU kernels.
        cuda_skipped = "nvcc failed:\n" + "\n".join(logs["cuda"])
        relog = []
        if not _compile_host(plan, src / "carafe_kernels.cc", objects["kernels"], False, relog):
            raise BuildError("\n".join(relog))

    library = workdir / LIBRARY_NAME
    inputs = [str(objects["ops"]), str(objects["kernels"])]
    link_args = []
    if with_cuda:
        inputs.append(str(objects["cuda"]))
        link_args = list(plan.cuda.runtime_link_args)
    link_log = []
    command = [str(plan.cxx), "-shared", *inputs, "-o", str(library), *link_args,
               *plan.tf_link_flags]
    if not _run(command, link_log):
        raise BuildError("\n".join(link_log))
    return library, with_cuda, cuda_skipped


class _FolderLock:
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


def read_report(folder):
    try:
        fields = json.loads((folder / REPORT_NAME).read_text())
        report = BuildReport(**fields)
    except (OSError, ValueError, TypeError):
        return None
    return report if Path(report.library).is_file() else None


def ensure_built(force=False):
    """Returns the BuildReport of the library for this TensorFlow, building it if needed.

    Raises BuildError when it cannot be built. A failure is remembered in the
    cache so that later processes do not retry a slow failing compile; pass
    `force=True` (as `python -m keras_carafe build` does) to try again.
    """
    plan = make_plan()
    folder = plan.folder()
    with _FolderLock(folder):
        if not force:
            report = read_report(folder)
            if report is not None:
                return report
            failure = folder / FAILURE_NAME
            if failure.is_file():
                raise BuildError(
                    f"an earlier build failed (log: {failure}); run "
                    f"`python -m keras_carafe build` to retry.\n{failure.read_text()[-4000:]}"
                )
        folder.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".build-") as tmp:
            try:
                built, with_cuda, cuda_skipped = _build_into(plan, Path(tmp))
            except BuildError as err:
                (folder / FAILURE_NAME).write_text(str(err))
                raise
            final = folder / LIBRARY_NAME
            # A fresh inode per build: processes that mapped the old file keep it.
            staged = folder / f".{LIBRARY_NAME}.{os.getpid()}"
            shutil.copyfile(built, staged)
            os.replace(staged, final)
        report = BuildReport(
            library=str(final),
            tensorflow=plan.tf_version,
            compiler=toolchain.compiler_version(plan.cxx),
            nvcc=plan.cuda.version if with_cuda else "",
            cuda_architectures=plan.cuda.architecture_names() if with_cuda else [],
            cuda_skipped="" if with_cuda else cuda_skipped,
            seconds=round(time.monotonic() - start, 1),
        )
        staged_report = folder / f".{REPORT_NAME}.{os.getpid()}"
        staged_report.write_text(json.dumps(dataclasses.asdict(report), indent=2))
        os.replace(staged_report, folder / REPORT_NAME)
        (folder / FAILURE_NAME).unlink(missing_ok=True)
        return report

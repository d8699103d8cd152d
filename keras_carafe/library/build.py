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
# A remembered failure stops retries for this long; the cache folder is keyed
# like the build, so new TensorFlow, compilers or sources retry at once.
FAILURE_RETRY_SECONDS = 3600

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
    # How the CUDA toolkit was chosen: the choice, why, and every candidate.
    cuda_choice: list = dataclasses.field(default_factory=list)

    def describe(self):
        if self.cuda_architectures:
            kinds = f"CPU + CUDA kernels for {', '.join(self.cuda_architectures)} ({self.nvcc})"
        else:
            kinds = f"CPU kernels only (CUDA skipped: {self.cuda_skipped})"
        lines = [
            f"built {kinds}",
            f"  library:    {self.library}",
            f"  TensorFlow: {self.tensorflow}; C++ compiler: {self.compiler}",
            f"  build time: {self.seconds:.1f} s",
        ]
        return "\n".join(lines + ["  " + line for line in self.cuda_choice])


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
    # Extra host-compiler flags of the glue when it registers the CUDA kernels.
    cuda_glue_flags: tuple = ()
    cuda_choice: tuple = dataclasses.field(default=(), compare=False)

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
            self.cuda and (self.cuda.version, self.cuda.architectures, self.cuda.include_dirs,
                           self.cuda.runtime_link_args, self.cuda_glue_flags),
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
    choice = toolchain.find_cuda_toolkit()
    tf_version, compile_flags, link_flags = toolchain.tensorflow_flags()
    tf_include = next((flag[2:] for flag in compile_flags if flag.startswith("-I")), None)
    return BuildPlan(
        cxx=cxx,
        vector_flags=toolchain.cpu_vector_flags(),
        cuda=choice.toolkit,
        cuda_skipped=choice.skipped,
        tf_version=tf_version,
        tf_compile_flags=compile_flags,
        tf_link_flags=link_flags,
        sources=tuple(toolchain.source_files()),
        cuda_glue_flags=(toolchain.cuda_glue_flags(choice.toolkit, tf_include)
                         if choice.toolkit is not None else ()),
        cuda_choice=choice.explanation,
    )


def _run(command, log):
    log.append("$ " + shlex.join(command))
    result = subprocess.run(command, capture_output=True, text=True)
    output = (result.stdout + result.stderr).strip()
    if output:
        log.append(output)
    return result.returncode == 0


def _compile_host(plan, source, obj, extra_flags, log):
    command = [str(plan.cxx), *plan.tf_compile_flags, *HOST_FLAGS, *plan.vector_flags,
               *extra_flags, "-c", str(source), "-o", str(obj)]
    return _run(command, log)


def _compile_cuda(plan, source, obj, log):
    cuda = plan.cuda
    archs = ",".join(cuda.architecture_names())
    # No TensorFlow flags here: the kernels are framework-free, and nvcc
    # rejects a second -std.
    command = [str(cuda.nvcc), *NVCC_FLAGS, *cuda.thread_args(), "-ccbin", str(plan.cxx),
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
                               (), logs["ops"]),
            "kernels": pool.submit(_compile_host, plan, src / "carafe_kernels.cc",
                                   objects["kernels"], plan.cuda_glue_flags, logs["kernels"]),
        }
        if plan.cuda is not None:
            jobs["cuda"] = pool.submit(_compile_cuda, plan, src / "carafe_cuda.cu",
                                       objects["cuda"], logs["cuda"])
        ok = {name: job.result() for name, job in jobs.items()}
    if not ok["ops"]:
        raise BuildError("\n".join(logs["ops"]))

    cuda_skipped = plan.cuda_skipped
    with_cuda = plan.cuda is not None and ok["cuda"] and ok["kernels"]
    if plan.cuda is not None and not with_cuda:
        # A broken CUDA toolchain, or TensorFlow headers that the CUDA-enabled
        # glue does not compile against, should not cost users the CPU kernels.
        if not ok["cuda"]:
            cuda_skipped = "nvcc failed:\n" + "\n".join(logs["cuda"])
        else:
            cuda_skipped = ("the TensorFlow glue with CUDA enabled (carafe_kernels.cc) failed "
                            "to compile:\n" + "\n".join(logs["kernels"]))
        relog = []
        if not _compile_host(plan, src / "carafe_kernels.cc", objects["kernels"], (), relog):
            raise BuildError("\n".join(relog))
    elif not ok["kernels"]:
        raise BuildError("\n".join(logs["kernels"]))

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


def _age_seconds(path):
    try:
        return max(0.0, time.time() - path.stat().st_mtime)
    except OSError:
        return None


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
    build's cache folder so that later processes do not retry a slow failing
    compile; it is retried once FAILURE_RETRY_SECONDS have passed, at once when
    TensorFlow, the compilers or the sources change (a new folder), or with
    `force=True` (as `python -m keras_carafe build` does).
    """
    plan = make_plan()
    folder = plan.folder()
    with _FolderLock(folder):
        if not force:
            report = read_report(folder)
            if report is not None:
                return report
            failure = folder / FAILURE_NAME
            age = _age_seconds(failure)
            if age is not None and age < FAILURE_RETRY_SECONDS:
                raise BuildError(
                    f"an earlier build failed {age / 60:.0f} min ago (log: {failure}); it is "
                    f"retried {FAILURE_RETRY_SECONDS // 60} min after the failure, or now with "
                    f"`python -m keras_carafe build`.\n{failure.read_text()[-4000:]}"
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
            cuda_choice=list(plan.cuda_choice),
        )
        staged_report = folder / f".{REPORT_NAME}.{os.getpid()}"
        staged_report.write_text(json.dumps(dataclasses.asdict(report), indent=2))
        os.replace(staged_report, folder / REPORT_NAME)
        (folder / FAILURE_NAME).unlink(missing_ok=True)
        return report

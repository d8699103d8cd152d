"""Compiles the kernels and each framework's glue into a per-user cache, and finds finished
builds without a compiler.

The cache holds two kinds of folders:

- kernel objects, free of any framework: `kernels-cpu-<hash>/` (the CPU kernels, for one
  host compiler and its flags) and `kernels-cuda-<hash>/` (the CUDA kernels, for one nvcc
  and its GPU architectures). Every framework's library links the same objects, so a
  machine compiles the CUDA kernels once whatever frameworks it has.
- one library per framework: `<name>-<version>-<hash>/libkeras_carafe_<name>.so` (the glue
  of `csrc/<name>/` linked with the kernel objects) and its `build.json` report. The hash
  covers what is known without running a compiler: the framework's version and flags, the
  sources, the CPU's vector instructions and the CUDA settings. So a finished build is
  found, and used, on a machine with no compiler or a read-only cache, and also in the
  folders of `KERAS_CARAFE_PREBUILT` (a build shipped in an image). Which compilers built it
  is in its report; `python -m keras_carafe build` rebuilds with the current ones.

A library is used only when its size and SHA-256 match its report (a truncated or
overwritten file is rebuilt, never loaded). Every folder is built under an exclusive file
lock, waited for at most KERAS_CARAFE_LOCK_TIMEOUT seconds, and published with atomic
renames, so concurrent first uses never see a partial file; compilers run under a watchdog
that ends them if the building process dies, and the folders an interrupted build left
are removed by the next one. A failed build is remembered in its folder so that later
processes do not retry a slow failing compile.
"""

import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from keras_carafe.library import frameworks, toolchain

# Build progress goes to the "keras_carafe" logger, shown on stderr by default;
# `logging.getLogger("keras_carafe").setLevel(logging.WARNING)` silences it.
log = logging.getLogger("keras_carafe")
if not log.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)
    log.propagate = False

REPORT_NAME = "build.json"
FAILURE_NAME = "build-failed.log"
CACHE_ENV = "KERAS_CARAFE_CACHE_DIR"
PREBUILT_ENV = "KERAS_CARAFE_PREBUILT"
LOCK_TIMEOUT_ENV = "KERAS_CARAFE_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 300.0
# A remembered failure stops retries for this long, unless the compilers change.
FAILURE_RETRY_SECONDS = 3600

HOST_FLAGS = ("-O3", "-fPIC", "-DNDEBUG", "-Wno-deprecated-declarations")
# The kernel objects export nothing but the CUDA probe (which says so itself):
# two libraries of the package in one process never bind each other's kernels.
KERNEL_FLAGS = (frameworks.CXX_STANDARD, "-fvisibility=hidden")
NVCC_FLAGS = ("-O3", "-Xcompiler", "-fPIC", "-Xcompiler", "-fvisibility=hidden", "-DNDEBUG")

CPU_OBJECTS = ("carafe_cpu.o", "carafe_no_cuda.o")
CUDA_OBJECT = "carafe_cuda.o"
# Build times (s) on 2 cores, for the first-use message where this machine has none yet.
TYPICAL_SECONDS = {"kernels-cpu": 8, "kernels-cuda": 60, "tensorflow": 15, "jax": 6,
                   "torch": 25}
TIMES_NAME = "build-times.json"
TEMPORARY_PREFIX = ".build-"


class BuildError(RuntimeError):
    """A library could not be built; the message says why (with the compiler output)."""


class LockTimeout(BuildError):
    """Another process held the build lock for longer than the lock timeout."""


@dataclasses.dataclass
class BuildReport:
    library: str  # its path where the report was read
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
    library_size: int = 0
    library_sha256: str = ""

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


def prebuilt_roots():
    """The read-only folders of KERAS_CARAFE_PREBUILT (os.pathsep-separated)."""
    value = os.environ.get(PREBUILT_ENV, "")
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p.strip()]


def lock_timeout():
    value = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not value:
        return DEFAULT_LOCK_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        raise BuildError(f"{LOCK_TIMEOUT_ENV} must be a number of seconds >= 0, got {value!r}")
    return seconds


def file_digest(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _digest(parts, sources):
    digest = hashlib.sha256()
    for part in parts:
        digest.update(repr(part).encode())
    for source in sources:
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def _sources(name):
    csrc = toolchain.csrc_dir()
    return toolchain.source_files(csrc / "kernels"), toolchain.source_files(csrc / name)


def library_folder_name(framework, vector_flags=None, sources=None):
    """The folder name of `framework`'s library, from what is known without running any
    compiler: the framework, the flags, this CPU's vector instructions, the CUDA
    settings and the sources (the package's own unless given)."""
    if sources is None:
        kernel_sources, glue_sources = _sources(framework.name)
        sources = kernel_sources + glue_sources
    if vector_flags is None:
        vector_flags = toolchain.cpu_vector_flags()
    cuda = toolchain.cuda_wanted(framework.has_cuda)
    key = _digest((framework.name, framework.version, framework.compile_flags,
                   framework.link_flags, HOST_FLAGS, KERNEL_FLAGS, NVCC_FLAGS, vector_flags,
                   cuda, cuda and os.environ.get(toolchain.CUDA_ARCHS_ENV, "").strip()),
                  sources)
    return f"{framework.name}-{framework.version}-{key}"


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
        """The library's folder (keyed by `library_folder_name`, not by the toolchain)."""
        return cache_root() / library_folder_name(self.framework, self.vector_flags,
                                                  self.kernel_sources + self.glue_sources)


def make_plan(name):
    """The BuildPlan of framework `name` ("tensorflow", "jax", "torch") on this machine."""
    framework = frameworks.current(name)
    cxx = toolchain.host_compiler()
    if cxx is None:
        raise BuildError(
            "no C++ compiler found (set CXX or install g++); the compiled kernels cannot be "
            "built")
    choice = toolchain.find_cuda_toolkit(framework.cuda_version, framework.display_name,
                                         toolchain.cuda_wanted(framework.has_cuda))
    kernel_sources, glue_sources = _sources(name)
    return BuildPlan(
        framework=framework,
        cxx=cxx,
        vector_flags=toolchain.cpu_vector_flags(),
        cuda=choice.toolkit,
        cuda_skipped=choice.skipped,
        kernel_sources=kernel_sources,
        glue_sources=glue_sources,
        cuda_choice=choice.explanation,
    )


# --- running compilers ----------------------------------------------------------------

# Runs "$@" and ends its whole process group if the process that started it (pid $1)
# dies first: a build killed with SIGKILL leaves no compiler behind.
_WATCHDOG = ('parent=$1; shift; "$@" & child=$!; '
             'while kill -0 "$parent" 2>/dev/null && kill -0 "$child" 2>/dev/null; do '
             'sleep 0.2; done; '
             'kill -0 "$parent" 2>/dev/null || kill -TERM 0; wait "$child"')


def _run(command, log_lines):
    log_lines.append("$ " + shlex.join(command))
    result = subprocess.run(["sh", "-c", _WATCHDOG, "sh", str(os.getpid()), *command],
                            capture_output=True, text=True, start_new_session=True)
    output = (result.stdout + result.stderr).strip()
    if output:
        log_lines.append(output)
    return result.returncode == 0


# --- locks and temporary folders -----------------------------------------------------


class _FolderLock:
    """An exclusive lock on `folder` (a file beside it), held across processes, waited for
    at most `timeout` seconds; its file names the holder while it is held."""

    def __init__(self, folder, timeout=None):
        self.folder = folder
        self._path = folder.with_name(folder.name + ".lock")
        self._timeout = lock_timeout() if timeout is None else timeout

    def __enter__(self):
        try:
            self.folder.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self._path, "a+")
        except OSError as err:
            raise BuildError(f"the build cache cannot be written ({err}); set {CACHE_ENV} to "
                             f"a writable folder") from err
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() >= deadline:
                holder = self._holder()
                self._file.close()
                raise LockTimeout(
                    f"another process is building {self.folder.name} ({holder}); gave up "
                    f"after {self._timeout:.0f} s ({LOCK_TIMEOUT_ENV} sets the wait)")
            time.sleep(0.1)
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"{os.getpid()} {socket.gethostname()} {time.strftime('%H:%M:%S')}\n")
        self._file.flush()
        return self

    def _holder(self):
        try:
            with open(self._path) as f:
                pid, host, since = f.read().split()[:3]
        except (OSError, ValueError):
            return "holder unknown"
        return f"held by process {pid} on {host} since {since}"

    def __exit__(self, *exc):
        self._file.seek(0)
        self._file.truncate()
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_abandoned_folders(root):
    """Removes the temporary build folders of processes that died while building."""
    try:
        entries = list(root.iterdir())
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(TEMPORARY_PREFIX) or not entry.is_dir():
            continue
        pid = entry.name[len(TEMPORARY_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _temporary_folder(root):
    root.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(dir=root, prefix=f"{TEMPORARY_PREFIX}{os.getpid()}-")


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


# --- remembered failures ---------------------------------------------------------------


def _remember_failure(folder, text):
    try:
        (folder / FAILURE_NAME).write_text(text)
        _write_json(folder / "build-failed.json",
                    {"toolchain": toolchain.toolchain_identity()})
    except OSError:
        pass


def _remembered_failure(folder):
    """The log of a failure in `folder` younger than the retry period and made with the
    same compilers, or None."""
    failure = folder / FAILURE_NAME
    try:
        age = max(0.0, time.time() - failure.stat().st_mtime)
        text = failure.read_text()
        meta = json.loads((folder / "build-failed.json").read_text())
    except (OSError, ValueError):
        return None
    same_tools = json.loads(json.dumps(toolchain.toolchain_identity())) == meta.get("toolchain")
    if age >= FAILURE_RETRY_SECONDS or not same_tools:
        return None
    return (f"an earlier build failed {age / 60:.0f} min ago (log: {failure}); it is retried "
            f"{FAILURE_RETRY_SECONDS // 60} min after the failure, when the compilers change, "
            f"or now with `python -m keras_carafe build`.\n{text[-4000:]}")


# --- kernel objects ----------------------------------------------------------------------

# Kernel-object folders built by this process: a forced build rebuilds each once,
# not once per framework.
_built_here = set()
_built_here_lock = threading.Lock()


def _objects_ready(folder, names, force):
    """Whether `folder` holds `names`, each matching the digest its report recorded."""
    if force:
        with _built_here_lock:
            if folder not in _built_here:
                return False
    try:
        recorded = json.loads((folder / REPORT_NAME).read_text()).get("sha256", {})
        return all(recorded.get(name) == file_digest(folder / name) for name in names)
    except (OSError, ValueError, AttributeError):
        return False


def _publish_objects(folder, built, names, fields):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        _publish(built / name, folder / name)
    _write_json(folder / REPORT_NAME,
                {**fields, "sha256": {name: file_digest(folder / name) for name in names}})
    with _built_here_lock:
        _built_here.add(folder)


def _ensure_cpu_objects(plan, force):
    """Paths of the CPU kernel objects, compiling them if needed; raises BuildError."""
    folder = plan.cpu_folder()
    with _FolderLock(folder):
        if not _objects_ready(folder, CPU_OBJECTS, force):
            kernels = toolchain.csrc_dir() / "kernels"
            with _temporary_folder(folder.parent) as tmp:
                lines = []
                for source, obj in (("carafe_cpu.cc", CPU_OBJECTS[0]),
                                    ("carafe_no_cuda.cc", CPU_OBJECTS[1])):
                    command = [str(plan.cxx), *HOST_FLAGS, *KERNEL_FLAGS, *plan.vector_flags,
                               "-c", str(kernels / source), "-o", str(Path(tmp) / obj)]
                    if not _run(command, lines):
                        raise BuildError("\n".join(lines))
                _publish_objects(folder, Path(tmp), CPU_OBJECTS,
                                 {"compiler": toolchain.compiler_version(plan.cxx)})
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
        lines = []
        with _temporary_folder(folder.parent) as tmp:
            # No framework flags: the kernels are framework-free, and nvcc
            # rejects a second -std.
            command = [str(cuda.nvcc), *NVCC_FLAGS, *cuda.thread_args(), "-ccbin",
                       str(plan.cxx), f'-DKERAS_CARAFE_CUDA_ARCHS="{archs}"',
                       *(f"-I{d}" for d in cuda.include_dirs), *cuda.gencode_args(),
                       "-c", str(toolchain.csrc_dir() / "kernels" / "carafe_cuda.cu"),
                       "-o", str(Path(tmp) / CUDA_OBJECT)]
            if not _run(command, lines):
                _remember_failure(folder, "\n".join(lines))
                return None, "nvcc failed:\n" + "\n".join(lines)
            _publish_objects(folder, Path(tmp), (CUDA_OBJECT,),
                             {"nvcc": cuda.version, "architectures": cuda.architecture_names()})
        (folder / FAILURE_NAME).unlink(missing_ok=True)
        return folder / CUDA_OBJECT, ""


# --- one framework's library ----------------------------------------------------------


def _compile_glue(plan, workdir, with_cuda, lines):
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
        ok = _run(command, lines) and ok
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
    """The BuildReport of `folder`, or None unless its library matches the report's size and
    SHA-256 (a truncated, emptied, overwritten or missing library is never used)."""
    try:
        fields = json.loads((folder / REPORT_NAME).read_text())
        fields["library"] = str(folder / Path(fields["library"]).name)
        report = BuildReport(**fields)
        library = Path(report.library)
        if library.stat().st_size != report.library_size or not report.library_sha256:
            return None
        if file_digest(library) != report.library_sha256:
            return None
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return report


def find_built(name, framework=None):
    """The report of a whole, finished build of framework `name` for what is installed
    here, in the cache or in KERAS_CARAFE_PREBUILT's folders; None where there is none.
    Runs no compiler and writes nothing."""
    folder_name = library_folder_name(framework or frameworks.current(name))
    for root in (cache_root(), *prebuilt_roots()):
        report = read_report(root / folder_name)
        if report is not None:
            return report
    return None


def _recorded_seconds(name):
    try:
        return json.loads((cache_root() / TIMES_NAME).read_text()).get(name)
    except (OSError, ValueError, AttributeError):
        return None


def _record_seconds(name, seconds):
    path = cache_root() / TIMES_NAME
    try:
        times = json.loads(path.read_text())
    except (OSError, ValueError):
        times = {}
    times[name] = round(seconds, 1)
    try:
        _write_json(path, times)
    except OSError:
        pass


def _expected_seconds(plan):
    """About how long this build takes: this machine's last build of the framework, or
    the typical times of its parts that are not cached yet."""
    recorded = _recorded_seconds(plan.framework.name)
    if recorded is not None:
        return recorded
    parts = [TYPICAL_SECONDS[plan.framework.name]]
    if not (plan.cpu_folder() / REPORT_NAME).is_file():
        parts.append(TYPICAL_SECONDS["kernels-cpu"])
    if plan.cuda is not None and not (plan.cuda_folder() / REPORT_NAME).is_file():
        parts.append(TYPICAL_SECONDS["kernels-cuda"])
    return max(parts)


def ensure_built(name, force=False):
    """Returns the BuildReport of framework `name`'s library, building it first if needed.

    A whole, finished build for what is installed here (in the cache or in
    KERAS_CARAFE_PREBUILT's folders) is used as it is: that needs neither a compiler nor
    write access. Otherwise the library is compiled, which raises BuildError when it
    cannot be (no compiler, a read-only cache, a compiler error, another process holding
    the lock past the timeout). A failure is remembered in the build's folder so that
    later processes do not retry a slow failing compile; it is retried once
    FAILURE_RETRY_SECONDS have passed, at once when the compilers, the framework or the
    sources change, or with `force=True` (as `python -m keras_carafe build` does), which
    also rebuilds the kernel objects, once per process.
    """
    framework = frameworks.current(name)
    if not force:
        report = find_built(name, framework)
        if report is not None:
            return report
    plan = make_plan(name)
    folder = plan.folder()
    with _FolderLock(folder):
        if not force:
            # Another process may have finished it while this one waited.
            report = read_report(folder)
            if report is not None:
                return report
            remembered = _remembered_failure(folder)
            if remembered:
                raise BuildError(remembered)
        _remove_abandoned_folders(folder.parent)
        folder.mkdir(parents=True, exist_ok=True)
        kind = "CPU + CUDA" if plan.cuda is not None else "CPU"
        log.info("keras_carafe: building the compiled kernels for %s %s (%s), about %.0f s; "
                 "cached in %s", framework.display_name, framework.version, kind,
                 _expected_seconds(plan), folder)
        start = time.monotonic()
        with _temporary_folder(folder.parent) as tmp:
            try:
                built, with_cuda, cuda_skipped, kernel_objects = _build_into(
                    plan, Path(tmp), force)
            except BuildError as err:
                _remember_failure(folder, str(err))
                log.info("keras_carafe: the build for %s failed after %.0f s",
                         framework.display_name, time.monotonic() - start)
                raise
            final = folder / framework.library_name
            _publish(built, final)
        seconds = time.monotonic() - start
        report = BuildReport(
            library=str(final),
            framework=framework.name,
            framework_version=framework.version,
            compiler=toolchain.compiler_version(plan.cxx),
            nvcc=plan.cuda.version if with_cuda else "",
            cuda_architectures=plan.cuda.architecture_names() if with_cuda else [],
            cuda_skipped="" if with_cuda else cuda_skipped,
            seconds=round(seconds, 1),
            cuda_choice=list(plan.cuda_choice),
            kernel_objects=kernel_objects,
            library_size=final.stat().st_size,
            library_sha256=file_digest(final),
        )
        _write_json(folder / REPORT_NAME, dataclasses.asdict(report))
        for stale in (FAILURE_NAME, "build-failed.json"):
            (folder / stale).unlink(missing_ok=True)
        _record_seconds(framework.name, seconds)
        log.info("keras_carafe: built the %s kernels for %s in %.0f s", kind,
                 framework.display_name, seconds)
        return report

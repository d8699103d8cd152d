"""The build cache of the compiled op: where builds go, when they are reused or redone,
concurrent builds, and remembered failures."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tensorflow as tf

from keras_carafe.library import build, toolchain

REPO = Path(__file__).resolve().parent.parent


def subprocess_env(**extra):
    """The environment of a Python subprocess that imports keras_carafe from this tree."""
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return dict(os.environ, PYTHONPATH=path, TF_CPP_MIN_LOG_LEVEL="2", **extra)


@pytest.fixture
def tmp_cache(monkeypatch, tmp_path):
    """An empty cache root, and CPU-only plans (no nvcc runs)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(build.CACHE_ENV, str(cache))
    monkeypatch.setenv("KERAS_CARAFE_NO_CUDA", "1")
    return cache


@pytest.fixture
def failing_compiler(monkeypatch):
    """Every compiler or linker command fails; returns the list of commands run."""
    commands = []

    def run(command, log):
        commands.append(command)
        log.append("$ " + " ".join(command))
        log.append("error: simulated compiler failure")
        return False

    monkeypatch.setattr(build, "_run", run)
    return commands


# --- the default cache ---------------------------------------------------------------


def test_ensure_built_reports_an_existing_library_in_the_plan_folder_under_the_cache_root():
    report = build.ensure_built()
    library = Path(report.library)
    assert library.is_file()
    assert library.name == build.LIBRARY_NAME
    assert library.parent == build.make_plan().folder()
    assert library.resolve().is_relative_to(build.cache_root().resolve())
    assert report.tensorflow == tf.__version__


def test_a_cached_build_is_reused_without_compiling(monkeypatch):
    first = build.ensure_built()

    def no_compiling(command, log):
        raise AssertionError(f"compiled although a build is cached: {command}")

    monkeypatch.setattr(build, "_run", no_compiling)
    assert build.ensure_built() == first


# --- the cache folder ----------------------------------------------------------------


def test_cache_root_is_the_env_var_when_set(monkeypatch, tmp_path):
    monkeypatch.setenv(build.CACHE_ENV, str(tmp_path))
    assert build.cache_root() == tmp_path
    assert build.make_plan().folder().parent == tmp_path


def test_cache_root_defaults_to_keras_carafe_under_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.delenv(build.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert build.cache_root() == tmp_path / "keras_carafe"


def test_cache_folder_is_the_same_for_the_same_plan():
    assert build.make_plan().folder() == build.make_plan().folder()


def test_cache_folder_is_named_after_the_tensorflow_version():
    plan = build.make_plan()
    assert plan.folder().name.startswith(f"tf{tf.__version__}-")


def test_cache_folder_changes_with_the_tensorflow_version():
    plan = build.make_plan()
    upgraded = dataclasses.replace(plan, tf_version="2.99.0")
    assert upgraded.folder() != plan.folder()
    assert upgraded.folder().name.startswith("tf2.99.0-")


def test_cache_folder_changes_with_the_tensorflow_flags():
    plan = build.make_plan()
    other_abi = dataclasses.replace(
        plan, tf_compile_flags=plan.tf_compile_flags + ("-D_GLIBCXX_USE_CXX11_ABI=0",))
    assert other_abi.folder() != plan.folder()


def copy_sources(plan, folder):
    folder.mkdir()
    copies = []
    for source in plan.sources:
        copy = folder / source.name
        copy.write_bytes(source.read_bytes())
        copies.append(copy)
    return copies


def test_cache_folder_depends_on_source_contents_not_their_location(tmp_path):
    plan = build.make_plan()
    copies = copy_sources(plan, tmp_path / "copy")
    assert dataclasses.replace(plan, sources=tuple(copies)).folder() == plan.folder()


@pytest.mark.parametrize("edited", ["carafe_cpu.h", "carafe_kernels.cc", "carafe_cuda.cu"])
def test_cache_folder_changes_when_a_source_changes(tmp_path, edited):
    plan = build.make_plan()
    copies = copy_sources(plan, tmp_path / "copy")
    target = next(c for c in copies if c.name == edited)
    target.write_text(target.read_text() + "\n// edited\n")
    assert dataclasses.replace(plan, sources=tuple(copies)).folder() != plan.folder()


def test_cache_folder_changes_when_a_source_is_added(tmp_path):
    plan = build.make_plan()
    copies = copy_sources(plan, tmp_path / "copy")
    extra = tmp_path / "copy" / "carafe_extra.h"
    extra.write_text("// new header\n")
    assert dataclasses.replace(plan, sources=tuple(copies) + (extra,)).folder() != plan.folder()


# --- failures ----------------------------------------------------------------------------


def test_failed_build_raises_build_error_with_the_compiler_output(tmp_cache, failing_compiler):
    with pytest.raises(build.BuildError, match="simulated compiler failure"):
        build.ensure_built()
    assert failing_compiler, "the compiler was never run"


def test_failed_build_writes_the_failure_log_and_no_library(tmp_cache, failing_compiler):
    with pytest.raises(build.BuildError):
        build.ensure_built()
    folder = build.make_plan().folder()
    log = folder / build.FAILURE_NAME
    assert log.is_file()
    assert "simulated compiler failure" in log.read_text()
    assert not (folder / build.LIBRARY_NAME).exists()
    assert not (folder / build.REPORT_NAME).exists()


def test_failed_build_leaves_no_temporary_folders(tmp_cache, failing_compiler):
    with pytest.raises(build.BuildError):
        build.ensure_built()
    assert [p.name for p in tmp_cache.iterdir() if p.name.startswith(".build-")] == []


def test_failed_build_is_remembered_and_not_retried(tmp_cache, failing_compiler):
    with pytest.raises(build.BuildError):
        build.ensure_built()
    commands_run = len(failing_compiler)
    with pytest.raises(build.BuildError,
                       match=r"(?s)an earlier build failed.*simulated compiler failure"):
        build.ensure_built()
    assert len(failing_compiler) == commands_run


def test_forced_build_retries_after_a_failure(tmp_cache, failing_compiler):
    with pytest.raises(build.BuildError):
        build.ensure_built()
    commands_run = len(failing_compiler)
    with pytest.raises(build.BuildError, match="simulated compiler failure"):
        build.ensure_built(force=True)
    assert len(failing_compiler) > commands_run


# --- concurrent builds (slow: three real CPU-only compiles of about 8 s each) --------

BUILD_SCRIPT = textwrap.dedent("""
    import json
    from keras_carafe.library import build
    report = build.ensure_built(force=True)
    print(json.dumps({"library": report.library, "cuda": report.cuda_architectures}))
""")

LOAD_SCRIPT = textwrap.dedent("""
    import sys
    import tensorflow as tf
    module = tf.load_op_library(sys.argv[1])
    features = tf.ones((1, 2, 2, 1))
    kernels = tf.ones((1, 4, 4, 1))
    out = module.keras_carafe_reassemble(features, kernels, scale_factor=2, kernel_size=1,
                                         group_size=1)
    print(out.shape.as_list(), float(tf.reduce_sum(out)))
""")


@pytest.mark.slow
def test_concurrent_forced_builds_all_succeed_and_publish_one_loadable_library(tmp_path):
    cache = tmp_path / "cache"
    env = subprocess_env(**{build.CACHE_ENV: str(cache), "KERAS_CARAFE_NO_CUDA": "1"})
    builders = [subprocess.Popen([sys.executable, "-c", BUILD_SCRIPT], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(3)]
    results = [(*p.communicate(timeout=300), p.returncode) for p in builders]
    for stdout, stderr, returncode in results:
        assert returncode == 0, stderr[-3000:]
    reports = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _, _ in results]
    libraries = {r["library"] for r in reports}
    assert len(libraries) == 1
    assert all(r["cuda"] == [] for r in reports)  # KERAS_CARAFE_NO_CUDA was honoured

    library = Path(libraries.pop())
    folder = library.parent
    assert folder.parent == cache
    # Only the published files: no staged copies, no temporary build folders.
    assert sorted(p.name for p in folder.iterdir()) == sorted([build.LIBRARY_NAME,
                                                               build.REPORT_NAME])
    assert sorted(p.name for p in cache.iterdir()) == sorted([folder.name,
                                                              folder.name + ".lock"])

    loaded = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(library)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.strip().splitlines()[-1] == "[1, 4, 4, 1] 16.0"


def test_a_failure_older_than_the_retry_period_is_retried(tmp_cache, failing_compiler):
    with pytest.raises(build.BuildError):
        build.ensure_built()
    commands_run = len(failing_compiler)
    log = build.make_plan().folder() / build.FAILURE_NAME
    expired = log.stat().st_mtime - build.FAILURE_RETRY_SECONDS - 1
    os.utime(log, (expired, expired))
    with pytest.raises(build.BuildError, match="simulated compiler failure") as raised:
        build.ensure_built()
    assert "an earlier build failed" not in str(raised.value)
    assert len(failing_compiler) > commands_run


def test_a_failure_is_retried_at_once_for_another_tensorflow(tmp_cache, failing_compiler,
                                                             monkeypatch):
    with pytest.raises(build.BuildError):
        build.ensure_built()
    commands_run = len(failing_compiler)
    version, compile_flags, link_flags = toolchain.tensorflow_flags()
    monkeypatch.setattr(toolchain, "tensorflow_flags",
                        lambda: ("2.99.0", compile_flags, link_flags))
    with pytest.raises(build.BuildError, match="simulated compiler failure") as raised:
        build.ensure_built()
    assert "an earlier build failed" not in str(raised.value)
    assert len(failing_compiler) > commands_run


# --- CUDA parts that fail to compile (fake toolkit, simulated compilers) -----------------

FAKE_TOOLKIT = toolchain.CudaToolkit(
    nvcc=Path("/opt/fake-cuda/bin/nvcc"),
    version="Cuda compilation tools, release 12.8, V12.8.93",
    release=(12, 8),
    include_dirs=("/opt/fake-cuda/include",),
    runtime_link_args=("/opt/fake-cuda/lib64/libcudart_static.a", "-ldl"),
    architectures=(60, 70, 80, 90),
)


@pytest.fixture
def fake_cuda(monkeypatch, tmp_cache):
    """Plans that build with FAKE_TOOLKIT."""
    choice = toolchain.ToolkitChoice(FAKE_TOOLKIT, "", (
        "CUDA toolkit: /opt/fake-cuda/bin/nvcc (CUDA 12.8)", "  why: the only candidate"))
    monkeypatch.setattr(toolchain, "find_cuda_toolkit", lambda: choice)
    return FAKE_TOOLKIT


class SimulatedCompilers(list):
    """The commands run by compilers that write empty outputs, or fail where
    `failing(command)` says so."""

    def __init__(self):
        super().__init__()
        self.failing = lambda command: False

    def run(self, command, log):
        self.append(command)
        log.append("$ " + " ".join(command))
        if self.failing(command):
            log.append("error: simulated failure of this compile")
            return False
        Path(command[command.index("-o") + 1]).write_bytes(b"")
        return True


@pytest.fixture
def simulated_compilers(monkeypatch):
    compilers = SimulatedCompilers()
    monkeypatch.setattr(build, "_run", compilers.run)
    return compilers


def is_cuda_glue(command):
    return "-DKERAS_CARAFE_WITH_CUDA" in command and str(command[0]) != str(FAKE_TOOLKIT.nvcc)


def is_nvcc(command):
    return command[0] == str(FAKE_TOOLKIT.nvcc)


def glue_compiles(commands):
    return [c for c in commands if any(str(a).endswith("carafe_kernels.cc") for a in c)]


def link_command(commands):
    return next(c for c in commands if "-shared" in c)


def test_cuda_build_compiles_the_glue_with_cuda_flags_and_nvcc_per_architecture(
        fake_cuda, simulated_compilers):
    report = build.ensure_built()
    assert report.cuda_architectures == ["sm_60", "sm_70", "sm_80", "sm_90", "compute_60"]
    glue, = glue_compiles(simulated_compilers)
    for flag in ("-DKERAS_CARAFE_WITH_CUDA", "-DGOOGLE_CUDA=1", "-DEIGEN_USE_GPU",
                 "-I/opt/fake-cuda/include"):
        assert flag in glue
    nvcc = next(c for c in simulated_compilers if is_nvcc(c))
    assert nvcc.count("-gencode") == 5
    assert "arch=compute_60,code=compute_60" in nvcc
    assert not any(a.startswith(("-std", "--std")) for a in nvcc)
    link = link_command(simulated_compilers)
    assert any(Path(a).name == "cuda.o" for a in link)
    assert "/opt/fake-cuda/lib64/libcudart_static.a" in link


def test_report_says_which_toolkit_was_chosen_and_why(fake_cuda, simulated_compilers):
    text = build.ensure_built().describe()
    assert "CUDA toolkit: /opt/fake-cuda/bin/nvcc (CUDA 12.8)" in text
    assert "why: the only candidate" in text


def test_cuda_glue_that_fails_to_compile_gives_a_cpu_only_build_that_says_so(
        fake_cuda, simulated_compilers):
    simulated_compilers.failing = is_cuda_glue
    report = build.ensure_built()
    assert report.cuda_architectures == []
    assert report.cuda_skipped.startswith(
        "the TensorFlow glue with CUDA enabled (carafe_kernels.cc) failed to compile")
    assert "simulated failure of this compile" in report.cuda_skipped
    assert "CPU kernels only (CUDA skipped: the TensorFlow glue" in report.describe()
    first, second = glue_compiles(simulated_compilers)
    assert "-DKERAS_CARAFE_WITH_CUDA" in first
    assert not any(a.startswith(("-DKERAS_CARAFE_WITH_CUDA", "-DGOOGLE_CUDA", "-DEIGEN_USE_GPU"))
                   for a in second)
    link = link_command(simulated_compilers)
    assert not any(Path(a).name == "cuda.o" for a in link)
    assert "/opt/fake-cuda/lib64/libcudart_static.a" not in link


def test_nvcc_that_fails_gives_a_cpu_only_build_that_says_so(fake_cuda, simulated_compilers):
    simulated_compilers.failing = is_nvcc
    report = build.ensure_built()
    assert report.cuda_architectures == []
    assert report.cuda_skipped.startswith("nvcc failed:")
    assert "-DKERAS_CARAFE_WITH_CUDA" not in glue_compiles(simulated_compilers)[-1]


def test_glue_that_fails_with_and_without_cuda_is_a_build_error(fake_cuda, simulated_compilers):
    simulated_compilers.failing = lambda c: bool(glue_compiles([c]))
    with pytest.raises(build.BuildError, match="simulated failure of this compile"):
        build.ensure_built()
    assert len(glue_compiles(simulated_compilers)) == 2


def test_cache_folder_changes_with_the_cuda_architectures_and_glue_flags(fake_cuda):
    plan = build.make_plan()
    fewer = dataclasses.replace(
        plan, cuda=dataclasses.replace(FAKE_TOOLKIT, architectures=(80, 90)))
    other_glue = dataclasses.replace(plan, cuda_glue_flags=plan.cuda_glue_flags + ("-DX",))
    assert len({plan.folder(), fewer.folder(), other_glue.folder()}) == 3

"""The build cache of the compiled kernels: where builds go, what they are keyed by,
when they are reused or redone, concurrent builds, and remembered failures; for every
installed framework."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from keras_carafe import library
from keras_carafe.library import build, frameworks, toolchain

REPO = Path(__file__).resolve().parent.parent
FRAMEWORKS = library.installed_frameworks()

pytestmark = pytest.mark.skipif(not FRAMEWORKS, reason="no framework with a glue is installed")


@pytest.fixture(params=FRAMEWORKS)
def name(request):
    return request.param


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


def with_version(plan, version):
    return dataclasses.replace(plan, framework=dataclasses.replace(plan.framework,
                                                                   version=version))


# --- the default cache ---------------------------------------------------------------


def test_ensure_built_reports_an_existing_library_in_the_plan_folder_under_the_cache_root(name):
    report = build.ensure_built(name)
    plan = build.make_plan(name)
    built = Path(report.library)
    assert built.is_file()
    assert built.name == f"libkeras_carafe_{name}.so"
    assert built.parent == plan.folder()
    assert built.resolve().is_relative_to(build.cache_root().resolve())
    assert (report.framework, report.framework_version) == (name, plan.framework.version)


def test_a_cached_build_is_reused_without_compiling(monkeypatch, name):
    first = build.ensure_built(name)

    def no_compiling(command, log):
        raise AssertionError(f"compiled although a build is cached: {command}")

    monkeypatch.setattr(build, "_run", no_compiling)
    assert build.ensure_built(name) == first


def test_the_report_names_the_kernel_objects_it_links(name):
    report = build.ensure_built(name)
    plan = build.make_plan(name)
    assert Path(report.kernel_objects[0]) == plan.cpu_folder() / "carafe_cpu.o"
    second = Path(report.kernel_objects[1])
    if report.cuda_architectures:
        assert second == plan.cuda_folder() / "carafe_cuda.o"
    else:
        assert second == plan.cpu_folder() / "carafe_no_cuda.o"
    assert all(Path(o).is_file() for o in report.kernel_objects)


# --- the cache folders ---------------------------------------------------------------


def test_cache_root_is_the_env_var_when_set(monkeypatch, tmp_path, name):
    monkeypatch.setenv(build.CACHE_ENV, str(tmp_path))
    assert build.cache_root() == tmp_path
    assert build.make_plan(name).folder().parent == tmp_path


def test_cache_root_defaults_to_keras_carafe_under_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.delenv(build.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert build.cache_root() == tmp_path / "keras_carafe"


def test_cache_folder_is_the_same_for_the_same_plan(name):
    assert build.make_plan(name).folder() == build.make_plan(name).folder()


def test_cache_folder_is_named_after_the_framework_and_its_version(name):
    plan = build.make_plan(name)
    assert plan.folder().name.startswith(f"{name}-{plan.framework.version}-")


def test_cache_folder_changes_with_the_framework_version(name):
    plan = build.make_plan(name)
    upgraded = with_version(plan, "99.0.0")
    assert upgraded.folder() != plan.folder()
    assert upgraded.folder().name.startswith(f"{name}-99.0.0-")


def test_cache_folder_changes_with_the_framework_flags(name):
    plan = build.make_plan(name)
    other_abi = dataclasses.replace(plan, framework=dataclasses.replace(
        plan.framework, compile_flags=plan.framework.compile_flags + ("-DOTHER_ABI",)))
    assert other_abi.folder() != plan.folder()


def test_kernel_objects_do_not_depend_on_the_framework_or_its_version(name):
    plan = build.make_plan(name)
    upgraded = with_version(plan, "99.0.0")
    assert upgraded.cpu_folder() == plan.cpu_folder()
    assert upgraded.cuda_key() == plan.cuda_key()


def test_every_framework_links_the_same_kernel_objects():
    plans = [build.make_plan(n) for n in FRAMEWORKS]
    assert len({p.cpu_folder() for p in plans}) == 1
    assert len({p.cuda_key() for p in plans if p.cuda is not None}) <= 1
    assert len({p.folder() for p in plans}) == len(plans)


def copied(sources, folder):
    folder.mkdir(exist_ok=True)
    copies = []
    for source in sources:
        copy = folder / source.name
        copy.write_bytes(source.read_bytes())
        copies.append(copy)
    return tuple(copies)


def test_cache_folders_depend_on_source_contents_not_their_location(tmp_path, name):
    plan = build.make_plan(name)
    moved = dataclasses.replace(plan, kernel_sources=copied(plan.kernel_sources, tmp_path / "k"),
                                glue_sources=copied(plan.glue_sources, tmp_path / "g"))
    assert (moved.folder(), moved.cpu_folder()) == (plan.folder(), plan.cpu_folder())


@pytest.mark.parametrize("edited", ["carafe_cpu.cc", "carafe_shapes.h", "carafe_cuda.cu"])
def test_every_folder_changes_when_a_kernel_source_changes(tmp_path, name, edited):
    plan = build.make_plan(name)
    copies = copied(plan.kernel_sources, tmp_path / "k")
    target = next(c for c in copies if c.name == edited)
    target.write_text(target.read_text() + "\n// edited\n")
    edited_plan = dataclasses.replace(plan, kernel_sources=copies)
    assert edited_plan.cpu_folder() != plan.cpu_folder()
    assert edited_plan.folder() != plan.folder()
    if plan.cuda is not None:
        assert edited_plan.cuda_key() != plan.cuda_key()


def test_only_the_framework_folder_changes_when_a_glue_source_changes(tmp_path, name):
    plan = build.make_plan(name)
    copies = copied(plan.glue_sources, tmp_path / "g")
    copies[0].write_text(copies[0].read_text() + "\n// edited\n")
    edited_plan = dataclasses.replace(plan, glue_sources=copies)
    assert edited_plan.folder() != plan.folder()
    assert edited_plan.cpu_folder() == plan.cpu_folder()
    assert edited_plan.cuda_key() == plan.cuda_key()


def test_cache_folder_changes_when_a_glue_source_is_added(tmp_path, name):
    plan = build.make_plan(name)
    copies = copied(plan.glue_sources, tmp_path / "g")
    extra = tmp_path / "g" / "carafe_extra.h"
    extra.write_text("// new header\n")
    assert dataclasses.replace(plan, glue_sources=copies + (extra,)).folder() != plan.folder()


# --- failures ----------------------------------------------------------------------------


def test_failed_build_raises_build_error_with_the_compiler_output(tmp_cache, failing_compiler,
                                                                  name):
    with pytest.raises(build.BuildError, match="simulated compiler failure"):
        build.ensure_built(name)
    assert failing_compiler, "the compiler was never run"


def test_failed_build_writes_the_failure_log_and_no_library(tmp_cache, failing_compiler, name):
    with pytest.raises(build.BuildError):
        build.ensure_built(name)
    plan = build.make_plan(name)
    folder = plan.folder()
    log = folder / build.FAILURE_NAME
    assert log.is_file()
    assert "simulated compiler failure" in log.read_text()
    assert not (folder / plan.framework.library_name).exists()
    assert not (folder / build.REPORT_NAME).exists()


def test_failed_build_leaves_no_temporary_folders(tmp_cache, failing_compiler, name):
    with pytest.raises(build.BuildError):
        build.ensure_built(name)
    assert [p.name for p in tmp_cache.iterdir() if p.name.startswith(".build-")] == []


def test_failed_build_is_remembered_and_not_retried(tmp_cache, failing_compiler, name):
    with pytest.raises(build.BuildError):
        build.ensure_built(name)
    commands_run = len(failing_compiler)
    with pytest.raises(build.BuildError,
                       match=r"(?s)an earlier build failed.*simulated compiler failure"):
        build.ensure_built(name)
    assert len(failing_compiler) == commands_run


def test_forced_build_retries_after_a_failure(tmp_cache, failing_compiler, name):
    with pytest.raises(build.BuildError):
        build.ensure_built(name)
    commands_run = len(failing_compiler)
    with pytest.raises(build.BuildError, match="simulated compiler failure"):
        build.ensure_built(name, force=True)
    assert len(failing_compiler) > commands_run


def test_a_failure_older_than_the_retry_period_is_retried(tmp_cache, failing_compiler, name):
    with pytest.raises(build.BuildError):
        build.ensure_built(name)
    commands_run = len(failing_compiler)
    log = build.make_plan(name).folder() / build.FAILURE_NAME
    expired = log.stat().st_mtime - build.FAILURE_RETRY_SECONDS - 1
    os.utime(log, (expired, expired))
    with pytest.raises(build.BuildError, match="simulated compiler failure") as raised:
        build.ensure_built(name)
    assert "an earlier build failed" not in str(raised.value)
    assert len(failing_compiler) > commands_run


def test_a_failure_is_retried_at_once_for_another_framework_version(tmp_cache, failing_compiler,
                                                                    monkeypatch, name):
    with pytest.raises(build.BuildError):
        build.ensure_built(name)
    commands_run = len(failing_compiler)
    installed = frameworks.current(name)
    monkeypatch.setattr(frameworks, "current",
                        lambda n: dataclasses.replace(installed, version="99.0.0"))
    with pytest.raises(build.BuildError, match="simulated compiler failure") as raised:
        build.ensure_built(name)
    assert "an earlier build failed" not in str(raised.value)
    assert len(failing_compiler) > commands_run


# --- concurrent builds (slow: real CPU-only compiles) ------------------------------------

BUILD_SCRIPT = textwrap.dedent("""
    import json, sys
    from keras_carafe.library import build
    report = build.ensure_built(sys.argv[1], force=True)
    print(json.dumps({"library": report.library, "cuda": report.cuda_architectures}))
""")

LOAD_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import keras
    from keras_carafe.library import load_compiled
    from keras_carafe.ops import carafe
    assert load_compiled().path == sys.argv[1], (load_compiled().path, sys.argv[1])
    out = carafe(np.ones((1, 2, 2, 1), "float32"), np.ones((1, 4, 4, 1), "float32"),
                 scale_factor=2, kernel_size=1, group_size=1, implementation="op")
    print(list(out.shape), float(keras.ops.sum(out)))
""")


@pytest.mark.slow
def test_concurrent_forced_builds_all_succeed_and_publish_one_loadable_library(tmp_path):
    name = FRAMEWORKS[0]
    cache = tmp_path / "cache"
    env = subprocess_env(**{build.CACHE_ENV: str(cache), "KERAS_CARAFE_NO_CUDA": "1"})
    builders = [subprocess.Popen([sys.executable, "-c", BUILD_SCRIPT, name], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(3)]
    results = [(*p.communicate(timeout=600), p.returncode) for p in builders]
    for stdout, stderr, returncode in results:
        assert returncode == 0, stderr[-3000:]
    reports = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _, _ in results]
    libraries = {r["library"] for r in reports}
    assert len(libraries) == 1
    assert all(r["cuda"] == [] for r in reports)  # KERAS_CARAFE_NO_CUDA was honoured

    built = Path(libraries.pop())
    folder = built.parent
    assert folder.parent == cache
    # Only the published files: no staged copies, no temporary build folders.
    assert sorted(p.name for p in folder.iterdir()) == sorted([built.name, build.REPORT_NAME])
    kernels = next(p for p in cache.iterdir() if p.name.startswith("kernels-cpu-")
                   and p.is_dir())
    assert sorted(p.name for p in kernels.iterdir()) == sorted(
        [*build.CPU_OBJECTS, build.REPORT_NAME])
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [folder.name, folder.name + ".lock", kernels.name, kernels.name + ".lock",
         build.TIMES_NAME])

    loaded = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(built)],
                            env=dict(env, KERAS_BACKEND=name), capture_output=True, text=True,
                            timeout=600)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.strip().splitlines()[-1] == "[1, 4, 4, 1] 16.0"


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
    """Plans that build with FAKE_TOOLKIT (CUDA asked for, as on a CUDA framework)."""
    monkeypatch.delenv("KERAS_CARAFE_NO_CUDA")
    monkeypatch.setenv(toolchain.CUDA_ENV, "1")
    choice = toolchain.ToolkitChoice(FAKE_TOOLKIT, "", (
        "CUDA toolkit: /opt/fake-cuda/bin/nvcc (CUDA 12.8)", "  why: the only candidate"))
    monkeypatch.setattr(toolchain, "find_cuda_toolkit", lambda *args: choice)
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


def is_nvcc(command):
    return command[0] == str(FAKE_TOOLKIT.nvcc)


def is_cuda_glue(command):
    return "-DKERAS_CARAFE_WITH_CUDA" in command and not is_nvcc(command)


def glue_compiles(commands, name):
    glue = toolchain.csrc_dir() / name
    return [c for c in commands if any(str(a).startswith(str(glue)) for a in c)]


def link_command(commands):
    return next(c for c in commands if "-shared" in c)


def test_cuda_build_compiles_the_glue_with_cuda_flags_and_nvcc_per_architecture(
        fake_cuda, simulated_compilers, name):
    report = build.ensure_built(name)
    assert report.cuda_architectures == ["sm_60", "sm_70", "sm_80", "sm_90", "compute_60"]
    plan = build.make_plan(name)
    glue = glue_compiles(simulated_compilers, name)
    assert len(glue) == len([s for s in plan.glue_sources if s.suffix == ".cc"])
    for command in glue:
        for flag in plan.cuda_glue_flags:
            assert flag in command
    nvcc, = [c for c in simulated_compilers if is_nvcc(c)]
    assert nvcc.count("-gencode") == 5
    assert "arch=compute_60,code=compute_60" in nvcc
    assert not any(a.startswith(("-std", "--std")) for a in nvcc)
    link = link_command(simulated_compilers)
    assert any(Path(a).name == "carafe_cuda.o" for a in link)
    assert not any(Path(a).name == "carafe_no_cuda.o" for a in link)
    assert "/opt/fake-cuda/lib64/libcudart_static.a" in link


def test_report_says_which_toolkit_was_chosen_and_why(fake_cuda, simulated_compilers, name):
    text = build.ensure_built(name).describe()
    assert "CUDA toolkit: /opt/fake-cuda/bin/nvcc (CUDA 12.8)" in text
    assert "why: the only candidate" in text


def test_the_cuda_kernels_are_compiled_once_for_every_framework(fake_cuda, simulated_compilers):
    for name in FRAMEWORKS:
        build.ensure_built(name)
    assert len([c for c in simulated_compilers if is_nvcc(c)]) == 1
    kernels = toolchain.csrc_dir() / "kernels" / "carafe_cpu.cc"
    assert len([c for c in simulated_compilers if str(kernels) in c]) == 1


def test_cuda_glue_that_fails_to_compile_gives_a_cpu_only_build_that_says_so(
        fake_cuda, simulated_compilers, name):
    simulated_compilers.failing = is_cuda_glue
    report = build.ensure_built(name)
    display = frameworks.DISPLAY_NAMES[name]
    assert report.cuda_architectures == []
    assert report.cuda_skipped.startswith(
        f"the {display} glue with CUDA enabled failed to compile")
    assert "simulated failure of this compile" in report.cuda_skipped
    assert f"CPU kernels only (CUDA skipped: the {display} glue" in report.describe()
    glue = glue_compiles(simulated_compilers, name)
    half = len(glue) // 2
    assert all("-DKERAS_CARAFE_WITH_CUDA" in c for c in glue[:half])
    assert not any(a.startswith(("-DKERAS_CARAFE_WITH_CUDA", "-DGOOGLE_CUDA", "-DEIGEN_USE_GPU"))
                   for c in glue[half:] for a in c)
    link = link_command(simulated_compilers)
    assert not any(Path(a).name == "carafe_cuda.o" for a in link)
    assert any(Path(a).name == "carafe_no_cuda.o" for a in link)
    assert "/opt/fake-cuda/lib64/libcudart_static.a" not in link


def test_nvcc_that_fails_gives_a_cpu_only_build_that_says_so(fake_cuda, simulated_compilers,
                                                             name):
    simulated_compilers.failing = is_nvcc
    report = build.ensure_built(name)
    assert report.cuda_architectures == []
    assert report.cuda_skipped.startswith("nvcc failed:")
    assert "-DKERAS_CARAFE_WITH_CUDA" not in glue_compiles(simulated_compilers, name)[-1]


def test_a_failed_nvcc_is_remembered_for_every_framework(fake_cuda, simulated_compilers):
    simulated_compilers.failing = is_nvcc
    reports = [build.ensure_built(name) for name in FRAMEWORKS]
    assert len([c for c in simulated_compilers if is_nvcc(c)]) == 1
    assert all(r.cuda_skipped.startswith("nvcc failed:") for r in reports)


def test_glue_that_fails_with_and_without_cuda_is_a_build_error(fake_cuda, simulated_compilers,
                                                                name):
    simulated_compilers.failing = lambda c: bool(glue_compiles([c], name))
    with pytest.raises(build.BuildError, match="simulated failure of this compile"):
        build.ensure_built(name)
    plan = build.make_plan(name)
    sources = len([s for s in plan.glue_sources if s.suffix == ".cc"])
    assert len(glue_compiles(simulated_compilers, name)) == 2 * sources


def test_the_cuda_object_is_keyed_by_the_toolkit_and_the_library_folder_is_not(fake_cuda,
                                                                                 name):
    # The library's folder must be found without running nvcc (read-only images, no
    # compiler); which toolkit built it is in its report.
    plan = build.make_plan(name)
    fewer = dataclasses.replace(
        plan, cuda=dataclasses.replace(FAKE_TOOLKIT, architectures=(80, 90)))
    assert fewer.cuda_key() != plan.cuda_key()
    assert fewer.folder() == plan.folder()
    assert fewer.cpu_folder() == plan.cpu_folder()


def test_the_library_folder_changes_with_the_requested_cuda_architectures(monkeypatch, name):
    monkeypatch.setenv(toolchain.CUDA_ENV, "1")
    default = build.make_plan(name).folder()
    monkeypatch.setenv(toolchain.CUDA_ARCHS_ENV, "80")
    assert build.make_plan(name).folder() != default

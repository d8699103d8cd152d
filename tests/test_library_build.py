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

from keras_carafe.library import build

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

"""The compiled kernels never take the process down: damaged libraries, read-only caches, no
compiler, a held lock, a build killed midway, huge scales and memory limits. Each case runs
in a subprocess, which must exit normally, with the compiled kernels where they can be used
and a clear reason (and a working fallback) where they cannot.
"""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from keras_carafe import library
from keras_carafe.library import build

REPO = Path(__file__).resolve().parent.parent
FRAMEWORKS = library.installed_frameworks()
NAME = FRAMEWORKS[0] if FRAMEWORKS else None

pytestmark = pytest.mark.skipif(NAME is None, reason="no framework is installed")

# Builds (or finds) the library, runs one reassembly with "auto" and one with "op", and
# reports what happened; a warning or an error is a message, never a crash.
_USE = textwrap.dedent("""
    import json, warnings
    import numpy as np
    from keras_carafe import carafe
    from keras_carafe.library import OpUnavailableError, load_compiled
    features, kernels = np.ones((1, 2, 2, 4), "float32"), np.ones((1, 4, 4, 9), "float32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        auto = float(np.asarray(carafe(features, kernels, 2, 3, 1))[0, 2, 2, 0])
    try:
        op = float(np.asarray(carafe(features, kernels, 2, 3, 1, implementation="op"))[0, 2, 2, 0])
        op_error, path = "", load_compiled().report.library
    except OpUnavailableError as err:
        op, op_error, path = None, str(err), ""
    print(json.dumps({"auto": auto, "op": op, "op_error": op_error, "library": path,
                      "warnings": [str(w.message) for w in caught
                                   if issubclass(w.category, RuntimeWarning)]}))
""")


def _env(cache, **extra):
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "KERAS_BACKEND": NAME, build.CACHE_ENV: str(cache),
            "KERAS_CARAFE_NO_CUDA": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": path,
            **extra}


def _use(cache, timeout=600, **extra):
    result = subprocess.run([sys.executable, "-c", _USE], capture_output=True, text=True,
                            env=_env(cache, **extra), timeout=timeout)
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


@pytest.fixture(scope="module")
def built_cache(tmp_path_factory):
    """A cache holding one finished CPU-only build, made by a subprocess."""
    cache = tmp_path_factory.mktemp("built") / "cache"
    report, _ = _use(cache)
    assert report["op"] == 4.0, report
    return cache


def _copy(cache, tmp_path):
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy, symlinks=True)
    return copy


def _library(cache):
    [path] = cache.glob(f"{NAME}-*/libkeras_carafe_{NAME}.so")
    return path


# --- damaged libraries ------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "zero-length", "overwritten", "missing"])
def test_a_damaged_library_is_rebuilt_and_never_loaded(built_cache, tmp_path, damage):
    cache = _copy(built_cache, tmp_path)
    path = _library(cache)
    if damage == "truncated":
        os.truncate(path, path.stat().st_size // 3)
    elif damage == "zero-length":
        os.truncate(path, 0)
    elif damage == "overwritten":
        data = bytearray(path.read_bytes())
        data[len(data) // 2:len(data) // 2 + 64] = bytes(64)
        path.write_bytes(bytes(data))
    else:
        path.unlink()
    report, stderr = _use(cache)
    assert report["op"] == 4.0 and report["auto"] == 4.0
    assert build.read_report(path.parent) is not None  # whole again
    assert "building the compiled kernels" in stderr


def test_a_damaged_library_in_a_read_only_cache_gives_the_fallback_with_one_warning(
        built_cache, tmp_path):
    cache = _copy(built_cache, tmp_path)
    os.truncate(_library(cache), 1000)
    report, _, copy = _read_only(cache)
    assert report["auto"] == 4.0 and report["op"] is None
    [warning] = report["warnings"]
    assert "cannot be written" in warning and str(copy) in warning
    assert "cannot be written" in report["op_error"]


# --- using a finished build: read-only, no compiler, prebuilt folders ---------------------


def _read_only(cache, **extra):
    """Runs _USE on a copy of `cache` that cannot be written: a read-only bind mount in a
    mount namespace of its own where this is root (whom permissions do not stop), else
    the folder made read-only. Returns (report, stderr, the copy's path)."""
    root = Path(tempfile.mkdtemp(prefix="keras-carafe-read-only-"))
    copy = root / "cache"
    shutil.copytree(cache, copy, symlinks=True)
    try:
        if os.geteuid() == 0:
            # Absolute paths: the case under test may empty PATH.
            tool = {name: shutil.which(name) for name in ("unshare", "mount", "sh")}
            mount = (f"{tool['mount']} --bind {copy} {copy} && "
                     f"{tool['mount']} -o remount,bind,ro {copy} && exec \"$0\" -c \"$1\"")
            result = subprocess.run(
                [tool["unshare"], "--mount", "--propagation", "private", tool["sh"], "-c",
                 mount, sys.executable, _USE], capture_output=True, text=True,
                env=_env(copy, **extra), timeout=600)
            assert result.returncode == 0, result.stderr[-3000:]
            return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr, copy
        for path in [copy, *copy.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
        return (*_use(copy, **extra), copy)
    finally:
        for path in [copy, *copy.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o700)
        shutil.rmtree(root, ignore_errors=True)


def test_a_finished_build_is_used_from_a_read_only_cache(built_cache):
    report, _, _ = _read_only(built_cache)
    assert report["op"] == 4.0 and report["warnings"] == []


def test_a_finished_build_is_used_without_a_compiler(built_cache, tmp_path):
    report, _ = _use(_copy(built_cache, tmp_path), PATH=str(tmp_path / "no-tools"), CXX="")
    assert report["op"] == 4.0 and report["warnings"] == []


def test_without_a_compiler_or_a_build_auto_warns_once_and_op_says_why(tmp_path):
    report, _ = _use(tmp_path / "empty", PATH=str(tmp_path / "no-tools"), CXX="")
    assert report["auto"] == 4.0 and report["op"] is None
    [warning] = report["warnings"]
    assert "no C++ compiler found" in warning
    assert "no C++ compiler found" in report["op_error"]


def test_a_prebuilt_folder_serves_an_image_with_an_empty_read_only_cache(built_cache,
                                                                          tmp_path):
    prebuilt = _copy(built_cache, tmp_path / "image")
    empty = tmp_path / "empty"
    empty.mkdir()
    report, _, _ = _read_only(empty, PATH=str(tmp_path / "no-tools"), CXX="",
                              **{build.PREBUILT_ENV: str(prebuilt)})
    assert report["op"] == 4.0 and report["warnings"] == []
    assert report["library"].startswith(str(prebuilt))


# --- locks -------------------------------------------------------------------------------

_HOLD = textwrap.dedent("""
    import sys, time
    from keras_carafe.library import build
    with build._FolderLock(build.make_plan(sys.argv[1]).folder()):
        print("held", flush=True)
        time.sleep(600)
""")


def test_a_held_lock_gives_the_fallback_after_the_timeout_and_op_names_the_holder(tmp_path):
    cache = tmp_path / "cache"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, NAME], env=_env(cache),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        report, _ = _use(cache, **{build.LOCK_TIMEOUT_ENV: "2"})
        assert time.monotonic() - start < 120
    finally:
        holder.kill()
        holder.wait()
    assert report["auto"] == 4.0 and report["op"] is None
    [warning] = report["warnings"]
    assert f"held by process {holder.pid}" in warning
    assert f"held by process {holder.pid}" in report["op_error"]
    assert "KERAS_CARAFE_LOCK_TIMEOUT" in report["op_error"]


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    cache = tmp_path / "cache"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, NAME], env=_env(cache),
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    report, _ = _use(cache, **{build.LOCK_TIMEOUT_ENV: "30"})
    assert report["op"] == 4.0 and report["warnings"] == []


# --- a build killed midway -----------------------------------------------------------------

_BUILD = textwrap.dedent("""
    import sys
    from keras_carafe.library import build
    build.ensure_built(sys.argv[1], force=True)
""")


def _processes_mentioning(text):
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_a_build_killed_midway_leaves_no_compiler_and_no_folder_behind(tmp_path):
    cache = tmp_path / "cache"
    builder = subprocess.Popen([sys.executable, "-c", _BUILD, NAME], env=_env(cache),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    # Wait until a compiler works in the build's temporary folder.
    while time.monotonic() < deadline and not any(
            pid != builder.pid for pid in _processes_mentioning(f"{cache}/.build-")):
        time.sleep(0.1)
    assert any(pid != builder.pid for pid in _processes_mentioning(f"{cache}/.build-"))
    builder.send_signal(signal.SIGKILL)
    builder.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _processes_mentioning(str(cache)):
        time.sleep(0.2)
    assert _processes_mentioning(str(cache)) == []
    assert list(cache.glob(f"{build.TEMPORARY_PREFIX}*"))  # what the killed build left
    report, _ = _use(cache)
    assert report["op"] == 4.0
    assert list(cache.glob(f"{build.TEMPORARY_PREFIX}*")) == []


# --- huge scales and memory limits ------------------------------------------------------------

_HUGE = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    from keras_carafe import carafe
    implementation, scale, channels, k = (sys.argv[1], *map(int, sys.argv[2:5]))
    features = np.ones((1, 1, 1, channels), "float32")
    kernels = np.full((1, scale, scale, k * k), 0.04, "float32")
    try:
        out = carafe(features, kernels, scale, k, 1, implementation=implementation)
        result = {"centre": float(np.asarray(out)[0, 0, 0, 0]), "error": ""}
    except Exception as err:
        result = {"centre": None, "error": f"{type(err).__name__}: {str(err)[:300]}"}
    result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))
""")


def _huge(built_cache, implementation, scale, channels, kernel_size, memory_limit=None):
    def limit():
        if memory_limit:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    result = subprocess.run([sys.executable, "-c", _HUGE, implementation, str(scale),
                             str(channels), str(kernel_size)], capture_output=True, text=True,
                            env=_env(built_cache), timeout=600, preexec_fn=limit)
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def _fallback_name():
    return "fallback" if NAME == "tensorflow" else "portable"


def test_a_huge_scale_takes_no_more_memory_than_the_fallback(built_cache):
    op = _huge(built_cache, "op", 2048, 1, 5)
    fallback = _huge(built_cache, _fallback_name(), 2048, 1, 5)
    # One tap of the 5 x 5 window lies inside the 1 x 1 image.
    assert op["error"] == "" and op["centre"] == pytest.approx(0.04)
    assert op["peak_mib"] <= fallback["peak_mib"], (op, fallback)


def test_a_huge_scale_runs_under_a_memory_limit(built_cache):
    op = _huge(built_cache, "op", 2048, 1, 5, memory_limit=4_500_000 * 1024)
    assert op["error"] == "" and op["centre"] == pytest.approx(0.04)


def test_an_output_beyond_the_memory_limit_is_an_error_not_an_abort(built_cache):
    # 4096 x 4096 x 64 floats (4 GiB) of output under a 4.5 GB address-space limit.
    op = _huge(built_cache, "op", 4096, 64, 1, memory_limit=4_500_000 * 1024)
    assert op["centre"] is None
    assert op["error"], op

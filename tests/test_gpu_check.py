"""The standalone GPU check (tools/gpu_check): its build, its C entry points and
its refusal to pass without a GPU. The kernels themselves run only on a GPU."""

import ctypes
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "tools" / "gpu_check" / "run.py"

needs_nvcc = pytest.mark.skipif(
    shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").is_file(),
    reason="nvcc is not installed; the GPU check cannot be compiled here")


def has_gpu():
    smi = shutil.which("nvidia-smi")
    return smi is not None and subprocess.run([smi, "-L"], capture_output=True).returncode == 0


def run_check(tmp_path, *args):
    return subprocess.run([sys.executable, str(RUN), "--out", str(tmp_path / "out"), *args],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The check compiled once (for sm_80, with a build folder kept for the tests)."""
    tmp = tmp_path_factory.mktemp("gpu_check")
    result = run_check(tmp, "--compile-only", "--arch", "80", "--build-dir", str(tmp / "build"))
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads((tmp / "out" / "summary.json").read_text())


@needs_nvcc
def test_compile_only_builds_the_library_and_the_driver(built):
    assert built["status"] == "compiled"
    for key in ("library", "tiny_grid_library", "driver"):
        assert Path(built["build"][key]).is_file(), key


@needs_nvcc
def test_probe_reports_the_build_and_the_missing_driver_or_devices(built):
    library = ctypes.CDLL(built["build"]["library"])
    library.keras_carafe_cuda_probe.restype = ctypes.c_char_p
    probe = json.loads(library.keras_carafe_cuda_probe().decode())
    assert probe["built"] is True
    assert probe["architectures"] == ["sm_80"]
    assert probe["runtime"] >= 11000
    if not has_gpu():
        assert probe["devices"] == []
        assert probe["driver_error"] or probe["device_error"]


@needs_nvcc
@pytest.mark.parametrize("sizes, message", [
    ((1, 4, 4, 8, 2, 2, 5, 1), "scale and stride cannot both exceed 1"),
    ((1, 4, 4, 8, 2, 1, 4, 1), "kernel_size must be odd"),
    ((1, 4, 4, 6, 2, 1, 5, 4), "groups must be >= 1 and divide channels"),
    ((1, -4, 4, 8, 2, 1, 5, 1), "sizes must be non-negative"),
    ((1, 2 ** 31, 1, 1, 1, 1, 1, 1), "exceeds 2^31 - 1"),
    ((1, 4, 4, 8, 0, 1, 5, 1), "scale and stride must be >= 1"),
])
def test_entry_points_reject_invalid_geometry_before_touching_memory(built, sizes, message):
    library = ctypes.CDLL(built["build"]["library"])
    for name in ("carafe_forward", "carafe_backward_features", "carafe_backward_kernels"):
        fn = getattr(library, name)
        fn.restype = ctypes.c_char_p
        error = fn(0, (ctypes.c_int64 * 8)(*sizes), None, None, None, None)
        assert error is not None and message in error.decode(), (name, error)


@needs_nvcc
def test_entry_points_reject_an_unknown_element_type(built):
    library = ctypes.CDLL(built["build"]["library"])
    library.carafe_forward.restype = ctypes.c_char_p
    error = library.carafe_forward(7, (ctypes.c_int64 * 8)(1, 1, 1, 1, 1, 1, 1, 1),
                                   None, None, None, None)
    assert b"kind must be 0 (float32)" in error


@pytest.mark.skipif(has_gpu(), reason="this machine has a GPU: the full check can pass here")
def test_full_run_without_a_gpu_fails_with_a_message(tmp_path):
    result = run_check(tmp_path)
    assert result.returncode == 1
    assert "no NVIDIA GPU found" in result.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "failed"


def _index_limit(kernel_size, factor):
    """The largest size the kernels accept: 2^31 - 1 - (kernel_size + factor + 8)."""
    return 2 ** 31 - 1 - (kernel_size + factor + 8)


def _geometry_error(library, sizes):
    """What each entry point says of `sizes` (batch 0: nothing is launched or touched)."""
    errors = []
    for name in ("carafe_forward", "carafe_backward_features", "carafe_backward_kernels"):
        fn = getattr(library, name)
        fn.restype = ctypes.c_char_p
        errors.append(fn(0, (ctypes.c_int64 * 8)(*sizes), None, None, None, None))
    assert len(set(errors)) == 1, errors
    return errors[0]


# (batch, in_h, in_w, channels, scale, stride, kernel_size, groups) with `size` at one place.
AT_THE_LIMIT = {
    "width": lambda size: (0, 1, size, 1, 1, 1, 5, 1),
    "height": lambda size: (0, size, 1, 1, 1, 1, 5, 1),
    "channels": lambda size: (0, 1, 1, size, 1, 1, 5, 1),
}


@needs_nvcc
@pytest.mark.parametrize("where", sorted(AT_THE_LIMIT))
def test_a_size_at_the_32_bit_index_limit_is_accepted_and_one_more_is_refused(built, where):
    library = ctypes.CDLL(built["build"]["library"])
    limit = _index_limit(5, 1)
    assert _geometry_error(library, AT_THE_LIMIT[where](limit)) is None
    assert b"32-bit indexing" in _geometry_error(library, AT_THE_LIMIT[where](limit + 1))


@needs_nvcc
def test_a_stride_at_the_32_bit_index_limit_is_accepted_and_one_more_is_refused(built):
    # The stride counts twice: as a size, and in the margin of every size.
    library = ctypes.CDLL(built["build"]["library"])
    stride = (2 ** 31 - 1 - 5 - 8) // 2
    assert _geometry_error(library, (0, 1, 1, 1, 1, stride, 5, 1)) is None
    assert b"32-bit indexing" in _geometry_error(library, (0, 1, 1, 1, 1, stride + 1, 5, 1))


@needs_nvcc
def test_an_upsampled_size_at_the_limit_is_accepted_and_one_more_is_refused(built):
    library = ctypes.CDLL(built["build"]["library"])
    scale = 4
    limit = _index_limit(3, scale)
    assert _geometry_error(library, (0, 1, limit // scale, 1, scale, 1, 3, 1)) is None
    assert b"32-bit indexing" in _geometry_error(
        library, (0, 1, limit // scale + 1, 1, scale, 1, 3, 1))

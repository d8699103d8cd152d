"""Whether the CUDA kernels can run, decided from the library's CUDA probe: parsing its
JSON, CUDA's driver/runtime compatibility rules and per-GPU kernel images, with fake
probe outputs (no GPU needed)."""

import json
import subprocess

import pytest

import keras_carafe.library
from keras_carafe.library import build, cuda_probe, load, toolchain

ARCHS_13 = ["sm_75", "sm_80", "sm_86", "sm_89", "sm_90", "sm_100", "sm_120", "compute_75"]


def gpu(name="NVIDIA H200", capability=(9, 0), kernel_image=True, error="", index=0):
    return {"index": index, "name": name, "compute_capability": list(capability),
            "kernel_image": kernel_image, "error": error}


def probe_json(architectures=ARCHS_13, runtime=13000, driver=13000, driver_error="",
               devices=None, device_error=""):
    devices = [gpu()] if devices is None else devices
    return json.dumps({"built": True, "architectures": architectures, "runtime": runtime,
                       "driver": driver, "driver_error": driver_error,
                       "device_count": len(devices), "device_error": device_error,
                       "devices": devices})


def assess(**fields):
    return cuda_probe.assess(cuda_probe.CudaProbe.from_json(probe_json(**fields)))


# --- parsing ---------------------------------------------------------------------------


def test_probe_of_a_library_without_cuda_parses_as_not_built():
    probe = cuda_probe.CudaProbe.from_json('{"built": false}')
    assert probe == cuda_probe.CudaProbe(built=False)


def test_probe_json_parses_into_typed_fields():
    text = ('{"built": true, "architectures": ["sm_60", "sm_90", "compute_60"], '
            '"runtime": 12050, "driver": 12040, "driver_error": "", "device_count": 1, '
            '"device_error": "", "devices": [{"index": 0, "name": "NVIDIA H200", '
            '"compute_capability": [9, 0], "kernel_image": true, "error": ""}]}')
    probe = cuda_probe.CudaProbe.from_json(text)
    assert probe == cuda_probe.CudaProbe(
        built=True, architectures=("sm_60", "sm_90", "compute_60"), runtime=12050,
        driver=12040, driver_error="", device_count=1, device_error="",
        devices=(cuda_probe.GpuDevice(0, "NVIDIA H200", (9, 0), True, ""),))


@pytest.mark.parametrize("text, message", [
    ("not json", "the CUDA probe returned invalid JSON"),
    ("[1, 2]", "has no boolean 'built'"),
    ('{"built": true}', "the CUDA probe's JSON is malformed"),
    (probe_json(architectures=["sm_9x"]), "unknown CUDA architecture name 'sm_9x'"),
    (probe_json(devices=[{"index": 0, "name": "x", "compute_capability": [9],
                          "kernel_image": True}]), "compute_capability must be"),
])
def test_malformed_probe_output_is_a_value_error_naming_the_problem(text, message):
    with pytest.raises(ValueError, match=message):
        cuda_probe.CudaProbe.from_json(text)


@pytest.mark.parametrize("encoded, text", [(12050, "12.5"), (13000, "13.0"), (11080, "11.8")])
def test_cuda_versions_are_decoded_from_cudas_integer_encoding(encoded, text):
    assert cuda_probe.cuda_version_text(encoded) == text


# --- which code runs on which GPU -------------------------------------------------------


@pytest.mark.parametrize("name, capability, runs", [
    ("sm_80", (8, 0), True),
    ("sm_80", (8, 6), True),      # real code runs on later minor versions
    ("sm_86", (8, 0), False),
    ("sm_80", (9, 0), False),     # ... but not on another major version
    ("compute_75", (9, 0), True),  # PTX is JIT-compiled for later GPUs
    ("compute_75", (7, 0), False),
    ("sm_90a", (9, 0), True),
    ("sm_90a", (10, 0), False),
    ("compute_90a", (10, 0), False),
    ("sm_100f", (10, 3), True),
    ("sm_121", (12, 1), True),
])
def test_architecture_runs_on_the_gpus_cuda_allows(name, capability, runs):
    assert cuda_probe.Architecture.parse(name).runs_on(capability) is runs


# --- decisions ------------------------------------------------------------------------


def test_matching_driver_and_a_gpu_with_a_kernel_image_is_usable():
    verdict = assess()
    assert verdict.usable
    assert verdict.message.startswith("ok: GPU 0 (NVIDIA H200, compute capability 9.0)")
    assert "driver 13.0, runtime 13.0" in verdict.message


def test_newer_driver_major_version_runs_older_runtime():
    verdict = assess(runtime=12040, driver=13000)
    assert verdict.usable
    assert "minor version compatibility" not in verdict.message


def test_older_driver_minor_version_runs_real_code_under_minor_version_compatibility():
    verdict = assess(runtime=12080, driver=12020,
                     architectures=["sm_60", "sm_70", "sm_80", "sm_90", "compute_60"])
    assert verdict.usable
    assert "(minor version compatibility)" in verdict.message


def test_older_driver_minor_version_cannot_jit_ptx_of_the_newer_toolkit():
    verdict = assess(runtime=12080, driver=12020, architectures=["sm_80", "compute_80"],
                     devices=[gpu(capability=(9, 0), kernel_image=True)])
    assert not verdict.usable
    assert "GPU 0 (NVIDIA H200, compute capability 9.0)" in verdict.message
    assert "only PTX for it" in verdict.message
    assert "sm_80, compute_80" in verdict.message


def test_older_driver_major_version_cannot_run_the_kernels():
    verdict = assess(runtime=13000, driver=12080)
    assert not verdict.usable
    assert "CUDA 12.8" in verdict.message and "CUDA 13.0" in verdict.message
    assert "update the driver or rebuild with a CUDA 12 toolkit" in verdict.message


def test_missing_driver_is_not_usable_and_says_why():
    verdict = assess(driver=0, driver_error="CUDA driver version is insufficient")
    assert not verdict.usable
    assert verdict.message == ("no usable CUDA driver: CUDA driver version is insufficient "
                               "(kernels built with CUDA 13.0)")


def test_no_visible_gpu_is_not_usable():
    verdict = assess(devices=[], device_error="no CUDA-capable device is detected")
    assert not verdict.usable
    assert verdict.message == "no CUDA device (no CUDA-capable device is detected)"


def test_gpu_without_a_kernel_image_is_named_with_its_capability_and_the_built_archs():
    verdict = assess(devices=[gpu("Tesla V100-SXM2-16GB", (7, 0), kernel_image=False,
                                  error="no kernel image is available for execution on the "
                                        "device")])
    assert not verdict.usable
    message = verdict.message
    assert message.startswith("GPU 0 (Tesla V100-SXM2-16GB, compute capability 7.0) cannot "
                              "run the CARAFE CUDA kernels: no kernel image for its "
                              "architecture (no kernel image is available")
    assert "the library has " + ", ".join(ARCHS_13) in message
    assert "rebuild with a CUDA 12 toolkit" in message


def test_newer_gpu_without_matching_code_suggests_its_architecture():
    verdict = assess(architectures=["sm_80", "sm_90a"],
                     devices=[gpu("Future GPU", (9, 5), kernel_image=False)])
    assert not verdict.usable
    assert "KERAS_CARAFE_CUDA_ARCHS including 95" in verdict.message


def test_one_gpu_without_a_kernel_image_makes_cuda_unusable_and_only_it_is_named():
    verdict = assess(devices=[gpu("NVIDIA H200", (9, 0), index=0),
                              gpu("Tesla P100-PCIE-16GB", (6, 0), kernel_image=False, index=1)])
    assert not verdict.usable
    assert "GPU 1 (Tesla P100-PCIE-16GB, compute capability 6.0)" in verdict.message
    assert "GPU 0" not in verdict.message


def test_kernels_not_built_give_the_build_reason():
    verdict = cuda_probe.assess(cuda_probe.CudaProbe(built=False),
                                not_built_reason="no CUDA compiler (nvcc) found")
    assert not verdict.usable
    assert verdict.message == "CUDA kernels not built (no CUDA compiler (nvcc) found)"


# --- reading the probe from a library ----------------------------------------------------


def fake_library(tmp_path, source):
    """A shared library compiled from C `source` with the host compiler."""
    c_file = tmp_path / "fake.c"
    c_file.write_text(source)
    library = tmp_path / "libfake.so"
    subprocess.run([str(toolchain.host_compiler()), "-x", "c", "-shared", "-fPIC",
                    str(c_file), "-o", str(library)], check=True, capture_output=True)
    return str(library)


def report(cuda_skipped=""):
    return build.BuildReport(library="", framework="tensorflow", framework_version="",
                             compiler="", nvcc="", cuda_architectures=[],
                             cuda_skipped=cuda_skipped, seconds=0.0)


def c_string(text):
    return json.dumps(text)  # a JSON string literal is a valid C string literal here


def test_probe_is_read_from_the_library_and_assessed(tmp_path):
    text = probe_json(devices=[gpu("Tesla V100", (7, 0), kernel_image=False)])
    library = fake_library(tmp_path, "const char* keras_carafe_cuda_probe(void) "
                                     f"{{ return {c_string(text)}; }}\n")
    usable, status, probe = load.assess_cuda(library, report())
    assert not usable
    assert "GPU 0 (Tesla V100, compute capability 7.0)" in status
    assert probe == cuda_probe.CudaProbe.from_json(text)


def test_probe_of_a_cpu_only_library_names_the_reason_cuda_was_skipped(tmp_path):
    library = fake_library(tmp_path, 'const char* keras_carafe_cuda_probe(void) '
                                     '{ return "{\\"built\\": false}"; }\n')
    usable, status, _ = load.assess_cuda(library, report("KERAS_CARAFE_NO_CUDA is set"))
    assert not usable
    assert status == "CUDA kernels not built (KERAS_CARAFE_NO_CUDA is set)"


def test_unreadable_probe_output_makes_cuda_unusable_without_failing_the_load(tmp_path):
    library = fake_library(tmp_path, 'const char* keras_carafe_cuda_probe(void) '
                                     '{ return "{oops"; }\n')
    usable, status, probe = load.assess_cuda(library, report())
    assert not usable
    assert status.startswith("the library's CUDA probe could not be read: the CUDA probe "
                             "returned invalid JSON")
    assert probe is None


def test_library_without_a_probe_makes_cuda_unusable(tmp_path):
    library = fake_library(tmp_path, "int unrelated(void) { return 0; }\n")
    usable, status, _ = load.assess_cuda(library, report())
    assert not usable
    assert "the library's CUDA probe could not be read" in status


def test_require_cuda_raises_the_status_when_cuda_is_unusable():
    library = load.LoadedLibrary(module=None, report=report(), cuda_usable=False,
                                 cuda_status="GPU 0 (Tesla V100, compute capability 7.0) "
                                             "cannot run the CARAFE CUDA kernels")
    with pytest.raises(load.OpUnavailableError,
                       match=r"CUDA kernels cannot run: GPU 0 \(Tesla V100, compute "
                             r"capability 7.0\)"):
        library.require_cuda()
    load.LoadedLibrary(module=None, report=report(), cuda_usable=True,
                       cuda_status="ok").require_cuda()


def test_loaded_library_reports_the_cuda_state_of_this_machine():
    library = keras_carafe.library.load_compiled("tensorflow")
    assert isinstance(library.cuda_usable, bool)
    assert library.cuda_status
    if not library.report.cuda_architectures:
        assert not library.cuda_usable
        assert library.cuda_status.startswith("CUDA kernels not built")


def test_a_failed_cuda_compile_is_named_as_the_reason_without_its_log(tmp_path):
    library = fake_library(tmp_path, 'const char* keras_carafe_cuda_probe(void) '
                                     '{ return "{\\"built\\": false}"; }\n')
    _, status, _ = load.assess_cuda(library, report("nvcc failed:\nerror: line 1\nline 2"))
    assert status == "CUDA kernels not built (nvcc failed)"

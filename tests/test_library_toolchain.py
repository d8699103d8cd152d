"""Choosing the CUDA toolkit and the GPU architectures to build for, with fake nvcc
outputs and fake toolkits: no GPU and no real CUDA toolkit are needed."""

from pathlib import Path

import pytest

from keras_carafe.library import frameworks, toolchain

# `nvcc --list-gpu-arch` of CUDA 13.0 and of CUDA 12.8 (one architecture a line).
LIST_CUDA_13 = "\n".join(f"compute_{a}" for a in
                         (75, 80, 86, 87, 88, 89, 90, 100, 110, 103, 120, 121)) + "\n"
LIST_CUDA_12 = "\n".join(f"compute_{a}" for a in
                         (50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90, 100, 101,
                          120)) + "\n"


def candidate(path, release, listing, layout=True):
    return toolchain.NvccCandidate(
        nvcc=Path(path),
        version=f"Cuda compilation tools, release {release[0]}.{release[1]}, V{release[0]}."
                f"{release[1]}.1" if release else "",
        release=release,
        layout=((f"{Path(path).parent.parent}/include",),
                (f"{Path(path).parent.parent}/lib64/libcudart_static.a",)) if layout else None,
        supported=toolchain.parse_gpu_archs(listing),
    )


CUDA_13 = candidate("/opt/cuda-13.0/bin/nvcc", (13, 0), LIST_CUDA_13)
CUDA_12 = candidate("/opt/cuda-12.8/bin/nvcc", (12, 8), LIST_CUDA_12)


# --- architectures ---------------------------------------------------------------------


def test_gpu_arch_listing_is_parsed_into_ascending_numbers():
    assert toolchain.parse_gpu_archs(LIST_CUDA_13) == (75, 80, 86, 87, 88, 89, 90, 100, 103,
                                                       110, 120, 121)


def test_architecture_specific_variants_in_the_listing_are_left_out():
    assert toolchain.parse_gpu_archs("compute_90\ncompute_90a\ncompute_100f\n") == (90,)


def test_default_architectures_are_one_per_generation_from_sm_60():
    assert toolchain.select_architectures(toolchain.parse_gpu_archs(LIST_CUDA_12)) == (
        60, 70, 75, 80, 86, 90, 100, 120)


def test_cuda_13_cannot_build_for_pascal_or_volta():
    archs = toolchain.select_architectures(toolchain.parse_gpu_archs(LIST_CUDA_13))
    assert archs[0] == 75
    assert not {60, 61, 70} & set(archs)


def test_requested_architectures_are_kept_where_nvcc_supports_them():
    supported = toolchain.parse_gpu_archs(LIST_CUDA_13)
    assert toolchain.select_architectures(supported, (90, 70, 80)) == (80, 90)


@pytest.mark.parametrize("value, expected", [
    ("80,90", (80, 90)),
    (" sm_86; 8.9 compute_75 ", (86, 89, 75)),
])
def test_architecture_env_var_accepts_several_spellings(monkeypatch, value, expected):
    monkeypatch.setenv(toolchain.CUDA_ARCHS_ENV, value)
    assert toolchain.requested_architectures() == expected


def test_architecture_env_var_rejects_names_that_are_no_compute_capability(monkeypatch):
    monkeypatch.setenv(toolchain.CUDA_ARCHS_ENV, "ampere")
    with pytest.raises(ValueError, match="KERAS_CARAFE_CUDA_ARCHS must list compute "
                                         "capabilities such as '80,90', got 'ampere'"):
        toolchain.requested_architectures()


def toolkit(architectures, release=(12, 8)):
    return toolchain.CudaToolkit(nvcc=Path("/opt/cuda/bin/nvcc"), version="",
                                 release=release, include_dirs=("/opt/cuda/include",),
                                 runtime_link_args=(), architectures=architectures)


def test_gencode_builds_sass_for_each_architecture_and_ptx_of_the_lowest():
    assert toolkit((60, 80, 90)).gencode_args() == [
        "-gencode", "arch=compute_60,code=sm_60",
        "-gencode", "arch=compute_80,code=sm_80",
        "-gencode", "arch=compute_90,code=sm_90",
        "-gencode", "arch=compute_60,code=compute_60",
    ]
    assert toolkit((60, 80, 90)).architecture_names() == ["sm_60", "sm_80", "sm_90",
                                                          "compute_60"]


@pytest.mark.parametrize("cpus, release, expected", [
    (16, (12, 8), ["--threads", "4"]),   # one thread per gencode target, at most
    (5, (12, 8), ["--threads", "3"]),    # two cores left to the host compiles
    (2, (12, 8), []),
    (16, (11, 1), []),                   # nvcc before 11.2 has no --threads
])
def test_nvcc_compiles_architectures_in_parallel_on_spare_cores(cpus, release, expected):
    assert toolkit((60, 80, 90), release).thread_args(cpus=cpus) == expected


@pytest.mark.parametrize("text, expected", [
    ("nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release 12.4, V12.4.131",
     (12, 4)),
    ("Cuda compilation tools, release 13.0, V13.0.88", (13, 0)),
    ("g++ (Debian 12.2.0-14) 12.2.0", None),
])
def test_release_is_read_from_the_nvcc_banner(text, expected):
    assert toolchain.parse_release(text) == expected


# --- the toolkit -------------------------------------------------------------------------


def test_toolkit_of_tensorflows_cuda_major_version_is_preferred():
    choice = toolchain.choose_toolkit([CUDA_13, CUDA_12], "12.5.1", "TensorFlow")
    assert choice.toolkit.nvcc == CUDA_12.nvcc
    assert choice.toolkit.release == (12, 8)
    assert choice.toolkit.architectures[0] == 60
    text = "\n".join(choice.explanation)
    assert "TensorFlow was built with CUDA 12.5.1" in text
    assert "first toolkit of the same major version" in text


def test_explanation_lists_every_candidate_with_its_version():
    choice = toolchain.choose_toolkit([CUDA_13, CUDA_12], "12.5.1", "TensorFlow")
    text = "\n".join(choice.explanation)
    assert "/opt/cuda-13.0/bin/nvcc: CUDA 13.0, SASS for sm_75, sm_80" in text
    assert "/opt/cuda-12.8/bin/nvcc: CUDA 12.8, SASS for sm_60, sm_70" in text


def test_first_usable_toolkit_is_taken_when_tensorflow_names_no_cuda_version():
    choice = toolchain.choose_toolkit([CUDA_13, CUDA_12], None, "TensorFlow")
    assert choice.toolkit.nvcc == CUDA_13.nvcc
    assert "TensorFlow does not say which CUDA it was built with" in "\n".join(
        choice.explanation)


def test_first_usable_toolkit_is_taken_when_none_matches_and_the_driver_need_is_named():
    choice = toolchain.choose_toolkit([CUDA_13, CUDA_12], "11.8", "TensorFlow")
    assert choice.toolkit.nvcc == CUDA_13.nvcc
    text = "\n".join(choice.explanation)
    assert "no CUDA 11 toolkit was found" in text
    assert "need a driver for CUDA 13.0" in text


def test_a_cuda_13_choice_says_that_pascal_and_volta_need_a_cuda_12_toolkit():
    text = "\n".join(toolchain.choose_toolkit([CUDA_13], "13.0", "TensorFlow").explanation)
    assert "cannot build for GPUs below sm_75" in text
    assert "CUDA 12 toolkit" in text


def test_toolkits_without_a_runtime_or_version_are_skipped_with_the_reason():
    no_runtime = candidate("/usr/bin/nvcc", (13, 0), LIST_CUDA_13, layout=False)
    broken = candidate("/broken/bin/nvcc", None, "")
    choice = toolchain.choose_toolkit([no_runtime, broken, CUDA_12], "12.5", "TensorFlow")
    assert choice.toolkit.nvcc == CUDA_12.nvcc
    text = "\n".join(choice.explanation)
    assert "/usr/bin/nvcc: CUDA 13.0, no CUDA runtime (cuda_runtime.h, libcudart)" in text
    assert "/broken/bin/nvcc: unknown version, does not run or prints no release" in text


def test_no_usable_toolkit_gives_no_toolkit_and_the_reasons():
    no_runtime = candidate("/usr/bin/nvcc", (13, 0), LIST_CUDA_13, layout=False)
    choice = toolchain.choose_toolkit([no_runtime], "12.5", "TensorFlow")
    assert choice.toolkit is None
    assert "no usable CUDA toolkit" in choice.skipped
    assert "/usr/bin/nvcc" in choice.skipped
    none = toolchain.choose_toolkit([], "12.5", "TensorFlow")
    assert none.skipped == "no CUDA compiler (nvcc) found"


def test_requested_architectures_no_toolkit_supports_are_an_error(monkeypatch):
    monkeypatch.setenv(toolchain.CUDA_ARCHS_ENV, "35")
    with pytest.raises(ValueError, match="KERAS_CARAFE_CUDA_ARCHS='35': no CUDA toolkit here "
                                         "supports these architectures"):
        toolchain.choose_toolkit([CUDA_13, CUDA_12], "12.5", "TensorFlow", requested=(35,))


def test_requested_architectures_pick_the_toolkit_that_supports_them():
    choice = toolchain.choose_toolkit([CUDA_13, CUDA_12], None, "TensorFlow", requested=(70,))
    assert choice.toolkit.nvcc == CUDA_12.nvcc
    assert choice.toolkit.architectures == (70,)


def test_no_cuda_env_var_skips_cuda(monkeypatch):
    monkeypatch.setenv(toolchain.NO_CUDA_ENV, "1")
    choice = toolchain.find_cuda_toolkit()
    assert choice.toolkit is None
    assert choice.skipped == "KERAS_CARAFE_NO_CUDA is set"


def fake_toolkit(root, release, listing):
    """A folder laid out like a CUDA toolkit whose nvcc prints `release` and `listing`."""
    (root / "bin").mkdir(parents=True)
    (root / "include").mkdir()
    (root / "lib64").mkdir()
    (root / "include" / "cuda_runtime.h").write_text("// fake\n")
    (root / "lib64" / "libcudart_static.a").write_text("")
    (root / "bin" / "gpu-archs").write_text(listing)
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = --version ]; then echo "Cuda compilation tools, release {release}, '
        f'V{release}.1"; fi\n'
        f'if [ "$1" = --list-gpu-arch ]; then cat "{root / "bin" / "gpu-archs"}"; fi\n')
    nvcc.chmod(0o755)
    return nvcc


def test_discovery_runs_each_nvcc_and_picks_the_matching_major(monkeypatch, tmp_path):
    newer = fake_toolkit(tmp_path / "cuda-13.0", "13.0", LIST_CUDA_13)
    older = fake_toolkit(tmp_path / "cuda-12.8", "12.8", LIST_CUDA_12)
    monkeypatch.delenv(toolchain.NO_CUDA_ENV, raising=False)
    monkeypatch.delenv(toolchain.CUDA_ARCHS_ENV, raising=False)
    monkeypatch.setattr(toolchain, "_nvcc_candidates", lambda: iter([newer, older, newer]))
    choice = toolchain.find_cuda_toolkit("12.3.2", "TensorFlow")
    assert choice.toolkit.nvcc == older
    assert choice.toolkit.release == (12, 8)
    assert choice.toolkit.include_dirs == (str(tmp_path / "cuda-12.8" / "include"),)
    assert choice.toolkit.runtime_link_args[0] == str(
        tmp_path / "cuda-12.8" / "lib64" / "libcudart_static.a")
    assert choice.toolkit.architectures == (60, 70, 75, 80, 86, 90, 100, 120)
    # Each nvcc is considered once, however often the search finds it.
    assert sum(str(newer) in line for line in choice.explanation) == 1


# --- flags of the CUDA-enabled glue -----------------------------------------------------


def tensorflow_like(include):
    return frameworks.Framework("tensorflow", "TensorFlow", "2.99.0", (f"-I{include}",), ())


def test_tensorflow_glue_flags_define_cuda_and_use_the_toolkit_headers_without_a_second_std(
        tmp_path):
    flags = frameworks.cuda_glue_flags(tensorflow_like(tmp_path), toolkit((80,)))
    assert flags == ("-DKERAS_CARAFE_WITH_CUDA", "-DGOOGLE_CUDA=1", "-DEIGEN_USE_GPU",
                     "-I/opt/cuda/include")
    assert not any(flag.startswith(("-std", "--std")) for flag in flags)


def test_tensorflow_glue_flags_put_the_cuda_headers_shipped_with_tensorflow_first(tmp_path):
    shipped = tmp_path / "third_party" / "gpus" / "cuda" / "include"
    shipped.mkdir(parents=True)
    (shipped / "cuda_runtime.h").write_text("// fake\n")
    flags = frameworks.cuda_glue_flags(tensorflow_like(tmp_path), toolkit((80,)))
    assert flags[3:] == (f"-I{shipped}", "-I/opt/cuda/include")


@pytest.mark.parametrize("name", ["jax", "torch"])
def test_jax_and_torch_glue_flags_only_define_cuda(name):
    framework = frameworks.Framework(name, name, "1.0", ("-I/opt/include",), ())
    assert frameworks.cuda_glue_flags(framework, toolkit((80,))) == ("-DKERAS_CARAFE_WITH_CUDA",)

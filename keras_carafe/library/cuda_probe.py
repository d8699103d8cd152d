"""What the library's CUDA probe reports, and whether its kernels can run on this machine.

The compiled library exports `keras_carafe_cuda_probe()`, a JSON description of
the CUDA runtime it was linked with, the driver, the visible GPUs and whether
a kernel image could be loaded on each. `assess` turns that into a yes/no and a
message that names what is missing, following CUDA's compatibility rules:

- a driver of a newer CUDA major version runs code built with an older runtime;
- a driver of the same major but an older minor version runs it too ("minor
  version compatibility"), but cannot JIT-compile PTX from the newer toolkit,
  so every GPU needs real code (SASS) for its architecture;
- a driver of an older major version cannot run it at all.

Nothing here touches TensorFlow or the GPU: the decisions are plain functions
of the probe's report.
"""

import dataclasses
import json
import re

# CUDA 13 compilers no longer generate code for these compute capabilities.
_DROPPED_BY_CUDA_13 = "below 7.5 (Pascal P100/P40, Volta V100)"


def cuda_version_text(encoded):
    """`12050` (CUDA's encoding: 1000 * major + 10 * minor) -> `"12.5"`."""
    return f"{encoded // 1000}.{(encoded % 1000) // 10}"


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One entry of the library's fat binary: real code (`sm_XY`) or PTX (`compute_XY`)."""

    kind: str  # "sm" or "compute"
    major: int
    minor: int
    suffix: str = ""  # "a": this exact GPU only; "f": this family only

    @classmethod
    def parse(cls, name):
        match = re.fullmatch(r"(sm|compute)_(\d+)([af]?)", name)
        if match is None:
            raise ValueError(f"unknown CUDA architecture name {name!r}")
        number = int(match.group(2))
        return cls(match.group(1), number // 10, number % 10, match.group(3))

    def runs_on(self, capability):
        """Whether a GPU of compute capability `(major, minor)` can run this entry."""
        if self.suffix == "a":
            return capability == (self.major, self.minor)
        if self.kind == "sm" or self.suffix == "f":
            # Real code runs on later minor versions of the same major version.
            return capability[0] == self.major and capability[1] >= self.minor
        # Plain PTX is JIT-compiled for any later architecture.
        return capability >= (self.major, self.minor)

    def __str__(self):
        return f"{self.kind}_{self.major}{self.minor}{self.suffix}"


@dataclasses.dataclass(frozen=True)
class GpuDevice:
    index: int
    name: str
    compute_capability: tuple
    kernel_image: bool
    error: str = ""

    def describe(self):
        major, minor = self.compute_capability
        return f"GPU {self.index} ({self.name}, compute capability {major}.{minor})"


@dataclasses.dataclass(frozen=True)
class CudaProbe:
    built: bool
    architectures: tuple = ()
    runtime: int = 0
    driver: int = 0
    driver_error: str = ""
    device_count: int = 0
    device_error: str = ""
    devices: tuple = ()

    @classmethod
    def from_json(cls, text):
        """Parses the probe's JSON; raises ValueError naming what is malformed."""
        try:
            data = json.loads(text)
        except ValueError as err:
            raise ValueError(f"the CUDA probe returned invalid JSON ({err}): {text!r}") from None
        if not isinstance(data, dict) or not isinstance(data.get("built"), bool):
            raise ValueError(f"the CUDA probe's JSON has no boolean 'built': {text!r}")
        if not data["built"]:
            return cls(built=False)
        try:
            devices = tuple(
                GpuDevice(
                    index=int(d["index"]),
                    name=str(d["name"]),
                    compute_capability=tuple(int(v) for v in d["compute_capability"]),
                    kernel_image=bool(d["kernel_image"]),
                    error=str(d.get("error", "")),
                )
                for d in data.get("devices", ())
            )
            if any(len(d.compute_capability) != 2 for d in devices):
                raise ValueError("compute_capability must be [major, minor]")
            probe = cls(
                built=True,
                architectures=tuple(str(a) for a in data["architectures"]),
                runtime=int(data["runtime"]),
                driver=int(data["driver"]),
                driver_error=str(data.get("driver_error", "")),
                device_count=int(data.get("device_count", len(devices))),
                device_error=str(data.get("device_error", "")),
                devices=devices,
            )
            for name in probe.architectures:
                Architecture.parse(name)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"the CUDA probe's JSON is malformed ({err!r}): {text!r}") from None
        return probe

    def parsed_architectures(self):
        return [Architecture.parse(name) for name in self.architectures]


@dataclasses.dataclass(frozen=True)
class Assessment:
    usable: bool
    message: str


def _built_for(probe):
    return ", ".join(probe.architectures) or "no architecture"


def _device_problem(probe, device, minor_version_compatibility):
    """Why `device` cannot run the kernels, or None when it can."""
    archs = probe.parsed_architectures()
    capability = tuple(device.compute_capability)
    has_sass = any(a.kind == "sm" and a.runs_on(capability) for a in archs)
    has_ptx = any(a.kind == "compute" and a.runs_on(capability) for a in archs)
    if device.kernel_image and (has_sass or not minor_version_compatibility):
        return None
    if not has_sass and not has_ptx:
        why = "no kernel image for its architecture"
    elif not has_sass and minor_version_compatibility:
        why = (f"only PTX for it, which the CUDA {cuda_version_text(probe.driver)} driver "
               f"cannot JIT-compile for code built with CUDA {cuda_version_text(probe.runtime)} "
               f"(minor version compatibility needs real code)")
    else:
        why = "its kernel image could not be loaded"
    if device.error:
        why += f" ({device.error})"
    message = f"{device.describe()} cannot run the CARAFE CUDA kernels: {why}; " \
              f"the library has {_built_for(probe)}"
    if not has_sass and capability < (7, 5):
        message += (f". CUDA 13 compilers dropped compute capability {_DROPPED_BY_CUDA_13}: "
                    f"rebuild with a CUDA 12 toolkit (CUDA_HOME) for this GPU")
    elif not has_sass:
        message += (f". Rebuild with KERAS_CARAFE_CUDA_ARCHS including "
                    f"{capability[0]}{capability[1]} and a toolkit that supports it")
    return message


def assess(probe, not_built_reason=""):
    """Whether the kernels can run on every visible GPU, with a message saying why (not)."""
    if not probe.built:
        return Assessment(False, "CUDA kernels not built"
                          + (f" ({not_built_reason})" if not_built_reason else ""))
    runtime = cuda_version_text(probe.runtime)
    if probe.driver <= 0 or probe.driver_error:
        detail = f": {probe.driver_error}" if probe.driver_error else ""
        return Assessment(False, f"no usable CUDA driver{detail} (kernels built with CUDA "
                                 f"{runtime})")
    driver = cuda_version_text(probe.driver)
    if probe.driver // 1000 < probe.runtime // 1000:
        return Assessment(False, f"the CUDA driver supports CUDA {driver}, older than the major "
                                 f"version of the CUDA {runtime} the kernels were built with; "
                                 f"update the driver or rebuild with a CUDA "
                                 f"{probe.driver // 1000} toolkit")
    minor_version_compatibility = probe.driver < probe.runtime
    if probe.device_error or probe.device_count <= 0 or not probe.devices:
        detail = probe.device_error or "none visible"
        return Assessment(False, f"no CUDA device ({detail})")
    problems = [p for p in (_device_problem(probe, d, minor_version_compatibility)
                            for d in probe.devices) if p is not None]
    if problems:
        return Assessment(False, "; ".join(problems))
    gpus = ", ".join(d.describe() for d in probe.devices)
    compatibility = " (minor version compatibility)" if minor_version_compatibility else ""
    return Assessment(True, f"ok: {gpus}; driver {driver}, runtime {runtime}{compatibility}; "
                            f"built for {_built_for(probe)}")

"""Checks the CUDA kernels of the CARAFE reassembly on a GPU, without TensorFlow.

    python tools/gpu_check/run.py --out DIR [--compile-only] [--ncu]

Needs nvcc; a full run also needs a CUDA GPU, PyTorch with CUDA and NumPy.
It compiles the framework-free kernels (keras_carafe/csrc/kernels/carafe_cuda.cu) with a C ABI
shim, calls them through ctypes on PyTorch device memory, and:

1. compares forward and both gradients, upsampling and downsampling, with the
   NumPy reference of the test suite (tests/carafe_reference.py) in float64,
   float32, float16 and bfloat16, on odd shapes, empty batches, unaligned
   buffers and a grid larger than the block cap (a second build with a tiny
   cap);
2. checks that the backward kernels are bitwise repeatable;
3. runs compute-sanitizer (memcheck and racecheck) on a small driver program;
4. times forward and each backward kernel with CUDA events on the benchmark
   shapes, next to a pure-PyTorch CARAFE (unfold-based) and bilinear
   `F.interpolate`, and reports achieved bandwidth against the GPU's peak;
5. optionally (--ncu) profiles the kernels on the FPN shape with Nsight Compute.

It writes summary.json and summary.md to DIR and exits non-zero if any check
fails. On a machine without a GPU a full run fails with a message.
"""

import argparse
import ctypes
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
KERNELS = REPO / "keras_carafe" / "csrc" / "kernels"
sys.path.insert(0, str(REPO / "tests"))

KINDS = {"float32": 0, "float64": 1, "float16": 2, "bfloat16": 3}

# Vendor datasheet peak memory bandwidth (GB/s) by device name.
PEAK_BANDWIDTH_GBPS = (
    ("H200", 4800.0),
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100", 1555.0),
    ("L40S", 864.0),
    ("RTX 4090", 1008.0),
)

# (batch, height, width, channels, scale, stride, kernel_size, groups):
# scale > 1 is upsampling (CARAFE), stride > 1 downsampling (CARAFE++).
CORRECTNESS_CASES = [
    (1, 1, 1, 1, 1, 1, 1, 1),       # smallest problem
    (2, 3, 4, 4, 2, 1, 3, 2),       # odd height, batch 2, 2 groups
    (1, 5, 1, 2, 3, 1, 3, 2),       # width 1, scale 3
    (1, 1, 6, 2, 2, 1, 5, 1),       # height 1
    (2, 3, 3, 6, 1, 1, 7, 2),       # scale 1, kernel larger than the image
    (1, 2, 3, 8, 4, 1, 3, 4),       # scale 4, 4 groups
    (2, 4, 3, 256, 2, 1, 5, 4),     # 64-channel groups
    (1, 6, 7, 100, 2, 1, 7, 1),     # channels not a multiple of 8 or 32
    (1, 7, 5, 12, 3, 1, 5, 4),      # scale 3, 3-channel groups
    (2, 9, 11, 64, 2, 1, 5, 1),     # vector path, 2 x 2 units
    (1, 8, 8, 96, 4, 1, 5, 2),      # scale 4 in 2 x 2 units
    (1, 5, 6, 36, 4, 1, 1, 1),      # 1 x 1 kernel
    (0, 4, 4, 8, 2, 1, 5, 1),       # empty batch
    (1, 13, 17, 40, 2, 1, 3, 2),    # 20-channel groups: float32 vectors, 16-bit scalars
    (1, 1, 1, 1, 1, 2, 1, 1),       # downsampling, 1 x 1 image
    (2, 5, 6, 4, 1, 2, 3, 2),       # odd height
    (1, 7, 1, 2, 1, 3, 3, 2),       # width 1, stride 3
    (1, 1, 9, 2, 1, 2, 5, 1),       # height 1
    (2, 8, 8, 64, 1, 2, 5, 1),      # vector path
    (1, 9, 10, 100, 1, 3, 7, 1),    # stride 3, 7 x 7
    (1, 12, 12, 48, 1, 4, 5, 4),    # stride 4, 4 groups
    (0, 4, 4, 8, 1, 2, 5, 1),       # empty batch
    (1, 16, 15, 256, 1, 2, 3, 4),   # many channels, odd width
    (1, 6, 6, 12, 1, 2, 1, 3),      # 1 x 1 kernel
]
# Buffers offset by one element from 16-byte alignment take the scalar path.
UNALIGNED_CASES = [(1, 6, 7, 64, 2, 1, 5, 1), (1, 8, 9, 64, 1, 2, 5, 2)]
# Run on a build whose grids hold at most 2 blocks, so every kernel loops.
GRID_LOOP_CASES = [(2, 9, 11, 64, 2, 1, 5, 1), (1, 13, 17, 40, 2, 1, 3, 2),
                   (2, 16, 16, 64, 1, 2, 5, 1), (1, 6, 7, 100, 3, 1, 7, 1)]
BENCH_CASES = [
    (2, 64, 64, 128, 2, 1, 5, 1),
    (2, 100, 100, 256, 2, 1, 5, 1),   # FPN level
    (8, 128, 128, 64, 2, 1, 5, 1),
    (2, 200, 200, 256, 1, 2, 5, 1),   # CARAFE++ downsampling of the FPN level
]
FPN_CASE = BENCH_CASES[1]
DETERMINISM_CASE = (2, 64, 64, 128, 2, 1, 5, 1)

# Tolerance per element as a fraction of its error scale (the same sum on
# absolute values, which bounds |result| and the rounding error of every
# order of summation), on inputs already rounded to the type. Float32 sums of
# up to a few hundred products stay within 2^-17 of it; 16-bit results add one
# rounding of the output (u = 2^-11, 2^-8) to float32 accumulation.
TOLERANCE = {
    "float64": 2.0 ** -40,
    "float32": 2.0 ** -16,
    "float16": 2.0 ** -11 + 2.0 ** -16,
    "bfloat16": 2.0 ** -8 + 2.0 ** -16,
}
# Plus half the spacing of the type's subnormal numbers, where rounding the
# output is absolute rather than relative.
SUBNORMAL_HALF_SPACING = {"float64": 2.0 ** -1075, "float32": 2.0 ** -150,
                          "float16": 2.0 ** -25, "bfloat16": 2.0 ** -134}


class CheckFailed(Exception):
    pass


def log(message):
    print(message, flush=True)


# --- build ---------------------------------------------------------------------------


def find_nvcc():
    for candidate in (os.environ.get("NVCC"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if candidate and Path(candidate).is_file():
            return candidate
    raise CheckFailed("nvcc was not found (set NVCC or put it on PATH)")


def gpu_architecture():
    """sm_XY of GPU 0 from nvidia-smi, or None without a GPU."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    result = subprocess.run([smi, "--query-gpu=compute_cap", "--format=csv,noheader"],
                            capture_output=True, text=True)
    match = re.match(r"\s*(\d+)\.(\d+)", result.stdout)
    return f"{match.group(1)}{match.group(2)}" if result.returncode == 0 and match else None


def build(build_dir, arch, variants=()):
    """Compiles the shim library, its tiny-grid twin and the driver program,
    plus one library per (name, defines) variant to time against the default."""
    nvcc = find_nvcc()
    build_dir.mkdir(parents=True, exist_ok=True)
    common = [nvcc, "-O3", "-Xcompiler", "-fPIC", "-lineinfo",
              f"-gencode=arch=compute_{arch},code=sm_{arch}",
              f'-DKERAS_CARAFE_CUDA_ARCHS="sm_{arch}"', f"-I{KERNELS}"]
    kernels = str(KERNELS / "carafe_cuda.cu")
    targets = {
        "library": common + ["-shared", str(HERE / "carafe_capi.cc"), kernels,
                             "-o", str(build_dir / "libcarafe_check.so")],
        "tiny_grid_library": common + ["-DKERAS_CARAFE_MAX_BLOCKS=2", "-shared",
                                       str(HERE / "carafe_capi.cc"), kernels,
                                       "-o", str(build_dir / "libcarafe_check_tiny_grid.so")],
        "driver": common + [str(HERE / "carafe_driver.cc"), kernels,
                            "-o", str(build_dir / "carafe_driver")],
    }
    for name, defines in variants:
        targets[f"variant_{name}"] = common + [*defines, "-shared", str(HERE / "carafe_capi.cc"),
                                               kernels, "-o", str(build_dir / f"lib_{name}.so")]
    start = time.monotonic()

    def compile_one(item):
        name, command = item
        result = subprocess.run(command, capture_output=True, text=True)
        return name, command, result

    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        results = list(pool.map(compile_one, targets.items()))
    for name, command, result in results:
        if result.returncode != 0:
            raise CheckFailed(f"compiling {name} failed:\n$ {' '.join(command)}\n"
                              f"{result.stdout}{result.stderr}")
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    return {
        "nvcc": nvcc,
        "nvcc_version": next((l for l in version.splitlines() if "release" in l), version.strip()),
        "architecture": f"sm_{arch}",
        "seconds": round(time.monotonic() - start, 1),
        "library": str(build_dir / "libcarafe_check.so"),
        "tiny_grid_library": str(build_dir / "libcarafe_check_tiny_grid.so"),
        "driver": str(build_dir / "carafe_driver"),
        "variants": {name: {"defines": list(defines), "library": str(build_dir / f"lib_{name}.so")}
                     for name, defines in variants},
    }


# --- calling the kernels ---------------------------------------------------------------


class Kernels:
    """The shim library over PyTorch tensors (channels-last, contiguous)."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        for name in ("carafe_forward", "carafe_backward_features", "carafe_backward_kernels"):
            fn = getattr(self.lib, name)
            fn.restype = ctypes.c_char_p
            fn.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int64), ctypes.c_void_p,
                           ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self.lib.keras_carafe_cuda_probe.restype = ctypes.c_char_p

    def probe(self):
        return json.loads(self.lib.keras_carafe_cuda_probe().decode())

    @staticmethod
    def _call(fn, kind, case, a, b, out, stream):
        sizes = (ctypes.c_int64 * 8)(*case)
        error = fn(KINDS[kind], sizes, ctypes.c_void_p(a.data_ptr()), ctypes.c_void_p(b.data_ptr()),
                   ctypes.c_void_p(out.data_ptr()), ctypes.c_void_p(stream))
        if error is not None:
            raise CheckFailed(f"launch failed on {case} {kind}: {error.decode()}")

    def forward(self, kind, case, features, kernels, output, stream):
        self._call(self.lib.carafe_forward, kind, case, features, kernels, output, stream)

    def backward_features(self, kind, case, grad_output, kernels, grad_features, stream):
        self._call(self.lib.carafe_backward_features, kind, case, grad_output, kernels,
                   grad_features, stream)

    def backward_kernels(self, kind, case, grad_output, features, grad_kernels, stream):
        self._call(self.lib.carafe_backward_kernels, kind, case, grad_output, features,
                   grad_kernels, stream)


def output_size(case):
    n, h, w, c, s, st, k, g = case
    return n, -(-h // st) * s, -(-w // st) * s


def torch_dtype(torch, kind):
    return {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
            "bfloat16": torch.bfloat16}[kind]


def device_tensor(torch, array, kind, misalign):
    """`array` as a contiguous device tensor of `kind`, its data one element past
    16-byte alignment when `misalign`."""
    dtype = torch_dtype(torch, kind)
    flat = torch.from_numpy(array.astype("float64").ravel()).to("cuda", dtype)
    if not misalign:
        return flat.reshape(array.shape).contiguous()
    buffer = torch.empty(flat.numel() + 1, dtype=dtype, device="cuda")
    view = buffer[1:]
    view.copy_(flat)
    return view.reshape(array.shape)


def empty_like_case(torch, shape, kind, misalign):
    dtype = torch_dtype(torch, kind)
    numel = 1
    for d in shape:
        numel *= d
    buffer = torch.full((numel + (1 if misalign else 0),), float("nan"), dtype=dtype, device="cuda")
    return buffer[1 if misalign else 0:].reshape(shape)


# --- correctness -------------------------------------------------------------------------


def reference(case, features, kernels, upstream):
    import carafe_reference as ref

    n, h, w, c, s, st, k, g = case
    if st == 1:
        out = ref.carafe_reference(features, kernels, s, k, g)
        grads = ref.carafe_reference_grads(upstream, features, kernels, s, k, g)
        scales = ref.error_scales(features, kernels, upstream, s, k, g)
    else:
        out = ref.carafe_downsample_reference(features, kernels, st, k, g)
        grads = ref.carafe_downsample_reference_grads(upstream, features, kernels, st, k, g)
        scales = ref.downsample_error_scales(features, kernels, upstream, st, k, g)
    return (out, *grads), scales


def rounded(torch, array, kind):
    """`array` rounded to `kind` and back to float64 (the inputs the GPU sees)."""
    return torch.from_numpy(array).to(torch_dtype(torch, kind)).to(torch.float64).numpy()


def check_case(torch, np, kernels_lib, case, kind, rng, misalign=False):
    n, h, w, c, s, st, k, g = case
    _, oh, ow = output_size(case)
    features = rounded(torch, rng.uniform(-1, 1, (n, h, w, c)), kind)
    kernels = rounded(torch, rng.uniform(-1, 1, (n, oh, ow, g * k * k)), kind)
    upstream = rounded(torch, rng.uniform(-1, 1, (n, oh, ow, c)), kind)
    expected, scales = reference(case, features, kernels, upstream)

    f = device_tensor(torch, features, kind, misalign)
    w_ = device_tensor(torch, kernels, kind, misalign)
    d = device_tensor(torch, upstream, kind, misalign)
    out = empty_like_case(torch, (n, oh, ow, c), kind, misalign)
    gf = empty_like_case(torch, (n, h, w, c), kind, misalign)
    gk = empty_like_case(torch, (n, oh, ow, g * k * k), kind, misalign)
    stream = torch.cuda.current_stream().cuda_stream
    kernels_lib.forward(kind, case, f, w_, out, stream)
    kernels_lib.backward_features(kind, case, d, w_, gf, stream)
    kernels_lib.backward_kernels(kind, case, d, f, gk, stream)
    torch.cuda.synchronize()

    worst = 0.0
    for name, actual, want, scale in zip(("output", "grad_features", "grad_kernels"),
                                         (out, gf, gk), expected, scales):
        got = actual.to(torch.float64).cpu().numpy()
        if got.shape != want.shape:
            raise CheckFailed(f"{case} {kind} {name}: shape {got.shape}, expected {want.shape}")
        if not np.all(np.isfinite(got)):
            raise CheckFailed(f"{case} {kind} {name}: non-finite values (unwritten elements?)")
        if got.size == 0:
            continue
        excess = np.maximum(np.abs(got - want) - SUBNORMAL_HALF_SPACING[kind], 0.0)
        ratio = excess / np.maximum(scale, np.finfo(np.float64).tiny)
        err = float(np.max(ratio))
        if err > TOLERANCE[kind]:
            idx = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
            raise CheckFailed(f"{case} {kind} {name}: error {err:.3g} of the error scale at "
                              f"{idx} (got {got[idx]!r}, expected {want[idx]!r}), "
                              f"tolerance {TOLERANCE[kind]:.3g}")
        worst = max(worst, err)
    return worst


def run_correctness(torch, np, build_info):
    main = Kernels(build_info["library"])
    tiny = Kernels(build_info["tiny_grid_library"])
    rng = np.random.default_rng(20261126)
    results = {}
    count = 0
    for kind in KINDS:
        worst = 0.0
        for case in CORRECTNESS_CASES:
            worst = max(worst, check_case(torch, np, main, case, kind, rng))
            count += 1
        for case in UNALIGNED_CASES:
            worst = max(worst, check_case(torch, np, main, case, kind, rng, misalign=True))
            count += 1
        for case in GRID_LOOP_CASES:
            worst = max(worst, check_case(torch, np, tiny, case, kind, rng))
            count += 1
        results[kind] = {"max_error_over_scale": worst, "tolerance": TOLERANCE[kind]}
        log(f"  {kind}: max error {worst:.3g} of the error scale (tolerance "
            f"{TOLERANCE[kind]:.3g})")
    return {"problems": count, "by_dtype": results}


def run_determinism(torch, build_info, repeats=5):
    lib = Kernels(build_info["library"])
    case = DETERMINISM_CASE
    n, h, w, c, s, st, k, g = case
    _, oh, ow = output_size(case)
    gen = torch.Generator(device="cuda").manual_seed(7)
    f = torch.randn((n, h, w, c), device="cuda", generator=gen)
    wk = torch.randn((n, oh, ow, g * k * k), device="cuda", generator=gen)
    d = torch.randn((n, oh, ow, c), device="cuda", generator=gen)
    stream = torch.cuda.current_stream().cuda_stream
    first = None
    for _ in range(repeats):
        gf, gk, out = torch.empty_like(f), torch.empty_like(wk), torch.empty_like(d)
        lib.forward("float32", case, f, wk, out, stream)
        lib.backward_features("float32", case, d, wk, gf, stream)
        lib.backward_kernels("float32", case, d, f, gk, stream)
        if first is None:
            first = (out, gf, gk)
        elif not all(torch.equal(a, b) for a, b in zip(first, (out, gf, gk))):
            raise CheckFailed("forward or backward results differ between identical runs")
    torch.cuda.synchronize()
    return {"case": case, "runs": repeats, "bitwise_identical": True}


# --- compute-sanitizer and ncu ------------------------------------------------------------


def run_sanitizer(build_info):
    tool = shutil.which("compute-sanitizer") or "/usr/local/cuda/bin/compute-sanitizer"
    if not Path(tool).is_file():
        raise CheckFailed("compute-sanitizer was not found")
    results = {}
    for check in ("memcheck", "racecheck"):
        command = [tool, "--tool", check, "--error-exitcode", "3", build_info["driver"],
                   "sanitize"]
        start = time.monotonic()
        result = subprocess.run(command, capture_output=True, text=True, timeout=240)
        output = result.stdout + result.stderr
        summary = re.search(r"ERROR SUMMARY: (\d+) error", output)
        if check == "racecheck":
            summary = summary or re.search(r"RACECHECK SUMMARY: (\d+) hazard", output)
        errors = int(summary.group(1)) if summary else None
        results[check] = {"errors": errors, "returncode": result.returncode,
                          "seconds": round(time.monotonic() - start, 1)}
        log(f"  {check}: {errors} errors, exit {result.returncode} "
            f"({results[check]['seconds']} s)")
        if result.returncode != 0 or errors != 0:
            raise CheckFailed(f"compute-sanitizer {check} reported problems:\n{output[-4000:]}")
    return results


def run_ncu(build_info, out_dir):
    tool = shutil.which("ncu")
    if not tool:
        return {"skipped": "ncu was not found"}
    report = out_dir / "ncu.txt"
    n, h, w, c, s, st, k, g = FPN_CASE
    command = [tool, "--clock-control", "none", "--launch-count", "3",
               "--section", "SpeedOfLight", "--section", "MemoryWorkloadAnalysis",
               "--section", "Occupancy", "--section", "LaunchStats",
               "--section", "SchedulerStats", "--section", "WarpStateStats",
               build_info["driver"], "profile", *(str(v) for v in FPN_CASE)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    report.write_text(result.stdout + result.stderr)
    return {"report": report.name, "returncode": result.returncode}


# --- timings -----------------------------------------------------------------------------


def time_ms(torch, fn, warmup=3, samples=15, inner=10):
    """Median over `samples` of the mean time of `inner` back-to-back calls (CUDA events)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(samples):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / inner)
    return statistics.median(times)


def torch_carafe(torch, x, w, scale, stride, k, g):
    """CARAFE in plain PyTorch, NCHW, as written without a custom kernel:
    unfold the k x k neighbourhoods, bring them to the output grid, weight and
    sum. x: (N, C, H, W); w: (N, G*k*k, OH, OW)."""
    import torch.nn.functional as F

    n, c, h, wd = x.shape
    patches = F.unfold(x, k, padding=(k - 1) // 2).view(n, c * k * k, h, wd)
    if scale > 1:
        patches = F.interpolate(patches, scale_factor=scale, mode="nearest")
    if stride > 1:
        patches = patches[:, :, ::stride, ::stride]
    oh, ow = patches.shape[-2:]
    patches = patches.reshape(n, g, c // g, k * k, oh, ow)
    weights = w.view(n, g, 1, k * k, oh, ow)
    return (patches * weights).sum(dim=3).reshape(n, c, oh, ow)


def peak_bandwidth(name):
    for key, value in PEAK_BANDWIDTH_GBPS:
        if key in name:
            return value
    return None


def measure_copy_bandwidth(torch):
    src = torch.empty(2 ** 29, dtype=torch.float32, device="cuda")  # 2 GiB
    dst = torch.empty_like(src)
    ms = time_ms(torch, lambda: dst.copy_(src), samples=9, inner=3)
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


def run_benchmarks(torch, build_info):
    import torch.nn.functional as F

    lib = Kernels(build_info["library"])
    stream = torch.cuda.current_stream().cuda_stream
    name = torch.cuda.get_device_name(0)
    peak = peak_bandwidth(name)
    copy_gbps = measure_copy_bandwidth(torch)
    rows = []
    for case in BENCH_CASES:
        n, h, w, c, s, st, k, g = case
        _, oh, ow = output_size(case)
        gen = torch.Generator(device="cuda").manual_seed(1)
        f = torch.randn((n, h, w, c), device="cuda", generator=gen)
        wk = torch.softmax(torch.randn((n, oh, ow, g, k * k), device="cuda", generator=gen),
                           -1).reshape(n, oh, ow, g * k * k).contiguous()
        d = torch.randn((n, oh, ow, c), device="cuda", generator=gen)
        out, gf, gk = torch.empty_like(d), torch.empty_like(f), torch.empty_like(wk)
        fwd = time_ms(torch, lambda: lib.forward("float32", case, f, wk, out, stream))
        bwd_f = time_ms(torch, lambda: lib.backward_features("float32", case, d, wk, gf, stream))
        bwd_k = time_ms(torch, lambda: lib.backward_kernels("float32", case, d, f, gk, stream))

        # The same problem in PyTorch's natural layout (NCHW).
        x = f.permute(0, 3, 1, 2).contiguous().requires_grad_(True)
        wt = wk.permute(0, 3, 1, 2).contiguous().requires_grad_(True)
        dt = d.permute(0, 3, 1, 2).contiguous()
        with torch.no_grad():
            reference_out = torch_carafe(torch, x, wt, s, st, k, g)
        agreement = float((reference_out.permute(0, 2, 3, 1) - out).abs().max())

        def torch_fwd():
            with torch.no_grad():
                torch_carafe(torch, x, wt, s, st, k, g)

        def torch_fwd_bwd():
            y = torch_carafe(torch, x, wt, s, st, k, g)
            torch.autograd.grad(y, (x, wt), dt)

        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        torch_f = time_ms(torch, torch_fwd, samples=7, inner=3)
        torch_fb = time_ms(torch, torch_fwd_bwd, samples=7, inner=3)
        torch_peak_mib = (torch.cuda.max_memory_allocated() - base) / 2 ** 20

        resize = {"scale_factor": float(s)} if st == 1 else {"size": (oh, ow)}
        xb = x.detach().requires_grad_(True)

        def bilinear_fwd():
            with torch.no_grad():
                F.interpolate(xb, mode="bilinear", align_corners=False, **resize)

        def bilinear_fwd_bwd():
            y = F.interpolate(xb, mode="bilinear", align_corners=False, **resize)
            torch.autograd.grad(y, (xb,), dt)

        bil_f = time_ms(torch, bilinear_fwd)
        bil_fb = time_ms(torch, bilinear_fwd_bwd)

        item = 4
        fbytes, kbytes, obytes = f.numel() * item, wk.numel() * item, d.numel() * item
        traffic = {"forward": fbytes + kbytes + obytes,
                   "backward_features": obytes + kbytes + fbytes,
                   "backward_kernels": obytes + fbytes + kbytes}
        times = {"forward": fwd, "backward_features": bwd_f, "backward_kernels": bwd_k}
        row = {"case": case, "direction": "up" if st == 1 else "down",
               "ms": times, "torch_carafe_ms": {"forward": torch_f, "forward_backward": torch_fb},
               "torch_carafe_peak_mib": round(torch_peak_mib, 1),
               "bilinear_ms": {"forward": bil_f, "forward_backward": bil_fb},
               "max_abs_difference_vs_torch_carafe": agreement,
               "gbps": {}, "fraction_of_peak": {}, "fraction_of_copy": {}}
        for key, ms in times.items():
            gbps = traffic[key] / (ms * 1e-3) / 1e9
            row["gbps"][key] = round(gbps, 1)
            row["fraction_of_copy"][key] = round(gbps / copy_gbps, 3)
            row["fraction_of_peak"][key] = round(gbps / peak, 3) if peak else None
        ours_fb = fwd + bwd_f + bwd_k
        row["speedup_vs_torch_carafe"] = {"forward": round(torch_f / fwd, 1),
                                          "forward_backward": round(torch_fb / ours_fb, 1)}
        rows.append(row)
        log(f"  {case}: fwd {fwd:.4f} ms ({row['gbps']['forward']} GB/s), "
            f"bwd features {bwd_f:.4f} ms ({row['gbps']['backward_features']} GB/s), "
            f"bwd kernels {bwd_k:.4f} ms ({row['gbps']['backward_kernels']} GB/s); "
            f"torch CARAFE fwd {torch_f:.3f} / fwd+bwd {torch_fb:.3f} ms; "
            f"bilinear {bil_f:.4f} / {bil_fb:.4f} ms; max |ours - torch| {agreement:.2e}")
    return {"device": name, "peak_gbps": peak, "copy_gbps": round(copy_gbps, 1),
            "rows": rows}


def run_variant_timings(torch, build_info):
    """Our three kernels per variant build, on the benchmark shapes."""
    stream = torch.cuda.current_stream().cuda_stream
    results = {}
    for name, variant in build_info["variants"].items():
        lib = Kernels(variant["library"])
        rows = []
        for case in BENCH_CASES:
            n, h, w, c, s, st, k, g = case
            _, oh, ow = output_size(case)
            f = torch.randn((n, h, w, c), device="cuda")
            wk = torch.rand((n, oh, ow, g * k * k), device="cuda")
            d = torch.randn((n, oh, ow, c), device="cuda")
            out, gf, gk = torch.empty_like(d), torch.empty_like(f), torch.empty_like(wk)
            rows.append({"case": case, "ms": {
                "forward": time_ms(torch, lambda: lib.forward("float32", case, f, wk, out, stream)),
                "backward_features": time_ms(
                    torch, lambda: lib.backward_features("float32", case, d, wk, gf, stream)),
                "backward_kernels": time_ms(
                    torch, lambda: lib.backward_kernels("float32", case, d, f, gk, stream)),
            }})
            log(f"  {name} {case}: " + ", ".join(f"{k} {v:.4f} ms" for k, v in rows[-1]["ms"].items()))
        results[name] = {"defines": variant["defines"], "rows": rows}
    return results


# --- report --------------------------------------------------------------------------------


def write_markdown(summary, path):
    lines = ["# CUDA kernel check", ""]
    env = summary["environment"]
    lines.append(f"Device: {env.get('device')}; driver {env.get('driver')}; "
                 f"{summary['build']['nvcc_version']}; PyTorch {env.get('torch')}; "
                 f"built for {summary['build']['architecture']} in {summary['build']['seconds']} s.")
    lines.append("")
    lines.append(f"Status: **{summary['status']}**" +
                 (f" ({summary['failure']})" if summary.get("failure") else ""))
    if "correctness" in summary:
        lines += ["", "## Correctness (against tests/carafe_reference.py)", "",
                  "| dtype | max error / error scale | tolerance |", "|---|---|---|"]
        for kind, r in summary["correctness"]["by_dtype"].items():
            lines.append(f"| {kind} | {r['max_error_over_scale']:.3g} | {r['tolerance']:.3g} |")
        lines.append("")
        lines.append(f"{summary['correctness']['problems']} problems (output and both "
                     f"gradients each).")
    if "determinism" in summary:
        lines.append(f"Backward bitwise identical over {summary['determinism']['runs']} runs.")
    if "sanitizer" in summary:
        lines.append("compute-sanitizer: " + ", ".join(
            f"{k} {v['errors']} errors" for k, v in summary["sanitizer"].items()))
    bench = summary.get("benchmark")
    if bench:
        lines += ["", f"## Timings (float32, CUDA events, median; peak {bench['peak_gbps']} GB/s "
                      f"datasheet, {bench['copy_gbps']} GB/s measured copy)", "",
                  "| N,H,W,C,scale,stride,k,G | kernel | ms | GB/s | of peak | of copy |",
                  "|---|---|---|---|---|---|"]
        for row in bench["rows"]:
            shape = ",".join(str(v) for v in row["case"])
            for key in ("forward", "backward_features", "backward_kernels"):
                frac = row["fraction_of_peak"][key]
                lines.append(f"| {shape} | {key} | {row['ms'][key]:.4f} | {row['gbps'][key]} | "
                             f"{'-' if frac is None else f'{frac:.0%}'} | "
                             f"{row['fraction_of_copy'][key]:.0%} |")
        lines += ["", "| N,H,W,C,scale,stride,k,G | ours fwd | ours fwd+bwd | PyTorch CARAFE fwd "
                      "| PyTorch CARAFE fwd+bwd | speed-up fwd+bwd | bilinear fwd | "
                      "bilinear fwd+bwd |", "|---|---|---|---|---|---|---|---|"]
        for row in bench["rows"]:
            shape = ",".join(str(v) for v in row["case"])
            ours = row["ms"]
            lines.append(
                f"| {shape} | {ours['forward']:.4f} | "
                f"{ours['forward'] + ours['backward_features'] + ours['backward_kernels']:.4f} | "
                f"{row['torch_carafe_ms']['forward']:.3f} | "
                f"{row['torch_carafe_ms']['forward_backward']:.3f} | "
                f"{row['speedup_vs_torch_carafe']['forward_backward']}x | "
                f"{row['bilinear_ms']['forward']:.4f} | {row['bilinear_ms']['forward_backward']:.4f} |")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for the summary files")
    parser.add_argument("--compile-only", action="store_true",
                        help="build the library and driver, then stop")
    parser.add_argument("--arch", help="compute capability to build for, e.g. 90 "
                        "(default: GPU 0's, or 80 without a GPU)")
    parser.add_argument("--ncu", action="store_true",
                        help="also profile the kernels on the FPN shape with Nsight Compute")
    parser.add_argument("--build-dir", type=Path,
                        help="folder for the compiled library and driver (default: a new "
                        "temporary folder)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=DEFINES",
                        help="also build the kernels with these space-separated nvcc defines "
                        "(e.g. 'p1=-DKERAS_CARAFE_FEATURE_SEGMENT=1') and time them")
    parser.add_argument("--skip-sanitizer", action="store_true",
                        help="leave out compute-sanitizer (it is slow on some machines)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    summary = {"status": "failed", "environment": {"python": platform.python_version()}}
    try:
        arch = args.arch or gpu_architecture()
        if arch is None and not args.compile_only:
            raise CheckFailed("no NVIDIA GPU found (nvidia-smi reports none); a full run needs "
                              "a GPU; use --compile-only to check the build alone")
        log("building ...")
        build_dir = args.build_dir or Path(tempfile.mkdtemp(prefix="carafe_gpu_check_"))
        variants = [(spec.split("=", 1)[0], spec.split("=", 1)[1].split()) for spec in args.variant]
        summary["build"] = build(build_dir, arch or "80", variants)
        log(f"  built {summary['build']['architecture']} in {summary['build']['seconds']} s")
        if args.compile_only:
            summary["status"] = "compiled"
            return 0
        import numpy as np
        import torch

        if not torch.cuda.is_available():
            raise CheckFailed("PyTorch sees no CUDA device; a full run needs one")
        summary["environment"].update(device=torch.cuda.get_device_name(0), torch=torch.__version__)
        probe = Kernels(summary["build"]["library"]).probe()
        summary["probe"] = probe
        summary["environment"]["driver"] = probe.get("driver")
        log(f"probe: {json.dumps(probe)}")
        if not probe.get("devices") or not probe["devices"][0]["kernel_image"]:
            raise CheckFailed(f"the probe finds no usable kernel image: {probe}")
        # Every stage runs even after another failed, so one run reports all it can.
        stages = [("correctness", lambda: run_correctness(torch, np, summary["build"])),
                  ("determinism", lambda: run_determinism(torch, summary["build"]))]
        if not args.skip_sanitizer:
            stages.append(("sanitizer", lambda: run_sanitizer(summary["build"])))
        stages.append(("benchmark", lambda: run_benchmarks(torch, summary["build"])))
        if variants:
            stages.append(("variants", lambda: run_variant_timings(torch, summary["build"])))
        if args.ncu:
            stages.append(("ncu", lambda: run_ncu(summary["build"], args.out)))
        failures = []
        for name, stage in stages:
            log(f"{name} ...")
            try:
                summary[name] = stage()
            except CheckFailed as err:
                failures.append(f"{name}: {err}")
                log(f"FAILED {name}: {err}")
        if failures:
            raise CheckFailed("; ".join(failures))
        summary["status"] = "passed"
        return 0
    except CheckFailed as err:
        summary["failure"] = str(err)
        log(f"FAILED: {err}")
        return 1
    finally:
        summary["seconds"] = round(time.monotonic() - started, 1)
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        if "build" in summary:
            write_markdown(summary, args.out / "summary.md")
        log(f"summary: {args.out / 'summary.json'} ({summary['status']}, "
            f"{summary['seconds']} s)")


if __name__ == "__main__":
    sys.exit(main())

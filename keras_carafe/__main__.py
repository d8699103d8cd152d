"""Command line: `python -m keras_carafe {segment,demo,build,bench,bench-family} ...`."""

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile


def _build(args):
    from keras_carafe import library
    from keras_carafe.library import build, toolchain

    if args.cuda:
        os.environ[toolchain.CUDA_ENV] = "1"

    names = [args.framework] if args.framework else library.installed_frameworks()
    if not names or not library.is_installed(names[0]):
        print(f"{args.framework or 'no framework'} is not installed here: the compiled kernels "
              f"are built for TensorFlow, JAX or PyTorch (`pip install keras-carafe[cpu]`, "
              f"`keras-carafe[jax]`, or PyTorch)", file=sys.stderr)
        return 1
    print(f"building the CARAFE kernels into {build.cache_root()} for "
          f"{', '.join(names)} ...", flush=True)
    failed = 0
    for name in names:
        try:
            report = build.ensure_built(name, force=True)
        except build.BuildError as err:
            print(f"{name}: build failed:\n{err}", file=sys.stderr)
            failed += 1
            continue
        print(report.describe())
        try:
            loaded = library.load_compiled(name)
        except library.OpUnavailableError as err:
            print(f"{name}: the library was built but does not load: {err}", file=sys.stderr)
            failed += 1
            continue
        print(f"  CUDA at run time: {loaded.cuda_status}")
    return 1 if failed else 0


def _bench_cases(args):
    from keras_carafe import benchmark

    return ([("upsample", s) for s in args.shape or benchmark.DEFAULT_SHAPES]
            + [("downsample", s) for s in args.downsample_shape
               or benchmark.DEFAULT_DOWNSAMPLE_SHAPES])


def _bench_one_backend(args):
    """Measures the rows of `args.backend` in this process (restarted with the right
    Keras backend and allocator first)."""
    from keras_carafe import benchmark

    env = {"KERAS_BACKEND": args.backend}
    if args.backend == "tensorflow":
        env.update(benchmark.CPU_ALLOCATOR_ENV)
    if any(os.environ.get(k) != v for k, v in env.items()):
        # Keras picks its backend, and TensorFlow the CPU allocator that reports
        # peak memory, when they start: the command restarts itself with both.
        os.execve(sys.executable, [sys.executable, "-m", "keras_carafe", *sys.argv[1:]],
                  {**os.environ, **env})
    return benchmark.run(_bench_cases(args), dtype=args.dtype, backend=args.backend,
                         cpu_only=args.cpu_only, repeats=args.repeats)


def _bench_in_child(args, backend):
    """Runs `bench --backend backend` in a child process and returns its rows."""
    from keras_carafe import benchmark

    if importlib.util.find_spec(backend) is None:
        return benchmark.unavailable_rows(_bench_cases(args), args.dtype, backend,
                                           f"{backend} is not installed")
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "rows.json")
        command = [sys.executable, "-m", "keras_carafe", "bench", "--backend", backend,
                   "--json", path, "--dtype", args.dtype, "--repeats", str(args.repeats)]
        command += ["--cpu-only"] if args.cpu_only else []
        for flag, shapes in (("--shape", args.shape), ("--downsample-shape",
                                                       args.downsample_shape)):
            for shape in shapes:
                command += [flag, ",".join(map(str, shape))]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode == 0 and os.path.isfile(path):
            with open(path) as f:
                return benchmark.from_json(f.read())
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return benchmark.unavailable_rows(_bench_cases(args), args.dtype, backend,
                                           f"the {backend} run failed: {tail}")


def _bench(args):
    from keras_carafe import benchmark

    if args.backend:
        results = _bench_one_backend(args)
    else:
        results = [row for backend in benchmark.BACKENDS
                   for row in _bench_in_child(args, backend)]
    print(f"median of {args.repeats} runs after one warm-up; memory = TensorFlow allocator "
          f"peak above the inputs (TF rows), XLA buffer assignment (JAX rows) or PyTorch "
          f"allocator peak above the inputs (PyTorch rows)", flush=True)
    print(benchmark.format_table(results))
    if args.json:
        with open(args.json, "w") as f:
            f.write(benchmark.to_json(results))
        print(f"wrote {args.json}")
    return 0


def _shape(text):
    try:
        parts = tuple(int(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 7 or min(parts) < 1:
        raise argparse.ArgumentTypeError(
            f"a shape is N,H,W,C,factor,kernel_size,groups (7 integers >= 1), got {text!r}")
    return parts


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _demo(args):
    from keras_carafe import demo

    return demo.run(args)


def _segment(args):
    from keras_carafe import segment

    return segment.run(args)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m keras_carafe",
        description="CARAFE upsampling for Keras 3: segmentation benchmark, demo, op build "
                    "and benchmark.")
    commands = parser.add_subparsers(dest="command", required=True)

    segment_parser = commands.add_parser(
        "segment", help="train a segmentation network with each upsampler and seed, and "
                        "compare them with intervals")
    from keras_carafe import segment

    segment.add_arguments(segment_parser)
    segment_parser.set_defaults(handler=_segment)

    demo_parser = commands.add_parser(
        "demo", help="train one network with each upsampler on a real task and compare them")
    from keras_carafe import demo

    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(handler=_demo)

    build_parser = commands.add_parser(
        "build", help="(re)build the compiled kernels now and report what was built")
    build_parser.add_argument(
        "--framework", choices=["tensorflow", "jax", "torch"],
        help="build for this framework only (default: every installed one)")
    build_parser.add_argument(
        "--cuda", action="store_true",
        help="build the CUDA kernels wherever nvcc is found, also for a framework that "
             "cannot run them (a CPU-only TensorFlow, JAX without a CUDA plugin, a CPU "
             "build of PyTorch); the same as KERAS_CARAFE_CUDA=1")
    build_parser.set_defaults(handler=_build)

    bench_parser = commands.add_parser(
        "bench", help="time and measure every implementation of the reassembly side by side")
    bench_parser.add_argument(
        "--shape", action="append", default=[], type=_shape, metavar="N,H,W,C,S,K,G",
        help="an upsampling problem (repeatable; S = scale factor); default: "
             "2,64,64,128,2,5,1 and 2,100,100,256,2,5,1")
    bench_parser.add_argument(
        "--downsample-shape", action="append", default=[], type=_shape,
        metavar="N,H,W,C,S,K,G",
        help="a downsampling problem (repeatable; S = stride); default: 2,128,128,128,2,5,1")
    bench_parser.add_argument(
        "--backend", choices=["tensorflow", "jax", "torch"],
        help="measure only this backend's rows, in this process (default: both, each in a "
             "child process)")
    bench_parser.add_argument("--dtype", default="float32",
                              choices=["float32", "float16", "bfloat16", "float64"])
    bench_parser.add_argument("--repeats", type=_positive_int, default=5, help="timed runs per case")
    bench_parser.add_argument("--cpu-only", action="store_true", help="skip GPUs")
    bench_parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    bench_parser.set_defaults(handler=_bench)

    from keras_carafe import family_benchmark

    family_parser = commands.add_parser(
        "bench-family", help="time FADE, SAPA, DySample and the local similarity against "
                             "CARAFE and bilinear upsampling")
    family_benchmark.add_arguments(family_parser)
    family_parser.set_defaults(handler=family_benchmark.main)

    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())

"""Command line: `python -m keras_carafe {demo,build,bench} ...`."""

import argparse
import os
import sys


def _build(args):
    from keras_carafe.library import build, load

    print(f"building the CARAFE op into {build.cache_root()} ...", flush=True)
    try:
        report = build.ensure_built(force=True)
    except build.BuildError as err:
        print(f"build failed:\n{err}", file=sys.stderr)
        return 1
    print(report.describe())
    try:
        library = load.load()
    except load.OpUnavailableError as err:
        print(f"the library was built but does not load: {err}", file=sys.stderr)
        return 1
    print(f"  CUDA at run time: {library.cuda_status}")
    return 0


def _bench(args):
    from keras_carafe import benchmark

    if any(os.environ.get(k) != v for k, v in benchmark.CPU_ALLOCATOR_ENV.items()):
        # The CPU allocator that reports peak memory must be chosen before
        # TensorFlow starts, so the command restarts itself with it.
        env = {**os.environ, **benchmark.CPU_ALLOCATOR_ENV}
        os.execve(sys.executable, [sys.executable, "-m", "keras_carafe", *sys.argv[1:]], env)

    import tensorflow as tf

    shapes = args.shape or benchmark.DEFAULT_SHAPES
    devices = ["CPU:0"] if args.cpu_only else None
    print(f"TensorFlow {tf.__version__}; median of {args.repeats} runs after one warm-up; "
          f"memory = allocator peak above the inputs", flush=True)
    results = benchmark.run(shapes, dtype=args.dtype, devices=devices, repeats=args.repeats)
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
            f"a shape is N,H,W,C,scale,kernel_size,groups (7 integers >= 1), got {text!r}")
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


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m keras_carafe",
        description="CARAFE upsampling for Keras 3: demo, op build and benchmark.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo_parser = commands.add_parser(
        "demo", help="train one network with each upsampler on a real task and compare them")
    from keras_carafe import demo

    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(handler=_demo)

    build_parser = commands.add_parser(
        "build", help="(re)build the compiled op now and report what was built")
    build_parser.set_defaults(handler=_build)

    bench_parser = commands.add_parser(
        "bench", help="time and measure the compiled op against the pure-TF fallback")
    bench_parser.add_argument(
        "--shape", action="append", default=[], type=_shape, metavar="N,H,W,C,S,K,G",
        help="a problem size (repeatable); default: 2,64,64,128,2,5,1 and 2,100,100,256,2,5,1")
    bench_parser.add_argument("--dtype", default="float32",
                              choices=["float32", "float16", "bfloat16", "float64"])
    bench_parser.add_argument("--repeats", type=_positive_int, default=5, help="timed runs per case")
    bench_parser.add_argument("--cpu-only", action="store_true", help="skip GPUs")
    bench_parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    bench_parser.set_defaults(handler=_bench)

    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())

"""The command line: `python -m keras_carafe build | bench` (and every command's help)."""

import json
import os
import subprocess
import sys

import pytest


def _run(args, tmp_path, **env):
    environment = {**os.environ, "KERAS_CARAFE_CACHE_DIR": str(tmp_path / "cache"),
                   "TF_CPP_MIN_LOG_LEVEL": "2", **env}
    return subprocess.run([sys.executable, "-m", "keras_carafe", *args], capture_output=True,
                          text=True, env=environment, timeout=600)


def test_build_reports_what_where_and_how_long(tmp_path):
    result = _run(["build"], tmp_path, KERAS_CARAFE_NO_CUDA="1")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "built CPU kernels only (CUDA skipped: KERAS_CARAFE_NO_CUDA is set)" in out
    assert f"library:    {tmp_path / 'cache'}" in out
    assert "build time:" in out
    assert "CUDA toolkit: none; KERAS_CARAFE_NO_CUDA is set" in out
    assert "CUDA at run time: CUDA kernels not built" in out


def test_build_failure_prints_the_compiler_message(tmp_path):
    fake = tmp_path / "broken-c++"
    fake.write_text("#!/bin/sh\necho 'fatal error: the compiler says no' >&2\nexit 1\n")
    fake.chmod(0o755)
    result = _run(["build"], tmp_path, CXX=str(fake), KERAS_CARAFE_NO_CUDA="1")
    assert result.returncode == 1
    assert "build failed" in result.stderr
    assert "fatal error: the compiler says no" in result.stderr


def test_bench_prints_every_implementation_side_by_side(tmp_path):
    result = _run(["bench", "--cpu-only", "--repeats", "1", "--shape", "1,4,5,8,2,3,2",
                   "--downsample-shape", "1,5,7,8,2,3,2", "--json",
                   str(tmp_path / "bench.json")], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for direction, shape in (("upsample", "1,4,5,8,2,3,2"), ("downsample", "1,5,7,8,2,3,2")):
        rows = [line.split() for line in result.stdout.splitlines()
                if line.startswith(f"CPU:0   {direction}") and f" {shape} " in line]
        assert [(row[4], " ".join(row[5:7]) if row[6] in ("XLA", "jit") else row[5])
                for row in rows] == [("op", "TF"), ("fallback", "TF"), ("portable", "TF"),
                                     ("portable", "TF XLA"), ("op", "JAX jit"),
                                     ("portable", "JAX jit"), ("op", "PyTorch"),
                                     ("portable", "PyTorch")]
        for row in rows:
            # A time, or the reason the row cannot run here.
            assert row[-4].replace(".", "").isdigit() or "unavailable:" in row, row
    assert "upsample 1,4,5,8,2,3,2 float32: op (TF) vs fallback: forward" in result.stdout
    assert len(json.loads((tmp_path / "bench.json").read_text())) == 16


def test_bench_rejects_a_malformed_shape(tmp_path):
    result = _run(["bench", "--shape", "1,2,3"], tmp_path)
    assert result.returncode != 0
    assert "a shape is N,H,W,C,factor,kernel_size,groups (7 integers >= 1), got '1,2,3'" in result.stderr


@pytest.mark.parametrize("command", ["build", "bench", "demo", "segment"])
def test_every_command_documents_itself(tmp_path, command):
    result = _run([command, "--help"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage: python -m keras_carafe" in result.stdout


def test_bench_rejects_a_repeat_count_below_one(tmp_path):
    result = _run(["bench", "--repeats", "0"], tmp_path)
    assert result.returncode == 2
    assert "--repeats: expected an integer >= 1, got '0'" in result.stderr

"""The command line: `python -m keras_carafe build | bench`."""

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


def test_bench_prints_a_table_for_both_implementations(tmp_path):
    result = _run(["bench", "--cpu-only", "--repeats", "1", "--shape", "1,4,5,8,2,3,2",
                   "--json", str(tmp_path / "bench.json")], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("CPU:0   1,4,5,8")]
    assert [row.split()[3] for row in rows] == ["op", "fallback"]
    assert "op vs fallback forward" in result.stdout
    assert (tmp_path / "bench.json").is_file()


def test_bench_rejects_a_malformed_shape(tmp_path):
    result = _run(["bench", "--shape", "1,2,3"], tmp_path)
    assert result.returncode != 0
    assert "a shape is N,H,W,C,scale,kernel_size,groups (7 integers >= 1), got '1,2,3'" in result.stderr


@pytest.mark.parametrize("command", ["build", "bench", "demo"])
def test_every_command_documents_itself(tmp_path, command):
    result = _run([command, "--help"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage: python -m keras_carafe" in result.stdout


def test_bench_rejects_a_repeat_count_below_one(tmp_path):
    result = _run(["bench", "--repeats", "0"], tmp_path)
    assert result.returncode == 2
    assert "--repeats: expected an integer >= 1, got '0'" in result.stderr

"""Where the compiled kernels cannot be built, on the active Keras backend: `"auto"` runs
without them after one warning that says why, `"op"` raises saying why, and a failed
build names the compiler command.

This module runs unchanged with KERAS_BACKEND=tensorflow, jax and torch.
"""

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from autodiff import BACKEND, to_float64
from carafe_reference import carafe_reference
from keras_carafe import backend
from keras_carafe.library import OpUnavailableError
from keras_carafe.ops import carafe, implementation

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def kernels_unavailable(monkeypatch):
    """The active backend's library cannot be loaded in this process (fresh warnings)."""
    library = sys.modules[f"{backend.current().__name__}.library"]

    def fail():
        raise OpUnavailableError("BuildError: simulated for the test")

    monkeypatch.setattr(library, "load", fail)
    monkeypatch.setattr(implementation, "_warned", set())


def test_auto_runs_without_the_kernels_after_one_warning(rng, kernels_unavailable):
    features = rng.uniform(-1, 1, (1, 3, 4, 4)).astype("float32")
    kernels = rng.uniform(0, 1, (1, 6, 8, 18)).astype("float32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outputs = [carafe(features, kernels, 2, 3, 2, implementation="auto") for _ in range(3)]
    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(runtime) == 1
    assert "simulated for the test" in str(runtime[0].message)
    # The warning points at this file, not at keras_carafe's internals.
    assert runtime[0].filename == __file__
    for out in outputs:
        np.testing.assert_allclose(to_float64(out), carafe_reference(features, kernels, 2, 3, 2),
                                   rtol=1e-5, atol=1e-5)


def test_op_raises_the_reason(rng, kernels_unavailable):
    with pytest.raises(OpUnavailableError, match="simulated for the test"):
        carafe(np.zeros((1, 2, 2, 4), "float32"), np.zeros((1, 4, 4, 9), "float32"), 2, 3, 1,
               implementation="op")


_BROKEN_COMPILER = textwrap.dedent("""
    import json, warnings
    import numpy as np
    from keras_carafe import carafe
    from keras_carafe.library import OpUnavailableError
    features, kernels = np.ones((1, 2, 2, 4), "float32"), np.ones((1, 4, 4, 9), "float32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = [carafe(features, kernels, 2, 3, 1) for _ in range(2)]
    try:
        carafe(features, kernels, 2, 3, 1, implementation="op")
        op_error = ""
    except OpUnavailableError as err:
        op_error = str(err)
    print(json.dumps({"warnings": [str(w.message) for w in caught
                                   if issubclass(w.category, RuntimeWarning)],
                      "centre": float(np.asarray(out[1])[0, 2, 2, 0]), "op_error": op_error}))
""")


def test_a_broken_compiler_gives_one_warning_naming_its_command_and_a_working_layer(tmp_path):
    fake = tmp_path / "broken-c++"
    fake.write_text("#!/bin/sh\necho 'fatal error: the compiler says no' >&2\nexit 1\n")
    fake.chmod(0o755)
    env = {**os.environ, "KERAS_BACKEND": BACKEND, "CXX": str(fake),
           "KERAS_CARAFE_CACHE_DIR": str(tmp_path / "cache"), "KERAS_CARAFE_NO_CUDA": "1",
           "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get(
               "PYTHONPATH")])])}
    result = subprocess.run([sys.executable, "-c", _BROKEN_COMPILER], capture_output=True,
                            text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    [warning] = report["warnings"]
    assert f"$ {fake}" in warning
    assert "fatal error: the compiler says no" in warning
    assert f"$ {fake}" in report["op_error"]
    assert report["centre"] == 4.0  # the 4 taps of the 3 x 3 window inside the 2 x 2 image

"""keras_carafe without TensorFlow: a JAX user's environment.

Each test runs a fresh interpreter in which `import tensorflow` fails (as
where it is not installed) and Keras runs on JAX.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                                reason="jax is not installed in this environment")

# Makes `import tensorflow` raise ModuleNotFoundError, as on a machine without it.
_WITHOUT_TENSORFLOW = textwrap.dedent("""
    import importlib.abc, sys

    class _NoTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _NoTensorFlow())
""")


def _python(code, *args, tmp_path):
    # The build cache is the caller's: the JAX library is built once per test run.
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, "-c", _WITHOUT_TENSORFLOW + textwrap.dedent(code),
                           *args], capture_output=True, text=True, env=env, timeout=300)


def test_the_package_imports_and_runs_without_tensorflow(tmp_path):
    result = _python("""
        import sys
        import numpy as np
        import keras_carafe
        from keras_carafe import CARAFE, carafe, carafe_downsample
        x = np.random.default_rng(0).standard_normal((1, 4, 5, 8)).astype("float32")
        y = CARAFE(compressed_channels=4)(x)
        assert tuple(y.shape) == (1, 8, 10, 8), y.shape
        k = np.ones((1, 2, 3, 9), "float32")
        assert tuple(carafe_downsample(x, k, 2, 3, 1).shape) == (1, 2, 3, 8)
        print("tensorflow" in sys.modules)
    """, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_the_tensorflow_kernels_say_they_need_tensorflow(tmp_path):
    result = _python("""
        from keras_carafe import library
        try:
            library.load_compiled("tensorflow")
        except library.OpUnavailableError as err:
            print(err)
    """, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("the compiled kernels for TensorFlow need TensorFlow, which is not installed"
            in result.stdout)


def test_build_command_for_tensorflow_says_it_is_not_installed(tmp_path):
    result = _python("from keras_carafe.__main__ import main; raise SystemExit(main())",
                     "build", "--framework", "tensorflow", tmp_path=tmp_path)
    assert result.returncode == 1
    assert "tensorflow is not installed here" in result.stderr


def test_the_compiled_kernels_run_on_jax_without_tensorflow(tmp_path):
    result = _python("""
        import sys
        import numpy as np
        from keras_carafe import carafe, library
        out = carafe(np.ones((1, 2, 2, 4), "float32"), np.ones((1, 4, 4, 9), "float32"),
                     scale_factor=2, kernel_size=3, group_size=1, implementation="op")
        print(float(np.asarray(out)[0, 2, 2, 0]), library.load_compiled().report.framework,
              "tensorflow" in sys.modules)
    """, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # Pixel (2, 2) reads the full 3 x 3 neighbourhood of input pixel (1, 1): 4 of its
    # taps fall inside the 2 x 2 image.
    assert result.stdout.strip().splitlines()[-1] == "4.0 jax False"

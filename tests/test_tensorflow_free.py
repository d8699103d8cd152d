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
    env = {**os.environ, "KERAS_BACKEND": "jax", "KERAS_CARAFE_CACHE_DIR": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get(
               "PYTHONPATH")])])}
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


def test_the_compiled_op_loader_says_it_needs_tensorflow(tmp_path):
    result = _python("""
        try:
            from keras_carafe.library import load
        except ModuleNotFoundError as err:
            print(err)
    """, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the compiled CARAFE op needs TensorFlow, which is not installed" in result.stdout


def test_build_command_says_it_needs_tensorflow(tmp_path):
    result = _python("from keras_carafe.__main__ import main; raise SystemExit(main())",
                     "build", tmp_path=tmp_path)
    assert result.returncode == 1
    assert "the compiled CARAFE op needs TensorFlow, which is not installed" in result.stderr


def test_op_implementation_on_jax_says_it_needs_the_tensorflow_backend(tmp_path):
    result = _python("""
        import numpy as np
        from keras_carafe import carafe
        try:
            carafe(np.zeros((1, 2, 2, 4), "float32"), np.zeros((1, 4, 4, 25), "float32"),
                   implementation="op")
        except ValueError as err:
            print(err)
    """, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "implementation='op' (the compiled op) needs the TensorFlow backend" in result.stdout

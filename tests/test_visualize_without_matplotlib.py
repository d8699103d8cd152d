"""`keras_carafe.visualize` imports, and its NumPy helpers run, where matplotlib is not
installed (a JAX or PyTorch install without the `demo` extra); its figure functions
then say which extra brings them."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.all_backends

REPO = Path(__file__).resolve().parent.parent

_WITHOUT_MATPLOTLIB = textwrap.dedent("""
    import importlib.abc
    import sys

    class NoMatplotlib(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "matplotlib" or name.startswith("matplotlib."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoMatplotlib())

    import numpy as np
    import keras_carafe.visualize as visualize

    kernels = np.full((4, 4, 3, 3), 1 / 9)
    entropy = visualize.kernel_entropy(kernels)
    assert np.allclose(entropy, np.log(9)), entropy
    assert "matplotlib" not in sys.modules
    try:
        visualize.plot_loss_curves({"carafe": [1.0, 0.5]})
    except ImportError as error:
        print(error)
    else:
        raise AssertionError("a figure was drawn without matplotlib")
""")


def test_visualize_imports_and_computes_without_matplotlib():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    result = subprocess.run([sys.executable, "-c", _WITHOUT_MATPLOTLIB], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "pip install 'keras-carafe[demo]'" in result.stdout

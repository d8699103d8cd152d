"""Building, caching and loading the compiled kernels, for every framework.

`build` compiles (`csrc/kernels` once per machine, each framework's glue once
per framework version) into a cache; `load` opens a framework's library once
per process; `frameworks` says what each glue is compiled against;
`toolchain` finds compilers and CUDA toolkits; `cuda_probe` decides whether
the CUDA kernels can run here. Nothing here imports a framework until asked
for that framework.
"""

import importlib
import importlib.util

from keras_carafe.library import frameworks
from keras_carafe.library.load import OpUnavailableError

__all__ = ["OpUnavailableError", "installed_frameworks", "is_installed", "load_compiled"]


def is_installed(name):
    """Whether the framework `name` can be imported here (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def installed_frameworks():
    """The frameworks with a glue in this package that are installed here, in build order."""
    return [name for name in frameworks.NAMES if is_installed(name)]


def load_compiled(framework=None):
    """The compiled library of `framework` ("tensorflow", "jax" or "torch"; default: the
    active Keras backend's), built and opened if needed, as a `load.LoadedLibrary`
    (`.report.describe()` says what was built, `.cuda_status` whether CUDA can run).

    Raises OpUnavailableError saying why it cannot be built or opened.
    """
    if framework is None:
        import keras

        framework = keras.backend.backend()
    if framework not in frameworks.NAMES:
        raise OpUnavailableError(
            f"the compiled kernels exist for {', '.join(frameworks.NAMES)}, not for the "
            f"{framework!r} backend")
    if not is_installed(framework):
        name = frameworks.DISPLAY_NAMES[framework]
        raise OpUnavailableError(
            f"the compiled kernels for {name} need {name}, which is not installed here")
    return importlib.import_module(f"keras_carafe.backend.{framework}.library").load()

"""Shared fixtures and settings of the keras_carafe test suite."""

import os

# TensorFlow reads these when it is first imported: keep its C++ logging to
# errors so that test output stays readable.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def pytest_ignore_collect(collection_path, config):
    """With `-m all_backends`, the modules that do not carry the marker are not imported:
    many need TensorFlow, which the JAX and PyTorch environments do not have."""
    if (config.getoption("markexpr") == "all_backends" and collection_path.suffix == ".py"
            and collection_path.name.startswith("test_")
            and "pytestmark = pytest.mark.all_backends" not in collection_path.read_text()):
        return True
    return None


@pytest.fixture
def rng(request):
    """A NumPy generator seeded from the test's id, so every test is reproducible
    on its own and different parametrizations get different data."""
    seed = sum(ord(ch) * (i + 1) for i, ch in enumerate(request.node.nodeid)) % (2 ** 32)
    return np.random.default_rng(seed)


@pytest.fixture(autouse=True)
def _implementation_not_forced(monkeypatch):
    """Tests choose the implementation explicitly; a KERAS_CARAFE_FORCE_FALLBACK
    exported in the shell would silently turn every "op" test into a fallback test."""
    monkeypatch.delenv("KERAS_CARAFE_FORCE_FALLBACK", raising=False)


@pytest.fixture
def forward_and_grads():
    """Runs `carafe` under a GradientTape: returns (output, d/dfeatures, d/dkernels)
    for the upstream gradient `upstream`, as float64 NumPy arrays."""
    import tensorflow as tf

    from keras_carafe.ops import carafe

    def run(features, kernels, upstream, scale_factor, kernel_size, group_size,
            implementation, dtype=None):
        features, kernels, upstream = (
            tf.constant(x) if dtype is None else tf.cast(x, dtype)
            for x in (features, kernels, upstream))
        with tf.GradientTape() as tape:
            tape.watch([features, kernels])
            out = carafe(features, kernels, scale_factor, kernel_size, group_size,
                         implementation=implementation)
        grads = tape.gradient(out, [features, kernels], output_gradients=upstream)
        return tuple(tf.cast(x, tf.float64).numpy() for x in (out, *grads))

    return run

"""The README's Python examples run as written."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert EXAMPLES


@pytest.mark.parametrize("source", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_readme_example_runs(source):
    exec(compile(source, str(README), "exec"), {})


def test_readme_fpn_example_upsamples_with_carafe():
    import numpy as np

    from keras_carafe import CARAFE

    namespace = {}
    fpn_source = next(s for s in EXAMPLES if "fpn" in s)
    exec(compile(fpn_source, str(README), "exec"), namespace)
    fpn = namespace["fpn"]
    assert sum(isinstance(layer, CARAFE) for layer in fpn.layers) == 2
    inputs = [np.zeros((1, s, s, 256), "float32") for s in (64, 32, 16)]
    assert [tuple(o.shape) for o in fpn(inputs)] == [(1, s, s, 256) for s in (64, 32, 16)]

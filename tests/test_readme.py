"""The Python examples of the README and of the pages in docs/ run as written."""

import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]


def _examples(page):
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


EXAMPLES = _examples(README)
ALL_EXAMPLES = [(page, source) for page in PAGES for source in _examples(page)]


def test_readme_has_examples():
    assert EXAMPLES


def test_the_segmentation_page_has_an_example():
    assert _examples(REPO / "docs" / "segmentation.md")


@pytest.mark.parametrize("page, source", ALL_EXAMPLES,
                         ids=[f"{page.stem}-example{i}" for i, (page, _) in
                              enumerate(ALL_EXAMPLES)])
def test_example_runs(page, source):
    exec(compile(source, str(page), "exec"), {})


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

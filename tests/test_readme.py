"""The Python examples of the README and of the documentation (docs/**/*.md) run as written.

Each ```python block runs on its own, in a fresh namespace and a temporary working
directory. A block that cannot run in the tests (it needs a GPU, a checkpoint file or a
package the tests do not install) is preceded by a line `<!-- not executed: REASON -->`.
"""

import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
_BLOCK = re.compile(r"^(?:(<!-- not executed: (?P<reason>[^\n]*?) -->)\n)?```python\n(?P<source>.*?)^```",
                    flags=re.S | re.M)


def _blocks():
    for page in PAGES:
        for number, match in enumerate(_BLOCK.finditer(page.read_text())):
            yield page, number, match.group("source"), match.group("reason")


BLOCKS = list(_blocks())
RUN = [(page, number, source) for page, number, source, reason in BLOCKS if reason is None]


def _id(page, number):
    return f"{page.relative_to(REPO)}:{number}"


def test_readme_and_docs_have_examples():
    pages = {page for page, _, _ in RUN}
    assert REPO / "README.md" in pages
    assert len(pages) > 3


def test_blocks_left_out_say_why():
    left_out = [(page, reason) for page, _, _, reason in BLOCKS if reason is not None]
    assert all(reason.strip() for _, reason in left_out)
    # Left-out blocks are the exception: each one is a place the docs are not checked.
    assert len(left_out) <= 2, left_out


def test_every_python_fence_is_collected():
    # A fence the pattern misses (say, "```python " with a trailing space) would silently
    # never run.
    for page in PAGES:
        fences = re.findall(r"^```python", page.read_text(), flags=re.M)
        assert len(fences) == sum(1 for p, *_ in BLOCKS if p == page), page


@pytest.mark.parametrize("page, number, source", RUN, ids=[_id(p, n) for p, n, _ in RUN])
def test_example_runs(page, number, source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(source, f"{page}:block {number}", "exec"), {})


def test_fpn_example_upsamples_with_carafe(tmp_path, monkeypatch):
    import numpy as np

    from keras_carafe import CARAFE

    monkeypatch.chdir(tmp_path)
    namespace = {}
    fpn_source = next(source for _, _, source in RUN if "fpn = keras.Model" in source)
    exec(compile(fpn_source, "fpn example", "exec"), namespace)
    fpn = namespace["fpn"]
    assert sum(isinstance(layer, CARAFE) for layer in fpn.layers) == 2
    inputs = [np.zeros((1, s, s, 256), "float32") for s in (64, 32, 16)]
    assert [tuple(o.shape) for o in fpn(inputs)] == [(1, s, s, 256) for s in (64, 32, 16)]


def test_quick_start_saves_and_exports(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    readme = next(source for page, _, source in RUN
                  if page.name == "README.md" and "model.export" in source)
    exec(compile(readme, "README quick start", "exec"), {})
    assert (tmp_path / "upsampler.keras").is_file()
    assert (tmp_path / "upsampler_savedmodel" / "saved_model.pb").is_file()

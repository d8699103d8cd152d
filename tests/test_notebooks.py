"""Specification of the notebooks in notebooks/: they run from scratch, and are stored run.

Each notebook is re-executed in quick mode (KERAS_CARAFE_NOTEBOOK_QUICK=1, small
training runs) in a fresh temporary folder, on a kernel that runs this very
interpreter, so that it sees the same installed packages as the tests.
"""

import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = ["01_quickstart.ipynb", "02_learned_kernels.ipynb",
             "03_attribution_tf_keras_vis.ipynb", "04_carafe_plus_plus.ipynb",
             "05_segmentation.ipynb"]
KERNEL_NAME = "keras-carafe-tests"
MAX_STORED_BYTES = 2 * 1024 * 1024


@pytest.fixture
def kernel_for_this_interpreter(tmp_path, monkeypatch):
    """A kernelspec whose kernel is `sys.executable`, found through JUPYTER_PATH.

    An installed "python3" kernelspec may start another Python (its argv is
    often a bare "python" resolved on PATH); this one cannot. The kernel
    imports keras_carafe from this checkout, as the tests do, not from an
    installed copy that may be older.
    """
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "keras-carafe tests",
        "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    # notebooks/ too: notebook 03 imports its helpers from its own folder, as it does when
    # Jupyter runs it there.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO), str(NOTEBOOK_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]))
    return KERNEL_NAME


def _load(name):
    import nbformat

    return nbformat.read(NOTEBOOK_DIR / name, as_version=4)


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_without_errors_in_quick_mode(name, tmp_path, monkeypatch,
                                                    kernel_for_this_interpreter):
    from nbclient import NotebookClient

    monkeypatch.setenv("KERAS_CARAFE_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    # Whatever a demo run left behind must not be needed (nor used).
    monkeypatch.delenv("KERAS_CARAFE_DEMO_OUTPUT", raising=False)
    workdir = tmp_path / "run"
    workdir.mkdir()
    client = NotebookClient(_load(name), kernel_name=kernel_for_this_interpreter, timeout=300,
                            resources={"metadata": {"path": str(workdir)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_stored_notebook_carries_the_outputs_of_a_complete_run(name):
    cells = [cell for cell in _load(name).cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in cells] == list(range(1, len(cells) + 1))
    errors = [output for cell in cells for output in cell.outputs
              if output.output_type == "error"]
    assert errors == []


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_stored_notebook_was_run_in_full_mode(name):
    first = next(cell for cell in _load(name).cells if cell.cell_type == "code")
    assert "quick mode: False" in "".join(output.get("text", "") for output in first.outputs)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_stored_notebook_embeds_its_figures_as_png_and_stays_small(name):
    outputs = [output for cell in _load(name).cells if cell.cell_type == "code"
               for output in cell.outputs]
    assert any("image/png" in output.get("data", {}) for output in outputs)
    assert os.path.getsize(NOTEBOOK_DIR / name) < MAX_STORED_BYTES


def test_stored_notebooks_together_stay_small():
    assert sum(os.path.getsize(NOTEBOOK_DIR / name) for name in NOTEBOOKS) < MAX_STORED_BYTES

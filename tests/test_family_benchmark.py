"""`python -m keras_carafe bench-family`: every row runs and reports what it measured."""

import json

import numpy as np

from keras_carafe import family_benchmark
from keras_carafe.__main__ import main


def test_every_row_of_the_active_backend_is_timed_with_its_costs():
    rows = family_benchmark.run("tensorflow", shape=(1, 4, 6, 8), repeats=2)
    assert [r.unavailable for r in rows] == [""] * len(rows)
    assert [r.what for r in rows] == [*family_benchmark.LAYERS, "local_similarity",
                                      "local_similarity", "local_similarity"]
    assert [r.implementation for r in rows[-3:]] == ["op", "fallback", "portable"]
    assert all(np.isfinite([r.forward_ms, r.forward_backward_ms]).all() for r in rows)
    by_name = {r.what: r for r in rows}
    for name in ("CARAFE", "FADE", "SAPA", "DySample", "DySample+"):
        layer = family_benchmark.make_layer(name)
        layer(*family_benchmark.layer_inputs(name, (1, 4, 6, 8)))
        assert by_name[name].params == layer.count_params()


def test_the_command_writes_its_rows_as_json(tmp_path, capsys):
    path = tmp_path / "rows.json"
    assert main(["bench-family", "--backend", "tensorflow", "--shape", "1,2,2,8",
                 "--repeats", "1", "--json", str(path)]) == 0
    rows = json.loads(path.read_text())
    assert {row["what"] for row in rows} >= {"FADE", "SAPA", "DySample", "local_similarity"}
    assert "FADE" in capsys.readouterr().out

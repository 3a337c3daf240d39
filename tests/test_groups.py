"""fxp.groups: a group's metrics as mean, std and n."""
import json

import pytest

from fxp import groups


def test_spread_is_the_sample_std_over_finite_values():
    entry = groups.spread([0.97, 0.975, 0.98, float("nan")])
    assert entry["n"] == 3 and entry["mean"] == pytest.approx(0.975)
    assert entry["std"] == pytest.approx(0.005)
    assert groups.spread([0.5]) == dict(mean=0.5, std=0.0, n=1)
    assert groups.spread([]) == dict(mean=None, std=None, n=0)


def test_summarize_keeps_the_metrics_every_member_has_and_cells_read_as_tables_show_them():
    summary = groups.summarize([{"accuracy": 0.97, "valid_loss": 0.1}, {"accuracy": 0.974}])
    assert list(summary) == ["accuracy"]
    assert groups.cell(summary["accuracy"]) == "0.972 ± 0.003 (n=2)"
    assert groups.cell({}) == ""


def test_a_folder_is_a_group_only_with_a_readable_record_of_a_known_kind(tmp_path):
    assert not groups.is_group(tmp_path)
    (tmp_path / groups.GROUP).write_text(json.dumps(groups.record(tmp_path, "cv", ["fold0", "fold1"], k=2)))
    assert groups.read(tmp_path) == dict(kind="cv", members=["fold0", "fold1"], k=2)
    (tmp_path / groups.GROUP).write_text('{"kind": "bags"}')
    assert not groups.is_group(tmp_path)
    with pytest.raises(ValueError, match="bags"):
        groups.record(tmp_path, "bags", [])

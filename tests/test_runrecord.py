"""The run record (harness/runrecord.py): one constructor, every field present, older
schemas upgraded on load, unknown ones refused."""

import json
import os

import pytest

from harness import metrics, records, runrecord

pytestmark = pytest.mark.timeout(30)

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "runs")


def _complete(r: dict) -> None:
    for k in runrecord.RunRecord.__annotations__:
        assert k in r, k
    for k in runrecord.OBJECTS:
        assert isinstance(r[k], dict), k
    assert all(m.name in r["metrics"] for m in metrics.run_metrics())


def test_new_run_has_every_field_in_the_current_schema():
    r = runrecord.new_run(run_id="x", batch_id="b", kind="compare", spec="master", server="master",
                          link="loopback", round=0, position=1, config={"concurrency": 4},
                          labels={"a": 1})
    _complete(r)
    assert r["schema"] == runrecord.SCHEMA == 2 and r["labels"] == {"a": 1}
    assert runrecord.upgrade(r) is r              # complete: nothing to do, no copy


def test_old_records_load_upgraded_and_keep_what_they_measured(tmp_path):
    old = json.load(open(os.path.join(FIXTURES, "fixA-r0-master.json")))
    assert old["schema"] == 1 and "events_per_pass" not in old["metrics"]
    old["metrics"].pop("server_bound", None)
    old["env"] = None
    old["server_stats"].update(events=300, passes=100, served=200000)   # counted in STATS only
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "old.json").write_text(json.dumps(old))
    (runs / "future.json").write_text(json.dumps({**old, "run_id": "f", "schema": 99}))
    got, problems = records.load_runs(str(tmp_path))
    assert [os.path.basename(p) for p, _ in problems] == ["future.json"]
    assert "unknown schema 99" in problems[0][1]
    (r,) = got
    _complete(r)
    assert r["schema"] == 2 and r["env"] == {}
    assert r["metrics"]["server_bound"] is None
    assert r["metrics"]["events_per_pass"] == 3.0               # read from its STATS line
    for k, v in old["metrics"].items():                         # nothing measured is changed
        assert r["metrics"][k] == v
    assert runrecord.upgrade(old) is not old and "events_per_pass" not in old["metrics"]


def test_unknown_schema_is_refused_not_guessed():
    with pytest.raises(runrecord.UnknownSchema):
        runrecord.upgrade({"schema": 3, "run_id": "x"})
    with pytest.raises(runrecord.UnknownSchema):
        runrecord.upgrade({"run_id": "x"})                      # a file must say its schema
    assert runrecord.upgrade({"run_id": "x"}, strict=False)["schema"] == 2

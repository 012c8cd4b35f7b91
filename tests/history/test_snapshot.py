"""Snapshots on the real store (upstream §3.5) and the JavaScript-compatible content hash."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.history._data import node, sample
from timetravel.errors import TimeTravelError
from timetravel.history import SnapshotData, canonical, parse_snapshot
from timetravel.history.service import (
    capture_snapshot,
    list_snapshots,
    load_latest_snapshot,
    load_snapshot,
)
from timetravel.store import Database


def test_capture_returns_the_row(db: Database) -> None:
    row = capture_snapshot(db, "run-1", 0, sample())
    assert (row.run_id, row.frame_no) == ("run-1", 0)
    assert len(row.content_hash) == 64
    assert isinstance(row.created_at_ms, int)


def test_capture_again_overwrites_the_frame(db: Database) -> None:
    capture_snapshot(db, "run-1", 0, sample())
    row = capture_snapshot(db, "run-1", 0, sample(prompt="different"))
    assert (row.run_id, row.frame_no) == ("run-1", 0)
    assert json.loads(row.input_json)["prompt"] == "different"
    loaded = load_snapshot(db, "run-1", 0)
    assert loaded is not None and loaded == row
    assert len(list_snapshots(db, "run-1")) == 1


def test_list_snapshots(db: Database) -> None:
    capture_snapshot(db, "run-1", 0, sample())
    capture_snapshot(db, "run-1", 1, sample(implement="running", implement_last=1))
    assert [s.frame_no for s in list_snapshots(db, "run-1")] == [0, 1]


def test_load_missing_snapshot(db: Database) -> None:
    assert load_snapshot(db, "nonexistent", 0) is None


def test_load_snapshot(db: Database) -> None:
    capture_snapshot(db, "run-1", 0, sample())
    capture_snapshot(db, "run-1", 1, sample(implement="running", implement_last=1))
    loaded = load_snapshot(db, "run-1", 1)
    assert loaded is not None and loaded.frame_no == 1


def test_load_latest_snapshot(db: Database) -> None:
    for frame in (0, 1, 2):
        capture_snapshot(db, "run-1", frame, sample())
    latest = load_latest_snapshot(db, "run-1")
    assert latest is not None and latest.frame_no == 2


def test_load_latest_of_unknown_run(db: Database) -> None:
    assert load_latest_snapshot(db, "nonexistent") is None


def test_list_unknown_run(db: Database) -> None:
    assert list_snapshots(db, "nope") == []


def test_list_is_in_frame_order(db: Database) -> None:
    for frame in (2, 0, 1):
        capture_snapshot(db, "run-1", frame, sample())
    entries = list_snapshots(db, "run-1")
    assert [e.frame_no for e in entries] == [0, 1, 2]
    assert entries[0].content_hash and entries[0].created_at_ms > 0


def test_parse_snapshot(db: Database) -> None:
    parsed = parse_snapshot(capture_snapshot(db, "run-1", 0, sample()))
    assert (parsed.run_id, parsed.frame_no) == ("run-1", 0)
    assert list(parsed.nodes) == ["analyze::0", "implement::0"]
    assert parsed.nodes["analyze::0"]["state"] == "finished"
    assert parsed.nodes["implement::0"]["state"] == "pending"
    assert parsed.input == {"prompt": "Build something"}
    assert list(parsed.ralph) == ["main-loop"]
    assert parsed.ralph["main-loop"]["done"] is False


def test_parse_keeps_the_last_duplicate_key(db: Database) -> None:
    data = SnapshotData(nodes=[node("a", "pending"), node("a", "finished", 1)])
    parsed = parse_snapshot(capture_snapshot(db, "run-1", 0, data))
    assert parsed.nodes == {"a::0": node("a", "finished", 1)}


def test_capture_accepts_a_dict_with_upstream_keys(db: Database) -> None:
    row = capture_snapshot(
        db,
        "run-1",
        0,
        {"nodes": [], "outputs": {}, "ralph": [], "input": {}, "vcsPointer": "abc"},
    )
    assert row.vcs_pointer == "abc"


# -- content hash -----------------------------------------------------------------------------


def test_hash_is_sha256_of_the_js_json_text(db: Database) -> None:
    data = sample()
    row = capture_snapshot(db, "run-1", 0, data)
    text = json.dumps(
        {"nodes": data.nodes, "outputs": data.outputs, "ralph": data.ralph, "input": data.input},
        separators=(",", ":"),
        ensure_ascii=False,
    )
    import hashlib

    assert row.content_hash == hashlib.sha256(text.encode()).hexdigest()


def test_hash_ignores_vcs_pointer_and_workflow_hash(db: Database) -> None:
    a = capture_snapshot(db, "run-a", 0, sample())
    b = capture_snapshot(db, "run-b", 0, sample(vcs_pointer="p", workflow_hash="w"))
    assert a.content_hash == b.content_hash


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1"),
        (-0.0, "0"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1.5e-7, "1.5e-7"),
        (1e-6, "0.000001"),
        (0.00001, "0.00001"),
        (123.456, "123.456"),
        (float("nan"), "null"),
        (float("inf"), "null"),
        ({"b": 1, "10": 2, "2": 3, "02": 4}, '{"2":3,"10":2,"b":1,"02":4}'),
        ("é\u2028", '"é\u2028"'),
        ("\ud800", '"\\ud800"'),
        ([True, None, "x"], '[true,null,"x"]'),
    ],
)
def test_canonical_json_matches_json_stringify(value: object, text: str) -> None:
    assert canonical.dumps(value) == text


def test_canonical_json_agrees_with_node() -> None:
    """Cross-check against a real ``JSON.stringify`` when node is installed."""
    node_bin = shutil.which("node")
    if node_bin is None:
        pytest.skip("node is not installed")
    values = [
        {"b": 1.0, "2": [1.5e-7, 1e21, 1e-5, 0.1, 2.5e-300, 123456789.125], "a": {"x": "é"}},
        {"nodes": [node("n", "finished", 3)], "input": {"k": [1.0, -0.0, 3.14]}},
    ]
    for value in values:
        source = json.dumps(value)
        js = subprocess.run(
            [node_bin, "-e", f"process.stdout.write(JSON.stringify({source}))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert canonical.dumps(value) == js


def test_large_snapshot_round_trip(db: Database) -> None:
    nodes = [node(f"task-{i}", "finished", 1) for i in range(10_000)]
    row = capture_snapshot(
        db, "big", 0, SnapshotData(nodes=nodes, outputs={"o": list(range(1000))})
    )
    parsed = parse_snapshot(row)
    assert len(parsed.nodes) == 10_000
    assert parsed.nodes["task-9999::0"]["lastAttempt"] == 1


@pytest.mark.parametrize("run_id", ["", "r" * 257, "a\x00b"])
def test_capture_refuses_a_run_id_the_store_cannot_hold(db: Database, run_id: str) -> None:
    with pytest.raises(TimeTravelError) as err:
        capture_snapshot(db, run_id, 0, sample())
    assert err.value.code == "InvalidInput"


def test_nul_inside_the_json_parts_is_escaped(db: Database) -> None:
    row = capture_snapshot(db, "run-1", 0, SnapshotData(input={"prompt": "a\x00b"}))
    assert "\\u0000" in row.input_json
    assert parse_snapshot(row).input == {"prompt": "a\x00b"}

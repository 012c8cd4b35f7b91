from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.enginedb.conftest import put_snapshot, table_rows
from timetravel.enginedb import features as feat
from timetravel.enginedb.snapshots import (
    SnapshotError,
    delete_snapshots_after,
    load_snapshot,
    load_snapshots,
    snapshot_sources_after,
)
from timetravel.store import Database
from timetravel.store.backups import Backups
from timetravel.store.snapshot_copies import copy_snapshots_after, restore_snapshots

SNAP_TABLES = (
    "_smithers_snapshots",
    "_smithers_snapshot_payload_refs",
    "_smithers_snapshot_contents",
)
NODES = [{"nodeId": "a", "iteration": 0, "state": "finished", "lastAttempt": 1}]


def test_features_of_032(db032: Database) -> None:
    with db032.read() as conn:
        f = feat.engine_features(conn)
    assert f == feat.EngineFeatures(True, True, True, True, True, True, True)
    assert f.is_v032


def test_features_of_016(db: Database) -> None:
    """Our 0.16-shaped schema (timetravel/schema.py) has none of them."""
    with db.read() as conn:
        old = feat.engine_features(conn)
    assert old == feat.EngineFeatures()
    assert not any(vars(old).values())


def test_content_addressed_and_inline(db032: Database) -> None:
    with db032.write() as conn:
        h1 = put_snapshot(conn, "r", 1, NODES, {"outA": []})
        put_snapshot(conn, "r", 2, NODES, {"outA": [{"nodeId": "a"}]}, inline=True)
        put_snapshot(conn, "other", 1, [], {})
    with db032.read() as conn:
        s1 = load_snapshot(conn, "r", 1)
        s2 = load_snapshot(conn, "r", 2)
        assert load_snapshot(conn, "r", 3) is None
        many = load_snapshots(conn, "r", [2, 1, 3, 2])
        everything = load_snapshots(conn, "r")
    assert s1 is not None and s1.content_addressed and s1.content_hash == h1
    assert s1.nodes() == NODES and s1.outputs() == {"outA": []}
    assert s1.ralph_json == "[]" and s1.created_at_ms == 1000
    assert s2 is not None and not s2.content_addressed
    assert s2.outputs() == {"outA": [{"nodeId": "a"}]}
    assert list(many) == [1, 2] and many[1] == s1 and many[2] == s2
    assert everything == many


def test_dangling_or_mismatched_reference_is_an_error(db032: Database) -> None:
    with db032.write() as conn:
        put_snapshot(conn, "r", 1, NODES, {})
        conn.execute(text("UPDATE _smithers_snapshots SET content_hash = 'x' WHERE frame_no = 1"))
        conn.execute(
            text(
                "INSERT INTO _smithers_snapshots VALUES ('r', 2, '', '', '', '', NULL, NULL,"
                " 'nothing', 5)"
            )
        )
    with db032.read() as conn:
        with pytest.raises(SnapshotError, match="mismatch"):
            load_snapshot(conn, "r", 1)
        with pytest.raises(SnapshotError, match="no content reference"):
            load_snapshot(conn, "r", 2)


def test_016_database_reads_inline(db: Database) -> None:
    with db.write() as conn:
        put_snapshot(conn, "r", 0, NODES, {"out_a": []}, inline=True)
    with db.read() as conn:
        snap = load_snapshot(conn, "r", 0)
        sources = snapshot_sources_after(conn)
        after = {"run_id": "r", "frame_no": -1}
        counts = {
            name: conn.execute(text(f"SELECT COUNT(*) {source}"), after).scalar_one()
            for name, source, _ in sources
        }
    assert snap is not None and snap.nodes() == NODES
    assert counts == {"_smithers_snapshots": 1}  # no refs or contents on 0.16 tables


def _dump(db: Database) -> dict[str, list[tuple[object, ...]]]:
    with db.read() as conn:
        return {t: table_rows(conn, t) for t in SNAP_TABLES}


def test_delete_and_restore_is_exact_with_ref_counts(db032: Database) -> None:
    with db032.write() as conn:
        shared = [{"nodeId": "a", "iteration": 0, "state": "pending", "lastAttempt": None}]
        put_snapshot(conn, "r", 1, shared, {})
        put_snapshot(conn, "r", 2, NODES, {"x": 1})  # only referenced by frames > 1 ...
        put_snapshot(conn, "r", 3, NODES, {"x": 1})  # ... twice (ref_count 2)
        put_snapshot(conn, "r", 4, shared, {})  # shares frame 1's content (survives, 2 → 1)
        put_snapshot(conn, "r", 5, NODES, {"y": 2}, inline=True)  # an inline row
        put_snapshot(conn, "other", 7, NODES, {"x": 1})  # another run shares frame 2's
        put_snapshot(conn, "r", 6, [], {"z": 3})  # only referenced once
    before = _dump(db032)
    counts = {r[0]: r[-1] for r in before["_smithers_snapshot_contents"]}
    assert sorted(counts.values()) == [1, 2, 3]

    db032.migrate()
    bk = Backups(db032)
    with db032.write() as conn:
        copy_snapshots_after(conn, bk, 1, "r", 1)
        assert delete_snapshots_after(conn, "r", 1) == 5
    with db032.read() as conn:
        assert [s["frame_no"] for s in bk.json_rows(conn, 1, "_smithers_snapshots")] == [
            2, 3, 4, 5, 6
        ]  # fmt: skip
        assert [r["frame_no"] for r in bk.json_rows(conn, 1, feat.SNAPSHOT_REFS)] == [2, 3, 4, 6]
        dead = "SELECT COUNT(*) FROM _timetravel_bk_snapshot_contents WHERE audit_id = 1"
        assert conn.execute(text(dead)).scalar_one() == 1  # only the frame-6 content dies
    after_delete = _dump(db032)
    assert len(after_delete["_smithers_snapshot_contents"]) == 2
    assert sorted(r[-1] for r in after_delete["_smithers_snapshot_contents"]) == [1, 1]

    with db032.write() as conn:
        restore_snapshots(conn, bk, 1)
    assert _dump(db032) == before
    with db032.write() as conn:  # repeating a restore changes nothing
        restore_snapshots(conn, bk, 1)
    assert _dump(db032) == before
    with db032.read() as conn:
        assert load_snapshot(conn, "r", 6) is not None

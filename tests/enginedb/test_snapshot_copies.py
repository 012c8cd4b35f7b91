"""The snapshots a step deletes come back exactly from their copies (issue #13): payloads
(``_smithers_snapshot_contents``) typed by ``INSERT … SELECT`` each way, the snapshot rows and
refs as JSON rows; a content shared with a kept snapshot is neither copied nor deleted; copies an
earlier release made as JSON rows, and rows that cannot go typed, come back too; without the
typed table everything goes as JSON. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text

from tests.enginedb.conftest import JsonSeen, copies, put_snapshot, table_rows
from timetravel import schema
from timetravel.enginedb.features import SNAPSHOT_CONTENTS, SNAPSHOT_REFS
from timetravel.store import Database
from timetravel.store.backups import Backups
from timetravel.store.snapshot_copies import move_snapshots_after, restore_snapshots

RUN = "snaps"
AUDIT = 11
TABLES = ("_smithers_snapshots", SNAPSHOT_REFS, SNAPSHOT_CONTENTS, "_smithers_vcs_tags")


def _seed(db: Database) -> None:
    """Frames 1-5 of ``RUN``: frames 2 and 4 share a payload (one content, two refs), each
    other frame has its own; payloads hold quotes, backslashes and non-ASCII text. Another
    run's snapshot shares frame 5's payload. Frames 2 and 4 have a VCS tag."""
    with db.write() as conn:
        for run in (RUN, "other"):
            conn.execute(
                text(
                    "INSERT INTO _smithers_runs (run_id, workflow_name, status, created_at_ms) "
                    "VALUES (:r, 'w', 'finished', 1)"
                ),
                {"r": run},
            )
        for no in range(1, 6):
            body = 2 if no == 4 else no
            nodes = [{"nodeId": f'n"{body}\\é', "iteration": 0, "state": "finished"}]
            outputs = {"out_a": [{"nodeId": f"n{body}", "value": body * 1.5}] * 50}
            put_snapshot(conn, RUN, no, nodes, outputs, created_at_ms=1000 + no)
            if no == 5:
                put_snapshot(conn, "other", 1, nodes, outputs, created_at_ms=2000)
            if no in (2, 4):  # a VCS tag kept (frame 2) and one that goes with frame 4
                conn.execute(
                    text(
                        "INSERT INTO _smithers_vcs_tags (run_id, frame_no, vcs_type, vcs_pointer,"
                        " created_at_ms) VALUES (:r, :n, 'jj', :p, 5)"
                    ),
                    {"r": RUN, "n": no, "p": f"p{no}"},
                )


def _dump(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    with db.read() as conn:
        return {t: table_rows(conn, t) for t in TABLES}


def _refs(db: Database) -> list[tuple[Any, ...]]:
    with db.read() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(f"SELECT content_hash, ref_count FROM {SNAPSHOT_CONTENTS} ORDER BY 1")
            )
        ]


def _copy_delete(db: Database, bk: Backups, frame_no: int) -> None:
    with db.write() as conn:
        move_snapshots_after(conn, bk, AUDIT, RUN, frame_no)


def test_contents_go_typed_and_come_back_exactly(
    db032: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = db032
    db.migrate()
    _seed(db)
    before, counts = _dump(db), _refs(db)
    bk = Backups(db)
    _copy_delete(db, bk, 2)
    after_delete = _dump(db)
    # Frames 3-5 went; frame 3's payload with them, frame 4's stays (frame 2 refers to it),
    # frame 5's stays (the other run refers to it).
    assert len(after_delete[SNAPSHOT_CONTENTS]) == len(before[SNAPSHOT_CONTENTS]) - 1
    assert [t[1] for t in after_delete["_smithers_vcs_tags"]] == [2]  # frame 4's tag went
    assert copies(db, schema.bk_snapshot_contents, AUDIT) == 1
    with db.read() as conn:
        json_tables = {
            r[0]
            for r in conn.execute(
                text(f"SELECT table_name FROM {schema.bk_rows.name} WHERE audit_id = :a"),
                {"a": AUDIT},
            )
        }
    # No payload as JSON; the snapshot rows, refs and VCS tags are.
    assert json_tables == {"_smithers_snapshots", SNAPSHOT_REFS, "_smithers_vcs_tags"}
    seen = JsonSeen(db, monkeypatch)
    with db.write() as conn:
        restore_snapshots(conn, bk, AUDIT)
    assert _dump(db) == before
    assert _refs(db) == counts  # the ref triggers counted every reference back
    # The three snapshot rows, refs and one tag decoded (made by the database); no payload.
    assert (seen.encoded, seen.decoded) == (0, 3 + 3 + 1)
    with db.write() as conn:  # idempotent
        restore_snapshots(conn, bk, AUDIT)
    assert _dump(db) == before


def test_json_copies_of_contents_come_back_with_the_typed_ones(db032: Database) -> None:
    """A payload copied as a JSON row (by an earlier release, or on SQLite a value of another
    type than its column's, here a blob in a text column, which keeps its type) comes back
    beside the typed copies."""
    db = db032
    db.migrate()
    _seed(db)
    odd = db.dialect == "sqlite"
    if odd:  # frame 3's input_json stored as a blob: it goes as a JSON row
        with db.write() as conn:
            conn.execute(
                text(
                    f"UPDATE {SNAPSHOT_CONTENTS} SET input_json = X'7B7D' WHERE content_hash = "
                    f"(SELECT content_hash FROM {SNAPSHOT_REFS} WHERE run_id = :r "
                    "AND frame_no = 3)"
                ),
                {"r": RUN},
            )
    before = _dump(db)
    bk = Backups(db)
    _copy_delete(db, bk, 2)
    assert copies(db, schema.bk_snapshot_contents, AUDIT) == 1 - odd
    # And the content of a snapshot the earlier release deleted, copied as a JSON row.
    legacy = {
        "content_hash": "legacy",
        "nodes_json": "[]",
        "outputs_json": "{}",
        "ralph_json": "[]",
        "input_json": "{}",
        "ref_count": 1,
    }
    with db.write() as conn:
        conn.execute(
            schema.bk_rows.insert(),
            {"audit_id": AUDIT, "table_name": SNAPSHOT_CONTENTS, "row_json": json.dumps(legacy)},
        )
        restore_snapshots(conn, bk, AUDIT)
    got = _dump(db)
    legacy_row = ("legacy", "[]", "{}", "[]", "{}", 0)  # unreferenced: its count is 0
    assert got[SNAPSHOT_CONTENTS] == sorted([*before[SNAPSHOT_CONTENTS], legacy_row], key=repr)
    assert {t: got[t] for t in TABLES if t != SNAPSHOT_CONTENTS} == {
        t: before[t] for t in TABLES if t != SNAPSHOT_CONTENTS
    }
    if odd:
        with db.read() as conn:
            kinds = conn.execute(text(f"SELECT typeof(input_json) FROM {SNAPSHOT_CONTENTS}")).all()
        assert sorted(k[0] for k in kinds).count("blob") == 1


def test_without_the_typed_table_contents_go_as_json(db032: Database) -> None:
    """A database migrated before the typed table existed keeps working (the table is optional:
    not reported missing): payloads are JSON rows, and come back the same way."""
    db = db032
    db.migrate()
    _seed(db)
    with db.write() as conn:
        conn.execute(text(f"DROP TABLE {schema.bk_snapshot_contents.name}"))
    assert schema.bk_snapshot_contents.name not in db.missing_tables()
    before = _dump(db)
    bk = Backups(db)
    _copy_delete(db, bk, 2)
    with db.read() as conn:
        n = conn.execute(
            text(
                f"SELECT COUNT(*) FROM {schema.bk_rows.name} WHERE audit_id = :a "
                "AND table_name = :t"
            ),
            {"a": AUDIT, "t": SNAPSHOT_CONTENTS},
        ).scalar_one()
    assert n == 1
    with db.write() as conn:
        restore_snapshots(conn, bk, AUDIT)
    assert _dump(db) == before

"""Copies of the engine-0.32 snapshots after a frame, and of the run's VCS tags after it, which
a rewind and a task reset delete and an undo replaces: :func:`copy_snapshots_after` backs them
up, :func:`drop_snapshots_after` deletes them, :func:`move_snapshots_after` does both, and
:func:`restore_snapshots` puts them back exactly (reference counts included,
:func:`~timetravel.enginedb.restore_snapshot_rows`).

**Typed contents.** The payloads (``_smithers_snapshot_contents``: four JSON texts per distinct
content, each the whole run's state at its frame, hundreds of kilobytes on a long run) go to
``_timetravel_bk_snapshot_contents`` by ``INSERT … SELECT`` and come back the same way when the
table has its six known columns and the typed table exists (``timetravel migrate`` creates it).
As JSON rows the database had to escape every payload into a JSON string and a restore had to
parse it back in Python: three 1.6 MB contents of a 10k-frame run cost 28-58 ms to copy on
SQLite and 52-110 ms on PostgreSQL, and ~20-27 ms to read back, against 5-7 ms and 1.5-2 ms to
copy typed. Any other row (on SQLite a value of another type than its column's; a table of
other columns; a database migrated before the typed table) goes as a JSON row as before, and a
restore takes both kinds, so copies made by an earlier release come back too.

The snapshot rows, their refs (small: a compact row's payload columns are empty) and the VCS
tags stay JSON rows (:meth:`~timetravel.store.backups.Backups.copy_json_query`).
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from timetravel import schema
from timetravel.enginedb import SnapshotRows, delete_snapshots_after, restore_snapshot_rows
from timetravel.enginedb._sql import insert_rows
from timetravel.enginedb.features import SNAPSHOT_CONTENTS, SNAPSHOT_REFS
from timetravel.enginedb.snapshots import SNAPSHOTS, snapshot_sources_after
from timetravel.store.backups import Backups
from timetravel.store.typed_copies import copy_typed

__all__ = [
    "CONTENT_COLUMNS",
    "copy_snapshots_after",
    "drop_snapshots_after",
    "move_snapshots_after",
    "restore_snapshots",
]

#: The contents table's columns as engine 0.32 creates them, with the kind of each.
CONTENT_COLUMNS = {
    "content_hash": "text",
    "nodes_json": "text",
    "outputs_json": "text",
    "ralph_json": "text",
    "input_json": "text",
    "ref_count": "integer",
}
_TYPED = schema.bk_snapshot_contents
_COLS = ", ".join(CONTENT_COLUMNS)
_PAYLOAD = ", ".join(c for c in CONTENT_COLUMNS if c != "ref_count")
VCS_TAGS = schema.vcs_tags.name
_TAGS_AFTER = f"FROM {VCS_TAGS} t WHERE t.run_id = :run_id AND t.frame_no > :frame_no"


def copy_snapshots_after(
    conn: Connection, bk: Backups, audit_id: int, run_id: str, frame_no: int
) -> None:
    """Copy what :func:`drop_snapshots_after` (same run and frame) will delete: the contents
    only those snapshots reference (typed where they can go, module doc), the snapshot rows,
    their refs, the VCS tags. The same transaction must delete them (the contents are chosen by
    their reference counts)."""
    after = {"run_id": run_id, "frame_no": frame_no}
    for name, source, order in snapshot_sources_after(conn):
        if name == SNAPSHOT_CONTENTS:
            copy_typed(conn, bk, audit_id, name, _TYPED, CONTENT_COLUMNS, source, after, order)
        else:
            bk.copy_json_query(conn, audit_id, name, source, order, after)
    bk.copy_json_query(conn, audit_id, VCS_TAGS, _TAGS_AFTER, "ORDER BY t.frame_no", after)


def drop_snapshots_after(conn: Connection, run_id: str, frame_no: int) -> None:
    """Delete the run's snapshots after ``frame_no`` (refs first, so the ref-count triggers
    collect contents: :func:`~timetravel.enginedb.delete_snapshots_after`) and its VCS tags
    after it."""
    delete_snapshots_after(conn, run_id, frame_no)
    conn.execute(
        text(f"DELETE FROM {VCS_TAGS} WHERE run_id = :run_id AND frame_no > :frame_no"),
        {"run_id": run_id, "frame_no": frame_no},
    )


def move_snapshots_after(
    conn: Connection, bk: Backups, audit_id: int, run_id: str, frame_no: int
) -> None:
    """:func:`copy_snapshots_after`, then :func:`drop_snapshots_after`."""
    copy_snapshots_after(conn, bk, audit_id, run_id, frame_no)
    drop_snapshots_after(conn, run_id, frame_no)


def restore_snapshots(conn: Connection, bk: Backups, audit_id: int) -> None:
    """Put back what :func:`copy_snapshots_after` copied under ``audit_id`` (typed and JSON
    copies both): missing contents with ``ref_count`` 0, then the snapshot rows, then the refs,
    whose insert trigger counts each reference back; and the VCS tags. Idempotent (every insert
    is ``ON CONFLICT DO NOTHING``)."""
    if bk.db.reflect(conn, _TYPED.name) is not None:
        # (the WHERE keeps SQLite from reading ON CONFLICT as a join constraint)
        conn.execute(
            text(
                f"INSERT INTO {SNAPSHOT_CONTENTS} ({_COLS}) "
                f"SELECT {_PAYLOAD}, 0 FROM {_TYPED.name} WHERE audit_id = :aid "
                "ON CONFLICT (content_hash) DO NOTHING"
            ),
            {"aid": audit_id},
        )
    restore_snapshot_rows(
        conn,
        SnapshotRows(
            snapshots=bk.json_rows(conn, audit_id, SNAPSHOTS),
            refs=bk.json_rows(conn, audit_id, SNAPSHOT_REFS),
            contents=bk.json_rows(conn, audit_id, SNAPSHOT_CONTENTS),
        ),
    )
    tags = bk.json_rows(conn, audit_id, VCS_TAGS)
    insert_rows(conn, VCS_TAGS, tags, on_conflict_do_nothing=["run_id", "frame_no"])

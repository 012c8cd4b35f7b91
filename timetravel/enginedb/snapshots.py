"""Snapshots of the engine 0.32 database: loading payloads, and an exact delete/restore.

**Storage.** Engine 0.32 stores snapshots content-addressed: the ``_smithers_snapshots`` row
keeps its metadata (``content_hash``, ``vcs_pointer``, ``workflow_hash``, ``created_at_ms``)
and ``''`` in the four payload columns; the payload is in ``_smithers_snapshot_contents``
(one row per distinct ``content_hash``, with a ``ref_count``), reached through
``_smithers_snapshot_payload_refs(run_id, frame_no, content_hash)``. Triggers on the refs table
keep ``ref_count`` (insert +1; delete -1 and the content row is deleted at 0) and reject a ref
whose snapshot row is not compact or whose content is missing. Older rows (engine 0.16, or
rows written before the migration) carry the payload inline and have no ref.

:func:`load_snapshot` reads like upstream's ``loadSnapshot``: one statement with a LEFT JOIN
through the ref to the content, then *hydration*: a referenced payload must belong to a compact
row with the same hash; a row without a ref uses its inline columns when they are non-empty.

**Delete and restore.** A rewind deletes the snapshots after its target frame and must be able
to put them back exactly. :func:`snapshot_sources_after` selects what the delete will remove:
the snapshot rows, their refs, and the content rows that the ref triggers will delete (those
whose ``ref_count`` falls to 0); :mod:`timetravel.store.snapshot_copies` copies them.
:func:`delete_snapshots_after` deletes refs then snapshots (the triggers decrement and collect
contents). :func:`restore_snapshot_rows` re-inserts, in order, the missing contents with
``ref_count = 0``, the snapshot rows, then the refs, so that the triggers count the references
back: afterwards the three tables equal the originals, including ``ref_count``. Every insert is
``ON CONFLICT DO NOTHING``, so a restore can be repeated.

All functions take a :class:`~sqlalchemy.Connection`; the caller owns the transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Row, bindparam, text

from timetravel.enginedb._sql import chunks, insert_rows
from timetravel.enginedb.features import (
    SNAPSHOT_CONTENTS,
    SNAPSHOT_REFS,
    engine_features,
)

__all__ = [
    "SnapshotError",
    "SnapshotPayload",
    "SnapshotRows",
    "delete_snapshots_after",
    "load_snapshot",
    "load_snapshots",
    "restore_snapshot_rows",
    "snapshot_sources_after",
]

SNAPSHOTS = "_smithers_snapshots"
PAYLOAD_COLUMNS = ("nodes_json", "outputs_json", "ralph_json", "input_json")


class SnapshotError(Exception):
    """A snapshot row whose payload cannot be resolved (dangling or mismatched reference)."""


@dataclass(frozen=True)
class SnapshotPayload:
    """One frame's snapshot with its payload resolved (JSON text, exactly as stored)."""

    run_id: str
    frame_no: int
    nodes_json: str
    outputs_json: str
    ralph_json: str
    input_json: str
    content_hash: str
    vcs_pointer: str | None
    workflow_hash: str | None
    created_at_ms: int
    #: True when the payload came from ``_smithers_snapshot_contents`` through a ref.
    content_addressed: bool = False

    def nodes(self) -> list[dict[str, Any]]:
        """``nodes_json`` parsed: ``[{nodeId, iteration, state, lastAttempt, outputTable,
        label}, ...]``."""
        return json.loads(self.nodes_json)  # type: ignore[no-any-return]

    def outputs(self) -> dict[str, Any]:
        """``outputs_json`` parsed: schema key (and physical name) → rows (see
        :mod:`timetravel.enginedb.outputs`)."""
        return json.loads(self.outputs_json)  # type: ignore[no-any-return]


_SELECT_JOINED = f"""
SELECT s.run_id, s.frame_no, s.nodes_json, s.outputs_json, s.ralph_json, s.input_json,
       s.content_hash, s.vcs_pointer, s.workflow_hash, s.created_at_ms,
       r.content_hash AS ref_hash,
       c.nodes_json AS c_nodes, c.outputs_json AS c_outputs,
       c.ralph_json AS c_ralph, c.input_json AS c_input
FROM {SNAPSHOTS} s
LEFT JOIN {SNAPSHOT_REFS} r ON r.run_id = s.run_id AND r.frame_no = s.frame_no
LEFT JOIN {SNAPSHOT_CONTENTS} c ON c.content_hash = r.content_hash
WHERE s.run_id = :run_id"""

_SELECT_INLINE = f"""
SELECT s.run_id, s.frame_no, s.nodes_json, s.outputs_json, s.ralph_json, s.input_json,
       s.content_hash, s.vcs_pointer, s.workflow_hash, s.created_at_ms,
       NULL AS ref_hash, NULL AS c_nodes, NULL AS c_outputs, NULL AS c_ralph, NULL AS c_input
FROM {SNAPSHOTS} s
WHERE s.run_id = :run_id"""


def _select(conn: Connection) -> str:
    return _SELECT_JOINED if engine_features(conn).content_addressed_snapshots else _SELECT_INLINE


def _hydrate(row: Row[Any]) -> SnapshotPayload:
    m = row._mapping
    inline = tuple(m[c] for c in PAYLOAD_COLUMNS)
    compact = all(v == "" for v in inline)
    where = f"{m['run_id']}:{m['frame_no']}"
    if m["ref_hash"] is not None:
        if not compact or m["ref_hash"] != m["content_hash"]:
            raise SnapshotError(f"snapshot {where}: content reference mismatch {m['ref_hash']}")
        payload = (m["c_nodes"], m["c_outputs"], m["c_ralph"], m["c_input"])
        if any(not isinstance(v, str) for v in payload):
            raise SnapshotError(f"snapshot {where}: missing snapshot content {m['ref_hash']}")
    elif compact:
        # Upstream falls back to an unreleased gzip prototype table here; no released engine
        # writes it, so a compact row without a ref is treated as corrupt.
        raise SnapshotError(f"snapshot {where}: compact snapshot has no content reference")
    else:
        payload = inline
    nodes, outputs, ralph, inp = (str(v) for v in payload)
    return SnapshotPayload(
        run_id=m["run_id"],
        frame_no=int(m["frame_no"]),
        nodes_json=nodes,
        outputs_json=outputs,
        ralph_json=ralph,
        input_json=inp,
        content_hash=m["content_hash"],
        vcs_pointer=m["vcs_pointer"],
        workflow_hash=m["workflow_hash"],
        created_at_ms=int(m["created_at_ms"]),
        content_addressed=m["ref_hash"] is not None,
    )


def load_snapshot(conn: Connection, run_id: str, frame_no: int) -> SnapshotPayload | None:
    """The snapshot of one frame, payload resolved; None when the frame has no snapshot.

    Raises :class:`SnapshotError` for a dangling or mismatched content reference.
    """
    row = conn.execute(
        text(_select(conn) + " AND s.frame_no = :frame_no"),
        {"run_id": run_id, "frame_no": frame_no},
    ).first()
    return None if row is None else _hydrate(row)


def load_snapshots(
    conn: Connection, run_id: str, frame_nos: Iterable[int] | None = None
) -> dict[int, SnapshotPayload]:
    """Snapshots of many frames of a run (all of them when ``frame_nos`` is None), keyed by
    frame number in ascending order; frames without a snapshot are absent."""
    base = _select(conn)
    rows: list[Row[Any]] = []
    if frame_nos is None:
        rows = list(conn.execute(text(base), {"run_id": run_id}))
    else:
        wanted = sorted(set(frame_nos))
        stmt = text(base + " AND s.frame_no IN :frame_nos").bindparams(
            bindparam("frame_nos", expanding=True)
        )
        for part in chunks(wanted):
            rows.extend(conn.execute(stmt, {"run_id": run_id, "frame_nos": list(part)}))
    out = {p.frame_no: p for p in map(_hydrate, rows)}
    return dict(sorted(out.items()))


# -- exact delete / restore ----------------------------------------------------------------


@dataclass
class SnapshotRows:
    """Rows copied before deleting snapshots (:func:`snapshot_sources_after`), as dicts.

    ``contents`` holds only the content rows the delete removes (their ``ref_count`` is the
    value before the delete, for information; a restore inserts them with 0).
    """

    snapshots: list[dict[str, Any]] = field(default_factory=list)
    refs: list[dict[str, Any]] = field(default_factory=list)
    contents: list[dict[str, Any]] = field(default_factory=list)


def snapshot_sources_after(conn: Connection) -> list[tuple[str, str, str]]:
    """What :func:`delete_snapshots_after` deletes, as ``(table, source, order)`` per table in
    copy order (contents, snapshots, refs; the latter two only with content-addressed
    snapshots): ``SELECT t.* {source} {order}`` selects the rows over the parameters
    ``run_id`` and ``frame_no`` (``source`` a FROM … WHERE over the table aliased ``t``)."""
    after = "t.run_id = :run_id AND t.frame_no > :frame_no"
    out = []
    if engine_features(conn).content_addressed_snapshots:
        # Contents whose every reference is among the refs being deleted: the delete trigger
        # removes them when their count reaches 0.
        out.append(
            (
                SNAPSHOT_CONTENTS,
                f"""FROM {SNAPSHOT_CONTENTS} t
            JOIN (SELECT content_hash, COUNT(*) AS n FROM {SNAPSHOT_REFS}
                  WHERE run_id = :run_id AND frame_no > :frame_no
                  GROUP BY content_hash) d ON d.content_hash = t.content_hash
            WHERE t.ref_count <= d.n""",
                "ORDER BY t.content_hash",
            )
        )
    out.append((SNAPSHOTS, f"FROM {SNAPSHOTS} t WHERE {after}", "ORDER BY t.frame_no"))
    if engine_features(conn).content_addressed_snapshots:
        out.append((SNAPSHOT_REFS, f"FROM {SNAPSHOT_REFS} t WHERE {after}", "ORDER BY t.frame_no"))
    return out


def delete_snapshots_after(conn: Connection, run_id: str, frame_no: int) -> int:
    """Delete the run's snapshots with ``frame_no`` > the given one; returns the snapshot rows
    deleted. Refs go first (explicitly: foreign keys may be off on SQLite), so the triggers
    decrement the counts and delete unreferenced contents."""
    params = {"run_id": run_id, "frame_no": frame_no}
    if engine_features(conn).content_addressed_snapshots:
        conn.execute(
            text(f"DELETE FROM {SNAPSHOT_REFS} WHERE run_id = :run_id AND frame_no > :frame_no"),
            params,
        )
    result = conn.execute(
        text(f"DELETE FROM {SNAPSHOTS} WHERE run_id = :run_id AND frame_no > :frame_no"), params
    )
    return int(result.rowcount or 0)


def restore_snapshot_rows(conn: Connection, rows: SnapshotRows) -> None:
    """Put back rows copied before :func:`delete_snapshots_after`: missing contents (``ref_count``
    0) → snapshots → refs, the refs' insert trigger counting each reference. Idempotent."""
    if rows.contents:
        insert_rows(
            conn,
            SNAPSHOT_CONTENTS,
            ({**c, "ref_count": 0} for c in rows.contents),
            on_conflict_do_nothing=["content_hash"],
        )
    if rows.snapshots:
        insert_rows(conn, SNAPSHOTS, rows.snapshots, on_conflict_do_nothing=["run_id", "frame_no"])
    if rows.refs:
        insert_rows(conn, SNAPSHOT_REFS, rows.refs, on_conflict_do_nothing=["run_id", "frame_no"])

"""Copies of a run's engine-0.32 output provenance (``_smithers_output_provenance``), which a
rewind, an undo and a task reset replace whole: :func:`copy_provenance` backs up every row of the
run, :func:`restore_provenance` makes the run's rows exactly those copies again.

**Typed copies.** When the table has its five known columns (``run_id``, ``output_table``,
``node_id``, ``iteration``, ``seq``: text, text, text, integer, integer) and our typed copy table
``_timetravel_bk_output_provenance`` exists (``timetravel migrate`` creates it), the rows go
there and back by ``INSERT … SELECT``: a 10k-frame engine run's 5,000 rows cost 22-30 ms to copy
and 80-140 ms to put back on PostgreSQL as JSON documents, against 7-12 ms and 30-40 ms typed (the
rest of a put-back is the table's own index upkeep). On SQLite, where any column can hold any
type, only the rows whose values have the column's type go typed.

**JSON copies.** Every other row (a table of other columns or types, a value of another type on
SQLite, a database migrated before the typed table) is copied as a JSON row
(``_timetravel_bk_rows``), encoded by the database when its values are plain, else in Python, as
before; :meth:`~timetravel.store.backups.Backups.restore_json_rows` puts those back. A restore
takes both kinds, so copies made by an earlier release come back too.
"""

from __future__ import annotations

from sqlalchemy import Connection, insert, select, text

from timetravel import schema
from timetravel.enginedb.features import OUTPUT_PROVENANCE
from timetravel.store.backups import Backups
from timetravel.store.typed_copies import copy_typed

__all__ = ["PROVENANCE_COLUMNS", "copy_provenance", "restore_provenance"]

#: The provenance table's columns as engine 0.32 creates them, with the kind of each.
PROVENANCE_COLUMNS = {
    "run_id": "text",
    "output_table": "text",
    "node_id": "text",
    "iteration": "integer",
    "seq": "integer",
}
_TYPED = schema.bk_provenance


def copy_provenance(conn: Connection, bk: Backups, audit_id: int, run_id: str) -> None:
    """Back up every provenance row of ``run_id`` under ``audit_id`` (module doc)."""
    source = f"FROM {OUTPUT_PROVENANCE} t WHERE t.run_id = :r"
    copy_typed(
        conn, bk, audit_id, OUTPUT_PROVENANCE, _TYPED, PROVENANCE_COLUMNS, source, {"r": run_id}
    )


def restore_provenance(conn: Connection, bk: Backups, audit_id: int, run_id: str) -> None:
    """Make the run's provenance rows exactly those :func:`copy_provenance` copied under
    ``audit_id`` (typed and JSON copies both; an earlier release made JSON copies only)."""
    live = bk.db.reflect(conn, OUTPUT_PROVENANCE)
    if live is None:
        raise RuntimeError(f"table {OUTPUT_PROVENANCE} vanished; cannot restore")
    conn.execute(text(f"DELETE FROM {OUTPUT_PROVENANCE} WHERE run_id = :r"), {"r": run_id})
    if bk.db.reflect(conn, _TYPED.name) is not None:
        cols = list(PROVENANCE_COLUMNS)
        conn.execute(
            insert(live).from_select(
                cols, select(*(_TYPED.c[c] for c in cols)).where(_TYPED.c.audit_id == audit_id)
            )
        )
    bk.restore_json_rows(conn, audit_id, OUTPUT_PROVENANCE)

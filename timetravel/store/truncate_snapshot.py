"""Upstream 0.32's path of the truncate: when the database is 0.32-shaped and the target frame
has a snapshot, nodes, attempts, outputs, provenance and signals are made equal to what that
snapshot records (:func:`timetravel.enginedb.compute_target_state`, deletes before upserts), and
the snapshots and VCS tags after the target are deleted. Everything changed is backed up first;
:meth:`~timetravel.store.truncate.TruncateStore.restore_truncated` puts it back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    cast,
    column,
    delete,
    func,
    insert,
    literal_column,
    select,
    table,
    text,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite

from timetravel import schema
from timetravel.enginedb import (
    SnapshotPayload,
    TargetState,
    compute_target_state,
    engine_features,
    load_snapshot,
)
from timetravel.enginedb.features import (
    OUTPUT_PROVENANCE,
    SIGNALS,
)
from timetravel.enginedb.outputs import physical_tables
from timetravel.enginedb.target_state import (
    NODE_COMPARED,
    CurrentState,
    NodeRow,
    OutputTableState,
    ProvenanceRow,
    tables_to_restore,
)
from timetravel.models import RewindCounts
from timetravel.store import Database, OutputTable
from timetravel.store.backups import Backups
from timetravel.store.snapshot_copies import move_snapshots_after
from timetravel.store.truncate_cut import Bound, Cut

__all__ = ["SnapshotTruncate", "changed_nodes", "dict_rows", "mappings"]

ATTEMPTS = schema.attempts
NODES = schema.nodes
DIFFS = schema.node_diffs
FRAMES = schema.frames
SNAPSHOTS_TABLE = schema.snapshots.name


class SnapshotTruncate:
    """The snapshot path of :class:`~timetravel.store.truncate.TruncateStore`."""

    db: Database
    backups: Backups

    @staticmethod
    def _target_snapshot(conn: Connection, run_id: str, frame_no: int) -> SnapshotPayload | None:
        """The target frame's snapshot when the database is 0.32-shaped, else None (then the
        0.16 heuristic applies)."""
        if not engine_features(conn).is_v032:
            return None
        return load_snapshot(conn, run_id, frame_no)

    def _target_state(
        self,
        conn: Connection,
        cut: Cut,
        snap: SnapshotPayload,
        now: int,
        *,
        rows: bool = False,
        keys_only: bool = False,
    ) -> tuple[TargetState, dict[tuple[str, int], tuple[Any, ...]], Current]:
        """What makes the run equal to the target snapshot, read as if the attempts started
        after the cutoff were already gone; plus the run's current node rows by key (the
        columns :func:`changed_nodes` compares, :data:`NODE_VALUES`) and what was read (with
        ``rows``, the output tables' current rows too, to skip equal upserts). Each table of
        the run is read once, as plain tuples; ``keys_only`` (a plan's counts) keys the
        snapshot's output rows without converting them (:func:`compute_target_state`)."""
        run_id = cut.run_id
        nodes = {
            (str(r[0]), int(r[1])): tuple(r[2:])
            for r in conn.execute(_SELECT_NODES, {"n_run": run_id}).all()
        }
        attempts = [
            (str(a[0]), int(a[1]), int(a[2]))
            for a in conn.execute(_SELECT_ATTEMPTS, {"a_run": run_id, "a_cut": cut.cutoff_ms}).all()
        ]
        outputs = snap.outputs()
        names = tables_to_restore(
            outputs, {n[_OUTPUT_TABLE] for n in nodes.values()}, physical_tables(conn)
        )
        tables: dict[str, OutputTableState] = {}
        read = Current()
        for name in names:
            out = self.db.output_table(conn, name)
            if out is None or out.iteration_col is None:
                continue
            t = out.table
            read.tables[name] = out
            mine = t.c[out.run_col] == run_id
            if rows:
                raw = conn.execute(select(t).where(mine)).all()
                cols = list(t.c.keys())
                ni, ii = cols.index(out.node_col), cols.index(out.iteration_col)
                by_key: dict[tuple[str, int], Sequence[Any]] = {
                    (str(r[ni]), int(r[ii])): r for r in raw
                }
                read.raw_rows[name] = raw
                tables[name] = OutputTableState(columns=cols, row_keys=by_key, rows=by_key)
            else:
                keys = [
                    (str(r[0]), int(r[1]))
                    for r in conn.execute(
                        select(t.c[out.node_col], t.c[out.iteration_col]).where(mine)
                    ).all()
                ]
                tables[name] = OutputTableState(columns=list(t.c.keys()), row_keys=keys)
        provenance = []
        if engine_features(conn).output_provenance and not keys_only:
            provenance = [
                ProvenanceRow(str(r[0]), str(r[1]), int(r[2]), int(r[3]))
                for r in conn.execute(
                    text(
                        f"SELECT output_table, node_id, iteration, seq FROM {OUTPUT_PROVENANCE} "
                        "WHERE run_id = :run_id"
                    ),
                    {"run_id": run_id},
                ).all()
            ]
        read.provenance = provenance
        current = CurrentState(
            nodes=[NodeRow(k[0], k[1], n[_OUTPUT_TABLE]) for k, n in nodes.items()],
            attempts=attempts,
            output_tables=tables,
            provenance=provenance,
            node_values=nodes if rows else None,
        )
        state = compute_target_state(
            run_id, snap.nodes(), outputs, current, now_ms=now, keys_only=keys_only
        )
        return state, nodes, read

    def _truncate_to_snapshot(
        self,
        conn: Connection,
        audit_id: int,
        cut: Cut,
        snap: SnapshotPayload,
        now: int,
        record: dict[str, Any],
    ) -> RewindCounts:
        """Upstream 0.32's path: make the run equal to the target frame's snapshot."""
        bk, run_id, params = self.backups, cut.run_id, cut.params
        record["mode"] = "snapshot"
        # Each move is a copy then a delete (one statement on PostgreSQL), built once over
        # :class:`Bound`'s parameters. Diffs first: they are found through the attempts that go.
        diffs = bk.move_rows(conn, DIFFS.name, Bound.diffs, audit_id, params)
        frames = bk.move_rows(conn, FRAMES.name, Bound.frames, audit_id, params)
        # Snapshots after the target (refs and unreferenced contents with them), VCS tags.
        move_snapshots_after(conn, bk, audit_id, run_id, cut.frame_no)
        # Attempts started after the target frame, then those the snapshot does not keep.
        state, nodes, read = self._target_state(conn, cut, snap, now, rows=True)
        attempts = bk.move_rows(conn, ATTEMPTS.name, Bound.attempts, audit_id, params)
        # Every keyed statement below is one statement however many keys (:func:`keys_in`).
        dialect = conn.dialect.name
        if state.attempts_delete:
            gone = state.attempts_delete
            bk.copy_rows(
                conn,
                ATTEMPTS.name,
                lambda t: and_(
                    t.c.run_id == run_id,
                    keys_in(dialect, (t.c.node_id, t.c.iteration, t.c.attempt), gone, _SII),
                ),
                audit_id,
            )
            attempt_cols = (ATTEMPTS.c.node_id, ATTEMPTS.c.iteration, ATTEMPTS.c.attempt)
            attempts += conn.execute(
                delete(ATTEMPTS).where(
                    ATTEMPTS.c.run_id == run_id, keys_in(dialect, attempt_cols, gone, _SII)
                )
            ).rowcount
        # Nodes: every node of the run is copied; the restore replaces the run's node set.
        bk.copy_rows(conn, NODES.name, Bound.run, audit_id, params)
        record["nodes_replaced"] = True
        if state.nodes_delete:
            node_cols = (NODES.c.node_id, NODES.c.iteration)
            conn.execute(
                delete(NODES).where(
                    NODES.c.run_id == run_id,
                    keys_in(dialect, node_cols, state.nodes_delete, _SI),
                )
            )
        changed = changed_nodes(state, nodes)
        self._upsert(conn, NODES, changed, ["run_id", "node_id", "iteration"])
        # Outputs. A table whose snapshot rows all equal the current ones only loses rows:
        # those are copied (by key) and deleted, as the heuristic path does, and a restore
        # inserts them back. A table with a row to write is copied whole (the run's rows, in
        # the database when it can) and replaced; snapshot rows equal to the current ones are
        # not written again.
        deleted_outputs, replaced = 0, []
        deleted_keys: dict[str, list[list[Any]]] = {}
        for name, plan in state.outputs.items():
            out = read.tables.get(name)
            if out is None or out.iteration_col is None or not (plan.delete or plan.upsert):
                continue
            t = out.table
            mine = t.c[out.run_col] == run_id
            upserts = list(plan.upsert.values())  # those that change something
            key_cols = (t.c[out.node_col], t.c[out.iteration_col])
            if upserts:
                if read.raw_rows.get(name):
                    self._copy_output_table(conn, audit_id, out, mine, read.raw_rows[name])
                replaced.append(name)
            if plan.delete:
                # What an undo checks for outputs written again since (small: keys only).
                deleted_keys[name] = [[str(n), int(i)] for n, i in plan.delete]
            if plan.delete:
                these = and_(mine, keys_in(dialect, key_cols, plan.delete, _SI))
                if not upserts:
                    self.backups.copy_output_rows_where(conn, audit_id, out, these)
                deleted_outputs += conn.execute(delete(t).where(these)).rowcount
            self._upsert(conn, t, upserts, [out.run_col, out.node_col, out.iteration_col])
        record["replaced_outputs"] = replaced
        if deleted_keys:
            record["deleted_output_keys"] = deleted_keys
        # Provenance (copied whole before either path): only the rows that change.
        if record.get("provenance"):
            _apply_provenance(conn, run_id, state, read.provenance)
        # Signals received after the snapshot.
        if state.signals_after is not None and engine_features(conn).signals:
            where = "WHERE run_id = :run_id AND seq > :seq"
            params = {"run_id": run_id, "seq": state.signals_after}
            signals = mappings(conn.execute(text(f"SELECT * FROM {SIGNALS} {where}"), params))
            if bk.copy_json_rows(conn, audit_id, SIGNALS, signals):
                conn.execute(text(f"DELETE FROM {SIGNALS} {where}"), params)
        return RewindCounts(
            deleted_frames=frames,
            deleted_attempts=attempts,
            deleted_outputs=deleted_outputs,
            invalidated_diffs=diffs,
            reset_nodes=len(state.nodes_delete) + len(changed),
        )

    def _copy_output_table(
        self,
        conn: Connection,
        audit_id: int,
        out: OutputTable,
        mine: ColumnElement[bool],
        rows: Sequence[Any],
    ) -> None:
        """Back up the run's rows of ``out`` (``mine``: all of them, ``rows`` as read in this
        transaction): in
        the database when it can encode them (:meth:`Backups.copy_output_rows_where`), else
        from the rows already read instead of reading them again (same format either way).
        SQLite's JSON functions print reals with 15 digits, so a SQLite table with a REAL
        value goes the second way."""
        if self.db.dialect != "sqlite" or all(
            v is None or isinstance(v, str | int) for r in rows for v in r
        ):
            self.backups.copy_output_rows_where(conn, audit_id, out, mine)
        else:
            self.backups.copy_output_rows(conn, audit_id, out, rows)

    def _upsert(
        self, conn: Connection, table: Table, rows: Iterable[Mapping[str, Any]], keys: list[str]
    ) -> None:
        """INSERT each row, or on its key overwrite the columns it names (upstream's upsert):
        one executemany per set of columns named."""
        ins = postgresql.insert if self.db.dialect == "postgresql" else sqlite.insert
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in rows:
            groups.setdefault(tuple(row), []).append(dict(row))
        for cols, params in groups.items():
            stmt = ins(table)
            updates = {k: stmt.excluded[k] for k in cols if k not in keys}
            conn.execute(
                stmt.on_conflict_do_update(index_elements=keys, set_=updates)
                if updates
                else stmt.on_conflict_do_nothing(index_elements=keys),
                params,
            )


def mappings(result: Iterable[Any]) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in result]


def dict_rows(conn: Connection, table_name: str, run_id: str) -> list[dict[str, Any]]:
    """Every row of the run in an engine table outside our metadata (a constant name)."""
    return mappings(
        conn.execute(text(f"SELECT * FROM {table_name} WHERE run_id = :run_id"), {"run_id": run_id})
    )


@dataclass
class Current:
    """What :meth:`SnapshotTruncate._target_state` read besides the nodes: the output tables
    restored, their current rows by key (when asked for) and the provenance rows."""

    tables: dict[str, OutputTable] = field(default_factory=dict)
    #: the run's rows of each output table as read (with ``rows``), in column order
    raw_rows: dict[str, Sequence[Any]] = field(default_factory=dict)
    provenance: list[ProvenanceRow] = field(default_factory=list)


def _apply_provenance(
    conn: Connection, run_id: str, state: TargetState, current: Sequence[ProvenanceRow]
) -> None:
    """Make the run's provenance rows what the snapshot says, touching only what changes.

    Same result as upstream's order (delete the rows of keys the snapshot drops; then for each
    snapshot row with a seq, delete the rows with its key or its seq and insert it): of the
    upserts sharing a seq the last wins, an upsert equal to its current row is left alone, and
    the current rows to delete (dropped keys, or sharing a key or seq with a changed upsert)
    go in a few keyed statements before one executemany of inserts."""
    by_seq: dict[int, ProvenanceRow] = {}
    for p in state.provenance_upsert:
        by_seq.pop(p.seq, None)  # keep upstream's order: the last one with a seq wins
        by_seq[p.seq] = p
    existing = set(current)
    changed = [p for p in by_seq.values() if p not in existing]
    keys = {(p.output_table, p.node_id, p.iteration) for p in changed}
    seqs = {p.seq for p in changed}
    gone = {(p.output_table, p.node_id, p.iteration) for p in state.provenance_delete}
    gone |= {
        (c.output_table, c.node_id, c.iteration)
        for c in current
        if (c.output_table, c.node_id, c.iteration) in keys or c.seq in seqs
    }
    prov = table(
        OUTPUT_PROVENANCE,
        column("run_id"),
        column("output_table"),
        column("node_id"),
        column("iteration"),
        column("seq"),
    )
    if gone:
        cols = (prov.c.output_table, prov.c.node_id, prov.c.iteration)
        conn.execute(
            delete(prov).where(
                prov.c.run_id == run_id,
                keys_in(conn.dialect.name, cols, sorted(gone), _SSI),
            )
        )
    if changed:
        conn.execute(
            insert(prov),
            [
                {
                    "run_id": run_id,
                    "output_table": p.output_table,
                    "node_id": p.node_id,
                    "iteration": p.iteration,
                    "seq": p.seq,
                }
                for p in changed
            ],
        )


#: Kinds of the key columns :func:`keys_in` compares ("s": text, "i": integer).
_SI, _SII, _SSI = "si", "sii", "ssi"


def keys_in(
    dialect: str,
    cols: Sequence[ColumnElement[Any]],
    keys: Sequence[Sequence[Any]],
    kinds: str,
) -> ColumnElement[bool]:
    """``(cols) IN (keys)`` as one statement however many keys: the keys (strings and
    integers, ``kinds`` says which, "s" or "i" per column) are bound as one value instead of
    one bound parameter per value in statements of a few hundred keys each.

    SQLite unpacks a JSON array of arrays (``json_each``; an ``IN`` subquery is built into a
    temporary index once). On PostgreSQL each row's key is one text (:func:`_key_text`) looked
    up with ``= ANY`` in a text array, which PostgreSQL 14+ hashes: a semi-join on
    ``json_array_elements`` instead became a nested loop re-parsing the whole array per row
    when the table's statistics were stale (a deep rewind's output backup of 5,000 rows took
    2 s instead of 13 ms, bench/profile_rewind.py). The array is written into the statement
    (``literal_execute``), not sent as a parameter: PostgreSQL hashes only a constant array,
    and once the worker had run a keyed statement a few times it switched to a generic plan
    whose array is a parameter, searched from the start for every row (each keyed statement
    of a half-run rewind at 10k frames 20 -> 170 ms, auto_explain)."""
    if dialect == "postgresql":
        parts: list[Any] = []
        for col, kind in zip(cols, kinds, strict=True):
            if parts:
                parts.append(literal_column("'|'"))
            if kind == "i":
                parts.append(cast(col, Text))
            else:
                parts.append(func.replace(func.replace(col, "\\", "\\\\"), "|", "\\|"))
        text_key = parts[0]
        for part in parts[1:]:
            text_key = text_key.op("||", return_type=Text)(part)  # NULL anywhere: no match
        texts = [_key_text(k, kinds) for k in keys]
        doc = bindparam(
            None, texts, type_=postgresql.ARRAY(Text), unique=True, literal_execute=True
        )
        return text_key == any_(doc)  # type: ignore[no-any-return]
    doc_json = json.dumps([list(k) for k in keys])
    each = func.json_each(bindparam(None, doc_json, type_=Text, unique=True)).table_valued("value")
    items = [func.json_extract(each.c.value, f"$[{i}]") for i in range(len(kinds))]
    return tuple_(*cols).in_(select(*items).select_from(each))


def _key_text(key: Sequence[Any], kinds: str) -> str:
    """A key as :func:`keys_in` spells it on PostgreSQL: integers in decimal, strings with
    ``\\`` and ``|`` escaped by a backslash, joined by ``|`` (so no two keys share a text)."""
    return "|".join(
        str(int(v)) if kind == "i" else str(v).replace("\\", "\\\\").replace("|", "\\|")
        for v, kind in zip(key, kinds, strict=True)
    )


def changed_nodes(
    state: TargetState, nodes: Mapping[tuple[str, int], Sequence[Any]]
) -> list[dict[str, Any]]:
    """The snapshot's node rows that differ from the current ones (``updated_at_ms`` aside;
    ``nodes``: the current rows' :data:`NODE_VALUES` by key, as
    :meth:`SnapshotTruncate._target_state` reads them), completed so that a node the run no
    longer has can be inserted."""
    out = []
    for values in state.nodes_upsert:
        key = (values["node_id"], values["iteration"])
        current = nodes.get(key)
        if current is None:
            out.append({"state": "pending", "output_table": "", **values})
            continue
        # The snapshot's values name only node columns (compute_target_state); run_id,
        # node_id and iteration are the key's, updated_at_ms is not compared.
        for k, i in _NODE_INDEX:
            if k in values and current[i] != values[k]:
                out.append(values)
                break
    return out


#: The node columns :func:`changed_nodes` compares, in the order they are read.
NODE_VALUES = NODE_COMPARED
_NODE_INDEX = tuple((c, i) for i, c in enumerate(NODE_VALUES))
_OUTPUT_TABLE = NODE_VALUES.index("output_table")
_SELECT_NODES = select(
    NODES.c.node_id, NODES.c.iteration, *(NODES.c[c] for c in NODE_VALUES)
).where(NODES.c.run_id == bindparam("n_run"))
_SELECT_ATTEMPTS = select(ATTEMPTS.c.node_id, ATTEMPTS.c.iteration, ATTEMPTS.c.attempt).where(
    ATTEMPTS.c.run_id == bindparam("a_run"), ATTEMPTS.c.started_at_ms <= bindparam("a_cut")
)

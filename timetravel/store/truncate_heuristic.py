"""The 0.16 rule of the truncate: the nodes (and their outputs) whose attempts started after the
target frame go back to pending. It runs on 0.16-shaped tables, and on engine-0.32 databases
when the target frame has no snapshot (output tables resolved from schema keys, their
``_smithers_output_provenance`` rows deleted with them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    bindparam,
    case,
    column,
    delete,
    func,
    select,
    table,
    tuple_,
    update,
)

from timetravel import schema
from timetravel.enginedb import engine_features, resolve_output_table
from timetravel.enginedb.features import OUTPUT_PROVENANCE
from timetravel.errors import RewindFailed
from timetravel.models import RewindCounts
from timetravel.store import Database, OutputTable
from timetravel.store.backups import STATEMENTS, Backups, count_of
from timetravel.store.truncate_cut import ATTEMPT_NODES, Bound, Cut

__all__ = ["HeuristicTruncate"]

FRAMES = schema.frames
ATTEMPTS = schema.attempts
NODES = schema.nodes
DIFFS = schema.node_diffs


class HeuristicTruncate:
    """The heuristic path of :class:`~timetravel.store.truncate.TruncateStore` (and the output
    tables its plan counts)."""

    db: Database
    backups: Backups

    def _outputs(self, conn: Connection, cut: Cut) -> list[tuple[OutputTable, list[str]]]:
        """The output tables of the nodes whose attempts go, each checked for a safe name,
        with the node ``output_table`` values that name it (engine 0.32 stores the schema key,
        resolved to its snake_case table); a missing table is skipped, as upstream does."""
        rows = conn.execute(_OUTPUT_NAMES, cut.params).all()
        names: dict[str, list[str]] = {}
        for name, node in rows:
            if schema.check_output_table_name(name) is None:
                raise RewindFailed(
                    f"Output table name {name!r} of node {node} is not a safe identifier; "
                    "refusing to rewind.",
                    {"runId": cut.run_id, "nodeId": node, "outputTable": str(name)[:200]},
                )
            physical = resolve_output_table(conn, name)
            if physical is None:
                continue
            keys = names.setdefault(physical, [])
            if name not in keys:
                keys.append(name)
        out = []
        for physical, keys in names.items():
            table = self.db.output_table(conn, physical)  # refuses our and Smithers tables
            if table is not None:
                out.append((table, keys))
        return out

    def _truncate_heuristic(
        self, conn: Connection, audit_id: int, cut: Cut, now: int, record: dict[str, Any]
    ) -> RewindCounts:
        """The 0.16 rule: the nodes (and their outputs) whose attempts started after the
        target frame go back to pending.

        Every node row of the run is copied (one ``INSERT … SELECT``, as the snapshot path
        does) and the step record says ``nodes_replaced``: a restore, or an undo discarding
        newer work, replaces the run's whole node set, so a node row first created after the
        rewind does not survive it.

        Every statement is built once (over :class:`~timetravel.store.truncate_cut.Bound`'s
        parameters) and executed with this rewind's values."""
        bk, params = self.backups, cut.params
        record["nodes_replaced"] = True
        outputs = self._outputs(conn, cut)
        if conn.dialect.name == "postgresql" and not engine_features(conn).output_provenance:
            stmt = _pg_truncate(conn, bk, outputs)
            if stmt is not None:
                n = conn.execute(stmt, {**params, "b_aid": audit_id, "h_now": now}).one()
                return RewindCounts(
                    invalidated_diffs=n[0],
                    reset_nodes=n[1],
                    deleted_attempts=n[2],
                    deleted_frames=n[3],
                    deleted_outputs=sum(n[4:]),
                )
        # Order matters: diffs, outputs and nodes are found through the attempts that go.
        diffs = bk.move_rows(conn, DIFFS.name, Bound.diffs, audit_id, params)
        deleted_outputs = self._truncate_outputs(conn, audit_id, cut, outputs)
        bk.copy_rows(conn, NODES.name, Bound.run, audit_id, params)
        reset = conn.execute(_reset_nodes(conn), {**params, "h_now": now}).rowcount
        attempts = bk.move_rows(conn, ATTEMPTS.name, Bound.attempts, audit_id, params)
        frames = bk.move_rows(conn, FRAMES.name, Bound.frames, audit_id, params)
        return RewindCounts(
            deleted_frames=frames,
            deleted_attempts=attempts,
            deleted_outputs=deleted_outputs,
            invalidated_diffs=diffs,
            reset_nodes=reset,
        )

    def _truncate_outputs(
        self,
        conn: Connection,
        audit_id: int,
        cut: Cut,
        outputs: list[tuple[OutputTable, list[str]]],
    ) -> int:
        """Back up (as JSON rows: output tables are not in our metadata) and delete the outputs
        of the nodes whose attempts go, one statement of each kind per table."""
        deleted = 0
        provenance = engine_features(conn).output_provenance
        params = cut.params
        for out, names in outputs:
            stmts = _output_statements(conn, out, names)
            if provenance:
                # Provenance names the physical table (copied whole by truncate()); its rows
                # are found through the output rows, so before they go.
                conn.execute(stmts.delete_provenance, params)
            moved = self.backups.move_output_rows(conn, audit_id, out, stmts.where, params)
            if moved is not None:
                deleted += moved
            elif self.backups.copy_output_rows_where(conn, audit_id, out, stmts.where, params):
                deleted += conn.execute(stmts.delete, params).rowcount
        return deleted


def _pg_truncate(
    conn: Connection, bk: Backups, outputs: list[tuple[OutputTable, list[str]]]
) -> Any:
    """The whole heuristic truncate as one PostgreSQL statement (no provenance): every move
    and copy a common table expression (:meth:`Backups.pg_move`), all of them reading the
    tables as they were before the statement, which is what the sequential path's order
    ensures (diffs, outputs and nodes found through the attempts that go, the nodes copied
    before their update). Selects the counts: diffs, nodes reset, attempts, frames, then
    each output table's rows. Built once per shape; None when an output table's rows cannot
    all be encoded by the database."""

    def build() -> Any:
        diffs = bk.pg_move(conn, DIFFS.name, Bound.diffs, "diffs")
        nodes = bk.pg_copy(conn, NODES.name, Bound.run, "nodes")
        reset = _RESET_NODES_PG.returning(NODES.c.node_id).cte("nodes_reset")
        attempts = bk.pg_move(conn, ATTEMPTS.name, Bound.attempts, "attempts")
        frames = bk.pg_move(conn, FRAMES.name, Bound.frames, "frames")
        moved_outputs = []
        for i, (out, names) in enumerate(outputs):
            moved = bk.pg_move_outputs(conn, out, Bound.outputs(out, names), f"out{i}")
            if moved is None:
                return None
            moved_outputs.append(moved)
        moves = [diffs, attempts, frames, *moved_outputs]
        return select(
            count_of(diffs.deleted),
            count_of(reset),
            count_of(attempts.deleted),
            count_of(frames.deleted),
            *(count_of(m.deleted) for m in moved_outputs),
        ).add_cte(nodes, *(m.copied for m in moves))

    shape = tuple(tuple(bk.db.columns(conn, t)) for t in _MOVED_TABLES)
    key = (
        "pg_heuristic",
        shape,
        tuple((id(out.table), tuple(names)) for out, names in outputs),
    )
    return STATEMENTS.get(key, build, tuple(out.table for out, _ in outputs))


_MOVED_TABLES = (DIFFS.name, NODES.name, ATTEMPTS.name, FRAMES.name)


@dataclass(frozen=True)
class _OutputStatements:
    """One output table's part of the truncate, over :class:`Bound`'s parameters: the rows
    that go (``where``), their delete, and the delete of their provenance rows (by node and
    iteration, by node alone for a table without iteration)."""

    where: ColumnElement[bool]
    delete: Any
    delete_provenance: Any


def _output_statements(conn: Connection, out: OutputTable, names: list[str]) -> _OutputStatements:
    """:class:`_OutputStatements` of a reflected output table and the node ``output_table``
    values naming it, built once per table object."""

    def build() -> _OutputStatements:
        t = out.table
        where = Bound.outputs(out, names)
        keys: list[Any] = [t.c[out.node_col]]
        prov = ["node_id"]
        if out.iteration_col is not None:
            keys.append(t.c[out.iteration_col])
            prov.append("iteration")
        sub = select(*keys).where(where)
        p = table(OUTPUT_PROVENANCE, column("run_id"), column("output_table"), *map(column, prov))
        target = p.c.node_id if len(prov) == 1 else tuple_(*(p.c[k] for k in prov))
        provenance = delete(p).where(Bound.run(p), p.c.output_table == t.name, target.in_(sub))
        return _OutputStatements(where, delete(t).where(where), provenance)

    key = ("heuristic_outputs", id(out.table), tuple(names), conn.dialect.name)
    return STATEMENTS.get(key, build, out.table)


# Built once (:class:`Bound`'s parameters, plus ``h_now``).
#: Each output table name of the nodes whose attempts go, with the first node naming it (for
#: the error on an unsafe name): one row per name, not one per node (a half-run rewind of a
#: 100k-frame run read 25,000 rows into Python twice, plan and truncate).
_OUTPUT_NAMES = (
    select(NODES.c.output_table, func.min(NODES.c.node_id))
    .select_from(ATTEMPT_NODES)
    .where(Bound.attempts(ATTEMPTS), NODES.c.output_table != "")
    .group_by(NODES.c.output_table)
    .order_by(NODES.c.output_table)
)
#: A reset node's ``last_attempt``: its newest remaining attempt.
_NEWEST_REMAINING = (
    select(func.max(ATTEMPTS.c.attempt))
    .where(
        ATTEMPTS.c.run_id == NODES.c.run_id,
        ATTEMPTS.c.node_id == NODES.c.node_id,
        ATTEMPTS.c.iteration == NODES.c.iteration,
        ATTEMPTS.c.started_at_ms <= Bound.cutoff_ms,
    )
    .scalar_subquery()
)
_RESET_NODES = (
    update(NODES)
    .where(Bound.nodes(NODES))
    .values(state="pending", updated_at_ms=bindparam("h_now"), last_attempt=_NEWEST_REMAINING)
)
#: The same reset as ``UPDATE … FROM`` one aggregate of the nodes' attempts (PostgreSQL): the
#: correlated subquery above runs once per node, an index probe each, and a half-run rewind of
#: a 100k-frame run reset its 25,000 nodes in 320-450 ms against 140-165 ms this way. (On
#: SQLite both take ~65 ms; the subquery form stays there.)
_A = ATTEMPTS.alias("a")
_RESET_KEYS = (
    select(
        _A.c.node_id,
        _A.c.iteration,
        func.max(case((_A.c.started_at_ms <= Bound.cutoff_ms, _A.c.attempt))).label("newest"),
    )
    .where(
        _A.c.run_id == Bound.run_id,
        tuple_(_A.c.node_id, _A.c.iteration).in_(
            select(ATTEMPTS.c.node_id, ATTEMPTS.c.iteration).where(Bound.attempts(ATTEMPTS))
        ),
    )
    .group_by(_A.c.node_id, _A.c.iteration)
    .subquery("reset_keys")
)
_RESET_NODES_PG = (
    update(NODES)
    .where(
        NODES.c.run_id == Bound.run_id,
        NODES.c.node_id == _RESET_KEYS.c.node_id,
        NODES.c.iteration == _RESET_KEYS.c.iteration,
    )
    .values(state="pending", updated_at_ms=bindparam("h_now"), last_attempt=_RESET_KEYS.c.newest)
)


def _reset_nodes(conn: Connection) -> Any:
    """The node reset for this database (:data:`_RESET_NODES_PG` on PostgreSQL)."""
    return _RESET_NODES_PG if conn.dialect.name == "postgresql" else _RESET_NODES

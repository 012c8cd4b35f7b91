"""The 0.16 rule of the truncate: the nodes (and their outputs) whose attempts started after the
target frame go back to pending. It runs on 0.16-shaped tables, and on engine-0.32 databases
when the target frame has no snapshot (output tables resolved from schema keys, their
``_smithers_output_provenance`` rows deleted with them).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
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
from timetravel.store.backups import Backups
from timetravel.store.truncate_cut import ATTEMPT_NODES, Cut

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
        rows = conn.execute(
            select(NODES.c.output_table, NODES.c.node_id)
            .distinct()
            .select_from(ATTEMPT_NODES)
            .where(
                ATTEMPTS.c.run_id == cut.run_id,
                ATTEMPTS.c.started_at_ms > cut.cutoff_ms,
                NODES.c.output_table != "",
            )
            .order_by(NODES.c.output_table, NODES.c.node_id)
        ).all()
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
        rewind does not survive it."""
        bk = self.backups
        # Order matters: diffs, outputs and nodes are found through the attempts that go.
        bk.copy_rows(conn, DIFFS.name, cut.diffs, audit_id)
        diffs = conn.execute(delete(DIFFS).where(cut.diffs(DIFFS))).rowcount
        outputs = self._truncate_outputs(conn, audit_id, cut)
        bk.copy_rows(conn, NODES.name, cut.run, audit_id)
        record["nodes_replaced"] = True
        newest_remaining = (
            select(func.max(ATTEMPTS.c.attempt))
            .where(
                ATTEMPTS.c.run_id == NODES.c.run_id,
                ATTEMPTS.c.node_id == NODES.c.node_id,
                ATTEMPTS.c.iteration == NODES.c.iteration,
                ATTEMPTS.c.started_at_ms <= cut.cutoff_ms,
            )
            .scalar_subquery()
        )
        reset = conn.execute(
            update(NODES)
            .where(cut.nodes(NODES))
            .values(state="pending", updated_at_ms=now, last_attempt=newest_remaining)
        ).rowcount
        bk.copy_rows(conn, ATTEMPTS.name, cut.attempts, audit_id)
        attempts = conn.execute(delete(ATTEMPTS).where(cut.attempts(ATTEMPTS))).rowcount
        bk.copy_rows(conn, FRAMES.name, cut.frames, audit_id)
        frames = conn.execute(delete(FRAMES).where(cut.frames(FRAMES))).rowcount
        return RewindCounts(
            deleted_frames=frames,
            deleted_attempts=attempts,
            deleted_outputs=outputs,
            invalidated_diffs=diffs,
            reset_nodes=reset,
        )

    def _truncate_outputs(self, conn: Connection, audit_id: int, cut: Cut) -> int:
        """Back up (as JSON rows: output tables are not in our metadata) and delete the outputs
        of the nodes whose attempts go, one statement of each kind per table."""
        deleted = 0
        provenance = engine_features(conn).output_provenance
        for out, names in self._outputs(conn, cut):
            where = cut.outputs(out, names)
            if not self.backups.copy_output_rows_where(conn, audit_id, out, where):
                continue
            if provenance:
                # Provenance names the physical table (copied whole by truncate()); its rows
                # are found through the output rows, so before they go.
                self._delete_provenance(conn, cut.run_id, out, where)
            deleted += conn.execute(delete(out.table).where(where)).rowcount
        return deleted

    @staticmethod
    def _delete_provenance(
        conn: Connection, run_id: str, out: OutputTable, where: ColumnElement[bool]
    ) -> None:
        """Delete the provenance rows of the output rows matching ``where`` (by node and
        iteration, by node alone for a table without iteration), in one statement."""
        t = out.table
        keys: list[Any] = [t.c[out.node_col]]
        prov = ["node_id"]
        if out.iteration_col is not None:
            keys.append(t.c[out.iteration_col])
            prov.append("iteration")
        sub = select(*keys).where(where)
        p = table(OUTPUT_PROVENANCE, column("run_id"), column("output_table"), *map(column, prov))
        target = p.c.node_id if len(prov) == 1 else tuple_(*(p.c[k] for k in prov))
        conn.execute(
            delete(p).where(p.c.run_id == run_id, p.c.output_table == t.name, target.in_(sub))
        )

"""The predicates of one rewind, built once on the real table objects.

The same predicate selects the rows a step backs up (over the live-column copy) and deletes or
counts (over the live table), so the backup is exactly what goes. Node-diff invalidation is
driven from the attempts that started after the frame cutoff (an index range scan), not from
every diff times every frame: upstream's O(diffs x frames) query took 95 s on a 100k-frame run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, TableClause, and_, select, tuple_

from timetravel import rewind, schema
from timetravel.store import OutputTable

__all__ = ["ATTEMPT_NODES", "KEYS_PER_STATEMENT", "Cut", "cut_of", "frame_cutoff"]

FRAMES = schema.frames
ATTEMPTS = schema.attempts
NODES = schema.nodes

#: Key lists per statement (tuple IN lists; far below every parameter limit).
KEYS_PER_STATEMENT = 300

#: Each attempt with its node iteration (the node says which output table holds its output).
ATTEMPT_NODES = ATTEMPTS.join(
    NODES,
    and_(
        NODES.c.run_id == ATTEMPTS.c.run_id,
        NODES.c.node_id == ATTEMPTS.c.node_id,
        NODES.c.iteration == ATTEMPTS.c.iteration,
    ),
)


def frame_cutoff(conn: Connection, run_id: str, frame_no: int) -> int:
    """The target frame's creation time: attempts that started after it are deleted."""
    cutoff = conn.execute(
        select(FRAMES.c.created_at_ms).where(
            FRAMES.c.run_id == run_id, FRAMES.c.frame_no == frame_no
        )
    ).scalar()
    if cutoff is None:
        raise rewind.frame_missing(run_id, frame_no)
    return int(cutoff)


def _newest_kept(conn: Connection, run_id: str, frame_no: int) -> int:
    """The newest creation time among the frames kept (``frame_no <= target``)."""
    return conn.execute(
        select(FRAMES.c.created_at_ms)
        .where(FRAMES.c.run_id == run_id, FRAMES.c.frame_no <= frame_no)
        .order_by(FRAMES.c.created_at_ms.desc())
        .limit(1)
    ).scalar_one()


def _attempt_keys(run_id: str, started_after_ms: int) -> Select[Any]:
    """(node, iteration) of the run's attempts that started after ``started_after_ms``."""
    return select(ATTEMPTS.c.node_id, ATTEMPTS.c.iteration).where(
        ATTEMPTS.c.run_id == run_id, ATTEMPTS.c.started_at_ms > started_after_ms
    )


class Cut:
    """The predicates of one rewind, over any table-like with the right columns (the live
    table for deletes and counts, its live-column copy for backups)."""

    def __init__(self, run_id: str, frame_no: int, cutoff_ms: int, newest_kept_ms: int) -> None:
        self.run_id, self.frame_no = run_id, frame_no
        self.cutoff_ms, self.newest_kept_ms = cutoff_ms, newest_kept_ms

    def diffs(self, t: TableClause) -> ColumnElement[bool]:
        # Diff rows of node iterations with an attempt started after the newest frame kept
        # (upstream §2.1.1); the IN list comes from the attempts index, so this is O(deleted).
        return and_(
            t.c.run_id == self.run_id,
            tuple_(t.c.node_id, t.c.iteration).in_(_attempt_keys(self.run_id, self.newest_kept_ms)),
        )

    def nodes(self, t: TableClause) -> ColumnElement[bool]:
        # Nodes whose attempts are deleted (started strictly after the target frame).
        return and_(
            t.c.run_id == self.run_id,
            tuple_(t.c.node_id, t.c.iteration).in_(_attempt_keys(self.run_id, self.cutoff_ms)),
        )

    def attempts(self, t: TableClause) -> ColumnElement[bool]:
        return and_(t.c.run_id == self.run_id, t.c.started_at_ms > self.cutoff_ms)

    def frames(self, t: TableClause) -> ColumnElement[bool]:
        return and_(t.c.run_id == self.run_id, t.c.frame_no > self.frame_no)

    def run(self, t: TableClause) -> ColumnElement[bool]:
        return t.c.run_id == self.run_id

    def outputs(self, out: OutputTable, names: Sequence[str]) -> ColumnElement[bool]:
        """Rows of an output table that go with the deleted attempts, all keys at once.
        ``names`` are the ``_smithers_nodes.output_table`` values naming this table (the
        table's own name, or on engine 0.32 the schema key it was resolved from)."""
        keys = (
            select(ATTEMPTS.c.node_id, ATTEMPTS.c.iteration)
            .select_from(ATTEMPT_NODES)
            .where(
                ATTEMPTS.c.run_id == self.run_id,
                ATTEMPTS.c.started_at_ms > self.cutoff_ms,
                NODES.c.output_table.in_(list(names)),
            )
        )
        t = out.table
        if out.iteration_col is None:  # keyed by run and node only, as upstream deleteOutputRow
            node_ids = select(keys.subquery().c.node_id)
            return and_(t.c[out.run_col] == self.run_id, t.c[out.node_col].in_(node_ids))
        return and_(
            t.c[out.run_col] == self.run_id,
            tuple_(t.c[out.node_col], t.c[out.iteration_col]).in_(keys),
        )


def cut_of(conn: Connection, run_id: str, frame_no: int) -> Cut:
    """The predicates of a rewind of ``run_id`` to ``frame_no`` (the frame must exist); the
    target frame's creation time and the newest kept one in one round trip."""
    newest_kept = (
        select(FRAMES.c.created_at_ms)
        .where(FRAMES.c.run_id == run_id, FRAMES.c.frame_no <= frame_no)
        .order_by(FRAMES.c.created_at_ms.desc())
        .limit(1)
        .scalar_subquery()
    )
    row = conn.execute(
        select(FRAMES.c.created_at_ms, newest_kept).where(
            FRAMES.c.run_id == run_id, FRAMES.c.frame_no == frame_no
        )
    ).first()
    if row is None or row[0] is None:
        raise rewind.frame_missing(run_id, frame_no)
    return Cut(run_id, frame_no, int(row[0]), row[1])

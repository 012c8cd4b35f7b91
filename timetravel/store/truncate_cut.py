"""The predicates of one rewind, built once on the real table objects.

The same predicate selects the rows a step backs up (over the live-column copy) and deletes or
counts (over the live table), so the backup is exactly what goes. Node-diff invalidation is
driven from the attempts that started after the frame cutoff (an index range scan), not from
every diff times every frame: upstream's O(diffs x frames) query took 95 s on a 100k-frame run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Integer,
    Select,
    TableClause,
    Text,
    and_,
    bindparam,
    func,
    literal,
    select,
    tuple_,
)

from timetravel import rewind, schema
from timetravel.store import OutputTable

__all__ = [
    "ATTEMPT_NODES",
    "KEYS_PER_STATEMENT",
    "LATEST_FRAME",
    "NEWEST_KEPT",
    "Bound",
    "Cut",
    "cut_and_latest",
    "cut_of",
    "frame_cutoff",
]

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


def _attempt_keys(run_id: Any, started_after_ms: Any) -> Select[Any]:
    """(node, iteration) of the run's attempts that started after ``started_after_ms``."""
    return select(ATTEMPTS.c.node_id, ATTEMPTS.c.iteration).where(
        ATTEMPTS.c.run_id == run_id, ATTEMPTS.c.started_at_ms > started_after_ms
    )


# The predicates, built over :class:`Bound`'s parameters.


def _diffs(t: TableClause, run: Any, kept: Any) -> ColumnElement[bool]:
    # Diff rows of node iterations with an attempt started after the newest frame kept
    # (upstream §2.1.1); the IN list comes from the attempts index, so this is O(deleted).
    return and_(t.c.run_id == run, tuple_(t.c.node_id, t.c.iteration).in_(_attempt_keys(run, kept)))


def _nodes(t: TableClause, run: Any, cutoff: Any) -> ColumnElement[bool]:
    # Nodes whose attempts are deleted (started strictly after the target frame).
    return and_(
        t.c.run_id == run, tuple_(t.c.node_id, t.c.iteration).in_(_attempt_keys(run, cutoff))
    )


def _attempts(t: TableClause, run: Any, cutoff: Any) -> ColumnElement[bool]:
    return and_(t.c.run_id == run, t.c.started_at_ms > cutoff)


def _frames(t: TableClause, run: Any, frame: Any) -> ColumnElement[bool]:
    return and_(t.c.run_id == run, t.c.frame_no > frame)


def _run(t: TableClause, run: Any) -> ColumnElement[bool]:
    return t.c.run_id == run


def _outputs(out: OutputTable, names: Sequence[str], run: Any, cutoff: Any) -> ColumnElement[bool]:
    keys = (
        select(ATTEMPTS.c.node_id, ATTEMPTS.c.iteration)
        .select_from(ATTEMPT_NODES)
        .where(
            ATTEMPTS.c.run_id == run,
            ATTEMPTS.c.started_at_ms > cutoff,
            # One bound value each (not an expanding list): the names are part of the
            # statement, which is built once per table and names (:class:`Bound`).
            NODES.c.output_table.in_([literal(n, Text) for n in names]),
        )
    )
    t = out.table
    if out.iteration_col is None:  # keyed by run and node only, as upstream deleteOutputRow
        node_ids = select(keys.subquery().c.node_id)
        return and_(t.c[out.run_col] == run, t.c[out.node_col].in_(node_ids))
    key = tuple_(t.c[out.node_col], t.c[out.iteration_col])
    return and_(t.c[out.run_col] == run, key.in_(keys))


class Cut:
    """One rewind's cut: the target frame, its creation time (attempts started after it go)
    and the newest kept frame's; :attr:`params` are the values of :class:`Bound`'s
    parameters, the predicates its statements are built from."""

    def __init__(self, run_id: str, frame_no: int, cutoff_ms: int, newest_kept_ms: int) -> None:
        self.run_id, self.frame_no = run_id, frame_no
        self.cutoff_ms, self.newest_kept_ms = cutoff_ms, newest_kept_ms

    @property
    def params(self) -> dict[str, Any]:
        """The values of :class:`Bound`'s parameters for this rewind."""
        return {
            "c_run": self.run_id,
            "c_frame": self.frame_no,
            "c_cutoff": self.cutoff_ms,
            "c_kept": self.newest_kept_ms,
        }


_RUN = bindparam("c_run", type_=Text)
_FRAME = bindparam("c_frame", type_=Integer)
_CUTOFF = bindparam("c_cutoff", type_=BigInteger)
_KEPT = bindparam("c_kept", type_=BigInteger)


class Bound:
    """A rewind's predicates, over any table-like with the right columns (the live table for
    deletes and counts, its live-column copy for backups), and over the bound parameters
    :attr:`Cut.params` fills in:
    statements built from them once are executed for every rewind (SQLAlchemy then reuses
    their compiled form without rebuilding the expression or its cache key). Plain functions,
    so each is one long-lived object (a stable memo key)."""

    #: The parameters themselves, for statements that need one outside a predicate.
    run_id, frame_no, cutoff_ms, newest_kept_ms = _RUN, _FRAME, _CUTOFF, _KEPT

    @staticmethod
    def diffs(t: TableClause) -> ColumnElement[bool]:
        return _diffs(t, _RUN, _KEPT)

    @staticmethod
    def nodes(t: TableClause) -> ColumnElement[bool]:
        return _nodes(t, _RUN, _CUTOFF)

    @staticmethod
    def attempts(t: TableClause) -> ColumnElement[bool]:
        return _attempts(t, _RUN, _CUTOFF)

    @staticmethod
    def frames(t: TableClause) -> ColumnElement[bool]:
        return _frames(t, _RUN, _FRAME)

    @staticmethod
    def run(t: TableClause) -> ColumnElement[bool]:
        return _run(t, _RUN)

    @staticmethod
    def outputs(out: OutputTable, names: Sequence[str]) -> ColumnElement[bool]:
        """Rows of an output table that go with the deleted attempts, all keys at once.
        ``names`` are the ``_smithers_nodes.output_table`` values naming this table (the
        table's own name, or on engine 0.32 the schema key it was resolved from)."""
        return _outputs(out, names, _RUN, _CUTOFF)


#: The newest creation time among the frames kept (``frame_no <= target``), bound.
NEWEST_KEPT = (
    select(FRAMES.c.created_at_ms)
    .where(FRAMES.c.run_id == _RUN, FRAMES.c.frame_no <= _FRAME)
    .order_by(FRAMES.c.created_at_ms.desc())
    .limit(1)
    .scalar_subquery()
)
#: The run's latest frame number, bound.
LATEST_FRAME = select(func.max(FRAMES.c.frame_no)).where(FRAMES.c.run_id == _RUN).scalar_subquery()
_TARGET = (FRAMES.c.run_id == _RUN, FRAMES.c.frame_no == _FRAME)
_CUT = select(FRAMES.c.created_at_ms, NEWEST_KEPT).where(*_TARGET)
_CUT_AND_LATEST = select(FRAMES.c.created_at_ms, NEWEST_KEPT, LATEST_FRAME).where(*_TARGET)


def cut_of(conn: Connection, run_id: str, frame_no: int) -> Cut:
    """The predicates of a rewind of ``run_id`` to ``frame_no`` (the frame must exist); the
    target frame's creation time and the newest kept one in one round trip."""
    return cut_and_latest(conn, run_id, frame_no, latest=False)[0]


def cut_and_latest(
    conn: Connection, run_id: str, frame_no: int, *, latest: bool = True
) -> tuple[Cut, int | None]:
    """:func:`cut_of`, and in the same statement the run's latest frame number (None unless
    ``latest``)."""
    row = conn.execute(
        _CUT_AND_LATEST if latest else _CUT, {"c_run": run_id, "c_frame": frame_no}
    ).first()
    if row is None or row[0] is None:
        raise rewind.frame_missing(run_id, frame_no)
    return Cut(run_id, frame_no, int(row[0]), row[1]), (row[2] if latest else None)

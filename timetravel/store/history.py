"""SQL for run history: snapshots, branches (forks), VCS tags and timelines.

:class:`HistoryStore` runs every statement of run history (for
:class:`timetravel.history.service.HistoryService`); each public method is one
unit of work in one transaction, retried as a whole on a lock (:func:`retry_on_lock`). Rows are
returned as plain dicts keyed by column name; the domain layer turns them into models.

A fork is written in ONE transaction (child snapshot, child run row, branch row and the copied
VCS tag), unlike upstream's four separate writes (upstream §4 item 33): a failure leaves no
orphan row, and a retry with the same child run id finds its own branch row and returns what
it wrote before instead of writing twice.

A snapshot of a frame that a rewind deleted is not read: the engine 0.16 truncate deletes a
run's frames after the target but not their snapshots, so every read here (snapshots,
timelines, the parent of a fork) skips a snapshot whose frame number is past the run's last
frame. A run with no frame rows at all (a fork, or history captured without the engine) keeps
every snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table, delete, func, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite

from timetravel import schema
from timetravel.enginedb import SnapshotPayload, engine_features, load_snapshot
from timetravel.enginedb.features import SNAPSHOT_REFS
from timetravel.errors import InvalidInput, SnapshotNotFound
from timetravel.history.models import ForkRows
from timetravel.store import Database, retry_on_lock

__all__ = ["ForkPlanner", "HistoryStore", "TreeRows"]

Row = dict[str, Any]

#: Runs per ``IN (...)`` list; far below SQLite's and PostgreSQL's parameter limits.
_CHUNK = 500

_INDEX_COLUMNS = (
    schema.snapshots.c.run_id,
    schema.snapshots.c.frame_no,
    schema.snapshots.c.content_hash,
    schema.snapshots.c.created_at_ms,
    schema.snapshots.c.vcs_pointer,
)


@dataclass(frozen=True)
class TreeRows:
    """Everything a timeline tree needs, read in a constant number of queries."""

    root_branch: Row | None
    branches: list[Row]  # every branch row below the root (cycle-free by UNION)
    snapshots: dict[str, list[Row]]  # run id -> snapshot index rows in frame order


#: Plans a fork from the parent's snapshot row and run row (or ``None``). Pure: it may run
#: more than once when the transaction is retried.
ForkPlanner = Callable[[Row, Row | None, Row | None], ForkRows]


def _live(run_id: Any) -> ColumnElement[bool]:
    """The snapshot row's frame still exists: the run has no frame rows, or the snapshot's
    frame is not past the last of them (a rewind deleted the later ones)."""
    f, s = schema.frames, schema.snapshots
    last = select(func.max(f.c.frame_no)).where(f.c.run_id == run_id).scalar_subquery()
    return or_(last.is_(None), s.c.frame_no <= last)


def _frame_deleted(conn: Connection, run_id: str, frame_no: int) -> bool:
    """Whether a rewind deleted this frame of the run (see :func:`_live`)."""
    f = schema.frames
    last = conn.execute(select(func.max(f.c.frame_no)).where(f.c.run_id == run_id)).scalar()
    return last is not None and frame_no > last


def _rows(result: Iterable[Any]) -> list[Row]:
    return [dict(r._mapping) for r in result]


def _snapshot_row(snap: SnapshotPayload | None) -> Row | None:
    """A snapshot as a ``_smithers_snapshots`` row with its payload resolved (engine 0.32
    keeps it content-addressed, the inline columns ``''``)."""
    if snap is None:
        return None
    return {c.name: getattr(snap, c.name) for c in schema.snapshots.columns}


class HistoryStore:
    """History tables over a :class:`~timetravel.store.Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- helpers ----------------------------------------------------------------------------

    def _upsert(self, conn: Connection, table: Table, row: Mapping[str, Any]) -> None:
        """INSERT, or overwrite every non-key column when the primary key exists."""
        ins = (postgresql.insert if self.db.dialect == "postgresql" else sqlite.insert)(table)
        keys = [c.name for c in table.primary_key.columns]
        stmt = ins.values(dict(row)).on_conflict_do_update(
            index_elements=keys,
            set_={k: ins.excluded[k] for k in row if k not in keys},
        )
        conn.execute(stmt)

    def _insert_ignore(self, conn: Connection, table: Table, row: Mapping[str, Any]) -> None:
        ins = (postgresql.insert if self.db.dialect == "postgresql" else sqlite.insert)(table)
        conn.execute(ins.values(dict(row)).on_conflict_do_nothing())

    @staticmethod
    def _one(conn: Connection, stmt: Any) -> Row | None:
        row = conn.execute(stmt).first()
        return dict(row._mapping) if row is not None else None

    # -- snapshots --------------------------------------------------------------------------

    @retry_on_lock
    def upsert_snapshot(self, row: Mapping[str, Any]) -> None:
        """Write a snapshot row, replacing the one of the same run and frame."""
        with self.db.write() as conn:
            self._put_snapshot(conn, row)

    def _put_snapshot(self, conn: Connection, row: Mapping[str, Any]) -> None:
        """Upsert a snapshot with its payload inline (engine 0.32 reads a row without a
        content reference from its inline columns). A content reference of the row being
        replaced is dropped first; its trigger releases the content."""
        if engine_features(conn).content_addressed_snapshots:
            conn.execute(
                text(
                    f"DELETE FROM {SNAPSHOT_REFS} WHERE run_id = :run_id AND frame_no = :frame_no"
                ),
                {"run_id": row["run_id"], "frame_no": row["frame_no"]},
            )
        self._upsert(conn, schema.snapshots, row)

    @retry_on_lock
    def get_snapshot(self, run_id: str, frame_no: int) -> Row | None:
        """A snapshot row with its payload resolved (content-addressed or inline); ``None``
        also for a frame a rewind deleted."""
        with self.db.read() as conn:
            if _frame_deleted(conn, run_id, frame_no):
                return None
            return _snapshot_row(load_snapshot(conn, run_id, frame_no))

    @retry_on_lock
    def latest_snapshot(self, run_id: str) -> Row | None:
        s = schema.snapshots
        with self.db.read() as conn:
            latest = conn.execute(
                select(func.max(s.c.frame_no)).where(s.c.run_id == run_id, _live(run_id))
            ).scalar()
            if latest is None:
                return None
            return _snapshot_row(load_snapshot(conn, run_id, int(latest)))

    @retry_on_lock
    def list_snapshots(self, run_id: str) -> list[Row]:
        """Index rows (no JSON parts) of a run's snapshots, in frame order."""
        s = schema.snapshots
        stmt = (
            select(*_INDEX_COLUMNS)
            .where(s.c.run_id == run_id, _live(run_id))
            .order_by(s.c.frame_no)
        )
        with self.db.read() as conn:
            return _rows(conn.execute(stmt))

    # -- runs and branches ------------------------------------------------------------------

    @retry_on_lock
    def get_run(self, run_id: str) -> Row | None:
        r = schema.runs
        with self.db.read() as conn:
            return self._one(conn, select(r).where(r.c.run_id == run_id))

    @retry_on_lock
    def list_branches(self, parent_run_id: str) -> list[Row]:
        """Branch rows forked from a run, by parent frame then creation time."""
        b = schema.branches
        with self.db.read() as conn:
            return _rows(conn.execute(self._branches_of(b.c.parent_run_id == parent_run_id)))

    @staticmethod
    def _branches_of(where: Any) -> Any:
        b = schema.branches
        return select(b).where(where).order_by(b.c.parent_frame_no, b.c.created_at_ms, b.c.run_id)

    @retry_on_lock
    def get_branch(self, run_id: str) -> Row | None:
        b = schema.branches
        with self.db.read() as conn:
            return self._one(conn, select(b).where(b.c.run_id == run_id))

    @retry_on_lock
    def fork(
        self, parent_run_id: str, frame_no: int, child_run_id: str, plan: ForkPlanner
    ) -> tuple[ForkRows, bool]:
        """Write a fork in one transaction.

        Args:
            plan: builds the rows from the parent's snapshot, run row and VCS tag.

        Returns:
            The rows, and whether they were written now (``False``: a retry found the fork
            this child run id already made, and nothing was written).

        Raises:
            TimeTravelError: ``SnapshotNotFound`` when the parent frame has no snapshot;
                ``InvalidInput`` when the child run id is already taken by another run.
        """
        r, b, t = schema.runs, schema.branches, schema.vcs_tags
        with self.db.write() as conn:
            existing = self._one(conn, select(b).where(b.c.run_id == child_run_id))
            if existing is not None:
                if (existing["parent_run_id"], existing["parent_frame_no"]) != (
                    parent_run_id,
                    frame_no,
                ):
                    raise InvalidInput(
                        f"Run id {child_run_id} is already a fork of "
                        f"{existing['parent_run_id']}:{existing['parent_frame_no']}.",
                        {"runId": child_run_id},
                    )
                snap = _snapshot_row(load_snapshot(conn, child_run_id, 0))
                if snap is not None:
                    child_run = self._one(conn, select(r).where(r.c.run_id == child_run_id))
                    return ForkRows(snapshot=snap, branch=existing, run=child_run), False
            parent = None
            if not _frame_deleted(conn, parent_run_id, frame_no):
                parent = _snapshot_row(load_snapshot(conn, parent_run_id, frame_no))
            if parent is None:
                raise SnapshotNotFound(
                    f"No snapshot found for run={parent_run_id} frame={frame_no}",
                    {"runId": parent_run_id, "frameNo": frame_no},
                )
            taken = conn.execute(select(r.c.run_id).where(r.c.run_id == child_run_id)).first()
            if taken is not None and existing is None:
                raise InvalidInput(
                    f"Run id {child_run_id} already exists.",
                    {"runId": child_run_id},
                )
            parent_run = self._one(conn, select(r).where(r.c.run_id == parent_run_id))
            tag = self._one(
                conn, select(t).where(t.c.run_id == parent_run_id, t.c.frame_no == frame_no)
            )
            rows = plan(parent, parent_run, tag)
            # The child's payload is written inline, which both the engine and we read.
            self._put_snapshot(conn, rows.snapshot)
            if rows.run is not None:
                self._insert_ignore(conn, r, rows.run)
            self._upsert(conn, b, rows.branch)
            if rows.vcs_tag is not None:
                self._upsert(conn, t, rows.vcs_tag)
        return rows, True

    @retry_on_lock
    def discard_fork(self, child_run_id: str, parent_run_id: str, frame_no: int) -> bool:
        """Delete exactly what :meth:`fork` wrote for this child, in one transaction.

        Only a child whose branch row names this parent frame is touched, so a compensation can
        never delete an unrelated run. Idempotent.

        Returns:
            Whether a fork was found and removed.
        """
        s, r, b, t = schema.snapshots, schema.runs, schema.branches, schema.vcs_tags
        with self.db.write() as conn:
            branch = self._one(conn, select(b).where(b.c.run_id == child_run_id))
            if branch is None or (branch["parent_run_id"], branch["parent_frame_no"]) != (
                parent_run_id,
                frame_no,
            ):
                return False
            conn.execute(delete(s).where(s.c.run_id == child_run_id, s.c.frame_no == 0))
            conn.execute(delete(t).where(t.c.run_id == child_run_id, t.c.frame_no == 0))
            conn.execute(
                delete(r).where(r.c.run_id == child_run_id, r.c.parent_run_id == parent_run_id)
            )
            conn.execute(delete(b).where(b.c.run_id == child_run_id))
            return True

    # -- timelines --------------------------------------------------------------------------

    @retry_on_lock
    def timeline_rows(self, run_id: str) -> tuple[list[Row], list[Row], Row | None]:
        """A run's snapshot index, the branches forked from it, and its own branch row."""
        s, b = schema.snapshots, schema.branches
        with self.db.read() as conn:
            snaps = _rows(
                conn.execute(
                    select(*_INDEX_COLUMNS)
                    .where(s.c.run_id == run_id, _live(run_id))
                    .order_by(s.c.frame_no)
                )
            )
            forks = _rows(conn.execute(self._branches_of(b.c.parent_run_id == run_id)))
            own = self._one(conn, select(b).where(b.c.run_id == run_id))
        return snaps, forks, own

    @retry_on_lock
    def tree_rows(self, root_run_id: str) -> TreeRows:
        """Every branch below a run (one recursive query) and the snapshot index of each run
        in the tree (one query per 500 runs), in one read transaction.

        The recursive query uses ``UNION``, which drops a row already produced, so a cycle in
        corrupt branch rows ends the recursion instead of looping.
        """
        s, b = schema.snapshots, schema.branches
        tree = select(b).where(b.c.parent_run_id == root_run_id).cte("tree", recursive=True)
        below = b.alias("below")
        tree = tree.union(select(below).where(below.c.parent_run_id == tree.c.run_id))
        with self.db.read() as conn:
            root_branch = self._one(conn, select(b).where(b.c.run_id == root_run_id))
            branches = _rows(
                conn.execute(
                    select(tree).order_by(
                        tree.c.parent_frame_no, tree.c.created_at_ms, tree.c.run_id
                    )
                )
            )
            run_ids = list(dict.fromkeys([root_run_id, *(row["run_id"] for row in branches)]))
            snapshots: dict[str, list[Row]] = {rid: [] for rid in run_ids}
            for chunk in _chunks(run_ids, _CHUNK):
                stmt = (
                    select(*_INDEX_COLUMNS)
                    .where(s.c.run_id.in_(chunk), _live(s.c.run_id))
                    .order_by(s.c.run_id, s.c.frame_no)
                )
                for row in conn.execute(stmt):
                    snapshots[row.run_id].append(dict(row._mapping))
        return TreeRows(root_branch=root_branch, branches=branches, snapshots=snapshots)

    # -- VCS tags ---------------------------------------------------------------------------

    @retry_on_lock
    def upsert_vcs_tag(self, row: Mapping[str, Any]) -> None:
        with self.db.write() as conn:
            self._upsert(conn, schema.vcs_tags, row)

    @retry_on_lock
    def get_vcs_tag(self, run_id: str, frame_no: int) -> Row | None:
        t = schema.vcs_tags
        with self.db.read() as conn:
            return self._one(conn, select(t).where(t.c.run_id == run_id, t.c.frame_no == frame_no))


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]

"""Regression guard for the small-run cost of the rewind's store steps (issue #10): how many SQL
statements ``plan``, ``truncate`` and ``restore_truncated`` send for upstream's seeded run, and
that the truncate's statements are built once (SQLAlchemy's compiled cache is hit, nothing is
compiled again for a second run of the same shape).

Every statement is a round trip and ~100-300 Python calls in SQLAlchemy and the driver; the
activity threads of a loaded worker are CPU bound on them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from timetravel.demo.seed import seed_upstream_run
from timetravel.rewind import RateLimit
from timetravel.store import Database
from timetravel.store.rewind import RewindStore

#: Upper bounds per call (BEGIN and COMMIT not counted). PostgreSQL runs the heuristic
#: truncate as one statement of common table expressions; SQLite copies, then deletes.
LIMITS = {
    "sqlite": {"plan": 4, "truncate": 19, "restore_truncated": 14},
    "postgresql": {"plan": 4, "truncate": 10, "restore_truncated": 14},
}


@contextmanager
def counted(db: Database) -> Iterator[list[tuple[str, Any]]]:
    """The statements sent while inside: their SQL and the statement object executed."""
    seen: list[tuple[str, Any]] = []

    def before(conn: Any, cursor: Any, stmt: str, params: Any, ctx: Any, many: bool) -> None:
        if stmt.split(None, 1)[0].upper() not in ("BEGIN", "COMMIT"):
            seen.append((stmt, getattr(ctx, "invoked_statement", None)))

    event.listen(db.engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", before)


def _steps(store: RewindStore, run_id: str, audit_id: int) -> list[tuple[str, Callable[[], Any]]]:
    return [
        ("plan", lambda: store.plan(run_id, 1)),
        (
            "truncate",
            lambda: store.truncate(
                audit_id=audit_id, run_id=run_id, frame_no=1, caller="t", keep_hijack=False
            ),
        ),
        ("restore_truncated", lambda: store.restore_truncated(audit_id)),
    ]


def test_store_steps_send_few_statements_built_once(db: Database) -> None:
    store = RewindStore(db)
    runs = ["count-a", "count-b"]
    audits = []
    for run_id in runs:
        seed_upstream_run(db, run_id, cwd=None)
        audit_id, _, _ = store.begin(
            run_id=run_id, frame_no=1, confirm=True, caller="t", limit=RateLimit(),
            workflow_id=None, workflow_run_id=None,
        )  # fmt: skip
        audits.append(audit_id)
    before = db.dump()
    first: dict[str, list[Any]] = {}
    for name, step in _steps(store, runs[0], audits[0]):  # the first run builds them
        with counted(db) as seen:
            step()
        first[name] = [obj for _, obj in seen]
    limits = LIMITS[db.dialect]
    for name, step in _steps(store, runs[1], audits[1]):
        with counted(db) as seen:
            step()
        assert len(seen) <= limits[name], (name, len(seen), [s for s, _ in seen])
        # Built once: every statement object the second run executes, the first did too.
        rebuilt = [s for s, obj in seen if not any(obj is o for o in first[name])]
        assert not rebuilt, (name, "statements built again for a run of the same shape", rebuilt)
    # The restores put both runs back exactly.
    assert db.dump() == before

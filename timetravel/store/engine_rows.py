"""The engine's pause protocol on the run row (``database`` engine control, design §5).

Two shapes, chosen by the database (:func:`timetravel.enginedb.engine_features`):

* **engine 0.32** (``_smithers_runs.pause_requested_at_ms`` exists): the durable pause that
  ``smithers pause`` sets. :meth:`EngineRowStore.request_pause` records the run's control
  fields, then sets ``pause_requested_at_ms`` on a run with an active status; the engine drains
  its in-flight tasks and parks the run ``paused`` (owner, heartbeat and pause cleared).
  :meth:`EngineRowStore.hold_paused` then holds the run: a run that is still ``running`` but no
  longer live (its engine died) is parked ``paused`` by us, so the supervisor cannot reclaim it.
  The truncate leaves the run ``paused`` (:func:`set_run_after_truncate`); the resume step sets
  it ``running`` with no owner, only while it is still parked and this rewind holds the lock.
* **engine 0.16** (no such column): a durable hijack request (``hijack_requested_at_ms``,
  ``hijack_target = 'time-travel:<audit id>'``) kept through the truncate; resuming clears
  only our own marker.

Either way the previous values are recorded first (step record ``engine``), so the
compensation puts them back exactly, and every write is fenced
(:func:`timetravel.store.fence.hold`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from timetravel import rewind, schema
from timetravel.clock import now_ms
from timetravel.enginedb import engine_features
from timetravel.enginedb.liveness import is_run_likely_live
from timetravel.store import Database, retry_on_lock
from timetravel.store.backups import Backups
from timetravel.store.fence import hold

__all__ = ["EngineRowStore", "set_run_after_truncate"]

RUNS = schema.runs
STEP = "engine"
#: Second record of the same step: whether we parked the run ourselves.
HOLD_KEY = "hold"
#: The control fields a pause record keeps (engine 0.32).
PAUSE_FIELDS = (
    "status",
    "runtime_owner_id",
    "heartbeat_at_ms",
    "pause_requested_at_ms",
    "cancel_requested_at_ms",
    "hijack_requested_at_ms",
    "hijack_target",
)


def _live(run: Any, now: int) -> bool:
    """Upstream 0.32's "likely live" for an active status; any other status is not live."""
    return run["status"] in rewind.ACTIVE_RUN_STATUSES and is_run_likely_live(run, now)


def set_run_after_truncate(
    conn: Connection, backups: Backups, audit_id: int, run_id: str, keep_hijack: bool | None
) -> None:
    """The truncate's final run update: no owner, no heartbeat, not finished, and held for
    this rewind until its resume step, as its pause left it (our ``engine`` step record):
    ``paused`` after a 0.32 pause (the supervisor leaves paused runs alone), ``running`` with
    our hijack marker after a 0.16 one, plain ``running`` when nothing paused the engine.

    ``keep_hijack`` overrides the record for the hijack fields (direct store callers).
    """
    rec = backups.record(conn, audit_id, STEP)
    mode = None if rec is None else rec.state.get("mode", "hijack")
    runs = backups.live_table(conn, RUNS.name)
    values: dict[str, Any] = dict(
        status="running",
        finished_at_ms=None,
        heartbeat_at_ms=None,
        runtime_owner_id=None,
        cancel_requested_at_ms=None,
        error_json=None,
    )
    keep = (mode == "hijack") if keep_hijack is None else keep_hijack
    if not keep:
        values.update(hijack_requested_at_ms=None, hijack_target=None)
    if mode == "pause":
        values.update(status="paused", pause_requested_at_ms=None)
    key = (runs, tuple(values.items()))
    stmt = _RUN_UPDATES.get(key)
    if stmt is None:
        stmt = update(runs).where(runs.c.run_id == bindparam("u_run")).values(**values)
        _RUN_UPDATES[key] = stmt
    conn.execute(stmt, {"u_run": run_id})


#: The truncate's run updates by (live table, values): a handful of shapes, each built once.
_RUN_UPDATES: dict[tuple[Any, tuple[tuple[str, Any], ...]], Any] = {}

#: The pause's and the resume's statements on the live run table (per column list, so per
#: database shape), built once with bound parameters (issue #10). Same SQL as before.
_LIVE_STATEMENTS: dict[tuple[Any, str], Any] = {}


def _live_statement(runs: Any, kind: str) -> Any:
    stmt = _LIVE_STATEMENTS.get((runs, kind))
    if stmt is not None:
        return stmt
    this_run = runs.c.run_id == bindparam("e_run")
    if kind == "row":
        stmt = select(runs).where(this_run)
    elif kind == "request":
        stmt = update(runs).where(this_run).values(pause_requested_at_ms=bindparam("e_now"))
    elif kind == "park":
        stmt = (
            update(runs)
            .where(this_run)
            .values(status="paused", runtime_owner_id=None, heartbeat_at_ms=None)
        )
    else:  # "resume"
        stmt = (
            update(runs)
            .where(this_run, runs.c.status == "paused", runs.c.runtime_owner_id.is_(None))
            .values(
                status="running",
                runtime_owner_id=None,
                heartbeat_at_ms=None,
                pause_requested_at_ms=None,
            )
        )
    _LIVE_STATEMENTS[(runs, kind)] = stmt
    return stmt


_HIJACK = (
    update(RUNS)
    .where(RUNS.c.run_id == bindparam("e_run"))
    .values(hijack_requested_at_ms=bindparam("e_now"), hijack_target=bindparam("e_target"))
)
_CLEAR_HIJACK = (
    update(RUNS)
    .where(RUNS.c.run_id == bindparam("e_run"), RUNS.c.hijack_target == bindparam("e_target"))
    .values(hijack_requested_at_ms=None, hijack_target=None)
)


class EngineRowStore:
    """Pause, liveness, resume and un-pause through ``_smithers_runs``."""

    def __init__(self, db: Database, backups: Backups | None = None) -> None:
        self.db = db
        self.backups = backups or Backups(db)

    def _run(self, conn: Connection, run_id: str) -> dict[str, Any] | None:
        runs = self.backups.live_table(conn, RUNS.name)
        row = conn.execute(_live_statement(runs, "row"), {"e_run": run_id}).mappings().first()
        return None if row is None else dict(row)

    # -- pause ------------------------------------------------------------------------------

    @retry_on_lock
    def request_pause(self, audit_id: int, run_id: str) -> str:
        """Ask the engine to let go of the run (durably), after recording the previous values.
        Returns the protocol used: ``"pause"`` (engine 0.32) or ``"hijack"`` (0.16)."""
        with self.db.write() as conn:
            hold(conn, audit_id)
            return self._request_pause(conn, audit_id, run_id)[0]

    @retry_on_lock
    def pause_and_hold(self, audit_id: int, run_id: str) -> tuple[bool, dict[str, Any]]:
        """:meth:`request_pause`, :meth:`run_liveness` and, when the run is not live,
        :meth:`hold_paused`, in one fenced transaction (what the pause step's first round
        does; one commit instead of three). Returns whether the run is held, and the status
        and owner seen (for the heartbeat). A live run is left with the request committed:
        the caller waits for the engine to let go (``run_liveness``, ``hold_paused``)."""
        with self.db.write() as conn:
            hold(conn, audit_id)
            mode, row = self._request_pause(conn, audit_id, run_id)
            if row is None:  # recorded by an earlier attempt: read the run now
                row = self._run(conn, run_id)
            live, info = False, dict[str, Any]()
            if row is not None:
                live, info = self._liveness(conn, row, now_ms())
            if live:
                return False, info
            return (mode != "pause" or self._hold_paused(conn, audit_id, run_id)), info

    def _request_pause(
        self, conn: Connection, audit_id: int, run_id: str
    ) -> tuple[str, dict[str, Any] | None]:
        """The pause request after the fence: the mode, and the run row read before the
        request when this call recorded it (the request changes no liveness field)."""
        rec = self.backups.record(conn, audit_id, STEP)
        if rec is not None:
            return str(rec.state.get("mode", "hijack")), None
        row = self._run(conn, run_id)
        if row is None:
            raise rewind.run_not_found(run_id)
        if engine_features(conn).pause_requested:
            state = {"run_id": run_id, "mode": "pause", **{f: row.get(f) for f in PAUSE_FIELDS}}
            self.backups.put_record(conn, audit_id, STEP, state)
            if row["status"] in rewind.ACTIVE_RUN_STATUSES:
                runs = self.backups.live_table(conn, RUNS.name)
                conn.execute(_live_statement(runs, "request"), {"e_run": run_id, "e_now": now_ms()})
            return "pause", row
        self.backups.put_record(
            conn,
            audit_id,
            STEP,
            {
                "run_id": run_id,
                "mode": "hijack",
                "hijack_requested_at_ms": row["hijack_requested_at_ms"],
                "hijack_target": row["hijack_target"],
            },
        )
        conn.execute(
            _HIJACK,
            {"e_run": run_id, "e_now": now_ms(), "e_target": rewind.hijack_target(audit_id)},
        )
        return "hijack", row

    def request_hijack(self, audit_id: int, run_id: str) -> None:
        """The pause request (kept for callers of the 0.16 name)."""
        self.request_pause(audit_id, run_id)

    def run_liveness(self, run_id: str, now: int | None = None) -> tuple[bool, dict[str, Any]]:
        """Whether the engine still runs this run, and the status and owner it saw.

        Engine 0.32: an active status and upstream's "likely live" (owner pid alive on this
        host, or a heartbeat under 30 s). 0.16: :func:`timetravel.rewind.is_live`.
        """
        now = now_ms() if now is None else now
        with self.db.read() as conn:
            row = self._run(conn, run_id)
            if row is None:
                return False, {}
            return self._liveness(conn, row, now)

    @staticmethod
    def _liveness(conn: Connection, row: dict[str, Any], now: int) -> tuple[bool, dict[str, Any]]:
        if engine_features(conn).pause_requested:
            live = _live(row, now)
        else:
            live = rewind.is_live(
                row["status"], row["runtime_owner_id"], row["heartbeat_at_ms"], now
            )
        return live, {"status": row["status"], "owner": row["runtime_owner_id"]}

    @retry_on_lock
    def hold_paused(self, audit_id: int, run_id: str) -> bool:
        """Once the engine let go (engine 0.32): hold the run for this rewind. A run still
        ``running`` (or waiting) but no longer live is parked ``paused`` by us (recorded, so
        the compensation restores it exactly). Returns False when the run is live again (the
        supervisor reclaimed it meanwhile): keep waiting."""
        with self.db.write() as conn:
            hold(conn, audit_id)
            rec = self.backups.record(conn, audit_id, STEP)
            if rec is None or rec.state.get("mode") != "pause":
                return True
            return self._hold_paused(conn, audit_id, run_id)

    def _hold_paused(self, conn: Connection, audit_id: int, run_id: str) -> bool:
        """:meth:`hold_paused` after the fence, for a pause (engine 0.32) record."""
        if self.backups.record(conn, audit_id, STEP, HOLD_KEY) is not None:
            return True
        row = self._run(conn, run_id)
        if row is None:
            raise rewind.run_not_found(run_id)
        if _live(row, now_ms()):
            return False
        parked = row["status"] in rewind.ACTIVE_RUN_STATUSES
        if parked:
            runs = self.backups.live_table(conn, RUNS.name)
            conn.execute(_live_statement(runs, "park"), {"e_run": run_id})
        state = {"parked_by_us": parked, **{f: row.get(f) for f in PAUSE_FIELDS}}
        self.backups.put_record(conn, audit_id, STEP, state, HOLD_KEY)
        return True

    # -- resume -----------------------------------------------------------------------------

    @retry_on_lock
    def release_hijack(self, audit_id: int, run_id: str) -> None:
        """Resume: hand the run back to the engine, only while this rewind holds it.

        Engine 0.32: a run still parked ``paused`` with no owner becomes ``running`` with no
        owner, heartbeat or pause request (the supervisor or ``smithers up --resume`` then
        claims it); a run someone resumed meanwhile is left alone. 0.16: clear our marker.
        """
        with self.db.write() as conn:
            hold(conn, audit_id)
            rec = self.backups.record(conn, audit_id, STEP)
            if rec is not None and rec.state.get("mode") == "pause":
                runs = self.backups.live_table(conn, RUNS.name)
                conn.execute(_live_statement(runs, "resume"), {"e_run": run_id})
                return
            conn.execute(
                _CLEAR_HIJACK, {"e_run": run_id, "e_target": rewind.hijack_target(audit_id)}
            )

    @retry_on_lock
    def check_held(self, audit_id: int, *, undo: bool = False) -> None:
        """Fail (``RewindNotHeld``/``Busy``) unless this rewind still holds its run; for
        engine calls that are not SQL (``http`` resume)."""
        with self.db.write() as conn:
            hold(conn, audit_id, undo=undo)

    def workflow_path(self, run_id: str) -> str | None:
        """The run's workflow file (the engine's HTTP resume needs it)."""
        with self.db.read() as conn:
            return conn.execute(
                select(RUNS.c.workflow_path).where(RUNS.c.run_id == run_id)
            ).scalar()

    # -- compensation -----------------------------------------------------------------------

    @retry_on_lock
    def undo_hijack(self, audit_id: int) -> bool:
        """Compensation of the pause: put the run's control fields back as they were.

        Engine 0.32: ``pause_requested_at_ms`` as before; a run parked ``paused`` because of
        us (and still parked, no owner) gets its status back: exactly as recorded when we
        parked it ourselves, ``<status>`` with no owner when the engine parked it (its owner
        let go). 0.16: the hijack fields, while they still carry our marker. Fenced as a
        compensation (:func:`timetravel.store.fence.hold` with ``undo``).
        """
        with self.db.write() as conn:
            rec = self.backups.record(conn, audit_id, STEP)
            if rec is None or rec.restored:
                return False
            hold(conn, audit_id, undo=True)
            state = rec.state
            if state.get("mode") == "pause":
                self._undo_pause(conn, audit_id, state)
            else:
                conn.execute(
                    update(RUNS)
                    .where(
                        RUNS.c.run_id == state["run_id"],
                        RUNS.c.hijack_target == rewind.hijack_target(audit_id),
                    )
                    .values(
                        hijack_requested_at_ms=state["hijack_requested_at_ms"],
                        hijack_target=state["hijack_target"],
                    )
                )
            self.backups.mark_restored(conn, audit_id, STEP)
            return True

    def _undo_pause(self, conn: Connection, audit_id: int, state: dict[str, Any]) -> None:
        run_id = state["run_id"]
        runs = self.backups.live_table(conn, RUNS.name)
        row = self._run(conn, run_id)
        if row is None:
            return
        values: dict[str, Any] = {}
        held = self.backups.record(conn, audit_id, STEP, HOLD_KEY)
        parked = row["status"] == "paused" and row["runtime_owner_id"] is None
        if parked and state["status"] != "paused":
            if held is not None and held.state.get("parked_by_us"):
                # We parked it: put back exactly what we found then.
                values.update({f: held.state[f] for f in PAUSE_FIELDS})
            else:
                # The engine parked it because of us (clearing the control fields): its status
                # back, unowned, and the control fields it had before our request.
                values.update({f: state[f] for f in PAUSE_FIELDS})
                values.update(runtime_owner_id=None, heartbeat_at_ms=None)
        values["pause_requested_at_ms"] = state["pause_requested_at_ms"]
        conn.execute(update(runs).where(runs.c.run_id == run_id).values(**values))
        if held is not None:
            self.backups.mark_restored(conn, audit_id, STEP, HOLD_KEY)

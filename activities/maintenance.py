"""Activities of ``PruneBackups`` (free the backups of settled sagas older than the retention,
:mod:`timetravel.store.retention`) and of ``UndoRewind`` (:mod:`timetravel.store.undo`)."""

from __future__ import annotations

import subprocess

from temporalio import activity

from activities._errors import domain_errors
from timetravel import rewind
from timetravel.errors import TimeTravelError
from timetravel.store.audit import AuditStore
from timetravel.store.retention import PruneInput, PruneReport, RetentionStore
from timetravel.store.sandboxes import SandboxStore
from timetravel.store.undo import (
    UndoBeginInput,
    UndoBegun,
    UndoPlan,
    UndoStepInput,
    UndoStore,
    moved_on,
)
from timetravel.vcs import backend_for


class MaintenanceActivities:
    """Built with the retention store and the worker's ``TIMETRAVEL_BACKUP_RETENTION``."""

    def __init__(self, store: RetentionStore, retention_ms: int) -> None:
        self.store = store
        self.retention_ms = retention_ms

    @activity.defn(name="prune_backups")
    @domain_errors
    def prune_backups(self, input: PruneInput) -> PruneReport:
        """Free (or, ``dry_run``, count) the backups of sagas settled more than
        ``older_than_ms`` (default: the worker's retention) ago. One transaction; idempotent:
        a retry frees what is left, and reports only that."""
        older = self.retention_ms if input.older_than_ms is None else input.older_than_ms
        return self.store.prune(older, dry_run=input.dry_run)


class UndoActivities:
    """The steps of ``UndoRewind`` that are its own: admission (through the same
    :class:`~timetravel.store.audit.AuditStore` as every saga), the moved-on check, a sandbox
    put back to its state before the target, the database undo and its compensation. The
    engine pause/resume, the sandbox compensation and ``finish`` are the rewind's activities."""

    def __init__(
        self,
        store: UndoStore,
        audit: AuditStore,
        sandboxes: SandboxStore,
        rate_limit: rewind.RateLimit,
        search_attributes: frozenset[str] = frozenset(),
    ) -> None:
        self.store = store
        self.audit = audit
        self.sandboxes = sandboxes
        self.rate_limit = rate_limit
        self.search_attributes = sorted(search_attributes)

    @activity.defn(name="undo_begin")
    @domain_errors
    def undo_begin(self, input: UndoBeginInput) -> UndoBegun:
        """Validate the target, then (not a dry run) take the run's lock and audit row."""
        target = input.target_audit_id
        if isinstance(target, float) and target.is_integer():
            target = int(target)
        if isinstance(target, str) and target.strip().isdigit():
            target = int(target.strip())
        if not isinstance(target, int) or isinstance(target, bool) or not 1 <= target < 2**53:
            raise TimeTravelError.of(
                "InvalidInput", f"audit_id must be the audit id of a rewind; got {target!r}",
                {"field": "audit_id"},
            )  # fmt: skip
        plan = self.store.plan(target)
        caller = rewind.normalise_caller(input.caller)
        if input.dry_run:
            return UndoBegun(
                audit_id=None, run_id=plan.run_id, frame_no=max(plan.to_frame_no, 0),
                caller=caller, started_at_ms=0, search_attributes=self.search_attributes,
                plan=plan,
            )  # fmt: skip
        audit_id, valid, ts = self.audit.begin(
            run_id=plan.run_id,
            frame_no=max(plan.to_frame_no, 0),
            confirm=input.confirm,
            caller=input.caller,
            limit=self.rate_limit,
            workflow_id=input.workflow_id,
            workflow_run_id=input.workflow_run_id,
        )
        return UndoBegun(
            audit_id=audit_id, run_id=valid.run_id, frame_no=valid.frame_no,
            caller=valid.caller, started_at_ms=ts, search_attributes=self.search_attributes,
            lease=self.audit.lease_of(audit_id) is not None, plan=plan,
        )  # fmt: skip

    @activity.defn(name="undo_check")
    @domain_errors
    def undo_check(self, input: UndoStepInput) -> UndoPlan:
        """Fenced; what changed since the target, sandboxes included. ``RunMovedOn`` unless
        ``discard_newer`` (nothing was changed yet)."""
        self.sandboxes.check_held(input.audit_id)
        plan = self.store.plan(input.target_audit_id)
        moved = [
            cwd
            for cwd in plan.sandboxes
            if self._moved(input.target_audit_id, cwd, exact=plan.kind == "rewind")
        ]
        if moved:
            plan.changed["movedSandboxes"] = moved
        if plan.changed and not input.discard_newer:
            raise moved_on(input.target_audit_id, plan.run_id, plan.changed)
        return plan

    def _moved(self, target_audit_id: int, cwd: str, *, exact: bool) -> bool:
        """A git sandbox has uncommitted changes or (``exact``: a rewind, which left it at
        the pointer of the newest attempt in it) is no longer where the target left it."""
        saved = self.store.sandbox_state(target_audit_id, cwd)
        if saved is None or saved.get("backend") != "git":
            return False
        now = backend_for(cwd).capture(cwd)
        if now.get("stash"):
            return True
        expected = self.store.expected_pointer(target_audit_id, cwd) if exact else None
        if expected is None:
            return False
        return bool(now.get("head")) and _git_commit(cwd, expected) != now.get("head")

    @activity.defn(name="undo_sandbox")
    @domain_errors
    def undo_sandbox(self, input: UndoStepInput) -> None:
        """Record the sandbox's current state under the undo's audit id (its compensation is
        the rewind's ``restore_sandbox`` of that id), then put it back as the target found it."""
        target = self.store.sandbox_state(input.target_audit_id, input.cwd)
        if target is None:
            return
        backend = backend_for(input.cwd)
        state = {"backend": backend.name, "state": backend.capture(input.cwd)}
        self.sandboxes.save_sandbox_state(input.audit_id, input.cwd, state)
        backend.restore(input.cwd, target["state"])

    @activity.defn(name="undo_database")
    @domain_errors
    def undo_database(self, input: UndoStepInput) -> UndoPlan:
        return self.store.undo(
            undo_audit_id=input.audit_id,
            target_audit_id=input.target_audit_id,
            caller=input.caller,
            discard_newer=input.discard_newer,
            moved_sandboxes=input.moved_sandboxes,
        )

    @activity.defn(name="undo_database_restore")
    @domain_errors
    def undo_database_restore(self, input: UndoStepInput) -> bool:
        return self.store.restore(input.audit_id)


def _git_commit(cwd: str, pointer: str) -> str | None:
    out = subprocess.run(
        ["git", "-C", cwd, "rev-parse", "--verify", "--quiet", f"{pointer}^{{commit}}"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return out.stdout.strip() or None

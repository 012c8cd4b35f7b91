"""Activities of ``UndoRewind`` (:mod:`timetravel.store.undo`): admission, the moved-on check
(git and jj sandboxes), a sandbox put back to its state before the target, the database undo and
its compensation."""

from __future__ import annotations

import subprocess

from temporalio import activity

from activities._errors import domain_errors
from activities.rewind import still_held_after_vcs
from timetravel import rewind
from timetravel.errors import TimeTravelError
from timetravel.store.audit import AuditStore
from timetravel.store.sandboxes import SandboxStore
from timetravel.store.undo import (
    UndoBeginInput,
    UndoBegun,
    UndoPlan,
    UndoStepInput,
    UndoStore,
    moved_on,
)
from timetravel.vcs import JjBackend, backend_for

__all__ = ["UndoActivities"]


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
        """A sandbox is no longer where the target left it (``exact``: a rewind, which left
        it at the pointer of the newest attempt in it; else an undo, which left it at the
        state it restored)."""
        saved = self.store.sandbox_state(target_audit_id, cwd)
        if saved is None:
            return False
        if saved.get("backend") == "git":
            return self._git_moved(target_audit_id, cwd, exact=exact)
        if saved.get("backend") == "jj":
            return self._jj_moved(target_audit_id, cwd, exact=exact)
        return False

    def _git_moved(self, target_audit_id: int, cwd: str, *, exact: bool) -> bool:
        """Uncommitted changes, or (``exact``) HEAD is not the expected pointer's commit."""
        now = backend_for(cwd).capture(cwd)
        if now.get("stash"):
            return True
        expected = self.store.expected_pointer(target_audit_id, cwd) if exact else None
        if expected is None:
            return False
        return bool(now.get("head")) and _git_commit(cwd, expected) != now.get("head")

    def _jj_moved(self, target_audit_id: int, cwd: str, *, exact: bool) -> bool:
        """A jj workspace (its working copy snapshotted first, so a file the engine or a
        person wrote counts): after a rewind, ``@`` must have the files of the pointer the
        rewind restored them from (``jj restore --from``: a new ``@``, same tree); after an
        undo, ``@`` must still be the commit the undo restored."""
        jj = JjBackend()
        if not exact:
            restored = self.store.restored_sandbox_state(target_audit_id, cwd)
            commit = (restored or {}).get("state", {}).get("commit_id")
            return bool(commit) and jj.current_pointer(cwd) != commit
        expected = self.store.expected_pointer(target_audit_id, cwd)
        if expected is None:
            return False
        diff = jj._jj(cwd, "diff", "--summary", "--from", expected, "--to", "@", pointer=expected)
        return bool(diff.stdout.strip())

    @activity.defn(name="undo_sandbox")
    @domain_errors
    def undo_sandbox(self, input: UndoStepInput) -> None:
        """Record the sandbox's current state under the undo's audit id (its compensation is
        the rewind's ``restore_sandbox`` of that id), then put it back as the target found it;
        fenced after git/jj too (:func:`~activities.rewind.still_held_after_vcs`)."""
        target = self.store.sandbox_state(input.target_audit_id, input.cwd)
        if target is None:
            return
        backend = backend_for(input.cwd)
        state = {"backend": backend.name, "state": backend.capture(input.cwd)}
        before = self.sandboxes.save_sandbox_state(input.audit_id, input.cwd, state)
        backend.restore(input.cwd, target["state"])
        # git/jj ran outside any transaction: recovery may have taken the run over meanwhile.
        still_held_after_vcs(self.sandboxes, input.audit_id, input.run_id, input.cwd, before)

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

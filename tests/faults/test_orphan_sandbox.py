"""Issue #10: an orphaned sandbox step that changes the sandbox *after* recovery restored it.

``revert_sandbox`` (a rewind) and ``undo_sandbox`` (an undo) record the sandbox's state
(fenced), then run git/jj outside any transaction. An activity whose workflow was terminated
right after its record committed goes on later: recovery has taken the run over meanwhile
(and perhaps already restored the sandbox and released the lock), so the sandbox change
would leave the run rolled back but the sandbox moved. The step checks again after git/jj,
puts the sandbox back to its step record and is refused with ``RewindNotHeld``.

Each case stops the real activity between its record and its git operation (a
:class:`~timetravel.store.sandboxes.SandboxStore` that waits after the record commits), then
terminates the workflow and either runs recovery to the end (``recovered``: the lock is
released, the saga ``failed``) or only takes the run over (``taken-over``: recovery is still
settling), and lets the orphan go on. Real git repositories, real database, real worker.
Also: one git/jj operation at a time per sandbox, and the HTTP resume's check after its POST.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from activities import build_activities
from activities.maintenance import UndoActivities
from activities.rewind import EngineActivities, VcsActivities
from tests.faults import common, scenario
from tests.faults.gates import Gate
from tests.rewind.helpers import audit_rows, git_repo, rewind_input, sandbox_state, start
from timetravel.demo.seed import seed_upstream_run
from timetravel.models import RecoverInput, RecoverResult
from timetravel.store import Database
from timetravel.store.fence import take_over
from timetravel.store.sandboxes import SandboxStore
from timetravel.vcs import GitBackend
from timetravel.vcs._lock import sandbox_lock
from workflows.recover_rewind_audits import RecoverRewindAudits


class Pause:
    """Stops the first sandbox record whose cwd ends with ``suffix``, after it committed."""

    def __init__(self, suffix: str) -> None:
        self.suffix = suffix
        self.recorded = threading.Event()
        self.release = threading.Event()
        self.hits = 0

    def store(self, store: SandboxStore) -> SandboxStore:
        pause = self

        class PausedStore(SandboxStore):
            def save_sandbox_state(
                self, audit_id: int, cwd: str, state: dict[str, Any]
            ) -> dict[str, Any]:
                out = super().save_sandbox_state(audit_id, cwd, state)
                if cwd.endswith(pause.suffix):
                    pause.hits += 1
                    if pause.hits == 1:
                        pause.recorded.set()
                        pause.release.wait(60)
                return out

        return PausedStore(store.db, store.backups)


def rewind_steps(pause: Pause, errors: Gate) -> type:
    """``VcsActivities`` whose store pauses after the record; ``errors`` sees how the step ends."""

    class PausedVcs(VcsActivities):
        def __init__(self, store: SandboxStore) -> None:
            super().__init__(pause.store(store))

    return errors.subclass(PausedVcs)


def undo_steps(pause: Pause, errors: Gate) -> type:
    class PausedUndo(UndoActivities):
        def __init__(self, store: Any, audit: Any, sandboxes: SandboxStore, *rest: Any) -> None:
            super().__init__(store, audit, pause.store(sandboxes), *rest)

    return errors.subclass(PausedUndo)


def passing(method: str, suffix: str | None = None) -> Gate:
    """A gate that never stops: it only records how ``method`` ended (``.error``)."""
    gate = Gate(method, "before", suffix)
    gate.release.set()
    return gate


async def recover(client: Client, queue: str) -> RecoverResult:
    return await client.execute_workflow(
        RecoverRewindAudits.run, RecoverInput(), id=f"recover-{uuid.uuid4()}", task_queue=queue
    )


async def settle_while_orphan_waits(
    client: Client, db: Database, queue: str, audit_id: int, mode: str
) -> None:
    """Recovery's part while the orphan waits after its record: all of it (``recovered``), or
    only the takeover (``taken-over``; recovery settles after the orphan went on)."""
    if mode == "recovered":
        done = await recover(client, queue)
        assert [(r.id, r.result) for r in done.recovered] == [(audit_id, "failed")], done
    else:
        await asyncio.to_thread(take_over, db, audit_id, f"test-recovery/{uuid.uuid4()}")


async def let_orphan_finish(pause: Pause, errors: Gate) -> None:
    pause.release.set()
    assert await asyncio.to_thread(errors.left.wait, 30), "the orphan never ended"
    await asyncio.sleep(0.3)  # its thread returns the (dropped) result


MODES = ["recovered", "taken-over"]


@pytest.mark.parametrize("mode", MODES)
async def test_orphaned_revert_after_recovery_puts_the_sandbox_back(
    client, db: Database, db_url: str, settings, new_worker, tmp_path: Path, mode: str
) -> None:
    ref = await common.reference(client, db_url, tmp_path)
    root = tmp_path / "case"
    boxes = scenario.seed(db, root)
    pause, errors = Pause("sb-b"), passing("revert_sandbox", "sb-b")
    acts = build_activities(db, settings, client=client,
                            substitutes=[rewind_steps(pause, errors)])  # fmt: skip
    async with new_worker(activities=acts) as w:
        handle = await start(client, w.task_queue, rewind_input(scenario.RUN_ID, 0))
        assert await asyncio.to_thread(pause.recorded.wait, 30), "sb-b never recorded"
        await handle.terminate("operator terminates between the record and the revert")
        (audit,) = scenario.side_rows(db)[0]
        await settle_while_orphan_waits(client, db, w.task_queue, audit.id, mode)
        if mode == "recovered":  # recovery restored sb-b (still pre) and let the run go
            assert scenario.shapes(boxes) == ref.boxes_pre
        await let_orphan_finish(pause, errors)
        if mode == "taken-over":
            await recover(client, w.task_queue)
    print(f"\n{mode}: the orphan ended with {errors.error!r}")
    # The orphan did revert sb-b (outside any transaction), then found the run gone.
    assert common.outcome(db, root, boxes, ref) == "pre"
    (audit,) = scenario.side_rows(db)[0]
    assert audit.result == "failed"
    assert getattr(errors.error, "type", None) == "RewindNotHeld", errors.error


@pytest.mark.parametrize("mode", MODES)
async def test_orphaned_undo_sandbox_after_recovery_puts_the_sandbox_back(
    client, db: Database, settings, new_worker, tmp_path: Path, mode: str
) -> None:
    run_id = f"orphan-undo-{mode}"
    repo = tmp_path / "sandbox"
    shas = git_repo(repo, 2)
    seed_upstream_run(db, run_id, cwd=str(repo), pointers=shas)
    pause, errors = Pause("sandbox"), passing("undo_sandbox")
    acts = build_activities(db, settings, client=client,
                            substitutes=[undo_steps(pause, errors)])  # fmt: skip
    async with new_worker(activities=acts) as w:
        rewound, box_rewound, handle = await common.rewind_then_start_undo(
            client, w.task_queue, db, run_id, repo
        )
        assert await asyncio.to_thread(pause.recorded.wait, 30), "the undo never recorded"
        await handle.terminate("operator terminates between the record and the restore")
        undo_id = audit_rows(db, run_id)[-1].id
        await settle_while_orphan_waits(client, db, w.task_queue, undo_id, mode)
        await let_orphan_finish(pause, errors)
        if mode == "taken-over":
            await recover(client, w.task_queue)
    print(f"\n{mode}: the orphan ended with {errors.error!r}")
    rewind_row, undo_row = audit_rows(db, run_id)
    assert (rewind_row.result, undo_row.result) == ("success", "failed")
    # The undo is rolled back: the run and its sandbox exactly as the rewind left them.
    assert db.dump() == rewound
    assert sandbox_state(repo) == box_rewound
    assert getattr(errors.error, "type", None) == "RewindNotHeld", errors.error


# -- one git operation at a time per sandbox -----------------------------------------------------


def test_a_restore_waits_for_another_operation_on_the_same_sandbox(tmp_path: Path) -> None:
    """Recovery's restore and an orphan's put-back of one sandbox do not interleave: a restore
    started while another thread holds the sandbox's lock waits, then completes exactly; a
    restore of another sandbox does not wait."""
    repo, other = tmp_path / "sb", tmp_path / "other"
    shas, _ = git_repo(repo, 2), git_repo(other, 2)
    (repo / "file.txt").write_text("uncommitted edit\n")
    git = GitBackend()
    before, box_before = git.capture(str(repo)), sandbox_state(repo)
    git.revert(str(repo), shas[0])
    other_state = git.capture(str(other))
    git.revert(str(other), shas[0])
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with sandbox_lock(str(repo)):
            held.set()
            release.wait(30)

    def restorer() -> None:
        git.restore(str(repo), before)

    t_hold, t_restore = threading.Thread(target=holder), threading.Thread(target=restorer)
    t_hold.start()
    assert held.wait(10)
    t_restore.start()
    git.restore(str(other), other_state)  # another sandbox: not blocked
    t_restore.join(1.0)
    waited = t_restore.is_alive()
    box_while_held = sandbox_state(repo)
    release.set()
    t_hold.join(10)
    t_restore.join(30)
    assert waited, "the restore did not wait for the sandbox's lock"
    assert box_while_held != box_before  # nothing restored while the other held it
    assert sandbox_state(repo) == box_before  # then restored exactly
    with sandbox_lock(str(repo)), sandbox_lock(str(repo)):  # reentrant in one thread
        git.restore(str(repo), before)


# -- the engine's HTTP resume --------------------------------------------------------------------


class HeldEngine:
    """A loopback engine endpoint whose ``resume`` answers only once the test lets it."""

    def __init__(self) -> None:
        self.asked, self.answer = threading.Event(), threading.Event()
        self.paths: list[str] = []
        engine = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                engine.paths.append(self.path)
                if self.path.endswith("/resume"):
                    engine.asked.set()
                    engine.answer.wait(60)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


async def test_orphaned_http_resume_after_recovery_is_refused(
    client, db: Database, settings, new_worker
) -> None:
    """The HTTP control checks the lock, then POSTs: a rewind terminated while the engine
    answers is settled by recovery meanwhile (only ``finish`` was left: ``success``); the
    orphaned resume step, once answered, finds the run gone and fails ``RewindNotHeld``
    instead of reporting a resume of a run it no longer holds."""
    engine = HeldEngine()
    try:
        seed_upstream_run(db, "run-http-orphan", cwd=None)
        http = settings.model_copy(update={"engine_control": "http", "engine_url": engine.url})
        errors = passing("resume_event_loop")
        acts = build_activities(db, http, client=client,
                                substitutes=[errors.subclass(EngineActivities)])  # fmt: skip
        async with new_worker(activities=acts) as w:
            handle = await start(client, w.task_queue, rewind_input("run-http-orphan", 1))
            assert await asyncio.to_thread(engine.asked.wait, 30), "the engine was never asked"
            await handle.terminate("operator terminates while the engine resumes the run")
            done = await recover(client, w.task_queue)
            engine.answer.set()
            assert await asyncio.to_thread(errors.left.wait, 30), "the orphan never ended"
    finally:
        engine.answer.set()
        engine.server.shutdown()
    assert [(r.result, r.action) for r in done.recovered] == [("success", "finished")], done
    assert engine.paths == ["/v1/runs/run-http-orphan/resume"]
    assert getattr(errors.error, "type", None) == "RewindNotHeld", errors.error

"""Backup retention (issue #13): ``RetentionStore.prune``, ``PruneBackups``, its Schedule and
``timetravel prune``, on SQLite and PostgreSQL, with real rewinds."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text
from temporalio.client import WorkflowFailureError

from tests.rewind.helpers import failure, rewind, rewind_input
from tests.rewind.test_recovery import _cli
from timetravel import schema
from timetravel.demo.seed import insert_rows, seed_upstream_run
from timetravel.schedules import ensure_prune_schedule
from timetravel.settings import load_settings
from timetravel.store import Database
from timetravel.store.retention import (
    PRUNED_STEP,
    PruneInput,
    PruneReport,
    RetentionStore,
    parse_duration_ms,
    pruned_record,
)
from workflows.prune_backups import PruneBackups

BACKUP_TABLES = [
    schema.backups,
    *schema.BACKED_UP_TABLES.values(),
    schema.bk_outputs,
    schema.bk_rows,
    schema.bk_provenance,
    schema.bk_snapshot_contents,
]
FAR_FUTURE = 2**50


def backup_counts(db: Database, audit_id: int) -> dict[str, int]:
    """Rows per backup table of one audit id (the ``pruned`` record aside)."""
    out = {}
    with db.read() as conn:
        for t in BACKUP_TABLES:
            q = select(func.count()).select_from(t).where(t.c.audit_id == audit_id)
            if t is schema.backups:
                q = q.where(t.c.step != PRUNED_STEP)
            n = conn.execute(q).scalar_one()
            if n:
                out[t.name] = n
    return out


def backup_dump(db: Database) -> dict[str, list[Any]]:
    with db.read() as conn:
        return {
            t.name: sorted(map(tuple, conn.execute(select(t))), key=repr) for t in BACKUP_TABLES
        }


def seed_unsettled(db: Database, run_id: str, result: str) -> int:
    """An old audit row (``in_progress`` or ``partial``) with a step record and a row copy."""
    seed_upstream_run(db, run_id, cwd=None)
    insert_rows(db, "_smithers_time_travel_audit", [
        {"run_id": run_id, "from_frame_no": 2, "to_frame_no": 0, "caller": "user:x",
         "timestamp_ms": 1000, "result": result},
    ])  # fmt: skip
    with db.read() as conn:
        aid = conn.execute(
            select(func.max(schema.audit.c.id)).where(schema.audit.c.run_id == run_id)
        ).scalar_one()
    insert_rows(db, "_timetravel_backups", [
        {"audit_id": aid, "step": "truncate", "key": "", "state_json": "{}", "restored": False,
         "created_at_ms": 1000},
    ])  # fmt: skip
    insert_rows(db, "_timetravel_bk_frames", [
        {"audit_id": aid, "run_id": run_id, "frame_no": 9, "created_at_ms": 1, "xml_json": "{}",
         "xml_hash": "h", "encoding": "full"},
    ])  # fmt: skip
    return int(aid)


async def test_prune_frees_settled_backups_and_keeps_in_progress_and_partial(
    client, db: Database, new_worker
) -> None:
    seed_upstream_run(db, "run-ok", cwd=None)
    async with new_worker() as w:
        res = await rewind(client, w.task_queue, rewind_input("run-ok", 0))
    ok = res.audit_id
    # (Engine 0.32's provenance copies are pruned with the rest: one, as a 0.32 rewind copies.)
    insert_rows(db, schema.bk_provenance.name, [
        {"audit_id": ok, "run_id": "run-ok", "output_table": "out", "node_id": "n",
         "iteration": 0, "seq": 1},
    ])  # fmt: skip
    # (And its typed snapshot payload copies.)
    insert_rows(db, schema.bk_snapshot_contents.name, [
        {"audit_id": ok, "content_hash": "h", "nodes_json": "[]", "outputs_json": "{}",
         "ralph_json": "[]", "input_json": "{}", "ref_count": 1},
    ])  # fmt: skip
    freed = backup_counts(db, ok)
    # The rewind backed up frames, attempts, outputs (JSON), nodes, the run, loop state.
    assert freed["_timetravel_bk_frames"] == 2 and freed["_timetravel_bk_outputs"] == 2
    assert freed[schema.bk_provenance.name] == 1
    assert freed[schema.bk_snapshot_contents.name] == 1
    in_progress = seed_unsettled(db, "run-busy", "in_progress")
    partial = seed_unsettled(db, "run-partial", "partial")
    store = RetentionStore(db)

    # Not old enough: nothing goes.
    assert store.prune(3_600_000).audits == []
    # A dry run counts exactly what a prune frees, and writes nothing.
    before = backup_dump(db)
    plan = store.prune(0, now=FAR_FUTURE, dry_run=True)
    assert backup_dump(db) == before
    assert plan.dry_run and plan.audit_ids == [ok] and plan.audits[0].rows == freed
    assert {(k.audit_id, k.reason) for k in plan.kept} == {
        (in_progress, "in_progress"),
        (partial, "partial"),
    }

    report = store.prune(0, now=FAR_FUTURE)
    assert report.audit_ids == [ok] and report.rows == dict(sorted(freed.items()))
    assert backup_counts(db, ok) == {}
    with db.read() as conn:
        rec = pruned_record(conn, ok)
        assert pruned_record(conn, in_progress) is None
    assert rec is not None and rec["rows"] == freed and rec["pruned_at_ms"] == FAR_FUTURE
    # Kept on purpose: their backups are what an operator repairs the run from.
    assert backup_counts(db, in_progress) and backup_counts(db, partial)
    # Idempotent: a second prune finds nothing (the pruned record is not a backup).
    assert store.prune(0, now=FAR_FUTURE).audits == []


async def test_prune_keeps_the_backups_of_a_locked_run(client, db: Database, new_worker) -> None:
    """A settled rewind's backups stay while another saga holds its run (an undo reads them)."""
    seed_upstream_run(db, "run-locked", cwd=None)
    async with new_worker() as w:
        res = await rewind(client, w.task_queue, rewind_input("run-locked", 1))
    insert_rows(db, "_timetravel_run_locks", [
        {"run_id": "run-locked", "audit_id": 10_000, "acquired_at_ms": 1},
    ])  # fmt: skip
    report = RetentionStore(db).prune(0, now=FAR_FUTURE)
    assert report.audits == [] and [(k.audit_id, k.reason) for k in report.kept] == [
        (res.audit_id, "locked")
    ]
    assert backup_counts(db, res.audit_id)


async def test_prune_backups_workflow_uses_the_worker_retention(
    client, db: Database, new_worker
) -> None:
    seed_upstream_run(db, "run-wf", cwd=None)
    async with new_worker(backup_retention=0) as w:
        res = await rewind(client, w.task_queue, rewind_input("run-wf", 0))
        freed = backup_counts(db, res.audit_id)
        # No input at all (a Schedule's action, the UI's empty form): the worker's retention.
        dry = await client.execute_workflow(
            "PruneBackups", {"dry_run": True}, id=f"prune-{uuid.uuid4()}",
            task_queue=w.task_queue, result_type=PruneReport,
        )  # fmt: skip
        assert (
            dry.dry_run
            and dry.audit_ids == [res.audit_id]
            and dry.rows == dict(sorted(freed.items()))
        )
        assert backup_counts(db, res.audit_id) == freed
        report = await client.execute_workflow(
            "PruneBackups", id=f"prune-{uuid.uuid4()}", task_queue=w.task_queue,
            result_type=PruneReport,
        )  # fmt: skip
        assert report.audit_ids == [res.audit_id] and report.older_than_ms == 0
        assert backup_counts(db, res.audit_id) == {}
        # A typed start, and an explicit retention that keeps everything.
        kept = await client.execute_workflow(
            PruneBackups.run, PruneInput(older_than_ms=3_600_000), id=f"prune-{uuid.uuid4()}",
            task_queue=w.task_queue,
        )  # fmt: skip
        assert kept.audits == []
        for bad in ({"older_than_ms": -1}, {"older_than": 5}, [1]):
            with pytest.raises(WorkflowFailureError) as exc:
                await client.execute_workflow(
                    "PruneBackups", bad, id=f"prune-{uuid.uuid4()}", task_queue=w.task_queue
                )
            assert failure(exc.value).type == "InvalidInput"
            assert failure(exc.value).non_retryable


async def test_prune_schedule_is_created_then_updated(client, settings) -> None:
    sid = f"prune-{uuid.uuid4()}"
    await ensure_prune_schedule(
        client, every=timedelta(days=1), task_queue=settings.task_queue, schedule_id=sid
    )
    await ensure_prune_schedule(
        client,
        every=timedelta(hours=6),
        task_queue=settings.task_queue,
        older_than=timedelta(days=2),
        schedule_id=sid,
    )
    handle = client.get_schedule_handle(sid)
    try:
        desc = await handle.describe()
        assert [i.every for i in desc.schedule.spec.intervals] == [timedelta(hours=6)]
        assert desc.schedule.action.workflow == "PruneBackups"
    finally:
        await handle.delete()
    with pytest.raises(ValueError):
        await ensure_prune_schedule(client, every=timedelta(0), task_queue="q", schedule_id=sid)


async def test_prune_command_prints_what_it_frees(client, db: Database, db_url, new_worker) -> None:
    seed_upstream_run(db, "run-cli", cwd=None)
    async with new_worker() as w:
        res = await rewind(client, w.task_queue, rewind_input("run-cli", 0))
        freed = backup_counts(db, res.audit_id)
        env = {
            "TIMETRAVEL_DATABASE_URL": db_url,
            "TIMETRAVEL_TEMPORAL_ADDRESS": client.service_client.config.target_host,
            "TIMETRAVEL_TASK_QUEUE": w.task_queue,
        }
        # Default retention (a week): nothing is old enough.
        code, out, err = await _cli(env, "prune", "--dry-run")
        assert code == 0, err
        assert "nothing to prune" in out
        code, out, err = await _cli(env, "prune", "--older-than", "0ms", "--dry-run", "--json")
        assert code == 0, err
        doc = json.loads(out)
        assert doc["ok"] and doc["dry_run"] and doc["audit_ids"] == [res.audit_id]
        assert doc["rows"] == freed and backup_counts(db, res.audit_id) == freed
        code, out, err = await _cli(env, "prune", "--older-than", "0")
        assert code == 0, err
        assert f"audit ids {res.audit_id}" in out and "can no longer be undone" in out
        assert "bk_frames" in out
        assert backup_counts(db, res.audit_id) == {}
        code, out, err = await _cli(env, "prune", "--older-than", "a while")
        assert code == 2 and "not a duration" in err


def test_retention_setting_and_durations(monkeypatch) -> None:
    assert parse_duration_ms("7d") == 7 * 86_400_000
    assert parse_duration_ms("12h") == 12 * 3_600_000
    assert parse_duration_ms("1w") == parse_duration_ms("7d")
    assert parse_duration_ms("250") == 250 == parse_duration_ms(250)
    for bad in ("-1", "1.5d", "7 days", "", True, -5):
        with pytest.raises(ValueError):
            parse_duration_ms(bad)
    monkeypatch.delenv("TIMETRAVEL_BACKUP_RETENTION", raising=False)
    assert load_settings().backup_retention == 7 * 86_400_000
    monkeypatch.setenv("TIMETRAVEL_BACKUP_RETENTION", "12h")
    assert load_settings().backup_retention == 43_200_000
    monkeypatch.setenv("TIMETRAVEL_BACKUP_RETENTION", "soon")
    from timetravel.settings import SettingsError

    with pytest.raises(SettingsError, match="TIMETRAVEL_BACKUP_RETENTION"):
        load_settings()


def test_prune_works_without_the_optional_typed_copy_tables(db: Database) -> None:
    """A database migrated before the typed provenance and snapshot payload copies existed has
    no such tables: a prune counts and frees the other copies without failing on them."""
    aid = seed_unsettled(db, "run-old-schema", "success")
    with db.write() as conn:
        conn.execute(text(f"DROP TABLE {schema.bk_provenance.name}"))
        conn.execute(text(f"DROP TABLE {schema.bk_snapshot_contents.name}"))
    store = RetentionStore(db)
    plan = store.prune(0, now=FAR_FUTURE, dry_run=True)
    assert plan.audit_ids == [aid] and plan.audits[0].rows == {
        "_timetravel_backups": 1,
        "_timetravel_bk_frames": 1,
    }
    report = store.prune(0, now=FAR_FUTURE)
    assert report.audit_ids == [aid]
    with db.read() as conn:
        bk_frames = schema.BACKED_UP_TABLES["_smithers_frames"]
        left = conn.execute(
            select(func.count()).select_from(bk_frames).where(bk_frames.c.audit_id == aid)
        ).scalar_one()
    assert left == 0

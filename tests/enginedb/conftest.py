"""Fixtures: a 0.32-shaped database (SQLite and PostgreSQL) and a database written by the real
engine (SQLite, one run of ``typed_workflow.tsx``)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Table, event, func, select, text

from tests.enginedb import schema032
from timetravel.models import RewindCounts
from timetravel.rewind import RateLimit
from timetravel.store import Database, backups
from timetravel.store.rewind import RewindStore

ENGINE_DIR = Path(__file__).resolve().parents[1] / "engine"
ENGINE_BIN = ENGINE_DIR / "node_modules" / ".bin"
WORKFLOW = Path(__file__).with_name("typed_workflow.tsx")

OUTPUT_TABLES = {"out_a": "value REAL", "out_b": "value REAL", "outB": "value REAL"}


@pytest.fixture
def db032(db_url: str) -> Iterator[Database]:
    """An empty database with the engine-0.32 tables, triggers and three output tables."""
    database = Database(db_url)
    with database.write() as conn:
        schema032.create(conn, OUTPUT_TABLES)
    try:
        yield database
    finally:
        database.dispose()


def put_snapshot(
    conn: Connection,
    run_id: str,
    frame_no: int,
    nodes: Any,
    outputs: Any,
    *,
    inline: bool = False,
    created_at_ms: int = 1000,
) -> str:
    """Write a snapshot as engine 0.32 does (content-addressed) or inline (as 0.16 did)."""
    payload = {
        "nodes_json": json.dumps(nodes, separators=(",", ":")),
        "outputs_json": json.dumps(outputs, separators=(",", ":")),
        "ralph_json": "[]",
        "input_json": "{}",
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    row = {"run_id": run_id, "frame_no": frame_no, "content_hash": digest, "ts": created_at_ms}
    if inline:
        conn.execute(
            text(
                "INSERT INTO _smithers_snapshots (run_id, frame_no, nodes_json, outputs_json,"
                " ralph_json, input_json, content_hash, created_at_ms) VALUES (:run_id,"
                " :frame_no, :nodes_json, :outputs_json, :ralph_json, :input_json,"
                " :content_hash, :ts)"
            ),
            {**row, **payload},
        )
        return digest
    conn.execute(
        text(
            "INSERT INTO _smithers_snapshot_contents (content_hash, nodes_json, outputs_json,"
            " ralph_json, input_json, ref_count) VALUES (:content_hash, :nodes_json,"
            " :outputs_json, :ralph_json, :input_json, 0) ON CONFLICT (content_hash) DO NOTHING"
        ),
        {**row, **payload},
    )
    conn.execute(
        text(
            "INSERT INTO _smithers_snapshots (run_id, frame_no, nodes_json, outputs_json,"
            " ralph_json, input_json, content_hash, created_at_ms) VALUES (:run_id, :frame_no,"
            " '', '', '', '', :content_hash, :ts)"
        ),
        row,
    )
    conn.execute(
        text(
            "INSERT INTO _smithers_snapshot_payload_refs (run_id, frame_no, content_hash)"
            " VALUES (:run_id, :frame_no, :content_hash)"
        ),
        row,
    )
    return digest


def table_rows(conn: Connection, table: str) -> list[tuple[Any, ...]]:
    rows = conn.execute(text(f'SELECT * FROM "{table}"')).all()
    return sorted((tuple(r) for r in rows), key=repr)


class JsonSeen:
    """How many copies Python encoded and decoded, and how many times their JSON was read
    back."""

    def __init__(self, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
        self.encoded = 0
        self.decoded = 0
        self.reads = 0
        real_decode, real_encode = backups.decode_row, backups.encode_row

        def decode(text_: str) -> dict[str, Any]:
            self.decoded += 1
            return real_decode(text_)

        def encode(row: Any) -> str:
            self.encoded += 1
            return real_encode(row)

        monkeypatch.setattr(backups, "decode_row", decode)
        monkeypatch.setattr(backups, "encode_row", encode)

        @event.listens_for(db.engine, "before_cursor_execute")
        def _stmt(_c: Any, _cur: Any, sql: str, *_: Any) -> None:
            if sql.lstrip().startswith("SELECT _timetravel_bk_rows.row_json"):
                self.reads += 1


# -- the real engine ------------------------------------------------------------------------


def copies(db: Database, table: Table, audit_id: int) -> int:
    """How many rows a backup table holds for one audit id."""
    with db.read() as conn:
        q = select(func.count()).select_from(table).where(table.c.audit_id == audit_id)
        return int(conn.execute(q).scalar_one())


def run_engine(tmp: Path, run_id: str, input_json: str = '{"x": 2}') -> Path:
    """Run ``typed_workflow.tsx`` to completion with the real engine; returns the SQLite file."""
    if not (ENGINE_BIN / "smithers").exists():
        pytest.skip("the real engine is not installed (tests/engine/node_modules)")
    wf = tmp / "wf"
    home = tmp / "home"
    wf.mkdir(parents=True, exist_ok=True)
    home.mkdir(exist_ok=True)
    shutil.copy(WORKFLOW, wf / WORKFLOW.name)
    link = wf / "node_modules"
    if not link.exists():
        link.symlink_to(ENGINE_DIR / "node_modules")
    db_path = tmp / "smithers.db"
    env = {
        **os.environ,
        "HOME": str(home),
        "SMITHERS_NO_SKILL_REFRESH": "1",
        "SMITHERS_NO_REPORT": "1",
        "SMITHERS_DB": str(db_path),
        "PATH": f"{ENGINE_BIN}:{os.environ.get('PATH', '')}",
    }
    proc = subprocess.run(
        [
            str(ENGINE_BIN / "smithers"),
            "up",
            WORKFLOW.name,
            "--run-id",
            run_id,
            "--input",
            input_json,
        ],
        cwd=wf,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return db_path


@pytest.fixture(scope="module")
def engine_db_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pristine engine-written database (copy it before changing it)."""
    return run_engine(tmp_path_factory.mktemp("engine"), "r1")


@pytest.fixture
def engine_db(engine_db_file: Path, tmp_path: Path) -> Iterator[Database]:
    """A private copy of the engine-written database."""
    target = tmp_path / "copy.db"
    src = sqlite3.connect(engine_db_file)
    try:
        src.execute("VACUUM INTO ?", (str(target),))  # a consistent copy, WAL included
    finally:
        src.close()
    database = Database(f"sqlite:///{target}")
    try:
        yield database
    finally:
        database.dispose()


def begin_rewind(store: RewindStore, run_id: str, frame_no: int) -> int:
    """``begin`` of a confirmed rewind by caller ``t`` outside any workflow; its audit id."""
    audit_id, _, _ = store.begin(
        run_id=run_id,
        frame_no=frame_no,
        confirm=True,
        caller="t",
        limit=RateLimit(),
        workflow_id=None,
        workflow_run_id=None,
    )
    return audit_id


def truncate_to(store: RewindStore, audit_id: int, run_id: str, frame_no: int) -> RewindCounts:
    """The truncate step of that rewind (hijack marker cleared)."""
    return store.truncate(
        audit_id=audit_id, run_id=run_id, frame_no=frame_no, caller="t", keep_hijack=False
    )

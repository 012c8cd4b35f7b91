"""Output rows are backed up as JSON (issue #10 item 11): every value that is not plain JSON is
tagged, a json/jsonb value that looks like a tag is escaped, and a rewind that truncates output
tables with jsonb, timestamptz, numeric, bytea and date columns puts them back exactly, both as
a compensation and when the restore runs on its own after a successful rewind."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from temporalio.client import WorkflowFailureError

from activities.rewind import StoreActivities
from tests.rewind.helpers import audit_rows, faulty_class, rewind, rewind_input
from tests.rewind.test_rollback import acts_with
from timetravel.demo.seed import seed_upstream_run
from timetravel.store import (
    Database,
    UnencodableValue,
    decode_row,
    decode_value,
    encode_row,
    encode_value,
)
from timetravel.store.backups import Backups

TZ = dt.timezone(dt.timedelta(hours=2))

VALUES: list[Any] = [
    None,
    True,
    0,
    2**70,
    -1.5,
    "text",
    "",
    b"\x00\xff",
    dt.datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=TZ),
    dt.datetime(2024, 5, 1, 10, 0, 0),
    dt.date(2024, 2, 29),
    dt.time(23, 59, 59, 1),
    dt.timedelta(days=-1, seconds=5, microseconds=7),
    Decimal("12.50"),
    Decimal("-0.000000000000000000000000001"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    {"$b64": "x"},
    {"$obj": {"$b64": "x"}},
    {"$dt": 1, "other": [{"$dec": "1"}]},
    [1, {"$uuid": "nope"}, [b"\x01"]],
    {"a": None, "b": {"$": []}},
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_every_value_round_trips_exactly(value: Any) -> None:
    back = decode_value(json.loads(json.dumps(encode_value(value))))
    assert back == value and type(back) is type(value)
    assert decode_row(encode_row({"c": value})) == {"c": value}


def test_special_floats_round_trip() -> None:
    for f in (float("inf"), float("-inf")):
        assert decode_row(encode_row({"f": f})) == {"f": f}
    nan = decode_row(encode_row({"f": float("nan")}))["f"]
    assert nan != nan


def test_a_value_that_cannot_be_kept_exactly_fails_the_copy() -> None:
    with pytest.raises(UnencodableValue, match="complex"):
        encode_row({"c": 1j})


def test_rows_of_the_first_encoding_are_still_read() -> None:
    old = json.dumps({"run_id": "r", "data": {"$b64": "AP8="}, "n": 1, "doc": {"a": 1}})
    assert decode_row(old) == {"run_id": "r", "data": b"\x00\xff", "n": 1, "doc": {"a": 1}}


def test_json_text_round_trips_and_is_never_confused_with_a_json_value() -> None:
    from timetravel.store.jsontext import JsonText

    exact = {"raw": JsonText('{"a":1,  "a": 2}'), "null": JsonText("null"), "sql_null": None}
    assert decode_row(encode_row(exact)) == exact
    # A json value (parsed) shaped like the tag stays a value: it is wrapped in $obj.
    parsed = {"doc": {"$json": "null"}}
    assert decode_row(encode_row(parsed)) == parsed
    assert decode_row(encode_row(parsed))["doc"] != JsonText("null")


# -- real rewinds --------------------------------------------------------------------------------

PG_DDL = """CREATE TABLE IF NOT EXISTS {name} (
    run_id text NOT NULL, node_id text NOT NULL, iteration integer NOT NULL DEFAULT 0,
    value integer, doc jsonb, raw json, at timestamptz, amount numeric, data bytea, day date,
    clock time, span interval, uid uuid, PRIMARY KEY (run_id, node_id, iteration))"""
SQLITE_DDL = """CREATE TABLE IF NOT EXISTS {name} (
    run_id TEXT NOT NULL, node_id TEXT NOT NULL, iteration INTEGER NOT NULL DEFAULT 0,
    value INTEGER, doc JSON, raw JSON, at TIMESTAMP, amount NUMERIC, data BLOB, day DATE,
    clock TIME, span TEXT, uid TEXT, PRIMARY KEY (run_id, node_id, iteration))"""


def rich_values(db: Database, i: int) -> dict[str, Any]:
    """Column values as the engine (or a person) would have written them."""
    tag_like = [{"$b64": "x"}, {"$obj": 1}, {"a": {"$dt": "not a date"}}, None][i % 4]
    if db.dialect == "postgresql":
        return {
            "doc": json.dumps(tag_like) if tag_like is not None else None,
            "raw": json.dumps({"$b64": "eA=="}),
            "at": dt.datetime(2024, 5, 1, 10, i, 0, 123456, tzinfo=TZ),
            "amount": Decimal(f"{i}.50"),
            "data": bytes([0, 255, i]),
            "day": dt.date(2024, 2, 29),
            "clock": dt.time(23, 59, i),
            "span": dt.timedelta(days=i, microseconds=3),
            "uid": uuid.uuid4(),
        }
    return {
        "doc": json.dumps(tag_like),
        "raw": '{"$b64": "eA=="}',
        "at": f"2024-05-01T10:0{i}:00.123+02:00",  # not SQLAlchemy's own format
        "amount": "12.50" if i % 2 else 7,
        "data": bytes([0, 255, i]),
        "day": "2024-02-29",
        "clock": "23:59:59",
        "span": None,
        "uid": str(uuid.uuid4()),
    }


def seed_rich_run(db: Database, run_id: str) -> None:
    ddl = PG_DDL if db.dialect == "postgresql" else SQLITE_DDL
    with db.write() as conn:
        for name in ("out_a", "out_b"):  # seed_upstream_run keeps tables that exist
            conn.exec_driver_sql(ddl.format(name=name))
    seed_upstream_run(db, run_id, cwd=None)
    cast = "CAST(:doc AS jsonb)" if db.dialect == "postgresql" else ":doc"
    cast_raw = "CAST(:raw AS json)" if db.dialect == "postgresql" else ":raw"
    with db.write() as conn:
        for i, name in enumerate(("out_a", "out_b")):
            conn.execute(
                text(
                    f"UPDATE {name} SET doc = {cast}, raw = {cast_raw}, at = :at, amount = :amount,"
                    " data = :data, day = :day, clock = :clock, span = :span, uid = :uid"
                    " WHERE run_id = :run_id"
                ),
                {**rich_values(db, i + len(run_id)), "run_id": run_id},
            )


def outputs(db: Database, run_id: str) -> dict[str, list[Any]]:
    dump = db.dump()
    return {t: [r for r in dump[t] if r[0] == run_id] for t in ("out_a", "out_b")}


async def test_a_failed_rewind_puts_rich_output_rows_back_exactly(
    client, db: Database, settings, new_worker
) -> None:
    seed_rich_run(db, "run-rich")
    before = db.dump()
    assert all(before[t] for t in ("out_a", "out_b"))
    broken = faulty_class(StoreActivities, "rebuild_reconciler", "before")
    async with new_worker(activities=acts_with(db, settings, broken)) as w:
        with pytest.raises(WorkflowFailureError):
            await rewind(client, w.task_queue, rewind_input("run-rich", 0))
    (audit,) = audit_rows(db, "run-rich")
    with db.read() as conn:
        copied = conn.execute(
            text("SELECT count(*) FROM _timetravel_bk_outputs WHERE audit_id = :a"),
            {"a": audit.id},
        ).scalar_one()
    assert copied == 2  # the truncate did delete both rows before the failure
    assert audit.result == "failed"
    assert db.dump() == before


async def test_the_restore_alone_puts_rich_output_rows_back_after_a_rewind(
    client, db: Database, new_worker
) -> None:
    seed_rich_run(db, "run-rich-ok")
    kept = outputs(db, "run-rich-ok")
    async with new_worker() as w:
        res = await rewind(client, w.task_queue, rewind_input("run-rich-ok", 0))
    assert outputs(db, "run-rich-ok") == {"out_a": [], "out_b": []}
    assert res.audit_id is not None
    with db.write() as conn:
        Backups(db).restore_output_rows(conn, res.audit_id)
    assert outputs(db, "run-rich-ok") == kept


# -- PostgreSQL json/jsonb exactly (issue #10 item 11) ------------------------------------------

#: json keeps its text as written (spacing, key order, duplicate keys, number spelling); jsonb
#: keeps numbers exactly (``1.10``, 22 significant digits); a JSON ``null`` is not SQL NULL.
#: (SQLite keeps every value as the text it was given: the same table there, JSON columns.)
JSON_DDL = """CREATE TABLE IF NOT EXISTS {name} (
    run_id text NOT NULL, node_id text NOT NULL, iteration integer NOT NULL DEFAULT 0,
    value integer, doc jsonb, raw json, doc2 jsonb, raw2 json,
    PRIMARY KEY (run_id, node_id, iteration))"""
JSON_VALUES = {
    "out_a": {"doc": "null", "raw": '{"a":1,  "b":[1.10, 1e2], "a": 2}', "doc2": None,
              "raw2": "null"},
    "out_b": {"doc": '{"a": 1.10, "c": 0.1000000000000000000001, "d": {"$b64": "x"}}',
              "raw": "null", "doc2": "null", "raw2": None},
}  # fmt: skip


def seed_json_run(db: Database, run_id: str) -> None:
    pg = db.dialect == "postgresql"
    ddl = JSON_DDL if pg else JSON_DDL.replace("jsonb", "JSON").replace("json,", "JSON,")
    with db.write() as conn:
        for name in JSON_VALUES:
            conn.exec_driver_sql(ddl.format(name=name))
    seed_upstream_run(db, run_id, cwd=None)
    doc, raw = ("CAST(:{} AS jsonb)", "CAST(:{} AS json)") if pg else (":{}", ":{}")
    with db.write() as conn:
        for name, values in JSON_VALUES.items():
            conn.execute(
                text(
                    f"UPDATE {name} SET doc = {doc.format('doc')}, raw = {raw.format('raw')}, "
                    f"doc2 = {doc.format('doc2')}, raw2 = {raw.format('raw2')} WHERE run_id = :r"
                ),
                {**values, "r": run_id},
            )


def json_texts(db: Database, run_id: str) -> dict[str, list[Any]]:
    """Each json/jsonb column as PostgreSQL stores it: its text, and whether it is SQL NULL
    (``db.dump()`` reads the parsed values, where both differences vanish)."""
    out = {}
    cols = ("doc", "raw", "doc2", "raw2")
    as_text = ", ".join(f"CAST({c} AS TEXT)" for c in cols)
    with db.read() as conn:
        for name in JSON_VALUES:
            out[name] = [
                tuple(r)
                for r in conn.execute(
                    text(
                        f"SELECT node_id, {as_text}, "
                        f"doc IS NULL, raw IS NULL, doc2 IS NULL, raw2 IS NULL FROM {name} "
                        "WHERE run_id = :r ORDER BY node_id, iteration"
                    ),
                    {"r": run_id},
                )
            ]
    return out


async def test_json_and_jsonb_come_back_exactly_after_a_failed_rewind(
    client, db: Database, settings, new_worker
) -> None:
    seed_json_run(db, "run-json")
    before = json_texts(db, "run-json")
    assert all(before.values())
    # The comparison can fail: the seeded texts are what PostgreSQL keeps.
    assert before["out_a"][0][1:5] == ("null", '{"a":1,  "b":[1.10, 1e2], "a": 2}', None, "null")
    broken = faulty_class(StoreActivities, "rebuild_reconciler", "before")
    async with new_worker(activities=acts_with(db, settings, broken)) as w:
        with pytest.raises(WorkflowFailureError):
            await rewind(client, w.task_queue, rewind_input("run-json", 0))
    (audit,) = audit_rows(db, "run-json")
    assert audit.result == "failed"
    assert json_texts(db, "run-json") == before


async def test_json_and_jsonb_come_back_exactly_from_the_restore_alone(
    client, db: Database, new_worker
) -> None:
    seed_json_run(db, "run-json-ok")
    before = json_texts(db, "run-json-ok")
    async with new_worker() as w:
        res = await rewind(client, w.task_queue, rewind_input("run-json-ok", 0))
    assert json_texts(db, "run-json-ok") == {"out_a": [], "out_b": []}
    assert res.audit_id is not None
    with db.write() as conn:
        Backups(db).restore_output_rows(conn, res.audit_id)
    assert json_texts(db, "run-json-ok") == before

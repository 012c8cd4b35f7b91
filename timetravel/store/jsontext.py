"""PostgreSQL json/jsonb output columns, backed up and put back exactly (issue #10 item 11).

Read as Python values (what the driver parses), a JSON ``null`` and SQL ``NULL`` are both
``None``; a ``json`` value loses its spacing, key order and duplicate keys; a ``jsonb`` number
such as ``1.10`` or ``0.1000000000000000000001`` becomes a float. So the reflected output
tables (:meth:`timetravel.store.Database.output_table`) type their json/jsonb columns
:class:`ExactJson`: a SELECT reads the value's text as PostgreSQL stores it (``col::text``)
into a :class:`JsonText`, which a backup row keeps as that text
(:func:`timetravel.store.encode_row`) and an INSERT casts back unchanged. Any other Python
value (a snapshot's outputs, backups written before) is sent as ``json.dumps`` of it, as
SQLAlchemy's JSON type did.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, Text, cast, type_coerce
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import JSON, TypeDecorator

__all__ = ["ExactJson", "JsonText", "exact_json_columns"]


@dataclass(frozen=True)
class JsonText:
    """The exact text of a json/jsonb value (never SQL NULL: that is ``None``). Not a ``str``,
    so that nothing mistakes it for a text column's value."""

    text: str


class ExactJson(TypeDecorator[Any]):
    """A json (``kind="json"``) or jsonb column read as :class:`JsonText` and written from one
    exactly. ``none_as_null``: whether ``None`` is written as SQL NULL (a restore of backed-up
    rows) or as the JSON ``null`` (SQLAlchemy's JSON default, for every other write)."""

    impl = Text
    cache_ok = True

    def __init__(self, kind: str = "jsonb", none_as_null: bool = False) -> None:
        super().__init__()
        self.kind = kind
        self.none_as_null = none_as_null

    def restoring(self) -> ExactJson:
        """This type for putting backed-up rows back (``None`` is SQL NULL)."""
        return ExactJson(self.kind, none_as_null=True)

    def _target(self) -> Any:
        return postgresql.JSONB() if self.kind == "jsonb" else postgresql.JSON()

    def column_expression(self, col: Any) -> Any:
        return type_coerce(cast(col, Text), self)

    def bind_expression(self, bindvalue: Any) -> Any:
        return cast(bindvalue, self._target())

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        if isinstance(value, JsonText):
            return value.text
        if value is None:
            return None if self.none_as_null else "null"
        return json.dumps(value)

    def process_result_value(self, value: Any, dialect: Any) -> JsonText | None:
        return None if value is None else JsonText(str(value))


def exact_json_columns(table: Table) -> None:
    """Type the json/jsonb columns of a reflected PostgreSQL table :class:`ExactJson`."""
    for col in table.columns:
        if isinstance(col.type, JSON):
            kind = "jsonb" if isinstance(col.type, postgresql.JSONB) else "json"
            col.type = ExactJson(kind)

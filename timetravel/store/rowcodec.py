"""The backup row codec: a row as JSON text that comes back as an equal row (every column type
our backups meet, tagged in-band without ambiguity), and the first encoding still read.

Pure: no SQL. :mod:`timetravel.store.backups` writes and reads these documents (some of them
are built by the database itself in the same shape).
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import math
import uuid
from collections.abc import Mapping
from typing import Any

__all__ = [
    "ROW_FORMAT",
    "UnencodableValue",
    "decode_legacy_value",
    "decode_row",
    "decode_value",
    "encode_row",
    "encode_value",
]

#: Marks a backup row written by :func:`encode_row` (a JSON array; rows of the first encoding
#: were plain JSON objects, so the two can never be confused).
ROW_FORMAT = 2


class UnencodableValue(TypeError):
    """A column value a backup cannot hold exactly (the step fails rather than lose it)."""


def encode_value(value: Any) -> Any:
    """Encode a column value as JSON that :func:`decode_value` turns back into an equal value.

    JSON-native values (``None``, booleans, integers, finite floats, strings) are kept; lists
    are encoded item by item; every other value is a one-key object whose key is a tag:
    ``$b64`` (bytes), ``$dt``/``$date``/``$time`` (ISO 8601, offset kept), ``$td`` (days,
    seconds, microseconds), ``$dec`` (the exact decimal text), ``$uuid``, ``$float`` (``nan``,
    ``inf``, ``-inf``). A dict (a json/jsonb value) keeps its keys with encoded values, and one
    that could be read as a tag (a single key starting with ``$``) is wrapped in ``$obj``.

    Raises:
        UnencodableValue: for a type it does not know (never silently stringified).
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$b64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, datetime.datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, datetime.date):
        return {"$date": value.isoformat()}
    if isinstance(value, datetime.time):
        return {"$time": value.isoformat()}
    if isinstance(value, datetime.timedelta):
        return {"$td": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, decimal.Decimal):
        return {"$dec": str(value)}
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    if isinstance(value, list | tuple):
        return [encode_value(v) for v in value]
    if isinstance(value, dict):
        body = {str(k): encode_value(v) for k, v in value.items()}
        if len(body) == 1 and next(iter(body)).startswith("$"):
            return {"$obj": body}
        return body
    raise UnencodableValue(f"cannot back up a value of type {type(value).__name__} exactly")


def decode_value(value: Any) -> Any:
    """The inverse of :func:`encode_value`."""
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((tag, arg),) = value.items()
        if tag.startswith("$"):
            return _decode_tag(tag, arg)
    return {k: decode_value(v) for k, v in value.items()}


def _decode_tag(tag: str, arg: Any) -> Any:
    if tag == "$b64":
        return base64.b64decode(arg)
    if tag == "$dt":
        return datetime.datetime.fromisoformat(arg)
    if tag == "$date":
        return datetime.date.fromisoformat(arg)
    if tag == "$time":
        return datetime.time.fromisoformat(arg)
    if tag == "$td":
        return datetime.timedelta(days=arg[0], seconds=arg[1], microseconds=arg[2])
    if tag == "$dec":
        return decimal.Decimal(arg)
    if tag == "$uuid":
        return uuid.UUID(arg)
    if tag == "$float":
        return float(arg)
    if tag == "$obj":
        return {k: decode_value(v) for k, v in arg.items()}
    raise ValueError(f"unknown backup value tag {tag!r}")


def decode_legacy_value(value: Any) -> Any:
    """A value of the first backup encoding: only bytes were tagged (``{"$b64": …}``), so a
    json/jsonb value of exactly that shape was already ambiguous and is read as bytes."""
    if isinstance(value, dict) and set(value) == {"$b64"}:
        return base64.b64decode(value["$b64"])
    return value


def encode_row(row: Mapping[str, Any]) -> str:
    """A backup row as JSON text: ``[2, {column: encoded value}]``. A json/jsonb value read as
    its exact text (:class:`~timetravel.store.jsontext.JsonText`) is ``{"$json": text}``: a
    column's value of that shape cannot be anything else (a json value that is a one-key
    object with a ``$`` key is wrapped in ``$obj``)."""
    from timetravel.store.jsontext import JsonText

    try:
        body = {
            c: {"$json": v.text} if isinstance(v, JsonText) else encode_value(v)
            for c, v in row.items()
        }
    except UnencodableValue as err:
        raise UnencodableValue(f"{err} (columns {', '.join(row)})") from None
    return json.dumps([ROW_FORMAT, body], allow_nan=False)


def decode_row(text_: str) -> dict[str, Any]:
    """The row :func:`encode_row` wrote, or a row of the first encoding (a JSON object)."""
    doc = json.loads(text_)
    if isinstance(doc, dict):
        return {k: decode_legacy_value(v) for k, v in doc.items()}
    if isinstance(doc, list) and len(doc) == 2 and doc[0] == ROW_FORMAT:
        from timetravel.store.jsontext import JsonText

        return {
            k: JsonText(v["$json"])
            if isinstance(v, dict) and len(v) == 1 and isinstance(v.get("$json"), str)
            else decode_value(v)
            for k, v in doc[1].items()
        }
    raise ValueError(f"unknown backup row format {str(doc)[:40]!r}")

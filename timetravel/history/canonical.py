"""JavaScript-compatible JSON text, so content hashes match those the Smithers package writes.

``JSON.stringify`` differs from :func:`json.dumps` in four ways that matter for a hash:

* no spaces and no ASCII escaping (``separators=(",", ":"), ensure_ascii=False``);
* numbers: integral values print without ``.0`` and JS switches to exponent notation at
  ``1e21`` and below ``1e-6`` (Python at ``1e16`` and below ``1e-4``); ``NaN``/``Infinity``
  become ``null``;
* object keys that are array indices ("0", "17", …) come first, in ascending numeric order;
* a lone surrogate in a string is written as a ``\\uXXXX`` escape.

:func:`normalise` makes a value print identically under :func:`json.dumps` in one linear walk,
so the C encoder does the bulk of the work; only numbers that no ``int``/``float`` prints the
JS way (rare) fall back to a small encoder of our own.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

__all__ = ["content_hash", "dumps", "js_number", "js_ordered", "loads", "same_json"]

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_MAX_INDEX = 2**32 - 2  # the largest array index (ECMAScript: < 2^32 - 1)


class _JsNumber(float):
    """A float that must print as ``text`` (JS ``Number::toString``), not as Python's repr."""

    text: str


def js_number(value: float) -> str:
    """The text ``JSON.stringify`` writes for a finite float (ECMAScript ``Number::toString``)."""
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    # repr gives the shortest round-trip digits, as JS does; only the layout differs.
    mantissa, _, exp = repr(abs(value)).partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    digits = int_part + frac_part
    n = len(int_part) + int(exp or 0)  # value = 0.<digits> * 10**n
    stripped = digits.lstrip("0")
    n -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        head = digits[0] + ("." + digits[1:] if k > 1 else "")
        out = f"{head}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + out


def _number(value: float) -> Any:
    if not math.isfinite(value):
        return None
    if value.is_integer():
        if abs(value) < 1e21:
            return int(value)
    elif abs(value) >= 1e-4:
        # Non-integral floats are below 2**53 < 1e16, where Python's repr and JS both print
        # the shortest round-trip digits without an exponent.
        return value
    text = js_number(value)
    if text == repr(value):
        return value
    special = _JsNumber(value)
    special.text = text
    return special


def _is_index(key: str) -> bool:
    return (
        key.isdigit() and key.isascii() and (key == "0" or key[0] != "0") and int(key) <= _MAX_INDEX
    )


def js_ordered(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with its keys in a JavaScript object's order: array-index keys ("0", "17", …)
    first in ascending numeric order, then the others in insertion order (what ``Object.keys``
    gives for an object built, or parsed, with these keys in this order). ``obj`` itself when
    it has no index key."""
    if not any(k and k[0] <= "9" and _is_index(k) for k in obj):
        return obj
    index = sorted((k for k in obj if _is_index(k)), key=int)
    return {**{k: obj[k] for k in index}, **{k: v for k, v in obj.items() if not _is_index(k)}}


def normalise(value: Any) -> tuple[Any, bool]:
    """Return ``(value', special)``: ``value'`` prints like ``JSON.stringify(value)`` under
    :func:`json.dumps` unless ``special`` (a number only JS notation can print) is true.

    Containers are copied only when something in them changes.
    """
    special = False

    def walk(v: Any) -> Any:
        nonlocal special
        t = type(v)
        if t is str or t is int or t is bool or v is None:
            return v
        if t is float:
            out = _number(v)
            if type(out) is _JsNumber:
                special = True
            return out
        if t is dict or isinstance(v, dict):
            changed = t is not dict
            items = []
            index_keys = False
            for k, x in v.items():
                if type(k) is not str:
                    k, changed = _key(k), True
                elif k and k[0] <= "9" and _is_index(k):
                    index_keys = True
                y = walk(x)
                if y is not x:
                    changed = True
                items.append((k, y))
            if index_keys:
                idx = sorted((kv for kv in items if _is_index(kv[0])), key=lambda kv: int(kv[0]))
                rest = [kv for kv in items if not _is_index(kv[0])]
                items, changed = idx + rest, True
            return dict(items) if changed else v
        if t is list or t is tuple or isinstance(v, list | tuple):
            out_list = [walk(x) for x in v]
            if t is list and all(a is b for a, b in zip(out_list, v, strict=True)):
                return v
            return out_list
        if isinstance(v, int):  # bool subclasses and IntEnum-like values
            return int(v)
        if isinstance(v, float):
            return walk(float(v))
        if isinstance(v, str):
            return str(v)
        raise TypeError(f"not JSON-serialisable: {type(v).__name__}")

    return walk(value), special


def _key(k: Any) -> str:
    if isinstance(k, str):
        return k
    if k is None or isinstance(k, bool):
        return json.dumps(k)
    if isinstance(k, float):
        return js_number(k) if math.isfinite(k) else "null"
    return str(k)


def _encode(v: Any) -> str:
    """Fallback encoder for a normalised value that holds a :class:`_JsNumber`."""
    if type(v) is _JsNumber:
        return v.text
    if isinstance(v, dict):
        return "{" + ",".join(_dumps_plain(k) + ":" + _encode(x) for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(_encode(x) for x in v) + "]"
    return _dumps_plain(v)


_PLAIN = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _dumps_plain(v: Any) -> str:
    return _PLAIN.encode(v)


def _escape_surrogates(text: str) -> str:
    # Lone surrogates can only occur inside JSON strings, so escaping them in the output text
    # is what JSON.stringify does (ES2019 well-formed stringify).
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def dumps(value: Any) -> str:
    """JSON text of ``value`` exactly as JavaScript's ``JSON.stringify`` writes it."""
    norm, special = normalise(value)
    text = _encode(norm) if special else _dumps_plain(norm)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _escape_surrogates(text)
    return text


def same_json(a: Any, b: Any) -> bool:
    """Whether ``JSON.stringify(a) === JSON.stringify(b)``.

    Python's own JSON text is compared first: equal plain texts mean equal JS texts, and the
    plain encoder runs entirely in C, so only values that differ pay for :func:`dumps`.
    """
    if _dumps_plain(a) == _dumps_plain(b):
        return True
    return dumps(a) == dumps(b)


def loads(text: str) -> Any:
    """Parse JSON text (``NaN``/``Infinity`` literals are refused, as in JavaScript)."""

    def refuse(name: str) -> Any:
        raise ValueError(f"invalid JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def content_hash(nodes_json: str, outputs_json: str, ralph_json: str, input_json: str) -> str:
    """SHA-256 hex of ``JSON.stringify({nodes, outputs, ralph, input})``.

    Built from the four parts' JSON texts (JSON of an object is its members' texts joined), so
    a fork that changes one part re-serialises only that part.
    """
    h = hashlib.sha256()
    for chunk in ('{"nodes":', nodes_json, ',"outputs":', outputs_json, ',"ralph":', ralph_json,
                  ',"input":', input_json, "}"):  # fmt: skip
        h.update(chunk.encode("utf-8"))
    return h.hexdigest()

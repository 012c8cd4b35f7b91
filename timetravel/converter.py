"""The data converter of the service: pydantic's, except that a workflow input which does not
decode reaches the workflow as a :class:`~temporalio.common.RawValue` instead of failing.

Workflows take ``*args`` (no type hints), so the SDK decodes their input with no type hint,
and a payload that is not JSON (a lone surrogate, ``NaN`` spelled wrong, another encoding)
would fail the workflow task on every retry, forever. With this converter that payload comes
through raw and the workflow turns it into a typed ``InvalidInput`` failure
(:mod:`workflows._input`). Decoding with a type hint (activity results, update arguments) is
unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import DataConverter

__all__ = ["LenientPayloadConverter", "data_converter"]


class LenientPayloadConverter(PydanticPayloadConverter):
    """:class:`PydanticPayloadConverter`; an undecodable payload without a type hint is
    returned as a ``RawValue``."""

    def from_payloads(
        self, payloads: Sequence[Payload], type_hints: list[type] | None = None
    ) -> list[Any]:
        if type_hints is not None:
            return super().from_payloads(payloads, type_hints)
        out: list[Any] = []
        for payload in payloads:
            try:
                out.append(super().from_payloads([payload], None)[0])
            except Exception:
                out.append(RawValue(payload))
        return out


#: Use for every client and worker of the service (a drop-in for ``pydantic_data_converter``).
data_converter = DataConverter(payload_converter_class=LenientPayloadConverter)

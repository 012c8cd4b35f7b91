"""The domain errors and their one translation to and from Temporal failures (no server)."""

from __future__ import annotations

import pytest
from temporalio.exceptions import ActivityError, ApplicationError, RetryState

from timetravel import errors
from timetravel.errors import Busy, TimeTravelError, from_failure, to_application_error


def test_codes_are_derived_from_the_classes_in_upstream_order() -> None:
    assert errors.CODES[:10] == (
        "InvalidRunId", "InvalidFrameNo", "ConfirmationRequired", "Busy", "RateLimited",
        "RunNotFound", "FrameOutOfRange", "UnsupportedSandbox", "VcsError", "RewindFailed",
    )  # fmt: skip
    for code in errors.CODES:
        cls = getattr(errors, code)
        assert issubclass(cls, TimeTravelError) and cls.code == code


@pytest.mark.parametrize("code", errors.CODES)
def test_of_builds_the_class_of_a_code(code: str) -> None:
    err = TimeTravelError.of(code, "m", {"a": 1})
    assert type(err).__name__ == code and err.code == code and err.details == {"a": 1}


def test_an_unknown_code_stays_a_plain_domain_error() -> None:
    err = TimeTravelError.of("Unreachable", "m")
    assert type(err) is TimeTravelError and err.code == "Unreachable"


def test_round_trip_through_an_activity_failure() -> None:
    app = to_application_error(Busy("held", {"runId": "r"}))
    assert app.type == "Busy" and app.non_retryable and app.details == ({"runId": "r"},)
    wrapped = ActivityError(
        "activity failed",
        scheduled_event_id=1,
        started_event_id=2,
        identity="w",
        activity_type="begin",
        activity_id="1",
        retry_state=RetryState.NON_RETRYABLE_FAILURE,
    )
    wrapped.__cause__ = app
    back = from_failure(wrapped)
    assert isinstance(back, Busy) and back.message == "held" and back.details == {"runId": "r"}


def test_other_failures_carry_no_domain_error() -> None:
    assert from_failure(ApplicationError("boom", type="ValueError")) is None
    assert from_failure(RuntimeError("x")) is None
    assert from_failure(None) is None

"""Typed settings for the worker, the CLI and the client helpers.

Every setting is read from a ``TIMETRAVEL_*`` environment variable, a ``.env`` file in the
working directory, or ``.timetravel/dev.env`` there (which ``timetravel dev`` writes, so the CLI
in another shell talks to the dev server's database and task queue), in that order of priority.
The names are a public contract (design §3). Settings are built once by the process entry point
(``worker.py``, ``timetravel`` CLI) and passed down as values; workflows never see them, so the
database URL, which may hold a password, never reaches workflow history.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEV_ENV_FILE", "Settings", "SettingsError", "load_settings"]

#: Written by ``timetravel dev``; read (below ``.env``) by every command run in that directory.
DEV_ENV_FILE = ".timetravel/dev.env"

_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


def _is_host_port(value: str) -> bool:
    """``host:port`` with a TCP port in 1..65535 (the regex alone accepts ``:99999``)."""
    # fullmatch: "$" alone would also accept a trailing newline.
    return bool(_HOST_PORT.fullmatch(value)) and 1 <= int(value.rsplit(":", 1)[1]) <= 65535


class SettingsError(ValueError):
    """A setting has an invalid value; the message names the environment variable."""


class Settings(BaseSettings):
    """Configuration of smithers-time-travel (environment prefix ``TIMETRAVEL_``)."""

    model_config = SettingsConfigDict(
        env_prefix="TIMETRAVEL_",
        # Later files win: a hand-written .env overrides what `timetravel dev` wrote.
        env_file=(DEV_ENV_FILE, ".env"),
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    database_url: SecretStr = Field(
        default=SecretStr("sqlite:///smithers.db"),
        description=(
            "SQLAlchemy URL of the Smithers database: sqlite:///path.db (default) or "
            "postgresql://user:pass@host/db. Secret: never logged nor put in workflow inputs."
        ),
    )
    temporal_address: str = Field(
        default="127.0.0.1:7233", description="host:port of the Temporal frontend (gRPC)."
    )
    temporal_namespace: str = Field(
        default="default", min_length=1, description="Temporal namespace to use."
    )
    task_queue: str = Field(
        default="smithers-time-travel",
        min_length=1,
        description="Task queue the worker polls and the client helpers start workflows on.",
    )
    rate_limit_max: int = Field(
        default=10, ge=1, description="Rewinds allowed per run and caller within the window."
    )
    rate_limit_window_ms: int = Field(
        default=3_600_000, ge=1, description="Length of the rewind rate-limit window, in ms."
    )
    engine_control: Literal["database", "http", "none"] = Field(
        default="database",
        description=(
            "How a rewind pauses and resumes the Smithers engine: 'database' (hijack request "
            "on the run row), 'http' (engine endpoints at TIMETRAVEL_ENGINE_URL) or 'none'."
        ),
    )
    engine_url: str | None = Field(
        default=None, description="Base URL of the engine's control API (engine_control=http)."
    )
    metrics_bind: str = Field(
        default="",
        description="host:port for the Prometheus metrics endpoint; empty turns metrics off.",
    )
    backup_retention: int = Field(
        default=7 * 24 * 3600 * 1000,
        description=(
            "How long the backups of a settled rewind are kept (then `timetravel prune` and "
            "PruneBackups free them), in ms: 604800000, or with a unit: 7d, 12h, 30m, 1w."
        ),
    )

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr) -> SecretStr:
        # Imported here so that importing settings stays cheap for the CLI's --help.
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        raw = value.get_secret_value()
        try:
            url = make_url(raw)
        except ArgumentError:
            raise ValueError(
                "not a database URL (expected sqlite:///… or postgresql://…)"
            ) from None
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError(
                f"unsupported database {url.get_backend_name()!r} (use sqlite or postgresql)"
            )
        return value

    @field_validator("backup_retention", mode="before")
    @classmethod
    def _check_backup_retention(cls, value: object) -> int:
        from timetravel.store.retention import parse_duration_ms

        return parse_duration_ms(value)

    @field_validator("temporal_address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        if not _is_host_port(value):
            raise ValueError("expected host:port, e.g. 127.0.0.1:7233")
        return value

    @field_validator("metrics_bind")
    @classmethod
    def _check_metrics_bind(cls, value: str) -> str:
        if value and not _is_host_port(value):
            raise ValueError("expected host:port, e.g. 127.0.0.1:9464, or empty")
        return value

    @field_validator("engine_url")
    @classmethod
    def _check_engine_url(cls, value: str | None) -> str | None:
        if value and not re.match(r"^https?://", value):
            raise ValueError("expected an http:// or https:// URL")
        return value or None

    @model_validator(mode="after")
    def _http_needs_url(self) -> Settings:
        if self.engine_control == "http" and not self.engine_url:
            raise ValueError(
                "engine_url: TIMETRAVEL_ENGINE_URL is required when engine_control=http"
            )
        return self


def _env_name(loc: tuple[int | str, ...]) -> str:
    field = str(loc[0]) if loc else ""
    return f"TIMETRAVEL_{field.upper()}" if field else "TIMETRAVEL_*"


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, ``.env`` and keyword overrides.

    Raises:
        SettingsError: with a one-line message naming the offending variable.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err["msg"]).removeprefix("Value error, ")
        loc = err["loc"]
        if not loc and ":" in msg and msg.split(":", 1)[0].isidentifier():
            field, msg = msg.split(":", 1)
            loc = (field,)
            msg = msg.strip()
        raise SettingsError(f"{_env_name(loc)}: {msg}") from None

"""Settings (design §3): the TIMETRAVEL_* names are a contract; bad values fail with one line
naming the variable; the database URL is a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from timetravel.settings import Settings, SettingsError, load_settings

#: design §3: every variable, a non-default value, and the attribute it must set.
CONTRACT: dict[str, tuple[str, str, object]] = {
    "TIMETRAVEL_BACKUP_RETENTION": ("12h", "backup_retention", 43_200_000),
    "TIMETRAVEL_DATABASE_URL": (
        "postgresql://app@db.internal:5432/smithers",
        "database_url",
        "postgresql://app@db.internal:5432/smithers",
    ),
    "TIMETRAVEL_TEMPORAL_ADDRESS": ("temporal.internal:7300", "temporal_address", None),
    "TIMETRAVEL_TEMPORAL_NAMESPACE": ("smithers-prod", "temporal_namespace", None),
    "TIMETRAVEL_TASK_QUEUE": ("tt-queue", "task_queue", None),
    "TIMETRAVEL_RATE_LIMIT_MAX": ("3", "rate_limit_max", 3),
    "TIMETRAVEL_RATE_LIMIT_WINDOW_MS": ("60000", "rate_limit_window_ms", 60_000),
    "TIMETRAVEL_ENGINE_CONTROL": ("http", "engine_control", None),
    "TIMETRAVEL_ENGINE_URL": ("http://engine.internal:7331", "engine_url", None),
    "TIMETRAVEL_METRICS_BIND": ("127.0.0.1:9464", "metrics_bind", None),
}

SECRET = "hunter2-s3cr3t"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No TIMETRAVEL_* variable from the outside, and a cwd without a ``.env`` file."""
    import os

    for name in list(os.environ):
        if name.startswith("TIMETRAVEL_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _value(settings: Settings, attr: str) -> object:
    value = getattr(settings, attr)
    return value.get_secret_value() if attr == "database_url" else value


def test_defaults() -> None:
    s = load_settings()
    assert s.database_url.get_secret_value() == "sqlite:///smithers.db"
    assert s.temporal_address == "127.0.0.1:7233"
    assert s.temporal_namespace == "default"
    assert s.task_queue == "smithers-time-travel"
    assert s.rate_limit_max == 10
    assert s.rate_limit_window_ms == 3_600_000
    assert s.engine_control == "database"
    assert s.engine_url is None
    assert s.metrics_bind == ""


def test_every_contract_variable_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, (raw, _attr, _expected) in CONTRACT.items():
        monkeypatch.setenv(name, raw)
    s = load_settings()
    for name, (raw, attr, expected) in CONTRACT.items():
        assert _value(s, attr) == (raw if expected is None else expected), name


def test_contract_names_are_the_fields() -> None:
    """No setting is added or renamed without the contract (and the README table) knowing."""
    assert {f"TIMETRAVEL_{f.upper()}" for f in Settings.model_fields} == set(CONTRACT)


def test_dotenv_file(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    (clean_env / ".env").write_text(
        "TIMETRAVEL_TASK_QUEUE=from-dotenv\n"
        "TIMETRAVEL_RATE_LIMIT_MAX=4\n"
        "TIMETRAVEL_DATABASE_URL=sqlite:///dotenv.db\n"
        "UNRELATED=1\n"
    )
    s = load_settings()
    assert s.task_queue == "from-dotenv"
    assert s.rate_limit_max == 4
    assert s.database_url.get_secret_value() == "sqlite:///dotenv.db"
    # A real environment variable wins over the file.
    monkeypatch.setenv("TIMETRAVEL_TASK_QUEUE", "from-env")
    assert load_settings().task_queue == "from-env"


def test_invalid_dotenv_value_names_the_variable(clean_env: Path) -> None:
    (clean_env / ".env").write_text("TIMETRAVEL_ENGINE_CONTROL=sometimes\n")
    with pytest.raises(SettingsError, match=r"^TIMETRAVEL_ENGINE_CONTROL: "):
        load_settings()


@pytest.mark.parametrize(
    ("env", "expected_var"),
    [
        ({"TIMETRAVEL_DATABASE_URL": "not a url"}, "TIMETRAVEL_DATABASE_URL"),
        ({"TIMETRAVEL_DATABASE_URL": "mysql://u@db/smithers"}, "TIMETRAVEL_DATABASE_URL"),
        ({"TIMETRAVEL_DATABASE_URL": "oracle+cx_oracle://u@db/x"}, "TIMETRAVEL_DATABASE_URL"),
        ({"TIMETRAVEL_ENGINE_CONTROL": "bogus"}, "TIMETRAVEL_ENGINE_CONTROL"),
        ({"TIMETRAVEL_RATE_LIMIT_MAX": "0"}, "TIMETRAVEL_RATE_LIMIT_MAX"),
        ({"TIMETRAVEL_RATE_LIMIT_MAX": "-1"}, "TIMETRAVEL_RATE_LIMIT_MAX"),
        ({"TIMETRAVEL_RATE_LIMIT_MAX": "ten"}, "TIMETRAVEL_RATE_LIMIT_MAX"),
        ({"TIMETRAVEL_RATE_LIMIT_WINDOW_MS": "0"}, "TIMETRAVEL_RATE_LIMIT_WINDOW_MS"),
        ({"TIMETRAVEL_RATE_LIMIT_WINDOW_MS": "-5"}, "TIMETRAVEL_RATE_LIMIT_WINDOW_MS"),
        ({"TIMETRAVEL_ENGINE_CONTROL": "http"}, "TIMETRAVEL_ENGINE_URL"),
        ({"TIMETRAVEL_ENGINE_URL": "ftp://engine"}, "TIMETRAVEL_ENGINE_URL"),
        ({"TIMETRAVEL_METRICS_BIND": "everywhere"}, "TIMETRAVEL_METRICS_BIND"),
        ({"TIMETRAVEL_METRICS_BIND": "127.0.0.1:99999"}, "TIMETRAVEL_METRICS_BIND"),
        ({"TIMETRAVEL_METRICS_BIND": "127.0.0.1:9464\n"}, "TIMETRAVEL_METRICS_BIND"),
        ({"TIMETRAVEL_TEMPORAL_ADDRESS": "localhost"}, "TIMETRAVEL_TEMPORAL_ADDRESS"),
        ({"TIMETRAVEL_TEMPORAL_ADDRESS": "localhost:0"}, "TIMETRAVEL_TEMPORAL_ADDRESS"),
        ({"TIMETRAVEL_TASK_QUEUE": ""}, "TIMETRAVEL_TASK_QUEUE"),
        ({"TIMETRAVEL_TEMPORAL_NAMESPACE": ""}, "TIMETRAVEL_TEMPORAL_NAMESPACE"),
    ],
)
def test_invalid_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected_var: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(f"{expected_var}: "), message
    assert "\n" not in message
    assert len(message) < 200


def test_keyword_overrides_are_validated_too() -> None:
    with pytest.raises(SettingsError, match=r"^TIMETRAVEL_RATE_LIMIT_MAX: "):
        load_settings(rate_limit_max=0)


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://smithers:{SECRET}@db.internal:5432/smithers",
        f"postgresql+psycopg://smithers:{SECRET}@db.internal/smithers?sslmode=require",
    ],
)
def test_database_password_never_shown(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("TIMETRAVEL_DATABASE_URL", url)
    s = load_settings()
    assert s.database_url.get_secret_value() == url
    for shown in (repr(s), str(s), s.model_dump_json(), str(s.model_dump())):
        assert SECRET not in shown


def test_password_not_in_error_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIMETRAVEL_DATABASE_URL", f"mysql://u:{SECRET}@db/smithers")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert SECRET not in str(info.value)
    assert str(info.value).startswith("TIMETRAVEL_DATABASE_URL: ")

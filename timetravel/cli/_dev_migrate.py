"""``timetravel migrate``'s and ``timetravel dev``'s database step: migrate the configured
database and describe what was created (one line per object, or one summary line)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from timetravel.settings import Settings

if TYPE_CHECKING:
    from timetravel.store import MigrateReport


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url.get_secret_value())
    return url.render_as_string(hide_password=True)


def _migrate(settings: Settings) -> MigrateReport:
    from timetravel.store import Database

    db = Database(settings.database_url.get_secret_value())
    try:
        return db.migrate()
    finally:
        db.dispose()


def _report_lines(report: MigrateReport) -> list[str]:
    """One human line per created object; empty when the database was up to date."""
    return (
        [f"created table {t}" for t in report.tables]
        + [f"added column {c}" for c in report.columns]
        + [f"created index {i}" for i in report.indexes]
    )


def _report_summary(report: MigrateReport) -> str:
    if not report.changed:
        return "database schema up to date"
    counts = (
        (len(report.tables), "table", "tables"),
        (len(report.columns), "column", "columns"),
        (len(report.indexes), "index", "indexes"),
    )
    return "created " + ", ".join(f"{n} {one if n == 1 else many}" for n, one, many in counts if n)

"""Which engine-0.32 features a Smithers database has, detected once per database.

A database written by engine 0.16 (the shape of :mod:`timetravel.schema`, our test fixtures)
reports every feature False; one written by engine 0.32 reports them True. Detection only
inspects the catalogue (tables, columns, foreign keys); it never reads rows.

The result is cached per SQLAlchemy engine. The engine creates its tables when it first opens a
database, so a database that was 0.16-shaped can become 0.32-shaped under a long-lived worker;
call :func:`invalidate_features` (or ``detect_features``) after such an upgrade.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Engine, inspect

from timetravel.enginedb._cache import EngineCache

__all__ = ["EngineFeatures", "detect_features", "engine_features", "invalidate_features"]

RUNS = "_smithers_runs"
AUDIT = "_smithers_time_travel_audit"
SNAPSHOT_REFS = "_smithers_snapshot_payload_refs"
SNAPSHOT_CONTENTS = "_smithers_snapshot_contents"
REWIND_LEASES = "_smithers_rewind_leases"
OUTPUT_PROVENANCE = "_smithers_output_provenance"
TOOL_CALLS = "_smithers_tool_calls"
TOOL_CALL_ARCHIVE = "_smithers_tool_call_archive"
SIGNALS = "_smithers_signals"


@dataclass(frozen=True)
class EngineFeatures:
    """Engine-0.32 capabilities of one database (all False for a 0.16-shaped database)."""

    #: ``_smithers_snapshot_payload_refs`` and ``_smithers_snapshot_contents`` both exist:
    #: snapshot payloads may be content-addressed (inline columns ``''``).
    content_addressed_snapshots: bool = False
    #: ``_smithers_rewind_leases``: upstream's durable rewind lease.
    rewind_leases: bool = False
    #: ``_smithers_output_provenance``: per output row, the run-local provenance clock.
    output_provenance: bool = False
    #: ``_smithers_tool_calls`` and ``_smithers_tool_call_archive`` both exist.
    tool_calls: bool = False
    #: ``_smithers_signals``: the durable signal inbox.
    signals: bool = False
    #: ``_smithers_runs.pause_requested_at_ms``: the durable pause request.
    pause_requested: bool = False
    #: ``_smithers_time_travel_audit`` declares a foreign key to ``_smithers_runs``: an audit
    #: row for a run id that does not exist is rejected (the engine enables foreign keys).
    audit_run_foreign_key: bool = False

    @property
    def is_v032(self) -> bool:
        """The database looks like one engine 0.32 created (content-addressed snapshots)."""
        return self.content_addressed_snapshots


def detect_features(conn: Connection) -> EngineFeatures:
    """Inspect the catalogue now (no cache) and remember the result for this database."""
    insp = inspect(conn)
    tables = set(insp.get_table_names())
    pause = False
    if RUNS in tables:
        pause = any(c["name"] == "pause_requested_at_ms" for c in insp.get_columns(RUNS))
    audit_fk = False
    if AUDIT in tables:
        audit_fk = any(fk.get("referred_table") == RUNS for fk in insp.get_foreign_keys(AUDIT))
    features = EngineFeatures(
        content_addressed_snapshots=SNAPSHOT_REFS in tables and SNAPSHOT_CONTENTS in tables,
        rewind_leases=REWIND_LEASES in tables,
        output_provenance=OUTPUT_PROVENANCE in tables,
        tool_calls=TOOL_CALLS in tables and TOOL_CALL_ARCHIVE in tables,
        signals=SIGNALS in tables,
        pause_requested=pause,
        audit_run_foreign_key=audit_fk,
    )
    _cache.set(conn, features)
    return features


def engine_features(conn: Connection) -> EngineFeatures:
    """The features of ``conn``'s database, detected on first use and then cached."""
    return _cache.get_or_set(conn, lambda: detect_features(conn))


def invalidate_features(engine: Engine | None = None) -> None:
    """Forget the cached features of one database (or of all when ``engine`` is None)."""
    _cache.invalidate(engine)


_cache: EngineCache[EngineFeatures] = EngineCache()

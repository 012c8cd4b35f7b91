"""Upstream 0.32's durable rewind lease, ``_smithers_rewind_leases(run_id PK, owner_token,
expires_at_ms)``, with the same SQL so that our rewinds and upstream's exclude each other.

* :func:`acquire`: compare-and-set. Insert the lease, or take over an *expired* one
  (``expires_at_ms <= now``), in one ``INSERT … ON CONFLICT (run_id) DO UPDATE … WHERE …
  RETURNING`` (SQLite ≥ 3.35 and PostgreSQL). A live lease of another token is left alone.
* :func:`renew`: extend our own unexpired lease.
* :func:`held`: inside a destructive transaction, check the lease is still ours and unexpired.
  It is a no-op ``UPDATE … RETURNING``, so it also locks the lease row on PostgreSQL until the
  transaction ends (SQLite's write transaction already excludes other writers).
* :func:`release`: delete our lease (another token's lease is never touched).

Upstream's TTL is 60 s, renewed every TTL/3, and checked inside each destructive transaction.
Leases are per *lineage*: :func:`lease_run_id` resolves a subflow child to its top-level parent
(they share a checkout); a fork has its own lease. Run ids given to the functions above are
used as they are: resolve first.
"""

from __future__ import annotations

import json

from sqlalchemy import Connection, text

__all__ = [
    "LEASE_TTL_MS",
    "acquire",
    "held",
    "is_subflow_child_run_id",
    "lease_run_id",
    "lease_token",
    "release",
    "renew",
]

#: Upstream's ``REWIND_LEASE_TTL_MS``.
LEASE_TTL_MS = 60_000
LEASES = "_smithers_rewind_leases"


def acquire(
    conn: Connection, run_id: str, token: str, now_ms: int, ttl_ms: int = LEASE_TTL_MS
) -> bool:
    """Take the lease for ``run_id`` unless another token holds an unexpired one.

    Re-acquiring with the same token while the lease is unexpired returns False, as upstream
    (use :func:`renew`).
    """
    if ttl_ms <= 0:
        raise ValueError("ttl_ms must be positive")
    row = conn.execute(
        text(
            f"INSERT INTO {LEASES} (run_id, owner_token, expires_at_ms) "
            "VALUES (:run_id, :token, :expires) "
            "ON CONFLICT (run_id) DO UPDATE SET "
            "owner_token = excluded.owner_token, expires_at_ms = excluded.expires_at_ms "
            f"WHERE {LEASES}.expires_at_ms <= :now "
            "RETURNING owner_token"
        ),
        {"run_id": run_id, "token": token, "expires": now_ms + ttl_ms, "now": now_ms},
    ).first()
    return row is not None and row[0] == token


def renew(
    conn: Connection, run_id: str, token: str, now_ms: int, ttl_ms: int = LEASE_TTL_MS
) -> bool:
    """Extend our lease to ``now_ms + ttl_ms``; False when it expired or is not ours."""
    row = conn.execute(
        text(
            f"UPDATE {LEASES} SET expires_at_ms = :expires "
            "WHERE run_id = :run_id AND owner_token = :token AND expires_at_ms > :now "
            "RETURNING owner_token"
        ),
        {"run_id": run_id, "token": token, "expires": now_ms + ttl_ms, "now": now_ms},
    ).first()
    return row is not None and row[0] == token


def held(conn: Connection, run_id: str, token: str, now_ms: int) -> bool:
    """Fencing check: the lease is ours and unexpired at ``now_ms`` (locks the row on PG)."""
    row = conn.execute(
        text(
            f"UPDATE {LEASES} SET expires_at_ms = expires_at_ms "
            "WHERE run_id = :run_id AND owner_token = :token AND expires_at_ms > :now "
            "RETURNING owner_token"
        ),
        {"run_id": run_id, "token": token, "now": now_ms},
    ).first()
    return row is not None and row[0] == token


def release(conn: Connection, run_id: str, token: str) -> bool:
    """Delete our lease; True if it was ours (expired or not), False otherwise."""
    row = conn.execute(
        text(
            f"DELETE FROM {LEASES} WHERE run_id = :run_id AND owner_token = :token "
            "RETURNING owner_token"
        ),
        {"run_id": run_id, "token": token},
    ).first()
    return row is not None and row[0] == token


def lease_token(conn: Connection, run_id: str) -> tuple[str, int] | None:
    """The current ``(owner_token, expires_at_ms)`` of a lease row, if any (diagnostics)."""
    row = conn.execute(
        text(f"SELECT owner_token, expires_at_ms FROM {LEASES} WHERE run_id = :run_id"),
        {"run_id": run_id},
    ).first()
    return None if row is None else (str(row[0]), int(row[1]))


def is_subflow_child_run_id(run_id: str, parent_run_id: str) -> bool:
    """Upstream's ``parseSubflowChildRunId`` grammar: ``<parent>:child:<nodeId>:<iteration>``
    with a non-empty node id and a non-negative integer iteration."""
    prefix = f"{parent_run_id}:child:"
    if not run_id.startswith(prefix):
        return False
    suffix = run_id[len(prefix) :]
    split = suffix.rfind(":")
    if split <= 0:
        return False
    iteration = suffix[split + 1 :].strip()
    # JS Number("") is 0 and Number(" 1 ") is 1; both are integers >= 0.
    if iteration == "":
        return True
    try:
        value = float(iteration)
    except ValueError:
        return False
    return value.is_integer() and value >= 0


def lease_run_id(conn: Connection, run_id: str) -> str:
    """The run whose lease guards ``run_id`` (upstream's ``resolveRewindLeaseRunId``).

    Walk up ``parent_run_id`` while the run is a subflow of its parent: a run with a
    ``_smithers_branches`` row is a fork (its own lease) unless ``branch_label`` is
    ``continue-as-new``; a run with a parent and no branch row is a subflow only when its
    ``config_json.subflowWorkspaceParentRunId`` names the parent or its id has the
    ``<parent>:child:<node>:<iteration>`` form (otherwise it keeps its own lease).
    """
    current = run_id
    seen: set[str] = set()
    while current not in seen:
        seen.add(current)
        run = conn.execute(
            text("SELECT parent_run_id, config_json FROM _smithers_runs WHERE run_id = :r LIMIT 1"),
            {"r": current},
        ).first()
        if run is None or not run[0]:
            break
        parent = str(run[0])
        branch = conn.execute(
            text("SELECT branch_label FROM _smithers_branches WHERE run_id = :r LIMIT 1"),
            {"r": current},
        ).first()
        if branch is not None and branch[0] != "continue-as-new":
            break
        if branch is None:
            explicit = False
            try:
                config = json.loads(run[1] or "{}")
                explicit = isinstance(config, dict) and (
                    config.get("subflowWorkspaceParentRunId") == parent
                )
            except ValueError:
                explicit = False
            if not explicit and not is_subflow_child_run_id(current, parent):
                break
        current = parent
    return current

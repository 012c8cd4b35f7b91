from __future__ import annotations

from sqlalchemy import text

from timetravel.enginedb import lease
from timetravel.store import Database

T1, T2 = "token-one", "token-two"


def test_cas_between_two_tokens_and_expiry(db032: Database) -> None:
    with db032.write() as conn:
        assert lease.acquire(conn, "r", T1, now_ms=1000, ttl_ms=100)
    with db032.write() as conn:
        assert not lease.acquire(conn, "r", T2, now_ms=1050, ttl_ms=100)  # live: refused
        assert not lease.acquire(conn, "r", T1, now_ms=1050, ttl_ms=100)  # no re-entry
        assert lease.lease_token(conn, "r") == (T1, 1100)
        assert lease.held(conn, "r", T1, now_ms=1099)
        assert not lease.held(conn, "r", T2, now_ms=1099)
        assert lease.renew(conn, "r", T1, now_ms=1090, ttl_ms=100)
        assert lease.lease_token(conn, "r") == (T1, 1190)
        assert not lease.renew(conn, "r", T2, now_ms=1090, ttl_ms=100)
    with db032.write() as conn:
        assert not lease.held(conn, "r", T1, now_ms=1190)  # expired at expires_at_ms
        assert not lease.renew(conn, "r", T1, now_ms=1190)
        assert lease.acquire(conn, "r", T2, now_ms=1190, ttl_ms=100)  # take over
        assert lease.lease_token(conn, "r") == (T2, 1290)
        assert not lease.release(conn, "r", T1)  # not ours any more
        assert lease.held(conn, "r", T2, now_ms=1200)
        assert lease.release(conn, "r", T2)
        assert lease.lease_token(conn, "r") is None
        assert lease.acquire(conn, "r", T1, now_ms=1200, ttl_ms=100)
        assert lease.acquire(conn, "other", T2, now_ms=1200, ttl_ms=100)  # per run


def test_second_transaction_loses_to_the_committed_first(db032: Database) -> None:
    """Two separate transactions ask for the same lease; only the first gets it."""
    winners = []
    for token in (T1, T2):
        with db032.write() as conn:
            winners.append(lease.acquire(conn, "race", token, now_ms=5, ttl_ms=60_000))
    assert winners == [True, False]


def _run(conn, run_id, parent=None, config=None):  # type: ignore[no-untyped-def]
    conn.execute(
        text(
            "INSERT INTO _smithers_runs (run_id, parent_run_id, workflow_name, status,"
            " created_at_ms, config_json) VALUES (:r, :p, 'wf', 'running', 1, :c)"
        ),
        {"r": run_id, "p": parent, "c": config},
    )


def _branch(conn, run_id, parent, label):  # type: ignore[no-untyped-def]
    conn.execute(
        text(
            "INSERT INTO _smithers_branches (run_id, parent_run_id, parent_frame_no,"
            " branch_label, created_at_ms) VALUES (:r, :p, 1, :l, 1)"
        ),
        {"r": run_id, "p": parent, "l": label},
    )


def test_lease_run_id_follows_subflows_not_forks(db032: Database) -> None:
    with db032.write() as conn:
        _run(conn, "top")
        _run(conn, "top:child:sub:0", "top")
        _run(conn, "top:child:sub:0:child:deep:3", "top:child:sub:0")
        _run(conn, "named", "top", '{"subflowWorkspaceParentRunId":"top"}')
        _run(conn, "fork", "top")
        _branch(conn, "fork", "top", "try-again")
        _run(conn, "fork-unlabelled", "top")
        _branch(conn, "fork-unlabelled", "top", None)
        _run(conn, "can", "top")
        _branch(conn, "can", "top", "continue-as-new")
        _run(conn, "stranger", "top")  # a parent but neither subflow rule: own lease
        _run(conn, "top:child:bad:x", "top")
        _run(conn, "loop-a", "loop-b", '{"subflowWorkspaceParentRunId":"loop-b"}')
        _run(conn, "loop-b", "loop-a", '{"subflowWorkspaceParentRunId":"loop-a"}')
    with db032.read() as conn:
        assert lease.lease_run_id(conn, "top") == "top"
        assert lease.lease_run_id(conn, "top:child:sub:0") == "top"
        assert lease.lease_run_id(conn, "top:child:sub:0:child:deep:3") == "top"
        assert lease.lease_run_id(conn, "named") == "top"
        assert lease.lease_run_id(conn, "fork") == "fork"
        assert lease.lease_run_id(conn, "fork-unlabelled") == "fork-unlabelled"
        assert lease.lease_run_id(conn, "can") == "top"
        assert lease.lease_run_id(conn, "stranger") == "stranger"
        assert lease.lease_run_id(conn, "top:child:bad:x") == "top:child:bad:x"
        assert lease.lease_run_id(conn, "missing") == "missing"
        assert lease.lease_run_id(conn, "loop-a") in ("loop-a", "loop-b")


def test_subflow_grammar() -> None:
    ok = lease.is_subflow_child_run_id
    assert ok("p:child:n:0", "p")
    assert ok("p:child:a:b:12", "p")  # node ids may contain ':'
    assert not ok("p:child::0", "p")
    assert not ok("p:child:n:-1", "p")
    assert not ok("p:child:n:1.5", "p")
    assert not ok("q:child:n:0", "p")

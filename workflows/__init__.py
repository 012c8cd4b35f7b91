"""Workflows: deterministic orchestration only (no I/O, no clock, no randomness)."""

from __future__ import annotations

from typing import Any

from workflows.fork_run import ForkRun
from workflows.recover_rewind_audits import RecoverRewindAudits
from workflows.replay_from_checkpoint import ReplayFromCheckpoint
from workflows.rewind_run import RewindRun

ALL_WORKFLOWS: list[type[Any]] = [ForkRun, RecoverRewindAudits, ReplayFromCheckpoint, RewindRun]

"""Workflows: deterministic orchestration only (no I/O, no clock, no randomness)."""

from __future__ import annotations

from typing import Any

from workflows.rewind_run import RewindRun

ALL_WORKFLOWS: list[type[Any]] = [RewindRun]

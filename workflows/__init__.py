"""Workflows: deterministic orchestration only (no I/O, no clock, no randomness).

The list the worker registers is in :mod:`workflows.registry`; this package imports nothing, so
the sandbox loads only the module of the workflow it runs.
"""

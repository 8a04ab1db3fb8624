"""Exceptions shared by the core and the plugins (no heavy imports)."""

from __future__ import annotations


class BenchError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits with status 2."""


class Unsupported(Exception):
    """A grid cell that cannot run (for example ancestral sampling on the sub-VP SDE).

    The runner records it as a row with ``status="unsupported"`` and the reason, then moves on.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

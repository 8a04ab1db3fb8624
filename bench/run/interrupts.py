"""Ctrl-C bookkeeping: an interrupt stays an interrupt, and the process exits with status 130.

A SIGINT can land inside third-party code that turns the ``KeyboardInterrupt`` into another
exception (an import machinery error, a plugin's ``except Exception``). :func:`install` records
every SIGINT, so the CLI and the runner can tell such an exception apart from a real failure and
stop cleanly instead of writing an ``error`` row or a traceback.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

_received = False


def install() -> None:
    """Record SIGINTs (then raise ``KeyboardInterrupt`` as Python's default handler does)."""
    global _received
    _received = False
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)


def _on_sigint(signum: int, frame: Any) -> None:
    global _received
    _received = True
    raise KeyboardInterrupt


def received() -> bool:
    """Whether a SIGINT arrived since :func:`install`."""
    return _received


def forget_interrupt() -> None:
    """Call after handling Ctrl-C, so that the process ends with the exit status we choose (130).

    CPython 3.11 records a process-wide "unhandled KeyboardInterrupt" when Ctrl-C escapes code run
    by ``exec`` of a string (``dataclasses`` builds ``__init__`` that way, so an import can do
    it), and then ends the process by SIGINT even after the interrupt was handled. Each ``exec``
    of a string resets that record first.
    """
    exec("pass")  # noqa: S102 - a constant; resets CPython's unhandled-interrupt record

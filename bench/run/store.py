"""A run folder: ``run.json``, ``rows.jsonl`` (the durable log) and ``results.csv``.

Each finished cell is appended to ``rows.jsonl`` as one JSON line, flushed and fsync'ed before
the next cell starts; a kill in the middle of a write can only leave a torn last line, which
:meth:`RunStore.rows` ignores. ``results.csv`` is rewritten from the log after every cell through
a temporary file and an atomic rename, so it is always complete.

A line that is damaged in the middle of the log (a disk error, a hand edit) is skipped too, so
it is in no table and its cell runs again on ``bench run --resume``; unlike a torn last line it
is reported: :meth:`RunStore.rows` calls ``warn`` once per damaged line with its number and its
cell (see :class:`Damage`), by default a warning on stderr.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bench.errors import BenchError

ROWS = "rows.jsonl"
CSV = "results.csv"
META = "run.json"


LOCK = ".lock"

Warn = Callable[[str], None]


@dataclass(frozen=True)
class Damage:
    """One unreadable line in the middle of ``rows.jsonl``.

    Attributes:
        line: its 1-based line number.
        error: why it could not be read (the JSON error, or what is missing).
        cell_id: the cell id found in its text, if any.
        recovered: True when another line of the log holds a row of the same cell (the cell
            was run again): nothing is missing.
    """

    line: int
    error: str
    cell_id: str | None
    recovered: bool

    def message(self, log: Path) -> str:
        """The warning shown to the user."""
        cell = f"cell {self.cell_id}" if self.cell_id else "its cell (id unreadable)"
        if self.recovered:
            what = f"another line holds {cell}, so nothing is missing"
        else:
            what = f"{cell} is in no table and runs again on `bench run --resume {log.parent}`"
        return f"warning: {log} line {self.line} is unreadable ({self.error}); skipped: {what}"


_CELL_ID = re.compile(r'"cell_id"\s*:\s*"([^"]+)"')

_printed: set[str] = set()


def print_warning(message: str) -> None:
    """The default ``warn`` of :class:`RunStore`: the message on stderr, once per process."""
    if message not in _printed:
        _printed.add(message)
        print(message, file=sys.stderr)


class RunStore:
    """A run folder.

    Args:
        path: the folder.
        warn: called with one message per damaged line of ``rows.jsonl`` (once per line and
            store); :func:`print_warning` by default, ``None`` for silence.
    """

    def __init__(self, path: str | os.PathLike[str], warn: Warn | None = print_warning) -> None:
        self.path = Path(path)
        self.warn = warn
        self.damaged: list[Damage] = []
        self._lock_file: Any = None
        self._reported: set[tuple[int, str | None, bool]] = set()

    @property
    def rows_path(self) -> Path:
        return self.path / ROWS

    @property
    def csv_path(self) -> Path:
        return self.path / CSV

    @property
    def meta_path(self) -> Path:
        return self.path / META

    def exists(self) -> bool:
        return self.meta_path.is_file()

    def prepare(self) -> None:
        """Create the folder and prove it is writable, before any work starts."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.path, prefix=".write-test-"):
                pass
        except OSError as exc:
            raise BenchError(
                f"results directory {str(self.path)!r} is not writable: {exc.strerror or exc}"
            ) from None

    def lock(self) -> None:
        """Hold an exclusive lock on the folder for this process's lifetime (one writer per run).

        A second ``bench run`` on the same folder is refused instead of interleaving rows. The
        lock (``flock``) is released by the kernel when the process ends, even on ``kill -9``.
        """
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, as before
            return
        handle = open(self.path / LOCK, "a+")  # noqa: SIM115 - held until the process exits
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise BenchError(
                f"{self.path} is in use by another bench run; wait for it to finish, "
                f"or use another --out"
            ) from None
        self._lock_file = handle

    def unlock(self) -> None:
        """Release the lock and remove the lock file (a ``kill -9`` leaves it: harmless)."""
        if self._lock_file is not None:
            (self.path / LOCK).unlink(missing_ok=True)
            self._lock_file.close()  # closing the descriptor releases the flock
            self._lock_file = None

    def read_meta(self) -> dict[str, Any]:
        try:
            return json.loads(self.meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BenchError(f"{self.meta_path} is unreadable: {exc}") from None

    def write_meta(self, meta: dict[str, Any]) -> None:
        atomic_write(self.meta_path, json.dumps(meta, indent=2, default=str) + "\n")

    def rows(self) -> list[dict[str, Any]]:
        """Every complete row in the log; the last row wins when a cell id repeats.

        A torn last line (a kill during a write) is ignored silently; a damaged line elsewhere
        is skipped, listed in :attr:`damaged` and reported through ``warn``.
        """
        self.damaged = []
        if not self.rows_path.is_file():
            return []
        by_id: dict[str, dict[str, Any]] = {}
        bad: list[tuple[int, str, str]] = []
        with open(self.rows_path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                if not line.endswith("\n"):
                    break  # torn write of the cell in flight
                if not line.strip():
                    continue
                row, error = _parse(line)
                if row is None:
                    bad.append((number, error, line))
                    continue
                by_id[row["cell_id"]] = row
        for number, error, line in bad:
            found = _CELL_ID.search(line)
            cell_id = found.group(1) if found else None
            self.damaged.append(Damage(number, error, cell_id, cell_id in by_id))
        self._report()
        return list(by_id.values())

    def _report(self) -> None:
        for damage in self.damaged:
            key = (damage.line, damage.cell_id, damage.recovered)
            if self.warn is not None and key not in self._reported:
                self._reported.add(key)
                self.warn(damage.message(self.rows_path))

    def append(self, row: dict[str, Any]) -> None:
        """Durably append one row, then refresh results.csv."""
        line = json.dumps(_jsonable(row), default=str) + "\n"
        self._repair_tail()
        created = not self.rows_path.exists()
        with open(self.rows_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        if created:
            fsync_dir(self.path)  # the new file's directory entry is durable too
        self.write_csv()

    def _repair_tail(self) -> None:
        """Drop a torn last line left by a kill, so the next row starts on a line of its own."""
        if not self.rows_path.is_file():
            return
        with open(self.rows_path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)

    def write_csv(self) -> None:
        import pandas as pd

        frame = pd.DataFrame(self.rows())
        atomic_write(self.csv_path, frame.to_csv(index=False))


def _parse(line: str) -> tuple[dict[str, Any] | None, str]:
    """A log line as a row, or None and why it is not one."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, f"not JSON: {exc.msg} at column {exc.colno}"
    if not isinstance(row, dict):
        return None, f"a JSON {type(row).__name__}, not an object"
    if not isinstance(row.get("cell_id"), str):
        return None, "no cell_id"
    return row, ""


def atomic_write(path: Path, text: str) -> None:
    """Write a file through a temporary sibling and an atomic rename (fsync'ed)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (POSIX; a no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """NaN and inf become null in the log (JSON has no such numbers)."""
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()
    }

"""The on-disk cache of sde-bench (``$BENCH_CACHE_DIR``) and file digests."""

from __future__ import annotations

import collections
import hashlib
import os
from pathlib import Path

CACHE_ENV = "BENCH_CACHE_DIR"

COUNTS: collections.Counter[str] = collections.Counter()
"""How often each expensive step ran in this process: ``reference`` (reference statistics
computed from images, i.e. a cache miss), ``reference_disk_hit``, ``extractor`` (built)."""


def cache_dir() -> Path:
    """``$BENCH_CACHE_DIR`` (default ``~/.cache/sde-bench``)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sde-bench").expanduser()


def fidelity_cache() -> Path:
    return cache_dir() / "fidelity"


_digest_memo: dict[tuple[str, str, int, int], str] = {}


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file (memoised per algorithm, path, size and modification time)."""
    stat = os.stat(path)
    key = (algorithm, str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digest_memo:
        with open(path, "rb") as f:
            _digest_memo[key] = hashlib.file_digest(f, algorithm).hexdigest()
    return _digest_memo[key]


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file (memoised)."""
    return file_digest(path, "sha256")

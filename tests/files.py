"""Files the tests damage or forge: copies of shipped weights, and a pickle that runs code."""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path


def shipped_folder(name: str) -> Path:
    """The installed folder of a shipped model (``plugins/weights/NAME``)."""
    return Path(str(resources.files("bench_plugins") / "weights" / name))


def copy_of_shipped(name: str, folder: Path) -> Path:
    """A writable copy of a shipped model folder (without training checkpoints)."""
    shutil.copytree(shipped_folder(name), folder, ignore=shutil.ignore_patterns("checkpoint"))
    return folder


class Exploit:
    """Unpickling this runs code: it creates the file ``marker``."""

    def __init__(self, marker: str | os.PathLike[str]) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))

"""Files the tests damage or forge: copies of shipped weights, and a pickle that runs code."""

from __future__ import annotations

import os
import shutil
import sys
import types
from importlib import resources
from pathlib import Path
from typing import Any


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


def fake_edm_persistence(monkeypatch: Any) -> types.FunctionType:
    """A stand-in for EDM's ``torch_utils.persistence._reconstruct_persistent_obj``, so that
    :mod:`pickle` writes the same global reference as EDM's pickles (only while dumping)."""

    def _reconstruct_persistent_obj(meta):  # never called: the loader maps the global
        raise AssertionError("the original reconstructor must never run")

    module = types.ModuleType("torch_utils.persistence")
    _reconstruct_persistent_obj.__module__ = module.__name__
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj
    monkeypatch.setitem(sys.modules, "torch_utils", types.ModuleType("torch_utils"))
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", module)
    return _reconstruct_persistent_obj

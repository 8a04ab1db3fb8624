"""k-diffusion's samplers (Crowson's ``k_diffusion.sampling``) as an independent implementation.

The package's ``__init__`` imports every submodule, and with them wandb, clean-fid, CLIP and
more, which the tests do not install (``.ci/run`` installs k-diffusion with ``--no-deps``). Only
``k_diffusion.sampling`` (and its ``utils``) is needed, whose imports are torch, torchvision,
scipy, torchsde, torchdiffeq, tqdm, safetensors and Pillow. So :func:`sampling` registers a
bare ``k_diffusion`` package (the installed one's ``__path__``, no ``__init__`` run) and imports
the submodule from it; when k-diffusion or one of those imports is missing, the test skips and
says which.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import pytest

INSTALL = "pip install --no-deps k-diffusion==0.1.1.post1 torchsde torchdiffeq"


def sampling() -> types.ModuleType:
    """``k_diffusion.sampling``, without running the package ``__init__``; skips if absent."""
    if "k_diffusion.sampling" in sys.modules:
        return sys.modules["k_diffusion.sampling"]
    spec = importlib.util.find_spec("k_diffusion")  # locates the package without importing it
    if spec is None or spec.submodule_search_locations is None:
        pytest.skip(f"k-diffusion is not installed ({INSTALL})")
    if "k_diffusion" not in sys.modules:
        package = types.ModuleType("k_diffusion", "k-diffusion, its __init__ not run (tests)")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["k_diffusion"] = package
    try:
        return importlib.import_module("k_diffusion.sampling")
    except ImportError as exc:
        pytest.skip(f"k_diffusion.sampling cannot be imported: {exc} ({INSTALL})")


def external() -> types.ModuleType:
    """``k_diffusion.external`` (its discrete-schedule model wrappers), loaded as
    :func:`sampling` is; skips if absent."""
    sampling()
    try:
        return importlib.import_module("k_diffusion.external")
    except ImportError as exc:
        pytest.skip(f"k_diffusion.external cannot be imported: {exc} ({INSTALL})")

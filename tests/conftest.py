"""Shared fixtures: only built-in plugins load, a fresh registry, float64 helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    """Installed third-party plugins and the user's environment never leak into tests."""
    monkeypatch.setenv("BENCH_LOAD_PLUGINS", "")
    user_vars = ("BENCH_PLUGINS", "BENCH_PLUGINS_DIR", "BENCH_STRICT_PLUGINS", "BENCH_DEBUG")
    for var in (*user_vars, "BENCH_FID_WEIGHTS"):  # BENCH_FID_WEIGHTS is --fid-weights
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def registry():
    from bench.plugin import loading as plugins

    return plugins.load(allow=[]).registry


@pytest.fixture
def make_sde(registry):
    def make(name: str, N: int = 1000, **options):
        entry = registry.get("sdes", name)
        return entry.obj(N, entry.obj.Options(**options))

    return make


@pytest.fixture
def one_thread():
    """One intra-op thread (as `bench run` uses for small workloads): fast, steady timings."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cpu():
    return torch.device("cpu")


IMAGE_PLUGIN_DIR = Path(__file__).parent / "image_plugin"


@pytest.fixture(scope="session")
def image_model():
    """A fake 1×8×8 image score model (tests/image_plugin/fake_images.py), reference: digits."""
    from bench.plugin.loading import _import_file

    return _import_file(IMAGE_PLUGIN_DIR / "fake_images.py").FakeImages()

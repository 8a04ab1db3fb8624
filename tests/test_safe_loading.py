"""Checkpoints are read without unpickling code; broken files give one clear message."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from bench.checkpoints import load_into, load_state_dict, read_json
from bench.errors import BenchError
from tests.files import Exploit


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    with open(path, "wb") as f:
        pickle.dump({"weight": Exploit(marker)}, f)
    torch.save({"w": Exploit(marker)}, tmp_path / "model2.pth")
    for p in (path, tmp_path / "model2.pth"):
        with pytest.raises(BenchError, match="refused to load"):
            load_state_dict(p)
    assert not marker.exists()


def test_plain_state_dicts_load(tmp_path):
    state = {"a": torch.arange(3.0), "b": torch.ones(2, 2)}
    save_file(state, tmp_path / "w.safetensors")
    torch.save(state, tmp_path / "w.pt")
    for name in ("w.safetensors", "w.pt"):
        got = load_state_dict(tmp_path / name)
        assert torch.equal(got["a"], state["a"]) and torch.equal(got["b"], state["b"])


@pytest.mark.parametrize("name", ["w.safetensors", "w.pt"])
def test_truncated_files_give_a_clear_error(tmp_path, name):
    state = {"a": torch.randn(1000)}
    path = tmp_path / name
    save_file(state, path) if name.endswith("safetensors") else torch.save(state, path)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(BenchError, match="corrupt or truncated"):
        load_state_dict(path)


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(BenchError, match="does not exist"):
        load_state_dict(tmp_path / "nope.safetensors")
    (tmp_path / "w.h5").write_bytes(b"x")
    with pytest.raises(BenchError, match="unknown weights format"):
        load_state_dict(tmp_path / "w.h5")


def test_shape_mismatch_is_one_message():
    with pytest.raises(BenchError, match="do not fit the model"):
        load_into(torch.nn.Linear(3, 2), {"weight": torch.zeros(2, 4), "bias": torch.zeros(2)}, "x")


def test_metadata_is_parsed_not_evaluated(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{\"sde\": \"__import__('os').system('echo hi')\"}")
    assert read_json(path)["sde"].startswith("__import__")  # a plain string
    path.write_text("sde = 'vp'")
    with pytest.raises(BenchError, match="unreadable metadata"):
        read_json(path)

"""`bench run` end to end through click's runner: results, failures as rows, bad input → exit 2."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
from click.testing import CliRunner

from bench.cli import cli
from tests.files import Exploit, copy_of_shipped

FAST = [
    "--model",
    "gauss1d",
    "--sdes",
    "vp",
    "--predictors",
    "euler",
    "--correctors",
    "none",
    "--steps",
    "25",
    "--samples",
    "16",
    "--batch-size",
    "8",
]

FAULTY = '''
import math
import torch
import bench
from bench_plugins.predictors import EulerMaruyama


class Boom(EulerMaruyama):
    """Raises inside update (a plugin bug)."""
    name = "boom"
    aliases = ()

    def update(self, x, t):
        raise RuntimeError("kaboom at t=%g" % t)


class Nan(EulerMaruyama):
    """Produces NaN from t < 0.5 on."""
    name = "nan_late"
    aliases = ()

    def update(self, x, t):
        x, x_mean = super().update(x, t)
        return (x * math.nan, x_mean * math.nan) if t < 0.5 else (x, x_mean)


class Greedy(EulerMaruyama):
    """Runs out of (simulated) GPU memory above 4 samples per batch."""
    name = "greedy"
    aliases = ()

    def update(self, x, t):
        if x.shape[0] > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().update(x, t)


class Hopeless(EulerMaruyama):
    """Runs out of (simulated) memory at every batch size."""
    name = "hopeless"
    aliases = ()

    def update(self, x, t):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")


@bench.hookimpl
def register_predictors(register):
    register(Boom)
    register(Nan)
    register(Greedy)
    register(Hopeless)
'''


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def rows_of(folder):
    return pd.read_csv(folder / "results.csv")


def test_default_style_sweep_writes_rows_and_metadata(tmp_path):
    out = tmp_path / "run"
    result = invoke(
        "run",
        "--model",
        "ring8",
        "--sdes",
        "ve,subvp",
        "--predictors",
        "euler,ancestral",
        "--correctors",
        "none,langevin",
        "--steps",
        "20",
        "--samples",
        "64",
        "--seeds",
        "0",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    frame = rows_of(out)
    assert len(frame) == 8 and frame["cell_id"].is_unique
    assert set(frame.loc[frame.status == "unsupported", "sde"]) == {"subvp"}
    ok = frame[frame.status == "ok"]
    for column in (
        "nfe",
        "wall_clock_s",
        "samples_per_s",
        "s_per_nfe",
        "swd",
        "swd_n",
        "fd",
        "logp",
        "coverage_tv",
        "seed",
        "device",
        "dtype",
        "threads",
        "torch",
        "predictor_provider",
    ):
        assert ok[column].notna().all(), column
    assert (ok["swd_n"] == 64).all() and (ok["threads"] == 1).all()
    if os.path.exists("/proc/self/status"):  # Linux: the process's resident peak per cell
        assert (ok["peak_rss_mb"] > 10).all()
    meta = json.loads((out / "run.json").read_text())
    assert meta["machine"]["torch"] and meta["plugins"][0]["source"] == "builtin"
    assert meta["machine"]["cpu_count"] == os.cpu_count()
    assert "sampler" in result.stdout and "unsupported" in result.stdout


def test_aliases_map_to_canonical_names(tmp_path):
    result = invoke("run", *FAST, "--predictors", "em", "--out", tmp_path / "r")
    assert result.exit_code == 0
    assert list(rows_of(tmp_path / "r")["predictor"]) == ["euler_maruyama"]


def test_save_samples_writes_npz(tmp_path):
    import numpy as np

    assert invoke("run", *FAST, "--save-samples", "--out", tmp_path / "r").exit_code == 0
    (npz,) = (tmp_path / "r" / "samples").glob("*.npz")
    with np.load(npz, allow_pickle=False) as f:
        assert f["samples"].shape == (16, 1)


def test_options_reach_the_components(tmp_path):
    result = invoke(
        "run",
        "--model",
        "gauss1d",
        "--sdes",
        "ve",
        "--predictors",
        "rd",
        "--correctors",
        "none",
        "--steps",
        "30",
        "--samples",
        "8",
        "-o",
        "ve.sigma_max=7",
        "--eps",
        "1e-4",
        "--out",
        tmp_path / "r",
    )
    assert result.exit_code == 0, result.output
    row = rows_of(tmp_path / "r").iloc[0]
    assert "sigma_max=7.0" in row["sde_options"] and row["eps"] == 1e-4


def test_plugin_exceptions_become_error_rows(tmp_path):
    plugin = tmp_path / "faulty.py"
    plugin.write_text(FAULTY)
    out = tmp_path / "r"
    result = invoke("-p", plugin, "run", *FAST, "--predictors", "boom,euler", "--out", out)
    assert result.exit_code == 0, result.output
    frame = rows_of(out).set_index("predictor")
    assert frame.loc["boom", "status"] == "error"
    assert (
        "file:faulty.py" in frame.loc["boom", "reason"] and "kaboom" in frame.loc["boom", "reason"]
    )
    assert frame.loc["euler_maruyama", "status"] == "ok"  # the sweep went on


def test_fail_fast_stops_at_the_first_error(tmp_path):
    plugin = tmp_path / "faulty.py"
    plugin.write_text(FAULTY)
    result = invoke(
        "-p",
        plugin,
        "run",
        *FAST,
        "--predictors",
        "boom,euler",
        "--fail-fast",
        "--out",
        tmp_path / "r",
    )
    assert result.exit_code == 2 and "--fail-fast" in result.stderr
    assert list(rows_of(tmp_path / "r")["status"]) == ["error"]


def test_divergence_is_a_row_with_the_step(tmp_path):
    plugin = tmp_path / "faulty.py"
    plugin.write_text(FAULTY)
    result = invoke(
        "-p",
        plugin,
        "run",
        *FAST,
        "--predictors",
        "nan_late",
        "--steps",
        "11",
        "--out",
        tmp_path / "r",
    )
    assert result.exit_code == 0
    row = rows_of(tmp_path / "r").iloc[0]
    # grid linspace(1, 1e-3, 11): t_5 = 0.5005, t_6 = 0.4006 is the first t < 0.5
    assert row["status"] == "diverged" and row["diverged_step"] == 6 and "step 6" in row["reason"]


def test_out_of_memory_retries_with_half_the_batch(tmp_path):
    plugin = tmp_path / "faulty.py"
    plugin.write_text(FAULTY)
    result = invoke(
        "-p",
        plugin,
        "run",
        *FAST,
        "--predictors",
        "greedy",
        "--batch-size",
        "16",
        "--out",
        tmp_path / "r",
    )
    assert result.exit_code == 0
    row = rows_of(tmp_path / "r").iloc[0]
    assert row["status"] == "ok" and row["batch_size_used"] == 4
    assert (
        "out of memory at batch size 16" in row["reason"]
        and "retried with batch size 4" in row["reason"]
    )


def test_out_of_memory_at_batch_size_one_is_an_error_row_with_its_history(tmp_path):
    plugin = tmp_path / "faulty.py"
    plugin.write_text(FAULTY)
    args = ["-p", plugin, "run", *FAST, "--predictors", "hopeless", "--batch-size", "4"]
    result = invoke(*args, "--out", tmp_path / "r")
    assert result.exit_code == 0
    row = rows_of(tmp_path / "r").iloc[0]
    assert row["status"] == "error" and "OutOfMemoryError" in row["reason"]
    assert "out of memory at batch size 4; out of memory at batch size 2" in row["reason"]
    assert "gave up at batch size 1" in row["reason"]


BAD_INPUTS = [
    (["--predictors", "eular"], "unknown predictor 'eular'. Did you mean 'euler'?"),
    (["--correctors", "langevn"], "Valid names: ald, annealed_langevin, langevin, none"),
    (["--sdes", "vpp"], "unknown SDE 'vpp'"),
    (["--model", "ring9"], "unknown score model 'ring9'. Did you mean 'ring8'?"),
    (["--metrics", "swdd"], "unknown metric 'swdd'"),
    (["--steps", "0"], "must be >= 1"),
    (["--steps", "ten"], "'ten' is not a valid int"),
    (["--snr", "-0.1"], "must be >= 0"),
    (["--snr", "inf"], "'inf' is not a finite number"),
    (["--snr", "nan"], "'nan' is not a finite number"),
    (["--corrector-steps", "0"], "must be >= 1"),
    (["--samples", "0"], "0 is not in the range x>=1"),
    (["--batch-size", "0"], "0 is not in the range x>=1"),
    (["--seeds", "3-1"], "cannot parse seeds '3-1'"),
    (["--seeds", "a-b"], "cannot parse seeds 'a-b'"),
    (["--device", "cuda:99"], "device 'cuda:99'"),  # not available, or no such index
    (["--device", "tpu"], "use auto, cpu, cuda or cuda:K"),
    (["--model", "gmm:/no/such/file.json"], "does not exist"),
    (["--model", "gauss1d:extra"], "takes no argument"),
    (
        ["-o", "ve.sigma_maxx=3"],
        "has no option 'sigma_maxx'; valid options: eps, sigma_min, sigma_max",
    ),
    (["-o", "ve.sigma_max=big"], "is not a valid float"),
    (["-o", "sigma_max=3"], "is not KIND.NAME.KEY=VALUE"),
    (["-o", "ve.sigma_min=80"], "need 0 < sigma_min < sigma_max"),
    (["--threads", "0"], "is not 'auto' or a positive integer"),
]


@pytest.mark.parametrize("args,message", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_clear_message_and_exit_2(tmp_path, args, message):
    out = tmp_path / "r"
    result = invoke("run", *FAST, *args, "--out", out)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert not (out / "rows.jsonl").exists()  # nothing ran


def test_bench_fid_weights_env_is_the_fid_weights_option(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_FID_WEIGHTS", str(tmp_path / "nope.pth"))
    args = ["--model", "digits-vp", "--sdes", "vp", "--steps", "25", "--samples", "16"]
    result = invoke("run", *args, "--out", tmp_path / "r")
    assert result.exit_code == 2, result.output
    assert "nope.pth" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_progress_bars_show_cells_and_samples(tmp_path):
    result = invoke("run", *FAST, "--batch-size", "4", "--progress", "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert "cells" in result.stderr and "sample" in result.stderr


def test_cuda_requested_on_a_machine_without_one(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = invoke("run", *FAST, "--device", "cuda", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "CUDA is not available" in result.stderr


def test_unwritable_results_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = invoke("run", *FAST, "--out", blocker / "run")
    assert result.exit_code == 2 and "is not writable" in result.stderr


def test_unknown_list_kind_and_command():
    assert invoke("list", "predictorz").exit_code == 2
    assert invoke("frobnicate").exit_code == 2


@pytest.mark.parametrize(
    "args, hint",
    [
        (["run", "-p", "x.py"], "bench -p MODULE_OR_FILE run ..."),
        (["run", "--steps", "3", "--plugin=x.py"], "bench --plugin MODULE_OR_FILE run ..."),
        (["report", "--plugins-dir", "d", "r"], "bench --plugins-dir DIR report ..."),
        (["compare", "--strict-plugins"], "bench --strict-plugins compare ..."),
    ],
)
def test_an_option_of_bench_after_the_command_says_where_it_goes(args, hint):
    result = CliRunner().invoke(cli, args, prog_name="bench")
    assert result.exit_code == 2
    option = hint.split()[1]
    assert f"No such option '{option}' for '{args[0]}'" in result.stderr
    assert f"goes before the command: {hint}" in result.stderr


def test_an_unknown_option_keeps_clicks_message():
    result = CliRunner().invoke(cli, ["run", "--stepz", "3"], prog_name="bench")
    assert result.exit_code == 2
    assert "No such option '--stepz'" in result.stderr and "before the command" not in result.stderr


def test_list_and_plugins_json():
    listing = json.loads(invoke("list", "predictors", "--json").stdout)
    names = {p["name"]: p for p in listing}
    assert set(names) == {"euler_maruyama", "reverse_diffusion", "ancestral_sampling", "none"}
    assert names["euler_maruyama"]["aliases"] == ["euler", "em"]
    sdes = {p["name"]: p for p in json.loads(invoke("list", "sdes", "--json").stdout)}
    assert sdes["ve"]["options"] == {"eps": None, "sigma_min": 0.01, "sigma_max": 50.0}
    plugins = json.loads(invoke("plugins", "--json").stdout)
    assert {p["name"] for p in plugins} >= {"builtin-sdes", "builtin-predictors"}
    assert all(set(p) >= {"name", "source", "dist", "version", "hooks", "status"} for p in plugins)


def test_bf16_autocast_keeps_the_state_in_float32(tmp_path):
    common = [
        "--model",
        "gmm64",
        "--sdes",
        "vp",
        "--predictors",
        "euler",
        "--correctors",
        "none",
        "--steps",
        "40",
        "--samples",
        "64",
        "--metrics",
        "fd",
        "--save-samples",
    ]
    assert invoke("run", *common, "--out", tmp_path / "f32").exit_code == 0
    result = invoke("run", *common, "--dtype", "bf16", "--out", tmp_path / "bf16")
    assert result.exit_code == 0, result.output
    row = rows_of(tmp_path / "bf16").iloc[0]
    assert (row["dtype"], row["state_dtype"], row["autocast"]) == ("bf16", "float32", "bfloat16")
    assert not row["tf32"]
    import numpy as np

    (a,) = (tmp_path / "f32" / "samples").glob("*.npz")
    (b,) = (tmp_path / "bf16" / "samples").glob("*.npz")
    x32, x16 = np.load(a)["samples"], np.load(b)["samples"]
    assert x16.dtype == np.float32
    rel = np.linalg.norm(x16 - x32) / np.linalg.norm(x32)
    assert 0 < rel < 0.05  # same noise, lower-precision score: close but not identical


def test_compile_is_refused_for_models_without_a_network(tmp_path):
    result = invoke("run", *FAST, "--compile", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "has no network to compile" in result.stderr


# -- bad weights files through the CLI: one line, exit 2, nothing run ----------------------------
def _truncate(folder):
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])


def _misfit(folder):
    from safetensors.torch import load_file, save_file

    weights = folder / "model.safetensors"
    state = load_file(weights)
    name = next(k for k, v in state.items() if v.dim() == 4 and v.shape[1] > 1)
    state[name] = state[name][:, :1].contiguous()  # input channels cut to one
    save_file(state, weights)


@pytest.mark.parametrize(
    "damage,message",
    [(_truncate, "corrupt or truncated"), (_misfit, "do not fit the architecture")],
    ids=["truncated", "misfit"],
)
def test_bad_score_weights_through_the_cli(tmp_path, damage, message):
    folder = copy_of_shipped("digits-vp", tmp_path / "model")
    damage(folder)
    out = tmp_path / "r"
    result = invoke("run", *FAST, "--model", f"score:{folder}", "--metrics", "none", "--out", out)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output and not (out / "rows.jsonl").exists()


def test_missing_score_path_through_the_cli(tmp_path):
    result = invoke("run", *FAST, "--model", f"score:{tmp_path / 'nope'}", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "does not exist" in result.stderr


@pytest.mark.parametrize("kind", ["exploit", "truncated", "garbage"])
def test_bad_fid_weights_through_the_cli(tmp_path, kind):
    path = tmp_path / "inception.pth"
    marker = tmp_path / "pwned"
    if kind == "exploit":
        import torch

        torch.save({"fc.weight": Exploit(marker)}, path)
    elif kind == "truncated":
        import torch

        torch.save({"fc.weight": torch.zeros(10, 10)}, path)
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_bytes(b"not a checkpoint at all")
    out = tmp_path / "r"
    args = ["--model", "digits-vp", "--sdes", "vp", "--steps", "25", "--samples", "16"]
    result = invoke("run", *args, "--fid-weights", path, "--out", out)
    assert result.exit_code == 2, result.output
    expected = "corrupt or truncated" if kind == "truncated" else "refused to load"
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "weights_only" not in result.output and not marker.exists()
    assert not (out / "rows.jsonl").exists()


def test_classifier_weights_that_do_not_fit_through_the_cli(tmp_path):
    """A user's feature-extractor file for another network: one line, exit 2, before any cell."""
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "classifier.safetensors"
    save_file({"w": torch.zeros(2, 2)}, path)
    out = tmp_path / "r"
    args = ["--model", "digits-vp", "--sdes", "vp", "--steps", "25", "--samples", "16"]
    result = invoke("run", *args, "--metrics", "fid", "-o", f"fid.weights={path}", "--out", out)
    assert result.exit_code == 2, result.output
    assert "do not fit the model (missing: conv1.bias" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (out / "rows.jsonl").exists()

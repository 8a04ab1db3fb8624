"""bench profile: the minimal and reference-style loops compute the same samples as the suite."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from bench.cli import cli
from bench.core.pc import PCSampler
from bench.run import profile, profile_loops
from tests.sampling import paper_grid

CASES = [
    ("ve", "reverse_diffusion", "langevin"),
    ("vp", "euler_maruyama", "ald"),
    ("subvp", "reverse_diffusion", "langevin"),
    ("vp", "ancestral_sampling", "none"),
    ("ve", "none", "ald"),
    ("vp", "reverse_diffusion", "langevin"),
]


@pytest.mark.parametrize("sde_name,predictor,corrector", CASES)
def test_all_variants_compute_the_same_samples(registry, make_sde, sde_name, predictor, corrector):
    model = registry.get("score-models", "ring8").obj.load(
        None, device=torch.device("cpu"), dtype=torch.float64
    )
    sde = make_sde(sde_name, 40)
    x_T = profile.default_x(model, sde, 8, torch.device("cpu"), torch.float64)
    sampler = PCSampler(
        registry.get("predictors", predictor).obj,
        registry.get("correctors", corrector).obj,
        snr=0.16,
        corrector_steps=2,
    )
    grid = paper_grid(sde)
    setup = profile.Setup(
        sde, grid, sampler, model.score_fn(sde), "score", x_T, torch.device("cpu")
    )
    suite, _ = profile.suite_loop(setup)
    expected = suite(x_T)
    loops = profile_loops.hand_written_loops(setup)
    torch.testing.assert_close(loops["minimal"](x_T), expected, rtol=1e-10, atol=1e-10)
    if predictor in profile_loops.REFERENCE_PREDICTORS:
        # the reference keeps its time grid in float32, hence the looser tolerance
        torch.testing.assert_close(loops["reference"](x_T), expected, rtol=1e-4, atol=1e-4)


def test_profile_command_writes_rows(tmp_path):
    result = CliRunner().invoke(
        cli,
        [
            "profile",
            "--steps",
            "20",
            "--repeats",
            "2",
            "--calls",
            "5",
            "--out",
            str(tmp_path / "p"),
        ],
    )
    assert result.exit_code == 0, result.output
    import pandas as pd

    frame = pd.read_csv(tmp_path / "p" / "results.csv").set_index("variant")
    assert set(frame.index) == {"bare_forward", "sde_bench", "minimal", "reference"}
    assert frame.loc["sde_bench", "nfe"] == 40 and frame.loc["minimal", "ratio_vs_minimal"] == 1
    assert (frame["wall_s"] > 0).all()


def test_profile_vp_predictor_only_at_few_steps(tmp_path):
    """N <= beta_max breaks only the discrete VP chain; Euler–Maruyama alone must still profile."""
    args = ["profile", "--model", "gauss1d", "--sde", "vp", "--predictor", "euler"]
    args += ["--corrector", "none", "--steps", "20", "--repeats", "1", "--calls", "5"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "sde_bench" in result.output


def test_profile_any_sampler_counts_its_nfe(tmp_path):
    """A whole sampler profiles against the bare forward alone: Heun at 5 steps spends 9 NFE,
    and the columns only PC loops fill print as "-"."""
    args = ["profile", "--model", "ring8", "--sde", "vp", "--sampler", "heun", "--steps", "5"]
    args += ["--repeats", "1", "--calls", "3", "--out", str(tmp_path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    import pandas as pd

    frame = pd.read_csv(tmp_path / "results.csv").set_index("variant")
    assert list(frame.index) == ["bare_forward", "sde_bench"]
    assert frame.loc["sde_bench", "nfe"] == 9 and frame.loc["sde_bench", "sampler"] == "heun"
    assert "None" not in result.output


@pytest.mark.parametrize(
    "args,reason",
    [
        (["--sde", "vp", "--corrector", "langevin", "--steps", "20"], "N > beta_max"),
        (["--sde", "subvp", "--predictor", "ancestral", "--steps", "20"], "ancestral"),
        (["--model", "digits-vp", "--sde", "ve", "--steps", "5"], "trained for"),
    ],
)
def test_profile_refuses_unsupported_configurations(args, reason):
    result = CliRunner().invoke(cli, ["profile", "--repeats", "1", "--calls", "2", *args])
    assert result.exit_code == 2, result.output
    assert "cannot profile this configuration" in result.output and reason in result.output
    assert "Traceback" not in result.output


class _Scaled(torch.nn.Module):
    """A stand-in for a compiled network whose outputs are off by a relative ``error``."""

    def __init__(self, net, error):
        super().__init__()
        self.net, self.error = net, error

    def forward(self, *args, **kwargs):
        return self.net(*args, **kwargs) * (1 + self.error)


@pytest.mark.parametrize("error,exit_code", [(0.0, 0), (0.05, 1)])
def test_compile_is_checked_against_the_eager_samples(tmp_path, monkeypatch, error, exit_code):
    """`bench profile --compile` compares with eager on the same noise and fails on a mismatch."""
    monkeypatch.setattr(torch, "compile", lambda net, mode=None: _Scaled(net, error))
    args = ["profile", "--model", "digits-vp", "--sde", "vp", "--predictor", "euler"]
    args += ["--corrector", "none", "--steps", "30", "--batch-size", "4", "--repeats", "1"]
    args += ["--calls", "2", "--compile", "--out", str(tmp_path / "p")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == exit_code, result.output
    import pandas as pd

    row = pd.read_csv(tmp_path / "p" / "results.csv").iloc[0]
    assert bool(row["compiled_matches_eager"]) is (error == 0.0)
    assert bool(row["compiled_vs_eager_rel_diff"] == 0.0) is (error == 0.0)
    assert ("MISMATCH" in result.output) is (error != 0.0)

"""Every SDE × predictor × corrector pairing: finite output or `unsupported`, NFE as counted."""

from __future__ import annotations

import math

import pytest
import torch

from bench.run.cells import run_cell
from bench.run.components import CellContext, Components
from bench.run.grid import GridSpec, expand
from tests.sampling import environment

SDES = ("ve", "vp", "subvp")
PREDICTORS = ("euler_maruyama", "reverse_diffusion", "ancestral_sampling", "none")
CORRECTORS = ("langevin", "ald", "none")
STEPS, CSTEPS, SAMPLES, BATCH = 25, 2, 10, 4  # three batches: 4 + 4 + 2


@pytest.fixture(scope="module")
def rows(registry):
    model = registry.get("score-models", "ring8").obj.load(
        None, device=torch.device("cpu"), dtype=torch.float64
    )
    spy = {"calls": 0}
    inner = model.score_fn

    def spied_score_fn(sde):
        score = inner(sde)

        def counted(x, t):
            spy["calls"] += 1
            return score(x, t)

        return counted

    model.score_fn = spied_score_fn
    env = environment(registry, model, "float64")
    ctx = CellContext(env)
    spec = GridSpec(
        model="ring8",
        sdes=SDES,
        samplers=("pc",),
        schedules=None,
        predictors=PREDICTORS,
        correctors=CORRECTORS,
        steps=(STEPS,),
        snrs=(0.16,),
        corrector_steps=(CSTEPS,),
        probability_flow=(False, True),
        seeds=(0,),
        samples=SAMPLES,
        batch_size=BATCH,
        denoise=True,
        dtype="float64",
        metrics=("swd",),
    )
    out = []
    for cell in expand(spec, Components(env)):
        before = spy["calls"]
        row = run_cell(cell, ctx)
        out.append((cell, row, spy["calls"] - before))
    return out


def test_grid_is_complete_and_deduplicated(rows):
    # pf only applies with a predictor: (3 predictors × 2 + none) × 3 correctors × 3 SDEs
    assert len(rows) == (3 * 2 + 1) * 3 * 3
    assert len({cell.id for cell, _, _ in rows}) == len(rows)


def test_each_cell_is_finite_or_unsupported(rows):
    for cell, row, _ in rows:
        expected_unsupported = cell.predictor == "ancestral_sampling" and (
            cell.sde == "subvp" or cell.probability_flow
        )
        if expected_unsupported:
            assert row["status"] == "unsupported" and row["reason"], row
        else:
            assert row["status"] == "ok", row
            assert math.isfinite(row["swd"])


def test_reported_nfe_is_the_number_of_score_calls(rows):
    for cell, row, spied in rows:
        if row["status"] != "ok":
            assert spied == 0
            continue
        batches = math.ceil(SAMPLES / BATCH)
        assert row["score_calls"] == spied
        assert row["nfe"] == spied / batches
        per_step = (cell.predictor != "none") + CSTEPS * (cell.corrector != "none")
        assert row["nfe"] == STEPS * per_step  # the reference's N·(n+1) would over-count
        assert row["nfe_nominal"] == row["nfe"] == row["nfe_min"] == row["nfe_max"]


def test_samplers_share_their_starting_points(registry):
    """Same seed → same prior noise, whatever the sampler or batch size."""
    from bench.core.noise import prior_noise

    a = prior_noise(3, 0, 10, (2,))
    b = torch.cat([prior_noise(3, 0, 4, (2,)), prior_noise(3, 4, 6, (2,))])
    assert torch.equal(a, b)
    assert not torch.equal(a, prior_noise(4, 0, 10, (2,)))


@pytest.mark.parametrize(
    "predictor,corrector",
    [("reverse_diffusion", "none"), ("ancestral_sampling", "none"), ("euler_maruyama", "langevin")],
)
def test_too_few_steps_for_the_ddpm_chain_is_unsupported(registry, predictor, corrector):
    """β_k = β_max/N ≥ 1 breaks the discrete VP rules: a row that says why, not NaN."""
    model = registry.get("score-models", "gauss1d").obj.load(
        None, device=torch.device("cpu"), dtype=torch.float64
    )
    env = environment(registry, model, "float64")
    spec = GridSpec(
        model="gauss1d",
        sdes=("vp",),
        samplers=("pc",),
        schedules=None,
        predictors=(predictor,),
        correctors=(corrector,),
        steps=(3,),
        snrs=(0.16,),
        corrector_steps=(1,),
        probability_flow=(False,),
        seeds=(0,),
        samples=4,
        batch_size=4,
        denoise=True,
        dtype="float64",
        metrics=(),
    )
    (cell,) = expand(spec, Components(env))
    row = run_cell(cell, CellContext(env))
    assert row["status"] == "unsupported" and "beta_k < 1" in row["reason"]


def test_ancestral_sampling_runs_on_a_non_uniform_schedule_at_few_steps(tmp_path):
    """The paper's discrete DDPM chain (beta_k < 1 needs N > 20 on VP) binds only the uniform
    schedule: on `edm` the same predictor at N = 10 runs, on `uniform` it is unsupported."""
    import pandas as pd
    from click.testing import CliRunner

    from bench.cli import cli

    args = ["run", "--model", "gauss1d", "--sdes", "vp", "--predictors", "ancestral_sampling"]
    args += ["--correctors", "none", "--schedules", "edm,uniform", "--steps", "10"]
    args += ["--samples", "16", "--seeds", "0", "--no-progress", "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(tmp_path / "r" / "results.csv").set_index("schedule")
    assert rows.loc["edm", "status"] == "ok"
    assert rows.loc["uniform", "status"] == "unsupported"

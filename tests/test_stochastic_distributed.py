"""torchrun (gloo, 2 CPU ranks) gives the stochastic samplers' table of one process: every
sample's Brownian path and step noise depend on (seed, sample index) only, so the ranks' batches
draw what one process draws; ``ggf``'s shared step size is per batch, and the batches are the
same."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_distributed import one_and_two

pytestmark = pytest.mark.slow

SAMPLERS = "euler_ancestral,dpmpp_2m_sde,dpmpp_3m_sde,sa_solver,er_sde,restart,ggf"
STOCHASTIC = ["--model", "ring8", "--sdes", "vp", "--samplers", SAMPLERS, "--steps", "12"]
STOCHASTIC += ["--seeds", "0", "--samples", "60", "--batch-size", "16", "--save-samples"]


def test_two_ranks_give_the_stochastic_table_of_one_process(tmp_path):
    a, b = one_and_two(STOCHASTIC, tmp_path)
    assert list(a.index) == list(b.index) and len(a) == 7
    assert list(a["status"]) == list(b["status"]) == ["ok"] * 7
    for column in ("nfe", "nfe_min", "nfe_max", "score_calls"):
        np.testing.assert_array_equal(a[column].to_numpy(), b[column].to_numpy(), column)
    assert set(b["world_size"]) == {2}
    for column in ("swd", "fd", "logp_gap", "coverage_tv"):
        np.testing.assert_allclose(
            a[column].to_numpy(float), b[column].to_numpy(float), rtol=1e-6, atol=1e-12
        )
    saved = sorted((tmp_path / "one" / "samples").glob("*.npz"))
    assert len(saved) == 7
    for npz in saved:
        other = tmp_path / "two" / "samples" / npz.name
        np.testing.assert_array_equal(np.load(npz)["samples"], np.load(other)["samples"])

"""torchrun (gloo, 2 CPU ranks) gives the guided table of one process: labels, guidance and the
references the metrics measure against depend on (seed, sample index) only."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_distributed import one_and_two

pytestmark = pytest.mark.slow

GUIDED = ["--model", "ring8-cond", "--sdes", "vp", "--samplers", "heun,dpmpp_2m", "--steps", "8"]
GUIDED += ["--guidance", "1,3", "--labels", "random", "--seeds", "0", "--samples", "60"]
GUIDED += ["--batch-size", "16", "--metrics", "swd,fd,coverage,ode_err", "--save-samples"]


def test_two_ranks_give_the_guided_table_of_one_process(tmp_path):
    a, b = one_and_two(GUIDED, tmp_path)
    assert list(a.index) == list(b.index) and len(a) == 4
    assert list(a["status"]) == list(b["status"]) == ["ok"] * 4
    for column in ("nfe", "passes", "guidance"):
        np.testing.assert_array_equal(a[column].to_numpy(), b[column].to_numpy(), column)
    assert set(b["world_size"]) == {2} and set(a["labels"]) == {"random"}
    for column in ("swd", "fd", "coverage_tv", "ode_err", "swd_ref"):
        np.testing.assert_allclose(
            a[column].to_numpy(float), b[column].to_numpy(float), rtol=1e-6, atol=1e-12
        )
    for cell in a.index:
        x = np.load(tmp_path / "one" / "samples" / f"{cell}.npz")["samples"]
        y = np.load(tmp_path / "two" / "samples" / f"{cell}.npz")["samples"]
        np.testing.assert_array_equal(x, y)

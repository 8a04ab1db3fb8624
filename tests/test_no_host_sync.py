"""The sampling loop never reads device values back to the host (no per-step synchronisation).

On a GPU, `.item()`, `bool(tensor)`, `float(tensor)`, `.tolist()`, `.cpu()` force the host to wait
for the device. A TorchFunctionMode records every such call while the built-in samplers run; the
list must stay empty (on CPU this proves the absence of the calls that would sync on CUDA).
"""

from __future__ import annotations

import pytest
import torch

from bench.core.noise import SampleNoise
from bench.errors import Unsupported
from tests.sampling import HostReads, run_pc

PREDICTORS = ("euler_maruyama", "reverse_diffusion", "ancestral_sampling", "none")
CORRECTORS = ("langevin", "ald", "none")


@pytest.mark.parametrize("probability_flow", [False, True], ids=["sde", "flow"])
@pytest.mark.parametrize("sde_name", ["ve", "vp", "subvp"])
@pytest.mark.parametrize("predictor", PREDICTORS)
@pytest.mark.parametrize("corrector", CORRECTORS)
def test_the_loop_has_no_host_reads(
    registry, make_sde, sde_name, predictor, corrector, probability_flow
):
    """Every built-in predictor × corrector × SDE, with and without the probability flow."""
    model = registry.get("score-models", "gmm64").obj.load(
        None, device=torch.device("cpu"), dtype=torch.float32
    )
    sde = make_sde(sde_name, 30)
    P = registry.get("predictors", predictor).obj
    C = registry.get("correctors", corrector).obj
    try:
        P.supports(sde, probability_flow)
        C.supports(sde)
    except Unsupported:
        pytest.skip("pairing unsupported (a table row, not a loop)")
    score = model.view(sde)
    noise = SampleNoise(0, 0, 16)
    p = P(sde, score, probability_flow, noise)
    c = C(sde, score, 0.16, 2, noise)
    x_T = sde.prior_sampling(torch.randn(16, 1, 8, 8))
    with HostReads() as mode:
        run_pc(sde, p, c, x_T)
    assert mode.seen == []
    assert score.calls > 0 or (predictor, corrector) == ("none", "none")


def test_the_detector_sees_host_reads():
    with HostReads() as mode:
        x = torch.ones(3)
        x.sum().item()
        bool(x.all())
    assert mode.seen == ["item", "__bool__"]


def whole_samplers(registry):
    """Every registered sampler but pc (covered above) and host loops (``ode``: scipy's RK45
    runs on the host by design)."""
    return [
        n
        for n in registry.names("samplers")
        if n != "pc" and not getattr(registry.get("samplers", n).obj, "host_loop", False)
    ]


@pytest.mark.parametrize("sde_name", ["ve", "vp", "subvp"])
def test_whole_samplers_have_no_host_reads(registry, make_sde, sde_name):
    """Every built-in sampler on its own default schedule, stochastic options switched on."""
    from bench.core.views import ModelView

    model = registry.get("score-models", "gmm64").obj.load(
        None, device=torch.device("cpu"), dtype=torch.float32
    )
    stochastic = {"ddim": {"eta": 1.0}, "heun": {"s_churn": 10.0}}
    names = whole_samplers(registry)
    assert {"euler", "ddim", "heun", "dpmpp_2m", "dpmpp_3m", "unipc", "ipndm"} <= set(names)
    for name in names:
        cls = registry.get("samplers", name).obj
        sampler = cls(cls.Options(**stochastic.get(name, {})))
        sde = make_sde(sde_name, 12)
        grid = registry.get("schedules", cls.default_schedule).obj().grid(sde, 12)
        sde.discrete = grid.paper
        view = ModelView(model.native_fn(sde), model.native, sde)
        x_T = sde.prior_sampling(torch.randn(8, 1, 8, 8))
        with HostReads() as mode, torch.no_grad():
            sampler.sample(x_T, grid, view, SampleNoise(0, 0, x_T.shape[0]))
        assert mode.seen == [], name
        assert view.calls == sampler.nfe_nominal(12), name

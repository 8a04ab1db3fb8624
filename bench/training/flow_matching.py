"""The conditional flow-matching loss of a velocity network (``bench train --sde flow``).

Lipman et al. 2022, Eq. 9 (Liu et al. 2022, Eq. 1 for the linear path): for t ~ U(ε, 1),
z ~ N(0, I) and x_t = a(t)·x_0 + std(t)·z, the target is the path's velocity
u = dx_t/dt = a'(t)·x_0 + std'(t)·z, which is z − x_0 on the flow SDE (a = 1 − t, std = t), and the
per-sample loss is ‖u_θ(x_t, t) − u‖² summed over pixels. The network is conditioned on t itself
(also at t = 1, where x_t = z).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bench.core.sde import SDE

OBJECTIVE = (
    "conditional flow matching: mean over batch of sum over pixels "
    "||u - (a'(t)*x0 + std'(t)*z)||^2 (= z - x0 on flow)"
)
"""The ``training.objective`` of a velocity model's metadata."""


def flow_matching_loss(
    net: nn.Module, sde: SDE, p: object, x0: Tensor, t: Tensor, z: Tensor
) -> Tensor:
    """Mean over the batch of ‖u_θ(x_t, t) − (a'(t)·x_0 + std'(t)·z)‖² (``p`` is unused: the
    network's output is the velocity itself)."""
    coefs = [(*sde.marginal_coef(ti), *sde.marginal_rates(ti)) for ti in t.tolist()]
    a, std, da, dstd = (
        c.to(x0)[:, None, None, None]
        for c in torch.tensor(coefs, dtype=torch.float64).to(x0.device).unbind(1)
    )
    target = da * x0 + dstd * z
    out = net(a * x0 + std * z, t.to(x0))
    return (out - target).square().sum(dim=(1, 2, 3)).mean()

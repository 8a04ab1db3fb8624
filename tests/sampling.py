"""Small helpers for tests that drive the sampling core directly."""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

from bench.core.pc import pc_sample
from bench.core.schedule import TimeGrid
from bench.core.sde import SDE


def paper_grid(sde: SDE) -> TimeGrid:
    """The reference code's grid linspace(T, eps, N) (the ``uniform`` schedule) for ``sde``."""
    sde.discrete = True
    return TimeGrid.build(sde, sde.timesteps(), paper=True)


def run_pc(sde: SDE, predictor, corrector, x_T, **kwargs):
    """The PC loop on the paper's grid of ``sde`` (its N steps)."""
    return pc_sample(predictor, corrector, x_T, paper_grid(sde), **kwargs)


def next_time(sde: SDE, t: float) -> float:
    """The time after ``t`` on the paper's grid (0 after the last)."""
    grid = paper_grid(sde).t
    return grid[grid.index(t) + 1]


def environment(registry, model, dtype: str = "float32", sdes=("ve", "vp", "subvp")):
    """A CPU, one-thread :class:`bench.run.setup.Environment` around an already loaded model."""
    from bench.run.setup import Environment, OptionSet

    return Environment(registry, torch.device("cpu"), dtype, 1, model, OptionSet(), tuple(sdes))


HOST_READS = {
    torch.Tensor.item,
    torch.Tensor.__bool__,
    torch.Tensor.__float__,
    torch.Tensor.__int__,
    torch.Tensor.tolist,
    torch.Tensor.numpy,
    torch.Tensor.cpu,
    torch.Tensor.__index__,
}
"""Tensor methods that read a device value back to the host (a synchronisation on a GPU)."""


class HostReads(TorchFunctionMode):
    """Records every :data:`HOST_READS` call made while it is active (on CPU this proves the
    absence of the calls that would synchronise on CUDA)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in HOST_READS and not _cpu_numpy(func, args):
            self.seen.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def _cpu_numpy(func, args) -> bool:
    """A CPU tensor's ``.numpy()``: a view, no read back. On a GPU tensor ``.numpy()`` raises
    instead of synchronising, so code that takes it (the noise's CPU hash, in NumPy) must branch
    on the device; a GPU run never makes this call."""
    return func is torch.Tensor.numpy and args[0].device.type == "cpu"

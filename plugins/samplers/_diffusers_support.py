"""What the ``diffusers:CLASS`` sampler needs around a scheduler: importing diffusers, finding a
class and its settings, per-sample generators, and the noise level a scheduler assumes."""

from __future__ import annotations

import difflib
import inspect
import math
import struct
from typing import Any

import torch
from torch import Tensor

from bench.core.sampler import Noise
from bench.errors import BenchError, Unsupported

STEP_RESERVED = frozenset(
    {"self", "model_output", "timestep", "sample", "generator", "return_dict", "variance_noise"}
)
"""``step`` parameters the sampler sets itself (not options)."""


def import_diffusers() -> Any:
    """The diffusers module; a one-line install hint (exit status 2) if it is missing."""
    try:
        import diffusers
    except ImportError as exc:
        from bench_plugins.score_models.diffusers_folder import INSTALL_HINT

        raise BenchError(
            f"the diffusers sampler needs the optional diffusers package: {INSTALL_HINT} ({exc})"
        ) from None
    return diffusers


def scheduler_names(diffusers: Any) -> list[str]:
    """The scheduler classes the installed diffusers exports (names ending in ``Scheduler``)."""
    return sorted(n for n in dir(diffusers) if n.endswith("Scheduler") and not n.startswith("_"))


def close_matches(word: str, candidates: list[str], n: int = 5) -> list[str]:
    """Candidates close to ``word``, case-insensitively (difflib), then those containing it."""
    lower = {c.lower(): c for c in candidates}
    found = [lower[m] for m in difflib.get_close_matches(word.lower(), list(lower), n, 0.6)]
    found += [c for c in candidates if word.lower() in c.lower() and c not in found]
    return found[:n]


def did_you_mean(word: str, candidates: list[str]) -> str:
    """``; did you mean A, B?`` for the close matches of ``word`` (empty if none)."""
    matches = close_matches(word, candidates)
    return f"; did you mean {', '.join(matches)}?" if matches else ""


def init_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The named parameters of ``cls.__init__`` (its config keys), without ``self``/``**kwargs``."""
    params = inspect.signature(cls.__init__).parameters
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {k: p for k, p in params.items() if k != "self" and p.kind in named}


def step_parameters(cls: type) -> tuple[dict[str, inspect.Parameter], list[str]]:
    """(the optional ``step`` parameters a user may set, the required ones the loop cannot give)."""
    step = getattr(cls, "step", None)
    if step is None:
        return {}, []
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = {k: p for k, p in inspect.signature(step).parameters.items() if p.kind in named}
    required = [
        k
        for k, p in params.items()
        if p.default is inspect.Parameter.empty and k not in STEP_RESERVED
    ]
    optional = {
        k: p
        for k, p in params.items()
        if p.default is not inspect.Parameter.empty and k not in STEP_RESERVED
    }
    return optional, required


TIMESTEP_OPTIONS = ("mu",)
"""``set_timesteps`` parameters a user may set (``-o diffusers.mu=M``): the dynamic time shift μ
of a flow-matching scheduler with ``use_dynamic_shifting``, which a pipeline computes from the
image's sequence length."""


def timestep_parameters(cls: type) -> list[str]:
    """The :data:`TIMESTEP_OPTIONS` that ``cls.set_timesteps`` takes."""
    method = getattr(cls, "set_timesteps", None)
    if method is None:
        return []
    params = inspect.signature(method).parameters
    return [k for k in TIMESTEP_OPTIONS if k in params]


def sample_seeds(noise: Noise, x_T: Tensor) -> list[int]:
    """One 63-bit seed per sample: the float64 bits of one draw of that sample's noise stream.

    The cell's noise (:class:`bench.core.noise.SampleNoise`) gives each sample its own stream, so
    sample j's seed depends only on (seed, j), not on the batch it is drawn in.
    """
    draws = noise(x_T.new_empty((x_T.shape[0], 1), dtype=torch.float64)).flatten().tolist()
    return [int.from_bytes(struct.pack("<d", u), "little") & (2**63 - 1) for u in draws]


class SampleGenerators(list):
    """A ``torch.Generator`` per sample on x_T's device, seeded by :func:`sample_seeds` on first use.

    diffusers' ``randn_tensor`` draws sample j's noise from ``generator[j]`` when given a list
    of one generator per sample, so a stochastic scheduler's samples do not depend on the batch
    size either. The seeds are drawn when a generator is first read (``randn_tensor`` reads
    ``generator[0]`` first), so a scheduler that never draws noise costs no draws.
    """

    def __init__(self, noise: Noise, x_T: Tensor) -> None:
        super().__init__(torch.Generator(device=x_T.device) for _ in range(x_T.shape[0]))
        self._seed: tuple[Noise, Tensor] | None = (noise, x_T)

    def _seed_once(self) -> None:
        if self._seed is not None:
            noise, x_T = self._seed
            self._seed = None
            for generator, seed in zip(list.__iter__(self), sample_seeds(noise, x_T)):
                generator.manual_seed(seed)

    def __getitem__(self, index: Any) -> Any:
        self._seed_once()
        return super().__getitem__(index)

    def __iter__(self) -> Any:
        self._seed_once()
        return super().__iter__()


def current_sigma(scheduler: Any, timestep: Any) -> float:
    """σ̃ = std/a of the noise level the scheduler assumes for the sample it is about to step.

    A scheduler with ``sigmas`` and a ``step_index`` (k-diffusion and DPM-Solver families, EDM)
    reads ``sigmas[step_index]`` (its index is set as its own ``step`` would set it), as their
    ``scale_model_input`` and ``step`` do; the second stage of KDPM2 reads
    ``sigmas_interpol[step_index]``, of KDPM2-ancestral ``sigmas_interpol[step_index − 1]``, of
    DPM-Solver-SDE ``mid_point_sigma``. Otherwise (DDIM, DDPM, PNDM, LCM, …) σ̃ =
    sqrt((1 − ᾱ_k)/ᾱ_k) with ᾱ_k = ``alphas_cumprod[k]`` at the integer timestep k.
    (:meth:`DiffusersScheduler.sample` checks the σ̃ against ``scale_model_input``.)
    """
    sigmas = getattr(scheduler, "sigmas", None)
    if isinstance(sigmas, Tensor) and hasattr(scheduler, "step_index"):
        if scheduler.step_index is None and hasattr(scheduler, "_init_step_index"):
            scheduler._init_step_index(timestep)
        index = scheduler.step_index
        if index is not None:
            if not getattr(scheduler, "state_in_first_order", True):
                if hasattr(scheduler, "sigmas_interpol"):
                    ancestral = hasattr(scheduler, "sigmas_up")  # KDPM2AncestralDiscrete
                    return float(scheduler.sigmas_interpol[index - 1 if ancestral else index])
                if getattr(scheduler, "mid_point_sigma", None) is not None:
                    return float(scheduler.mid_point_sigma)
            return float(sigmas[index])
    k = float(timestep)
    if k != int(k):
        raise Unsupported(f"timestep {k:g} is not an index of the scheduler's alphas_cumprod")
    alpha_bar = float(scheduler.alphas_cumprod[int(k)])
    return math.sqrt((1.0 - alpha_bar) / alpha_bar) if alpha_bar > 0 else math.inf

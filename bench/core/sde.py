"""Forward SDEs and their reverse-time counterparts (Song et al. 2021, §3 and App. B–E).

Time is a Python ``float``: the reference code broadcasts one scalar t to the whole batch, and
keeping it on the host lets every coefficient be computed in float64 with no device round trip.

Two conventions for a step from t to t_next (the ``discrete`` attribute chooses):

* the reference code's, on the paper's uniform grid ``linspace(T, eps, N)`` (``discrete=True``):
  Euler–Maruyama uses dt = −1/N, and reverse diffusion, ancestral sampling and the Langevin α read
  the discrete tables at k = floor(t·(N−1)) — t_next is not used;
* on any other time grid (``discrete=False``): dt = t_next − t, and the one-step quantities come
  from the continuous functions between the two times (VE: G² = σ(t)² − σ(t_next)²; VP: the
  one-step β = 1 − ᾱ(t)/ᾱ(t_next)). The grid's last point t_N = 0 is the data: σ = 0, ᾱ = 1.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, Callable, ClassVar, NamedTuple

import torch
from torch import Tensor

from bench.errors import Unsupported

ScoreFn = Callable[[Tensor, float], Tensor]


class AncestralCoefficients(NamedTuple):
    """One ancestral step ``x_mean = a·x + b·s(x, t)``, ``x = x_mean + c·z``."""

    a: float
    b: float
    c: float


class SDE(abc.ABC):
    """A forward SDE dx = f(x, t) dt + g(t) dw on t ∈ [0, T] with N discretisation steps.

    Subclasses implement :meth:`sde`, :meth:`marginal_coef`, :meth:`prior_sampling` and
    :meth:`prior_logp`; :meth:`discretize` defaults to Euler–Maruyama. Hyperparameters live in a
    nested ``Options`` dataclass (settable with ``-o NAME.KEY=VALUE``).
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    default_eps: ClassVar[float] = 1e-3
    T: ClassVar[float] = 1.0
    paper_grid: ClassVar[bool] = True
    """Whether the reference code's discrete conventions exist for this SDE (VE, VP, sub-VP).
    Where they do not, every step spans its own grid interval, on the uniform schedule too."""

    @dataclasses.dataclass
    class Options:
        eps: float | None = None

        def __post_init__(self) -> None:
            if self.eps is not None and not 0 < self.eps < 1:
                raise ValueError(f"eps must lie in (0, T) = (0, 1), got {self.eps}")

    def __init__(self, N: int, options: Any = None) -> None:
        if N < 1:
            raise ValueError(f"N must be >= 1, got {N}")
        self.N = N
        self.discrete = True
        """Whether the reference code's discrete conventions apply (the uniform schedule)."""
        self.options = options if options is not None else self.Options()
        for key, value in dataclasses.asdict(self.options).items():
            setattr(self, key, value)
        self.eps = self.options.eps if self.options.eps is not None else self.default_eps

    # -- the continuous process ---------------------------------------------------------------
    @abc.abstractmethod
    def sde(self, x: Tensor, t: float) -> tuple[Tensor, float]:
        """Drift f(x, t) (shaped like x) and diffusion g(t)."""

    @abc.abstractmethod
    def marginal_coef(self, t: float) -> tuple[float, float]:
        """(a(t), std(t)) of the perturbation kernel p_0t(x_t | x_0) = N(a(t)·x_0, std(t)²·I)."""

    def marginal_rates(self, t: float) -> tuple[float, float]:
        """(a'(t), std'(t)), the time derivatives of the perturbation kernel's coefficients.

        From the linear drift f(x, t) = f(t)·x and g(t) of :meth:`sde` (Song et al. 2021,
        Eq. 29–33): f = d log a/dt and g² = d std²/dt − 2f·std², so a' = f·a and
        std' = (g² + 2f·std²)/(2·std) (t > 0). SDEs with simpler closed forms override this.
        """
        drift, g = self.sde(torch.ones(1, dtype=torch.float64), t)
        f = float(drift[0])
        a, std = self.marginal_coef(t)
        return f * a, (g * g + 2.0 * f * std * std) / (2.0 * std)

    def marginal_prob(self, x0: Tensor, t: float) -> tuple[Tensor, float]:
        """Mean and std of the perturbation kernel at time t."""
        a, std = self.marginal_coef(t)
        return a * x0, std

    def log_snr(self, t: float) -> float:
        """The log signal-to-noise ratio λ(t) = log(a(t)/std(t)) (Lu et al. 2022, §2)."""
        a, std = self.marginal_coef(t)
        return math.log(a) - math.log(std) if std > 0 else math.inf

    def t_of_log_snr(self, lam: float) -> float:
        """The time t with λ(t) = lam (λ decreases in t); bisection, exact to float precision.

        SDEs with a closed-form inverse override this.
        """
        lo, hi = 0.0, self.T
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if mid in (lo, hi):
                break
            if self.log_snr(mid) > lam:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    @abc.abstractmethod
    def prior_sampling(self, z: Tensor) -> Tensor:
        """A sample x_T of the prior from standard-normal noise z (same z → same start)."""

    @abc.abstractmethod
    def prior_logp(self, z: Tensor) -> Tensor:
        """Log density of the prior per sample, summed over the non-batch dimensions."""

    # -- discretisation --------------------------------------------------------------------------
    def timesteps(self) -> list[float]:
        """The sampling grid t_i = linspace(T, eps, N), i = 0..N-1, in float64 on the host."""
        return paper_linspace(self.T, self.eps, self.N)

    def index(self, t: float) -> int:
        """The discrete index k(t) = floor(t·(N−1)/T) every discrete rule uses (§1).

        The floor is taken of the exact value: a tolerance of 1e-9 absorbs float rounding where
        t·(N−1) is mathematically an integer (e.g. N = 2000, eps = 1e-3, i = 1000).
        """
        return int(math.floor(t * (self.N - 1) / self.T + 1e-9))

    def paper_step(self, t_next: float | None) -> bool:
        """Whether a step uses the reference code's discrete convention (see the module doc).

        ``t_next=None`` (a caller that predates time grids) means the paper's convention too.
        """
        return (self.discrete and self.paper_grid) or t_next is None

    def step_dt(self, t: float, t_next: float | None = None) -> float:
        """The (negative) time step: −T/N on the paper's grid (§1, where T = 1), else t_next − t."""
        if t_next is None or self.paper_step(t_next):
            return -self.T / self.N
        return t_next - t

    def discretize(self, x: Tensor, t: float, t_next: float | None = None) -> tuple[Tensor, float]:
        """(f_i, G_i) of x_{i+1} = x_i + f_i + G_i·z; Euler–Maruyama by default.

        The forward step spans |dt| = −:meth:`step_dt`: 1/N on the paper's grid, t − t_next
        elsewhere.
        """
        drift, diffusion = self.sde(x, t)
        dt = -self.step_dt(t, t_next)
        return drift * dt, diffusion * math.sqrt(dt)

    def langevin_alpha(self, t: float, t_next: float | None = None) -> float:
        """The factor α of the Langevin step size (Alg. 4/5): 1 unless the SDE says otherwise."""
        return 1.0

    def ancestral_coefficients(
        self, t: float, t_next: float | None = None
    ) -> AncestralCoefficients:
        """Coefficients of the ancestral sampling step; SDEs without one are unsupported."""
        raise Unsupported(f"ancestral sampling is not defined for the {self.name} SDE")

    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> ReverseSDE:
        """The reverse-time SDE (Eq. 6) or, with ``probability_flow``, the ODE of Eq. 13."""
        return ReverseSDE(self, score_fn, probability_flow)

    def describe(self) -> dict[str, Any]:
        """Hyperparameters for results rows, with eps resolved."""
        return {**dataclasses.asdict(self.options), "eps": self.eps, "N": self.N}


class ReverseSDE:
    """The reverse of a forward SDE: drift f − c·g²·s, diffusion g (c = 1) or 0 (c = ½, ODE)."""

    def __init__(self, forward: SDE, score_fn: ScoreFn, probability_flow: bool) -> None:
        self.forward = forward
        self.score_fn = score_fn
        self.probability_flow = probability_flow
        self.c = 0.5 if probability_flow else 1.0
        self.N = forward.N
        self.T = forward.T

    def sde(self, x: Tensor, t: float) -> tuple[Tensor, float]:
        """Reverse drift and diffusion (Eq. 6 / Eq. 13); one score evaluation."""
        drift, g = self.forward.sde(x, t)
        score = self.score_fn(x, t)
        return torch.sub(drift, score, alpha=self.c * g**2), 0.0 if self.probability_flow else g

    def discretize(self, x: Tensor, t: float, t_next: float | None = None) -> tuple[Tensor, float]:
        """Reverse discretisation rev_f = f_i − c·G_i²·s, rev_G = G_i or 0 (App. E, Eq. 46)."""
        f, G = self.forward.discretize(x, t, t_next)
        score = self.score_fn(x, t)
        return torch.sub(f, score, alpha=self.c * G**2), 0.0 if self.probability_flow else G


def vp_log_mean_coeff(t: float, beta_min: float, beta_max: float) -> float:
    """L(t) = −¼t²(β_max − β_min) − ½tβ_min, so a(t) = e^{L(t)} = exp(−½∫₀ᵗβ)."""
    return -0.25 * t**2 * (beta_max - beta_min) - 0.5 * t * beta_min


def vp_t_of_log_mean_coeff(L: float, beta_min: float, beta_max: float) -> float:
    """The inverse of :func:`vp_log_mean_coeff`: the root t ≥ 0 of ¼Δβ·t² + ½β_min·t + L = 0.

    Written as 2c/(b + sqrt(b² + Δβ·c)) with c = −L, b = ½β_min: no cancellation at small t.
    """
    c, b = -L, 0.5 * beta_min
    if c <= 0:
        return 0.0
    return 2 * c / (b + math.sqrt(b * b + (beta_max - beta_min) * c))


def paper_linspace(T: float, eps: float, N: int) -> list[float]:
    """linspace(T, eps, N) as the reference code's grid (§1): exact end points, float64."""
    if N == 1:
        return [T]
    step = (eps - T) / (N - 1)
    return [T + i * step for i in range(N - 1)] + [eps]


def ladder(lo: float, hi: float, k: int, N: int) -> float:
    """The k-th point of linspace(lo, hi, N) (lo when N = 1)."""
    return lo if N == 1 else lo + (hi - lo) * k / (N - 1)


def standard_normal_logp(z: Tensor, std: float = 1.0) -> Tensor:
    """log N(z; 0, std²·I) per sample, summed over the non-batch dimensions."""
    D = z[0].numel()
    sq = z.reshape(z.shape[0], -1).pow(2).sum(dim=1)
    return -0.5 * D * math.log(2 * math.pi * std**2) - sq / (2 * std**2)

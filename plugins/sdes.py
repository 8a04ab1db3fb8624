"""The paper's SDEs: VE (SMLD), VP (DDPM) and sub-VP (Song et al. 2021, §3.4 and App. B), the
σ-parameterised SDE of EDM (Karras et al. 2022, Eq. 6 with σ(t) = t, s(t) = 1), and the linear
interpolant of rectified flow / flow matching (a(t) = 1 − t, std(t) = t)."""

from __future__ import annotations

import dataclasses
import functools
import math

import torch
from torch import Tensor

import bench
from bench.core.sde import (
    SDE,
    AncestralCoefficients,
    ladder,
    standard_normal_logp,
    vp_log_mean_coeff,
    vp_t_of_log_mean_coeff,
)
from bench.errors import Unsupported


class VESDE(SDE):
    """Variance-exploding SDE dx = sqrt(d[σ²(t)]/dt) dw, σ(t) = σ_min(σ_max/σ_min)^t (Eq. 30)."""

    name = "ve"
    default_eps = 1e-5

    @dataclasses.dataclass
    class Options(SDE.Options):
        sigma_min: float = 0.01
        sigma_max: float = 50.0

        def __post_init__(self) -> None:
            super().__post_init__()
            if not 0 < self.sigma_min < self.sigma_max:
                raise ValueError("need 0 < sigma_min < sigma_max")

    sigma_min: float
    sigma_max: float

    def sigma(self, t: float) -> float:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def sde(self, x: Tensor, t: float) -> tuple[Tensor, float]:
        g = self.sigma(t) * math.sqrt(2 * (math.log(self.sigma_max) - math.log(self.sigma_min)))
        return torch.zeros_like(x), g

    def marginal_coef(self, t: float) -> tuple[float, float]:
        return 1.0, self.sigma(t)

    def log_snr(self, t: float) -> float:
        return -math.log(self.sigma(t))

    def t_of_log_snr(self, lam: float) -> float:
        return (-lam - math.log(self.sigma_min)) / math.log(self.sigma_max / self.sigma_min)

    def sigma_to(self, t_next: float) -> float:
        """σ at the end of a step: σ(t_next), and 0 at the data end t_next = 0."""
        return self.sigma(t_next) if t_next > 0 else 0.0

    def prior_sampling(self, z: Tensor) -> Tensor:
        return self.sigma_max * z

    def prior_logp(self, z: Tensor) -> Tensor:
        return standard_normal_logp(z, self.sigma_max)

    def discrete_sigma(self, k: int) -> float:
        """σ_k of the geometric ladder exp(linspace(ln σ_min, ln σ_max, N)); σ_{−1} = 0."""
        if k < 0:
            return 0.0
        return self._sigmas[k]

    @functools.cached_property
    def _sigmas(self) -> list[float]:
        """The ladder, computed once per SDE (the loop reads it twice a step)."""
        lo, hi = math.log(self.sigma_min), math.log(self.sigma_max)
        return [math.exp(ladder(lo, hi, k, self.N)) for k in range(self.N)]

    def step_sigmas(self, t: float, t_next: float | None) -> tuple[float, float]:
        """(σ_k, σ_{k−1}) on the paper's grid, else (σ(t), σ(t_next))."""
        if self.paper_step(t_next):
            k = self.index(t)
            return self.discrete_sigma(k), self.discrete_sigma(k - 1)
        return self.sigma(t), self.sigma_to(t_next)

    def discretize(self, x: Tensor, t: float, t_next: float | None = None) -> tuple[Tensor, float]:
        """SMLD chain: f_i = 0, G_i = sqrt(σ_k² − σ_{k−1}²) (App. B, Eq. 21)."""
        sigma, prev = self.step_sigmas(t, t_next)
        return torch.zeros_like(x), math.sqrt(sigma**2 - prev**2)

    def ancestral_coefficients(
        self, t: float, t_next: float | None = None
    ) -> AncestralCoefficients:
        """SMLD ancestral step (App. F, Eq. 47)."""
        sigma, prev = self.step_sigmas(t, t_next)
        sigma2, prev2 = sigma**2, prev**2
        return AncestralCoefficients(
            1.0, sigma2 - prev2, math.sqrt(prev2 * (sigma2 - prev2) / sigma2)
        )


@dataclasses.dataclass
class _BetaOptions(SDE.Options):
    beta_min: float = 0.1
    beta_max: float = 20.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.beta_min < self.beta_max:
            raise ValueError("need 0 <= beta_min < beta_max")


class _BetaSchedule(SDE):
    """Shared pieces of VP and sub-VP: the linear β(t) and DDPM's discrete β_k table."""

    Options = _BetaOptions
    beta_min: float
    beta_max: float

    def beta(self, t: float) -> float:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_mean_coeff(self, t: float) -> float:
        return vp_log_mean_coeff(t, self.beta_min, self.beta_max)

    def discrete_beta(self, k: int) -> float:
        """β_k = linspace(β_min/N, β_max/N, N)[k] (1e-4 … 0.02 for N = 1000).

        The DDPM chain needs β_k < 1 (else sqrt(1 − β_k) and α = 1 − β_k break down): with
        N ≤ β_max every rule that uses the table is unsupported, not silently NaN.
        """
        beta = self._betas[k]
        if beta >= 1.0:
            raise Unsupported(
                f"the discrete DDPM chain of the uniform schedule needs beta_k < 1, i.e. "
                f"N > beta_max = {self.beta_max:g} (got N = {self.N})"
            )
        return beta

    def _chain_beta(self, t: float, t_next: float | None, user: str, fix: str) -> float:
        """:meth:`step_beta`; when the table cannot serve, the reason names ``user``, the step
        that needs it, and a ``fix`` that applies to that step."""
        try:
            return self.step_beta(t, t_next)
        except Unsupported as exc:
            raise Unsupported(f"{user}: {exc}; {fix}") from None

    @functools.cached_property
    def _betas(self) -> list[float]:
        """The β_k table, computed once per SDE."""
        lo, hi = self.beta_min / self.N, self.beta_max / self.N
        return [ladder(lo, hi, k, self.N) for k in range(self.N)]

    def step_beta(self, t: float, t_next: float | None) -> float:
        """β_k on the paper's grid, else the one-step β = 1 − ᾱ(t)/ᾱ(t_next) (ᾱ = a²)."""
        if self.paper_step(t_next):
            return self.discrete_beta(self.index(t))
        return -math.expm1(2 * (self.log_mean_coeff(t) - self.log_mean_coeff(t_next)))

    def langevin_alpha(self, t: float, t_next: float | None = None) -> float:
        """α = 1 − β_k, the per-step value the reference code uses (not the cumulative ᾱ)."""
        user = "the corrector's step size (α = 1 − β_k)"
        fix = "use --correctors none, a non-uniform schedule (--schedules logsnr) or more steps"
        return 1.0 - self._chain_beta(t, t_next, user, fix)

    def prior_sampling(self, z: Tensor) -> Tensor:
        return z

    def prior_logp(self, z: Tensor) -> Tensor:
        return standard_normal_logp(z)


_RD_FIX = (
    "use --predictors euler_maruyama, a non-uniform schedule (--schedules logsnr) or more steps"
)


class VPSDE(_BetaSchedule):
    """Variance-preserving SDE dx = −½β(t)x dt + sqrt(β(t)) dw (Eq. 11)."""

    name = "vp"
    default_eps = 1e-3

    def sde(self, x: Tensor, t: float) -> tuple[Tensor, float]:
        beta = self.beta(t)
        return (-0.5 * beta) * x, math.sqrt(beta)

    def marginal_coef(self, t: float) -> tuple[float, float]:
        L = self.log_mean_coeff(t)
        return math.exp(L), math.sqrt(-math.expm1(2 * L))

    def log_snr(self, t: float) -> float:
        L = self.log_mean_coeff(t)
        return L - 0.5 * math.log(-math.expm1(2 * L)) if t > 0 else math.inf

    def t_of_log_snr(self, lam: float) -> float:
        """a² = 1/(1 + e^{−2λ}), so L = −½·log(1 + e^{−2λ}); then invert L(t)."""
        L = -0.5 * math.log1p(math.exp(-2 * lam))
        return vp_t_of_log_mean_coeff(L, self.beta_min, self.beta_max)

    def discretize(self, x: Tensor, t: float, t_next: float | None = None) -> tuple[Tensor, float]:
        """DDPM chain: f_i = (sqrt(1 − β_k) − 1)·x, G_i = sqrt(β_k) (App. B, Eq. 24)."""
        beta = self._chain_beta(t, t_next, "the reverse-diffusion predictor", _RD_FIX)
        return (math.sqrt(1.0 - beta) - 1.0) * x, math.sqrt(beta)

    def ancestral_coefficients(
        self, t: float, t_next: float | None = None
    ) -> AncestralCoefficients:
        """DDPM ancestral step x_mean = (x + β_k·s)/sqrt(1 − β_k) (Eq. 4)."""
        beta = self._chain_beta(t, t_next, "the ancestral-sampling predictor", _RD_FIX)
        root = math.sqrt(1.0 - beta)
        return AncestralCoefficients(1.0 / root, beta / root, math.sqrt(beta))


class SubVPSDE(_BetaSchedule):
    """Sub-VP SDE dx = −½β(t)x dt + sqrt(β(t)(1 − e^{−2∫β})) dw (Eq. 29); EM discretisation.

    The reference code has no discrete tables for sub-VP, so its correctors crash. Here the
    Langevin factor uses VP's α = 1 − β_k (documented choice); ancestral sampling stays unsupported.
    """

    name = "subvp"
    default_eps = 1e-3

    def sde(self, x: Tensor, t: float) -> tuple[Tensor, float]:
        beta = self.beta(t)
        discount = -math.expm1(4 * self.log_mean_coeff(t))  # 1 − e^{−2∫β}
        return (-0.5 * beta) * x, math.sqrt(beta * discount)

    def marginal_coef(self, t: float) -> tuple[float, float]:
        L = self.log_mean_coeff(t)
        return math.exp(L), -math.expm1(2 * L)

    def log_snr(self, t: float) -> float:
        L = self.log_mean_coeff(t)
        return L - math.log(-math.expm1(2 * L)) if t > 0 else math.inf

    def t_of_log_snr(self, lam: float) -> float:
        """std = 1 − a², so a solves a² + e^{−λ}·a − 1 = 0; then invert L(t) = log a."""
        c = math.exp(-lam)
        a = 2.0 / (c + math.sqrt(c * c + 4.0))
        return vp_t_of_log_mean_coeff(math.log(a), self.beta_min, self.beta_max)


class EDMSDE(SDE):
    """EDM's SDE (Karras et al. 2022): σ(t) = t, no scaling; dx = sqrt(2t) dw on t ∈ [σ_min, σ_max].

    With σ(t) = t and s(t) = 1 in Karras et al. (2022, Eq. 6 and Table 1), time *is* the noise
    level: x_t = x_0 + t·z, so a(t) = 1, std(t) = t, f = 0 and g(t)² = d[t²]/dt = 2t, and the
    probability-flow ODE is their Eq. 1 with dσ/dt = 1. The reverse process starts from the
    prior N(0, T²·I) at T = ``sigma_max`` (80 in EDM) and stops at eps = σ_min (0.002 in EDM;
    ``-o sde.edm.eps=...`` or ``--eps``). λ(t) = −log t, so t_of_log_snr is exp(−λ) in closed form,
    and the ``edm`` schedule on this SDE gives exactly Karras et al.'s σ_i (their Eq. 5).

    The reference code's discrete conventions do not exist for this SDE (it is not in Song et al.
    2021): every step spans its own interval t − t_next, also on the ``uniform`` grid, with
    Euler–Maruyama as the forward discretisation (G² = 2t·|dt|). A caller that gives no t_next
    gets |dt| = T/N. There are no DDPM/SMLD tables: ancestral sampling is unsupported.
    """

    name = "edm"
    paper_grid = False
    default_eps = 0.002

    @dataclasses.dataclass
    class Options(SDE.Options):
        sigma_max: float = 80.0

        def __post_init__(self) -> None:
            # Not the base check: here T = sigma_max, not 1.
            if not (math.isfinite(self.sigma_max) and self.sigma_max > 0):
                raise ValueError(f"sigma_max must be a positive number, got {self.sigma_max}")
            eps = EDMSDE.default_eps if self.eps is None else self.eps
            if not 0 < eps < self.sigma_max:
                raise ValueError(
                    f"eps (σ_min) must lie in (0, T) = (0, sigma_max = {self.sigma_max:g}), "
                    f"got {eps:g}"
                )

    sigma_max: float

    @property
    def T(self) -> float:  # type: ignore[override]  # a per-instance T, not the class's 1.0
        """The time horizon, T = σ_max."""
        return self.sigma_max

    def sde(self, x: Tensor, t: float) -> tuple[Tensor, float]:
        return torch.zeros_like(x), math.sqrt(2.0 * t)

    def marginal_coef(self, t: float) -> tuple[float, float]:
        return 1.0, t

    def log_snr(self, t: float) -> float:
        return -math.log(t) if t > 0 else math.inf

    def t_of_log_snr(self, lam: float) -> float:
        return math.exp(-lam)

    def discretize(self, x: Tensor, t: float, t_next: float | None = None) -> tuple[Tensor, float]:
        """Euler–Maruyama: f_i = 0, G_i = sqrt(2t·|dt|)."""
        dt = -self.step_dt(t, t_next)
        return torch.zeros_like(x), math.sqrt(2.0 * t * dt)

    def prior_sampling(self, z: Tensor) -> Tensor:
        return self.sigma_max * z

    def prior_logp(self, z: Tensor) -> Tensor:
        return standard_normal_logp(z, self.sigma_max)


class FlowSDE(SDE):
    """Rectified flow (Liu et al. 2022) / flow matching with the linear path (Lipman et al. 2022).

    The interpolant x_t = (1 − t)·x_0 + t·z (Esser et al. 2024, Eq. 2 with the "RF" path), i.e.
    a(t) = 1 − t and std(t) = t, as a forward SDE of Song et al. 2021 with exactly these marginals
    (their Eq. 29–33 run backwards): f(t) = d log a/dt = −1/(1 − t) and
    g(t)² = d std²/dt − 2·f(t)·std² = 2t/(1 − t). The reverse SDE (Eq. 6) and the
    probability-flow ODE (Eq. 13) are the base class's; the ODE's velocity f·x − ½g²·s equals the
    flow-matching velocity z − x_0 in expectation, dx/dt = E[z − x_0 | x_t = x] (the ``velocity``
    view). λ(t) = log((1 − t)/t), so t(λ) = 1/(1 + e^λ) in closed form, for every λ.

    T and eps: f and g diverge at t = 1 (a(1) = 0) and σ̃ = std/a and λ with them, so the reverse
    process starts at T = 1 − 10⁻³ from the prior N(0, I) (the true marginal there is
    N(10⁻³·x_0, 0.999²·I), a mismatch of the size of VP's a(1) ≈ 6.6·10⁻³), where σ̃ = 999 and
    λ ≈ −6.9 are finite and one Euler–Maruyama step of the paper's 1,000 is still stable
    (|f|·|dt| ≈ 1). It stops at eps = 10⁻³ (std = 10⁻³, λ ≈ 6.9, below 8-bit quantisation of
    [−1, 1] data), where the score's 1/std is finite.

    The reference code has no discrete conventions for this SDE: as for ``edm``, every step spans
    its own interval t − t_next (a caller without t_next gets |dt| = T/N), the forward
    discretisation is Euler–Maruyama (so the reverse-diffusion predictor is too), and the
    Langevin corrector's α is 1 (no β_k table). There is no DDPM/SMLD chain: ancestral sampling
    is unsupported.
    """

    name = "flow"
    paper_grid = False
    default_eps = 1e-3
    T = 1.0 - 1e-3

    def sde(self, x: Tensor, t: float) -> tuple[Tensor, float]:
        return x * (-1.0 / (1.0 - t)), math.sqrt(2.0 * t / (1.0 - t))

    def marginal_coef(self, t: float) -> tuple[float, float]:
        return 1.0 - t, t

    def marginal_rates(self, t: float) -> tuple[float, float]:
        """(a'(t), std'(t)) = (−1, 1)."""
        return -1.0, 1.0

    def log_snr(self, t: float) -> float:
        """log((1 − t)/t): +inf at t = 0, −inf at t = 1."""
        if t <= 0 or t >= 1:
            return math.inf if t <= 0 else -math.inf
        return math.log1p(-t) - math.log(t)

    def t_of_log_snr(self, lam: float) -> float:
        """t = 1/(1 + e^λ), written so that neither branch overflows."""
        if lam >= 0:
            e = math.exp(-lam)
            return e / (1.0 + e)
        return 1.0 / (1.0 + math.exp(lam))

    def prior_sampling(self, z: Tensor) -> Tensor:
        return z

    def prior_logp(self, z: Tensor) -> Tensor:
        return standard_normal_logp(z)


@bench.hookimpl
def register_sdes(register):
    register(VESDE)
    register(VPSDE)
    register(SubVPSDE, aliases=("sub_vp", "sub-vp"))
    register(EDMSDE)
    register(FlowSDE, aliases=("rectified_flow",))

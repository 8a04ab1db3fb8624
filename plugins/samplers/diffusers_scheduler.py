"""Any diffusers scheduler as a sampler: ``--samplers diffusers:CLASS`` (von Platen et al., diffusers).

The scheduler's own ``set_timesteps`` / ``scale_model_input`` / ``step`` loop runs on a model of
the suite, behind the suite's NFE counter (every model call goes through one of the model's
views, ``model.eps``, ``model.denoise``, ``model.v`` or ``model.velocity``), timer, seeds and
metrics. The scheduler is built as a diffusers user builds it,
``CLASS.from_config(the model's scheduler config)``: a diffusers folder's
``scheduler_config.json`` keys that ``CLASS`` accepts (``clip_sample``, ``timestep_spacing``, the
β's, …), the class's defaults for the rest; a model with no scheduler config gets the SDE's noise
schedule instead (:mod:`bench_plugins.samplers._diffusers_config`). Options are the scheduler's
own settings and win over both: ``-o diffusers.solver_order=3`` goes to ``CLASS.from_config`` (a
parameter of ``step``, such as DDIM's ``eta`` or Euler's ``s_churn``, goes to every ``step``
call). Rows record every key with its source (``scheduler_config``). The mapping, in short
(docs/solvers/diffusers.md has it in full):

* **DDPM-type schedulers** (an ᾱ table built from ``beta_start``/``beta_end``: DDIM, DDPM, PNDM,
  DPM-Solver, UniPC, DEIS, Euler, Heun, LMS, KDPM2, …) run on the β-SDEs (VP and sub-VP). Without
  a folder config they get ``num_train_timesteps`` = 1000 and the linear β schedule of the SDE's
  discretisation, β_k = linspace(β_min/1000, β_max/1000, 1000) (Ho et al. 2020; Song et al. 2021,
  App. B), with ``prediction_type="epsilon"`` and ``clip_sample=False``. A model call
  at timestep k is made at the continuous time with the same signal-to-noise ratio as the noise
  level the scheduler assumes there: ᾱ_k (its ``alphas_cumprod``) or its own σ̃ (``sigmas``),
  λ = ½·log(ᾱ/(1 − ᾱ)) = −log σ̃, t = ``sde.t_of_log_snr(λ)`` — on the VP SDE then
  a(t)² = ᾱ exactly, so the model sees the scheduler's ``scale_model_input(sample, k)`` itself,
  and a discrete-time model evaluates its network at timestep k itself (it maps the state's
  noise level back to its table).
* **EDM schedulers** (``EDMEulerScheduler``, ``EDMDPMSolverMultistepScheduler``; Karras et al.
  2022) run on every SDE, with ``sigma_min``/``sigma_max`` = the SDE's σ̃ = std/a range. Their
  sample is x̃ = x/a; the model's denoiser D is fed as F = (D − c_skip·x̃)/c_out, so that their
  ``precondition_outputs`` returns D.
* **Flow-matching schedulers** (``FlowMatchEulerDiscreteScheduler``,
  ``FlowMatchHeunDiscreteScheduler``; Esser et al. 2024) run on the ``flow`` SDE, whose state at
  time t is theirs at σ = t (x = (1 − σ)·x₀ + σ·z): a model call at σ is the model's
  ``velocity`` view at t = σ (u = z − x̂₀, what their ``step`` x ← x + (σ' − σ)·u takes), from
  the prior sample itself. Their first σ is 1 (a = 0): a velocity, v or x₀ model is evaluated
  there; a score or ε model, whose velocity is 0/0 at a = 0, at the SDE's T instead (the row's
  ``scheduler_config`` says so). ``use_dynamic_shifting`` needs ``-o diffusers.mu=M`` (a
  pipeline computes μ from the image's sequence length). On other SDEs they are ``unsupported``.
* Everything else (other flow-matching classes, consistency models, VQ, inversion schedulers,
  schedulers whose ``step`` needs more than the model output, the timestep and the sample) is an
  ``unsupported`` row with the reason, and so are DDPM-type schedulers on σ-parameterised SDEs
  (VE, EDM).

diffusers is an optional extra, imported only when a ``diffusers:CLASS`` sampler is built.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from bench_plugins.samplers._diffusers_config import SchedulerConfig
from bench_plugins.samplers._diffusers_config import resolve as resolve_config
from bench_plugins.samplers._diffusers_support import (
    SampleGenerators,
    current_sigma,
    did_you_mean,
    import_diffusers,
    init_parameters,
    scheduler_names,
    step_parameters,
    timestep_parameters,
)
from bench_plugins.score_models.diffusers_folder import FLOW_SCHEDULERS
from torch import Tensor

from bench.core.options import FreeOptions
from bench.core.sampler import Callback, Noise, Sampler
from bench.core.schedule import Schedule, TimeGrid
from bench.core.sde import SDE
from bench.core.views import ModelView
from bench.errors import BenchError, Unsupported

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
"""The ``prediction_type`` values a DDPM-type scheduler can be fed from the model's views."""

EDM_KIND, VP_KIND, FLOW_KIND = "edm", "vp", "flow"
FLOW_SDE = "flow"
"""The SDE whose state at time t is a flow-matching scheduler's at σ = t."""


class DiffusersScheduler(Sampler):
    """A diffusers scheduler's own sampling loop, ``--samplers diffusers:CLASS``.

    For each of the scheduler's ``timesteps`` k (after ``set_timesteps(N)``): ``scale_model_input``,
    one counted model call at the time t_k with the scheduler's signal-to-noise ratio, then
    ``step``; the result is the last ``prev_sample``. ``nfe_nominal(N)`` is N, what the library
    calls steps; the counted NFE is the number of model calls its loop makes (``len(timesteps)``:
    Heun and KDPM2 2N − 1, PNDM N + 9 with its Runge–Kutta warm-up, N + 1 with
    ``skip_prk_steps``), so the table shows where a library's step count differs from its NFE.

    The scheduler picks its own timesteps (``timestep_spacing`` and the like are its options):
    the suite's schedules do not apply, and any schedule other than the default ``uniform``
    is an ``unsupported`` row, so a sweep over schedules does not repeat identical cells under
    different names.

    Stochastic schedulers (DDPM, Euler ancestral, DDIM with ``eta`` > 0, …) draw their noise
    through diffusers' ``randn_tensor`` from a list of ``torch.Generator`` s, one per sample, each
    seeded with one draw of that sample's noise stream (:class:`SampleGenerators`): seeded, and
    independent of the batch size.
    """

    name = "diffusers"
    Options = FreeOptions
    default_schedule = "uniform"
    host_loop = True  # diffusers' step reads its timestep index back (``nonzero().item()``)
    takes_arg = True

    options: FreeOptions
    kind: str | None
    """``vp`` (DDPM-type), ``edm``, ``flow`` or ``None`` (cannot run on any SDE: see
    :attr:`refusal`)."""
    refusal: str | None
    """Why the scheduler cannot run at all, or ``None``."""
    provenance: str = ""
    """The configuration of the last scheduler built for sampling, key by key with its source."""

    def __init__(self, options: FreeOptions | None = None, arg: str | None = None) -> None:
        """Resolve ``CLASS`` in the installed diffusers and check the options against it.

        Raises:
            BenchError: no ``CLASS``, diffusers missing, an unknown class (with the close
                matches), an unknown option key (with the close matches) or a configuration the
                scheduler itself rejects.
        """
        super().__init__(options, arg)
        if not arg:
            raise BenchError(
                "the diffusers sampler needs a scheduler class: --samplers diffusers:CLASS "
                "(e.g. diffusers:DPMSolverMultistepScheduler)"
            )
        diffusers = import_diffusers()
        self.cls = self._resolve(diffusers, arg)
        values = dict(self.options.values)
        self.init_params = init_parameters(self.cls)
        step_optional, step_required = step_parameters(self.cls)
        timestep_optional = timestep_parameters(self.cls)
        valid = sorted({*self.init_params, *step_optional, *timestep_optional})
        for key in values:
            if key not in valid:
                raise BenchError(
                    f"diffusers {arg} has no option {key!r}{did_you_mean(key, valid)} "
                    f"(its settings: {', '.join(valid) or 'none'})"
                )
        self.init_values = {k: v for k, v in values.items() if k in self.init_params}
        self.timestep_values = {k: v for k, v in values.items() if k in timestep_optional}
        self.step_values = {
            k: v for k, v in values.items() if k not in self.init_params and k in step_optional
        }
        missing = [
            k
            for k, p in self.init_params.items()
            if p.default is inspect.Parameter.empty and k not in self.init_values
        ]
        if missing:  # a token/masking scheduler and the like: nothing the suite can set
            self.kind = None
            self.refusal = f"diffusers {arg} needs {', '.join(missing)}: not a score-SDE scheduler"
            return
        trial = self.build_scheduler(None)
        self.kind, self.refusal = self._classify(trial, step_required)
        if self.kind == VP_KIND and trial.config.prediction_type not in PREDICTION_TYPES:
            raise BenchError(
                f"diffusers {arg}: prediction_type {trial.config.prediction_type!r} cannot be "
                f"fed from a score model; use one of {', '.join(PREDICTION_TYPES)}"
            )

    # -- building ------------------------------------------------------------------------------
    def _resolve(self, diffusers: Any, arg: str) -> type:
        """The scheduler class named ``arg``; a BenchError with close matches otherwise."""
        from diffusers.schedulers.scheduling_utils import SchedulerMixin

        names = scheduler_names(diffusers)
        try:
            cls = getattr(diffusers, arg)
        except (AttributeError, ImportError, RuntimeError):
            cls = None
        if not isinstance(cls, type):
            raise BenchError(
                f"diffusers {diffusers.__version__} has no scheduler class {arg!r}"
                f"{did_you_mean(arg, names)}"
            )
        if not issubclass(cls, SchedulerMixin):
            if getattr(cls, "_backends", None):  # diffusers' placeholder: a dependency is missing
                try:
                    cls()
                except ImportError as exc:
                    raise BenchError(f"diffusers {arg}: {str(exc).strip()}") from None
            others = [n for n in names if n != arg]
            raise BenchError(
                f"diffusers {arg} is not a scheduler class (in diffusers {diffusers.__version__})"
                f"{did_you_mean(arg, others)}"
            )
        return cls

    def config(self, sde: SDE | None, folder: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ``from_config`` dict for ``sde`` and the model's scheduler config ``folder``
        (:func:`bench_plugins.samplers._diffusers_config.resolve`)."""
        return self.resolve(sde, folder).values

    def resolve(self, sde: SDE | None, folder: dict[str, Any] | None = None) -> SchedulerConfig:
        """The configuration and the source of each key: the folder's keys the class accepts
        (or, with no folder, the suite's from the SDE), then the user's options on top."""
        kind = getattr(self, "kind", None)
        return resolve_config(self.init_params, kind, self.init_values, sde, folder)

    def build_scheduler(self, sde: SDE | None, folder: dict[str, Any] | None = None) -> Any:
        """A fresh scheduler for ``sde`` (a scheduler is stateful: one per trajectory batch)."""
        return self._from_config(self.config(sde, folder))

    def _from_config(self, config: dict[str, Any]) -> Any:
        try:
            return self.cls.from_config(config)
        except ImportError as exc:
            raise BenchError(f"diffusers {self.arg}: {str(exc).strip()}") from None
        except Exception as exc:  # noqa: BLE001 - the library's own check of its settings
            raise BenchError(f"diffusers {self.arg}: {type(exc).__name__}: {exc}") from None

    def row_columns(self) -> dict[str, Any]:
        """``scheduler_config``: every key of the last scheduler built for sampling, its value
        and where it came from (folder, suite, user or class default)."""
        return {"scheduler_config": self.provenance} if self.provenance else {}

    def _classify(self, trial: Any, step_required: list[str]) -> tuple[str | None, str | None]:
        """(kind, reason it cannot run) of a scheduler instance."""
        name = self.arg
        if not callable(getattr(trial, "step", None)):
            return None, f"diffusers {name} has no step() (not a one-call-per-step scheduler)"
        if step_required:
            return None, (
                f"diffusers {name}.step needs {', '.join(step_required)} besides the model "
                "output, the timestep and the sample"
            )
        if name in FLOW_SCHEDULERS:
            return FLOW_KIND, None
        if callable(getattr(trial, "precondition_outputs", None)) and hasattr(trial, "sigmas"):
            kind = EDM_KIND
        elif hasattr(trial, "alphas_cumprod") and {"beta_start", "beta_end"} <= set(
            self.init_params
        ):
            kind = VP_KIND
        elif hasattr(trial, "alphas_cumprod"):
            return None, (
                f"diffusers {name} has a fixed noise schedule (no beta_start/beta_end): it "
                "cannot take the SDE's β schedule"
            )
        else:
            return None, (
                f"diffusers {name} is neither DDPM-type (an alphas_cumprod table from "
                "beta_start/beta_end) nor EDM-type (σ levels and precondition_outputs): its "
                "noise levels cannot be mapped onto an SDE's"
            )
        try:
            trial.set_timesteps(3)
            first, last = float(trial.timesteps[0]), float(trial.timesteps[-1])
        except Exception:  # noqa: BLE001 - left to the run, where it becomes an error row
            return kind, None
        if kind == VP_KIND and first < last:
            return None, f"diffusers {name} runs from data to noise (an inversion scheduler)"
        return kind, None

    # -- the Sampler interface -----------------------------------------------------------------
    def supports(self, sde: SDE, schedule: Schedule) -> None:
        """Refuse schedulers that cannot run at all, DDPM-type ones off the β-SDEs, flow-matching
        ones off the flow SDE, and every schedule but ``uniform`` (the scheduler chooses its own
        timesteps)."""
        if self.refusal is not None:
            raise Unsupported(self.refusal)
        if schedule.name != self.default_schedule:
            raise Unsupported(
                f"diffusers {self.arg} chooses its own timesteps (set_timesteps): the suite's "
                f"schedules do not apply; run it on the default schedule ({self.default_schedule}) "
                "and set its spacing with its options (e.g. -o diffusers.timestep_spacing=trailing)"
            )
        if self.kind == VP_KIND and not (hasattr(sde, "beta_min") and hasattr(sde, "beta_max")):
            raise Unsupported(
                f"diffusers {self.arg} is a DDPM-type scheduler (an ᾱ table from a β schedule, "
                f"unit-variance prior); the {sde.name} SDE is σ-parameterised: use "
                "EDMEulerScheduler or EDMDPMSolverMultistepScheduler there"
            )
        if self.kind == FLOW_KIND and sde.name != FLOW_SDE:
            raise Unsupported(
                f"diffusers {self.arg} is a flow-matching scheduler (x = (1 − σ)·x0 + σ·z, "
                f"σ from 1 to 0): it runs on the {FLOW_SDE} SDE only (--sdes {FLOW_SDE}), not "
                f"{sde.name}"
            )

    def nfe_nominal(self, steps: int) -> int:
        """N, what the library calls steps (``set_timesteps(N)``); the counted NFE may differ."""
        return steps

    def sample(
        self,
        x_T: Tensor,
        grid: TimeGrid,
        model: ModelView,
        noise: Noise,
        callback: Callback | None = None,
    ) -> Tensor:
        """Run the scheduler's loop for ``grid.steps`` inference steps and return its last sample.

        Args:
            x_T: the prior sample of ``model.sde``, taken (as by every sampler of the suite) as
                the state at the first model time t_0; the scheduler starts from it in VP
                normalisation, x_T/sqrt(a(t_0)² + std(t_0)²) (x_T itself on VP), times
                ``init_noise_sigma``.
            grid: only ``grid.steps`` is used (the scheduler chooses its timesteps).
            model: the model's views; one ``model.eps`` (``model.denoise`` for
                ``prediction_type="sample"`` and EDM schedulers, ``model.v`` for
                ``"v_prediction"``, ``model.velocity`` for flow matching) per scheduler timestep.
            noise: one draw per sample seeds the generators of stochastic schedulers.
            callback: called after every ``step`` with ``{"i", "t", "x", "denoised",
                "timestep"}``; ``x`` is the scheduler's ``prev_sample`` in its own space.

        Returns:
            The scheduler's last ``prev_sample`` (its final noise level: σ̃ = 0, the data end, for
            most schedulers; see docs/solvers/diffusers.md).

        Raises:
            Unsupported: a noise level with no time on the SDE (e.g. zero terminal SNR).
        """
        sde = model.sde
        config = self.resolve(sde, model.scheduler_config)
        scheduler = self._from_config(config.values)
        effective = {k: v for k, v in scheduler.config.items() if k in self.init_params}
        self.provenance = config.describe(effective)
        if self.timestep_values:
            given = ", ".join(f"{k}={v}" for k, v in sorted(self.timestep_values.items()))
            self.provenance += f"; user, set_timesteps: {given}"
        self._set_timesteps(scheduler, grid.steps, x_T.device)
        step_kwargs = dict(self.step_values)
        if "generator" in inspect.signature(scheduler.step).parameters:
            step_kwargs["generator"] = SampleGenerators(noise, x_T)
        if self.kind == FLOW_KIND:
            return self._flow_loop(scheduler, x_T, model, step_kwargs, callback)
        first = scheduler.timesteps[0]
        a_0, std_0 = sde.marginal_coef(self.time_of(sde, current_sigma(scheduler, first), first))
        sample = _scaled(x_T, 1.0 / math.hypot(a_0, std_0)) * scheduler.init_noise_sigma
        for i, timestep in enumerate(scheduler.timesteps):
            model_input = scheduler.scale_model_input(sample, timestep)
            sigma = current_sigma(scheduler, timestep)
            t = self.time_of(sde, sigma, timestep)
            a, _ = sde.marginal_coef(t)
            if self.kind == EDM_KIND:
                output = self._edm_output(scheduler, sample, model, t, a)
            else:
                if model_input is not sample:
                    self._check_scale(model_input, sample, sigma, timestep)
                x = _scaled(model_input, a * math.sqrt(1.0 + sigma * sigma))
                output = self._vp_output(scheduler, x, model, t)
            result = scheduler.step(output, timestep, sample, return_dict=True, **step_kwargs)
            sample = result.prev_sample
            if callback is not None:
                denoised = getattr(result, "pred_original_sample", None)
                callback({"i": i, "t": t, "x": sample, "denoised": denoised, "timestep": timestep})
        return sample.to(x_T.dtype)

    def _set_timesteps(self, scheduler: Any, steps: int, device: torch.device) -> None:
        """``set_timesteps(N)`` with the user's ``set_timesteps`` options (``mu``); a dynamic
        time shift without ``mu`` is refused (a pipeline computes it from the image's size)."""
        kwargs = dict(self.timestep_values)
        if getattr(scheduler.config, "use_dynamic_shifting", False) and "mu" not in kwargs:
            raise Unsupported(
                f"diffusers {self.arg}: use_dynamic_shifting=True needs mu, the time shift a "
                "pipeline computes from the image's sequence length: give -o diffusers.mu=M, or "
                "-o diffusers.use_dynamic_shifting=false (and -o diffusers.shift=S)"
            )
        if "device" in inspect.signature(scheduler.set_timesteps).parameters:
            kwargs["device"] = device
        scheduler.set_timesteps(steps, **kwargs)

    def _flow_loop(
        self,
        scheduler: Any,
        x_T: Tensor,
        model: ModelView,
        step_kwargs: dict[str, Any],
        callback: Callback | None,
    ) -> Tensor:
        """A flow-matching scheduler's loop: the velocity at t = σ, then ``step``.

        The prior sample is the scheduler's first state as it is (its σ_0 = 1 state is N(0, I),
        the flow SDE's prior); each of its ``timesteps`` is one counted ``model.velocity`` call
        at σ = ``sigmas[step_index]`` (both stages of Heun). The scheduler's σ are float32; the
        network's label t·N is then diffusers' own ``timestep``.
        """
        sample, late = x_T, False
        for i, timestep in enumerate(scheduler.timesteps):
            sigma = current_sigma(scheduler, timestep)
            t = self.flow_time(model, sigma, timestep)
            late = late or t != sigma
            output = model.velocity(sample, t)
            sample = scheduler.step(output, timestep, sample, return_dict=True, **step_kwargs)
            sample = sample.prev_sample
            if callback is not None:
                callback({"i": i, "t": t, "x": sample, "denoised": None, "timestep": timestep})
        if late:
            self.provenance += (
                f"; sigma=1 evaluated at t=T={model.sde.T:g} ({model.native} model: its "
                "velocity is 0/0 at a=0)"
            )
        return sample.to(x_T.dtype)

    def flow_time(self, model: ModelView, sigma: float, timestep: Any) -> float:
        """The flow SDE's time of the scheduler's σ: t = σ, except σ = 1 (a(1) = 0, where x̂₀ =
        (x + std²·s)/a of a score or ε model is 0/0) for such models: the SDE's T, where every
        sampler of the suite takes the prior sample to be."""
        if not 0.0 < sigma <= 1.0:
            raise Unsupported(
                f"diffusers {self.arg}: timestep {float(timestep):g} has σ = {sigma:g}, which is "
                f"no time of the {model.sde.name} SDE (0 < σ ≤ 1)"
            )
        if sigma >= 1.0 and model.native in ("score", "eps"):
            return model.sde.T
        return sigma

    # -- one model call --------------------------------------------------------------------------
    def _check_scale(
        self, model_input: Tensor, sample: Tensor, sigma: float, timestep: Any
    ) -> None:
        """A scheduler whose sample is x̃ = x/√ᾱ (k-diffusion type) scales it by 1/√(σ̃² + 1):
        refuse to go on if that is not the σ̃ read from its tables (a class with other rules)."""
        expected = sample / math.sqrt(sigma * sigma + 1.0)
        if not torch.allclose(model_input, expected, rtol=1e-5, atol=1e-12):
            raise Unsupported(
                f"diffusers {self.arg}: cannot tell the noise level it assumes at timestep "
                f"{float(timestep):g} (its scale_model_input does not divide by sqrt(σ̃² + 1) "
                f"for σ̃ = {sigma:g} from its sigmas)"
            )

    def time_of(self, sde: SDE, sigma: float, timestep: Any) -> float:
        """The time t with σ̃(t) = ``sigma``, i.e. λ(t) = −log σ̃ (``sde.t_of_log_snr``)."""
        if not (0.0 < sigma < math.inf):
            raise Unsupported(
                f"diffusers {self.arg}: timestep {float(timestep):g} has noise level σ̃ = {sigma:g}, "
                f"which is no time of the {sde.name} SDE (e.g. zero terminal SNR)"
            )
        t = sde.t_of_log_snr(-math.log(sigma))
        if not (0.0 < t < math.inf):
            raise Unsupported(
                f"diffusers {self.arg}: σ̃ = {sigma:g} (timestep {float(timestep):g}) has no time "
                f"on the {sde.name} SDE"
            )
        return t

    def _vp_output(self, scheduler: Any, x: Tensor, model: ModelView, t: float) -> Tensor:
        """The model output in the scheduler's ``prediction_type``, from one evaluation at (x, t).

        ε and x̂₀ are the same in every parameterisation with the same SNR, and so is
        v = √ᾱ·ε − √(1−ᾱ)·x̂₀ (Salimans & Ho 2022) with √ᾱ = 1/√(1 + σ̃²), √(1−ᾱ) = σ̃/√(1 + σ̃²):
        the view's v = (a·ε − std·x̂₀)/sqrt(a² + std²) at σ̃ = std/a is the same expression.
        """
        kind = scheduler.config.prediction_type
        if kind == "sample":
            return model.denoise(x, t)
        if kind == "v_prediction":
            return model.v(x, t)
        return model.eps(x, t)

    def _edm_output(
        self, scheduler: Any, sample: Tensor, model: ModelView, t: float, a: float
    ) -> Tensor:
        """F with ``precondition_outputs(x̃, F, σ)`` = c_skip·x̃ + c_out·F = D(a·x̃; t).

        c_skip·x̃ and c_out are read from the scheduler's own ``precondition_outputs`` (no
        evaluation), so its ``sigma_data`` and ``prediction_type`` are honoured.
        """
        sigma = scheduler.sigmas[scheduler.step_index]
        denoised = model.denoise(_scaled(sample, a), t)
        skip = scheduler.precondition_outputs(sample, torch.zeros_like(sample), sigma)
        one = torch.ones((), dtype=sample.dtype, device=sample.device)
        c_out = scheduler.precondition_outputs(torch.zeros_like(one), one, sigma)
        return (denoised - skip) / c_out


def _scaled(x: Tensor, factor: float) -> Tensor:
    """x·factor, or x itself when the factor is 1 to rounding (the VP SDE's own scale)."""
    return x if abs(factor - 1.0) < 1e-12 else x * factor


SAMPLERS = (DiffusersScheduler,)

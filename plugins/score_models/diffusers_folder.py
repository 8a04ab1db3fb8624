"""Reading a diffusers model folder offline: where the UNet and its scheduler config are, and
which SDE the model was trained for (Song et al. 2021, §3.4 and App. B–C).

Nothing here imports diffusers or torch, and nothing touches the network: a hub model id is
only looked up in the local Hugging Face cache.

Layouts understood:

* a pipeline folder (``model_index.json``, ``unet/``, ``scheduler/``), as
  ``DDPMPipeline.save_pretrained`` writes it and as ``google/ddpm-cifar10-32`` and
  ``google/ncsnpp-*`` ship;
* a bare UNet folder (``config.json`` + weights) with ``scheduler_config.json`` beside it, in
  ``../scheduler/`` or in the parent folder;
* ``owner/name``: that model's snapshot in the local Hugging Face cache (``HF_HUB_CACHE``).

Schedules understood: a DDPM linear β table (VP), ``ScoreSdeVeScheduler`` (VE) and the
flow-matching schedulers of :data:`FLOW_SCHEDULERS` (the ``flow`` SDE).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_TYPES = ("discrete", "continuous")
VE_SCHEDULER = "ScoreSdeVeScheduler"
FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler")
"""Flow-matching scheduler configs read as the ``flow`` SDE (their conventions are checked)."""
FLOW_PREDICTION = "flow_prediction"
"""The only ``prediction_type`` a flow-matching config may name (diffusers' name for velocity)."""
UNET_CLASS = "UNet2DModel"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
INSTALL_HINT = "pip install 'sde-bench[diffusers]' (or: pip install diffusers)"


# -- the two schedules -----------------------------------------------------------------------
@dataclass(frozen=True)
class VPSchedule:
    """A DDPM linear β schedule, which is the VP SDE's discretisation (Ho et al. 2020; Song et al. 2021, App. B).

    DDPM trains on β_j = linspace(β_start, β_end, N)[j], j = 0..N−1. The VP SDE's discrete table
    is β_j = linspace(β_min/N, β_max/N, N)[j], so the two agree exactly when β_min = N·β_start and
    β_max = N·β_end (0.1 and 20 for the 1e-4 … 0.02, N = 1000 schedule of DDPM CIFAR-10).

    ``timestep_type`` is ``EulerDiscreteScheduler``'s: ``"continuous"`` together with
    v-prediction means the network was trained on the EDM-style label c_noise = ¼·log σ
    (Karras et al. 2022, Table 1) instead of a timestep index; diffusers applies it only in that
    combination, and so does :attr:`continuous_labels`.
    """

    beta_start: float
    beta_end: float
    n_train: int
    prediction_type: str
    scheduler: str
    timestep_type: str = "discrete"

    sde = "vp"

    @property
    def continuous_labels(self) -> bool:
        """Whether the network takes ¼·log σ labels (diffusers: continuous and v-prediction)."""
        return self.timestep_type == "continuous" and self.prediction_type == "v_prediction"

    @property
    def beta_min(self) -> float:
        return self.n_train * self.beta_start

    @property
    def beta_max(self) -> float:
        return self.n_train * self.beta_end

    def alphas_cumprod(self) -> list[float]:
        """ᾱ_j = Π_{i≤j} (1 − β_i) of the training schedule, in float64 (Ho et al. 2020, Eq. 4)."""
        n, out, prod = self.n_train, [], 1.0
        for j in range(n):
            beta = self.beta_start + (self.beta_end - self.beta_start) * j / (n - 1)
            prod *= 1.0 - beta
            out.append(prod)
        return out

    def sde_options(self) -> dict[str, float]:
        return {"beta_min": self.beta_min, "beta_max": self.beta_max}


@dataclass(frozen=True)
class VESchedule:
    """An NCSN++ geometric noise range σ(t) = σ_min(σ_max/σ_min)^t (Song et al. 2021, Eq. 30)."""

    sigma_min: float
    sigma_max: float
    n_train: int
    snr: float | None
    scheduler: str

    sde = "ve"
    prediction_type = "score"

    def sigma(self, t: float) -> float:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def sde_options(self) -> dict[str, float]:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


@dataclass(frozen=True)
class FlowSchedule:
    """A flow-matching model (Lipman et al. 2022; Liu et al. 2022), as diffusers'
    ``FlowMatchEulerDiscreteScheduler`` trains and samples it (Esser et al. 2024, §2–3).

    Its noise level σ ∈ (0, 1] is the state x_σ = (1 − σ)·x₀ + σ·z, which is the ``flow`` SDE's
    marginal at t = σ; the network is fed the timestep σ·N (N = ``num_train_timesteps``, as
    diffusers' ``timesteps = sigmas * num_train_timesteps``) and predicts the velocity
    dx_σ/dσ = z − x₀ (its ``step`` is x ← x + (σ' − σ)·output). ``shift`` and
    ``use_dynamic_shifting`` only choose the σ's a scheduler steps through (SD3's time shift),
    not what the network computes at a given σ.
    """

    n_train: int
    shift: float
    scheduler: str
    use_dynamic_shifting: bool = False

    sde = "flow"
    prediction_type = "velocity"

    def label(self, t: float) -> float:
        """The network's timestep at the flow SDE's time t = σ: σ·N."""
        return t * self.n_train

    def sde_options(self) -> dict[str, float]:
        return {}


Schedule = VPSchedule | VESchedule | FlowSchedule


@dataclass(frozen=True)
class Checkpoint:
    """What a model folder holds: the UNet folder, its config and the SDE it was trained for."""

    root: Path
    unet_dir: Path
    unet_config: dict[str, Any]
    scheduler_file: Path
    schedule: Schedule
    repo_id: str | None = None
    scheduler_config: dict[str, Any] = field(default_factory=dict)
    """The scheduler config as the folder holds it (``scheduler_config.json``)."""

    @property
    def data_range(self) -> tuple[float, float]:
        """DDPM-family and flow-matching pipelines sample in [−1, 1] (``image / 2 + 0.5``);
        score-SDE VE in [0, 1]."""
        return (0.0, 1.0) if self.schedule.sde == "ve" else (-1.0, 1.0)

    @property
    def data_shape(self) -> tuple[int, int, int]:
        size = self.unet_config.get("sample_size")
        h, w = (size, size) if isinstance(size, int) else tuple(size or (0, 0))
        return (int(self.unet_config.get("in_channels", 3)), int(h), int(w))


# -- finding the folder ------------------------------------------------------------------------
def resolve(location: str) -> tuple[Path, str | None]:
    """A local folder for ``location``: the folder itself, or a cached hub snapshot (offline)."""
    path = Path(location).expanduser()
    if path.exists():
        if not path.is_dir():
            raise BenchError(f"diffusers model {location!r} is a file; pass the model's folder")
        return path, None
    if not _REPO_ID.match(location):
        raise BenchError(f"diffusers model folder {location!r} does not exist")
    return Path(cached_snapshot(location)), location


def hub_cache_dir() -> str | None:
    """The Hugging Face cache to search: ``HF_HUB_CACHE`` at call time, else the library's."""
    return os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or None


def cached_snapshot(repo_id: str) -> str:
    """The cached snapshot folder of ``repo_id``; never downloads (``local_files_only``)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError as exc:
        raise BenchError(
            f"looking up {repo_id!r} in the Hugging Face cache needs "
            f"huggingface_hub, installed with diffusers: {INSTALL_HINT} ({exc})"
        ) from None
    cache = hub_cache_dir() or HF_HUB_CACHE
    try:
        return snapshot_download(repo_id, cache_dir=cache, local_files_only=True)
    except Exception as exc:  # LocalEntryNotFoundError and friends: all mean "not cached"
        raise BenchError(
            f"{repo_id!r} is neither a folder nor a model in the local Hugging Face cache "
            f"({cache}); nothing is downloaded: pass the model's folder, or fetch it yourself "
            f"first (hf download {repo_id}) [{type(exc).__name__}]"
        ) from None


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``; a clear error otherwise."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchError(f"{path}: not a readable {what} ({exc})") from None
    if not isinstance(data, dict):
        raise BenchError(f"{path}: {what} is not a JSON object")
    return data


def find_parts(root: Path) -> tuple[Path, Path | None]:
    """(UNet folder, scheduler config file or None) for a pipeline or bare UNet folder."""
    if (root / "model_index.json").is_file():
        return _pipeline_parts(root, read_json(root / "model_index.json", "model_index.json"))
    if (root / "config.json").is_file():
        return root, _scheduler_near(root)
    if (root / "unet" / "config.json").is_file():
        return root / "unet", _first_file(root / "scheduler" / "scheduler_config.json")
    raise BenchError(
        f"{root}: not a diffusers model folder (no model_index.json, config.json "
        "or unet/config.json)"
    )


def _pipeline_parts(root: Path, index: dict[str, Any]) -> tuple[Path, Path | None]:
    """The UNet2DModel and scheduler sub-folders named in a pipeline's model_index.json."""
    parts = {
        k: v[1]
        for k, v in index.items()
        if isinstance(v, list) and len(v) == 2 and isinstance(v[1], str)
    }
    unets = [k for k, cls in parts.items() if cls == UNET_CLASS]
    if not unets:
        found = ", ".join(f"{k}={cls}" for k, cls in parts.items()) or "nothing"
        raise BenchError(
            f"{root}: the pipeline has no {UNET_CLASS} (model_index.json lists "
            f"{found}); only unconditional UNet2DModel pipelines are supported"
        )
    unet_dir = root / unets[0]
    if not (unet_dir / "config.json").is_file():
        raise BenchError(f"{unet_dir}: no config.json")
    schedulers = [k for k, cls in parts.items() if cls.endswith("Scheduler")]
    sched = _first_file(*(root / k / "scheduler_config.json" for k in schedulers))
    return unet_dir, sched


def _scheduler_near(unet_dir: Path) -> Path | None:
    """scheduler_config.json beside the UNet, in ../scheduler/ or in the parent folder."""
    return _first_file(
        unet_dir / "scheduler_config.json",
        unet_dir.parent / "scheduler" / "scheduler_config.json",
        unet_dir.parent / "scheduler_config.json",
    )


def _first_file(*paths: Path) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


# -- reading the configs -------------------------------------------------------------------------
def read_checkpoint(location: str) -> Checkpoint:
    """Resolve ``location``, find the UNet and scheduler configs, and map them to an SDE."""
    root, repo_id = resolve(location)
    unet_dir, sched_file = find_parts(root)
    unet_cfg = read_json(unet_dir / "config.json", "UNet config")
    check_unet(unet_cfg, unet_dir)
    if sched_file is None:
        raise BenchError(
            f"{unet_dir}: no scheduler config (looked for scheduler_config.json beside "
            "config.json, in ../scheduler/ and in the parent folder); the noise schedule the "
            "model was trained with cannot be guessed: add the scheduler_config.json it came with"
        )
    sched_cfg = read_json(sched_file, "scheduler config")
    schedule = map_schedule(sched_cfg, sched_file)
    check_pairing(unet_cfg, schedule, unet_dir)
    return Checkpoint(root, unet_dir, unet_cfg, sched_file, schedule, repo_id, sched_cfg)


def check_unet(cfg: dict[str, Any], unet_dir: Path) -> None:
    """Refuse UNets that are not same-channel UNet2DModels, unconditional or conditioned on a
    class embedding table (``num_class_embeds``)."""
    cls = cfg.get("_class_name", UNET_CLASS)
    if cls != UNET_CLASS:
        raise BenchError(f"{unet_dir}: model class {cls!r} is not supported (only {UNET_CLASS})")
    if cfg.get("class_embed_type") is not None:
        raise BenchError(
            f"{unet_dir}: class_embed_type {cfg['class_embed_type']!r} is not supported (only "
            f"a num_class_embeds table of class labels)"
        )
    if cfg.get("out_channels", 3) != cfg.get("in_channels", 3):
        raise BenchError(
            f"{unet_dir}: out_channels {cfg.get('out_channels')} != in_channels "
            f"{cfg.get('in_channels')} (learned-variance outputs are not supported)"
        )
    if not cfg.get("sample_size"):
        raise BenchError(f"{unet_dir}: config.json has no sample_size (the image size)")


def map_schedule(cfg: dict[str, Any], path: Path) -> Schedule:
    """The SDE a scheduler config describes: DDPM linear β → VP, ScoreSdeVeScheduler → VE,
    a flow-matching scheduler (:data:`FLOW_SCHEDULERS`) → flow."""
    cls = cfg.get("_class_name", "?")
    if cls == VE_SCHEDULER:
        return _ve_schedule(cfg, path)
    if cls in FLOW_SCHEDULERS:
        return _flow_schedule(cfg, path, cls)
    if cfg.get("prediction_type") == FLOW_PREDICTION or cfg.get("use_flow_sigmas"):
        raise BenchError(
            f"{path}: {cls} with flow sigmas (use_flow_sigmas, prediction_type "
            f"{FLOW_PREDICTION!r}) is not supported: a flow-matching folder needs a "
            f"{' or '.join(FLOW_SCHEDULERS)} config"
        )
    if "beta_schedule" in cfg:
        return _vp_schedule(cfg, path, cls)
    raise BenchError(
        f"{path}: scheduler {cls!r} is not understood: expected a DDPM-family "
        f"config (beta_schedule, beta_start, beta_end), {VE_SCHEDULER} or "
        f"{' or '.join(FLOW_SCHEDULERS)}"
    )


def _number(cfg: dict[str, Any], key: str, path: Path, default: float | None = None) -> float:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BenchError(f"{path}: {key} must be a number, got {value!r}")
    return float(value)


def _vp_schedule(cfg: dict[str, Any], path: Path, cls: str) -> VPSchedule:
    schedule = cfg.get("beta_schedule")
    if schedule != "linear":
        raise BenchError(
            f"{path}: beta_schedule {schedule!r} has no VP SDE counterpart (only "
            "'linear' matches the VP SDE's linear β(t))"
        )
    if cfg.get("trained_betas") is not None:
        raise BenchError(
            f"{path}: explicit trained_betas are not supported (need the linear "
            "beta_start … beta_end schedule)"
        )
    if cfg.get("rescale_betas_zero_snr"):
        raise BenchError(
            f"{path}: rescale_betas_zero_snr changes the schedule; it has no VP SDE counterpart"
        )
    prediction = cfg.get("prediction_type", "epsilon")  # configs before diffusers 0.8 lack it
    if prediction not in PREDICTION_TYPES:
        raise BenchError(
            f"{path}: prediction_type {prediction!r} is not understood "
            f"(supported: {', '.join(PREDICTION_TYPES)})"
        )
    timestep_type = cfg.get("timestep_type", "discrete")
    if timestep_type not in TIMESTEP_TYPES:
        raise BenchError(
            f"{path}: timestep_type {timestep_type!r} is not understood "
            f"(supported: {', '.join(TIMESTEP_TYPES)})"
        )
    start, end = _number(cfg, "beta_start", path), _number(cfg, "beta_end", path)
    n = int(_number(cfg, "num_train_timesteps", path))
    if not (0 < start < end < 1 and n >= 2):
        raise BenchError(
            f"{path}: need 0 < beta_start < beta_end < 1 and num_train_timesteps "
            f">= 2, got {start}, {end}, {n}"
        )
    return VPSchedule(start, end, n, prediction, cls, timestep_type)


def _ve_schedule(cfg: dict[str, Any], path: Path) -> VESchedule:
    lo, hi = _number(cfg, "sigma_min", path), _number(cfg, "sigma_max", path)
    if not 0 < lo < hi:
        raise BenchError(f"{path}: need 0 < sigma_min < sigma_max, got {lo}, {hi}")
    snr = cfg.get("snr")
    n = cfg.get("num_train_timesteps")
    return VESchedule(
        lo,
        hi,
        int(n) if isinstance(n, int) else 0,
        float(snr) if isinstance(snr, (int, float)) else None,
        VE_SCHEDULER,
    )


def _flow_schedule(cfg: dict[str, Any], path: Path, cls: str) -> FlowSchedule:
    """A flow-matching config: the keys that change what the network means are checked (a
    ``prediction_type`` other than the velocity, ``invert_sigmas``); the σ-grid settings
    (``shift``, ``shift_terminal``, Karras/exponential/beta sigmas, ``stochastic_sampling``) are
    the sampler's and reach ``--samplers diffusers:CLASS`` through the folder's config."""
    prediction = cfg.get("prediction_type", FLOW_PREDICTION)
    if prediction != FLOW_PREDICTION:
        raise BenchError(
            f"{path}: prediction_type {prediction!r} does not fit {cls} (a flow-matching "
            f"model predicts the velocity z − x0; {FLOW_PREDICTION!r} or no key)"
        )
    if cfg.get("invert_sigmas"):
        raise BenchError(
            f"{path}: invert_sigmas=true (Mochi's convention: σ runs from 0 at the noise to 1 at "
            "the data) is not the flow SDE's x_t = (1 − t)·x0 + t·z; it is not supported"
        )
    n = cfg.get("num_train_timesteps", 1000)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise BenchError(f"{path}: num_train_timesteps must be a positive integer, got {n!r}")
    shift = _number(cfg, "shift", path, default=1.0)
    if shift <= 0:
        raise BenchError(f"{path}: shift must be positive, got {shift}")
    return FlowSchedule(n, shift, cls, bool(cfg.get("use_dynamic_shifting", False)))


def check_pairing(unet_cfg: dict[str, Any], schedule: Schedule, unet_dir: Path) -> None:
    """The time embedding must fit the schedule: Fourier(log σ) for VE, positional for VP and
    flow."""
    embedding = unet_cfg.get("time_embedding_type", "positional")
    want = "fourier" if schedule.sde == "ve" else "positional"
    if embedding != want:
        what = {
            "ve": "an NCSN++ VE model (label σ(t))",
            "vp": "a DDPM model (label t·(N−1))",
            "flow": "a flow-matching model (label σ·N)",
        }
        raise BenchError(
            f"{unet_dir}: time_embedding_type {embedding!r} does not fit "
            f"{what[schedule.sde]}; expected {want!r} with a {schedule.scheduler} "
            "config"
        )

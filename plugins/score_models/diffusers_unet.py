"""Pretrained diffusers ``UNet2DModel`` checkpoints as score models, offline.

``--model diffusers:PATH_OR_ID[,label=sigma|index|time][,quantize=true][,std=discrete|continuous]``
(each setting is also ``-o diffusers.KEY=...``). DDPM models (``google/ddpm-cifar10-32``) serve
the VP SDE, NCSN++ models (``google/ncsnpp-*``) the VE SDE and flow-matching models the ``flow``
SDE, with the reference code's conversions from network output to score (Song et al. 2021, §3.3
and App. C; the reference code's get_score_fn):

* VP (DDPM, trained on the integer timesteps of a noise table σ_k): by default (``label=sigma``)
  the network is evaluated at the timestep whose noise level is the state's, σ̃(t) = std(t)/a(t):
  exactly k where σ̃(t) = σ_k, linear in log σ between two entries (k-diffusion's
  discrete-schedule rule), or the nearest entry with ``quantize=true``
  (:mod:`bench_plugins.score_models.diffusers_timesteps`); s = −ε̂/std(t). ``label=index``:
  k = floor(t·(N−1)) with s = −ε̂ / sqrt(1 − ᾱ_k) (``std=discrete``; at N = 1000 on the uniform
  grid the suite's ancestral sampler then reproduces DDPM's own); ``label=time``: t·(N−1)
  unrounded, as the score_sde reference code feeds it; ``std=continuous`` divides by the VP
  SDE's std(t) = sqrt(1 − e^{2L(t)}) instead.
* VP outputs: with the state's own std(t) (``std=continuous``, which ``label=sigma`` implies) the
  network's output is the model's native output as its ``prediction_type`` names it: ε̂
  (``epsilon``), Salimans & Ho's v = a·ε − std·x₀ (``v_prediction``; 2022, §4) or x̂₀
  (``sample``), and :class:`~bench.core.views.ModelView` converts it to every other view (score,
  ε, x₀, v, velocity) without another network call. With the training table's discrete std
  (``label=index|time``) it is converted to the score here, with that table's ᾱ_k.
* VP with ``EulerDiscreteScheduler(timestep_type="continuous", prediction_type="v_prediction")``:
  the network was trained on c_noise = ¼·log σ (Karras et al. 2022, Table 1), σ = std(t)/a(t),
  so that is its label, with the SDE's continuous a(t) and std(t).
* VE (NCSN++, continuous): label σ(t); ``UNet2DModel`` with ``time_embedding_type="fourier"``
  divides its output by that label itself, so the output is the score. The scheduler's ``snr``
  becomes the model's default ``--snr`` (recorded in the rows' ``model_defaults``).
* flow (a ``FlowMatchEulerDiscreteScheduler`` or ``FlowMatchHeunDiscreteScheduler`` config):
  diffusers' σ is the flow SDE's t (x = (1 − t)·x₀ + t·z), the label is t·N
  (``timesteps = sigmas * num_train_timesteps``) and the output is the velocity z − x₀: the
  model's native ``velocity`` (Lipman et al. 2022, Eq. 9; Esser et al. 2024, §2).

A VP model's smallest time eps is 1/N, the time of the first of its N training timesteps
(``sde_defaults``; ``--eps`` wins); a flow model keeps the flow SDE's 10⁻³. The folder's
scheduler config is the model's ``scheduler_config``: ``--samplers diffusers:CLASS`` starts
from it, as a diffusers user does.

A class-conditional UNet (``num_class_embeds`` in its config) takes each sample's class from
``bench run --labels``. diffusers has no convention for a null label: give it as
``-o diffusers.null_class=K`` (the last embedding, ``num_class_embeds − 1``, which the classes
then exclude) if the network was trained with label dropout to it; without it a guidance scale
other than 1 is ``unsupported``.

diffusers is an optional extra; it is imported only when a model is loaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from bench_plugins.score_models import diffusers_folder as folder
from bench_plugins.score_models.diffusers_folder import INSTALL_HINT, Checkpoint
from bench_plugins.score_models.diffusers_settings import (
    SETTINGS,
    merge_settings,
    native_output,
    parse_arg,
    vp_settings,
)
from bench_plugins.score_models.diffusers_timesteps import (
    TimestepTable,
    diffusers_alphas_cumprod,
)
from torch import Tensor

from bench.core.model import ScoreModel
from bench.core.sde import SDE, ScoreFn
from bench.core.views import ModelFn
from bench.errors import BenchError, Unsupported

SAFE_NAME, SAFE_INDEX = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.safetensors.index.json",
)
BIN_NAME, BIN_INDEX = "diffusion_pytorch_model.bin", "diffusion_pytorch_model.bin.index.json"


def import_diffusers():
    """The diffusers module, with the hub offline; a one-line install hint if it is missing."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import diffusers
    except ImportError as exc:
        raise BenchError(
            f"the diffusers score model needs the optional diffusers package: "
            f"{INSTALL_HINT} ({exc})"
        ) from None
    return diffusers


def loaded_weight_files(unet_dir: Path) -> tuple[bool, list[Path]]:
    """(use_safetensors, the files ``from_pretrained`` reads) for a UNet folder with no variant.

    diffusers reads ``diffusion_pytorch_model.safetensors`` (or the shards its ``.index.json``
    names) and only without those the ``.bin`` counterparts; variant files such as
    ``diffusion_pytorch_model.fp16.safetensors`` are not read unless a variant is asked for,
    which this plugin never does.
    """
    for safe, single, index in ((True, SAFE_NAME, SAFE_INDEX), (False, BIN_NAME, BIN_INDEX)):
        if (unet_dir / index).is_file():
            return safe, _shards(unet_dir, unet_dir / index)
        if (unet_dir / single).is_file():
            return safe, [unet_dir / single]
    others = sorted(p.name for p in (*unet_dir.glob("*.safetensors"), *unet_dir.glob("*.bin")))
    if others:
        raise BenchError(
            f"{unet_dir}: no {SAFE_NAME} or {BIN_NAME}, only variant weights "
            f"({', '.join(others[:3])}); copy or rename the variant you want to {SAFE_NAME}"
        )
    raise BenchError(f"{unet_dir}: no weights ({SAFE_NAME} or {BIN_NAME})")


def _shards(unet_dir: Path, index: Path) -> list[Path]:
    """The shard files a sharded checkpoint's index names, in order of first mention."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        names = list(dict.fromkeys(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BenchError(f"{index}: not a readable shard index ({exc})") from None
    files = [unet_dir / name for name in names]
    missing = [f.name for f in files if not f.is_file()]
    if missing or not files:
        raise BenchError(f"{index}: shard files missing: {', '.join(missing) or '(none listed)'}")
    return files


def check_bin_is_weights_only(path: Path) -> None:
    """Refuse a pickled .bin that ``torch.load(weights_only=True)`` rejects (code, not tensors)."""
    from bench.checkpoints import load_state_dict

    load_state_dict(path, what="UNet weights")


def load_unet(unet_dir: Path, device: torch.device, dtype: torch.dtype):
    """``UNet2DModel.from_pretrained`` from a local folder: safetensors first, no network.

    diffusers ≥ 0.25 loads .bin files with ``weights_only=True`` itself
    (``models/model_loading_utils.py::load_state_dict``); we check each .bin first anyway.
    Missing or mismatched weights are an error, never a silently random layer; weights the
    config does not use are ignored with a warning.
    """
    diffusers = import_diffusers()
    safe, files = loaded_weight_files(unet_dir)
    if not safe:
        for path in files:
            check_bin_is_weights_only(path)
    try:
        unet, info = diffusers.UNet2DModel.from_pretrained(
            str(unet_dir),
            local_files_only=True,
            use_safetensors=safe,
            torch_dtype=dtype,
            low_cpu_mem_usage=False,
            output_loading_info=True,
        )
    except (OSError, ValueError, RuntimeError, TypeError, KeyError) as exc:
        message = " ".join(str(exc).split())
        message = message if len(message) <= 300 else message[:300] + " …"
        raise BenchError(f"{unet_dir}: diffusers could not load the UNet ({message})") from None
    bad = {k: v for k, v in info.items() if v and k != "unexpected_keys"}
    if info.get("unexpected_keys"):
        warnings.warn(
            f"{unet_dir}: {len(info['unexpected_keys'])} weights the config does not use "
            f"were ignored ({', '.join(info['unexpected_keys'][:5])} …)",
            stacklevel=2,
        )
    if bad:
        found = "; ".join(f"{k}: {', '.join(map(str, v))[:200]}" for k, v in bad.items())
        raise BenchError(f"{unet_dir}: weights do not match the config ({found})")
    return unet.to(device).eval().requires_grad_(False)


class DiffusersUNet(ScoreModel):
    """diffusers UNet2DModel folder or cached hub id (DDPM → VP, NCSN++ → VE, flow matching →
    flow), offline."""

    name = "diffusers"

    @dataclasses.dataclass
    class Options:
        """The VP settings, also written ``diffusers:PATH,label=...,quantize=...,std=...``
        (``None``: the ARG's value, else the default: ``label=sigma`` without quantisation;
        ``std=discrete`` with ``label=index|time``)."""

        std: str | None = None
        label: str | None = None
        quantize: bool | None = None
        null_class: int | None = None
        """A conditional UNet's null label (its last class embedding), if it was trained with one."""

        def __post_init__(self) -> None:
            for key, choices in SETTINGS.items():
                value = getattr(self, key)
                if key == "quantize":
                    if value is not None and not isinstance(value, bool):
                        raise ValueError(f"quantize must be true or false, got {value!r}")
                elif value is not None and value not in choices:
                    raise ValueError(f"{key} must be one of {', '.join(choices)}, got {value!r}")

    def __init__(
        self,
        unet: torch.nn.Module,
        checkpoint: Checkpoint,
        spec: str,
        std: str,
        device: torch.device,
        dtype: torch.dtype,
        label: str = "sigma",
        quantize: bool = False,
    ) -> None:
        self.unet = unet
        self.checkpoint = checkpoint
        self.schedule = checkpoint.schedule
        self.spec = spec
        self.std = std
        self.native = native_output(self.schedule, std)
        self.label = label
        self.quantize = quantize
        self.device = device
        self.dtype = dtype
        self.label_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        self.trained_for = self.schedule.sde
        self.sde_defaults = {self.trained_for: self.schedule.sde_options()}
        self.scheduler_config = dict(checkpoint.scheduler_config)
        self.data_shape = checkpoint.data_shape
        self.dataset = None
        if isinstance(self.schedule, folder.VPSchedule):
            s = self.schedule
            self.sde_defaults["vp"]["eps"] = 1.0 / s.n_train  # the first training timestep
            self._alphas_cumprod = s.alphas_cumprod()
            table = diffusers_alphas_cumprod(s.beta_start, s.beta_end, s.n_train)
            self.timesteps = TimestepTable.from_alphas_cumprod(table)
        snr = getattr(self.schedule, "snr", None)
        self.default_grid = {"snrs": (snr,)} if snr is not None else {}
        self._weights_sha256: str | None = None

    @classmethod
    def load(
        cls,
        arg: str | None,
        *,
        device: torch.device,
        dtype: torch.dtype,
        options: DiffusersUNet.Options | None = None,
    ) -> ScoreModel:
        location, settings = parse_arg(arg)
        settings = merge_settings(settings, options)
        import_diffusers()
        checkpoint = folder.read_checkpoint(location)
        std, label, quantize = vp_settings(settings, checkpoint.schedule, location)
        unet = load_unet(checkpoint.unet_dir, device, dtype)
        model = cls(unet, checkpoint, f"diffusers:{arg}", std, device, dtype, label, quantize)
        model.set_classes(options.null_class if options is not None else None)
        return model

    def set_classes(self, null_class: int | None) -> None:
        """A class-conditional UNet's classes, and its null label if ``null_class`` names one."""
        embeds = self.checkpoint.unet_config.get("num_class_embeds")
        self.class_labels: Tensor | None = None  # the batch's, while a conditional call runs
        if not embeds:
            if null_class is not None:
                raise BenchError(f"{self.spec}: null_class is for class-conditional UNets only")
            return
        if null_class is not None and null_class != embeds - 1:
            raise BenchError(
                f"{self.spec}: null_class must be the last class embedding ({embeds - 1})"
            )
        self.classes = embeds - 1 if null_class is not None else embeds
        self.null_label = null_class is not None
        self.null_label_reason = "no null class was given (-o diffusers.null_class=K)"

    def conditional_fn(self, sde: SDE) -> Any:
        """The native output with a class per sample (NULL_LABEL: ``null_class``)."""
        fn = self.native_fn(sde)

        def conditional(x: Tensor, t: float, labels: Tensor) -> Tensor:
            self.class_labels = labels.where(labels >= 0, self.classes)
            try:
                return fn(x, t)
            finally:
                self.class_labels = None

        return conditional

    # -- the SDE the model serves ------------------------------------------------------------
    def check_sde(self, sde: SDE) -> None:
        """Only the SDE the model was trained for, with the same σ or β range (rel. tol. 1e-6);
        eps is free (1/N is only the default)."""
        super().check_sde(sde)
        wanted = self.schedule.sde_options()
        got = {key: getattr(sde, key) for key in wanted}
        if any(not math.isclose(got[k], v, rel_tol=1e-6) for k, v in wanted.items()):
            fix = " ".join(f"-o {sde.name}.{k}={v:.10g}" for k, v in wanted.items())
            have = ", ".join(f"{k}={v:.10g}" for k, v in got.items())
            want = ", ".join(f"{k}={v:.10g}" for k, v in wanted.items())
            raise Unsupported(f"model {self.spec!r} was trained with {want}, not {have}: {fix}")

    def native_fn(self, sde: SDE) -> ModelFn:
        """The network's output as ``native`` names it, for ``sde`` (which must pass
        :meth:`check_sde`): one network call per call.

        The network's own output where the views' conversions use the state's own noise level:
        ε̂, v̂ or x̂₀ of a VP model with ``std=continuous`` (which ``label=sigma`` implies), so the
        ε (v, x₀) view *is* the network's prediction, as a diffusers scheduler receives it; the
        velocity of a flow model. The score otherwise (VE, and VP with the discrete std of the
        training table).
        """
        self.check_sde(sde)
        if self.trained_for == "ve":
            return self._ve_score()
        if self.trained_for == "flow":
            return self._flow_velocity()
        return self._vp_output(sde) if self.native != "score" else self._vp_score(sde)

    def score_fn(self, sde: SDE) -> ScoreFn:
        """s(x, t) for ``sde``: the native score, or the score view of the native ε̂, v̂, x̂₀ or
        velocity (e.g. −ε̂/std(t))."""
        return self.native_fn(sde) if self.native == "score" else self.view(sde).score

    # -- network output → score (Song et al. 2021, §3.3 and App. C; the reference code's get_score_fn) ------------------------------------------
    @torch.no_grad()
    def network(self, x: Tensor, label: float) -> Tensor:
        """The UNet's output for the batch x at one real-valued label (as a float tensor).

        A Python number would be cast to ``torch.long`` by ``UNet2DModel.forward``, truncating
        the label, so it is always passed as a tensor.
        """
        labels = torch.full((x.shape[0],), label, dtype=self.label_dtype, device=x.device)
        classes = getattr(self, "class_labels", None)
        return self.unet(x.to(self.dtype), labels, class_labels=classes, return_dict=False)[0]

    def vp_label(self, sde: SDE, t: float) -> float:
        """The VP network's label at time t (see the module docstring).

        ``sigma``: the timestep of the state's noise level σ̃(t) = e^{−λ(t)} in the training
        table (exact on its entries, log-σ interpolated or ``quantize``d between them);
        ``index``: k = floor(t·(N_train − 1)), the DDPM timestep whose ᾱ_k the discrete std
        uses; ``time``: t·(N_train − 1) unrounded (the score_sde reference's discrete-VP label);
        continuous-label (EDM-style) networks: ¼·log(std(t)/a(t)).
        """
        if self.schedule.continuous_labels:
            a, std = sde.marginal_coef(t)
            return 0.25 * math.log(std / a)
        if self.label == "sigma":
            return self.timesteps.timestep(-sde.log_snr(t), self.quantize)
        n = self.schedule.n_train
        if self.label == "time":
            return t * (n - 1)
        return float(min(max(int(math.floor(t * (n - 1) + 1e-9)), 0), n - 1))

    def vp_coefficients(self, sde: SDE, t: float) -> tuple[float, float]:
        """(a, std) of x_t = a·x_0 + std·ε at time t, from the training table or the SDE.

        Discrete (the default of ``label=index|time``): ᾱ_k with k = floor(t·(N_train − 1)),
        a = sqrt(ᾱ_k), std = sqrt(1 − ᾱ_k) — the reference's discrete-VP conversion.
        Continuous (always with ``label=sigma``): the state's own noise level, the VP SDE's
        marginal a(t) = e^{L(t)}, std(t) = sqrt(1 − e^{2L(t)}).
        """
        if self.std == "continuous":
            return sde.marginal_coef(t)
        n = self.schedule.n_train
        k = min(max(int(math.floor(t * (n - 1) + 1e-9)), 0), n - 1)
        alpha_bar = self._alphas_cumprod[k]
        return math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)

    def _vp_score(self, sde: SDE) -> ScoreFn:
        prediction = self.schedule.prediction_type

        def score(x: Tensor, t: float) -> Tensor:
            a, std = self.vp_coefficients(sde, t)
            out = self.network(x, self.vp_label(sde, t)).to(x.dtype)
            return prediction_to_score(prediction, out, x, a, std)

        return score

    def _vp_output(self, sde: SDE) -> ModelFn:
        """ε̂, v̂ or x̂₀ as the network outputs it (``native``)."""

        def output(x: Tensor, t: float) -> Tensor:
            return self.network(x, self.vp_label(sde, t)).to(x.dtype)

        return output

    def _flow_velocity(self) -> ModelFn:
        """The velocity z − x₀ at the flow SDE's time t = σ, label σ·N."""
        schedule = self.schedule
        assert isinstance(schedule, folder.FlowSchedule)

        def velocity(x: Tensor, t: float) -> Tensor:
            return self.network(x, schedule.label(t)).to(x.dtype)

        return velocity

    def _ve_score(self) -> ScoreFn:
        def score(x: Tensor, t: float) -> Tensor:
            return self.network(x, self.schedule.sigma(t)).to(x.dtype)

        return score

    def compile(self, mode: str) -> None:
        """``torch.compile`` the UNet (``reduce-overhead`` captures CUDA graphs)."""
        self.unet = torch.compile(self.unet, mode=None if mode == "default" else mode)

    # -- data space ------------------------------------------------------------------------
    def to_data(self, x: Tensor) -> Tensor:
        """Images in [0, 1] (unclipped): (x + 1)/2 for DDPM's [−1, 1], x for VE's [0, 1]."""
        lo, hi = self.checkpoint.data_range
        return x if (lo, hi) == (0.0, 1.0) else (x - lo) / (hi - lo)

    def weights_sha256(self) -> str:
        """sha256 of the weight file that is loaded (``sha256sum`` of it), or of the shards a
        sharded checkpoint's index names, concatenated in order; variants are never hashed.
        Computed once."""
        if self._weights_sha256 is None:
            _, files = loaded_weight_files(self.checkpoint.unet_dir)
            digest = hashlib.sha256()
            for path in files:
                with path.open("rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(block)
            self._weights_sha256 = digest.hexdigest()
        return self._weights_sha256

    def describe(self) -> dict[str, Any]:
        c, s = self.checkpoint, self.schedule
        out = {
            **super().describe(),
            "folder": str(c.root),
            "repo_id": c.repo_id,
            "unet": str(c.unet_dir),
            "scheduler_config": str(c.scheduler_file),
            "scheduler": s.scheduler,
            "prediction_type": s.prediction_type,
            "sde_options": s.sde_options(),
            "data_range": list(c.data_range),
            "center_input_sample": bool(c.unet_config.get("center_input_sample", False)),
            "time_embedding_type": c.unet_config.get("time_embedding_type", "positional"),
            "weights_sha256": self.weights_sha256(),
            "dtype": str(self.dtype).removeprefix("torch."),
            "parameters": sum(p.numel() for p in self.unet.parameters()),
            "diffusers": import_diffusers().__version__,
        }
        if isinstance(s, folder.VPSchedule):
            out |= {"n_train": s.n_train, "label": self.label_convention(), "std": self.std}
            out |= {"quantize": self.quantize, "eps_default": 1.0 / s.n_train}
            out |= {"timestep_type": s.timestep_type, "native": self.native}
        elif isinstance(s, folder.FlowSchedule):
            out |= {"n_train": s.n_train, "label": self.label_convention(), "native": self.native}
            out |= {"shift": s.shift, "use_dynamic_shifting": s.use_dynamic_shifting}
        else:
            out |= {"label": "sigma(t)", "snr": s.snr}
        out["weight_files"] = [p.name for p in loaded_weight_files(c.unet_dir)[1]]
        return out

    def label_convention(self) -> str:
        """The VP label as a formula: ``timestep(sigma(t))`` (log-σ interpolated or
        ``nearest``), ``floor(t*999)``, ``t*999`` or ``0.25*log(sigma(t))``; a flow model's
        ``t*1000``."""
        if isinstance(self.schedule, folder.FlowSchedule):
            n = self.schedule.n_train
            return f"t*{n} (diffusers' timestep sigma*{n}, sigma = t)"
        if self.schedule.continuous_labels:
            return "0.25*log(sigma(t))"
        if self.label == "sigma":
            rule = "nearest" if self.quantize else "log-sigma interpolated"
            return f"timestep(sigma(t)) in the {self.schedule.n_train}-step table, {rule}"
        n1 = self.schedule.n_train - 1
        return f"t*{n1}" if self.label == "time" else f"floor(t*{n1})"


def prediction_to_score(prediction: str, out: Tensor, x: Tensor, a: float, std: float) -> Tensor:
    """Score from a VP network output, with x_t = a·x_0 + std·ε and a² + std² = 1.

    ε-prediction: s = −ε̂/std (Song et al. 2021, §3.3 and App. C; the reference code's get_score_fn). v-prediction (v = a·ε − std·x_0):
    ε̂ = a·v̂ + std·x_t. x_0-prediction ("sample"): s = −(x_t − a·x̂_0)/std².
    """
    if prediction == "epsilon":
        return out * (-1.0 / std)
    if prediction == "v_prediction":
        return (out * a + x * std) * (-1.0 / std)
    if prediction == "sample":
        return (x - out * a) * (-1.0 / std**2)
    raise BenchError(f"prediction_type {prediction!r} is not understood")


MODELS = (DiffusersUNet,)

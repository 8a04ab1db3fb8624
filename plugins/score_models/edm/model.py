"""EDM's network pickles as a score model: ``--model edm:PATH.pkl``.

Karras, Aittala, Aila and Laine, "Elucidating the Design Space of Diffusion-Based Generative
Models" (NeurIPS 2022), publish denoisers D(x; σ) for data x_σ = y + σ·n: the VP and VE models of
Song et al. (2021, "Score-Based Generative Modeling through Stochastic Differential Equations",
ICLR) retrained in their preconditioned form, and their own EDM models (Table 1). The pickle is
read by :func:`~bench_plugins.score_models.edm.load_edm` without executing anything in it.

The model's native output is the denoiser (``x0``). The suite's SDEs write
x_t = a(t)·x_0 + std(t)·z; dividing by a(t) gives EDM's x_σ with σ = std(t)/a(t) (their Eq. 7–8),
so

    D_suite(x, t) = D_edm(x / a(t); σ = std(t) / a(t)).

Each preconditioner maps onto the SDE it was trained for:

* ``VPPrecond`` → the VP SDE with β_min and β_max = β_min + β_d: EDM's
  σ(t) = sqrt(exp(½β_d t² + β_min t) − 1) is exactly the VP SDE's std(t)/a(t), so the network
  sees the σ it was trained on at the same t (its label is 999·σ⁻¹(σ) = 999·t).
* ``VEPrecond`` → the VE SDE with the pickle's σ_min and σ_max.
* ``EDMPrecond`` → the ``edm`` SDE (σ(t) = t, a = 1) with T = min(σ_max, 80) and
  eps = max(σ_min, 0.002), EDM's own sampling range.

Data are in [−1, 1]; :meth:`EdmModel.to_data` maps them to [0, 1].

Class-conditional networks (``label_dim > 0``) are conditional models: in ``bench run`` each
sample gets its class from ``--labels`` (a one-hot vector, as EDM's ``class_labels``) and
``--guidance`` combines the conditional and unconditional outputs. EDM drops labels to the
all-zero vector during training with probability ``label_dropout`` (its networks' argument), so
a network pickled with ``label_dropout > 0`` has the zero vector as its null label; EDM's own
class-conditional models were trained with ``label_dropout = 0``, so for them a guidance scale
other than 1 is ``unsupported``. Where a model function of (x, t) has no labels (``bench
profile``, ``bench likelihood``, ...) the labels are an option, ``-o model.edm.class_label=``:

* ``none`` (default): no labels, which EDMPrecond turns into all-zero one-hot vectors (EDM's own
  behaviour for ``class_labels=None``). This is not sampling from the class-conditional
  distributions: use it for speed, not for FID;
* ``cycle``: row i of every batch gets class i mod label_dim (balanced classes, as fixed as the
  rows: a row keeps its class for the whole trajectory);
* an integer k: every sample gets class k.

The pickled ``use_fp16`` is not applied: the network runs in the precision ``--dtype`` selects
(``--dtype fp16`` or ``bf16`` for half precision under autocast).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
from bench_plugins.score_models.edm.loader import load_edm
from torch import Tensor, nn

from bench.checkpoints import state_sha256
from bench.core.guidance import ConditionalFn
from bench.core.model import ScoreModel
from bench.core.sde import SDE
from bench.core.views import ModelFn
from bench.errors import BenchError, Unsupported

IMAGE_METRICS = ("fid", "kid")
EDM_SIGMA_MIN, EDM_SIGMA_MAX = 0.002, 80.0
"""EDM's sampling range of σ (Karras et al. 2022, Sec. 3 and Table 1)."""


class EdmModel(ScoreModel):
    """EDM network pickle (VP/VE/EDM preconditioner), read without running it: --model edm:PATH.pkl."""

    name = "edm"
    native = "x0"
    default_metrics = IMAGE_METRICS

    @dataclasses.dataclass
    class Options:
        """``class_label``: ``none`` (zero labels), ``cycle`` or a class index (conditional
        networks only; see the module docstring)."""

        class_label: str = "none"

        def __post_init__(self) -> None:
            text = str(self.class_label).strip().lower()
            if text not in ("none", "cycle") and not (text.isdigit()):
                raise ValueError(
                    f"class_label must be none, cycle or a class index, got {self.class_label!r}"
                )
            self.class_label = text

    def __init__(
        self,
        net: nn.Module,
        info: dict[str, Any],
        spec: str,
        *,
        device: torch.device,
        dtype: torch.dtype,
        class_label: str,
        weights_sha256: str,
    ) -> None:
        self.net = net
        self.info = info
        self.spec = spec
        self.device, self.dtype = device, dtype
        self.class_label = class_label
        self.weights_sha256 = weights_sha256
        self.kind = info["kind"]
        self.data_shape = (info["img_channels"], info["img_resolution"], info["img_resolution"])
        self.dataset = None
        self.trained_for = self.kind
        self.sde_defaults = {self.kind: self._sde_options()}
        self._check_labels()
        self.classes = info["label_dim"]
        self.null_label = bool(self.classes) and float(getattr(net.model, "label_dropout", 0)) > 0
        self.null_label_reason = (
            "it was trained with label_dropout = 0 (its pickle's argument), so the all-zero "
            "label is not a learnt unconditional output"
        )

    @classmethod
    def load(
        cls,
        arg: str | None,
        *,
        device: torch.device,
        dtype: torch.dtype,
        options: EdmModel.Options | None = None,
    ) -> ScoreModel:
        options = options if options is not None else cls.Options()
        if not arg:
            raise BenchError(
                "the edm model needs an EDM network pickle: --model edm:PATH/network-snapshot.pkl"
            )
        path = Path(arg).expanduser()
        net, info = load_edm(path, device="cpu", dtype=torch.float32)
        digest = state_sha256(net.state_dict())
        net = net.to(device=device, dtype=dtype)
        return cls(
            net,
            info,
            f"edm:{arg}",
            device=device,
            dtype=dtype,
            class_label=options.class_label,
            weights_sha256=digest,
        )

    def _check_labels(self) -> None:
        label_dim = self.info["label_dim"]
        if self.class_label == "none":
            return
        if label_dim == 0:
            raise BenchError(
                f"{self.spec}: the network is unconditional; drop -o edm.class_label="
                f"{self.class_label}"
            )
        if self.class_label != "cycle" and int(self.class_label) >= label_dim:
            raise BenchError(
                f"{self.spec}: class_label {self.class_label} is not one of the network's "
                f"{label_dim} classes (0 … {label_dim - 1})"
            )

    # -- the SDE the model serves ------------------------------------------------------------
    def _sde_options(self) -> dict[str, float]:
        net, info = self.net, self.info
        if self.kind == "vp":
            return {"beta_min": float(net.beta_min), "beta_max": float(net.beta_min + net.beta_d)}
        if self.kind == "ve":
            return {"sigma_min": info["sigma_min"], "sigma_max": info["sigma_max"]}
        return {
            "sigma_max": min(info["sigma_max"], EDM_SIGMA_MAX),
            "eps": max(info["sigma_min"], EDM_SIGMA_MIN),
        }

    def check_sde(self, sde: SDE) -> None:
        """The preconditioner's SDE: VP and VE with the pickle's β or σ range (rel. tol. 1e-9);
        ``edm`` with any σ range inside the network's [σ_min, σ_max]."""
        super().check_sde(sde)
        if self.kind == "edm":
            lo, hi = sde.eps, sde.T
            s_min, s_max = self.info["sigma_min"], self.info["sigma_max"]
            if lo < s_min * (1 - 1e-9) or hi > s_max * (1 + 1e-9):
                raise Unsupported(
                    f"model {self.spec!r} was trained for σ in [{s_min:g}, {s_max:g}], not "
                    f"[{lo:g}, {hi:g}]: -o sde.edm.eps={max(s_min, EDM_SIGMA_MIN):g} "
                    f"-o sde.edm.sigma_max={min(s_max, EDM_SIGMA_MAX):g}"
                )
            return
        wanted = self.sde_defaults[self.kind]
        got = {key: getattr(sde, key, None) for key in wanted}
        if any(
            got[k] is None or not math.isclose(got[k], v, rel_tol=1e-9) for k, v in wanted.items()
        ):
            fix = " ".join(f"-o {sde.name}.{k}={v:.10g}" for k, v in wanted.items())
            have = ", ".join(f"{k}={v}" for k, v in got.items())
            raise Unsupported(
                f"model {self.spec!r} was trained with "
                f"{', '.join(f'{k}={v:.10g}' for k, v in wanted.items())}, not {have}: {fix}"
            )

    # -- the denoiser --------------------------------------------------------------------------
    def class_labels(self, batch: int, device: torch.device) -> Tensor | None:
        """One-hot labels [batch, label_dim] for the ``class_label`` option (None: zeros)."""
        label_dim = self.info["label_dim"]
        if label_dim == 0 or self.class_label == "none":
            return None
        if self.class_label == "cycle":
            index = torch.arange(batch, device=device) % label_dim
        else:
            index = torch.full((batch,), int(self.class_label), device=device)
        return nn.functional.one_hot(index, label_dim).to(self.dtype)

    def native_fn(self, sde: SDE) -> ModelFn:
        """D(x, t) = D_edm(x / a(t); std(t)/a(t)): the denoised x̂₀ (module docstring)."""
        self.check_sde(sde)

        def fn(x: Tensor, t: float) -> Tensor:
            return self.denoise(sde, x, t, self.class_labels(x.shape[0], x.device))

        return fn

    def conditional_fn(self, sde: SDE) -> ConditionalFn:
        """D(x, t, c) with a one-hot label per sample (NULL_LABEL: the all-zero vector)."""
        self.check_sde(sde)
        label_dim = self.classes

        def fn(x: Tensor, t: float, labels: Tensor) -> Tensor:
            onehot = nn.functional.one_hot(labels.clamp(min=0), label_dim).to(self.dtype)
            onehot = onehot * (labels >= 0).to(self.dtype)[:, None]
            return self.denoise(sde, x, t, onehot)

        return fn

    @torch.no_grad()
    def denoise(self, sde: SDE, x: Tensor, t: float, labels: Tensor | None) -> Tensor:
        """The preconditioned network at x_σ = x/a(t), σ = std(t)/a(t), with one-hot labels."""
        a, std = sde.marginal_coef(t)
        sigma = torch.full((x.shape[0],), std / a, dtype=self.dtype, device=x.device)
        y = x.to(self.dtype)
        if a != 1.0:
            y = y / a
        return self.net(y, sigma, labels, force_fp32=True).to(x.dtype)

    def compile(self, mode: str) -> None:
        """``torch.compile`` the network (``reduce-overhead`` captures CUDA graphs)."""
        self.net = torch.compile(self.net, mode=None if mode == "default" else mode)

    # -- data space ------------------------------------------------------------------------
    def to_data(self, x: Tensor) -> Tensor:
        """Images in [0, 1] (unclipped): EDM's data are in [−1, 1]."""
        return (x + 1) / 2

    def describe(self) -> dict[str, Any]:
        info = self.info
        return {
            **super().describe(),
            "pickle": info["path"],
            "precond": info["precond"],
            "unet": info["model"],
            "sde_options": self.sde_defaults[self.kind],
            "sigma_min": info["sigma_min"],
            "sigma_max": info["sigma_max"],
            "sigma_data": info["sigma_data"],
            "label_dim": info["label_dim"],
            "class_label": self.class_label if info["label_dim"] else None,
            "pickled_use_fp16": info["use_fp16"],
            "parameters": info["num_parameters"],
            "weights_sha256": self.weights_sha256,
            "dtype": str(self.dtype).removeprefix("torch."),
        }


MODELS = (EdmModel,)

"""Training a score network with the continuous denoising score-matching objective.

The loss is Song et al. 2021, Eq. 7 with λ(t) = std(t)²: for t ~ U(ε, 1), z ~ N(0, I) and
x_t = a(t)·x_0 + std(t)·z, the per-sample loss is ‖std(t)·s_θ(x_t, t) + z‖² summed over pixels.
With the parameterisations of Song et al. 2021, App. C (the reference code's get_score_fn) this is ‖f_θ + z‖² for a VE network (output σ·s)
and ‖ε̂_θ − z‖² for a VP/sub-VP noise predictor. A flow network predicts the velocity and is
trained with the conditional flow-matching loss ‖u_θ(x_t, t) − (z − x_0)‖² (Lipman et al. 2022,
Eq. 9), same t, z and batches. Adam with linear warm-up, gradient clipping,
and an exponential moving average of the weights (the EMA weights are the ones saved).

Every step draws its batch, its times and its noise from a generator seeded by (seed, step), so
a run is reproducible bit for bit on CPU and a resumed run continues exactly where it stopped.
Checkpoints hold safetensors only (model, EMA, Adam moments) plus a JSON state.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import bench
from bench.core.dataset import Dataset
from bench.core.noise import derive_seed
from bench.core.sde import SDE
from bench.errors import BenchError
from bench.training import conditional, flow_matching, model_format
from bench.training.unet import UNet, UNetConfig, count_parameters

CHECKPOINT_DIR = "checkpoint"
LOSS_WINDOW = 250
"""Steps averaged for the reported loss (one point of the loss curve, and the final loss)."""

# Fields of TrainConfig that must match to resume a run (steps may grow).
RESUME_KEYS = (
    "dataset",
    "sde",
    "sde_options",
    "batch_size",
    "lr",
    "warmup",
    "grad_clip",
    "ema",
    "seed",
    "t_eps",
    "architecture",
    "label_dropout",
)


@dataclass
class TrainConfig:
    """Everything that determines a training run (recorded in the checkpoint and metadata)."""

    dataset: str = "digits"
    sde: str = "ve"
    sde_options: dict[str, float] = field(default_factory=dict)
    steps: int = 10_000
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 500
    grad_clip: float = 1.0
    ema: float = 0.999
    seed: int = 0
    t_eps: float = 1e-5
    architecture: dict[str, Any] = field(default_factory=dict)
    checkpoint_every: int = 1000
    label_dropout: float = 0.0
    """A conditional network's probability of the null label (Ho & Salimans 2022, p_uncond)."""


@dataclass
class TrainState:
    """The mutable part of a run: weights, optimiser, step and loss bookkeeping."""

    net: UNet
    ema_net: UNet
    optimizer: torch.optim.Adam
    step: int = 0
    window: list[float] = field(default_factory=list)
    curve: list[list[float]] = field(default_factory=list)
    elapsed_s: float = 0.0


# -- data and the objective ------------------------------------------------------------------------
def training_data(dataset: Dataset, p: model_format.Parameterisation) -> tuple[Tensor, str]:
    """The train split (or ``all``) scaled to the sampler's space, and the split's name."""
    split = "train" if "train" in dataset.splits else "all"
    x = dataset.data(split).to(torch.float32)
    if x.ndim != 4 or x.shape[-1] % 2 or x.shape[-2] % 2:
        raise BenchError(
            f"dataset {dataset.spec!r}: need (N, C, H, W) images with even H and W, "
            f"got {tuple(x.shape)}"
        )
    return (2 * x - 1 if p.centered else x), split


def max_pairwise_distance(x: Tensor, limit: int = 2000) -> float:
    """Largest L2 distance between two training points (NCSNv2 Technique 1 for σ_max).

    Beyond ``limit`` points the maximum is taken over a fixed random subset (a lower bound),
    in chunks, so large datasets cost seconds rather than an N×N matrix.
    """
    flat = x.reshape(x.shape[0], -1).to(torch.float64)
    if flat.shape[0] > limit:
        keep = torch.randperm(flat.shape[0], generator=torch.Generator().manual_seed(0))[:limit]
        flat = flat[keep]
    return max(float(torch.cdist(chunk, flat).max()) for chunk in flat.split(256))


def draw_batch(
    data: Tensor, batch_size: int, seed: int, step: int, t_eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """(x_0, t, z) of one step, from a CPU generator seeded by (seed, step) alone."""
    _, idx, t, z = draw_step(data, batch_size, seed, step, t_eps)
    return data[idx.to(data.device)], t, z


def draw_step(
    data: Tensor, batch_size: int, seed: int, step: int, t_eps: float
) -> tuple[torch.Generator, Tensor, Tensor, Tensor]:
    """The generator of one step and its draws: image indices, t and z (later draws, such as a
    conditional run's labels, continue from the generator)."""
    gen = torch.Generator().manual_seed(derive_seed(seed, 1, step))
    n = data.shape[0]
    idx = torch.randperm(n, generator=gen)[: min(batch_size, n)]
    t = torch.rand(idx.numel(), generator=gen, dtype=torch.float64) * (1 - t_eps) + t_eps
    z = torch.randn((idx.numel(), *data.shape[1:]), generator=gen)
    return gen, idx, t, z


def dsm_loss(
    net: nn.Module, sde: SDE, p: model_format.Parameterisation, x0: Tensor, t: Tensor, z: Tensor
) -> Tensor:
    """Mean over the batch of ‖std(t)·s_θ(x_t, t) + z‖² (Eq. 7, λ(t) = std(t)²)."""
    coefs = torch.tensor([sde.marginal_coef(ti) for ti in t.tolist()], dtype=torch.float64)
    a, std = (c.to(x0.device) for c in coefs.unbind(1))
    x_t = a.to(x0)[:, None, None, None] * x0 + std.to(x0)[:, None, None, None] * z
    scaled = model_format.scaled_output(net, p, x_t, t.to(x0.device), std)  # = std·s_θ
    return (scaled + z).square().sum(dim=(1, 2, 3)).mean()


LOSSES = {"velocity": flow_matching.flow_matching_loss}
"""The loss of each network output other than the DSM ones (``scaled_score``, ``noise``)."""
OBJECTIVES = {"velocity": flow_matching.OBJECTIVE}


# -- one optimisation step -------------------------------------------------------------------------
def ema_decay(rate: float, updates: int) -> float:
    """score_sde's EMA decay min(rate, (1 + n)/(10 + n)), so early averages are not all init."""
    return min(rate, (1 + updates) / (10 + updates))


@torch.no_grad()
def update_ema(ema_net: nn.Module, net: nn.Module, decay: float) -> None:
    for e, w in zip(ema_net.parameters(), net.parameters(), strict=True):
        e.mul_(decay).add_(w, alpha=1 - decay)


def train_step(
    state: TrainState,
    cfg: TrainConfig,
    sde: SDE,
    p: model_format.Parameterisation,
    data: Tensor,
    labels: Tensor | None = None,
) -> float:
    """One Adam step on a fresh batch (with its class labels for a conditional network)."""
    gen, idx, t, z = draw_step(data, cfg.batch_size, cfg.seed, state.step, cfg.t_eps)
    x0, net = data[idx.to(data.device)], conditional.network(state.net, cfg, gen, labels, idx)
    for group in state.optimizer.param_groups:
        group["lr"] = cfg.lr * min(1.0, (state.step + 1) / max(cfg.warmup, 1))
    loss = LOSSES.get(p.output, dsm_loss)(net, sde, p, x0, t, z.to(data.device))
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(state.net.parameters(), cfg.grad_clip)
    state.optimizer.step()
    update_ema(state.ema_net, state.net, ema_decay(cfg.ema, state.step))
    state.step += 1
    return float(loss.detach())


def record_loss(state: TrainState, loss: float) -> None:
    """Keep the last LOSS_WINDOW losses; every LOSS_WINDOW steps add a point to the curve."""
    if not math.isfinite(loss):
        raise BenchError(f"training diverged: loss {loss} at step {state.step}")
    state.window = (state.window + [loss])[-LOSS_WINDOW:]
    if state.step % LOSS_WINDOW == 0:
        state.curve.append([state.step, round(mean(state.window), 5)])


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


# -- building and checkpointing --------------------------------------------------------------------
def new_state(cfg: TrainConfig, device: torch.device) -> TrainState:
    """A fresh network (initialised from the seed alone), its EMA copy and Adam."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, 0))
        net = UNet(model_format.architecture_from_dict(cfg.architecture)).to(device)
    ema_net = copy.deepcopy(net).requires_grad_(False)
    return TrainState(net, ema_net, torch.optim.Adam(net.parameters(), lr=cfg.lr))


def save_tensors(tensors: dict[str, Tensor], path: Path) -> None:
    """Write a safetensors file atomically (write a temporary file, then rename)."""
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    os.chmod(tmp, 0o644)  # safetensors creates 0600 files; shipped weights must be world-readable
    os.replace(tmp, path)


def write_json(data: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
    """Adam's per-parameter state flattened to ``"<index>.<key>"`` tensors."""
    state = optimizer.state_dict()["state"]
    return {f"{i}.{k}": v for i, s in state.items() for k, v in s.items()}


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor]) -> None:
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        index, _, name = key.partition(".")
        state.setdefault(int(index), {})[name] = value
    groups = optimizer.state_dict()["param_groups"]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(state: TrainState, cfg: TrainConfig, out: Path) -> None:
    """model/ema/optimizer safetensors plus state.json under ``out/checkpoint``."""
    folder = out / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    save_tensors(state.net.state_dict(), folder / "model.safetensors")
    save_tensors(state.ema_net.state_dict(), folder / "ema.safetensors")
    save_tensors(optimizer_tensors(state.optimizer), folder / "optimizer.safetensors")
    write_json(
        {
            "step": state.step,
            "config": dataclasses.asdict(cfg),
            "window": state.window,
            "curve": state.curve,
            "elapsed_s": state.elapsed_s,
            "rng": {
                "scheme": "per-step generator seeded by derive_seed(seed, 1, step)",
                "seed": cfg.seed,
                "next_step": state.step,
            },
        },
        folder / "state.json",
    )


def read_checkpoint_state(out: Path) -> dict[str, Any]:
    path = out / CHECKPOINT_DIR / "state.json"
    if not path.is_file():
        raise BenchError(f"--resume: {out} holds no checkpoint ({path} is missing)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BenchError(f"{path}: not valid JSON ({exc})") from None


def resume_state(cfg: TrainConfig, out: Path, device: torch.device) -> TrainState:
    """Rebuild a run from its checkpoint; its config must match ``cfg`` except for steps."""
    saved = read_checkpoint_state(out)
    old = saved.get("config", {})
    default = TrainConfig()  # a key added since the checkpoint was written has its default
    diff = [k for k in RESUME_KEYS if old.get(k, getattr(default, k)) != dataclasses.asdict(cfg)[k]]
    if diff:
        raise BenchError(
            f"--resume: the checkpoint in {out} was trained with other settings ("
            + ", ".join(f"{k}: {old.get(k)!r} vs {getattr(cfg, k)!r}" for k in diff)
            + ")"
        )
    state = new_state(cfg, device)
    folder = out / CHECKPOINT_DIR
    for module, name in ((state.net, "model"), (state.ema_net, "ema")):
        module.load_state_dict(_read(folder / f"{name}.safetensors", device))
    load_optimizer(state.optimizer, _read(folder / "optimizer.safetensors", device))
    state.step, state.window, state.curve = saved["step"], saved["window"], saved["curve"]
    state.elapsed_s = saved.get("elapsed_s", 0.0)
    return state


def _read(path: Path, device: torch.device) -> dict[str, Tensor]:
    if not path.is_file():
        raise BenchError(f"--resume: checkpoint file {path} is missing")
    tensors = model_format.read_weights(path.read_bytes(), str(path))
    return {k: v.to(device) for k, v in tensors.items()}


# -- the model folder ------------------------------------------------------------------------------
def metadata(
    state: TrainState,
    cfg: TrainConfig,
    p: model_format.Parameterisation,
    dataset: Dataset,
    split: str,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The metadata.json of a model folder (read back by :mod:`bench.training.model_format`)."""
    return {
        "format": model_format.FORMAT,
        "sde": {"name": cfg.sde, "options": cfg.sde_options},
        "parameterisation": p.to_dict(),
        "data": {
            "dataset": dataset.spec,
            "split": split,
            "content_hash": extra["content_hash"],
            "shape": list(extra["shape"]),
            "scaling": "[-1, 1] (x -> 2x - 1)" if p.centered else "[0, 1]",
        },
        "architecture": cfg.architecture,
        "parameters": count_parameters(state.net),
        "weights": "ema",
        "steps": state.step,
        "final_loss": round(mean(state.window), 6),
        "ema_rate": cfg.ema,
        "seed": cfg.seed,
        "training": {
            "objective": OBJECTIVES.get(
                p.output,
                "continuous DSM, lambda(t) = std(t)^2: "
                "mean over batch of sum over pixels ||std*s + z||^2",
            ),
            "final_loss_over_steps": len(state.window),
            "loss_curve": state.curve,
            "batch_size": cfg.batch_size,
            "lr": cfg.lr,
            "warmup": cfg.warmup,
            "grad_clip": cfg.grad_clip,
            "t_eps": cfg.t_eps,
            "optimizer": "Adam",
            "wall_clock_s": round(state.elapsed_s, 1),
            **extra["env"],
        },
        **conditional.metadata(cfg),
        "command": extra["command"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def save_model_folder(state: TrainState, meta: dict[str, Any], out: Path) -> None:
    """``model.safetensors`` (EMA weights) and ``metadata.json``."""
    out.mkdir(parents=True, exist_ok=True)
    save_tensors(state.ema_net.state_dict(), out / model_format.WEIGHTS_FILE)
    write_json(meta, out / model_format.METADATA_FILE)


# -- the loop --------------------------------------------------------------------------------------
@dataclass
class Trainer:
    """A training run: config, SDE, dataset, device and where to write."""

    cfg: TrainConfig
    sde: SDE
    dataset: Dataset
    out: Path
    device: torch.device
    command: str
    progress: bool = False
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr))

    def run(self, resume: bool = False) -> TrainState:
        """Train up to ``cfg.steps``, checkpointing every ``cfg.checkpoint_every`` steps."""
        p = model_format.PARAMETERISATIONS[self.cfg.sde]
        data, split = training_data(self.dataset, p)
        data = data.to(self.device)
        labels = conditional.training_labels(self.dataset, split, self.cfg)
        self.labels = None if labels is None else labels.to(self.device)
        self.extra = self._extra(split, tuple(data.shape[1:]))
        state = (
            resume_state(self.cfg, self.out, self.device)
            if resume
            else new_state(self.cfg, self.device)
        )
        self.log(
            f"training {self.cfg.sde} on {self.dataset.spec}:{split} ({data.shape[0]} images)"
            f", {count_parameters(state.net):,} parameters, steps {state.step} → "
            f"{self.cfg.steps}, device {self.device}, threads {torch.get_num_threads()}"
        )
        self._loop(state, p, data, split)
        return state

    def _loop(
        self, state: TrainState, p: model_format.Parameterisation, data: Tensor, split: str
    ) -> None:
        bar = self._bar(state.step)
        last_save = time.perf_counter()
        while state.step < self.cfg.steps:
            t0 = time.perf_counter()
            record_loss(state, train_step(state, self.cfg, self.sde, p, data, self.labels))
            state.elapsed_s += time.perf_counter() - t0
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{mean(state.window[-50:]):.3f}", refresh=False)
            if state.step % self.cfg.checkpoint_every == 0 or state.step == self.cfg.steps:
                self._save(state, p, split, time.perf_counter() - last_save)
                last_save = time.perf_counter()
        if bar is not None:
            bar.close()

    def _save(
        self, state: TrainState, p: model_format.Parameterisation, split: str, since: float
    ) -> None:
        save_checkpoint(state, self.cfg, self.out)
        meta = metadata(state, self.cfg, p, self.dataset, split, self.extra)
        save_model_folder(state, meta, self.out)
        self.log(
            f"step {state.step}/{self.cfg.steps}  loss {mean(state.window):.4f}  "
            f"train time {state.elapsed_s:.0f} s  (+{since:.0f} s) → {self.out}"
        )

    def _bar(self, start: int):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=self.cfg.steps,
            initial=start,
            desc=f"train {self.cfg.sde}",
            unit="step",
            file=sys.stderr,
            mininterval=1.0 if sys.stderr.isatty() else 30,
        )

    def _extra(self, split: str, shape: tuple[int, ...]) -> dict[str, Any]:
        env = {
            "device": str(self.device),
            "torch": torch.__version__,
            "sde_bench": bench.__version__,
        }
        if self.device.type == "cpu":
            env["threads"] = torch.get_num_threads()
        return {
            "content_hash": self.dataset.content_hash(split),
            "shape": shape,
            "env": env,
            "command": self.command,
        }


def default_architecture(in_channels: int, centered: bool, num_classes: int = 0) -> dict[str, Any]:
    """The digits recipe: 32/64 channels, GroupNorm 8, Fourier features 128-d at scale 16
    (and a class embedding with a null label for a conditional network)."""
    config = UNetConfig(in_channels=in_channels, center_input=not centered, num_classes=num_classes)
    return config.to_dict()

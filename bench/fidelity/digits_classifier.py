"""A small CNN classifier of the 8×8 digits: the offline feature extractor for FID/KID.

Its 128-d penultimate layer (after ReLU) feeds FID and KID; its logits can feed the Inception
Score. Recipe (plugins/weights/README.md): conv32 → conv64 → max-pool → conv128 → fc128 →
fc10, dropout 0.3, random ±1 pixel roll augmentation, Adam, trained on the digits ``train``
split and evaluated on ``test``. The shipped weights are a safetensors file beside a JSON file
that records the test accuracy, seed and the command that made them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.fidelity.images import from_uint8, to_uint8

FEATURES = "128"
LOGITS = "logits"
INPUT_SIZE = 8
WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"


class DigitsNet(nn.Module):
    """conv32-conv64-pool-conv128-fc128-fc10 on 1×8×8 float images in [0, 1]."""

    def __init__(self, dropout: float = 0.3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1)
        self.fc1 = nn.Linear(128 * 4 * 4, 128)
        self.fc2 = nn.Linear(128, 10)
        self.dropout = nn.Dropout(dropout)

    def features(self, x: Tensor) -> Tensor:
        """The 128-d penultimate activations (after ReLU) of (B, 1, 8, 8) images."""
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.conv3(x))
        return F.relu(self.fc1(self.dropout(x.flatten(1))))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(features, logits)`` of (B, 1, 8, 8) images."""
        h = self.features(x)
        return h, self.fc2(self.dropout(h))


def to_model_input(images: Tensor) -> Tensor:
    """uint8 (B, C, H, W) → float (B, 1, 8, 8) in [0, 1]: grey (channel mean), area-resized."""
    x = from_uint8(images)
    if x.shape[1] != 1:
        x = x.mean(1, keepdim=True)
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.adaptive_avg_pool2d(x, INPUT_SIZE)
    return x


def load_state(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a safetensors file, or a tensor-only ``torch.load(weights_only=True)``."""
    from bench.checkpoints import load_state_dict

    return load_state_dict(path, what="classifier weights")


def load_net(path: str | Path) -> DigitsNet:
    """A :class:`DigitsNet` in eval mode with the weights of ``path`` (strict)."""
    from bench.checkpoints import load_into

    net = DigitsNet()
    load_into(net, load_state(path), str(path))
    return net.eval().requires_grad_(False)


# -- training -------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Hyper-parameters of the shipped classifier (defaults reproduce it)."""

    seed: int = 0
    epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-3
    dropout: float = 0.3
    shift: int = 1


def quantised(x: Tensor) -> Tensor:
    """Float images as the extractor sees them: through uint8 and back."""
    return from_uint8(to_uint8(x))


def augment(x: Tensor, shift: int, generator: torch.Generator) -> Tensor:
    """Roll each image by a random (dy, dx) in [-shift, shift]² (wrapping)."""
    if shift == 0:
        return x
    out = torch.empty_like(x)
    offsets = torch.randint(-shift, shift + 1, (x.shape[0], 2), generator=generator)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = torch.roll(x[i], (dy, dx), dims=(-2, -1))
    return out


def train(config: TrainConfig, digits: Any, log: Any = print) -> tuple[DigitsNet, dict[str, Any]]:
    """Train on the ``train`` split of ``digits`` (the registry's ``digits`` dataset); return the
    net and its metadata (test accuracy)."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    x, y = quantised(digits.data("train")), digits.labels("train")
    net = DigitsNet(config.dropout)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.lr)
    start = time.perf_counter()
    for epoch in range(config.epochs):
        net.train()
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), config.batch_size):
            idx = order[i : i + config.batch_size]
            _, logits = net(augment(x[idx], config.shift, generator))
            loss = F.cross_entropy(logits, y[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        if (epoch + 1) % 10 == 0:
            log(
                f"epoch {epoch + 1}: loss {loss.item():.4f}, test accuracy {accuracy(net, digits):.4f}"
            )
    net.eval().requires_grad_(False)
    meta = {
        "architecture": "conv32-conv64-pool-conv128-fc128-fc10",
        "train": asdict(config),
        "train_split": "digits:train",
        "test_accuracy": accuracy(net, digits),
        "train_accuracy": accuracy(net, digits, "train"),
        "train_seconds": time.perf_counter() - start,
        "torch": torch.__version__,
        "features": {FEATURES: 128, LOGITS: 10},
    }
    return net, meta


@torch.no_grad()
def accuracy(net: DigitsNet, digits: Any, split: str = "test") -> float:
    """Share of correctly classified quantised digits of a split of ``digits``."""
    was_training = net.training
    net.eval()
    _, logits = net(quantised(digits.data(split)))
    net.train(was_training)
    return float((logits.argmax(1) == digits.labels(split)).to(torch.float64).mean())


def save(net: DigitsNet, meta: dict[str, Any], folder: Path) -> None:
    """Write ``model.safetensors`` and ``meta.json`` (with the weights' sha256) into ``folder``."""
    from safetensors.torch import save_file

    from bench.fidelity import sha256_file

    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WEIGHTS_FILE
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    meta = {**meta, "sha256": sha256_file(weights)}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

"""Sweeps under ``torchrun``: each rank samples a disjoint shard of every cell's batches; rank 0
merges the metrics' states and writes the rows.

Nothing here is cluster code of our own: ``torchrun`` (and its rendezvous, for several nodes)
starts the processes and sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; this module joins them
with ``torch.distributed`` (NCCL on GPUs, gloo on CPUs). A single process is a world of one, and
every operation below is then a no-op, so ``bench run`` has one code path.

Because every random draw is a function of (seed, sample index, draw index), the union of the
ranks' shards is exactly a single process's samples.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from bench.errors import BenchError

TIMEOUT = datetime.timedelta(minutes=int(os.environ.get("BENCH_DIST_TIMEOUT_MIN", "30")))
"""How long a rank waits for the others at a collective before giving up (a dead rank)."""


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: rank, world size, local rank, backend."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def main(self) -> bool:
        """Rank 0: writes the rows, run.json and the lock."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @classmethod
    def from_env(cls, device_type: str) -> Ranks:
        """Join the process group ``torchrun`` set up (a world of one without it)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        backend = "nccl" if device_type == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, timeout=TIMEOUT)
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ["LOCAL_RANK"]), backend)

    def shard(self, items: Sequence[Any]) -> list[Any]:
        """This rank's share of ``items``: every world-th item from the rank's own (EDM's
        ``all_batches[rank::world]``)."""
        return list(items[self.rank :: self.world])

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (pickled; CPU tensors welcome)."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def describe(self, device: torch.device) -> dict[str, Any]:
        """Row columns: world size, backend and every rank's device."""
        devices = self.gather(str(device))
        return {"world_size": self.world, "backend": self.backend, "devices": ",".join(devices)}

    def close(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def settle_outcomes(outcomes: list[dict[str, Any]], cell_id: str) -> dict[str, Any]:
    """The cell's outcome from every rank's (``status``, ``reason``, ``plugin``, ``samples``).

    A rank that sampled nothing (its share of a cell with fewer batches than ranks) abstains,
    unless it failed. The ranks that remain agree, as they would in a single process: an
    ``unsupported`` or ``error`` raised on the first batch is the cell's own, and the row says
    so with the reason of the first rank that gave it. When they disagree (some failed, others
    sampled), the row would be a lie: the run ends naming the rank."""
    voters = [o for o in outcomes if o["status"] != "ok" or o["samples"] > 0]
    if len({o["status"] for o in voters}) <= 1:
        return voters[0] if voters else {"status": "ok"}
    rank, why = next((r, o) for r, o in enumerate(outcomes) if o["status"] != "ok")
    detail = why.get("reason") or why["status"]
    raise BenchError(f"rank {rank} failed in cell {cell_id}: {detail}; resume to finish")


def local_device(device: torch.device, ranks: Ranks) -> torch.device:
    """``--device cuda`` under torchrun means this rank's GPU, ``cuda:LOCAL_RANK``."""
    if device.type == "cuda" and ranks.distributed and device.index is None:
        return torch.device("cuda", ranks.local_rank)
    return device

"""The sweep grid: cells (one configuration each), their stable ids, and seed parsing."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from bench.errors import BenchError


@dataclass(frozen=True)
class Cell:
    """One grid point. Its id is a hash of everything that defines the result of the cell."""

    model: str
    sde: str
    predictor: str
    corrector: str
    probability_flow: bool
    steps: int
    snr: float | None
    corrector_steps: int | None
    seed: int
    samples: int
    batch_size: int
    denoise: bool
    dtype: str
    metrics: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def config(self) -> dict[str, Any]:
        """The defining configuration, JSON-ready (component options resolved)."""
        cfg = asdict(self)
        cfg["metrics"] = list(self.metrics)
        return cfg

    @property
    def id(self) -> str:
        blob = json.dumps(self.config(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def sampler(self) -> str:
        """Predictor+corrector label, as tables show it."""
        pf = "(pf)" if self.probability_flow else ""
        return f"{self.predictor}{pf}+{self.corrector}"


@dataclass(frozen=True)
class GridSpec:
    """The lists the user asked for; the grid is their product."""

    model: str
    sdes: tuple[str, ...]
    predictors: tuple[str, ...]
    correctors: tuple[str, ...]
    steps: tuple[int, ...]
    snrs: tuple[float, ...]
    corrector_steps: tuple[int, ...]
    probability_flow: tuple[bool, ...]
    seeds: tuple[int, ...]
    samples: int
    batch_size: int
    denoise: bool
    dtype: str
    metrics: tuple[str, ...]


def expand(spec: GridSpec, options_for: Any) -> list[Cell]:
    """Every cell of the grid, deduplicated where a dimension does not apply.

    ``snr`` and ``corrector_steps`` mean nothing without a corrector, and ``probability_flow``
    nothing without a predictor, so such cells collapse to one with ``None``/``False``.
    ``options_for(cell_kwargs)`` returns the resolved component options of a cell.
    """
    cells: dict[str, Cell] = {}
    product = itertools.product(
        spec.sdes,
        spec.predictors,
        spec.correctors,
        spec.probability_flow,
        spec.steps,
        spec.snrs,
        spec.corrector_steps,
        spec.seeds,
    )
    for sde, predictor, corrector, pf, steps, snr, csteps, seed in product:
        no_corrector = corrector == "none"
        kwargs = dict(
            model=spec.model,
            sde=sde,
            predictor=predictor,
            corrector=corrector,
            probability_flow=pf and predictor != "none",
            steps=steps,
            snr=None if no_corrector else snr,
            corrector_steps=None if no_corrector else csteps,
            seed=seed,
            samples=spec.samples,
            batch_size=min(spec.batch_size, spec.samples),
            denoise=spec.denoise,
            dtype=spec.dtype,
            metrics=spec.metrics,
        )
        cell = Cell(**kwargs, options=options_for(kwargs))
        cells.setdefault(cell.id, cell)
    return list(cells.values())


def parse_seeds(text: str) -> tuple[int, ...]:
    """Seeds as ``0-3`` or ``1,2,5-10`` (EDM's syntax); duplicates removed, order kept."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(p) for p in part.split("-", 1))
                if lo < 0 or hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                value = int(part)
                if value < 0:
                    raise ValueError
                seeds.append(value)
        except ValueError:
            raise BenchError(
                f"cannot parse seeds {text!r}: use non-negative integers and ranges, e.g. 0-3 or 1,2,5-10"
            ) from None
    return tuple(dict.fromkeys(seeds))


def splitmix64(x: int) -> int:
    """A 64-bit mixing function: independent seeds from (seed, index) pairs."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (x ^ (x >> 31)) & 0x7FFFFFFFFFFFFFFF


def derive_seed(seed: int, *parts: int) -> int:
    """A seed for a stream named by integers under the user's seed."""
    out = splitmix64(seed)
    for p in parts:
        out = splitmix64(out ^ splitmix64(p + 1))
    return out


def batches(n: int, batch_size: int) -> Iterable[tuple[int, int]]:
    """(start, size) of each batch."""
    for start in range(0, n, batch_size):
        yield start, min(batch_size, n - start)

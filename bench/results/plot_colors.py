"""One colour per sampler in every plot of a report and across reports: a fixed table for the
built-in samplers, a stable hash of the label into the same palette for the others."""

from __future__ import annotations

import zlib
from typing import Iterable

PALETTE = (
    "#1f77b4",  # blue
    "#ff7f0e",  # orange
    "#2ca02c",  # green
    "#d62728",  # red
    "#9467bd",  # purple
    "#8c564b",  # brown
    "#e377c2",  # pink
    "#bcbd22",  # olive
    "#17becf",  # cyan
    "#aec7e8",  # light blue
    "#ffbb78",  # light orange
    "#98df8a",  # light green
    "#ff9896",  # light red
    "#c5b0d5",  # light purple
    "#c49c94",  # light brown
    "#f7b6d2",  # light pink
    "#dbdb8d",  # light olive
    "#9edae5",  # light cyan
    "#7f7f7f",  # grey (last: the floor band is grey)
    "#393b79",  # dark indigo
)
"""matplotlib's tab10 and tab20 colours, dark ones first, greys last."""

BUILTIN = {
    "euler_maruyama+none": 0,
    "euler_maruyama+langevin": 1,
    "reverse_diffusion+none": 2,
    "reverse_diffusion+langevin": 3,
    "ancestral_sampling+none": 4,
    "ancestral_sampling+langevin": 5,
    "dpmpp_2m": 0,
    "ipndm": 1,
    "unipc": 2,
    "heun": 3,
    "euler": 4,
    "ddim": 5,
    "ode": 6,
    "ipndm_v": 7,
    "dpmpp_3m": 8,
    "euler_maruyama(pf)+none": 9,
    "reverse_diffusion(pf)+none": 10,
    "euler_maruyama+ald": 11,
    "reverse_diffusion+ald": 12,
    "ancestral_sampling+ald": 13,
}
"""Palette indices of the built-in samplers' labels: the predictor–corrector samplers of the
default sweep and the whole samplers of the solver sweeps each get distinct dark colours (the
two families share colours only between samplers that rarely appear in one plot)."""


def hashed(label: str) -> int:
    """A palette index that depends on the label alone (CRC-32, the same in every process)."""
    return zlib.crc32(label.encode("utf-8")) % len(PALETTE)


def sampler_colors(labels: Iterable[str]) -> dict[str, str]:
    """The colour of every label: its built-in colour, else its hashed one; a label whose
    colour another label of the same plot already holds moves to the next free colour (labels
    visited by name, so the result depends on the set of labels, not their order)."""
    labels = sorted(set(labels))
    wanted = {label: BUILTIN.get(label, hashed(label)) for label in labels}
    taken: dict[int, str] = {}
    out: dict[str, str] = {}
    for label in sorted(labels, key=lambda s: (s not in BUILTIN, s)):
        index = wanted[label]
        for step in range(len(PALETTE)):
            if (index + step) % len(PALETTE) not in taken:
                index = (index + step) % len(PALETTE)
                break
        taken.setdefault(index, label)
        out[label] = PALETTE[index]
    return out

"""A test double of an image score model: N(0, I) on 1×8×8, mapped to images in [0, 1].

Under the VP SDE N(0, I) stays N(0, I), so the score is exactly −x and sampling is finite and
cheap. Its "images" are 0.5 + 0.25·x clipped to [0, 1]; the reference is the digits train split.
"""

from __future__ import annotations

import bench
from bench.core.model import ScoreModel


class FakeImages(ScoreModel):
    """Standard-normal 1×8×8 'images' (a test double for the image metrics)."""

    name = "fakeimg"
    data_shape = (1, 8, 8)
    dataset = "digits"
    default_metrics = ("fid", "kid")
    spec = "fakeimg"

    @classmethod
    def load(cls, arg, *, device, dtype):
        return cls()

    def score_fn(self, sde):
        return lambda x, t: -x

    def to_data(self, x):
        return (0.5 + 0.25 * x).clamp(0, 1)


@bench.hookimpl
def register_score_models(register):
    register(FakeImages)

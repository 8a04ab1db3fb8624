"""FID, KID and IS through torch-fidelity, offline, streamed batch by batch, with cached references.

Pieces:

* **Extractors.** ``digits-classifier`` (our small CNN, registered with torch-fidelity's
  ``register_feature_extractor`` once per process) and torch-fidelity's own
  ``inception-v3-compat`` (weights from the ``inception`` extra or a user file, see
  :mod:`bench.fidelity.inception`). :func:`resolve_extractor` finds the weights file and hashes it;
  a missing file is a :class:`BenchError` before any work starts, never a download.
* **Streaming.** :class:`Featurizer` quantises [0, 1] float batches with
  :func:`bench.fidelity.images.to_uint8` and runs the extractor in chunks; FID keeps running sums
  (:class:`bench.fidelity.gaussian.GaussianStats`, memory D² whatever n), KID keeps every feature up to
  a cap and then a seeded uniform random subset of them (:class:`FeatureReservoir`, memory
  cap × D whatever n). No sample image is stored or written.
* **References.** :func:`reference` computes a dataset split's features and Gaussian statistics
  once and caches them under ``$BENCH_CACHE_DIR/fidelity`` keyed by the split's content hash,
  the split, the extractor name, the weights' sha256, the feature layer and n (torch-fidelity's
  own cache keys by name only). :data:`COUNTS` counts computations.
* **Metrics.** :func:`fid_from_stats`, :func:`kid_from_features`, :func:`isc_from_logits` call
  torch-fidelity's own metric functions.
"""

from __future__ import annotations

from bench.fidelity.cache import (
    CACHE_ENV,
    COUNTS,
    cache_dir,
    fidelity_cache,
    file_digest,
    sha256_file,
)
from bench.fidelity.extractors import (
    DIGITS,
    EXTRACTORS,
    INCEPTION,
    WEIGHTS_ENV,
    ExtractorSpec,
    Featurizer,
    describe,
    exact_fp32,
    extractor_input,
    load_extractor,
    register_extractors,
    resolve_extractor,
    shipped_digits_weights,
)
from bench.fidelity.floor import Floor, noise_floor
from bench.fidelity.reference import (
    CACHE_VERSION,
    REFERENCE_SEED,
    Reference,
    Setup,
    clear_memory_caches,
    default_split,
    reference,
    reference_fields,
    reference_images,
    reference_key,
    resolve_dataset,
    setup,
)
from bench.fidelity.scores import (
    KID_MAX_FEATURES,
    KID_MAX_SUBSET,
    FeatureReservoir,
    fid_from_stats,
    isc_from_logits,
    kid_from_features,
    kid_subset_size,
)

IMAGE_METRICS = ("fid", "kid")
"""The default metrics of image score models."""

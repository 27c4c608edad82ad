"""Pretrained image and text encoders behind one interface, with content-hash feature caching.

Importing the package registers every encoder in :data:`ENCODERS`::

    from prodkg.extractors import get_encoder, lazy_encoder, extract_features, FeatureCache
    enc = get_encoder("efficientnet_lite0")
    result = extract_features(image_paths, enc, cache=FeatureCache("runs/cache"))
    lazy = lazy_encoder("minilm")  # identity now, model only when a text is missing from the cache
"""

from __future__ import annotations

if __name__ != "prodkg.extractors":  # the folder installs as prodkg.extractors; a bare `import extractors` would load a second copy
    raise ImportError("import prodkg.extractors, not extractors")

from prodkg.extractors.base import (
    ENCODERS,
    Encoder,
    EncoderIdentity,
    ItemError,
    LazyEncoder,
    get_encoder,
    lazy_encoder,
    list_encoders,
)
from prodkg.extractors.cache import FeatureCache
from prodkg.extractors.extract import ExtractResult, content_hash, extract_features

# imported for their registrations
from prodkg.extractors import image_concat, image_efficientnet, image_resnet, text_hf, text_ngrams  # noqa: F401  isort: skip

__all__ = [
    "ENCODERS",
    "Encoder",
    "EncoderIdentity",
    "ExtractResult",
    "FeatureCache",
    "ItemError",
    "LazyEncoder",
    "content_hash",
    "extract_features",
    "get_encoder",
    "lazy_encoder",
    "list_encoders",
]

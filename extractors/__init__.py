"""Pretrained image and text encoders behind one interface, with content-hash feature caching.

Importing the package registers every encoder in :data:`ENCODERS`::

    from extractors import get_encoder, extract_features, FeatureCache
    enc = get_encoder("efficientnet_lite0")
    result = extract_features(image_paths, enc, cache=FeatureCache("runs/cache"))
"""

from __future__ import annotations

from extractors.base import ENCODERS, Encoder, ItemError, get_encoder, list_encoders
from extractors.cache import FeatureCache
from extractors.extract import ExtractResult, content_hash, extract_features

# imported for their registrations
from extractors import image_efficientnet, image_resnet, text_hf  # noqa: F401  isort: skip

__all__ = [
    "ENCODERS",
    "Encoder",
    "ExtractResult",
    "FeatureCache",
    "ItemError",
    "content_hash",
    "extract_features",
    "get_encoder",
    "list_encoders",
]

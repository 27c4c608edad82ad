"""Hashed word and character n-grams of a product title: a lexical text encoder with no weights.

Product titles are short and carry their category in a few words (brand, product type, flavour, size), which a
sentence encoder averages away with the rest. A bag of word and character n-grams keeps them: each n-gram is hashed
into one of ``dim`` buckets with a sign (feature hashing, Weinberger, Dasgupta, Langford, Smola and Attenberg, ICML
2009), counts are damped to ``1 + log(count)`` (sublinear term frequency) and the vector is scaled to unit length.
Character n-grams are taken within each word padded by ``<`` and ``>`` (as fastText does: Bojanowski, Grave,
Joulin and Mikolov, TACL 2017), so misspellings, plurals and compound words still share most of their grams.

There is nothing to download and nothing fitted: a text's vector depends on that text alone, so vectors are cached
by content like any other encoder's, and the encoder runs at thousands of titles a second on one core. On
instacart-products (catalog -> new feed, 133 aisles) a linear head over these 1,024 dimensions was more accurate
than one over MiniLM's 384, and one over both together more accurate still (docs/BENCHMARKS.md, "Text encoders").
The hash is CRC-32 (``zlib.crc32``): the same on every machine and process, unlike Python's own ``hash``.
"""

from __future__ import annotations

import functools
import math
import re
import zlib
from typing import Any

import numpy as np

from prodkg.errors import ConfigError
from prodkg.extractors.base import ENCODERS, PRECISIONS, Encoder, EncoderIdentity, ItemError, resolve_device
from prodkg.extractors.concat import ConcatEncoder
from prodkg.extractors.text_hf import normalise_text

__all__ = ["MiniLMNgramsEncoder", "NgramHashEncoder", "ngram_vector"]

VERSION = 1  # bump when the grams, the hash or the weighting change: it is part of the cache key
_WORD = re.compile(r"\w+")


def _check(dim: int, word_ngrams: int, char_ngrams: tuple[int, int] | list[int], precision: str) -> tuple[int, int]:
    if isinstance(dim, bool) or not isinstance(dim, int) or not 16 <= dim <= 1 << 20:
        raise ConfigError(f"ngrams: dim must be an integer from 16 to {1 << 20}, got {dim!r}")
    if isinstance(word_ngrams, bool) or not isinstance(word_ngrams, int) or not 1 <= word_ngrams <= 3:
        raise ConfigError(f"ngrams: word_ngrams must be 1, 2 or 3, got {word_ngrams!r}")
    try:
        lo, hi = (int(v) for v in char_ngrams)
    except (TypeError, ValueError):
        raise ConfigError(f"ngrams: char_ngrams must be two integers [shortest, longest], got {char_ngrams!r}") from None
    if not (lo == hi == 0 or 1 <= lo <= hi <= 8):
        raise ConfigError(f"ngrams: char_ngrams must satisfy 1 <= shortest <= longest <= 8 (or [0, 0]: none), got {char_ngrams!r}")
    if precision not in PRECISIONS:
        raise ConfigError(f"ngrams: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return lo, hi


@functools.lru_cache(maxsize=1 << 18)
def _bucket(gram: str, dim: int) -> tuple[int, float]:
    """The gram's bucket and sign (grams repeat across a catalog: cached)."""
    h = zlib.crc32(gram.encode("utf-8"))
    return h % dim, (1.0 if h >> 31 else -1.0)


@functools.lru_cache(maxsize=1 << 16)
def _word_grams(word: str, lo: int, hi: int) -> tuple[str, ...]:
    """The character n-grams of one word padded by ``<`` and ``>`` (words repeat across a catalog: cached)."""
    if not lo:
        return ()
    w = f"<{word}>"
    return tuple("c:" + w[i:i + n] for n in range(lo, hi + 1) for i in range(len(w) - n + 1))


def ngram_vector(text: str, dim: int = 1024, word_ngrams: int = 2, char_ngrams: tuple[int, int] = (3, 5)) -> np.ndarray:
    """The unit-length hashed n-gram vector of ``text`` (lower-cased and NFKC-normalised first); zeros when it has no word."""
    lo, hi = (int(v) for v in char_ngrams)
    words = _WORD.findall(normalise_text(text).lower())
    counts: dict[str, int] = {}
    for n in range(1, word_ngrams + 1):
        for i in range(len(words) - n + 1):
            g = "w:" + " ".join(words[i:i + n])
            counts[g] = counts.get(g, 0) + 1
    for w in words:
        for g in _word_grams(w, lo, hi):
            counts[g] = counts.get(g, 0) + 1
    sums: dict[int, float] = {}
    for g, c in counts.items():
        b, sign = _bucket(g, dim)
        sums[b] = sums.get(b, 0.0) + sign * (1.0 if c == 1 else 1.0 + math.log(c))
    v = np.zeros(dim, np.float32)
    if sums:
        vals = np.fromiter(sums.values(), np.float64, len(sums))
        norm = float(np.sqrt(np.dot(vals, vals)))
        if norm > 0:
            v[np.fromiter(sums.keys(), np.int64, len(sums))] = vals / norm
    return v


@ENCODERS.register("ngrams", aliases=("hashed_ngrams",))
class NgramHashEncoder(Encoder):
    """Hashed word (1..``word_ngrams``) and character (``char_ngrams``, within words) n-grams, ``dim`` dimensions.

    Args:
        dim: buckets (default 1,024; more buckets, fewer collisions, larger vectors: 4 bytes each per product).
        word_ngrams: longest word n-gram (default 2: words and word pairs).
        char_ngrams: ``[shortest, longest]`` character n-gram (default ``[3, 5]``; ``[0, 0]`` for none).
        device: accepted for the common interface; the encoder runs on the CPU.
        precision: accepted for the common interface; the vectors are always float32 sums (``fp32``).
    """

    name = "ngrams"
    modality = "text"

    @classmethod
    def identify(cls, *, dim: int = 1024, word_ngrams: int = 2, char_ngrams: tuple[int, int] | list[int] = (3, 5),
                 device: str = "cpu", precision: str = "auto") -> EncoderIdentity | None:
        lo, hi = _check(dim, word_ngrams, char_ngrams, precision)
        return EncoderIdentity(cls.name, cls.modality, cls._encoder_id(dim, word_ngrams, lo, hi), dim, "fp32", resolve_device(device))

    @staticmethod
    def _encoder_id(dim: int, word_ngrams: int, lo: int, hi: int) -> str:
        return f"ngrams-v{VERSION}:crc32:d{dim}:w1-{word_ngrams}:c{lo}-{hi}:sublinear-l2:fp32"

    def __init__(self, *, dim: int = 1024, word_ngrams: int = 2, char_ngrams: tuple[int, int] | list[int] = (3, 5),
                 device: str = "cpu", precision: str = "auto") -> None:
        lo, hi = _check(dim, word_ngrams, char_ngrams, precision)
        self.dim, self.word_ngrams, self.char_ngrams = dim, word_ngrams, (lo, hi)
        self.device = resolve_device(device)
        self.precision = "fp32"
        self.encoder_id = self._encoder_id(dim, word_ngrams, lo, hi)

    def load_item(self, item: str) -> np.ndarray:
        """Text -> its vector (computed here, so DataLoader workers share the work); :class:`ItemError` for non-strings."""
        if not isinstance(item, str):
            raise ItemError(f"text item must be a string, got {type(item).__name__}")
        return ngram_vector(item, self.dim, self.word_ngrams, self.char_ngrams)

    def encode_batch(self, items: list[Any]) -> np.ndarray:
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([np.asarray(v, dtype=np.float32) for v in items])


@ENCODERS.register("minilm_ngrams", aliases=("minilm-ngrams",))
class MiniLMNgramsEncoder(ConcatEncoder):
    """MiniLM's sentence vector (384-d) and hashed n-grams (1,024-d) side by side, 1,408 dimensions: the meaning of
    the title and its exact words. Each half is exactly what that encoder gives alone."""

    name = "minilm_ngrams"
    modality = "text"
    parts = ("minilm", "ngrams")

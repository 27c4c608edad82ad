"""A closed label space: string labels of the source domain to class indices and back."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from prodkg.errors import StageError


class LabelSpace:
    """The classes a head can predict, fixed by the labelled source rows (sorted for reproducibility)."""

    def __init__(self, classes: Iterable[str]) -> None:
        self.classes: list[str] = sorted(set(classes))
        if not self.classes:
            raise StageError("a label space needs at least one class")
        self._index = {c: i for i, c in enumerate(self.classes)}

    @classmethod
    def from_labels(cls, labels: Sequence[str | None]) -> LabelSpace:
        return cls(label for label in labels if label is not None)

    def __len__(self) -> int:
        return len(self.classes)

    def __contains__(self, label: object) -> bool:
        return label in self._index

    def encode(self, labels: Sequence[str | None]) -> np.ndarray:
        """Class indices; -1 for a missing label or one the source never saw."""
        return np.array([self._index.get(label, -1) if label is not None else -1 for label in labels], dtype=np.int64)

    def decode(self, indices: Sequence[int]) -> list[str]:
        return [self.classes[int(i)] for i in indices]

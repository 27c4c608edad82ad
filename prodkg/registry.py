"""A small named registry, one per pluggable kind (encoder, adapter, head, store, query)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from prodkg.errors import UnknownComponentError

T = TypeVar("T")


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_")


class Registry(Generic[T]):
    """Maps names to components of one kind.

    Components are added with the :meth:`register` decorator; lookups are
    case-insensitive and treat ``-`` and ``_`` alike. An unknown name raises
    :class:`UnknownComponentError` listing every valid name.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        self._display: dict[str, str] = {}

    def register(self, name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            key = _normalise(name)
            if key in self._items or key in self._aliases:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[key] = obj
            self._display[key] = name
            for alias in aliases:
                self._aliases[_normalise(alias)] = key
            return obj

        return decorator

    def get(self, name: str) -> T:
        key = _normalise(name)
        key = self._aliases.get(key, key)
        try:
            return self._items[key]
        except KeyError:
            valid = ", ".join(self.names()) or "(none registered)"
            raise UnknownComponentError(f"unknown {self.kind} {name!r}; valid names: {valid}") from None

    def names(self) -> list[str]:
        return sorted(self._display[k] for k in self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _normalise(name)
        return key in self._items or key in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

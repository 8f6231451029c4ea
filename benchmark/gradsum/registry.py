"""Name → object registries with errors that list the valid names."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from gradsum.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of entries, filled by the `register` decorator at import time."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that adds an entry under `name`; a duplicate name is a programming error."""

        def add(entry: T) -> T:
            if name in self._entries:
                raise RuntimeError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def add(self, name: str, entry: T) -> None:
        """Add an entry without a decorator."""
        self.register(name)(entry)

    def unregister(self, name: str) -> T:
        """Remove the entry called `name` and return it: for a test that registers an entry of its own and
        must leave the registry as it found it. An unknown name raises the error `get` raises."""
        entry = self.get(name)
        del self._entries[name]
        return entry

    def get(self, name: str, argument: str | None = None) -> T:
        """The entry called `name`; an unknown name raises an error listing the valid ones."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name, argument)) from None

    def unknown_message(self, name: str, argument: str | None = None) -> str:
        """The message for an unknown `name`: close matches first, then every valid name."""
        close = difflib.get_close_matches(name, self._entries, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        where = f" for {argument}" if argument else ""
        return f"unknown {self.kind} {name!r}{where}{hint}; valid: {', '.join(sorted(self._entries))}"

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """All (name, entry) pairs, sorted by name."""
        return sorted(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

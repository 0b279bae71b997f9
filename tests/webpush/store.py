"""A dict of ledger entries, the shape :class:`tidings.webpush.sender.SubscriptionStore`
asks for."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class DictStore:
    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], Any] = {}

    def get(self, kind: str, key: str) -> Any | None:
        return self.entries.get((kind, key))

    def items(self, kind: str) -> Iterator[tuple[str, Any]]:
        return iter([(k, v) for (c, k), v in self.entries.items() if c == kind])

    async def put(self, kind: str, key: str, value: Any | None) -> None:
        if value is None:
            self.entries.pop((kind, key), None)
        else:
            self.entries[(kind, key)] = value

"""A dict of ledger entries with the ledger's interface
(:class:`tidings.webpush.sender.SubscriptionStore`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator


class DictStore:
    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], bytes] = {}
        self._callbacks: list[Callable[[str, str, bytes | None], None]] = []

    def get(self, kind: str, key: str) -> bytes | None:
        return self.entries.get((kind, key))

    def items(self, kind: str) -> Iterator[tuple[str, bytes]]:
        return iter([(k, v) for (c, k), v in self.entries.items() if c == kind])

    def on_change(self, callback: Callable[[str, str, bytes | None], None]) -> None:
        self._callbacks.append(callback)

    async def put(self, kind: str, key: str, value: bytes | None) -> None:
        if value is None:
            self.entries.pop((kind, key), None)
        else:
            self.entries[(kind, key)] = value
        for callback in self._callbacks:
            callback(kind, key, value)

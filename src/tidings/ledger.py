"""The ledger: a small table every node holds whole, written through the log's broker.

Entries are ``(kind, key) -> value`` (bytes), grouped by *kind* ("push" for Web Push
subscriptions, "read" for read positions, ...). A write is appended to a replicated log
that every node reads from its start, and every node applies the writes in that log's
order; so nodes that have applied the same writes hold the same table, whichever node
wrote them. A kind may register a *merge*: a pure function of the value held and the
value written that gives the value kept. Applied in the same order on every node, it
gives the same result everywhere (a read position that only moves forward, a set that
only grows), where last-writer-wins would let two nodes' writes undo each other.

:class:`Ledger` holds the table and applies writes; a backend supplies where writes go
and how they come back: :class:`tidings.log.memory.MemoryLedger` (one process, the
reference) and :class:`tidings.log.ledger.RabbitMqLedger` (a RabbitMQ stream).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Iterator

__all__ = ["Change", "Ledger", "LedgerError", "Merge"]

log = logging.getLogger(__name__)

#: ``merge(held, written) -> kept``; None as ``held`` means absent, as ``kept`` deletes.
Merge = Callable[[bytes | None, bytes | None], bytes | None]
#: ``callback(kind, key, value)`` after an applied write changed an entry (None: deleted).
Change = Callable[[str, str, bytes | None], None]


class LedgerError(Exception):
    """A write the ledger refuses (too large, not started) or cannot make now."""


class Ledger(abc.ABC):
    """The table and how a write is applied; backends implement where writes travel."""

    def __init__(self) -> None:
        self._table: dict[str, dict[str, bytes]] = {}
        self._merges: dict[str, Merge] = {}
        self._callbacks: list[Change] = []

    # ------------------------------------------------------------------ the table
    def merge(self, kind: str, merge: Merge) -> None:
        """Applies writes of ``kind`` through ``merge`` (register before :meth:`start`;
        it must be deterministic, since every node runs it on the same writes)."""
        self._merges[kind] = merge

    def on_change(self, callback: Change) -> None:
        """Calls ``callback(kind, key, value)`` after each applied write that changed one."""
        self._callbacks.append(callback)

    def get(self, kind: str, key: str) -> bytes | None:
        """The value of ``key`` as applied here, or None."""
        return self._table.get(kind, {}).get(key)

    def items(self, kind: str) -> Iterator[tuple[str, bytes]]:
        """Every ``(key, value)`` of ``kind`` applied here (a copy: callers may write)."""
        return iter(list(self._table.get(kind, {}).items()))

    def count(self, kind: str) -> int:
        """How many entries of ``kind`` are held."""
        return len(self._table.get(kind, {}))

    def apply(self, kind: str, key: str, value: bytes | None) -> None:
        """Applies one write read back from the backend, in the backend's order."""
        entries = self._table.get(kind)
        held = None if entries is None else entries.get(key)
        merge = self._merges.get(kind)
        kept = value if merge is None else merge(held, value)
        if kept == held:
            return
        if kept is None:
            assert entries is not None
            del entries[key]
            if not entries:
                del self._table[kind]
        else:
            self._table.setdefault(kind, {})[key] = kept
        self._report(kind, key, kept)

    def _report(self, kind: str, key: str, value: bytes | None) -> None:
        for callback in self._callbacks:
            try:
                callback(kind, key, value)
            except Exception:  # a reader's bug must not stop the table for the others
                log.exception("ledger change callback failed on %s/%s", kind, key)

    def snapshot(self) -> dict[str, dict[str, bytes]]:
        """A copy of the whole table (what a backend's snapshot record holds)."""
        return {kind: dict(entries) for kind, entries in self._table.items()}

    def restore(self, table: dict[str, dict[str, bytes]]) -> None:
        """Replaces the table by ``table`` (a snapshot read back), reporting every
        entry that changed to the callbacks."""
        old = self._table
        self._table = {kind: dict(entries) for kind, entries in table.items() if entries}
        for kind in old.keys() | self._table.keys():
            before, after = old.get(kind, {}), self._table.get(kind, {})
            for key in before.keys() | after.keys():
                if before.get(key) != after.get(key):
                    self._report(kind, key, after.get(key))

    # ------------------------------------------------------------------ the backend
    @property
    @abc.abstractmethod
    def ready(self) -> bool:
        """True once replayed and while writes can be made."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Replays what was written before; returns once it is applied here."""

    @abc.abstractmethod
    async def put(self, kind: str, key: str, value: bytes | None) -> None:
        """Writes ``key`` (None deletes it) for every node; returns once applied here.

        Raises:
            LedgerError: the write was refused or could not be made (nothing applied).
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Stops reading and writing."""

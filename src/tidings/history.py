"""Per-channel history windows and the recovery decision.

Positions are log offsets: monotonic per channel but not contiguous, so a window cannot
prove completeness by counting. Each channel instead remembers ``complete_since``: every
publication of the channel with an offset above it is held. A client that last saw offset
``s`` is recovered exactly when ``s >= complete_since`` (and the epoch matches); otherwise
it is told ``recovered: false`` and never given a partial replay.

The node-wide ``floor`` is the position below which the node has not read the log at all
(it started later); a channel never seen since then is complete from the floor.

A window keeps plain tuples ``(offset, timestamp, data)``, not publications: a tuple of
numbers and bytes is one the garbage collector stops tracking, while a node's history can
hold a million entries, and a collector that walks them all stalls every client for a
large part of a second. Publications are rebuilt for the rare recovery.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from tidings.protocol.messages import RecoverPosition
from tidings.publication import Publication
from tidings.subscription import HistoryPage, Recovery

__all__ = ["ChannelWindow", "History", "Kept"]

#: One retained publication: offset, timestamp, data (its channel is the window's).
Kept = tuple[int, float, bytes]


class ChannelWindow:
    """The retained publications of one channel, oldest first."""

    __slots__ = ("complete_since", "items")

    def __init__(self, complete_since: int) -> None:
        self.items: deque[Kept] = deque()
        self.complete_since = complete_since

    def keep(self, pub: Publication) -> None:
        """Appends ``pub`` (newer than everything held)."""
        self.items.append((pub.offset, pub.timestamp, pub.data))

    def offsets(self) -> list[int]:
        """The offsets held, oldest first."""
        return [kept[0] for kept in self.items]

    def trim(self, size: int, ttl: float, now: float) -> None:
        """Drops what is over ``size`` items or older than ``ttl`` seconds."""
        items = self.items
        while len(items) > size:
            self.complete_since = items.popleft()[0]
        cutoff = now - ttl
        while items and items[0][1] < cutoff:
            self.complete_since = items.popleft()[0]


class History:
    """Every channel's window on this node."""

    def __init__(self, floor: int = 0) -> None:
        self.floor = floor
        self._windows: dict[str, ChannelWindow] = {}

    def reset(self, floor: int) -> None:
        """Forgets everything: the log changed epoch or the node starts over."""
        self._windows.clear()
        self.floor = floor

    def __len__(self) -> int:
        return len(self._windows)

    def append(self, pub: Publication, size: int, ttl: float, now: float) -> None:
        """Keeps ``pub`` in its channel's window (nothing is kept when ``size`` is 0)."""
        window = self._windows.get(pub.channel)
        if window is None:
            window = self._windows[pub.channel] = ChannelWindow(self.floor)
        if size > 0 and ttl > 0:
            window.keep(pub)
            window.trim(size, ttl, now)
        else:
            window.complete_since = pub.offset

    def window(self, channel: str) -> ChannelWindow | None:
        """The window of ``channel``, or None when nothing was published to it here."""
        return self._windows.get(channel)

    def complete_since(self, channel: str, *, size: int, ttl: float, now: float) -> int:
        """The position after which ``channel``'s window holds every publication, once
        trimmed as a recovery would trim it (a recovery from older positions needs the
        log, :mod:`tidings.recovery`)."""
        window = self._windows.get(channel)
        if window is None:
            return self.floor
        window.trim(size, ttl, now)
        return window.complete_since

    def recover(
        self,
        channel: str,
        since: RecoverPosition,
        epoch: str,
        head: int,
        *,
        size: int,
        ttl: float,
        now: float,
    ) -> Recovery:
        """Decides whether a client that last saw ``since`` can be given what it missed.

        Args:
            channel: the channel.
            since: the client's last offset and epoch ("" epoch means any).
            epoch: the log's current epoch.
            head: the last position the node has processed.
            size: the namespace's history size.
            ttl: the namespace's history TTL in seconds.
            now: the current Unix time.
        """
        if since.epoch and since.epoch != epoch:
            return Recovery(False)
        if size <= 0 or ttl <= 0:
            return Recovery(False)
        window = self._windows.get(channel)
        if window is not None:
            window.trim(size, ttl, now)
        complete_since = window.complete_since if window is not None else self.floor
        if since.offset < complete_since:
            return Recovery(False)
        if since.offset > head:
            return Recovery(True, (), since.offset)
        if window is None:
            return Recovery(True)
        after = since.offset
        missed = tuple(
            Publication(channel, offset, data, timestamp)
            for offset, timestamp, data in window.items
            if offset > after
        )
        return Recovery(True, missed)

    def read(
        self,
        channel: str,
        *,
        limit: int,
        since: RecoverPosition | None,
        reverse: bool,
        epoch: str,
        head: int,
        size: int,
        ttl: float,
        now: float,
    ) -> HistoryPage | None:
        """A page of ``channel``'s retained publications, or None when ``since`` cannot be
        served (another epoch, or publications after it are no longer all held).

        Args:
            channel: the channel.
            limit: at most this many publications; 0 for none (the position only), a
                negative number for all that are held.
            since: only publications after its offset (before it when ``reverse``).
            reverse: newest first.
            epoch: the log's current epoch.
            head: the last position the node has processed.
            size: the namespace's history size.
            ttl: the namespace's history TTL in seconds.
            now: the current Unix time.
        """
        if since is not None and since.epoch and since.epoch != epoch:
            return None
        window = self._windows.get(channel)
        if window is not None:
            window.trim(size, ttl, now)
        complete_since = window.complete_since if window is not None else self.floor
        if since is not None and not reverse and since.offset < complete_since:
            # The oldest publications after ``since`` are gone: a page would skip them.
            return None
        if limit == 0 or window is None:
            return HistoryPage((), epoch, head)
        items = list(window.items)
        if since is not None:
            if reverse:
                items = [kept for kept in items if kept[0] < since.offset]
            else:
                items = [kept for kept in items if kept[0] > since.offset]
        if reverse:
            items.reverse()
        if limit > 0:
            items = items[:limit]
        pubs = tuple(Publication(channel, offset, data, stamp) for offset, stamp, data in items)
        return HistoryPage(pubs, epoch, head)

    def remove(self, channel: str, position: int) -> None:
        """Forgets ``channel``'s publications up to ``position`` (``history_remove``)."""
        window = self._windows.get(channel)
        if window is None:
            window = self._windows[channel] = ChannelWindow(position)
        window.items.clear()
        window.complete_since = max(window.complete_since, position)

    def sweep(self, now: float, options_for: Callable[[str], tuple[int, float]]) -> int:
        """Trims every window by TTL and forgets empty windows that prove nothing beyond
        the floor; returns how many windows were dropped."""
        dropped = []
        for name, window in self._windows.items():
            size, ttl = options_for(name)
            window.trim(size, ttl, now)
            if not window.items and window.complete_since <= self.floor:
                dropped.append(name)
        for name in dropped:
            del self._windows[name]
        return len(dropped)

"""What a subscription is made of, for the session, the hub and the history alike.

A subscription joins a :class:`Subscriber` (the handle publications are delivered to: a
connection's writer) to a channel, and may ask to recover what it missed, which yields a
:class:`Recovery`; reading a channel's history yields a :class:`HistoryPage`. The types
live here, below the session and the hub, so that the protocol core can name them without
importing the node's state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tidings.publication import ChannelEvent, Publication

__all__ = ["HistoryPage", "Recovery", "Subscriber"]


class Subscriber(Protocol):
    """A connection as the hub sees it."""

    def deliver(self, pub: Publication) -> None:
        """Queue ``pub`` for sending; must not block."""

    def deliver_event(self, event: ChannelEvent) -> None:
        """Queue a join/leave push for sending; must not block."""


@dataclass(frozen=True, slots=True)
class Recovery:
    """The outcome of a recovery request.

    Attributes:
        recovered: True when ``publications`` is exactly what the client missed.
        publications: the missed publications, in order (empty when not recovered).
        skip_until: the client is ahead of this node; live pushes up to this offset are
            duplicates for it and must be skipped (0 when not needed).
    """

    recovered: bool
    publications: tuple[Publication, ...] = ()
    skip_until: int = 0

    def after_log(self, read: tuple[Publication, ...], limit: int) -> Recovery:
        """This recovery from the window, preceded by ``read``, the publications read from
        the log up to where the window took over; not recovered at all when this one is
        not or when together they are more than ``limit``."""
        if not self.recovered or len(read) + len(self.publications) > limit:
            return Recovery(False)
        return Recovery(True, read + self.publications, self.skip_until)


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """The answer to a history query.

    Attributes:
        publications: in the order asked (oldest first, or newest first when reversed).
        epoch: the log's epoch.
        offset: the node's current position in the log, the point a client reading this
            page may later recover from.
    """

    publications: tuple[Publication, ...]
    epoch: str
    offset: int

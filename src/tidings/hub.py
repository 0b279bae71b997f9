"""The hub: channel -> subscribers, and the fan-out of publications.

The hub never awaits a client. Publishing hands the same pre-encoded publication to every
subscriber's ``deliver``, which queues bytes and returns; back-pressure is each
connection's own limit. Subscribing and taking the history snapshot happen in one
synchronous call, so no publication can fall between them.
"""

from __future__ import annotations

from collections.abc import Iterator

from tidings.history import History
from tidings.protocol.messages import RecoverPosition
from tidings.publication import Publication
from tidings.subscription import Recovery, Subscriber

__all__ = ["Hub"]

class Hub:
    """Subscriptions of one node and their history."""

    def __init__(self, history: History) -> None:
        self.history = history
        self._channels: dict[str, dict[Subscriber, None]] = {}
        # Subscribers that recovered from a position ahead of this node: channel ->
        # subscriber -> offset up to which live publications are duplicates for them.
        self._skips: dict[str, dict[Subscriber, int]] = {}
        self.subscriptions = 0

    def channels(self) -> Iterator[str]:
        """Channels with at least one subscriber."""
        return iter(self._channels)

    def subscribers(self, channel: str) -> int:
        """How many subscribers ``channel`` has here."""
        return len(self._channels.get(channel, ()))

    def subscribe(
        self,
        sub: Subscriber,
        channel: str,
        recover: RecoverPosition | None,
        *,
        epoch: str,
        head: int,
        size: int,
        ttl: float,
        now: float,
    ) -> Recovery | None:
        """Adds ``sub`` to ``channel`` and, when asked, computes its recovery atomically.

        Returns:
            The recovery outcome, or None when no recovery was requested.
        """
        subs = self._channels.setdefault(channel, {})
        if sub not in subs:
            subs[sub] = None
            self.subscriptions += 1
        if recover is None:
            return None
        outcome = self.history.recover(channel, recover, epoch, head, size=size, ttl=ttl, now=now)
        if outcome.skip_until:
            self._skips.setdefault(channel, {})[sub] = outcome.skip_until
        return outcome

    def unsubscribe(self, sub: Subscriber, channel: str) -> bool:
        """Removes ``sub`` from ``channel``; False when it was not subscribed."""
        subs = self._channels.get(channel)
        if subs is None or sub not in subs:
            return False
        del subs[sub]
        self.subscriptions -= 1
        if not subs:
            del self._channels[channel]
        skips = self._skips.get(channel)
        if skips is not None:
            skips.pop(sub, None)
            if not skips:
                del self._skips[channel]
        return True

    def publish(self, pub: Publication, *, size: int, ttl: float, now: float) -> int:
        """Keeps ``pub`` in history and hands it to every subscriber; returns how many."""
        self.history.append(pub, size, ttl, now)
        subs = self._channels.get(pub.channel)
        if not subs:
            return 0
        skips = self._skips.get(pub.channel)
        if skips is None:
            for sub in subs:
                sub.deliver(pub)
            return len(subs)
        delivered = 0
        for sub in subs:
            until = skips.get(sub)
            if until is not None:
                if pub.offset <= until:
                    continue
                del skips[sub]
            sub.deliver(pub)
            delivered += 1
        if not skips:
            del self._skips[pub.channel]
        return delivered

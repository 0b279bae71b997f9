"""The push feed: what of a node's publications Web Push sees, and which workers send.

For each publication of a ``web_push`` namespace, the users its channel names (parsed once
per channel and cached) go to :meth:`~tidings.webpush.service.WebPush.on_publication`,
which never waits. The workers that share the sending are the live, settled ones of the
cluster's presence (those the election counts), or every live one while none has settled.
"""

from __future__ import annotations

from collections.abc import Callable

from tidings.channels import parse_channel
from tidings.config import WebPushSettings
from tidings.ledger import Ledger
from tidings.metrics import Metrics
from tidings.presence import Presence
from tidings.publication import Publication
from tidings.webpush.service import WebPush

__all__ = ["PushFeed"]

#: Channels whose users are cached; past it, the cache starts over.
CACHED_CHANNELS = 100_000


class PushFeed:
    """Feeds publications to Web Push, when it is enabled (``[web_push]``).

    Args:
        settings: the ``[web_push]`` settings; no :attr:`service` unless enabled.
        ledger: where push subscriptions are kept.
        view: the cluster's presence (who is online, which workers are live and settled).
        worker: this worker's id.
        clock: wall time.
        monotonic: the view's clock.
    """

    def __init__(
        self,
        settings: WebPushSettings,
        ledger: Ledger,
        metrics: Metrics,
        view: Presence,
        worker: str,
        *,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
    ) -> None:
        self._view = view
        self._worker = worker
        self._monotonic = monotonic
        #: Web Push to users whose tabs are all closed; None when not enabled.
        self.service: WebPush | None = None
        if settings.enabled:
            self.service = WebPush(
                settings,
                ledger,
                metrics,
                online=view,
                workers=self.senders,
                worker=worker,
                clock=clock,
            )
        # The users to push to of each channel of a web_push namespace.
        self._users: dict[str, tuple[str, ...]] = {}

    def push(self, pub: Publication) -> None:
        """Hands a publication of a ``web_push`` namespace to Web Push, with the users its
        channel names (none for a channel that is not user-limited); never waits."""
        assert self.service is not None
        users = self._users.get(pub.channel)
        if users is None:
            parsed = parse_channel(pub.channel)
            users = tuple(sorted(parsed.users)) if parsed is not None else ()
            if len(self._users) > CACHED_CHANNELS:
                self._users.clear()
            self._users[pub.channel] = users
        if users:
            self.service.on_publication(pub.channel, users, pub.offset, pub.data, pub.timestamp)

    def senders(self) -> list[str]:
        """The workers that share the sending of push messages: the live, settled ones
        (those the election counts), or, while none has settled (a whole cluster just
        started), every live one."""
        view = self._view
        settled = [worker for _, worker, _ in view.electors(self._monotonic())]
        return settled or [self._worker, *view.worker_ids()]

"""Unit-test doubles: token minting, a fake session host and a recording subscriber.

Nothing here opens a socket or needs an event loop; the fake host wires the real hub,
history and token verifier the way the node does, with a settable log head and epoch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jwt
import orjson

from tidings.auth import ConnectionClaims, SubscriptionClaims, TokenVerifier
from tidings.channels import ChannelName
from tidings.clientinfo import ClientInfo
from tidings.codes import DisconnectCode
from tidings.config import (
    AuthSettings,
    ChannelOptions,
    ClientSettings,
    NamespaceSettings,
    Settings,
)
from tidings.history import History
from tidings.hub import Hub
from tidings.presence import Presence
from tidings.protocol.messages import RecoverPosition
from tidings.protocol.session import Session, SubscribeOutcome
from tidings.publication import ChannelEvent, Publication
from tidings.subscription import HistoryPage, Subscriber

#: A 32-byte HMAC secret (the minimum the config accepts).
SECRET = "test-secret-0123456789abcdefghij"
#: Wall-clock time at import; tokens are minted around it (PyJWT checks iat/nbf against
#: the real clock, so token times must stay near the real present).
WALL = float(int(time.time()))


def token(
    sub: str | None = "alice", *, secret: str = SECRET, alg: str = "HS256", **claims: Any
) -> str:
    """A signed JWT with ``sub`` and any extra claims (``exp=None`` leaves exp out)."""
    payload: dict[str, Any] = {"iat": int(WALL) - 1}
    if sub is not None:
        payload["sub"] = sub
    payload.update({k: v for k, v in claims.items() if v is not None})
    return jwt.encode(payload, secret, algorithm=alg)


def settings(
    *,
    client: ClientSettings | None = None,
    channels: ChannelOptions | None = None,
    namespaces: list[NamespaceSettings] | None = None,
    auth: AuthSettings | None = None,
) -> Settings:
    """Settings for session tests: a few namespaces that exercise every permission rule."""
    if namespaces is None:
        namespaces = [
            NamespaceSettings(name="private", require_subscription_token=True),
            NamespaceSettings(name="nohistory", history_size=0),
            NamespaceSettings(name="closed", allow_subscribe=False),
            NamespaceSettings(name="public", allow_anonymous=True),
        ]
    return Settings(
        auth=auth or AuthSettings(hmac_secret=SECRET),
        client=client or ClientSettings(),
        channels=channels or ChannelOptions(),
        namespaces=namespaces,
    )


class Sink:
    """A subscriber that records what the hub hands it."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.pubs: list[Publication] = []
        self.events: list[ChannelEvent] = []

    def deliver(self, pub: Publication) -> None:
        self.pubs.append(pub)

    def deliver_event(self, event: ChannelEvent) -> None:
        self.events.append(event)

    def __repr__(self) -> str:
        return f"Sink({self.name!r})"


class FakeHost:
    """A session host backed by a real hub, history and verifier; records admissions."""

    def __init__(
        self,
        config: Settings | None = None,
        *,
        anonymous: bool = False,
        clock: Callable[[], float] | None = None,
        epoch: str = "ep1",
    ) -> None:
        self.settings = config or settings()
        self.now = WALL
        self.verifier = TokenVerifier(self.settings.auth, clock or (lambda: self.now))
        self.history = History()
        self.hub = Hub(self.history)
        self.epoch = epoch
        self.head = 0
        self.anonymous = anonymous
        self.refuse: DisconnectCode | None = None
        self.admitted: list[Session] = []
        self.released: list[Session] = []
        self.errors: list[int] = []
        #: Proxy events the backend answers ("connect", "refresh", "rpc"), and the RPC
        #: methods it takes (empty: every one).
        self.proxied: set[str] = set()
        self.rpc_methods: set[str] = set()
        self.subscribe_calls: list[tuple[Subscriber, str, RecoverPosition | None]] = []
        #: Channels whose recoveries the fake says need the log (a RecoverCall).
        self.log_recovers: set[str] = set()
        self.history_calls: list[tuple[str, int, RecoverPosition | None, bool]] = []
        self.presence_view = Presence(15.0)
        #: channel -> subscriber -> (info, push_join_leave), as the session tracked them.
        self.tracked: dict[str, dict[Subscriber, tuple[ClientInfo, bool]]] = {}

    # SessionHost
    def authenticate(self, token: str) -> ConnectionClaims:
        return self.verifier.connection(token)

    def verify_subscription(
        self, token: str, channel: str, user: str, client: str
    ) -> SubscriptionClaims:
        return self.verifier.subscription(token, channel, user, client)

    def channel_options(self, channel: ChannelName) -> ChannelOptions | None:
        return self.settings.namespace(channel.namespace)

    def anonymous_allowed(self) -> bool:
        return self.anonymous

    def admit(self, session: Session) -> DisconnectCode | None:
        if self.refuse is not None:
            return self.refuse
        self.admitted.append(session)
        return None

    def subscribe(
        self, sub: Subscriber, channel: str, recover: RecoverPosition | None
    ) -> SubscribeOutcome:
        self.subscribe_calls.append((sub, channel, recover))
        options = self._options(channel)
        recovery = self.hub.subscribe(
            sub,
            channel,
            recover,
            epoch=self.epoch,
            head=self.head,
            size=options.history_size,
            ttl=options.history_ttl,
            now=self.now,
        )
        recoverable = options.history_size > 0 and options.history_ttl > 0
        return SubscribeOutcome(self.epoch, self.head, recoverable, recovery)

    def recovers_from_log(self, channel: str, position: RecoverPosition) -> bool:
        return channel in self.log_recovers

    def unsubscribe(self, sub: Subscriber, channel: str) -> None:
        self.hub.unsubscribe(sub, channel)
        entry = self.tracked.get(channel, {}).pop(sub, None)
        if entry is not None:
            self.presence_view.remove_local(channel, entry[0].client)

    def track(self, sub: Subscriber, channel: str, info: ClientInfo, push_join_leave: bool) -> None:
        self.tracked.setdefault(channel, {})[sub] = (info, push_join_leave)
        self.presence_view.add_local(channel, info)

    def presence(self, channel: str) -> dict[str, ClientInfo]:
        return self.presence_view.members(channel)

    def release(self, session: Session) -> None:
        self.released.append(session)

    def count_error(self, code: int) -> None:
        self.errors.append(code)

    def read_history(
        self, channel: str, limit: int, since: RecoverPosition | None, reverse: bool
    ) -> HistoryPage | None:
        self.history_calls.append((channel, limit, since, reverse))
        options = self._options(channel)
        return self.history.read(
            channel,
            limit=limit,
            since=since,
            reverse=reverse,
            epoch=self.epoch,
            head=self.head,
            size=options.history_size,
            ttl=options.history_ttl,
            now=self.now,
        )

    def proxies(self, event: str, method: str | None = None) -> bool:
        if event == "rpc" and method is not None and self.rpc_methods:
            return "rpc" in self.proxied and method in self.rpc_methods
        return event in self.proxied

    # test helpers
    def _options(self, channel: str) -> ChannelOptions:
        namespace = channel.partition(":")[0] if ":" in channel else ""
        options = self.settings.namespace(namespace)
        assert options is not None
        return options

    def publish(self, channel: str, data: object, *, offset: int | None = None) -> Publication:
        """Appends one event at the next position (or ``offset``) and fans it out."""
        self.head = offset if offset is not None else self.head + 1
        pub = Publication(channel, self.head, orjson.dumps(data), self.now)
        options = self._options(channel)
        self.hub.publish(pub, size=options.history_size, ttl=options.history_ttl, now=self.now)
        return pub


#: The session's monotonic clock at the start of every test.
T0 = 1000.0


class Client:
    """One session with its sink, fed JSON commands and read back as parsed messages."""

    def __init__(
        self,
        host: FakeHost,
        *,
        bidirectional: bool = True,
        name: str = "",
        now: float = T0,
    ) -> None:
        self.host = host
        self.sink = Sink(name)
        self.start = now
        self.session = Session(
            host,
            self.sink,
            host.settings.client,
            now,
            bidirectional=bidirectional,
            wall_clock=WALL + (now - T0),
        )

    def raw(self, frame: str | bytes, at: float = T0) -> list[bytes]:
        """Feeds a frame; returns the raw messages produced."""
        self.session.receive(frame, at)
        return self.session.take_output()

    def send(self, *commands: dict[str, Any], at: float = T0) -> list[dict[str, Any]]:
        """Feeds the commands as one newline-joined frame; returns the parsed replies."""
        frame = "\n".join(orjson.dumps(c).decode() for c in commands)
        return [orjson.loads(m) for m in self.raw(frame, at)]

    def tick(self, at: float) -> list[bytes]:
        self.session.tick(at)
        return self.session.take_output()

    def connect(self, tok: str | None = None, *, cid: int = 1, **extra: Any) -> dict[str, Any]:
        """Connects with ``tok`` (a fresh token of alice by default); returns the result."""
        body: dict[str, Any] = {"token": token() if tok is None else tok, **extra}
        replies = self.send({"id": cid, "connect": body})
        assert self.session.close_code is None, self.session.close_code
        assert len(replies) == 1 and replies[0]["id"] == cid, replies
        result: dict[str, Any] = replies[0]["connect"]
        return result


def session_of(user: str) -> Session:
    """A bare session of ``user`` that the node can admit and release (no protocol)."""
    session = Session.__new__(Session)
    session.user = user
    session._subscriber = None  # the node keeps each session's handle for server commands
    return session

"""Per-target client sessions: what to send after the WebSocket opens and how to read replies.

Each session is sans-I/O. :meth:`Session.opening` gives the text messages to send once the
handshake is done; :meth:`Session.feed` takes one received text message, appends the event
bodies it carried (decoded JSON objects, as published) to ``events`` and the text messages
to send back to ``replies``. A session is ``ready`` once it is subscribed, which is when the
load generator counts the connection as made.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import jwt
import orjson

__all__ = [
    "BaselineSession",
    "Session",
    "SessionError",
    "StompSession",
    "TidingsSession",
    "channel_for",
    "routing_key_for",
]

Events = list[dict[str, Any]]
_loads = orjson.loads


class SessionError(Exception):
    """The target refused or ended the session at the application level."""


def channel_for(user: int | None) -> str:
    """Return the tidings channel of a user, or the broadcast channel for ``None``."""
    return "bench" if user is None else f"user#{user}"


def routing_key_for(user: int | None) -> str:
    """Return the AMQP routing key of a user's events, or of broadcast events for ``None``."""
    return "bench" if user is None else f"user.{user}"


class Session:
    """Base class: a client session of one target, bound to one user (or to broadcast)."""

    path: ClassVar[str] = "/"
    # Seconds between client keep-alives; None when the protocol needs none.
    keepalive_s: ClassVar[float | None] = None
    __slots__ = ("ready", "user")

    def __init__(self, user: int | None) -> None:
        self.user = user
        self.ready = False

    def opening(self) -> list[bytes]:
        """Return the text messages to send right after the handshake."""
        return []

    def keepalive(self) -> bytes:
        """The text message to send every :attr:`keepalive_s` seconds."""
        return b""

    def feed(self, text: bytes, events: Events, replies: list[bytes]) -> None:
        """Read one text message from the server.

        Raises:
            SessionError: the server refused the session or closed it.
        """
        raise NotImplementedError


class BaselineSession(Session):
    """The seed's design: no handshake, every text message is one event body."""

    path = "/ws"
    __slots__ = ()

    def __init__(self, user: int | None) -> None:
        super().__init__(user)
        # The seed registers the listener in open(), which Tornado calls as it answers 101.
        self.ready = True

    def feed(self, text: bytes, events: Events, replies: list[bytes]) -> None:
        events.append(orjson.loads(text))


class TidingsSession(Session):
    """Centrifugo client protocol v2 (JSON): connect with a JWT, subscribe, answer pings.

    It keeps the stream position it has seen (``epoch`` from the subscribe reply, ``offset``
    of the last publication), so that a cut connection can come back with
    ``recover_from=(offset, epoch)``: its subscribe then asks for ``recover: true`` from
    there, and ``recovered`` tells whether the server replayed what was missed (the replayed
    publications count as events).
    """

    path = "/connection/websocket"
    __slots__ = ("_recover_from", "_token", "epoch", "offset", "recovered", "replayed")

    def __init__(
        self, user: int | None, token: str, recover_from: tuple[int, str] | None = None
    ) -> None:
        super().__init__(user)
        self._token = token
        self._recover_from = recover_from
        self.offset: int | None = None
        self.epoch: str | None = None
        #: Recovering sessions: the server's ``recovered`` flag once subscribed.
        self.recovered: bool | None = None
        #: Recovering sessions: publications replayed in the subscribe reply.
        self.replayed = 0

    @staticmethod
    def make_token(sub: int, secret: str, ttl_s: int = 3600) -> str:
        """Mint the HS256 connection token of user ``sub``, valid for ``ttl_s`` seconds."""
        claims = {"sub": str(sub), "exp": int(time.time()) + ttl_s}
        return jwt.encode(claims, secret, algorithm="HS256")

    def opening(self) -> list[bytes]:
        # The JS SDK sends connect and subscribe in one frame; the server must take them in order.
        connect = orjson.dumps({"id": 1, "connect": {"token": self._token}})
        sub: dict[str, Any] = {"channel": channel_for(self.user)}
        if self._recover_from is not None:
            offset, epoch = self._recover_from
            sub.update(recover=True, offset=offset, epoch=epoch)
        subscribe = orjson.dumps({"id": 2, "subscribe": sub})
        return [connect + b"\n" + subscribe]

    def _publication(self, pub: dict[str, Any], events: Events) -> None:
        events.append(pub["data"])
        offset = pub.get("offset")
        if offset is not None:
            self.offset = offset

    def feed(self, text: bytes, events: Events, replies: list[bytes]) -> None:
        # A frame of a broadcast carries many newline-joined pushes: parsed as one JSON
        # array, one call instead of one per line (JSON strings hold no raw newline, so the
        # newlines are only separators). Empty lines make it invalid: then line by line.
        try:
            messages = _loads(b"[" + text.replace(b"\n", b",") + b"]")
        except orjson.JSONDecodeError:
            messages = [_loads(line) for line in text.split(b"\n") if line]
        for msg in messages:
            push = msg.get("push")
            if push is not None:
                pub = push.get("pub")
                if pub is not None:
                    self._publication(pub, events)
                elif "disconnect" in push:
                    raise SessionError(f"server disconnect {push['disconnect']}")
            elif not msg:
                replies.append(b"{}")
            else:
                self._reply(msg, events)

    def _reply(self, msg: dict[str, Any], events: Events) -> None:
        if "error" in msg:
            raise SessionError(f"reply {msg.get('id')}: {msg['error']}")
        if msg.get("id") == 2:
            result = msg.get("subscribe") or {}
            if result.get("epoch") is not None:
                self.epoch = result["epoch"]
            if self._recover_from is not None:
                self.recovered = bool(result.get("recovered"))
                replayed = result.get("publications") or []
                self.replayed = len(replayed)
                for pub in replayed:
                    self._publication(pub, events)
            if self.offset is None and result.get("offset") is not None:
                self.offset = result["offset"]
            self.ready = True


class StompSession(Session):
    """RabbitMQ Web-STOMP: STOMP 1.2 frames inside WebSocket text messages."""

    path = "/ws"
    # Web-STOMP (cowboy) closes a connection that sent nothing for 60 s, so the client
    # heart-beats as stomp.js does by default.
    keepalive_s = 10.0
    __slots__ = ("_exchange",)

    def __init__(self, user: int | None, exchange: str) -> None:
        super().__init__(user)
        self._exchange = exchange

    def opening(self) -> list[bytes]:
        return [
            b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n"
            b"heart-beat:10000,0\n\n\x00"
        ]

    def keepalive(self) -> bytes:
        return b"\n"

    def feed(self, text: bytes, events: Events, replies: list[bytes]) -> None:
        for frame in text.split(b"\x00"):
            # Frames may be preceded by heart-beat end-of-lines.
            frame = frame.lstrip(b"\r\n")
            if not frame:
                continue
            command, _, rest = frame.partition(b"\n")
            headers, _, body = rest.partition(b"\n\n")
            if command == b"MESSAGE":
                events.append(orjson.loads(body))
            elif command == b"CONNECTED":
                destination = f"/exchange/{self._exchange}/{routing_key_for(self.user)}"
                replies.append(
                    f"SUBSCRIBE\nid:0\ndestination:{destination}\nack:auto\nreceipt:sub\n\n\x00"
                    .encode()
                )
            elif command == b"RECEIPT":
                self.ready = True
            elif command == b"ERROR":
                raise SessionError(f"STOMP ERROR {headers.decode(errors='replace')!r}")

"""The typed settings: one frozen dataclass per section of the TOML file.

A field's metadata tells the loader how to read it (``kind``: a duration or a size), its
bounds (``min``, ``max``) and whether it is a secret (hidden by :func:`tidings.config.masked`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "SECTIONS",
    "AmqpSettings",
    "ApiSettings",
    "AuthSettings",
    "ChannelOptions",
    "ClientSettings",
    "ClusterSettings",
    "LedgerSettings",
    "NamespaceSettings",
    "ProxySettings",
    "RecoverySettings",
    "ServerSettings",
    "Settings",
    "WebPushSettings",
]


def _duration(default: float, *, minimum: float = 0.0) -> Any:
    return field(default=default, metadata={"kind": "duration", "min": minimum})


def _size(default: int, *, minimum: int = 1) -> Any:
    return field(default=default, metadata={"kind": "size", "min": minimum})


def _secret(default: str | None = None) -> Any:
    return field(default=default, metadata={"secret": True})


def _bounded(default: int, minimum: int, maximum: int | None = None) -> Any:
    return field(default=default, metadata={"min": minimum, "max": maximum})


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """The HTTP side: address, processes, origins, demo mode."""

    host: str = "127.0.0.1"
    port: int = _bounded(8888, 0, 65535)
    #: Processes sharing the port; 0 means one per core when RabbitMQ is configured, else 1.
    workers: int = _bounded(0, 0, 256)
    #: Origins allowed to open WebSocket/SSE connections; empty means same-origin only.
    #: ``*`` allows any origin (for development only).
    allowed_origins: list[str] = field(default_factory=list)
    #: Demo mode: serves token minting for the demo page and may run without a secret.
    demo: bool = False
    shutdown_timeout: float = _duration(10.0)
    log_level: str = "info"
    log_format: str = "text"


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """How connection and subscription tokens are verified."""

    hmac_secret: str | None = _secret()
    #: PEM text or a path to a PEM file holding an RSA or ECDSA public key.
    public_key: str | None = None
    audience: str | None = None
    issuer: str | None = None
    #: Tolerated clock difference when checking ``exp``/``nbf``.
    leeway: float = _duration(0.0)


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """The server API (``/api/*``)."""

    key: str | None = _secret()


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Per-connection protocol timers and limits."""

    ping_interval: float = _duration(25.0, minimum=1.0)
    pong_timeout: float = _duration(10.0, minimum=1.0)
    #: A connection that sends no connect command within this time is closed (3502).
    stale_timeout: float = _duration(15.0, minimum=1.0)
    #: Grace after token expiry before the connection is closed (3005) if not refreshed.
    expired_close_delay: float = _duration(25.0)
    max_frame_bytes: int = _size(65536, minimum=256)
    max_commands_per_frame: int = _bounded(100, 1)
    max_subscriptions: int = _bounded(128, 1)
    #: Unsent bytes at which a connection is cut with 3008 (slow).
    max_queue_bytes: int = _size(1 << 20, minimum=1024)
    #: 0 means no limit.
    max_connections: int = _bounded(0, 0)
    max_connections_per_user: int = _bounded(100, 0)
    #: New connections accepted per client IP per second; 0 means no limit.
    connections_per_ip_per_second: int = _bounded(50, 0)
    #: Most publications one client ``history`` call returns (a larger or negative
    #: ``limit`` is cut to this); the server API is bounded by ``history_size`` only.
    history_max_limit: int = _bounded(300, 1)
    #: Development only: connections without a token are accepted, and every client may
    #: subscribe to and read the history of any channel of a known namespace.
    insecure: bool = False
    #: Lets ``insecure`` run on a non-loopback ``server.host``; refused otherwise.
    insecure_on_public_host: bool = False


@dataclass(frozen=True, slots=True)
class ChannelOptions:
    """What is allowed on the channels of a namespace, and how much history they keep."""

    history_size: int = _bounded(100, 0, 1_000_000)
    history_ttl: float = _duration(300.0)
    #: Most publications one recovery from the log (beyond the history window) may give;
    #: a client that missed more is told ``recovered: false``. 0: recover from the window
    #: only.
    recovery_max_publications: int = _bounded(10_000, 0, 1_000_000)
    #: Authenticated clients may subscribe by themselves (user-limited channels always may).
    allow_subscribe: bool = True
    #: A subscription token is needed to subscribe.
    require_subscription_token: bool = False
    #: Connections without a user (``sub`` "") may subscribe here.
    allow_anonymous: bool = False
    #: Clients subscribed to a channel may read its history (``history`` command).
    allow_history_for_subscriber: bool = False
    #: Clients may read the history of any channel they could subscribe to by themselves,
    #: subscribed or not.
    allow_history_for_client: bool = False
    #: Subscriptions without a subscription token are decided by the application's backend
    #: (``proxy.subscribe_endpoint``) instead of the options above.
    proxy_subscribe: bool = False
    # --- presence and join/leave (Centrifugo's names and meanings) ---
    #: Keep the cluster-wide set of subscribers (``presence``, ``presence_stats``).
    presence: bool = False
    #: Announce subscribers joining and leaving (``join``/``leave`` pushes).
    join_leave: bool = False
    #: Push join/leave to every subscriber, not only to those who asked for them.
    force_push_join_leave: bool = False
    #: Subscribers of a channel may ask its presence (and ask for join/leave pushes).
    allow_presence_for_subscriber: bool = False
    #: Any connection with a user may ask presence, subscribed or not.
    allow_presence_for_client: bool = False
    #: The two options above also admit connections without a user.
    allow_presence_for_anonymous: bool = False
    # --- client publish ---
    #: Subscribers of a channel may publish to it.
    allow_publish_for_subscriber: bool = False
    #: Any connection with a user may publish, subscribed or not.
    allow_publish_for_client: bool = False
    #: The two options above also admit connections without a user.
    allow_publish_for_anonymous: bool = False
    #: Publications are decided (and their data possibly replaced) by the application's
    #: backend (``proxy.publish_endpoint``) instead of the three options above.
    proxy_publish: bool = False
    #: Subscribing and unsubscribing are events for the application
    #: (``subscription.subscribed`` / ``unsubscribed`` on ``amqp.events_exchange``).
    lifecycle_events: bool = False
    # --- web push ---
    #: A publication to a user-limited channel (``name#alice``) reaches each listed user
    #: who has no live connection in the cluster as a Web Push message (``[web_push]``).
    web_push: bool = False


@dataclass(frozen=True, slots=True)
class NamespaceSettings(ChannelOptions):
    """Options of the channels ``name:...``."""

    name: str = ""


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """The application's backend, asked over HTTP with Centrifugo's proxy JSON.

    An endpoint left unset turns that proxy off. Timeouts cover the whole request.
    """

    #: Authenticates connections that come without a token.
    connect_endpoint: str | None = None
    connect_timeout: float = _duration(1.0, minimum=0.001)
    #: Extends (or ends) connections the connect proxy gave an ``expire_at``.
    refresh_endpoint: str | None = None
    refresh_timeout: float = _duration(1.0, minimum=0.001)
    #: Decides subscriptions in namespaces with ``proxy_subscribe``.
    subscribe_endpoint: str | None = None
    subscribe_timeout: float = _duration(1.0, minimum=0.001)
    #: Answers the clients' ``rpc`` commands.
    rpc_endpoint: str | None = None
    rpc_timeout: float = _duration(1.0, minimum=0.001)
    #: Decides client publications in namespaces with ``proxy_publish``.
    publish_endpoint: str | None = None
    publish_timeout: float = _duration(1.0, minimum=0.001)
    #: RPC methods forwarded to ``rpc_endpoint``; empty forwards every method. Others are
    #: answered 104 (method not found).
    rpc_methods: list[str] = field(default_factory=list)
    #: Headers of the client's HTTP request copied into every proxy request (e.g.
    #: ``Cookie``, ``Authorization``); compared without regard to case.
    http_headers: list[str] = field(default_factory=list)
    #: Seconds a connection is given when the refresh proxy fails, before it is asked again.
    refresh_retry: float = _duration(60.0, minimum=1.0)


@dataclass(frozen=True, slots=True)
class AmqpSettings:
    """RabbitMQ as the source and the log; with no ``url`` the embedded memory log is used."""

    url: str | None = _secret()
    #: Several nodes of one RabbitMQ cluster, tried in turn when one cannot be reached or
    #: goes away (``amqp.url``, when set too, is tried first; when not, it is the first).
    urls: list[str] = field(default_factory=list, metadata={"secret": True})
    exchange: str = "tidings"
    exchange_type: str = "topic"
    exchange_durable: bool = True
    #: Declare the exchange when it does not exist (tidings never redeclares a different one).
    declare_exchange: bool = True
    bindings: list[str] = field(default_factory=lambda: ["#"])
    stream: str = "tidings.log"
    stream_max_age: float = _duration(86400.0, minimum=1.0)
    stream_max_bytes: int = _size(1 << 30)
    #: Nodes holding a copy of the stream (``x-initial-cluster-size``); 0 leaves it to
    #: RabbitMQ, which puts one on every node of the cluster.
    stream_replicas: int = _bounded(0, 0, 255)
    quarantine_exchange: str | None = None
    max_message_bytes: int = _size(65536)
    prefetch: int = _bounded(1000, 1, 65535)
    #: How the stream is read: ``stream`` (RabbitMQ's stream protocol, the
    #: ``rabbitmq_stream`` plugin, about twice as fast), ``amqp`` (AMQP 0-9-1 only), or
    #: ``auto`` (the stream protocol when the broker offers it, else AMQP 0-9-1).
    reader: str = "auto"
    #: Port of the stream protocol on the broker (5552; 5551 with TLS).
    stream_port: int = _bounded(5552, 1, 65535)
    #: The stream protocol's addresses, ``rabbitmq-stream://user:password@host:port/vhost``
    #: (``rabbitmq-stream+tls://`` for TLS), when they are not the AMQP hosts on
    #: ``stream_port`` (several nodes on one machine, a proxy on another port).
    stream_urls: list[str] = field(default_factory=list, metadata={"secret": True})
    #: Keep retrying an unreachable broker at start-up instead of exiting.
    retry_on_start: bool = False
    #: Routing key used by ``/api/publish`` and ``tidings publish``.
    publish_routing_key: str = "tidings.api"
    #: Pause between reconnection attempts to a lost broker.
    reconnect_interval: float = _duration(1.0, minimum=0.1)
    #: How often nodes write an epoch beacon into the stream (see tidings.log.epoch).
    beacon_interval: float = _duration(30.0, minimum=1.0)
    #: The exchange events for the application go to (user online/offline, subscribed,
    #: …; see tidings.events); declared as a durable topic exchange. Unset: no events.
    events_exchange: str | None = None
    #: First word of every event's routing key (``tidings.user.online``); "" for none.
    events_prefix: str = "tidings"
    #: Events kept while the broker is away or has not confirmed them; more are dropped
    #: and counted (tidings_outbox_events_total{result="dropped_overflow"}).
    events_buffer: int = _bounded(10_000, 1, 10_000_000)

    @property
    def addresses(self) -> list[str]:
        """Every broker to try, in order: ``url``, then the other ``urls``."""
        first = [self.url] if self.url else []
        return first + [u for u in self.urls if u != self.url]


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """State shared between workers and nodes through RabbitMQ (presence, join/leave)."""

    #: The fanout exchange of the control plane; "" means ``<amqp.exchange>.control``.
    control_exchange: str = ""
    #: How often every worker sends its whole presence set (its heartbeat).
    heartbeat_interval: float = _duration(5.0, minimum=0.5)
    #: A worker not heard from for this long is presumed dead: its clients leave.
    presence_ttl: float = _duration(15.0, minimum=1.0)


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    """The ledger's stream (with RabbitMQ; see tidings.log.ledger): a small table every
    node holds whole, for Web Push subscriptions and read positions."""

    #: The stream queue the ledger's writes go to; "" means ``<amqp.stream>.state``.
    stream: str = ""
    #: The stream's retention (``x-max-length-bytes``). A snapshot of the table is written
    #: every quarter of it, and the table may take an eighth of it.
    max_bytes: int = _size(128 << 20, minimum=64 << 10)

    def stream_name(self, amqp: AmqpSettings) -> str:
        """The stream's name, given the ``[amqp]`` settings."""
        return self.stream or f"{amqp.stream}.state"


@dataclass(frozen=True, slots=True)
class RecoverySettings:
    """Recoveries from the log: positions older than a channel's history window, read
    again from the stream (see tidings.recovery)."""

    #: Longest a recovery from the log may take, waiting for a read included; past it the
    #: client is told ``recovered: false``. Below the SDK's command timeout (5 s), which
    #: the subscribe reply must beat.
    max_seconds: float = _duration(4.0, minimum=0.01)
    #: Most log records a recovery may read (its position's distance to the head); farther
    #: back is ``recovered: false`` at once.
    max_records: int = _bounded(1_000_000, 1)
    #: Reads of the log for recoveries at the same time; the recoveries waiting meanwhile
    #: share the next read.
    max_scans: int = _bounded(2, 1, 8)


@dataclass(frozen=True, slots=True)
class WebPushSettings:
    """Web Push (RFC 8030/8291/8292) to users whose tabs are all closed; off without a key."""

    #: The VAPID private key (P-256): PEM text, a path to a PEM file, or the raw 32-byte
    #: key in base64url (``tidings webpush-keys`` prints one). Never logged.
    vapid_private_key: str | None = _secret()
    #: Who runs this application server, for the push services: ``mailto:`` or https URL.
    vapid_subject: str = ""
    #: How long a push service keeps a message for a device that is offline (``TTL``).
    ttl: float = _duration(86400.0, minimum=0.0)
    #: ``Urgency`` of every message: ``very-low``, ``low``, ``normal`` or ``high``.
    urgency: str = "normal"
    #: Attempts after the first for a push answered 429 or 5xx, or not answered at all.
    retries: int = _bounded(3, 0, 10)
    #: Pause before the first retry when the push service gives no ``Retry-After``;
    #: doubled at each further retry.
    retry_backoff: float = _duration(1.0, minimum=0.01)
    #: Longest pause before a retry; a ``Retry-After`` beyond it ends the attempts.
    max_retry_delay: float = _duration(300.0, minimum=0.01)
    #: Pushes waiting to be sent (retries included); more are dropped and counted.
    queue_size: int = _bounded(1000, 1, 1_000_000)
    #: Requests to push services in flight at once.
    concurrency: int = _bounded(8, 1, 256)
    #: A request to a push service that has not answered within this time is retried.
    request_timeout: float = _duration(10.0, minimum=0.1)
    #: Push subscriptions kept per user (a browser profile each); registering one more
    #: is refused.
    max_subscriptions_per_user: int = _bounded(10, 1, 1000)
    #: Accept push endpoints on plain http and on loopback, private, link-local or other
    #: non-public addresses. For tests and closed networks only: a page could otherwise
    #: make tidings send requests into the network it runs in.
    allow_private_endpoints: bool = False

    @property
    def enabled(self) -> bool:
        """Whether Web Push is configured (a VAPID key is set)."""
        return self.vapid_private_key is not None


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of a tidings node."""

    server: ServerSettings = field(default_factory=ServerSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    client: ClientSettings = field(default_factory=ClientSettings)
    channels: ChannelOptions = field(default_factory=ChannelOptions)
    namespaces: list[NamespaceSettings] = field(default_factory=list)
    amqp: AmqpSettings = field(default_factory=AmqpSettings)
    proxy: ProxySettings = field(default_factory=ProxySettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    ledger: LedgerSettings = field(default_factory=LedgerSettings)
    recovery: RecoverySettings = field(default_factory=RecoverySettings)
    web_push: WebPushSettings = field(default_factory=WebPushSettings)
    #: Routing rules, validated by :mod:`tidings.router`.
    routes: list[dict[str, Any]] = field(default_factory=list)

    def namespace(self, name: str) -> ChannelOptions | None:
        """Options for namespace ``name`` ("" is the top level), or None when unknown."""
        if not name:
            return self.channels
        for ns in self.namespaces:
            if ns.name == name:
                return ns
        return None

    @property
    def effective_workers(self) -> int:
        """Worker processes to run: ``server.workers``, or the core count with RabbitMQ."""
        if self.server.workers:
            return self.server.workers
        if self.amqp.url:
            import os

            return os.cpu_count() or 1
        return 1


#: The sections of the file that are one table each, by name (``namespaces`` and
#: ``routes`` are arrays of tables).
SECTIONS: dict[str, type[Any]] = {
    "server": ServerSettings,
    "auth": AuthSettings,
    "api": ApiSettings,
    "client": ClientSettings,
    "channels": ChannelOptions,
    "amqp": AmqpSettings,
    "proxy": ProxySettings,
    "cluster": ClusterSettings,
    "ledger": LedgerSettings,
    "recovery": RecoverySettings,
    "web_push": WebPushSettings,
}

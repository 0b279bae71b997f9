"""The one settings object: TOML file, then ``TIDINGS_*`` environment variables, then CLI flags.

Every setting has a dotted key (``section.name``); its environment variable is
``TIDINGS_SECTION_NAME`` and a wrong value is refused at start-up with that key and the
reason. Nothing else in tidings reads the environment.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from tidings.channels import NameKind, name_problem
from tidings.errors import ConfigError

__all__ = [
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
    "is_loopback",
    "load_settings",
    "masked",
]

ENV_PREFIX = "TIDINGS_"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1,
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 10**6,
    "mib": 2**20,
    "gb": 10**9,
    "gib": 2**30,
}


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


_SECTIONS: dict[str, type[Any]] = {
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


def _parse_duration(key: str, value: object) -> float:
    if isinstance(value, bool):
        raise ConfigError(key, "expected a duration like 30, '30s', '5m', '24h'")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise ConfigError(key, f"expected a duration like 30, '30s', '5m', '24h', got {value!r}")


def _parse_size(key: str, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            return int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()]
    raise ConfigError(key, f"expected a size like 65536, '64KiB', '1MiB', got {value!r}")


def _coerce(key: str, hint: Any, meta: Mapping[str, Any], value: object, from_text: bool) -> Any:
    """Turns a raw TOML/env/CLI value into the field's type, or raises ConfigError."""
    kind = meta.get("kind")
    if kind == "duration":
        result: Any = _parse_duration(key, value)
    elif kind == "size":
        result = _parse_size(key, value)
    else:
        origin = get_origin(hint)
        args = get_args(hint)
        optional = origin in (Union, types.UnionType) and type(None) in args
        if optional:
            if value is None or (from_text and value == ""):
                return None
            hint = next(a for a in args if a is not type(None))
            origin = get_origin(hint)
        if origin is list:
            if from_text and isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(key, f"expected a list of strings, got {value!r}")
            return list(value)
        if hint is bool:
            if from_text and isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
            if not isinstance(value, bool):
                raise ConfigError(key, f"expected true or false, got {value!r}")
            return value
        if hint is int:
            if from_text and isinstance(value, str):
                try:
                    value = int(value)
                except ValueError:
                    raise ConfigError(key, f"expected a whole number, got {value!r}") from None
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(key, f"expected a whole number, got {value!r}")
            result = value
        elif hint is float:
            if from_text and isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    raise ConfigError(key, f"expected a number, got {value!r}") from None
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ConfigError(key, f"expected a number, got {value!r}")
            result = float(value)
        elif hint is str:
            if not isinstance(value, str):
                raise ConfigError(key, f"expected a string, got {value!r}")
            return value
        else:  # pragma: no cover - a field type this loader does not know is a bug here
            raise ConfigError(key, f"unsupported setting type {hint!r}")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and result < lo:
        raise ConfigError(key, f"must be at least {lo}, got {result}")
    if hi is not None and result > hi:
        raise ConfigError(key, f"must be at most {hi}, got {result}")
    return result


def _build(cls: type[Any], prefix: str, raw: Mapping[str, Any], from_text: bool) -> Any:
    """Builds section ``cls`` from ``raw``, refusing unknown keys."""
    if not isinstance(raw, Mapping):
        raise ConfigError(prefix, f"expected a table, got {raw!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}"
        if name not in fields:
            raise ConfigError(key, "unknown setting")
        values[name] = _coerce(key, hints[name], fields[name].metadata, value, from_text)
    return cls(**values)


def _from_env(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Maps ``TIDINGS_SECTION_NAME`` variables to their section and name."""
    out: dict[str, dict[str, Any]] = {}
    for var, value in env.items():
        if not var.startswith(ENV_PREFIX) or var == ENV_PREFIX + "CONFIG":
            continue
        rest = var[len(ENV_PREFIX) :].lower()
        for section, cls in _SECTIONS.items():
            if rest.startswith(section + "_"):
                name = rest[len(section) + 1 :]
                if name in {f.name for f in dataclasses.fields(cls)}:
                    out.setdefault(section, {})[name] = value
                    break
        else:
            raise ConfigError(var, "unknown environment setting")
    return out


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) can only be reached from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _validate(s: Settings) -> None:
    """Cross-field checks that no single value shows."""
    if s.server.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("server.log_level", "must be one of debug, info, warning, error")
    if s.server.log_format not in ("text", "json"):
        raise ConfigError("server.log_format", "must be 'text' or 'json'")
    for i, origin in enumerate(s.server.allowed_origins):
        if origin != "*" and not re.match(r"^https?://[^/\s]+\Z", origin):
            raise ConfigError(
                f"server.allowed_origins[{i}]",
                f"expected '*' or scheme://host[:port] without a path, got {origin!r}",
            )
    if s.auth.hmac_secret is not None and len(s.auth.hmac_secret.encode()) < 32:
        raise ConfigError("auth.hmac_secret", "must be at least 32 bytes long (RFC 7518 §3.2)")
    if s.api.key is not None and len(s.api.key) < 16:
        raise ConfigError("api.key", "must be at least 16 characters long")
    if s.client.insecure and not s.client.insecure_on_public_host and not is_loopback(
        s.server.host
    ):
        raise ConfigError(
            "client.insecure",
            f"refused on the non-loopback server.host {s.server.host!r}: insecure mode lets "
            "anyone connect without a token and read or publish anywhere; set "
            "client.insecure_on_public_host = true to force it",
        )
    keyless = not (s.auth.hmac_secret or s.auth.public_key or s.proxy.connect_endpoint)
    if not (s.server.demo or s.client.insecure) and keyless:
        raise ConfigError(
            "auth.hmac_secret",
            "no token secret or public key is set; set one (TIDINGS_AUTH_HMAC_SECRET), "
            "authenticate through the backend (proxy.connect_endpoint), "
            "or run in demo mode (--demo) or insecure mode (client.insecure), which must "
            "never face the internet",
        )
    if s.auth.public_key is not None:
        text = s.auth.public_key
        if "-----BEGIN" not in text:
            path = Path(text)
            if not path.is_file():
                raise ConfigError(
                    "auth.public_key", f"neither PEM text nor a readable file: {text}"
                )
    _validate_channel_options("channels", s.channels)
    for i, ns in enumerate(s.namespaces):
        _validate_channel_options(f"namespaces[{i}]", ns)
    if s.cluster.presence_ttl < 2 * s.cluster.heartbeat_interval:
        raise ConfigError(
            "cluster.presence_ttl",
            "must be at least twice cluster.heartbeat_interval, or one late heartbeat "
            "would make a live worker's clients leave",
        )
    names: set[str] = set()
    for i, ns in enumerate(s.namespaces):
        problem = name_problem(ns.name, NameKind.NAMESPACE)
        if problem is not None:
            raise ConfigError(f"namespaces[{i}].name", problem)
        if not re.match(r"^[A-Za-z0-9_.\-]+\Z", ns.name):
            raise ConfigError(
                f"namespaces[{i}].name",
                f"invalid namespace name {ns.name!r}: letters, digits, '_', '.' and '-' only",
            )
        if ns.name in names:
            raise ConfigError(f"namespaces[{i}].name", f"namespace {ns.name!r} defined twice")
        names.add(ns.name)
    for i, url in enumerate(s.amqp.urls):
        if not re.match(r"^amqps?://", url):
            raise ConfigError(f"amqp.urls[{i}]", "must start with amqp:// or amqps://")
    for i, url in enumerate(s.amqp.stream_urls):
        if not re.match(r"^rabbitmq-stream(\+tls)?://[^/?#]", url):
            raise ConfigError(
                f"amqp.stream_urls[{i}]",
                "must start with rabbitmq-stream:// or rabbitmq-stream+tls:// and name a host",
            )
    if s.amqp.stream_urls and s.amqp.url is None:
        raise ConfigError("amqp.stream_urls", "needs amqp.url or amqp.urls (the AMQP side)")
    if s.amqp.url is not None:
        if not re.match(r"^amqps?://", s.amqp.url):
            raise ConfigError("amqp.url", "must start with amqp:// or amqps://")
        if s.amqp.exchange_type not in ("topic", "direct", "fanout", "headers"):
            raise ConfigError("amqp.exchange_type", "must be topic, direct, fanout or headers")
        if s.amqp.reader not in ("auto", "stream", "amqp"):
            raise ConfigError("amqp.reader", "must be auto, stream or amqp")
        if not s.amqp.exchange:
            raise ConfigError("amqp.exchange", "must not be empty when amqp.url is set")
        if not s.amqp.bindings:
            raise ConfigError("amqp.bindings", "needs at least one binding pattern")
    elif s.server.workers > 1:
        raise ConfigError(
            "server.workers",
            "the embedded memory log serves one process only; configure RabbitMQ "
            "(amqp.url) to run several workers",
        )
    _validate_events(s)
    _validate_ledger(s)
    _validate_proxy(s)
    _validate_web_push(s)
    # The router owns the rule syntax; importing here keeps one validation entry point.
    from tidings.router import parse_routes

    parse_routes(s.routes)


def _option_sections(s: Settings) -> list[tuple[str, ChannelOptions]]:
    """The top-level channel options and every namespace's, with their key prefix."""
    return [("channels", s.channels)] + [
        (f"namespaces[{i}]", ns) for i, ns in enumerate(s.namespaces)
    ]


def _validate_events(s: Settings) -> None:
    """The events exchange needs RabbitMQ, is not the one the stream reads, and what asks
    for events has somewhere to send them."""
    amqp = s.amqp
    if amqp.events_exchange is not None:
        if not amqp.events_exchange:
            raise ConfigError("amqp.events_exchange", "must not be empty (leave it unset)")
        if amqp.url is None:
            raise ConfigError("amqp.events_exchange", "needs amqp.url (events go to RabbitMQ)")
        if amqp.events_exchange in (amqp.exchange, amqp.quarantine_exchange):
            raise ConfigError(
                "amqp.events_exchange",
                f"must differ from amqp.exchange and amqp.quarantine_exchange, got "
                f"{amqp.events_exchange!r}: the stream reads the first, so events would "
                "come back as publications",
            )
    words = r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*\Z"
    if amqp.events_prefix and not re.match(words, amqp.events_prefix):
        raise ConfigError(
            "amqp.events_prefix",
            f"expected dot-separated words of letters, digits, '_' and '-', got "
            f"{amqp.events_prefix!r}",
        )
    for key, options in _option_sections(s):
        if options.lifecycle_events and amqp.events_exchange is None:
            raise ConfigError(f"{key}.lifecycle_events", "needs amqp.events_exchange")


#: Headers of the HTTP exchange itself, which a proxy request has of its own.
_OWN_HEADERS = frozenset(
    {
        "connection",
        "content-encoding",
        "content-length",
        "content-type",
        "expect",
        "host",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


def _validate_ledger(s: Settings) -> None:
    """The ledger's stream is a stream of its own."""
    name = s.ledger.stream_name(s.amqp)
    if name == s.amqp.stream:
        raise ConfigError(
            "ledger.stream", f"must differ from amqp.stream {s.amqp.stream!r} (the events' log)"
        )
    if not re.match(r"^[\x21-\x7e]{1,255}\Z", name):
        raise ConfigError(
            "ledger.stream", f"must be 1 to 255 printable ASCII characters, got {name!r}"
        )


def _validate_proxy(s: Settings) -> None:
    """Endpoints are http(s) URLs; what needs an endpoint has one."""
    proxy = s.proxy
    for name in ("connect", "refresh", "subscribe", "rpc", "publish"):
        url = getattr(proxy, f"{name}_endpoint")
        if url is not None and not re.match(r"^https?://[^/\s?#]+(/\S*)?\Z", url):
            raise ConfigError(f"proxy.{name}_endpoint", f"expected an http(s) URL, got {url!r}")
    if proxy.refresh_endpoint and not proxy.connect_endpoint:
        raise ConfigError(
            "proxy.refresh_endpoint",
            "only connections of the connect proxy are refreshed; set proxy.connect_endpoint",
        )
    if proxy.rpc_methods and not proxy.rpc_endpoint:
        raise ConfigError("proxy.rpc_methods", "needs proxy.rpc_endpoint")
    for i, method in enumerate(proxy.rpc_methods):
        problem = name_problem(method, NameKind.METHOD)
        if problem is not None:
            raise ConfigError(f"proxy.rpc_methods[{i}]", problem)
    for i, header in enumerate(proxy.http_headers):
        if not _HEADER_NAME.match(header):
            raise ConfigError(f"proxy.http_headers[{i}]", f"not a header name: {header!r}")
        low = header.lower()
        if low in _OWN_HEADERS or low.startswith(("sec-websocket-", "proxy-")):
            raise ConfigError(
                f"proxy.http_headers[{i}]",
                f"{header} belongs to the client's HTTP exchange, not to the client",
            )
    if proxy.connect_endpoint and proxy.connect_timeout >= s.client.stale_timeout:
        raise ConfigError(
            "proxy.connect_timeout",
            "must be below client.stale_timeout, which closes a connection still connecting",
        )
    for key, options in _option_sections(s):
        for event in ("subscribe", "publish"):
            if getattr(options, f"proxy_{event}") and not getattr(proxy, f"{event}_endpoint"):
                raise ConfigError(f"{key}.proxy_{event}", f"needs proxy.{event}_endpoint")


_URGENCIES = ("very-low", "low", "normal", "high")


def _validate_web_push(s: Settings) -> None:
    """A usable key and subject when Web Push is on; no namespace asks for it when off."""
    wp = s.web_push
    if wp.urgency not in _URGENCIES:
        raise ConfigError("web_push.urgency", f"must be one of {', '.join(_URGENCIES)}")
    if wp.max_retry_delay < wp.retry_backoff:
        raise ConfigError("web_push.max_retry_delay", "must be at least web_push.retry_backoff")
    if wp.vapid_private_key is not None:
        # The key's own module reads and checks it; late import for the same reason as the
        # router's below (one validation entry point).
        from tidings.webpush.vapid import VapidKeyError, load_key

        try:
            load_key(wp.vapid_private_key)
        except VapidKeyError as exc:
            raise ConfigError("web_push.vapid_private_key", str(exc)) from None
        subject = wp.vapid_subject
        if not re.match(r"^(mailto:[^@\s]+@[^@\s]+|https://[^/\s?#]+(/\S*)?)\Z", subject):
            raise ConfigError(
                "web_push.vapid_subject",
                f"must be a mailto: address or an https:// URL (RFC 8292 §2.1), got {subject!r}",
            )
        return
    for key, options in _option_sections(s):
        if options.web_push:
            raise ConfigError(f"{key}.web_push", "needs web_push.vapid_private_key")


def _validate_channel_options(prefix: str, options: ChannelOptions) -> None:
    """Options that mean nothing without another one are refused, not silently ignored."""
    if options.force_push_join_leave and not options.join_leave:
        raise ConfigError(f"{prefix}.force_push_join_leave", "needs join_leave = true")
    for name in (
        "allow_presence_for_subscriber",
        "allow_presence_for_client",
        "allow_presence_for_anonymous",
    ):
        if getattr(options, name) and not (options.presence or options.join_leave):
            raise ConfigError(f"{prefix}.{name}", "needs presence = true or join_leave = true")
    if options.allow_presence_for_anonymous and not (
        options.allow_presence_for_subscriber or options.allow_presence_for_client
    ):
        raise ConfigError(
            f"{prefix}.allow_presence_for_anonymous",
            "widens allow_presence_for_subscriber or allow_presence_for_client; set one",
        )
    if options.allow_publish_for_anonymous and not (
        options.allow_publish_for_subscriber or options.allow_publish_for_client
    ):
        raise ConfigError(
            f"{prefix}.allow_publish_for_anonymous",
            "widens allow_publish_for_subscriber or allow_publish_for_client; set one",
        )


def load_settings(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Builds and validates the settings.

    Args:
        path: a TOML file, or None (``TIDINGS_CONFIG`` in ``env`` names one otherwise).
        env: the environment; only ``TIDINGS_*`` variables are read.
        overrides: CLI values as dotted keys (``{"server.port": 9000}``), applied last.

    Raises:
        ConfigError: with the exact key and the reason.
    """
    env = env or {}
    raw: dict[str, Any] = {}
    path = path or env.get(ENV_PREFIX + "CONFIG") or None
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("config", f"file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("config", f"{path} is not valid TOML: {exc}") from None
    known = set(_SECTIONS) | {"namespaces", "routes"}
    for section in raw:
        if section not in known:
            raise ConfigError(section, "unknown section")

    sections: dict[str, Any] = {}
    text_values = _from_env(env)
    for name, cls in _SECTIONS.items():
        merged = dict(raw.get(name, {})) if isinstance(raw.get(name, {}), Mapping) else raw[name]
        file_part = _build(cls, name, merged, from_text=False)
        env_part = text_values.get(name, {})
        cli_part = {
            k.partition(".")[2]: v
            for k, v in (overrides or {}).items()
            if k.partition(".")[0] == name and k.partition(".")[2] and v is not None
        }
        if env_part or cli_part:
            # Later sources win field by field: file < environment < flags.
            values = {f.name: getattr(file_part, f.name) for f in dataclasses.fields(cls)}
            for part in (env_part, cli_part):
                parsed = _build(cls, name, part, from_text=True)
                values.update({k: getattr(parsed, k) for k in part})
            file_part = cls(**values)
        sections[name] = file_part
    for k in overrides or {}:
        section, _, name = k.partition(".")
        if section not in _SECTIONS or not name:
            raise ConfigError(k, "unknown setting")

    namespaces_raw = raw.get("namespaces", [])
    if not isinstance(namespaces_raw, list):
        raise ConfigError("namespaces", "expected an array of tables ([[namespaces]])")
    defaults = {
        f.name: getattr(sections["channels"], f.name) for f in dataclasses.fields(ChannelOptions)
    }
    namespaces = []
    for i, entry in enumerate(namespaces_raw):
        if not isinstance(entry, Mapping) or "name" not in entry:
            raise ConfigError(f"namespaces[{i}].name", "every namespace needs a name")
        ns = _build(NamespaceSettings, f"namespaces[{i}]", {**defaults, **entry}, from_text=False)
        namespaces.append(ns)
    routes = raw.get("routes", [])
    if not isinstance(routes, list) or not all(isinstance(r, Mapping) for r in routes):
        raise ConfigError("routes", "expected an array of tables ([[routes]])")

    amqp = sections["amqp"]
    if amqp.urls and amqp.url is None:
        # Everything that asks "is RabbitMQ configured?" reads amqp.url.
        sections["amqp"] = dataclasses.replace(amqp, url=amqp.urls[0])
    settings = Settings(namespaces=namespaces, routes=[dict(r) for r in routes], **sections)
    _validate(settings)
    return settings


def masked(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, with every secret replaced by ``***``."""

    def section(obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.metadata.get("secret") and value is not None:
                if isinstance(value, list):
                    value = [_mask_url(v) for v in value]
                else:
                    value = _mask_url(value) if f.name == "url" else "***"
            elif f.name.endswith("_endpoint") and value is not None:
                value = _mask_url(value)  # http://user:password@backend/
            out[f.name] = value
        return out

    result: dict[str, Any] = {name: section(getattr(settings, name)) for name in _SECTIONS}
    result["namespaces"] = [section(ns) for ns in settings.namespaces]
    result["routes"] = list(settings.routes)
    return result


def _mask_url(url: str) -> str:
    """Hides the password of ``amqp://user:password@host``."""
    # Up to the last "@" of the authority: a raw "@" in the password must not leak its tail.
    return re.sub(r"(://[^:/@]*:)[^/?#]*@", r"\1***@", url)

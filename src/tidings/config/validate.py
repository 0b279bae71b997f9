"""The start-up checks that no single value shows, each refusal naming its exact key."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from tidings.channels import NameKind, name_problem
from tidings.config.sections import ChannelOptions, Settings
from tidings.errors import ConfigError

__all__ = ["is_loopback", "validate"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) can only be reached from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def validate(s: Settings) -> None:
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
    if (
        s.client.insecure
        and not s.client.insecure_on_public_host
        and not is_loopback(s.server.host)
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
        # router's in validate (one validation entry point).
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

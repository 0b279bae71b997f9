"""Cross-site checks for WebSocket upgrades and event streams."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

__all__ = ["origin_allowed"]


def origin_allowed(origin: str | None, host: str | None, allowed: Sequence[str]) -> bool:
    """Whether a request from ``origin`` to ``host`` may open a connection.

    Browsers always send ``Origin`` on WebSocket upgrades and cross-site event streams, so
    a request without it comes from a non-browser client, which cross-site hijacking does
    not concern. With no allow-list only the same origin is accepted.

    Args:
        origin: the request's ``Origin`` header.
        host: the request's ``Host`` header.
        allowed: configured origins (``scheme://host[:port]``), or ``*`` for any.
    """
    if origin is None:
        return True
    if "*" in allowed:
        return True
    origin = origin.rstrip("/").lower()
    if allowed:
        return origin in (a.rstrip("/").lower() for a in allowed)
    if origin == "null" or not host:
        return False
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    return _with_port(parts.netloc, parts.scheme) == _with_port(host.lower(), parts.scheme)


def _with_port(netloc: str, scheme: str) -> str:
    has_port = "]:" in netloc if netloc.startswith("[") else ":" in netloc
    if has_port:
        return netloc
    return f"{netloc}:{443 if scheme == 'https' else 80}"

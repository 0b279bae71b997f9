"""The small hierarchy of errors tidings raises on purpose."""

from __future__ import annotations

__all__ = ["ConfigError", "TidingsError", "TokenError"]


class TidingsError(Exception):
    """Base of every error tidings raises deliberately."""


class ConfigError(TidingsError):
    """A setting is invalid; ``key`` names it exactly (``amqp.url``, ``namespaces[1].name``)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class TokenError(TidingsError):
    """A token was refused. ``expired`` tells the client it may fetch a new one and retry."""

    def __init__(self, reason: str, *, expired: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.expired = expired

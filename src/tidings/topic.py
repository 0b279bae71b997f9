"""AMQP topic patterns: whether a routing key matches ``invoice.*`` or ``audit.#``.

Shared by the router (which rule an event follows) and the RabbitMQ log (whether the
stream's bindings take a routing key), so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["topic_matches"]


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: words split on ``.``, ``*`` is one word, ``#`` zero or more."""
    return _match_words(pattern.split("."), routing_key.split("."))


def _match_words(pat: Sequence[str], key: Sequence[str]) -> bool:
    if not pat:
        return not key
    head, rest = pat[0], pat[1:]
    if head == "#":
        return any(_match_words(rest, key[i:]) for i in range(len(key) + 1))
    if not key:
        return False
    return (head in ("*", key[0])) and _match_words(rest, key[1:])

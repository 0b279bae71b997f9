"""Channel names and who may subscribe to them (pure rules, no I/O).

Conventions of the Centrifugo ecosystem:

- ``namespace:name``: the options of ``namespace`` apply (a name without ``:`` uses the
  top-level ``[channels]`` options);
- ``name#alice`` or ``name#alice,bob``: user-limited; only the users listed may subscribe,
  and no subscription token is needed;
- ``$name`` or ``namespace:$name``: private; a subscription token is always needed.
"""

from __future__ import annotations

from dataclasses import dataclass

from tidings.codes import ErrorCode
from tidings.config import ChannelOptions

__all__ = ["MAX_CHANNEL_LENGTH", "ChannelName", "check_subscribe", "parse_channel"]

MAX_CHANNEL_LENGTH = 255
NAMESPACE_SEPARATOR = ":"
USER_SEPARATOR = "#"
PRIVATE_PREFIX = "$"


@dataclass(frozen=True, slots=True)
class ChannelName:
    """A channel name taken apart."""

    name: str
    namespace: str
    #: Users allowed by a ``#`` suffix; empty when the channel is not user-limited.
    users: frozenset[str]
    private: bool

    @property
    def user_limited(self) -> bool:
        """Whether the channel names the users who may subscribe."""
        return bool(self.users)


def parse_channel(name: str) -> ChannelName | None:
    """Parses a channel name; None when it is empty, too long or has blanks."""
    if not name or len(name) > MAX_CHANNEL_LENGTH or any(c.isspace() for c in name):
        return None
    namespace, sep, rest = name.partition(NAMESPACE_SEPARATOR)
    if not sep:
        namespace, rest = "", name
    users: frozenset[str] = frozenset()
    if USER_SEPARATOR in rest:
        users = frozenset(u for u in rest.rpartition(USER_SEPARATOR)[2].split(",") if u)
        if not users:
            return None
    return ChannelName(name, namespace, users, rest.startswith(PRIVATE_PREFIX))


def check_subscribe(
    channel: ChannelName,
    options: ChannelOptions,
    user: str,
    has_valid_token: bool,
) -> ErrorCode | None:
    """Whether ``user`` may subscribe to ``channel`` on the client's own request.

    Args:
        channel: the parsed channel.
        options: its namespace's options.
        user: the connection's user ("" for anonymous).
        has_valid_token: a subscription token for this channel and user was verified.

    Returns:
        None when allowed, else the error code to answer with.
    """
    if has_valid_token:
        return None
    # Checked before the user list: a private channel needs a token even when user-limited.
    if channel.private or options.require_subscription_token:
        return ErrorCode.PERMISSION_DENIED
    if channel.user_limited:
        return None if user and user in channel.users else ErrorCode.PERMISSION_DENIED
    if not user and not options.allow_anonymous:
        return ErrorCode.PERMISSION_DENIED
    if not options.allow_subscribe:
        return ErrorCode.PERMISSION_DENIED
    return None

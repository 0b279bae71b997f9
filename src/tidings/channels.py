"""Channel names, the names inside them, and who may subscribe to them (pure rules, no I/O).

Conventions of the Centrifugo ecosystem:

- ``namespace:name``: the options of ``namespace`` apply (a name without ``:`` uses the
  top-level ``[channels]`` options);
- ``name#alice`` or ``name#alice,bob``: user-limited; only the users listed may subscribe,
  and no subscription token is needed;
- ``$name`` or ``namespace:$name``: private; a subscription token is always needed.

Every name that comes from outside (a client's subscribe, a token's ``sub``, ``channels``
and ``channel`` claims, an RPC method, an AMQP header or routing key, a route template's
result, a server API request) passes :func:`name_problem` before it is used. A name is
refused when it is not text, when it holds a control character (U+0000-U+001F,
U+007F-U+009F: NUL included) or a lone surrogate (what JSON's ``"\\ud800"`` decodes to, and
what bytes that are not UTF-8 become), or when its UTF-8 form is over the limit of its kind.
Channel names also may not be empty or hold whitespace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from tidings.codes import ErrorCode

__all__ = [
    "MAX_CHANNEL_LENGTH",
    "MAX_METHOD_LENGTH",
    "MAX_USER_LENGTH",
    "ChannelName",
    "InvalidName",
    "NameKind",
    "PresenceOptions",
    "PublishOptions",
    "SubscribeOptions",
    "channel_problem",
    "check_presence",
    "check_publish",
    "check_subscribe",
    "name_problem",
    "parse_channel",
    "read_channel",
]

#: Longest channel name, in UTF-8 bytes (Centrifugo's default ``channel_max_length``).
MAX_CHANNEL_LENGTH = 255
#: Longest user id, in UTF-8 bytes.
MAX_USER_LENGTH = 255
#: Longest RPC method name, in UTF-8 bytes.
MAX_METHOD_LENGTH = 255
NAMESPACE_SEPARATOR = ":"
USER_SEPARATOR = "#"
PRIVATE_PREFIX = "$"

# C0 controls, DEL, C1 controls and the surrogate range: nothing a name may hold.
_CONTROL = r"\x00-\x1f\x7f-\x9f\ud800-\udfff"
_BAD_CHARACTER = re.compile(f"[{_CONTROL}]")
_BAD_CHANNEL_CHARACTER = re.compile(rf"[{_CONTROL}\s]")
# A name that passes name_problem without a look at each rule: visible ASCII only.
_PLAIN = re.compile(f"[!-~]{{1,{MAX_CHANNEL_LENGTH}}}")


class NameKind(Enum):
    """What a name names: its wording in errors, its byte limit, whether blanks are refused."""

    CHANNEL = ("channel name", MAX_CHANNEL_LENGTH, True)
    NAMESPACE = ("namespace", MAX_CHANNEL_LENGTH, True)
    USER = ("user id", MAX_USER_LENGTH, False)
    #: An RPC method, forwarded to the application's backend ("" is allowed, as there).
    METHOD = ("method name", MAX_METHOD_LENGTH, False)

    def __init__(self, label: str, max_bytes: int, strict: bool) -> None:
        self.label = label
        self.max_bytes = max_bytes
        #: Channel names and namespaces may not be empty nor hold whitespace.
        self.strict = strict


class InvalidName(ValueError):
    """A name was refused; the message says which rule it broke."""


def name_problem(value: object, kind: NameKind = NameKind.CHANNEL) -> str | None:
    """Why ``value`` is not a valid name of ``kind``; None when it is valid.

    The one check every name from outside goes through (see the module's docstring).
    """
    label = kind.label
    if not isinstance(value, str):
        return f"{label} must be a string"
    if not value:
        return f"{label} is empty" if kind.strict else None
    bad = (_BAD_CHANNEL_CHARACTER if kind.strict else _BAD_CHARACTER).search(value)
    if bad is not None:
        code = ord(bad.group())
        if 0xD800 <= code <= 0xDFFF:
            what = "is not valid UTF-8: a lone surrogate"
        elif code < 0x20 or 0x7F <= code <= 0x9F:
            what = "holds a control character"
        else:
            what = "holds whitespace"
        return f"{label} {what} (U+{code:04X} at index {bad.start()})"
    size = len(value) if value.isascii() else len(value.encode("utf-8"))
    if size > kind.max_bytes:
        return f"{label} is {size} bytes long, over the limit of {kind.max_bytes}"
    return None


class SubscribeOptions(Protocol):
    """The options of a namespace that decide a subscribe (``config.ChannelOptions`` has
    them): declared here so that the settings may use these rules without a cycle."""

    @property
    def allow_subscribe(self) -> bool:
        """Whether clients may subscribe on their own request."""

    @property
    def allow_anonymous(self) -> bool:
        """Whether a connection without a user may subscribe."""

    @property
    def require_subscription_token(self) -> bool:
        """Whether every subscribe needs a subscription token."""


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


def channel_problem(name: object) -> str | None:
    """Why ``name`` is not a channel name (:func:`name_problem`, or a ``#`` that names no
    user); None when it is one. Cheap enough to run on every routed event."""
    if not isinstance(name, str) or _PLAIN.fullmatch(name) is None:
        # Not the common case (printable ASCII, no blank, within the limit): find out why.
        problem = name_problem(name, NameKind.CHANNEL)
        if problem is not None:
            return problem
        assert isinstance(name, str)
    _, sep, rest = name.partition(NAMESPACE_SEPARATOR)
    if not sep:
        rest = name
    if USER_SEPARATOR in rest and not rest.rpartition(USER_SEPARATOR)[2].strip(","):
        return f"channel name {name!r} has a '#' but names no user after it"
    return None


def read_channel(name: object) -> ChannelName:
    """Takes a channel name apart.

    Raises:
        InvalidName: when :func:`channel_problem` finds one.
    """
    problem = channel_problem(name)
    if problem is not None:
        raise InvalidName(problem)
    assert isinstance(name, str)
    namespace, sep, rest = name.partition(NAMESPACE_SEPARATOR)
    if not sep:
        namespace, rest = "", name
    users: frozenset[str] = frozenset()
    if USER_SEPARATOR in rest:
        users = frozenset(u for u in rest.rpartition(USER_SEPARATOR)[2].split(",") if u)
    return ChannelName(name, namespace, users, rest.startswith(PRIVATE_PREFIX))


def parse_channel(name: object) -> ChannelName | None:
    """:func:`read_channel`, with None for a refused name."""
    try:
        return read_channel(name)
    except InvalidName:
        return None


def check_subscribe(
    channel: ChannelName,
    options: SubscribeOptions,
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


class PresenceOptions(Protocol):
    """The options of a namespace that decide who may read its presence."""

    @property
    def allow_presence_for_client(self) -> bool:
        """Any connection with a user may."""

    @property
    def allow_presence_for_subscriber(self) -> bool:
        """The channel's subscribers may."""

    @property
    def allow_presence_for_anonymous(self) -> bool:
        """The two above admit connections without a user too."""


class PublishOptions(Protocol):
    """The options of a namespace that decide who may publish into it."""

    @property
    def allow_publish_for_client(self) -> bool:
        """Any connection with a user may."""

    @property
    def allow_publish_for_subscriber(self) -> bool:
        """The channel's subscribers may."""

    @property
    def allow_publish_for_anonymous(self) -> bool:
        """The two above admit connections without a user too."""


def check_presence(
    options: PresenceOptions, user: str, subscribed: bool, could_subscribe: bool
) -> ErrorCode | None:
    """Whether a client may read the presence of a channel, or ask for its join/leave
    pushes (whether the namespace keeps presence at all is the caller's check).

    Args:
        options: the channel's namespace options.
        user: the connection's user ("" for anonymous).
        subscribed: the client is subscribed to the channel.
        could_subscribe: the client may subscribe to it by itself (:func:`check_subscribe`
            without a token).

    Returns:
        None when allowed, else 103.
    """
    return _granted(
        options.allow_presence_for_client,
        options.allow_presence_for_subscriber,
        options.allow_presence_for_anonymous,
        user,
        subscribed,
        could_subscribe,
    )


def check_publish(
    options: PublishOptions, user: str, subscribed: bool, could_subscribe: bool
) -> ErrorCode | None:
    """Whether a client may publish into a channel; None when allowed, else 103 (the
    arguments are :func:`check_presence`'s)."""
    return _granted(
        options.allow_publish_for_client,
        options.allow_publish_for_subscriber,
        options.allow_publish_for_anonymous,
        user,
        subscribed,
        could_subscribe,
    )


def _granted(
    for_client: bool,
    for_subscriber: bool,
    for_anonymous: bool,
    user: str,
    subscribed: bool,
    could_subscribe: bool,
) -> ErrorCode | None:
    """The rule shared by publish and presence: ``*_for_subscriber`` admits the channel's
    subscribers; ``*_for_client`` any connection, on the channels it could subscribe to by
    itself (never a private channel or another user's ``#`` channel, which would leak or
    forge what a subscription refuses); either admits a connection without a user only
    with ``*_for_anonymous``."""
    if not (user or for_anonymous):
        return ErrorCode.PERMISSION_DENIED
    if (for_subscriber and subscribed) or (for_client and could_subscribe):
        return None
    return ErrorCode.PERMISSION_DENIED

"""Read receipts, pure: what a user has seen of a channel, how it is kept in the ledger,
the marks clients send, who may send them, and how many publications are unread.

A user's *read position* on a channel is a ``floor`` (every offset at or below it counts
as seen: "mark all read up to N") and the seen offsets above it. Offsets are log
positions, the same on every node, so a position written on one node means the same on
all. It is the ledger's entry of kind :data:`KIND`, key ``user NUL channel``
(:func:`entry_key`), value :func:`encode`'s bytes.

A write carries only what one mark adds; the ledger applies it through :func:`merge`:
the union of the seen offsets and the highest floor, within one epoch of the log. Union
and max are idempotent and give the same result in any order, so two nodes' writes never
undo each other and a write applied twice changes nothing.

Positions stay bounded: at most :data:`MAX_SEEN` offsets are kept above the floor; past
that the floor rises to the highest offset that does not fit, so older unread
publications below it count as read from then on (a user who marks more than 1,000
publications after the oldest one left unread). The bound is a function of the merged
set alone, so merges stay order-free.

Positions restart when the log's stream is recreated (a new epoch): a position carries
its epoch, a write of another epoch replaces it whole, and one of an epoch that is not
the log's reads as nothing seen.

The unread count of a channel (:func:`count_unread`) is over what the node can show: the
channel's history window. It is ``exact`` only when the window holds every publication
above the user's floor; otherwise it counts the held ones and says so.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import orjson

from tidings.channels import ChannelName, InvalidName, read_channel

__all__ = [
    "KIND",
    "MAX_MARK",
    "MAX_SEEN",
    "METHODS",
    "READ",
    "UNREAD",
    "Mark",
    "ReadPosition",
    "ReceiptError",
    "Unread",
    "count_unread",
    "decode",
    "encode",
    "entry_key",
    "may_mark",
    "merge",
    "normalize",
    "parse_mark",
    "parse_query",
    "split_key",
]

#: The ledger's kind of read positions.
KIND = "read"
#: Most seen offsets kept above a position's floor.
MAX_SEEN = 1000
#: Most offsets one mark may name.
MAX_MARK = 1000
#: The RPC methods (and HTTP endpoints) of receipts.
READ = "tidings.read"
UNREAD = "tidings.unread"
METHODS = (READ, UNREAD)

_VERSION = 1
#: Positions are at most 2**53 - 1 (JSON numbers every client reads exactly).
_MAX_OFFSET = 2**53 - 1


class ReceiptError(ValueError):
    """A mark or a query was refused; the message says why, for the client."""


@dataclass(frozen=True, slots=True)
class ReadPosition:
    """What a user has seen of one channel in the log's ``epoch``: everything up to
    ``floor``, and ``seen`` (ascending, each above ``floor``)."""

    floor: int = 0
    seen: tuple[int, ...] = ()
    epoch: str = ""

    def has_seen(self, offset: int) -> bool:
        """Whether ``offset`` counts as seen."""
        return offset <= self.floor or offset in self.seen

    def unseen(self, offsets: Iterable[int]) -> list[int]:
        """Those of ``offsets`` not seen, in their order."""
        seen = frozenset(self.seen)
        return [o for o in offsets if o > self.floor and o not in seen]


def normalize(floor: int, offsets: Iterable[int], epoch: str = "") -> ReadPosition:
    """The one position of a floor and seen offsets: offsets at or below the floor
    dropped, the floor raised over offsets that follow it without a gap, then bounded to
    :data:`MAX_SEEN` offsets (the floor rises to the highest that does not fit)."""
    above = sorted({o for o in offsets if o > floor})
    start = 0
    while start < len(above) and above[start] == floor + 1:
        floor = above[start]
        start += 1
    if len(above) - start > MAX_SEEN:
        start = len(above) - MAX_SEEN
        floor = above[start - 1]
        while start < len(above) and above[start] == floor + 1:
            floor = above[start]
            start += 1
    return ReadPosition(floor, tuple(above[start:]), epoch)


def _varint(value: int, out: bytearray) -> None:
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def encode(position: ReadPosition) -> bytes:
    """The ledger value: a version byte, the epoch (its length, then UTF-8), then LEB128
    varints: the floor, the number of seen offsets, and each offset as its distance from
    the one before (the first from the floor). 1,000 offsets a few positions apart take
    about 1-2 KB."""
    out = bytearray((_VERSION,))
    epoch = position.epoch.encode()
    if len(epoch) > 0x7F:
        raise ValueError("an epoch takes at most 127 bytes")
    out.append(len(epoch))
    out += epoch
    _varint(position.floor, out)
    _varint(len(position.seen), out)
    previous = position.floor
    for offset in position.seen:
        _varint(offset - previous, out)
        previous = offset
    return bytes(out)


def decode(value: bytes) -> ReadPosition:
    """The position :func:`encode` wrote.

    Raises:
        ValueError: not a value this version wrote.
    """
    if not value or value[0] != _VERSION:
        raise ValueError("not a read position of version 1")
    size = value[1] if len(value) > 1 else 0
    if len(value) < 2 + size or size > 0x7F:
        raise ValueError("truncated read position")
    try:
        epoch = value[2 : 2 + size].decode()
    except UnicodeDecodeError:
        raise ValueError("epoch is not UTF-8") from None
    numbers: list[int] = []
    shift = current = 0
    for byte in value[2 + size :]:
        current |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")
            continue
        numbers.append(current)
        shift = current = 0
    if shift or len(numbers) < 2 or len(numbers) != 2 + numbers[1]:
        raise ValueError("truncated read position")
    floor, offsets = numbers[0], []
    previous = floor
    for gap in numbers[2:]:
        if gap <= 0:
            raise ValueError("read position offsets not ascending")
        previous += gap
        offsets.append(previous)
    return ReadPosition(floor, tuple(offsets), epoch)


def _read(value: bytes | None) -> ReadPosition | None:
    if value is None:
        return None
    try:
        return decode(value)
    except ValueError:
        return None  # written by a newer version: ignored the same way on every node


def merge(held: bytes | None, written: bytes | None) -> bytes | None:
    """The ledger's merge of kind :data:`KIND`: the union of what is held and what is
    written (the highest floor, every seen offset), bounded as :func:`normalize` says.
    A write of another epoch replaces what is held; a delete (None written) forgets the
    position; an unreadable write keeps what is held."""
    if written is None:
        return None
    old, new = _read(held), _read(written)
    if new is None:
        return held
    if old is None or old.epoch != new.epoch:
        return encode(normalize(new.floor, new.seen, new.epoch))
    merged = normalize(max(old.floor, new.floor), (*old.seen, *new.seen), new.epoch)
    return encode(merged)


def entry_key(user: str, channel: str) -> str:
    """The ledger key of ``user``'s position on ``channel`` (a NUL cannot be in either)."""
    return f"{user}\x00{channel}"


def split_key(key: str) -> tuple[str, str]:
    """The ``(user, channel)`` of an :func:`entry_key`."""
    user, _, channel = key.partition("\x00")
    return user, channel


@dataclass(frozen=True, slots=True)
class Mark:
    """What a client marks seen on ``channel``: the publications at ``offsets``
    (ascending, no repeats) and, when ``upto`` is not 0, everything up to it."""

    channel: str
    offsets: tuple[int, ...] = ()
    upto: int = 0


def _object(data: bytes | None, allowed: Collection[str]) -> dict[str, object]:
    if data is None:
        raise ReceiptError("data must be an object with a channel")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ReceiptError("data is not JSON") from None
    if not isinstance(obj, dict):
        raise ReceiptError("data must be an object with a channel")
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise ReceiptError(f"unknown field {unknown[0]!r}")
    channel = obj.get("channel")
    if not isinstance(channel, str) or not channel:
        raise ReceiptError("channel must be a channel name")
    return obj


def _offset(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_OFFSET:
        raise ReceiptError(f"{what} must be a position (an integer from 1)")
    return value


def parse_mark(data: bytes | None) -> Mark:
    """Reads ``{"channel", "offsets": [n, …]}``, ``{"channel", "upto": n}`` or both.

    Raises:
        ReceiptError: not that shape, no offset and no ``upto``, more than
            :data:`MAX_MARK` offsets.
    """
    obj = _object(data, ("channel", "offsets", "upto"))
    offsets: set[int] = set()
    if "offsets" in obj:
        listed = obj["offsets"]
        if not isinstance(listed, list):
            raise ReceiptError("offsets must be a list of positions")
        if len(listed) > MAX_MARK:
            raise ReceiptError(f"at most {MAX_MARK} offsets in one mark")
        offsets = {_offset(o, "each offset") for o in listed}
    upto = _offset(obj["upto"], "upto") if "upto" in obj else 0
    if not offsets and not upto:
        raise ReceiptError("name the offsets seen, or upto")
    channel = obj["channel"]
    assert isinstance(channel, str)
    return Mark(channel, tuple(sorted(offsets)), upto)


def parse_query(data: bytes | None) -> str:
    """The channel of ``{"channel"}`` (``tidings.unread``).

    Raises:
        ReceiptError: not that shape.
    """
    channel = _object(data, ("channel",))["channel"]
    assert isinstance(channel, str)
    return channel


def may_mark(channel: str, user: str, subscribed: Collection[str]) -> ChannelName:
    """The parsed ``channel`` if ``user`` may keep a read position on it: a channel that
    names the user (``inbox#alice``), or one the connection is subscribed to (the
    session's subscriptions; over HTTP, the token's ``channels``). Another user's
    channel, or one this connection does not read, is refused: receipts would forge
    what that user has seen, or tell how many publications a channel has.

    Raises:
        ReceiptError: an invalid name.
        PermissionError: an anonymous connection, or a channel it does not read.
    """
    try:
        name = read_channel(channel)
    except InvalidName as exc:
        raise ReceiptError(str(exc)) from None
    if not user:
        raise PermissionError("read positions belong to a user")
    if user not in name.users and channel not in subscribed:
        raise PermissionError("not a channel of this user or of this connection")
    return name


@dataclass(frozen=True, slots=True)
class Unread:
    """How many publications of a channel the user has not seen: ``count`` among the
    held ones, ``exact`` when the held ones are all there are above the user's floor."""

    count: int
    exact: bool


def count_unread(position: ReadPosition, held: Sequence[int], complete_since: int) -> Unread:
    """The unread publications among ``held`` (the offsets of the channel's history
    window, every publication above ``complete_since``)."""
    return Unread(len(position.unseen(held)), complete_since <= position.floor)

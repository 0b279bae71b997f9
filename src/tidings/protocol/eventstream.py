"""The event-stream wire format (``text/event-stream``, HTML §9.2), sans-I/O.

Every byte tidings writes in an SSE response body is built here: events (with the ``id``
and ``event`` fields when they have them), comments (keep-alives), the ``id`` of a log
position and its reading back from ``Last-Event-ID``, and the HTTP/1.1 chunk an event
travels in. Nothing here owns a socket; :mod:`tidings.transport.sse` writes what this
returns, and :class:`~tidings.publication.Publication` caches its own event once for
every subscriber.

**Ids.** A position's id is ``<epoch>:<offset>``, the epoch percent-encoded. The epoch is
part of the id because a browser echoes the id back verbatim as ``Last-Event-ID``: an
offset alone from an earlier incarnation of the log could fall inside the new one's
range and be "recovered" with the wrong events. A bare offset is read as "this epoch".
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

from tidings.protocol.messages import RecoverPosition

__all__ = ["chunk", "comment", "event", "event_id", "parse_event_id"]

#: What a browser takes as the end of a line: CRLF, LF or CR.
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
# Bytes are searched for as ints: ``b"\n" in data`` first tries the needle as an int and
# raises inside, which costs ~200 ns per test on Python 3.11; ``10 in data`` is a memchr.
_LF, _CR, _NUL = 0x0A, 0x0D, 0x00
_OFFSET = re.compile(r"^[0-9]{1,18}\Z")
#: The position of an id we cannot read: no log has this epoch, so recovery fails plainly.
_UNREADABLE = RecoverPosition(0, "\x00")


def _check_field(field: str, value: bytes) -> None:
    if _LF in value or _CR in value:
        raise ValueError(f"an event's {field} cannot hold a line break")


def event(data: bytes, *, id: bytes | None = None, name: bytes | None = None) -> bytes:
    """One event: ``id:`` and ``event:`` when given, then ``data`` and the blank line.

    Data of several lines becomes one ``data:`` field per line, which a browser joins
    back with LF (a CR or CRLF of ``data`` therefore arrives as LF).

    Args:
        data: the event's data (the JSON tidings sends is always one line).
        id: the ``id`` field; a browser sends the last one back as ``Last-Event-ID``.
        name: the ``event`` field (the browser's event type; "message" when absent).

    Raises:
        ValueError: ``id`` or ``name`` holds a line break, or ``id`` a NUL (a browser
            ignores such an id, so the position would silently not be kept).
    """
    if _LF in data or _CR in data:
        data = b"\ndata: ".join(_LINE_BREAK.split(data))
    if id is None and name is None:
        return b"data: %b\n\n" % data
    fields = b""
    if id is not None:
        _check_field("id", id)
        if _NUL in id:
            raise ValueError("an event's id cannot hold a NUL")
        fields = b"id: %b\n" % id
    if name is not None:
        _check_field("name", name)
        fields += b"event: %b\n" % name
    return b"%bdata: %b\n\n" % (fields, data)


def comment(text: bytes) -> bytes:
    """A comment line and the blank line after it: a keep-alive a browser swallows.

    Raises:
        ValueError: ``text`` holds a line break (the rest would be read as a field).
    """
    _check_field("comment", text)
    return b": %b\n\n" % text


def event_id(epoch: str, offset: int) -> bytes:
    """The ``id`` of a log position: ``<epoch>:<offset>``, the epoch percent-encoded."""
    return b"%b:%d" % (quote(epoch, safe="").encode("ascii"), offset)


def parse_event_id(text: str) -> RecoverPosition:
    """The position named by an id: ``<epoch>:<offset>``, or a bare offset (any epoch).

    Surrounding whitespace is ignored. An unreadable id yields a position that never
    recovers (its epoch is one no log has), so the client is told of a gap rather than
    silently given a fresh stream.
    """
    epoch, _, offset = text.strip().rpartition(":")
    if not _OFFSET.match(offset):
        return _UNREADABLE
    if not epoch:
        return RecoverPosition(int(offset), "")
    return RecoverPosition(int(offset), unquote(epoch))


def chunk(payload: bytes) -> bytes:
    """``payload`` as one chunk of an HTTP/1.1 chunked body (RFC 9112 §7.1).

    An empty payload gives no bytes at all: a chunk of size zero would end the body.
    """
    if not payload:
        return b""
    return b"%x\r\n%b\r\n" % (len(payload), payload)

"""The WebSocket opening handshake (RFC 6455 §4.2) over HTTP/1.1, sans I/O.

Parses a request head, decides whether it is a valid upgrade, and builds the answers: the
``101 Switching Protocols`` response, or a :class:`Refusal` (an HTTP status with a JSON
``{"error": …}`` body that says what was wrong). The front (``transport/front.py``) feeds it
raw bytes, the aiohttp route (``transport/websocket.py``) aiohttp's parsed headers; both get
the same answers.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus

import orjson

__all__ = [
    "HeadError",
    "Refusal",
    "RequestHead",
    "accept_key",
    "check_upgrade",
    "parse_head",
    "parse_request_line",
    "refused_subprotocol",
    "switching_protocols",
]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: The subprotocol by which a Centrifugo client asks for the Protobuf protocol.
_PROTOBUF = "centrifuge-protobuf"
#: A header name is an RFC 9110 token.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(rb"HTTP/(\d)\.(\d)")
#: Field values may hold visible characters, spaces, tabs and obs-text, nothing else.
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class HeadError(ValueError):
    """A request head that is not valid HTTP/1.1."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """An HTTP answer refusing a request: ``status``, a JSON body and extra headers.

    Attributes:
        status: the HTTP status.
        error: what was wrong, for a person reading the body.
        details: more fields of the JSON body.
        headers: more response headers (``Retry-After``, ``Sec-WebSocket-Version``, …).
    """

    status: int
    error: str
    details: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def body(self) -> bytes:
        """``{"error": …, **details}`` as JSON."""
        return orjson.dumps({"error": self.error, **dict(self.details)})

    def encode(self) -> bytes:
        """The whole HTTP/1.1 response; the connection is closed after it."""
        body = self.body
        lines = [
            f"HTTP/1.1 {self.status} {HTTPStatus(self.status).phrase}",
            "Content-Type: application/json; charset=utf-8",
            f"Content-Length: {len(body)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass(frozen=True, slots=True)
class RequestHead:
    """A parsed request line and header fields.

    Attributes:
        method: as sent (methods are case-sensitive).
        target: the request target as sent (``/path?query``).
        version: ``(major, minor)``.
        headers: lower-cased names; repeated fields joined with ``", "``.
    """

    method: str
    target: str
    version: tuple[int, int]
    headers: Mapping[str, str]

    @property
    def path(self) -> str:
        """The target without its query."""
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        """The raw query string (after ``?``), "" when there is none."""
        return self.target.partition("?")[2]


def parse_request_line(line: bytes) -> tuple[str, str, tuple[int, int]] | None:
    """``(method, target, version)`` of a request line (no line ending), or None."""
    parts = line.split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
        return None
    version = _VERSION.fullmatch(parts[2])
    if version is None or _BAD_VALUE.search(parts[1]) or b"\t" in parts[1]:
        return None
    major, minor = int(version[1]), int(version[2])
    return parts[0].decode("ascii"), parts[1].decode("latin-1"), (major, minor)


def parse_head(head: bytes) -> RequestHead:
    """Parses a request head: the request line and header lines, without the blank line.

    Lines end with CRLF (a bare LF is tolerated, RFC 9112 §2.2).

    Raises:
        HeadError: a malformed request line or header field, or a folded (obs-fold) line.
    """
    lines = head.split(b"\n")
    parsed = parse_request_line(lines[0].removesuffix(b"\r"))
    if parsed is None:
        raise HeadError("malformed request line")
    method, target, version = parsed
    headers: dict[str, str] = {}
    for raw in lines[1:]:
        line = raw.removesuffix(b"\r")
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            raise HeadError("folded header line")
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            # Also refuses whitespace before the colon (RFC 9112 §5.1).
            raise HeadError("malformed header line")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            raise HeadError("control character in a header value")
        key = name.decode("ascii").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return RequestHead(method, target, version, headers)


def _tokens(value: str | None) -> set[str]:
    return {t.strip().lower() for t in value.split(",")} if value else set()


def check_upgrade(
    method: str, version: tuple[int, int], headers: Mapping[str, str]
) -> str | Refusal:
    """The ``Sec-WebSocket-Accept`` value of a valid upgrade request, else the refusal.

    Args:
        method: the request method.
        version: the HTTP version.
        headers: the header fields, looked up by lower-case name.
    """
    if method != "GET":
        return Refusal(405, "a WebSocket upgrade is a GET", headers=(("Allow", "GET"),))
    upgrade = _tokens(headers.get("upgrade"))
    if not upgrade:
        return Refusal(
            426,
            "this endpoint speaks WebSocket only: send Upgrade: websocket",
            headers=(("Upgrade", "websocket"),),
        )
    if "websocket" not in upgrade:
        return Refusal(400, "Upgrade must name websocket")
    if version < (1, 1):
        return Refusal(400, "a WebSocket upgrade needs HTTP/1.1")
    if "upgrade" not in _tokens(headers.get("connection")):
        return Refusal(400, "Connection must include upgrade")
    if headers.get("sec-websocket-version", "").strip() != "13":
        return Refusal(
            426,
            "unsupported Sec-WebSocket-Version: only 13 is spoken",
            headers=(("Sec-WebSocket-Version", "13"),),
        )
    key = headers.get("sec-websocket-key", "").strip()
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except ValueError:  # binascii.Error, or characters outside ASCII
        valid = False
    if not valid:
        return Refusal(400, "Sec-WebSocket-Key must be 16 bytes in base64")
    return accept_key(key)


def refused_subprotocol(headers: Mapping[str, str]) -> str | None:
    """Why a valid upgrade cannot be served, when the client asked for the Protobuf protocol.

    A client that offers ``centrifuge-protobuf`` will send Protobuf frames whatever the
    ``101`` selects (the SDKs do not check), and tidings speaks JSON only: the connection is
    then closed at once with this reason (and 3501), which the SDKs report as a terminal
    disconnect, instead of failing on the first frame with a decoding error.

    Args:
        headers: the header fields, looked up by lower-case name.
    """
    if _PROTOBUF in _tokens(headers.get("sec-websocket-protocol")):
        return "the Protobuf protocol is not supported: connect with JSON"
    return None


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for ``Sec-WebSocket-Key`` ``key`` (RFC 6455 §4.2.2)."""
    # SHA-1 is what the RFC prescribes here; nothing secret depends on it.
    digest = hashlib.sha1(key.encode("ascii") + _GUID).digest()
    return base64.b64encode(digest).decode("ascii")


def switching_protocols(accept: str) -> bytes:
    """The ``101`` response completing the handshake.

    No subprotocol and no extension are selected: the JSON protocol needs none, and frames
    stay plain so that one encoded frame can be written to every subscriber.
    """
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
    ).encode("ascii")

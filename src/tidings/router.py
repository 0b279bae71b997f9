"""Routing rules: which channels an event goes to, and what data the clients get.

An event is routed by, in this order:

1. the header ``x-tidings-channel`` (comma-separated channel names): when present it alone
   decides, and the whole JSON body is the data;
2. otherwise every configured rule whose routing-key pattern (AMQP topic syntax: ``*`` one word,
   ``#`` zero or more) and header conditions match; its channel templates are filled from
   ``{rk.N}`` (routing-key word N), ``{routing_key}``, ``{headers.NAME}`` and
   ``{body.PATH.TO.FIELD}`` (a filled value may not hold ``,`` or ``#``); the first matching
   rule decides the data;
3. with no rules configured at all, the routing key itself names the channel.

Pure functions only: no I/O, so every case is unit-tested without a broker.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from tidings.channels import channel_problem
from tidings.clientinfo import ClientInfo
from tidings.errors import ConfigError
from tidings.record import Record
from tidings.topic import topic_matches

__all__ = [
    "CHANNEL_HEADER",
    "INFO_HEADER",
    "Rejected",
    "Routed",
    "Router",
    "Rule",
    "encode_channel_header",
    "parse_channel_header",
    "parse_routes",
]

CHANNEL_HEADER = "x-tidings-channel"
#: The publisher's ClientInfo (JSON) of a client publication; it becomes the ``info`` of
#: the Publication. Only an object with a string ``user`` and a ``client`` is taken.
INFO_HEADER = "x-tidings-info"
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
_RULE_KEYS = {"match", "headers", "channels", "data", "format"}


@dataclass(frozen=True, slots=True)
class Routed:
    """Where an event goes and the JSON (compact, one line) that clients receive as ``data``."""

    channels: tuple[str, ...]
    data: bytes
    #: Compact JSON of the publisher's ClientInfo (from ``x-tidings-info``), or None.
    info: bytes | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """An event that cannot be delivered: ``kind`` is a metric label, ``reason`` is for the log.

    Kinds: ``too_large``, ``not_json``, ``missing_field``, ``bad_channel`` and ``unrouted``
    (no rule matched: counted, not an error).
    """

    kind: str
    reason: str


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``[[routes]]`` entry."""

    match: str
    channels: tuple[str, ...]
    headers: tuple[tuple[str, str], ...] = ()
    #: Dotted path into the JSON body that becomes the data ("" = the whole body).
    data: str = ""
    #: ``json`` needs a JSON body; ``text`` sends the body as a JSON string.
    format: str = "json"

    @property
    def needs_json(self) -> bool:
        """Whether the rule reads inside the body."""
        return self.format == "json"


def parse_channel_header(value: str) -> list[str]:
    """The channels of an ``x-tidings-channel`` header: comma-separated names, or a JSON
    array of names (needed for channels that contain a comma, like ``dialog#alice,bob``)."""
    text = value.strip()
    if text.startswith("["):
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            return [text]  # reported as an invalid channel name
        if isinstance(parsed, list) and all(isinstance(c, str) for c in parsed):
            return [c for c in parsed if c]
        return [text]
    return [c.strip() for c in text.split(",") if c.strip()]


def encode_channel_header(channels: Sequence[str]) -> str:
    """The header value naming ``channels`` (a JSON array when a name holds a comma)."""
    if any("," in c for c in channels):
        return orjson.dumps(list(channels)).decode()
    return ",".join(channels)


def parse_routes(raw: Sequence[Mapping[str, Any]]) -> list[Rule]:
    """Validates ``[[routes]]`` tables.

    Raises:
        ConfigError: naming ``routes[i].key`` and the reason.
    """
    rules: list[Rule] = []
    for i, entry in enumerate(raw):
        key = f"routes[{i}]"
        for name in entry:
            if name not in _RULE_KEYS:
                raise ConfigError(f"{key}.{name}", "unknown setting")
        match = entry.get("match")
        if not isinstance(match, str) or not match:
            raise ConfigError(f"{key}.match", "needs a routing-key pattern such as 'invoice.*'")
        channels = entry.get("channels")
        if isinstance(channels, str):
            channels = [channels]
        if (
            not isinstance(channels, list)
            or not channels
            or not all(isinstance(c, str) and c for c in channels)
        ):
            raise ConfigError(f"{key}.channels", "needs a list of channel templates")
        fmt = entry.get("format", "json")
        if fmt not in ("json", "text"):
            raise ConfigError(f"{key}.format", "must be 'json' or 'text'")
        for c in channels:
            for ph in _PLACEHOLDER.findall(c):
                if not _valid_placeholder(ph):
                    raise ConfigError(
                        f"{key}.channels",
                        f"unknown placeholder {{{ph}}}: use {{routing_key}}, {{rk.N}}, "
                        "{headers.NAME} or {body.PATH}",
                    )
                if ph.startswith("body.") and fmt == "text":
                    raise ConfigError(f"{key}.channels", "{body.…} needs format = 'json'")
        headers = entry.get("headers", {})
        if not isinstance(headers, Mapping) or not all(
            isinstance(v, str | int | bool) for v in headers.values()
        ):
            raise ConfigError(f"{key}.headers", "expected a table of header = value")
        data = entry.get("data", "")
        if not isinstance(data, str) or (data and fmt == "text"):
            raise ConfigError(f"{key}.data", "expected a dotted body path (format 'json' only)")
        rules.append(
            Rule(
                match=match,
                channels=tuple(channels),
                headers=tuple((str(k), _header_text(v)) for k, v in headers.items()),
                data="" if data == "body" else data.removeprefix("body."),
                format=fmt,
            )
        )
    return rules


def _valid_placeholder(ph: str) -> bool:
    if ph == "routing_key":
        return True
    if re.fullmatch(r"rk\.\d+", ph):
        return True
    return bool(re.fullmatch(r"(headers|body)\.[^{}\s]+", ph))


def _header_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _name_text(value: object) -> str | None:
    """A header value as part of a channel name; None for bytes that are not UTF-8, which
    would otherwise turn into replacement characters and name another channel."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return _header_text(value)


class _Missing(Exception):
    """A template named a header or body field the event does not have."""


class _BadValue(Exception):
    """A template's value would change the channel's meaning (holds ``,`` or ``#``)."""


class Router:
    """Applies the rules to records; one instance per node, stateless per call."""

    def __init__(self, rules: Sequence[Rule], max_bytes: int = 65536) -> None:
        self.rules = tuple(rules)
        self.max_bytes = max_bytes

    def route(self, record: Record) -> Routed | Rejected:
        """Decides the channels and data of one record; never raises."""
        if len(record.body) > self.max_bytes:
            return Rejected(
                "too_large", f"body of {len(record.body)} bytes is over the {self.max_bytes} limit"
            )
        channels: list[str] = []
        header = record.headers.get(CHANNEL_HEADER)
        if header is not None:
            text = _name_text(header)
            if text is None:
                return Rejected("bad_channel", f"{CHANNEL_HEADER} header is not UTF-8 text")
            channels.extend(parse_channel_header(text))
        parsed: Any = None
        parsed_ok = False
        data_path = ""
        fmt = "json"
        decided = False  # the first matching rule decides the data
        try:
            for rule in () if header is not None else self.rules:
                if not self._applies(rule, record):
                    continue
                if rule.needs_json and not parsed_ok:
                    parsed = orjson.loads(record.body)
                    parsed_ok = True
                channels.extend(_fill(t, record, parsed) for t in rule.channels)
                if not decided:
                    data_path, fmt, decided = rule.data, rule.format, True
        except orjson.JSONDecodeError as exc:
            return Rejected("not_json", f"body is not JSON: {exc}")
        except _Missing as exc:
            return Rejected("missing_field", str(exc))
        except _BadValue as exc:
            return Rejected("bad_channel", str(exc))
        if not self.rules and header is None and record.routing_key:
            channels.append(record.routing_key)
        if not channels:
            return Rejected("unrouted", f"no rule matches routing key {record.routing_key!r}")
        for c in channels:
            problem = channel_problem(c)
            if problem is not None:
                return Rejected("bad_channel", f"{problem}: {c!r}")
        if fmt == "text":
            data = orjson.dumps(record.body.decode("utf-8", "replace"))
        else:
            try:
                if not parsed_ok:
                    parsed = orjson.loads(record.body)
                value = _lookup(parsed, data_path) if data_path else parsed
            except orjson.JSONDecodeError as exc:
                return Rejected("not_json", f"body is not JSON: {exc}")
            except _Missing as exc:
                return Rejected("missing_field", str(exc))
            if data_path or b"\n" in record.body or b"\r" in record.body:
                # Re-encoding compacts the JSON: no raw newline may reach the
                # newline-joined wire.
                data = orjson.dumps(value)
            else:
                data = record.body  # valid JSON (just parsed) on one line: sent as it came
        return Routed(tuple(dict.fromkeys(channels)), data, _info(record))

    @staticmethod
    def _applies(rule: Rule, record: Record) -> bool:
        if not topic_matches(rule.match, record.routing_key):
            return False
        for name, expected in rule.headers:
            value = record.headers.get(name)
            if value is None or _header_text(value) != expected:
                return False
        return True


def _info(record: Record) -> bytes | None:
    """The publisher's info of a client publication; a malformed one is dropped, not the
    event (the data is still good)."""
    value = record.headers.get(INFO_HEADER)
    if value is None:
        return None
    try:
        return ClientInfo.from_obj(orjson.loads(_header_text(value))).to_json()
    except (orjson.JSONDecodeError, ValueError):
        return None


def _fill(template: str, record: Record, body: Any) -> str:
    def one(m: re.Match[str]) -> str:
        ph = m.group(1)
        if ph == "routing_key":
            return record.routing_key
        if ph.startswith("rk."):
            words = record.routing_key.split(".")
            idx = int(ph[3:])
            if idx >= len(words):
                raise _Missing(f"routing key {record.routing_key!r} has no word {idx}")
            return words[idx]
        if ph.startswith("headers."):
            name = ph[len("headers.") :]
            if name not in record.headers:
                raise _Missing(f"header {name!r} is missing")
            text = _name_text(record.headers[name])
            if text is None:
                raise _BadValue(f"header {name!r} is not UTF-8 text")
            return text
        value = _lookup(body, ph[len("body.") :])
        if isinstance(value, dict | list):
            raise _Missing(f"body field {ph[5:]!r} is not a scalar")
        return _header_text(value)

    def checked(m: re.Match[str]) -> str:
        # A value fills one name: "," or "#" inside it would widen a user-limited channel
        # ("user#{body.id}" with id "alice,mallory").
        value = one(m)
        if "," in value or "#" in value:
            raise _BadValue(f"{{{m.group(1)}}} is {value!r}, which cannot be part of a name")
        return value

    return _PLACEHOLDER.sub(checked, template)


def _lookup(body: Any, path: str) -> Any:
    value = body
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise _Missing(f"body field {path!r} is missing")
    if value is None:
        raise _Missing(f"body field {path!r} is null")
    return value

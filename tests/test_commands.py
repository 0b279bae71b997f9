"""Server commands: signed records of the log, verified and decoded without I/O."""

from __future__ import annotations

import pytest

from tidings.commands import (
    COMMAND_HEADER,
    MAX_AGE,
    CommandError,
    ServerCommand,
    decode,
    encode,
)

KEY = "api-key-0123456789abcdef"


def test_round_trip() -> None:
    command = ServerCommand(
        "disconnect", 1000.5, user="alice", client="c1", whitelist=("c2",), code=3011, reason="r"
    )
    body, headers = encode(command, KEY)
    assert set(headers) == {COMMAND_HEADER}
    assert decode(headers, body, KEY) == command


def test_header_as_bytes() -> None:
    body, headers = encode(ServerCommand("history_remove", 1.0, channel="a"), KEY)
    raw = {COMMAND_HEADER: headers[COMMAND_HEADER].encode()}
    assert decode(raw, body, KEY).channel == "a"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda body, headers: (body, {COMMAND_HEADER: "0" * 64}), "wrong signature"),
        (lambda body, headers: (body.replace(b"alice", b"bobby"), headers), "wrong signature"),
        (lambda body, headers: (body, {COMMAND_HEADER: 5}), "wrong signature"),
    ],
)
def test_forgeries_are_refused(mutate: object, message: str) -> None:
    body, headers = encode(ServerCommand("disconnect", 1.0, user="alice"), KEY)
    body, headers = mutate(body, headers)  # type: ignore[operator]
    with pytest.raises(CommandError, match=message):
        decode(headers, body, KEY)


def test_another_key_is_refused() -> None:
    body, headers = encode(ServerCommand("disconnect", 1.0, user="alice"), KEY)
    with pytest.raises(CommandError, match="signature"):
        decode(headers, body, "another-key-0123456789")


def test_no_key_here_refuses_every_command() -> None:
    body, headers = encode(ServerCommand("disconnect", 1.0, user="alice"), KEY)
    with pytest.raises(CommandError, match=r"api\.key"):
        decode(headers, body, None)


@pytest.mark.parametrize("body", [b"not json", b"[1]", b'{"kind":"teleport","issued_at":1}'])
def test_signed_garbage_is_refused(body: bytes) -> None:
    from tidings.commands import _signature

    with pytest.raises(CommandError):
        decode({COMMAND_HEADER: _signature(KEY, body)}, body, KEY)


def test_freshness() -> None:
    command = ServerCommand("disconnect", 1000.0, user="alice")
    assert command.fresh(1000.0 + MAX_AGE)
    assert not command.fresh(1000.0 + MAX_AGE + 1)


def test_matches() -> None:
    everyone = ServerCommand("disconnect", 0.0, user="alice", whitelist=("keep",))
    assert everyone.matches("alice", "c1")
    assert not everyone.matches("alice", "keep")
    assert not everyone.matches("bob", "c1")
    one = ServerCommand("unsubscribe", 0.0, user="alice", client="c1")
    assert one.matches("alice", "c1") and not one.matches("alice", "c2")

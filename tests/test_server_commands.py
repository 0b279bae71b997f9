"""Server commands on their own: records in, applied to sessions through fake handles."""

from __future__ import annotations

import orjson
import pytest

from tests.fakes import session_of
from tidings import commands
from tidings.admission import ClientHandle
from tidings.codes import DisconnectCode
from tidings.config import ApiSettings, Settings
from tidings.history import History
from tidings.hub import Hub
from tidings.log.memory import MemoryLog
from tidings.metrics import Metrics
from tidings.protocol.session import Session
from tidings.publishing import PublishError
from tidings.record import Record
from tidings.server_commands import ServerCommands

KEY = "api-key-0123456789abcdef"
NOW = 1000.0


class Handle:
    """A connection that records what a command does to it."""

    def __init__(self) -> None:
        self.closed: tuple[DisconnectCode, str] | None = None
        self.pumps = 0

    def pump(self) -> None:
        self.pumps += 1

    def close(self, code: DisconnectCode, reason: str = "") -> None:
        self.closed = (code, reason)


class Setup:
    def __init__(self, key: str | None = KEY) -> None:
        self.log = MemoryLog()
        self.history = History()
        self.sessions: dict[str, dict[Session, ClientHandle]] = {}
        self.rejected: list[tuple[int, str]] = []
        self.commands = ServerCommands(
            Settings(api=ApiSettings(key=key)),
            self.log,
            self.history,
            Hub(self.history),
            self.sessions,
            lambda record, kind, reason: self.rejected.append((record.position, kind)),
            Metrics(),
            lambda: NOW,
        )

    def connected(self, user: str, client: str) -> Handle:
        session = session_of(user)
        session.client_id = client
        handle = Handle()
        self.sessions.setdefault(user, {})[session] = handle
        return handle


def record(command: commands.ServerCommand, position: int = 1, key: str = KEY) -> Record:
    body, headers = commands.encode(command, key)
    return Record(position, "app.event", body, NOW, headers)


def test_a_disconnect_closes_the_users_matching_connections() -> None:
    setup = Setup()
    one, two, other = (
        setup.connected("alice", "c1"),
        setup.connected("alice", "c2"),
        setup.connected("bob", "c3"),
    )
    command = commands.ServerCommand(
        "disconnect", NOW, user="alice", whitelist=("c2",), code=3011, reason="r"
    )
    setup.commands.on_record(record(command))
    assert one.closed == (DisconnectCode(3011), "r")
    assert two.closed is None and other.closed is None


def test_a_code_this_node_does_not_know_disconnects_with_the_default() -> None:
    setup = Setup()
    handle = setup.connected("alice", "c1")
    setup.commands.on_record(
        record(commands.ServerCommand("disconnect", NOW, user="alice", code=4999))
    )
    assert handle.closed == (DisconnectCode.FORCE_DISCONNECT, "")


def test_a_stale_command_is_not_applied_and_a_forged_one_is_rejected() -> None:
    setup = Setup()
    handle = setup.connected("alice", "c1")
    old = commands.ServerCommand("disconnect", NOW - commands.MAX_AGE - 1, user="alice")
    setup.commands.on_record(record(old, 1))
    setup.commands.on_record(
        record(commands.ServerCommand("disconnect", NOW, user="alice"), 2, "k" * 24)
    )
    assert handle.closed is None
    assert setup.rejected == [(2, "bad_command")]


def test_history_remove_applies_even_when_replayed() -> None:
    setup = Setup()
    old = commands.ServerCommand("history_remove", NOW - 3600, channel="news")
    setup.commands.on_record(record(old, 42))
    assert setup.history.complete_since("news", size=10, ttl=60.0, now=NOW) == 42


async def test_send_signs_the_command_into_the_log() -> None:
    setup = Setup()
    await setup.commands.send(commands.ServerCommand("disconnect", NOW, user="alice"))
    (sent,) = [r async for batch in setup.log.scan(0, 1) for r in batch]
    assert commands.decode(sent.headers, sent.body, KEY).user == "alice"
    assert orjson.loads(sent.body)["kind"] == "disconnect"


async def test_send_without_an_api_key_is_refused() -> None:
    setup = Setup(key=None)
    with pytest.raises(PublishError, match=r"api\.key"):
        await setup.commands.send(commands.ServerCommand("disconnect", NOW, user="alice"))
    assert setup.log.position == 0

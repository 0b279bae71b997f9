"""Admission on its own: limits, the per-address rate, users' first and last sessions."""

from __future__ import annotations

from tests.fakes import session_of
from tidings.admission import Admission
from tidings.codes import DisconnectCode
from tidings.config import ClientSettings


def admission(
    limits: ClientSettings, now: list[float] | None = None
) -> tuple[Admission, list[str]]:
    calls: list[str] = []
    clock = now or [0.0]
    made = Admission(
        limits,
        lambda: clock[0],
        arrived=lambda user: calls.append(f"+{user}"),
        departed=lambda user: calls.append(f"-{user}"),
    )
    return made, calls


def test_a_user_arrives_with_the_first_session_and_departs_with_the_last() -> None:
    gate, calls = admission(ClientSettings())
    first, second, anonymous = session_of("alice"), session_of("alice"), session_of("")
    assert gate.admit(first) is None and gate.admit(second) is None
    assert gate.admit(anonymous) is None
    assert calls == ["+alice"]
    assert (gate.connections, gate.users) == (3, 1)
    assert set(gate.sessions) == {"alice", ""} and set(gate.sessions["alice"]) == {first, second}
    gate.release(first)
    assert calls == ["+alice"]
    gate.release(second)
    gate.release(anonymous)
    assert calls == ["+alice", "-alice"]
    assert (gate.connections, gate.users, gate.sessions) == (0, 0, {})


def test_a_refused_session_is_not_counted() -> None:
    gate, calls = admission(ClientSettings(max_connections=2, max_connections_per_user=1))
    assert gate.admit(session_of("alice")) is None
    assert gate.admit(session_of("alice")) is DisconnectCode.CONNECTION_LIMIT
    assert gate.admit(session_of("bob")) is None
    assert gate.admit(session_of("carol")) is DisconnectCode.CONNECTION_LIMIT
    assert calls == ["+alice", "+bob"]
    assert (gate.connections, gate.users) == (2, 2)


def test_the_address_rate_counts_within_each_second() -> None:
    now = [7.9]
    gate, _ = admission(ClientSettings(connections_per_ip_per_second=1), now)
    assert [gate.admit_ip("10.0.0.1"), gate.admit_ip("10.0.0.1")] == [True, False]
    now[0] = 8.0
    assert gate.admit_ip("10.0.0.1")


def test_no_rate_limit_admits_every_address() -> None:
    gate, _ = admission(ClientSettings(connections_per_ip_per_second=0))
    assert all(gate.admit_ip("10.0.0.1") for _ in range(100))

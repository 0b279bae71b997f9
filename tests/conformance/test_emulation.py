"""The SDK's emulation transports (``http_stream``, ``sse`` and ``POST /emulation``) with
the unmodified ``centrifuge`` package in Node: alone, as the fallback of a WebSocket that
cannot connect, and with the posts landing on the other worker of ``--workers 2``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.test_sdk import EXPIRED_CLOSE_DELAY, events, run_scenario, unique
from tests.integration.live import ServeProcess, token
from tests.system.harness import AMQP_URL, delete_amqp

pytestmark = pytest.mark.node

TRANSPORTS = ["http_stream", "sse"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One ``tidings serve`` on the embedded log for the single-process scenarios."""
    tmp = tmp_path_factory.mktemp("emulation")
    env = {"TIDINGS_CLIENT_EXPIRED_CLOSE_DELAY": str(EXPIRED_CLOSE_DELAY)}
    with ServeProcess(tmp / "serve.log", env) as serve:
        yield serve
        assert serve.stop() == 0, serve.log()


def _tokens() -> dict[str, str]:
    return {"short": token("alice", ttl=3), "long": token("alice", ttl=600)}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_connect_subscribe_refresh_and_recover(server: ServeProcess, transport: str) -> None:
    lines = run_scenario(
        server, "emulation.js", _tokens(), CHANNEL=unique("news"), TRANSPORT=transport
    )
    (ok,) = events(lines, "ok")
    assert ok["transports"] == [transport, transport]
    assert ok["received"] == 25
    assert ok["getTokenCalls"] == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_falls_back_when_websocket_cannot_connect(server: ServeProcess, transport: str) -> None:
    lines = run_scenario(
        server,
        "emulation.js",
        _tokens(),
        CHANNEL=unique("news"),
        TRANSPORT=transport,
        FALLBACK="1",
    )
    errors = [e for e in events(lines, "client.error") if e["type"] == "transport"]
    assert errors, "the WebSocket attempt did not fail first"
    assert events(lines, "ok")[0]["transports"] == [transport, transport]


@pytest.mark.rabbitmq
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_commands_posted_to_another_node_reach_the_session(
    tmp_path: Path, transport: str
) -> None:
    """The streams on ``--workers 2``, every command posted to a second node: each one
    crosses to the session's worker through RabbitMQ (refresh, subscribe, recovery)."""
    exchange, stream = unique("test.events"), unique("test.log")
    args = ("--amqp-url", AMQP_URL, "--exchange", exchange, "--stream", stream)
    env = {"TIDINGS_CLIENT_EXPIRED_CLOSE_DELAY": str(EXPIRED_CLOSE_DELAY)}
    try:
        with (
            ServeProcess(tmp_path / "a.log", env, (*args, "--workers", "2")) as a,
            ServeProcess(tmp_path / "b.log", env, (*args, "--workers", "1")) as b,
        ):
            lines = run_scenario(
                a,
                "emulation.js",
                _tokens(),
                CHANNEL=unique("news"),
                TRANSPORT=transport,
                EMULATION_URL=b.url,
            )
            (ok,) = events(lines, "ok")
            assert ok["received"] == 25 and ok["posts"] >= 3
            assert a.stop() == 0, a.log()
            assert b.stop() == 0, b.log()
    finally:
        delete_amqp([exchange], [stream])

"""Presence, presence stats, join/leave events and client publish with the unmodified
``centrifuge`` SDK against ``tidings serve``, over each of its transports: on one node (the
embedded log: presence is the process's own), and with the clients split over two nodes
that share one RabbitMQ (protocol-level detail in tests/system/test_presence.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance.test_sdk import TRANSPORTS, events, run_scenario, unique
from tests.integration.live import ServeProcess, token
from tests.system.harness import AMQP_URL, delete_amqp

pytestmark = pytest.mark.node

CONFIG = """
[[namespaces]]
name = "room"
presence = true
join_leave = true
allow_presence_for_subscriber = true
allow_publish_for_subscriber = true

[[namespaces]]
name = "lobby"
presence = true
join_leave = true
force_push_join_leave = true
"""
#: Short heartbeats, so that presence converges across nodes within a second or so.
HEARTBEAT = 0.5
CLUSTER_ENV = {
    "TIDINGS_CLUSTER_HEARTBEAT_INTERVAL": str(HEARTBEAT),
    "TIDINGS_CLUSTER_PRESENCE_TTL": str(HEARTBEAT * 3),
}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("conformance-presence")
    config = tmp / "tidings.toml"
    config.write_text(CONFIG, encoding="utf-8")
    with ServeProcess(tmp / "serve.log", {"TIDINGS_CONFIG": str(config)}) as server:
        yield server
        assert server.stop() == 0, server.log()


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    """Node A (one worker) and node B (two workers) sharing one RabbitMQ and nothing else."""
    tmp = tmp_path_factory.mktemp("conformance-presence-cluster")
    config = tmp / "tidings.toml"
    config.write_text(CONFIG, encoding="utf-8")
    exchange, stream = unique("test.events"), unique("test.log")
    args = ("--amqp-url", AMQP_URL, "--exchange", exchange, "--stream", stream)
    env = {"TIDINGS_CONFIG": str(config), **CLUSTER_ENV}
    try:
        with (
            ServeProcess(tmp / "a.log", env, (*args, "--workers", "1")) as a,
            ServeProcess(tmp / "b.log", env, (*args, "--workers", "2")) as b,
        ):
            yield a, b
            assert a.stop() == 0, a.log()
            assert b.stop() == 0, b.log()
    finally:
        delete_amqp([exchange, exchange + ".control"], [stream])


def run_presence(node: ServeProcess, transport: str, **env: str) -> None:
    """Runs presence.js on fresh channels and checks what it reports."""
    lines = run_scenario(
        node,
        "presence.js",
        {"a": token("alice", info={"name": "Alice"}), "b": token("bob")},
        ROOM=unique("room:invoice"),
        LOBBY=unique("lobby:hall"),
        # Not subscribed: allow_publish_for_subscriber does not cover it.
        DENIED=unique("room:elsewhere"),
        TIDINGS_TRANSPORT=transport,
        **env,
    )
    (ok,) = events(lines, "ok")
    assert ok["stats"] == {"numClients": 2, "numUsers": 2}
    assert ok["after"] == {"numClients": 1, "numUsers": 1}
    assert ok["leaves"] >= 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_presence_join_leave_and_client_publish(node: ServeProcess, transport: str) -> None:
    run_presence(node, transport)


@pytest.mark.rabbitmq
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_presence_and_join_leave_across_two_nodes(
    cluster: tuple[ServeProcess, ServeProcess], transport: str
) -> None:
    """A on node A, B and D on node B (either of its workers): the joins, the leave and
    B's publication cross between the nodes, and presence converges on both sides within
    two heartbeats."""
    a, b = cluster
    run_presence(a, transport, B_NODE_URL=b.url, PRESENCE_WITHIN=str(int(HEARTBEAT * 2000)))

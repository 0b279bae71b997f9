"""Presence, presence stats, join/leave events and client publish with the unmodified
``centrifuge`` SDK against ``tidings serve`` (embedded log: presence is the process's own;
across nodes see tests/system/test_presence.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance.test_sdk import events, run_scenario, unique
from tests.integration.live import ServeProcess, token

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


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("conformance-presence")
    config = tmp / "tidings.toml"
    config.write_text(CONFIG, encoding="utf-8")
    with ServeProcess(tmp / "serve.log", {"TIDINGS_CONFIG": str(config)}) as server:
        yield server
        assert server.stop() == 0, server.log()


def test_presence_join_leave_and_client_publish(node: ServeProcess) -> None:
    lines = run_scenario(
        node,
        "presence.js",
        {"a": token("alice", info={"name": "Alice"}), "b": token("bob")},
        ROOM=unique("room:invoice"),
        LOBBY=unique("lobby:hall"),
        # Not subscribed: allow_publish_for_subscriber does not cover it.
        DENIED=unique("room:elsewhere"),
    )
    (ok,) = events(lines, "ok")
    assert ok["stats"] == {"numClients": 2, "numUsers": 2}
    assert ok["after"] == {"numClients": 1, "numUsers": 1}
    assert ok["leaves"] >= 1

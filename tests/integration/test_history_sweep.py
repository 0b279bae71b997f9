"""The node sweeps history on its own, so quiet channels do not keep expired publications."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.conftest import ServerFactory
from tests.integration.live import scaled
from tidings.node import HISTORY_SWEEP_INTERVAL

pytestmark = pytest.mark.integration


async def test_quiet_channels_are_trimmed_by_ttl_without_new_traffic(serve: ServerFactory) -> None:
    server = await serve({"channels.history_ttl": "1s"})
    node = server.node
    assert node in node.timers._current  # scheduled at start
    await node.publish(["news"], {"n": 1})
    window = node.history.window("news")
    assert window is not None and len(window.items) == 1
    await asyncio.sleep(scaled(1.2))
    # Nothing was written to or read from "news" since: only the sweep can trim it.
    next_deadline = node.on_timer(node.monotonic())
    assert not window.items
    assert window.complete_since == 1  # recovery from before the expiry now fails, as it must
    assert next_deadline >= node.monotonic() + HISTORY_SWEEP_INTERVAL - 1

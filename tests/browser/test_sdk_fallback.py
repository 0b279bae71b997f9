"""The unmodified ``centrifuge`` SDK (its browser build, from conformance/node_modules) in
Debian's Chromium where WebSocket cannot be used: it falls back to ``http_stream`` and
connects, subscribes, receives and recovers there.

The demo page itself does not need this: it reads an ``EventSource`` and never opens a
WebSocket. This page is the SDK application a user of it would write.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_demo_page import WAIT, browser
from tests.system.harness import API_KEY, SECRET, Node, start_node
from tidings.auth import mint_token

pytestmark = pytest.mark.browser
__all__ = ["browser"]  # the Chromium fixture, used by name

SDK = Path(__file__).resolve().parents[2] / "conformance/node_modules/centrifuge/dist/centrifuge.js"
if not SDK.exists():
    pytest.skip("needs the SDK: run `npm ci` in conformance/", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")

PAGE = """<!doctype html><meta charset="utf-8"><title>SDK fallback</title>
<script src="/__test/centrifuge.js"></script>
<script>
  const cfg = JSON.parse(decodeURIComponent(location.hash.slice(1)));
  const base = location.origin;
  window.state = { transports: [], pubs: [], subscribed: [], errors: [] };
  const client = new Centrifuge([
    { transport: 'websocket', endpoint: base.replace('http', 'ws') + cfg.ws },
    { transport: 'http_stream', endpoint: base + '/connection/http_stream' },
    { transport: 'sse', endpoint: base + '/connection/sse' },
  ], { token: cfg.token, emulationEndpoint: base + '/emulation', minReconnectDelay: 50 });
  client.on('connected', (ctx) => state.transports.push(ctx.transport));
  client.on('error', (ctx) => state.errors.push(ctx.type));
  const sub = client.newSubscription(cfg.channel);
  sub.on('publication', (ctx) => state.pubs.push(ctx.data.n));
  sub.on('subscribed', (ctx) => state.subscribed.push(
    { wasRecovering: ctx.wasRecovering, recovered: ctx.recovered }));
  sub.subscribe();
  client.connect();
  window.client = client;
</script>"""


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    started = start_node(tmp_path)
    yield started
    started.stop()


def publish(node: Node, channel: str, n: int) -> None:
    body = json.dumps({"channel": channel, "data": {"n": n}}).encode()
    request = urllib.request.Request(
        f"{node.url}/api/publish",
        data=body,
        headers={"Content-Type": "application/json", "X-API-Key": API_KEY},
    )
    with urllib.request.urlopen(request, timeout=5) as r:
        assert r.status == 200


def state(page: sync_api.Page) -> Any:
    return page.evaluate("window.state")


@pytest.mark.parametrize("blocked", ["no WebSocket in the page", "WebSocket refused"])
def test_the_sdk_falls_back_to_http_stream_and_recovers(
    browser: sync_api.Browser, node: Node, blocked: str
) -> None:
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        if blocked == "no WebSocket in the page":
            page.add_init_script("delete window.WebSocket;")
        page.route(
            f"{node.url}/__test/page.html",
            lambda route: route.fulfill(body=PAGE, content_type="text/html"),
        )
        page.route(
            f"{node.url}/__test/centrifuge.js",
            lambda route: route.fulfill(path=str(SDK), content_type="text/javascript"),
        )
        # Refused: an upgrade to a path with no WebSocket behind it, as a proxy would.
        ws = "/connection/websocket" if blocked == "no WebSocket in the page" else "/no-ws"
        cfg = {"token": mint_token(SECRET, "alice"), "channel": "news", "ws": ws}
        page.goto(f"{node.url}/__test/page.html#{json.dumps(cfg)}")
        page.wait_for_function("state.subscribed.length === 1", timeout=WAIT)
        assert state(page)["transports"] == ["http_stream"]
        if blocked == "WebSocket refused":
            assert "transport" in state(page)["errors"]
        publish(node, "news", 1)
        page.wait_for_function("state.pubs.length === 1", timeout=WAIT)

        page.evaluate("client.disconnect()")
        for n in (2, 3, 4):
            publish(node, "news", n)
        page.evaluate("client.connect()")
        page.wait_for_function("state.subscribed.length === 2", timeout=WAIT)
        publish(node, "news", 5)
        page.wait_for_function("state.pubs.length === 5", timeout=WAIT)
        got = state(page)
        assert got["pubs"] == [1, 2, 3, 4, 5]
        assert got["subscribed"][1] == {"wasRecovering": True, "recovered": True}
        assert got["transports"] == ["http_stream", "http_stream"]
    finally:
        context.close()
    assert not errors, errors

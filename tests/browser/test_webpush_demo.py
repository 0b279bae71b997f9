"""The demo's "Notify me when the tab is closed" in Debian's Chromium (Playwright), against
a ``tidings serve --demo`` subprocess with ``[web_push]``.

What can be shown here and what cannot: the service worker registers and activates, the
page gets the VAPID key and reaches the push subscription, and the worker shows a push
as a notification (delivered through the DevTools protocol, as a push service would).
Chromium's own ``pushManager.subscribe`` needs Google's push service, which these
machines cannot reach; one test therefore replaces it in the page by a subscription at
the tests' push service on 127.0.0.1, and follows the message from the page's
registration through tidings to that service, decrypted there and handed to the worker.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_demo_page import WAIT, browser, open_as, publish
from tests.system.harness import Node, metrics_of, start_node
from tests.webpush.pushservice import SUBJECT, Browser, PushService, check_vapid, node_toml
from tidings.webpush.vapid import generate_key

pytestmark = pytest.mark.browser
__all__ = ["browser"]  # the Chromium fixture, used by name
sync_api = pytest.importorskip("playwright.sync_api")

PRIVATE, PUBLIC = generate_key()
CONFIG = node_toml(PRIVATE)


class ThreadedPushService:
    """The tests' push service on a loop of its own (Playwright's sync API owns this one)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.service = self._run(PushService().start())

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=5)

    def stop(self) -> None:
        self._run(self.service.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


@pytest.fixture
def push() -> Iterator[PushService]:
    threaded = ThreadedPushService()
    yield threaded.service
    threaded.stop()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Node]:
    node = start_node(tmp_path, "--demo", config=CONFIG)
    yield node
    node.stop()


@pytest.fixture
def context(browser: sync_api.Browser) -> Iterator[sync_api.BrowserContext]:
    context = browser.new_context(permissions=["notifications"])
    yield context
    context.close()


def push_state(page: sync_api.Page) -> dict[str, str]:
    state: dict[str, str] = page.eval_on_selector("#push", "e => ({...e.dataset})")
    return state


def worker(page: sync_api.Page) -> list[str]:
    found: list[str] = page.evaluate(
        """async () => {
            const r = await navigator.serviceWorker.ready;
            return [r.active.state, r.active.scriptURL, r.scope];
        }"""
    )
    return found


def deliver(context: sync_api.BrowserContext, page: sync_api.Page, base: str, data: str) -> None:
    """Hands ``data`` to the page's service worker as a push message (what Chromium does
    when its push service delivers one), through the DevTools protocol."""
    cdp = context.new_cdp_session(page)
    registrations: list[str] = []
    cdp.on(
        "ServiceWorker.workerRegistrationUpdated",
        lambda event: registrations.extend(
            r["registrationId"] for r in event["registrations"] if not r["isDeleted"]
        ),
    )
    cdp.send("ServiceWorker.enable")
    page.wait_for_timeout(100)  # the registrations are reported as events
    assert registrations, "no service worker registration reported"
    cdp.send(
        "ServiceWorker.deliverPushMessage",
        {"origin": base, "registrationId": registrations[0], "data": data},
    )


def notifications(page: sync_api.Page) -> list[list[str]]:
    page.wait_for_function(
        """async () => (await (await navigator.serviceWorker.ready).getNotifications()).length""",
        timeout=WAIT,
    )
    shown: list[list[str]] = page.evaluate(
        """async () => (await (await navigator.serviceWorker.ready).getNotifications())
            .map((n) => [n.title, n.body, n.tag])"""
    )
    return shown


def connections(node: Node) -> float:
    return sum(v for (name, _), v in metrics_of(node).items() if name == "tidings_connections")


def until(page: sync_api.Page, predicate: Callable[[], bool], what: str) -> None:
    """Polls ``predicate`` (between Playwright's own waits) for up to ``WAIT``."""
    for _ in range(WAIT // 50):
        if predicate():
            return
        page.wait_for_timeout(50)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_service_worker_registers_and_the_page_reaches_the_subscribe_step(
    context: sync_api.BrowserContext, demo: Node
) -> None:
    page = context.new_page()
    open_as(page, demo.url, "alice")
    page.click("#notify")
    # Chromium's push service is out of reach: subscribe fails there, and nothing before
    # it may fail.
    page.wait_for_function(
        """() => {
            const push = document.querySelector('#push').dataset;
            return push.step === 'subscribing' || push.failedAt;
        }""",
        timeout=WAIT,
    )
    state = push_state(page)
    # Headless Chromium answers "Registration failed - permission denied" there.
    assert state.get("failedAt") == "subscribing", state
    assert worker(page) == ["activated", f"{demo.url}/sw.js", f"{demo.url}/"]
    controlled = page.evaluate("() => navigator.serviceWorker.controller?.scriptURL")
    assert controlled == f"{demo.url}/sw.js"  # clients.claim(): this tab, at once

    message = {
        "channel": "user#alice",
        "offset": 7,
        "data": {"kind": "invoice.paid", "invoice": 12, "amount": "120.00", "user": "alice"},
    }
    deliver(context, page, demo.url, json.dumps(message))
    assert notifications(page) == [
        ["tidings · for alice", "Invoice #12 paid · $120.00", "user#alice@7"]
    ]


def test_a_registered_page_is_pushed_once_its_tab_is_closed(
    context: sync_api.BrowserContext, demo: Node, push: PushService
) -> None:
    keys = Browser()
    subscription = keys.subscription(push.endpoint("alice"))
    # The one stand-in: the subscription Chromium would get from its push service.
    context.add_init_script(
        f"""PushManager.prototype.subscribe = async function (options) {{
            window.pushOptions = {{
                userVisibleOnly: options.userVisibleOnly,
                key: options.applicationServerKey,
            }};
            const json = {json.dumps(subscription)};
            return {{ endpoint: json.endpoint, toJSON: () => json }};
        }};"""
    )
    page = context.new_page()
    open_as(page, demo.url, "alice")
    page.click("#notify")
    page.wait_for_selector('#push[data-step="done"]', timeout=WAIT)
    assert page.evaluate("() => window.pushOptions") == {"userVisibleOnly": True, "key": PUBLIC}

    # Alice's only tab leaves; an event for her goes to her push service instead.
    page.goto("about:blank")
    until(page, lambda: connections(demo) == 0, "the tab's stream to end")
    publish(demo.url, "alice", "invoice.overdue", 31, "64.50")
    until(page, lambda: bool(push.at("alice")), "the push request")
    (request,) = push.at("alice")
    check_vapid(request, push.origin, PUBLIC, SUBJECT)
    plaintext = keys.decrypt(request.body).decode()
    assert json.loads(plaintext)["data"]["invoice"] == 31

    # What the push service hands the browser, the worker shows.
    page.goto(demo.url + "/?user=bob")
    deliver(context, page, demo.url, plaintext)
    [[title, body, _]] = notifications(page)
    assert (title, body) == ("tidings · for alice", "Invoice #31 overdue · $64.50")

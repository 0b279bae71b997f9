"""The demo page in a real browser (Debian's Chromium through Playwright), against a
``tidings serve --demo`` subprocess: toasts for one's own events only, and a dropped
connection that gets what it missed, once."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.harness import TIME_SCALE, CutProxy, Node, start_node

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Playwright waits, in milliseconds.
WAIT = int(10_000 * TIME_SCALE)

if not CHROMIUM.exists():  # `make deps` (scripts/ensure-chromium.sh) installs it
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Node]:
    node = start_node(tmp_path, "--demo")
    yield node
    node.stop()


@pytest.fixture
def page(browser: sync_api.Browser) -> Iterator[sync_api.Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, errors


def publish(base: str, user: str, kind: str, invoice: int, amount: str = "120.00") -> None:
    """What the page's form does, from outside the browser."""
    body = json.dumps({"user": user, "kind": kind, "invoice": invoice, "amount": amount})
    request = urllib.request.Request(
        f"{base}/demo/publish", data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as r:
        assert r.status == 200


def open_as(page: sync_api.Page, base: str, user: str, reconnect_delay: int = 1) -> None:
    page.goto(f"{base}/?user={user}&reconnect_delay={reconnect_delay}")
    live(page)


def live(page: sync_api.Page) -> None:
    page.wait_for_selector('#status[data-state="live"]', timeout=WAIT)


def feed(page: sync_api.Page, invoice: int) -> sync_api.Locator:
    """The feed items of one invoice."""
    return page.locator("#feed .event", has_text=f"Invoice #{invoice} ")


def test_a_user_gets_toasts_for_their_own_events_only(
    browser: sync_api.Browser, page: sync_api.Page, demo: Node
) -> None:
    open_as(page, demo.url, "alice")
    bob = browser.new_page()
    try:
        open_as(bob, demo.url, "bob")
        publish(demo.url, "bob", "invoice.sent", 901)
        publish(demo.url, "alice", "invoice.paid", 12, "120.00")
        toast = page.locator(".toast", has_text="Invoice #12 paid — $120.00")
        toast.wait_for(timeout=WAIT)
        # Bob's event came first in the log: had it been streamed here, it would be here now.
        assert page.locator(".toast", has_text="#901").count() == 0
        assert feed(page, 901).count() == 0

        # The form sends to another user: bob's tab toasts, alice's stays quiet.
        page.select_option("#to", "bob")
        page.select_option("#kind", "invoice.overdue")
        page.fill("#invoice", "904")
        page.fill("#amount", "64.50")
        page.click("#send")
        page.wait_for_selector("#send-result:has-text('Sent to bob')", timeout=WAIT)
        bob.locator(".toast", has_text="Invoice #904 is overdue — $64.50").wait_for(timeout=WAIT)
        assert bob.locator(".toast", has_text="#901").count() == 1
        assert bob.locator(".toast", has_text="#12 ").count() == 0
        assert page.locator(".toast", has_text="#904").count() == 0
    finally:
        bob.close()


def test_dropped_connection_gets_the_missed_events_once(page: sync_api.Page, demo: Node) -> None:
    open_as(page, demo.url, "alice", reconnect_delay=2)
    publish(demo.url, "alice", "invoice.created", 20)
    feed(page, 20).wait_for(timeout=WAIT)

    page.click("#drop")
    page.wait_for_selector('#status[data-state="dropped"]', timeout=WAIT)
    for invoice, kind in ((21, "invoice.sent"), (22, "invoice.paid"), (23, "invoice.overdue")):
        publish(demo.url, "alice", kind, invoice)
    publish(demo.url, "bob", "invoice.paid", 99)
    live(page)

    for invoice in (21, 22, 23):
        item = feed(page, invoice)
        item.wait_for(timeout=WAIT)
        assert item.count() == 1
        assert item.locator(".tag.replayed").count() == 1
    assert page.locator(".tag.duplicate").count() == 0
    offsets = page.locator("#feed .event").evaluate_all("items => items.map(i => i.dataset.offset)")
    assert offsets == ["4", "3", "2", "1"]  # newest first; bob's event (5) is not here
    assert page.text_content("#position") == "4"

    publish(demo.url, "alice", "invoice.paid", 24)
    feed(page, 24).wait_for(timeout=WAIT)
    assert feed(page, 24).locator(".tag.replayed").count() == 0
    assert page.locator("#feed .event").count() == 5


def test_the_browsers_own_reconnect_resumes_with_last_event_id(
    page: sync_api.Page, demo: Node
) -> None:
    """The connection is cut under the page (a proxy drops it): the EventSource reconnects
    by itself with ``Last-Event-ID`` and the events published meanwhile arrive once."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    proxy = CutProxy(target_port=demo.port)
    asyncio.run_coroutine_threadsafe(proxy.start(), loop).result(timeout=5)
    try:
        base = f"http://127.0.0.1:{proxy.port}"
        open_as(page, base, "carol")
        publish(demo.url, "carol", "invoice.created", 30)
        feed(page, 30).wait_for(timeout=WAIT)

        asyncio.run_coroutine_threadsafe(_cut(proxy), loop).result(timeout=5)
        page.wait_for_selector('#status[data-state="reconnecting"]', timeout=WAIT)
        publish(demo.url, "carol", "invoice.sent", 31)
        publish(demo.url, "carol", "invoice.paid", 32)
        live(page)
        # was_recovering in the connect push: the browser sent the id it last saw.
        assert "caught up" in (page.text_content("#status-text") or "")
        for invoice in (31, 32):
            feed(page, invoice).wait_for(timeout=WAIT)
            assert feed(page, invoice).count() == 1
            assert feed(page, invoice).locator(".tag.replayed").count() == 1
        assert page.locator("#feed .event").count() == 3
        assert page.locator(".tag.duplicate").count() == 0
    finally:
        asyncio.run_coroutine_threadsafe(proxy.stop(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)


async def _cut(proxy: CutProxy) -> None:
    assert proxy.cut() > 0


def test_after_a_restart_old_positions_get_a_gap_not_the_new_runs_events(
    page: sync_api.Page, demo: Node, tmp_path: Path
) -> None:
    """A restarted memory log starts its positions at 1 again under a new epoch: the id the
    browser echoes back names the old epoch, so the page is told of a gap instead of being
    given the new run's events 2.. as if they were the ones it missed."""
    open_as(page, demo.url, "alice")
    for invoice in (40, 41, 42):
        publish(demo.url, "alice", "invoice.sent", invoice)
    feed(page, 42).wait_for(timeout=WAIT)
    old_id = page.text_content("#last-id") or ""
    assert old_id.endswith(":3")

    demo.stop()
    again = start_node(tmp_path, "--demo", port=demo.port)
    try:
        for invoice in (50, 51, 52, 53, 54):
            publish(again.url, "alice", "invoice.paid", invoice)
        page.locator("#feed .divider", has_text="could not be replayed").wait_for(timeout=WAIT)
        live(page)
        new_id = page.text_content("#last-id") or ""
        assert new_id.rpartition(":")[0] != old_id.rpartition(":")[0]
        assert page.locator("#feed .tag.replayed").count() == 0
        assert page.locator("#feed .tag.duplicate").count() == 0
    finally:
        again.stop()


def online(page: sync_api.Page) -> sync_api.Locator:
    return page.locator("#online .online-user")


def wait_online(page: sync_api.Page, users: list[str]) -> None:
    """Waits until the page's "online now" list is exactly ``users``."""
    page.wait_for_function(
        "users => JSON.stringify([...document.querySelectorAll('#online .online-user')]"
        ".map(i => i.dataset.user)) === JSON.stringify(users)",
        arg=users,
        timeout=WAIT,
    )


def test_each_page_shows_who_is_online_and_who_left(
    browser: sync_api.Browser, page: sync_api.Page, demo: Node
) -> None:
    open_as(page, demo.url, "alice")
    wait_online(page, ["alice"])
    assert online(page).first.text_content() == "alice (you)"
    bob = browser.new_page()
    carol = browser.new_page()
    try:
        open_as(bob, demo.url, "bob")
        # bob's page read presence: alice was there before him.
        wait_online(bob, ["alice", "bob"])
        # alice's page got bob's join push.
        wait_online(page, ["alice", "bob"])
        open_as(carol, demo.url, "carol")
        wait_online(page, ["alice", "bob", "carol"])
        wait_online(bob, ["alice", "bob", "carol"])
        # A second tab of bob's: still one bob, with two tabs.
        second = browser.new_page()
        open_as(second, demo.url, "bob")
        page.locator('#online [data-user="bob"]', has_text="2 tabs").wait_for(timeout=WAIT)
        second.close()
        page.locator('#online [data-user="bob"] .tabs').wait_for(state="detached", timeout=WAIT)
        carol.close()
        wait_online(page, ["alice", "bob"])
        wait_online(bob, ["alice", "bob"])
    finally:
        bob.close()
        if not carol.is_closed():
            carol.close()
    wait_online(page, ["alice"])

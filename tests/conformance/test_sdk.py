"""The unmodified ``centrifuge`` JavaScript SDK (pinned in conformance/package-lock.json)
against ``tidings serve``: each scenario is a Node script that prints JSON lines and exits
non-zero with a message on the first thing that is missing, duplicated or out of place.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.integration.live import ROOT, ServeProcess, scaled, token

pytestmark = pytest.mark.node

CONFORMANCE = ROOT / "conformance"
NODE = shutil.which("node")
#: The SDK's transports; a scenario runs over one of them (``TIDINGS_TRANSPORT``, lib.js).
TRANSPORTS = ["websocket", "http_stream", "sse"]
#: The server's grace after a token expires (``client.expired_close_delay``), in seconds.
EXPIRED_CLOSE_DELAY = 1
CONFIG = """
[[namespaces]]
name = "small"
history_size = 10
recovery_max_publications = 50

[[namespaces]]
name = "deep"
history_size = 10

[[namespaces]]
name = "hist"
allow_history_for_subscriber = true

[[namespaces]]
name = "live"
history_size = 0
allow_history_for_client = true
"""

if NODE is None or not (CONFORMANCE / "node_modules" / "centrifuge").is_dir():
    pytest.skip("needs node and the SDK: run `npm ci` in conformance/", allow_module_level=True)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One ``tidings serve`` for every scenario (each uses channels of its own)."""
    tmp = tmp_path_factory.mktemp("conformance")
    config = tmp / "tidings.toml"
    config.write_text(CONFIG, encoding="utf-8")
    env = {
        "TIDINGS_CONFIG": str(config),
        "TIDINGS_CLIENT_EXPIRED_CLOSE_DELAY": str(EXPIRED_CLOSE_DELAY),
    }
    with ServeProcess(tmp / "serve.log", env) as server:
        yield server
        status = server.stop()
        assert status == 0, server.log()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def run_scenario(
    node: ServeProcess, script: str, tokens: dict[str, str], **env: str
) -> list[dict[str, Any]]:
    """Runs ``node conformance/<script>`` and returns its JSON lines; fails with all of
    them (and the server's log) unless the script ended with ``ok``."""
    full_env = {
        "PATH": str(Path(NODE or "node").parent),
        "TIDINGS_WS_URL": node.ws_url,
        "TIDINGS_HTTP_URL": node.url,
        "TIDINGS_API_KEY": node.env["TIDINGS_API_KEY"],
        "TIDINGS_TOKENS": json.dumps(tokens),
        "TIDINGS_TEST_TIME_SCALE": str(scaled(1)),
        **env,
    }
    try:
        done = subprocess.run(
            [str(NODE), script],
            cwd=CONFORMANCE,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=scaled(40),
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{script} did not finish (its own hard timeout failed): {exc.stdout!r}")
    lines = []
    for line in done.stdout.splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            lines.append({"event": "stdout", "text": line})
    report = "\n".join(done.stdout.splitlines()[-60:])
    failure = (
        f"{script} exited {done.returncode}\n--- stdout (last lines)\n{report}\n"
        f"--- stderr\n{done.stderr[-3000:]}\n--- server log (tail)\n{node.log()[-3000:]}"
    )
    assert done.returncode == 0, failure
    assert lines and lines[-1]["event"] == "ok", failure
    return lines


def events(lines: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["event"] == name]


def test_connect_subscribe_receive(node: ServeProcess) -> None:
    lines = run_scenario(
        node, "connect_subscribe.js", {"main": token("alice")}, CHANNEL=unique("news")
    )
    assert events(lines, "ok")[0]["received"] == 3


def test_server_side_subscriptions_deliver_through_the_client(node: ServeProcess) -> None:
    channels = [unique("feed"), unique("alerts")]
    lines = run_scenario(
        node,
        "server_side.js",
        {"main": token("alice", channels=channels)},
        CHANNELS=",".join(channels),
    )
    assert sorted(e["channel"] for e in events(lines, "client.subscribed")) == sorted(channels)


def test_unsubscribe_stops_publications(node: ServeProcess) -> None:
    run_scenario(
        node,
        "unsubscribe.js",
        {"main": token("alice")},
        CHANNEL=unique("news"),
        CONTROL_CHANNEL=unique("control"),
    )


def test_token_refresh_before_expiry(node: ServeProcess) -> None:
    short = token("alice", ttl=3)  # valid for 2-3 s: exp is whole seconds
    lines = run_scenario(
        node,
        "token_refresh.js",
        {"short": short, "long": token("alice", ttl=600)},
        CHANNEL=unique("news"),
        SHORT_EXP=str(_exp(short)),
        EXPIRED_CLOSE_DELAY=str(EXPIRED_CLOSE_DELAY),
    )
    (call,) = events(lines, "getToken")
    assert call["msBeforeExpiry"] > -EXPIRED_CLOSE_DELAY * 1000  # asked before the cut-off


def test_expired_token_gets_a_new_one_and_reconnects(node: ServeProcess) -> None:
    short = token("alice", ttl=3)
    lines = run_scenario(
        node,
        "token_expired.js",
        {
            "expired": token("alice", ttl=-30),
            "short": short,
            "long": token("alice", ttl=600),
        },
        CHANNEL=unique("news"),
        SHORT_EXP=str(_exp(short)),
        SHORT_TTL="3",
    )
    closes = [e for e in events(lines, "b.connecting") if e["code"] == 3005]
    assert len(closes) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_invalid_token_is_terminal(node: ServeProcess, transport: str) -> None:
    forged = jwt.encode({"sub": "alice"}, "another-secret-of-at-least-32-bytes!", "HS256")
    lines = run_scenario(
        node, "invalid_token.js", {"invalid": forged}, TIDINGS_TRANSPORT=transport
    )
    (ok,) = events(lines, "ok")
    assert ok["code"] == 3500


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_private_channel_with_a_subscription_token(node: ServeProcess, transport: str) -> None:
    channel = "$" + unique("secret")
    run_scenario(
        node,
        "private_channel.js",
        {"main": token("bob"), "sub": token("bob", channel=channel)},
        CHANNEL=channel,
        OTHER_CHANNEL="$" + unique("other"),
        TIDINGS_TRANSPORT=transport,
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_many_subscriptions_on_one_connection(node: ServeProcess, transport: str) -> None:
    lines = run_scenario(
        node,
        "many_subscriptions.js",
        {"main": token("alice")},
        CHANNEL_PREFIX=unique("many"),
        COUNT="50",
        TIDINGS_TRANSPORT=transport,
    )
    (ok,) = events(lines, "ok")
    assert (ok["subscriptions"], ok["kept"], ok["transport"]) == (50, 25, transport)


def test_subscription_token_refresh_before_expiry(node: ServeProcess) -> None:
    channel = "$" + unique("secret")
    short = token("bob", channel=channel, ttl=3)
    lines = run_scenario(
        node,
        "sub_token_refresh.js",
        {
            "main": token("bob"),
            "subShort": short,
            "subLong": token("bob", channel=channel, ttl=600),
        },
        CHANNEL=channel,
        SHORT_EXP=str(_exp(short)),
        EXPIRED_CLOSE_DELAY=str(EXPIRED_CLOSE_DELAY),
    )
    assert [e["channel"] for e in events(lines, "sub.getToken")] == [channel, channel]


def recovery(node: ServeProcess, prefix: str, mode: str, expect: bool) -> tuple[int, int, bool]:
    """``recovery.js`` with 100 events missed on a channel ``prefix-…``: what was received,
    what the subscribe reply replayed, and whether it said recovered."""
    lines = run_scenario(
        node,
        "recovery.js",
        {"main": token("alice")},
        CHANNEL=unique(prefix),
        MISSED="100",
        EXPECT_RECOVERED="true" if expect else "false",
        MODE=mode,
    )
    (ok,) = events(lines, "ok")
    return ok["received"], ok["replayed"], ok["recovered"]


@pytest.mark.parametrize("mode", ["disconnect", "outage"])
def test_recovery_delivers_every_missed_publication_once(node: ServeProcess, mode: str) -> None:
    assert recovery(node, "stream", mode, True) == (110, 100, True)


def test_recovery_beyond_the_window_is_read_from_the_log(node: ServeProcess) -> None:
    # The embedded log keeps every event the window (10) lost; tests/system/
    # test_deep_recovery.py does the same with RabbitMQ's stream and two nodes.
    assert recovery(node, "deep:stream", "outage", True) == (110, 100, True)


def test_recovery_fails_plainly_past_the_bound_of_a_recovery(node: ServeProcess) -> None:
    # 100 missed: past the window (10) and past what a recovery from the log may give (50).
    assert recovery(node, "small:stream", "disconnect", False) == (10, 0, False)


def _exp(raw: str) -> int:
    exp = jwt.decode(raw, options={"verify_signature": False})["exp"]
    assert exp > time.time()
    return int(exp)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_history_with_limit_since_and_reverse(node: ServeProcess, transport: str) -> None:
    lines = run_scenario(
        node,
        "history.js",
        {"main": token("alice")},
        CHANNEL=unique("hist:feed"),
        OFF_CHANNEL=unique("live:feed"),
        CLOSED_CHANNEL=unique("news"),
        TIDINGS_TRANSPORT=transport,
    )
    done = events(lines, "ok")[0]
    assert (done["first"], done["rest"]) == (2, 2)
